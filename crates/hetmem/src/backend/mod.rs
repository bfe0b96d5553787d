//! The one seam between hetmem and hardware.
//!
//! Everything above this module (pools, unified buffers, the transfer engine, the manager) talks to
//! memory only through [`Backend`], as `Arc<dyn Backend>`. A backend speaks **bytes**: typed views
//! live above it.
//!
//! The seam has two sides. A device implements [`raw::RawBackend`]: unchecked primitives, none
//! with a default. [`Backend`] is what everything else calls: one implementation over every
//! `RawBackend` (`checked.rs`) checks each argument (ownership, ranges, sizes, fill patterns,
//! scattered parts) before a device sees it, and serves host access, mapped access and peer
//! copies of host-addressable blocks itself. Adding a device means implementing `RawBackend`
//! (`host/mod.rs` is the worked example).
//!
//! # The contract
//!
//! **Handles.** [`DeviceBlock`], [`Queue`], [`Event`] and [`StagingBuffer`] remember the
//! [`BackendId`] of the backend that created them. Passing one to another backend is an
//! [`Error::ForeignHandle`](crate::Error::ForeignHandle), never undefined behaviour. A
//! `DeviceBlock` is not `Clone`: it is released exactly once, by [`Backend::release`]. A block
//! that is dropped without being released leaks, like `std::mem::forget`.
//!
//! **What runs asynchronously.** [`Backend::write`] and [`Backend::read`] take pageable host memory
//! and are *blocking*: when they return, the host slice is no longer used and the data has
//! arrived. [`Backend::write_staged`], [`Backend::read_staged`], [`Backend::copy`] and
//! [`Backend::fill`] may run asynchronously and return an [`Event`] that completes when the device
//! is done. Work enqueued on one [`Queue`] runs in order; work on different queues of one backend
//! may overlap. [`Backend::enqueue_wait`] orders one queue after an event,
//! [`Backend::enqueue_marker`] gives the event of everything enqueued on a queue so far, and
//! [`Backend::synchronize`] waits for every queue. Releasing a block is ordered after the work
//! already enqueued on it: the memory is reused only once that work is done.
//!
//! **Who owns host memory while the device works.** Asynchronous transfers touch host memory only
//! through a [`StagingBuffer`] (page-locked where the backend can). The staging buffer records every
//! pending operation on it: [`StagingBuffer::as_slice`] waits for pending device writes into it,
//! [`StagingBuffer::as_mut_slice`] and `Drop` wait for all pending operations. The host therefore
//! never sees memory the device is still writing, and the device never reads freed memory.
//!
//! **Aliasing.** Operations that change a block's contents take `&mut DeviceBlock`; reads take
//! `&DeviceBlock`. Safe code therefore cannot race a write against another access on the same
//! block from two threads.
//!
//! **Threads.** A backend is `Send + Sync`: any method may be called from any thread at any time,
//! and two threads may use one backend (and one queue) at once. Completion callbacks run on a
//! thread of the backend's choosing (a driver thread for OpenCL, the calling thread when the event
//! is already complete) and must be short.

mod capabilities;
mod checked;
mod counters;
#[cfg(feature = "cuda")]
mod cuda;
mod event;
mod faulty;
mod held;
mod holding;
mod host;
mod lease;
mod lent;
mod mapped;
#[cfg(feature = "opencl")]
mod opencl;
mod parts;
mod per_thread;
pub mod raw;
mod region;
mod registry;
mod reservation;
mod slot;
mod staging;
#[cfg(feature = "wgpu")]
mod wgpu;

use std::any::Any;
use std::ffi::c_void;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use capabilities::{Capabilities, PeerDomain};
pub(crate) use checked::{check_allocation, check_block, check_owner, check_release};
pub use counters::BackendUsage;
pub(crate) use counters::UsageCounters;
pub(crate) use held::Held;
pub(crate) use lease::{CellOwner, Lease, LeaseCell};
pub(crate) use lent::{Lent, LentNode};
pub(crate) use mapped::{Mapping, MappingMut};
pub(crate) use slot::{Slot, SlotRead, SlotWrite};

#[cfg(feature = "wgpu")]
pub(crate) use self::wgpu::lend::lend as lend_wgpu;
#[cfg(feature = "wgpu")]
pub use self::wgpu::WgpuBackend;
#[cfg(feature = "cuda")]
pub(crate) use cuda::lend as lend_cuda;
#[cfg(feature = "cuda")]
pub use cuda::{CudaBackend, CudaDeviceMut, CudaDeviceRef, CudaRegistered};
pub(crate) use event::ManualEvent;
pub use event::{Event, EventStatus, UserEvent};
pub use faulty::{FaultKind, FaultOp, FaultyBackend};
pub use host::HostBackend;
pub(crate) use host::HOST_ALIGNMENT;
#[cfg(feature = "opencl")]
pub(crate) use opencl::lend as lend_opencl;
#[cfg(feature = "opencl")]
pub use opencl::{ClBuffer, OpenClBackend};
pub(crate) use parts::Failures;
pub use parts::{PartFailures, ReadPart, WritePart};
pub(crate) use per_thread::PerThread;
pub use region::CopyRegion;
#[cfg(feature = "mpi")]
pub(crate) use registry::devices;
pub use registry::{backends, probe, BackendProbe, DeviceName};
pub use staging::StagingBuffer;
pub(crate) use staging::StagingMemory;

use crate::error::Result;

/// Identifies one backend instance for the life of the process; handles carry it so that a
/// backend can reject what another backend created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, schemars::JsonSchema))]
pub struct BackendId(u64);

impl BackendId {
    /// A fresh id, never returned before in this process.
    pub fn unique() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        BackendId(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The numeric value.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The family of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, schemars::JsonSchema))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
#[non_exhaustive]
pub enum BackendKind {
    /// Host memory standing in for a device; always available.
    Host,
    /// An OpenCL device.
    OpenCl,
    /// A CUDA device.
    Cuda,
    /// A wgpu adapter (Vulkan, Metal or DX12).
    Wgpu,
}

impl BackendKind {
    /// The lower-case name used on the command line (`host`, `opencl`, `cuda`, `wgpu`).
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Host => "host",
            BackendKind::OpenCl => "opencl",
            BackendKind::Cuda => "cuda",
            BackendKind::Wgpu => "wgpu",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a device is and how much memory it has.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, schemars::JsonSchema))]
pub struct DeviceInfo {
    /// The backend family.
    pub kind: BackendKind,
    /// Position among the devices of this kind on this machine (`opencl:1` has index 1).
    pub index: usize,
    /// The device's name as its driver reports it.
    pub name: String,
    /// The device's vendor.
    pub vendor: String,
    /// The driver or platform version.
    pub driver: String,
    /// Total device memory in bytes.
    pub total_memory: u64,
    /// Free device memory in bytes at the time of the query, where the driver says.
    pub free_memory: Option<u64>,
    /// The largest single allocation the device accepts, in bytes.
    pub max_allocation: u64,
    /// Alignment of every block's start address, in bytes.
    pub alignment: usize,
}

impl DeviceInfo {
    /// `kind:index`, the name used on the command line.
    pub fn label(&self) -> String {
        format!("{}:{}", self.kind, self.index)
    }
}

/// One allocation of device memory. Created by [`Backend::allocate`], given back with
/// [`Backend::release`]. The handle is opaque except to its backend.
#[must_use = "a device block must be released to its backend, or it leaks"]
#[derive(Debug)]
pub struct DeviceBlock {
    backend: BackendId,
    handle: *mut c_void,
    size: usize,
    /// Where the host reaches a shared allocation ([`Backend::allocate_shared`]).
    shared: Option<NonNull<u8>>,
    /// What kind of block: each is released its own way.
    kind: BlockKind,
}

/// What a [`DeviceBlock`] is, which decides how it is given back.
///
/// A whole word wide: as one byte followed by padding, the compiler moved blocks (and the pool
/// handles around them) in odd-sized pieces whose reloads missed store forwarding, a stall on
/// every pool hit and release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
enum BlockKind {
    /// Memory of its own ([`Backend::allocate`], [`Backend::allocate_shared`]).
    Allocation,
    /// A range of another block ([`Backend::view`]).
    View,
    /// Address space committed piece by piece ([`Backend::reserve`]).
    Reservation,
}

// SAFETY: a DeviceBlock is an inert handle. Only the backend that created it interprets the
// pointer, and every backend is `Sync` and synchronises its own accesses; the `&`/`&mut` split in
// the Backend methods keeps safe code from racing writes on host-backed memory.
unsafe impl Send for DeviceBlock {}
// SAFETY: see `Send`; `&DeviceBlock` only permits reads through the backend.
unsafe impl Sync for DeviceBlock {}

impl DeviceBlock {
    /// Wraps a backend's raw allocation ([`raw::device_block`]).
    ///
    /// # Safety
    /// As [`raw::device_block`].
    pub(crate) unsafe fn from_raw(backend: BackendId, handle: *mut c_void, size: usize) -> Self {
        DeviceBlock {
            backend,
            handle,
            size,
            shared: None,
            kind: BlockKind::Allocation,
        }
    }

    /// Wraps a backend's address reservation ([`raw::reservation_block`]).
    ///
    /// # Safety
    /// As [`raw::reservation_block`].
    pub(crate) unsafe fn reservation(backend: BackendId, handle: *mut c_void, size: usize) -> Self {
        DeviceBlock {
            kind: BlockKind::Reservation,
            // SAFETY: the caller's guarantee.
            ..unsafe { DeviceBlock::from_raw(backend, handle, size) }
        }
    }

    /// Wraps a backend's shared allocation ([`raw::shared_block`]).
    ///
    /// # Safety
    /// As [`raw::shared_block`].
    pub(crate) unsafe fn shared(
        backend: BackendId,
        handle: *mut c_void,
        size: usize,
        host: NonNull<u8>,
    ) -> Self {
        DeviceBlock {
            backend,
            handle,
            size,
            shared: Some(host),
            kind: BlockKind::Allocation,
        }
    }

    /// The backend that owns this block.
    pub fn backend(&self) -> BackendId {
        self.backend
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The driver's handle: a `cl_mem` for OpenCL, a `CUdeviceptr` for CUDA, a host pointer for
    /// the host backend. Use it to pass the block to your own kernels; hetmem keeps ownership.
    pub fn raw_handle(&self) -> *mut c_void {
        self.handle
    }

    /// A view of bytes `offset..offset + len` of `self` with the handle `handle` (shared when
    /// `self` is).
    ///
    /// # Safety
    /// `handle` is a view of that range made by this block's backend.
    pub(crate) unsafe fn view(&self, handle: *mut c_void, offset: usize, len: usize) -> Self {
        DeviceBlock {
            backend: self.backend,
            handle,
            size: len,
            shared: self.shared.map(|p| {
                // SAFETY: `offset` lies inside the block (the caller's guarantee).
                unsafe { p.add(offset) }
            }),
            kind: BlockKind::View,
        }
    }

    /// For a shared allocation ([`Backend::allocate_shared`]), its address in the memory host
    /// and device share: the pointer an OpenCL kernel takes through
    /// `clSetKernelArgSVMPointer`, the block's own address on CUDA. `None` for other blocks.
    pub fn shared_address(&self) -> Option<*mut u8> {
        self.shared.map(NonNull::as_ptr)
    }

    /// Whether this block is a view of another ([`Backend::view`]).
    pub fn is_view(&self) -> bool {
        self.kind == BlockKind::View
    }

    /// Whether this block is an address reservation ([`Backend::reserve`]).
    pub fn is_reservation(&self) -> bool {
        self.kind == BlockKind::Reservation
    }

    /// Consumes the block, returning its raw handle to the backend that releases it.
    pub(crate) fn into_raw(self) -> *mut c_void {
        self.handle
    }
}

/// What a mapping ([`Backend::map`]) is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapMode {
    /// Reading the device's bytes.
    Read,
    /// Reading and writing them.
    Write,
    /// Overwriting every byte: the device's bytes are not fetched (OpenCL's
    /// `CL_MAP_WRITE_INVALIDATE_REGION`).
    WriteDiscard,
}

/// Where a shared allocation's pages should go ([`Backend::migrate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrateTo {
    /// The device's memory, ahead of kernels.
    Device,
    /// Host memory, ahead of host access.
    Host,
}

/// An in-order stream of device work. Cloning a queue gives another handle to the same stream.
#[derive(Clone)]
pub struct Queue {
    backend: BackendId,
    inner: Arc<dyn Any + Send + Sync>,
}

impl Queue {
    /// Wraps a backend's queue object ([`raw::queue`]).
    pub(crate) fn new(backend: BackendId, inner: Arc<dyn Any + Send + Sync>) -> Self {
        Queue { backend, inner }
    }

    /// The stream's identity while it lives (clones share it): how a trace tells streams
    /// apart.
    pub(crate) fn key(&self) -> usize {
        Arc::as_ptr(&self.inner).cast::<()>() as usize
    }

    /// The backend that owns this queue.
    pub fn backend(&self) -> BackendId {
        self.backend
    }

    /// The backend's queue object, for that backend (and for users launching their own kernels:
    /// an `opencl3::command_queue::CommandQueue` on OpenCL).
    pub fn downcast<T: Any>(&self) -> Option<&T> {
        self.inner.downcast_ref()
    }
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("backend", &self.backend)
            .finish()
    }
}

/// The byte-level interface every device offers, checked: every argument is validated before a
/// device sees it. See the [module docs](self) for the contract on asynchrony, host-memory
/// ownership and threads. Devices implement [`raw::RawBackend`]; every implementation of it is a
/// `Backend` through one checked implementation (`backend/checked.rs`).
pub trait Backend: checked::Sealed + Send + Sync + 'static {
    /// This backend's identity.
    fn id(&self) -> BackendId;
    /// What the device is; `free_memory` is read at the time of the call.
    fn info(&self) -> DeviceInfo;
    /// What the device can do.
    fn capabilities(&self) -> Capabilities;
    /// Blocks and bytes currently allocated through this backend.
    fn usage(&self) -> BackendUsage;
    /// For downcasting to the concrete backend (to reach an OpenCL context, say).
    fn as_any(&self) -> &dyn Any;

    /// Allocates `bytes` of device memory, aligned to `info().alignment`. Contents are
    /// unspecified but initialised. Zero bytes, more than `info().max_allocation` or memory the
    /// device cannot supply are errors.
    fn allocate(&self, bytes: usize) -> Result<DeviceBlock>;
    /// Gives a block back. The memory is reused only after work already enqueued on it is done.
    /// A block of another backend comes back unreleased inside
    /// [`Error::ReleasedToWrongBackend`](crate::Error::ReleasedToWrongBackend).
    fn release(&self, block: DeviceBlock) -> Result<()>;
    /// The block's memory as host bytes, where the device's memory *is* host memory that the
    /// host can read directly (the host backend) or the block is a shared allocation
    /// ([`Backend::allocate_shared`]); `None` elsewhere, and for a block of another backend. A
    /// buffer uses this to keep one shared allocation instead of two copies. Device work on a
    /// shared allocation must be finished before the host reads it (the caller orders it).
    fn host_bytes<'a>(&self, block: &'a DeviceBlock) -> Option<&'a [u8]>;
    /// Where a host-addressable block's bytes are (the host backend, shared allocations), to
    /// hand to code outside hetmem; `None` elsewhere and for a block of another backend. Valid
    /// for `block.size()` bytes while the block lives; reads and writes through it must not
    /// race hetmem's.
    fn host_ptr(&self, block: &DeviceBlock) -> Option<*mut u8>;
    /// [`Backend::host_bytes`], for writing.
    fn host_bytes_mut<'a>(&self, block: &'a mut DeviceBlock) -> Option<&'a mut [u8]>;
    /// Whether [`Backend::map`] maps `block`: host memory and shared allocations always;
    /// device memory where the device has mapped access and maps the block alone (wgpu maps
    /// whole buffers only, not a block carved from one shared with others). `false` for a
    /// block of another backend.
    fn maps(&self, block: &DeviceBlock) -> bool;
    /// Lets `access` write bytes `offset..offset + len` of `dst` in place, through a host
    /// mapping of the device's memory: one copy on devices that share memory with the host.
    /// Blocking: the device sees the bytes once this returns. `Ok(false)`, without calling
    /// `access`, where the device has no mapped access (`capabilities().mapped_access`) or
    /// cannot map this block alone (wgpu: a block carved from a buffer shared with others);
    /// blocks that are host memory ([`Backend::host_bytes_mut`]) are written in place.
    fn write_mapped(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        offset: usize,
        len: usize,
        access: &mut dyn FnMut(&mut [u8]),
    ) -> Result<bool>;
    /// [`Backend::write_mapped`], for reading bytes `offset..offset + len` of `src` in place.
    fn read_mapped(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        offset: usize,
        len: usize,
        access: &mut dyn FnMut(&[u8]),
    ) -> Result<bool>;
    /// Maps bytes `offset..offset + len` of `block` into host memory once the work enqueued on
    /// `queue` before this call is done (blocking), and returns where they are: zero-copy where
    /// the device shares memory with the host (PoCL, integrated GPUs), a driver copy elsewhere.
    /// With [`MapMode::Read`] the bytes must not be written; with [`MapMode::WriteDiscard`] they
    /// start unspecified. End it with [`Backend::unmap`] before the device uses the block again
    /// (reading, for a read mapping, is allowed). Host-memory and shared blocks map to their own
    /// address, no driver call. A device without mapped access answers
    /// [`Error::Unsupported`](crate::Error::Unsupported), as wgpu does for a block carved from
    /// a buffer shared with others (wgpu maps whole buffers, and a mapped buffer is kept out
    /// of every submission, even reading ones, until unmapped); zero bytes is
    /// [`Error::ZeroLength`](crate::Error::ZeroLength). On OpenCL a second mapping of one block
    /// waits until the first is unmapped (PoCL mis-serves two at once), so never hold two of one
    /// block in one thread; buffers' map guards take the buffer exclusively for that reason.
    fn map(
        &self,
        queue: &Queue,
        block: &DeviceBlock,
        offset: usize,
        len: usize,
        mode: MapMode,
    ) -> Result<*mut u8>;
    /// Ends the mapping at `ptr` (what [`Backend::map`] returned for `block`), enqueued on
    /// `queue` and waited for: the device sees what was written, and work enqueued on `queue`
    /// afterwards comes after it.
    fn unmap(&self, queue: &Queue, block: &DeviceBlock, ptr: *mut u8) -> Result<()>;
    /// A block of `bytes` bytes that host and device both address
    /// ([`DeviceBlock::shared_address`]): OpenCL fine-grained SVM (the block is a `cl_mem`
    /// over it), CUDA managed memory. Where `capabilities().shared_allocations`; elsewhere
    /// [`Error::Unsupported`](crate::Error::Unsupported).
    fn allocate_shared(&self, bytes: usize) -> Result<DeviceBlock>;
    /// Starts moving a shared allocation's pages to where they are used next, ordered on
    /// `queue` (CUDA's `cuMemPrefetchAsync`); a hint that does nothing where shared memory
    /// stays put (PoCL). A block that is not a shared allocation is
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument).
    fn migrate(&self, queue: &Queue, block: &DeviceBlock, to: MigrateTo) -> Result<()>;
    /// Bytes `offset..offset + len` of `segment` as a block of their own — a pointer into it on
    /// host memory and CUDA, a sub-buffer on OpenCL (kernels take it like any `cl_mem`) — for
    /// allocators that carve segments (a shared allocation's view is shared too). `offset` must
    /// be a multiple of `info().alignment`. A view owns no memory and is not counted as an
    /// allocation: give it back with [`Backend::release_view`], not `release`, before the
    /// segment; work on a view is work on the segment's memory.
    fn view(&self, segment: &DeviceBlock, offset: usize, len: usize) -> Result<DeviceBlock>;
    /// Gives back a view made by [`Backend::view`].
    fn release_view(&self, view: DeviceBlock) -> Result<()>;
    /// The unit [`Backend::commit`] works in, where the device has virtual memory: the host
    /// (address space reserved with `mmap`, 64 KiB units) and CUDA (`cuMemAddressReserve`,
    /// the allocation granularity, 2 MiB). `None` elsewhere (OpenCL).
    fn commit_granularity(&self) -> Option<usize>;
    /// Address space for `bytes` (a multiple of the granularity) with no memory behind it yet:
    /// a segment that grows in place as it is committed ([`Backend::commit`]), so that an
    /// allocator can grow a segment instead of adding one (PyTorch's expandable segments).
    /// Views of committed ranges are blocks like any other; [`Backend::release`] frees the
    /// reservation and everything committed in it. Costs no memory; counted as a live block of
    /// its committed bytes. [`Error::Unsupported`](crate::Error::Unsupported) without
    /// virtual memory.
    fn reserve(&self, bytes: usize) -> Result<DeviceBlock>;
    /// Backs bytes `offset..offset + len` of a reservation with memory (zeroed on the host;
    /// multiples of the granularity). Committing committed bytes again changes nothing.
    fn commit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<()>;
    /// Gives the memory behind bytes `offset..offset + len` of a reservation back to the
    /// device (after work enqueued on it); their contents are lost, and no view of them may be
    /// used until they are committed again.
    fn decommit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<()>;
    /// Allocates host memory for asynchronous transfers: page-locked where the backend can.
    fn allocate_staging(&self, bytes: usize) -> Result<StagingBuffer>;

    /// The queue hetmem uses when the caller names none.
    fn default_queue(&self) -> &Queue;
    /// A new in-order queue; work on different queues may overlap.
    fn create_queue(&self) -> Result<Queue>;

    /// Copies `src` into `dst` at byte `offset`. Blocking: returns once `src` is no longer used.
    fn write(&self, queue: &Queue, dst: &mut DeviceBlock, offset: usize, src: &[u8]) -> Result<()>;
    /// Copies from `src` at byte `offset` into `dst`. Blocking: returns once `dst` holds the data.
    fn read(&self, queue: &Queue, src: &DeviceBlock, offset: usize, dst: &mut [u8]) -> Result<()>;
    /// Writes every part into its block (`blocks[part.block]`), part `i` on queue
    /// `queues[i % queues.len()]`. Blocking like [`Backend::write`], but a backend may enqueue
    /// every part before waiting once, and parts on different queues may run at once. A part
    /// that fails transiently does not stop the others; after a permanent failure the parts
    /// not yet started are not, and count as failed; an invalid part fails as a permanent
    /// failure would, the parts before it moved. The error lists the failed parts.
    fn write_parts(
        &self,
        queues: &[Queue],
        blocks: &mut [&mut DeviceBlock],
        parts: &[WritePart<'_>],
    ) -> std::result::Result<(), PartFailures>;
    /// [`Backend::write_parts`] the other way: fills every part's bytes from its block.
    fn read_parts(
        &self,
        queues: &[Queue],
        blocks: &[&DeviceBlock],
        parts: &mut [ReadPart<'_>],
    ) -> std::result::Result<(), PartFailures>;
    /// Asynchronously copies `region.len` bytes of a staging buffer into a block.
    fn write_staged(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        src: &StagingBuffer,
        region: CopyRegion,
    ) -> Result<Event>;
    /// Asynchronously copies `region.len` bytes of a block into a staging buffer.
    fn read_staged(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        dst: &mut StagingBuffer,
        region: CopyRegion,
    ) -> Result<Event>;
    /// Asynchronously copies `region.len` bytes between two blocks of this backend.
    fn copy(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        dst: &mut DeviceBlock,
        region: CopyRegion,
    ) -> Result<Event>;
    /// Whether [`Backend::copy_to_peer`] copies from this backend's blocks straight into
    /// blocks of `other`, another device, without staging through host memory
    /// ([`Capabilities::copies_directly_to`]).
    fn can_copy_to(&self, other: &dyn Backend) -> bool;
    /// Copies `region.len` bytes of `src` (a block of this backend) into `dst`, a block of
    /// `dst_backend`, another device, without staging through host memory: a driver peer copy
    /// within one [`PeerDomain`], one `memcpy` between backends whose blocks are host memory.
    /// May run asynchronously on `queue`; the destination device's later work is ordered after
    /// it. `Ok(None)`, copying nothing, where [`Backend::can_copy_to`] says no (the caller then
    /// copies through the host).
    fn copy_to_peer(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        dst_backend: &dyn Backend,
        dst: &mut DeviceBlock,
        region: CopyRegion,
    ) -> Result<Option<Event>>;
    /// Asynchronously repeats `pattern` over `len` bytes at `offset`. The pattern's length must be
    /// a power of two up to 128, and `offset` and `len` multiples of it.
    fn fill(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        offset: usize,
        len: usize,
        pattern: &[u8],
    ) -> Result<Event>;

    /// Makes work enqueued on `queue` after this call wait for `event`, without waiting here:
    /// the gate pattern (wait on a user event, enqueue work, complete the event later from the
    /// same thread) works on every backend. Where the device cannot wait for the event itself
    /// (an event of another OpenCL context), the caller waits instead.
    fn enqueue_wait(&self, queue: &Queue, event: &Event) -> Result<()>;
    /// An event that completes once all work enqueued on `queue` before this call is done, the
    /// user's own kernels included: what hetmem orders other queues after, and what a block
    /// released from a buffer waits for before its pool hands it out again. (OpenCL:
    /// `clEnqueueMarkerWithWaitList`; CUDA: `cuEventRecord`; host: already complete.)
    fn enqueue_marker(&self, queue: &Queue) -> Result<Event>;
    /// An event completed by the host, for gating device work on host-side conditions.
    fn create_user_event(&self) -> Result<UserEvent>;
    /// Waits until all work on all of this backend's queues is done.
    fn synchronize(&self) -> Result<()>;
}

impl fmt::Debug for dyn Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = self.info();
        write!(f, "Backend({} {} {})", info.label(), info.name, self.id())
    }
}
