//! `CachingAllocator`: keeps released device blocks per size class and hands them out again
//! without a driver call.
//!
//! The fast path is a per-thread cache ([`thread_caches`]): a thread reuses the blocks it
//! released without touching shared memory — not even a reference count. Behind it each size class has a shared bin with its
//! own lock, so no lock is global; byte accounting is lock-free ([`crate::gauge`]).
//! A block released while device work may still use it carries that work's [`Event`] and is not
//! handed out again until the event has finished (stream-ordered safety).
//!
//! New blocks come from the [`MemoryResource`] below (by default the backend's plain resource);
//! the allocator is itself a resource, so adaptors can sit above it as well as below.

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

mod config;
mod maintenance;
mod pooled_block;
mod resource;
mod returns;
mod stats;
mod thread_caches;

pub use config::CachingConfig;
use maintenance::Schedule;
pub use maintenance::{Headroom, MaintenancePolicy, MaintenanceReport};
pub use pooled_block::PooledBlock;
pub use stats::{CachingStats, OomDiagnosis};
use thread_caches::{kept_size, Kept, Node, ThreadSlot};

use super::per_thread::ThreadCacheLimits;
use super::SizeClasses;
use crate::backend::{Backend, BackendId, DeviceBlock, Event};
use crate::error::{Error, Result};
use crate::gauge::{Budget, PeakGauge};
use crate::resource::{LimitingResource, MemoryLimit, MemoryResource, PlainResource, Trim};
use crate::sync::{lock, AtomicU64, Mutex};

/// A device allocator that caches released blocks per size class. Cheap to clone: clones share
/// one cache.
///
/// Two layers: each thread keeps a few ready blocks per class for itself (the fast path: no
/// lock, no atomic read-modify-write), in front of shared bins with one lock per class.
/// When the last clone goes, the cache lets go of what it keeps: blocks still out go back to
/// the backend as they are dropped.
/// Released blocks with pending device work always go to the shared bins and are held back there
/// until that work finishes.
#[derive(Clone)]
pub struct CachingAllocator {
    inner: Arc<Inner>,
    homes: Arc<[Arc<Home>]>,
    /// Shared by the clones; the last one to go closes the cache.
    _open: Arc<Open>,
}

/// Closes the cache when dropped (see [`Inner::close`]).
struct Open(Arc<Inner>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// What a block holds to find its way back and keep the pool alive. A block's handout and
/// return write the reference count of its `Arc`; with one `Arc<Inner>` shared by every block,
/// that count would be the one cache line all threads write (measured: 2 threads ran 4.5×
/// slower per operation than 1). So there are several homes, each thread uses its own, and each
/// home sits on its own cache lines.
///
/// A home also carries what a release reads first — the allocator's key and backend — so that
/// the fast path finds them one load nearer than through `inner`.
#[repr(align(128))]
pub(super) struct Home {
    pub(super) inner: Arc<Inner>,
    /// `inner.id`.
    pub(super) id: u64,
    /// `inner.backend_id`.
    pub(super) backend_id: BackendId,
}

pub(super) struct Inner {
    /// This allocator's key in every thread's cache table.
    id: u64,
    /// No handle is left: nothing is cached any more (see [`Inner::close`]).
    closed: AtomicBool,
    /// Where new blocks come from and evicted ones go.
    upstream: Arc<dyn MemoryResource>,
    backend: Arc<dyn Backend>,
    /// `backend.id()`, kept so that a returning block is checked without a virtual call.
    pub(super) backend_id: BackendId,
    config: CachingConfig,
    bins: Box<[Mutex<Vec<Cached>>]>,
    /// Bytes in the shared bins plus every thread cache's credit: never above the limit.
    cached: Budget,
    /// Bytes out of the shared cache: in use plus thread-cached. Its peak is `peak_in_use`.
    held: PeakGauge,
    reserved: PeakGauge,
    /// Logical time of releases, for least-recently-released eviction across bins.
    clock: AtomicU64,
    /// When and how cached memory goes back on its own.
    schedule: Schedule,
    foreign_returns: AtomicU64,
    /// Blocks of another backend swapped in, kept for [`CachingAllocator::take_foreign_blocks`]:
    /// the pool cannot release them, not holding their backend.
    foreign: Mutex<Vec<DeviceBlock>>,
}

struct Cached {
    block: DeviceBlock,
    released_at: u64,
    /// When it was cached, for idle release.
    since: Instant,
    /// Device work that may still use the block (its last-use events).
    pending: Vec<Event>,
}

impl Cached {
    /// Whether no device work can still touch the block (forgetting finished events).
    fn is_ready(&mut self) -> bool {
        self.pending.retain(|e| !e.is_finished());
        self.pending.is_empty()
    }
}

impl CachingAllocator {
    /// A caching allocator over `backend`'s plain resource with the default limits.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self::with_config(backend, CachingConfig::default())
    }

    /// A caching allocator over `backend`'s plain resource with the given limits.
    pub fn with_config(backend: Arc<dyn Backend>, config: CachingConfig) -> Self {
        Self::over(Arc::new(PlainResource::new(backend)), config)
    }

    /// A caching allocator whose backend allocations are charged to `limit` (which may be
    /// shared with other pools): one over a [`LimitingResource`]. When a block would not fit,
    /// every pool under the limit releases its cache before the allocation fails with
    /// `Error::LimitExceeded`.
    pub fn with_limit(
        backend: Arc<dyn Backend>,
        config: CachingConfig,
        limit: MemoryLimit,
    ) -> Self {
        let plain = Arc::new(PlainResource::new(backend));
        Self::over(Arc::new(LimitingResource::new(plain, limit)), config)
    }

    /// A caching allocator over any resource stack. It registers with the stack so that a
    /// resource below that runs short of memory can ask it to trim.
    pub fn over(upstream: Arc<dyn MemoryResource>, config: CachingConfig) -> Self {
        let bins = (0..config.classes.count())
            .map(|_| Mutex::new(Vec::new()))
            .collect();
        let backend = upstream.backend().clone();
        /// Allocators' keys in the thread cache tables.
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let inner = Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            closed: AtomicBool::new(false),
            backend_id: backend.id(),
            upstream,
            backend,
            config,
            bins,
            cached: Budget::new(config.max_cached_bytes),
            held: PeakGauge::default(),
            reserved: PeakGauge::default(),
            clock: AtomicU64::new(0),
            // An allocator that caches nothing has nothing to maintain: no clock reads.
            schedule: Schedule::new(match config.max_cached_bytes {
                0 => MaintenancePolicy::off(),
                _ => MaintenancePolicy::default(),
            }),
            foreign_returns: AtomicU64::new(0),
            foreign: Mutex::new(Vec::new()),
        });
        let cache: Arc<dyn Trim> = inner.clone();
        inner.upstream.on_pressure(Arc::downgrade(&cache));
        // Twice the cores, so that threads rarely share a home.
        // A power of two, so that a thread's home is a mask away rather than a division (a
        // 64-bit division costs about as much as the rest of a pool hit's bookkeeping).
        let homes = std::thread::available_parallelism()
            .map_or(8, |n| 2 * n.get())
            .next_power_of_two();
        CachingAllocator {
            homes: (0..homes.clamp(4, 64))
                .map(|_| {
                    Arc::new(Home {
                        inner: inner.clone(),
                        id: inner.id,
                        backend_id: inner.backend_id,
                    })
                })
                .collect(),
            _open: Arc::new(Open(inner.clone())),
            inner,
        }
    }

    /// The backend blocks come from.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// The resource new blocks come from.
    pub fn upstream(&self) -> &Arc<dyn MemoryResource> {
        &self.inner.upstream
    }

    /// The size-class policy.
    pub fn classes(&self) -> &SizeClasses {
        &self.inner.config.classes
    }

    /// A block of at least `bytes` bytes: a cached one when a ready one of its class exists,
    /// otherwise a new one from the backend. On device out-of-memory every cached block is
    /// released and the allocation retried once; a second failure is `Error::OutOfMemory` with a
    /// diagnosis.
    #[inline]
    pub fn allocate(&self, bytes: usize) -> Result<PooledBlock> {
        let inner = &self.inner;
        let Some((class, size)) = inner.config.classes.class(bytes) else {
            return self.allocate_unpooled(bytes);
        };
        let waste = (size - bytes) as i64;
        // A handle is alive (this one), so the cache is open: no need to look.
        let hit = thread_caches::with(|table| {
            let t = table?.entry(inner.id, inner)?;
            let kept = t.cache.take(class, kept_size)?;
            t.hits += 1;
            t.waste += waste;
            Some(kept)
        });
        match hit {
            Some(node) => Ok(PooledBlock::cached(node, bytes)),
            None => self.allocate_past_thread_cache(bytes, class, size),
        }
    }

    /// Zero bytes (refused), or more than the largest class: exactly what was asked, or more
    /// where the resource below rounds (a splitting resource). The books hold the block's own
    /// size, which is what comes back.
    #[cold]
    #[inline(never)]
    fn allocate_unpooled(&self, bytes: usize) -> Result<PooledBlock> {
        let inner = &self.inner;
        if bytes == 0 {
            return Err(Error::ZeroLength { what: "allocation" });
        }
        let block = inner.allocate_from_backend(bytes, bytes)?;
        inner.held.add(block.size() as u64);
        let (home, spare) = inner.count(|t| {
            t.oversize += 1;
            t.backend_allocations += 1;
            (t.home, t.take_spare())
        });
        Ok(self.pooled(block, bytes, None, home, spare))
    }

    /// A block of `class` (`size` bytes) from the shared bin, or else from the resource below.
    #[inline(never)]
    fn allocate_past_thread_cache(
        &self,
        bytes: usize,
        class: usize,
        size: usize,
    ) -> Result<PooledBlock> {
        let inner = &self.inner;
        let shared = {
            let mut bin = lock(&inner.bins[class]);
            let ready = bin.iter_mut().rposition(Cached::is_ready);
            ready.map(|pos| bin.remove(pos).block)
        };
        let block = match shared {
            Some(block) => {
                inner.cached.sub(size as u64);
                inner.count(|t| t.hits += 1);
                block
            }
            None => {
                crate::trace::span!("hetmem.pool_miss", requested = bytes, size);
                let block = inner.allocate_from_backend(bytes, size)?;
                inner.count(|t| {
                    t.misses += 1;
                    t.backend_allocations += 1;
                });
                block
            }
        };
        inner.held.add(size as u64);
        let (home, spare, check) = inner.count(|t| {
            t.waste += (size - bytes) as i64;
            (t.home, t.take_spare(), t.slow_call())
        });
        if check {
            inner.maybe_maintain();
        }
        Ok(self.pooled(block, bytes, Some(class), home, spare))
    }

    /// Takes `block` — memory adopted from outside hetmem by this pool's backend (see
    /// [`crate::host`]) — into the pool's books as a handle like any other: charged to the stack
    /// below (a limit may refuse it), never cached, and given back to the backend when the
    /// handle drops. A refused block is released to its backend at once, as a dropped handle
    /// would be.
    pub fn adopt(&self, block: DeviceBlock) -> Result<PooledBlock> {
        let inner = &self.inner;
        if let Err(e) = inner.upstream.adopt(&block) {
            let _ = inner.backend.release(block);
            return Err(e);
        }
        let size = block.size();
        inner.held.add(size as u64);
        inner.reserved.add(size as u64);
        let (home, spare) = inner.count(|t| (t.home, t.take_spare()));
        Ok(self.pooled(block, size, None, home, spare))
    }

    /// The home of index `home` (a thread's [`ThreadSlot::home`]).
    fn home(&self, home: usize) -> Arc<Home> {
        self.homes[home & (self.homes.len() - 1)].clone()
    }

    /// A handle on `block`, in this thread's `spare` node or else a new one with home `home`.
    fn pooled(
        &self,
        block: DeviceBlock,
        requested: usize,
        class: Option<usize>,
        home: usize,
        spare: Option<Kept>,
    ) -> PooledBlock {
        PooledBlock::new(self.node(block, home, spare), requested, class)
    }

    /// `block` in the `spare` node, or in a new one with home `home`.
    fn node(&self, block: DeviceBlock, home: usize, spare: Option<Kept>) -> Kept {
        match spare {
            Some(mut node) => {
                node.block = Some(block);
                node
            }
            None => Box::new(Node {
                block: Some(block),
                home: self.home(home),
                last_use: None,
                requested: 0,
                capacity: 0,
                class: None,
            }),
        }
    }

    /// Releases least-recently-released cached blocks to the resource below until at most
    /// `target_bytes` remain cached (thread caches are emptied into the shared bins first).
    /// Returns the bytes released.
    pub fn trim_to(&self, target_bytes: u64) -> Result<u64> {
        self.inner.trim_to(target_bytes)
    }

    /// Releases every cached block to the resource below. Returns the bytes released.
    pub fn trim(&self) -> Result<u64> {
        self.inner.trim_to(0)
    }

    /// Changes the cached-bytes limit, trimming at once if the cache is above it.
    pub fn set_max_cached_bytes(&self, limit: u64) -> Result<()> {
        self.inner.cached.set_limit(limit);
        self.inner.trim_to(limit).map(drop)
    }

    /// The counters now: exact whenever no allocation or release is in flight.
    ///
    /// `peak_in_use` counts blocks sitting in thread caches as in use (keeping it exact would
    /// put a shared counter on the fast path); with `thread_cache_blocks: 0` it is exact.
    pub fn stats(&self) -> CachingStats {
        self.inner.stats()
    }

    /// Whether `block` was handed out by this pool (and goes back to it).
    pub(crate) fn owns(&self, block: &PooledBlock) -> bool {
        block.home_id() == self.inner.id
    }

    /// Blocks of another backend that came back in place of this pool's own (see
    /// [`PooledBlock::block_mut`]), for the caller to release to the backend they came from.
    pub fn take_foreign_blocks(&self) -> Vec<DeviceBlock> {
        std::mem::take(&mut *lock(&self.inner.foreign))
    }

    /// Starts new peak windows at the current values (thread caches are emptied into the
    /// shared bins so that the in-use window starts exact).
    pub fn reset_peaks(&self) {
        self.inner.flush_threads();
        self.inner.held.reset_peak();
        self.inner.reserved.reset_peak();
    }
}

impl Inner {
    pub(super) fn thread_limits(&self) -> ThreadCacheLimits {
        ThreadCacheLimits {
            items_per_class: self.config.thread_cache_blocks,
            bytes: self.config.thread_cache_bytes,
        }
    }

    fn allocate_from_backend(&self, requested: usize, size: usize) -> Result<DeviceBlock> {
        let block = self.allocate_or_relieve(requested, size)?;
        self.reserved.add(block.size() as u64);
        Ok(block)
    }

    /// A block from the resource below; on out-of-memory, after every cache over that resource
    /// (this one included, and all under a shared limit: they share the device too) has given
    /// back its blocks, retrying once.
    fn allocate_or_relieve(&self, requested: usize, size: usize) -> Result<DeviceBlock> {
        match self.upstream.allocate(size) {
            Err(Error::OutOfMemory { .. }) => {
                let before = self.stats();
                self.upstream.relieve()?;
                self.upstream.allocate(size).map_err(|e| match e {
                    Error::OutOfMemory { backend, .. } => Error::OutOfMemory {
                        backend,
                        requested: requested as u64,
                        diagnosis: Some(Box::new(OomDiagnosis {
                            requested: requested as u64,
                            rounded: size as u64,
                            in_use: self.stats().bytes_in_use,
                            cached: before.bytes_cached,
                            largest_cached: before.largest_cached_block,
                            device_free: self.backend.info().free_memory,
                        })),
                    },
                    other => other,
                })
            }
            other => other,
        }
    }

    fn release_to_backend(&self, block: DeviceBlock, pending: Vec<Event>) -> Result<()> {
        let size = block.size() as u64;
        self.upstream.deallocate(block, pending)?;
        self.count(|t| t.backend_releases += 1);
        self.reserved.sub(size);
        Ok(())
    }

    /// Runs `f` on this thread's counters for this allocator (when it is closed, on a
    /// throwaway set: nobody reads them any more, and its entries are gone from the tables).
    fn count<R>(&self, f: impl FnOnce(&mut ThreadSlot) -> R) -> R {
        thread_caches::with_counts(|table| match table.entry(self.id, self) {
            Some(t) => f(t),
            None => f(&mut ThreadSlot::new(self.thread_limits())),
        })
    }

    /// Moves every thread cache's blocks into the shared bins.
    fn flush_threads(&self) {
        let mut kept = Vec::new();
        thread_caches::for_each(|table| {
            if let Some(t) = table.get(self.id) {
                kept.extend(t.cache.drain(&self.cached));
            }
        });
        // Each node goes here, outside the tables' locks (with its home's `Arc`; the caller
        // holds another).
        for (class, node) in kept {
            if let Some(block) = node.block {
                self.held.sub(block.size() as u64);
                self.give_to_shared(block, class, Vec::new());
            }
        }
    }

    /// The last handle went: takes this cache's entries out of every thread's table (their
    /// blocks back to the resource below, their `Arc`s dropped, which breaks the cycle kept
    /// blocks make) and releases the shared bins. From now on blocks coming back go straight
    /// to the resource below.
    ///
    /// A release racing with this either entered its thread's table before `for_each` came to
    /// it — and `for_each` waits for it and takes what it kept — or reads `closed` inside its
    /// table's owner lock after `for_each` began, and sees it set (`PerThread::for_each`).
    fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut kept = Vec::new();
        let mut slots = Vec::new();
        thread_caches::for_each(|table| {
            if let Some(mut t) = table.remove(self.id) {
                kept.extend(t.cache.drain(&self.cached));
                slots.push(t);
            }
        });
        // The nodes and spares drop here, outside the tables' locks.
        drop(slots);
        for (_, node) in kept {
            if let Some(block) = node.block {
                self.held.sub(block.size() as u64);
                let _ = self.release_to_backend(block, Vec::new());
            }
        }
        // Nobody to report to from a drop; the blocks stay with the resource below.
        let _ = self.evict(0);
    }

    fn trim_to(&self, target_bytes: u64) -> Result<u64> {
        self.flush_threads();
        self.evict(target_bytes)
    }

    /// Releases the least recently released blocks of the shared bins until at most
    /// `target_bytes` of budget are used. Returns the bytes released.
    fn evict(&self, target_bytes: u64) -> Result<u64> {
        let mut released = 0;
        while self.cached.used() > target_bytes {
            // The bin whose oldest block was released longest ago.
            let oldest = self
                .bins
                .iter()
                .enumerate()
                .filter_map(|(i, b)| lock(b).first().map(|c| (c.released_at, i)))
                .min();
            let Some((_, class)) = oldest else { break };
            let evicted = {
                let mut bin = lock(&self.bins[class]);
                if bin.is_empty() {
                    continue;
                }
                bin.remove(0)
            };
            let size = evicted.block.size() as u64;
            self.cached.sub(size);
            self.release_to_backend(evicted.block, evicted.pending)?;
            released += size;
        }
        Ok(released)
    }
}

impl Trim for Inner {
    fn trim(&self) -> Result<u64> {
        self.trim_to(0)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Every PooledBlock holds an Arc to this, so only cached blocks remain; and the last
        // handle closed the cache (`close`), so none is in a thread's table: only the bins.
        let _ = self.evict(0);
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
