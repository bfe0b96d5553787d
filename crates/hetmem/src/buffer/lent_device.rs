//! The device block a [`DeviceMut`](super::DeviceMut) lends out, and taking it back.
//!
//! `block_mut` hands out `&mut DeviceBlock`, so safe code can `mem::swap` another block in. A
//! block the buffer did not lend is not its device copy — its size and contents are anyone's —
//! so when the guard ends the buffer lets the stranger go (its pool decides what to do with it,
//! see [`PooledBlock::block_mut`]) and carries on without a device copy: the host copy stays
//! where it is valid, and bytes whose only copy was on the device (they left with the block that
//! was swapped out) read as zeros.

use std::sync::atomic::AtomicU8;

use super::coherence::{CoherenceState, Side};
use super::context::ContextShared;
use super::effects::Core;
use super::range_set::RangeSet;
use super::tracker::{allocated, allocated_mut, Tracker};
use crate::backend::DeviceBlock;
use crate::pool::PooledBlock;

/// Exclusive access to a buffer's device block for the life of a device guard.
pub(crate) struct LentDevice<'a> {
    pub(super) core: &'a Core,
    pub(super) tracker: &'a mut Tracker,
    pub(super) host: &'a mut Option<PooledBlock>,
    pub(super) device: &'a mut Option<PooledBlock>,
    pub(super) valid: &'a AtomicU8,
    /// The lent block's address and size, to recognise it when the guard ends.
    pub(super) lent: (usize, usize),
}

impl LentDevice<'_> {
    pub(crate) fn block(&self) -> &DeviceBlock {
        allocated(self.device)
    }

    pub(crate) fn block_mut(&mut self) -> &mut DeviceBlock {
        allocated_mut(self.device)
    }

    pub(crate) fn ctx(&self) -> &ContextShared {
        &self.core.ctx
    }

    fn is_the_lent_block(&self) -> bool {
        let block = self.block();
        (block.raw_handle() as usize, block.size()) == self.lent
    }
}

impl Drop for LentDevice<'_> {
    fn drop(&mut self) {
        if self.is_the_lent_block() {
            return;
        }
        self.core.retire(self.device.take(), true);
        let tracker = &mut *self.tracker;
        let host_kept = !self.core.shared
            && match tracker.state {
                CoherenceState::Synchronized | CoherenceState::HostDirty => true,
                CoherenceState::DeviceDirty => {
                    let stale = std::mem::take(&mut tracker.stale_host);
                    let host = allocated_mut(self.host);
                    // Zeroing host memory only fails for memory that is not host memory, which
                    // a host copy never is.
                    self.core.zero(Side::Host, host, &stale).is_ok()
                }
                _ => false,
            };
        if !host_kept {
            // Shared residency lent its one allocation, or the device held everything.
            self.core.retire(self.host.take(), false);
        }
        tracker.stale_host = RangeSet::default();
        tracker.stale_device = RangeSet::default();
        let state = if host_kept {
            CoherenceState::HostOnly
        } else {
            CoherenceState::Uninitialized
        };
        tracker.set_state(state, self.valid);
    }
}
