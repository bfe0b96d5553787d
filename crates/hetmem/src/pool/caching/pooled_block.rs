//! [`PooledBlock`]: a block handed out by a [`CachingAllocator`](super::CachingAllocator), and its way back.

use std::fmt;
use std::sync::Arc;

use super::{Home, Inner};
use crate::backend::{DeviceBlock, Event};

/// A block from a [`CachingAllocator`](super::CachingAllocator); goes back to the cache when dropped.
///
/// Device work still pending on the block when it drops — the events given to
/// [`PooledBlock::record`] — goes back with it: the pool hands the block out again only once
/// all of them have finished, so a kernel still writing it never meets a second owner. A block
/// with nothing pending returns to its thread's cache (the fast path) as before.
pub struct PooledBlock {
    pub(super) taken: Option<Taken>,
    pub(super) requested: usize,
    /// The size of the block handed out: a block of another size coming back was swapped in.
    pub(super) capacity: usize,
    pub(super) class: Option<usize>,
}

/// What a [`PooledBlock`] gives back: the block, the way home, and what still runs on it.
pub(super) struct Taken {
    pub(super) block: DeviceBlock,
    pub(super) home: Arc<Home>,
    /// Unfinished device work that uses the block: its last-use events. Boxed so that a block
    /// with none (the hot path) carries one null pointer, which dropping only has to test.
    pub(super) last_use: Option<Box<[Event]>>,
}

impl PooledBlock {
    #[inline]
    pub(super) fn new(
        block: DeviceBlock,
        home: Arc<Home>,
        requested: usize,
        class: Option<usize>,
    ) -> Self {
        PooledBlock {
            capacity: block.size(),
            taken: Some(Taken {
                block,
                home,
                last_use: None,
            }),
            requested,
            class,
        }
    }

    fn taken(&self) -> &Taken {
        self.taken.as_ref().expect("present until drop")
    }

    /// The device block (its size is the class size, at least [`PooledBlock::len`]).
    pub fn block(&self) -> &DeviceBlock {
        &self.taken().block
    }

    /// The device block, for writes.
    ///
    /// Safe code can `mem::swap` another block in here. A block of the same backend and size is
    /// as good as the original and is cached; any other is counted in
    /// [`CachingStats::foreign_returns`](super::CachingStats::foreign_returns) and not cached (released to the pool's backend when it is
    /// one of its blocks, else kept for [`CachingAllocator::take_foreign_blocks`](super::CachingAllocator::take_foreign_blocks)), and the
    /// swapped-out original is the swapper's to release.
    pub fn block_mut(&mut self) -> &mut DeviceBlock {
        &mut self.taken.as_mut().expect("present until drop").block
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
        self.capacity
    }

    /// Records device work that uses the block (a kernel's event, a marker of its queue): the
    /// block is not handed out again before `event` finishes. Finished events are forgotten.
    pub fn record(&mut self, event: Event) {
        let taken = self.taken.as_mut().expect("present until drop");
        let list: Vec<Event> = unfinished(taken.last_use.take())
            .chain(Some(event).filter(|e| !e.is_finished()))
            .collect();
        taken.last_use = (!list.is_empty()).then(|| list.into_boxed_slice());
    }

    /// The recorded device work that may still be running on the block.
    pub fn last_use(&self) -> &[Event] {
        self.taken().last_use.as_deref().unwrap_or_default()
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
fn unfinished(list: Option<Box<[Event]>>) -> impl Iterator<Item = Event> {
    list.into_iter()
        .flat_map(|events| events.into_vec())
        .filter(|e| !e.is_finished())
}

impl Drop for PooledBlock {
    fn drop(&mut self) {
        if let Some(Taken {
            block,
            home,
            last_use,
        }) = self.taken.take()
        {
            if block.size() != self.capacity || block.backend() != home.backend_id {
                let class = self.class.is_some();
                home.inner
                    .give_back_foreign(block, self.capacity, self.requested, class);
                return;
            }
            // The fast path (nothing recorded) passes no list at all.
            let pending = last_use.and_then(|list| {
                let pending: Vec<Event> = unfinished(Some(list)).collect();
                (!pending.is_empty()).then_some(pending)
            });
            Inner::give_back(home, block, self.requested, self.class, pending);
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
