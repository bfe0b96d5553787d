//! [`StatisticsResource`]: exact counts of what passes through a resource (RMM's
//! `statistics_resource_adaptor`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use super::{MemoryResource, Trim};
use crate::backend::{Backend, DeviceBlock, Event};
use crate::error::Result;
use crate::gauge::PeakGauge;

/// A snapshot of a [`StatisticsResource`]'s counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ResourceStats {
    /// Successful allocations.
    pub allocations: u64,
    /// Deallocations accepted.
    pub deallocations: u64,
    /// Allocations the resource below refused.
    pub failed_allocations: u64,
    /// Bytes allocated and not yet deallocated.
    pub bytes: u64,
    /// Most bytes outstanding at once since creation or [`StatisticsResource::reset_peak`].
    pub peak_bytes: u64,
    /// Blocks allocated and not yet deallocated.
    pub blocks: u64,
    /// Ranges of reservations committed ([`MemoryResource::commit`]): expandable segments
    /// growing, each a backend call.
    pub commits: u64,
    /// Ranges of reservations given back.
    pub decommits: u64,
}

/// Counts allocations, deallocations, failures and outstanding bytes (with their peak) of the
/// resource it wraps. Counters are atomics: exact under any number of threads once no call is
/// in flight.
pub struct StatisticsResource {
    upstream: Arc<dyn MemoryResource>,
    allocations: AtomicU64,
    deallocations: AtomicU64,
    failed: AtomicU64,
    commits: AtomicU64,
    decommits: AtomicU64,
    bytes: PeakGauge,
}

impl StatisticsResource {
    /// Counts what passes through to `upstream`.
    pub fn new(upstream: Arc<dyn MemoryResource>) -> Self {
        StatisticsResource {
            upstream,
            allocations: AtomicU64::new(0),
            deallocations: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            decommits: AtomicU64::new(0),
            bytes: PeakGauge::default(),
        }
    }

    /// The counters now.
    pub fn stats(&self) -> ResourceStats {
        // Deallocations first: a racing pair then never shows more freed than allocated.
        let deallocations = self.deallocations.load(Ordering::Acquire);
        let allocations = self.allocations.load(Ordering::Acquire);
        ResourceStats {
            allocations,
            deallocations,
            failed_allocations: self.failed.load(Ordering::Relaxed),
            bytes: self.bytes.get(),
            peak_bytes: self.bytes.peak(),
            blocks: allocations.saturating_sub(deallocations),
            commits: self.commits.load(Ordering::Relaxed),
            decommits: self.decommits.load(Ordering::Relaxed),
        }
    }

    /// Starts a new peak window at the bytes outstanding now.
    pub fn reset_peak(&self) {
        self.bytes.reset_peak();
    }
}

impl Trim for StatisticsResource {
    fn trim(&self) -> Result<u64> {
        self.upstream.trim()
    }
}

impl MemoryResource for StatisticsResource {
    fn backend(&self) -> &Arc<dyn Backend> {
        self.upstream.backend()
    }

    fn allocate(&self, bytes: usize) -> Result<DeviceBlock> {
        let block = self.upstream.allocate(bytes);
        match &block {
            Ok(b) => {
                self.bytes.add(b.size() as u64);
                self.allocations.fetch_add(1, Ordering::Release);
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        block
    }

    fn deallocate(&self, block: DeviceBlock, after: Vec<Event>) -> Result<()> {
        let size = block.size() as u64;
        self.upstream.deallocate(block, after)?;
        self.bytes.sub(size);
        self.deallocations.fetch_add(1, Ordering::Release);
        Ok(())
    }

    fn abandon(&self, size: usize) {
        self.upstream.abandon(size);
        self.bytes.sub(size as u64);
        self.deallocations.fetch_add(1, Ordering::Release);
    }

    fn adopt(&self, block: &DeviceBlock) -> Result<()> {
        self.upstream.adopt(block)?;
        self.bytes.add(block.size() as u64);
        self.allocations.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Counted in `bytes` and `commits`, not as allocations.
    fn commit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<()> {
        self.upstream.commit(reservation, offset, len)?;
        self.bytes.add(len as u64);
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn decommit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<()> {
        self.upstream.decommit(reservation, offset, len)?;
        self.bytes.sub(len as u64);
        self.decommits.fetch_add(1, Ordering::Relaxed);
        Ok(())
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
