//! [`HostMemory`]: host memory hetmem did not allocate — a region, a shared segment, a mapped
//! file, the caller's own — that a host backend can adopt as a block
//! ([`HostBackend::adopt`](crate::backend::HostBackend::adopt)) and a buffer can use as its
//! host copy; it is let go (unmapped, closed, handed back) when its last user drops it.

/// Host memory that can be adopted: `len()` bytes at `as_ptr()`, valid and unchanged in place
/// until the value drops, which releases it.
///
/// # Safety
/// `as_ptr()` is non-null and points to `len()` (at least one)
/// initialised bytes that are readable and writable for as long as the value lives; nothing
/// else in this process reads or writes them meanwhile except through the value's adopter.
/// (Memory shared with other processes, such as a [`SharedSegment`](super::SharedSegment), may
/// change under it; ordering those accesses is the caller's business, as with any shared
/// memory.)
pub unsafe trait HostMemory: Send + Sync + 'static {
    /// Where the bytes start.
    fn as_ptr(&self) -> *mut u8;
    /// How many bytes.
    fn len(&self) -> usize;
    /// Always false: adoptable memory has at least one byte.
    fn is_empty(&self) -> bool {
        false
    }
}

// SAFETY: a region owns `len` zeroed bytes at an aligned address until it drops.
unsafe impl HostMemory for super::HostRegion {
    fn as_ptr(&self) -> *mut u8 {
        super::HostRegion::as_ptr(self)
    }
    fn len(&self) -> usize {
        super::HostRegion::len(self)
    }
}
