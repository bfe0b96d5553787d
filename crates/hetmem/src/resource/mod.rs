//! Memory resources: where device memory comes from, as small layers that wrap one another.
//!
//! A [`MemoryResource`] hands out [`DeviceBlock`]s and takes them back. The bottom of every stack
//! is a backend's [`PlainResource`] (one driver call per allocation, nothing cached); each adaptor
//! wraps any resource and adds one thing — [`LimitingResource`] a byte limit,
//! [`StatisticsResource`] exact counters, [`FailureCallbackResource`] a user hook that can free
//! memory and ask for a retry when memory runs out, [`TrackingResource`] a hook that sees every
//! call (for logs and traces), [`SharedResource`] memory host and device both address (SVM,
//! managed memory) charged to the stack it wraps. The caching allocator
//! ([`CachingAllocator`](crate::pool::CachingAllocator)) is a resource too, over any stack: it is
//! what buffers and the manager allocate from. This is RMM's design (`device_memory_resource`
//! and its adaptors), and the default stack a manager builds is
//!
//! ```text
//! CachingAllocator → LimitingResource → PlainResource → backend
//! ```
//!
//! **Pressure.** Memory that caches hold is the first to give up when a device or a limit runs
//! short. A cache registers with the resources below it ([`MemoryResource::on_pressure`]); a
//! resource that runs short asks them all to [`Trim`] ([`MemoryResource::relieve`]) before it
//! reports failure. A limit shared by two stacks (a manager's device and host pools) relieves the
//! caches of both.
//!
//! **Ordering.** [`MemoryResource::deallocate`] takes the events of device work that may still
//! use the block: a resource that reuses memory (a cache) holds the block back until they finish;
//! one that gives memory to the backend relies on the backend, which orders a release after the
//! work enqueued on the block.

mod failure_callback;
mod limit;
mod limiting;
mod plain;
mod pressure;
mod shared;
mod statistics;
mod tracking;

use std::sync::{Arc, Weak};

pub use failure_callback::{AllocationFailure, FailureCallbackResource};
pub use limit::MemoryLimit;
pub use limiting::LimitingResource;
pub use plain::PlainResource;
pub(crate) use pressure::Pressure;
pub use shared::SharedResource;
pub use statistics::{ResourceStats, StatisticsResource};
pub use tracking::{ResourceCall, ResourceEvent, TrackingResource};

use crate::backend::{Backend, DeviceBlock, Event};
use crate::error::Result;

/// Gives back memory that is held but not in use: hetmem's one verb for it, on caches, pools,
/// limits and the manager alike.
pub trait Trim: Send + Sync {
    /// Gives back everything held and unused; returns the bytes given back.
    fn trim(&self) -> Result<u64>;
}

/// Hands out device memory and takes it back. See the [module docs](self).
pub trait MemoryResource: Trim + 'static {
    /// The backend whose memory this resource hands out.
    fn backend(&self) -> &Arc<dyn Backend>;
    /// A block of at least `bytes` bytes (never zero).
    fn allocate(&self, bytes: usize) -> Result<DeviceBlock>;
    /// Takes back a block this resource allocated. `after` are events of device work that may
    /// still use it: the memory is not handed out again before they finish. A block of another
    /// backend comes back unreleased in
    /// [`Error::ReleasedToWrongBackend`](crate::Error::ReleasedToWrongBackend).
    fn deallocate(&self, block: DeviceBlock, after: Vec<Event>) -> Result<()>;
    /// Takes a block of `size` bytes this resource handed out off the books without getting it
    /// back: safe code swapped it out of a pool ([`PooledBlock::block_mut`]), and it is the
    /// swapper's to release now. Adaptors pass it down after adjusting their own counts.
    ///
    /// [`PooledBlock::block_mut`]: crate::pool::PooledBlock::block_mut
    fn abandon(&self, size: usize);
    /// Takes onto the books a block this resource did not allocate — memory adopted from
    /// outside hetmem (a shared segment, a mapped file, the caller's own; see [`crate::host`]) —
    /// which comes back through [`deallocate`](MemoryResource::deallocate) like any other.
    /// Adaptors charge it as an allocation (a limit may refuse it) and pass it down.
    fn adopt(&self, block: &DeviceBlock) -> Result<()>;
    /// Backs bytes `offset..offset + len` of a reservation of this stack's backend
    /// ([`Backend::reserve`]) with memory — an expandable segment growing — charged as an
    /// allocation of `len` bytes (a limit may refuse it; statistics count it). The reservation
    /// itself, address space only, is made and released with the backend directly, its
    /// committed bytes decommitted first.
    fn commit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<()>;
    /// Gives back the memory behind bytes `offset..offset + len` of a reservation, committed
    /// through this resource ([`MemoryResource::commit`]) and no longer in use.
    fn decommit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<()>;
    /// Registers a cache above this resource, asked to trim when memory runs short here.
    /// Adaptors pass it down; the resources that can run short keep it.
    fn on_pressure(&self, cache: Weak<dyn Trim>);
    /// Asks the caches registered here to trim, as this resource does itself before reporting
    /// that memory ran out; returns the bytes they gave back.
    fn relieve(&self) -> Result<u64>;
    /// Bytes this resource can still hand out before a limit below refuses, without trimming
    /// anything; `None` where nothing below limits it. A resource that allocates ahead (a
    /// splitting allocator's segments) asks no more than this.
    fn headroom(&self) -> Option<u64>;
}

impl std::fmt::Debug for dyn MemoryResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryResource({:?})", self.backend())
    }
}
