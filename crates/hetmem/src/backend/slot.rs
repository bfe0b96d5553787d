//! A lock that readers can stop taking: once a slot is *frozen* its contents cannot change
//! until someone holds it exclusively (`&mut`), so reads skip the lock — two atomic
//! read-modify-writes less on every guard of a buffer's valid host copy — and the bytes found
//! of it when it froze are kept, so a guard does not ask the backend for them again.
//!
//! Writers through `&self` are refused while the slot is frozen (a panic: the caller froze a slot
//! it still meant to write, a bug), so a reference handed out without the lock can never see a
//! write; [`Slot::get_mut`] thaws it.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::Held;
use crate::sync::Unpoison;

/// A value behind a reader–writer lock that can be frozen for lock-free reading.
pub(crate) struct Slot<T> {
    lock: RwLock<()>,
    frozen: AtomicBool,
    /// The bytes found of the value when it froze (meaningful while frozen).
    bytes: AtomicPtr<u8>,
    len: AtomicUsize,
    value: UnsafeCell<T>,
}

// SAFETY: the slot owns its value; sending it sends the value.
unsafe impl<T: Send> Send for Slot<T> {}
// SAFETY: shared access hands out `&T` (to readers, locked or frozen) and `&mut T` only under
// the write lock of an unfrozen slot, exactly as `RwLock<T>` does, so the same bounds apply.
unsafe impl<T: Send + Sync> Sync for Slot<T> {}

impl<T> Slot<T> {
    pub(crate) fn new(value: T) -> Self {
        Slot {
            lock: RwLock::new(()),
            frozen: AtomicBool::new(false),
            bytes: AtomicPtr::new(std::ptr::null_mut()),
            len: AtomicUsize::new(0),
            value: UnsafeCell::new(value),
        }
    }

    /// Shared access: without the lock when the slot is frozen.
    #[inline]
    pub(crate) fn read(&self) -> SlotRead<'_, T> {
        let lock = (!self.frozen.load(Ordering::Acquire)).then(|| self.lock.read().unpoisoned());
        // SAFETY: either the read lock is held (writers hold the write lock) or the slot is
        // frozen, and then writers through `&self` are refused and `get_mut` needs `&mut self`,
        // which this borrow excludes: nothing writes the value while the reference lives.
        let value = unsafe { &*self.value.get() };
        SlotRead { _lock: lock, value }
    }

    /// Freezes the slot — its value stays as it is until [`Slot::get_mut`] — and holds the
    /// bytes `find` gives of it (memory the value owns and keeps in place, such as a block's):
    /// found once, when the slot freezes, and handed back by every later call until it thaws.
    #[inline]
    pub(crate) fn freeze<E>(
        &self,
        find: impl FnOnce(&T) -> Result<&[u8], E>,
    ) -> Result<Held<SlotRead<'_, T>>, E> {
        if !self.frozen.load(Ordering::Acquire) {
            return self.freeze_locked(find);
        }
        // SAFETY: the slot is frozen: writers through `&self` are refused and `get_mut` needs
        // `&mut self`, which this borrow excludes, so nothing writes the value meanwhile.
        let value = unsafe { &*self.value.get() };
        let read = SlotRead { _lock: None, value };
        // The acquire load of `frozen` above makes the stores before its release visible.
        let ptr = NonNull::new(self.bytes.load(Ordering::Relaxed)).unwrap_or(NonNull::dangling());
        let len = self.len.load(Ordering::Relaxed);
        // SAFETY: `ptr..ptr + len` are the bytes `find` gave of this same value when the slot
        // froze (the value has not changed since: it is frozen), owned by the value and kept
        // in place by it; the frozen slot keeps the value as it is for as long as `read`
        // borrows it.
        Ok(unsafe { Held::found(read, ptr, len) })
    }

    /// [`Slot::freeze`] of a slot not frozen yet: finds the bytes under the read lock, which
    /// keeps writers out while the flag changes (a writer either finished before or sees it).
    #[cold]
    fn freeze_locked<E>(
        &self,
        find: impl FnOnce(&T) -> Result<&[u8], E>,
    ) -> Result<Held<SlotRead<'_, T>>, E> {
        let held = Held::new(self.read(), find)?;
        // Every thread freezing at once finds the same bytes of the same value.
        self.bytes
            .store(held.as_ptr().cast_mut(), Ordering::Relaxed);
        self.len.store(held.len(), Ordering::Relaxed);
        self.frozen.store(true, Ordering::Release);
        Ok(held)
    }

    /// Exclusive access under the write lock.
    ///
    /// # Panics
    /// If the slot is frozen: lock-free readers may hold its value.
    pub(crate) fn write(&self) -> SlotWrite<'_, T> {
        let lock = self.lock.write().unpoisoned();
        assert!(
            !self.frozen.load(Ordering::Acquire),
            "a frozen slot is written only through `get_mut`"
        );
        // SAFETY: the write lock excludes locked readers and other writers, and the slot is not
        // frozen (freezing needs the read lock), so no lock-free reader exists either.
        let value = unsafe { &mut *self.value.get() };
        SlotWrite { _lock: lock, value }
    }

    /// Exclusive access through an exclusive borrow; thaws the slot.
    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.thaw();
        self.value.get_mut()
    }

    /// Lets writers through `&self` in again (no reader can hold the value: `self` is
    /// borrowed exclusively).
    pub(crate) fn thaw(&mut self) {
        *self.frozen.get_mut() = false;
    }
}

/// Shared access to a slot's value (holding the read lock unless the slot is frozen).
pub(crate) struct SlotRead<'a, T> {
    _lock: Option<RwLockReadGuard<'a, ()>>,
    value: &'a T,
}

impl<T> Deref for SlotRead<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.value
    }
}

/// Exclusive access to a slot's value, under its write lock.
pub(crate) struct SlotWrite<'a, T> {
    _lock: RwLockWriteGuard<'a, ()>,
    value: &'a mut T,
}

impl<T> Deref for SlotWrite<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.value
    }
}

impl<T> DerefMut for SlotWrite<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::Slot;
    use std::sync::Arc;

    #[allow(clippy::ptr_arg)] // `find` takes the slot's value, a `Vec` here
    fn bytes(v: &Vec<u8>) -> Result<&[u8], ()> {
        Ok(&v[..])
    }

    #[test]
    fn writes_are_seen_by_later_reads() {
        let slot = Slot::new(vec![1u8]);
        slot.write().push(2);
        assert_eq!(*slot.read(), [1, 2]);
        assert_eq!(*slot.freeze(bytes).unwrap(), [1, 2]);
        assert_eq!(*slot.freeze(bytes).unwrap(), [1, 2]);
        assert_eq!(*slot.read(), [1, 2]);
    }

    #[test]
    fn get_mut_thaws_a_frozen_slot_and_the_next_freeze_finds_the_new_bytes() {
        let mut slot = Slot::new(vec![1u8]);
        drop(slot.freeze(bytes).unwrap());
        *slot.get_mut() = vec![5, 6, 7];
        slot.write().push(8); // allowed again once thawed
        assert_eq!(*slot.freeze(bytes).unwrap(), [5, 6, 7, 8]);
        assert_eq!(*slot.freeze(bytes).unwrap(), [5, 6, 7, 8]);
    }

    #[test]
    fn a_failed_find_leaves_the_slot_unfrozen() {
        let slot = Slot::new(vec![3u8]);
        assert!(slot.freeze(|_| Err::<&[u8], _>("no bytes")).is_err());
        slot.write().push(4); // not frozen: writing is allowed
        assert_eq!(*slot.freeze(bytes).unwrap(), [3, 4]);
    }

    #[test]
    #[should_panic(expected = "frozen slot")]
    fn writing_a_frozen_slot_through_a_shared_borrow_is_refused() {
        let slot = Slot::new(vec![0u8]);
        drop(slot.freeze(bytes).unwrap());
        slot.write().push(1);
    }

    #[test]
    fn threads_freezing_and_reading_at_once_see_the_written_value() {
        let slot = Arc::new(Slot::new(vec![7u8; 4]));
        *slot.write() = vec![9; 4];
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let slot = slot.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .all(|_| *slot.freeze(bytes).unwrap() == [9; 4] && *slot.read() == [9; 4])
                })
            })
            .collect();
        for reader in readers {
            assert!(reader.join().unwrap());
        }
    }
}
