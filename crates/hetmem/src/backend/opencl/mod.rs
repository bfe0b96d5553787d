//! The OpenCL backend (feature `opencl`): one backend per OpenCL device, over opencl3.
//!
//! libOpenCL is opened at run time, so a machine without OpenCL builds and runs hetmem and gets
//! [`Error::BackendUnavailable`] from [`OpenClBackend::all`]. Each device has its own context and
//! in-order queues; blocks are `cl_mem` buffers; staging buffers are `CL_MEM_ALLOC_HOST_PTR`
//! buffers mapped once for their whole life (page-locked on GPU drivers), used as the host side of
//! non-blocking reads and writes.

mod errors;
mod event;
mod mapping;
mod parts;
mod staging;

pub(crate) use errors::cl_error;
use errors::{allocation_error, unavailable};
use mapping::{MapFor, Mapping};
use staging::ClStaging;

use crate::sync::Unpoison;
use std::any::Any;
use std::ptr;
use std::sync::{Arc, Mutex};

use opencl3::command_queue::{self as clq, CommandQueue};
use opencl3::context::Context;
use opencl3::device::{Device, CL_DEVICE_TYPE_ALL};
use opencl3::error_codes::CL_DEVICE_NOT_FOUND;
use opencl3::event::{
    create_user_event, set_user_event_status, Event as ClEventHandle, CL_COMPLETE,
};
use opencl3::memory::{
    create_buffer, release_mem_object, CL_MAP_READ, CL_MAP_WRITE_INVALIDATE_REGION,
    CL_MEM_READ_WRITE,
};
use opencl3::platform::{get_platforms, Platform};
use opencl3::types::{cl_event, cl_int, cl_mem, CL_BLOCKING, CL_NON_BLOCKING};

use self::event::{ClEvent, Unfinished};
use super::{
    check_allocation, check_block, check_fill, check_owner, check_release, check_staging, Backend,
    BackendId, BackendKind, BackendUsage, Capabilities, DeviceBlock, DeviceInfo, Event,
    PartFailures, Queue, ReadPart, StagingBuffer, UsageCounters, UserEvent, WritePart,
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
    /// Held while a block is mapped: PoCL 3.1 crashes (SIGSEGV inside the copy out of the
    /// mapping) when two threads map one buffer at once, even both for reading — seen here
    /// within 20,000 concurrent 64 KiB read maps. Maps are rare (no plan picks them unasked
    /// where they lose), so one at a time per device costs nothing that matters.
    maps: Mutex<()>,
    /// Barriers and scattered parts, held until they finish (see [`Unfinished`]).
    unfinished: Arc<Unfinished>,
    info: DeviceInfo,
    capabilities: Capabilities,
    usage: UsageCounters,
}

// The `Device` and `Context` handles are `Send + Sync` (opencl3 declares them so; OpenCL objects
// are thread-safe except kernels, which hetmem never shares).

impl OpenClBackend {
    /// One backend per device of every OpenCL platform, numbered in platform order.
    pub fn all() -> Result<Vec<OpenClBackend>> {
        // Some ICDs (PoCL among them) initialise lazily and can report no device to a second
        // thread that enumerates while the first is still initialising: enumerate one at a time.
        static ENUMERATION: Mutex<()> = Mutex::new(());
        let _one_at_a_time = ENUMERATION.lock().unpoisoned();
        if !cl3::is_opencl_runtime_available() {
            return Err(unavailable(
                "no OpenCL ICD loader (libOpenCL.so.1) could be loaded; install one with an ICD \
                 such as PoCL (Debian: ocl-icd-libopencl1 pocl-opencl-icd) or a GPU driver",
            ));
        }
        let platforms = get_platforms().map_err(|e| match e.0 {
            CL_PLATFORM_NOT_FOUND_KHR => unavailable(
                "the OpenCL loader found no platform; install an ICD such as pocl-opencl-icd",
            ),
            code => cl_error("clGetPlatformIDs", code),
        })?;
        let mut backends = Vec::new();
        for platform in &platforms {
            let ids = match platform.get_devices(CL_DEVICE_TYPE_ALL) {
                Ok(ids) => ids,
                Err(e) if e.0 == CL_DEVICE_NOT_FOUND => continue,
                Err(e) => return Err(cl_error("clGetDeviceIDs", e.0)),
            };
            for id in ids {
                backends.push(OpenClBackend::new(
                    backends.len(),
                    platform,
                    Device::new(id),
                )?);
            }
        }
        if backends.is_empty() {
            return Err(unavailable(
                "OpenCL platforms are installed but expose no device",
            ));
        }
        Ok(backends)
    }

    /// The backend for the `index`-th OpenCL device (`opencl:index`).
    pub fn with_index(index: usize) -> Result<OpenClBackend> {
        let mut all = OpenClBackend::all()?;
        let count = all.len();
        if index >= count {
            return Err(unavailable(&format!(
                "OpenCL device {index} requested, but this machine has {count}"
            )));
        }
        Ok(all.swap_remove(index))
    }

    fn new(index: usize, platform: &Platform, device: Device) -> Result<Self> {
        let context =
            Context::from_device(&device).map_err(|e| cl_error("clCreateContext", e.0))?;
        let id = BackendId::unique();
        let info = DeviceInfo {
            kind: BackendKind::OpenCl,
            index,
            name: device.name().unwrap_or_default(),
            vendor: device.vendor().unwrap_or_default(),
            driver: format!(
                "{} {}",
                platform.name().unwrap_or_default(),
                device.driver_version().unwrap_or_default()
            ),
            total_memory: device
                .global_mem_size()
                .map_err(|e| cl_error("clGetDeviceInfo", e.0))?,
            free_memory: None,
            max_allocation: device
                .max_mem_alloc_size()
                .map_err(|e| cl_error("clGetDeviceInfo", e.0))?,
            // CL_DEVICE_MEM_BASE_ADDR_ALIGN is in bits.
            alignment: (device.mem_base_addr_align().unwrap_or(8) as usize / 8).max(1),
        };
        let capabilities = Capabilities {
            unified_memory: device.host_unified_memory().unwrap_or(false),
            peer_access: false,
            async_copies: true,
            pinned_staging: true,
            // A cl_mem is reachable from the host only while mapped.
            host_addressable: false,
        };
        let mut backend = OpenClBackend {
            id,
            device,
            context,
            queue: Queue::new(id, Arc::new(())),
            queues: Mutex::new(Vec::new()),
            maps: Mutex::new(()),
            unfinished: Arc::default(),
            info,
            capabilities,
            usage: UsageCounters::default(),
        };
        backend.queue = backend.create_queue()?;
        Ok(backend)
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

    /// Maps `offset..offset + len` of `block`, lets `access` at the bytes, unmaps.
    fn mapped(
        &self,
        queue: &Queue,
        purpose: MapFor,
        block: &DeviceBlock,
        offset: usize,
        len: usize,
        access: &mut dyn FnMut(&mut [u8]),
    ) -> Result<bool> {
        let q = self.command_queue(queue)?;
        let (what, flags) = match purpose {
            MapFor::Write => ("mapped write destination", CL_MAP_WRITE_INVALIDATE_REGION),
            MapFor::Read => ("mapped read source", CL_MAP_READ),
        };
        check_block(self.id, what, block, offset, len)?;
        let _one_at_a_time = self.maps.lock().unpoisoned();
        let mut mapping = Mapping::new(q, mem(block), flags, offset, len)?;
        access(mapping.bytes_mut());
        mapping.unmap()?;
        Ok(true)
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

impl Backend for OpenClBackend {
    fn id(&self) -> BackendId {
        self.id
    }

    fn info(&self) -> DeviceInfo {
        self.info.clone()
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    fn usage(&self) -> BackendUsage {
        self.usage.snapshot()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn allocate(&self, bytes: usize) -> Result<DeviceBlock> {
        check_allocation(bytes, self.info.max_allocation)?;
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
        self.usage.allocated(bytes);
        // SAFETY: a new cl_mem of `bytes` bytes, handed out once, released in `release`.
        Ok(unsafe { DeviceBlock::from_raw(self.id, mem, bytes) })
    }

    fn release(&self, block: DeviceBlock) -> Result<()> {
        let block = check_release(self.id, block)?;
        let bytes = block.size();
        // SAFETY: the block is ours, so its handle is a cl_mem we created and hold one reference
        // to; `release` consumes the block, so the reference is dropped once. OpenCL frees the
        // memory only after enqueued commands that use it complete.
        unsafe { release_mem_object(block.into_raw()) }
            .map_err(|code| cl_error("clReleaseMemObject", code))?;
        self.usage.released(bytes);
        Ok(())
    }

    fn allocate_staging(&self, bytes: usize) -> Result<StagingBuffer> {
        check_allocation(bytes, self.info.max_allocation)?;
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

    fn write(&self, queue: &Queue, dst: &mut DeviceBlock, offset: usize, src: &[u8]) -> Result<()> {
        let q = self.command_queue(queue)?;
        check_block(self.id, "write destination", dst, offset, src.len())?;
        // SAFETY: blocking write: `src` is read before the call returns; the range is inside the
        // cl_mem (checked).
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

    fn read(&self, queue: &Queue, src: &DeviceBlock, offset: usize, dst: &mut [u8]) -> Result<()> {
        let q = self.command_queue(queue)?;
        check_block(self.id, "read source", src, offset, dst.len())?;
        // SAFETY: blocking read: `dst` is fully written before the call returns; the range is
        // inside the cl_mem (checked).
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

    fn write_mapped(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        offset: usize,
        len: usize,
        access: &mut dyn FnMut(&mut [u8]),
    ) -> Result<bool> {
        self.mapped(queue, MapFor::Write, dst, offset, len, access)
    }

    fn read_mapped(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        offset: usize,
        len: usize,
        access: &mut dyn FnMut(&[u8]),
    ) -> Result<bool> {
        self.mapped(queue, MapFor::Read, src, offset, len, &mut |b| access(b))
    }

    fn write_parts(
        &self,
        queues: &[Queue],
        blocks: &mut [&mut DeviceBlock],
        parts: &[WritePart<'_>],
    ) -> std::result::Result<(), PartFailures> {
        self.scatter(queues, blocks, parts)
    }

    fn read_parts(
        &self,
        queues: &[Queue],
        blocks: &[&DeviceBlock],
        parts: &mut [ReadPart<'_>],
    ) -> std::result::Result<(), PartFailures> {
        self.gather(queues, blocks, parts)
    }

    fn write_staged(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        dst_offset: usize,
        src: &StagingBuffer,
        src_offset: usize,
        len: usize,
    ) -> Result<Event> {
        let q = self.command_queue(queue)?;
        check_block(self.id, "staged write destination", dst, dst_offset, len)?;
        check_staging(self.id, "staged write source", src, src_offset, len)?;
        let host = src.memory().as_ptr().wrapping_add(src_offset);
        // SAFETY: non-blocking write from staging memory. The range is inside the staging buffer
        // (checked); the buffer records the event below, and its host writers and Drop wait for
        // it, so the memory stays valid and unchanged until the device has read it.
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
        src.track_device_read(event.clone());
        Ok(event)
    }

    fn read_staged(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        src_offset: usize,
        dst: &mut StagingBuffer,
        dst_offset: usize,
        len: usize,
    ) -> Result<Event> {
        let q = self.command_queue(queue)?;
        check_block(self.id, "staged read source", src, src_offset, len)?;
        check_staging(self.id, "staged read destination", dst, dst_offset, len)?;
        let host = dst.memory().as_ptr().wrapping_add(dst_offset);
        // SAFETY: non-blocking read into staging memory. The range is inside the staging buffer
        // (checked); the buffer records the event below, and every host access and Drop waits
        // for it, so nothing reads or frees the memory while the device writes it.
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
        dst.track_device_write(event.clone());
        Ok(event)
    }

    fn copy(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        src_offset: usize,
        dst: &mut DeviceBlock,
        dst_offset: usize,
        len: usize,
    ) -> Result<Event> {
        let q = self.command_queue(queue)?;
        check_block(self.id, "copy source", src, src_offset, len)?;
        check_block(self.id, "copy destination", dst, dst_offset, len)?;
        // SAFETY: both ranges are inside their cl_mem objects (checked), which are distinct
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

    fn fill(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        offset: usize,
        len: usize,
        pattern: &[u8],
    ) -> Result<Event> {
        let q = self.command_queue(queue)?;
        check_owner("device block", self.id, dst.backend())?;
        check_fill(offset, len, pattern, dst.size())?;
        // SAFETY: the range is inside the cl_mem and aligned to the pattern (checked); OpenCL
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
                self.unfinished.keep(raw);
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
        let raw = create_user_event(self.context.get())
            .map_err(|code| cl_error("clCreateUserEvent", code))?;
        let source = Arc::new(ClEvent::new(raw, self));
        let event = Event::from_source(source.clone());
        Ok(UserEvent::new(
            event,
            Box::new(move |ok| {
                let status = if ok { CL_COMPLETE } else { -1 };
                set_user_event_status(source.raw(), status)
                    .map_err(|code| cl_error("clSetUserEventStatus", code))
            }),
        ))
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
