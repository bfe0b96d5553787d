//! The synchronisation facade: std types normally, loom's under `--cfg loom` so that the
//! lock-free parts can be model-checked exhaustively; and the one way hetmem treats a poisoned
//! lock.
//!
//! Every critical section in hetmem leaves its data consistent before anything that could panic,
//! so a lock poisoned by a panicking thread still guards valid data: [`Unpoison::unpoisoned`]
//! takes it regardless, for every std lock result (`lock`, `read`, `write`, `get_mut`, a
//! condition variable's `wait`).

use std::sync::{LockResult, PoisonError};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::Mutex;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::Mutex;

/// The guard of a lock result, poisoned or not.
pub(crate) trait Unpoison<G> {
    /// The guard, also when another thread panicked holding the lock.
    fn unpoisoned(self) -> G;
}

impl<G> Unpoison<G> for LockResult<G> {
    fn unpoisoned(self) -> G {
        self.unwrap_or_else(PoisonError::into_inner)
    }
}

/// Locks a facade mutex (model-checked under loom), ignoring poisoning.
#[cfg(not(loom))]
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unpoisoned()
}

#[cfg(loom)]
pub(crate) fn lock<T>(m: &Mutex<T>) -> loom::sync::MutexGuard<'_, T> {
    m.lock().unwrap()
}
