//! [`FaultyBackend`]: a wrapper that makes chosen calls of a real backend fail, for testing and
//! benchmarking the recovery paths. Every [`Backend`] method is forwarded — the defaulted ones
//! too, so the wrapped backend's own scattered, mapped and peer paths stay in use — and the data
//! path stays real.

use crate::sync::Unpoison;
use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::raw::{unsupported, RawBackend};
use super::{
    Backend, BackendId, BackendKind, Capabilities, CopyRegion, DeviceBlock, DeviceInfo, Event,
    Failures, MapMode, MigrateTo, PartFailures, Queue, ReadPart, StagingBuffer, UsageCounters,
    UserEvent, WritePart,
};
use crate::error::{BackendError, Error, Result};

/// The calls a fault can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultOp {
    /// [`Backend::allocate`], [`Backend::allocate_shared`] and [`Backend::commit`].
    Allocate,
    /// [`Backend::write`] (fails after writing the first half of the bytes, as a real
    /// interrupted transfer may).
    Write,
    /// [`Backend::read`] (fails after reading the first half).
    Read,
    /// [`Backend::write_staged`].
    WriteStaged,
    /// [`Backend::read_staged`].
    ReadStaged,
    /// [`Backend::copy`].
    Copy,
    /// [`Backend::map`], and so [`Backend::write_mapped`] and [`Backend::read_mapped`] (fail
    /// before mapping).
    Mapped,
    /// [`Backend::fill`] (fails after filling the first half, rounded to the pattern).
    Fill,
    /// [`Backend::write_parts`] (the first half of the parts arrive, the rest fail).
    WriteParts,
    /// [`Backend::read_parts`] (the first half of the parts arrive, the rest fail).
    ReadParts,
    /// [`Backend::copy_to_peer`] through a driver peer path (fails before copying); copies
    /// between host-addressable backends are the checked layer's `memcpy` and see no fault.
    Peer,
}

impl FaultOp {
    /// Every injectable call.
    pub const ALL: [FaultOp; 11] = [
        FaultOp::Allocate,
        FaultOp::Write,
        FaultOp::Read,
        FaultOp::WriteStaged,
        FaultOp::ReadStaged,
        FaultOp::Copy,
        FaultOp::Mapped,
        FaultOp::Fill,
        FaultOp::WriteParts,
        FaultOp::ReadParts,
        FaultOp::Peer,
    ];
}

/// Whether an injected failure may succeed when retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// `Error::is_retryable()` is true.
    Transient,
    /// `Error::is_retryable()` is false.
    Permanent,
    /// No error: the call succeeds but the data arrives with its first byte changed (for
    /// [`FaultOp::Write`] and [`FaultOp::Read`]; elsewhere it acts as `Transient`).
    Corrupt,
    /// [`Error::OutOfMemory`] (retryable, as a real one is): drives the pools' and the
    /// manager's out-of-memory recovery on any backend.
    OutOfMemory,
}

/// A backend whose `n`-th call of an operation fails (counting from 0, per operation).
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    /// `inner`'s, read once: `info()` may query the driver or the OS.
    max_allocation: u64,
    alignment: usize,
    kind: BackendKind,
    usage: UsageCounters,
    calls: [AtomicU64; FaultOp::ALL.len()],
    faults: Mutex<HashMap<(FaultOp, u64), FaultKind>>,
    injected: AtomicU64,
}

impl FaultyBackend {
    /// Wraps `inner`; no call fails until faults are added.
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        FaultyBackend {
            max_allocation: inner.info().max_allocation,
            alignment: inner.info().alignment,
            kind: inner.info().kind,
            usage: UsageCounters::default(),
            inner,
            calls: Default::default(),
            faults: Mutex::new(HashMap::new()),
            injected: AtomicU64::new(0),
        }
    }

    /// Makes call number `nth` (from 0, counted from creation) of `op` fail with `kind`.
    pub fn fail(&self, op: FaultOp, nth: u64, kind: FaultKind) {
        self.faults.lock().unpoisoned().insert((op, nth), kind);
    }

    /// Drops every fault not yet injected.
    pub fn clear(&self) {
        self.faults.lock().unpoisoned().clear();
    }

    /// How many calls of `op` were made so far.
    pub fn calls(&self, op: FaultOp) -> u64 {
        self.calls[op as usize].load(Ordering::Relaxed)
    }

    /// How many failures were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &Arc<dyn Backend> {
        &self.inner
    }

    /// Counts a call of `op` and returns the fault scheduled for it.
    fn next_fault(&self, op: FaultOp) -> Option<FaultKind> {
        let n = self.calls[op as usize].fetch_add(1, Ordering::Relaxed);
        let kind = self.faults.lock().unpoisoned().remove(&(op, n));
        if kind.is_some() {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        kind
    }

    /// Counts a call of `op` on `bytes` bytes and returns the failure scheduled for it.
    fn check(&self, op: FaultOp, bytes: usize) -> Result<()> {
        match self.next_fault(op) {
            None => Ok(()),
            Some(kind) => Err(self.error(kind, bytes)),
        }
    }

    /// A scattered transfer of `count` parts with its fault, if one is scheduled: the first
    /// half of the parts go through `pass` (a call of the wrapped backend), the rest fail.
    fn parts(
        &self,
        op: FaultOp,
        count: usize,
        pass: impl FnOnce(usize) -> std::result::Result<(), PartFailures>,
    ) -> std::result::Result<(), PartFailures> {
        let Some(kind) = self.next_fault(op) else {
            return pass(count);
        };
        let half = count / 2;
        let mut failures = Failures::default();
        if let Err(f) = pass(half) {
            failures.add_all(f.failed, f.error);
        }
        failures.add_all(half..count, self.error(kind, 0));
        failures.into_result()
    }

    fn error(&self, kind: FaultKind, bytes: usize) -> Error {
        if kind == FaultKind::OutOfMemory {
            return Error::OutOfMemory {
                backend: self.inner.info().kind,
                requested: bytes as u64,
                diagnosis: None,
            };
        }
        let permanent = kind == FaultKind::Permanent;
        Error::Backend(BackendError {
            backend: self.inner.info().kind,
            operation: "injected fault",
            code: -1,
            name: if permanent {
                "INJECTED_PERMANENT"
            } else {
                "INJECTED_TRANSIENT"
            },
            retryable: !permanent,
        })
    }
}

// Every primitive forwards to the wrapped backend's checked call (arguments are checked twice,
// which a test wrapper can afford), with a fault where one is scheduled.
impl RawBackend for FaultyBackend {
    fn id(&self) -> BackendId {
        self.inner.id()
    }
    fn info(&self) -> DeviceInfo {
        self.inner.info()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn maps(&self, block: &DeviceBlock) -> bool {
        self.inner.maps(block)
    }
    fn max_allocation(&self) -> u64 {
        self.max_allocation
    }
    fn alignment(&self) -> usize {
        self.alignment
    }
    fn kind(&self) -> BackendKind {
        self.kind
    }
    /// Counts what goes through the wrapper (the wrapped backend counts the same calls).
    fn usage_counters(&self) -> &UsageCounters {
        &self.usage
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn allocate(&self, bytes: usize) -> Result<DeviceBlock> {
        self.check(FaultOp::Allocate, bytes)?;
        self.inner.allocate(bytes)
    }
    unsafe fn release(&self, block: DeviceBlock) -> Result<()> {
        self.inner.release(block)
    }
    unsafe fn host_address(&self, block: &DeviceBlock) -> Result<*mut u8> {
        (self.inner.host_ptr(block)).ok_or_else(|| unsupported(self.kind(), "host_address"))
    }
    unsafe fn map(
        &self,
        queue: &Queue,
        block: &DeviceBlock,
        offset: usize,
        len: usize,
        mode: MapMode,
    ) -> Result<*mut u8> {
        self.check(FaultOp::Mapped, len)?;
        self.inner.map(queue, block, offset, len, mode)
    }
    unsafe fn unmap(&self, queue: &Queue, block: &DeviceBlock, ptr: *mut u8) -> Result<()> {
        self.inner.unmap(queue, block, ptr)
    }
    unsafe fn view(
        &self,
        segment: &DeviceBlock,
        offset: usize,
        len: usize,
    ) -> Result<*mut std::ffi::c_void> {
        self.inner
            .view(segment, offset, len)
            .map(DeviceBlock::into_raw)
    }
    unsafe fn release_view(&self, view: DeviceBlock) -> Result<()> {
        self.inner.release_view(view)
    }
    fn commit_granularity(&self) -> Option<usize> {
        self.inner.commit_granularity()
    }
    fn reserve(&self, bytes: usize) -> Result<*mut std::ffi::c_void> {
        self.inner.reserve(bytes).map(DeviceBlock::into_raw)
    }
    /// A commit can fail as an allocation does. The wrapper's counters take every commit as
    /// new bytes (the wrapped backend's know better).
    unsafe fn commit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<usize> {
        self.check(FaultOp::Allocate, len)?;
        self.inner.commit(reservation, offset, len).map(|()| len)
    }
    unsafe fn decommit(
        &self,
        reservation: &DeviceBlock,
        offset: usize,
        len: usize,
    ) -> Result<usize> {
        self.inner.decommit(reservation, offset, len).map(|()| len)
    }
    unsafe fn release_reservation(&self, reservation: DeviceBlock) -> Result<usize> {
        self.inner.release(reservation).map(|()| 0)
    }
    fn allocate_shared(&self, bytes: usize) -> Result<DeviceBlock> {
        self.check(FaultOp::Allocate, bytes)?;
        self.inner.allocate_shared(bytes)
    }
    unsafe fn migrate(&self, queue: &Queue, block: &DeviceBlock, to: MigrateTo) -> Result<()> {
        self.inner.migrate(queue, block, to)
    }
    fn allocate_staging(&self, bytes: usize) -> Result<StagingBuffer> {
        self.inner.allocate_staging(bytes)
    }
    fn default_queue(&self) -> &Queue {
        self.inner.default_queue()
    }
    fn create_queue(&self) -> Result<Queue> {
        self.inner.create_queue()
    }
    unsafe fn write(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        offset: usize,
        src: &[u8],
    ) -> Result<()> {
        match self.next_fault(FaultOp::Write) {
            None => self.inner.write(queue, dst, offset, src),
            Some(FaultKind::Corrupt) => {
                let mut bad = src.to_vec();
                if let Some(b) = bad.first_mut() {
                    *b ^= 0xff;
                }
                self.inner.write(queue, dst, offset, &bad)
            }
            Some(kind) => {
                // A real interrupted transfer leaves part of the destination written.
                let half = src.len() / 2;
                if half > 0 {
                    self.inner.write(queue, dst, offset, &src[..half])?;
                }
                Err(self.error(kind, src.len()))
            }
        }
    }
    unsafe fn read(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<()> {
        match self.next_fault(FaultOp::Read) {
            None => self.inner.read(queue, src, offset, dst),
            Some(FaultKind::Corrupt) => {
                self.inner.read(queue, src, offset, dst)?;
                // Not the write's flip, so that two corruptions never cancel out.
                if let Some(b) = dst.first_mut() {
                    *b ^= 0x0f;
                }
                Ok(())
            }
            Some(kind) => {
                let half = dst.len() / 2;
                if half > 0 {
                    self.inner.read(queue, src, offset, &mut dst[..half])?;
                }
                Err(self.error(kind, dst.len()))
            }
        }
    }
    unsafe fn write_staged(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        src: &StagingBuffer,
        region: CopyRegion,
    ) -> Result<Event> {
        self.check(FaultOp::WriteStaged, region.len)?;
        self.inner.write_staged(queue, dst, src, region)
    }
    unsafe fn read_staged(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        dst: &mut StagingBuffer,
        region: CopyRegion,
    ) -> Result<Event> {
        self.check(FaultOp::ReadStaged, region.len)?;
        self.inner.read_staged(queue, src, dst, region)
    }
    unsafe fn copy(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        dst: &mut DeviceBlock,
        region: CopyRegion,
    ) -> Result<Event> {
        self.check(FaultOp::Copy, region.len)?;
        self.inner.copy(queue, src, dst, region)
    }
    unsafe fn fill(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        offset: usize,
        len: usize,
        pattern: &[u8],
    ) -> Result<Event> {
        match self.next_fault(FaultOp::Fill) {
            None => self.inner.fill(queue, dst, offset, len, pattern),
            Some(kind) => {
                // Like an interrupted fill: the first half (whole patterns) is written.
                let p = pattern.len().max(1);
                let half = len / 2 / p * p;
                if half > 0 {
                    self.inner.fill(queue, dst, offset, half, pattern)?.wait()?;
                }
                Err(self.error(kind, len))
            }
        }
    }
    unsafe fn write_parts(
        &self,
        queues: &[Queue],
        blocks: &mut [&mut DeviceBlock],
        parts: &[WritePart<'_>],
    ) -> std::result::Result<(), PartFailures> {
        self.parts(FaultOp::WriteParts, parts.len(), |n| {
            self.inner.write_parts(queues, blocks, &parts[..n])
        })
    }
    unsafe fn read_parts(
        &self,
        queues: &[Queue],
        blocks: &[&DeviceBlock],
        parts: &mut [ReadPart<'_>],
    ) -> std::result::Result<(), PartFailures> {
        self.parts(FaultOp::ReadParts, parts.len(), |n| {
            self.inner.read_parts(queues, blocks, &mut parts[..n])
        })
    }
    unsafe fn copy_to_peer(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        dst_backend: &dyn Backend,
        dst: &mut DeviceBlock,
        region: CopyRegion,
    ) -> Result<Event> {
        self.check(FaultOp::Peer, region.len)?;
        let copied = (self.inner).copy_to_peer(queue, src, unwrapped(dst_backend), dst, region)?;
        copied.ok_or_else(|| unsupported(self.kind(), "copy_to_peer"))
    }
    fn enqueue_wait(&self, queue: &Queue, event: &Event) -> Result<()> {
        self.inner.enqueue_wait(queue, event)
    }
    fn enqueue_marker(&self, queue: &Queue) -> Result<Event> {
        self.inner.enqueue_marker(queue)
    }
    fn create_user_event(&self) -> Result<UserEvent> {
        self.inner.create_user_event()
    }
    fn synchronize(&self) -> Result<()> {
        self.inner.synchronize()
    }
}

/// A wrapped backend's answer to a mapped access the wrapper declares (it forwards the
/// capabilities), as a primitive gives it.
/// The backend a [`FaultyBackend`] wraps, or `backend` itself: a peer backend sees its real
/// partner, so its own peer path (which downcasts) is chosen as without the wrapper.
fn unwrapped(backend: &dyn Backend) -> &dyn Backend {
    match backend.as_any().downcast_ref::<FaultyBackend>() {
        Some(faulty) => unwrapped(faulty.inner.as_ref()),
        None => backend,
    }
}

#[cfg(test)]
mod tests {
    /// A wrapper that forgets a defaulted method silently loses the wrapped backend's own
    /// implementation (how the scattered OpenCL path was once lost). The primitive trait has no
    /// defaults, so the compiler makes every wrapper forward every primitive; this keeps it so:
    /// no method of `RawBackend` may carry a body.
    #[test]
    fn no_primitive_has_a_default() {
        let source = include_str!("raw.rs");
        let start = source
            .find("pub trait RawBackend")
            .expect("the trait exists");
        let (mut depth, mut deepest, mut methods) = (0usize, 0usize, 0usize);
        for line in source[start..].lines() {
            let code = line.split("//").next().unwrap_or_default();
            let trimmed = code.trim_start();
            if depth == 1 && (trimmed.starts_with("fn ") || trimmed.starts_with("unsafe fn ")) {
                methods += 1;
            }
            for c in code.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        deepest = deepest.max(depth);
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if depth == 0 && deepest > 0 {
                break;
            }
        }
        assert!(methods >= 27, "{methods} primitives found");
        assert_eq!(deepest, 1, "a primitive of RawBackend has a default body");
    }

    #[test]
    fn injected_out_of_memory_is_a_typed_retryable_error() {
        use super::{Backend, FaultKind, FaultOp, FaultyBackend};
        use crate::backend::HostBackend;
        use crate::error::Error;
        use std::sync::Arc;

        let wrapper = FaultyBackend::new(Arc::new(HostBackend::new()));
        let faulty: &dyn Backend = &wrapper;
        wrapper.fail(FaultOp::Allocate, 0, FaultKind::OutOfMemory);
        let err = faulty.allocate(4096).unwrap_err();
        assert!(
            matches!(
                err,
                Error::OutOfMemory {
                    requested: 4096,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.is_retryable());
        let block = faulty.allocate(4096).unwrap();
        faulty.release(block).unwrap();
        assert_eq!(wrapper.injected(), 1);
    }
}
