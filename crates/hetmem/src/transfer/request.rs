//! [`TransferRequest`]: a transfer to submit to a [`TransferScheduler`](super::TransferScheduler),
//! owning what it moves; [`Failed`] gives it back with the error; [`Progress`] reports how far
//! it got.

use std::borrow::{Borrow, BorrowMut};
use std::fmt;
use std::sync::Arc;

use super::engine::{BatchWrite, Lane, TransferEngine};
use super::scheduler::Priority;
use crate::backend::DeviceBlock;
use crate::error::{Error, Result};

/// How far a transfer got, for progress callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes moved so far (after each chunk; back to zero if verification redoes the transfer).
    pub done: usize,
    /// Bytes in the transfer.
    pub total: usize,
}

pub(super) type Operation<P> =
    Box<dyn FnOnce(&TransferEngine, &Lane<'_>, &mut P) -> Result<()> + Send>;
pub(super) type ProgressCallback = Arc<dyn Fn(Progress) + Send + Sync>;

/// A transfer to submit, owning its parts `P` until it ends.
pub struct TransferRequest<P> {
    pub(super) parts: P,
    pub(super) operation: Operation<P>,
    pub(super) total: usize,
    pub(super) priority: Priority,
    pub(super) progress: Option<ProgressCallback>,
}

impl<D, S> TransferRequest<(D, S)>
where
    D: BorrowMut<DeviceBlock> + Send + 'static,
    S: AsRef<[u8]> + Send + 'static,
{
    /// Writes `src` into `dst` at byte `offset`; gives back `(dst, src)`.
    pub fn write(dst: D, offset: usize, src: S) -> Self {
        let total = src.as_ref().len();
        Self::new((dst, src), total, move |engine, lane, (dst, src)| {
            engine.write_on(lane, D::borrow_mut(dst), offset, S::as_ref(src))
        })
    }
}

impl<D, H> TransferRequest<(D, H)>
where
    D: Borrow<DeviceBlock> + Send + 'static,
    H: AsMut<[u8]> + Send + 'static,
{
    /// Reads from `src` at byte `offset` into all of `dst`; gives back `(src, dst)`.
    pub fn read(src: D, offset: usize, mut dst: H) -> Self {
        let total = dst.as_mut().len();
        Self::new((src, dst), total, move |engine, lane, (src, dst)| {
            engine.read_on(lane, D::borrow(src), offset, dst.as_mut())
        })
    }
}

impl<A, B> TransferRequest<(A, B)>
where
    A: Borrow<DeviceBlock> + Send + 'static,
    B: BorrowMut<DeviceBlock> + Send + 'static,
{
    /// Copies `len` bytes from `src` at `src_offset` to `dst` at `dst_offset`, both blocks of
    /// the scheduler's device; gives back `(src, dst)`.
    pub fn copy(src: A, src_offset: usize, dst: B, dst_offset: usize, len: usize) -> Self {
        Self::new((src, dst), len, move |engine, lane, (src, dst)| {
            engine.copy_on(
                lane,
                A::borrow(src),
                src_offset,
                B::borrow_mut(dst),
                dst_offset,
                len,
            )
        })
    }
}

impl<D, S> TransferRequest<Vec<(D, usize, S)>>
where
    D: BorrowMut<DeviceBlock> + Send + 'static,
    S: AsRef<[u8]> + Send + 'static,
{
    /// Writes every `(dst, offset, src)` as one batch (see [`TransferEngine::write_batch`]);
    /// gives the items back.
    pub fn write_batch(items: Vec<(D, usize, S)>) -> Self {
        let total = items.iter().fold(0usize, |sum, (_, _, s)| {
            sum.saturating_add(s.as_ref().len())
        });
        Self::new(items, total, |engine, lane, items| {
            let mut batch: Vec<BatchWrite<'_>> = items
                .iter_mut()
                .map(|(dst, offset, src)| BatchWrite {
                    dst: D::borrow_mut(dst),
                    offset: *offset,
                    src: S::as_ref(src),
                })
                .collect();
            engine.write_batch_on(lane, &mut batch)
        })
    }
}

impl<P> TransferRequest<P> {
    fn new(
        parts: P,
        total: usize,
        operation: impl FnOnce(&TransferEngine, &Lane<'_>, &mut P) -> Result<()> + Send + 'static,
    ) -> Self {
        TransferRequest {
            parts,
            operation: Box::new(operation),
            total,
            priority: Priority::Normal,
            progress: None,
        }
    }

    /// Sets the priority (default [`Priority::Normal`]).
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Calls `callback` on the worker thread after each chunk with the bytes done so far.
    pub fn on_progress(mut self, callback: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(callback));
        self
    }

    /// Bytes the transfer moves.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether it moves nothing.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

impl<P> fmt::Debug for TransferRequest<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransferRequest")
            .field("bytes", &self.total)
            .field("priority", &self.priority)
            .finish()
    }
}

/// A transfer that did not happen (or not completely), with the parts it owned.
pub struct Failed<P> {
    /// Why.
    pub error: Error,
    /// What the request owned, given back untouched by the scheduler (a write's destination
    /// range holds unspecified bytes; its source is intact).
    pub parts: P,
}

impl<P> fmt::Debug for Failed<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failed")
            .field("error", &self.error)
            .finish()
    }
}

impl<P> fmt::Display for Failed<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<P> std::error::Error for Failed<P> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<P> From<Failed<P>> for Error {
    fn from(failed: Failed<P>) -> Self {
        failed.error
    }
}

/// What a submission ends with: the parts back, or the failure with the parts.
pub type Outcome<P> = std::result::Result<P, Failed<P>>;
