//! Staging memory on CUDA: page-locked host memory from `cuMemHostAlloc`.

use std::any::Any;
use std::sync::Arc;

use cudarc::driver::sys;
use cudarc::driver::{result, CudaContext};

use super::driver::allocation_error;
use crate::backend::StagingMemory;
use crate::error::Result;

/// Page-locked host memory from `cuMemHostAlloc` (portable, not write-combined: the host reads
/// device-to-host results from it).
pub(super) struct PinnedHost {
    ptr: *mut u8,
    len: usize,
    ctx: Arc<CudaContext>,
}

// SAFETY: PinnedHost exclusively owns its allocation; access to the bytes is governed by the
// StagingBuffer that wraps it, and freeing it needs only the (thread-safe) context.
unsafe impl Send for PinnedHost {}
// SAFETY: see `Send`.
unsafe impl Sync for PinnedHost {}

impl PinnedHost {
    pub(super) fn new(ctx: &Arc<CudaContext>, len: usize) -> Result<Self> {
        // SAFETY: a non-zero size with a valid flag; the context is current.
        let ptr = unsafe { result::malloc_host(len, sys::CU_MEMHOSTALLOC_PORTABLE) }
            .map_err(|e| allocation_error("cuMemHostAlloc", e, len))?
            .cast::<u8>();
        // SAFETY: the allocation has `len` writable bytes; zeroing makes every byte initialised
        // before any Rust slice sees it.
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
        Ok(PinnedHost {
            ptr,
            len,
            ctx: ctx.clone(),
        })
    }
}

// SAFETY: `ptr` is a page-locked allocation of `len` bytes, zeroed at creation, valid until Drop.
unsafe impl StagingMemory for PinnedHost {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
    fn len(&self) -> usize {
        self.len
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Drop for PinnedHost {
    fn drop(&mut self) {
        // SAFETY: frees the allocation made in `new`, once; the StagingBuffer has waited for
        // every device operation on it.
        unsafe {
            let _ = self.ctx.bind_to_thread();
            let _ = result::free_host(self.ptr.cast());
        }
    }
}
