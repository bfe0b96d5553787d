//! The wgpu backend (feature `wgpu`): one backend per Vulkan, Metal or DX12 adapter; blocks are
//! storage buffers (`STORAGE | COPY_SRC | COPY_DST`, zeroed by wgpu).
//!
//! **Queues.** wgpu has one queue per device and runs what is submitted to it in order. Every
//! hetmem queue of a device submits to that one queue, so work on different hetmem queues is
//! ordered too — more than the ordering contract asks, never less — and an event of this
//! device's submitted work orders later work without any wait. What wgpu's queue cannot do is
//! wait for an event the host completes (a user event, another device's work): a hetmem queue
//! told to wait for one holds its later work and submits it, in order, when the event finishes
//! (`backend/holding.rs`, as on the host backend); blocking calls on it wait for that work.
//!
//! **Transfers.** Writes go through `Queue::write_buffer`, which copies the bytes at once;
//! reads copy into a mappable read-back buffer (kept for reuse) and map it, with the device
//! polled by the calling thread and a polling thread of hetmem's that finishes events —
//! never by a user's async runtime. (A queue held behind one of this device's own events runs
//! its held work from that event's callback, inside a poll; wgpu runs callbacks outside its
//! locks, and the tests gate on host events, so this nesting is not exercised.) wgpu copies in 4-byte units: the partly covered words at
//! the edges of an unaligned write are read and written back whole (blocks never share a word:
//! views start at multiples of the storage-binding alignment, 256 bytes), and an unaligned
//! device copy goes through the host. A staged read is made at once (its event is complete).
//!
//! **Memory.** Storage buffers are not host-addressable: no shared allocations, no
//! reservations. A CPU or integrated adapter is marked `unified_memory`, and where it offers
//! `MAPPABLE_PRIMARY_BUFFERS` its blocks are mappable too (`mapped_access`): a block that is a
//! whole buffer maps in place, with no copy (`mapping.rs`); elsewhere blocks are reached only
//! through copies. Errors wgpu reports outside an error scope fail the next blocking call
//! ([`WgpuBackend::error_messages`] keeps wgpu's words); allocations are checked in scopes, so
//! running out of memory is [`Error::OutOfMemory`](crate::Error).

mod block;
mod device;
pub(crate) mod lend;
mod mapping;
mod open;
mod poller;
mod readback;

use std::any::Any;
use std::ffi::c_void;
use std::sync::Arc;

use self::block::WgpuBlock;
use self::device::{backend_error, error_kind, GpuDevice};
use super::holding::{Held, HoldingQueue};
use super::raw::{unsupported, write_parts_in_turn, RawBackend};
use super::{
    check_owner, Backend, BackendId, BackendKind, Capabilities, CopyRegion, DeviceBlock,
    DeviceInfo, Event, MapMode, MigrateTo, PartFailures, Queue, ReadPart, StagingBuffer,
    UsageCounters, UserEvent, WritePart,
};
use crate::error::{Error, Result};

/// A wgpu device as a hetmem backend: storage buffers as blocks, every hetmem queue feeding the
/// device's one queue (a queue gated on a host event holds its work until then), writes through
/// `write_buffer`, reads through kept mappable buffers, events finished by a polling thread.
/// Not host-addressable; on CPU and integrated adapters with `MAPPABLE_PRIMARY_BUFFERS`, a block
/// that is a whole buffer maps in place ([`Backend::map`]). `docs/ARCHITECTURE.md` says more.
pub struct WgpuBackend {
    id: BackendId,
    index: usize,
    queue: Queue,
    /// Work held behind gates across this backend's queues.
    held: Arc<Held>,
    usage: UsageCounters,
    max_allocation: u64,
    alignment: usize,
    unified: bool,
    /// Storage buffers are mappable too (`MAPPABLE_PRIMARY_BUFFERS`, asked for where unified).
    mappable: bool,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    gpu: Arc<GpuDevice>,
}

impl WgpuBackend {
    /// The wgpu device, for users' pipelines and bind groups over hetmem's buffers.
    pub fn device(&self) -> &wgpu::Device {
        &self.gpu.device
    }

    /// The device's one queue, on which hetmem submits its work (submit kernels here, after
    /// taking the buffer's device guard, and hetmem's later work comes after them).
    pub fn wgpu_queue(&self) -> &wgpu::Queue {
        &self.gpu.queue
    }

    pub(super) fn holding<'q>(&self, queue: &'q Queue) -> Result<&'q HoldingQueue> {
        check_owner("queue", self.id, queue.backend())?;
        queue
            .downcast::<HoldingQueue>()
            .ok_or_else(|| Error::invalid("queue does not hold a wgpu queue"))
    }

    /// Runs `op` at once with an event of its submitted work, or — behind a closed gate — holds
    /// it, and its event finishes once it ran and the device finished it.
    fn submit(
        &self,
        queue: &Queue,
        op: impl FnOnce(&GpuDevice) -> Result<()> + Send + 'static,
    ) -> Result<Event> {
        let q = self.holding(queue)?;
        if q.is_holding() {
            let gpu = self.gpu.clone();
            return Ok(q.hold(
                &[],
                Box::new(move || {
                    let outcome = op(&gpu).and_then(|()| gpu.wait_idle());
                    outcome.map_err(|_| -1)
                }),
            ));
        }
        op(&self.gpu)?;
        Ok(self.gpu.marker())
    }

    /// A blocking call: after the work held on `queue`, and reporting what wgpu reported.
    fn blocking<T>(
        &self,
        queue: &Queue,
        operation: &'static str,
        op: impl FnOnce(&GpuDevice) -> Result<T>,
    ) -> Result<T> {
        self.holding(queue)?.wait_drained();
        let value = op(&self.gpu)?;
        self.gpu.check(operation)?;
        Ok(value)
    }
}

/// A copy of a block's handle for work that runs later (the buffer is reference-counted).
fn handle(block: &DeviceBlock) -> WgpuBlock {
    // SAFETY: the checked layer passes only this backend's live blocks.
    let b = unsafe { WgpuBlock::of(block) };
    WgpuBlock {
        buffer: b.buffer.clone(),
        offset: b.offset,
    }
}

impl RawBackend for WgpuBackend {
    fn id(&self) -> BackendId {
        self.id
    }

    fn info(&self) -> DeviceInfo {
        self.device_info()
    }

    fn capabilities(&self) -> Capabilities {
        self.device_capabilities()
    }

    fn maps(&self, block: &DeviceBlock) -> bool {
        // SAFETY: the checked layer passes only this backend's live blocks.
        self.mappable && unsafe { WgpuBlock::of(block) }.is_whole(block.size())
    }

    fn max_allocation(&self) -> u64 {
        self.max_allocation
    }

    fn alignment(&self) -> usize {
        self.alignment
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Wgpu
    }

    fn usage_counters(&self) -> &UsageCounters {
        &self.usage
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn allocate(&self, bytes: usize) -> Result<DeviceBlock> {
        let device = &self.gpu.device;
        device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mappable = match self.mappable {
            true => wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::MAP_WRITE,
            false => wgpu::BufferUsages::empty(),
        };
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes.next_multiple_of(device::ALIGN) as u64,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST
                | mappable,
            mapped_at_creation: false,
        });
        let invalid = pollster::block_on(device.pop_error_scope());
        let out_of_memory = pollster::block_on(device.pop_error_scope());
        if out_of_memory.is_some() {
            return Err(Error::OutOfMemory {
                backend: BackendKind::Wgpu,
                requested: bytes as u64,
                diagnosis: None,
            });
        }
        if let Some(error) = invalid {
            return Err(backend_error("create_buffer", error_kind(&error)));
        }
        Ok(WgpuBlock { buffer, offset: 0 }.into_block(self.id, bytes))
    }

    unsafe fn release(&self, block: DeviceBlock) -> Result<()> {
        // SAFETY: the caller's guarantee: the block is ours and live.
        unsafe { WgpuBlock::free(block) };
        Ok(())
    }

    /// Never reached: storage buffers are not host memory.
    unsafe fn host_address(&self, _block: &DeviceBlock) -> Result<*mut u8> {
        Err(unsupported(BackendKind::Wgpu, "host_address"))
    }

    /// The view's length is its block's: the handle needs only the offset.
    unsafe fn view(
        &self,
        segment: &DeviceBlock,
        offset: usize,
        _len: usize,
    ) -> Result<*mut c_void> {
        let mut view = handle(segment);
        view.offset += offset as u64;
        Ok(view.into_handle())
    }

    unsafe fn release_view(&self, view: DeviceBlock) -> Result<()> {
        // SAFETY: views' handles are boxes of `WgpuBlock` too (`view`).
        unsafe { WgpuBlock::free(view) };
        Ok(())
    }

    fn commit_granularity(&self) -> Option<usize> {
        None
    }

    fn reserve(&self, _bytes: usize) -> Result<*mut c_void> {
        Err(unsupported(BackendKind::Wgpu, "reserve"))
    }

    unsafe fn commit(&self, _r: &DeviceBlock, _offset: usize, _len: usize) -> Result<usize> {
        Err(unsupported(BackendKind::Wgpu, "commit"))
    }

    unsafe fn decommit(&self, _r: &DeviceBlock, _offset: usize, _len: usize) -> Result<usize> {
        Err(unsupported(BackendKind::Wgpu, "decommit"))
    }

    unsafe fn release_reservation(&self, _reservation: DeviceBlock) -> Result<usize> {
        Err(unsupported(BackendKind::Wgpu, "release_reservation"))
    }

    fn allocate_staging(&self, bytes: usize) -> Result<StagingBuffer> {
        Ok(StagingBuffer::new(
            self.id,
            super::host::staging_memory(bytes)?,
        ))
    }

    fn default_queue(&self) -> &Queue {
        &self.queue
    }

    fn create_queue(&self) -> Result<Queue> {
        Ok(Queue::new(
            self.id,
            Arc::new(HoldingQueue::new(self.held.clone())),
        ))
    }

    unsafe fn write(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        offset: usize,
        src: &[u8],
    ) -> Result<()> {
        // SAFETY: the caller's guarantee: the block is ours and live.
        let dst = unsafe { WgpuBlock::of(dst) };
        self.blocking(queue, "write", |gpu| gpu.write(dst, offset, src))
    }

    unsafe fn read(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<()> {
        // SAFETY: the caller's guarantee: the block is ours and live.
        let src = unsafe { WgpuBlock::of(src) };
        self.blocking(queue, "read", |gpu| gpu.read(src, offset, dst))
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

    /// All parts in one submission and one mapping; a failure fails them all.
    unsafe fn read_parts(
        &self,
        queues: &[Queue],
        blocks: &[&DeviceBlock],
        parts: &mut [ReadPart<'_>],
    ) -> std::result::Result<(), PartFailures> {
        let read = (|| {
            for queue in queues {
                self.holding(queue)?.wait_drained();
            }
            let mut pieces: Vec<(&WgpuBlock, usize, &mut [u8])> = (parts.iter_mut())
                .map(|p| {
                    (
                        // SAFETY: the caller's guarantee: every part names a live block of ours.
                        unsafe { WgpuBlock::of(blocks[p.block]) },
                        p.offset,
                        &mut *p.dst,
                    )
                })
                .collect();
            self.gpu.read_many(&mut pieces)
        })();
        read.map_err(|error| PartFailures {
            failed: (0..parts.len()).collect(),
            error,
        })
    }

    /// The block's own buffer mapped in place, after the work held on `queue` and what the
    /// device was asked for before (`maps` checked that the block is a whole mappable buffer).
    unsafe fn map(
        &self,
        queue: &Queue,
        block: &DeviceBlock,
        offset: usize,
        len: usize,
        mode: MapMode,
    ) -> Result<*mut u8> {
        // SAFETY: the caller's guarantee: the block is ours and live.
        let block = unsafe { WgpuBlock::of(block) };
        self.blocking(queue, "map", |gpu| gpu.map(block, offset, len, mode))
    }

    unsafe fn unmap(&self, queue: &Queue, block: &DeviceBlock, _ptr: *mut u8) -> Result<()> {
        self.holding(queue)?;
        // SAFETY: the caller's guarantee: the block is ours and live.
        self.gpu.unmap(unsafe { WgpuBlock::of(block) })
    }

    /// Never reached: no shared allocations.
    fn allocate_shared(&self, _bytes: usize) -> Result<DeviceBlock> {
        Err(unsupported(BackendKind::Wgpu, "allocate_shared"))
    }

    /// Never reached, as `allocate_shared`.
    unsafe fn migrate(&self, _queue: &Queue, _block: &DeviceBlock, _to: MigrateTo) -> Result<()> {
        Err(unsupported(BackendKind::Wgpu, "migrate"))
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
        let (dst, memory) = (handle(dst), src.memory().clone());
        self.submit(queue, move |gpu| {
            // SAFETY: the range is inside the staging memory (the caller's guarantee), which
            // `memory` keeps alive; the caller records this event on the staging buffer, so
            // the host does not write it before the bytes are taken (`write_buffer` copies them
            // at once).
            let bytes = unsafe {
                std::slice::from_raw_parts(memory.as_ptr().wrapping_add(src_offset), len)
            };
            gpu.write(&dst, dst_offset, bytes)
        })
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
        // Earlier host access to the staging memory is over before the device writes it.
        dst.as_mut_slice()?;
        let (src, memory) = (handle(src), dst.memory().clone());
        self.submit(queue, move |gpu| {
            // SAFETY: the range is inside the staging memory (the caller's guarantee), which
            // `memory` keeps alive; the caller records this event on the staging buffer, so
            // nothing else touches the memory until it has finished.
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(memory.as_ptr().wrapping_add(dst_offset), len)
            };
            gpu.read(&src, src_offset, bytes)
        })
    }

    unsafe fn copy(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        dst: &mut DeviceBlock,
        region: CopyRegion,
    ) -> Result<Event> {
        let (src, dst) = (handle(src), handle(dst));
        self.submit(queue, move |gpu| {
            gpu.copy(&src, region.src_offset, &dst, region.dst_offset, region.len)
        })
    }

    /// Never reached: no peer domain (wgpu devices share no memory).
    unsafe fn copy_to_peer(
        &self,
        _queue: &Queue,
        _src: &DeviceBlock,
        _dst_backend: &dyn Backend,
        _dst: &mut DeviceBlock,
        _region: CopyRegion,
    ) -> Result<Event> {
        Err(unsupported(BackendKind::Wgpu, "copy_to_peer"))
    }

    unsafe fn fill(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        offset: usize,
        len: usize,
        pattern: &[u8],
    ) -> Result<Event> {
        let (dst, pattern) = (handle(dst), pattern.to_vec());
        self.submit(queue, move |gpu| gpu.fill(&dst, offset, len, &pattern))
    }

    fn enqueue_wait(&self, queue: &Queue, event: &Event) -> Result<()> {
        let q = self.holding(queue)?;
        // This device's submitted work is ordered by its one queue already.
        let ordered = self.gpu.poller.owns(event) && !q.is_holding();
        if !event.is_finished() && !ordered {
            q.gate(event);
        }
        Ok(())
    }

    fn enqueue_marker(&self, queue: &Queue) -> Result<Event> {
        self.submit(queue, |_| Ok(()))
    }

    fn create_user_event(&self) -> Result<UserEvent> {
        Ok(UserEvent::manual())
    }

    fn synchronize(&self) -> Result<()> {
        self.held.wait_all();
        self.gpu.wait_idle()?;
        self.gpu.check("synchronize")
    }
}
