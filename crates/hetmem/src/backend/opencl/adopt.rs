//! Memory made outside hetmem as OpenCL blocks: a user's `cl_mem` (through opencl3's `ClMem`)
//! with a reference of its own, so that hetmem's release and the user's are independent; and
//! host memory as the storage of a new `cl_mem` (`CL_MEM_USE_HOST_PTR`: zero-copy on devices that
//! share memory with the host), kept alive until OpenCL destroys the buffer.

use std::ffi::c_void;

use opencl3::memory::{ClMem, CL_MEM_READ_WRITE, CL_MEM_USE_HOST_PTR};
use opencl3::types::cl_mem;

use super::errors::{allocation_error, cl_error};
use super::{release_mem_object, OpenClBackend};
use crate::backend::{BackendKind, DeviceBlock};
use crate::error::{Error, Result};
use crate::host::HostMemory;

/// Host memory kept for a `cl_mem` that uses it, handed to OpenCL's destructor callback.
type Kept = Box<dyn HostMemory>;

impl OpenClBackend {
    /// `mem` — a buffer of this device's context, made by the caller — as a block of this
    /// backend: retained (the caller keeps and releases its own reference as before), counted
    /// in the usage, and released by hetmem when the block is. A buffer takes it through
    /// [`BufferContext::adopt_device`](crate::buffer::BufferContext::adopt_device). A buffer of
    /// another context is a typed error. hetmem orders its work after its own queues only:
    /// finish what you enqueued on the buffer on queues of your own first (or make hetmem's
    /// queue wait for it with [`Backend::enqueue_wait`](crate::backend::Backend::enqueue_wait)).
    pub fn adopt_mem(&self, mem: &impl ClMem) -> Result<DeviceBlock> {
        let context = mem
            .context()
            .map_err(|e| cl_error("clGetMemObjectInfo", e.0))?;
        if context != self.context.get() {
            return Err(Error::invalid(format!(
                "the cl_mem belongs to another OpenCL context than {}",
                self.info.label()
            )));
        }
        let size = mem
            .size()
            .map_err(|e| cl_error("clGetMemObjectInfo", e.0))?;
        if !self.usage.try_allocate(size) {
            return Err(Error::OutOfMemory {
                backend: BackendKind::OpenCl,
                requested: size as u64,
                diagnosis: None,
            });
        }
        // SAFETY: `mem` is a live cl_mem (opencl3's `ClMem` holds a reference); retaining it gives
        // the block a reference of its own, dropped once by `release`.
        if let Err(code) = unsafe { cl3::memory::retain_mem_object(mem.get()) } {
            self.usage.undo_allocate(size);
            return Err(cl_error("clRetainMemObject", code));
        }
        // SAFETY: a cl_mem of `size` bytes of this context with a reference owned by the block.
        Ok(unsafe { DeviceBlock::from_raw(self.id, mem.get(), size) })
    }

    /// A new buffer of this device whose storage is `memory` (`CL_MEM_USE_HOST_PTR`): on a
    /// device that shares memory with the host (PoCL, integrated GPUs) its contents are those
    /// bytes, without a copy. `memory` is let go when OpenCL destroys the buffer — after
    /// hetmem releases the block and every command using it has finished (a destructor
    /// callback). A buffer takes the block through
    /// [`BufferContext::adopt_device`](crate::buffer::BufferContext::adopt_device).
    pub fn wrap_host(&self, memory: impl HostMemory) -> Result<DeviceBlock> {
        let (ptr, len) = (memory.as_ptr(), memory.len());
        if !self.usage.try_allocate(len) {
            return Err(Error::OutOfMemory {
                backend: BackendKind::OpenCl,
                requested: len as u64,
                diagnosis: None,
            });
        }
        let flags = CL_MEM_READ_WRITE | CL_MEM_USE_HOST_PTR;
        // SAFETY: `len` bytes at `ptr` stay valid until the destructor callback below drops
        // `memory`, which OpenCL calls only once the buffer is destroyed.
        let mem = unsafe { cl3::memory::create_buffer(self.context.get(), flags, len, ptr.cast()) }
            .map_err(|code| {
                self.usage.undo_allocate(len);
                allocation_error("clCreateBuffer", code, len)
            })?;
        let kept: *mut Kept = Box::into_raw(Box::new(Box::new(memory)));
        // SAFETY: `mem` is the buffer just made; `kept` is handed to the callback, which takes
        // it back exactly once.
        let registered =
            unsafe { cl3::memory::set_mem_object_destructor_callback(mem, let_go, kept.cast()) };
        if let Err(code) = registered {
            // SAFETY: the callback was not registered, so `kept` is still ours; the buffer is
            // released first (nothing uses it yet), then the memory.
            unsafe {
                let _ = release_mem_object(mem);
                drop(Box::from_raw(kept));
            }
            self.usage.undo_allocate(len);
            return Err(cl_error("clSetMemObjectDestructorCallback", code));
        }
        // SAFETY: a cl_mem of `len` bytes of this context, handed out once, released by
        // `release` (which drops the reference `create_buffer` gave).
        Ok(unsafe { DeviceBlock::from_raw(self.id, mem, len) })
    }
}

/// OpenCL's destructor callback of a `wrap_host` buffer: lets its host memory go.
extern "C" fn let_go(_mem: cl_mem, kept: *mut c_void) {
    // SAFETY: `kept` is the box `wrap_host` made, passed to OpenCL for this one call.
    let kept = unsafe { Box::from_raw(kept.cast::<Kept>()) };
    // A panicking drop must not unwind into the driver's C frames.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(kept)));
}
