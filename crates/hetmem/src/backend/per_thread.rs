//! [`PerThread`]: one value per thread per pool, which its own thread reaches with plain loads
//! and stores — no atomic read-modify-write, no fence — and any other thread at the cost of a
//! system call.
//!
//! The pools keep their fast path here: every pool hit visits the slot of the calling thread;
//! other threads come only to trim the pool or to snapshot its statistics. A spin lock per slot
//! made every hit pay two locked read-modify-writes (about 7 ns each on the 2-vCPU VM). Here the
//! owner announces itself with a store and then looks for a visitor with a load (Dekker's
//! protocol); the store–load fence the protocol needs between the two is paid by the visitor
//! alone, through `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which runs a full barrier on
//! every CPU running a thread of this process — the asymmetric fences of folly and liburcu.
//! Where the kernel refuses it (and under Miri and loom) the owner pays a full fence instead.
//!
//! Slots outlive their threads: a later thread reuses the slot of one that exited (the
//! `thread_local` crate's ids), so nothing cached in it is lost, and the pool drains every slot
//! when it is trimmed or dropped.
//!
//! A thread whose thread-locals are being torn down (a thread-local of the user's dropping a
//! pooled item as its thread ends) may no longer have its slot: it uses the *orphans'* slot, one
//! per `PerThread` shared under a lock, which visitors see like any other. Counts made then stay
//! in the sums.
//!
//! A thread finds its slot through [`RECENT`], a small table of the slots it entered last keyed
//! by the `PerThread`'s id: one thread-local load and a compare, where the `thread_local`
//! crate's look-up (its thread handle, the bucket, the entry's presence flag) and the teardown
//! check took a chain of five dependent loads on every entry.

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::AtomicUsize;

use thread_local::ThreadLocal;

use crate::sync::{lock, Mutex, Ordering, Unpoison};

#[cfg(loom)]
use loom::{cell::UnsafeCell, sync::atomic::AtomicBool, thread::yield_now};
#[cfg(not(loom))]
use std::{cell::UnsafeCell, sync::atomic::AtomicBool, thread::yield_now};

/// A `T` per thread, `T::default()` on a thread's first use; beside it an `S` that its thread
/// reaches without entering (see [`PerThread::shared`]).
pub(crate) struct PerThread<T: Send, S: Send + Sync = ()> {
    slots: ThreadLocal<SlotBox<T, S>>,
    /// The slot of threads being torn down, made on first use. A plain std lock (`const`, for
    /// statics; not model-checked): only thread teardown takes it, besides visitors.
    orphans: std::sync::Mutex<Option<T>>,
    /// The `S` of threads being torn down, made on first use.
    orphans_shared: std::sync::OnceLock<S>,
    /// This `PerThread`'s key in every thread's [`RECENT`], given on first use (0: none yet).
    id: AtomicUsize,
}

impl<T: Send + Default, S: Send + Sync + Default> PerThread<T, S> {
    pub(crate) const fn new() -> Self {
        PerThread {
            slots: ThreadLocal::new(),
            orphans: std::sync::Mutex::new(None),
            orphans_shared: std::sync::OnceLock::new(),
            id: AtomicUsize::new(0),
        }
    }

    /// This thread's `S` and `true`; or, while its thread-locals are torn down, the `S` all
    /// such threads share and `false`. No entry, no fence: for values other threads only read
    /// — counters its thread alone writes with a plain load and store of an atomic (where the
    /// `S` is shared, `false`, with read-modify-writes).
    #[inline(always)]
    pub(crate) fn shared(&self) -> (&S, bool) {
        match self.slot() {
            Some(slot) => (&slot.shared, true),
            None => (self.orphans_shared.get_or_init(S::default), false),
        }
    }

    /// Runs `f` on every thread's `S` (the torn-down threads' too), entering nothing.
    pub(crate) fn for_each_shared(&self, mut f: impl FnMut(&S)) {
        self.slots.iter().for_each(|slot| f(&slot.get().shared));
        if let Some(orphans) = self.orphans_shared.get() {
            f(orphans);
        }
    }

    /// Runs `f` on this thread's slot, or on the orphans' slot while this thread's
    /// thread-locals are torn down. `f` must not re-enter the same `PerThread` (it panics, or
    /// in teardown deadlocks).
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // One call of `f` whichever slot it gets: called from two places, its body would be
        // compiled apart from the fast path rather than into it.
        let mut orphans = None;
        let mut own = self.enter_while_alive();
        let value = match own.as_deref_mut() {
            Some(value) => value,
            None => self.orphans(&mut orphans),
        };
        f(value)
    }

    /// This thread's own slot, or `f(None)` once this thread's thread-locals are being torn
    /// down: for callers with a shared path better than the orphans' slot (a block cached
    /// there would wait for a trim; in the shared bins any thread reuses it).
    #[inline]
    pub(crate) fn with_while_alive<R>(&self, f: impl FnOnce(Option<&mut T>) -> R) -> R {
        f(self.enter_while_alive().as_deref_mut())
    }

    /// This thread inside its own slot, unless its thread-locals are being torn down (see
    /// [`PerThread::look_up`]).
    #[inline]
    fn enter_while_alive(&self) -> Option<Entered<'_, T>> {
        let slot = self.slot()?;
        // SAFETY: `ThreadLocal::get_or` hands every thread its own entry, and an entry passes to
        // another thread only after the thread that had it exited: this thread owns the slot.
        Some(unsafe { slot.lock.enter() })
    }

    /// This thread's slot, unless its thread-locals are being torn down.
    #[inline(always)]
    fn slot(&self) -> Option<&Slot<T, S>> {
        // Relaxed: the id is only compared; a thread that sees 0 takes the slow path.
        let id = self.id.load(std::sync::atomic::Ordering::Relaxed);
        let (of, slot) = RECENT.with(|recent| recent[id % RECENT_WAYS].get());
        if of == id {
            // SAFETY: only `look_up` files slots in this thread's `RECENT`, each this thread's
            // own slot of the `PerThread` with that id — ids are never reused, so this one, which
            // `&self` keeps alive (and its `SlotBox`, at the same address) — and `Alive`'s drop
            // empties `RECENT` before the slots can pass to another thread.
            Some(unsafe { &*slot.cast::<Slot<T, S>>() })
        } else {
            self.look_up()
        }
    }

    /// This thread's slot, filed in [`RECENT`]; `None` once its thread-locals are being torn
    /// down: then the `thread_local` crate may have given the slot to another thread already,
    /// and looking it up would panic inside a destructor, aborting the process.
    #[cold]
    #[inline(never)]
    fn look_up(&self) -> Option<&Slot<T, S>> {
        // Thread-locals are torn down last registered, first. The `thread_local` crate's
        // teardown gives this thread's id (and so its slots) to the next thread; it is
        // registered at this thread's first look-up of any `ThreadLocal` — before `ALIVE`, or
        // (just below, on a first use) right after it with nothing between — so whenever
        // `ALIVE` still lives, so does this thread's id, and `Alive`'s drop (which empties
        // `RECENT`) comes before the id is given away or right after with nothing between.
        ALIVE.try_with(|_| ()).ok()?;
        let slot = self.slots.get_or(|| {
            // Before this thread's first fence, so that it fences the way visitors expect.
            SlotBox::new(Slot {
                lock: OwnerLock::new(T::default(), barrier::choose()),
                shared: S::default(),
            })
        });
        let id = self.id();
        RECENT.with(|recent| recent[id % RECENT_WAYS].set((id, slot.as_ptr().cast())));
        Some(slot.get())
    }

    /// This `PerThread`'s id, given now if it has none.
    fn id(&self) -> usize {
        use std::sync::atomic::Ordering::Relaxed;
        static NEXT_ID: AtomicUsize = AtomicUsize::new(1);
        let id = self.id.load(Relaxed);
        if id != 0 {
            return id;
        }
        let mine = NEXT_ID.fetch_add(1, Relaxed);
        match self.id.compare_exchange(0, mine, Relaxed, Relaxed) {
            Ok(_) => mine,
            Err(theirs) => theirs,
        }
    }

    /// The orphans' slot, locked into `guard` (kept out of line: thread teardown only).
    #[cold]
    #[inline(never)]
    fn orphans<'s, 'g>(
        &'s self,
        guard: &'g mut Option<std::sync::MutexGuard<'s, Option<T>>>,
    ) -> &'g mut T {
        let orphans = guard.insert(self.orphans.lock().unpoisoned());
        orphans.get_or_insert_with(T::default)
    }

    /// Runs `f` on every thread's slot in turn. All are held from before the first `f` to
    /// after their own, so what `f` sees is one snapshot; two system calls in all, however
    /// many threads.
    ///
    /// A store made before the call is seen by every owner that `f` does not visit: an owner
    /// whose slot the iteration misses (a thread's first use, racing with the call) enters
    /// after the first fence here, and reads what was stored before it.
    ///
    /// `f` must not take a lock an owner may hold while it enters its slot (it would wait for
    /// that owner, which waits for `f`): the pools' `f`s touch only the slot and atomics.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&mut T)) {
        barrier::heavy();
        let slots: Vec<&OwnerLock<T>> = self.slots.iter().map(|slot| &slot.get().lock).collect();
        let _announced: Vec<_> = slots.iter().map(|slot| slot.announce()).collect();
        // Taken before the first `f` too, for the snapshot; a thread holding it waits for
        // nobody, so no owner or visitor waits on a cycle.
        let mut orphans = self.orphans.lock().unpoisoned();
        // One fence for every announcement.
        barrier::heavy();
        for slot in slots {
            slot.visit(&mut f);
        }
        if let Some(orphans) = orphans.as_mut() {
            f(orphans);
        }
    }
}

/// Entries in [`RECENT`]: more than the `PerThread`s a thread's hot loop uses at once (a pool's,
/// its statistics', the thread caches').
const RECENT_WAYS: usize = 16;

/// A slot in [`RECENT`]: the id of its `PerThread` (`usize::MAX`: empty, no id is) and the
/// slot, a `Slot<T, S>` of that `PerThread`'s `T` and `S`.
type Filed = (usize, *const ());

const EMPTY: Filed = (usize::MAX, std::ptr::null());

thread_local! {
    /// Lives until this thread's thread-locals are torn down ([`PerThread::with_while_alive`]).
    static ALIVE: Alive = const { Alive };

    /// The slots this thread entered last, at their `PerThread`'s id modulo the ways (a
    /// direct-mapped cache). No destructor, so reaching it costs no state check and works
    /// in teardown too.
    static RECENT: [Cell<Filed>; RECENT_WAYS] = const { [const { Cell::new(EMPTY) }; RECENT_WAYS] };
}

/// A thread-local with a destructor, so that its key reports the teardown.
struct Alive;

impl Drop for Alive {
    /// From here on the thread's slots may pass to another thread: forget them.
    fn drop(&mut self) {
        // `try_with`: `RECENT` has no destructor, so it never fails; nothing to do if it did.
        let _ = RECENT.try_with(|recent| recent.iter().for_each(|filed| filed.set(EMPTY)));
    }
}

/// One thread's value under its lock, and beside it what its thread writes without one.
struct Slot<T, S> {
    lock: OwnerLock<T>,
    shared: S,
}

/// A thread's [`Slot`], on the heap at a fixed address: its owner (through [`RECENT`]) and its
/// visitors reach it from the one pointer kept here. A pointer taken from a reference the
/// `ThreadLocal` handed out would not stay valid: Miri finds it invalidated by the first
/// visitor's write.
struct SlotBox<T, S>(NonNull<Slot<T, S>>);

impl<T, S> SlotBox<T, S> {
    fn new(slot: Slot<T, S>) -> Self {
        SlotBox(NonNull::new(Box::into_raw(Box::new(slot))).expect("a box is never null"))
    }

    fn get(&self) -> &Slot<T, S> {
        // SAFETY: the pointer came from `Box::into_raw` and is freed only by `drop`, after
        // every borrow of `self`; all access is shared (the lock's cells do the rest).
        unsafe { self.0.as_ref() }
    }

    fn as_ptr(&self) -> *const Slot<T, S> {
        self.0.as_ptr()
    }
}

impl<T, S> Drop for SlotBox<T, S> {
    fn drop(&mut self) {
        // SAFETY: from `Box::into_raw`, freed here only, with no borrow of `self` left.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

// SAFETY: a `SlotBox` owns its slot as a `Box` would; the lock is `Send` and `Sync` for
// `T: Send`, and `S` is both.
unsafe impl<T: Send, S: Send + Sync> Send for SlotBox<T, S> {}
// SAFETY: as above: shared access goes through `&OwnerLock<T>`, `Sync` for `T: Send`, and `&S`.
unsafe impl<T: Send, S: Send + Sync> Sync for SlotBox<T, S> {}

/// A value its owner thread takes without read-modify-writes and others take by the
/// asymmetric protocol above.
///
/// Two cache lines: neighbouring threads' slots sit side by side in memory, and sharing a line
/// would make each owner's stores evict the other thread's (false sharing).
#[repr(align(128))]
struct OwnerLock<T> {
    /// The owner is inside. Only the owner stores it.
    owner: AtomicBool,
    /// A visitor is inside or waiting for the owner to leave. Only visitors store it.
    visitor: AtomicBool,
    /// The owner enters with a compiler fence alone: visitors fence every CPU for it
    /// (`membarrier`). The same in every slot (chosen once per process), kept here to be read
    /// from the line the owner touches anyway.
    light: bool,
    /// One visitor at a time.
    visitors: Mutex<()>,
    value: UnsafeCell<T>,
}

// SAFETY: the lock owns its value; sending it sends the value.
unsafe impl<T: Send> Send for OwnerLock<T> {}
// SAFETY: shared access reaches the value only as `&mut T` under mutual exclusion (owner or one
// visitor, never both: see `enter`), exactly as `Mutex<T>` does, so the same bound applies.
unsafe impl<T: Send> Sync for OwnerLock<T> {}

impl<T> OwnerLock<T> {
    /// `light`: what `barrier::choose` said — the fence the owner's entry needs.
    fn new(value: T, light: bool) -> Self {
        OwnerLock {
            light,
            owner: AtomicBool::new(false),
            visitor: AtomicBool::new(false),
            visitors: Mutex::new(()),
            value: UnsafeCell::new(value),
        }
    }

    /// Enters the value as its owner; the guard lets visitors in again when it drops.
    ///
    /// # Safety
    /// Only one thread — the owner — may call this, ever, unless a happens-before edge (such as
    /// a thread's exit and another's start) separates the calls of two threads.
    #[inline]
    unsafe fn enter(&self) -> Entered<'_, T> {
        // Only this thread stores `owner`, so a relaxed load sees its own last store.
        assert!(
            !self.owner.load(Ordering::Relaxed),
            "a per-thread slot was re-entered by its own thread"
        );
        loop {
            self.owner.store(true, Ordering::Relaxed);
            barrier::light(self.light);
            // Acquire: a visitor that just left published its writes with its release store.
            if !self.visitor.load(Ordering::Acquire) {
                break;
            }
            // A visitor wants in: step out of its way and wait until it is done.
            self.owner.store(false, Ordering::Release);
            while self.visitor.load(Ordering::Acquire) {
                yield_now();
            }
        }
        // `owner` is set and no visitor was seen after the fence, so any visitor that arrives
        // sees `owner` and waits for the guard to drop; no other thread is an owner (the
        // caller's contract); the `assert!` above rules out this thread's own re-entry.
        Entered {
            lock: self,
            #[cfg(loom)]
            value: self.value.get_mut(),
        }
    }

    /// Runs `f` on the value from a thread that does not own it: waits for the owner to leave
    /// (and for other visitors) and holds it out while `f` runs.
    #[cfg(all(test, loom))]
    fn with_as_visitor<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let _one = self.announce();
        barrier::heavy();
        self.visit(f)
    }

    /// Tells the owner a visitor wants in, once other visitors are done (the guard keeps them
    /// out). [`OwnerLock::visit`] follows, after a `barrier::heavy`.
    fn announce(&self) -> impl Sized + '_ {
        let one = lock(&self.visitors);
        self.visitor.store(true, Ordering::Relaxed);
        one
    }

    /// Waits for the owner to leave and runs `f` on the value; lets the owner back in after.
    /// Only under [`OwnerLock::announce`]'s guard, after a `barrier::heavy` that followed it.
    fn visit<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // Acquire: the owner published its writes with its release store of `false`.
        while self.owner.load(Ordering::Acquire) {
            yield_now();
        }
        let _leave = Leave(&self.visitor);
        // SAFETY: `visitor` is set and the owner was seen outside after the fence, so it cannot
        // enter before `_leave` (it sees `visitor` and waits); the announcement's guard keeps
        // other visitors out.
        self.value_mut(f)
    }

    #[cfg(not(loom))]
    fn value_mut<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: the one caller, `visit`, holds the value exclusively (see its SAFETY comment).
        f(unsafe { &mut *self.value.get() })
    }

    #[cfg(loom)]
    fn value_mut<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: as above; loom checks the exclusion it claims.
        self.value.with_mut(|value| f(unsafe { &mut *value }))
    }
}

/// The owner inside its slot ([`OwnerLock::enter`]): the value, until the guard drops and lets
/// visitors in (also when the caller panics).
struct Entered<'a, T> {
    lock: &'a OwnerLock<T>,
    /// loom's tracked access to the value, held as long as the guard.
    #[cfg(loom)]
    value: loom::cell::MutPtr<T>,
}

impl<T> std::ops::Deref for Entered<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        #[cfg(not(loom))]
        // SAFETY: the owner holds the value exclusively while the guard lives (see `enter`).
        let value = unsafe { &*self.lock.value.get() };
        #[cfg(loom)]
        // SAFETY: as above; loom checks the exclusion it claims.
        let value = unsafe { &*self.value.deref() };
        value
    }
}

impl<T> std::ops::DerefMut for Entered<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        #[cfg(not(loom))]
        // SAFETY: the owner holds the value exclusively while the guard lives (see `enter`),
        // and this borrow of the guard is the only way to it.
        let value = unsafe { &mut *self.lock.value.get() };
        #[cfg(loom)]
        // SAFETY: as above; loom checks the exclusion it claims.
        let value = unsafe { self.value.deref() };
        value
    }
}

impl<T> Drop for Entered<'_, T> {
    fn drop(&mut self) {
        self.lock.owner.store(false, Ordering::Release);
    }
}

/// Clears a flag with a release store when dropped, so a panicking `f` still lets go.
struct Leave<'a>(&'a AtomicBool);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The two halves of an asymmetric store–load fence: `light` on the owners' fast path, `heavy`
/// on the visitors' rare one. Together they order like a full fence on both sides.
mod barrier {
    #[cfg(not(any(loom, miri)))]
    mod imp {
        use rustix::thread::{membarrier, MembarrierCommand};
        use std::sync::atomic::{compiler_fence, fence, Ordering};
        use std::sync::OnceLock;

        /// Whether the kernel runs expedited barriers for this process (registered once).
        static EXPEDITED: OnceLock<bool> = OnceLock::new();

        /// Registers for expedited barriers, once per process.
        fn expedited() -> bool {
            *EXPEDITED
                .get_or_init(|| membarrier(MembarrierCommand::RegisterPrivateExpedited).is_ok())
        }

        /// Registers, once per process; whether owners may enter with a compiler fence alone
        /// (visitors then fence for them), the argument every `light` gets.
        pub(crate) fn choose() -> bool {
            expedited()
        }

        #[inline]
        pub(crate) fn light(expedited: bool) {
            if expedited {
                compiler_fence(Ordering::SeqCst);
            } else {
                fence(Ordering::SeqCst);
            }
        }

        pub(crate) fn heavy() {
            if expedited() {
                // Registered, so the kernel cannot refuse it (its only errors are an
                // unknown command and a missing registration).
                membarrier(MembarrierCommand::PrivateExpedited)
                    .expect("membarrier refused after registration");
            } else {
                fence(Ordering::SeqCst);
            }
        }
    }

    /// Miri and loom cannot make system calls: full fences on both sides.
    #[cfg(any(loom, miri))]
    mod imp {
        #[cfg(loom)]
        use loom::sync::atomic::fence;
        #[cfg(not(loom))]
        use std::sync::atomic::fence;
        use std::sync::atomic::Ordering;

        pub(crate) fn choose() -> bool {
            false
        }

        pub(crate) fn light(_expedited: bool) {
            fence(Ordering::SeqCst);
        }

        pub(crate) fn heavy() {
            fence(Ordering::SeqCst);
        }
    }

    pub(super) use imp::{choose, heavy, light};
}

/// The protocol under loom: an owner and a visitor never hold the value at once, and neither
/// loses the other's writes. (loom's cell tracks every access and fails on a concurrent one.)
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    #[test]
    fn loom_owner_and_visitor_exclude_each_other() {
        loom::model(|| {
            let slot = Arc::new(OwnerLock::new(0u32, barrier::choose()));
            let visitor = {
                let slot = slot.clone();
                thread::spawn(move || slot.with_as_visitor(|v| *v += 10))
            };
            for _ in 0..2 {
                // SAFETY: this thread is the only one calling `enter`.
                *unsafe { slot.enter() } += 1;
            }
            visitor.join().unwrap();
            assert_eq!(slot.with_as_visitor(|v| *v), 12);
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    /// Owners counting on their own slots while a visitor repeatedly sums and resets them: every
    /// increment is counted exactly once.
    #[test]
    fn visitors_and_owners_lose_no_update() {
        let counters = Arc::new(PerThread::<u64>::new());
        let collected = Arc::new(AtomicU64::new(0));
        let per_thread = if cfg!(miri) { 200 } else { 20_000 };
        let owners: Vec<_> = (0..2)
            .map(|_| {
                let counters = counters.clone();
                std::thread::spawn(move || {
                    for _ in 0..per_thread {
                        counters.with(|c| *c += 1);
                    }
                })
            })
            .collect();
        let visitor = {
            let (counters, collected) = (counters.clone(), collected.clone());
            std::thread::spawn(move || {
                for _ in 0..50 {
                    counters.for_each(|c| {
                        collected
                            .fetch_add(std::mem::take(c), std::sync::atomic::Ordering::Relaxed);
                    });
                }
            })
        };
        for owner in owners {
            owner.join().unwrap();
        }
        visitor.join().unwrap();
        let mut rest = 0;
        counters.for_each(|c| rest += *c);
        let total = collected.load(std::sync::atomic::Ordering::Relaxed) + rest;
        assert_eq!(total, 2 * per_thread);
    }

    /// More `PerThread`s than `RECENT` has ways, used in turn and some dropped and replaced on
    /// the way: each keeps its own count (a slot filed under another id, or a dropped one's,
    /// would mix them).
    #[test]
    fn many_per_threads_share_the_recent_table() {
        let mut all: Vec<PerThread<u64>> =
            (0..RECENT_WAYS * 2 + 3).map(|_| PerThread::new()).collect();
        for round in 0..3u64 {
            for (i, counter) in all.iter().enumerate() {
                counter.with(|c| *c += i as u64 + 1);
            }
            // Replace every third: new ids, never a dropped one's.
            for i in (round as usize..all.len()).step_by(3) {
                all[i] = PerThread::new();
            }
        }
        let mut expected = vec![0u64; all.len()];
        for round in 0..3usize {
            for (i, e) in expected.iter_mut().enumerate() {
                *e += i as u64 + 1;
                if i >= round && (i - round) % 3 == 0 {
                    *e = 0;
                }
            }
        }
        for (counter, expected) in all.iter().zip(expected) {
            let mut sum = 0;
            counter.for_each(|c| sum += *c);
            assert_eq!(sum, expected);
        }
    }

    /// Each thread's `S` is its own (so it may count with a plain load and store), and a sum
    /// over them sees every thread's, the ended threads' too.
    #[test]
    fn shared_values_are_each_threads_own() {
        let counts = PerThread::<(), AtomicU64>::new();
        let per_thread = if cfg!(miri) { 50 } else { 10_000 };
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..per_thread {
                        let (count, alone) = counts.shared();
                        assert!(alone);
                        let n = count.load(std::sync::atomic::Ordering::Relaxed);
                        count.store(n + 1, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
        });
        let mut sum = 0;
        counts.for_each_shared(|c| sum += c.load(std::sync::atomic::Ordering::Relaxed));
        assert_eq!(sum, 2 * per_thread);
    }

    #[test]
    #[should_panic(expected = "re-entered")]
    fn re_entry_is_refused() {
        let slots = PerThread::<u32>::new();
        slots.with(|_| slots.with(|v| *v += 1));
    }
}
