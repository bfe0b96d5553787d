//! A thread's own cache of a pool, kept in the pool's [`PerThread`] slot: the pools' fast path,
//! which writes no shared memory.

pub(crate) use crate::backend::PerThread;
use crate::gauge::Budget;

/// Items a thread keeps for itself, per size class, charged against a shared [`Budget`] through
/// credit: the thread takes budget only when its cache grows past what it already holds, so the
/// fast path writes no shared memory and the budget still bounds every thread's cache.
pub(crate) struct ThreadCache<I> {
    free: Vec<Vec<I>>,
    /// Bytes in `free`.
    bytes: u64,
    /// Bytes of the budget this thread holds; never below `bytes`.
    credit: u64,
}

impl<I> Default for ThreadCache<I> {
    fn default() -> Self {
        ThreadCache {
            free: Vec::new(),
            bytes: 0,
            credit: 0,
        }
    }
}

/// How much one thread may keep.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ThreadCacheLimits {
    pub(crate) items_per_class: usize,
    pub(crate) bytes: u64,
}

impl<I> ThreadCache<I> {
    /// The most recently kept item of `class` and its size.
    #[inline]
    pub(crate) fn take(&mut self, class: usize, size_of: impl Fn(&I) -> u64) -> Option<I> {
        let item = self.free.get_mut(class)?.pop()?;
        self.bytes -= size_of(&item);
        Some(item)
    }

    /// Keeps `item` (of `size` bytes) if the limits and the thread's budget credit allow;
    /// hands it back otherwise.
    #[inline]
    pub(crate) fn keep(
        &mut self,
        item: I,
        class: usize,
        size: u64,
        limits: ThreadCacheLimits,
        budget: &Budget,
    ) -> Option<I> {
        if !self.admit(class, size, limits, budget) {
            return Some(item);
        }
        self.push(item, class, size);
        None
    }

    /// Whether one more item of `class` (of `size` bytes) fits the limits and the thread's
    /// budget credit (taking more credit where needed); [`ThreadCache::push`] then keeps it.
    #[inline]
    pub(crate) fn admit(
        &mut self,
        class: usize,
        size: u64,
        limits: ThreadCacheLimits,
        budget: &Budget,
    ) -> bool {
        let bytes = self.bytes + size;
        if bytes > limits.bytes || limits.items_per_class == 0 {
            return false;
        }
        if self.free.len() <= class {
            self.free.resize_with(class + 1, Vec::new);
        }
        if self.free[class].len() >= limits.items_per_class {
            return false;
        }
        if bytes > self.credit {
            if !budget.try_add(bytes - self.credit) {
                return false;
            }
            self.credit = bytes;
        }
        true
    }

    /// Keeps an item [`ThreadCache::admit`] just admitted.
    #[inline]
    pub(crate) fn push(&mut self, item: I, class: usize, size: u64) {
        self.free[class].push(item);
        self.bytes += size;
    }

    /// Empties the cache, returning its credit to `budget`; the items come back with their class.
    pub(crate) fn drain(&mut self, budget: &Budget) -> Vec<(usize, I)> {
        budget.sub(self.credit);
        self.credit = 0;
        self.bytes = 0;
        let mut items = Vec::new();
        for (class, free) in self.free.iter_mut().enumerate() {
            items.extend(free.drain(..).map(|item| (class, item)));
        }
        items
    }

    /// The items kept now.
    pub(crate) fn items(&self) -> impl Iterator<Item = &I> {
        self.free.iter().flatten()
    }

    /// Bytes kept now.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Budget bytes held now (at least [`ThreadCache::bytes`]).
    pub(crate) fn credit(&self) -> u64 {
        self.credit
    }
}

/// The credit protocol under loom: two threads keeping and draining items against one budget
/// never hold more than the budget admits, and draining returns every unit.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    #[test]
    fn loom_thread_caches_stay_within_the_budget() {
        loom::model(|| {
            let budget = Arc::new(Budget::new(3));
            let limits = ThreadCacheLimits {
                items_per_class: 2,
                bytes: 2,
            };
            let handles: Vec<_> = (0..2)
                .map(|t| {
                    let budget = budget.clone();
                    thread::spawn(move || {
                        let mut cache = ThreadCache::default();
                        let mut kept = 0;
                        for item in 0..2u32 {
                            if cache.keep(item, 0, 1, limits, &budget).is_none() {
                                kept += 1;
                            }
                        }
                        assert!(budget.used() <= 3);
                        assert_eq!(cache.credit(), kept);
                        let taken = cache.take(0, |_| 1);
                        assert_eq!(taken.is_some(), kept > 0);
                        if t == 0 {
                            cache.drain(&budget);
                            0
                        } else {
                            cache.credit()
                        }
                    })
                })
                .collect();
            let still_held: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
            // Thread 0 drained; only thread 1's credit remains charged.
            assert_eq!(budget.used(), still_held);
            assert!(still_held <= 2);
        });
    }
}
