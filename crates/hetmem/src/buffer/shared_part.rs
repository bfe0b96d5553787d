//! [`SharedPart`]: the part of a buffer that others hold too — its two copies (lent to a
//! transfer in flight), its metric cells and whoever follows its life (a manager's record, held
//! by the manager's live list) — in one allocation.
//!
//! The copies sit in a [`LeaseCell`]: the buffer changes them through `&mut` without a lock
//! whenever no transfer holds a lease, which an `Arc` of their own proved by its counts at the
//! price of an allocation per buffer (the live list holds this part, so its counts prove
//! nothing).

use std::sync::Arc;

use super::metrics::MetricCells;
use super::shell::Shell;
use super::tracker::Slots;
use crate::backend::{CellOwner, Lease, LeaseCell, Slot};

/// A buffer's copies, metric cells and observer: shared by the buffer, its transfers in flight
/// and the observer's books. Reads as its cells.
pub(crate) struct SharedPart<O: ?Sized + Observer = dyn Observer> {
    cells: MetricCells,
    copies: LeaseCell<Slots>,
    /// Told of resizes and of the end; the last field, so that a part with any observer is a
    /// `SharedPart` of `dyn Observer`.
    pub(crate) observer: O,
}

impl SharedPart {
    /// The part of a new buffer that `observer` follows, and the owner of its copies.
    #[inline]
    pub(crate) fn new(observer: impl Observer + 'static) -> (Arc<SharedPart>, CopiesOwner) {
        let (copies, owner) = LeaseCell::new(Slots {
            host: Slot::new(None),
            device: Slot::new(None),
        });
        let part = Arc::new(SharedPart {
            cells: MetricCells::new(),
            copies,
            observer,
        });
        (part, owner)
    }

    /// [`SharedPart::new`] of a buffer nobody follows (a plain context's).
    pub(crate) fn unobserved() -> (Arc<SharedPart>, CopiesOwner) {
        SharedPart::new(Unobserved)
    }

    /// The copies, read by their owner (the buffer).
    #[inline]
    pub(super) fn copies<'a>(&'a self, owner: &'a CopiesOwner) -> &'a Slots {
        self.copies.get(owner)
    }

    /// The copies, to change, once no transfer holds them (`None` while one does).
    #[inline]
    pub(super) fn copies_mut<'a>(&'a self, owner: &'a mut CopiesOwner) -> Option<&'a mut Slots> {
        self.copies.get_mut(owner)
    }

    /// The copies for a transfer: readable on its thread until the lease drops, while the
    /// owner cannot change them.
    pub(super) fn lend_copies(self: &Arc<Self>, owner: &CopiesOwner) -> LentCopies {
        LeaseCell::lease(self.clone(), copies_of, owner)
    }
}

/// The token by which a buffer owns its copies.
pub(crate) type CopiesOwner = CellOwner;

/// A buffer's copies lent to a transfer.
pub(super) type LentCopies = Lease<SharedPart, Slots>;

fn copies_of(part: &SharedPart) -> &LeaseCell<Slots> {
    &part.copies
}

impl<O: ?Sized + Observer> std::ops::Deref for SharedPart<O> {
    type Target = MetricCells;

    fn deref(&self) -> &MetricCells {
        &self.cells
    }
}

/// Something that follows one buffer's life from inside its [`SharedPart`]: told when its
/// length changes and when the buffer is gone.
pub(crate) trait Observer: Send + Sync {
    /// The buffer's length changed from `old` to `new` bytes.
    fn resized(&self, old: usize, new: usize);

    /// The buffer is gone (called once, as it drops, after its memory went back), with its
    /// final cells.
    fn retired(&self, cells: &MetricCells);

    /// Whether [`Observer::park`] may keep the buffer (asked first: making a shell costs).
    fn parks(&self) -> bool {
        false
    }

    /// The buffer is going, whole: no transfer or device work of the user's can use its
    /// blocks. The observer may keep it as `shell` for a buffer like it — `None`: kept, and
    /// counted gone here, not in [`Observer::retired`] — or hand it back to be let go as usual.
    /// `cells` are its cells.
    fn park(&self, shell: Shell, cells: &MetricCells) -> Option<Shell> {
        let _ = cells;
        Some(shell)
    }

    /// For finding out which observer this is.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// Nobody follows the buffer.
struct Unobserved;

impl Observer for Unobserved {
    fn resized(&self, _: usize, _: usize) {}

    fn retired(&self, _: &MetricCells) {}

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
