//! `CachingAllocator`: keeps released device blocks per size class and hands them out again
//! without a driver call.
//!
//! Each size class has its own bin behind its own lock, so threads allocating different sizes
//! never contend and no lock is global; byte accounting is lock-free ([`super::gauge`]).
//! A block released while device work may still use it carries that work's [`Event`] and is not
//! handed out again until the event has finished (stream-ordered safety).

use std::fmt;
use std::sync::Arc;

use super::gauge::{Budget, PeakGauge};
use super::SizeClasses;
use crate::backend::{Backend, DeviceBlock, Event};
use crate::error::{Error, Result};
use crate::sync::{lock, AtomicU64, Mutex, Ordering};

/// Limits of a [`CachingAllocator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachingConfig {
    /// How request sizes are rounded into classes; requests above `classes.max()` bypass the cache.
    pub classes: SizeClasses,
    /// Most bytes kept cached; beyond it the least recently released blocks go back to the device.
    pub max_cached_bytes: u64,
    /// Most cached blocks per size class.
    pub max_blocks_per_class: usize,
}

impl Default for CachingConfig {
    fn default() -> Self {
        CachingConfig {
            classes: SizeClasses::default(),
            max_cached_bytes: 2 << 30,
            max_blocks_per_class: 64,
        }
    }
}

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

/// A snapshot of a [`CachingAllocator`]'s counters.
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

/// A device allocator that caches released blocks per size class. Cheap to clone: clones share
/// one cache; each size class is locked separately and released blocks with pending device work
/// are held back until that work finishes.
#[derive(Clone)]
pub struct CachingAllocator {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    classes: SizeClasses,
    max_blocks_per_class: usize,
    bins: Box<[Mutex<Bin>]>,
    cached: Budget,
    in_use: PeakGauge,
    reserved: PeakGauge,
    /// Logical time of releases, for least-recently-released eviction across bins.
    clock: AtomicU64,
    oversize: AtomicU64,
    backend_allocations: AtomicU64,
    backend_releases: AtomicU64,
}

#[derive(Default)]
struct Bin {
    /// Cached blocks, least recently released first.
    free: Vec<Cached>,
    hits: u64,
    misses: u64,
    waste: u64,
}

struct Cached {
    block: DeviceBlock,
    released_at: u64,
    /// Device work that may still use the block.
    pending: Option<Event>,
}

impl Cached {
    /// Whether no device work can still touch the block (clearing a finished event).
    fn is_ready(&mut self) -> bool {
        match &self.pending {
            None => true,
            Some(e) if e.is_finished() => {
                self.pending = None;
                true
            }
            Some(_) => false,
        }
    }
}

impl CachingAllocator {
    /// A caching allocator over `backend` with the default limits.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self::with_config(backend, CachingConfig::default())
    }

    /// A caching allocator over `backend` with the given limits.
    pub fn with_config(backend: Arc<dyn Backend>, config: CachingConfig) -> Self {
        let bins = (0..config.classes.count())
            .map(|_| Mutex::new(Bin::default()))
            .collect();
        CachingAllocator {
            inner: Arc::new(Inner {
                backend,
                classes: config.classes,
                max_blocks_per_class: config.max_blocks_per_class,
                bins,
                cached: Budget::new(config.max_cached_bytes),
                in_use: PeakGauge::default(),
                reserved: PeakGauge::default(),
                clock: AtomicU64::new(0),
                oversize: AtomicU64::new(0),
                backend_allocations: AtomicU64::new(0),
                backend_releases: AtomicU64::new(0),
            }),
        }
    }

    /// The backend blocks come from.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// The size-class policy.
    pub fn classes(&self) -> &SizeClasses {
        &self.inner.classes
    }

    /// A block of at least `bytes` bytes: a cached one when a ready one of its class exists,
    /// otherwise a new one from the backend. On device out-of-memory every cached block is
    /// released and the allocation retried once; a second failure is `Error::OutOfMemory` with a
    /// diagnosis.
    pub fn allocate(&self, bytes: usize) -> Result<PooledBlock> {
        let inner = &self.inner;
        if bytes == 0 {
            return Err(Error::ZeroLength { what: "allocation" });
        }
        let Some(class) = inner.classes.index(bytes) else {
            let block = inner.allocate_from_backend(bytes, bytes)?;
            inner.oversize.fetch_add(1, Ordering::Relaxed);
            inner.in_use.add(bytes as u64);
            return Ok(PooledBlock::new(block, bytes, None, self.inner.clone()));
        };
        let size = inner.classes.size(class);
        let waste = (size - bytes) as u64;
        {
            let mut bin = lock(&inner.bins[class]);
            if let Some(pos) = bin.free.iter_mut().rposition(Cached::is_ready) {
                let cached = bin.free.remove(pos);
                bin.hits += 1;
                bin.waste += waste;
                drop(bin);
                inner.cached.sub(size as u64);
                inner.in_use.add(size as u64);
                return Ok(PooledBlock::new(
                    cached.block,
                    bytes,
                    Some(class),
                    self.inner.clone(),
                ));
            }
            bin.misses += 1;
        }
        let block = inner.allocate_from_backend(bytes, size)?;
        lock(&inner.bins[class]).waste += waste;
        inner.in_use.add(size as u64);
        Ok(PooledBlock::new(
            block,
            bytes,
            Some(class),
            self.inner.clone(),
        ))
    }

    /// Releases least-recently-released cached blocks to the backend until at most
    /// `target_bytes` remain cached. Returns the bytes released.
    pub fn trim(&self, target_bytes: u64) -> Result<u64> {
        self.inner.trim(target_bytes)
    }

    /// Releases every cached block to the backend. Returns the bytes released.
    pub fn release_all(&self) -> Result<u64> {
        self.inner.trim(0)
    }

    /// Changes the cached-bytes limit, trimming at once if the cache is above it.
    pub fn set_max_cached_bytes(&self, limit: u64) -> Result<()> {
        self.inner.cached.set_limit(limit);
        self.inner.trim(limit).map(drop)
    }

    /// The counters now.
    pub fn stats(&self) -> CachingStats {
        let inner = &self.inner;
        let mut stats = CachingStats {
            oversize: inner.oversize.load(Ordering::Relaxed),
            backend_allocations: inner.backend_allocations.load(Ordering::Relaxed),
            backend_releases: inner.backend_releases.load(Ordering::Relaxed),
            bytes_in_use: inner.in_use.get(),
            bytes_cached: inner.cached.used(),
            bytes_reserved: inner.reserved.get(),
            peak_in_use: inner.in_use.peak(),
            peak_reserved: inner.reserved.peak(),
            ..CachingStats::default()
        };
        for bin in inner.bins.iter() {
            let bin = lock(bin);
            stats.hits += bin.hits;
            stats.misses += bin.misses;
            stats.waste_bytes += bin.waste;
            stats.cached_blocks += bin.free.len() as u64;
            if let Some(largest) = bin.free.iter().map(|c| c.block.size() as u64).max() {
                stats.largest_cached_block = stats.largest_cached_block.max(largest);
            }
        }
        stats
    }

    /// Starts new peak windows at the current values.
    pub fn reset_peaks(&self) {
        self.inner.in_use.reset_peak();
        self.inner.reserved.reset_peak();
    }
}

impl Inner {
    fn allocate_from_backend(&self, requested: usize, size: usize) -> Result<DeviceBlock> {
        let block = match self.backend.allocate(size) {
            Err(Error::OutOfMemory { .. }) => {
                let stats_before = (self.cached.used(), self.largest_cached());
                self.trim(0)?;
                self.backend.allocate(size).map_err(|e| match e {
                    Error::OutOfMemory { backend, .. } => Error::OutOfMemory {
                        backend,
                        requested: requested as u64,
                        diagnosis: Some(Box::new(OomDiagnosis {
                            requested: requested as u64,
                            rounded: size as u64,
                            in_use: self.in_use.get(),
                            cached: stats_before.0,
                            largest_cached: stats_before.1,
                            device_free: self.backend.info().free_memory,
                        })),
                    },
                    other => other,
                })?
            }
            other => other?,
        };
        self.backend_allocations.fetch_add(1, Ordering::Relaxed);
        self.reserved.add(size as u64);
        Ok(block)
    }

    fn release_to_backend(&self, block: DeviceBlock) -> Result<()> {
        let size = block.size() as u64;
        self.backend.release(block)?;
        self.backend_releases.fetch_add(1, Ordering::Relaxed);
        self.reserved.sub(size);
        Ok(())
    }

    fn largest_cached(&self) -> u64 {
        self.bins
            .iter()
            .filter_map(|b| lock(b).free.iter().map(|c| c.block.size() as u64).max())
            .max()
            .unwrap_or(0)
    }

    /// Takes a block back from a [`PooledBlock`].
    fn give_back(
        &self,
        block: DeviceBlock,
        requested: usize,
        class: Option<usize>,
        pending: Option<Event>,
    ) {
        let size = block.size();
        self.in_use.sub(size as u64);
        let Some(class) = class else {
            // Oversized: never cached. The backend orders the release after pending work.
            let _ = self.release_to_backend(block);
            return;
        };
        let mut entry = Cached {
            block,
            released_at: self.clock.fetch_add(1, Ordering::Relaxed),
            pending,
        };
        let mut bin = lock(&self.bins[class]);
        bin.waste -= (size - requested) as u64;
        if bin.free.len() < self.max_blocks_per_class {
            if self.cached.try_add(size as u64) {
                bin.free.push(entry);
                return;
            }
            drop(bin);
            // Over the byte limit: evict the least recently released blocks to make room.
            let limit = self.cached.limit();
            if (size as u64) <= limit
                && self.trim(limit - size as u64).is_ok()
                && self.cached.try_add(size as u64)
            {
                entry.released_at = self.clock.fetch_add(1, Ordering::Relaxed);
                lock(&self.bins[class]).free.push(entry);
                return;
            }
        } else {
            drop(bin);
        }
        // Releasing to the backend can only fail for a foreign block, which `PooledBlock` rules
        // out; there is nobody to report to from a drop.
        let _ = self.release_to_backend(entry.block);
    }

    fn trim(&self, target_bytes: u64) -> Result<u64> {
        let mut released = 0;
        while self.cached.used() > target_bytes {
            // The bin whose oldest block was released longest ago.
            let oldest = self
                .bins
                .iter()
                .enumerate()
                .filter_map(|(i, b)| lock(b).free.first().map(|c| (c.released_at, i)))
                .min();
            let Some((_, class)) = oldest else { break };
            let evicted = {
                let mut bin = lock(&self.bins[class]);
                if bin.free.is_empty() {
                    continue;
                }
                bin.free.remove(0)
            };
            let size = evicted.block.size() as u64;
            self.cached.sub(size);
            self.release_to_backend(evicted.block)?;
            released += size;
        }
        Ok(released)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Every PooledBlock holds an Arc to this, so only cached blocks remain.
        let _ = self.trim(0);
    }
}

impl fmt::Debug for CachingAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingAllocator")
            .field("backend", &self.inner.backend)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A block from a [`CachingAllocator`]; goes back to the cache when dropped.
pub struct PooledBlock {
    block: Option<DeviceBlock>,
    requested: usize,
    class: Option<usize>,
    pool: Arc<Inner>,
}

impl PooledBlock {
    fn new(block: DeviceBlock, requested: usize, class: Option<usize>, pool: Arc<Inner>) -> Self {
        PooledBlock {
            block: Some(block),
            requested,
            class,
            pool,
        }
    }

    /// The device block (its size is the class size, at least [`PooledBlock::len`]).
    pub fn block(&self) -> &DeviceBlock {
        self.block.as_ref().expect("present until drop")
    }

    /// The device block, for writes.
    pub fn block_mut(&mut self) -> &mut DeviceBlock {
        self.block.as_mut().expect("present until drop")
    }

    /// Bytes requested.
    pub fn len(&self) -> usize {
        self.requested
    }

    /// Whether zero bytes were requested (never: the allocator refuses zero).
    pub fn is_empty(&self) -> bool {
        self.requested == 0
    }

    /// Bytes actually reserved (the class size).
    pub fn capacity(&self) -> usize {
        self.block().size()
    }

    /// Returns the block to the cache, not to be handed out again before `event` finishes: use it
    /// when device work that touches the block is still queued.
    pub fn release_after(mut self, event: Event) {
        if let Some(block) = self.block.take() {
            let pending = (!event.is_finished()).then_some(event);
            self.pool
                .give_back(block, self.requested, self.class, pending);
        }
    }
}

impl Drop for PooledBlock {
    fn drop(&mut self) {
        if let Some(block) = self.block.take() {
            self.pool.give_back(block, self.requested, self.class, None);
        }
    }
}

impl fmt::Debug for PooledBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledBlock")
            .field("len", &self.requested)
            .field("capacity", &self.capacity())
            .finish()
    }
}
