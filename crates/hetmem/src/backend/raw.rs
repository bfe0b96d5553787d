//! For backend authors: the primitive trait a device implements, [`RawBackend`], and what a
//! backend needs to make hetmem's handles out of its driver's objects. Users of hetmem never need
//! this module; it is kept apart so that the user API ([`Backend`],
//! [`DeviceBlock`], [`Queue`], [`Event`], [`StagingBuffer`]) stays about using memory.
//!
//! A backend implements [`RawBackend`] only: minimal primitives that trust their arguments (the
//! block and staging ranges are inside their objects, the handles are this backend's, fill
//! patterns follow the rule). Every type that implements it is a [`Backend`]
//! through one checked implementation (`backend/checked.rs`) that owns every argument check,
//! host-memory access of host-addressable blocks, mapped access and peer copies between
//! host-addressable backends — written once for every backend, like wgpu-core over wgpu-hal or
//! cudarc's safe layer over its `result` layer. No primitive has a default: a wrapper (such as
//! `FaultyBackend`) forwards each one explicitly and cannot silently lose the backend's own
//! implementation. Its allocations become [`DeviceBlock`]s through
//! [`device_block`], its streams [`Queue`]s through [`queue`], its completion objects
//! [`Event`]s through [`event`] (an [`EventSource`]), its page-locked host memory
//! [`StagingBuffer`]s through [`staging_buffer`] (a [`StagingMemory`]); the checked layer records
//! asynchronous work on staging memory on the buffer, so that host access waits for it. The host backend
//! (`backend/host/mod.rs`) is the worked example.

use std::any::Any;
use std::ffi::c_void;
use std::sync::Arc;

pub use super::counters::UsageCounters;
pub use super::event::{CompletionCallback, EventSource, ManualEvent};
pub use super::parts::{read_parts_in_turn, write_parts_in_turn};
pub use super::staging::StagingMemory;
use super::{
    Backend, BackendId, BackendKind, Capabilities, CopyRegion, DeviceBlock, DeviceInfo, Event,
    MapMode, MigrateTo, PartFailures, Queue, ReadPart, StagingBuffer, UserEvent, WritePart,
};
use crate::error::{BackendError, Error, Result};

/// The primitives of a device. Implement this, and the type is a [`Backend`] (see the
/// [module docs](self)); the contract on asynchrony, host-memory ownership and threads is
/// [`Backend`]'s (`backend/mod.rs`).
///
/// Each `unsafe fn` trusts its arguments: **the caller guarantees** that every block, staging
/// buffer and queue was made by this backend (or, for a peer copy's destination, by
/// `dst_backend`), that every `offset..offset + len` lies inside its object, that a fill pattern
/// is 1 to 128 bytes long, a power of two, and `offset` and `len` are multiples of it, and that
/// scattered parts name blocks that exist. The checked [`Backend`] implementation is the caller.
pub trait RawBackend: Send + Sync + 'static {
    /// This backend's identity, stamped on every handle it makes.
    fn id(&self) -> BackendId;
    /// What the device is; `free_memory` is read at the time of the call.
    fn info(&self) -> DeviceInfo;
    /// What the device can do.
    fn capabilities(&self) -> Capabilities;
    /// Whether [`RawBackend::map`] maps `block` (a live block of this backend that is not host
    /// memory): `capabilities().mapped_access` unless some blocks cannot be mapped alone (wgpu
    /// maps a whole buffer, so not a block carved from one shared with others).
    fn maps(&self, block: &DeviceBlock) -> bool;
    /// The largest single allocation, read without querying the driver (allocation checks
    /// against it every time).
    fn max_allocation(&self) -> u64;
    /// `info().alignment`, read without querying the driver (views check against it).
    fn alignment(&self) -> usize;
    /// The family of the device, for errors raised on its behalf.
    fn kind(&self) -> BackendKind;
    /// The counters the checked layer keeps for this backend (allocations beyond their capacity
    /// are refused before `allocate` is called).
    fn usage_counters(&self) -> &UsageCounters;
    /// For downcasting to the concrete backend.
    fn as_any(&self) -> &dyn Any;

    /// A block of `bytes` bytes (1 to `max_allocation()`, checked by the caller), zeroed or
    /// otherwise initialised, aligned to `info().alignment`.
    fn allocate(&self, bytes: usize) -> Result<DeviceBlock>;
    /// Frees a block once work already enqueued on it is done.
    ///
    /// # Safety
    /// `block` was allocated by this backend.
    unsafe fn release(&self, block: DeviceBlock) -> Result<()>;
    /// Where a block's bytes are in host memory. Called only where
    /// `capabilities().host_addressable` (elsewhere, return [`unsupported`]). May first wait
    /// for work held on the block. The pointer is valid for `block.size()` bytes while the
    /// block lives.
    ///
    /// # Safety
    /// `block` was allocated by this backend.
    unsafe fn host_address(&self, block: &DeviceBlock) -> Result<*mut u8>;
    /// A handle to `len` bytes at `offset` inside `segment`, usable wherever a block's is: a
    /// pointer into it on host memory and CUDA, a sub-buffer on OpenCL. It owns no memory. The
    /// caller has checked that the range lies inside and `offset` is a multiple of
    /// `info().alignment`, and releases the view ([`RawBackend::release_view`]) before the
    /// segment.
    ///
    /// # Safety
    /// `segment` was allocated by this backend.
    unsafe fn view(&self, segment: &DeviceBlock, offset: usize, len: usize) -> Result<*mut c_void>;
    /// Lets go of a view's handle (its memory is the segment's), once work enqueued on it is
    /// done.
    ///
    /// # Safety
    /// `view` was made by [`RawBackend::view`] of this backend.
    unsafe fn release_view(&self, view: DeviceBlock) -> Result<()>;
    /// The unit reservations commit in ([`RawBackend::reserve`]), a power of two; `None`
    /// where the device has no virtual memory to reserve (the other reservation calls are then
    /// never made).
    fn commit_granularity(&self) -> Option<usize>;
    /// Reserves `bytes` of address space (a multiple of the commit granularity, checked by the
    /// caller) with nothing committed; the caller wraps it with [`reservation_block`].
    fn reserve(&self, bytes: usize) -> Result<*mut c_void>;
    /// Backs bytes `offset..offset + len` of a reservation with memory (multiples of the
    /// granularity inside it, checked by the caller); returns how many of them were not
    /// committed before (committing twice is no error and no second charge).
    ///
    /// # Safety
    /// `reservation` was made by [`RawBackend::reserve`] of this backend.
    unsafe fn commit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<usize>;
    /// Gives the memory behind bytes `offset..offset + len` of a reservation back, once work
    /// already enqueued on the reservation is done; returns how many were committed. What was
    /// there is lost (zeros on the host, an unmapped range on CUDA).
    ///
    /// # Safety
    /// As [`RawBackend::commit`].
    unsafe fn decommit(
        &self,
        reservation: &DeviceBlock,
        offset: usize,
        len: usize,
    ) -> Result<usize>;
    /// Frees a reservation and what is committed in it (after work enqueued on it); returns
    /// the bytes that were committed.
    ///
    /// # Safety
    /// As [`RawBackend::commit`].
    unsafe fn release_reservation(&self, reservation: DeviceBlock) -> Result<usize>;
    /// Staging memory of `bytes` bytes (checked by the caller), page-locked where the device
    /// can.
    fn allocate_staging(&self, bytes: usize) -> Result<StagingBuffer>;

    /// The queue hetmem uses when the caller names none.
    fn default_queue(&self) -> &Queue;
    /// A new in-order queue.
    fn create_queue(&self) -> Result<Queue>;

    /// Blocking write of `src` into `dst` at `offset`.
    ///
    /// # Safety
    /// See the trait docs.
    unsafe fn write(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        offset: usize,
        src: &[u8],
    ) -> Result<()>;
    /// Blocking read from `src` at `offset` into `dst`.
    ///
    /// # Safety
    /// See the trait docs.
    unsafe fn read(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<()>;
    /// Writes every part, as [`Backend::write_parts`]; [`write_parts_in_turn`] serves a device
    /// without a faster way.
    ///
    /// # Safety
    /// See the trait docs.
    unsafe fn write_parts(
        &self,
        queues: &[Queue],
        blocks: &mut [&mut DeviceBlock],
        parts: &[WritePart<'_>],
    ) -> std::result::Result<(), PartFailures>;
    /// Reads every part, as [`Backend::read_parts`]; [`read_parts_in_turn`] serves a device
    /// without a faster way.
    ///
    /// # Safety
    /// See the trait docs.
    unsafe fn read_parts(
        &self,
        queues: &[Queue],
        blocks: &[&DeviceBlock],
        parts: &mut [ReadPart<'_>],
    ) -> std::result::Result<(), PartFailures>;
    /// Maps `len` bytes (never zero) at `offset` of `block` into host memory, once the work
    /// enqueued on `queue` before it is done, and returns where they are; the device sees what
    /// the host wrote there once [`RawBackend::unmap`] returns. Called only where
    /// [`RawBackend::maps`] the block, for blocks that are not host memory (the checked layer
    /// reaches those directly); elsewhere, return [`unsupported`]. A backend whose driver
    /// cannot map one object twice at once makes a second map of a block wait for the first
    /// unmap.
    ///
    /// # Safety
    /// See the trait docs.
    unsafe fn map(
        &self,
        queue: &Queue,
        block: &DeviceBlock,
        offset: usize,
        len: usize,
        mode: MapMode,
    ) -> Result<*mut u8>;
    /// Ends the mapping at `ptr` that [`RawBackend::map`] made of `block`, on `queue`; blocking.
    ///
    /// # Safety
    /// See the trait docs; `ptr` is a live mapping of `block` made by this backend.
    unsafe fn unmap(&self, queue: &Queue, block: &DeviceBlock, ptr: *mut u8) -> Result<()>;
    /// A block of `bytes` bytes (checked as for `allocate`) that the host addresses too, its
    /// host address given to [`shared_block`]: OpenCL fine-grained SVM, CUDA managed memory.
    /// Released by [`RawBackend::release`]. Called only where
    /// `capabilities().shared_allocations`; elsewhere, return [`unsupported`].
    fn allocate_shared(&self, bytes: usize) -> Result<DeviceBlock>;
    /// Starts moving a shared block's pages to where they will be used next, ordered on
    /// `queue` (CUDA's `cuMemPrefetchAsync`); a hint, so devices whose shared memory does not
    /// move do nothing. Called only for blocks from [`RawBackend::allocate_shared`].
    ///
    /// # Safety
    /// See the trait docs.
    unsafe fn migrate(&self, queue: &Queue, block: &DeviceBlock, to: MigrateTo) -> Result<()>;
    /// Asynchronous copy of `region.len` staging bytes into a block. The caller records the returned
    /// event on the staging buffer; the memory stays valid and unchanged until it completes.
    ///
    /// # Safety
    /// See the trait docs.
    unsafe fn write_staged(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        src: &StagingBuffer,
        region: CopyRegion,
    ) -> Result<Event>;
    /// Asynchronous copy of `region.len` block bytes into staging. The caller records the returned
    /// event on the staging buffer; nothing else touches the memory until it completes.
    ///
    /// # Safety
    /// See the trait docs.
    unsafe fn read_staged(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        dst: &mut StagingBuffer,
        region: CopyRegion,
    ) -> Result<Event>;
    /// Asynchronous copy between two blocks of this backend.
    ///
    /// # Safety
    /// See the trait docs.
    unsafe fn copy(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        dst: &mut DeviceBlock,
        region: CopyRegion,
    ) -> Result<Event>;
    /// Asynchronous repetition of `pattern` over `len` bytes at `offset`.
    ///
    /// # Safety
    /// See the trait docs.
    unsafe fn fill(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        offset: usize,
        len: usize,
        pattern: &[u8],
    ) -> Result<Event>;
    /// A driver peer copy into `dst`, a block of `dst_backend`. Called only where both
    /// backends declare one [`PeerDomain`](super::PeerDomain) (elsewhere, return
    /// [`unsupported`]); `dst_backend` may be a wrapper of this backend's kind (reach the
    /// device through its `as_any`, or the wrapper forwards its own).
    ///
    /// # Safety
    /// See the trait docs; `dst` was allocated by `dst_backend`.
    unsafe fn copy_to_peer(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        dst_backend: &dyn Backend,
        dst: &mut DeviceBlock,
        region: CopyRegion,
    ) -> Result<Event>;

    /// Orders work enqueued on `queue` after `event`, without waiting here (the caller has
    /// checked the queue is this backend's).
    fn enqueue_wait(&self, queue: &Queue, event: &Event) -> Result<()>;
    /// An event of everything enqueued on `queue` so far.
    fn enqueue_marker(&self, queue: &Queue) -> Result<Event>;
    /// An event completed by the host.
    fn create_user_event(&self) -> Result<UserEvent>;
    /// Waits for all work on all queues.
    fn synchronize(&self) -> Result<()>;
}

/// Wraps a backend's allocation as a block.
///
/// # Safety
/// Only a [`Backend`] implementation may call this, for memory it allocated and
/// now hands out exactly once: `handle` must stay valid for `size` bytes until the block is
/// released to the backend whose id is `backend`.
pub unsafe fn device_block(backend: BackendId, handle: *mut c_void, size: usize) -> DeviceBlock {
    // SAFETY: the caller upholds the same contract.
    unsafe { DeviceBlock::from_raw(backend, handle, size) }
}

/// Wraps a backend's address reservation ([`RawBackend::reserve`]) as a block.
///
/// # Safety
/// As [`device_block`], for address space the backend reserved: the block may be used only
/// where the backend has committed memory ([`RawBackend::commit`]).
pub unsafe fn reservation_block(
    backend: BackendId,
    handle: *mut c_void,
    size: usize,
) -> DeviceBlock {
    // SAFETY: the caller upholds the same contract.
    unsafe { DeviceBlock::reservation(backend, handle, size) }
}

/// Wraps a backend's shared allocation ([`RawBackend::allocate_shared`]): device memory that
/// the host reaches at `host`.
///
/// # Safety
/// As [`device_block`]; besides, `host` addresses the block's `size` bytes from the host for
/// as long as the block lives.
pub unsafe fn shared_block(
    backend: BackendId,
    handle: *mut c_void,
    size: usize,
    host: std::ptr::NonNull<u8>,
) -> DeviceBlock {
    // SAFETY: the caller upholds the same contract.
    unsafe { DeviceBlock::shared(backend, handle, size, host) }
}

/// Wraps a backend's queue object; users get queues from
/// [`Backend::default_queue`] and
/// [`Backend::create_queue`].
pub fn queue(backend: BackendId, inner: Arc<dyn Any + Send + Sync>) -> Queue {
    Queue::new(backend, inner)
}

/// Wraps a backend's completion object.
pub fn event(source: Arc<dyn EventSource>) -> Event {
    Event::from_source(source)
}

/// The backend's completion object of `event`, `None` for an event created already complete.
pub fn event_source(event: &Event) -> Option<&Arc<dyn EventSource>> {
    event.source()
}

/// A user event a backend built: `finish(true)` completes `event`, `finish(false)` fails it.
pub fn user_event(
    event: Event,
    finish: Box<dyn FnOnce(bool) -> Result<()> + Send + Sync>,
) -> UserEvent {
    UserEvent::new(event, finish)
}

/// A user event completed on the host alone ([`ManualEvent`]), for backends whose devices have
/// no host-completed events of their own (the host backend, CUDA).
pub fn manual_user_event() -> UserEvent {
    UserEvent::manual()
}

/// Wraps a backend's staging allocation.
pub fn staging_buffer(backend: BackendId, memory: Arc<dyn StagingMemory>) -> StagingBuffer {
    StagingBuffer::new(backend, memory)
}

/// What a primitive returns for a capability its device does not declare. The checked layer
/// never calls one (it reads [`Capabilities`] first), so no user sees this; it exists so that
/// every primitive is written out and none has a default.
pub fn unsupported(backend: BackendKind, operation: &'static str) -> Error {
    Error::Backend(BackendError {
        backend,
        operation,
        code: 0,
        name: "not a capability of this device",
        retryable: false,
    })
}
