//! Mapped access: a range of a `cl_mem` mapped into host memory for one in-place read or
//! write (one copy on devices that share memory with the host).

use std::ffi::c_void;
use std::ptr;

use opencl3::command_queue::{self as clq, CommandQueue};
use opencl3::event::Event as ClEventHandle;
use opencl3::types::{cl_map_flags, cl_mem, CL_BLOCKING};

use super::{cl_error, discard};
use crate::error::Result;

/// Why a range is mapped: writing it whole (its old bytes need not be fetched) or reading it.
#[derive(Clone, Copy)]
pub(super) enum MapFor {
    Write,
    Read,
}

/// A range of a `cl_mem` mapped into host memory (blocking map), unmapped on `unmap` or drop.
pub(super) struct Mapping<'q> {
    queue: &'q CommandQueue,
    mem: cl_mem,
    ptr: *mut u8,
    len: usize,
}

impl<'q> Mapping<'q> {
    pub(super) fn new(
        queue: &'q CommandQueue,
        mem: cl_mem,
        flags: cl_map_flags,
        offset: usize,
        len: usize,
    ) -> Result<Self> {
        if len == 0 {
            // Mapping nothing is an error in OpenCL; an empty slice needs no mapping.
            return Ok(Mapping {
                queue,
                mem,
                ptr: ptr::NonNull::dangling().as_ptr(),
                len,
            });
        }
        let mut mapped: *mut c_void = ptr::null_mut();
        // SAFETY: blocking map of a range inside the buffer (checked by the caller); `mapped`
        // receives the host pointer, valid until the unmap.
        let raw = unsafe {
            clq::enqueue_map_buffer(
                queue.get(),
                mem,
                CL_BLOCKING,
                flags,
                offset,
                len,
                &mut mapped,
                0,
                ptr::null(),
            )
        }
        .map_err(|code| cl_error("clEnqueueMapBuffer", code))?;
        discard(raw);
        Ok(Mapping {
            queue,
            mem,
            ptr: mapped.cast(),
            len,
        })
    }

    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: a blocking map returned `len` host-accessible bytes that stay mapped until
        // `unmap`, which needs `self`; for a write-invalidate map their contents are
        // unspecified but initialised host memory, and the caller overwrites them.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Unmaps and waits, so that the device sees what was written.
    pub(super) fn unmap(mut self) -> Result<()> {
        let outcome = self.release();
        std::mem::forget(self);
        outcome
    }

    fn release(&mut self) -> Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        // SAFETY: unmaps the mapping made in `new`, once (`unmap` forgets `self`).
        let raw = unsafe {
            clq::enqueue_unmap_mem_object(
                self.queue.get(),
                self.mem,
                self.ptr.cast(),
                0,
                ptr::null(),
            )
        }
        .map_err(|code| cl_error("clEnqueueUnmapMemObject", code))?;
        ClEventHandle::new(raw)
            .wait()
            .map_err(|e| cl_error("clWaitForEvents", e.0))
    }
}

impl Drop for Mapping<'_> {
    /// Only reached when the access panicked: unmap anyway, nothing to report to.
    fn drop(&mut self) {
        let _ = self.release();
    }
}
