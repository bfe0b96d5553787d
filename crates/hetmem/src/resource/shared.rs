//! [`SharedResource`]: memory host and device both address (OpenCL fine-grained SVM, CUDA
//! managed memory) from any device stack (RMM's `managed_memory_resource`).

use std::sync::{Arc, Weak};

use super::{MemoryResource, Trim};
use crate::backend::{Backend, DeviceBlock, Event};
use crate::error::Result;

/// Allocates shared memory ([`Backend::allocate_shared`]) and puts each block on the books of
/// the stack it wraps ([`MemoryResource::adopt`]): limits charge it — after the driver call, so
/// a refused block is released at once — and statistics count it; blocks go back through the
/// stack, whose bottom releases them to the backend. A caching allocator over it keeps shared
/// blocks apart from the device's ordinary ones.
pub struct SharedResource {
    upstream: Arc<dyn MemoryResource>,
}

impl SharedResource {
    /// Shared memory of `upstream`'s backend, charged to `upstream`.
    pub fn over(upstream: Arc<dyn MemoryResource>) -> Self {
        SharedResource { upstream }
    }
}

impl Trim for SharedResource {
    fn trim(&self) -> Result<u64> {
        self.upstream.trim()
    }
}

impl MemoryResource for SharedResource {
    fn backend(&self) -> &Arc<dyn Backend> {
        self.upstream.backend()
    }

    fn allocate(&self, bytes: usize) -> Result<DeviceBlock> {
        let backend = self.upstream.backend();
        let block = backend.allocate_shared(bytes)?;
        if let Err(refused) = self.upstream.adopt(&block) {
            let _ = backend.release(block);
            return Err(refused);
        }
        Ok(block)
    }

    fn deallocate(&self, block: DeviceBlock, after: Vec<Event>) -> Result<()> {
        self.upstream.deallocate(block, after)
    }

    fn abandon(&self, size: usize) {
        self.upstream.abandon(size);
    }

    fn adopt(&self, block: &DeviceBlock) -> Result<()> {
        self.upstream.adopt(block)
    }

    fn commit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<()> {
        self.upstream.commit(reservation, offset, len)
    }

    fn decommit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<()> {
        self.upstream.decommit(reservation, offset, len)
    }

    fn on_pressure(&self, cache: Weak<dyn Trim>) {
        self.upstream.on_pressure(cache);
    }

    fn relieve(&self) -> Result<u64> {
        self.upstream.relieve()
    }

    fn headroom(&self) -> Option<u64> {
        self.upstream.headroom()
    }
}
