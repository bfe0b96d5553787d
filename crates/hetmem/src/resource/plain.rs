//! [`PlainResource`]: a backend's own allocation calls, nothing cached (RMM's
//! `cuda_memory_resource`, PyTorch with `PYTORCH_NO_CUDA_MEMORY_CACHING=1`).

use std::sync::{Arc, Weak};

use super::{MemoryResource, Pressure, Trim};
use crate::backend::{Backend, DeviceBlock, Event};
use crate::error::Result;

/// The bottom of a resource stack: every allocation is a backend allocation, every
/// deallocation a backend release. It keeps the caches above it for
/// [`MemoryResource::relieve`]: a cache that meets device out-of-memory relieves them all
/// (itself included) and retries, with a diagnosis of what it held.
pub struct PlainResource {
    backend: Arc<dyn Backend>,
    pressure: Pressure,
}

impl PlainResource {
    /// The plain resource of `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        PlainResource {
            backend,
            pressure: Pressure::default(),
        }
    }
}

impl Trim for PlainResource {
    /// Holds nothing: gives back nothing.
    fn trim(&self) -> Result<u64> {
        Ok(0)
    }
}

impl MemoryResource for PlainResource {
    fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    fn allocate(&self, bytes: usize) -> Result<DeviceBlock> {
        self.backend.allocate(bytes)
    }

    /// Releases at once: the backend orders a release after the work enqueued on the block, so
    /// `after` needs no wait here. A block of another backend comes back in the error.
    fn deallocate(&self, block: DeviceBlock, after: Vec<Event>) -> Result<()> {
        drop(after);
        self.backend.release(block)
    }

    /// Nothing to adjust: the backend's own usage counts the block until whoever holds it now
    /// releases it.
    fn abandon(&self, size: usize) {
        let _ = size;
    }

    /// Checks only that the block is this backend's: the backend counted it when it adopted it.
    fn adopt(&self, block: &DeviceBlock) -> Result<()> {
        crate::backend::check_owner("adopted block", self.backend.id(), block.backend())
    }

    fn commit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<()> {
        self.backend.commit(reservation, offset, len)
    }

    fn decommit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<()> {
        self.backend.decommit(reservation, offset, len)
    }

    fn on_pressure(&self, cache: Weak<dyn Trim>) {
        self.pressure.attach(cache);
    }

    fn relieve(&self) -> Result<u64> {
        self.pressure.relieve()
    }

    /// Nothing below limits it (the device's own size is not a limit it can know in advance).
    fn headroom(&self) -> Option<u64> {
        None
    }
}
