//! A buffer's transfers on the context's background thread: asynchronous syncs and prefetches,
//! and owned asynchronous writes and reads.
//!
//! One transfer is in flight per buffer at a time; starting another, and every operation
//! through `&mut`, settles the one before. A job works on a copy of the tracker and leaves the
//! tracker it produced in [`InFlight`]; the buffer takes it in when it settles. While a write
//! into the device copy is in flight, the validity mirror shows no side valid, so every read
//! and guard settles it first: none sees the bytes from before the write, nor a block being
//! written.

use crate::host::Stopwatch;
use crate::sync::Unpoison;
use std::ops::Range;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use super::coherence::{transition, CoherenceEvent, CoherenceState, Side};
use super::range_set::RangeSet;
use super::storage::BufferStorage;
use super::tracker::{allocated, allocated_mut, Tracker};
use crate::backend::Event;
use crate::element::Element;
use crate::error::Result;
use crate::transfer::{Direction, OwnedTransfer, TransferHandle};

/// What a transfer on the background thread leaves for the buffer.
pub(super) struct InFlight {
    /// The transfer's completion.
    done: Event,
    /// The tracker after the transfer, set by the job once it has succeeded.
    after: Arc<Mutex<Option<Tracker>>>,
    /// The tracker to take in if it fails (`None`: keep the current one).
    on_failure: Option<Tracker>,
}

impl InFlight {
    /// Whether the transfer has finished (successfully or not).
    pub(super) fn is_finished(&self) -> bool {
        self.done.is_finished()
    }

    /// Waits for the transfer: the tracker to take in, if any.
    pub(super) fn wait(self) -> Option<Tracker> {
        // Success or failure shows in `after`; the failure itself went to the user's handle.
        let _ = self.done.wait();
        self.after.lock().unpoisoned().take().or(self.on_failure)
    }
}

impl BufferStorage {
    /// [`BufferStorage::acquire`], on the context's background thread where the device works
    /// asynchronously: returns once the transfer is started, with its handle. Until it is
    /// done, `side` stays stale, so whatever needs it waits for it; the other side stays
    /// usable. A failed transfer changes nothing (its handle reports the failure).
    pub(crate) fn acquire_async(&self, side: Side) -> Result<TransferHandle> {
        let ctx = &self.core.ctx;
        if !ctx.asynchronous {
            return self.acquire(side).map(|()| TransferHandle::finished());
        }
        self.core.part.touch();
        if self.is_valid(side) {
            return Ok(TransferHandle::finished());
        }
        ctx.check_open("making a buffer side valid")?;
        let mut tracker = self.tracker.lock().unpoisoned();
        self.settle_locked(&mut tracker);
        if tracker.state.is_valid(side) {
            return Ok(TransferHandle::finished());
        }
        let (side, t) = self.making_valid(&tracker, side)?;
        let mut after = tracker.snapshot();
        let (core, slots, left) = (
            self.core.clone(),
            self.core.part.lend_copies(&self.owner),
            after_slot(),
        );
        let keep = left.clone();
        let job = ctx.background.spawn(move || {
            let (mut target, source) = slots.for_making_valid(side);
            // The validity mirror is the buffer's to publish when it settles.
            let unpublished = AtomicU8::new(0);
            let outcome = core.perform(
                &mut after,
                &unpublished,
                side,
                t,
                &mut target,
                &source,
                &(0..0),
            );
            if outcome.is_ok() {
                *keep.lock().unpoisoned() = Some(after);
            }
            (outcome, ())
        })?;
        let done = job.event();
        tracker.in_flight = Some(Box::new(InFlight {
            done,
            after: left,
            on_failure: None,
        }));
        Ok(job.into_handle())
    }

    /// Writes `data` at byte `offset` without waiting for the device: into the device copy on
    /// the background thread where both copies are valid or the device holds the only one (the
    /// host copy goes stale over the range); otherwise at once, as `write_from` does. The
    /// transfer owns `data` and gives it back. If it fails, a synchronized buffer keeps its host
    /// copy, with the device copy stale over the range; where the device held the only copy,
    /// the range is unspecified.
    pub(crate) fn write_async<T: Element>(
        &mut self,
        offset: usize,
        data: Vec<T>,
    ) -> Result<OwnedTransfer<Vec<T>>> {
        self.settle();
        let len = std::mem::size_of_val(&data[..]);
        let range = offset..offset + len;
        let ctx = self.core.ctx.clone();
        // A failure part-way must leave the copies agreeing: exact when the host copy is valid
        // everywhere or absent; with a partly stale host copy (`DeviceDirty`) that takes
        // transfers the background thread cannot make safely, so the write is made at once.
        let recoverable = matches!(
            self.state(),
            CoherenceState::Synchronized | CoherenceState::DeviceOnly
        );
        if !ctx.asynchronous || self.core.shared || !recoverable || len == 0 {
            let outcome = self.write_from(offset, bytemuck::cast_slice(&data));
            return Ok(OwnedTransfer::ready(outcome.map(|()| data)));
        }
        ctx.check_open("writing to the device")?;
        let tracker = self.tracker.get_mut().unpoisoned();
        let t = transition(tracker.state, CoherenceEvent::Write(Side::Device))?;
        let mut after = tracker.snapshot();
        after.state = t.state;
        if t.state.is_allocated(Side::Host) {
            after.stale_mut(Side::Host).insert(range.clone());
        }
        let on_failure = (tracker.state == CoherenceState::Synchronized).then(|| {
            let mut kept = tracker.snapshot();
            kept.state = CoherenceState::HostDirty;
            *kept.stale_mut(Side::Device) = stale(range.clone());
            kept
        });
        let (core, slots, left) = (
            self.core.clone(),
            self.core.part.lend_copies(&self.owner),
            after_slot(),
        );
        let keep = left.clone();
        let job = ctx.background.spawn(move || {
            let outcome = (|| {
                let mut slot = slots.device.write();
                let bytes = bytemuck::cast_slice(&data);
                let start = Stopwatch::for_transfer(bytes.len());
                core.ctx
                    .engine
                    .write_on(&core.lane(), allocated_mut(&mut slot), offset, bytes)?;
                core.part.record(Direction::HostToDevice, len, start);
                Ok(())
            })();
            if outcome.is_ok() {
                *keep.lock().unpoisoned() = Some(after);
            }
            (outcome, data)
        })?;
        let done = job.event();
        // Every read and guard waits for the write (they settle it first): none may see the
        // bytes from before it, nor a block it is writing.
        self.valid.store(0, Ordering::Release);
        tracker.in_flight = Some(Box::new(InFlight {
            done,
            after: left,
            on_failure,
        }));
        Ok(OwnedTransfer::running(job))
    }

    /// Reads `dst.len()` elements' bytes at byte `offset` into `dst` without waiting for the
    /// device: from the device copy on the background thread where only the device holds a
    /// valid copy, otherwise from the host copy at once. The transfer owns `dst` and gives it
    /// back filled. Changes no state.
    pub(crate) fn read_async<T: Element>(
        &self,
        offset: usize,
        mut dst: Vec<T>,
    ) -> Result<OwnedTransfer<Vec<T>>> {
        if dst.is_empty() {
            // Nothing to read, and no transfer of nothing to ask the device for.
            return Ok(OwnedTransfer::ready(Ok(dst)));
        }
        let ctx = &self.core.ctx;
        if !ctx.asynchronous || self.is_valid(Side::Host) {
            let outcome = self.read_into(offset, bytemuck::cast_slice_mut(&mut dst));
            return Ok(OwnedTransfer::ready(outcome.map(|()| dst)));
        }
        ctx.check_open("reading from the device")?;
        let mut tracker = self.tracker.lock().unpoisoned();
        self.settle_locked(&mut tracker);
        if !tracker.state.is_valid(Side::Device) || tracker.state.is_valid(Side::Host) {
            drop(tracker);
            let outcome = self.read_into(offset, bytemuck::cast_slice_mut(&mut dst));
            return Ok(OwnedTransfer::ready(outcome.map(|()| dst)));
        }
        self.core.part.touch();
        let (core, slots) = (self.core.clone(), self.core.part.lend_copies(&self.owner));
        let job = ctx.background.spawn(move || {
            let outcome = (|| {
                let slot = slots.device.read();
                let bytes = bytemuck::cast_slice_mut(&mut dst);
                let start = Stopwatch::for_transfer(bytes.len());
                core.ctx
                    .engine
                    .read_on(&core.lane(), allocated(&slot), offset, bytes)?;
                core.part
                    .record(Direction::DeviceToHost, bytes.len(), start);
                Ok(())
            })();
            (outcome, dst)
        })?;
        tracker.in_flight = Some(Box::new(InFlight {
            done: job.event(),
            after: after_slot(),
            on_failure: None,
        }));
        Ok(OwnedTransfer::running(job))
    }
}

/// Where a job leaves the tracker it produced.
fn after_slot() -> Arc<Mutex<Option<Tracker>>> {
    Arc::new(Mutex::new(None))
}

/// `range` alone, as stale ranges.
fn stale(range: Range<usize>) -> RangeSet {
    let mut set = RangeSet::default();
    set.insert(range);
    set
}
