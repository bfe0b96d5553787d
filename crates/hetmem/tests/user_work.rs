//! Unified buffers under the user's own device work: kernels enqueued through a device guard
//! and not waited for, work on queues of the user's own declared with `record`, asynchronous
//! syncs, and blocks going back to the pool while work on them is pending. The user's work
//! waits behind a gate (a user event), so only hetmem's ordering can make the results right.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{device_contents, Gate};
use hetmem::backend::{Backend, BackendKind, CopyRegion, DeviceBlock};
use hetmem::backend::{FaultKind, FaultOp, FaultyBackend};
use hetmem::buffer::CoherenceState;
use hetmem::transfer::{Strategy, TransferConfig};
use hetmem::{MemoryManager, UnifiedBuffer};

const GATE: Duration = Duration::from_millis(80);
/// The issue's buffer: 16 MiB of `u32`, four chunks with the default configuration.
const N: usize = 4 << 20;
const STRATEGIES: [Strategy; 5] = [
    Strategy::Auto,
    Strategy::Direct,
    Strategy::Chunked,
    Strategy::Pipelined,
    Strategy::Mapped,
];

fn manager(b: &Arc<dyn Backend>, strategy: Strategy) -> MemoryManager {
    MemoryManager::builder()
        .backend(b.clone())
        .transfers(TransferConfig {
            strategy,
            ..TransferConfig::default()
        })
        .build()
        .unwrap()
}

/// A buffer of `n` ones, valid on both sides.
fn ones(m: &MemoryManager, n: usize) -> UnifiedBuffer<u32> {
    let buf = m.from_slice(&vec![1u32; n]).unwrap();
    buf.prefetch_to_device().unwrap().wait().unwrap();
    buf
}

/// Fills the buffer's device copy with `value` through a device guard, behind a gate on the
/// buffer's queue, without waiting: as a kernel launch would. Returns the gate.
fn user_fill(b: &Arc<dyn Backend>, buf: &mut UnifiedBuffer<u32>, value: u32) -> Gate {
    let mut d = buf.device_mut().unwrap();
    let (q, off, len) = (d.queue().clone(), d.offset(), d.byte_len());
    let gate = Gate::close(b, &q, GATE);
    let _event = b
        .fill(&q, d.block_mut(), off, len, &value.to_ne_bytes())
        .unwrap();
    gate
}

/// The user's read of the buffer's whole device copy into a block of their own, queued on the
/// buffer's queue behind a gate: what it saw shows once the gate has opened.
fn gated_user_read(b: &Arc<dyn Backend>, buf: &UnifiedBuffer<u32>) -> (Gate, DeviceBlock) {
    let mut snapshot = b.allocate(buf.len() * 4).unwrap();
    let d = buf.device().unwrap();
    let q = d.queue().clone();
    let gate = Gate::close(b, &q, GATE);
    let _copy = b
        .copy(
            &q,
            d.block(),
            &mut snapshot,
            CopyRegion {
                src_offset: d.offset(),
                dst_offset: 0,
                len: d.byte_len(),
            },
        )
        .unwrap();
    (gate, snapshot)
}

/// The `u32`s of a whole block, read through the backend.
fn block_contents(b: &Arc<dyn Backend>, block: &DeviceBlock) -> Vec<u32> {
    let mut out = vec![0u32; block.size() / 4];
    b.read(
        b.default_queue(),
        block,
        0,
        bytemuck::cast_slice_mut(&mut out),
    )
    .unwrap();
    out
}

fn count_not(values: &[u32], value: u32) -> usize {
    values.iter().filter(|&&v| v != value).count()
}

/// The issue's reproduction, as written there: a fill not waited for, then `host()`.
fn the_issue_example_reads_the_users_fill(b: &Arc<dyn Backend>) {
    let m = MemoryManager::new(b.clone()).unwrap();
    let mut buf = m.from_slice(&vec![1u32; N]).unwrap();
    {
        let mut d = buf.device_mut().unwrap();
        let (q, off, len) = (d.queue().clone(), d.offset(), d.byte_len());
        let _ev = b
            .fill(&q, d.block_mut(), off, len, &7u32.to_ne_bytes())
            .unwrap();
    }
    assert_eq!(count_not(&buf.host().unwrap(), 7), 0);
}

/// Every way of reading a buffer whose device copy a user kernel is still writing, under
/// every strategy: the reader waits for the kernel and sees all of it, and the buffer stays
/// right afterwards (`compact` keeps the good copy).
fn every_read_path_waits_for_the_users_kernel(b: &Arc<dyn Backend>) {
    type Path = fn(&UnifiedBuffer<u32>, &Gate, bool) -> Vec<u32>;
    let paths: [(&str, Path); 6] = [
        ("host", |buf, _, _| buf.host().unwrap().to_vec()),
        ("to_vec", |buf, _, _| buf.to_vec().unwrap()),
        ("read", |buf, _, _| {
            let mut out = vec![0u32; buf.len()];
            buf.read(0, &mut out).unwrap();
            out
        }),
        ("sync", |buf, _, _| {
            buf.sync().unwrap().wait().unwrap();
            buf.host().unwrap().to_vec()
        }),
        (
            "prefetch_to_host, then host() meanwhile",
            |buf, gate, asynchronous| {
                let handle = buf.prefetch_to_host().unwrap();
                let returned_open = gate.is_open();
                let seen = buf.host().unwrap().to_vec();
                handle.wait().unwrap();
                if asynchronous {
                    assert!(!returned_open, "prefetch_to_host waited for the transfer");
                }
                seen
            },
        ),
        ("prefetch_to_host, handle dropped", |buf, _, _| {
            drop(buf.prefetch_to_host().unwrap());
            buf.to_vec().unwrap()
        }),
    ];
    for strategy in STRATEGIES {
        let m = manager(b, strategy);
        for (name, path) in paths {
            let mut buf = ones(&m, N);
            let gate = user_fill(b, &mut buf, 7);
            let seen = gate.after(|| path(&buf, &gate, asynchronous(b)));
            let what = format!("{strategy:?}, {name}");
            assert_eq!(count_not(&seen, 7), 0, "{what}: stale elements");
            buf.compact().unwrap();
            assert_eq!(
                count_not(&buf.to_vec().unwrap(), 7),
                0,
                "{what}: after compact"
            );
        }
    }
}

/// An upload never overtakes a user's read still queued on the buffer's queue: the user's
/// copy of the device block sees the old contents, the device then the new.
fn uploads_wait_for_the_users_reads(b: &Arc<dyn Backend>) {
    for strategy in STRATEGIES {
        let m = manager(b, strategy);
        let mut buf = ones(&m, N);
        let (gate, snapshot) = gated_user_read(b, &buf);
        buf.host_mut().unwrap().fill(2);
        gate.after(|| buf.prefetch_to_device().unwrap().wait().unwrap());
        let seen = block_contents(b, &snapshot);
        assert_eq!(
            count_not(&seen, 1),
            0,
            "{strategy:?}: the user's copy saw the upload"
        );
        let now = device_contents(b, &buf);
        assert_eq!(count_not(&now, 2), 0, "{strategy:?}: the upload arrived");
        b.release(snapshot).unwrap();
    }
}

/// Who holds the device guard whose work is still pending when the buffer lets go.
#[derive(Debug, Clone, Copy)]
enum Holder {
    /// The buffer's own guard, work on the buffer's queue.
    Buffer,
    /// A view's guard, work on the buffer's queue.
    View,
    /// The buffer's guard, work on the user's own queue, declared with `record`.
    Recorded,
}

/// A block with a user kernel still writing it is not handed to anyone else until the kernel
/// is done: not by the pool, not to a new buffer.
fn blocks_with_pending_work_are_not_reused(b: &Arc<dyn Backend>) {
    let m = MemoryManager::new(b.clone()).unwrap();
    let n = 1 << 18;
    let (own, mine) = (b.create_queue().unwrap(), b.create_queue().unwrap());
    for holder in [Holder::Buffer, Holder::View, Holder::Recorded] {
        let mut buf = ones(&m, n);
        let (handle, gate) = match holder {
            Holder::Buffer => {
                let handle = buf.device().unwrap().block().raw_handle();
                (handle, user_fill(b, &mut buf, 7))
            }
            Holder::View => {
                let mut view = buf.slice_mut(n / 4..n / 2).unwrap();
                let mut d = view.device_mut().unwrap();
                let (q, off, len) = (d.queue().clone(), d.offset(), d.byte_len());
                let gate = Gate::close(b, &q, GATE);
                let _ = b
                    .fill(&q, d.block_mut(), off, len, &7u32.to_ne_bytes())
                    .unwrap();
                (d.block().raw_handle(), gate)
            }
            Holder::Recorded => {
                let mut d = buf.device_mut().unwrap();
                let (off, len) = (d.offset(), d.byte_len());
                let gate = Gate::close(b, &own, GATE);
                let event = b
                    .fill(&own, d.block_mut(), off, len, &7u32.to_ne_bytes())
                    .unwrap();
                d.record(&event).unwrap();
                (d.block().raw_handle(), gate)
            }
        };
        drop(buf);
        let mut again = m.context().device_pool().allocate(n * 4).unwrap();
        let closed = !gate.is_open();
        // wgpu's handles are boxes, whose addresses a later block may reuse; the others'
        // name the memory itself.
        if closed && b.info().kind != BackendKind::Wgpu {
            assert_ne!(
                again.block().raw_handle(),
                handle,
                "{holder:?}: the pool handed out a block a kernel is still writing"
            );
        }
        // Marked at once: a kernel still writing the block would overwrite the mark.
        let mark = vec![0xABu8; n * 4];
        b.write(&mine, again.block_mut(), 0, &mark).unwrap();
        let other = ones(&m, n);
        drop(gate);
        b.synchronize().unwrap();
        if closed {
            let mut seen = vec![0u8; n * 4];
            b.read(&mine, again.block(), 0, &mut seen).unwrap();
            assert!(
                seen == mark,
                "{holder:?}: the pool handed out a block a kernel was still writing"
            );
        }
        drop(again);
        assert_eq!(count_not(&other.to_vec().unwrap(), 1), 0, "{holder:?}");
        let now = device_contents(b, &other);
        assert_eq!(
            count_not(&now, 1),
            0,
            "{holder:?}: the new buffer's device copy"
        );
    }
}

/// `record`: a kernel on the user's own queue, declared on the guard, is waited for by the
/// buffer's next transfer.
fn recorded_work_orders_the_next_transfer(b: &Arc<dyn Backend>) {
    let m = MemoryManager::new(b.clone()).unwrap();
    let own = b.create_queue().unwrap();
    let mut buf = ones(&m, N);
    let gate = {
        let mut d = buf.device_mut().unwrap();
        let (off, len) = (d.offset(), d.byte_len());
        let gate = Gate::close(b, &own, GATE);
        let event = b
            .fill(&own, d.block_mut(), off, len, &9u32.to_ne_bytes())
            .unwrap();
        d.record(&event).unwrap();
        gate
    };
    let seen = gate.after(|| buf.to_vec().unwrap());
    assert_eq!(count_not(&seen, 9), 0);
}

/// Prefetches return while the transfer waits behind the user's kernel; the state says so
/// until it is done, then takes it in.
fn prefetches_return_before_the_work_they_wait_for(b: &Arc<dyn Backend>) {
    let m = MemoryManager::new(b.clone()).unwrap();
    let mut buf = ones(&m, N);
    let gate = user_fill(b, &mut buf, 5);
    let handle = buf.prefetch_to_host().unwrap();
    if asynchronous(b) {
        assert_eq!(
            buf.state(),
            CoherenceState::DeviceDirty,
            "until the transfer is done"
        );
        assert!(
            !gate.is_open(),
            "the prefetch returned only after the gate opened"
        );
        assert!(!handle.is_finished());
        assert!(
            !buf.is_on_host(),
            "the host copy is not valid before the transfer is done"
        );
    }
    handle.wait().unwrap();
    // Reading waits for the user's fill: behind the gate on every backend.
    assert_eq!(count_not(&buf.host().unwrap(), 5), 0);
    assert!(gate.is_open());
    assert_eq!(buf.state(), CoherenceState::Synchronized);
    // A dropped handle: the next mutable use takes the transfer in.
    buf.host_mut().unwrap().fill(3);
    drop(buf.prefetch_to_device().unwrap());
    buf.write(0, &[4]).unwrap();
    let mut expect = vec![3u32; N];
    expect[0] = 4;
    assert_eq!(buf.to_vec().unwrap(), expect);
}

/// Owned asynchronous transfers keep their host memory until the device is done.
fn owned_async_transfers(b: &Arc<dyn Backend>) {
    let m = MemoryManager::new(b.clone()).unwrap();
    let mut buf = ones(&m, N);
    // The user's read of the device copy, still queued behind a gate.
    let (gate, snapshot) = gated_user_read(b, &buf);
    let data: Vec<u32> = (0..1000).collect();
    let write = buf.write_async(10, data.clone()).unwrap();
    if asynchronous(b) {
        assert!(!gate.is_open(), "write_async waited for the device");
        assert!(!write.is_finished());
    }
    let back = write.wait().unwrap();
    assert_eq!(back, data, "the handle gives the data back");
    assert!(gate.is_open());
    let seen = block_contents(b, &snapshot);
    assert_eq!(
        count_not(&seen, 1),
        0,
        "the user's read came before the write"
    );
    let got = buf.read_async(5..1015).unwrap().wait().unwrap();
    assert_eq!(got[..5], [1; 5]);
    assert_eq!(got[5..1005], data[..]);
    assert_eq!(got[1005..], [1; 5]);
    let mut expect = vec![1u32; N];
    expect[10..1010].copy_from_slice(&data);
    assert_eq!(buf.to_vec().unwrap(), expect);
    assert_eq!(device_contents(b, &buf), expect);
    assert!(buf.read_async(N - 1..N + 1).is_err(), "out of range");
    assert!(buf.write_async(N - 1, vec![1, 2]).is_err(), "out of range");
    assert_eq!(
        buf.to_vec().unwrap(),
        expect,
        "a refused transfer changes nothing"
    );
    b.release(snapshot).unwrap();
}

/// Makes the next call of each of `ops` fail permanently.
fn fail_next(faulty: &FaultyBackend, ops: &[FaultOp]) {
    for &op in ops {
        faulty.fail(op, faulty.calls(op), FaultKind::Permanent);
    }
}

const WRITES: [FaultOp; 4] = [
    FaultOp::Write,
    FaultOp::WriteParts,
    FaultOp::WriteStaged,
    FaultOp::Mapped,
];
const READS: [FaultOp; 4] = [
    FaultOp::Read,
    FaultOp::ReadParts,
    FaultOp::ReadStaged,
    FaultOp::Mapped,
];

/// A failed asynchronous transfer leaves the valid side valid, the handle reports the
/// failure, and the next use transfers again.
fn failed_async_transfers_keep_valid_data(b: &Arc<dyn Backend>) {
    let faulty = Arc::new(FaultyBackend::new(b.clone()));
    let m = MemoryManager::new(faulty.clone()).unwrap();
    let n = 1 << 20;
    let expect: Vec<u32> = (0..n as u32).collect();

    // A sync that fails: the device copy stays stale, the host copy valid.
    let buf = m.from_slice(&expect).unwrap();
    fail_next(&faulty, &WRITES);
    let outcome = buf.sync().unwrap().wait();
    faulty.clear();
    if asynchronous(b) {
        assert!(outcome.is_err(), "the handle reports the failure");
        assert_eq!(buf.state(), CoherenceState::HostOnly);
    }
    assert_eq!(buf.to_vec().unwrap(), expect);
    buf.prefetch_to_device().unwrap().wait().unwrap();
    assert_eq!(buf.state(), CoherenceState::Synchronized);
    let mut buf = buf;

    // An owned write that fails on a synchronized buffer: the host copy keeps the old data
    // and the device copy goes stale over the range.
    fail_next(&faulty, &WRITES);
    let failed = buf.write_async(100, vec![7u32; 1000]).unwrap().wait();
    faulty.clear();
    if asynchronous(b) {
        assert!(failed.is_err());
        assert_eq!(buf.state(), CoherenceState::HostDirty);
    }
    if failed.is_err() {
        assert_eq!(buf.to_vec().unwrap(), expect, "the old data is intact");
        let d = buf.device().unwrap();
        let mut now = vec![0u32; n];
        faulty
            .read(
                d.queue(),
                d.block(),
                d.offset(),
                bytemuck::cast_slice_mut(&mut now),
            )
            .unwrap();
        assert_eq!(now, expect, "the stale range was uploaded again");
    }

    // A prefetch to the host that fails: the device copy stays the only valid one.
    let mut dev = m.alloc::<u32>(n).unwrap();
    dev.device_discard().unwrap();
    dev.write(0, &expect).unwrap();
    fail_next(&faulty, &READS);
    let outcome = dev.prefetch_to_host().unwrap().wait();
    faulty.clear();
    if asynchronous(b) {
        assert!(outcome.is_err());
        assert!(!dev.is_on_host());
    }
    assert_eq!(dev.to_vec().unwrap(), expect);
    assert_eq!(dev.host().unwrap().to_vec(), expect);
}

/// Whether syncs run in the background on `b` (not on the host backend, whose every call is
/// a `memcpy` on the caller's thread).
fn asynchronous(b: &Arc<dyn Backend>) -> bool {
    let caps = b.capabilities();
    caps.async_copies && !caps.host_addressable
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
        the_issue_example_reads_the_users_fill,
        every_read_path_waits_for_the_users_kernel,
        uploads_wait_for_the_users_reads,
        blocks_with_pending_work_are_not_reused,
        recorded_work_orders_the_next_transfer,
        prefetches_return_before_the_work_they_wait_for,
        owned_async_transfers,
        failed_async_transfers_keep_valid_data,
    ]
);
