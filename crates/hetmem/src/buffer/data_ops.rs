//! A buffer's byte operations — read, write, fill, copy — and what a failure part-way leaves:
//! the copies agree, or the range reads one way from then on (failure atomicity).

use crate::host::Stopwatch;
use std::ops::Range;
use std::sync::atomic::Ordering;

use super::coherence::{CoherenceState, Side};
use super::range_set::RangeSet;
use super::storage::BufferStorage;
use super::tracker::{allocated, allocated_mut, Tracker};
use crate::error::Result;
use crate::sync::Unpoison;
use crate::transfer::Direction;

impl BufferStorage {
    /// Copies bytes at `offset` into `dst` from whichever side is valid: a direct device read
    /// when only the device is, zeros when nothing was ever written.
    pub(crate) fn read_into(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.core.part.touch();
        if self.valid.load(Ordering::Acquire) == 0 {
            // Nothing written yet, or a write in flight hides the valid sides: take it in.
            self.tracker.lock().unpoisoned().settle(&self.valid);
        }
        if self.is_valid(Side::Host) {
            self.await_device_work()?;
            let bytes = self.host_bytes()?;
            dst.copy_from_slice(&bytes[offset..offset + dst.len()]);
        } else if self.is_valid(Side::Device) {
            self.core.ctx.check_open("reading from the device")?;
            let slot = self.device_slot();
            let start = Stopwatch::for_transfer(dst.len());
            let lane = self.core.lane();
            self.core
                .ctx
                .engine
                .read_on(&lane, allocated(&slot), offset, dst)?;
            self.core
                .part
                .record(Direction::DeviceToHost, dst.len(), start);
        } else {
            dst.fill(0);
        }
        Ok(())
    }

    /// Writes `src` at `offset` into the newest copy: the host copy when it is valid (or nothing
    /// exists yet), otherwise straight to the device, so a write never forces a download.
    pub(crate) fn write_from(&mut self, offset: usize, src: &[u8]) -> Result<()> {
        self.settle();
        let range = offset..offset + src.len();
        if self.core.shared || !self.newest_only_on_device() {
            self.acquire_mut(Side::Host, range.clone(), true)?;
            self.host_bytes_mut()?[range].copy_from_slice(src);
            return Ok(());
        }
        self.core.ctx.check_open("writing to the device")?;
        let start = Stopwatch::for_transfer(src.len());
        let (core, _, slots, _) = self.parts_mut();
        let block = allocated_mut(slots.device.get_mut());
        let written = core.ctx.engine.write_on(&core.lane(), block, offset, src);
        self.unless_failed(written, Side::Device, &range)?;
        self.core
            .part
            .record(Direction::HostToDevice, src.len(), start);
        self.acquire_mut(Side::Device, range, true)
    }

    /// Repeats `pattern` over `range` on the newest copy (a device fill when only the device is
    /// valid and the backend can fill with this pattern at this offset).
    pub(crate) fn fill(&mut self, range: Range<usize>, pattern: &[u8]) -> Result<()> {
        self.settle();
        let p = pattern.len();
        let device_fill = !self.core.shared
            && self.newest_only_on_device()
            && p.is_power_of_two()
            && p <= 128
            && range.start % p == 0;
        if device_fill {
            self.core.ctx.check_open("filling on the device")?;
            let (core, _, slots, _) = self.parts_mut();
            let block = allocated_mut(slots.device.get_mut());
            let filled =
                (core.ctx.engine).fill_on(&core.lane(), block, range.start, range.len(), pattern);
            self.unless_failed(filled, Side::Device, &range)?;
            return self.acquire_mut(Side::Device, range, true);
        }
        self.acquire_mut(Side::Host, range.clone(), true)?;
        for chunk in self.host_bytes_mut()?[range].chunks_exact_mut(p) {
            chunk.copy_from_slice(pattern);
        }
        Ok(())
    }

    /// Copies `src` of `other` into `dst` of this storage: device to device when `other` is
    /// valid on the same device and this buffer's device copy is valid (or overwritten whole),
    /// otherwise through the host.
    pub(crate) fn copy_from(
        &mut self,
        dst: Range<usize>,
        other: &BufferStorage,
        src: Range<usize>,
    ) -> Result<()> {
        self.settle();
        other.state(); // takes in a transfer of `other` that has finished
        let same_device =
            self.core.ctx.device_backend().id() == other.core.ctx.device_backend().id();
        let device_side_ready = self.is_valid(Side::Device) || dst == (0..self.core.len);
        if same_device && other.is_valid(Side::Device) && device_side_ready {
            self.core.ctx.check_open("copying on the device")?;
            // The copy goes into the device block before any state changes: a failure leaves
            // the buffer as it was (or, over `dst`, the other copy valid).
            self.ensure_block(Side::Device)?;
            let from = other.device_slot();
            let start = Stopwatch::for_transfer(dst.len());
            let (core, _, slots, _) = self.parts_mut();
            let block = allocated_mut(slots.device.get_mut());
            let copied = (core.ctx.engine).copy_on(
                &core.lane(),
                allocated(&from),
                src.start,
                block,
                dst.start,
                dst.len(),
            );
            if self.is_valid(Side::Device) {
                self.unless_failed(copied, Side::Device, &dst)?;
            } else {
                copied?; // the device copy was not valid: nothing to take back
            }
            self.core
                .part
                .record(Direction::DeviceToDevice, dst.len(), start);
            return self.acquire_mut(Side::Device, dst, true);
        }
        if self.core.shared || !self.newest_only_on_device() {
            let before = self.tracker.get_mut().unpoisoned().snapshot();
            self.acquire_mut(Side::Host, dst.clone(), true)?;
            let read = other.read_into(src.start, &mut self.host_bytes_mut()?[dst.clone()]);
            return self.after_failed_write(read, Side::Host, &dst, before);
        }
        let mut staged = vec![0u8; src.len()];
        other.read_into(src.start, &mut staged)?;
        self.write_from(dst.start, &staged)
    }

    /// Passes `outcome` on; if it is a failure of a write into `side` over `range` that the
    /// tracker has not yet recorded, the buffer is first made consistent
    /// ([`BufferStorage::after_failed_write`]).
    pub(super) fn unless_failed(
        &mut self,
        outcome: Result<()>,
        side: Side,
        range: &Range<usize>,
    ) -> Result<()> {
        if outcome.is_ok() {
            return outcome;
        }
        let before = self.tracker.get_mut().unpoisoned().snapshot();
        self.after_failed_write(outcome, side, range, before)
    }

    /// After a write into `side` over `range` failed part-way — `before` is the tracker as it
    /// was before the operation — the copies must agree again. The other side, where it exists,
    /// is brought up to date over exactly its stale ranges from `side` and becomes the valid
    /// one; `side` goes stale over `range`. So over `range` the other side's old bytes survive
    /// wherever it held them; where only `side` held them, the range holds what the failed write
    /// left (unspecified, the same on both sides). Without another copy (`HostOnly`,
    /// `DeviceOnly`, shared residency) the range is unspecified. Passes `outcome` on.
    pub(super) fn after_failed_write(
        &mut self,
        outcome: Result<()>,
        side: Side,
        range: &Range<usize>,
        before: Tracker,
    ) -> Result<()> {
        let Err(error) = outcome else {
            return Ok(());
        };
        let (core, tracker, slots, valid) = self.parts_mut();
        tracker.state = before.state;
        tracker.stale_host = before.stale_host;
        tracker.stale_device = before.stale_device;
        let other = side.other();
        // Shared residency has one allocation for both sides: no other copy to fall back on.
        if tracker.state.is_allocated(other) && !core.shared {
            let (target, source) = match other {
                Side::Host => (slots.host.get_mut(), &*slots.device.get_mut()),
                Side::Device => (slots.device.get_mut(), &*slots.host.get_mut()),
            };
            // Exactly the stale ranges: merging would copy `range`'s wrong bytes over old ones.
            let stale = tracker.stale(other).ranges().to_vec();
            if core
                .transfer(other, &stale, allocated_mut(target), source)
                .is_ok()
            {
                tracker.stale_mut(other).clear();
                *tracker.stale_mut(side) = RangeSet::default();
                tracker.stale_mut(side).insert(range.clone());
                tracker.state = match other {
                    Side::Host => CoherenceState::HostDirty,
                    Side::Device => CoherenceState::DeviceDirty,
                };
            }
        }
        tracker.set_state(tracker.state, valid);
        Err(error)
    }
}
