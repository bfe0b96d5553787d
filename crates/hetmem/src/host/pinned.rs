//! [`PinnedHost`]: page-locked memory from a [`PinnedPool`](crate::pool::PinnedPool) as host
//! memory a buffer can adopt — the host copy of a `Placement::HostPinned` buffer, which the
//! device reads and writes by DMA without a staging copy.

use super::HostMemory;
use crate::error::Result;
use crate::pool::PinnedBuffer;

/// A pinned buffer lent to be a buffer's host copy; back to its pool when dropped.
#[derive(Debug)]
pub struct PinnedHost {
    buffer: PinnedBuffer,
    ptr: *mut u8,
}

// SAFETY: the pinned buffer is owned by this value; see `HostMemory`.
unsafe impl Send for PinnedHost {}
// SAFETY: see `Send`.
unsafe impl Sync for PinnedHost {}

impl PinnedHost {
    /// Takes `buffer` once device work still pending on it (from its last user) is done.
    pub fn new(mut buffer: PinnedBuffer) -> Result<Self> {
        let ptr = buffer.as_mut_slice()?.as_mut_ptr();
        Ok(PinnedHost { buffer, ptr })
    }
}

// SAFETY: `requested()` bytes of the staging memory at `ptr`, idle (waited for in `new`) and
// used by nothing else until this value drops and gives the buffer back.
unsafe impl HostMemory for PinnedHost {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
    fn len(&self) -> usize {
        self.buffer.requested()
    }
}
