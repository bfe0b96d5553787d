//! A buffer's state apart from its operations: the two slots ([`Slots`]), the coherence state
//! with each side's stale ranges ([`Tracker`]), and the lock-free mirror of which sides are
//! valid that guards check without taking the tracker's lock.

use std::sync::atomic::{AtomicU8, Ordering};

use super::coherence::{CoherenceState, Side};
use super::in_flight::InFlight;
use super::range_set::RangeSet;
use crate::backend::{Backend, DeviceBlock, Slot, SlotRead, SlotWrite};
use crate::error::{Error, Result};
use crate::pool::PooledBlock;

const HOST_VALID: u8 = 1;
const DEVICE_VALID: u8 = 2;

/// A buffer's two copies.
pub(super) struct Slots {
    /// The host copy (unused with shared residency).
    pub(super) host: Slot<Option<PooledBlock>>,
    /// The device copy, or with shared residency the one allocation.
    pub(super) device: Slot<Option<PooledBlock>>,
}

impl Slots {
    /// The slot that `side` makes valid, locked for writing, and the other side's, for reading.
    pub(super) fn for_making_valid(
        &self,
        side: Side,
    ) -> (
        SlotWrite<'_, Option<PooledBlock>>,
        SlotRead<'_, Option<PooledBlock>>,
    ) {
        match side {
            Side::Host => (self.host.write(), self.device.read()),
            Side::Device => (self.device.write(), self.host.read()),
        }
    }
}

/// The coherence state and, per side, the byte ranges where that side is stale.
pub(super) struct Tracker {
    pub(super) state: CoherenceState,
    pub(super) stale_host: RangeSet,
    pub(super) stale_device: RangeSet,
    /// A transfer on the background thread.
    pub(super) in_flight: Option<Box<InFlight>>,
}

impl Tracker {
    pub(super) fn new() -> Self {
        Tracker {
            state: CoherenceState::Uninitialized,
            stale_host: RangeSet::default(),
            stale_device: RangeSet::default(),
            in_flight: None,
        }
    }

    /// The state and stale ranges, for a transfer in flight to work on.
    pub(super) fn snapshot(&self) -> Tracker {
        Tracker {
            state: self.state,
            stale_host: self.stale_host.clone(),
            stale_device: self.stale_device.clone(),
            in_flight: None,
        }
    }

    /// Waits for the transfer in flight, if any, and takes in what it left (see
    /// [`InFlight`]); the validity mirror is published again either way.
    pub(super) fn settle(&mut self, valid: &AtomicU8) {
        let Some(job) = self.in_flight.take() else {
            return;
        };
        if let Some(after) = job.wait() {
            self.stale_host = after.stale_host;
            self.stale_device = after.stale_device;
            self.state = after.state;
        }
        self.set_state(self.state, valid);
    }

    /// [`Tracker::settle`] if the transfer in flight has already finished.
    pub(super) fn settle_if_finished(&mut self, valid: &AtomicU8) {
        if self.in_flight.as_ref().is_some_and(|job| job.is_finished()) {
            self.settle(valid);
        }
    }

    pub(super) fn stale(&self, side: Side) -> &RangeSet {
        match side {
            Side::Host => &self.stale_host,
            Side::Device => &self.stale_device,
        }
    }

    pub(super) fn stale_mut(&mut self, side: Side) -> &mut RangeSet {
        match side {
            Side::Host => &mut self.stale_host,
            Side::Device => &mut self.stale_device,
        }
    }

    pub(super) fn set_state(&mut self, state: CoherenceState, valid: &AtomicU8) {
        self.state = state;
        valid.store(valid_bits(state), Ordering::Release);
    }
}

pub(super) fn valid_bits(state: CoherenceState) -> u8 {
    let host = if state.is_valid(Side::Host) {
        HOST_VALID
    } else {
        0
    };
    let device = if state.is_valid(Side::Device) {
        DEVICE_VALID
    } else {
        0
    };
    host | device
}

pub(super) fn side_bit(side: Side) -> u8 {
    match side {
        Side::Host => HOST_VALID,
        Side::Device => DEVICE_VALID,
    }
}

/// The block in a slot that the protocol guarantees is allocated.
#[inline]
pub(crate) fn allocated(slot: &Option<PooledBlock>) -> &DeviceBlock {
    slot.as_ref()
        .expect("a side in a valid or stale state is allocated")
        .block()
}

pub(super) fn allocated_mut(slot: &mut Option<PooledBlock>) -> &mut DeviceBlock {
    slot.as_mut()
        .expect("a side in a valid or stale state is allocated")
        .block_mut()
}

/// A host-addressable block's bytes.
#[inline]
pub(crate) fn host_bytes<'a>(backend: &dyn Backend, block: &'a DeviceBlock) -> Result<&'a [u8]> {
    backend
        .host_bytes(block)
        .ok_or_else(|| Error::invalid(format!("{backend:?} memory is not host-addressable")))
}

pub(super) fn host_bytes_mut<'a>(
    backend: &dyn Backend,
    block: &'a mut DeviceBlock,
) -> Result<&'a mut [u8]> {
    backend
        .host_bytes_mut(block)
        .ok_or_else(|| Error::invalid(format!("{backend:?} memory is not host-addressable")))
}
