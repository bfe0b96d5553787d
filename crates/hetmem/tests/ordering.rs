//! The ordering contract, plan by plan: every transfer hetmem makes runs after the work already
//! enqueued on its queue, and user work enqueued there before it never sees hetmem's bytes
//! early — whatever queues a plan spreads its chunks over. Each plan is forced through
//! `Strategy` so all of them run on PoCL, in both directions, from below `direct_max` to
//! 64 MiB; the user's work waits behind a gate (a user event) that opens only after the
//! transfer was started from another thread, so nothing but the ordering can make it right.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{words, Gate};
use hetmem::backend::{Backend, CopyRegion, DeviceBlock, HostBackend};
use hetmem::transfer::{BatchWrite, Plan, Strategy, TransferConfig, TransferEngine};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// Below `direct_max`, a few chunks with an odd tail, and 16 chunks.
const SIZES: [usize; 3] = [64 * KIB, 9 * MIB + 8 * KIB, 64 * MIB];
/// Long enough that a transfer that does not wait finishes well before the gate opens.
const GATE: Duration = Duration::from_millis(80);
/// Every plan a host↔device transfer can take, forced.
const PLANS: [Strategy; 4] = [
    Strategy::Direct,
    Strategy::Chunked,
    Strategy::Pipelined,
    Strategy::Mapped,
];
/// What the user's work writes (a 4-byte fill pattern).
const USER: [u8; 4] = [0xA5, 0x5A, 0xC3, 0x3C];

fn config(strategy: Strategy) -> TransferConfig {
    TransferConfig {
        strategy,
        ..TransferConfig::default()
    }
}

fn read_all(b: &Arc<dyn Backend>, block: &DeviceBlock, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    b.read(b.default_queue(), block, 0, &mut out).unwrap();
    out
}

/// Whether every byte of `bytes` is the user's fill.
fn all_user(bytes: &[u8]) -> bool {
    bytes.chunks(4).all(|c| c == USER)
}

/// Where the first wrong 4-byte word is, for a readable failure.
fn first_not_user(bytes: &[u8]) -> Option<usize> {
    bytes.chunks(4).position(|c| c != USER).map(|i| i * 4)
}

/// Device to host: a read started after the user's fill (still behind the gate) returns the
/// fill, everywhere.
fn reads_see_user_writes(b: &Arc<dyn Backend>) {
    let q = b.default_queue().clone();
    for strategy in PLANS {
        let engine = TransferEngine::with_config(b.clone(), config(strategy)).unwrap();
        for len in SIZES {
            let mut block = b.allocate(len).unwrap();
            b.write(&q, &mut block, 0, &words(len, 1)).unwrap();
            let gate = Gate::close(b, &q, GATE);
            let _fill = b.fill(&q, &mut block, 0, len, &USER).unwrap();
            let mut out = vec![0u8; len];
            gate.after(|| engine.read(&block, 0, &mut out)).unwrap();
            assert!(
                all_user(&out),
                "{strategy:?} ({}), {len} bytes: stale bytes from {:?}",
                engine.plan(len),
                first_not_user(&out)
            );
            b.release(block).unwrap();
        }
    }
}

/// Host to device: a write started after the user's copy of the block and the user's fill
/// (both behind the gate) neither changes what the copy saw nor is overwritten by the fill.
fn writes_wait_for_user_reads_and_writes(b: &Arc<dyn Backend>) {
    let q = b.default_queue().clone();
    for strategy in PLANS {
        let engine = TransferEngine::with_config(b.clone(), config(strategy)).unwrap();
        for len in SIZES {
            let old = words(len, 2);
            let new = words(len, 3);
            let mut block = b.allocate(len).unwrap();
            let mut snapshot = b.allocate(len).unwrap();
            b.write(&q, &mut block, 0, &old).unwrap();
            let gate = Gate::close(b, &q, GATE);
            let _copy = b
                .copy(&q, &block, &mut snapshot, CopyRegion::prefix(len))
                .unwrap();
            let _fill = b.fill(&q, &mut block, 0, len, &USER).unwrap();
            gate.after(|| engine.write(&mut block, 0, &new)).unwrap();
            let what = format!("{strategy:?} ({}), {len} bytes", engine.plan(len));
            assert!(
                read_all(b, &snapshot, len) == old,
                "{what}: the user's copy saw new bytes"
            );
            assert!(
                read_all(b, &block, len) == new,
                "{what}: the user's fill came after"
            );
            b.release(block).unwrap();
            b.release(snapshot).unwrap();
        }
    }
}

/// Batches, plan by plan (item by item, over the queues, through staging): the same two
/// orderings for many small writes, one into each of 16 blocks.
fn batches_wait_for_user_work(b: &Arc<dyn Backend>) {
    let q = b.default_queue().clone();
    let (blocks, len, item, at) = (16, 256 * KIB, 4 * KIB, 64 * KIB);
    for strategy in [Strategy::Direct, Strategy::Chunked, Strategy::Pipelined] {
        let engine = TransferEngine::with_config(b.clone(), config(strategy)).unwrap();
        let old = words(len, 4);
        let new = words(blocks * item, 5);
        let mut dst: Vec<DeviceBlock> = (0..blocks).map(|_| b.allocate(len).unwrap()).collect();
        let mut snapshots: Vec<DeviceBlock> =
            (0..blocks).map(|_| b.allocate(len).unwrap()).collect();
        for block in &mut dst {
            b.write(&q, block, 0, &old).unwrap();
        }
        let gate = Gate::close(b, &q, GATE);
        for (block, snapshot) in dst.iter_mut().zip(&mut snapshots) {
            let _copy = b
                .copy(&q, block, snapshot, CopyRegion::prefix(len))
                .unwrap();
            let _fill = b.fill(&q, block, 0, len, &USER).unwrap();
        }
        let plan = gate.after(|| {
            let mut items: Vec<BatchWrite> = dst
                .iter_mut()
                .enumerate()
                .map(|(i, dst)| BatchWrite {
                    dst,
                    offset: at,
                    src: &new[i * item..(i + 1) * item],
                })
                .collect();
            let plan = engine.plan_batch(&items);
            engine.write_batch(&mut items).unwrap();
            plan
        });
        let expected_plan = match strategy {
            Strategy::Chunked => matches!(plan, Plan::Batched { .. }),
            Strategy::Pipelined => matches!(plan, Plan::BatchedStaged { .. }),
            _ => plan == Plan::Direct,
        };
        assert!(expected_plan, "{strategy:?} gave {plan}");
        for (i, (block, snapshot)) in dst.into_iter().zip(snapshots).enumerate() {
            assert!(
                read_all(b, &snapshot, len) == old,
                "{plan}: the user's copy saw new bytes"
            );
            let got = read_all(b, &block, len);
            assert!(
                got[at..at + item] == new[i * item..(i + 1) * item],
                "{plan}: item {i}"
            );
            assert!(
                all_user(&got[..at]) && all_user(&got[at + item..]),
                "{plan}: fill {i}"
            );
            b.release(block).unwrap();
            b.release(snapshot).unwrap();
        }
    }
}

/// Copies on one device wait for the user's work on the source and the destination.
fn device_copies_wait_for_user_work(b: &Arc<dyn Backend>) {
    let q = b.default_queue().clone();
    let engine = TransferEngine::new(b.clone());
    let len = 9 * MIB;
    let mut src = b.allocate(len).unwrap();
    let mut dst = b.allocate(len).unwrap();
    b.write(&q, &mut src, 0, &words(len, 6)).unwrap();
    let gate = Gate::close(b, &q, GATE);
    let _fill = b.fill(&q, &mut src, 0, len, &USER).unwrap();
    gate.after(|| engine.copy(&src, 0, &mut dst, 0, len))
        .unwrap();
    assert!(all_user(&read_all(b, &dst, len)));
    b.release(src).unwrap();
    b.release(dst).unwrap();
}

/// Between two devices (peer where the pair can, through the host otherwise): the copy waits
/// for the user's fill of the source and does not overtake the user's copy of the destination.
fn cross_device_copies_wait_for_user_work(a: &Arc<dyn Backend>, b: &Arc<dyn Backend>) {
    let (qa, qb) = (a.default_queue().clone(), b.default_queue().clone());
    let (from, to) = (
        TransferEngine::new(a.clone()),
        TransferEngine::new(b.clone()),
    );
    for len in SIZES {
        let plan = from.plan_copy_to(&to, len);
        let mut src = a.allocate(len).unwrap();
        let mut dst = b.allocate(len).unwrap();
        let mut snapshot = b.allocate(len).unwrap();
        a.write(&qa, &mut src, 0, &words(len, 7)).unwrap();
        let old = words(len, 8);
        b.write(&qb, &mut dst, 0, &old).unwrap();
        let gate_a = Gate::close(a, &qa, GATE);
        let gate_b = Gate::close(b, &qb, GATE);
        let _fill = a.fill(&qa, &mut src, 0, len, &USER).unwrap();
        let _copy = b
            .copy(&qb, &dst, &mut snapshot, CopyRegion::prefix(len))
            .unwrap();
        gate_a
            .after(|| from.copy_to(&src, 0, &to, &mut dst, 0, len))
            .unwrap();
        assert!(
            gate_b.is_open(),
            "{plan}: finished before the destination's gate opened"
        );
        assert!(all_user(&read_all(b, &dst, len)), "{plan}, {len} bytes");
        assert!(
            read_all(b, &snapshot, len) == old,
            "{plan}: the user's copy saw new bytes"
        );
        a.release(src).unwrap();
        b.release(dst).unwrap();
        b.release(snapshot).unwrap();
    }
}

/// Two threads mapping one block at once (what a background sync and a read do): PoCL 3.1
/// crashed on this until maps were serialised per device. (A device without mapped access
/// says so, and the block is read by neither.)
fn concurrent_mapped_reads_of_one_block(b: &Arc<dyn Backend>) {
    let caps = b.capabilities();
    let maps = caps.mapped_access || caps.host_addressable;
    let len = 64 * KIB;
    let expected = words(len, 9);
    let mut block = b.allocate(len).unwrap();
    b.write(b.default_queue(), &mut block, 0, &expected)
        .unwrap();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..2000 {
                    let mut out = vec![0u8; len];
                    let mapped = b
                        .read_mapped(b.default_queue(), &block, 0, len, &mut |bytes| {
                            out.copy_from_slice(bytes)
                        })
                        .unwrap();
                    assert_eq!(mapped, maps);
                    assert!(!maps || out == expected);
                }
            });
        }
    });
    b.release(block).unwrap();
}

/// The gate pattern, generic over backends: wait on a user event, enqueue work, complete the
/// event later from the same thread. Work behind the gate waits for it — on the host backend
/// too, whose queues hold it instead of making the caller wait for itself (issue 18, item 5).
fn the_gate_pattern_holds_work_on_every_backend(b: &Arc<dyn Backend>) {
    let q = b.create_queue().unwrap();
    let len = 64 * KIB;
    let mut block = b.allocate(len).unwrap();
    let mut copy = b.allocate(len).unwrap();
    b.write(&q, &mut block, 0, &words(len, 10)).unwrap();
    let gate = b.create_user_event().unwrap();
    b.enqueue_wait(&q, gate.event()).unwrap();
    let filled = b.fill(&q, &mut block, 0, len, &USER).unwrap();
    let copied = b
        .copy(&q, &block, &mut copy, CopyRegion::prefix(len))
        .unwrap();
    let marker = b.enqueue_marker(&q).unwrap();
    assert!(!filled.is_finished() && !copied.is_finished() && !marker.is_finished());
    gate.complete().unwrap();
    marker.wait().unwrap();
    assert!(filled.is_finished() && copied.is_finished());
    assert!(
        all_user(&read_all(b, &copy, len)),
        "the copy ran after the fill"
    );
    // Blocking calls on a gated queue come after the work held there.
    let gate = b.create_user_event().unwrap();
    b.enqueue_wait(&q, gate.event()).unwrap();
    let _fill = b.fill(&q, &mut copy, 0, len, &[1, 2, 3, 4]).unwrap();
    let opener = std::thread::spawn(move || {
        std::thread::sleep(GATE);
        gate.complete().unwrap();
    });
    let mut out = vec![0u8; len];
    b.read(&q, &copy, 0, &mut out).unwrap();
    assert!(out.chunks(4).all(|c| c == [1, 2, 3, 4]));
    opener.join().unwrap();
    b.release(block).unwrap();
    b.release(copy).unwrap();
}

/// Work behind a gate that fails is abandoned with an error and never runs, on every backend;
/// the queue works on. Regression (issue 18, item 10): on PoCL 3.1 failing the gate aborted
/// the process when an event of the work behind it had been released — here the fill's event
/// is dropped at once, and an engine's chunked write spreads over queues behind the gate.
fn work_behind_a_failed_gate_is_abandoned(b: &Arc<dyn Backend>) {
    let q = b.default_queue().clone();
    let mut block = b.allocate(4096).unwrap();
    let mut other = b.allocate(4096).unwrap();
    b.write(&q, &mut block, 0, &[0; 4096]).unwrap();
    b.write(&q, &mut other, 0, &[0; 4096]).unwrap();
    let gate = b.create_user_event().unwrap();
    b.enqueue_wait(&q, gate.event()).unwrap();
    drop(b.fill(&q, &mut other, 0, 4096, &[3]).unwrap());
    let filled = b.fill(&q, &mut block, 0, 4096, &[9]).unwrap();
    let engine = TransferEngine::with_config(
        b.clone(),
        TransferConfig {
            direct_max: 0,
            chunk_size: KIB,
            queues: 3,
            strategy: Strategy::Chunked,
            ..TransferConfig::default()
        },
    )
    .unwrap();
    let writer = std::thread::spawn(move || {
        let written = engine.write(&mut other, 0, &[7; 4096]);
        (written, other)
    });
    std::thread::sleep(GATE);
    gate.fail().unwrap();
    assert!(filled.wait().is_err());
    let (written, other) = writer.join().unwrap();
    assert!(read_all(b, &block, 4096) == [0; 4096], "the fill never ran");
    let after = read_all(b, &other, 4096);
    assert!(!after.contains(&3), "the dropped fill never ran");
    // OpenCL fails what its queues hold behind the gate; the host backend holds only work on
    // the gated queue, so the blocking write runs once the gate's work is abandoned.
    if written.is_ok() {
        assert!(after == [7; 4096], "the write ran whole");
    }
    // The queue works on.
    b.fill(&q, &mut block, 0, 4096, &[5])
        .unwrap()
        .wait()
        .unwrap();
    assert!(read_all(b, &block, 4096) == [5; 4096], "the queue works on");
    b.release(block).unwrap();
    b.release(other).unwrap();
}

fn peer_copies_between_host_backends() {
    let a: Arc<dyn Backend> = Arc::new(HostBackend::new());
    let b: Arc<dyn Backend> = Arc::new(HostBackend::new());
    assert_eq!(
        TransferEngine::new(a.clone()).plan_copy_to(&TransferEngine::new(b.clone()), MIB),
        Plan::Peer
    );
    cross_device_copies_wait_for_user_work(&a, &b);
}

#[test]
fn peer_plan_waits_for_user_work() {
    peer_copies_between_host_backends();
}

#[test]
fn through_host_plan_waits_for_user_work_between_opencl_devices() {
    let (Some(a), Some(b)) = (common::opencl(0), common::opencl(1)) else {
        return;
    };
    assert!(matches!(
        TransferEngine::new(a.clone()).plan_copy_to(&TransferEngine::new(b.clone()), MIB),
        Plan::ThroughHost { .. }
    ));
    cross_device_copies_wait_for_user_work(&a, &b);
    cross_device_copies_wait_for_user_work(&b, &a);
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
        reads_see_user_writes,
        writes_wait_for_user_reads_and_writes,
        batches_wait_for_user_work,
        device_copies_wait_for_user_work,
        concurrent_mapped_reads_of_one_block,
        the_gate_pattern_holds_work_on_every_backend,
        work_behind_a_failed_gate_is_abandoned,
    ]
);
