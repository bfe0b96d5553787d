//! A failed operation leaves valid data valid: each side is either valid with its old contents
//! or marked stale over the range the operation attempted — never "valid" with wrong bytes, and
//! the only good copy is never dropped. Faults are injected part-way by `FaultyBackend` over a
//! real backend.

mod common;

use std::sync::Arc;

use common::device_contents;
use hetmem::backend::Backend;
use hetmem::backend::{FaultKind, FaultOp, FaultyBackend};
use hetmem::buffer::{BufferContext, CoherenceState, Residency, UnifiedBuffer};

const N: usize = 4096;

fn context(faulty: &Arc<FaultyBackend>) -> BufferContext {
    BufferContext::new(faulty.clone())
}

fn filled(ctx: &BufferContext, value: u32) -> UnifiedBuffer<u32> {
    let mut buf = ctx.alloc_with::<u32>(N, Residency::Mirrored).unwrap();
    buf.host_discard().unwrap().fill(value);
    buf
}

fn fail_next(faulty: &FaultyBackend, op: FaultOp) {
    faulty.fail(op, faulty.calls(op), FaultKind::Permanent);
}

/// What the buffer reads now equals what it reads once its device copy is dropped: both
/// copies agree wherever both claim to be valid.
fn consistent(buf: &mut UnifiedBuffer<u32>) -> Vec<u32> {
    let seen = buf.to_vec().unwrap();
    let host = buf.host().unwrap().to_vec();
    buf.compact().unwrap();
    assert_eq!(seen, host);
    assert_eq!(buf.to_vec().unwrap(), seen, "the copies disagreed");
    seen
}

/// The case: `dst` valid only on the host, a device-to-device copy into it fails.
fn failed_copy_keeps_the_only_valid_copy(b: &Arc<dyn Backend>) {
    let faulty = Arc::new(FaultyBackend::new(b.clone()));
    let ctx = context(&faulty);
    let mut dst = filled(&ctx, 7);
    let src = filled(&ctx, 9);
    src.prefetch_to_device().unwrap().wait().unwrap();
    fail_next(&faulty, FaultOp::Copy);
    assert!(dst.copy_from(&src).is_err());
    assert_eq!(dst.state(), CoherenceState::HostOnly);
    assert_eq!(dst.to_vec().unwrap(), vec![7; N]);
    // And when both copies were valid: the device copy goes stale over the copied range.
    dst.prefetch_to_device().unwrap().wait().unwrap();
    fail_next(&faulty, FaultOp::Copy);
    assert!(dst.copy_from(&src).is_err());
    assert_eq!(dst.state(), CoherenceState::HostDirty);
    assert_eq!(device_contents(b, &dst), vec![7; N], "re-uploaded");
    assert_eq!(consistent(&mut dst), vec![7; N]);
    // Nothing is left broken: the next copy succeeds.
    dst.copy_from(&src).unwrap();
    assert_eq!(dst.to_vec().unwrap(), vec![9; N]);
}

/// A `DeviceDirty` buffer (the device newer over a range) whose direct device write or fill
/// fails half-way: the copies agree afterwards, and outside the range only the device held,
/// the old contents survive.
fn failed_device_writes_leave_the_copies_agreeing(b: &Arc<dyn Backend>) {
    for op in [FaultOp::Write, FaultOp::Fill] {
        let faulty = Arc::new(FaultyBackend::new(b.clone()));
        let ctx = context(&faulty);
        let mut buf = filled(&ctx, 9);
        buf.prefetch_to_device().unwrap().wait().unwrap();
        {
            let mut head = buf.slice_mut(0..16).unwrap();
            let mut d = head.device_mut().unwrap();
            let (q, off, len) = (d.queue().clone(), d.offset(), d.byte_len());
            b.write(&q, d.block_mut(), off, &vec![5u8; len]).unwrap();
        }
        assert_eq!(buf.state(), CoherenceState::DeviceDirty);
        let fives = u32::from_ne_bytes([5; 4]);
        fail_next(&faulty, op);
        let outcome = match op {
            FaultOp::Write => buf.write(0, &[1; N]),
            _ => buf.fill(1, ..),
        };
        assert!(outcome.is_err(), "{op:?}");
        let seen = consistent(&mut buf);
        assert!(
            seen[16..].iter().all(|&v| v == 9),
            "{op:?}: the old contents outside the range only the device held"
        );
        assert!(
            seen[..16].iter().all(|&v| v == 1 || v == fives),
            "{op:?}: only the device held these: what the write left"
        );
    }
}

/// A fill of a buffer whose device copy is the only valid one fails half-way: no other copy
/// existed, so the range holds what the fill left — the same on both sides.
fn failed_fill_of_the_only_valid_copy(b: &Arc<dyn Backend>) {
    let faulty = Arc::new(FaultyBackend::new(b.clone()));
    let ctx = context(&faulty);
    let mut buf = filled(&ctx, 3);
    buf.device_discard().unwrap(); // the device copy is the only valid one
    buf.write(0, &[4; N]).unwrap(); // straight to the device
    assert_eq!(buf.state(), CoherenceState::DeviceDirty);
    fail_next(&faulty, FaultOp::Fill);
    assert!(buf.fill(8, ..).is_err());
    // The range is unspecified, but the buffer reads one way only.
    let seen = consistent(&mut buf);
    assert!(seen.iter().all(|&v| v == 4 || v == 8));
}

common::backend_suite!(
    [
        host => crate::common::host(),
        opencl_dev0 => crate::common::opencl(0),
        wgpu => crate::common::wgpu(),
        cuda_dev0 => crate::common::cuda(0),
    ],
    [
        failed_copy_keeps_the_only_valid_copy,
        failed_device_writes_leave_the_copies_agreeing,
        failed_fill_of_the_only_valid_copy,
    ]
);
