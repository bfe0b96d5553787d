//! Guards: the only way to touch a buffer's memory, so that marking a side stale cannot be
//! forgotten. Holding a read guard keeps its side valid; a mutable guard exists only while the
//! buffer is exclusively borrowed, and the other side was marked stale when it was handed out.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut, Range};

use super::context::ContextShared;
use super::lent_device::LentDevice;
use super::tracker::allocated;
use crate::backend::{DeviceBlock, Event, Held, Queue, SlotRead};
use crate::element::Element;
use crate::error::Result;
use crate::pool::PooledBlock;

/// Read access to a buffer's host copy, as a slice.
pub struct HostRef<'a, T: Element> {
    /// The slot, read-locked (so its block stays), with the block's bytes found once.
    bytes: Held<SlotRead<'a, Option<PooledBlock>>>,
    range: Range<usize>,
    _element: PhantomData<T>,
}

impl<'a, T: Element> HostRef<'a, T> {
    /// Checks once that the bytes are reachable and fit, so that `deref` cannot fail.
    #[inline]
    pub(crate) fn new(
        bytes: Held<SlotRead<'a, Option<PooledBlock>>>,
        range: Range<usize>,
    ) -> Result<Self> {
        bytemuck::try_cast_slice::<u8, T>(&bytes[range.clone()])
            .map_err(|e| crate::error::Error::invalid(format!("host view: {e}")))?;
        Ok(HostRef {
            bytes,
            range,
            _element: PhantomData,
        })
    }
}

impl<T: Element> Deref for HostRef<'_, T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        bytemuck::cast_slice(&self.bytes[self.range.clone()])
    }
}

/// Write access to a buffer's host copy, as a slice. The device copy was marked stale over this
/// range when the guard was made.
pub struct HostMut<'a, T: Element> {
    data: &'a mut [T],
}

impl<'a, T: Element> HostMut<'a, T> {
    pub(crate) fn new(bytes: &'a mut [u8]) -> Result<Self> {
        if bytes.is_empty() {
            // An empty byte slice may sit at any address; an empty `[T]` needs none.
            return Ok(HostMut { data: &mut [] });
        }
        let data = bytemuck::try_cast_slice_mut(bytes)
            .map_err(|e| crate::error::Error::invalid(format!("host view: {e}")))?;
        Ok(HostMut { data })
    }
}

impl<T: Element> Deref for HostMut<'_, T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        self.data
    }
}

impl<T: Element> DerefMut for HostMut<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.data
    }
}

/// Read access to a buffer's device copy: the raw block, the byte range the buffer (or view)
/// covers, and the queue hetmem orders its own work on. Pass the block to your kernels, enqueued
/// on [`DeviceRef::queue`] (see the [ordering contract](crate::buffer#the-ordering-contract)).
pub struct DeviceRef<'a> {
    pub(crate) slot: SlotRead<'a, Option<PooledBlock>>,
    pub(crate) ctx: &'a ContextShared,
    pub(crate) range: Range<usize>,
}

impl DeviceRef<'_> {
    /// The device block (it may be larger than the buffer: use [`DeviceRef::offset`] and
    /// [`DeviceRef::byte_len`]).
    pub fn block(&self) -> &DeviceBlock {
        allocated(&self.slot)
    }

    pub(crate) fn ctx(&self) -> &ContextShared {
        self.ctx
    }
}

/// Write access to a buffer's device copy. The host copy was marked stale over this range when
/// the guard was made.
pub struct DeviceMut<'a> {
    pub(crate) lent: LentDevice<'a>,
    pub(crate) range: Range<usize>,
}

impl DeviceMut<'_> {
    /// The device block.
    pub fn block(&self) -> &DeviceBlock {
        self.lent.block()
    }

    /// The device block, for backend calls that write it. Swapping another block in gives the
    /// buffer's device copy away: when the guard ends the buffer lets the stranger go and keeps
    /// only its host copy — bytes whose only copy was on the device then read as zeros.
    pub fn block_mut(&mut self) -> &mut DeviceBlock {
        self.lent.block_mut()
    }

    pub(crate) fn ctx(&self) -> &ContextShared {
        self.lent.ctx()
    }
}

/// What both device guards offer besides their block: range, queue, `Debug`.
macro_rules! device_guard_common {
    ($guard:ident) => {
        impl $guard<'_> {
            /// Byte offset of the buffer (or view) inside the block.
            pub fn offset(&self) -> usize {
                self.range.start
            }

            /// Length in bytes.
            pub fn byte_len(&self) -> usize {
                self.range.len()
            }

            /// The buffer's queue: every hetmem transfer of this buffer is ordered after the
            /// work enqueued here before it, and work enqueued here after a hetmem call returns
            /// is ordered after that call's work, whatever other queues hetmem spreads chunks
            /// over. Enqueue your kernels on this buffer here and they need no explicit wait
            /// (see the [ordering contract](crate::buffer#the-ordering-contract)).
            pub fn queue(&self) -> &Queue {
                &self.ctx().queue
            }

            /// Declares device work on another queue that uses this buffer (`event` is its
            /// completion): the buffer's queue waits for it from now on, so hetmem's next
            /// transfer of the buffer — and your later work on this queue — run after it, and
            /// the block does not return to its pool before it is done. Like PyTorch's
            /// `record_stream`, with the wait made on the device.
            pub fn record(&self, event: &Event) -> Result<()> {
                self.ctx()
                    .device_backend()
                    .enqueue_wait(&self.ctx().queue, event)
            }

            /// Makes `queue`, one of your own, wait for all work enqueued so far on the
            /// buffer's queue (hetmem's transfers and your kernels), so a kernel you then launch
            /// there sees the buffer as it is now. The counterpart of [`Self::record`]: call
            /// this before the launch, `record` after it.
            pub fn ready_on(&self, queue: &Queue) -> Result<()> {
                let backend = self.ctx().device_backend();
                let marker = backend.enqueue_marker(&self.ctx().queue)?;
                backend.enqueue_wait(queue, &marker)
            }
        }

        impl fmt::Debug for $guard<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($guard))
                    .field("block", self.block())
                    .field("range", &self.range)
                    .finish()
            }
        }
    };
}
device_guard_common!(DeviceRef);
device_guard_common!(DeviceMut);

#[cfg(feature = "cuda")]
impl DeviceRef<'_> {
    /// The guard's range as a cudarc device slice of `T` on the buffer's stream, for reading:
    /// `stream.launch_builder(&f).arg(&x)`, cudarc copies, NCCL collectives. Launched on the
    /// buffer's stream ([`DeviceSlice::stream`](cudarc::driver::DeviceSlice::stream)), the work
    /// needs no wait (see [`crate::backend::CudaDeviceRef`]); `Unsupported` on other backends.
    pub fn cuda<T: Element>(&self) -> Result<crate::backend::CudaDeviceRef<'_, T>> {
        let lent = crate::backend::lend_cuda::<T>(
            self.ctx().device_backend(),
            self.block(),
            self.range.clone(),
            &self.ctx().queue,
        )?;
        Ok(crate::backend::CudaDeviceRef::new(lent))
    }
}

#[cfg(feature = "cuda")]
impl DeviceMut<'_> {
    /// The guard's range as a cudarc device slice of `T` on the buffer's stream, for kernels
    /// and copies that write it: `stream.launch_builder(&f).arg(&mut x)` (see
    /// [`DeviceRef::cuda`]).
    pub fn cuda_mut<T: Element>(&mut self) -> Result<crate::backend::CudaDeviceMut<'_, T>> {
        let range = self.range.clone();
        let ctx = self.ctx();
        let lent = crate::backend::lend_cuda::<T>(
            ctx.device_backend(),
            self.lent.block(),
            range,
            &ctx.queue,
        )?;
        Ok(crate::backend::CudaDeviceMut::new(lent))
    }
}

#[cfg(feature = "opencl")]
impl DeviceRef<'_> {
    /// The guard's range as an OpenCL buffer of `T`, for a kernel to read (a read-only
    /// sub-buffer where the range is not the whole block): a view with an offset starts at
    /// index 0. [`Error::Misaligned`](crate::Error::Misaligned) where the view does not start
    /// on the device's base address alignment; `Unsupported` on other backends.
    pub fn cl_buffer<T: Element>(&self) -> Result<crate::backend::ClBuffer<'_, T>> {
        let backend = self.ctx().device_backend();
        crate::backend::lend_opencl(backend, self.block(), self.range.clone(), false)
    }
}

#[cfg(feature = "opencl")]
impl DeviceMut<'_> {
    /// The guard's range as an OpenCL buffer of `T`, for a kernel to read and write (see
    /// [`DeviceRef::cl_buffer`]).
    pub fn cl_buffer<T: Element>(&self) -> Result<crate::backend::ClBuffer<'_, T>> {
        let backend = self.ctx().device_backend();
        crate::backend::lend_opencl(backend, self.block(), self.range.clone(), true)
    }
}

#[cfg(feature = "wgpu")]
impl DeviceRef<'_> {
    /// The guard's range as a wgpu buffer binding (a storage binding at the view's start), for
    /// a bind group of a compute shader submitted to the device's queue
    /// ([`WgpuBackend::wgpu_queue`](crate::backend::WgpuBackend::wgpu_queue)): hetmem's work on
    /// the buffer comes before it, its later work after, and the next host access sees what
    /// the shader wrote, with no wait in user code. [`Error::Misaligned`](crate::Error::Misaligned)
    /// where a view does not start on the device's storage-binding alignment; `Unsupported`
    /// on other backends.
    pub fn wgpu_binding(&self) -> Result<wgpu::BufferBinding<'_>> {
        let ctx = self.ctx();
        let range = self.range.clone();
        crate::backend::lend_wgpu(ctx.device_backend(), self.block(), range, &ctx.queue)
    }
}

#[cfg(feature = "wgpu")]
impl DeviceMut<'_> {
    /// The guard's range as a wgpu buffer binding, for a shader that writes it (see
    /// [`DeviceRef::wgpu_binding`]).
    pub fn wgpu_binding(&self) -> Result<wgpu::BufferBinding<'_>> {
        let ctx = self.ctx();
        let range = self.range.clone();
        crate::backend::lend_wgpu(ctx.device_backend(), self.block(), range, &ctx.queue)
    }
}

impl<T: Element + fmt::Debug> fmt::Debug for HostRef<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Element + fmt::Debug> fmt::Debug for HostMut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}
