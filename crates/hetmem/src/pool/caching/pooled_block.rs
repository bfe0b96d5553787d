//! [`PooledBlock`]: a block handed out by a [`CachingAllocator`](super::CachingAllocator), and its way back.

use std::fmt;

use super::thread_caches::{Kept, Node};
use super::Inner;
use crate::backend::{DeviceBlock, Event};

/// A block from a [`CachingAllocator`](super::CachingAllocator); goes back to the cache when dropped.
///
/// Device work still pending on the block when it drops — the events given to
/// [`PooledBlock::record`] — goes back with it: the pool hands the block out again only once
/// all of them have finished, so a kernel still writing it never meets a second owner. A block
/// with nothing pending returns to its thread's cache (the fast path) as before.
///
/// One pointer, to the node that holds the block and the hand-out's sizes: a handle of several
/// words comes back from `allocate` through memory, written a word at a time and read by the
/// caller's move out of the `Result` in 16-byte halves — loads that wait for the stores to
/// retire (store forwarding fails) — about 6 ns of a pool hit on this VM; one word forwards.
pub struct PooledBlock {
    /// The block, its way home, its recorded device work and the hand-out; `None` once dropped.
    pub(super) node: Option<Kept>,
}

impl PooledBlock {
    /// `node`'s block, handed out for `requested` bytes of `class`.
    pub(super) fn new(mut node: Kept, requested: usize, class: Option<usize>) -> Self {
        node.capacity = node.block.as_ref().map_or(0, DeviceBlock::size);
        node.class = class;
        Self::cached(node, requested)
    }

    /// A node from a thread cache, handed out again for `requested` bytes: its block, capacity
    /// and class are what they were when it was kept.
    #[inline]
    pub(super) fn cached(mut node: Kept, requested: usize) -> Self {
        node.requested = requested;
        PooledBlock { node: Some(node) }
    }

    fn node(&self) -> &Node {
        self.node.as_ref().expect("present until drop")
    }

    fn node_mut(&mut self) -> &mut Node {
        self.node.as_mut().expect("present until drop")
    }

    /// The device block (its size is the class size, at least [`PooledBlock::len`]).
    pub fn block(&self) -> &DeviceBlock {
        self.node()
            .block
            .as_ref()
            .expect("a handed-out node holds its block")
    }

    /// The device block, for writes.
    ///
    /// Safe code can `mem::swap` another block in here. A block of the same backend and size is
    /// as good as the original and is cached; any other is counted in
    /// [`CachingStats::foreign_returns`](super::CachingStats::foreign_returns) and not cached (released to the pool's backend when it is
    /// one of its blocks, else kept for [`CachingAllocator::take_foreign_blocks`](super::CachingAllocator::take_foreign_blocks)), and the
    /// swapped-out original is the swapper's to release.
    pub fn block_mut(&mut self) -> &mut DeviceBlock {
        (self.node_mut().block.as_mut()).expect("a handed-out node holds its block")
    }

    /// Bytes requested.
    pub fn len(&self) -> usize {
        self.node().requested
    }

    /// Whether zero bytes were requested (never: the allocator refuses zero).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key of the pool it came from.
    pub(super) fn home_id(&self) -> u64 {
        self.node().home.id
    }

    /// Bytes actually reserved (the class size).
    pub fn capacity(&self) -> usize {
        self.node().capacity
    }

    /// Records device work that uses the block (a kernel's event, a marker of its queue): the
    /// block is not handed out again before `event` finishes. Finished events are forgotten.
    pub fn record(&mut self, event: Event) {
        let node = self.node_mut();
        let list: Vec<Event> = unfinished(node.last_use.take())
            .chain(Some(event).filter(|e| !e.is_finished()))
            .collect();
        node.last_use = (!list.is_empty()).then(|| list.into_boxed_slice());
    }

    /// The recorded device work that may still be running on the block.
    pub fn last_use(&self) -> &[Event] {
        self.node().last_use.as_deref().unwrap_or_default()
    }

    /// Returns the block to the cache, not to be handed out again before `event` (and what was
    /// recorded) finishes: use it when device work that touches the block is still queued.
    pub fn release_after(mut self, event: Event) {
        self.record(event);
    }
}

/// Lets a pooled block go wherever a block is borrowed, e.g. into a
/// [`TransferRequest`](crate::transfer::TransferRequest).
impl std::borrow::Borrow<DeviceBlock> for PooledBlock {
    fn borrow(&self) -> &DeviceBlock {
        self.block()
    }
}

impl std::borrow::BorrowMut<DeviceBlock> for PooledBlock {
    fn borrow_mut(&mut self) -> &mut DeviceBlock {
        self.block_mut()
    }
}

/// The events of `list` not yet finished.
pub(super) fn unfinished(list: Option<Box<[Event]>>) -> impl Iterator<Item = Event> {
    list.into_iter()
        .flat_map(|events| events.into_vec())
        .filter(|e| !e.is_finished())
}

impl Drop for PooledBlock {
    #[inline]
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            Inner::give_back(node);
        }
    }
}

impl fmt::Debug for PooledBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledBlock")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}
