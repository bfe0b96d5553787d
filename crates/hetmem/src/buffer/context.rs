//! [`BufferContext`]: the pools, queue and lifetime that unified buffers are made from.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::shared_part::{CopiesOwner, SharedPart};
use super::shell::{Shape, Shell};
use super::storage::BufferStorage;
use super::UnifiedBuffer;
use crate::backend::{
    check_allocation, check_release, Backend, DeviceBlock, HostBackend, Queue, HOST_ALIGNMENT,
};
use crate::element::{byte_len, Element};
use crate::error::{Error, Result};
use crate::host::{HostMemory, PinnedHost};
use crate::pool::{CachingAllocator, CachingConfig, PooledBlock};
use crate::resource::{MemoryResource, SharedResource};
use crate::transfer::{Background, Strategy, TransferConfig, TransferEngine};

/// How a buffer keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Residency {
    /// [`Residency::Shared`] where the device's memory is host-addressable, otherwise
    /// [`Residency::Mirrored`].
    #[default]
    Auto,
    /// A host copy and a device copy, kept coherent by transfers.
    Mirrored,
    /// One allocation both sides use: never a transfer. Where the device's blocks are host
    /// memory (`Capabilities::host_addressable`), or it allocates memory host and device share
    /// (`Capabilities::shared_allocations`: OpenCL fine-grained SVM, CUDA managed memory, from
    /// their own cache, [`BufferContext::shared_pool`]); host access to the latter first waits
    /// for the work enqueued on the buffer's queue once a device guard was handed out.
    Shared,
}

/// Makes [`UnifiedBuffer`]s: device memory from a [`CachingAllocator`] over the device's backend,
/// host copies from a caching allocator over host memory.
///
/// Buffers keep the pools alive, so memory is returned to them whenever a buffer drops, even
/// after the context is gone. Closing the context (dropping it, or [`BufferContext::close`])
/// stops its buffers from allocating, transferring or handing out device access — those return
/// [`Error::ContextClosed`] — while host data already valid stays readable and writable.
pub struct BufferContext {
    shared: Arc<ContextShared>,
}

/// What a context's buffers hold on to.
pub(crate) struct ContextShared {
    pub(crate) device: CachingAllocator,
    pub(crate) host: CachingAllocator,
    /// Over the same resources as `device` and `host`, caching nothing: for unpooled buffers.
    pub(crate) device_unpooled: CachingAllocator,
    pub(crate) host_unpooled: CachingAllocator,
    /// The queue every buffer's transfers are ordered on, and that device guards hand out.
    pub(crate) queue: Queue,
    pub(crate) engine: TransferEngine,
    /// Where `sync` and the prefetches run their transfers, so that they return at once.
    pub(crate) background: Background,
    /// The device works asynchronously to the host (not the host backend, whose every call is
    /// a `memcpy` on the caller's thread: there a sync runs inline).
    pub(crate) asynchronous: bool,
    /// The device's largest allocation and whether its blocks are host memory, read once:
    /// `info()` may query the driver or the OS, which allocation must not do each time.
    max_allocation: u64,
    pub(crate) host_addressable: bool,
    /// Shared allocations (SVM, managed memory), where the device has them.
    shared: Option<SharedPools>,
    closed: AtomicBool,
}

/// The caches of shared allocations: one pooled, one caching nothing (for unpooled buffers),
/// both over a [`SharedResource`] on the device stack, so its limit and statistics count them.
pub(crate) struct SharedPools {
    pooled: CachingAllocator,
    unpooled: CachingAllocator,
}

impl SharedPools {
    fn over(device: Arc<dyn MemoryResource>) -> Self {
        let shared: Arc<dyn MemoryResource> = Arc::new(SharedResource::over(device));
        SharedPools {
            pooled: CachingAllocator::over(shared.clone(), CachingConfig::default()),
            unpooled: CachingAllocator::over(shared, CachingConfig::unpooled()),
        }
    }
}

impl ContextShared {
    pub(crate) fn check_open(&self, what: &'static str) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::ContextClosed { what })
        } else {
            Ok(())
        }
    }

    pub(crate) fn device_backend(&self) -> &dyn Backend {
        &**self.device.backend()
    }

    /// Checks a buffer of `bytes` bytes (never zero) against the device's largest allocation.
    /// `len` bytes of page-locked memory from the engine's pinned pool as a host block: the
    /// host copy of a `HostPinned` buffer. Plain host memory where the host side is not a
    /// [`HostBackend`] (which adopts the memory).
    pub(crate) fn pinned_host(&self, len: usize) -> Result<PooledBlock> {
        let host = self.host_unpooled.backend();
        let Some(backend) = host.as_any().downcast_ref::<HostBackend>() else {
            return self.host.allocate(len);
        };
        let pinned = PinnedHost::new(self.engine.staging_pool().take(len)?)?;
        self.host_unpooled.adopt(backend.adopt(pinned)?)
    }

    /// `len` bytes that host and device both address (SVM, managed memory), for a shared
    /// buffer on a device whose ordinary blocks are not host memory: from the shared cache, or
    /// with `pooled` off a driver allocation of its own.
    pub(crate) fn shared_allocation(&self, len: usize, pooled: bool) -> Result<PooledBlock> {
        let pools = self.shared.as_ref().ok_or(Error::Unsupported {
            backend: self.device_backend().info().kind,
            what: "allocate memory shared with the host",
        })?;
        match pooled {
            true => pools.pooled.allocate(len),
            false => pools.unpooled.allocate(len),
        }
    }

    pub(crate) fn check_size(&self, bytes: usize) -> Result<()> {
        check_allocation(bytes, self.max_allocation)
    }
}

impl BufferContext {
    /// A context over `device` with default pools, and host copies from a new host pool.
    pub fn new(device: Arc<dyn Backend>) -> Self {
        let host: Arc<dyn Backend> = Arc::new(HostBackend::new());
        let engine = TransferEngine::new(device.clone());
        let (device, host) = (CachingAllocator::new(device), CachingAllocator::new(host));
        let below = [device.upstream().clone(), host.upstream().clone()];
        Self::build(device, host, engine, below)
    }

    /// A context whose pools cache over the given resource stacks (default caching limits).
    /// `host` must hand out host-addressable memory (a stack over a [`HostBackend`]).
    pub fn over(device: Arc<dyn MemoryResource>, host: Arc<dyn MemoryResource>) -> Result<Self> {
        Self::with_pools(
            CachingAllocator::over(device, CachingConfig::default()),
            CachingAllocator::over(host, CachingConfig::default()),
        )
    }

    /// A context over given pools. `host` must allocate host-addressable memory (a pool over a
    /// [`HostBackend`]).
    pub fn with_pools(device: CachingAllocator, host: CachingAllocator) -> Result<Self> {
        Self::with_transfers(device, host, TransferConfig::default())
    }

    /// [`BufferContext::with_pools`] whose buffers move their data with `transfers` (chunk
    /// size, queues, a forced strategy, retries, verification).
    pub fn with_transfers(
        device: CachingAllocator,
        host: CachingAllocator,
        transfers: TransferConfig,
    ) -> Result<Self> {
        let below = [device.upstream().clone(), host.upstream().clone()];
        Self::with_unpooled_over(device, host, transfers, below)
    }

    /// [`BufferContext::with_transfers`] whose unpooled buffers (and shared allocations) take
    /// their memory from `below` — device, host — rather than from what the pools sit on: the
    /// stacks under the pools' splitting allocators, so that an unpooled buffer is a backend
    /// allocation of its own, given back when it drops.
    pub(crate) fn with_unpooled_over(
        device: CachingAllocator,
        host: CachingAllocator,
        transfers: TransferConfig,
        below: [Arc<dyn MemoryResource>; 2],
    ) -> Result<Self> {
        if !host.backend().capabilities().host_addressable {
            return Err(Error::invalid(format!(
                "the host pool's backend ({:?}) does not hand out host-addressable memory",
                host.backend()
            )));
        }
        let engine = TransferEngine::with_config(device.backend().clone(), transfers)?;
        Ok(Self::build(device, host, engine, below))
    }

    fn build(
        device: CachingAllocator,
        host: CachingAllocator,
        engine: TransferEngine,
        below: [Arc<dyn MemoryResource>; 2],
    ) -> Self {
        let queue = device.backend().default_queue().clone();
        let max_allocation = device.backend().info().max_allocation;
        let caps = device.backend().capabilities();
        let host_addressable = caps.host_addressable;
        let [device_below, host_below] = below;
        let shared = (caps.shared_allocations).then(|| SharedPools::over(device_below.clone()));
        let asynchronous = caps.async_copies && !host_addressable;
        let unpooled = |below| CachingAllocator::over(below, CachingConfig::unpooled());
        BufferContext {
            shared: Arc::new(ContextShared {
                device_unpooled: unpooled(device_below),
                host_unpooled: unpooled(host_below),
                device,
                host,
                queue,
                engine,
                background: Background::default(),
                asynchronous,
                max_allocation,
                host_addressable,
                shared,
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// The device's backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        self.shared.device.backend()
    }

    /// The queue every buffer of this context is ordered on (a device guard's
    /// [`queue`](crate::buffer::DeviceRef::queue)).
    pub fn queue(&self) -> &Queue {
        &self.shared.queue
    }

    /// The pool device copies come from.
    pub fn device_pool(&self) -> &CachingAllocator {
        &self.shared.device
    }

    /// The engine buffers' syncs go through (its statistics cover every buffer of the context).
    pub fn engine(&self) -> &TransferEngine {
        &self.shared.engine
    }

    /// The pool host copies come from.
    pub fn host_pool(&self) -> &CachingAllocator {
        &self.shared.host
    }

    /// The pool of shared allocations (SVM, managed memory) that shared buffers take on a
    /// device whose ordinary blocks are not host memory; `None` where it has none.
    pub fn shared_pool(&self) -> Option<&CachingAllocator> {
        self.shared.shared.as_ref().map(|p| &p.pooled)
    }

    /// A buffer of `len` elements that reads as zeros. Nothing is allocated until a side is
    /// first used.
    pub fn alloc<T: Element>(&self, len: usize) -> Result<UnifiedBuffer<T>> {
        self.alloc_with(len, Residency::Auto)
    }

    /// [`BufferContext::alloc`] with a chosen residency.
    pub fn alloc_with<T: Element>(
        &self,
        len: usize,
        residency: Residency,
    ) -> Result<UnifiedBuffer<T>> {
        let storage =
            self.storage_for::<T>(len, residency, None, true, SharedPart::unobserved())?;
        Ok(UnifiedBuffer::from_storage(storage, len))
    }

    /// The storage of a new buffer of `len` elements of `T`, checked against the device; large
    /// syncs use `strategy` when one is given. `part`: its shared part and the owner of its copies.
    pub(crate) fn storage_for<T: Element>(
        &self,
        len: usize,
        residency: Residency,
        strategy: Option<Strategy>,
        pooled: bool,
        part: (Arc<SharedPart>, CopiesOwner),
    ) -> Result<BufferStorage> {
        let shape = self.shape_for::<T>(len, residency, strategy)?;
        Ok(self.storage_of(shape, pooled, part))
    }

    /// The storage of a new buffer of `shape` (from [`BufferContext::shape_for`]).
    pub(crate) fn storage_of(
        &self,
        shape: Shape,
        pooled: bool,
        part: (Arc<SharedPart>, CopiesOwner),
    ) -> BufferStorage {
        let Shape {
            len,
            shared,
            strategy,
        } = shape;
        BufferStorage::new(self.shared.clone(), len, shared, strategy, pooled, part)
    }

    /// The shape of a new buffer of `len` elements of `T` with `residency` and `strategy`,
    /// checked against the device as [`BufferContext::storage_for`] checks it.
    pub(crate) fn shape_for<T: Element>(
        &self,
        len: usize,
        residency: Residency,
        strategy: Option<Strategy>,
    ) -> Result<Shape> {
        self.shared.check_open("allocating a buffer")?;
        if len == 0 {
            return Err(Error::ZeroLength { what: "buffer" });
        }
        if std::mem::align_of::<T>() > HOST_ALIGNMENT {
            return Err(Error::invalid(format!(
                "element alignment {} exceeds the {HOST_ALIGNMENT}-byte alignment of buffer memory",
                std::mem::align_of::<T>()
            )));
        }
        let bytes = byte_len::<T>(len)?;
        self.shared.check_size(bytes)?;
        let addressable = self.shared.host_addressable;
        let shared = match residency {
            Residency::Auto => addressable,
            Residency::Mirrored => false,
            Residency::Shared if addressable || self.shared.shared.is_some() => true,
            Residency::Shared => {
                return Err(Error::Unsupported {
                    backend: self.backend().info().kind,
                    what: "share one allocation with the host: its memory is not host memory \
                           and it has no shared allocations (SVM, managed memory)",
                })
            }
        };
        Ok(Shape {
            len: bytes,
            shared,
            strategy,
        })
    }

    /// The storage of a buffer made of a parked `shell` (see [`BufferStorage::from_shell`]).
    pub(crate) fn storage_from_shell(&self, shell: Shell) -> BufferStorage {
        BufferStorage::from_shell(self.shared.clone(), shell)
    }

    /// A buffer holding a copy of `data`, valid on the host.
    pub fn from_slice<T: Element>(&self, data: &[T]) -> Result<UnifiedBuffer<T>> {
        let mut buffer = self.alloc(data.len())?;
        buffer.host_discard()?.copy_from_slice(data);
        Ok(buffer)
    }

    /// A buffer whose host copy is `memory` — a shared segment, a mapped file, a region, the
    /// caller's own ([`crate::host`]) — zero-copy: its contents are the buffer's, valid on the
    /// host; uploads read it in place. The memory is charged to the host stack (a limit may
    /// refuse it) and let go when the buffer drops or moves its host copy elsewhere (`resize`).
    /// Its length must be a whole number of `T`s and its address aligned to `T`.
    pub fn adopt_host<T: Element>(&self, memory: impl HostMemory) -> Result<UnifiedBuffer<T>> {
        let (storage, len) = self.adopted_storage::<T>(memory, SharedPart::unobserved())?;
        Ok(UnifiedBuffer::from_storage(storage, len))
    }

    /// The storage of [`BufferContext::adopt_host`] (with `part`), and its length in
    /// elements.
    pub(crate) fn adopted_storage<T: Element>(
        &self,
        memory: impl HostMemory,
        part: (Arc<SharedPart>, CopiesOwner),
    ) -> Result<(BufferStorage, usize)> {
        let (bytes, address) = (memory.len(), memory.as_ptr() as usize);
        let (size, align) = (std::mem::size_of::<T>(), std::mem::align_of::<T>());
        let misfit = |reason| Error::IncompatibleCast {
            to: std::any::type_name::<T>(),
            size,
            align,
            bytes,
            offset: 0,
            reason,
        };
        if bytes % size != 0 {
            return Err(misfit("the memory is not a whole number of elements long"));
        }
        if address % align != 0 {
            return Err(misfit("the memory's address is not aligned to the element"));
        }
        let host = self.shared.host_unpooled.backend();
        let Some(backend) = host.as_any().downcast_ref::<HostBackend>() else {
            return Err(Error::invalid(format!(
                "host memory is adopted by a HostBackend; this context's host copies come from {host:?}"
            )));
        };
        let len = bytes / size;
        let mut storage = self.storage_for::<T>(len, Residency::Mirrored, None, true, part)?;
        let block = self.shared.host_unpooled.adopt(backend.adopt(memory)?)?;
        storage.adopt_host(block);
        Ok((storage, len))
    }

    /// A buffer whose device copy is `block` — device memory made outside hetmem and adopted
    /// by this context's device backend (such as
    /// [`OpenClBackend::adopt_mem`](crate::backend::OpenClBackend::adopt_mem)) — zero-copy: its
    /// contents are the buffer's, valid on the device. Charged to the device stack (a limit may
    /// refuse it, and then the block is released at once) and released when the buffer drops
    /// it. Its size must be a whole number of `T`s; a block of another backend is a typed error.
    pub fn adopt_device<T: Element>(&self, block: DeviceBlock) -> Result<UnifiedBuffer<T>> {
        let (storage, len) = self.adopted_device_storage::<T>(block, SharedPart::unobserved())?;
        Ok(UnifiedBuffer::from_storage(storage, len))
    }

    /// The storage of [`BufferContext::adopt_device`] (with `part`), and its length in
    /// elements.
    pub(crate) fn adopted_device_storage<T: Element>(
        &self,
        block: DeviceBlock,
        part: (Arc<SharedPart>, CopiesOwner),
    ) -> Result<(BufferStorage, usize)> {
        let device = self.shared.device_unpooled.backend();
        let block = check_release(device.id(), block)?;
        let (bytes, size) = (block.size(), std::mem::size_of::<T>());
        if bytes % size != 0 {
            let _ = device.release(block);
            return Err(Error::IncompatibleCast {
                to: std::any::type_name::<T>(),
                size,
                align: std::mem::align_of::<T>(),
                bytes,
                offset: 0,
                reason: "the block is not a whole number of elements long",
            });
        }
        let len = bytes / size;
        let mut storage = match self.storage_for::<T>(len, Residency::Mirrored, None, true, part) {
            Ok(storage) => storage,
            Err(e) => {
                let _ = device.release(block);
                return Err(e);
            }
        };
        storage.adopt_device(self.shared.device_unpooled.adopt(block)?);
        Ok((storage, len))
    }

    /// Stops this context's buffers from allocating, transferring and giving device access.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
    }

    /// Whether [`BufferContext::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

impl Drop for BufferContext {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for BufferContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferContext")
            .field("backend", self.backend())
            .field("closed", &self.is_closed())
            .finish()
    }
}
