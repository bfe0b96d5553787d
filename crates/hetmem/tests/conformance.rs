//! The backend conformance suite: every test is generic over `Arc<dyn Backend>` and instantiated
//! for every backend kind (host, and each OpenCL device present).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::{block_contents as read_all, pattern};
use hetmem::backend::{Backend, CopyRegion, EventStatus, HostBackend};
use hetmem::Error;

const MIB: usize = 1 << 20;

fn q(b: &Arc<dyn Backend>) -> hetmem::backend::Queue {
    b.default_queue().clone()
}

// ---------------------------------------------------------------- sizes

fn one_byte_round_trip(b: &Arc<dyn Backend>) {
    let mut block = b.allocate(1).unwrap();
    assert_eq!(block.size(), 1);
    b.write(&q(b), &mut block, 0, &[0xA5]).unwrap();
    let mut out = [0u8; 1];
    b.read(&q(b), &block, 0, &mut out).unwrap();
    assert_eq!(out, [0xA5]);
    b.release(block).unwrap();
}

fn odd_sizes_round_trip(b: &Arc<dyn Backend>) {
    for (i, size) in [3usize, 17, 1023, 4097, 65_537, 1_000_003]
        .into_iter()
        .enumerate()
    {
        let mut block = b.allocate(size).unwrap();
        let data = pattern(size, i as u8);
        b.write(&q(b), &mut block, 0, &data).unwrap();
        assert_eq!(read_all(b, &block), data, "size {size}");
        b.release(block).unwrap();
    }
}

fn sixty_four_mib_round_trip(b: &Arc<dyn Backend>) {
    let size = 64 * MIB;
    let mut block = b.allocate(size).unwrap();
    let data = pattern(size, 0x3C);
    b.write(&q(b), &mut block, 0, &data).unwrap();
    assert!(read_all(b, &block) == data, "64 MiB contents differ");
    // A sub-range read deep inside the block.
    let mut tail = vec![0u8; 4096];
    b.read(&q(b), &block, size - 4096 - 7, &mut tail).unwrap();
    assert_eq!(tail, data[size - 4096 - 7..size - 7]);
    b.release(block).unwrap();
}

fn above_max_allocation_is_an_error(b: &Arc<dyn Backend>) {
    let max = b.info().max_allocation;
    let Ok(too_big) = usize::try_from(max + 1) else {
        return; // the device limit exceeds the address space: nothing to ask for
    };
    match b.allocate(too_big) {
        Err(Error::AllocationTooLarge { requested, max: m }) => {
            assert_eq!(requested, max + 1);
            assert_eq!(m, max);
        }
        other => panic!("expected AllocationTooLarge, got {other:?}"),
    }
    assert!(matches!(
        b.allocate(usize::MAX),
        Err(Error::AllocationTooLarge { .. })
    ));
    assert!(matches!(b.allocate(0), Err(Error::ZeroLength { .. })));
    assert!(matches!(
        b.allocate_staging(0),
        Err(Error::ZeroLength { .. })
    ));
}

// ---------------------------------------------------------------- contents

fn writes_at_offsets_land_exactly(b: &Arc<dyn Backend>) {
    let size = 10_000;
    let mut block = b.allocate(size).unwrap();
    let mut model = pattern(size, 1);
    b.write(&q(b), &mut block, 0, &model).unwrap();
    for (offset, len, seed) in [
        (0usize, 1usize, 9u8),
        (1, 333, 2),
        (4095, 2, 3),
        (9_000, 1000, 4),
        (5_001, 17, 5),
    ] {
        let data = pattern(len, seed);
        b.write(&q(b), &mut block, offset, &data).unwrap();
        model[offset..offset + len].copy_from_slice(&data);
        let mut piece = vec![0u8; len];
        b.read(&q(b), &block, offset, &mut piece).unwrap();
        assert_eq!(piece, data, "read back at offset {offset}");
    }
    assert_eq!(read_all(b, &block), model);
    b.release(block).unwrap();
}

fn device_copy_moves_exactly_the_range(b: &Arc<dyn Backend>) {
    let mut src = b.allocate(8192).unwrap();
    let mut dst = b.allocate(8192).unwrap();
    let src_data = pattern(8192, 7);
    let dst_data = pattern(8192, 8);
    b.write(&q(b), &mut src, 0, &src_data).unwrap();
    b.write(&q(b), &mut dst, 0, &dst_data).unwrap();
    b.copy(
        &q(b),
        &src,
        &mut dst,
        CopyRegion {
            src_offset: 100,
            dst_offset: 3000,
            len: 4000,
        },
    )
    .unwrap()
    .wait()
    .unwrap();
    let mut expected = dst_data.clone();
    expected[3000..7000].copy_from_slice(&src_data[100..4100]);
    assert_eq!(read_all(b, &dst), expected);
    assert_eq!(read_all(b, &src), src_data, "copy source is untouched");
    b.release(src).unwrap();
    b.release(dst).unwrap();
}

fn fill_repeats_the_pattern(b: &Arc<dyn Backend>) {
    let mut block = b.allocate(4096).unwrap();
    let base = pattern(4096, 11);
    b.write(&q(b), &mut block, 0, &base).unwrap();
    let mut model = base.clone();
    for (pat, offset, len) in [
        (&[0xEEu8][..], 1usize, 1001usize),
        (&[1, 2, 3, 4][..], 1024, 512),
        (&[9u8; 16][..], 2048, 2048),
    ] {
        b.fill(&q(b), &mut block, offset, len, pat)
            .unwrap()
            .wait()
            .unwrap();
        for (i, byte) in model[offset..offset + len].iter_mut().enumerate() {
            *byte = pat[i % pat.len()];
        }
    }
    assert_eq!(read_all(b, &block), model);
    // Bad patterns and misaligned ranges are errors and change nothing.
    assert!(matches!(
        b.fill(&q(b), &mut block, 0, 12, &[1, 2, 3]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        b.fill(&q(b), &mut block, 2, 8, &[1, 2, 3, 4]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        b.fill(&q(b), &mut block, 0, 8, &[]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        b.fill(&q(b), &mut block, 4000, 128, &[0]),
        Err(Error::OutOfRange { .. })
    ));
    assert_eq!(read_all(b, &block), model);
    b.release(block).unwrap();
}

fn staged_transfers_round_trip(b: &Arc<dyn Backend>) {
    let size = 3 * MIB + 5;
    let mut staging = b.allocate_staging(size).unwrap();
    assert_eq!(staging.len(), size);
    let data = pattern(size, 21);
    staging.as_mut_slice().unwrap().copy_from_slice(&data);
    let mut block = b.allocate(size).unwrap();
    let up = b
        .write_staged(&q(b), &mut block, &staging, CopyRegion::prefix(size))
        .unwrap();
    up.wait().unwrap();
    assert_eq!(read_all(b, &block), data);

    let mut back = b.allocate_staging(size).unwrap();
    // Two partial reads into different places of one staging buffer.
    b.read_staged(&q(b), &block, &mut back, CopyRegion::prefix(1000))
        .unwrap();
    b.read_staged(
        &q(b),
        &block,
        &mut back,
        CopyRegion {
            src_offset: 1000,
            dst_offset: 1000,
            len: size - 1000,
        },
    )
    .unwrap();
    // as_slice waits for both reads without the caller touching the events.
    assert!(back.as_slice().unwrap() == &data[..]);
    assert!(matches!(
        b.write_staged(
            &q(b),
            &mut block,
            &staging,
            CopyRegion {
                src_offset: size - 1,
                dst_offset: 0,
                len: 2
            }
        ),
        Err(Error::OutOfRange { .. })
    ));
    b.release(block).unwrap();
}

// ---------------------------------------------------------------- events

fn events_complete_and_call_back_once(b: &Arc<dyn Backend>) {
    let mut src = b.allocate(4 * MIB).unwrap();
    let mut dst = b.allocate(4 * MIB).unwrap();
    b.write(&q(b), &mut src, 0, &pattern(4 * MIB, 5)).unwrap();
    let event = b
        .copy(&q(b), &src, &mut dst, CopyRegion::prefix(4 * MIB))
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    event
        .on_complete(move |result| {
            c.fetch_add(1, Ordering::SeqCst);
            tx.send(result.is_ok()).unwrap();
        })
        .unwrap();
    assert!(
        rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        "callback saw success"
    );
    event.wait().unwrap();
    assert_eq!(event.status().unwrap(), EventStatus::Complete);
    assert!(event.is_finished());
    // A callback registered after completion runs immediately.
    let c = calls.clone();
    event
        .on_complete(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(read_all(b, &dst), read_all(b, &src));
    b.release(src).unwrap();
    b.release(dst).unwrap();
}

fn user_event_gates_a_queue(b: &Arc<dyn Backend>) {
    if !b.capabilities().async_copies {
        // Synchronous queues run work on the caller's thread: a gate would block the caller.
        let ue = b.create_user_event().unwrap();
        assert!(!ue.event().is_finished());
        let event = ue.event().clone();
        ue.complete().unwrap();
        event.wait().unwrap();
        assert_eq!(event.status().unwrap(), EventStatus::Complete);
        return;
    }
    let queue = b.create_queue().unwrap();
    let mut block = b.allocate(MIB).unwrap();
    b.write(&queue, &mut block, 0, &vec![0u8; MIB]).unwrap();
    let gate = b.create_user_event().unwrap();
    b.enqueue_wait(&queue, gate.event()).unwrap();
    let filled = b.fill(&queue, &mut block, 0, MIB, &[0x5A]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !filled.is_finished(),
        "work behind an open gate must not run"
    );
    gate.complete().unwrap();
    filled.wait().unwrap();
    assert!(read_all(b, &block).iter().all(|&x| x == 0x5A));
    b.release(block).unwrap();
}

fn queues_order_through_events(b: &Arc<dyn Backend>) {
    let q1 = b.create_queue().unwrap();
    let q2 = b.create_queue().unwrap();
    let mut block = b.allocate(2 * MIB).unwrap();
    let filled = b.fill(&q1, &mut block, 0, 2 * MIB, &[7, 7, 7, 7]).unwrap();
    b.enqueue_wait(&q2, &filled).unwrap();
    let mut out = vec![0u8; 2 * MIB];
    b.read(&q2, &block, 0, &mut out).unwrap();
    assert!(out.iter().all(|&x| x == 7));
    b.synchronize().unwrap();
    b.release(block).unwrap();
}

fn release_while_work_is_pending_is_safe(b: &Arc<dyn Backend>) {
    let mut src = b.allocate(16 * MIB).unwrap();
    let mut dst = b.allocate(16 * MIB).unwrap();
    let data = pattern(16 * MIB, 77);
    b.write(&q(b), &mut src, 0, &data).unwrap();
    let event = b
        .copy(&q(b), &src, &mut dst, CopyRegion::prefix(16 * MIB))
        .unwrap();
    b.release(src).unwrap(); // the backend keeps the memory until the copy is done
    event.wait().unwrap();
    assert!(read_all(b, &dst) == data);
    b.release(dst).unwrap();
}

// ---------------------------------------------------------------- threads

fn two_threads_share_one_backend(b: &Arc<dyn Backend>) {
    let before = b.usage();
    std::thread::scope(|s| {
        for t in 0..2u8 {
            let b = b.clone();
            s.spawn(move || {
                let queue = b.default_queue().clone();
                for i in 0..40usize {
                    let size = 1000 + 4096 * i + t as usize;
                    let data = pattern(size, t.wrapping_mul(31).wrapping_add(i as u8));
                    let mut a = b.allocate(size).unwrap();
                    let mut c = b.allocate(size).unwrap();
                    b.write(&queue, &mut a, 0, &data).unwrap();
                    b.copy(&queue, &a, &mut c, CopyRegion::prefix(size))
                        .unwrap()
                        .wait()
                        .unwrap();
                    let mut out = vec![0u8; size];
                    b.read(&queue, &c, 0, &mut out).unwrap();
                    assert_eq!(out, data, "thread {t} iteration {i}");
                    b.release(a).unwrap();
                    b.release(c).unwrap();
                }
            });
        }
    });
    let after = b.usage();
    assert_eq!(after.live_blocks, before.live_blocks);
    assert_eq!(after.live_bytes, before.live_bytes);
    assert_eq!(after.allocations - before.allocations, 160);
}

// ---------------------------------------------------------------- bad input

fn out_of_range_is_an_error_and_changes_nothing(b: &Arc<dyn Backend>) {
    let mut block = b.allocate(100).unwrap();
    let mut other = b.allocate(100).unwrap();
    let data = pattern(100, 42);
    b.write(&q(b), &mut block, 0, &data).unwrap();
    let queue = q(b);
    let oor = |r: hetmem::Result<()>| assert!(matches!(r, Err(Error::OutOfRange { .. })), "{r:?}");
    oor(b.write(&queue, &mut block, 90, &[0u8; 11]));
    oor(b.write(&queue, &mut block, 100, &[0u8; 1]));
    oor(b.read(&queue, &block, 1, &mut [0u8; 100]));
    oor(b
        .copy(
            &queue,
            &block,
            &mut other,
            CopyRegion {
                src_offset: 50,
                dst_offset: 0,
                len: 51,
            },
        )
        .map(drop));
    oor(b
        .copy(
            &queue,
            &block,
            &mut other,
            CopyRegion {
                src_offset: 0,
                dst_offset: 60,
                len: 41,
            },
        )
        .map(drop));
    assert!(matches!(
        b.write(&queue, &mut block, usize::MAX, &[1]),
        Err(Error::SizeOverflow { .. })
    ));
    assert!(matches!(
        b.read(&queue, &block, usize::MAX - 1, &mut [0u8; 4]),
        Err(Error::SizeOverflow { .. })
    ));
    assert!(matches!(
        b.write(&queue, &mut block, 0, &[]),
        Err(Error::ZeroLength { .. })
    ));
    assert!(matches!(
        b.read(&queue, &block, 0, &mut []),
        Err(Error::ZeroLength { .. })
    ));
    assert!(matches!(
        b.copy(&queue, &block, &mut other, CopyRegion::prefix(0)),
        Err(Error::ZeroLength { .. })
    ));
    assert_eq!(
        read_all(b, &block),
        data,
        "failed calls left the data intact"
    );
    b.release(block).unwrap();
    b.release(other).unwrap();
}

fn foreign_handles_are_rejected(b: &Arc<dyn Backend>) {
    let stranger = HostBackend::new();
    let mut theirs = stranger.allocate(64).unwrap();
    let mut ours = b.allocate(64).unwrap();
    let queue = q(b);
    let foreign =
        |r: hetmem::Result<()>| assert!(matches!(r, Err(Error::ForeignHandle { .. })), "{r:?}");
    foreign(b.write(&queue, &mut theirs, 0, &[1]));
    foreign(b.read(&queue, &theirs, 0, &mut [0]));
    foreign(
        b.copy(&queue, &theirs, &mut ours, CopyRegion::prefix(8))
            .map(drop),
    );
    foreign(b.write(stranger.default_queue(), &mut ours, 0, &[1]));
    let staging = stranger.allocate_staging(64).unwrap();
    foreign(
        b.write_staged(&queue, &mut ours, &staging, CopyRegion::prefix(8))
            .map(drop),
    );
    match b.release(theirs) {
        Err(Error::ReleasedToWrongBackend { block, .. }) => stranger.release(block).unwrap(),
        other => panic!("expected the block back, got {other:?}"),
    }
    assert_eq!(stranger.usage().live_blocks, 0);
    b.release(ours).unwrap();
}

fn info_and_usage_are_consistent(b: &Arc<dyn Backend>) {
    let info = b.info();
    assert!(!info.name.is_empty());
    assert!(info.total_memory > 0);
    assert!(
        info.max_allocation > 0
            && info.max_allocation <= info.total_memory.max(info.max_allocation)
    );
    assert!(info.alignment.is_power_of_two());
    let before = b.usage();
    let block = b.allocate(12_345).unwrap();
    let during = b.usage();
    assert_eq!(during.live_blocks, before.live_blocks + 1);
    assert_eq!(during.live_bytes, before.live_bytes + 12_345);
    assert!(during.peak_bytes >= during.live_bytes);
    b.release(block).unwrap();
    assert_eq!(b.usage().live_bytes, before.live_bytes);
    assert_eq!(b.usage().releases, before.releases + 1);
}

fn mapped_access_is_in_place_and_checked(b: &Arc<dyn Backend>) {
    let data = pattern(70_000, 11);
    let mut block = b.allocate(100_000).unwrap();
    b.write(&q(b), &mut block, 0, &vec![0u8; 100_000]).unwrap();
    let mapped = b
        .write_mapped(&q(b), &mut block, 1234, data.len(), &mut |bytes| {
            bytes.copy_from_slice(&data)
        })
        .unwrap();
    let caps = b.capabilities();
    assert_eq!(mapped, caps.mapped_access || caps.host_addressable);
    if !mapped {
        // Backends that cannot map say so and leave the block alone.
        assert_eq!(read_all(b, &block), vec![0u8; 100_000]);
        b.release(block).unwrap();
        return;
    }
    let all = read_all(b, &block);
    assert_eq!(all[1234..1234 + data.len()], data[..]);
    assert!(all[..1234]
        .iter()
        .chain(&all[1234 + data.len()..])
        .all(|&x| x == 0));
    let mut seen = Vec::new();
    assert!(b
        .read_mapped(&q(b), &block, 1234, data.len(), &mut |bytes| seen
            .extend_from_slice(bytes))
        .unwrap());
    assert_eq!(seen, data);
    let mut called = false;
    assert!(matches!(
        b.write_mapped(&q(b), &mut block, 99_999, 2, &mut |_| called = true),
        Err(Error::OutOfRange { .. })
    ));
    assert!(!called, "an out-of-range mapping never reaches the caller");
    b.release(block).unwrap();
}

// ---------------------------------------------------------------- instantiation

common::backend_suite!(
    [
        host => crate::common::host(),
        opencl_dev0 => crate::common::opencl(0),
        opencl_dev1 => crate::common::opencl(1),
        cuda_dev0 => crate::common::cuda(0),
        wgpu => crate::common::wgpu(),
    ],
    [
        one_byte_round_trip, odd_sizes_round_trip, sixty_four_mib_round_trip,
        above_max_allocation_is_an_error, writes_at_offsets_land_exactly,
        device_copy_moves_exactly_the_range, fill_repeats_the_pattern,
        staged_transfers_round_trip, events_complete_and_call_back_once,
        user_event_gates_a_queue, queues_order_through_events,
        release_while_work_is_pending_is_safe, two_threads_share_one_backend,
        out_of_range_is_an_error_and_changes_nothing, foreign_handles_are_rejected,
        info_and_usage_are_consistent, mapped_access_is_in_place_and_checked,
    ]
);
