//! Virtual memory on CUDA, behind expandable segments: address space reserved
//! (`cuMemAddressReserve`) and backed granule by granule with physical allocations
//! (`cuMemCreate`, `cuMemMap`, `cuMemSetAccess`), unmapped and released on decommit. Offered
//! where the device manages virtual addresses and the driver exports the calls.

use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;
use std::sync::Mutex;

use cudarc::driver::sys::{self, CUdevice_attribute, CUdeviceptr, CUmemGenericAllocationHandle};
use cudarc::driver::CudaContext;

use super::driver::{self, allocation_error, DriverResult, Status};
use super::CudaBackend;
use crate::backend::raw::RawBackend;
use crate::backend::DeviceBlock;
use crate::error::{Error, Result};
use crate::sync::Unpoison;

/// The driver calls virtual memory needs (looked up before the first call).
const VMM_SYMBOLS: &[&str] = &[
    "cuMemAddressReserve",
    "cuMemAddressFree",
    "cuMemCreate",
    "cuMemRelease",
    "cuMemMap",
    "cuMemUnmap",
    "cuMemSetAccess",
    "cuMemGetAllocationGranularity",
];

/// A backend's reservations: each one's physical allocation per committed granule.
#[derive(Default)]
pub(super) struct Reservations {
    live: Mutex<HashMap<CUdeviceptr, BTreeMap<usize, CUmemGenericAllocationHandle>>>,
}

/// Device memory of `ctx`'s device, pinned (not migratable), as `cuMemCreate` takes it.
fn device_memory(ctx: &CudaContext) -> sys::CUmemAllocationProp {
    // SAFETY: a plain C struct for which all-zero bytes are valid (zero is a variant of each
    // enum: "invalid"/"none"); the fields that matter are set below.
    let mut prop: sys::CUmemAllocationProp = unsafe { std::mem::zeroed() };
    prop.type_ = sys::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location = location(ctx);
    prop
}

fn location(ctx: &CudaContext) -> sys::CUmemLocation {
    // SAFETY: as `device_memory`.
    let mut location: sys::CUmemLocation = unsafe { std::mem::zeroed() };
    location.type_ = sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
    location.id = ctx.cu_device();
    location
}

/// The granularity of physical allocations, where the device has virtual memory management.
pub(super) fn commit_granularity(ctx: &CudaContext) -> Result<Option<usize>> {
    let supported = ctx
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_VIRTUAL_ADDRESS_MANAGEMENT_SUPPORTED)
        .cu("cuDeviceGetAttribute")?
        > 0;
    if !supported || driver::missing_symbol(VMM_SYMBOLS).is_some() {
        return Ok(None);
    }
    ctx.bind_to_thread().cu("cuCtxSetCurrent")?;
    let prop = device_memory(ctx);
    let mut granularity = 0;
    // SAFETY: writes one size; `prop` describes this device's memory.
    unsafe {
        sys::cuMemGetAllocationGranularity(
            &mut granularity,
            &prop,
            sys::CUmemAllocationGranularity_flags::CU_MEM_ALLOC_GRANULARITY_MINIMUM,
        )
    }
    .cu("cuMemGetAllocationGranularity")?;
    Ok((granularity.is_power_of_two()).then_some(granularity))
}

impl CudaBackend {
    pub(super) fn reserve_addresses(&self, bytes: usize) -> Result<*mut c_void> {
        self.ctx.bind_to_thread().cu("cuCtxSetCurrent")?;
        let granularity = self.commit_granularity.unwrap_or(1);
        let mut address: CUdeviceptr = 0;
        // SAFETY: writes one address; `bytes` is a non-zero multiple of the granularity
        // (checked by the caller).
        unsafe { sys::cuMemAddressReserve(&mut address, bytes, granularity, 0, 0) }
            .result()
            .map_err(|e| allocation_error("cuMemAddressReserve", e, bytes))?;
        self.reservations
            .live
            .lock()
            .unpoisoned()
            .insert(address, BTreeMap::new());
        Ok(address as *mut c_void)
    }

    /// Maps a physical allocation under each granule of the range that has none.
    pub(super) fn commit_range(
        &self,
        reservation: &DeviceBlock,
        offset: usize,
        len: usize,
    ) -> Result<usize> {
        self.ctx.bind_to_thread().cu("cuCtxSetCurrent")?;
        let base = reservation.raw_handle() as CUdeviceptr;
        let g = self.commit_granularity.unwrap_or(len);
        let prop = device_memory(&self.ctx);
        let access = sys::CUmemAccessDesc {
            location: location(&self.ctx),
            flags: sys::CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
        };
        let mut live = self.reservations.live.lock().unpoisoned();
        let chunks = live.get_mut(&base).ok_or_else(not_reserved)?;
        let mut new = 0;
        for at in (offset..offset + len).step_by(g) {
            if chunks.contains_key(&at) {
                continue;
            }
            let mut handle: CUmemGenericAllocationHandle = 0;
            let address = base + at as CUdeviceptr;
            // SAFETY: a new physical allocation of one granule of this device, mapped at a
            // granule of the reservation that has none (the map says), made accessible to the
            // device; undone in order if a step fails.
            unsafe {
                sys::cuMemCreate(&mut handle, g, &prop, 0)
                    .result()
                    .map_err(|e| allocation_error("cuMemCreate", e, g))?;
                if let Err(e) = sys::cuMemMap(address, g, 0, handle, 0).cu("cuMemMap") {
                    let _ = sys::cuMemRelease(handle);
                    return Err(e);
                }
                if let Err(e) = sys::cuMemSetAccess(address, g, &access, 1).cu("cuMemSetAccess") {
                    let _ = sys::cuMemUnmap(address, g);
                    let _ = sys::cuMemRelease(handle);
                    return Err(e);
                }
            }
            chunks.insert(at, handle);
            new += g;
        }
        Ok(new)
    }

    /// Unmaps and releases the granules of the range that have memory, after every queue's
    /// work (which may use it) is done.
    pub(super) fn decommit_range(
        &self,
        reservation: &DeviceBlock,
        offset: usize,
        len: usize,
    ) -> Result<usize> {
        RawBackend::synchronize(self)?;
        let base = reservation.raw_handle() as CUdeviceptr;
        let mut live = self.reservations.live.lock().unpoisoned();
        let chunks = live.get_mut(&base).ok_or_else(not_reserved)?;
        let taken: Vec<_> = chunks
            .range(offset..offset + len)
            .map(|(&at, _)| at)
            .collect();
        let g = self.commit_granularity.unwrap_or(len);
        let mut was = 0;
        for at in taken {
            let handle = chunks[&at];
            // SAFETY: the granule at `at` is mapped to `handle` (the map says) and no work uses
            // it any more (synchronised above).
            unsafe {
                sys::cuMemUnmap(base + at as CUdeviceptr, g).cu("cuMemUnmap")?;
                sys::cuMemRelease(handle).cu("cuMemRelease")?;
            }
            chunks.remove(&at);
            was += g;
        }
        Ok(was)
    }

    /// Releases everything committed in a reservation, then its addresses.
    pub(super) fn release_addresses(&self, reservation: DeviceBlock) -> Result<usize> {
        let size = reservation.size();
        let was = self.decommit_range(&reservation, 0, size)?;
        let base = reservation.into_raw() as CUdeviceptr;
        self.reservations.live.lock().unpoisoned().remove(&base);
        // SAFETY: the reservation made by `reserve_addresses`, now with nothing mapped.
        unsafe { sys::cuMemAddressFree(base, size) }.cu("cuMemAddressFree")?;
        Ok(was)
    }
}

fn not_reserved() -> Error {
    Error::invalid("the block is not a live reservation of this backend")
}
