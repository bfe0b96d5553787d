//! How blocks come back to a [`CachingAllocator`](super::CachingAllocator): into the
//! releasing thread's cache when they fit (no lock, no reference count written), else into the
//! shared bins — held there while device work may still use them — or to the resource below.

use std::time::Instant;

use super::pooled_block::unfinished;
use super::thread_caches::{self, Kept, ThreadSlot};
use super::{Cached, Inner};
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

    /// Takes a block back from a [`PooledBlock`](super::PooledBlock) in the node it was handed
    /// out in (which says what was handed out): both go into this thread's cache when they
    /// fit, so neither a lock nor a reference count is written and only the node's pointer
    /// moves.
    #[inline]
    pub(super) fn give_back(node: Kept) {
        let Some(block) = &node.block else { return };
        let size = block.size();
        let ours = size == node.capacity && block.backend() == node.home.backend_id;
        let (Some(class), true, None) = (node.class, ours, &node.last_use) else {
            // Swapped, oversized (never cached), or with device work recorded.
            return Inner::give_back_slowly(node);
        };
        let waste = (size - node.requested) as i64;
        // The closure borrows `kept` rather than taking it: moved in, it would be copied into
        // the closure and out again.
        let mut kept = Some(node);
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
        if let Some(mut node) = kept {
            if let Some(block) = node.block.take() {
                node.home
                    .inner
                    .give_to_shared_or_back(block, class, Vec::new());
            }
            Inner::spare(node);
        }
    }

    /// Takes back a block swapped for another, an oversized one, or one with device work
    /// recorded (held back in the shared bins while it runs, cached as usual once it is done).
    #[cold]
    fn give_back_slowly(mut node: Kept) {
        let Some(block) = node.block.take() else {
            return;
        };
        let (requested, capacity, class) = (node.requested, node.capacity, node.class);
        let recorded = node.last_use.take();
        let inner = &node.home.inner;
        if block.size() != capacity || block.backend() != node.home.backend_id {
            // What was recorded ran on the swapped-out block, the swapper's now.
            inner.give_back_foreign(block, capacity, requested, class.is_some());
            return Inner::spare(node);
        }
        // Matched rather than collected from an empty iterator, which costs ~90 instructions
        // on the manager's every release.
        let pending: Vec<Event> = match recorded {
            Some(list) => unfinished(Some(list)).collect(),
            None => Vec::new(),
        };
        match class {
            Some(_) if pending.is_empty() => {
                // Everything recorded has finished: the fast way.
                node.block = Some(block);
                return Inner::give_back(node);
            }
            Some(class) => {
                let waste = (block.size() - requested) as i64;
                inner.count(|t| t.waste -= waste);
                inner.give_to_shared_or_back(block, class, pending);
            }
            // Oversized (or unpooled, or adopted): never cached.
            None => return Inner::release_uncached(block, pending, node),
        }
        Inner::spare(node);
    }

    /// Releases a block no cache keeps to the resource below, keeping its node among this
    /// thread's spares in the same visit to the thread's counts (the manager's buffers take
    /// this way).
    fn release_uncached(block: DeviceBlock, pending: Vec<Event>, node: Kept) {
        let inner = &node.home.inner;
        let size = block.size() as u64;
        inner.held.sub(size);
        // Nobody to report a failure to from a drop; the block stays the resource's.
        let released = inner.upstream.deallocate(block, pending).is_ok();
        if released {
            inner.reserved.sub(size);
        }
        let mut node = Some(node);
        thread_caches::with_counts(|table| {
            let home = &node.as_ref()?.home;
            // None when closed: nobody reads the counts any more.
            let t = table.entry(home.id, &home.inner)?;
            t.backend_releases += u64::from(released);
            node = t.keep_spare(node.take()?);
            None::<()>
        });
        // Any node left drops here, outside the table: its home's `Arc` may be the last.
        drop(node);
    }

    /// Keeps an emptied node among this thread's spares (dropped when there is no room, the
    /// thread is ending, or the allocator is closed).
    pub(super) fn spare(node: Kept) {
        let mut node = Some(node);
        thread_caches::with(|table| {
            let home = &node.as_ref()?.home;
            let t = table?.entry(home.id, &home.inner)?;
            node = t.keep_spare(node.take()?);
            None::<()>
        });
        // Any node left drops here, outside the table: its home's `Arc` may be the last.
        drop(node);
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
