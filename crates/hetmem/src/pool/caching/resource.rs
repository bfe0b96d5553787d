//! The caching allocator as a [`MemoryResource`], so that adaptors can sit above it (statistics
//! of what users ask for, a failure callback that sees only what the cache could not serve).

use std::sync::{Arc, Weak};

use super::{CachingAllocator, Inner};
use crate::backend::{check_release, Backend, DeviceBlock, Event};
use crate::error::Result;
use crate::resource::{MemoryResource, Trim};

impl Trim for CachingAllocator {
    /// Releases every cached block, then trims the resource below.
    fn trim(&self) -> Result<u64> {
        Ok(CachingAllocator::trim(self)? + self.inner.upstream.trim()?)
    }
}

impl MemoryResource for CachingAllocator {
    fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// A block of the class serving `bytes` (its size is the class size). Handed out as a bare
    /// block, it counts as in use without rounding waste until it is deallocated.
    fn allocate(&self, bytes: usize) -> Result<DeviceBlock> {
        let mut pooled = CachingAllocator::allocate(self, bytes)?;
        let mut node = pooled.node.take().expect("present until drop");
        let block = node
            .block
            .take()
            .expect("a handed-out node holds its block");
        if node.class.is_some() {
            let waste = (block.size() - bytes) as i64;
            self.inner.count(|t| t.waste -= waste);
        }
        Inner::spare(node);
        Ok(block)
    }

    /// Caches a block of a class size (held back until `after` finishes); releases any other
    /// size to the resource below.
    fn deallocate(&self, block: DeviceBlock, after: Vec<Event>) -> Result<()> {
        let block = check_release(self.inner.backend_id, block)?;
        let size = block.size();
        let class = (self.inner.config.classes.class(size))
            .filter(|&(_, class_size)| class_size == size)
            .map(|(class, _)| class);
        let (home, spare) = self.inner.count(|t| (t.home, t.take_spare()));
        let mut node = self.node(block, home, spare);
        let pending: Vec<Event> = after.into_iter().filter(|e| !e.is_finished()).collect();
        node.last_use = (!pending.is_empty()).then(|| pending.into_boxed_slice());
        (node.requested, node.capacity, node.class) = (size, size, class);
        Inner::give_back(node);
        Ok(())
    }

    fn abandon(&self, size: usize) {
        self.inner.held.sub(size as u64);
        self.inner.reserved.sub(size as u64);
        self.inner.upstream.abandon(size);
    }

    fn adopt(&self, block: &DeviceBlock) -> Result<()> {
        self.inner.upstream.adopt(block)?;
        self.inner.held.add(block.size() as u64);
        self.inner.reserved.add(block.size() as u64);
        Ok(())
    }

    /// Passed down, not counted as cached or held: the caller's segment grows.
    fn commit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<()> {
        self.inner.upstream.commit(reservation, offset, len)
    }

    fn decommit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<()> {
        self.inner.upstream.decommit(reservation, offset, len)
    }

    fn on_pressure(&self, cache: Weak<dyn Trim>) {
        self.inner.upstream.on_pressure(cache);
    }

    fn relieve(&self) -> Result<u64> {
        self.inner.upstream.relieve()
    }

    fn headroom(&self) -> Option<u64> {
        self.inner.upstream.headroom()
    }
}
