//! [`FailureCallbackResource`]: a user hook when memory runs out (RMM's
//! `failure_callback_resource_adaptor`).

use std::sync::{Arc, Weak};

use super::{MemoryResource, Trim};
use crate::backend::{Backend, DeviceBlock, Event};
use crate::error::{Error, Result};

/// What the callback of a [`FailureCallbackResource`] is told.
#[derive(Debug)]
pub struct AllocationFailure<'a> {
    /// Bytes asked of the resource below: an allocation, or the growth of an expandable
    /// segment ([`MemoryResource::commit`]) — what a splitting allocator above asks, which can
    /// be more than the buffer that needed it.
    pub bytes: usize,
    /// Retries already made for this request (0 on the first failure).
    pub retries: u32,
    /// Why the resource below refused: [`Error::OutOfMemory`] or [`Error::LimitExceeded`].
    pub error: &'a Error,
}

type Callback = dyn Fn(&AllocationFailure<'_>) -> bool + Send + Sync;

/// Calls a user closure when an allocation runs out of memory (device out-of-memory or a
/// limit exceeded). The closure can free memory — spill buffers to the host, drop device
/// copies of synchronized buffers, trim other pools — and returns whether to retry; the
/// allocation is retried for as long as it says so, and otherwise fails with the last error.
/// Other errors pass through untouched.
///
/// ```
/// use std::sync::Arc;
/// use hetmem::resource::{FailureCallbackResource, MemoryResource, PlainResource};
/// use hetmem::backend::HostBackend;
///
/// let plain = Arc::new(PlainResource::new(Arc::new(HostBackend::with_capacity(1 << 20))));
/// // Give up after two retries (a real callback frees memory first).
/// let resource = FailureCallbackResource::new(plain, |failure| failure.retries < 2);
/// assert!(resource.allocate(2 << 20).is_err());
/// ```
pub struct FailureCallbackResource {
    upstream: Arc<dyn MemoryResource>,
    callback: Box<Callback>,
}

impl FailureCallbackResource {
    /// `upstream`, calling `callback` when it runs out of memory.
    pub fn new(
        upstream: Arc<dyn MemoryResource>,
        callback: impl Fn(&AllocationFailure<'_>) -> bool + Send + Sync + 'static,
    ) -> Self {
        FailureCallbackResource {
            upstream,
            callback: Box::new(callback),
        }
    }
}

impl FailureCallbackResource {
    /// Runs `attempt` (asking for `bytes`) until it succeeds, fails otherwise than for want of
    /// memory, or the callback declines to retry.
    fn retrying<T>(&self, bytes: usize, attempt: impl Fn() -> Result<T>) -> Result<T> {
        let mut retries = 0;
        loop {
            match attempt() {
                Err(error @ (Error::OutOfMemory { .. } | Error::LimitExceeded { .. })) => {
                    let failure = AllocationFailure {
                        bytes,
                        retries,
                        error: &error,
                    };
                    if !(self.callback)(&failure) {
                        return Err(error);
                    }
                    retries = retries.saturating_add(1);
                }
                other => return other,
            }
        }
    }
}

impl Trim for FailureCallbackResource {
    fn trim(&self) -> Result<u64> {
        self.upstream.trim()
    }
}

impl MemoryResource for FailureCallbackResource {
    fn backend(&self) -> &Arc<dyn Backend> {
        self.upstream.backend()
    }

    fn allocate(&self, bytes: usize) -> Result<DeviceBlock> {
        self.retrying(bytes, || self.upstream.allocate(bytes))
    }

    fn deallocate(&self, block: DeviceBlock, after: Vec<Event>) -> Result<()> {
        self.upstream.deallocate(block, after)
    }

    fn abandon(&self, size: usize) {
        self.upstream.abandon(size);
    }

    /// Passed down: adopted memory exists already, so there is nothing to retry.
    fn adopt(&self, block: &DeviceBlock) -> Result<()> {
        self.upstream.adopt(block)
    }

    /// A segment growing is memory asked for, as an allocation is: the callback sees it fail.
    fn commit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<()> {
        self.retrying(len, || self.upstream.commit(reservation, offset, len))
    }

    fn decommit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<()> {
        self.upstream.decommit(reservation, offset, len)
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
