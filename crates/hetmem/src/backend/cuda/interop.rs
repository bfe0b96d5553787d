//! A device guard's memory as cudarc sees it (`DeviceSlice`, `DevicePtr`, `DevicePtrMut`,
//! `PushKernelArg`), so that cudarc launches, copies and NCCL collectives take hetmem buffers:
//! `stream.launch_builder(&f).arg(&mut x)` with `x = guard.cuda_mut::<f32>()?`.
//!
//! The slice's stream is the buffer's own queue, whose work hetmem orders its transfers
//! around: launch there and nothing waits by hand — hetmem's next transfer of the buffer runs
//! after the kernel, and the block goes back to its pool only once the kernel is done. Handed
//! to work on another stream, that stream first waits for the buffer's, and the host waits for
//! that stream when cudarc drops the pointer's `SyncOnDrop` (the ordering then holds without
//! events outliving the borrow).

use std::marker::PhantomData;
use std::sync::Arc;

use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{
    CudaStream, DevicePtr, DevicePtrMut, DeviceSlice, LaunchArgs, PushKernelArg, SyncOnDrop,
};

use super::CudaBackend;
use crate::backend::{Backend, DeviceBlock, Queue};
use crate::element::{cast_len, Element};
use crate::error::{Error, Result};

/// A read guard's memory as a cudarc device slice of `T` on the buffer's stream.
pub struct CudaDeviceRef<'g, T> {
    lent: Lent<'g>,
    _element: PhantomData<&'g [T]>,
}

/// A write guard's memory as a cudarc device slice of `T` on the buffer's stream, writable by
/// kernels and copies (`DevicePtrMut`).
pub struct CudaDeviceMut<'g, T> {
    lent: Lent<'g>,
    _element: PhantomData<&'g mut [T]>,
}

struct Lent<'g> {
    ptr: CUdeviceptr,
    len: usize,
    stream: &'g Arc<CudaStream>,
}

impl Lent<'_> {
    /// The pointer for work on `stream`: on the buffer's stream as it is; on another, once
    /// that stream waits for the buffer's, the host waiting for it when the returned
    /// `SyncOnDrop` drops.
    fn pointer<'a>(&'a self, stream: &'a CudaStream) -> (CUdeviceptr, SyncOnDrop<'a>) {
        if stream == self.stream.as_ref() {
            return (self.ptr, SyncOnDrop::Record(None));
        }
        // A failed join leaves the other stream unordered: cudarc's own pointers report such
        // failures to their context the same way.
        stream.context().record_err(stream.join(self.stream));
        (self.ptr, SyncOnDrop::sync_stream(stream))
    }
}

/// Bytes `range` of `block` (a CUDA block of `backend`, used on `queue`) as `len` elements of
/// `T`.
pub(crate) fn lend<'g, T: Element>(
    backend: &'g dyn Backend,
    block: &DeviceBlock,
    range: std::ops::Range<usize>,
    queue: &'g Queue,
) -> Result<(CUdeviceptr, usize, &'g Arc<CudaStream>)> {
    let Some(cuda) = backend.as_any().downcast_ref::<CudaBackend>() else {
        return Err(Error::Unsupported {
            backend: backend.info().kind,
            what: "lend a block to cudarc (it is not a CUDA block)",
        });
    };
    let len = cast_len::<T>(range.start, range.len())?;
    let ptr = block.raw_handle() as CUdeviceptr + range.start as CUdeviceptr;
    Ok((ptr, len, cuda.stream(queue)?))
}

impl<'g, T> CudaDeviceRef<'g, T> {
    pub(crate) fn new((ptr, len, stream): (CUdeviceptr, usize, &'g Arc<CudaStream>)) -> Self {
        CudaDeviceRef {
            lent: Lent { ptr, len, stream },
            _element: PhantomData,
        }
    }
}

impl<'g, T> CudaDeviceMut<'g, T> {
    pub(crate) fn new((ptr, len, stream): (CUdeviceptr, usize, &'g Arc<CudaStream>)) -> Self {
        CudaDeviceMut {
            lent: Lent { ptr, len, stream },
            _element: PhantomData,
        }
    }
}

impl<T> DeviceSlice<T> for CudaDeviceRef<'_, T> {
    fn len(&self) -> usize {
        self.lent.len
    }

    fn stream(&self) -> &Arc<CudaStream> {
        self.lent.stream
    }
}

impl<T> DeviceSlice<T> for CudaDeviceMut<'_, T> {
    fn len(&self) -> usize {
        self.lent.len
    }

    fn stream(&self) -> &Arc<CudaStream> {
        self.lent.stream
    }
}

impl<T> DevicePtr<T> for CudaDeviceRef<'_, T> {
    fn device_ptr<'a>(&'a self, stream: &'a CudaStream) -> (CUdeviceptr, SyncOnDrop<'a>) {
        self.lent.pointer(stream)
    }
}

impl<T> DevicePtr<T> for CudaDeviceMut<'_, T> {
    fn device_ptr<'a>(&'a self, stream: &'a CudaStream) -> (CUdeviceptr, SyncOnDrop<'a>) {
        self.lent.pointer(stream)
    }
}

impl<T> DevicePtrMut<T> for CudaDeviceMut<'_, T> {
    fn device_ptr_mut<'a>(&'a mut self, stream: &'a CudaStream) -> (CUdeviceptr, SyncOnDrop<'a>) {
        self.lent.pointer(stream)
    }
}

// SAFETY: the argument pushed is a pointer to the slice's `CUdeviceptr`, which lives as long as
// `'b`, the borrow the launch holds (cudarc reads it when the kernel is launched); the memory
// behind it is the guard's device copy, valid while the guard — which outlives `'g: 'b` — is.
unsafe impl<'a, 'b: 'a, T> PushKernelArg<&'b CudaDeviceRef<'_, T>> for LaunchArgs<'a> {
    fn arg(&mut self, arg: &'b CudaDeviceRef<'_, T>) -> &mut Self {
        self.arg(&arg.lent.ptr)
    }
}

// SAFETY: as for `CudaDeviceRef`; the write guard lends its device copy for writing.
unsafe impl<'a, 'b: 'a, T> PushKernelArg<&'b mut CudaDeviceMut<'_, T>> for LaunchArgs<'a> {
    fn arg(&mut self, arg: &'b mut CudaDeviceMut<'_, T>) -> &mut Self {
        self.arg(&arg.lent.ptr)
    }
}

// SAFETY: as above; a shared borrow of a write guard's slice reads it.
unsafe impl<'a, 'b: 'a, T> PushKernelArg<&'b CudaDeviceMut<'_, T>> for LaunchArgs<'a> {
    fn arg(&mut self, arg: &'b CudaDeviceMut<'_, T>) -> &mut Self {
        self.arg(&arg.lent.ptr)
    }
}
