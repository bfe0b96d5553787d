//! Unified buffers: a host copy and a device copy kept coherent, moved only when a stale side is
//! about to be used, and then only the byte ranges that changed.
//!
//! [`coherence`] is the state machine as a pure function; [`BufferStorage`] carries out its
//! effects with blocks from the pools of a [`BufferContext`]; [`UnifiedBuffer`] is the typed API
//! for a buffer and its views, and guards ([`HostRef`], [`HostMut`], [`DeviceRef`],
//! [`DeviceMut`]) are the only way to its memory.
//!
//! # The ordering contract
//! A device guard hands out the buffer's block and the buffer's queue ([`DeviceRef::queue`]).
//! Work you enqueue on that queue needs no waiting on your side:
//! - every transfer hetmem makes for the buffer runs after all work enqueued on the queue
//!   before it — your kernels included — even where hetmem spreads a transfer's chunks over
//!   other queues (each of those waits for a marker of this queue first);
//! - work you enqueue on the queue after a hetmem call on the buffer returns runs after that
//!   call's work (its transfers are complete, or, for `sync`/prefetches, your next guard waits
//!   for them);
//! - the block returns to its pool, when the buffer lets it go, with a marker of the queue, so
//!   it is not handed to another owner before your work on it is done.
//!
//! Work on a queue of your own is ordered with [`DeviceRef::ready_on`] before you launch it
//! (your queue waits for everything on the buffer's queue) and declared with
//! [`DeviceRef::record`] after (PyTorch's `record_stream`): the buffer's queue, and so hetmem's
//! next transfer and the block's return to the pool, then wait for it.

pub mod coherence;
mod context;
mod data_ops;
mod effects;
mod guards;
mod in_flight;
mod lent_device;
mod map_guards;
mod metrics;
mod range_set;
mod shared_part;
mod shell;
mod storage;
mod tracker;
mod unified;

pub use coherence::{CoherenceError, CoherenceEvent, CoherenceState, Effect, Side, Transition};
pub use context::{BufferContext, Residency};
pub use guards::{DeviceMut, DeviceRef, HostMut, HostRef};
pub use map_guards::{MapMut, MapRef};
pub(crate) use metrics::MetricCells;
pub use metrics::{BufferEvent, BufferMetrics};
pub(crate) use shared_part::{Observer, SharedPart};
pub(crate) use shell::{Shape, Shell};
pub use storage::{BufferStorage, OwnedStorage};
pub use unified::{BufferView, BufferViewMut, UnifiedBuffer};
