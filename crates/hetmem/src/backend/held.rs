//! Bytes of a host-addressable block held by a guard: found once, when the guard is taken,
//! rather than asked of the backend again on every access (a read guard's slice in a few
//! nanoseconds).

use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

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

/// What `arc` points to, exclusively, when no other `Arc` or `Weak` to it exists: what
/// [`Arc::get_mut`] gives, without the compare-and-swap with which it locks out a concurrent
/// `Weak::upgrade` — with no `Weak` and no other `Arc`, nothing can upgrade or clone meanwhile
/// (this borrow holds the only handle). Two plain loads on a buffer's every `&mut` operation
/// instead of an atomic read-modify-write.
#[inline]
pub(crate) fn unique_mut<T>(arc: &mut Arc<T>) -> Option<&mut T> {
    if Arc::strong_count(arc) != 1 || Arc::weak_count(arc) != 0 {
        return None;
    }
    // Pairs with the release decrement of the last other `Arc` dropped (on another thread):
    // its uses of the value happen before ours.
    fence(Ordering::Acquire);
    // SAFETY: `arc` is the only handle to its allocation (one strong count — this one — and no
    // weak ones) and is borrowed exclusively for the result's lifetime, so no other reference
    // to the value exists or can be made meanwhile; the fence orders every earlier use by a
    // dropped handle before this one. `Arc::as_ptr` points into the allocation with the
    // permissions `Arc::get_mut` itself writes through.
    Some(unsafe { &mut *Arc::as_ptr(arc).cast_mut() })
}

#[cfg(test)]
mod tests {
    use super::unique_mut;
    use std::sync::Arc;

    #[test]
    fn unique_mut_needs_the_only_handle() {
        let mut arc = Arc::new(vec![1u8]);
        let other = arc.clone();
        assert!(unique_mut(&mut arc).is_none());
        drop(other);
        let weak = Arc::downgrade(&arc);
        assert!(unique_mut(&mut arc).is_none());
        drop(weak);
        unique_mut(&mut arc).unwrap().push(2);
        assert_eq!(*arc, [1, 2]);
    }

    #[test]
    fn a_handle_dropped_on_another_thread_leaves_its_writes_visible() {
        let mut arc = Arc::new(std::sync::Mutex::new(0u32));
        let other = arc.clone();
        std::thread::spawn(move || *other.lock().unwrap() = 7)
            .join()
            .unwrap();
        let value = unique_mut(&mut arc).expect("the other handle is gone");
        *value.get_mut().unwrap() += 1;
        assert_eq!(*arc.lock().unwrap(), 8);
    }
}
