//! The host backend's memory: zeroed, aligned allocations for blocks and staging, the repeating
//! fill, and how much physical memory the machine has.

use std::alloc::{self, Layout};
use std::any::Any;
use std::ptr::NonNull;

use super::super::{BackendKind, StagingMemory};
use super::HOST_ALIGNMENT;
use crate::error::{Error, Result};

pub(super) fn layout(bytes: usize) -> Result<Layout> {
    Layout::from_size_align(bytes, HOST_ALIGNMENT).map_err(|_| Error::SizeOverflow {
        what: "host allocation size",
    })
}

/// Fills `bytes` (a whole number of patterns long) with `pattern` repeated: memset for one byte,
/// otherwise by doubling the filled prefix, so that the work is a few large copies rather than
/// one small copy per pattern (measured: one call per byte made zeroing 64 KiB cost 50 µs).
pub(super) fn fill_repeating(bytes: &mut [u8], pattern: &[u8]) {
    if let [byte] = pattern {
        bytes.fill(*byte);
        return;
    }
    let Some(first) = bytes.get_mut(..pattern.len()) else {
        return;
    };
    first.copy_from_slice(pattern);
    let mut filled = pattern.len();
    while filled < bytes.len() {
        let n = filled.min(bytes.len() - filled);
        bytes.copy_within(..n, filled);
        filled += n;
    }
}

/// Zeroed, aligned host memory, or `OutOfMemory`. Zeroed so that reading a fresh block never
/// exposes uninitialised bytes (and costs nothing for large blocks, which come from fresh pages).
pub(super) fn alloc_zeroed(bytes: usize) -> Result<(NonNull<u8>, Layout)> {
    let layout = layout(bytes)?;
    // SAFETY: `bytes > 0` (checked by every caller), so the layout has a non-zero size.
    let ptr = unsafe { alloc::alloc_zeroed(layout) };
    NonNull::new(ptr)
        .map(|p| (p, layout))
        .ok_or(Error::OutOfMemory {
            backend: BackendKind::Host,
            requested: bytes as u64,
            diagnosis: None,
        })
}

/// Host staging memory: the same aligned allocation as a block.
pub(super) struct HostStaging {
    pub(super) ptr: NonNull<u8>,
    pub(super) layout: Layout,
}

// SAFETY: HostStaging owns its allocation exclusively; access to the bytes is governed by the
// StagingBuffer that wraps it.
unsafe impl Send for HostStaging {}
// SAFETY: see `Send`.
unsafe impl Sync for HostStaging {}

// SAFETY: the pointer is a live, zero-initialised allocation of `layout.size()` bytes, freed only
// in Drop.
unsafe impl StagingMemory for HostStaging {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    fn len(&self) -> usize {
        self.layout.size()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Drop for HostStaging {
    fn drop(&mut self) {
        // SAFETY: allocated by `alloc_zeroed` with this very layout, freed once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

pub(in crate::backend) struct HostMemory {
    pub(in crate::backend) total: u64,
    pub(in crate::backend) available: Option<u64>,
}

/// Physical memory of this machine, from `/proc/meminfo` on Linux.
pub(in crate::backend) fn host_memory() -> HostMemory {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> Option<u64> {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
    };
    HostMemory {
        total: field("MemTotal:").unwrap_or(isize::MAX as u64),
        available: field("MemAvailable:"),
    }
}
