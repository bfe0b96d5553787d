//! Shared allocations on OpenCL: fine-grained SVM (`clSVMAlloc`), which host and device
//! address at one pointer without mapping, wrapped in a `cl_mem` (`CL_MEM_USE_HOST_PTR` over an
//! SVM pointer uses that memory) so that every other operation — copies, fills, kernels taking
//! `cl_mem` arguments — treats it as any block. The SVM memory is freed by a destructor
//! callback once OpenCL has destroyed the buffer, after every command using it.

use std::ffi::c_void;
use std::ptr::NonNull;

use cl3::memory::{
    create_buffer, release_mem_object, set_mem_object_destructor_callback, svm_alloc, svm_free,
    CL_MEM_READ_WRITE, CL_MEM_SVM_FINE_GRAIN_BUFFER, CL_MEM_USE_HOST_PTR,
};
use opencl3::types::{cl_context, cl_mem};

use super::errors::allocation_error;
use super::{cl_error, OpenClBackend};
use crate::backend::{raw, DeviceBlock};
use crate::error::{Error, Result};

/// What the destructor callback needs to free the SVM memory: the context (retained until
/// then) and the pointer.
struct SvmFree {
    context: cl_context,
    ptr: *mut c_void,
}

impl OpenClBackend {
    /// `bytes` of zeroed fine-grained SVM as a block.
    pub(super) fn allocate_svm(&self, bytes: usize) -> Result<DeviceBlock> {
        let context = self.context.get();
        let flags = CL_MEM_READ_WRITE | CL_MEM_SVM_FINE_GRAIN_BUFFER;
        // SAFETY: a non-zero size within the device limit (checked by the caller); alignment 0
        // asks for the device's default.
        let ptr = unsafe { svm_alloc(context, flags, bytes, 0) }
            .map_err(|code| allocation_error("clSVMAlloc", code, bytes))?;
        // `svm_alloc` reports a null pointer as an error.
        let host = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| Error::invalid("null SVM"))?;
        // SAFETY: fine-grained SVM is host memory the host may write without mapping; nothing
        // else has the pointer yet.
        unsafe { ptr.cast::<u8>().write_bytes(0, bytes) };
        // SAFETY: `bytes` bytes of SVM at `ptr`, valid until the destructor callback frees them.
        let made =
            unsafe { create_buffer(context, CL_MEM_READ_WRITE | CL_MEM_USE_HOST_PTR, bytes, ptr) };
        let mem = match made {
            Ok(mem) => mem,
            Err(code) => {
                // SAFETY: the SVM memory was never handed out.
                let _ = unsafe { svm_free(context, ptr) };
                return Err(allocation_error("clCreateBuffer", code, bytes));
            }
        };
        // SAFETY: `mem` is the buffer just made; the callback frees the SVM after it.
        unsafe { free_with(mem, context, ptr) }?;
        // SAFETY: a cl_mem of `bytes` bytes of this context over SVM the host reaches at
        // `host` while the block lives; handed out once, released by `release`.
        Ok(unsafe { raw::shared_block(self.id, mem, bytes, host) })
    }
}

/// Has OpenCL free the SVM at `ptr` once `mem` is destroyed; on failure releases both.
///
/// # Safety
/// `mem` was just made over `ptr`, SVM of `context`, and nothing else holds either.
unsafe fn free_with(mem: cl_mem, context: cl_context, ptr: *mut c_void) -> Result<()> {
    // SAFETY: keeps the context alive for the callback, which releases it.
    unsafe { cl3::context::retain_context(context) }
        .map_err(|code| cl_error("clRetainContext", code))?;
    let data = Box::into_raw(Box::new(SvmFree { context, ptr }));
    // SAFETY: `data` is handed to the callback, which takes it back exactly once.
    let registered = unsafe { set_mem_object_destructor_callback(mem, free_svm, data.cast()) };
    if let Err(code) = registered {
        // SAFETY: the callback was not registered, so `data` is still ours: the buffer goes
        // first (nothing uses it), then the memory and the context reference.
        unsafe {
            let _ = release_mem_object(mem);
            free_svm(mem, data.cast());
        }
        return Err(cl_error("clSetMemObjectDestructorCallback", code));
    }
    Ok(())
}

/// OpenCL's destructor callback of an SVM-backed buffer: frees the SVM.
extern "C" fn free_svm(_mem: cl_mem, data: *mut c_void) {
    // SAFETY: `data` is the box `free_with` made, passed to OpenCL for this one call.
    let data = unsafe { Box::from_raw(data.cast::<SvmFree>()) };
    // SAFETY: the buffer over the SVM is destroyed, so nothing uses the memory; the context
    // reference taken in `free_with` is dropped once.
    unsafe {
        let _ = svm_free(data.context, data.ptr);
        let _ = cl3::context::release_context(data.context);
    }
}
