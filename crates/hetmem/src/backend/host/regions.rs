//! The host backend's memory that is not plain heap memory, by address: regions of its own
//! [`HostSource`], memory adopted from outside hetmem, and address reservations
//! (`Backend::reserve`).

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::Ordering;

use super::{address, HostBackend};
use crate::backend::{BackendKind, DeviceBlock};
use crate::error::{Error, Result};
use crate::host::{AddressReservation, HostMemory, SourceStats};
use crate::sync::Unpoison;

/// The live blocks that are not plain heap memory — regions of the backend's own
/// [`HostSource`] and adopted memory — by address, and what the source was granted.
#[derive(Default)]
pub(super) struct Regions {
    pub(super) live: HashMap<usize, Live>,
    pub(super) stats: SourceStats,
    /// Address reservations ([`Backend::reserve`]), by address.
    reserved: HashMap<usize, AddressReservation>,
}

/// One block of [`Regions`]: its memory, and the bytes of it locked in RAM.
pub(super) struct Live {
    pub(super) memory: Box<dyn HostMemory>,
    pub(super) locked: u64,
}

impl HostBackend {
    /// Makes `memory` a block of this backend, counted in its usage like an allocation and
    /// given back — `memory` dropped: unmapped, closed, handed back — when the block is
    /// released. A buffer takes it through
    /// [`BufferContext::adopt_host`](crate::buffer::BufferContext::adopt_host).
    pub fn adopt(&self, memory: impl HostMemory) -> Result<DeviceBlock> {
        let (ptr, len) = (memory.as_ptr(), memory.len());
        if len == 0 {
            return Err(Error::ZeroLength {
                what: "adopted host memory",
            });
        }
        if !self.usage.try_allocate(len) {
            return Err(Error::OutOfMemory {
                backend: BackendKind::Host,
                requested: len as u64,
                diagnosis: None,
            });
        }
        self.adopted.store(true, Ordering::Release);
        let mut regions = self.regions.lock().unpoisoned();
        let memory = Box::new(memory);
        regions
            .live
            .insert(ptr as usize, Live { memory, locked: 0 });
        // SAFETY: `memory` keeps `len` bytes at `ptr` valid until `release` drops it (the
        // `HostMemory` contract); the block is handed out once.
        Ok(unsafe { DeviceBlock::from_raw(self.id, ptr.cast::<c_void>(), len) })
    }

    /// What the system granted this backend's blocks so far (all zero for the default source,
    /// whose blocks are plain heap memory).
    pub fn source_stats(&self) -> SourceStats {
        self.regions.lock().unpoisoned().stats.clone()
    }

    pub(super) fn reserve_addresses(&self, bytes: usize) -> Result<*mut c_void> {
        let reservation = AddressReservation::new(bytes)?;
        let ptr = reservation.as_ptr();
        let mut regions = self.regions.lock().unpoisoned();
        regions.reserved.insert(ptr as usize, reservation);
        Ok(ptr.cast())
    }

    pub(super) fn commit_range(
        &self,
        reservation: &DeviceBlock,
        offset: usize,
        len: usize,
    ) -> Result<usize> {
        let regions = self.regions.lock().unpoisoned();
        Ok(reserved(&regions, reservation)?.commit(offset, len))
    }

    /// Gives the granules back once held work on the reservation has run.
    pub(super) fn decommit_range(
        &self,
        reservation: &DeviceBlock,
        offset: usize,
        len: usize,
    ) -> Result<usize> {
        self.settle(&[reservation]);
        let regions = self.regions.lock().unpoisoned();
        reserved(&regions, reservation)?.decommit(offset, len)
    }

    /// Unmaps a reservation with everything committed in it; the bytes that were committed.
    pub(super) fn release_addresses(&self, reservation: DeviceBlock) -> Result<usize> {
        self.settle(&[&reservation]);
        let mut regions = self.regions.lock().unpoisoned();
        let released = regions.reserved.remove(&address(&reservation));
        let _ = reservation.into_raw();
        Ok(released.map_or(0, |r| r.committed()))
    }
}

/// The reservation behind a block.
fn reserved<'a>(regions: &'a Regions, block: &DeviceBlock) -> Result<&'a AddressReservation> {
    (regions.reserved.get(&address(block)))
        .ok_or_else(|| Error::invalid("the block is not a live reservation of this backend"))
}
