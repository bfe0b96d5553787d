//! The splitting allocator on every backend present: random sequences of large allocations
//! and frees whose blocks (views of segments: sub-buffers on OpenCL) each hold their own bytes,
//! stream-ordered reuse, a memory limit, trimming, and bad input.

mod common;

use std::sync::Arc;

use common::block_contents;
use hetmem::backend::{Backend, DeviceBlock};
use hetmem::pool::{SplittingConfig, SplittingResource};
use hetmem::resource::{LimitingResource, MemoryLimit, MemoryResource, PlainResource, Trim};
use hetmem::Error;

const MIB: usize = 1 << 20;

fn splitting(b: &Arc<dyn Backend>) -> Arc<SplittingResource> {
    SplittingResource::over(
        Arc::new(PlainResource::new(b.clone())),
        SplittingConfig::default(),
    )
    .unwrap()
}

/// Segments of 20 MiB whatever is held (PyTorch's size for requests under 10 MiB), no
/// expandable segment, requests up to 4 KiB passed through, so that the tests below can say
/// where each block lands.
fn fixed_segments(b: &Arc<dyn Backend>) -> Arc<SplittingResource> {
    let config = SplittingConfig {
        split_above: 4096,
        small_segment: 20 * MIB,
        segment_rounding: 20 * MIB,
        expandable: false,
        ..SplittingConfig::default()
    };
    SplittingResource::over(Arc::new(PlainResource::new(b.clone())), config).unwrap()
}

/// Fills a block with one byte value, through the device.
fn paint(b: &Arc<dyn Backend>, block: &mut DeviceBlock, value: u8) {
    let q = b.default_queue();
    let len = block.size();
    b.fill(q, block, 0, len, &[value]).unwrap().wait().unwrap();
}

/// Whether every 256th byte of a block, and its last, is `value` (blocks are multiples of 512
/// bytes, so an overlap would show).
fn holds(b: &Arc<dyn Backend>, block: &DeviceBlock, value: u8) -> bool {
    let seen = block_contents(b, block);
    seen.iter().step_by(256).all(|&x| x == value) && seen.last() == Some(&value)
}

/// Random sequences of 1–30 MiB allocations and frees: every live block keeps the byte it was
/// painted with (no two overlap), the books add up, and after everything is freed the segments
/// merge whole and go back.
fn random_sequences_keep_every_block_apart(b: &Arc<dyn Backend>) {
    let before = b.usage().live_bytes;
    let s = splitting(b);
    for seed in 0..4u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut live: Vec<(DeviceBlock, u8, usize)> = Vec::new();
        for step in 0..60 {
            if rng.f64() < 0.6 || live.is_empty() {
                let asked = rng.usize(MIB..30 * MIB);
                let mut block = s.allocate(asked).unwrap();
                assert!(block.is_view());
                assert_eq!(block.size(), asked, "a block is the size asked");
                let value = (step % 250) as u8 + 1;
                paint(b, &mut block, value);
                live.push((block, value, asked));
            } else {
                let (block, _, _) = live.swap_remove(rng.usize(..live.len()));
                s.deallocate(block, Vec::new()).unwrap();
            }
            if step % 10 == 9 {
                for (block, value, _) in &live {
                    assert!(holds(b, block, *value), "seed {seed}, step {step}");
                }
            }
            let stats = s.stats();
            // Ranges are the blocks rounded to the 512-byte granularity.
            let used: usize = live
                .iter()
                .map(|(b, _, _)| b.size().next_multiple_of(512))
                .sum();
            assert_eq!(stats.used_bytes, used as u64);
            assert!(stats.reserved_bytes >= stats.used_bytes);
        }
        for (block, _, _) in live {
            s.deallocate(block, Vec::new()).unwrap();
        }
        let segments = s.stats().segments;
        let snapshot = s.snapshot();
        assert_eq!(snapshot.len() as u64, segments);
        for segment in &snapshot {
            assert_eq!(segment.ranges.len(), 1, "merged whole");
            assert!(!segment.ranges[0].used);
        }
        let reserved = s.stats().reserved_bytes;
        assert_eq!(s.trim().unwrap(), reserved);
        assert_eq!(s.stats().reserved_bytes, 0);
    }
    assert_eq!(b.usage().live_bytes, before, "every segment went back");
}

/// Small requests pass through as plain blocks; large ones share segments, best fit first.
fn small_requests_pass_through_and_large_ones_share_segments(b: &Arc<dyn Backend>) {
    let s = fixed_segments(b);
    let small = s.allocate(4096).unwrap();
    assert!(!small.is_view());
    assert_eq!(s.stats().segments, 0);
    let a = s.allocate(3 * MIB).unwrap();
    let c = s.allocate(5 * MIB).unwrap();
    let stats = s.stats();
    assert_eq!((stats.segments, stats.reserved_bytes), (1, 20 << 20));
    assert_eq!(stats.largest_free, (12 << 20) as u64);
    // A request of 10 MiB or more that nothing free fits gets a segment of its own, rounded
    // up to the segment rounding.
    let big = s.allocate(13 * MIB + 1).unwrap();
    assert_eq!(s.stats().reserved_bytes, (40 << 20) as u64);
    s.deallocate(a, Vec::new()).unwrap();
    // The freed 3 MiB at the segment's start is the best fit for 2 MiB.
    let d = s.allocate(2 * MIB).unwrap();
    let layout = s.snapshot();
    let first = &layout[0].ranges;
    assert_eq!(
        (first[0].offset, first[0].len, first[0].used),
        (0, 2 << 20, true)
    );
    assert_eq!((first[1].len, first[1].used), (1 << 20, false));
    for block in [small, c, big, d] {
        s.deallocate(block, Vec::new()).unwrap();
    }
    s.trim().unwrap();
    assert_eq!(s.stats().segments, 0);
}

/// A block freed while device work may still use it is not carved again until that work is
/// done.
fn freed_blocks_wait_for_their_device_work(b: &Arc<dyn Backend>) {
    let s = fixed_segments(b);
    let a = s.allocate(4 * MIB).unwrap();
    let gate = b.create_user_event().unwrap();
    s.deallocate(a, vec![gate.event().clone()]).unwrap();
    let used = s.stats().used_bytes;
    assert_eq!(used, (4 * MIB) as u64, "still held for the pending work");
    let other = s.allocate(4 * MIB).unwrap();
    let layout = s.snapshot();
    assert_eq!(layout[0].ranges[0].offset, 0);
    assert!(layout[0].ranges[0].used && layout[0].ranges[1].used);
    gate.complete().unwrap();
    let again = s.allocate(4 * MIB).unwrap();
    assert_eq!(
        s.stats().used_bytes,
        (8 * MIB) as u64,
        "the first range came back"
    );
    for block in [other, again] {
        s.deallocate(block, Vec::new()).unwrap();
    }
}

/// Under a limit, segments grow ahead by at most half of what it leaves, and past it the error
/// is typed and nothing is lost.
fn a_limit_is_kept(b: &Arc<dyn Backend>) {
    let limit = MemoryLimit::new(15 * MIB as u64).unwrap();
    let plain = Arc::new(PlainResource::new(b.clone()));
    let limited = Arc::new(LimitingResource::new(plain, limit.clone()));
    let config = SplittingConfig {
        small_segment: 20 * MIB,
        segment_rounding: 20 * MIB,
        expandable: false,
        ..SplittingConfig::default()
    };
    let s = SplittingResource::over(limited, config).unwrap();
    // 5 MiB would take a 20 MiB segment; under the limit, growing ahead takes at most half of
    // the 15 MiB left: 7.5 MiB.
    let mut a = s.allocate(5 * MIB).unwrap();
    paint(b, &mut a, 3);
    assert_eq!(s.stats().reserved_bytes, (15 * MIB / 2) as u64);
    let err = s.allocate(11 * MIB).unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { .. }), "{err}");
    assert!(holds(b, &a, 3), "nothing lost");
    // 7 MiB fits beside it, in a segment of its own size.
    let c = s.allocate(7 * MIB).unwrap();
    assert_eq!(s.stats().reserved_bytes, (15 * MIB / 2 + 7 * MIB) as u64);
    for block in [a, c] {
        s.deallocate(block, Vec::new()).unwrap();
    }
    s.trim().unwrap();
    assert_eq!(limit.reserved(), 0);
}

fn bad_input_is_typed(b: &Arc<dyn Backend>) {
    let s = splitting(b);
    assert!(matches!(
        s.allocate(usize::MAX),
        Err(Error::SizeOverflow { .. })
    ));
    let bad = SplittingConfig {
        granularity: 3,
        ..SplittingConfig::default()
    };
    let plain = Arc::new(PlainResource::new(b.clone()));
    assert!(matches!(
        SplittingResource::over(plain, bad),
        Err(Error::InvalidArgument(_))
    ));
    // Views are given back as views.
    let mut segment = b.allocate(4096).unwrap();
    let align = b.info().alignment;
    let view = b.view(&segment, align, 1024).unwrap();
    assert!(matches!(
        b.view(&segment, 1, 16),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        b.view(&segment, 0, 8192),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        b.view(&segment, 0, 0),
        Err(Error::ZeroLength { .. })
    ));
    paint(b, &mut segment, 9);
    assert!(
        block_contents(b, &view).iter().all(|&x| x == 9),
        "a view sees its segment"
    );
    let Err(Error::ReleasedAsWrongKind { block: view, .. }) = b.release(view) else {
        panic!("a view released as an allocation");
    };
    b.release_view(view).unwrap();
    let Err(Error::ReleasedAsWrongKind { block: segment, .. }) = b.release_view(segment) else {
        panic!("an allocation released as a view");
    };
    b.release(segment).unwrap();
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
        random_sequences_keep_every_block_apart,
        small_requests_pass_through_and_large_ones_share_segments,
        freed_blocks_wait_for_their_device_work,
        a_limit_is_kept,
        bad_input_is_typed,
    ]
);
