//! Random fault schedules through unified buffers and the memory manager (not only the engine):
//! every operation either
//! succeeds and matches a model of the contents, or fails with a typed error and leaves the
//! old contents — unspecified only over the range it attempted where the device held the only
//! copy, and even there reading one way from then on (issue 18: 10⁴ schedules on the host
//! backend, 500 on PoCL).

mod common;

use std::sync::Arc;

use hetmem::backend::{Backend, HostBackend};
use hetmem::backend::{FaultKind, FaultOp, FaultyBackend};
use hetmem::buffer::{BufferContext, CoherenceState, Residency, UnifiedBuffer};
use hetmem::pool::CachingAllocator;
use hetmem::transfer::{RetryPolicy, Strategy, TransferConfig};
use hetmem::{AllocOptions, MemoryManager, Placement};

const N: usize = 2048;

/// The contents as far as they are known: `None` where a failed operation left them
/// unspecified.
type Model = Vec<Option<u32>>;

fn forget(model: &mut Model, range: std::ops::Range<usize>) {
    model[range].iter_mut().for_each(|v| *v = None);
}

/// Reads the buffer and checks it against the model wherever the model knows. What a failed
/// operation left unspecified is pinned to what it reads now: it must read the same way from
/// then on, through either copy (two copies that disagree show after `compact`). A read that
/// fails (a fault in the read) changes nothing and is skipped.
fn check(buf: &UnifiedBuffer<u32>, model: &mut Model, what: &dyn Fn() -> String) {
    let Ok(seen) = buf.to_vec() else { return };
    for (i, (s, m)) in seen.iter().zip(model.iter_mut()).enumerate() {
        match m {
            Some(m) => assert_eq!(s, m, "element {i}: {}", what()),
            None => *m = Some(*s),
        }
    }
}

fn schedules(b: &Arc<dyn Backend>, cases: u64) {
    for case in 0..cases {
        let mut rng = fastrand::Rng::with_seed(case ^ 0x5eed);
        let faulty = Arc::new(FaultyBackend::new(b.clone()));
        for _ in 0..rng.usize(1..6) {
            let op = FaultOp::ALL[rng.usize(..FaultOp::ALL.len())];
            let kind = [
                FaultKind::Transient,
                FaultKind::Permanent,
                FaultKind::OutOfMemory,
            ][rng.usize(..3)];
            faulty.fail(op, rng.u64(..12), kind);
        }
        let strategy = [Strategy::Auto, Strategy::Chunked, Strategy::Mapped][rng.usize(..3)];
        let transfers = TransferConfig {
            strategy,
            direct_max: 1024,
            chunk_size: 2048,
            retry: RetryPolicy {
                base_delay: std::time::Duration::ZERO,
                ..RetryPolicy::default()
            },
            ..TransferConfig::default()
        };
        // Every other schedule runs through a memory manager, which places the buffers itself
        // and keeps their records and statistics.
        let through_manager = case % 2 == 1;
        let manager = MemoryManager::builder()
            .backend(faulty.clone())
            .transfers(transfers)
            .build()
            .unwrap();
        let host: Arc<dyn Backend> = Arc::new(HostBackend::new());
        let ctx = BufferContext::with_transfers(
            CachingAllocator::new(faulty.clone()),
            CachingAllocator::new(host),
            transfers,
        )
        .unwrap();
        let alloc = || {
            if through_manager {
                let device = AllocOptions::new().placement(Placement::Device);
                manager.alloc_with::<u32>(N, device)
            } else {
                ctx.alloc_with::<u32>(N, Residency::Mirrored)
            }
        };
        let Ok(mut buf) = alloc() else {
            continue; // an injected fault in the first allocation
        };
        let mut model: Model = vec![Some(0); N];
        // A source valid on the device, so that copies take the device path.
        let source = rng.u32(..);
        let Ok(mut other) = alloc() else {
            continue;
        };
        let filled = other
            .host_discard()
            .map(|mut h| h.fill(source))
            .and_then(|()| other.prefetch_to_device()?.wait());
        if filled.is_err() {
            continue;
        }
        let mut log = Vec::new();
        for _ in 0..10 {
            let (x, y) = (rng.usize(..N), rng.usize(..=N));
            let (a, z) = (x.min(y), x.max(y).max(x.min(y) + 1).min(N));
            let v = rng.u32(..);
            let op = rng.usize(..9);
            log.push((op, a, z));
            let what = || format!("case {case}, {strategy:?}, steps {log:?}");
            // A failed write keeps the old contents wherever the host copy held them all; only
            // where the device held the only copy (or there is one allocation) may the
            // attempted range be unspecified.
            let only_on_device = buf.residency() == Residency::Shared
                || matches!(
                    buf.state(),
                    CoherenceState::DeviceOnly | CoherenceState::DeviceDirty
                );
            let outcome = match op {
                0 => buf.write(a, &vec![v; z - a]),
                1 => buf.fill(v, a..z),
                2 => buf.host_mut_range(a..z).map(|mut h| h.fill(v)),
                3 => buf.device_mut().map(|mut d| {
                    // The user's own kernel: through the real backend, never faulted.
                    let (q, off) = (d.queue().clone(), d.offset() + a * 4);
                    b.write(
                        &q,
                        d.block_mut(),
                        off,
                        &vec![v.to_ne_bytes(); z - a].concat(),
                    )
                    .unwrap();
                }),
                4 => buf.sync().and_then(|h| h.wait()),
                5 => buf.prefetch_to_device().and_then(|h| h.wait()),
                6 => buf.compact(),
                7 => buf.copy_from(&other),
                _ => {
                    check(&buf, &mut model, &what);
                    Ok(())
                }
            };
            match (op, outcome) {
                (0..=3, Ok(())) => model[a..z].iter_mut().for_each(|m| *m = Some(v)),
                (7, Ok(())) => model.iter_mut().for_each(|m| *m = Some(source)),
                (0..=3, Err(_)) if only_on_device => forget(&mut model, a..z),
                (7, Err(_)) if only_on_device => forget(&mut model, 0..N),
                (0..=3 | 7, Err(_)) => {}
                (_, Ok(())) => {}
                // Syncs, prefetches and compaction change no contents, failed or not.
                (_, Err(e)) => assert!(
                    e.is_retryable() || matches!(e, hetmem::Error::Backend(_)),
                    "{e}: {}",
                    what()
                ),
            }
            check(&buf, &mut model, &what);
        }
        faulty.clear();
        let end = || format!("case {case}, at the end: {log:?}");
        check(&buf, &mut model, &end);
        // Both copies agree: what the host reads once the device copy is dropped is the same.
        buf.compact().unwrap();
        check(&buf, &mut model, &end);
        assert_eq!(
            manager.stats().live_buffers(),
            if through_manager { 2 } else { 0 }
        );
        drop((buf, other));
        assert_eq!(
            manager.stats().live_buffers(),
            0,
            "case {case}: records dropped"
        );
        ctx.device_pool().trim().unwrap();
        manager.trim().unwrap();
        assert_eq!(b.usage().live_blocks, 0, "case {case}: no leaked block");
    }
}

#[test]
fn host_fault_schedules_through_buffers() {
    schedules(&common::host().unwrap(), 10_000);
}

#[test]
fn opencl_fault_schedules_through_buffers() {
    if let Some(b) = common::opencl(0) {
        schedules(&b, 500);
    }
}
