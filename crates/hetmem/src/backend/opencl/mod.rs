//! The OpenCL backend (feature `opencl`): one backend per OpenCL device, over opencl3.
//!
//! libOpenCL is opened at run time, so a machine without OpenCL builds and runs hetmem and gets
//! [`Error::BackendUnavailable`] from [`OpenClBackend::all`]. Each device has its own context and
//! in-order queues; blocks are `cl_mem` buffers; staging buffers are `CL_MEM_ALLOC_HOST_PTR`
//! buffers mapped once for their whole life (page-locked on GPU drivers), used as the host side of
//! non-blocking reads and writes.

mod adopt;
mod errors;
mod event;
mod lend;
mod mapping;
mod open;
mod parts;
mod shared;
mod staging;

use errors::allocation_error;
pub(crate) use errors::cl_error;
pub(crate) use lend::lend;
pub use lend::ClBuffer;
use mapping::Mapped;
use staging::ClStaging;

use crate::sync::Unpoison;
use std::any::Any;
use std::ptr;
use std::sync::{Arc, Mutex};

use opencl3::command_queue::{self as clq, CommandQueue};
use opencl3::context::Context;
use opencl3::device::Device;
use opencl3::event::{
    create_user_event, set_user_event_status, Event as ClEventHandle, CL_COMPLETE,
};
use opencl3::memory::{
    create_buffer, release_mem_object, CL_BUFFER_CREATE_TYPE_REGION, CL_MEM_READ_WRITE,
};
use opencl3::types::{cl_buffer_region, cl_event, cl_int, cl_mem, CL_BLOCKING, CL_NON_BLOCKING};
use std::ffi::c_void;

use self::event::{ClEvent, Unfinished};
use super::raw::{unsupported, RawBackend};
use super::{
    check_owner, Backend, BackendId, BackendKind, Capabilities, CopyRegion, DeviceBlock,
    DeviceInfo, Event, MapMode, MigrateTo, PartFailures, Queue, ReadPart, StagingBuffer,
    UsageCounters, UserEvent, WritePart,
};
use crate::error::{Error, Result};

/// `CL_PLATFORM_NOT_FOUND_KHR`: the ICD loader found no platform.
const CL_PLATFORM_NOT_FOUND_KHR: cl_int = -1001;

/// One OpenCL device with its own context and in-order queues; blocks are `cl_mem` buffers and
/// staging buffers are mapped `CL_MEM_ALLOC_HOST_PTR` buffers.
pub struct OpenClBackend {
    id: BackendId,
    device: Device,
    context: Context,
    queue: Queue,
    /// Every queue created, so `synchronize` can finish them all.
    queues: Mutex<Vec<Arc<CommandQueue>>>,
    /// The buffers mapped now: one mapping per buffer at a time (see `mapping.rs`).
    mapped: Mapped,
    /// Barriers and scattered parts, held until they finish (see [`Unfinished`]).
    unfinished: Arc<Unfinished>,
    info: DeviceInfo,
    capabilities: Capabilities,
    usage: UsageCounters,
}

// The `Device` and `Context` handles are `Send + Sync` (opencl3 declares them so; OpenCL objects
// are thread-safe except kernels, which hetmem never shares).

impl OpenClBackend {
    /// A user event and its driver handle (alive while the `UserEvent` is), for wait lists.
    fn user_event(&self) -> Result<(UserEvent, cl_event)> {
        let raw = create_user_event(self.context.get())
            .map_err(|code| cl_error("clCreateUserEvent", code))?;
        let source = Arc::new(ClEvent::new(raw, self));
        let event = Event::from_source(source.clone());
        let user = UserEvent::new(
            event,
            Box::new(move |ok| {
                let status = if ok { CL_COMPLETE } else { -1 };
                set_user_event_status(source.raw(), status)
                    .map_err(|code| cl_error("clSetUserEventStatus", code))
            }),
        );
        Ok((user, raw))
    }

    /// The OpenCL context, for building programs and kernels that use this backend's blocks.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The OpenCL device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The OpenCL command queue behind a hetmem queue of this backend, for launching kernels in
    /// order with hetmem's transfers.
    pub fn command_queue<'q>(&self, queue: &'q Queue) -> Result<&'q CommandQueue> {
        check_owner("queue", self.id, queue.backend())?;
        queue
            .downcast::<CommandQueue>()
            .ok_or_else(|| Error::invalid("queue does not hold an OpenCL command queue"))
    }

    /// Your own command's event (a kernel launch's, say) as a hetmem [`Event`], to hand to
    /// [`DeviceRef::record`](crate::buffer::DeviceRef::record) or
    /// [`PooledBlock::record`](crate::pool::PooledBlock::record). An event of another context is
    /// refused as invalid input.
    pub fn wrap_event(&self, event: opencl3::event::Event) -> Result<Event> {
        let context = event
            .context()
            .map_err(|e| cl_error("clGetEventInfo", e.0))?;
        if context != self.context.get() {
            return Err(Error::invalid(
                "the event belongs to another OpenCL context than this backend's",
            ));
        }
        Ok(Event::from_source(Arc::new(ClEvent::from_handle(
            event, self,
        ))))
    }

    /// Wraps an enqueue's event and flushes the queue so the work starts (and callbacks fire)
    /// without anyone waiting on it.
    fn submitted(&self, queue: &CommandQueue, raw: cl_event) -> Result<Event> {
        let event = Event::from_source(Arc::new(ClEvent::new(raw, self)));
        queue.flush().map_err(|e| cl_error("clFlush", e.0))?;
        Ok(event)
    }
}

/// Drops the event an enqueue returned when nobody needs it.
pub(super) fn discard(raw: cl_event) {
    drop(ClEventHandle::new(raw));
}

fn mem(block: &DeviceBlock) -> cl_mem {
    block.raw_handle()
}

impl RawBackend for OpenClBackend {
    fn id(&self) -> BackendId {
        self.id
    }

    fn info(&self) -> DeviceInfo {
        self.info.clone()
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    fn maps(&self, _block: &DeviceBlock) -> bool {
        self.capabilities.mapped_access
    }

    fn max_allocation(&self) -> u64 {
        self.info.max_allocation
    }

    fn alignment(&self) -> usize {
        self.info.alignment
    }

    fn kind(&self) -> BackendKind {
        BackendKind::OpenCl
    }

    fn usage_counters(&self) -> &UsageCounters {
        &self.usage
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn allocate(&self, bytes: usize) -> Result<DeviceBlock> {
        // SAFETY: READ_WRITE without a host pointer is a valid flag set; the size is non-zero and
        // within the device limit.
        let mem = unsafe {
            create_buffer(
                self.context.get(),
                CL_MEM_READ_WRITE,
                bytes,
                ptr::null_mut(),
            )
        }
        .map_err(|code| allocation_error("clCreateBuffer", code, bytes))?;
        // SAFETY: a new cl_mem of `bytes` bytes, handed out once, released in `release`.
        Ok(unsafe { DeviceBlock::from_raw(self.id, mem, bytes) })
    }

    unsafe fn release(&self, block: DeviceBlock) -> Result<()> {
        // SAFETY: the block is ours (the caller's guarantee), so its handle is a cl_mem we
        // created and hold one reference to; `release` consumes the block, so the reference is
        // dropped once. OpenCL frees the memory only after enqueued commands that use it
        // complete.
        unsafe { release_mem_object(block.into_raw()) }
            .map_err(|code| cl_error("clReleaseMemObject", code))?;
        Ok(())
    }

    unsafe fn view(&self, segment: &DeviceBlock, offset: usize, len: usize) -> Result<*mut c_void> {
        let region = cl_buffer_region {
            origin: offset,
            size: len,
        };
        // SAFETY: a region inside the segment whose origin is a multiple of the device's base
        // address alignment (checked by the caller); `region` outlives the call.
        unsafe {
            cl3::memory::create_sub_buffer(
                mem(segment),
                CL_MEM_READ_WRITE,
                CL_BUFFER_CREATE_TYPE_REGION,
                (&raw const region).cast(),
            )
        }
        .map_err(|code| cl_error("clCreateSubBuffer", code))
    }

    unsafe fn release_view(&self, view: DeviceBlock) -> Result<()> {
        // SAFETY: the view is a sub-buffer we created and hold one reference to (the caller's
        // guarantee), dropped once; OpenCL keeps it until the commands using it complete.
        unsafe { release_mem_object(view.into_raw()) }
            .map_err(|code| cl_error("clReleaseMemObject", code))
    }

    /// Never reached: a cl_mem is reachable from the host only while mapped.
    unsafe fn host_address(&self, _block: &DeviceBlock) -> Result<*mut u8> {
        Err(unsupported(BackendKind::OpenCl, "host_address"))
    }

    /// OpenCL has no virtual memory: no reservations (the other calls are never made).
    fn commit_granularity(&self) -> Option<usize> {
        None
    }

    fn reserve(&self, _bytes: usize) -> Result<*mut c_void> {
        Err(unsupported(BackendKind::OpenCl, "reserve"))
    }

    unsafe fn commit(&self, _: &DeviceBlock, _offset: usize, _len: usize) -> Result<usize> {
        Err(unsupported(BackendKind::OpenCl, "commit"))
    }

    unsafe fn decommit(&self, _: &DeviceBlock, _offset: usize, _len: usize) -> Result<usize> {
        Err(unsupported(BackendKind::OpenCl, "decommit"))
    }

    unsafe fn release_reservation(&self, _: DeviceBlock) -> Result<usize> {
        Err(unsupported(BackendKind::OpenCl, "release_reservation"))
    }

    fn allocate_staging(&self, bytes: usize) -> Result<StagingBuffer> {
        let queue = self.command_queue(&self.queue)?;
        let memory = ClStaging::new(&self.context, queue, bytes)?;
        Ok(StagingBuffer::new(self.id, Arc::new(memory)))
    }

    fn default_queue(&self) -> &Queue {
        &self.queue
    }

    fn create_queue(&self) -> Result<Queue> {
        let queue = Arc::new(
            CommandQueue::create_default_with_properties(&self.context, 0, 0)
                .map_err(|e| cl_error("clCreateCommandQueueWithProperties", e.0))?,
        );
        self.queues.lock().unpoisoned().push(queue.clone());
        Ok(Queue::new(self.id, queue))
    }

    unsafe fn write(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        offset: usize,
        src: &[u8],
    ) -> Result<()> {
        let q = self.command_queue(queue)?;
        // SAFETY: blocking write: `src` is read before the call returns; the range is inside the
        // cl_mem (the caller's guarantee).
        let raw = unsafe {
            clq::enqueue_write_buffer(
                q.get(),
                mem(dst),
                CL_BLOCKING,
                offset,
                src.len(),
                src.as_ptr().cast(),
                0,
                ptr::null(),
            )
        }
        .map_err(|code| cl_error("clEnqueueWriteBuffer", code))?;
        discard(raw);
        Ok(())
    }

    unsafe fn read(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<()> {
        let q = self.command_queue(queue)?;
        // SAFETY: blocking read: `dst` is fully written before the call returns; the range is
        // inside the cl_mem (the caller's guarantee).
        let raw = unsafe {
            clq::enqueue_read_buffer(
                q.get(),
                mem(src),
                CL_BLOCKING,
                offset,
                dst.len(),
                dst.as_mut_ptr().cast(),
                0,
                ptr::null(),
            )
        }
        .map_err(|code| cl_error("clEnqueueReadBuffer", code))?;
        discard(raw);
        Ok(())
    }

    unsafe fn map(
        &self,
        queue: &Queue,
        block: &DeviceBlock,
        offset: usize,
        len: usize,
        mode: MapMode,
    ) -> Result<*mut u8> {
        let q = self.command_queue(queue)?;
        // SAFETY: the caller's guarantees: the block is this backend's and the range inside.
        unsafe { self.mapped.map(q, mem(block), offset, len, mode) }
    }

    unsafe fn unmap(&self, queue: &Queue, block: &DeviceBlock, ptr: *mut u8) -> Result<()> {
        let q = self.command_queue(queue)?;
        // SAFETY: the caller's guarantee: `ptr` is a live mapping of this block.
        unsafe { self.mapped.unmap(q, mem(block), ptr) }
    }

    fn allocate_shared(&self, bytes: usize) -> Result<DeviceBlock> {
        self.allocate_svm(bytes)
    }

    /// Fine-grained SVM does not move between host and device memory here (a hint to skip).
    unsafe fn migrate(&self, _queue: &Queue, _block: &DeviceBlock, _to: MigrateTo) -> Result<()> {
        Ok(())
    }

    unsafe fn write_parts(
        &self,
        queues: &[Queue],
        blocks: &mut [&mut DeviceBlock],
        parts: &[WritePart<'_>],
    ) -> std::result::Result<(), PartFailures> {
        self.scatter(queues, blocks, parts)
    }

    unsafe fn read_parts(
        &self,
        queues: &[Queue],
        blocks: &[&DeviceBlock],
        parts: &mut [ReadPart<'_>],
    ) -> std::result::Result<(), PartFailures> {
        self.gather(queues, blocks, parts)
    }

    unsafe fn write_staged(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        src: &StagingBuffer,
        region: CopyRegion,
    ) -> Result<Event> {
        let CopyRegion {
            src_offset,
            dst_offset,
            len,
        } = region;
        let q = self.command_queue(queue)?;
        let host = src.memory().as_ptr().wrapping_add(src_offset);
        // SAFETY: non-blocking write from staging memory. The range is inside the staging buffer
        // (the caller's guarantee); the caller records the event on the buffer, and its host
        // writers and Drop wait for it, so the memory stays valid and unchanged until the
        // device has read it.
        let raw = unsafe {
            clq::enqueue_write_buffer(
                q.get(),
                mem(dst),
                CL_NON_BLOCKING,
                dst_offset,
                len,
                host.cast(),
                0,
                ptr::null(),
            )
        }
        .map_err(|code| cl_error("clEnqueueWriteBuffer", code))?;
        let event = self.submitted(q, raw)?;
        Ok(event)
    }

    unsafe fn read_staged(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        dst: &mut StagingBuffer,
        region: CopyRegion,
    ) -> Result<Event> {
        let CopyRegion {
            src_offset,
            dst_offset,
            len,
        } = region;
        let q = self.command_queue(queue)?;
        let host = dst.memory().as_ptr().wrapping_add(dst_offset);
        // SAFETY: non-blocking read into staging memory. The range is inside the staging buffer
        // (the caller's guarantee); the caller records the event on the buffer, and every host
        // access and Drop waits for it, so nothing reads or frees the memory while the device
        // writes it.
        let raw = unsafe {
            clq::enqueue_read_buffer(
                q.get(),
                mem(src),
                CL_NON_BLOCKING,
                src_offset,
                len,
                host.cast(),
                0,
                ptr::null(),
            )
        }
        .map_err(|code| cl_error("clEnqueueReadBuffer", code))?;
        let event = self.submitted(q, raw)?;
        Ok(event)
    }

    unsafe fn copy(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        dst: &mut DeviceBlock,
        region: CopyRegion,
    ) -> Result<Event> {
        let CopyRegion {
            src_offset,
            dst_offset,
            len,
        } = region;
        let q = self.command_queue(queue)?;
        // SAFETY: both ranges are inside their cl_mem objects (the caller's guarantee), which are distinct
        // blocks of this context, so the copy cannot overlap.
        let raw = unsafe {
            clq::enqueue_copy_buffer(
                q.get(),
                mem(src),
                mem(dst),
                src_offset,
                dst_offset,
                len,
                0,
                ptr::null(),
            )
        }
        .map_err(|code| cl_error("clEnqueueCopyBuffer", code))?;
        self.submitted(q, raw)
    }

    unsafe fn fill(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        offset: usize,
        len: usize,
        pattern: &[u8],
    ) -> Result<Event> {
        let q = self.command_queue(queue)?;
        // SAFETY: the range is inside the cl_mem and aligned to the pattern (the caller's
        // guarantee); OpenCL
        // copies the pattern before clEnqueueFillBuffer returns.
        let raw = unsafe {
            clq::enqueue_fill_buffer(
                q.get(),
                mem(dst),
                pattern.as_ptr().cast(),
                pattern.len(),
                offset,
                len,
                0,
                ptr::null(),
            )
        }
        .map_err(|code| cl_error("clEnqueueFillBuffer", code))?;
        self.submitted(q, raw)
    }

    /// Never reached: no peer domain (each device has its own context; peers copy through
    /// the host).
    unsafe fn copy_to_peer(
        &self,
        _queue: &Queue,
        _src: &DeviceBlock,
        _dst_backend: &dyn Backend,
        _dst: &mut DeviceBlock,
        _region: CopyRegion,
    ) -> Result<Event> {
        Err(unsupported(BackendKind::OpenCl, "copy_to_peer"))
    }

    fn enqueue_wait(&self, queue: &Queue, event: &Event) -> Result<()> {
        let q = self.command_queue(queue)?;
        let Some(source) = event.source() else {
            return Ok(());
        };
        match source.as_any().downcast_ref::<ClEvent>() {
            Some(cl) if source.backend() == Some(self.id) => {
                let wait_list = [cl.raw()];
                // SAFETY: the wait list holds one live event of this backend's context.
                let raw =
                    unsafe { clq::enqueue_barrier_with_wait_list(q.get(), 1, wait_list.as_ptr()) }
                        .map_err(|code| cl_error("clEnqueueBarrierWithWaitList", code))?;
                // SAFETY: `cl` holds a live reference to the event; the new one goes to the
                // keeper, which holds it until the barrier that waits for it completes.
                match unsafe { cl3::event::retain_event(cl.raw()) } {
                    Ok(()) => self.unfinished.keep_while_waited(cl.raw(), raw),
                    // The driver lost the event: hold the barrier at least.
                    Err(_) => self.unfinished.keep(raw),
                }
                q.flush().map_err(|e| cl_error("clFlush", e.0))
            }
            // Events of other contexts cannot enter this context's wait lists.
            _ => event.wait(),
        }
    }

    fn enqueue_marker(&self, queue: &Queue) -> Result<Event> {
        let q = self.command_queue(queue)?;
        // SAFETY: an empty wait list; the marker's event is owned by the returned Event.
        let raw = unsafe { clq::enqueue_marker_with_wait_list(q.get(), 0, ptr::null()) }
            .map_err(|code| cl_error("clEnqueueMarkerWithWaitList", code))?;
        self.submitted(q, raw)
    }

    fn create_user_event(&self) -> Result<UserEvent> {
        self.user_event().map(|(user, _)| user)
    }

    fn synchronize(&self) -> Result<()> {
        let queues = self.queues.lock().unpoisoned().clone();
        for queue in queues {
            queue.finish().map_err(|e| cl_error("clFinish", e.0))?;
        }
        self.unfinished.clear();
        Ok(())
    }
}
