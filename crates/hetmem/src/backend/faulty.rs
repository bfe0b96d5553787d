//! [`FaultyBackend`]: a wrapper that makes chosen calls of a real backend fail, for testing and
//! benchmarking the recovery paths. Everything else is passed through, so the data path stays
//! real.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::{
    Backend, BackendId, BackendUsage, Capabilities, DeviceBlock, DeviceInfo, Event, Queue,
    StagingBuffer, UserEvent,
};
use crate::error::{BackendError, Error, Result};

/// The calls a fault can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultOp {
    /// [`Backend::allocate`].
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
    /// [`Backend::write_mapped`] and [`Backend::read_mapped`] (fail before mapping).
    Mapped,
}

impl FaultOp {
    /// Every injectable call.
    pub const ALL: [FaultOp; 7] = [
        FaultOp::Allocate,
        FaultOp::Write,
        FaultOp::Read,
        FaultOp::WriteStaged,
        FaultOp::ReadStaged,
        FaultOp::Copy,
        FaultOp::Mapped,
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
}

/// A backend whose `n`-th call of an operation fails (counting from 0, per operation).
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    calls: [AtomicU64; FaultOp::ALL.len()],
    faults: Mutex<HashMap<(FaultOp, u64), FaultKind>>,
    injected: AtomicU64,
}

impl FaultyBackend {
    /// Wraps `inner`; no call fails until faults are added.
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        FaultyBackend {
            inner,
            calls: Default::default(),
            faults: Mutex::new(HashMap::new()),
            injected: AtomicU64::new(0),
        }
    }

    /// Makes call number `nth` (from 0, counted from creation) of `op` fail with `kind`.
    pub fn fail(&self, op: FaultOp, nth: u64, kind: FaultKind) {
        self.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((op, nth), kind);
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
        let kind = self
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(op, n));
        if kind.is_some() {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        kind
    }

    /// Counts a call of `op` and returns the failure scheduled for it.
    fn check(&self, op: FaultOp) -> Result<()> {
        match self.next_fault(op) {
            None => Ok(()),
            Some(kind) => Err(self.error(kind)),
        }
    }

    fn error(&self, kind: FaultKind) -> Error {
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

impl Backend for FaultyBackend {
    fn id(&self) -> BackendId {
        self.inner.id()
    }
    fn info(&self) -> DeviceInfo {
        self.inner.info()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn usage(&self) -> BackendUsage {
        self.inner.usage()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn allocate(&self, bytes: usize) -> Result<DeviceBlock> {
        self.check(FaultOp::Allocate)?;
        self.inner.allocate(bytes)
    }
    fn release(&self, block: DeviceBlock) -> Result<()> {
        self.inner.release(block)
    }
    fn host_bytes<'a>(&self, block: &'a DeviceBlock) -> Option<&'a [u8]> {
        self.inner.host_bytes(block)
    }
    fn host_bytes_mut<'a>(&self, block: &'a mut DeviceBlock) -> Option<&'a mut [u8]> {
        self.inner.host_bytes_mut(block)
    }
    fn write_mapped(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        offset: usize,
        len: usize,
        access: &mut dyn FnMut(&mut [u8]),
    ) -> Result<bool> {
        self.check(FaultOp::Mapped)?;
        self.inner.write_mapped(queue, dst, offset, len, access)
    }
    fn read_mapped(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        offset: usize,
        len: usize,
        access: &mut dyn FnMut(&[u8]),
    ) -> Result<bool> {
        self.check(FaultOp::Mapped)?;
        self.inner.read_mapped(queue, src, offset, len, access)
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
    fn write(&self, queue: &Queue, dst: &mut DeviceBlock, offset: usize, src: &[u8]) -> Result<()> {
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
                Err(self.error(kind))
            }
        }
    }
    fn read(&self, queue: &Queue, src: &DeviceBlock, offset: usize, dst: &mut [u8]) -> Result<()> {
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
                Err(self.error(kind))
            }
        }
    }
    fn write_staged(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        dst_offset: usize,
        src: &StagingBuffer,
        src_offset: usize,
        len: usize,
    ) -> Result<Event> {
        self.check(FaultOp::WriteStaged)?;
        self.inner
            .write_staged(queue, dst, dst_offset, src, src_offset, len)
    }
    fn read_staged(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        src_offset: usize,
        dst: &mut StagingBuffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<Event> {
        self.check(FaultOp::ReadStaged)?;
        self.inner
            .read_staged(queue, src, src_offset, dst, dst_offset, len)
    }
    fn copy(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        src_offset: usize,
        dst: &mut DeviceBlock,
        dst_offset: usize,
        len: usize,
    ) -> Result<Event> {
        self.check(FaultOp::Copy)?;
        self.inner
            .copy(queue, src, src_offset, dst, dst_offset, len)
    }
    fn fill(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        offset: usize,
        len: usize,
        pattern: &[u8],
    ) -> Result<Event> {
        self.inner.fill(queue, dst, offset, len, pattern)
    }
    fn enqueue_wait(&self, queue: &Queue, event: &Event) -> Result<()> {
        self.inner.enqueue_wait(queue, event)
    }
    fn create_user_event(&self) -> Result<UserEvent> {
        self.inner.create_user_event()
    }
    fn synchronize(&self) -> Result<()> {
        self.inner.synchronize()
    }
}
