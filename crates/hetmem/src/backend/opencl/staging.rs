//! Staging buffers on OpenCL: `CL_MEM_ALLOC_HOST_PTR` buffers mapped once for their whole
//! life (page-locked on GPU drivers), the host side of non-blocking reads and writes.

use std::ffi::c_void;
use std::ptr;

use opencl3::command_queue::{self as clq, CommandQueue};
use opencl3::context::Context;
use opencl3::memory::{
    create_buffer, release_mem_object, CL_MAP_READ, CL_MAP_WRITE, CL_MEM_ALLOC_HOST_PTR,
    CL_MEM_READ_WRITE,
};
use std::any::Any;

use opencl3::event::Event as ClEventHandle;
use opencl3::types::{cl_mem, CL_BLOCKING};

use super::{allocation_error, cl_error, discard};
use crate::backend::StagingMemory;
use crate::error::Result;

/// A `CL_MEM_ALLOC_HOST_PTR` buffer, mapped for its whole life.
pub(super) struct ClStaging {
    mem: cl_mem,
    ptr: *mut u8,
    len: usize,
    /// The queue that mapped it, kept to unmap it.
    queue: cl_queue_handle::Handle,
}

mod cl_queue_handle {
    use opencl3::command_queue::release_command_queue;
    use opencl3::command_queue::retain_command_queue;
    use opencl3::types::cl_command_queue;

    /// One counted reference to a command queue.
    pub(super) struct Handle(pub(super) cl_command_queue);

    impl Handle {
        pub(super) fn retain(queue: cl_command_queue) -> Self {
            // SAFETY: `queue` is live (borrowed from a CommandQueue by the caller); retaining
            // adds the reference this handle releases in Drop.
            let _ = unsafe { retain_command_queue(queue) };
            Handle(queue)
        }
    }

    impl Drop for Handle {
        fn drop(&mut self) {
            // SAFETY: releases the reference taken in `retain`.
            let _ = unsafe { release_command_queue(self.0) };
        }
    }
}

// SAFETY: ClStaging exclusively owns its cl_mem and the mapping; OpenCL handles are thread-safe,
// and access to the mapped bytes is governed by the StagingBuffer that wraps it.
unsafe impl Send for ClStaging {}
// SAFETY: see `Send`.
unsafe impl Sync for ClStaging {}

impl ClStaging {
    pub(super) fn new(context: &Context, queue: &CommandQueue, len: usize) -> Result<Self> {
        // SAFETY: ALLOC_HOST_PTR without a host pointer is a valid flag set; len is non-zero.
        let mem = unsafe {
            create_buffer(
                context.get(),
                CL_MEM_READ_WRITE | CL_MEM_ALLOC_HOST_PTR,
                len,
                ptr::null_mut(),
            )
        }
        .map_err(|code| allocation_error("clCreateBuffer", code, len))?;
        let mut mapped: *mut c_void = ptr::null_mut();
        // SAFETY: blocking map of the whole new buffer; `mapped` receives the host pointer.
        let mapping = unsafe {
            clq::enqueue_map_buffer(
                queue.get(),
                mem,
                CL_BLOCKING,
                CL_MAP_READ | CL_MAP_WRITE,
                0,
                len,
                &mut mapped,
                0,
                ptr::null(),
            )
        };
        match mapping {
            Ok(raw) => discard(raw),
            Err(code) => {
                // SAFETY: the buffer was created above and is not used anywhere else.
                let _ = unsafe { release_mem_object(mem) };
                return Err(cl_error("clEnqueueMapBuffer", code));
            }
        }
        let ptr = mapped.cast::<u8>();
        // SAFETY: the mapping covers `len` writable bytes; zeroing makes every byte initialised
        // before any Rust slice sees it.
        unsafe { ptr::write_bytes(ptr, 0, len) };
        Ok(ClStaging {
            mem,
            ptr,
            len,
            queue: cl_queue_handle::Handle::retain(queue.get()),
        })
    }
}

// SAFETY: `ptr` is the mapping of `len` bytes, zeroed at creation, valid until Drop unmaps it.
unsafe impl StagingMemory for ClStaging {
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

impl Drop for ClStaging {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `new` (the StagingBuffer has waited for all device
        // work on it), then drops our one reference to the buffer.
        unsafe {
            if let Ok(raw) = clq::enqueue_unmap_mem_object(
                self.queue.0,
                self.mem,
                self.ptr.cast(),
                0,
                ptr::null(),
            ) {
                let unmapped = ClEventHandle::new(raw);
                let _ = unmapped.wait();
            }
            let _ = release_mem_object(self.mem);
        }
    }
}
