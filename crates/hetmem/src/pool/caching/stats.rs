//! [`CachingStats`] and [`OomDiagnosis`]: what a caching allocator reports.

use std::fmt;

use super::thread_caches::kept_size;
use super::Inner;
use crate::sync::{lock, Ordering};

/// What the allocator knew when the device ran out of memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomDiagnosis {
    /// Bytes requested (before rounding).
    pub requested: u64,
    /// Bytes the request rounded to.
    pub rounded: u64,
    /// Bytes in blocks handed out and not yet released.
    pub in_use: u64,
    /// Bytes cached when the first attempt failed (all released before the retry).
    pub cached: u64,
    /// Largest cached block when the first attempt failed.
    pub largest_cached: u64,
    /// The device's free memory after the retry, where the driver reports it.
    pub device_free: Option<u64>,
}

impl fmt::Display for OomDiagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "requested {} B (rounded to {} B); {} B in use; {} B was cached (largest block {} B) \
             and has been released; device free memory: {}",
            self.requested,
            self.rounded,
            self.in_use,
            self.cached,
            self.largest_cached,
            self.device_free
                .map_or_else(|| "unknown".to_owned(), |b| format!("{b} B"))
        )
    }
}

/// A snapshot of a [`CachingAllocator`](super::CachingAllocator)'s counters.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CachingStats {
    /// Allocations served from the cache.
    pub hits: u64,
    /// Allocations that needed the backend (pooled sizes only).
    pub misses: u64,
    /// Oversized allocations, never cached.
    pub oversize: u64,
    /// Blocks allocated from the backend.
    pub backend_allocations: u64,
    /// Blocks released to the backend.
    pub backend_releases: u64,
    /// Bytes in blocks handed out.
    pub bytes_in_use: u64,
    /// Bytes in cached blocks.
    pub bytes_cached: u64,
    /// Bytes held from the backend: `bytes_in_use + bytes_cached`.
    pub bytes_reserved: u64,
    /// Most bytes in use since creation or the last `reset_peaks`.
    pub peak_in_use: u64,
    /// Most bytes reserved since creation or the last `reset_peaks`.
    pub peak_reserved: u64,
    /// Rounding waste of blocks in use: class size minus requested size, summed.
    pub waste_bytes: u64,
    /// Number of cached blocks.
    pub cached_blocks: u64,
    /// Size of the largest cached block.
    pub largest_cached_block: u64,
    /// Blocks that came back other than they were handed out — swapped through
    /// [`PooledBlock::block_mut`](super::PooledBlock::block_mut) for a block of another size or backend. The pool let go of its
    /// own block (now the swapper's to release; it counts as neither held nor released) and did
    /// not cache the stranger.
    pub foreign_returns: u64,
    /// Maintenance runs (see [`MaintenancePolicy`](super::MaintenancePolicy)).
    pub maintenance_runs: u64,
    /// Bytes maintenance released because they sat idle past the policy's `idle_release`.
    pub idle_released_bytes: u64,
    /// Times maintenance trimmed the whole cache because memory was short.
    pub pressure_trims: u64,
}

impl CachingStats {
    /// Fraction of pooled allocations served from the cache, 0 when there were none.
    pub fn hit_rate(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

impl Inner {
    /// Sums the shared counters, every thread's counters and cache, and the shared bins.
    pub(super) fn stats(&self) -> CachingStats {
        let mut stats = CachingStats {
            foreign_returns: self.foreign_returns.load(Ordering::Relaxed),
            maintenance_runs: self
                .schedule
                .runs
                .load(std::sync::atomic::Ordering::Relaxed),
            idle_released_bytes: (self.schedule.idle_released)
                .load(std::sync::atomic::Ordering::Relaxed),
            pressure_trims: (self.schedule.pressure_trims)
                .load(std::sync::atomic::Ordering::Relaxed),
            bytes_reserved: self.reserved.get(),
            peak_in_use: self.held.peak(),
            peak_reserved: self.reserved.peak(),
            ..CachingStats::default()
        };
        let (mut credit, mut thread_bytes, mut waste) = (0u64, 0u64, 0i64);
        let mut count_free = |sizes: &mut dyn Iterator<Item = u64>| {
            for size in sizes {
                stats.cached_blocks += 1;
                stats.largest_cached_block = stats.largest_cached_block.max(size);
            }
        };
        super::thread_caches::for_each(|table| {
            let Some(t) = table.get(self.id) else { return };
            count_free(&mut t.cache.items().map(kept_size));
            credit += t.cache.credit();
            thread_bytes += t.cache.bytes();
            waste += t.waste;
            stats.hits += t.hits;
            stats.misses += t.misses;
            stats.oversize += t.oversize;
            stats.backend_allocations += t.backend_allocations;
            stats.backend_releases += t.backend_releases;
        });
        for bin in self.bins.iter() {
            count_free(&mut lock(bin).iter().map(|c| c.block.size() as u64));
        }
        stats.bytes_cached = (self.cached.used() + thread_bytes).saturating_sub(credit);
        stats.bytes_in_use = stats.bytes_reserved.saturating_sub(stats.bytes_cached);
        stats.waste_bytes = waste.max(0) as u64;
        stats
    }
}
