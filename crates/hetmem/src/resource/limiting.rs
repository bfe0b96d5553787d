//! [`LimitingResource`]: a byte limit over what a resource takes (RMM's
//! `limiting_resource_adaptor`).

use std::sync::{Arc, Weak};

use super::{MemoryLimit, MemoryResource, Trim};
use crate::backend::{Backend, DeviceBlock, Event};
use crate::error::Result;

/// Charges every block allocated through it to a [`MemoryLimit`] and credits it back on
/// deallocation. Over the limit, the caches under the limit trim first; if that does not make
/// room the allocation fails with [`Error::LimitExceeded`](crate::Error::LimitExceeded) and the
/// requested, limit and in-use figures. One limit can be shared by several stacks.
pub struct LimitingResource {
    upstream: Arc<dyn MemoryResource>,
    limit: MemoryLimit,
}

impl LimitingResource {
    /// `upstream`, under `limit`.
    pub fn new(upstream: Arc<dyn MemoryResource>, limit: MemoryLimit) -> Self {
        LimitingResource { upstream, limit }
    }

    /// The limit charged.
    pub fn limit(&self) -> &MemoryLimit {
        &self.limit
    }
}

impl Trim for LimitingResource {
    fn trim(&self) -> Result<u64> {
        self.upstream.trim()
    }
}

impl MemoryResource for LimitingResource {
    fn backend(&self) -> &Arc<dyn Backend> {
        self.upstream.backend()
    }

    fn allocate(&self, bytes: usize) -> Result<DeviceBlock> {
        self.limit.charge(bytes as u64)?;
        // A block is exactly the size asked (the backend contract), so its size is what was
        // charged when it comes back.
        let block = self.upstream.allocate(bytes);
        if block.is_err() {
            self.limit.credit(bytes as u64);
        }
        block
    }

    fn deallocate(&self, block: DeviceBlock, after: Vec<Event>) -> Result<()> {
        let size = block.size() as u64;
        self.upstream.deallocate(block, after)?;
        self.limit.credit(size);
        Ok(())
    }

    fn abandon(&self, size: usize) {
        self.upstream.abandon(size);
        self.limit.credit(size as u64);
    }

    fn adopt(&self, block: &DeviceBlock) -> Result<()> {
        let size = block.size() as u64;
        self.limit.charge(size)?;
        self.upstream
            .adopt(block)
            .inspect_err(|_| self.limit.credit(size))
    }

    fn commit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<()> {
        self.limit.charge(len as u64)?;
        self.upstream
            .commit(reservation, offset, len)
            .inspect_err(|_| self.limit.credit(len as u64))
    }

    fn decommit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<()> {
        self.upstream.decommit(reservation, offset, len)?;
        self.limit.credit(len as u64);
        Ok(())
    }

    fn on_pressure(&self, cache: Weak<dyn Trim>) {
        self.limit.attach(cache.clone());
        self.upstream.on_pressure(cache);
    }

    /// Relieves every cache under the limit, those of other stacks sharing it included.
    fn relieve(&self) -> Result<u64> {
        self.limit.trim()
    }

    /// What the limit leaves, or less where something below leaves less.
    fn headroom(&self) -> Option<u64> {
        let left = self.limit.bytes().saturating_sub(self.limit.reserved());
        Some(
            self.upstream
                .headroom()
                .map_or(left, |below| below.min(left)),
        )
    }
}
