//! [`LeaseCell`]: a value inside shared memory (an `Arc` that others hold too) that one owner
//! changes through `&mut` without a lock whenever no lease of it is out — the uniqueness an
//! `Arc` of its own would prove by its counts, proved instead by a count of leases, so that the
//! value can share its allocation with things others keep.
//!
//! A buffer's two copies live in its shared part beside its metric cells, which a manager's
//! live list holds for as long as the buffer lives: an `Arc` of the copies' own (one heap
//! allocation more per buffer) was the only way to show, by its counts, that no transfer still
//! uses them. Here a transfer takes a [`Lease`] instead, and the owner's `&mut` access waits
//! for none to be out.
//!
//! The owner is whoever holds the cell's [`CellOwner`], made with it: shared access and new
//! leases need `&CellOwner`, changes need `&mut CellOwner` and no lease out. So while the owner
//! changes the value nobody can read it or take a lease, and a lease reads it only while the
//! owner cannot change it. Cell and token share an id no other cell ever has (not an address,
//! which a later cell may take), from per-thread blocks: no shared write per cell.

use std::cell::{Cell, UnsafeCell};
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// A value its owner changes without a lock while no [`Lease`] of it is out.
pub(crate) struct LeaseCell<T> {
    /// Shared with its owner token only.
    id: u64,
    /// Leases out.
    leases: AtomicUsize,
    value: UnsafeCell<T>,
}

// SAFETY: the cell owns its value; sending it sends the value.
unsafe impl<T: Send> Send for LeaseCell<T> {}
// SAFETY: through `&LeaseCell` the value is read as `&T` by the owner and by leases on any
// thread (so `T: Sync`) and changed as `&mut T` only by the owner holding `&mut CellOwner` with
// no lease out — when no `&T` exists (see `get_mut`) — possibly on another thread than the one
// that made it (so `T: Send`).
unsafe impl<T: Send + Sync> Sync for LeaseCell<T> {}

/// The right to change a [`LeaseCell`]'s value, and to read it and lease it out. Not `Clone`:
/// there is one per cell.
#[derive(Debug)]
pub(crate) struct CellOwner {
    /// Its cell's (checked on every use: a token works only its own cell).
    id: u64,
}

/// A new id, never given before in this process: each thread takes a block of a million at a
/// time from a shared counter (which would take 2^44 blocks to run out).
fn new_id() -> u64 {
    const BLOCK: u64 = 1 << 20;
    static BLOCKS: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        /// The next id of this thread's block, and the block's end.
        static NEXT: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }
    NEXT.with(|next| {
        let (mut id, mut end) = next.get();
        if id == end {
            id = BLOCKS.fetch_add(BLOCK, Ordering::Relaxed);
            end = id + BLOCK;
        }
        next.set((id + 1, end));
        id
    })
}

impl CellOwner {
    /// A token of no cell: what is left where a cell's own token was handed on.
    pub(crate) fn none() -> Self {
        CellOwner { id: u64::MAX }
    }
}

impl<T> LeaseCell<T> {
    /// A cell holding `value`, and its owner token.
    #[inline]
    pub(crate) fn new(value: T) -> (Self, CellOwner) {
        let id = new_id();
        let cell = LeaseCell {
            id,
            leases: AtomicUsize::new(0),
            value: UnsafeCell::new(value),
        };
        (cell, CellOwner { id })
    }

    /// Panics unless `owner` is this cell's (a bug in the caller: tokens are never mixed up).
    #[inline]
    fn check(&self, owner: &CellOwner) {
        assert_eq!(owner.id, self.id, "another cell's owner token");
    }

    /// The value, read by its owner. The result borrows the token too (not only the cell), so
    /// that no `&mut` can be made while it lives.
    #[inline]
    pub(crate) fn get<'a>(&'a self, owner: &'a CellOwner) -> &'a T {
        self.check(owner);
        // SAFETY: `&mut T` is made only under `&mut CellOwner` (see `get_mut`), which cannot
        // coexist with the `&CellOwner` borrowed here for the result's lifetime.
        unsafe { &*self.value.get() }
    }

    /// The value, to change, when no lease is out.
    ///
    /// The `&mut` comes from `&self` by design: the exclusive borrow of `owner`, held for as
    /// long as the result, is the proof.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub(crate) fn get_mut<'a>(&'a self, owner: &'a mut CellOwner) -> Option<&'a mut T> {
        self.check(owner);
        // Acquire: pairs with the release decrement of each lease dropped, so its reads happen
        // before our writes.
        if self.leases.load(Ordering::Acquire) != 0 {
            return None;
        }
        // SAFETY: the only `&T`s are the owner's (`get`, needing `&CellOwner`, which the
        // `&mut CellOwner` borrowed here for the result's lifetime excludes) and the leases'
        // (none is out, and a new one needs `&CellOwner` too): this is the only reference.
        Some(unsafe { &mut *self.value.get() })
    }

    /// A lease of the cell that `cell` finds inside `holder` (which keeps it alive and in
    /// place): shared access for as long as it lives, on any thread, while the owner's
    /// [`LeaseCell::get_mut`] gives `None`.
    pub(crate) fn lease<U: ?Sized>(
        holder: Arc<U>,
        cell: fn(&U) -> &LeaseCell<T>,
        owner: &CellOwner,
    ) -> Lease<U, T> {
        let found = cell(&holder);
        found.check(owner);
        let (start, at) = (
            Arc::as_ptr(&holder).cast::<u8>() as usize,
            found as *const _ as usize,
        );
        assert!(
            at >= start
                && at + std::mem::size_of::<Self>() <= start + std::mem::size_of_val(&*holder),
            "a lease's cell lies inside its holder, which keeps it"
        );
        // Relaxed: the owner's next `get_mut` needs `&mut CellOwner`, so it happens after this
        // `&CellOwner` borrow ended, and whatever ended it ordered the two.
        found.leases.fetch_add(1, Ordering::Relaxed);
        Lease {
            cell: found as *const LeaseCell<T>,
            _holder: holder,
        }
    }
}

/// Shared access to a [`LeaseCell`]'s value while its owner cannot change it; given back when
/// dropped.
pub(crate) struct Lease<U: ?Sized, T> {
    /// Inside `_holder`'s target, which does not move while the `Arc` lives.
    cell: *const LeaseCell<T>,
    _holder: Arc<U>,
}

// SAFETY: a lease is an `Arc<U>` plus shared access to a `T` inside it: sending it lets another
// thread read the `T` (so `T: Sync`) and keep the `U` alive (as an `Arc<U>` needs).
unsafe impl<U: ?Sized + Send + Sync, T: Sync> Send for Lease<U, T> {}
// SAFETY: as above; through `&Lease` only `&T` is reachable.
unsafe impl<U: ?Sized + Send + Sync, T: Sync> Sync for Lease<U, T> {}

impl<U: ?Sized, T> Lease<U, T> {
    fn cell(&self) -> &LeaseCell<T> {
        // SAFETY: `cell` points into the target of `_holder`, which this lease keeps alive and
        // which an `Arc` never moves.
        unsafe { &*self.cell }
    }
}

impl<U: ?Sized, T> Deref for Lease<U, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: while this lease is out the owner's `get_mut` gives `None`, so no `&mut T`
        // exists or can be made; the cell lives as long as `self` (see `cell`).
        unsafe { &*self.cell().value.get() }
    }
}

impl<U: ?Sized, T> Drop for Lease<U, T> {
    fn drop(&mut self) {
        // Release: our reads of the value happen before the owner's next change.
        self.cell().leases.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Holder {
        copies: LeaseCell<Vec<u32>>,
    }

    fn copies(h: &Holder) -> &LeaseCell<Vec<u32>> {
        &h.copies
    }

    #[test]
    fn the_owner_changes_the_value_only_while_no_lease_is_out() {
        let (cell, mut owner) = LeaseCell::new(vec![1]);
        let holder = Arc::new(Holder { copies: cell });
        holder.copies.get_mut(&mut owner).unwrap().push(2);
        let lease = LeaseCell::lease(holder.clone(), copies, &owner);
        assert!(
            holder.copies.get_mut(&mut owner).is_none(),
            "a lease is out"
        );
        let reader = std::thread::spawn(move || lease.iter().sum::<u32>());
        assert_eq!(
            reader.join().unwrap(),
            3,
            "the lease read the owner's writes"
        );
        holder.copies.get_mut(&mut owner).unwrap().push(3);
        assert_eq!(holder.copies.get(&owner), &[1, 2, 3]);
    }

    #[test]
    #[should_panic(expected = "inside its holder")]
    fn a_lease_reads_only_a_cell_its_holder_keeps() {
        static ELSEWHERE: std::sync::OnceLock<LeaseCell<Vec<u32>>> = std::sync::OnceLock::new();
        let (cell, owner) = LeaseCell::new(vec![1]);
        let _ = ELSEWHERE.set(cell);
        let holder = Arc::new(Holder {
            copies: LeaseCell::new(vec![2]).0,
        });
        let _ = LeaseCell::lease(holder, |_| ELSEWHERE.get().unwrap(), &owner);
    }

    #[test]
    #[should_panic(expected = "another cell's owner token")]
    fn a_token_works_only_its_own_cell() {
        let ((_a, mut owner), (b, _)) = (LeaseCell::new(1u8), LeaseCell::new(2u8));
        let _ = b.get_mut(&mut owner);
    }
}
