//! Bytes of a host-addressable block held by a guard: found once, when the guard is taken,
//! rather than asked of the backend again on every access (a read guard's slice in a few
//! nanoseconds).

use std::ops::Deref;
use std::ptr::NonNull;

/// `len` bytes at `ptr` inside memory that `guard` keeps alive and unchanged: borrowed from
/// what the guard protects, so they stay where they are when the guard moves.
pub(crate) struct Held<G> {
    /// Held for as long as the bytes are: its drop lets the memory go.
    _guard: G,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: `Held` is the guard plus a shared view of bytes the guard protects: sending or
// sharing it sends or shares exactly what the guard and a `&[u8]` would.
unsafe impl<G: Send> Send for Held<G> {}
// SAFETY: as above; the bytes are only ever read through `&self`.
unsafe impl<G: Sync> Sync for Held<G> {}

impl<G: Deref> Held<G> {
    /// The bytes `find` gives of what `guard` protects (the target of the guard, not the guard
    /// itself: memory the guard's target owns and keeps in place, such as a block's).
    #[inline]
    pub(crate) fn new<E>(
        guard: G,
        find: impl FnOnce(&G::Target) -> std::result::Result<&[u8], E>,
    ) -> std::result::Result<Self, E> {
        let bytes = find(&*guard)?;
        let (ptr, len) = (NonNull::from(bytes).cast(), bytes.len());
        Ok(Held {
            _guard: guard,
            ptr,
            len,
        })
    }

    /// `len` bytes at `ptr`, found earlier.
    ///
    /// # Safety
    /// They must be bytes of memory that `guard`'s target owns and keeps in place, unchanged
    /// since they were found, for as long as the guard lives.
    pub(super) unsafe fn found(guard: G, ptr: NonNull<u8>, len: usize) -> Self {
        Held {
            _guard: guard,
            ptr,
            len,
        }
    }
}

impl<G> Deref for Held<G> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr + len` were bytes borrowed from the guard's target when this was
        // made; the guard, which lives as long as `self`, keeps that target — and the memory
        // it owns, which does not move with the guard — alive and unchanged, and the slice
        // borrows `self`, so it cannot outlive the guard.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}
