//! [`Lent`]: an item a pool lends for as long as the pool is borrowed, as one pointer.
//!
//! A pool's handle must find its pool again when it drops. Held beside the item, that reference
//! makes the handle two words or more, and a handle of several words returned in a `Result`
//! comes back through memory: written a word at a time by the pool and read by the caller's
//! move in 16-byte halves, loads that wait for the stores to retire (store forwarding fails) —
//! half of an array-pool rent and return on the 2-vCPU VM. So the pool's address lives in the
//! item's heap node instead, written at every lending from the borrow that the handle keeps.

use std::marker::PhantomData;
use std::ptr::NonNull;

/// An item with room for the address of the pool `P` that last lent it; what a pool keeps
/// between lendings (boxed, so that it moves as one pointer).
pub(crate) struct LentNode<P, I> {
    pub(crate) item: I,
    /// The pool of the last lending: read only through a [`Lent`] of that lending.
    pool: NonNull<P>,
}

impl<P, I> LentNode<P, I> {
    /// `item` in a node, to be lent.
    pub(crate) fn new(item: I) -> Box<Self> {
        Box::new(LentNode {
            item,
            pool: NonNull::dangling(),
        })
    }
}

// SAFETY: a node at rest is an `I` and an address never followed; it is followed only through
// a `Lent`, whose own `Send` needs `&P: Send` (its `PhantomData<&P>`).
unsafe impl<P, I: Send> Send for LentNode<P, I> {}
// SAFETY: through `&LentNode` only the `I` is reached (as `&I`); the address is followed only by
// `Lent::take_back`, which takes `&mut`.
unsafe impl<P, I: Sync> Sync for LentNode<P, I> {}

/// An item lent by `pool` for `'a`: one pointer, to its node. `None` only once taken back.
pub(crate) struct Lent<'a, P, I> {
    node: Option<Box<LentNode<P, I>>>,
    pool: PhantomData<&'a P>,
}

impl<'a, P, I> Lent<'a, P, I> {
    /// Lends `node`'s item from `pool`.
    #[inline]
    pub(crate) fn lend(pool: &'a P, mut node: Box<LentNode<P, I>>) -> Self {
        node.pool = NonNull::from(pool);
        Lent {
            node: Some(node),
            pool: PhantomData,
        }
    }

    /// The item (`None` once taken back).
    #[inline]
    pub(crate) fn item(&self) -> Option<&I> {
        self.node.as_ref().map(|node| &node.item)
    }

    /// The item, for writes (`None` once taken back).
    #[inline]
    pub(crate) fn item_mut(&mut self) -> Option<&mut I> {
        self.node.as_mut().map(|node| &mut node.item)
    }

    /// The node and the pool that lent it, once: what the handle's drop gives back.
    #[inline]
    pub(crate) fn take_back(&mut self) -> Option<(&'a P, Box<LentNode<P, I>>)> {
        let node = self.node.take()?;
        // SAFETY: `lend` wrote the address from a `&'a P`, and `self` holds that borrow (its
        // `PhantomData<&'a P>`) — the pool lives and stays put for `'a`.
        let pool = unsafe { node.pool.as_ref() };
        Some((pool, node))
    }
}
