//! The host backend: "device" memory is aligned host memory and every copy is a `memcpy`.
//!
//! Always available, needs no setup, and is the embedded default. Its queues run every operation
//! on the calling thread, so events are born complete — except behind an unfinished event a queue
//! was told to wait for, where asynchronous work is held until it finishes (`queue.rs`).

mod memory;

mod regions;

use std::alloc;
use std::any::Any;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub(super) use self::memory::host_memory;
use self::memory::{alloc_zeroed, fill_repeating, layout, HostStaging};
use self::regions::{Live, Regions};
use super::holding::{Held, HoldingQueue};
use super::raw::{read_parts_in_turn, unsupported, write_parts_in_turn, RawBackend};
use super::{
    check_owner, Backend, BackendId, BackendKind, Capabilities, CopyRegion, DeviceBlock,
    DeviceInfo, Event, MapMode, MigrateTo, PartFailures, Queue, ReadPart, StagingBuffer,
    UsageCounters, UserEvent, WritePart,
};
use crate::error::{Error, Result};
use crate::host::{HostRegion, HostSource, COMMIT_GRANULE};
use crate::sync::Unpoison;

/// Alignment of host blocks and staging memory: a cache line, enough for every SIMD type.
pub(crate) const HOST_ALIGNMENT: usize = 64;

/// Host memory posing as a device: blocks are zeroed, 64-byte-aligned host allocations, copies
/// are `memcpy`, and every operation has finished when its call returns — unless its queue
/// waits for an unfinished event, behind which asynchronous work is held as on a device.
pub struct HostBackend {
    id: BackendId,
    queue: Queue,
    /// The blocks held work will touch, across this backend's queues.
    held: Arc<Held>,
    usage: UsageCounters,
    /// Physical memory, read once: `allocate` is a hot baseline and must not read /proc.
    max_allocation: u64,
    /// Most bytes live at once (`u64::MAX` unless it stands in for a device of that size).
    capacity: u64,
    /// How blocks are made.
    source: HostSource,
    /// `source` is the default (heap, 64-byte aligned): the fast path, read with one load.
    plain: bool,
    /// Blocks of any other source and adopted ones, by address.
    regions: Mutex<Regions>,
    /// Whether any block was adopted: `release` looks in `regions` first (the default source's
    /// fast path otherwise skips the lock).
    adopted: AtomicBool,
}

impl HostBackend {
    /// A new host backend with its own identity.
    pub fn new() -> Self {
        let id = BackendId::unique();
        let held = Arc::new(Held::default());
        HostBackend {
            id,
            queue: Queue::new(id, Arc::new(HoldingQueue::new(held.clone()))),
            held,
            usage: UsageCounters::default(),
            max_allocation: host_memory().total.min(isize::MAX as u64),
            capacity: u64::MAX,
            source: HostSource::default(),
            plain: true,
            regions: Mutex::default(),
            adopted: AtomicBool::new(false),
        }
    }

    /// A host backend whose blocks are made as `source` says: aligned, on huge pages, bound to
    /// a NUMA node, locked in RAM (see [`crate::host`]). A bad alignment is a typed error.
    pub fn with_source(source: HostSource) -> Result<Self> {
        source.check()?;
        let mut backend = Self::new();
        backend.source = source;
        backend.plain = source == HostSource::default();
        Ok(backend)
    }

    /// How this backend's blocks are made.
    pub fn source(&self) -> &HostSource {
        &self.source
    }

    /// A host backend that behaves like a device with `capacity` bytes of memory: allocations
    /// that would take live bytes above it fail with `OutOfMemory`, as a full device does.
    pub fn with_capacity(capacity: u64) -> Self {
        let mut backend = Self::new();
        backend.capacity = capacity;
        backend.usage = UsageCounters::with_capacity(capacity);
        backend.max_allocation = backend.max_allocation.min(capacity);
        backend
    }

    fn host_queue<'q>(&self, queue: &'q Queue) -> Result<&'q HoldingQueue> {
        check_owner("queue", self.id, queue.backend())?;
        queue
            .downcast::<HoldingQueue>()
            .ok_or_else(|| Error::invalid("queue does not hold a host queue"))
    }

    /// A queue for a blocking call: after the work held on it, and with no held work left on
    /// the blocks the call touches.
    fn ready(&self, queue: &HoldingQueue, blocks: &[&DeviceBlock]) {
        queue.wait_drained();
        self.settle(blocks);
    }

    /// Waits until no held work touches `blocks`: what makes every immediate access sound.
    fn settle(&self, blocks: &[&DeviceBlock]) {
        if self.held.is_idle() {
            return;
        }
        let addresses: Vec<usize> = blocks.iter().map(|b| address(b)).collect();
        self.held.wait_for(&addresses);
    }
}

/// A block's address: how held work names the blocks it touches.
fn address(block: &DeviceBlock) -> usize {
    block.raw_handle() as usize
}

/// A pointer into block or staging memory that held work carries to the thread that runs it.
struct Raw(*mut u8);

// SAFETY: the pointer is only dereferenced by the held job it was moved into; the memory stays
// allocated and reached by nothing else until that job has run (`Held` for blocks, the staging
// buffer's tracked events and its `Arc` for staging memory).
unsafe impl Send for Raw {}

impl Raw {
    fn get(self) -> *mut u8 {
        self.0
    }
}

impl Default for HostBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// Zeroed, aligned host memory as staging: the host backend's, and wgpu's (whose transfers
/// copy it into the driver's own staging at once).
pub(super) fn staging_memory(bytes: usize) -> Result<Arc<dyn super::StagingMemory>> {
    let (ptr, layout) = alloc_zeroed(bytes)?;
    Ok(Arc::new(HostStaging { ptr, layout }))
}

/// Pointer to byte `offset` of a host block.
fn block_ptr(block: &DeviceBlock, offset: usize) -> *mut u8 {
    // `wrapping_add` keeps this function safe; callers have checked `offset` against the size.
    block.raw_handle().cast::<u8>().wrapping_add(offset)
}

impl RawBackend for HostBackend {
    fn id(&self) -> BackendId {
        self.id
    }

    fn info(&self) -> DeviceInfo {
        let memory = host_memory();
        let live = self.usage.snapshot().live_bytes;
        DeviceInfo {
            kind: BackendKind::Host,
            index: 0,
            name: "host memory".into(),
            vendor: std::env::consts::ARCH.into(),
            driver: format!("hetmem {}", env!("CARGO_PKG_VERSION")),
            total_memory: memory.total.min(self.capacity),
            free_memory: if self.capacity == u64::MAX {
                memory.available
            } else {
                Some(self.capacity.saturating_sub(live))
            },
            max_allocation: self.max_allocation,
            alignment: self.source.alignment,
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            unified_memory: true,
            peer_domain: None,
            async_copies: false,
            concurrent_queues: false,
            pinned_staging: false,
            host_addressable: true,
            mapped_access: true,
            mapped_reads: false,
            // Every block is host memory already.
            shared_allocations: false,
        }
    }

    fn maps(&self, _block: &DeviceBlock) -> bool {
        RawBackend::capabilities(self).mapped_access
    }

    fn max_allocation(&self) -> u64 {
        self.max_allocation
    }

    fn alignment(&self) -> usize {
        self.source.alignment
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Host
    }

    fn usage_counters(&self) -> &UsageCounters {
        &self.usage
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn allocate(&self, bytes: usize) -> Result<DeviceBlock> {
        let ptr = if self.plain {
            alloc_zeroed(bytes)?.0.as_ptr()
        } else {
            let region = HostRegion::allocate(&self.source, bytes)?;
            let ptr = region.as_ptr();
            let mut regions = self.regions.lock().unpoisoned();
            regions.stats.record(region.granted());
            let locked = if region.granted().locked {
                bytes as u64
            } else {
                0
            };
            regions.stats.locked_bytes += locked;
            let memory = Box::new(region);
            regions.live.insert(ptr as usize, Live { memory, locked });
            ptr
        };
        // SAFETY: a fresh allocation of `bytes` bytes, handed out once, freed in `release`.
        Ok(unsafe { DeviceBlock::from_raw(self.id, ptr.cast::<c_void>(), bytes) })
    }

    unsafe fn release(&self, block: DeviceBlock) -> Result<()> {
        self.settle(&[&block]);
        if !self.plain || self.adopted.load(Ordering::Acquire) {
            let mut regions = self.regions.lock().unpoisoned();
            if let Some(Live { memory, locked }) = regions.live.remove(&address(&block)) {
                regions.stats.locked_bytes -= locked;
                drop(regions);
                // The memory is let go (unmapped, closed, handed back) here; the handle goes
                // with the block.
                drop(memory);
                let _ = block.into_raw();
                return Ok(());
            }
        }
        let bytes = block.size();
        let layout = layout(bytes)?;
        // SAFETY: the block is ours (the caller's guarantee), so its handle came from `alloc_zeroed` with
        // this layout; `release` consumes the block, so it is freed exactly once.
        unsafe { alloc::dealloc(block.into_raw().cast::<u8>(), layout) };
        Ok(())
    }

    unsafe fn host_address(&self, block: &DeviceBlock) -> Result<*mut u8> {
        self.settle(&[block]);
        Ok(block_ptr(block, 0))
    }

    unsafe fn view(
        &self,
        segment: &DeviceBlock,
        offset: usize,
        _len: usize,
    ) -> Result<*mut c_void> {
        Ok(block_ptr(segment, offset).cast())
    }

    unsafe fn release_view(&self, view: DeviceBlock) -> Result<()> {
        // The memory is the segment's: only held work on the view is waited for.
        self.settle(&[&view]);
        let _ = view.into_raw();
        Ok(())
    }

    /// 64 KiB, for blocks of the default source: reservations do not (yet) take a source's
    /// alignment, pages, NUMA binding or locking. None under Miri, which cannot run `mmap`.
    /// 64 KiB, for blocks of the default source: reservations do not (yet) take a source's
    /// alignment, pages, NUMA binding or locking. None under Miri, which cannot run `mmap`.
    fn commit_granularity(&self) -> Option<usize> {
        (self.plain && !cfg!(miri)).then_some(COMMIT_GRANULE)
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
        Ok(StagingBuffer::new(self.id, staging_memory(bytes)?))
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
        let q = self.host_queue(queue)?;
        self.ready(q, &[dst]);
        // SAFETY: the range is inside the block (the caller's guarantee), `&mut dst` excludes every other access
        // to it, and `src` is a distinct Rust slice, so the regions do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), block_ptr(dst, offset), src.len()) };
        Ok(())
    }

    unsafe fn read(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<()> {
        let q = self.host_queue(queue)?;
        self.ready(q, &[src]);
        // SAFETY: the range is inside the block (the caller's guarantee) and initialised (blocks are zeroed at
        // allocation); `&src` excludes writers; `dst` is an exclusive Rust slice.
        unsafe {
            std::ptr::copy_nonoverlapping(block_ptr(src, offset), dst.as_mut_ptr(), dst.len())
        };
        Ok(())
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

    /// Never reached: host blocks are host-addressable, mapped in place by the checked layer.
    unsafe fn map(
        &self,
        _queue: &Queue,
        _block: &DeviceBlock,
        _offset: usize,
        _len: usize,
        _mode: MapMode,
    ) -> Result<*mut u8> {
        Err(unsupported(BackendKind::Host, "map"))
    }

    /// Never reached, as `map`.
    unsafe fn unmap(&self, _queue: &Queue, _block: &DeviceBlock, _ptr: *mut u8) -> Result<()> {
        Err(unsupported(BackendKind::Host, "unmap"))
    }

    /// Never reached: every block is host memory (`host_addressable`), none needs sharing.
    fn allocate_shared(&self, _bytes: usize) -> Result<DeviceBlock> {
        Err(unsupported(BackendKind::Host, "allocate_shared"))
    }

    /// Never reached, as `allocate_shared`.
    unsafe fn migrate(&self, _queue: &Queue, _block: &DeviceBlock, _to: MigrateTo) -> Result<()> {
        Err(unsupported(BackendKind::Host, "migrate"))
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
        let q = self.host_queue(queue)?;
        if q.is_holding() {
            let (to, memory) = (Raw(block_ptr(dst, dst_offset)), src.memory().clone());
            let event = q.hold(
                &[address(dst)],
                Box::new(move || {
                    let (from, to) = (memory.as_ptr().wrapping_add(src_offset), to.get());
                    // SAFETY: both ranges are inside (the caller's guarantee); the staging memory
                    // lives as long as `memory`, and the staging buffer's host access waits
                    // for this event (the caller records it); the block stays allocated and
                    // untouched by anything else until this has run (`Held`).
                    unsafe { std::ptr::copy_nonoverlapping(from, to, len) };
                    Ok(())
                }),
            );
            return Ok(event);
        }
        let bytes = &src.as_slice()?[src_offset..src_offset + len];
        // SAFETY: the caller's guarantees, passed on.
        unsafe { RawBackend::write(self, queue, dst, dst_offset, bytes)? };
        Ok(Event::complete())
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
        let q = self.host_queue(queue)?;
        if q.is_holding() {
            // Earlier host access to the staging memory is over before the device writes it.
            dst.as_mut_slice()?;
            let (from, memory) = (Raw(block_ptr(src, src_offset)), dst.memory().clone());
            let event = q.hold(
                &[address(src)],
                Box::new(move || {
                    let (from, to) = (from.get(), memory.as_ptr().wrapping_add(dst_offset));
                    // SAFETY: both ranges are inside (the caller's guarantee); the staging
                    // memory lives as long as `memory`, and its host access waits for this
                    // event (the caller records it); the block stays allocated and unwritten
                    // until this has run (`Held`).
                    unsafe { std::ptr::copy_nonoverlapping(from, to, len) };
                    Ok(())
                }),
            );
            return Ok(event);
        }
        let bytes = &mut dst.as_mut_slice()?[dst_offset..dst_offset + len];
        // SAFETY: the caller's guarantees, passed on.
        unsafe { RawBackend::read(self, queue, src, src_offset, bytes)? };
        Ok(Event::complete())
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
        let q = self.host_queue(queue)?;
        let (from, to) = (block_ptr(src, src_offset), block_ptr(dst, dst_offset));
        if q.is_holding() {
            let (from, to) = (Raw(from), Raw(to));
            return Ok(q.hold(
                &[address(src), address(dst)],
                Box::new(move || {
                    let (from, to) = (from.get(), to.get());
                    // SAFETY: as below; both blocks stay allocated and untouched by anything
                    // else until this has run (`Held`).
                    unsafe { std::ptr::copy_nonoverlapping(from, to, len) };
                    Ok(())
                }),
            ));
        }
        self.settle(&[src, dst]);
        // SAFETY: both ranges are inside their blocks (the caller's guarantee); `src` and `dst`
        // are distinct
        // blocks (one is borrowed shared, the other exclusively), so they do not overlap; no
        // held work touches them (settled).
        unsafe { std::ptr::copy_nonoverlapping(from, to, len) };
        Ok(Event::complete())
    }

    /// Never reached: no peer domain (host-addressable peers are copied by the checked layer).
    unsafe fn copy_to_peer(
        &self,
        _queue: &Queue,
        _src: &DeviceBlock,
        _dst_backend: &dyn Backend,
        _dst: &mut DeviceBlock,
        _region: CopyRegion,
    ) -> Result<Event> {
        Err(unsupported(BackendKind::Host, "copy_to_peer"))
    }

    unsafe fn fill(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        offset: usize,
        len: usize,
        pattern: &[u8],
    ) -> Result<Event> {
        let q = self.host_queue(queue)?;
        let start = block_ptr(dst, offset);
        if q.is_holding() {
            let (start, pattern) = (Raw(start), pattern.to_vec());
            return Ok(q.hold(
                &[address(dst)],
                Box::new(move || {
                    // SAFETY: as below; the block stays allocated and untouched by anything
                    // else until this has run (`Held`).
                    let bytes = unsafe { std::slice::from_raw_parts_mut(start.get(), len) };
                    fill_repeating(bytes, &pattern);
                    Ok(())
                }),
            ));
        }
        self.settle(&[dst]);
        // SAFETY: the range is inside the block (the caller's guarantee), `&mut dst` makes this
        // the only access through safe code, and no held work touches it (settled).
        let bytes = unsafe { std::slice::from_raw_parts_mut(start, len) };
        fill_repeating(bytes, pattern);
        Ok(Event::complete())
    }

    fn enqueue_wait(&self, queue: &Queue, event: &Event) -> Result<()> {
        // The queue holds later asynchronous work until the event finishes; blocking calls on
        // it wait for that work.
        self.host_queue(queue)?.gate(event);
        Ok(())
    }

    fn enqueue_marker(&self, queue: &Queue) -> Result<Event> {
        let q = self.host_queue(queue)?;
        Ok(match q.is_holding() {
            true => q.hold(&[], Box::new(|| Ok(()))),
            false => Event::complete(),
        })
    }

    fn create_user_event(&self) -> Result<UserEvent> {
        Ok(UserEvent::manual())
    }

    fn synchronize(&self) -> Result<()> {
        // Held work runs when its gates open; until then there is nothing to wait for here but
        // the gates themselves, which only their owners can open.
        self.held.wait_all();
        Ok(())
    }
}

/// Small-size tests of every unsafe path above; `.ci/run` runs them under Miri.
#[cfg(test)]
mod tests;
