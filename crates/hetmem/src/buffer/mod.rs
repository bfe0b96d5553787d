//! Unified buffers: a host copy and a device copy kept coherent, moved only when a stale side is
//! about to be used, and then only the byte ranges that changed.
//!
//! [`coherence`] is the state machine as a pure function; [`BufferStorage`] carries out its
//! effects with blocks from the pools of a [`BufferContext`]; [`UnifiedBuffer`] is the typed API
//! for a buffer and its views, and guards ([`HostRef`], [`HostMut`], [`DeviceRef`],
//! [`DeviceMut`]) are the only way to its memory.

pub mod coherence;
mod context;
mod guards;
mod in_flight;
mod metrics;
mod range_set;
mod storage;
mod unified;

pub use coherence::{CoherenceError, CoherenceEvent, CoherenceState, Effect, Side, Transition};
pub use context::{BufferContext, Residency};
pub use guards::{DeviceMut, DeviceRef, HostMut, HostRef};
pub use metrics::BufferMetrics;
pub(crate) use metrics::MetricCells;
pub use storage::BufferStorage;
pub(crate) use storage::Observer;
pub use unified::{BufferView, BufferViewMut, UnifiedBuffer};
