//! Scattered transfers: many pieces of host memory to or from device blocks in one call
//! ([`Backend::write_parts`](super::Backend::write_parts),
//! [`Backend::read_parts`](super::Backend::read_parts)), so a backend can enqueue them all before
//! waiting once instead of paying a blocking round trip per piece.

use super::raw::RawBackend;
use super::{check_block, DeviceBlock, Queue};
use crate::error::{Error, Result};

/// One piece of a scattered write: `src` goes into block number `block` at byte `offset`.
#[derive(Debug, Clone, Copy)]
pub struct WritePart<'a> {
    /// Index into the call's blocks.
    pub block: usize,
    /// Byte offset in that block.
    pub offset: usize,
    /// The bytes to write.
    pub src: &'a [u8],
}

/// One piece of a gathered read: bytes of block number `block` from byte `offset` fill `dst`.
#[derive(Debug)]
pub struct ReadPart<'a> {
    /// Index into the call's blocks.
    pub block: usize,
    /// Byte offset in that block.
    pub offset: usize,
    /// Where the bytes go.
    pub dst: &'a mut [u8],
}

/// The parts of a scattered transfer that did not arrive; every other part did.
#[derive(Debug)]
pub struct PartFailures {
    /// Indices of the failed parts, ascending.
    pub failed: Vec<usize>,
    /// Why: the first permanent failure if there was one, else the first failure. Retrying the
    /// failed parts makes sense only when this is retryable.
    pub error: Error,
}

/// Collects failures while a scattered transfer runs.
#[derive(Debug, Default)]
pub(crate) struct Failures(Option<PartFailures>);

impl Failures {
    /// Records that part `index` failed with `error`.
    pub(crate) fn add(&mut self, index: usize, error: Error) {
        match &mut self.0 {
            None => {
                self.0 = Some(PartFailures {
                    failed: vec![index],
                    error,
                })
            }
            Some(f) => {
                f.failed.push(index);
                if f.error.is_retryable() && !error.is_retryable() {
                    f.error = error;
                }
            }
        }
    }

    /// Records that every part in `indices` failed with `error` (one failure of their queue,
    /// or of the whole call).
    pub(crate) fn add_all(&mut self, indices: impl IntoIterator<Item = usize>, error: Error) {
        let mut indices = indices.into_iter();
        let Some(first) = indices.next() else {
            return;
        };
        self.add(first, error);
        if let Some(f) = &mut self.0 {
            f.failed.extend(indices);
        }
    }

    /// Whether a permanent failure was recorded: the parts not yet started should not be.
    pub(crate) fn permanent(&self) -> bool {
        self.0.as_ref().is_some_and(|f| !f.error.is_retryable())
    }

    /// Records parts not started because of an earlier permanent failure.
    pub(crate) fn abandon(&mut self, indices: std::ops::Range<usize>) {
        if let Some(f) = &mut self.0 {
            f.failed.extend(indices);
        }
    }

    /// `Ok` when nothing failed.
    pub(crate) fn into_result(self) -> std::result::Result<(), PartFailures> {
        match self.0 {
            None => Ok(()),
            Some(mut f) => {
                f.failed.sort_unstable();
                f.failed.dedup();
                Err(f)
            }
        }
    }
}

/// The queue part `index` runs on: parts are dealt to the queues in turn.
pub(crate) fn queue_for(queues: &[Queue], index: usize) -> Result<&Queue> {
    if queues.is_empty() {
        return Err(Error::invalid(
            "a scattered transfer needs at least one queue",
        ));
    }
    Ok(&queues[index % queues.len()])
}

/// Block number `index` of a scattered transfer, checked to be `backend`'s and to hold
/// `offset..offset + len`.
pub(crate) fn block_for<B: std::ops::Deref<Target = DeviceBlock>>(
    backend: super::BackendId,
    blocks: &[B],
    index: usize,
    offset: usize,
    len: usize,
) -> Result<&DeviceBlock> {
    let block = blocks.get(index).ok_or_else(|| {
        Error::invalid(format!(
            "part names block {index}, but the transfer has {}",
            blocks.len()
        ))
    })?;
    check_block(backend, "scattered transfer block", block, offset, len)?;
    Ok(block)
}

/// Writes the parts one after another with [`RawBackend::write`], part `i` on queue
/// `queues[i % queues.len()]`: the scattered write of a device without a faster way. A part that
/// fails transiently does not stop the others; after a permanent failure the rest are abandoned.
///
/// # Safety
/// As [`RawBackend::write_parts`]: every queue and block is `backend`'s, every part names a block
/// that exists and lies inside it, and `queues` is not empty.
pub unsafe fn write_parts_in_turn<R: RawBackend + ?Sized>(
    backend: &R,
    queues: &[Queue],
    blocks: &mut [&mut DeviceBlock],
    parts: &[WritePart<'_>],
) -> std::result::Result<(), PartFailures> {
    let mut failures = Failures::default();
    for (i, part) in parts.iter().enumerate() {
        let queue = &queues[i % queues.len()];
        // SAFETY: the caller's guarantees cover every part.
        let written =
            unsafe { backend.write(queue, &mut *blocks[part.block], part.offset, part.src) };
        if let Err(e) = written {
            failures.add(i, e);
            if failures.permanent() {
                failures.abandon(i + 1..parts.len());
                break;
            }
        }
    }
    failures.into_result()
}

/// [`write_parts_in_turn`] the other way, with [`RawBackend::read`].
///
/// # Safety
/// As [`write_parts_in_turn`].
pub unsafe fn read_parts_in_turn<R: RawBackend + ?Sized>(
    backend: &R,
    queues: &[Queue],
    blocks: &[&DeviceBlock],
    parts: &mut [ReadPart<'_>],
) -> std::result::Result<(), PartFailures> {
    let mut failures = Failures::default();
    for (i, part) in parts.iter_mut().enumerate() {
        let queue = &queues[i % queues.len()];
        // SAFETY: the caller's guarantees cover every part.
        let read = unsafe { backend.read(queue, blocks[part.block], part.offset, part.dst) };
        if let Err(e) = read {
            failures.add(i, e);
            if failures.permanent() {
                failures.abandon(i + 1..parts.len());
                break;
            }
        }
    }
    failures.into_result()
}
