//! Memory made outside hetmem on a CUDA device: the caller's device pointers adopted as blocks
//! (handed back through the caller's callback), and host memory page-locked in place
//! (`cuMemHostRegister`) so that the device reaches it by DMA, as it does `cuMemHostAlloc` memory.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::sys::{self, CUdeviceptr};
use cudarc::driver::CudaContext;

use super::driver::{self, unavailable, DriverResult, Status};
use super::CudaBackend;
use crate::backend::{BackendKind, DeviceBlock};
use crate::error::{Error, Result};
use crate::host::HostMemory;
use crate::sync::Unpoison;

/// A callback that gives adopted device memory back to its owner.
type GiveBack = Box<dyn FnOnce() + Send + Sync>;

/// The adopted device pointers of a backend and their callbacks; `release` looks here first
/// once any was adopted (one relaxed load otherwise).
#[derive(Default)]
pub(super) struct Adopted {
    any: AtomicBool,
    callbacks: Mutex<HashMap<CUdeviceptr, GiveBack>>,
}

impl Adopted {
    /// The callback of `address`, if it was adopted (removed: it runs once).
    pub(super) fn take(&self, address: CUdeviceptr) -> Option<GiveBack> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.callbacks.lock().unpoisoned().remove(&address)
    }
}

/// The driver calls registration needs (looked up before the first call, like every other).
const REGISTRATION_SYMBOLS: &[&str] = &["cuMemHostRegister_v2", "cuMemHostUnregister"];

/// `memory`, page-locked for the device until dropped (then unregistered, and `memory` let go).
pub struct CudaRegistered<M: HostMemory> {
    memory: M,
    ctx: Arc<CudaContext>,
}

impl CudaBackend {
    /// `len` bytes of device memory at `address`, made by the caller, as a block of this
    /// backend: counted in its usage, and handed back by calling `give_back` once hetmem
    /// releases the block and every queue's work on it is done. A buffer takes it through
    /// [`BufferContext::adopt_device`](crate::buffer::BufferContext::adopt_device).
    ///
    /// # Safety
    /// `len` bytes at `address` are device memory of this device's context, valid until
    /// `give_back` runs, and used by nothing else meanwhile.
    pub unsafe fn adopt_ptr(
        &self,
        address: CUdeviceptr,
        len: usize,
        give_back: impl FnOnce() + Send + Sync + 'static,
    ) -> Result<DeviceBlock> {
        if address == 0 || len == 0 {
            return Err(Error::invalid(
                "adopted device memory must be a non-null, non-empty range",
            ));
        }
        if !self.usage.try_allocate(len) {
            return Err(Error::OutOfMemory {
                backend: BackendKind::Cuda,
                requested: len as u64,
                diagnosis: None,
            });
        }
        let mut callbacks = self.adopted.callbacks.lock().unpoisoned();
        callbacks.insert(address, Box::new(give_back));
        self.adopted.any.store(true, Ordering::Release);
        // SAFETY: the caller guarantees `len` bytes at `address` until the callback runs, which
        // `release` does once.
        Ok(unsafe { DeviceBlock::from_raw(self.id, address as *mut c_void, len) })
    }

    /// Page-locks `memory` in place for this device (`cuMemHostRegister`, portable): transfers
    /// from and to it run at DMA speed. Adopt the result as a buffer's host copy with
    /// [`MemoryManager::adopt_host`](crate::MemoryManager::adopt_host).
    pub fn register_host<M: HostMemory>(&self, memory: M) -> Result<CudaRegistered<M>> {
        if let Some(symbol) = driver::missing_symbol(REGISTRATION_SYMBOLS) {
            return Err(unavailable(&format!(
                "the CUDA driver lacks {symbol}, needed to page-lock host memory"
            )));
        }
        self.ctx.bind_to_thread().cu("cuCtxSetCurrent")?;
        // SAFETY: `memory` guarantees `len()` live bytes at `as_ptr()` until it drops, which
        // happens only after the unregistration in `Drop`.
        unsafe {
            sys::cuMemHostRegister_v2(
                memory.as_ptr().cast(),
                memory.len(),
                sys::CU_MEMHOSTREGISTER_PORTABLE,
            )
        }
        .cu("cuMemHostRegister")?;
        Ok(CudaRegistered {
            memory,
            ctx: self.ctx.clone(),
        })
    }
}

// SAFETY: the registered memory's bytes, live as long as `memory` (the `HostMemory` contract).
unsafe impl<M: HostMemory> HostMemory for CudaRegistered<M> {
    fn as_ptr(&self) -> *mut u8 {
        self.memory.as_ptr()
    }
    fn len(&self) -> usize {
        self.memory.len()
    }
}

impl<M: HostMemory> Drop for CudaRegistered<M> {
    fn drop(&mut self) {
        // Nothing to report to from a drop; the memory is let go right after either way.
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: unregisters what `register_host` registered, once; hetmem's transfers
            // from it are blocking, so no device work uses it any more.
            let _ = unsafe { sys::cuMemHostUnregister(self.memory.as_ptr().cast()) };
        }
    }
}

impl<M: HostMemory + std::fmt::Debug> std::fmt::Debug for CudaRegistered<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaRegistered")
            .field("memory", &self.memory)
            .finish()
    }
}
