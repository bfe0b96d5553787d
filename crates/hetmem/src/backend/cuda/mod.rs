//! The CUDA backend (feature `cuda`): one backend per CUDA device, over cudarc's driver API.
//!
//! libcuda is opened at run time, so a machine without an NVIDIA driver builds and runs hetmem
//! and gets [`Error::BackendUnavailable`] from [`CudaBackend::all`] (never cudarc's panic: the
//! library and every symbol are checked first, see `driver.rs`). Each backend uses the device's
//! primary context (shared with cudarc and the CUDA runtime in the same process). Queues are
//! non-blocking streams; blocks are raw `CUdeviceptr`s (no `CudaSlice`, so none of cudarc's
//! per-allocation events: hetmem's pools keep their own ordering); staging buffers are
//! page-locked `cuMemHostAlloc` memory, not write-combined, because the host reads it back
//! after device-to-host copies.
//!
//! Ordering across queues follows the backend contract: an allocation made on the default
//! stream is ordered before later work on every queue, and a release is ordered after work
//! already enqueued on every queue.

mod adopt;
pub use adopt::CudaRegistered;
mod driver;
mod event;
mod interop;
pub(crate) use interop::lend;
pub use interop::{CudaDeviceMut, CudaDeviceRef};
mod managed;
mod open;
mod pinned;
mod reserve;

use pinned::PinnedHost;

use crate::sync::Unpoison;
use std::any::Any;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cudarc::driver::sys::{self, CUdeviceptr};
use cudarc::driver::{result, CudaContext, CudaStream};

use self::driver::{allocation_error, unavailable, DriverResult, Status};
use self::event::{gate, stream_wait, CuEvent, Notifier};
use super::raw::{read_parts_in_turn, unsupported, write_parts_in_turn, RawBackend};
use super::{
    check_owner, Backend, BackendId, BackendKind, Capabilities, CopyRegion, DeviceBlock,
    DeviceInfo, Event, MapMode, MigrateTo, PartFailures, Queue, ReadPart, StagingBuffer,
    UsageCounters, UserEvent, WritePart,
};
use crate::error::{Error, Result};

/// Start addresses of `cuMemAlloc` blocks are aligned to at least this (the driver guarantees
/// 256 bytes).
const ALIGNMENT: usize = 256;

/// One CUDA device: its primary context, non-blocking streams as queues, raw device memory.
pub struct CudaBackend {
    id: BackendId,
    ctx: Arc<CudaContext>,
    queue: Queue,
    default_stream: Arc<CudaStream>,
    /// Every stream created, so that allocation, release and `synchronize` reach them all.
    streams: Mutex<Vec<Arc<CudaStream>>>,
    notifier: Arc<Notifier>,
    /// `cuMemAllocAsync` on the default stream where the device has memory pools.
    async_allocation: bool,
    info: DeviceInfo,
    capabilities: Capabilities,
    usage: UsageCounters,
    /// Device memory made outside hetmem, released by its owner's callback.
    adopted: adopt::Adopted,
    /// Physical allocation granularity, where the device has virtual memory management.
    commit_granularity: Option<usize>,
    reservations: reserve::Reservations,
}

impl CudaBackend {
    /// The device's primary context, for loading modules and launching your own kernels on
    /// this backend's blocks.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The CUDA stream behind a hetmem queue of this backend, for launching kernels in order
    /// with hetmem's transfers.
    pub fn stream<'q>(&self, queue: &'q Queue) -> Result<&'q Arc<CudaStream>> {
        check_owner("queue", self.id, queue.backend())?;
        queue
            .downcast::<Arc<CudaStream>>()
            .ok_or_else(|| Error::invalid("queue does not hold a CUDA stream"))
    }

    /// The stream of `queue`, with this backend's context current on the calling thread (every
    /// driver call needs it, and any thread may call).
    fn bound<'q>(&self, queue: &'q Queue) -> Result<&'q Arc<CudaStream>> {
        let stream = self.stream(queue)?;
        self.ctx.bind_to_thread().cu("cuCtxSetCurrent")?;
        Ok(stream)
    }

    /// An event for the work enqueued on `stream` so far.
    fn recorded(&self, stream: &CudaStream) -> Result<Event> {
        CuEvent::record(stream, self.id, &self.notifier)
    }

    fn streams(&self) -> Vec<Arc<CudaStream>> {
        self.streams.lock().unpoisoned().clone()
    }

    /// Makes every other stream's later work wait for what `stream` has enqueued so far.
    fn order_others_after(&self, stream: &Arc<CudaStream>) -> Result<()> {
        let others: Vec<_> = self
            .streams()
            .into_iter()
            .filter(|s| !Arc::ptr_eq(s, stream))
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        let done = stream.record_event(None).cu("cuEventRecord")?;
        others
            .iter()
            .try_for_each(|s| s.wait(&done).cu("cuStreamWaitEvent"))
    }

    /// Makes `stream`'s later work wait for what every other stream has enqueued so far.
    fn order_after_others(&self, stream: &Arc<CudaStream>) -> Result<()> {
        for other in self.streams() {
            if !Arc::ptr_eq(&other, stream) {
                stream.join(&other).cu("cuStreamWaitEvent")?;
            }
        }
        Ok(())
    }

    /// Enqueues one blocking copy between pageable host memory and the device: async on the
    /// queue's stream (so it is ordered with the queue's other work), then waits for it.
    fn blocking(&self, queue: &Queue, copy: impl FnOnce(&CudaStream) -> Result<()>) -> Result<()> {
        let stream = self.bound(queue)?;
        copy(stream)?;
        stream.synchronize().cu("cuStreamSynchronize")
    }
}

/// Runs a probe with cudarc's panics (a library or symbol missing despite the checks) turned
/// into [`Error::BackendUnavailable`].
fn guarded<T>(probe: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(probe)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        Err(unavailable(&format!(
            "the CUDA driver could not be used: {message}"
        )))
    })
}

fn ptr(block: &DeviceBlock) -> CUdeviceptr {
    block.raw_handle() as CUdeviceptr
}

impl RawBackend for CudaBackend {
    fn id(&self) -> BackendId {
        self.id
    }

    fn info(&self) -> DeviceInfo {
        let free = self.ctx.mem_get_info().ok().map(|(free, _)| free as u64);
        DeviceInfo {
            free_memory: free,
            ..self.info.clone()
        }
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
        ALIGNMENT
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Cuda
    }

    fn usage_counters(&self) -> &UsageCounters {
        &self.usage
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn allocate(&self, bytes: usize) -> Result<DeviceBlock> {
        let stream = self.bound(&self.queue)?;
        let address = if self.async_allocation {
            // SAFETY: a non-zero size on a live stream of the current context.
            let address = unsafe { result::malloc_async(stream.cu_stream(), bytes) }
                .map_err(|e| allocation_error("cuMemAllocAsync", e, bytes))?;
            // The memory is usable in the default stream's order; other queues must not
            // touch it before the allocation has happened there.
            if let Err(e) = self.order_others_after(stream) {
                // SAFETY: the block was never handed out; freeing it in stream order is safe.
                let _ = unsafe { result::free_async(address, stream.cu_stream()) };
                return Err(e);
            }
            address
        } else {
            // SAFETY: a non-zero size; the context is current.
            unsafe { result::malloc_sync(bytes) }
                .map_err(|e| allocation_error("cuMemAlloc", e, bytes))?
        };
        // SAFETY: a new device allocation of `bytes` bytes, handed out once, released in
        // `release`.
        Ok(unsafe { DeviceBlock::from_raw(self.id, address as *mut c_void, bytes) })
    }

    unsafe fn release(&self, block: DeviceBlock) -> Result<()> {
        let managed = block.shared_address().is_some();
        let address = block.into_raw() as CUdeviceptr;
        if let Some(give_back) = self.adopted.take(address) {
            // Memory of the caller's: handed back once every queue's work on it is done.
            RawBackend::synchronize(self)?;
            give_back();
            return Ok(());
        }
        let stream = self.bound(&self.queue)?;
        if self.async_allocation && !managed {
            // Freed in the default stream's order, after the work every queue has enqueued.
            self.order_after_others(stream)?;
            // SAFETY: the block was ours (the caller's guarantee) and is consumed, so it is freed
            // once; the free is ordered after all enqueued work that may use it.
            unsafe { result::free_async(address, stream.cu_stream()) }.cu("cuMemFreeAsync")?;
        } else {
            RawBackend::synchronize(self)?;
            // SAFETY: as above; every queue has finished, so nothing uses the memory.
            unsafe { result::free_sync(address) }.cu("cuMemFree")?;
        }
        Ok(())
    }

    /// Never reached: device memory is not host-addressable.
    unsafe fn host_address(&self, _block: &DeviceBlock) -> Result<*mut u8> {
        Err(unsupported(BackendKind::Cuda, "host_address"))
    }

    unsafe fn view(
        &self,
        segment: &DeviceBlock,
        offset: usize,
        _len: usize,
    ) -> Result<*mut c_void> {
        Ok((segment.raw_handle() as CUdeviceptr + offset as CUdeviceptr) as *mut c_void)
    }

    /// A device pointer into a segment: nothing to let go.
    unsafe fn release_view(&self, view: DeviceBlock) -> Result<()> {
        let _ = view.into_raw();
        Ok(())
    }

    fn commit_granularity(&self) -> Option<usize> {
        self.commit_granularity
    }

    fn reserve(&self, bytes: usize) -> Result<*mut c_void> {
        self.reserve_addresses(bytes)
    }

    unsafe fn commit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<usize> {
        self.commit_range(reservation, offset, len)
    }

    unsafe fn decommit(
        &self,
        reservation: &DeviceBlock,
        offset: usize,
        len: usize,
    ) -> Result<usize> {
        self.decommit_range(reservation, offset, len)
    }

    unsafe fn release_reservation(&self, reservation: DeviceBlock) -> Result<usize> {
        self.release_addresses(reservation)
    }

    fn allocate_staging(&self, bytes: usize) -> Result<StagingBuffer> {
        self.ctx.bind_to_thread().cu("cuCtxSetCurrent")?;
        let memory = PinnedHost::new(&self.ctx, bytes)?;
        Ok(StagingBuffer::new(self.id, Arc::new(memory)))
    }

    fn default_queue(&self) -> &Queue {
        &self.queue
    }

    fn create_queue(&self) -> Result<Queue> {
        let stream = self.ctx.new_stream().cu("cuStreamCreate")?;
        // Blocks allocated so far are usable on the new stream only after their allocation.
        stream.join(&self.default_stream).cu("cuStreamWaitEvent")?;
        self.streams.lock().unpoisoned().push(stream.clone());
        Ok(Queue::new(self.id, Arc::new(stream)))
    }

    unsafe fn write(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        offset: usize,
        src: &[u8],
    ) -> Result<()> {
        let to = ptr(dst) + offset as CUdeviceptr;
        self.blocking(queue, |stream| {
            // SAFETY: the range is inside the block (the caller's guarantee); `src` outlives the copy, which
            // `blocking` waits for before returning.
            unsafe { result::memcpy_htod_async(to, src, stream.cu_stream()) }
                .cu("cuMemcpyHtoDAsync")
        })
    }

    unsafe fn read(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<()> {
        let from = ptr(src) + offset as CUdeviceptr;
        self.blocking(queue, |stream| {
            // SAFETY: the range is inside the block (the caller's guarantee); `dst` is borrowed mutably until
            // the copy has finished (`blocking` waits).
            unsafe { result::memcpy_dtoh_async(dst, from, stream.cu_stream()) }
                .cu("cuMemcpyDtoHAsync")
        })
    }

    unsafe fn write_parts(
        &self,
        queues: &[Queue],
        blocks: &mut [&mut DeviceBlock],
        parts: &[WritePart<'_>],
    ) -> std::result::Result<(), PartFailures> {
        // SAFETY: the caller's guarantees, passed on.
        unsafe { write_parts_in_turn(self, queues, blocks, parts) }
    }

    unsafe fn read_parts(
        &self,
        queues: &[Queue],
        blocks: &[&DeviceBlock],
        parts: &mut [ReadPart<'_>],
    ) -> std::result::Result<(), PartFailures> {
        // SAFETY: the caller's guarantees, passed on.
        unsafe { read_parts_in_turn(self, queues, blocks, parts) }
    }

    /// Never reached: device memory is not mapped here (transfers go through staging; shared
    /// allocations are managed memory, which the host reaches in place).
    unsafe fn map(
        &self,
        _queue: &Queue,
        _block: &DeviceBlock,
        _offset: usize,
        _len: usize,
        _mode: MapMode,
    ) -> Result<*mut u8> {
        Err(unsupported(BackendKind::Cuda, "map"))
    }

    /// As `map`.
    unsafe fn unmap(&self, _queue: &Queue, _block: &DeviceBlock, _ptr: *mut u8) -> Result<()> {
        Err(unsupported(BackendKind::Cuda, "unmap"))
    }

    fn allocate_shared(&self, bytes: usize) -> Result<DeviceBlock> {
        self.allocate_managed(bytes)
    }

    unsafe fn migrate(&self, queue: &Queue, block: &DeviceBlock, to: MigrateTo) -> Result<()> {
        self.prefetch(queue, block, to)
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
        let stream = self.bound(queue)?;
        let host = src.memory().as_ptr().wrapping_add(src_offset);
        // SAFETY: both ranges are in bounds (the caller's guarantee); the caller records the
        // event on the staging buffer, and its host writers and Drop wait for it, so the pinned
        // memory stays valid and unchanged until the device has read it.
        unsafe {
            sys::cuMemcpyHtoDAsync_v2(
                ptr(dst) + dst_offset as CUdeviceptr,
                host.cast(),
                len,
                stream.cu_stream(),
            )
        }
        .cu("cuMemcpyHtoDAsync")?;
        let event = self.recorded(stream)?;
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
        let stream = self.bound(queue)?;
        let host = dst.memory().as_ptr().wrapping_add(dst_offset);
        // SAFETY: both ranges are in bounds (the caller's guarantee); the caller records the
        // event on the staging buffer, and every host access and Drop waits for it, so nothing
        // reads or frees the memory while the device writes it.
        unsafe {
            sys::cuMemcpyDtoHAsync_v2(
                host.cast(),
                ptr(src) + src_offset as CUdeviceptr,
                len,
                stream.cu_stream(),
            )
        }
        .cu("cuMemcpyDtoHAsync")?;
        let event = self.recorded(stream)?;
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
        let stream = self.bound(queue)?;
        // SAFETY: both ranges are inside distinct live blocks (the caller's guarantee; `&` and `&mut` cannot
        // be the same block), so they do not overlap.
        unsafe {
            result::memcpy_dtod_async(
                ptr(dst) + dst_offset as CUdeviceptr,
                ptr(src) + src_offset as CUdeviceptr,
                len,
                stream.cu_stream(),
            )
        }
        .cu("cuMemcpyDtoDAsync")?;
        self.recorded(stream)
    }

    /// Any two CUDA devices (one peer domain): `cuMemcpyPeerAsync` copies directly where the
    /// devices have peer access, and the driver stages it where they do not.
    unsafe fn copy_to_peer(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        dst_backend: &dyn Backend,
        dst: &mut DeviceBlock,
        region: CopyRegion,
    ) -> Result<Event> {
        let CopyRegion {
            src_offset,
            dst_offset,
            len,
        } = region;
        let Some(peer) = dst_backend.as_any().downcast_ref::<CudaBackend>() else {
            return Err(unsupported(BackendKind::Cuda, "copy_to_peer"));
        };
        let stream = self.bound(queue)?;
        // SAFETY: both ranges lie inside live blocks of their contexts (the caller's guarantee); the copy is
        // ordered on `stream`, and releases of either block are ordered after it (the source's
        // by this backend's release, the destination's by the wait below).
        unsafe {
            result::memcpy_peer_async(
                peer.ctx.cu_ctx(),
                ptr(dst) + dst_offset as CUdeviceptr,
                self.ctx.cu_ctx(),
                ptr(src) + src_offset as CUdeviceptr,
                len,
                stream.cu_stream(),
            )
        }
        .cu("cuMemcpyPeerAsync")?;
        let event = self.recorded(stream)?;
        // The destination device's later work must not overtake the copy.
        Backend::enqueue_wait(peer, Backend::default_queue(peer), &event)?;
        Ok(event)
    }

    unsafe fn fill(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        offset: usize,
        len: usize,
        pattern: &[u8],
    ) -> Result<Event> {
        let stream = self.bound(queue)?;
        let start = ptr(dst) + offset as CUdeviceptr;
        let pattern = shortest_period(pattern);
        let s = stream.cu_stream();
        // SAFETY: in every arm, the range is inside the block, and offset and length are
        // multiples of the pattern's length (the caller's guarantee; the block's start is 256-byte aligned),
        // so every element written is aligned and in bounds. The pattern's bytes are passed
        // by value.
        unsafe {
            match *pattern {
                [] => {}
                [byte] => sys::cuMemsetD8Async(start, byte, len, s).cu("cuMemsetD8Async")?,
                [a, b] => sys::cuMemsetD16Async(start, u16::from_ne_bytes([a, b]), len / 2, s)
                    .cu("cuMemsetD16Async")?,
                [a, b, c, d] => {
                    sys::cuMemsetD32Async(start, u32::from_ne_bytes([a, b, c, d]), len / 4, s)
                        .cu("cuMemsetD32Async")?
                }
                _ if len == 0 => {}
                _ => {
                    // One 4-byte column of the pattern at a time, over rows of the pattern's
                    // length: one row per repetition.
                    let p = pattern.len();
                    for (i, word) in pattern.chunks_exact(4).enumerate() {
                        let word = u32::from_ne_bytes([word[0], word[1], word[2], word[3]]);
                        sys::cuMemsetD2D32Async(
                            start + 4 * i as CUdeviceptr,
                            p,
                            word,
                            1,
                            len / p,
                            s,
                        )
                        .cu("cuMemsetD2D32Async")?;
                    }
                }
            }
        }
        self.recorded(stream)
    }

    fn enqueue_wait(&self, queue: &Queue, event: &Event) -> Result<()> {
        let stream = self.bound(queue)?;
        let Some(source) = event.source() else {
            return Ok(());
        };
        match source.as_any().downcast_ref::<CuEvent>() {
            // Streams can wait on events of any CUDA context, this device's or another's.
            Some(cuda) => stream_wait(stream, cuda),
            None if event.is_finished() => Ok(()),
            None => gate(stream, event),
        }
    }

    fn enqueue_marker(&self, queue: &Queue) -> Result<Event> {
        let stream = self.bound(queue)?;
        self.recorded(stream)
    }

    fn create_user_event(&self) -> Result<UserEvent> {
        // CUDA has no host-completed events: queues wait on a manual one through a host
        // function (`enqueue_wait`).
        Ok(UserEvent::manual())
    }

    fn synchronize(&self) -> Result<()> {
        self.ctx.bind_to_thread().cu("cuCtxSetCurrent")?;
        self.streams()
            .iter()
            .try_for_each(|s| s.synchronize().cu("cuStreamSynchronize"))
    }
}

/// The shortest prefix of `pattern` whose repetition is `pattern` (its length a power of two):
/// a 16-byte pattern of zeros fills like one zero byte, with one memset.
fn shortest_period(pattern: &[u8]) -> &[u8] {
    let mut period = 1;
    while period < pattern.len() {
        let (head, _) = pattern.split_at(period);
        if pattern.chunks(period).all(|chunk| chunk == head) {
            return head;
        }
        period *= 2;
    }
    pattern
}

#[cfg(test)]
mod tests;
