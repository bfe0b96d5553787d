//! [`MemoryStats`]: one snapshot of everything a manager knows; [`StatsDelta`]: what changed
//! inside a [`StatsScope`]; and the human-readable [`MemoryStats::summary`].

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{MemoryManager, ParkedStats};
use crate::backend::HostBackend;
use crate::buffer::Side;
use crate::host::SourceStats;
use crate::pool::{CachingStats, PinnedStats, SplittingResource, SplittingStats};
use crate::transfer::{DirectionStats, TransferStats};

/// A manager's statistics at one moment. Exact whenever no allocation or release is in flight.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct MemoryStats {
    /// Buffers made.
    pub allocations: u64,
    /// Buffers dropped.
    pub releases: u64,
    /// Bytes of live buffers (their lengths, whichever sides they use).
    pub bytes_current: u64,
    /// Highest `bytes_current` since the manager was made or peaks were reset.
    pub bytes_peak: u64,
    /// Bytes of all buffers ever made (growth through resizes included).
    pub bytes_allocated: u64,
    /// Bytes of all buffers dropped (shrinking through resizes included).
    pub bytes_released: u64,
    /// The pool device memory comes from.
    pub device: CachingStats,
    /// The pool host copies come from.
    pub host: CachingStats,
    /// The segments the splitting allocator under the device pool holds (zero where
    /// splitting is off): blocks above 4 KiB are carved from them.
    pub device_segments: SplittingStats,
    /// The same under the host pool.
    pub host_segments: SplittingStats,
    /// Buffers dropped whole and kept for the next like them (see
    /// [`MemoryManagerBuilder::parked_buffers`](super::MemoryManagerBuilder::parked_buffers)):
    /// their blocks count cached in `device` and `host` here.
    pub parked: ParkedStats,
    /// The pool of shared allocations (SVM, managed memory) of `Placement::Shared` buffers, on
    /// devices that have them (zero elsewhere).
    pub shared: CachingStats,
    /// Every transfer the manager's buffers made.
    pub transfers: TransferStats,
    /// The engine's page-locked memory: staging, and the host copies of `HostPinned` buffers.
    pub pinned: PinnedStats,
    /// What the host memory source was granted (huge pages, fallbacks, locked bytes).
    pub host_source: SourceStats,
    /// The memory limit, if one is set.
    pub limit: Option<u64>,
}

impl MemoryStats {
    pub(crate) fn collect(manager: &MemoryManager) -> Self {
        let registry = &manager.registry;
        let ctx = &manager.context;
        // One snapshot of every thread's counters: each release counted has its allocation
        // counted, so releases ≤ allocations.
        let totals = registry.totals();
        let parked = registry.parked();
        let pool = |pool: &crate::pool::CachingAllocator, side: Side| {
            let side = side as usize;
            let mut stats = pool.stats();
            stats.bytes_in_use -= parked.bytes[side].min(stats.bytes_in_use);
            stats.bytes_cached += parked.bytes[side];
            stats.cached_blocks += parked.blocks[side];
            let largest = stats.largest_cached_block.max(parked.largest_block[side]);
            stats.largest_cached_block = largest;
            stats
        };
        MemoryStats {
            parked,
            allocations: totals.allocations,
            releases: totals.releases,
            bytes_current: registry.live_bytes.get(),
            bytes_peak: registry.live_bytes.peak(),
            bytes_allocated: totals.bytes_allocated,
            bytes_released: totals.bytes_released,
            device: pool(ctx.device_pool(), Side::Device),
            host: pool(ctx.host_pool(), Side::Host),
            shared: ctx.shared_pool().map(|p| p.stats()).unwrap_or_default(),
            device_segments: segments(&manager.splitting[0]),
            host_segments: segments(&manager.splitting[1]),
            transfers: ctx.engine().stats(),
            pinned: ctx.engine().staging_pool().stats(),
            host_source: (ctx.host_pool().backend().as_any())
                .downcast_ref::<HostBackend>()
                .map(HostBackend::source_stats)
                .unwrap_or_default(),
            limit: manager.limit(),
        }
    }

    /// Live buffers. Exact when no buffer is made or dropped meanwhile; otherwise it may
    /// count some made during the snapshot, never fewer than zero (each release seen has its
    /// allocation seen).
    pub fn live_buffers(&self) -> u64 {
        self.allocations.saturating_sub(self.releases)
    }

    /// The caching pools: device, host, shared.
    fn pools(&self) -> [&CachingStats; 3] {
        [&self.device, &self.host, &self.shared]
    }

    /// `field` summed over the pools.
    fn summed(&self, field: impl Fn(&CachingStats) -> u64) -> u64 {
        self.pools().into_iter().map(field).sum()
    }

    /// Free bytes in the splitting allocators' segments: held from the backends, in no block.
    fn free_in_segments(&self) -> u64 {
        (self.device_segments.reserved_bytes - self.device_segments.used_bytes)
            + (self.host_segments.reserved_bytes - self.host_segments.used_bytes)
    }

    /// Bytes the pools hold from their backends: in use plus cached (free segment space
    /// included).
    pub fn reserved_bytes(&self) -> u64 {
        self.summed(|p| p.bytes_reserved) + self.free_in_segments()
    }

    /// Bytes in blocks handed out by the pools.
    pub fn in_use_bytes(&self) -> u64 {
        self.summed(|p| p.bytes_in_use)
    }

    /// Bytes held and not in use: cached blocks of the pools and free segment space.
    pub fn cached_bytes(&self) -> u64 {
        self.summed(|p| p.bytes_cached) + self.free_in_segments()
    }

    /// Requests the pools served from memory they held, and those that took memory from their
    /// backends, all pools: the caching allocators' class hits and misses, and where a splitting
    /// allocator serves a pool, its carves and reuses (every request comes down to it) with
    /// those that needed a new segment or a commit as the misses. A buffer made of a parked
    /// one is a hit.
    pub fn pool_requests(&self) -> (u64, u64) {
        let pairs = [
            (&self.device, &self.device_segments),
            (&self.host, &self.host_segments),
        ];
        let (mut hits, mut misses) = (self.shared.hits + self.parked.reuses, self.shared.misses);
        for (cache, split) in pairs {
            if split.carves + split.reuses == 0 {
                (hits, misses) = (hits + cache.hits, misses + cache.misses);
            } else {
                (hits, misses) = (hits + cache.hits + split.hits(), misses + split.misses());
            }
        }
        (hits, misses)
    }

    /// Pool hits over pool requests, all pools (0 before any request): see
    /// [`MemoryStats::pool_requests`].
    pub fn hit_rate(&self) -> f64 {
        let (hits, misses) = self.pool_requests();
        let requests = hits + misses;
        if requests == 0 {
            0.0
        } else {
            hits as f64 / requests as f64
        }
    }

    /// Bytes lost to rounding up to size classes in blocks in use.
    pub fn waste_bytes(&self) -> u64 {
        self.summed(|p| p.waste_bytes)
    }

    /// External fragmentation of the caches: the share of cached bytes outside the largest cached
    /// block (0 when nothing or one block is cached; near 1 when the cache is many small pieces
    /// that cannot serve a large request).
    pub fn fragmentation(&self) -> f64 {
        let cached = self.cached_bytes();
        let largest = (self.pools().into_iter())
            .map(|p| p.largest_cached_block)
            .chain([
                self.device_segments.largest_free,
                self.host_segments.largest_free,
            ])
            .max()
            .unwrap_or(0);
        if cached == 0 {
            0.0
        } else {
            1.0 - largest as f64 / cached as f64
        }
    }

    /// A table of these statistics in the manner of PyTorch's `memory_summary()`.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let rule = "-".repeat(72);
        let _ = writeln!(out, "{rule}\n hetmem memory summary\n{rule}");
        let _ = writeln!(
            out,
            "{:<26}{:>15}{:>15}{:>16}",
            "", "current", "peak", "total"
        );
        let row = |out: &mut String, name: &str, current: String, peak: String, total: String| {
            let _ = writeln!(out, "{name:<26}{current:>15}{peak:>15}{total:>16}");
        };
        row(
            &mut out,
            "buffers",
            self.live_buffers().to_string(),
            "-".into(),
            self.allocations.to_string(),
        );
        row(
            &mut out,
            "buffer bytes",
            bytes(self.bytes_current),
            bytes(self.bytes_peak),
            bytes(self.bytes_allocated),
        );
        let parked = &self.parked;
        if parked.buffers + parked.reuses > 0 {
            let held = bytes(parked.bytes.iter().sum());
            let now = format!("{} ({held})", parked.buffers);
            let reused = format!("{} reused", parked.reuses);
            row(&mut out, "parked buffers", now, "-".into(), reused);
        }
        let pools = [
            ("device pool", &self.device),
            ("host pool", &self.host),
            ("shared pool", &self.shared),
        ];
        // The shared pool only once a device's shared allocations were used.
        let used = |(name, pool): &(&str, &CachingStats)| {
            *name != "shared pool" || pool.backend_allocations > 0
        };
        for (name, pool) in pools.into_iter().filter(used) {
            row(
                &mut out,
                &format!("{name} in use"),
                bytes(pool.bytes_in_use),
                bytes(pool.peak_in_use),
                "-".into(),
            );
            row(
                &mut out,
                &format!("{name} reserved"),
                bytes(pool.bytes_reserved),
                bytes(pool.peak_reserved),
                format!("{} allocs", pool.backend_allocations),
            );
            row(
                &mut out,
                &format!("{name} cached"),
                bytes(pool.bytes_cached),
                "-".into(),
                format!("{} blocks", pool.cached_blocks),
            );
        }
        for (name, s) in [
            ("device segments", &self.device_segments),
            ("host segments", &self.host_segments),
        ] {
            if s.segment_allocations > 0 {
                row(
                    &mut out,
                    name,
                    bytes(s.reserved_bytes),
                    format!("{} used", bytes(s.used_bytes)),
                    format!("{} segments", s.segments),
                );
            }
        }
        let _ = writeln!(out, "{rule}");
        let _ = writeln!(
            out,
            "pool hit rate {:.1}%   rounding waste {}   cache fragmentation {:.1}%   limit {}",
            100.0 * self.hit_rate(),
            bytes(self.waste_bytes()),
            100.0 * self.fragmentation(),
            self.limit.map_or_else(|| "none".to_string(), bytes)
        );
        let t = &self.transfers;
        for (name, d) in [
            ("host -> device", &t.host_to_device),
            ("device -> host", &t.device_to_host),
            ("device -> device", &t.device_to_device),
        ] {
            let _ = writeln!(out, "{name:<17}{}", transfers(d));
        }
        let _ = writeln!(
            out,
            "transfer retries {}   failures {}",
            t.retries, t.failures
        );
        let (p, h) = (&self.pinned, &self.host_source);
        let _ = writeln!(
            out,
            "pinned           {} reserved, {} cached, {} hits / {} misses",
            bytes(p.bytes_reserved),
            bytes(p.bytes_cached),
            p.hits,
            p.misses
        );
        if h.transparent_huge_pages + h.huge_pages + h.locked_bytes > 0 || h.last_fallback.is_some()
        {
            let _ = writeln!(
                out,
                "host pages       {} base, {} transparent huge, {} huge; {} locked{}",
                h.base_pages,
                h.transparent_huge_pages,
                h.huge_pages,
                bytes(h.locked_bytes),
                h.last_fallback
                    .as_ref()
                    .map_or_else(String::new, |why| format!("; fell back: {why}"))
            );
        }
        let _ = writeln!(out, "{rule}");
        out
    }
}

impl fmt::Display for MemoryStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

/// What a splitting allocator holds, zero where there is none.
fn segments(split: &Option<Arc<SplittingResource>>) -> SplittingStats {
    split.as_ref().map(|s| s.stats()).unwrap_or_default()
}

fn transfers(d: &DirectionStats) -> String {
    let bandwidth = d
        .bandwidth()
        .map_or_else(|| "-".into(), |b| format!("{:.2} GB/s", b / 1e9));
    format!(
        "{:>8} transfers {:>12}   average {bandwidth}   peak {:.2} GB/s",
        d.transfers,
        bytes(d.bytes),
        d.peak_bandwidth / 1e9
    )
}

/// `n` bytes in binary units, as people read them.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// What happened between the opening of a [`StatsScope`] and now.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct StatsDelta {
    /// Buffers made.
    pub allocations: u64,
    /// Buffers dropped.
    pub releases: u64,
    /// Bytes of buffers made (and grown).
    pub bytes_allocated: u64,
    /// Bytes of buffers dropped (and shrunk).
    pub bytes_released: u64,
    /// Highest live bytes reached, over the live bytes when the scope opened.
    pub peak_increase: u64,
    /// Pool hits, all pools.
    pub pool_hits: u64,
    /// Pool misses (backend allocations), all pools.
    pub pool_misses: u64,
    /// Host → device transfers.
    pub host_to_device: DirectionStats,
    /// Device → host transfers.
    pub device_to_host: DirectionStats,
}

impl StatsDelta {
    /// Bytes made minus bytes dropped: what the region left allocated.
    pub fn net_bytes(&self) -> i64 {
        self.bytes_allocated as i64 - self.bytes_released as i64
    }
}

/// A region whose statistics are measured on their own, like RMM's counter stack: scopes nest,
/// and each reports only what happened since it opened. Made by
/// [`MemoryManager::stats_scope`].
pub struct StatsScope<'a> {
    manager: &'a MemoryManager,
    start: MemoryStats,
    peak: Arc<AtomicU64>,
}

impl<'a> StatsScope<'a> {
    pub(crate) fn open(manager: &'a MemoryManager) -> Self {
        let peak = manager.registry.open_scope();
        StatsScope {
            start: manager.stats(),
            manager,
            peak,
        }
    }

    /// What changed since the scope opened.
    pub fn delta(&self) -> StatsDelta {
        let now = self.manager.stats();
        let s = &self.start;
        let d = |now: DirectionStats, then: DirectionStats| DirectionStats {
            transfers: now.transfers - then.transfers,
            bytes: now.bytes - then.bytes,
            time: now.time.saturating_sub(then.time),
            peak_bandwidth: now.peak_bandwidth,
        };
        let peak = self.peak.load(Ordering::Relaxed).max(now.bytes_current);
        StatsDelta {
            allocations: now.allocations - s.allocations,
            releases: now.releases - s.releases,
            bytes_allocated: now.bytes_allocated - s.bytes_allocated,
            bytes_released: now.bytes_released - s.bytes_released,
            peak_increase: peak.saturating_sub(s.bytes_current),
            pool_hits: now.pool_requests().0 - s.pool_requests().0,
            pool_misses: now.pool_requests().1 - s.pool_requests().1,
            host_to_device: d(now.transfers.host_to_device, s.transfers.host_to_device),
            device_to_host: d(now.transfers.device_to_host, s.transfers.device_to_host),
        }
    }
}

impl Drop for StatsScope<'_> {
    fn drop(&mut self) {
        self.manager.registry.close_scope(&self.peak);
    }
}
