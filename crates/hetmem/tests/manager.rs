//! The memory manager on real backends: allocation and placement, limits and trimming,
//! statistics and scopes, leak tracking, recommendations, and bad input.

mod common;

use std::sync::Arc;

use hetmem::backend::{Backend, HostBackend};
use hetmem::buffer::Side;
use hetmem::manager::{
    AccessPattern, Advice, AllocOptions, MemoryManager, MemoryStats, Placement, Tracking,
};
use hetmem::Error;
use proptest::prelude::*;

use common::manager;

/// The invariants every snapshot keeps.
fn check_invariants(s: &MemoryStats) {
    assert!(s.bytes_current <= s.bytes_peak, "{s:?}");
    for pool in [&s.device, &s.host] {
        assert_eq!(
            pool.bytes_in_use + pool.bytes_cached,
            pool.bytes_reserved,
            "{pool:?}"
        );
        assert!(pool.bytes_in_use <= pool.peak_in_use.max(pool.bytes_in_use));
        assert!(pool.bytes_reserved <= pool.peak_reserved, "{pool:?}");
    }
    assert!(s.releases <= s.allocations);
    assert_eq!(s.bytes_allocated - s.bytes_released, s.bytes_current);
}

fn allocates_reads_zeros_and_counts(backend: &Arc<dyn Backend>) {
    let m = manager(backend);
    let mut a = m.alloc::<u32>(1000).unwrap();
    assert_eq!(a.to_vec().unwrap(), vec![0; 1000]);
    a.write(10, &[7, 8]).unwrap();
    let b = m.from_slice(&[1.5f64, 2.5]).unwrap();
    assert_eq!(b.to_vec().unwrap(), [1.5, 2.5]);
    let s = m.stats();
    check_invariants(&s);
    assert_eq!((s.allocations, s.releases, s.live_buffers()), (2, 0, 2));
    assert_eq!(s.bytes_current, 4000 + 16);
    assert!(
        s.in_use_bytes() >= 4016,
        "home sides are taken at alloc: {s:?}"
    );
    assert_eq!(a.to_vec().unwrap()[9..13], [0, 7, 8, 0]);
    drop((a, b));
    let s = m.stats();
    check_invariants(&s);
    assert_eq!((s.allocations, s.releases, s.bytes_current), (2, 2, 0));
    assert_eq!(s.in_use_bytes(), 0);
    assert_eq!(s.bytes_peak, 4016);
}

fn every_placement_keeps_contents_across_both_sides(backend: &Arc<dyn Backend>) {
    let m = manager(backend);
    let data: Vec<u32> = (0..50_000).map(|i| i * 3 + 1).collect();
    for placement in Placement::ALL {
        for access in AccessPattern::ALL {
            let options = AllocOptions::new().placement(placement).access(access);
            let decision = match m.decide(&options, data.len() * 4) {
                Ok(d) => d,
                Err(e) => {
                    assert_eq!(placement, Placement::Shared, "{e}");
                    assert!(matches!(
                        m.from_slice_with(&data, options),
                        Err(Error::InvalidArgument(_))
                    ));
                    continue;
                }
            };
            let mut buf = m.from_slice_with(&data, options).unwrap();
            assert_eq!(buf.residency(), decision.residency);
            assert_eq!(m.allocation(&buf).unwrap().placement, decision.placement);
            buf.prefetch_to_device().unwrap().wait().unwrap();
            buf.invalidate(Side::Host).unwrap(); // only the device copy is valid now
            assert_eq!(buf.to_vec().unwrap(), data, "{placement:?} {access:?}");
        }
    }
}

fn the_home_side_is_taken_at_allocation(backend: &Arc<dyn Backend>) {
    let m = manager(backend);
    let options = |p| AllocOptions::new().placement(p);
    let device = m
        .alloc_with::<u8>(1 << 20, options(Placement::Device))
        .unwrap();
    let s = m.stats();
    assert!(s.device.bytes_in_use >= 1 << 20, "{s:?}");
    let host_in_use = s.host.bytes_in_use;
    let host = m
        .alloc_with::<u8>(1 << 20, options(Placement::Host))
        .unwrap();
    let s = m.stats();
    if backend.capabilities().host_addressable {
        // One allocation serves both sides.
        assert_eq!(host.residency(), hetmem::buffer::Residency::Shared);
        assert_eq!(s.host.bytes_in_use, host_in_use);
    } else {
        assert!(s.host.bytes_in_use >= host_in_use + (1 << 20), "{s:?}");
    }
    assert_eq!(device.to_vec().unwrap(), vec![0; 1 << 20]);
}

/// A loop of buffers of a few sizes is served by the splitting allocator from memory it
/// holds, or by the buffers parked as the last round's dropped: the hit rate counts its carves
/// and reuses and the parked buffers made again, and only growth as misses.
fn the_hit_rate_counts_what_the_splitting_allocator_serves(backend: &Arc<dyn Backend>) {
    let m = manager(backend);
    for round in 0..50 {
        let sizes = [1 << 20, 3000 + round, 64 << 10];
        let on_device = AllocOptions::new().placement(Placement::Device);
        let device = |n| m.alloc_with::<u8>(n, on_device.clone()).unwrap();
        let buffers: Vec<_> = sizes.iter().map(|&n| device(n)).collect();
        drop(buffers);
    }
    let s = m.stats();
    let (hits, misses) = s.pool_requests();
    let split = s.device_segments;
    assert!(
        split.carves + split.reuses + s.parked.reuses >= 150,
        "every request reaches it or a parked buffer: {split:?}, {:?}",
        s.parked
    );
    assert!(
        (1..=10).contains(&misses),
        "growth only: {hits} hits, {misses} misses"
    );
    assert!(s.hit_rate() > 0.9, "{}", s.hit_rate());
    assert_eq!(split.misses(), split.segment_allocations + split.grows);
}

fn reused_memory_still_reads_as_zeros(backend: &Arc<dyn Backend>) {
    let m = manager(backend);
    let mut first = m.alloc::<u8>(4096).unwrap();
    first.host_mut().unwrap().fill(0xAB);
    first.prefetch_to_device().unwrap().wait().unwrap();
    drop(first);
    let hits = m.stats().pool_requests().0;
    let second = m.alloc::<u8>(4096).unwrap();
    assert!(m.stats().pool_requests().0 > hits, "the block was reused");
    assert_eq!(second.to_vec().unwrap(), vec![0; 4096]);
    let mut raw = m
        .alloc_with::<u8>(4096, AllocOptions::new().zeroed(false))
        .unwrap();
    raw.host_discard().unwrap().fill(3);
    assert_eq!(raw.to_vec().unwrap(), vec![3; 4096]);
}

fn a_limit_trims_caches_first_then_fails_with_the_figures(backend: &Arc<dyn Backend>) {
    let m = MemoryManager::builder()
        .backend(backend.clone())
        .limit(3 << 20)
        .build()
        .unwrap();
    let opts = || AllocOptions::new().placement(Placement::Device);
    let a = m.alloc_with::<u8>(2 << 20, opts()).unwrap();
    drop(a); // cached now: 2 MiB still held
    assert!(m.stats().cached_bytes() >= 2 << 20);
    // 2 MiB more only fits once the cache gives its block back; a different size class so the
    // cached block cannot simply be reused.
    let b = m.alloc_with::<u8>((2 << 20) + 4096, opts()).unwrap();
    let cached = m.stats().cached_bytes();
    match backend.commit_granularity() {
        // An expandable segment grew in place over the freed block: what is left free is the
        // rest of the granule it grew by and what it committed ahead (a sixteenth of 2 MiB).
        Some(granule) => assert!(
            cached < (granule + (2 << 20) / 16) as u64,
            "{cached} bytes cached"
        ),
        None => assert_eq!(cached, 0, "the cache was trimmed to make room"),
    }
    let err = m.alloc_with::<u8>(2 << 20, opts()).unwrap_err();
    match &err {
        Error::LimitExceeded {
            requested,
            limit,
            in_use,
        } => {
            assert_eq!(*limit, 3 << 20);
            assert!(*requested >= 2 << 20);
            assert!(*in_use >= (2 << 20) + 4096);
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    assert!(err.to_string().contains("memory limit of 3145728 bytes"));
    let stats = m.stats();
    let refused = "the refused allocation leaves no trace in the books";
    assert_eq!((stats.allocations, stats.releases), (2, 1), "{refused}");
    assert_eq!(stats.bytes_current, (2 << 20) + 4096, "{refused}");
    let live: Vec<usize> = m.outstanding().iter().map(|o| o.bytes).collect();
    assert_eq!(live, [(2 << 20) + 4096], "{refused}");
    assert_eq!(b.to_vec().unwrap().len(), (2 << 20) + 4096, "b is intact");
    check_invariants(&m.stats());
}

fn a_limit_below_use_is_refused_and_the_old_one_stays(backend: &Arc<dyn Backend>) {
    let m = manager(backend);
    assert_eq!(m.limit(), None);
    let _a = m.alloc::<u8>(1 << 20).unwrap();
    let err = m.set_limit(Some(1 << 10)).unwrap_err();
    assert!(matches!(err, Error::LimitBelowUse { limit: 1024, in_use } if in_use >= 1 << 20));
    assert_eq!(m.limit(), None);
    m.set_limit(Some(64 << 20)).unwrap();
    assert_eq!(m.stats().limit, Some(64 << 20));
    assert!(matches!(
        m.set_limit(Some(0)),
        Err(Error::ZeroLength { .. })
    ));
    m.set_limit(None).unwrap();
    assert_eq!(m.limit(), None);
}

fn trim_releases_every_cached_block(backend: &Arc<dyn Backend>) {
    let m = manager(backend);
    let bufs: Vec<_> = (1..5).map(|i| m.alloc::<u8>(i << 16).unwrap()).collect();
    drop(bufs);
    let before = m.stats();
    assert!(before.cached_bytes() > 0);
    assert_eq!(m.trim().unwrap(), before.cached_bytes());
    let after = m.stats();
    assert_eq!((after.cached_bytes(), after.reserved_bytes()), (0, 0));
    check_invariants(&after);
}

fn scopes_nest_and_report_their_own_deltas(backend: &Arc<dyn Backend>) {
    let m = manager(backend);
    let _before = m.alloc::<u8>(1000).unwrap();
    let outer = m.stats_scope();
    let a = m.alloc::<u8>(3000).unwrap();
    let (inner_delta, b) = {
        let inner = m.stats_scope();
        let b = m.alloc::<u8>(500).unwrap();
        let temp = m.alloc::<u8>(10_000).unwrap();
        drop(temp);
        (inner.delta(), b)
    };
    assert_eq!((inner_delta.allocations, inner_delta.releases), (2, 1));
    assert_eq!(inner_delta.bytes_allocated, 10_500);
    assert_eq!(inner_delta.net_bytes(), 500);
    assert_eq!(inner_delta.peak_increase, 10_500);
    drop(a);
    let d = outer.delta();
    assert_eq!((d.allocations, d.releases), (3, 2));
    assert_eq!(d.net_bytes(), 500);
    assert_eq!(d.peak_increase, 13_500);
    drop(b);
}

fn peaks_reset_to_the_current_values(backend: &Arc<dyn Backend>) {
    let m = manager(backend);
    let a = m.alloc::<u8>(1 << 20).unwrap();
    let b = m.alloc::<u8>(1 << 10).unwrap();
    drop(a);
    assert_eq!(m.stats().bytes_peak, (1 << 20) + (1 << 10));
    m.reset_peaks();
    let s = m.stats();
    assert_eq!(s.bytes_peak, 1 << 10);
    assert_eq!(s.device.peak_in_use, s.device.bytes_in_use);
    drop(b);
}

fn outstanding_lists_live_allocations_with_labels_and_ages(backend: &Arc<dyn Backend>) {
    let m = manager(backend);
    let a = m
        .alloc_with::<u16>(100, AllocOptions::new().label("weights"))
        .unwrap();
    // Ages are read on the coarse clock: more than a tick (1-10 ms) apart.
    std::thread::sleep(std::time::Duration::from_millis(25));
    let b = m.alloc::<u8>(7).unwrap();
    let live = m.outstanding();
    assert_eq!(live.len(), 2);
    assert_eq!(live[0].label.as_deref(), Some("weights"));
    assert_eq!((live[0].bytes, live[1].bytes), (200, 7));
    assert!(live[0].age > live[1].age);
    assert!(live[0].backtrace.is_none(), "backtraces are off by default");
    assert!(live[0].to_string().contains("weights"));
    assert_eq!(
        m.allocation(&a.slice(10..20).unwrap()).unwrap().id,
        live[0].id
    );
    drop(a);
    let live = m.outstanding();
    assert_eq!(live.iter().map(|o| o.bytes).collect::<Vec<_>>(), [7]);
    let summary = m.summary();
    assert!(summary.contains("1 live allocations"), "{summary}");
    assert!(summary.contains("buffer bytes"), "{summary}");
    drop(b);
    assert!(m.outstanding().is_empty());
}

fn tracking_levels_change_what_is_recorded(backend: &Arc<dyn Backend>) {
    let counts = MemoryManager::builder()
        .backend(backend.clone())
        .tracking(Tracking::Counts)
        .build()
        .unwrap();
    let _a = counts.alloc::<u8>(64).unwrap();
    assert!(counts.outstanding().is_empty());
    assert_eq!(counts.stats().live_buffers(), 1);
    let traced = MemoryManager::builder()
        .backend(backend.clone())
        .tracking(Tracking::Backtraces)
        .build()
        .unwrap();
    let _b = traced.alloc::<u8>(64).unwrap();
    let live = traced.outstanding();
    let bt = live[0].backtrace.as_ref().expect("a backtrace");
    assert!(!bt.to_string().is_empty());
}

fn foreign_buffers_are_refused(backend: &Arc<dyn Backend>) {
    let m = manager(backend);
    let other = manager(backend);
    let theirs = other.alloc::<u8>(16).unwrap();
    assert!(matches!(
        m.allocation(&theirs),
        Err(Error::ForeignBuffer { .. })
    ));
    let ctx = hetmem::buffer::BufferContext::new(backend.clone());
    let plain = ctx.alloc::<u8>(16).unwrap();
    assert!(matches!(
        m.allocation(&plain),
        Err(Error::ForeignBuffer { .. })
    ));
    let ours = m.alloc::<u8>(16).unwrap();
    assert_eq!(m.allocation(&ours).unwrap().bytes, 16);
}

fn bad_counts_are_typed_errors(backend: &Arc<dyn Backend>) {
    let m = manager(backend);
    assert!(matches!(m.alloc::<u8>(0), Err(Error::ZeroLength { .. })));
    assert!(matches!(
        m.alloc::<u64>(usize::MAX / 4),
        Err(Error::SizeOverflow { .. })
    ));
    let huge = usize::MAX / 16;
    assert!(m.alloc::<u8>(huge).is_err());
    assert!(matches!(
        MemoryManager::builder().limit(0).build(),
        Err(Error::ZeroLength { .. })
    ));
    assert!(matches!(
        MemoryManager::builder().limit_fraction(1.5).build(),
        Err(Error::InvalidArgument(_))
    ));
    let s = m.stats();
    assert_eq!(
        (s.allocations, s.bytes_current, s.in_use_bytes()),
        (0, 0, 0)
    );
}

fn resizing_keeps_the_byte_counts_true(backend: &Arc<dyn Backend>) {
    let m = manager(backend);
    let mut a = m.alloc::<u32>(100).unwrap();
    a.resize(1000).unwrap(); // still uninitialised: the reservation is given back
    assert_eq!(m.stats().bytes_current, 4000);
    assert_eq!(a.to_vec().unwrap(), vec![0; 1000]);
    a.write(999, &[5]).unwrap();
    a.resize(10).unwrap();
    assert_eq!(m.stats().bytes_current, 40);
    assert_eq!(m.allocation(&a).unwrap().bytes, 40);
    drop(a);
    check_invariants(&m.stats());
    assert_eq!(m.stats().bytes_current, 0);
}

fn dropping_the_manager_first_is_safe(backend: &Arc<dyn Backend>) {
    let before = backend.usage().live_blocks;
    let m = manager(backend);
    let mut buf = m.from_slice(&[1u8, 2, 3, 4]).unwrap();
    let untouched = m.alloc::<u8>(4096).unwrap();
    drop(m);
    // Host data stays usable; the device is out of reach.
    assert_eq!(buf.to_vec().unwrap(), [1, 2, 3, 4]);
    buf.host_mut().unwrap()[0] = 9;
    assert_eq!(buf.host().unwrap()[0], 9);
    assert!(matches!(buf.device(), Err(Error::ContextClosed { .. })));
    drop((buf, untouched));
    assert_eq!(backend.usage().live_blocks, before, "every block went back");
}

/// Buffers made on one thread and dropped on others: each thread counts what it did, and the
/// figures and the per-label usage come back summed, one entry per label and placement.
fn counts_and_usage_sum_over_the_threads_that_dropped(backend: &Arc<dyn Backend>) {
    let m = manager(backend);
    let made: Vec<_> = (0..6)
        .map(|i| {
            let label = if i % 2 == 0 { "even" } else { "odd" };
            let mut buf = m
                .alloc_with::<u8>(1000 + i, AllocOptions::new().label(label))
                .unwrap();
            if i < 4 {
                buf.host_discard().unwrap().fill(1);
            }
            buf
        })
        .collect();
    let mut made = made.into_iter();
    std::thread::scope(|s| {
        for _ in 0..3 {
            let two: Vec<_> = made.by_ref().take(2).collect();
            s.spawn(move || drop(two));
        }
    });
    let stats = m.stats();
    assert_eq!(
        (stats.allocations, stats.releases, stats.live_buffers()),
        (6, 6, 0)
    );
    let bytes: u64 = (0..6).map(|i| 1000 + i).sum();
    assert_eq!(
        (stats.bytes_allocated, stats.bytes_released),
        (bytes, bytes)
    );
    let usage = m.usage();
    for (label, sizes, unused) in [
        ("even", [1000, 1002, 1004], 1),
        ("odd", [1001, 1003, 1005], 1),
    ] {
        let entries: Vec<_> = usage
            .iter()
            .filter(|u| u.label.as_deref() == Some(label))
            .collect();
        assert_eq!(entries.len(), 1, "one entry for {label}");
        let u = entries[0];
        assert_eq!(u.buffers, 3);
        assert_eq!(u.bytes, sizes.iter().sum::<u64>());
        assert_eq!(u.unused, unused, "{label}: buffers never accessed");
    }
}

fn mirrored_round_trips_are_recommended_against(backend: &Arc<dyn Backend>) {
    let m = manager(backend);
    let mut buf = m
        .alloc_with::<u8>(
            4096,
            AllocOptions::new()
                .placement(Placement::Host)
                .label("ping-pong"),
        )
        .unwrap();
    let _never = m
        .alloc_with::<u8>(64, AllocOptions::new().label("idle"))
        .unwrap();
    for round in 0..6u8 {
        buf.host_discard().unwrap().fill(round);
        buf.device_mut().unwrap(); // uploads 4 KiB, then the device copy is the newest
        assert_eq!(buf.host().unwrap()[0], round); // downloads 4 KiB
    }
    let advice = m.recommendations();
    let idle = advice.iter().find(|r| r.kind == Advice::NeverUsed).unwrap();
    assert_eq!(idle.label.as_deref(), Some("idle"));
    let usage = m.usage();
    let pp = usage
        .iter()
        .find(|u| u.label.as_deref() == Some("ping-pong"))
        .unwrap();
    if buf.residency() == hetmem::buffer::Residency::Shared {
        assert_eq!(pp.host_to_device.bytes, 0, "shared buffers never move");
        assert!(advice.iter().all(|r| r.kind != Advice::MovesTooMuch));
    } else {
        assert_eq!(pp.host_to_device.bytes, 6 * 4096);
        assert_eq!(pp.device_to_host.bytes, 6 * 4096);
        let moves = advice
            .iter()
            .find(|r| r.kind == Advice::MovesTooMuch)
            .expect("advice about ping-pong");
        assert!(moves.message.contains("ping-pong"), "{moves}");
        assert!(moves.message.contains("12 times"), "{moves}");
        assert!(m.summary().contains("advice: label ping-pong"));
    }
}

common::backend_suite!(
    [
        host => crate::common::host(),
        opencl => crate::common::opencl(0),
        wgpu => crate::common::wgpu(),
        cuda => crate::common::cuda(0),
    ],
    [
        allocates_reads_zeros_and_counts,
        every_placement_keeps_contents_across_both_sides,
        the_home_side_is_taken_at_allocation,
        reused_memory_still_reads_as_zeros,
        the_hit_rate_counts_what_the_splitting_allocator_serves,
        a_limit_trims_caches_first_then_fails_with_the_figures,
        a_limit_below_use_is_refused_and_the_old_one_stays,
        trim_releases_every_cached_block,
        scopes_nest_and_report_their_own_deltas,
        peaks_reset_to_the_current_values,
        outstanding_lists_live_allocations_with_labels_and_ages,
        tracking_levels_change_what_is_recorded,
        foreign_buffers_are_refused,
        bad_counts_are_typed_errors,
        resizing_keeps_the_byte_counts_true,
        dropping_the_manager_first_is_safe,
        mirrored_round_trips_are_recommended_against,
        counts_and_usage_sum_over_the_threads_that_dropped,
    ]
);

#[test]
fn the_host_manager_needs_no_setup() {
    let m = MemoryManager::host();
    let buf = m.from_slice(&[1u16, 2, 3]).unwrap();
    assert_eq!(buf.to_vec().unwrap(), [1, 2, 3]);
    assert_eq!(m.backend().info().kind, hetmem::backend::BackendKind::Host);
    let _ = HostBackend::new();
}

#[derive(Debug, Clone)]
enum Op {
    Alloc { elements: usize, device: bool },
    Drop(usize),
    Resize(usize, usize),
    Write(usize),
    Trim,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..300_000, any::<bool>())
            .prop_map(|(elements, device)| Op::Alloc { elements, device }),
        3 => (0usize..16).prop_map(Op::Drop),
        1 => (0usize..16, 1usize..100_000).prop_map(|(i, n)| Op::Resize(i, n)),
        2 => (0usize..16).prop_map(Op::Write),
        1 => Just(Op::Trim),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// current ≤ peak, in use + cached = reserved, and the counts balance once all is dropped.
    #[test]
    fn stats_invariants_hold_under_any_sequence(ops in prop::collection::vec(op(), 1..40)) {
        let backend = common::host().unwrap();
        let m = manager(&backend);
        let mut live = Vec::new();
        for op in ops {
            match op {
                Op::Alloc { elements, device } => {
                    let p = if device { Placement::Device } else { Placement::Host };
                    live.push(m.alloc_with::<u32>(elements, AllocOptions::new().placement(p)).unwrap());
                }
                Op::Drop(i) if !live.is_empty() => { live.swap_remove(i % live.len()); }
                Op::Resize(i, n) if !live.is_empty() => {
                    let k = i % live.len();
                    live[k].resize(n).unwrap();
                }
                Op::Write(i) if !live.is_empty() => {
                    let k = i % live.len();
                    let len = live[k].len();
                    live[k].write(len - 1, &[42]).unwrap();
                    prop_assert_eq!(live[k].to_vec().unwrap()[len - 1], 42);
                }
                Op::Trim => { m.trim().unwrap(); }
                _ => {}
            }
            let s = m.stats();
            check_invariants(&s);
            prop_assert_eq!(s.live_buffers(), live.len() as u64);
            let expected: usize = live.iter().map(|b| b.byte_len()).sum();
            prop_assert_eq!(s.bytes_current, expected as u64);
        }
        drop(live);
        let s = m.stats();
        check_invariants(&s);
        prop_assert_eq!(s.allocations, s.releases);
        prop_assert_eq!((s.bytes_current, s.in_use_bytes()), (0, 0));
        prop_assert_eq!(s.bytes_allocated, s.bytes_released);
    }
}

/// Snapshots taken while other threads allocate and drop never count more releases than
/// allocations (issue 18, item 3: `live_buffers()` used to underflow).
#[test]
fn statistics_under_churn_never_wrap() {
    let manager = MemoryManager::host();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        for _ in 0..2 {
            let (manager, stop) = (&manager, &stop);
            s.spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    drop(manager.alloc::<u8>(64).unwrap());
                }
            });
        }
        for _ in 0..50_000 {
            let stats = manager.stats();
            // Loaded one after the other while threads churn: never more releases than
            // allocations, so the difference never wraps.
            assert!(stats.releases <= stats.allocations, "{stats:?}");
            assert!(stats.live_buffers() <= stats.allocations, "{stats:?}");
        }
    });
    assert_eq!(manager.stats().live_buffers(), 0);
}

/// Tells the churning threads to stop, also when an assertion fails (or the scope would wait
/// for them forever).
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
