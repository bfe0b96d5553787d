//! OpenCL memory made outside hetmem as blocks: a user's `cl_mem` (through opencl3's `ClMem`)
//! becomes a block of this backend, with a reference of its own, so that hetmem's release and
//! the user's are independent.

use opencl3::memory::ClMem;

use super::errors::cl_error;
use super::OpenClBackend;
use crate::backend::{BackendKind, DeviceBlock};
use crate::error::{Error, Result};

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
}
