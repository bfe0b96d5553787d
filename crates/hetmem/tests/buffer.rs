//! Unified buffers on every backend present: contents across sides, exact transfer counts per
//! the coherence table, range-precise syncs, resizing, threads, and bad input (views and ranged
//! operations: `views.rs`).

mod common;

use std::sync::{Arc, Barrier};

use common::buffers::{alloc, device_write, from_slice, mirrored, values};
use common::device_contents;
use hetmem::backend::{Backend, HostBackend};
use hetmem::buffer::{
    coherence::transition, BufferContext, CoherenceEvent, CoherenceState, Residency, Side,
    UnifiedBuffer,
};
use hetmem::pool::CachingAllocator;
use hetmem::Error;

/// (uploads, downloads) so far.
fn transfers(buf: &UnifiedBuffer<u32>) -> (u64, u64) {
    let m = buf.metrics();
    (m.host_to_device.transfers, m.device_to_host.transfers)
}

fn host_writes_are_seen_on_the_device(b: &Arc<dyn Backend>) {
    let ctx = mirrored(b);
    let mut buf = alloc(&ctx, 1000);
    let data = values(1000, 1);
    buf.host_discard().unwrap().copy_from_slice(&data);
    assert_eq!(buf.state(), CoherenceState::HostOnly);
    assert_eq!(device_contents(b, &buf), data);
    assert_eq!(transfers(&buf), (1, 0));
    assert_eq!(buf.metrics().host_to_device.bytes, 4000);
    assert_eq!(buf.state(), CoherenceState::Synchronized);
}

fn device_writes_are_seen_on_the_host(b: &Arc<dyn Backend>) {
    let ctx = mirrored(b);
    let mut buf = alloc(&ctx, 777);
    buf.host_discard().unwrap().fill(3);
    let data = values(777, 2);
    device_write(b, &mut buf, &data);
    assert_eq!(buf.state(), CoherenceState::DeviceDirty);
    assert!(buf.is_dirty() && buf.is_on_device() && !buf.is_on_host());
    assert_eq!(&*buf.host().unwrap(), &data[..]);
    assert_eq!(transfers(&buf), (1, 1));
    assert_eq!(buf.state(), CoherenceState::Synchronized);
}

/// Brings a fresh buffer into `state`, returning the contents it then holds.
fn reach(b: &Arc<dyn Backend>, buf: &mut UnifiedBuffer<u32>, state: CoherenceState) -> Vec<u32> {
    let n = buf.len();
    let base = values(n, 10);
    match state {
        CoherenceState::Uninitialized => return vec![0; n],
        CoherenceState::DeviceOnly => {
            let mut d = buf.device_discard().unwrap();
            let (q, offset) = (d.queue().clone(), d.offset());
            b.write(&q, d.block_mut(), offset, bytemuck::cast_slice(&base))
                .unwrap();
            return base;
        }
        _ => buf.host_discard().unwrap().copy_from_slice(&base),
    }
    if state == CoherenceState::HostOnly {
        return base;
    }
    buf.sync().unwrap().wait().unwrap();
    match state {
        CoherenceState::HostDirty => {
            let changed = values(n, 11);
            buf.host_mut().unwrap().copy_from_slice(&changed);
            changed
        }
        CoherenceState::DeviceDirty => {
            let changed = values(n, 12);
            device_write(b, buf, &changed);
            changed
        }
        _ => base,
    }
}

/// Every (state, event) pair through the public API: the state after and the number of
/// uploads and downloads are exactly the table's, and the contents are what was written.
fn transfers_follow_the_table(b: &Arc<dyn Backend>) {
    let ctx = mirrored(b);
    for from in CoherenceState::ALL {
        for event in CoherenceEvent::ALL {
            let label = format!("{event} in {from:?}");
            let mut buf = alloc(&ctx, 300);
            let mut expect = reach(b, &mut buf, from);
            assert_eq!(buf.state(), from, "{label}: setup");
            let before = transfers(&buf);
            let t = transition(from, event);
            let outcome = match event {
                CoherenceEvent::Read(Side::Host) => {
                    buf.host().map(|h| assert_eq!(&*h, &expect[..]))
                }
                CoherenceEvent::Read(Side::Device) => buf.device().map(drop),
                CoherenceEvent::Write(Side::Host) => buf.host_mut().map(|mut h| {
                    assert_eq!(&*h, &expect[..], "{label}: read-modify-write sees the data");
                    h[7] += 1;
                    expect[7] += 1;
                }),
                CoherenceEvent::Write(Side::Device) => buf.device_mut().map(drop),
                CoherenceEvent::Discard(Side::Host) => buf.host_discard().map(|mut h| {
                    expect = values(300, 13);
                    h.copy_from_slice(&expect);
                }),
                CoherenceEvent::Discard(Side::Device) => {
                    expect = values(300, 14);
                    buf.device_discard().map(|mut d| {
                        let (q, offset) = (d.queue().clone(), d.offset());
                        b.write(&q, d.block_mut(), offset, bytemuck::cast_slice(&expect))
                            .unwrap();
                    })
                }
                CoherenceEvent::Sync => buf.sync().and_then(|h| h.wait()),
                CoherenceEvent::Prefetch(Side::Host) => {
                    buf.prefetch_to_host().and_then(|h| h.wait())
                }
                CoherenceEvent::Prefetch(Side::Device) => {
                    buf.prefetch_to_device().and_then(|h| h.wait())
                }
                CoherenceEvent::Invalidate(side) => buf.invalidate(side),
                CoherenceEvent::Compact => buf.compact(),
                CoherenceEvent::Resize => buf.resize(300),
            };
            match t {
                Ok(t) => {
                    outcome.unwrap_or_else(|e| panic!("{label}: {e}"));
                    let uploads = t
                        .effects
                        .iter()
                        .filter(|e| **e == hetmem::buffer::Effect::Upload)
                        .count();
                    let downloads = t
                        .effects
                        .iter()
                        .filter(|e| **e == hetmem::buffer::Effect::Download)
                        .count();
                    let after = transfers(&buf);
                    assert_eq!(
                        (after.0 - before.0, after.1 - before.1),
                        (uploads as u64, downloads as u64),
                        "{label}: transfers"
                    );
                    assert_eq!(buf.state(), t.state, "{label}: state");
                    // Invalidation declares the other side newest: its contents are the truth.
                    if !matches!(event, CoherenceEvent::Invalidate(_)) || from == t.state {
                        assert_eq!(buf.to_vec().unwrap(), expect, "{label}: contents");
                    }
                }
                Err(refused) => {
                    assert!(
                        matches!(outcome, Err(Error::Coherence(e)) if e == refused),
                        "{label}"
                    );
                    assert_eq!(buf.state(), from, "{label}: refused leaves the state");
                    assert_eq!(
                        buf.to_vec().unwrap(),
                        expect,
                        "{label}: refused keeps the data"
                    );
                }
            }
        }
    }
}

fn valid_sides_need_no_transfer(b: &Arc<dyn Backend>) {
    let ctx = mirrored(b);
    let buf = from_slice(&ctx, &values(4096, 3));
    buf.sync().unwrap().wait().unwrap();
    let before = transfers(&buf);
    for _ in 0..3 {
        drop(buf.host().unwrap());
        drop(buf.device().unwrap());
        buf.sync().unwrap().wait().unwrap();
        buf.prefetch_to_device().unwrap().wait().unwrap();
    }
    assert_eq!(transfers(&buf), before);
}

/// One element written into 64 MiB, then a device read: a few bytes move, not the buffer.
fn syncs_move_only_dirty_ranges(b: &Arc<dyn Backend>) {
    let ctx = mirrored(b);
    let n = 16 << 20; // 64 MiB of u32
    let mut buf = alloc(&ctx, n);
    buf.host_discard().unwrap().fill(5);
    buf.sync().unwrap().wait().unwrap();
    let full = buf.metrics().host_to_device.bytes;
    assert_eq!(full, 64 << 20);

    buf.write(12_345, &[77]).unwrap();
    buf.host_mut_range(9_000_000..9_000_002).unwrap().fill(78);
    let d = buf.device().unwrap();
    let mut probe = [0u32; 2];
    b.read(
        d.queue(),
        d.block(),
        12_345 * 4,
        bytemuck::cast_slice_mut(&mut probe[..1]),
    )
    .unwrap();
    b.read(
        d.queue(),
        d.block(),
        9_000_001 * 4,
        bytemuck::cast_slice_mut(&mut probe[1..]),
    )
    .unwrap();
    assert_eq!(probe, [77, 78]);
    drop(d);
    let moved = buf.metrics().host_to_device.bytes - full;
    assert_eq!(moved, 4 + 8, "only the written elements move");

    // The device writes two elements through a view: only those come back.
    {
        let mut view = buf.slice_mut(100..102).unwrap();
        let mut d = view.device_mut().unwrap();
        let (q, offset) = (d.queue().clone(), d.offset());
        b.write(&q, d.block_mut(), offset, bytemuck::cast_slice(&[1u32, 2]))
            .unwrap();
    }
    assert_eq!(&buf.host().unwrap()[99..103], &[5, 1, 2, 5]);
    assert_eq!(buf.metrics().device_to_host.bytes, 8);
}

fn resize_and_compact_keep_the_data(b: &Arc<dyn Backend>) {
    let ctx = mirrored(b);
    let data = values(1000, 6);
    let mut buf = from_slice(&ctx, &data);
    buf.sync().unwrap().wait().unwrap();
    buf.resize(5000).unwrap();
    assert_eq!(buf.len(), 5000);
    assert_eq!(buf.state(), CoherenceState::Synchronized);
    let mut expect = data.clone();
    expect.resize(5000, 0);
    assert_eq!(
        device_contents(b, &buf),
        expect,
        "device prefix kept, tail zeroed"
    );
    assert_eq!(&*buf.host().unwrap(), &expect[..]);
    buf.resize(10).unwrap();
    assert_eq!(buf.to_vec().unwrap(), &data[..10]);
    buf.resize(20).unwrap();
    assert_eq!(
        &buf.to_vec().unwrap()[10..],
        &[0; 10],
        "regrown tail reads as zeros"
    );

    device_write(b, &mut buf, &values(20, 7));
    buf.compact().unwrap();
    assert_eq!(buf.state(), CoherenceState::HostOnly);
    assert!(buf.is_on_host() && !buf.is_on_device());
    assert_eq!(buf.to_vec().unwrap(), values(20, 7));
    assert!(buf.metrics().last_access.is_some());
}

/// Many threads read a stale side at once through `&self`: exactly one transfer happens.
fn concurrent_readers_sync_once(b: &Arc<dyn Backend>) {
    let ctx = mirrored(b);
    let mut buf = from_slice(&ctx, &values(1 << 16, 8));
    buf.sync().unwrap().wait().unwrap();
    let changed = values(1 << 16, 9);
    device_write(b, &mut buf, &changed);
    let threads = 8;
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                barrier.wait();
                let host = buf.host().unwrap();
                assert_eq!(&*host, &changed[..]);
                drop(buf.device().unwrap()); // a guard on each side at once: no deadlock
            });
        }
    });
    assert_eq!(transfers(&buf), (1, 1));
    assert_eq!(buf.metrics().device_to_host.bytes, 4 << 16);
}

fn bad_input_is_a_typed_error(b: &Arc<dyn Backend>) {
    let ctx = mirrored(b);
    let data = values(16, 10);
    let mut buf = from_slice(&ctx, &data);
    let mut out = [0u32; 4];
    assert!(matches!(
        buf.read(14, &mut out),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        buf.write(usize::MAX, &[1]),
        Err(Error::OutOfRange { .. } | Error::SizeOverflow { .. })
    ));
    assert!(matches!(buf.slice(4..17), Err(Error::OutOfRange { .. })));
    assert!(matches!(
        buf.host_mut_range(17..),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(buf.fill(0, 0..=16), Err(Error::OutOfRange { .. })));
    assert!(matches!(
        buf.slice(..=usize::MAX),
        Err(Error::SizeOverflow { .. })
    ));
    let other = alloc(&ctx, 15);
    assert!(matches!(
        buf.copy_from(&other),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        buf.slice(0..3).unwrap().cast::<u64>(),
        Err(Error::IncompatibleCast { .. })
    ));
    assert!(matches!(
        buf.slice(1..3).unwrap().cast::<u64>(),
        Err(Error::IncompatibleCast { .. })
    ));
    assert!(matches!(buf.resize(0), Err(Error::ZeroLength { .. })));
    assert!(matches!(ctx.alloc::<u32>(0), Err(Error::ZeroLength { .. })));
    assert!(matches!(
        ctx.alloc::<u64>(usize::MAX),
        Err(Error::SizeOverflow { .. })
    ));
    assert!(matches!(
        ctx.alloc::<u8>(usize::MAX),
        Err(Error::AllocationTooLarge { .. })
    ));
    assert!(matches!(
        buf.invalidate(Side::Host),
        Err(Error::Coherence(_))
    ));
    assert_eq!(
        buf.to_vec().unwrap(),
        data,
        "nothing above changed the data"
    );

    // After the context is closed the host data stays usable; device work is refused.
    let closing = mirrored(b);
    let mut kept = from_slice(&closing, &data);
    drop(closing);
    assert!(matches!(kept.device(), Err(Error::ContextClosed { .. })));
    assert!(matches!(
        kept.device_mut(),
        Err(Error::ContextClosed { .. })
    ));
    assert!(matches!(kept.sync(), Err(Error::ContextClosed { .. })));
    kept.write(0, &[5]).unwrap();
    assert_eq!(kept.host().unwrap()[0], 5);
    assert_eq!(&kept.to_vec().unwrap()[1..], &data[1..]);
}

common::backend_suite!(
    [
        host => crate::common::host(),
        opencl_dev0 => crate::common::opencl(0),
        wgpu => crate::common::wgpu(),
        cuda_dev0 => crate::common::cuda(0),
    ],
    [
        host_writes_are_seen_on_the_device,
        device_writes_are_seen_on_the_host,
        transfers_follow_the_table,
        valid_sides_need_no_transfer,
        syncs_move_only_dirty_ranges,
        resize_and_compact_keep_the_data,
        concurrent_readers_sync_once,
        bad_input_is_a_typed_error,
    ]
);

#[test]
fn shared_residency_never_transfers() {
    let backend: Arc<dyn Backend> = Arc::new(HostBackend::new());
    let ctx = BufferContext::new(backend.clone());
    let mut buf: UnifiedBuffer<u32> = ctx.alloc(256).unwrap();
    assert_eq!(buf.residency(), Residency::Shared);
    assert_eq!(buf.to_vec().unwrap(), vec![0; 256]);
    buf.host_mut().unwrap()[3] = 9;
    assert_eq!(
        device_contents(&backend, &buf)[3],
        9,
        "the device sees host writes at once"
    );
    device_write(&backend, &mut buf, &values(256, 1));
    assert_eq!(&*buf.host().unwrap(), &values(256, 1)[..]);
    buf.resize(300).unwrap();
    assert_eq!(&buf.to_vec().unwrap()[..256], &values(256, 1)[..]);
    assert_eq!(&buf.to_vec().unwrap()[256..], &[0; 44]);
    let m = buf.metrics();
    assert_eq!(
        (m.host_to_device.transfers, m.device_to_host.transfers),
        (0, 0)
    );
    assert_eq!(buf.state(), CoherenceState::Synchronized);
}

#[test]
fn shared_residency_needs_memory_the_host_addresses() {
    if let Some(b) = common::opencl(0) {
        let ctx = BufferContext::new(b.clone());
        match ctx.alloc_with::<u32>(16, Residency::Shared) {
            // Fine-grained SVM (PoCL has it): one allocation the host addresses.
            Ok(buf) if b.capabilities().shared_allocations => {
                assert_eq!(buf.residency(), Residency::Shared);
                assert!(buf.device().unwrap().block().shared_address().is_some());
            }
            Ok(_) => panic!("shared residency without shared allocations"),
            Err(e) => assert!(matches!(e, Error::Unsupported { .. }), "{e}"),
        }
        // Asked for nothing, a buffer keeps two copies.
        assert_eq!(
            ctx.alloc::<u32>(16).unwrap().residency(),
            Residency::Mirrored
        );
    }
    // An OpenCL pool cannot hold the host copies.
    if let Some(b) = common::opencl(0) {
        let device = CachingAllocator::new(Arc::new(HostBackend::new()));
        let host_copies = CachingAllocator::new(b);
        assert!(matches!(
            BufferContext::with_pools(device, host_copies),
            Err(Error::InvalidArgument(_))
        ));
    }
}

/// A failed device allocation leaves the host copy valid and the state unchanged.
#[test]
fn a_failed_sync_keeps_the_valid_copy() {
    let device: Arc<dyn Backend> = Arc::new(HostBackend::with_capacity(8192));
    let occupied = device.allocate(6000).unwrap();
    let ctx = BufferContext::new(device.clone());
    let data = values(1024, 3); // 4 KiB: the device cannot hold it
    let mut buf = ctx.alloc_with::<u32>(1024, Residency::Mirrored).unwrap();
    buf.host_discard().unwrap().copy_from_slice(&data);
    assert!(matches!(buf.device(), Err(Error::OutOfMemory { .. })));
    assert!(matches!(buf.sync(), Err(Error::OutOfMemory { .. })));
    assert_eq!(buf.state(), CoherenceState::HostOnly);
    assert_eq!(&*buf.host().unwrap(), &data[..]);
    device.release(occupied).unwrap();
    assert_eq!(
        device_contents(&device, &buf),
        data,
        "the sync succeeds once memory is free"
    );
}

#[test]
fn transfer_handles_are_futures() {
    use std::future::Future;
    use std::task::{Context, Poll, Wake, Waker};
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let ctx = BufferContext::new(Arc::new(HostBackend::new()));
    let buf = ctx.alloc_with::<u32>(8, Residency::Mirrored).unwrap();
    let waker = Waker::from(Arc::new(Noop));
    let mut handle = std::pin::pin!(buf.prefetch_to_device().unwrap());
    assert!(matches!(
        handle.as_mut().poll(&mut Context::from_waker(&waker)),
        Poll::Ready(Ok(()))
    ));
    assert!(buf.is_on_device());
}

/// Empty ranges give empty guards (an empty byte slice has no alignment to cast from).
#[test]
fn empty_ranges_give_empty_host_guards() {
    let ctx = BufferContext::new(Arc::new(HostBackend::new()));
    let mut buf = ctx.alloc_with::<u32>(64, Residency::Mirrored).unwrap();
    assert!(buf.host_mut_range(5..5).unwrap().is_empty());
    let mut view = buf.slice_mut(7..7).unwrap();
    assert!(view.host_mut().unwrap().is_empty());
    assert_eq!(buf.to_vec().unwrap(), vec![0; 64]);
}

#[test]
fn buffers_and_views_are_send_and_sync() {
    fn check<X: Send + Sync>() {}
    check::<UnifiedBuffer<f32>>();
    check::<hetmem::buffer::BufferView<'static, f32>>();
    check::<hetmem::buffer::BufferViewMut<'static, f32>>();
    check::<BufferContext>();
}
