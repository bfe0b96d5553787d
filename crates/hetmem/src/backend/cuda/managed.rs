//! Shared allocations on CUDA: managed memory (`cuMemAllocManaged`), which host and device
//! address at one pointer and the driver migrates page by page. Offered only where the device
//! has *concurrent* managed access (Pascal and later, on Linux): elsewhere the host may not
//! touch managed memory while any kernel runs in the context, which the buffer's ordering
//! (waiting for its own queue) cannot promise.

use std::ffi::c_void;
use std::ptr::NonNull;

use cudarc::driver::sys::{self, CUdevice_attribute, CUdeviceptr, CUmemAttach_flags, CUmem_advise};
use cudarc::driver::{result, CudaContext};

use super::driver::{self, allocation_error, DriverResult, Status};
use super::CudaBackend;
use crate::backend::{raw, DeviceBlock, MigrateTo, Queue};
use crate::error::Result;

/// The driver calls managed memory needs (looked up before the first call).
const MANAGED_SYMBOLS: &[&str] = &["cuMemAllocManaged", "cuMemAdvise", "cuMemPrefetchAsync"];

/// `CU_DEVICE_CPU`: the host, as a destination of prefetches.
const CPU: sys::CUdevice = -1;

/// Whether the device offers managed memory that the host may use while kernels run.
pub(super) fn managed_memory(ctx: &CudaContext) -> Result<bool> {
    let attribute = |a| ctx.attribute(a).cu("cuDeviceGetAttribute");
    Ok(
        attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY)? > 0
            && attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS)? > 0
            && driver::missing_symbol(MANAGED_SYMBOLS).is_none(),
    )
}

impl CudaBackend {
    /// `bytes` of managed memory, preferring this device's memory as its home (pages fetched
    /// by the host migrate back when the device next touches them).
    pub(super) fn allocate_managed(&self, bytes: usize) -> Result<DeviceBlock> {
        self.ctx.bind_to_thread().cu("cuCtxSetCurrent")?;
        // SAFETY: a non-zero size (checked by the caller); the context is current.
        let address =
            unsafe { result::malloc_managed(bytes, CUmemAttach_flags::CU_MEM_ATTACH_GLOBAL) }
                .map_err(|e| allocation_error("cuMemAllocManaged", e, bytes))?;
        let device = self.ctx.cu_device();
        // SAFETY: advice over the whole new allocation; advice never changes its contents.
        let advised = unsafe {
            sys::cuMemAdvise(
                address,
                bytes,
                CUmem_advise::CU_MEM_ADVISE_SET_PREFERRED_LOCATION,
                device,
            )
        }
        .cu("cuMemAdvise");
        let host = NonNull::new(address as *mut u8);
        match (advised, host) {
            (Ok(()), Some(host)) => {
                let handle = address as *mut c_void;
                // SAFETY: a new managed allocation of `bytes` bytes, addressed by the host at
                // the same pointer, handed out once and freed in `release`.
                Ok(unsafe { raw::shared_block(self.id, handle, bytes, host) })
            }
            (outcome, _) => {
                // SAFETY: the allocation was never handed out.
                let _ = unsafe { result::free_sync(address) };
                outcome?;
                Err(crate::error::Error::invalid(
                    "cuMemAllocManaged returned null",
                ))
            }
        }
    }

    /// Starts a prefetch of the whole block to `to`, ordered on `queue`.
    pub(super) fn prefetch(&self, queue: &Queue, block: &DeviceBlock, to: MigrateTo) -> Result<()> {
        let stream = self.bound(queue)?;
        let destination = match to {
            MigrateTo::Device => self.ctx.cu_device(),
            MigrateTo::Host => CPU,
        };
        // SAFETY: the block is a live managed allocation of this context (the caller's
        // guarantee) and the stream is this backend's; a prefetch never changes contents.
        unsafe {
            sys::cuMemPrefetchAsync(
                block.raw_handle() as CUdeviceptr,
                block.size(),
                destination,
                stream.cu_stream(),
            )
        }
        .cu("cuMemPrefetchAsync")
    }
}
