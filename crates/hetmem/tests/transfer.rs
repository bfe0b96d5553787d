//! The transfer engine on every backend present: every plan moves the right bytes, batches,
//! cross-device copies, retries of transient faults, permanent faults, verification, and a
//! property test over random fault schedules.

mod common;

use std::sync::Arc;

use common::pattern;
use hetmem::backend::{Backend, CopyRegion, HostBackend};
use hetmem::backend::{FaultKind, FaultOp, FaultyBackend};
use hetmem::buffer::{BufferContext, CoherenceState, Residency};
use hetmem::transfer::{BatchWrite, Plan, RetryPolicy, Strategy, TransferConfig, TransferEngine};
use hetmem::Error;
use proptest::prelude::*;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

fn config(strategy: Strategy) -> TransferConfig {
    TransferConfig {
        direct_max: 16 * KIB,
        chunk_size: 256 * KIB,
        pipeline_depth: 3,
        queues: 2,
        strategy,
        retry: RetryPolicy {
            base_delay: std::time::Duration::from_micros(10),
            ..RetryPolicy::default()
        },
        verify: false,
    }
}

fn read_back(
    b: &Arc<dyn Backend>,
    block: &hetmem::backend::DeviceBlock,
    offset: usize,
    len: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; len];
    b.read(b.default_queue(), block, offset, &mut out).unwrap();
    out
}

fn every_plan_moves_the_right_bytes(b: &Arc<dyn Backend>) {
    for strategy in [
        Strategy::Auto,
        Strategy::Direct,
        Strategy::Chunked,
        Strategy::Pipelined,
        Strategy::Mapped,
    ] {
        let engine = TransferEngine::with_config(b.clone(), config(strategy)).unwrap();
        for len in [4 * KIB, 64 * KIB + 3, MIB, 3 * MIB + 7] {
            let label = format!("{strategy:?} {len}: {}", engine.plan(len));
            let src = pattern(len, len as u8);
            let mut block = b.allocate(len + 100).unwrap();
            engine.write(&mut block, 100, &src).unwrap();
            assert_eq!(read_back(b, &block, 100, len), src, "{label}: write");
            let mut dst = vec![0u8; len];
            engine.read(&block, 100, &mut dst).unwrap();
            assert_eq!(dst, src, "{label}: read");
            let mut copy = b.allocate(len).unwrap();
            engine.copy(&block, 100, &mut copy, 0, len).unwrap();
            assert_eq!(read_back(b, &copy, 0, len), src, "{label}: copy");
            b.release(block).unwrap();
            b.release(copy).unwrap();
        }
        let s = engine.stats();
        assert_eq!(s.host_to_device.transfers, 4);
        assert_eq!(
            s.device_to_host.bytes,
            (4 * KIB + 64 * KIB + 3 + MIB + 3 * MIB + 7) as u64
        );
        assert_eq!((s.retries, s.failures, s.in_flight), (0, 0, 0));
    }
    // Auto picks by capability: staging in front of a separate device, chunks over two
    // queues on a device sharing memory with the host, direct where blocks are host memory.
    let auto = TransferEngine::with_config(b.clone(), config(Strategy::Auto)).unwrap();
    let caps = b.capabilities();
    let expected = if caps.host_addressable {
        Plan::Direct
    } else if caps.pinned_staging && !caps.unified_memory {
        Plan::Pipelined {
            chunk: 256 * KIB,
            chunks: 4,
            depth: 3,
        }
    } else if caps.concurrent_queues {
        Plan::Chunked {
            chunk: 256 * KIB,
            chunks: 4,
            queues: 2,
        }
    } else {
        Plan::Direct
    };
    assert_eq!(auto.plan(MIB), expected);
    assert_eq!(auto.plan(4 * KIB), Plan::Direct);
    assert!(auto.plan(MIB).to_string().len() > 10);
}

fn batches_write_every_item(b: &Arc<dyn Backend>) {
    let engine = TransferEngine::new(b.clone());
    let mut blocks: Vec<_> = (0..50).map(|_| b.allocate(8 * KIB).unwrap()).collect();
    let sources: Vec<Vec<u8>> = (0..50).map(|i| pattern(4 * KIB + i, i as u8)).collect();
    let mut items: Vec<BatchWrite> = blocks
        .iter_mut()
        .zip(&sources)
        .enumerate()
        .map(|(i, (dst, src))| BatchWrite {
            dst,
            offset: i,
            src,
        })
        .collect();
    let plan = engine.plan_batch(&items);
    let caps = b.capabilities();
    if caps.pinned_staging && !caps.unified_memory {
        assert!(
            matches!(plan, Plan::BatchedStaged { items: 50, .. }),
            "{plan}"
        );
    } else if !caps.host_addressable && caps.concurrent_queues {
        // One queue on unified memory (PoCL): more only wake more driver threads per command.
        let queues = if caps.unified_memory { 1 } else { 2 };
        assert!(
            matches!(plan, Plan::Batched { items: 50, queues: q, .. } if q == queues),
            "{plan}"
        );
    }
    engine.write_batch(&mut items).unwrap();
    for (i, (block, src)) in blocks.iter().zip(&sources).enumerate() {
        assert_eq!(read_back(b, block, i, src.len()), *src, "item {i}");
    }
    // A bad item anywhere means nothing is written.
    let mut fresh = b.allocate(4 * KIB).unwrap();
    let big = vec![1u8; 8 * KIB];
    let mut bad = [
        BatchWrite {
            dst: &mut blocks[0],
            offset: 0,
            src: &[9; 16],
        },
        BatchWrite {
            dst: &mut fresh,
            offset: 0,
            src: &big,
        },
    ];
    assert!(matches!(
        engine.write_batch(&mut bad),
        Err(Error::OutOfRange { .. })
    ));
    assert_eq!(read_back(b, &blocks[0], 0, 16), sources[0][..16]);
    b.release(fresh).unwrap();
    for block in blocks {
        b.release(block).unwrap();
    }
}

fn transient_faults_are_retried_and_permanent_ones_fail_fast(b: &Arc<dyn Backend>) {
    // Chunked: one scattered write of 4 chunks whose last 2 fail, each retried alone with a
    // plain write. Pipelined: 4 staged writes and the failed third one again.
    for (strategy, op, nth, retries, calls) in [
        (Strategy::Chunked, FaultOp::WriteParts, 0, 2, 1),
        (Strategy::Pipelined, FaultOp::WriteStaged, 2, 1, 5),
    ] {
        let faulty = Arc::new(FaultyBackend::new(b.clone()));
        let engine = TransferEngine::with_config(faulty.clone(), config(strategy)).unwrap();
        let src = pattern(MIB, 3);
        let mut block = b.allocate(MIB).unwrap();
        faulty.fail(op, nth, FaultKind::Transient);
        engine.write(&mut block, 0, &src).unwrap();
        assert_eq!(
            read_back(b, &block, 0, MIB),
            src,
            "{strategy:?}: intact after a retry"
        );
        assert_eq!(engine.stats().retries, retries);
        assert_eq!(faulty.calls(op), calls, "{strategy:?}");
        if strategy == Strategy::Chunked {
            assert_eq!(faulty.calls(FaultOp::Write), 2, "the two failed chunks");
        }

        let before = faulty.calls(op);
        let permanent_at = if strategy == Strategy::Chunked {
            before
        } else {
            before + 1
        };
        faulty.fail(op, permanent_at, FaultKind::Permanent);
        let copy = src.clone();
        let err = engine.write(&mut block, 0, &src).unwrap_err();
        assert!(matches!(&err, Error::Backend(e) if !e.retryable), "{err}");
        assert_eq!(src, copy, "the source is untouched");
        assert_eq!(engine.stats().failures, 1);
        assert_eq!(
            faulty.calls(op),
            permanent_at + 1,
            "{strategy:?}: no attempt after a permanent failure"
        );
        b.release(block).unwrap();
    }
}

fn verification_catches_corruption(b: &Arc<dyn Backend>) {
    let faulty = Arc::new(FaultyBackend::new(b.clone()));
    let mut cfg = config(Strategy::Direct);
    cfg.verify = true;
    let engine = TransferEngine::with_config(faulty.clone(), cfg).unwrap();
    let src = pattern(64 * KIB, 4);
    let mut block = b.allocate(64 * KIB).unwrap();
    faulty.fail(FaultOp::Write, 0, FaultKind::Corrupt);
    engine.write(&mut block, 0, &src).unwrap();
    assert_eq!(read_back(b, &block, 0, src.len()), src);
    assert_eq!(
        engine.stats().retries,
        1,
        "the corrupted transfer was redone"
    );
    let next = faulty.calls(FaultOp::Write);
    for n in next..next + 3 {
        faulty.fail(FaultOp::Write, n, FaultKind::Corrupt);
    }
    assert!(matches!(
        engine.write(&mut block, 0, &src),
        Err(Error::IntegrityMismatch { .. })
    ));
    b.release(block).unwrap();
}

/// A read corrupted the same way on every direct read is still caught: verification fetches
/// the bytes again through staging.
fn verification_of_reads_uses_a_second_path(b: &Arc<dyn Backend>) {
    let faulty = Arc::new(FaultyBackend::new(b.clone()));
    let mut cfg = config(Strategy::Direct);
    cfg.verify = true;
    let engine = TransferEngine::with_config(faulty.clone(), cfg).unwrap();
    let src = pattern(64 * KIB, 5);
    let mut block = b.allocate(64 * KIB).unwrap();
    b.write(b.default_queue(), &mut block, 0, &src).unwrap();
    for n in 0..16 {
        faulty.fail(FaultOp::Read, n, FaultKind::Corrupt);
    }
    let mut out = vec![0u8; 64 * KIB];
    assert!(matches!(
        engine.read(&block, 0, &mut out),
        Err(Error::IntegrityMismatch { .. })
    ));
    // Corrupted once: redone, and then exact.
    let faulty = Arc::new(FaultyBackend::new(b.clone()));
    let engine = TransferEngine::with_config(faulty.clone(), cfg).unwrap();
    faulty.fail(FaultOp::Read, 0, FaultKind::Corrupt);
    engine.read(&block, 0, &mut out).unwrap();
    assert_eq!(out, src);
    assert_eq!(engine.stats().retries, 1);
    b.release(block).unwrap();
}

/// A permanent failure during a buffer's sync leaves the valid copy valid.
fn failed_syncs_keep_the_buffer_valid(b: &Arc<dyn Backend>) {
    let faulty = Arc::new(FaultyBackend::new(b.clone()));
    let ctx = BufferContext::new(faulty.clone());
    let data: Vec<u32> = (0..4096).collect();
    let mut buf = ctx.alloc_with::<u32>(4096, Residency::Mirrored).unwrap();
    buf.host_discard().unwrap().copy_from_slice(&data);
    faulty.fail(
        FaultOp::Write,
        faulty.calls(FaultOp::Write),
        FaultKind::Permanent,
    );
    assert!(matches!(buf.device(), Err(Error::Backend(_))));
    assert_eq!(
        buf.state(),
        CoherenceState::HostOnly,
        "the device copy is not marked valid"
    );
    assert_eq!(&*buf.host().unwrap(), &data[..]);
    faulty.fail(
        FaultOp::Write,
        faulty.calls(FaultOp::Write),
        FaultKind::Transient,
    );
    drop(buf.device().unwrap());
    assert_eq!(buf.state(), CoherenceState::Synchronized);
    assert_eq!(ctx.engine().stats().retries, 1);
}

/// The engine's figures sum what every thread moved (each counts in its own slot), and a
/// transfer waiting behind the user's work on the queue counts as in flight until it is done.
fn statistics_count_every_thread_and_what_is_in_flight(b: &Arc<dyn Backend>) {
    let engine = TransferEngine::new(b.clone());
    let q = b.default_queue().clone();
    std::thread::scope(|s| {
        for t in 0..2u8 {
            let engine = &engine;
            s.spawn(move || {
                let mut block = b.allocate(4 * KIB).unwrap();
                for i in 0..100u8 {
                    let data = pattern(4 * KIB, t.wrapping_mul(100).wrapping_add(i));
                    engine.write(&mut block, 0, &data).unwrap();
                    assert_eq!(read_back(b, &block, 0, 4 * KIB), data);
                }
                b.release(block).unwrap();
            });
        }
    });
    let stats = engine.stats();
    let h2d = stats.host_to_device;
    assert_eq!((h2d.transfers, h2d.bytes), (200, 200 * 4 * KIB as u64));
    assert_eq!(stats.in_flight, 0);
    // Short transfers are timed by sampling (each thread's first among them), never as zero.
    assert!(h2d.time > std::time::Duration::ZERO, "{h2d:?}");

    let gate = b.create_user_event().unwrap();
    b.enqueue_wait(&q, gate.event()).unwrap();
    let mut block = b.allocate(4 * KIB).unwrap();
    let data = pattern(4 * KIB, 9);
    std::thread::scope(|s| {
        let writer = s.spawn(|| engine.write(&mut block, 0, &data));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while engine.stats().in_flight != 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the held write never showed"
            );
            std::thread::yield_now();
        }
        assert!(!writer.is_finished(), "the write waits for the gate");
        gate.complete().unwrap();
        writer.join().unwrap().unwrap();
    });
    let stats = engine.stats();
    assert_eq!((stats.host_to_device.transfers, stats.in_flight), (201, 0));
    assert_eq!(read_back(b, &block, 0, 4 * KIB), data);
    b.release(block).unwrap();
}

common::backend_suite!(
    [
        host => crate::common::host(),
        opencl_dev0 => crate::common::opencl(0),
        cuda_dev0 => crate::common::cuda(0),
    ],
    [
        every_plan_moves_the_right_bytes,
        batches_write_every_item,
        transient_faults_are_retried_and_permanent_ones_fail_fast,
        verification_catches_corruption,
        verification_of_reads_uses_a_second_path,
        failed_syncs_keep_the_buffer_valid,
        statistics_count_every_thread_and_what_is_in_flight,
    ]
);

#[test]
fn copies_between_two_devices_go_through_the_host() {
    let (Some(a), Some(b)) = (common::opencl(0), common::opencl(1)) else {
        return;
    };
    let host: Arc<dyn Backend> = Arc::new(HostBackend::new());
    for (from, to) in [(a.clone(), b.clone()), (host.clone(), a.clone()), (b, host)] {
        let (src_engine, dst_engine) = (
            TransferEngine::new(from.clone()),
            TransferEngine::new(to.clone()),
        );
        let len = 9 * MIB + 5;
        assert!(matches!(
            src_engine.plan_copy_to(&dst_engine, len),
            Plan::ThroughHost { chunks: 3, .. }
        ));
        // Separate OpenCL contexts (and OpenCL and host) have no peer path.
        assert!(!from.can_copy_to(to.as_ref()));
        let mut probe = to.allocate(1).unwrap();
        let src_probe = from.allocate(1).unwrap();
        assert!(from
            .copy_to_peer(
                from.default_queue(),
                &src_probe,
                to.as_ref(),
                &mut probe,
                CopyRegion::prefix(1)
            )
            .unwrap()
            .is_none());
        to.release(probe).unwrap();
        from.release(src_probe).unwrap();
        let data = pattern(len, 7);
        let mut src = from.allocate(len).unwrap();
        src_engine.write(&mut src, 0, &data).unwrap();
        let mut dst = to.allocate(len).unwrap();
        src_engine
            .copy_to(&src, 0, &dst_engine, &mut dst, 0, len)
            .unwrap();
        assert_eq!(read_back(&to, &dst, 0, len), data);
        assert_eq!(src_engine.stats().device_to_device.bytes, len as u64);
        from.release(src).unwrap();
        to.release(dst).unwrap();
    }
}

/// Two backends whose blocks are host memory copy to each other in one step (the peer plan),
/// not through a bounce buffer.
#[test]
fn host_memory_devices_copy_to_each_other_as_peers() {
    let a: Arc<dyn Backend> = Arc::new(HostBackend::new());
    let b: Arc<dyn Backend> = Arc::new(HostBackend::new());
    assert!(a.can_copy_to(b.as_ref()) && !a.can_copy_to(a.as_ref()));
    let (ea, eb) = (
        TransferEngine::new(a.clone()),
        TransferEngine::new(b.clone()),
    );
    let len = 3 * MIB + 7;
    assert_eq!(ea.plan_copy_to(&eb, len), Plan::Peer);
    assert!(ea.plan_copy_to(&eb, len).to_string().starts_with("peer"));
    let data = pattern(len, 3);
    let mut src = a.allocate(len + 16).unwrap();
    ea.write(&mut src, 16, &data).unwrap();
    let mut dst = b.allocate(len + 32).unwrap();
    ea.copy_to(&src, 16, &eb, &mut dst, 32, len).unwrap();
    assert_eq!(read_back(&b, &dst, 32, len), data);
    assert!(
        read_back(&b, &dst, 0, 32).iter().all(|&x| x == 0),
        "only the range"
    );
    let stats = ea.stats();
    assert_eq!(stats.device_to_device.bytes, len as u64);
    assert_eq!(
        stats.device_to_host.bytes, 0,
        "nothing went through the host"
    );
    // Out of range: a typed error, and the destination keeps its bytes.
    assert!(matches!(
        ea.copy_to(&src, 16, &eb, &mut dst, 33, len),
        Err(Error::OutOfRange { .. })
    ));
    assert_eq!(read_back(&b, &dst, 32, len), data);
    // Each endpoint's block must come from its own backend.
    assert!(matches!(
        a.copy_to_peer(
            a.default_queue(),
            &dst,
            b.as_ref(),
            &mut src,
            CopyRegion::prefix(1)
        ),
        Err(Error::ForeignHandle { .. })
    ));
    a.release(src).unwrap();
    b.release(dst).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Random fault schedules: every transfer either delivers exact data or fails with a typed
    /// error leaving the source untouched; nothing panics and no block leaks.
    #[test]
    fn random_fault_schedules_lose_no_data(
        faults in prop::collection::vec((0usize..7, 0u64..12, 0usize..3), 0..6),
        len in 1usize..40_000,
        strategy in 0usize..4,
    ) {
        let host: Arc<dyn Backend> = Arc::new(HostBackend::new());
        let faulty = Arc::new(FaultyBackend::new(host.clone()));
        for (op, nth, kind) in faults {
            let kind = [FaultKind::Transient, FaultKind::Permanent, FaultKind::Corrupt][kind];
            faulty.fail(FaultOp::ALL[op], nth, kind);
        }
        let mut cfg = config([Strategy::Direct, Strategy::Chunked, Strategy::Pipelined, Strategy::Mapped][strategy]);
        cfg.direct_max = 1024;
        cfg.chunk_size = 4096;
        cfg.verify = true;
        cfg.retry.base_delay = std::time::Duration::ZERO;
        let engine = TransferEngine::with_config(faulty.clone(), cfg).unwrap();
        let src = pattern(len, 1);
        let original = src.clone();
        if let Ok(mut block) = faulty.allocate(len) {
            match engine.write(&mut block, 0, &src) {
                Ok(()) => {
                    prop_assert_eq!(read_back(&host, &block, 0, len), src.clone());
                    let mut back = vec![0u8; len];
                    if engine.read(&block, 0, &mut back).is_ok() {
                        prop_assert_eq!(&back, &src);
                    }
                }
                Err(e) => prop_assert!(matches!(e, Error::Backend(_) | Error::IntegrityMismatch { .. }), "{}", e),
            }
            prop_assert_eq!(&src, &original);
            faulty.release(block).unwrap();
        }
        prop_assert_eq!(engine.stats().in_flight, 0);
        prop_assert_eq!(host.usage().live_blocks, 0, "no leaked block");
    }
}
