//! Running a transfer's parts and retrying what failed transiently, part by part, under the
//! engine's [`RetryPolicy`](super::super::RetryPolicy).

use std::ops::Range;
use std::sync::atomic::Ordering;

use super::super::stats::Direction;
use super::lane::Lane;
use super::TransferEngine;
use crate::backend::{
    CopyRegion, DeviceBlock, Event, PartFailures, ReadPart, StagingBuffer, WritePart,
};
use crate::error::{Error, Result};

impl TransferEngine {
    /// Runs one transfer: counts it in flight, records it, counts failures.
    pub(super) fn run(
        &self,
        direction: Direction,
        bytes: usize,
        transfer: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        crate::trace::span!("hetmem.transfer", ?direction, bytes);
        let running = self.counters.begin(direction, bytes);
        match transfer() {
            Ok(()) => {
                running.finish();
                Ok(())
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Runs a whole transfer again when verification finds it corrupted, up to the policy's
    /// attempts. (Other transient failures are retried per chunk inside.)
    pub(super) fn until_intact(
        &self,
        lane: &Lane<'_>,
        mut transfer: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        let mut attempt = 1;
        loop {
            lane.restart();
            match transfer() {
                Err(Error::IntegrityMismatch { .. })
                    if attempt < self.config.retry.max_attempts =>
                {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    /// Runs `op` until it succeeds, fails permanently, or the policy's attempts are used up.
    /// `first` is a failure already seen (an asynchronous operation's event), which counts as
    /// the first attempt.
    pub(super) fn retrying<R>(
        &self,
        first: Option<Error>,
        op: impl FnMut() -> Result<R>,
    ) -> Result<R> {
        match first {
            None => self.retrying_after(0, op),
            Some(e) if self.may_retry(&e, 1) => self.retrying_after(1, op),
            Some(e) => Err(e),
        }
    }

    /// Whether an operation that failed with `error` after `failed` attempts gets another.
    pub(super) fn may_retry(&self, error: &Error, failed: u32) -> bool {
        error.is_retryable() && failed < self.config.retry.max_attempts
    }

    /// [`Self::retrying`] after `failed` attempts that failed transiently.
    pub(super) fn retrying_after<R>(
        &self,
        mut failed: u32,
        mut op: impl FnMut() -> Result<R>,
    ) -> Result<R> {
        let policy = &self.config.retry;
        loop {
            if failed > 0 {
                self.retries.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(policy.delay(failed));
            }
            match op() {
                Err(e) if self.may_retry(&e, failed + 1) => failed += 1,
                done => return done,
            }
        }
    }

    /// Writes `parts` into `blocks` over the lane's queues, `wave` parts at a time (each wave
    /// enqueued at once and waited for), then retries each failed part alone if the failure
    /// was transient; reports progress part by part after each wave.
    pub(super) fn write_parts(
        &self,
        lane: &Lane<'_>,
        blocks: &mut [&mut DeviceBlock],
        parts: &[WritePart<'_>],
        wave: usize,
        queues: usize,
    ) -> Result<()> {
        let queues = self.queues_for(lane, parts.len().min(queues))?;
        for parts in parts.chunks(wave.max(1)) {
            let outcome = self.backend.write_parts(&queues, blocks, parts);
            for i in self.failed_parts(outcome)? {
                let p = &parts[i];
                let block = &mut *blocks[p.block];
                self.retrying_after(1, || self.backend.write(lane.queue, block, p.offset, p.src))?;
            }
            parts.iter().for_each(|p| lane.advance(p.src.len()));
        }
        Ok(())
    }

    /// [`Self::write_parts`], reading.
    pub(super) fn read_parts(
        &self,
        lane: &Lane<'_>,
        blocks: &[&DeviceBlock],
        parts: &mut [ReadPart<'_>],
        wave: usize,
        queues: usize,
    ) -> Result<()> {
        let queues = self.queues_for(lane, parts.len().min(queues))?;
        for parts in parts.chunks_mut(wave.max(1)) {
            let outcome = self.backend.read_parts(&queues, blocks, parts);
            for i in self.failed_parts(outcome)? {
                let p = &mut parts[i];
                let block = blocks[p.block];
                self.retrying_after(1, || self.backend.read(lane.queue, block, p.offset, p.dst))?;
            }
            parts.iter().for_each(|p| lane.advance(p.dst.len()));
        }
        Ok(())
    }

    /// The parts to retry: none if all arrived, the failed ones if the failure is transient
    /// and the policy allows another attempt; otherwise the failure.
    pub(super) fn failed_parts(
        &self,
        outcome: std::result::Result<(), PartFailures>,
    ) -> Result<Vec<usize>> {
        match outcome {
            Ok(()) => Ok(Vec::new()),
            Err(PartFailures { failed, error }) if self.may_retry(&error, 1) => Ok(failed),
            Err(PartFailures { error, .. }) => Err(error),
        }
    }

    /// Waits for an asynchronous write of `staged` bytes of `staging`, redoing it
    /// (synchronously) if it failed transiently: the staging buffer still holds the bytes.
    pub(super) fn settle_write(
        &self,
        lane: &Lane<'_>,
        event: Event,
        dst: &mut DeviceBlock,
        offset: usize,
        staging: &StagingBuffer,
        staged: Range<usize>,
    ) -> Result<()> {
        let len = staged.len();
        if let Err(e) = event.wait() {
            self.retrying(Some(e), || {
                self.backend
                    .write_staged(
                        lane.queue,
                        dst,
                        staging,
                        CopyRegion {
                            src_offset: staged.start,
                            dst_offset: offset,
                            len,
                        },
                    )?
                    .wait()
            })?;
        }
        lane.advance(len);
        Ok(())
    }
}
