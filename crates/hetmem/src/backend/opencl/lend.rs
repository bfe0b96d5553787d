//! A device guard's memory as an OpenCL memory object, for users' kernels and opencl3 calls:
//! the block itself when the guard covers it whole, otherwise a sub-buffer of exactly the
//! guard's range (a buffer view with an offset is then visible to a kernel at index 0). A
//! sub-buffer must start on the device's base address alignment (`CL_DEVICE_MEM_BASE_ADDR_ALIGN`):
//! a view starting elsewhere is refused with [`Error::Misaligned`] rather than copied in and
//! out behind the user's back — pass the whole buffer and the offset to the kernel instead.

use std::marker::PhantomData;
use std::ops::{Deref, Range};

use opencl3::kernel::Kernel;
use opencl3::memory::{
    get_mem_object_info, retain_mem_object, Buffer, ClMem, CL_BUFFER_CREATE_TYPE_REGION,
    CL_MEM_ASSOCIATED_MEMOBJECT, CL_MEM_OFFSET, CL_MEM_READ_ONLY, CL_MEM_READ_WRITE,
};
use opencl3::types::{cl_buffer_region, cl_mem, cl_uint};

use super::cl_error;
use crate::backend::{Backend, BackendKind, DeviceBlock};
use crate::element::{cast_len, Element};
use crate::error::{Error, Result};

/// A device guard's memory as an opencl3 [`Buffer`] of `T`, for as long as the guard lives
/// (`'g`): pass it to opencl3 calls through `Deref`, or to a kernel with
/// [`ClBuffer::set_arg`]. It holds its own reference to the memory object (the block, retained,
/// or a sub-buffer made for it) and lets it go when dropped; hetmem's block is never released
/// by it. Enqueue the kernel on the guard's queue and hetmem orders its own work around it.
pub struct ClBuffer<'g, T> {
    buffer: Buffer<T>,
    len: usize,
    _guard: PhantomData<&'g ()>,
}

impl<T> ClBuffer<'_, T> {
    /// Sets it as argument `index` of `kernel`, which must take a `__global` (or `__constant`)
    /// pointer there: OpenCL refuses any other argument with an error, which comes back typed.
    pub fn set_arg(&self, kernel: &Kernel, index: cl_uint) -> Result<()> {
        let mem: cl_mem = self.buffer.get();
        // SAFETY: the argument is a live `cl_mem` of the kernel's context, passed by pointer
        // with its own size, which is how OpenCL takes a memory object argument; OpenCL
        // validates it against the kernel's parameter and copies it before returning.
        unsafe { kernel.set_arg(index, &mem) }.map_err(|e| cl_error("clSetKernelArg", e.0))
    }

    /// Its length in elements of `T`.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<T> Deref for ClBuffer<'_, T> {
    type Target = Buffer<T>;

    fn deref(&self) -> &Buffer<T> {
        &self.buffer
    }
}

/// Bytes `range` of `block` (an OpenCL block of `backend`) as a [`ClBuffer`] of `T`, read-only
/// for OpenCL where it is a new sub-buffer and `writable` is false.
pub(crate) fn lend<'g, T: Element>(
    backend: &dyn Backend,
    block: &'g DeviceBlock,
    range: Range<usize>,
    writable: bool,
) -> Result<ClBuffer<'g, T>> {
    let kind = backend.info().kind;
    if kind != BackendKind::OpenCl || block.backend() != backend.id() {
        return Err(Error::Unsupported {
            backend: kind,
            what: "lend a block as an OpenCL buffer (it is not an OpenCL block)",
        });
    }
    let len = cast_len::<T>(range.start, range.len())?;
    let mem: cl_mem = block.raw_handle();
    if range == (0..block.size()) {
        // SAFETY: a live memory object of this context; the reference taken here is the one
        // the `Buffer` releases when dropped.
        unsafe { retain_mem_object(mem) }.map_err(|code| cl_error("clRetainMemObject", code))?;
        return Ok(ClBuffer {
            buffer: Buffer::new(mem),
            len,
            _guard: PhantomData,
        });
    }
    // A block carved by the splitting allocator is itself a sub-buffer, and OpenCL makes no
    // sub-buffer of a sub-buffer: the region is taken from its parent.
    let query =
        |param| get_mem_object_info(mem, param).map_err(|c| cl_error("clGetMemObjectInfo", c));
    let parent = isize::from(query(CL_MEM_ASSOCIATED_MEMOBJECT)?) as cl_mem;
    let (parent, base) = match parent.is_null() {
        true => (mem, 0),
        false => (parent, usize::from(query(CL_MEM_OFFSET)?)),
    };
    let origin = base + range.start;
    let alignment = backend.info().alignment.max(1);
    if origin % alignment != 0 {
        return Err(Error::Misaligned {
            what: "an OpenCL sub-buffer of a view",
            offset: range.start as u64,
            alignment: alignment as u64,
        });
    }
    let region = cl_buffer_region {
        origin,
        size: range.len(),
    };
    let flags = if writable {
        CL_MEM_READ_WRITE
    } else {
        CL_MEM_READ_ONLY
    };
    // SAFETY: `region` lies inside the parent (the guard's range is inside its block, the
    // block inside its parent) and starts on the device's base address alignment; it outlives
    // the call. The new sub-buffer is owned by the `Buffer` alone.
    let sub = unsafe {
        cl3::memory::create_sub_buffer(
            parent,
            flags,
            CL_BUFFER_CREATE_TYPE_REGION,
            (&raw const region).cast(),
        )
    }
    .map_err(|code| cl_error("clCreateSubBuffer", code))?;
    Ok(ClBuffer {
        buffer: Buffer::new(sub),
        len,
        _guard: PhantomData,
    })
}
