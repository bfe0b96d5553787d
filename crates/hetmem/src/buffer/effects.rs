//! [`Core`]: what carries out the coherence table's effects on a buffer's two slots —
//! allocate, zero, upload, download, reallocate — and lets device blocks go.

use crate::host::Stopwatch;
use std::ops::Range;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;

use super::coherence::{CoherenceState, Effect, Side, Transition};
use super::context::ContextShared;
use super::range_set::RangeSet;
use super::shared_part::SharedPart;
use super::tracker::{allocated, allocated_mut, host_bytes, host_bytes_mut, Tracker};
use crate::backend::{Backend, DeviceBlock};
use crate::error::Result;
use crate::pool::{CachingAllocator, PooledBlock};
use crate::transfer::{Direction, Lane, Strategy};

/// What the effects need besides the slots and the tracker (cheap to clone: a transfer in
/// flight takes a copy).
#[derive(Clone)]
pub(super) struct Core {
    pub(super) ctx: Arc<ContextShared>,
    /// Length in bytes.
    pub(super) len: usize,
    pub(super) shared: bool,
    /// Large syncs use this strategy instead of the engine's (pinned staging for `HostPinned`).
    pub(super) strategy: Option<Strategy>,
    /// Whether first use fills with zeros (otherwise the contents start unspecified).
    pub(super) zero_fill: bool,
    /// Whether memory comes from the context's caching pools (otherwise from its unpooled
    /// allocators: a backend allocation each time, released when the buffer lets it go).
    pub(super) pooled: bool,
    /// Whether the host copy is the device's page-locked memory (`Placement::HostPinned`),
    /// from the engine's pinned pool.
    pub(super) pinned: bool,
    /// The buffer's shared part: its copies (reached through the storage's owner token), its
    /// metric cells and its observer.
    pub(super) part: Arc<SharedPart>,
}

impl Core {
    /// The lane this buffer's transfers take.
    pub(super) fn lane(&self) -> Lane<'_> {
        let lane = Lane::new(&self.ctx.queue, None);
        match self.strategy {
            Some(strategy) => lane.with_strategy(strategy),
            None => lane,
        }
    }

    pub(super) fn pool(&self, side: Side) -> &CachingAllocator {
        match (side, self.pooled) {
            (Side::Host, true) => &self.ctx.host,
            (Side::Device, true) => &self.ctx.device,
            (Side::Host, false) => &self.ctx.host_unpooled,
            (Side::Device, false) => &self.ctx.device_unpooled,
        }
    }

    /// A block of `len` bytes for `side`: from its pool; for a pinned host copy page-locked
    /// memory from the pinned pool, adopted by the host backend; for a shared buffer on a
    /// device whose blocks are not host memory, a shared allocation (SVM, managed memory).
    pub(super) fn allocate(&self, side: Side, len: usize) -> Result<PooledBlock> {
        if side == Side::Host && self.pinned {
            return self.ctx.pinned_host(len);
        }
        if self.shared && !self.ctx.host_addressable {
            return self.ctx.shared_allocation(len, self.pooled);
        }
        self.pool(side).allocate(len)
    }

    /// Puts `block` in `slot` as the `side` copy, noting where it is for snapshots.
    pub(super) fn place(&self, side: Side, slot: &mut Option<PooledBlock>, block: PooledBlock) {
        self.part.placed(side, block.block().raw_handle() as usize);
        *slot = Some(block);
    }

    /// [`Core::allocate`] into `slot`.
    pub(super) fn allocate_into(&self, side: Side, slot: &mut Option<PooledBlock>) -> Result<()> {
        let block = self.allocate(side, self.len)?;
        self.place(side, slot, block);
        Ok(())
    }

    pub(super) fn backend(&self, side: Side) -> &dyn Backend {
        &**self.pool(side).backend()
    }

    /// Carries out transition `t`, whose effects all make `side` (held in `target`) valid,
    /// reading from the other side (`source`). Bytes in `exclude` are about to be overwritten
    /// whole, so they are neither transferred nor zeroed. The state changes only once every
    /// effect has succeeded: a failure leaves the valid side valid.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn perform(
        &self,
        tracker: &mut Tracker,
        valid: &AtomicU8,
        side: Side,
        t: Transition,
        target: &mut Option<PooledBlock>,
        source: &Option<PooledBlock>,
        exclude: &Range<usize>,
    ) -> Result<()> {
        let untouched = || RangeSet::full(self.len).without(exclude);
        for &effect in t.effects {
            match effect {
                Effect::Allocate(_) => {
                    // A block reserved when the buffer was made is used if it is big enough.
                    if target.as_ref().is_none_or(|b| b.capacity() < self.len) {
                        self.allocate_into(side, target)?;
                    }
                    *tracker.stale_mut(side) = RangeSet::full(self.len);
                    // Reads of an uninitialised buffer see zeros (the device side has an
                    // explicit Zero effect).
                    if tracker.state == CoherenceState::Uninitialized
                        && side == Side::Host
                        && self.zero_fill
                    {
                        self.zero(side, allocated_mut(target), &untouched())?;
                    }
                }
                Effect::Zero(_) if self.zero_fill => {
                    self.zero(side, allocated_mut(target), &untouched())?
                }
                Effect::Zero(_) => {}
                Effect::Upload | Effect::Download => {
                    let ranges = tracker.stale(side).plan_without(self.len, exclude);
                    self.transfer(side, &ranges, allocated_mut(target), source)?;
                }
                other => unreachable!("{other:?} never makes a side valid"),
            }
        }
        tracker.stale_mut(side).clear();
        tracker.set_state(t.state, valid);
        Ok(())
    }

    pub(super) fn zero(
        &self,
        side: Side,
        block: &mut DeviceBlock,
        ranges: &RangeSet,
    ) -> Result<()> {
        let backend = self.backend(side);
        match side {
            Side::Host => {
                let bytes = host_bytes_mut(backend, block)?;
                for r in ranges.ranges() {
                    bytes[r.clone()].fill(0);
                }
            }
            Side::Device => {
                let lane = self.lane();
                for r in ranges.ranges() {
                    (self.ctx.engine).fill_on(&lane, block, r.start, r.len(), &[0])?;
                }
            }
        }
        Ok(())
    }

    /// Moves the `stale` ranges of `side` from the other side.
    pub(super) fn transfer(
        &self,
        side: Side,
        ranges: &[Range<usize>],
        target: &mut DeviceBlock,
        source: &Option<PooledBlock>,
    ) -> Result<()> {
        if ranges.is_empty() {
            return Ok(());
        }
        let bytes = ranges.iter().map(|r| r.len()).sum();
        let start = Stopwatch::for_transfer(bytes);
        let engine = &self.ctx.engine;
        let lane = self.lane();
        let host = self.backend(Side::Host);
        match side {
            Side::Device => {
                let from = host_bytes(host, allocated(source))?;
                for r in ranges {
                    engine.write_on(&lane, target, r.start, &from[r.clone()])?;
                }
            }
            Side::Host => {
                let from = allocated(source);
                let to = host_bytes_mut(host, target)?;
                for r in ranges {
                    engine.read_on(&lane, from, r.start, &mut to[r.clone()])?;
                }
            }
        }
        let direction = match side {
            Side::Device => Direction::HostToDevice,
            Side::Host => Direction::DeviceToHost,
        };
        self.part.record(direction, bytes, start);
        Ok(())
    }

    /// Lets a device block go back to its pool. If the user's device work may use it
    /// (`exposed`), it goes with a marker of the buffer's queue, so the pool hands it out again
    /// only after that work is done; if even the marker cannot be enqueued, the device is
    /// waited for.
    pub(super) fn retire(&self, block: Option<PooledBlock>, exposed: bool) {
        let Some(mut block) = block else { return };
        self.part.retired(block.block().raw_handle() as usize);
        if exposed {
            let backend = self.ctx.device_backend();
            match backend.enqueue_marker(&self.ctx.queue) {
                Ok(marker) => block.record(marker),
                // Nothing to report to from a release; a device that cannot enqueue a marker
                // runs nothing more on this block once synchronised.
                Err(_) => drop(backend.synchronize()),
            }
        }
        drop(block);
    }

    /// Gives a valid side a new length, keeping its prefix and zeroing any new tail.
    pub(super) fn reallocate(
        &self,
        side: Side,
        slot: &mut Option<PooledBlock>,
        new_len: usize,
    ) -> Result<()> {
        let old_len = self.len;
        let tail = RangeSet::full(new_len).without(&(0..old_len));
        let current = slot.as_mut().expect("a valid side is allocated");
        if new_len <= current.capacity() {
            return self.zero(side, current.block_mut(), &tail);
        }
        let mut fresh = self.allocate(side, new_len)?;
        let keep = old_len.min(new_len);
        match side {
            Side::Host => {
                let backend = self.backend(side);
                let from = host_bytes(backend, current.block())?;
                host_bytes_mut(backend, fresh.block_mut())?[..keep].copy_from_slice(&from[..keep]);
            }
            Side::Device => {
                let start = Stopwatch::for_transfer(keep);
                let (from, to) = (current.block(), fresh.block_mut());
                (self.ctx.engine).copy_on(&self.lane(), from, 0, to, 0, keep)?;
                self.part.record(Direction::DeviceToDevice, keep, start);
            }
        }
        self.zero(side, fresh.block_mut(), &tail)?;
        self.place(side, slot, fresh);
        Ok(())
    }
}
