//! How blocks come back to a [`CachingAllocator`](super::CachingAllocator): into the
//! releasing thread's cache when they fit (no lock, no reference count written), else into the
//! shared bins — held there while device work may still use them — or to the resource below.

use std::sync::Arc;
use std::time::Instant;

use super::thread_caches::{self, Kept, ThreadSlot};
use super::{Cached, Home, Inner};
use crate::backend::{DeviceBlock, Event};
use crate::sync::{lock, Ordering};

impl Inner {
    /// Takes back a block that is not the one handed out (a size of `owed` bytes): the pool's own
    /// block left with whoever swapped it out, so it leaves the books; the stranger is released
    /// to this pool's backend when it is one of its blocks, and set aside otherwise.
    pub(super) fn give_back_foreign(
        &self,
        stranger: DeviceBlock,
        owed: usize,
        requested: usize,
        class: bool,
    ) {
        self.foreign_returns.fetch_add(1, Ordering::Relaxed);
        self.held.sub(owed as u64);
        self.reserved.sub(owed as u64);
        self.upstream.abandon(owed);
        if class {
            self.count(|t| t.waste -= (owed - requested) as i64);
        }
        if stranger.backend() == self.backend_id {
            // Straight to the backend: the stack below never handed the stranger out. Nobody
            // to report a failure to from a drop; the stranger was the backend's anyway.
            let _ = self.backend.release(stranger);
        } else {
            lock(&self.foreign).push(stranger);
        }
    }

    /// Takes a block back from a [`PooledBlock`], with the `Arc` to its home it was handed out
    /// with: both go into this thread's cache when they fit, so neither a lock nor a reference
    /// count is written.
    #[inline]
    pub(super) fn give_back(
        home: Arc<Home>,
        block: DeviceBlock,
        requested: usize,
        class: Option<usize>,
        pending: Option<Vec<Event>>,
    ) {
        let size = block.size();
        let (Some(class), None) = (class, &pending) else {
            // Oversized (never cached) or with device work pending (shared bins only).
            return home
                .inner
                .give_back_slowly(block, requested, class, pending);
        };
        let waste = (size - requested) as i64;
        // The closure borrows `kept` rather than taking it: moved in, it would be copied into
        // the closure and out again (measured: a third of the release).
        let mut kept = Some(Kept { block, home });
        thread_caches::with(|table| {
            let home = &kept.as_ref()?.home;
            let t = table?.entry(home.id, &home.inner)?;
            t.waste -= waste;
            if t.cache
                .admit(class, size as u64, t.limits, &home.inner.cached)
            {
                t.cache.push(kept.take()?, class, size as u64);
            }
            None::<()>
        });
        if let Some(Kept { block, home }) = kept {
            home.inner.give_to_shared_or_back(block, class, Vec::new());
        }
    }

    /// Takes back an oversized block, or one with device work pending.
    #[cold]
    fn give_back_slowly(
        &self,
        block: DeviceBlock,
        requested: usize,
        class: Option<usize>,
        pending: Option<Vec<Event>>,
    ) {
        let pending = pending.unwrap_or_default();
        match class {
            Some(class) => {
                let waste = (block.size() - requested) as i64;
                self.count(|t| t.waste -= waste);
                self.give_to_shared_or_back(block, class, pending);
            }
            // Oversized: never cached.
            None => {
                self.held.sub(block.size() as u64);
                let _ = self.release_to_backend(block, pending);
            }
        }
    }

    /// A block of `class` that no thread cache keeps: into the shared bins, or to the resource
    /// below once the cache is closed.
    fn give_to_shared_or_back(&self, block: DeviceBlock, class: usize, pending: Vec<Event>) {
        self.held.sub(block.size() as u64);
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = self.release_to_backend(block, pending);
        } else {
            self.give_to_shared(block, class, pending);
        }
        if self.count(ThreadSlot::slow_call) {
            self.maybe_maintain();
        }
    }

    /// Caches a block in its shared bin, evicting least recently released blocks when the byte
    /// limit is reached, or releases it to the backend when it cannot be cached.
    pub(super) fn give_to_shared(&self, block: DeviceBlock, class: usize, pending: Vec<Event>) {
        let size = block.size() as u64;
        for attempt in 0..2 {
            let mut bin = lock(&self.bins[class]);
            if bin.len() >= self.config.max_blocks_per_class {
                break;
            }
            if self.cached.try_add(size) {
                let released_at = self.clock.fetch_add(1, Ordering::Relaxed);
                bin.push(Cached {
                    block,
                    released_at,
                    since: Instant::now(),
                    pending,
                });
                return;
            }
            drop(bin);
            // Over the byte limit: evict the least recently released blocks to make room.
            let limit = self.cached.limit();
            if attempt > 0 || size > limit || self.evict(limit - size).is_err() {
                break;
            }
        }
        // Releasing can only fail for a foreign block, which `PooledBlock`'s drop sorts out;
        // there is nobody to report to from a drop.
        let _ = self.release_to_backend(block, pending);
    }
}
