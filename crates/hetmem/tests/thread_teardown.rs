//! Pooled things dropped as their thread ends: a thread-local of the user's, made before the
//! thread first used a pool, is torn down after the pool's per-thread slot is gone. The drop must
//! neither abort the process (a panic inside a thread-local destructor does) nor lose a count:
//! the pools fall back to a shared slot, and their statistics still add up.

use std::cell::RefCell;
use std::sync::{Arc, LazyLock};

use hetmem::backend::{Backend, HostBackend};
use hetmem::pool::{ArrayPool, ObjectPool, Pooled, Rented};
use hetmem::{MemoryManager, UnifiedBuffer};

static ARRAYS: LazyLock<ArrayPool<u32>> = LazyLock::new(ArrayPool::new);
static OBJECTS: LazyLock<ObjectPool<Vec<u32>>> = LazyLock::new(|| {
    ObjectPool::builder(Vec::new)
        .reset(|v: &mut Vec<u32>| {
            v.clear();
            true
        })
        .build()
        .unwrap()
});

thread_local! {
    static HELD_ARRAY: RefCell<Option<Rented<'static, u32>>> = const { RefCell::new(None) };
    static HELD_OBJECT: RefCell<Option<Pooled<'static, Vec<u32>>>> = const { RefCell::new(None) };
    static HELD_BUFFER: RefCell<Option<UnifiedBuffer<u32>>> = const { RefCell::new(None) };
}

/// Runs `f` — which puts a pooled thing in a thread-local of the user's before the thread's
/// first pool use, so that it is torn down last — on a new thread, and waits for it to end.
fn on_a_thread_that_ends(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(f)
        .join()
        .expect("the thread ended cleanly");
}

#[test]
fn an_array_returned_as_its_thread_ends_is_counted_and_reused() {
    on_a_thread_that_ends(|| {
        HELD_ARRAY.with(|held| {
            let mut array = ARRAYS.rent(1000).unwrap();
            array
                .iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x = i as u32);
            *held.borrow_mut() = Some(array);
        })
    });
    let stats = ARRAYS.stats();
    assert_eq!((stats.rented, stats.returned), (1, 1), "{stats:?}");
    assert!(stats.bytes_retained >= 4000, "kept for reuse: {stats:?}");
    ARRAYS.trim_fraction(1.0);
    assert_eq!(ARRAYS.stats().bytes_retained, 0, "a trim reaches it");
}

#[test]
fn an_object_returned_as_its_thread_ends_is_counted() {
    on_a_thread_that_ends(|| {
        HELD_OBJECT.with(|held| {
            let mut object = OBJECTS.get();
            object.extend([1, 2, 3]);
            *held.borrow_mut() = Some(object);
        })
    });
    let stats = OBJECTS.stats();
    assert_eq!((stats.gets, stats.returns), (1, 1), "{stats:?}");
    let again = OBJECTS.get();
    assert!(again.is_empty(), "reset on its way back: {:?}", *again);
}

#[test]
fn a_buffer_dropped_as_its_thread_ends_leaves_the_books_balanced() {
    let backend: Arc<dyn Backend> = Arc::new(HostBackend::new());
    let manager = Arc::new(MemoryManager::new(backend).unwrap());
    let other = manager.clone();
    on_a_thread_that_ends(move || {
        HELD_BUFFER.with(|held| {
            let buffer = other.from_slice(&[7u32; 4096]).unwrap();
            assert_eq!(buffer.host().unwrap()[4095], 7);
            *held.borrow_mut() = Some(buffer);
        })
    });
    let stats = manager.stats();
    assert_eq!((stats.allocations, stats.releases), (1, 1), "{stats:?}");
    assert_eq!(stats.bytes_current, 0, "{stats:?}");
    assert_eq!(
        (stats.bytes_allocated, stats.bytes_released),
        (4 * 4096, 4 * 4096),
        "{stats:?}"
    );
    assert_eq!(stats.host.bytes_in_use, 0, "{stats:?}");
    let again = manager.from_slice(&[9u32; 4096]).unwrap();
    assert_eq!(again.host().unwrap()[0], 9);
}
