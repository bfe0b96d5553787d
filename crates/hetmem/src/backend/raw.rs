//! For backend authors: what a new backend needs to make hetmem's handles out of its driver's
//! objects. Users of hetmem never need this module; it is kept apart so that the user API
//! ([`Backend`](super::Backend), [`DeviceBlock`], [`Queue`], [`Event`], [`StagingBuffer`]) stays about using
//! memory.
//!
//! A backend implements [`Backend`](super::Backend); its allocations become [`DeviceBlock`]s through
//! [`device_block`], its streams [`Queue`]s through [`queue`], its completion objects
//! [`Event`]s through [`event`] (an [`EventSource`]), its page-locked host memory
//! [`StagingBuffer`]s through [`staging_buffer`] (a [`StagingMemory`]); asynchronous work on
//! staging memory is recorded on the buffer with [`track_device_read`] and
//! [`track_device_write`], so that host access waits for it. The host backend
//! (`backend/host.rs`) is the worked example.

use std::any::Any;
use std::ffi::c_void;
use std::sync::Arc;

pub use super::event::{CompletionCallback, EventSource, ManualEvent};
pub use super::staging::StagingMemory;
use super::{BackendId, DeviceBlock, Event, Queue, StagingBuffer, UserEvent};
use crate::error::Result;

/// Wraps a backend's allocation as a block.
///
/// # Safety
/// Only a [`Backend`](super::Backend) implementation may call this, for memory it allocated and
/// now hands out exactly once: `handle` must stay valid for `size` bytes until the block is
/// released to the backend whose id is `backend`.
pub unsafe fn device_block(backend: BackendId, handle: *mut c_void, size: usize) -> DeviceBlock {
    // SAFETY: the caller upholds the same contract.
    unsafe { DeviceBlock::from_raw(backend, handle, size) }
}

/// Wraps a backend's queue object; users get queues from
/// [`Backend::default_queue`](super::Backend::default_queue) and
/// [`Backend::create_queue`](super::Backend::create_queue).
pub fn queue(backend: BackendId, inner: Arc<dyn Any + Send + Sync>) -> Queue {
    Queue::new(backend, inner)
}

/// Wraps a backend's completion object.
pub fn event(source: Arc<dyn EventSource>) -> Event {
    Event::from_source(source)
}

/// The backend's completion object of `event`, `None` for an event created already complete.
pub fn event_source(event: &Event) -> Option<&Arc<dyn EventSource>> {
    event.source()
}

/// A user event a backend built: `finish(true)` completes `event`, `finish(false)` fails it.
pub fn user_event(
    event: Event,
    finish: Box<dyn FnOnce(bool) -> Result<()> + Send + Sync>,
) -> UserEvent {
    UserEvent::new(event, finish)
}

/// A user event completed on the host alone ([`ManualEvent`]), for backends whose devices have
/// no host-completed events of their own (the host backend, CUDA).
pub fn manual_user_event() -> UserEvent {
    UserEvent::manual()
}

/// Wraps a backend's staging allocation.
pub fn staging_buffer(backend: BackendId, memory: Arc<dyn StagingMemory>) -> StagingBuffer {
    StagingBuffer::new(backend, memory)
}

/// Records device work that reads `staging` (a write from it into a block).
pub fn track_device_read(staging: &StagingBuffer, event: Event) {
    staging.track_device_read(event);
}

/// Records device work that writes `staging` (a read from a block into it).
pub fn track_device_write(staging: &mut StagingBuffer, event: Event) {
    staging.track_device_write(event);
}
