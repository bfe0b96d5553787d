//! [`PinnedPool`]: a caching pool of a device's page-locked host memory (its staging memory) —
//! RMM's pinned memory resource, PyTorch's `CachingHostAllocator`. Page-locking is slow
//! (`cuMemHostAlloc` takes milliseconds) and pinned memory is scarce, so buffers are reused by
//! size class, bounded by a cache limit and an overall limit, and counted.
//!
//! A buffer may go back with device work still pending on it: a [`StagingBuffer`] records that
//! work, and its next user's host access waits for it — so reuse is safe without waiting here.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use super::SizeClasses;
use crate::backend::{Backend, StagingBuffer};
use crate::error::{Error, Result};
use crate::gauge::Budget;
use crate::resource::Trim;
use crate::sync::{lock, AtomicU64, Mutex, Ordering};

/// Limits of a [`PinnedPool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedConfig {
    /// How requests round up (buffers above the largest class are never cached).
    pub classes: SizeClasses,
    /// Most bytes kept for reuse; beyond it, returned buffers are freed.
    pub max_cached_bytes: u64,
    /// Most page-locked bytes at once, handed out and cached together; a request beyond it
    /// first frees the cache, then fails with `Error::LimitExceeded`.
    pub max_bytes: u64,
}

impl Default for PinnedConfig {
    fn default() -> Self {
        PinnedConfig {
            classes: SizeClasses::power_of_two(),
            max_cached_bytes: 1 << 30,
            max_bytes: u64::MAX,
        }
    }
}

/// What a [`PinnedPool`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PinnedStats {
    /// Requests served from the cache.
    pub hits: u64,
    /// Requests that page-locked new memory.
    pub misses: u64,
    /// Page-locked bytes now: handed out plus cached.
    pub bytes_reserved: u64,
    /// The most page-locked bytes at once.
    pub peak_reserved: u64,
    /// Bytes cached for reuse now.
    pub bytes_cached: u64,
}

/// A caching pool of page-locked host memory; cheap to clone (clones share the cache).
#[derive(Clone)]
pub struct PinnedPool {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    config: PinnedConfig,
    bins: Box<[Mutex<Vec<StagingBuffer>>]>,
    /// Page-locked bytes, handed out and cached, within `max_bytes`.
    reserved: Budget,
    peak: AtomicU64,
    cached: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Page-locked memory from a [`PinnedPool`], given back when dropped. Dereferences to the
/// [`StagingBuffer`] (which may be longer than asked: its class's size).
pub struct PinnedBuffer {
    staging: Option<StagingBuffer>,
    requested: usize,
    class: Option<usize>,
    home: Arc<Inner>,
}

impl PinnedPool {
    /// A pool of `backend`'s staging memory with the default limits.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self::with_config(backend, PinnedConfig::default())
    }

    /// A pool of `backend`'s staging memory with the given limits.
    pub fn with_config(backend: Arc<dyn Backend>, config: PinnedConfig) -> Self {
        let bins = (0..config.classes.count())
            .map(|_| Mutex::new(Vec::new()))
            .collect();
        PinnedPool {
            inner: Arc::new(Inner {
                backend,
                config,
                bins,
                reserved: Budget::new(config.max_bytes),
                peak: AtomicU64::new(0),
                cached: AtomicU64::new(0),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
            }),
        }
    }

    /// The backend whose staging memory this is.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// At least `bytes` of page-locked memory: a cached buffer of its class, or a new one.
    pub fn take(&self, bytes: usize) -> Result<PinnedBuffer> {
        let inner = &self.inner;
        if bytes == 0 {
            return Err(Error::ZeroLength {
                what: "pinned allocation",
            });
        }
        let class = inner.config.classes.class(bytes);
        if let Some((index, _)) = class {
            if let Some(staging) = lock(&inner.bins[index]).pop() {
                inner
                    .cached
                    .fetch_sub(staging.len() as u64, Ordering::Relaxed);
                inner.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(self.handle(staging, bytes, Some(index)));
            }
        }
        let size = class.map_or(bytes, |(_, size)| size);
        inner.charge(size)?;
        let staging = inner
            .backend
            .allocate_staging(size)
            .inspect_err(|_| inner.reserved.sub(size as u64))?;
        inner.misses.fetch_add(1, Ordering::Relaxed);
        Ok(self.handle(staging, bytes, class.map(|(index, _)| index)))
    }

    fn handle(
        &self,
        staging: StagingBuffer,
        requested: usize,
        class: Option<usize>,
    ) -> PinnedBuffer {
        PinnedBuffer {
            staging: Some(staging),
            requested,
            class,
            home: self.inner.clone(),
        }
    }

    /// The counters now.
    pub fn stats(&self) -> PinnedStats {
        let inner = &self.inner;
        PinnedStats {
            hits: inner.hits.load(Ordering::Relaxed),
            misses: inner.misses.load(Ordering::Relaxed),
            bytes_reserved: inner.reserved.used(),
            peak_reserved: inner.peak.load(Ordering::Relaxed),
            bytes_cached: inner.cached.load(Ordering::Relaxed),
        }
    }
}

impl Trim for PinnedPool {
    /// Frees every cached buffer; returns the bytes freed.
    fn trim(&self) -> Result<u64> {
        Ok(self.inner.trim())
    }
}

impl Inner {
    /// Counts `size` new page-locked bytes against `max_bytes`, freeing the cache first if
    /// they would not fit.
    fn charge(&self, size: usize) -> Result<()> {
        let size = size as u64;
        let admitted = self.reserved.admit(size).or_else(|| {
            self.trim();
            self.reserved.admit(size)
        });
        let Some(reserved) = admitted else {
            return Err(Error::LimitExceeded {
                requested: size,
                limit: self.config.max_bytes,
                in_use: self.reserved.used(),
            });
        };
        self.peak.fetch_max(reserved, Ordering::Relaxed);
        Ok(())
    }

    fn trim(&self) -> u64 {
        let mut freed = 0;
        for bin in self.bins.iter() {
            for staging in std::mem::take(&mut *lock(bin)) {
                freed += staging.len() as u64;
            }
        }
        self.cached.fetch_sub(freed, Ordering::Relaxed);
        self.reserved.sub(freed);
        freed
    }

    /// Takes a buffer back: cached if its class has room under the cache limit, else freed.
    fn give_back(&self, staging: StagingBuffer, class: Option<usize>) {
        let size = staging.len() as u64;
        if let Some(index) = class {
            let cached = self.cached.fetch_add(size, Ordering::Relaxed) + size;
            if cached <= self.config.max_cached_bytes {
                lock(&self.bins[index]).push(staging);
                return;
            }
            self.cached.fetch_sub(size, Ordering::Relaxed);
        }
        drop(staging); // waits for pending device work, then frees
        self.reserved.sub(size);
    }
}

impl PinnedBuffer {
    /// Bytes asked for (the buffer may be longer).
    pub fn requested(&self) -> usize {
        self.requested
    }
}

impl Deref for PinnedBuffer {
    type Target = StagingBuffer;
    fn deref(&self) -> &StagingBuffer {
        self.staging.as_ref().expect("present until drop")
    }
}

impl DerefMut for PinnedBuffer {
    fn deref_mut(&mut self) -> &mut StagingBuffer {
        self.staging.as_mut().expect("present until drop")
    }
}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        if let Some(staging) = self.staging.take() {
            self.home.give_back(staging, self.class);
        }
    }
}

impl std::fmt::Debug for PinnedBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedBuffer")
            .field("requested", &self.requested)
            .field("len", &self.len())
            .finish()
    }
}

impl std::fmt::Debug for PinnedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedPool")
            .field("backend", &self.inner.backend)
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::HostBackend;

    /// Over the host backend's staging (heap) memory, also under Miri: reuse and the books.
    #[test]
    fn reuse_keeps_the_books() {
        let pool = PinnedPool::new(Arc::new(HostBackend::new()));
        let first = pool.take(600).unwrap();
        assert_eq!(first.len(), 1024);
        drop(first);
        let mut second = pool.take(1000).unwrap();
        second.as_mut_slice().unwrap()[999] = 1;
        let big = pool.take(3000).unwrap();
        let stats = pool.stats();
        assert_eq!((stats.hits, stats.misses), (1, 2));
        assert_eq!((stats.bytes_reserved, stats.bytes_cached), (1024 + 4096, 0));
        drop((second, big));
        assert_eq!(pool.trim().unwrap(), 5120);
        assert_eq!(pool.stats().peak_reserved, 5120);
    }
}
