//! The caching device allocator, on every backend present: reuse, stream-ordered safety, bounds,
//! trimming, statistics, threads, and a model-based property test.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::pattern;
use hetmem::backend::{Backend, HostBackend};
use hetmem::backend::{FaultKind, FaultOp, FaultyBackend};
use hetmem::pool::{CachingAllocator, CachingConfig, PooledBlock, SizeClasses};
use hetmem::Error;
use proptest::prelude::*;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

fn handle(p: &hetmem::pool::PooledBlock) -> usize {
    p.block().raw_handle() as usize
}

/// Invariants that hold whenever no allocation is in flight.
fn check_invariants(pool: &CachingAllocator) {
    let s = pool.stats();
    assert_eq!(s.bytes_in_use + s.bytes_cached, s.bytes_reserved, "{s:?}");
    assert!(s.peak_in_use >= s.bytes_in_use && s.peak_reserved >= s.bytes_reserved);
    let usage = pool.backend().usage();
    assert_eq!(
        usage.live_bytes, s.bytes_reserved,
        "backend and pool agree on reserved bytes"
    );
    assert_eq!(
        s.backend_allocations - s.backend_releases - s.foreign_returns,
        usage.live_blocks
    );
}

fn released_block_is_reused_with_its_contents_intact(b: &Arc<dyn Backend>) {
    let pool = CachingAllocator::new(b.clone());
    let q = b.default_queue().clone();
    let mut first = pool.allocate(1000).unwrap();
    assert_eq!(first.len(), 1000);
    assert_eq!(first.capacity(), 1024);
    let data = pattern(1000, 1);
    b.write(&q, first.block_mut(), 0, &data).unwrap();
    let id = handle(&first);
    drop(first);
    let s = pool.stats();
    assert_eq!(
        (s.misses, s.hits, s.cached_blocks, s.bytes_cached),
        (1, 0, 1, 1024)
    );
    // 900 bytes falls into the same 1024-byte class: the cached block comes back.
    let again = pool.allocate(900).unwrap();
    assert_eq!(handle(&again), id);
    let mut out = vec![0u8; 1000];
    b.read(&q, again.block(), 0, &mut out).unwrap();
    assert_eq!(out, data, "a cached block keeps its bytes");
    let s = pool.stats();
    assert_eq!((s.hits, s.backend_allocations, s.waste_bytes), (1, 1, 124));
    assert_eq!(s.hit_rate(), 0.5);
    // A different class does not take it.
    let other = pool.allocate(2000).unwrap();
    assert_ne!(handle(&other), id);
    drop((again, other));
    check_invariants(&pool);
}

fn pending_work_keeps_a_block_out_of_reach(b: &Arc<dyn Backend>) {
    let pool = CachingAllocator::new(b.clone());
    let gate = b.create_user_event().unwrap();
    let mut block = pool.allocate(64 * KIB).unwrap();
    let id = handle(&block);
    let pending = if b.capabilities().async_copies {
        // Real queued device work on the block, held back by the gate.
        let queue = b.create_queue().unwrap();
        b.enqueue_wait(&queue, gate.event()).unwrap();
        b.fill(&queue, block.block_mut(), 0, 64 * KIB, &[0x77])
            .unwrap()
    } else {
        gate.event().clone()
    };
    assert!(!pending.is_finished());
    block.release_after(pending.clone());
    let while_pending = pool.allocate(64 * KIB).unwrap();
    assert_ne!(
        handle(&while_pending),
        id,
        "a block with queued work must not be handed out"
    );
    gate.complete().unwrap();
    pending.wait().unwrap();
    let after = pool.allocate(64 * KIB).unwrap();
    assert_eq!(
        handle(&after),
        id,
        "once the work is done the block is reused"
    );
    if b.capabilities().async_copies {
        let mut out = vec![0u8; 64 * KIB];
        b.read(b.default_queue(), after.block(), 0, &mut out)
            .unwrap();
        assert!(
            out.iter().all(|&x| x == 0x77),
            "the gated fill ran before reuse"
        );
    }
    drop((while_pending, after));
    check_invariants(&pool);
}

fn cache_bounds_and_lru_trimming(b: &Arc<dyn Backend>) {
    // The shared bins alone: thread caches off.
    let config = CachingConfig {
        max_cached_bytes: 4 * MIB as u64,
        max_blocks_per_class: 2,
        thread_cache_blocks: 0,
        ..CachingConfig::default()
    };
    let pool = CachingAllocator::with_config(b.clone(), config);
    // Per-class bound: of three released 1 MiB blocks only two stay cached.
    let blocks: Vec<_> = (0..3).map(|_| pool.allocate(MIB).unwrap()).collect();
    drop(blocks);
    let s = pool.stats();
    assert_eq!((s.cached_blocks, s.backend_releases), (2, 1));
    // Byte bound: releasing 3 MiB more evicts the least recently released 1 MiB block.
    let big = pool.allocate(3 * MIB).unwrap();
    let big_id = handle(&big);
    drop(big);
    let s = pool.stats();
    assert!(s.bytes_cached <= 4 * MIB as u64, "{s:?}");
    assert_eq!(s.bytes_cached, 4 * MIB as u64);
    assert_eq!(s.largest_cached_block, 3 * MIB as u64);
    // trim keeps the most recently released block.
    assert_eq!(pool.trim_to(3 * MIB as u64).unwrap(), MIB as u64);
    assert_eq!(handle(&pool.allocate(3 * MIB).unwrap()), big_id);
    assert!(pool.trim().unwrap() > 0);
    let s = pool.stats();
    assert_eq!(
        (s.cached_blocks, s.bytes_cached, s.bytes_reserved),
        (0, 0, 0)
    );
    assert_eq!(b.usage().live_bytes, 0);
    check_invariants(&pool);
}

fn oversize_and_bad_requests(b: &Arc<dyn Backend>) {
    let config = CachingConfig {
        classes: SizeClasses::new(4, 512, MIB).unwrap(),
        ..CachingConfig::default()
    };
    let pool = CachingAllocator::with_config(b.clone(), config);
    let big = pool.allocate(MIB + 1).unwrap();
    assert_eq!(big.capacity(), MIB + 1, "oversized requests are exact");
    drop(big);
    let s = pool.stats();
    assert_eq!((s.oversize, s.cached_blocks, s.backend_releases), (1, 0, 1));
    assert!(matches!(pool.allocate(0), Err(Error::ZeroLength { .. })));
    assert!(matches!(
        pool.allocate(usize::MAX),
        Err(Error::AllocationTooLarge { .. })
    ));
    check_invariants(&pool);
}

fn two_threads_allocate_and_release(b: &Arc<dyn Backend>) {
    let pool = CachingAllocator::new(b.clone());
    std::thread::scope(|s| {
        for t in 0..2usize {
            let pool = pool.clone();
            s.spawn(move || {
                let q = pool.backend().default_queue().clone();
                let mut held = Vec::new();
                for i in 0..200usize {
                    let size = 512 + (i * 977 + t * 131) % (256 * KIB);
                    let mut p = pool.allocate(size).unwrap();
                    let tag = [(t * 100 + i % 100) as u8; 8];
                    pool.backend().write(&q, p.block_mut(), 0, &tag).unwrap();
                    held.push((p, tag));
                    if held.len() > 8 {
                        let (p, tag) = held.remove(i % held.len());
                        let mut out = [0u8; 8];
                        pool.backend().read(&q, p.block(), 0, &mut out).unwrap();
                        assert_eq!(out, tag, "no block is shared between live allocations");
                    }
                }
            });
        }
    });
    let s = pool.stats();
    assert_eq!(s.bytes_in_use, 0);
    assert_eq!(s.hits + s.misses, 400);
    assert!(s.hits > 0);
    check_invariants(&pool);
}

fn thread_caches_count_against_the_byte_limit_and_drain_on_trim(b: &Arc<dyn Backend>) {
    let config = CachingConfig {
        max_cached_bytes: 3 * MIB as u64,
        max_blocks_per_class: 8,
        thread_cache_blocks: 2,
        thread_cache_bytes: 2 * MIB as u64,
        ..CachingConfig::default()
    };
    let pool = CachingAllocator::with_config(b.clone(), config);
    let blocks: Vec<_> = (0..6).map(|_| pool.allocate(MIB).unwrap()).collect();
    let ids: HashSet<usize> = blocks.iter().map(handle).collect();
    drop(blocks);
    // Two blocks in this thread's cache, one in the shared bin: 3 MiB, the limit.
    let s = pool.stats();
    assert_eq!(
        (s.cached_blocks, s.bytes_cached),
        (3, 3 * MIB as u64),
        "{s:?}"
    );
    assert_eq!(s.backend_releases, 3);
    check_invariants(&pool);
    // Another thread cannot see this thread's cache but does get the shared block.
    let other = std::thread::scope(|s| s.spawn(|| handle(&pool.allocate(MIB).unwrap())).join());
    assert!(ids.contains(&other.unwrap()));
    // This thread gets its own blocks back, most recently released first.
    let (x, y) = (pool.allocate(MIB).unwrap(), pool.allocate(MIB).unwrap());
    assert!(ids.contains(&handle(&x)) && ids.contains(&handle(&y)));
    assert_eq!(pool.stats().hits, 3);
    drop((x, y));
    // trim empties every thread's cache, this one's included.
    assert_eq!(pool.trim_to(0).unwrap(), 3 * MIB as u64);
    let s = pool.stats();
    assert_eq!(
        (s.cached_blocks, s.bytes_cached, s.bytes_reserved),
        (0, 0, 0)
    );
    check_invariants(&pool);
}

/// Several last-use events recorded on one block: the pool hands it out again only once the
/// last of them has finished, and a pool hit with nothing pending is the same block at once.
fn every_recorded_event_holds_the_block(b: &Arc<dyn Backend>) {
    let pool = CachingAllocator::new(b.clone());
    let (first, second) = (
        b.create_user_event().unwrap(),
        b.create_user_event().unwrap(),
    );
    let mut block = pool.allocate(64 * KIB).unwrap();
    let id = handle(&block);
    block.record(first.event().clone());
    block.record(second.event().clone());
    block.record(hetmem::backend::Event::complete());
    assert_eq!(block.last_use().len(), 2, "finished events are not kept");
    drop(block);
    let held = pool.allocate(64 * KIB).unwrap();
    assert_ne!(handle(&held), id, "two events pending");
    first.complete().unwrap();
    let still = pool.allocate(64 * KIB).unwrap();
    assert_ne!(handle(&still), id, "one event pending");
    second.complete().unwrap();
    let free = pool.allocate(64 * KIB).unwrap();
    assert_eq!(handle(&free), id, "nothing pending: reused");
    drop((held, still, free));
    // Nothing recorded: straight back to this thread's cache.
    let again = pool.allocate(64 * KIB).unwrap();
    let id = handle(&again);
    drop(again);
    assert_eq!(handle(&pool.allocate(64 * KIB).unwrap()), id);
    check_invariants(&pool);
}

/// Out-of-memory recovery driven by injected faults on a real backend: the first failure
/// releases the cache and the allocation is retried; two in a row are a diagnosed error.
/// When the last handle goes, the cache lets go of what it keeps — in this thread's cache,
/// another thread's and the shared bins — at once; a block still out stays valid and goes
/// straight back to the backend when dropped; and nothing is left holding the allocator (the
/// blocks kept in thread caches hold its `Arc`s).
fn the_last_handle_lets_go_of_the_cache(b: &Arc<dyn Backend>) {
    let q = b.default_queue().clone();
    let (live, owners) = (b.usage().live_blocks, Arc::strong_count(b));
    let pool = CachingAllocator::new(b.clone());
    let mut out = pool.allocate(64 * KIB).unwrap();
    let data = pattern(64 * KIB, 7);
    b.write(&q, out.block_mut(), 0, &data).unwrap();
    drop(pool.allocate(64 * KIB).unwrap()); // kept in this thread's cache
    let other = pool.clone();
    std::thread::spawn(move || drop(other.allocate(128 * KIB).unwrap()))
        .join()
        .unwrap(); // kept in that thread's cache
    let pending = pool.allocate(4 * KIB).unwrap(); // to the shared bins, with work pending
    pending.release_after(b.create_user_event().unwrap().event().clone());
    assert_eq!(b.usage().live_blocks, live + 4);
    let clone = pool.clone();
    drop(pool);
    assert_eq!(b.usage().live_blocks, live + 4, "a clone keeps the cache");
    drop(clone.allocate(64 * KIB).unwrap());
    drop(clone);
    assert_eq!(
        b.usage().live_blocks,
        live + 1,
        "the cache let go of its blocks, pending ones included (the backend waits for them)"
    );
    let mut back = vec![0u8; 64 * KIB];
    b.read(&q, out.block(), 0, &mut back).unwrap();
    assert_eq!(back, data, "a block still out is untouched");
    drop(out);
    assert_eq!(b.usage().live_blocks, live);
    assert_eq!(
        Arc::strong_count(b),
        owners,
        "nothing holds the allocator any more"
    );
}

thread_local! {
    /// A user's thread-local scratch block, dropped as its thread ends.
    static SCRATCH: std::cell::RefCell<Option<PooledBlock>> = const { std::cell::RefCell::new(None) };
}

/// A block a thread-local of the user's holds is dropped as its thread ends — after the
/// thread's own pool slot went (the thread-local was made before the thread's first pool use,
/// so it is torn down last): it comes back whole to the shared bins, its contents untouched,
/// and the pool hands it out again.
fn a_block_dropped_as_its_thread_ends_comes_back(b: &Arc<dyn Backend>) {
    let q = b.default_queue().clone();
    let pool = CachingAllocator::new(b.clone());
    let (other, backend, data) = (pool.clone(), b.clone(), pattern(64 * KIB, 3));
    let written = data.clone();
    std::thread::spawn(move || {
        SCRATCH.with(|scratch| {
            let mut block = other.allocate(64 * KIB).unwrap();
            let q = backend.default_queue();
            backend.write(q, block.block_mut(), 0, &written).unwrap();
            *scratch.borrow_mut() = Some(block);
        })
    })
    .join()
    .unwrap();
    let stats = pool.stats();
    assert_eq!(
        (stats.bytes_in_use, stats.cached_blocks),
        (0, 1),
        "{stats:?}"
    );
    let again = pool.allocate(64 * KIB).unwrap();
    let mut back = vec![0u8; 64 * KIB];
    b.read(&q, again.block(), 0, &mut back).unwrap();
    assert_eq!(back, data, "the same block, untouched");
    assert_eq!(pool.stats().hits, 1);
}

/// Threads releasing blocks while the last handle goes: every block reaches the backend and
/// nothing is left holding the allocator, however the releases and the closing interleave.
fn releases_racing_the_last_handle_lose_nothing(b: &Arc<dyn Backend>) {
    let (live, owners) = (b.usage().live_blocks, Arc::strong_count(b));
    for round in 0..20 {
        let pool = CachingAllocator::new(b.clone());
        let start = Arc::new(std::sync::Barrier::new(3));
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let blocks: Vec<_> = (0..8)
                    .map(|i| pool.allocate((1 + (i + t + round) % 4) * 4 * KIB).unwrap())
                    .collect();
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    drop(blocks);
                })
            })
            .collect();
        start.wait();
        drop(pool);
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(b.usage().live_blocks, live, "round {round}");
        assert_eq!(Arc::strong_count(b), owners, "round {round}");
    }
}

fn injected_out_of_memory_releases_the_cache_and_retries(b: &Arc<dyn Backend>) {
    let faulty = Arc::new(FaultyBackend::new(b.clone()));
    let pool = CachingAllocator::new(faulty.clone());
    drop(
        (0..3)
            .map(|_| pool.allocate(MIB).unwrap())
            .collect::<Vec<_>>(),
    );
    assert_eq!(pool.stats().bytes_cached, 3 * MIB as u64);
    let next = faulty.calls(FaultOp::Allocate);
    faulty.fail(FaultOp::Allocate, next, FaultKind::OutOfMemory);
    let mut big = pool.allocate(2 * MIB).unwrap();
    assert_eq!(faulty.injected(), 1);
    assert_eq!(
        pool.stats().bytes_cached,
        0,
        "the cache was released to make room"
    );
    let data = pattern(2 * MIB, 3);
    b.write(b.default_queue(), big.block_mut(), 0, &data)
        .unwrap();
    let mut back = vec![0u8; 2 * MIB];
    b.read(b.default_queue(), big.block(), 0, &mut back)
        .unwrap();
    assert!(back == data, "the retried block holds what is written");
    let next = faulty.calls(FaultOp::Allocate);
    faulty.fail(FaultOp::Allocate, next, FaultKind::OutOfMemory);
    faulty.fail(FaultOp::Allocate, next + 1, FaultKind::OutOfMemory);
    match pool.allocate(8 * MIB) {
        Err(Error::OutOfMemory {
            diagnosis: Some(d), ..
        }) => assert_eq!(d.requested, 8 * MIB as u64, "{d}"),
        other => panic!("expected a diagnosed OutOfMemory, got {other:?}"),
    }
    drop(big);
    check_invariants(&pool);
}

/// Issue 18, item 8: safe code can swap a block into a pool through `block_mut`. A block of
/// the same backend and size is as good as the original; a smaller one, or one of another
/// backend, is neither cached nor a panic, and no block is lost.
fn swapped_in_blocks_are_caught_on_return(b: &Arc<dyn Backend>) {
    let pool = CachingAllocator::new(b.clone());
    let q = b.default_queue().clone();

    // The same backend and size: cached as if it were the pool's own.
    let mut pooled = pool.allocate(1000).unwrap();
    let mut own = b.allocate(1024).unwrap();
    b.write(&q, &mut own, 0, &pattern(1024, 3)).unwrap();
    let own_handle = own.raw_handle() as usize;
    std::mem::swap(pooled.block_mut(), &mut own);
    drop(pooled);
    let again = pool.allocate(1000).unwrap();
    assert_eq!(handle(&again), own_handle, "the swapped-in block is cached");
    let mut out = vec![0u8; 1024];
    b.read(&q, again.block(), 0, &mut out).unwrap();
    assert_eq!(out, pattern(1024, 3));
    drop(again);
    b.release(own).unwrap();
    check_invariants(&pool);
    assert_eq!(pool.stats().foreign_returns, 0);

    // A smaller block of the same backend: released, not cached; the pool's own leaves its books.
    let mut pooled = pool.allocate(1000).unwrap();
    let mut small = b.allocate(16).unwrap();
    std::mem::swap(pooled.block_mut(), &mut small);
    let live = b.usage().live_blocks;
    drop(pooled);
    assert_eq!(
        b.usage().live_blocks,
        live - 1,
        "the stranger went to the backend"
    );
    let s = pool.stats();
    assert_eq!(
        (s.foreign_returns, s.bytes_in_use, s.waste_bytes),
        (1, 0, 0)
    );
    assert_eq!(
        small.size(),
        1024,
        "the pool's own block is the swapper's now"
    );
    b.release(small).unwrap();
    pool.trim().unwrap();
    check_invariants(&pool);

    // A block of another backend: set aside for its owner; trim keeps working.
    let other = HostBackend::new();
    let mut pooled = pool.allocate(1000).unwrap();
    let mut stranger = other.allocate(1024).unwrap();
    std::mem::swap(pooled.block_mut(), &mut stranger);
    drop(pooled);
    pool.trim().unwrap();
    let set_aside = pool.take_foreign_blocks();
    assert_eq!(set_aside.len(), 1);
    assert_eq!(set_aside[0].backend(), other.id());
    for block in set_aside {
        other.release(block).unwrap();
    }
    b.release(stranger).unwrap();
    assert_eq!(other.usage().live_blocks, 0);
    assert_eq!(pool.stats().foreign_returns, 2);
    check_invariants(&pool);
    assert_eq!(b.usage().live_blocks, 0, "nothing leaked");
}

common::backend_suite!(
    [
        host => crate::common::host(),
        opencl_dev0 => crate::common::opencl(0),
        wgpu => crate::common::wgpu(),
        cuda_dev0 => crate::common::cuda(0),
    ],
    [
        released_block_is_reused_with_its_contents_intact,
        pending_work_keeps_a_block_out_of_reach, cache_bounds_and_lru_trimming,
        oversize_and_bad_requests, two_threads_allocate_and_release,
        thread_caches_count_against_the_byte_limit_and_drain_on_trim,
        every_recorded_event_holds_the_block,
        injected_out_of_memory_releases_the_cache_and_retries,
        swapped_in_blocks_are_caught_on_return, the_last_handle_lets_go_of_the_cache,
        releases_racing_the_last_handle_lose_nothing,
        a_block_dropped_as_its_thread_ends_comes_back,
    ]
);

#[test]
fn out_of_memory_releases_the_cache_retries_and_diagnoses() {
    let backend: Arc<dyn Backend> = Arc::new(HostBackend::with_capacity(4 * MIB as u64));
    let pool = CachingAllocator::new(backend.clone());
    // Fill the "device" with cached blocks of another class.
    let held: Vec<_> = (0..3).map(|_| pool.allocate(MIB).unwrap()).collect();
    drop(held);
    assert_eq!(pool.stats().bytes_cached, 3 * MIB as u64);
    // 2 MiB does not fit next to 3 MiB of cache: the cache is released and the retry succeeds.
    let two = pool.allocate(2 * MIB).unwrap();
    let s = pool.stats();
    assert_eq!((s.bytes_cached, s.bytes_in_use), (0, 2 * MIB as u64));
    // Now a request that cannot fit even with an empty cache.
    let _one = pool.allocate(MIB).unwrap();
    drop(pool.allocate(512 * KIB).unwrap()); // cached, released again on the next failure
    match pool.allocate(2 * MIB) {
        Err(Error::OutOfMemory {
            requested,
            diagnosis: Some(d),
            ..
        }) => {
            assert_eq!(requested, 2 * MIB as u64);
            assert_eq!(d.in_use, 3 * MIB as u64);
            assert_eq!(d.cached, 512 * KIB as u64);
            assert_eq!(d.largest_cached, 512 * KIB as u64);
            assert_eq!(d.device_free, Some(MIB as u64));
            let text = Error::OutOfMemory {
                backend: hetmem::backend::BackendKind::Host,
                requested,
                diagnosis: Some(d),
            }
            .to_string();
            assert!(text.contains("in use"), "{text}");
        }
        other => panic!("expected a diagnosed OutOfMemory, got {other:?}"),
    }
    assert_eq!(pool.stats().bytes_cached, 0);
    drop(two);
    check_invariants(&pool);
}

#[test]
fn out_of_memory_empties_other_threads_caches() {
    let backend: Arc<dyn Backend> = Arc::new(HostBackend::with_capacity(2 * MIB as u64));
    let pool = CachingAllocator::new(backend);
    // Another thread's cache keeps the whole "device".
    std::thread::scope(|s| {
        s.spawn(|| drop(pool.allocate(2 * MIB).unwrap()));
    });
    assert_eq!(pool.stats().bytes_cached, 2 * MIB as u64);
    // A different class does not fit; the retry after emptying every cache does.
    let p = pool.allocate(MIB + 1).unwrap();
    let s = pool.stats();
    assert_eq!((s.bytes_cached, s.bytes_in_use), (0, p.capacity() as u64));
    check_invariants(&pool);
}

#[test]
fn peaks_reset_to_the_current_values() {
    let pool = CachingAllocator::new(Arc::new(HostBackend::new()));
    let a = pool.allocate(MIB).unwrap();
    drop(pool.allocate(2 * MIB).unwrap());
    assert_eq!(pool.stats().peak_in_use, 3 * MIB as u64);
    pool.reset_peaks();
    let s = pool.stats();
    assert_eq!(
        (s.peak_in_use, s.peak_reserved),
        (MIB as u64, 3 * MIB as u64)
    );
    drop(a);
}

#[derive(Debug, Clone)]
enum Op {
    Allocate(usize),
    Release(usize),
    Trim(u64),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            6 => (1usize..300_000).prop_map(Op::Allocate),
            4 => any::<usize>().prop_map(Op::Release),
            1 => (0u64..1_000_000).prop_map(Op::Trim),
        ],
        1..80,
    )
}

/// Runs a random operation sequence against the pool and a reference model of what must hold.
fn run_model(backend: Arc<dyn Backend>, ops: &[Op]) {
    let config = CachingConfig {
        max_cached_bytes: 1_500_000,
        max_blocks_per_class: 3,
        ..CachingConfig::default()
    };
    let pool = CachingAllocator::with_config(backend, config);
    let classes = *pool.classes();
    let mut live = Vec::new();
    let (mut requested_total, mut rounded_total) = (0u64, 0u64);
    for op in ops {
        match *op {
            Op::Allocate(n) => {
                let p = pool.allocate(n).unwrap();
                assert_eq!(p.capacity(), classes.round_up(n).unwrap());
                requested_total += n as u64;
                rounded_total += p.capacity() as u64;
                live.push(p);
            }
            Op::Release(i) if !live.is_empty() => {
                let p = live.swap_remove(i % live.len());
                requested_total -= p.len() as u64;
                rounded_total -= p.capacity() as u64;
            }
            Op::Release(_) => {}
            Op::Trim(target) => {
                pool.trim_to(target).unwrap();
                assert!(pool.stats().bytes_cached <= target);
            }
        }
        let handles: HashSet<usize> = live.iter().map(handle).collect();
        assert_eq!(handles.len(), live.len(), "a block was handed out twice");
        let s = pool.stats();
        assert_eq!(s.bytes_in_use, rounded_total);
        assert_eq!(s.waste_bytes, rounded_total - requested_total);
        assert!(s.bytes_cached <= 1_500_000);
        check_invariants(&pool);
    }
    drop(live);
    let s = pool.stats();
    assert_eq!(s.bytes_in_use, 0);
    assert_eq!(s.waste_bytes, 0);
    check_invariants(&pool);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn model_host(ops in ops()) {
        run_model(Arc::new(HostBackend::new()), &ops);
    }

    #[test]
    fn model_opencl(ops in ops()) {
        if let Some(backend) = common::opencl(0) {
            run_model(backend, &ops);
        }
    }

    #[test]
    fn model_cuda(ops in ops()) {
        if let Some(backend) = common::cuda(0) {
            run_model(backend, &ops);
        }
    }
}
