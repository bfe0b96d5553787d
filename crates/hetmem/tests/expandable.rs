//! Expandable segments on every backend present: reservations at the seam (commit, decommit,
//! what usage counts, bad input) and the splitting allocator growing one segment in place,
//! giving free memory back, under a limit. A backend without virtual memory (OpenCL) refuses
//! reservations with a typed error and the allocator carves from segments instead.

mod common;

use std::sync::Arc;

use common::block_contents;
use hetmem::backend::{Backend, DeviceBlock, FaultKind, FaultOp, FaultyBackend};
use hetmem::pool::{SplittingConfig, SplittingResource};
use hetmem::resource::{LimitingResource, MemoryLimit, MemoryResource, PlainResource, Trim};
use hetmem::Error;

const MIB: usize = 1 << 20;

fn paint(b: &Arc<dyn Backend>, block: &mut DeviceBlock, value: u8) {
    let len = block.size();
    b.fill(b.default_queue(), block, 0, len, &[value])
        .unwrap()
        .wait()
        .unwrap();
}

fn holds(b: &Arc<dyn Backend>, block: &DeviceBlock, value: u8) -> bool {
    block_contents(b, block).iter().all(|&x| x == value)
}

/// What a segment grown to hold `carved` bytes commits: that rounded to the granule, and less
/// than a sixteenth more, committed ahead of a segment growing at its top.
fn grown_by(committed: u64, carved: usize, granule: usize) {
    let least = carved.next_multiple_of(granule) as u64;
    let most = least + (carved / 16 + granule) as u64;
    assert!(
        (least..=most).contains(&committed),
        "{committed} bytes committed for {carved} carved"
    );
}

/// Committing backs a range (counted once however often it is committed), views of it hold
/// bytes, decommitting gives it back and loses them, releasing frees the rest; bad ranges are
/// typed errors.
fn reservations_commit_and_decommit(b: &Arc<dyn Backend>) {
    let Some(g) = b.commit_granularity() else {
        assert!(matches!(b.reserve(MIB), Err(Error::Unsupported { .. })));
        return;
    };
    let before = b.usage();
    let r = b.reserve(16 * g).unwrap();
    assert!(r.is_reservation() && !r.is_view());
    assert_eq!(b.usage().live_blocks, before.live_blocks + 1);
    assert_eq!(
        b.usage().live_bytes,
        before.live_bytes,
        "address space costs nothing"
    );
    b.commit(&r, 0, 4 * g).unwrap();
    b.commit(&r, 2 * g, 4 * g).unwrap();
    assert_eq!(
        b.usage().live_bytes,
        before.live_bytes + 6 * g as u64,
        "counted once"
    );
    let mut view = b.view(&r, g, 4 * g).unwrap();
    paint(b, &mut view, 7);
    assert!(holds(b, &view, 7));
    b.release_view(view).unwrap();
    b.decommit(&r, 2 * g, 4 * g).unwrap();
    assert_eq!(b.usage().live_bytes, before.live_bytes + 2 * g as u64);
    b.commit(&r, 2 * g, 2 * g).unwrap();
    let view = b.view(&r, g, 2 * g).unwrap();
    let seen = block_contents(b, &view);
    assert!(
        seen[..g].iter().all(|&x| x == 7),
        "the granule kept is intact"
    );
    b.release_view(view).unwrap();
    for (offset, len) in [(1, g), (0, g + 1)] {
        let err = b.commit(&r, offset, len).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }
    assert!(matches!(
        b.commit(&r, 15 * g, 2 * g),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(b.commit(&r, 0, 0), Err(Error::ZeroLength { .. })));
    assert!(matches!(b.reserve(g + 1), Err(Error::InvalidArgument(_))));
    let plain = b.allocate(g).unwrap();
    assert!(matches!(
        b.commit(&plain, 0, g),
        Err(Error::InvalidArgument(_))
    ));
    b.release(plain).unwrap();
    b.release(r).unwrap();
    let after = b.usage();
    assert_eq!(
        (after.live_blocks, after.live_bytes),
        (before.live_blocks, before.live_bytes),
        "the reservation went with what was committed in it"
    );
}

/// Blocks carved one after another sit side by side in one segment that grows by what they
/// need; a trim gives back the memory of free ranges and keeps every live block's bytes; a hole
/// is reused and committed again; freeing everything and trimming gives back the address space.
fn one_segment_grows_in_place_and_gives_back_free_memory(b: &Arc<dyn Backend>) {
    let before = b.usage();
    let s = SplittingResource::over(
        Arc::new(PlainResource::new(b.clone())),
        SplittingConfig::default(),
    )
    .unwrap();
    let mut a = s.allocate(3 * MIB).unwrap();
    let mut c = s.allocate(5 * MIB).unwrap();
    paint(b, &mut a, 1);
    paint(b, &mut c, 2);
    let Some(g) = b.commit_granularity() else {
        assert!(s.stats().segments >= 1 && !s.snapshot()[0].expandable);
        for block in [a, c] {
            s.deallocate(block, Vec::new()).unwrap();
        }
        return;
    };
    let stats = s.stats();
    assert_eq!(stats.segments, 1);
    grown_by(stats.reserved_bytes, 8 * MIB, g);
    let mut d = s.allocate(7 * MIB).unwrap();
    paint(b, &mut d, 3);
    let reserved = s.stats().reserved_bytes;
    grown_by(reserved, 15 * MIB, g);
    let picture = &s.snapshot()[0];
    assert!(picture.expandable);
    assert_eq!(picture.committed, reserved);
    s.deallocate(c, Vec::new()).unwrap();
    let given = s.trim().unwrap();
    assert!(
        given >= (5 * MIB - 2 * g) as u64,
        "{given} bytes given back"
    );
    assert_eq!(
        s.stats().reserved_bytes,
        reserved - given,
        "reserved is what is committed"
    );
    assert!(
        holds(b, &a, 1) && holds(b, &d, 3),
        "live blocks keep their bytes"
    );
    // The hole is the best fit for 4 MiB: committed again, beside its neighbours.
    let mut e = s.allocate(4 * MIB).unwrap();
    paint(b, &mut e, 4);
    assert_eq!(s.stats().segments, 1);
    assert!(holds(b, &a, 1) && holds(b, &d, 3) && holds(b, &e, 4));
    for block in [a, d, e] {
        s.deallocate(block, Vec::new()).unwrap();
    }
    s.trim().unwrap();
    let stats = s.stats();
    assert_eq!((stats.segments, stats.reserved_bytes), (0, 0));
    let after = b.usage();
    assert_eq!(
        (after.live_blocks, after.live_bytes),
        (before.live_blocks, before.live_bytes),
        "the address space went back too"
    );
}

/// Growing is charged to a limit: past it the error is typed and nothing is lost; memory freed
/// in the segment makes room again without any new segment.
fn growing_is_charged_to_a_limit(b: &Arc<dyn Backend>) {
    if b.commit_granularity().is_none() {
        return; // The limit over segments is tested in `splitting.rs`.
    }
    let limit = MemoryLimit::new(10 * MIB as u64).unwrap();
    let plain = Arc::new(PlainResource::new(b.clone()));
    let limited = Arc::new(LimitingResource::new(plain, limit.clone()));
    let s = SplittingResource::over(limited, SplittingConfig::default()).unwrap();
    let mut a = s.allocate(6 * MIB).unwrap();
    paint(b, &mut a, 5);
    let err = s.allocate(5 * MIB).unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { .. }), "{err}");
    assert!(holds(b, &a, 5), "nothing lost");
    assert_eq!(
        limit.reserved(),
        6 * MIB as u64,
        "the failed growth took nothing"
    );
    s.deallocate(a, Vec::new()).unwrap();
    let mut big = s.allocate(9 * MIB).unwrap();
    paint(b, &mut big, 6);
    grown_by(limit.reserved(), 9 * MIB, b.commit_granularity().unwrap());
    assert_eq!(
        s.stats().segment_allocations,
        0,
        "no segment but the reservation"
    );
    s.deallocate(big, Vec::new()).unwrap();
    s.trim().unwrap();
    assert_eq!(limit.reserved(), 0);
}

/// A commit the device refuses fails the request with the device's error and leaves the
/// segment as it was: what was carved keeps its bytes and its memory, the books add up, and the
/// next request grows the segment as if nothing had happened.
fn a_refused_commit_changes_nothing(b: &Arc<dyn Backend>) {
    if b.commit_granularity().is_none() {
        return;
    }
    let faulty = Arc::new(FaultyBackend::new(b.clone()));
    let device: Arc<dyn Backend> = faulty.clone();
    let s = SplittingResource::over(
        Arc::new(PlainResource::new(device.clone())),
        SplittingConfig::default(),
    )
    .unwrap();
    let mut a = s.allocate(2 * MIB).unwrap();
    paint(&device, &mut a, 8);
    let before = s.stats();
    let next = faulty.calls(FaultOp::Allocate);
    faulty.fail(FaultOp::Allocate, next, FaultKind::OutOfMemory);
    let err = s.allocate(3 * MIB).unwrap_err();
    assert!(matches!(err, Error::OutOfMemory { .. }), "{err}");
    assert_eq!(s.stats(), before, "nothing carved, nothing committed");
    assert!(holds(&device, &a, 8));
    let mut c = s.allocate(3 * MIB).unwrap();
    paint(&device, &mut c, 9);
    assert!(holds(&device, &a, 8) && holds(&device, &c, 9));
    for block in [a, c] {
        s.deallocate(block, Vec::new()).unwrap();
    }
    s.trim().unwrap();
    assert_eq!(s.stats().reserved_bytes, 0);
}

/// Threads carving, checking and freeing at once while another trims: every block keeps its
/// bytes (commits made without the lock never expose a granule before it is committed, a trim
/// never takes one from under a block), and everything goes back at the end.
fn threads_grow_and_trim_at_once(b: &Arc<dyn Backend>) {
    let s = SplittingResource::over(
        Arc::new(PlainResource::new(b.clone())),
        SplittingConfig::default(),
    )
    .unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4u8)
            .map(|t| {
                let s = &s;
                scope.spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(u64::from(t));
                    let mut live: Vec<(DeviceBlock, u8)> = Vec::new();
                    for step in 0..150u32 {
                        if live.len() < 6 && rng.bool() {
                            let mut block = s.allocate(rng.usize(4096..2 * MIB)).unwrap();
                            let value = t * 50 + (step % 50) as u8 + 1;
                            paint(b, &mut block, value);
                            live.push((block, value));
                        } else if !live.is_empty() {
                            let (block, value) = live.swap_remove(rng.usize(..live.len()));
                            assert!(holds(b, &block, value), "thread {t}, step {step}");
                            s.deallocate(block, Vec::new()).unwrap();
                        }
                    }
                    for (block, value) in live {
                        assert!(holds(b, &block, value), "thread {t} at the end");
                        s.deallocate(block, Vec::new()).unwrap();
                    }
                })
            })
            .collect();
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                s.trim().unwrap();
                std::thread::yield_now();
            }
        });
        for worker in workers {
            worker.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    s.trim().unwrap();
    let stats = s.stats();
    assert_eq!(
        (stats.segments, stats.reserved_bytes, stats.used_bytes),
        (0, 0, 0)
    );
}

common::backend_suite!(
    [
        host => crate::common::host(),
        opencl_dev0 => crate::common::opencl(0),
        wgpu => crate::common::wgpu(),
        opencl_dev1 => crate::common::opencl(1),
        cuda_dev0 => crate::common::cuda(0),
    ],
    [
        reservations_commit_and_decommit,
        one_segment_grows_in_place_and_gives_back_free_memory,
        growing_is_charged_to_a_limit,
        a_refused_commit_changes_nothing,
        threads_grow_and_trim_at_once,
    ]
);
