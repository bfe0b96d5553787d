//! Every thread's caches of every caching allocator, in one per-thread slot (jemalloc's tcache:
//! one per thread, with bins for every arena).
//!
//! Why one table for all allocators rather than a slot per allocator: a cached block keeps the
//! `Arc` to its home that it was handed out with, so a pool hit and a release move that `Arc`
//! instead of writing its reference count (two atomic read-modify-writes, about 40% of a pool
//! hit). Moving an `Arc` into a place reached through that same `Arc` cannot be written in safe
//! Rust; a table reached without it can. The cycle a kept `Arc` makes (the allocator's books
//! hold what keeps the allocator alive) is broken when the last [`CachingAllocator`] handle
//! goes: [`Inner::close`](super::Inner) takes its entries out of every thread's table.
//!
//! [`CachingAllocator`]: super::CachingAllocator

use std::sync::Arc;

use super::{Home, Inner};
use crate::backend::{DeviceBlock, Event, PerThread};
use crate::pool::per_thread::{ThreadCache, ThreadCacheLimits};

/// The table of every thread.
static TABLES: PerThread<Table> = PerThread::new();

/// Runs `f` on this thread's table, or on `None` while the thread's thread-locals are torn
/// down (blocks then take the shared path). `f` must not call back into caching allocators.
#[inline]
pub(super) fn with<R>(f: impl FnOnce(Option<&mut Table>) -> R) -> R {
    TABLES.with_while_alive(f)
}

/// Runs `f` on this thread's table, or on the orphans' table while the thread's thread-locals
/// are torn down: for counting, which must not lose a count then. No block is cached in the
/// orphans' table (blocks use [`with`]).
pub(super) fn with_counts<R>(f: impl FnOnce(&mut Table) -> R) -> R {
    TABLES.with(f)
}

/// Runs `f` on every thread's table in turn.
pub(super) fn for_each(f: impl FnMut(&mut Table)) {
    TABLES.for_each(f)
}

/// One thread's entries, one per caching allocator it has used (a handful: a scan is cheaper
/// than a hash).
#[derive(Default)]
pub(super) struct Table {
    entries: Vec<(u64, ThreadSlot)>,
}

impl Table {
    /// The entry of the allocator with key `id` (`inner`'s), made on first use; `None` once
    /// it is closed. The key comes apart from `inner` so that a release reads it from the
    /// block's home; `inner` is followed only to make an entry.
    ///
    /// Only a new entry needs to look at `closed`: `close` sets it, then takes its entry out of
    /// every table, each inside that table's owner lock. An entry found here has not been taken
    /// yet, and what goes into it now `close` takes with it; an entry made after `close` took
    /// this table's would be kept by nobody, but making one reads `closed` inside the lock, after
    /// `close` began (`PerThread::for_each`), and sees it set.
    #[inline]
    pub(super) fn entry(&mut self, id: u64, inner: &Inner) -> Option<&mut ThreadSlot> {
        let at = match self.entries.iter().position(|(of, _)| *of == id) {
            Some(at) => at,
            None => self.add(inner)?,
        };
        Some(&mut self.entries[at].1)
    }

    /// Adds an entry for `inner` unless it is closed; its index.
    #[cold]
    fn add(&mut self, inner: &Inner) -> Option<usize> {
        if inner.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        self.entries
            .push((inner.id, ThreadSlot::new(inner.thread_limits())));
        Some(self.entries.len() - 1)
    }

    /// The entry of the allocator with `id`, if this thread has one.
    pub(super) fn get(&mut self, id: u64) -> Option<&mut ThreadSlot> {
        self.entries
            .iter_mut()
            .find_map(|(of, slot)| (*of == id).then_some(slot))
    }

    /// Takes the entry of the allocator with `id` out of the table.
    pub(super) fn remove(&mut self, id: u64) -> Option<ThreadSlot> {
        let at = self.entries.iter().position(|(of, _)| *of == id)?;
        Some(self.entries.swap_remove(at).1)
    }
}

/// A block with the way home it was handed out with and the device work still using it: what a
/// [`PooledBlock`](super::PooledBlock) holds and a thread cache keeps.
///
/// Boxed, so that a pool hit and a release move one pointer rather than the block and its home
/// (seven words whose copies through memory, not their instructions, set a hit's pace: a
/// thread-local free list of such items measured 21 ns a pop and push on this VM, of boxed ones
/// 5.5 ns). The node also holds what the handle knows of the hand-out, so that the handle is
/// that one pointer too. A node outlives its block: once the block goes elsewhere (the shared
/// bins, the resource below, a caller of the
/// [`MemoryResource`](crate::resource::MemoryResource) face) the empty node waits among its
/// thread's [`spares`](ThreadSlot::take_spare) for the next block that does not come from a
/// thread cache — so neither a miss nor an unpooled allocation costs a heap allocation, or the
/// reference count of a home, in the steady state.
pub(super) struct Node {
    /// `None` only while the node is a spare.
    pub(super) block: Option<DeviceBlock>,
    pub(super) home: Arc<Home>,
    /// Unfinished device work that uses the block: its last-use events. Boxed so that a block
    /// with none (the hot path) carries one null pointer, which a release only has to test.
    pub(super) last_use: Option<Box<[Event]>>,
    /// The hand-out, kept here rather than in the [`PooledBlock`](super::PooledBlock) so that
    /// the handle is one pointer (see there): the bytes asked for,
    pub(super) requested: usize,
    /// the size of the block handed out (a block of another size coming back was swapped in),
    pub(super) capacity: usize,
    /// and its size class (`None`: not a class size, never cached).
    pub(super) class: Option<usize>,
}

/// A block in a thread cache.
pub(super) type Kept = Box<Node>;

/// The size of a kept block: its node's capacity, which a cache admits only when it is the
/// block's size ([`Inner::give_back`]).
#[inline]
pub(super) fn kept_size(node: &Kept) -> u64 {
    node.capacity as u64
}

/// Most empty nodes a thread keeps for one allocator (64 bytes each): as many blocks as a
/// thread typically frees before it allocates again.
const MAX_SPARES: usize = 64;

/// One thread's cache and counters for one allocator. Counters are per thread so that the fast
/// path writes no shared memory; a snapshot sums them.
pub(super) struct ThreadSlot {
    /// Which [`Home`] this thread's blocks use.
    pub(super) home: usize,
    pub(super) cache: ThreadCache<Kept>,
    /// The allocator's limits for a thread cache, copied here to be read beside the cache.
    pub(super) limits: ThreadCacheLimits,
    pub(super) hits: u64,
    pub(super) misses: u64,
    pub(super) oversize: u64,
    pub(super) backend_allocations: u64,
    pub(super) backend_releases: u64,
    /// Rounding waste of allocations made on this thread minus that of releases made on it;
    /// the sum over threads is exact.
    pub(super) waste: i64,
    /// Calls on this thread that went past its cache, counted so that only every
    /// `MAINTENANCE_STRIDE`th reads the clock to see whether maintenance is due.
    slow_calls: u32,
    /// Empty nodes for the next blocks that do not come from the cache ([`Node`]).
    spares: Vec<Kept>,
}

/// Slow-path calls between two looks at the clock (a clock read costs about as much as a whole
/// pool hit on this VM). Pool hits never look: a thread's own cache is bounded and small.
const MAINTENANCE_STRIDE: u32 = 256;

impl ThreadSlot {
    /// Counts a slow-path call; whether this one should look at the maintenance clock.
    pub(super) fn slow_call(&mut self) -> bool {
        self.slow_calls = self.slow_calls.wrapping_add(1);
        self.slow_calls % MAINTENANCE_STRIDE == 0
    }

    /// An empty node, if this thread kept one.
    pub(super) fn take_spare(&mut self) -> Option<Kept> {
        self.spares.pop()
    }

    /// Keeps an emptied node for the next block, unless enough are kept; hands it back then.
    pub(super) fn keep_spare(&mut self, node: Kept) -> Option<Kept> {
        debug_assert!(node.block.is_none() && node.last_use.is_none());
        if self.spares.len() >= MAX_SPARES {
            return Some(node);
        }
        self.spares.push(node);
        None
    }
}

impl ThreadSlot {
    pub(super) fn new(limits: ThreadCacheLimits) -> Self {
        // Threads take homes round-robin (a plain std atomic: no model checking needed).
        static NEXT_HOME: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        ThreadSlot {
            home: NEXT_HOME.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            cache: ThreadCache::default(),
            limits,
            hits: 0,
            misses: 0,
            oversize: 0,
            backend_allocations: 0,
            backend_releases: 0,
            waste: 0,
            slow_calls: 0,
            spares: Vec::new(),
        }
    }
}
