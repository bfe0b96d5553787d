//! Unified buffers: a host copy and a device copy kept coherent, moved only when a stale side is
//! about to be used. [`coherence`] is the state machine, as a pure function.

pub mod coherence;

pub use coherence::{CoherenceError, CoherenceEvent, CoherenceState, Effect, Side, Transition};
