//! The object pool: reuse, hooks, limits, lifetime, detach, statistics and threads. Objects
//! count their own destruction, so every "destroyed" figure is checked against real drops.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hetmem::pool::ObjectPool;
use hetmem::Error;

/// A pooled object that records its drop.
struct Obj {
    id: usize,
    data: Vec<u32>,
    drops: Arc<AtomicUsize>,
}

impl Drop for Obj {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

/// A create hook handing out numbered objects, and the shared drop counter.
fn factory() -> (impl Fn() -> Obj + Send + Sync + 'static, Arc<AtomicUsize>) {
    let drops = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    let create = move || Obj {
        id: next.fetch_add(1, Ordering::Relaxed),
        data: Vec::with_capacity(16),
        drops: d.clone(),
    };
    (create, drops)
}

#[test]
fn returned_objects_are_reset_and_reused() {
    let (create, drops) = factory();
    let pool = ObjectPool::builder(create)
        .reset(|o: &mut Obj| {
            o.data.clear();
            true
        })
        .build()
        .unwrap();
    let mut a = pool.get();
    a.data.extend([1, 2, 3]);
    let id = a.id;
    drop(a);
    let b = pool.get();
    assert_eq!(b.id, id, "the same object comes back");
    assert!(
        b.data.is_empty() && b.data.capacity() >= 16,
        "reset, capacity kept"
    );
    drop(b);
    let s = pool.stats();
    assert_eq!((s.gets, s.hits, s.misses, s.created), (2, 1, 1, 1));
    assert_eq!((s.returns, s.live, s.idle, s.destroyed), (2, 1, 1, 0));
    assert_eq!(s.hit_rate(), 0.5);
    assert_eq!(drops.load(Ordering::Relaxed), 0);
}

#[test]
fn failing_reset_or_validation_destroys_the_object() {
    let (create, drops) = factory();
    let pool = ObjectPool::builder(create)
        .reset(|o: &mut Obj| o.data.len() < 100) // oversized objects are not worth keeping
        .validate(|o: &Obj| o.id % 2 == 0) // odd objects went stale
        .build()
        .unwrap();
    let mut big = pool.get(); // id 0
    big.data.resize(1000, 7);
    drop(big);
    assert_eq!(drops.load(Ordering::Relaxed), 1, "failed reset destroys");
    let held = {
        let _stale = pool.get(); // id 1, returned at the end of this block
        pool.get() // id 2
    };
    assert_eq!(held.id, 2);
    // id 1 is idle but fails validation.
    let next = pool.get();
    assert_eq!(next.id, 3, "the invalid idle object is skipped");
    assert_eq!(drops.load(Ordering::Relaxed), 2, "and destroyed");
    drop((held, next));
    let s = pool.stats();
    assert_eq!((s.created, s.destroyed, s.live), (4, 2, 2));
    assert_eq!(s.idle, 2);
}

#[test]
fn idle_objects_are_bounded_across_thread_cache_and_depot() {
    let (create, drops) = factory();
    let pool = ObjectPool::builder(create)
        .max_idle(4)
        .thread_cache(2)
        .build()
        .unwrap();
    let held: Vec<_> = (0..10).map(|_| pool.get()).collect();
    drop(held);
    let s = pool.stats();
    assert_eq!((s.idle, s.destroyed, s.live), (4, 6, 4));
    assert_eq!(drops.load(Ordering::Relaxed), 6);
    // Another thread draws from the depot (the two objects beyond this thread's cache).
    let ids: Vec<usize> = std::thread::scope(|s| {
        s.spawn(|| {
            let (a, b) = (pool.get(), pool.get());
            vec![a.id, b.id]
        })
        .join()
        .unwrap()
    });
    assert_eq!(pool.stats().created, 10, "served from the depot: {ids:?}");
    assert_eq!(pool.trim(), 4);
    assert_eq!(drops.load(Ordering::Relaxed), 10);
    assert_eq!(pool.stats().live, 0);
}

#[test]
fn prefill_and_its_limit() {
    let (create, _) = factory();
    let pool = ObjectPool::builder(create).prefill(3).build().unwrap();
    let s = pool.stats();
    assert_eq!((s.created, s.idle, s.gets), (3, 3, 0));
    assert!(pool.get().id < 3, "a prefilled object is handed out");
    assert_eq!(pool.stats().misses, 0);
    let (create, _) = factory();
    assert!(matches!(
        ObjectPool::builder(create).max_idle(2).prefill(3).build(),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn expired_objects_are_evicted_by_maintain_and_never_handed_out() {
    let (create, drops) = factory();
    let pool = ObjectPool::builder(create)
        .lifetime(Duration::from_secs(3600))
        .prefill(2)
        .build()
        .unwrap();
    assert_eq!(pool.trim_expired(), 0, "within their lifetime");
    assert_eq!(pool.stats().idle, 2);
    // A zero lifetime: every object is expired as soon as it exists.
    let (create, drops0) = factory();
    let pool0 = ObjectPool::builder(create)
        .lifetime(Duration::ZERO)
        .prefill(2)
        .build()
        .unwrap();
    drop(pool0.get()); // both prefilled objects are expired: destroyed, a new one created
    assert_eq!(pool0.stats().misses, 1);
    assert_eq!(drops0.load(Ordering::Relaxed), 2);
    assert_eq!(pool0.trim_expired(), 1, "the returned one has expired too");
    assert_eq!(pool0.stats().idle, 0);
    assert_eq!(drops0.load(Ordering::Relaxed), 3);
    assert_eq!(drops.load(Ordering::Relaxed), 0);
}

#[test]
fn detached_objects_leave_the_pool() {
    let (create, drops) = factory();
    let pool = ObjectPool::new(create);
    let obj = pool.get().detach();
    let s = pool.stats();
    assert_eq!((s.detached, s.live, s.idle, s.returns), (1, 0, 0, 0));
    assert_eq!(drops.load(Ordering::Relaxed), 0);
    drop(obj);
    assert_eq!(drops.load(Ordering::Relaxed), 1);
    drop(pool.get());
    assert_eq!(
        pool.stats().created,
        2,
        "the detached object did not come back"
    );
}

#[test]
fn two_threads_never_share_an_object() {
    let (create, drops) = factory();
    let pool = ObjectPool::builder(create).max_idle(8).build().unwrap();
    let in_use = Mutex::new(HashSet::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for i in 0..2000 {
                    let mut held: Vec<_> = (0..1 + i % 5).map(|_| pool.get()).collect();
                    for o in &mut held {
                        assert!(in_use.lock().unwrap().insert(o.id), "handed out twice");
                        o.data.push(i as u32);
                    }
                    for o in &held {
                        in_use.lock().unwrap().remove(&o.id);
                    }
                }
            });
        }
    });
    let s = pool.stats();
    assert_eq!(s.gets, s.returns);
    assert_eq!(s.hits + s.misses, s.gets);
    assert_eq!(s.live, s.idle, "nothing is out");
    assert!(s.idle <= 8);
    assert_eq!(s.destroyed as usize, drops.load(Ordering::Relaxed));
    assert!(s.hit_rate() > 0.5, "{s:?}");
}

/// Statistics taken while other threads get, return and detach never wrap: objects made on one
/// thread and destroyed on another used to make `live` underflow (issue 18, item 3).
#[test]
fn statistics_under_churn_never_wrap() {
    let (create, _) = factory();
    let pool = ObjectPool::builder(create).max_idle(2).build().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        // Objects made on one thread, given back (and, past `max_idle`, destroyed) on another.
        let (send, receive) = std::sync::mpsc::sync_channel(64);
        let (pool_ref, stop_ref) = (&pool, &stop);
        s.spawn(move || {
            let mut i = 0u64;
            while !stop_ref.load(Ordering::Relaxed) {
                let object = pool_ref.get();
                if i % 7 == 0 {
                    drop(object.detach());
                } else if send.send(object).is_err() {
                    break;
                }
                i += 1;
            }
        });
        s.spawn(move || receive.into_iter().for_each(drop));
        for _ in 0..200_000 {
            let stats = pool.stats();
            assert!(stats.live < 1 << 20, "live wrapped: {stats:?}");
            assert!(stats.hits <= stats.gets, "{stats:?}");
        }
    });
    let stats = pool.stats();
    assert_eq!(
        stats.live, stats.idle,
        "exact once nothing is in flight: {stats:?}"
    );
}

/// Tells the churning threads to stop, also when an assertion fails (or the scope would wait
/// for them forever).
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
