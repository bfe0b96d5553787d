//! [`Timed`]: the time spent in the resource below, so that a replay reports the allocator's
//! own time apart from the backend's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use crate::backend::{Backend, DeviceBlock, Event};
use crate::error::Result;
use crate::resource::{MemoryResource, Trim};

/// Passes every call through, adding the time the memory-moving ones (allocate, deallocate,
/// commit, decommit, trim) took to one counter.
pub(super) struct Timed {
    upstream: Arc<dyn MemoryResource>,
    nanos: AtomicU64,
}

impl Timed {
    pub(super) fn new(upstream: Arc<dyn MemoryResource>) -> Self {
        Timed {
            upstream,
            nanos: AtomicU64::new(0),
        }
    }

    /// Nanoseconds spent below so far.
    pub(super) fn nanos(&self) -> u64 {
        self.nanos.load(Ordering::Relaxed)
    }

    fn time<T>(&self, call: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = call();
        let spent = start.elapsed().as_nanos() as u64;
        self.nanos.fetch_add(spent, Ordering::Relaxed);
        out
    }
}

impl Trim for Timed {
    fn trim(&self) -> Result<u64> {
        self.time(|| self.upstream.trim())
    }
}

impl MemoryResource for Timed {
    fn backend(&self) -> &Arc<dyn Backend> {
        self.upstream.backend()
    }

    fn allocate(&self, bytes: usize) -> Result<DeviceBlock> {
        self.time(|| self.upstream.allocate(bytes))
    }

    fn deallocate(&self, block: DeviceBlock, after: Vec<Event>) -> Result<()> {
        self.time(|| self.upstream.deallocate(block, after))
    }

    fn abandon(&self, size: usize) {
        self.upstream.abandon(size);
    }

    fn adopt(&self, block: &DeviceBlock) -> Result<()> {
        self.upstream.adopt(block)
    }

    fn commit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<()> {
        self.time(|| self.upstream.commit(reservation, offset, len))
    }

    fn decommit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<()> {
        self.time(|| self.upstream.decommit(reservation, offset, len))
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
