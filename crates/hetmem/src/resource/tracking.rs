//! [`TrackingResource`]: a hook that sees every call to a resource, for logs, traces and
//! replay (RMM's `logging_resource_adaptor`, as a callback so the caller picks the format).

use std::sync::{Arc, Weak};
use std::thread::ThreadId;
use std::time::Instant;

use super::{MemoryResource, Trim};
use crate::backend::{Backend, DeviceBlock, Event};
use crate::error::Result;

/// What was asked of the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResourceCall {
    /// An allocation that succeeded; `address` is the block's raw handle.
    Allocate,
    /// An allocation the resource below refused.
    AllocateFailed,
    /// A deallocation; `pending` events of device work still used the block.
    Deallocate {
        /// How many events the block waited for.
        pending: usize,
    },
    /// A trim; `bytes` is what it gave back.
    Trim,
    /// A block that left hetmem's hands without coming back (see
    /// [`MemoryResource::abandon`]).
    Abandon,
    /// A block adopted from outside hetmem ([`MemoryResource::adopt`]); `address` is its raw
    /// handle.
    Adopt,
    /// A range of a reservation committed ([`MemoryResource::commit`]); `address` is the
    /// reservation's raw handle plus the offset.
    Commit,
    /// A range of a reservation given back ([`MemoryResource::decommit`]).
    Decommit,
}

/// One call seen by a [`TrackingResource`].
#[derive(Debug, Clone)]
pub struct ResourceEvent {
    /// What was called.
    pub call: ResourceCall,
    /// Bytes requested, deallocated or trimmed.
    pub bytes: u64,
    /// The block's raw handle (0 where there is none), to pair allocations with deallocations.
    pub address: usize,
    /// When the call returned.
    pub at: Instant,
    /// The calling thread.
    pub thread: ThreadId,
}

type Hook = dyn Fn(&ResourceEvent) + Send + Sync;

/// Passes every call through to the resource it wraps and then tells a hook what happened.
/// The hook runs on the calling thread inside allocation and deallocation: keep it short (push
/// to a channel or a ring, not to a file).
pub struct TrackingResource {
    upstream: Arc<dyn MemoryResource>,
    hook: Box<Hook>,
}

impl TrackingResource {
    /// `upstream`, reporting every call to `hook`.
    pub fn new(
        upstream: Arc<dyn MemoryResource>,
        hook: impl Fn(&ResourceEvent) + Send + Sync + 'static,
    ) -> Self {
        TrackingResource {
            upstream,
            hook: Box::new(hook),
        }
    }

    fn tell(&self, call: ResourceCall, bytes: u64, address: usize) {
        (self.hook)(&ResourceEvent {
            call,
            bytes,
            address,
            at: Instant::now(),
            thread: std::thread::current().id(),
        });
    }
}

impl Trim for TrackingResource {
    fn trim(&self) -> Result<u64> {
        let bytes = self.upstream.trim()?;
        self.tell(ResourceCall::Trim, bytes, 0);
        Ok(bytes)
    }
}

impl MemoryResource for TrackingResource {
    fn backend(&self) -> &Arc<dyn Backend> {
        self.upstream.backend()
    }

    fn allocate(&self, bytes: usize) -> Result<DeviceBlock> {
        let block = self.upstream.allocate(bytes);
        match &block {
            Ok(b) => self.tell(
                ResourceCall::Allocate,
                bytes as u64,
                b.raw_handle() as usize,
            ),
            Err(_) => self.tell(ResourceCall::AllocateFailed, bytes as u64, 0),
        }
        block
    }

    fn deallocate(&self, block: DeviceBlock, after: Vec<Event>) -> Result<()> {
        let (size, address, pending) = (block.size(), block.raw_handle() as usize, after.len());
        self.upstream.deallocate(block, after)?;
        self.tell(ResourceCall::Deallocate { pending }, size as u64, address);
        Ok(())
    }

    fn abandon(&self, size: usize) {
        self.upstream.abandon(size);
        self.tell(ResourceCall::Abandon, size as u64, 0);
    }

    fn adopt(&self, block: &DeviceBlock) -> Result<()> {
        self.upstream.adopt(block)?;
        let address = block.raw_handle() as usize;
        self.tell(ResourceCall::Adopt, block.size() as u64, address);
        Ok(())
    }

    fn commit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<()> {
        self.upstream.commit(reservation, offset, len)?;
        let address = reservation.raw_handle() as usize + offset;
        self.tell(ResourceCall::Commit, len as u64, address);
        Ok(())
    }

    fn decommit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<()> {
        self.upstream.decommit(reservation, offset, len)?;
        let address = reservation.raw_handle() as usize + offset;
        self.tell(ResourceCall::Decommit, len as u64, address);
        Ok(())
    }

    fn on_pressure(&self, cache: Weak<dyn Trim>) {
        self.upstream.on_pressure(cache);
    }

    fn relieve(&self) -> Result<u64> {
        self.upstream.relieve()
    }

    fn headroom(&self) -> Option<u64> {
        self.upstream.headroom()
    }
}
