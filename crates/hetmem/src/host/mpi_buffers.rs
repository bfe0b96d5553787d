//! rsmpi's buffer traits for memory hetmem holds (feature `mpi`): a buffer's host guards are
//! MPI buffers, so `process.send(&*buffer.host()?)` needs no copy, and [`DeviceMemory`] hands a
//! device copy that is an address (host memory, CUDA with a CUDA-aware MPI) to MPI directly.
//! The safe operations over unified buffers are in [`crate::mpi`].

use std::ffi::c_void;
use std::marker::PhantomData;

use ::mpi::datatype::{
    AsDatatype, Buffer, BufferMut, Collection, Equivalence, Pointer, PointerMut,
};
use ::mpi::Count;

use crate::backend::{Backend, BackendKind, DeviceBlock, Queue};
use crate::buffer::{DeviceMut, DeviceRef, HostMut, HostRef};
use crate::element::Element;
use crate::error::{Error, Result};

/// The element count as MPI counts it. Like rsmpi's own slices, a guard over more than
/// `i32::MAX` elements cannot be one MPI buffer: this panics, and `hetmem::mpi`'s functions
/// check the length first and return an error instead.
fn count(len: usize) -> Count {
    Count::try_from(len).expect("more elements than one MPI message can count (i32::MAX)")
}

// SAFETY: `count` elements of `T` (its MPI datatype below) start at `pointer`: the guard's
// slice, borrowed for as long as the guard lives.
unsafe impl<T: Element + Equivalence> Collection for HostRef<'_, T> {
    fn count(&self) -> Count {
        count(self.len())
    }
}

// SAFETY: the pointer is the guard's slice, valid for reads while the guard lives.
unsafe impl<T: Element + Equivalence> Pointer for HostRef<'_, T> {
    fn pointer(&self) -> *const c_void {
        self.as_ptr().cast()
    }
}

// SAFETY: the slice holds `T`s, whose MPI datatype `Equivalence` gives.
unsafe impl<T: Element + Equivalence> AsDatatype for HostRef<'_, T> {
    type Out = <T as Equivalence>::Out;
    fn as_datatype(&self) -> Self::Out {
        T::equivalent_datatype()
    }
}

// SAFETY: pointer, count and datatype above describe the same live slice.
unsafe impl<T: Element + Equivalence> Buffer for HostRef<'_, T> {}

// SAFETY: as for `HostRef`.
unsafe impl<T: Element + Equivalence> Collection for HostMut<'_, T> {
    fn count(&self) -> Count {
        count(self.len())
    }
}

// SAFETY: the guard's slice, valid for reads while the guard lives.
unsafe impl<T: Element + Equivalence> Pointer for HostMut<'_, T> {
    fn pointer(&self) -> *const c_void {
        self.as_ptr().cast()
    }
}

// SAFETY: the guard's slice, borrowed mutably: valid for writes while the guard lives, and
// any bit pattern is a valid `T` (`Element` is `Pod`), so whatever MPI writes is a valid `T`.
unsafe impl<T: Element + Equivalence> PointerMut for HostMut<'_, T> {
    fn pointer_mut(&mut self) -> *mut c_void {
        self.as_mut_ptr().cast()
    }
}

// SAFETY: the slice holds `T`s.
unsafe impl<T: Element + Equivalence> AsDatatype for HostMut<'_, T> {
    type Out = <T as Equivalence>::Out;
    fn as_datatype(&self) -> Self::Out {
        T::equivalent_datatype()
    }
}

// SAFETY: pointer, count and datatype describe the same live slice.
unsafe impl<T: Element + Equivalence> Buffer for HostMut<'_, T> {}
// SAFETY: as above, and writable.
unsafe impl<T: Element + Equivalence> BufferMut for HostMut<'_, T> {}

/// A buffer's device copy as MPI sees it: its address (a pointer into host memory on the host
/// backend, a `CUdeviceptr` on CUDA — which only a CUDA-aware MPI may be given) and length, for
/// as long as the device guard it was made from (`'a`), made once the device work enqueued on
/// the buffer is done.
pub(crate) struct DeviceMemory<'a, T> {
    address: *mut c_void,
    len: Count,
    _guard: PhantomData<&'a mut [T]>,
}

impl<'a, T: Element + Equivalence> DeviceMemory<'a, T> {
    /// The device copy `guard` lends, for MPI to read, once the device work enqueued on the
    /// buffer is done.
    pub(crate) fn reading(guard: &'a DeviceRef<'_>) -> Result<Self> {
        let backend = guard.ctx().device_backend();
        let start = start_address(backend, guard.block(), guard.queue())?;
        Self::at(start, guard.offset(), guard.byte_len())
    }

    /// The device copy `guard` lends, for MPI to write, once the device work enqueued on the
    /// buffer is done (so nothing reads the old contents after MPI overwrote them).
    pub(crate) fn writing(guard: &'a mut DeviceMut<'_>) -> Result<Self> {
        let backend = guard.ctx().device_backend();
        let start = start_address(backend, guard.block(), guard.queue())?;
        Self::at(start, guard.offset(), guard.byte_len())
    }

    fn at(start: usize, offset: usize, bytes: usize) -> Result<Self> {
        let len = bytes / std::mem::size_of::<T>().max(1);
        let len = Count::try_from(len).map_err(|_| Error::LengthMismatch {
            what: "an MPI message holds at most i32::MAX elements",
            expected: i32::MAX as u64,
            actual: len as u64,
        })?;
        Ok(DeviceMemory {
            address: (start + offset) as *mut c_void,
            len,
            _guard: PhantomData,
        })
    }
}

/// Where `block` starts, once the work enqueued on `queue` is done: an address MPI can be given
/// where the block is host-addressable (the host backend, shared allocations) or a device
/// pointer (CUDA, for a CUDA-aware MPI); an OpenCL `cl_mem` is a handle, not an address.
fn start_address(backend: &dyn Backend, block: &DeviceBlock, queue: &Queue) -> Result<usize> {
    let kind = backend.info().kind;
    let start = match backend.host_ptr(block) {
        Some(ptr) => ptr as usize,
        None if kind == BackendKind::Cuda => block.raw_handle() as usize,
        None => {
            return Err(Error::Unsupported {
                backend: kind,
                what: "give MPI its device memory (an OpenCL buffer is no address): \
                       use the host path",
            })
        }
    };
    backend.enqueue_marker(queue)?.wait()?;
    Ok(start)
}

// SAFETY: `len` elements of `T` at `address` (the contract of `DeviceMemory::new`).
unsafe impl<T: Equivalence> Collection for DeviceMemory<'_, T> {
    fn count(&self) -> Count {
        self.len
    }
}

// SAFETY: readable for `'a` (the contract of `DeviceMemory::new`).
unsafe impl<T: Equivalence> Pointer for DeviceMemory<'_, T> {
    fn pointer(&self) -> *const c_void {
        self.address
    }
}

// SAFETY: writable for `'a` when made from a writing guard (the contract of `new`).
unsafe impl<T: Equivalence> PointerMut for DeviceMemory<'_, T> {
    fn pointer_mut(&mut self) -> *mut c_void {
        self.address
    }
}

// SAFETY: the memory holds `T`s.
unsafe impl<T: Equivalence> AsDatatype for DeviceMemory<'_, T> {
    type Out = <T as Equivalence>::Out;
    fn as_datatype(&self) -> Self::Out {
        T::equivalent_datatype()
    }
}

// SAFETY: pointer, count and datatype describe the same memory.
unsafe impl<T: Equivalence> Buffer for DeviceMemory<'_, T> {}
// SAFETY: as above, writable by the contract of `new`.
unsafe impl<T: Equivalence> BufferMut for DeviceMemory<'_, T> {}

/// The root's side of a broadcast: its host copy (a read guard's slice), read only. rsmpi's
/// `broadcast_into` takes a writable buffer on every rank, but MPI only reads the root's, so the
/// root lends a read guard and its device copy stays valid.
pub(crate) struct BroadcastSource<'a, T: Element>(pub(crate) &'a [T]);

// SAFETY: the guard's slice: `count` elements of `T`, readable while the guard lives.
unsafe impl<T: Element + Equivalence> Collection for BroadcastSource<'_, T> {
    fn count(&self) -> Count {
        count(self.0.len())
    }
}

// SAFETY: the guard's slice, readable while the guard lives.
unsafe impl<T: Element + Equivalence> Pointer for BroadcastSource<'_, T> {
    fn pointer(&self) -> *const c_void {
        self.0.as_ptr().cast()
    }
}

// SAFETY: only ever passed to `MPI_Bcast` at its root, which reads the buffer and never writes
// it (MPI 4.0, 6.4): the pointer is writable in type only.
unsafe impl<T: Element + Equivalence> PointerMut for BroadcastSource<'_, T> {
    fn pointer_mut(&mut self) -> *mut c_void {
        self.0.as_ptr().cast_mut().cast()
    }
}

// SAFETY: the slice holds `T`s.
unsafe impl<T: Element + Equivalence> AsDatatype for BroadcastSource<'_, T> {
    type Out = <T as Equivalence>::Out;
    fn as_datatype(&self) -> Self::Out {
        T::equivalent_datatype()
    }
}

// SAFETY: pointer, count and datatype describe the same live slice.
unsafe impl<T: Element + Equivalence> Buffer for BroadcastSource<'_, T> {}
// SAFETY: see `PointerMut`: MPI does not write a broadcast's root buffer.
unsafe impl<T: Element + Equivalence> BufferMut for BroadcastSource<'_, T> {}
