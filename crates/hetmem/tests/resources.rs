//! Memory resources on every backend present: each adaptor on its own (the plain resource never
//! caches, limits refuse with figures, the failure callback frees memory and retries, statistics
//! stay exact under two threads, tracking sees every call) and stacks composed in either order.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use common::pattern;
use hetmem::backend::{Backend, HostBackend};
use hetmem::manager::AllocMode;
use hetmem::pool::{CachingAllocator, CachingConfig};
use hetmem::resource::{
    FailureCallbackResource, LimitingResource, MemoryLimit, MemoryResource, PlainResource,
    ResourceCall, ResourceEvent, StatisticsResource, TrackingResource, Trim,
};
use hetmem::{AllocOptions, Error, MemoryManager, Placement};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

fn plain(b: &Arc<dyn Backend>) -> Arc<dyn MemoryResource> {
    Arc::new(PlainResource::new(b.clone()))
}

/// Every allocation of the plain resource is a backend allocation, every deallocation a
/// release; an unpooled allocator over it caches nothing and its blocks hold their contents.
fn plain_and_unpooled_never_cache(b: &Arc<dyn Backend>) {
    let resource = plain(b);
    let live = b.usage().live_blocks;
    let block = resource.allocate(3 * KIB).unwrap();
    assert_eq!((block.size(), b.usage().live_blocks), (3 * KIB, live + 1));
    resource.deallocate(block, Vec::new()).unwrap();
    assert_eq!(b.usage().live_blocks, live);
    assert_eq!(resource.trim().unwrap(), 0, "nothing held");

    let other = HostBackend::new();
    let stranger = other.allocate(64).unwrap();
    match resource.deallocate(stranger, Vec::new()) {
        Err(Error::ReleasedToWrongBackend { block, .. }) => other.release(block).unwrap(),
        r => panic!("a foreign block must come back, got {r:?}"),
    }

    let unpooled = CachingAllocator::over(resource, CachingConfig::unpooled());
    let q = b.default_queue().clone();
    for round in 0..3u8 {
        let mut pooled = unpooled.allocate(MIB).unwrap();
        assert_eq!(b.usage().live_blocks, live + 1);
        b.write(&q, pooled.block_mut(), 0, &pattern(MIB, round))
            .unwrap();
        let mut back = vec![0u8; MIB];
        b.read(&q, pooled.block(), 0, &mut back).unwrap();
        assert_eq!(back, pattern(MIB, round));
        drop(pooled);
        assert_eq!(b.usage().live_blocks, live, "released at once, not cached");
    }
    let s = unpooled.stats();
    assert_eq!(
        (
            s.hits,
            s.backend_allocations,
            s.backend_releases,
            s.bytes_cached
        ),
        (0, 3, 3, 0)
    );
}

/// The limit refuses with the request, the limit and what is in use; deallocation credits it.
fn limit_exceeded_reports_its_figures(b: &Arc<dyn Backend>) {
    let limit = MemoryLimit::new(MIB as u64).unwrap();
    let limited = LimitingResource::new(plain(b), limit.clone());
    let a = limited.allocate(768 * KIB).unwrap();
    assert_eq!(limit.reserved(), 768 * KIB as u64);
    match limited.allocate(512 * KIB) {
        Err(Error::LimitExceeded {
            requested,
            limit: bytes,
            in_use,
        }) => assert_eq!(
            (requested, bytes, in_use),
            (512 * KIB as u64, MIB as u64, 768 * KIB as u64)
        ),
        r => panic!("expected LimitExceeded, got {r:?}"),
    }
    assert_eq!(
        limit.reserved(),
        768 * KIB as u64,
        "a refusal charges nothing"
    );
    limited.deallocate(a, Vec::new()).unwrap();
    assert_eq!(limit.reserved(), 0);
    let whole = limited.allocate(MIB).unwrap();
    limited.deallocate(whole, Vec::new()).unwrap();
}

/// A limit shared by two caches over two stacks: the one that needs room empties the other.
fn a_shared_limit_trims_every_cache_under_it(b: &Arc<dyn Backend>) {
    let limit = MemoryLimit::new(2 * MIB as u64).unwrap();
    let first = CachingAllocator::over(
        Arc::new(LimitingResource::new(plain(b), limit.clone())),
        CachingConfig::default(),
    );
    let second = CachingAllocator::over(
        Arc::new(LimitingResource::new(plain(b), limit.clone())),
        CachingConfig::default(),
    );
    drop(first.allocate(2 * MIB).unwrap());
    assert_eq!(first.stats().bytes_cached, 2 * MIB as u64);
    let block = second.allocate(MIB).unwrap();
    assert_eq!(
        first.stats().bytes_cached,
        0,
        "the other stack's cache gave way"
    );
    assert_eq!(limit.reserved(), MIB as u64);
    drop(block);
}

/// The callback frees memory (drops a buffer another part of the program held) and asks for a
/// retry: the allocation that ran out then succeeds, and the callback saw the failure.
fn failure_callback_frees_memory_and_retries(b: &Arc<dyn Backend>) {
    let spill: Arc<Mutex<Vec<hetmem::UnifiedBuffer<u8>>>> = Arc::default();
    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::new(Mutex::new(None));
    let manager = {
        let (spill, calls, seen) = (spill.clone(), calls.clone(), seen.clone());
        MemoryManager::builder()
            .backend(b.clone())
            .limit(2 * MIB as u64)
            .on_out_of_memory(move |failure| {
                calls.fetch_add(1, Ordering::SeqCst);
                *seen.lock().unwrap() = Some((failure.bytes, failure.retries));
                // Free what can be freed; retry only if something was.
                spill.lock().unwrap().pop().is_some()
            })
            .build()
            .unwrap()
    };
    // Device-placed buffers take their device memory at once and nothing on the host.
    let device = AllocOptions::new().placement(Placement::Device);
    let held = manager
        .alloc_with::<u8>(MIB + MIB / 2, device.clone())
        .unwrap();
    spill.lock().unwrap().push(held);
    let mut fresh = manager
        .alloc_with::<u8>(MIB / 2 + MIB / 4, device.clone())
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The callback sees what was refused: the request, or the growth of the segment it is
    // carved from (a little more, committed ahead).
    let (bytes, retries) = seen.lock().unwrap().unwrap();
    assert!(
        bytes >= MIB / 2 + MIB / 4 && retries == 0,
        "{bytes}, {retries}"
    );
    fresh.write(0, &pattern(MIB / 2 + MIB / 4, 9)).unwrap();
    assert_eq!(fresh.to_vec().unwrap(), pattern(MIB / 2 + MIB / 4, 9));
    // Nothing left to free: the callback declines and the error is the limit's.
    let denied = manager.alloc_with::<u8>(2 * MIB, device);
    assert!(
        matches!(denied, Err(Error::LimitExceeded { .. })),
        "{denied:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        fresh.to_vec().unwrap(),
        pattern(MIB / 2 + MIB / 4, 9),
        "valid data stays valid"
    );
}

/// Two threads allocate and free through one statistics resource: every count is exact.
fn statistics_are_exact_under_two_threads(b: &Arc<dyn Backend>) {
    let stats = Arc::new(StatisticsResource::new(plain(b)));
    const ROUNDS: usize = 200;
    std::thread::scope(|s| {
        for t in 0..2 {
            let stats = stats.clone();
            s.spawn(move || {
                for i in 0..ROUNDS {
                    let bytes = KIB * (1 + (i + t) % 4);
                    let block = stats.allocate(bytes).unwrap();
                    assert_eq!(block.size(), bytes);
                    stats.deallocate(block, Vec::new()).unwrap();
                }
            });
        }
    });
    let kept = stats.allocate(5 * KIB).unwrap();
    let s = stats.stats();
    assert_eq!(
        (s.allocations, s.deallocations, s.blocks, s.bytes),
        (2 * ROUNDS as u64 + 1, 2 * ROUNDS as u64, 1, 5 * KIB as u64)
    );
    assert!(s.peak_bytes >= 5 * KIB as u64 && s.peak_bytes <= 8 * KIB as u64);
    assert_eq!(s.failed_allocations, 0);
    assert!(stats.allocate(0).is_err());
    assert_eq!(stats.stats().failed_allocations, 1);
    stats.deallocate(kept, Vec::new()).unwrap();
    assert_eq!(stats.stats().bytes, 0);
}

/// Tracking sees every call, with the address that pairs an allocation with its release.
fn tracking_sees_every_call(b: &Arc<dyn Backend>) {
    let log: Arc<Mutex<Vec<ResourceEvent>>> = Arc::default();
    let tracked = {
        let log = log.clone();
        TrackingResource::new(plain(b), move |e| log.lock().unwrap().push(e.clone()))
    };
    let block = tracked.allocate(4 * KIB).unwrap();
    let address = block.raw_handle() as usize;
    tracked.deallocate(block, Vec::new()).unwrap();
    assert!(tracked.allocate(0).is_err());
    tracked.trim().unwrap();
    let log = log.lock().unwrap();
    let calls: Vec<_> = log.iter().map(|e| (e.call, e.bytes)).collect();
    assert_eq!(
        calls,
        [
            (ResourceCall::Allocate, 4 * KIB as u64),
            (ResourceCall::Deallocate { pending: 0 }, 4 * KIB as u64),
            (ResourceCall::AllocateFailed, 0),
            (ResourceCall::Trim, 0),
        ]
    );
    assert_eq!((log[0].address, log[1].address), (address, address));
    assert!(log.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(log[0].thread, std::thread::current().id());
}

/// Statistics above the cache count what users ask for; below it, what reaches the device.
fn statistics_compose_above_and_below_the_cache(b: &Arc<dyn Backend>) {
    let below = Arc::new(StatisticsResource::new(plain(b)));
    let cache = Arc::new(CachingAllocator::over(
        below.clone(),
        CachingConfig::default(),
    ));
    let above = StatisticsResource::new(cache.clone());
    for _ in 0..10 {
        let block = above.allocate(3 * KIB).unwrap();
        assert_eq!(block.size(), 3 * KIB, "3 KiB is a class size");
        above.deallocate(block, Vec::new()).unwrap();
    }
    let (user, device) = (above.stats(), below.stats());
    assert_eq!((user.allocations, user.deallocations), (10, 10));
    assert_eq!((device.allocations, device.deallocations), (1, 0));
    assert_eq!(cache.stats().bytes_cached, 3 * KIB as u64);
    // Trimming from the top goes all the way down.
    assert_eq!(above.trim().unwrap(), 3 * KIB as u64);
    assert_eq!(below.stats().deallocations, 1);
}

/// A failure callback above the limit sees the limit's refusals; one below it never does (the
/// limit refuses before reaching it): the order of adaptors is the order of checks.
fn failure_callback_and_limit_compose_in_either_order(b: &Arc<dyn Backend>) {
    let count = Arc::new(AtomicU32::new(0));
    let counting = |count: &Arc<AtomicU32>| {
        let count = count.clone();
        move |_: &hetmem::resource::AllocationFailure<'_>| {
            count.fetch_add(1, Ordering::SeqCst);
            false
        }
    };
    let limit = MemoryLimit::new(MIB as u64).unwrap();
    let above = FailureCallbackResource::new(
        Arc::new(LimitingResource::new(plain(b), limit.clone())),
        counting(&count),
    );
    assert!(matches!(
        above.allocate(2 * MIB),
        Err(Error::LimitExceeded { .. })
    ));
    assert_eq!(count.load(Ordering::SeqCst), 1);

    let below = LimitingResource::new(
        Arc::new(FailureCallbackResource::new(plain(b), counting(&count))),
        limit,
    );
    assert!(matches!(
        below.allocate(2 * MIB),
        Err(Error::LimitExceeded { .. })
    ));
    assert_eq!(count.load(Ordering::SeqCst), 1, "the limit refused first");
}

/// Two caches stacked over one device: out of memory relieves the upper one first, so its
/// blocks pass through the lower cache on their way to the device.
fn stacked_caches_give_way_top_first(b: &Arc<dyn Backend>) {
    let lower = Arc::new(CachingAllocator::over(plain(b), CachingConfig::default()));
    let upper = CachingAllocator::over(lower.clone(), CachingConfig::default());
    drop(upper.allocate(MIB).unwrap());
    assert_eq!(upper.stats().bytes_cached, MIB as u64);
    assert_eq!(
        lower.relieve().unwrap(),
        MIB as u64 * 2,
        "upper, then lower"
    );
    assert_eq!(
        (upper.stats().bytes_cached, lower.stats().bytes_cached),
        (0, 0)
    );
    assert_eq!(lower.stats().backend_releases, 1);
}

/// Allocation modes through the manager: unpooled buffers bypass the pools, pinned and unified
/// choose their placements, and a contradictory placement is refused.
fn manager_allocation_modes(b: &Arc<dyn Backend>) {
    let manager = MemoryManager::new(b.clone()).unwrap();
    let device = AllocOptions::new().placement(Placement::Device);
    let before = manager.stats().device;
    let live = b.usage().live_blocks;
    let unpooled = manager
        .from_slice_with(
            &pattern(64 * KIB, 3),
            device.clone().mode(AllocMode::Unpooled),
        )
        .unwrap();
    assert_eq!(b.usage().live_blocks, live + 1);
    assert_eq!(unpooled.to_vec().unwrap(), pattern(64 * KIB, 3));
    drop(unpooled);
    assert_eq!(b.usage().live_blocks, live, "nothing cached");
    let after = manager.stats().device;
    assert_eq!(
        (after.hits + after.misses, after.bytes_cached),
        (before.hits + before.misses, before.bytes_cached),
        "the device pool never saw it"
    );

    // Pinned decides as the HostPinned placement does (Shared where device memory is host
    // memory, by the decision table).
    let pinned = AllocOptions::new().mode(AllocMode::Pinned);
    let host_pinned = AllocOptions::new().placement(Placement::HostPinned);
    assert_eq!(
        manager.decide(&pinned, MIB).unwrap(),
        manager.decide(&host_pinned, MIB).unwrap()
    );
    let conflict = pinned.placement(Placement::Device);
    assert!(matches!(
        manager.alloc_with::<u8>(16, conflict),
        Err(Error::InvalidArgument(_))
    ));
    let unified = AllocOptions::new().mode(AllocMode::Unified);
    let caps = b.capabilities();
    match caps.host_addressable || caps.shared_allocations {
        true => {
            let buffer = manager.from_slice_with(&[1u32, 2, 3], unified).unwrap();
            assert_eq!(buffer.to_vec().unwrap(), [1, 2, 3]);
        }
        false => assert!(manager.alloc_with::<u8>(16, unified).is_err()),
    }
}

common::backend_suite!(
    [
        host => crate::common::host(),
        opencl_dev0 => crate::common::opencl(0),
        wgpu => crate::common::wgpu(),
        cuda_dev0 => crate::common::cuda(0),
    ],
    [
        plain_and_unpooled_never_cache, limit_exceeded_reports_its_figures,
        a_shared_limit_trims_every_cache_under_it, failure_callback_frees_memory_and_retries,
        statistics_are_exact_under_two_threads, tracking_sees_every_call,
        statistics_compose_above_and_below_the_cache,
        failure_callback_and_limit_compose_in_either_order, stacked_caches_give_way_top_first,
        manager_allocation_modes,
    ]
);
