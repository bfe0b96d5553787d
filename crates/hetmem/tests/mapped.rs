//! Mapped and shared device memory on every backend present: map guards on buffers (read,
//! write, write-discard) and the backend's `map`/`unmap`, ordered after the user's gated work;
//! `Placement::Shared` over shared allocations (OpenCL fine-grained SVM, CUDA managed memory)
//! kept as one copy, with host access waiting for the user's kernels.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::buffers::{from_slice, mirrored, values};
use common::{device_contents, Gate};
use hetmem::backend::{
    Backend, FaultKind, FaultOp, FaultyBackend, HostBackend, MapMode, MigrateTo,
};
use hetmem::buffer::{CoherenceState, Residency};
use hetmem::transfer::{Strategy, TransferConfig};
use hetmem::{AllocOptions, Error, MemoryManager, Placement, UnifiedBuffer};

const GATE: Duration = Duration::from_millis(80);
const N: usize = 1 << 16;

/// Whether buffers on `b` can be mapped (host memory, or a device with mapped access).
fn maps(b: &Arc<dyn Backend>) -> bool {
    let caps = b.capabilities();
    caps.mapped_access || caps.host_addressable
}

/// Read, write and write-discard guards over a whole buffer and a view: each sees the device
/// copy, and what it writes is the device's once it drops, the host copy following.
fn map_guards_read_and_write_the_device_copy(b: &Arc<dyn Backend>) {
    let ctx = mirrored(b);
    let mut expect = values(N, 3);
    let mut buf = from_slice(&ctx, &expect);
    if !maps(b) {
        let err = buf.map_read().unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err}");
        assert_eq!(
            buf.to_vec().unwrap(),
            expect,
            "a refused map changes nothing"
        );
        return;
    }
    // Reading uploads first and changes no state.
    assert_eq!(&*buf.map_read().unwrap(), &expect[..]);
    assert_eq!(buf.state(), CoherenceState::Synchronized);

    // Writing: the device holds it, the host copy goes stale and follows on demand.
    {
        let mut m = buf.map_write().unwrap();
        assert_eq!(&*m, &expect[..], "a write mapping starts from the contents");
        for (i, x) in m.iter_mut().enumerate().step_by(7) {
            *x = i as u32;
        }
    }
    for (i, x) in expect.iter_mut().enumerate().step_by(7) {
        *x = i as u32;
    }
    assert_eq!(buf.state(), CoherenceState::DeviceDirty);
    assert_eq!(device_contents(b, &buf), expect);
    assert_eq!(&*buf.host().unwrap(), &expect[..]);

    // A view maps only its range; explicit unmap reports success.
    {
        let mut view = buf.slice_mut(100..200).unwrap();
        let mut m = view.map_discard().unwrap();
        assert_eq!(m.len(), 100);
        m.fill(0xDEAD_BEEF);
        m.unmap().unwrap();
    }
    expect[100..200].fill(0xDEAD_BEEF);
    assert_eq!(device_contents(b, &buf), expect);
    assert_eq!(buf.to_vec().unwrap(), expect);

    // Write-discard of the whole buffer needs no upload of stale host data.
    buf.host_mut().unwrap().fill(5);
    buf.map_discard().unwrap().fill(9);
    assert_eq!(buf.to_vec().unwrap(), vec![9; N]);
    assert_eq!(device_contents(b, &buf), vec![9; N]);
}

/// Every transfer plan the device copy can be made valid by ends in the same mapped bytes.
fn maps_after_every_transfer_plan(b: &Arc<dyn Backend>) {
    if !maps(b) {
        return;
    }
    for strategy in [
        Strategy::Auto,
        Strategy::Direct,
        Strategy::Chunked,
        Strategy::Pipelined,
        Strategy::Mapped,
    ] {
        let m = MemoryManager::builder()
            .backend(b.clone())
            .transfers(TransferConfig {
                strategy,
                chunk_size: 64 << 10,
                ..TransferConfig::default()
            })
            .build()
            .unwrap();
        let data = values(1 << 20, format!("{strategy:?}").len() as u32);
        let mut buf = m
            .from_slice_with(&data, AllocOptions::new().placement(Placement::Host))
            .unwrap();
        assert_eq!(&*buf.map_read().unwrap(), &data[..], "{strategy:?}");
        buf.map_write().unwrap()[12345] = 7;
        let mut expect = data;
        expect[12345] = 7;
        assert_eq!(buf.to_vec().unwrap(), expect, "{strategy:?}: download");
    }
}

/// A map waits for the user's kernel still queued behind a gate on the buffer's queue, and the
/// user's work enqueued after the unmap sees what the mapping wrote.
fn maps_are_ordered_with_the_users_work(b: &Arc<dyn Backend>) {
    if !maps(b) {
        return;
    }
    let ctx = mirrored(b);
    for mode in [MapMode::Read, MapMode::Write] {
        let mut buf = from_slice(&ctx, &vec![1u32; N]);
        buf.sync().unwrap().wait().unwrap();
        let gate = {
            let mut d = buf.device_mut().unwrap();
            let (q, off, len) = (d.queue().clone(), d.offset(), d.byte_len());
            let gate = Gate::close(b, &q, GATE);
            let _fill = b.fill(&q, d.block_mut(), off, len, &7u32.to_ne_bytes());
            gate
        };
        let seen = gate.after(|| match mode {
            MapMode::Read => buf.map_read().unwrap().to_vec(),
            _ => {
                let mut m = buf.map_write().unwrap();
                let seen = m.to_vec();
                m.fill(8);
                seen
            }
        });
        assert_eq!(seen, vec![7; N], "{mode:?}: the map saw the user's fill");
        // The user's copy of the block, enqueued after the unmap, sees the mapping's writes.
        let expected = if mode == MapMode::Read { 7 } else { 8 };
        assert_eq!(device_contents(b, &buf), vec![expected; N], "{mode:?}");
        assert_eq!(buf.to_vec().unwrap(), vec![expected; N], "{mode:?}");
    }
}

/// A failed map (injected) is a typed error that leaves the buffer as it was; the next map
/// works.
fn a_failed_map_keeps_the_data(b: &Arc<dyn Backend>) {
    let faulty = Arc::new(FaultyBackend::new(b.clone()));
    let caps = faulty.capabilities();
    if !caps.mapped_access || caps.host_addressable {
        return; // host memory maps in place, with no call to fail
    }
    let dyn_faulty: Arc<dyn Backend> = faulty.clone();
    let ctx = mirrored(&dyn_faulty);
    let data = values(N, 11);
    let mut buf = from_slice(&ctx, &data);
    buf.sync().unwrap().wait().unwrap();
    let next = faulty.calls(FaultOp::Mapped);
    faulty.fail(FaultOp::Mapped, next, FaultKind::Permanent);
    assert!(buf.map_write().is_err());
    assert_eq!(buf.to_vec().unwrap(), data, "nothing lost");
    assert_eq!(&*buf.map_read().unwrap(), &data[..]);
}

/// The backend's own `map`/`unmap`: a second mapping of one block waits for the first to end
/// (PoCL mis-serves two at once), while two blocks map at once from one thread.
fn backend_maps_serialise_per_block(b: &Arc<dyn Backend>) {
    if !b.capabilities().mapped_access || b.capabilities().host_addressable {
        return;
    }
    let q = b.default_queue();
    let mut x = b.allocate(4096).unwrap();
    let mut y = b.allocate(4096).unwrap();
    b.write(q, &mut x, 0, &[1; 4096]).unwrap();
    b.write(q, &mut y, 0, &[2; 4096]).unwrap();
    let px = b.map(q, &x, 0, 4096, MapMode::Read).unwrap();
    let py = b.map(q, &y, 0, 4096, MapMode::Read).unwrap();
    let unmapped = AtomicBool::new(false);
    std::thread::scope(|s| {
        let second = s.spawn(|| {
            let p = b.map(q, &x, 0, 16, MapMode::Read).unwrap();
            let waited = unmapped.load(Ordering::SeqCst);
            b.unmap(q, &x, p).unwrap();
            waited
        });
        std::thread::sleep(Duration::from_millis(50));
        unmapped.store(true, Ordering::SeqCst);
        b.unmap(q, &x, px).unwrap();
        assert!(second.join().unwrap(), "the second map did not wait");
    });
    b.unmap(q, &y, py).unwrap();
    // Bad input is typed.
    assert!(matches!(
        b.map(q, &x, 4000, 100, MapMode::Read),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        b.map(q, &x, 0, 0, MapMode::Read),
        Err(Error::ZeroLength { .. })
    ));
    let host: Arc<dyn Backend> = Arc::new(HostBackend::new());
    assert!(matches!(
        b.map(host.default_queue(), &x, 0, 16, MapMode::Read),
        Err(Error::ForeignHandle { .. })
    ));
    assert!(matches!(
        host.map(host.default_queue(), &x, 0, 16, MapMode::Read),
        Err(Error::ForeignHandle { .. })
    ));
    b.release(x).unwrap();
    b.release(y).unwrap();
}

/// A shared allocation is device memory the host reaches in place: what the host writes, a
/// device read sees, and the other way round; `migrate` is a hint; everything is counted.
fn shared_allocations_are_one_copy(b: &Arc<dyn Backend>) {
    if !b.capabilities().shared_allocations {
        let err = b.allocate_shared(4096).unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err}");
        return;
    }
    let before = b.usage().live_bytes;
    let q = b.default_queue();
    let mut block = b.allocate_shared(1 << 20).unwrap();
    assert!(block.shared_address().is_some());
    assert_eq!(b.usage().live_bytes, before + (1 << 20));
    let bytes = b.host_bytes_mut(&mut block).unwrap();
    assert!(bytes.iter().all(|&x| x == 0), "starts zeroed");
    bytes[..4].copy_from_slice(&[1, 2, 3, 4]);
    let mut seen = [0u8; 4];
    b.read(q, &block, 0, &mut seen).unwrap();
    assert_eq!(seen, [1, 2, 3, 4], "the device sees the host's writes");
    b.fill(q, &mut block, 4096, 4096, &[0xAB])
        .unwrap()
        .wait()
        .unwrap();
    assert!(b.host_bytes(&block).unwrap()[4096..8192]
        .iter()
        .all(|&x| x == 0xAB));
    b.migrate(q, &block, MigrateTo::Device).unwrap();
    b.migrate(q, &block, MigrateTo::Host).unwrap();
    // Mapping a shared block is its own address, no driver map.
    let mapped = b.map(q, &block, 8, 8, MapMode::Read).unwrap();
    assert_eq!(mapped, block.shared_address().unwrap().wrapping_add(8));
    b.unmap(q, &block, mapped).unwrap();
    b.release(block).unwrap();
    assert_eq!(b.usage().live_bytes, before);

    let ordinary = b.allocate(64).unwrap();
    assert!(matches!(
        b.migrate(q, &ordinary, MigrateTo::Host),
        Err(Error::InvalidArgument(_))
    ));
    b.release(ordinary).unwrap();
    assert!(matches!(
        b.allocate_shared(0),
        Err(Error::ZeroLength { .. })
    ));
}

/// `Placement::Shared` where the device allocates shared memory: one copy, never a transfer,
/// host access waiting for the user's gated kernel, resize keeping the prefix, and the memory
/// given back when the buffer drops.
fn shared_placement_keeps_one_copy(b: &Arc<dyn Backend>) {
    let caps = b.capabilities();
    let m = MemoryManager::new(b.clone()).unwrap();
    let shared = AllocOptions::new().placement(Placement::Shared);
    if !caps.shared_allocations && !caps.host_addressable {
        assert!(m.alloc_with::<u32>(N, shared).is_err());
        return;
    }
    let before = b.usage().live_bytes;
    let data = values(N, 5);
    let mut buf: UnifiedBuffer<u32> = m.from_slice_with(&data, shared.clone()).unwrap();
    assert_eq!(buf.residency(), Residency::Shared);
    assert_eq!(
        device_contents(b, &buf),
        data,
        "the device reads the host's writes"
    );
    if caps.shared_allocations {
        let d = buf.device().unwrap();
        assert!(d.block().shared_address().is_some());
    }

    // The user's kernel, gated on the buffer's queue: host access waits for it.
    let gate = {
        let mut d = buf.device_mut().unwrap();
        let (q, off, len) = (d.queue().clone(), d.offset(), d.byte_len());
        let gate = Gate::close(b, &q, GATE);
        let _fill = b.fill(&q, d.block_mut(), off, len, &7u32.to_ne_bytes());
        gate
    };
    let seen = gate.after(|| buf.host().unwrap().to_vec());
    assert_eq!(seen, vec![7; N]);
    let gate = {
        let mut d = buf.device_mut().unwrap();
        let (q, off) = (d.queue().clone(), d.offset());
        let gate = Gate::close(b, &q, GATE);
        let _fill = b.fill(&q, d.block_mut(), off, 64, &8u32.to_ne_bytes());
        gate
    };
    let first = gate.after(|| buf.map_read().unwrap()[..16].to_vec());
    assert_eq!(first, vec![8; 16], "a map waits for it too");

    let stats = buf.metrics();
    assert_eq!(
        stats.host_to_device.bytes + stats.device_to_host.bytes,
        0,
        "nothing was transferred"
    );
    buf.resize(2 * N).unwrap();
    let now = buf.to_vec().unwrap();
    assert_eq!(&now[..16], &[8; 16]);
    assert!(now[16..N].iter().all(|&x| x == 7));
    assert!(
        now[N..].iter().all(|&x| x == 0),
        "new elements read as zeros"
    );
    drop(buf);
    if caps.shared_allocations {
        // Shared allocations are cached apart from device blocks: the next buffer of that
        // size reuses the block, and trimming gives it back.
        // A block is reused once the work recorded on it (a marker of the buffer's queue,
        // from the device guards above) is done.
        b.synchronize().unwrap();
        let pooled = m.stats().shared;
        // The block from before the resize and the one after.
        assert_eq!(pooled.bytes_cached, (3 * N * 4) as u64);
        let again: UnifiedBuffer<u32> = m.alloc_with(2 * N, shared).unwrap();
        assert_eq!(again.to_vec().unwrap(), vec![0; 2 * N], "zeroed again");
        let reused = m.stats().shared;
        assert_eq!(reused.hits, pooled.hits + 1);
        assert_eq!(reused.backend_allocations, pooled.backend_allocations);
        assert!(m.summary().contains("shared pool"));
        drop(again);
    }
    m.trim().unwrap();
    assert_eq!(b.usage().live_bytes, before, "the shared memory went back");
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
        map_guards_read_and_write_the_device_copy,
        maps_after_every_transfer_plan,
        maps_are_ordered_with_the_users_work,
        a_failed_map_keeps_the_data,
        backend_maps_serialise_per_block,
        shared_allocations_are_one_copy,
        shared_placement_keeps_one_copy,
    ]
);
