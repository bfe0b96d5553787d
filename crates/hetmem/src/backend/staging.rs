//! Staging buffers: host memory that asynchronous transfers read from and write into.
//!
//! The buffer tracks every device operation pending on it, so that host access and `Drop` can
//! wait for exactly the work that could still touch the memory.

use crate::sync::Unpoison;
use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex};

use super::{BackendId, Event};
use crate::error::Result;

/// Host memory owned by a backend's staging allocation.
///
/// # Safety
/// `as_ptr()` must point to `len()` initialised bytes that stay valid, and are not accessed by
/// anything but the owning [`StagingBuffer`] and the device work it tracks, for as long as the
/// object lives.
pub unsafe trait StagingMemory: Send + Sync + 'static {
    /// Start of the memory.
    fn as_ptr(&self) -> *mut u8;
    /// Length in bytes.
    fn len(&self) -> usize;
    /// Whether `len() == 0` (never, for memory a backend hands out).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// For the backend to reach its own type (an OpenCL staging buffer keeps its `cl_mem`).
    fn as_any(&self) -> &dyn Any;
}

/// Host memory for asynchronous transfers, page-locked where the backend can provide it.
pub struct StagingBuffer {
    backend: BackendId,
    memory: Arc<dyn StagingMemory>,
    /// Device operations writing into this memory (reads from a block).
    device_writes: Mutex<Vec<Event>>,
    /// Device operations reading this memory (writes to a block).
    device_reads: Mutex<Vec<Event>>,
}

impl StagingBuffer {
    /// Wraps a backend's staging allocation ([`raw::staging_buffer`](super::raw::staging_buffer)).
    pub(crate) fn new(backend: BackendId, memory: Arc<dyn StagingMemory>) -> Self {
        StagingBuffer {
            backend,
            memory,
            device_writes: Mutex::new(Vec::new()),
            device_reads: Mutex::new(Vec::new()),
        }
    }

    /// The backend that allocated this buffer.
    pub fn backend(&self) -> BackendId {
        self.backend
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.memory.len()
    }

    /// Whether the buffer has no bytes (never true for a backend's allocation).
    pub fn is_empty(&self) -> bool {
        self.memory.is_empty()
    }

    /// The backend's memory object; backends use it to reach the pointer and their own type.
    pub fn memory(&self) -> &Arc<dyn StagingMemory> {
        &self.memory
    }

    /// The host view, after every pending device write into it has finished.
    pub fn as_slice(&self) -> Result<&[u8]> {
        drain(&self.device_writes)?;
        // SAFETY: the memory is valid and initialised for len() bytes (StagingMemory contract),
        // every pending device write into it has finished, and new device writes need
        // `&mut self`, which cannot coexist with the returned borrow.
        Ok(unsafe { std::slice::from_raw_parts(self.memory.as_ptr(), self.memory.len()) })
    }

    /// The mutable host view, after every pending device operation on it has finished.
    pub fn as_mut_slice(&mut self) -> Result<&mut [u8]> {
        drain(&self.device_writes)?;
        drain(&self.device_reads)?;
        // SAFETY: as in `as_slice`, and no device read is pending either; `&mut self` excludes
        // every other host or device access for the borrow's duration.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.memory.as_ptr(), self.memory.len()) })
    }

    /// Records device work that reads this memory (called by backends).
    pub(crate) fn track_device_read(&self, event: Event) {
        track(&self.device_reads, event);
    }

    /// Records device work that writes this memory (called by backends).
    pub(crate) fn track_device_write(&mut self, event: Event) {
        track(&self.device_writes, event);
    }
}

fn track(list: &Mutex<Vec<Event>>, event: Event) {
    if event.source().is_none() {
        return;
    }
    let mut list = list.lock().unpoisoned();
    // Forget finished work only as the list doubles: a batch of n operations on one staging
    // buffer then costs O(n) status queries, not O(n²).
    if list.len() >= 16 && list.len().is_power_of_two() {
        list.retain(|e| !e.is_finished());
    }
    list.push(event);
}

/// Waits for every event in `list`, empties it, and reports the first failure.
fn drain(list: &Mutex<Vec<Event>>) -> Result<()> {
    let events = std::mem::take(&mut *list.lock().unpoisoned());
    let mut first_error = None;
    for event in events {
        if let Err(e) = event.wait() {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

impl Drop for StagingBuffer {
    fn drop(&mut self) {
        // The device must be done with the memory before it can be freed. A failed operation
        // has finished too, so its error does not matter here.
        let _ = drain(&self.device_writes);
        let _ = drain(&self.device_reads);
    }
}

impl fmt::Debug for StagingBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StagingBuffer")
            .field("backend", &self.backend)
            .field("len", &self.len())
            .finish()
    }
}
