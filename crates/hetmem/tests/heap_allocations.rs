//! What a managed buffer costs the system allocator once the pools are warm: one heap
//! allocation (its shared part: copies, metric cells and the manager's record), the storage
//! itself living inline in the buffer and its stale ranges inline in the storage — whatever the
//! buffer does between its making and its drop; and none where it is made of a parked one.
//!
//! `allocation-counter` replaces the global allocator of this test binary only, and counts the
//! calling thread's allocations.

use std::sync::Arc;

use hetmem::backend::{Backend, HostBackend};
use hetmem::buffer::{BufferContext, Residency};
use hetmem::pool::{CachingAllocator, CachingConfig};
use hetmem::MemoryManager;

/// A manager keeping `parked` dropped buffers per thread.
fn manager(parked: usize) -> MemoryManager {
    let backend: Arc<dyn Backend> = Arc::new(HostBackend::new());
    let builder = MemoryManager::builder().backend(backend);
    builder.parked_buffers(parked).build().unwrap()
}

/// Makes a buffer of a MiB, writes and reads it, and drops it.
fn use_a_buffer(manager: &MemoryManager) {
    let mut buffer = manager.alloc::<u32>(1 << 18).unwrap();
    assert_eq!(buffer.host().unwrap()[7], 0, "a new buffer reads as zeros");
    buffer.host_mut().unwrap()[7] = 7;
    assert_eq!(buffer.host().unwrap()[7], 7);
}

/// Runs `cycle` twice to warm the pools, this thread's slots and the live list, then counts
/// the allocations of a third run.
fn allocations_of(cycle: impl Fn()) -> allocation_counter::AllocationInfo {
    cycle();
    cycle();
    allocation_counter::measure(cycle)
}

#[test]
fn a_managed_buffer_is_one_heap_allocation() {
    let manager = manager(0);
    let info = allocations_of(|| use_a_buffer(&manager));
    assert_eq!(info.count_total, 1, "{info:?}");
    assert_eq!(
        info.count_current, 0,
        "given back as the buffer drops: {info:?}"
    );
}

#[test]
fn a_buffer_made_of_a_parked_one_allocates_nothing() {
    let manager = manager(hetmem::manager::PARKED_PER_THREAD);
    let info = allocations_of(|| use_a_buffer(&manager));
    assert_eq!(info.count_total, 0, "{info:?}");
    assert_eq!(manager.stats().parked.reuses, 2, "{:?}", manager.stats());
}

/// Two copies moving both ways (a plain context's buffer: on the host backend a manager
/// shares one allocation, there being nothing to mirror).
#[test]
fn a_mirrored_buffer_moving_both_ways_is_still_one() {
    let context = BufferContext::new(Arc::new(HostBackend::new()));
    let info = allocations_of(|| {
        let mut buffer = context
            .alloc_with::<u32>(1 << 18, Residency::Mirrored)
            .unwrap();
        buffer.host_mut().unwrap()[7] = 7;
        drop(buffer.device_mut().unwrap()); // uploads; the host copy goes stale
        assert_eq!(buffer.host().unwrap()[7], 7); // downloads
        buffer.write(3, &[5]).unwrap();
        drop(buffer.device().unwrap()); // uploads the 4 bytes
        let moved = buffer.metrics();
        assert!(
            moved.host_to_device.bytes > 0 && moved.device_to_host.bytes > 0,
            "{moved:?}"
        );
    });
    assert_eq!(info.count_total, 1, "{info:?}");
    assert_eq!(info.count_current, 0, "{info:?}");
}

/// A caching allocator's handles live in boxed nodes that the pool keeps: a pool hit moves one
/// between the thread's cache and the handle, and a block from the shared bins or from the
/// backend takes an empty node the thread kept — so none of them allocates once warm, beyond
/// what the backend's own allocation costs.
#[test]
fn pool_handouts_allocate_no_node_once_warm() {
    let backend: Arc<dyn Backend> = Arc::new(HostBackend::new());
    let write_and_check = |block: &mut hetmem::pool::PooledBlock, value: u8| {
        let q = backend.default_queue();
        backend
            .write(q, block.block_mut(), 0, &[value; 64])
            .unwrap();
        let mut back = [0u8; 64];
        backend.read(q, block.block(), 0, &mut back).unwrap();
        assert_eq!(back, [value; 64]);
    };
    let pool = CachingAllocator::new(backend.clone());
    let hit = allocations_of(|| write_and_check(&mut pool.allocate(1 << 20).unwrap(), 1));
    assert_eq!(hit.count_total, 0, "a thread-cache hit: {hit:?}");

    let shared_only = CachingConfig {
        thread_cache_blocks: 0,
        ..CachingConfig::default()
    };
    let pool = CachingAllocator::with_config(backend.clone(), shared_only);
    let from_bins = allocations_of(|| write_and_check(&mut pool.allocate(1 << 20).unwrap(), 2));
    assert_eq!(from_bins.count_total, 0, "a shared-bin hit: {from_bins:?}");

    let pool = CachingAllocator::with_config(backend.clone(), CachingConfig::unpooled());
    let unpooled = allocations_of(|| write_and_check(&mut pool.allocate(1 << 20).unwrap(), 3));
    let raw = allocations_of(|| {
        let mut block = backend.allocate(1 << 20).unwrap();
        backend
            .write(backend.default_queue(), &mut block, 0, &[3; 64])
            .unwrap();
        backend.release(block).unwrap();
    });
    assert_eq!(
        unpooled.count_total, raw.count_total,
        "an unpooled handle costs what the backend's allocation costs: {unpooled:?} vs {raw:?}"
    );
}
