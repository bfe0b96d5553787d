//! Reaching the CUDA driver safely: whether libcuda loads and has every entry point hetmem
//! calls, and driver statuses as hetmem errors.
//!
//! cudarc loads libcuda at run time and resolves each symbol on first call, *panicking* when
//! the library or a symbol is missing. Everything here runs before the first driver call, so
//! that a machine without CUDA, or with a driver too old, gets [`Error::BackendUnavailable`].

use std::ffi::CStr;

use cudarc::driver::sys::{self, CUresult};
use cudarc::driver::DriverError;

use crate::backend::BackendKind;
use crate::error::{BackendError, Error};

/// Every driver entry point hetmem (and the parts of cudarc it uses) calls, by the names
/// cudarc's CUDA 11.4 bindings load. All exist in every driver since CUDA 11.4.
const REQUIRED_SYMBOLS: &[&str] = &[
    "cuInit",
    "cuDriverGetVersion",
    "cuGetErrorName",
    "cuGetErrorString",
    "cuDeviceGet",
    "cuDeviceGetCount",
    "cuDeviceGetName",
    "cuDeviceTotalMem_v2",
    "cuDeviceGetAttribute",
    "cuDeviceCanAccessPeer",
    "cuDevicePrimaryCtxRetain",
    "cuDevicePrimaryCtxRelease_v2",
    "cuCtxGetCurrent",
    "cuCtxSetCurrent",
    "cuCtxSynchronize",
    "cuMemGetInfo_v2",
    "cuStreamCreate",
    "cuStreamDestroy_v2",
    "cuStreamSynchronize",
    "cuStreamWaitEvent",
    "cuLaunchHostFunc",
    "cuEventCreate",
    "cuEventRecord",
    "cuEventQuery",
    "cuEventSynchronize",
    "cuEventDestroy_v2",
    "cuMemAlloc_v2",
    "cuMemFree_v2",
    "cuMemHostAlloc",
    "cuMemFreeHost",
    "cuMemcpyHtoDAsync_v2",
    "cuMemcpyDtoHAsync_v2",
    "cuMemcpyDtoDAsync_v2",
    "cuMemcpyPeerAsync",
    "cuMemsetD8Async",
    "cuMemsetD16Async",
    "cuMemsetD32Async",
    "cuMemsetD2D32Async",
];

/// Used only where the device reports memory-pool support (CUDA 11.2 and later drivers).
pub(super) const ASYNC_ALLOCATION_SYMBOLS: &[&str] = &["cuMemAllocAsync", "cuMemFreeAsync"];

/// Checks that libcuda loads and exports every symbol hetmem needs, without calling into it.
pub(super) fn check_driver() -> Result<(), Error> {
    // SAFETY: only tries to open the library by its usual names; no symbol is called.
    if !unsafe { sys::is_culib_present() } {
        return Err(unavailable(
            "the CUDA driver library (libcuda.so) could not be loaded: no NVIDIA driver is \
             installed, or it is not on the loader's path",
        ));
    }
    if let Some(missing) = missing_symbol(REQUIRED_SYMBOLS) {
        return Err(unavailable(&format!(
            "the installed CUDA driver lacks {missing}; hetmem needs a driver for CUDA 11.4 or \
             newer"
        )));
    }
    Ok(())
}

/// The first of `names` the loaded driver does not export.
pub(super) fn missing_symbol(names: &[&'static str]) -> Option<&'static str> {
    names.iter().copied().find(|name| {
        // SAFETY: `is_culib_present` returned true, so `culib` opens the library instead of
        // panicking; looking a symbol up does not call it, and the pointer type is never used.
        unsafe {
            sys::culib()
                .get::<unsafe extern "C" fn()>(name.as_bytes())
                .is_err()
        }
    })
}

pub(super) fn unavailable(reason: &str) -> Error {
    Error::BackendUnavailable {
        backend: BackendKind::Cuda,
        reason: reason.to_owned(),
    }
}

/// The driver's symbolic name for a status (`"CUDA_ERROR_OUT_OF_MEMORY"`).
fn name(code: CUresult) -> &'static str {
    let mut text = std::ptr::null();
    // SAFETY: cuGetErrorName writes a pointer to a NUL-terminated string in the driver's
    // static table (or leaves it null for an unknown code); the library stays loaded for the
    // life of the process (cudarc keeps it in a static), so the string is 'static.
    unsafe {
        if sys::cuGetErrorName(code, &mut text) == CUresult::CUDA_SUCCESS && !text.is_null() {
            CStr::from_ptr(text)
                .to_str()
                .unwrap_or("CUDA_ERROR_UNKNOWN")
        } else {
            "CUDA_ERROR_UNKNOWN"
        }
    }
}

/// A driver status as a hetmem error.
pub(super) fn cu_error(operation: &'static str, error: DriverError) -> Error {
    let code = error.0;
    Error::Backend(BackendError {
        backend: BackendKind::Cuda,
        operation,
        code: code as i64,
        name: name(code),
        retryable: code == CUresult::CUDA_ERROR_OUT_OF_MEMORY,
    })
}

/// [`cu_error`], but running out of device or pinned memory is [`Error::OutOfMemory`], which
/// the pools answer by freeing their caches and retrying.
pub(super) fn allocation_error(operation: &'static str, error: DriverError, bytes: usize) -> Error {
    if error.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY {
        Error::OutOfMemory {
            backend: BackendKind::Cuda,
            requested: bytes as u64,
            diagnosis: None,
        }
    } else {
        cu_error(operation, error)
    }
}

/// Extension for `Result<T, DriverError>`: `.cu("cuMemAlloc")?`.
pub(super) trait DriverResult<T> {
    fn cu(self, operation: &'static str) -> Result<T, Error>;
}

impl<T> DriverResult<T> for Result<T, DriverError> {
    fn cu(self, operation: &'static str) -> Result<T, Error> {
        self.map_err(|e| cu_error(operation, e))
    }
}

/// Extension for raw `CUresult`s from `sys::` calls.
pub(super) trait Status {
    fn cu(self, operation: &'static str) -> Result<(), Error>;
}

impl Status for CUresult {
    fn cu(self, operation: &'static str) -> Result<(), Error> {
        self.result().cu(operation)
    }
}
