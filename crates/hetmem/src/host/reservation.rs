//! [`AddressReservation`]: address space reserved up front and backed piece by piece — the host
//! side of expandable segments ([`Backend::reserve`](crate::backend::Backend::reserve)).

use std::ptr::NonNull;

use rustix::mm::{madvise, mmap_anonymous, munmap, Advice, MapFlags, ProtFlags};

use crate::backend::BackendKind;
use crate::error::{Error, Result};
use crate::sync::{lock, Mutex};

/// The unit host reservations commit in: 16 base pages, so that a growing segment makes few
/// calls, small enough that a small program's footprint stays near its need.
pub const COMMIT_GRANULE: usize = 64 << 10;

/// `len` bytes of address space (a private anonymous mapping made with `MAP_NORESERVE`, so it
/// costs no memory and no overcommit charge), of which the committed granules are the bytes in
/// use. Committing is bookkeeping — pages arrive, zeroed, when first touched, as with any
/// allocation — and decommitting gives the pages back to the kernel (`MADV_DONTNEED`): the
/// resident size falls and the bytes read as zeros afterwards. The mapping stays readable and
/// writable throughout, so a stale pointer into a decommitted range reads zeros rather than
/// faulting.
pub(crate) struct AddressReservation {
    ptr: NonNull<u8>,
    len: usize,
    /// One bit per granule: committed.
    committed: Mutex<Vec<u64>>,
}

// SAFETY: the reservation owns its mapping; the bitmap is behind a mutex, and the bytes are
// accessed through blocks whose users order their accesses.
unsafe impl Send for AddressReservation {}
// SAFETY: see `Send`.
unsafe impl Sync for AddressReservation {}

impl AddressReservation {
    /// Reserves `len` bytes (a multiple of [`COMMIT_GRANULE`], checked by the caller).
    pub(crate) fn new(len: usize) -> Result<Self> {
        let prot = ProtFlags::READ | ProtFlags::WRITE;
        let flags = MapFlags::PRIVATE | MapFlags::NORESERVE;
        // SAFETY: a new private anonymous mapping at an address the kernel chooses; it aliases
        // nothing.
        let mapping = unsafe { mmap_anonymous(std::ptr::null_mut(), len, prot, flags) };
        let ptr = mapping.ok().and_then(|p| NonNull::new(p.cast::<u8>()));
        let ptr = ptr.ok_or(Error::OutOfMemory {
            backend: BackendKind::Host,
            requested: len as u64,
            diagnosis: None,
        })?;
        let granules = len / COMMIT_GRANULE;
        Ok(AddressReservation {
            ptr,
            len,
            committed: Mutex::new(vec![0; granules.div_ceil(64)]),
        })
    }

    /// Where the reservation starts.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Marks the granules of `offset..offset + len` committed (in bounds and granular,
    /// checked by the caller); the bytes that were not before.
    pub(crate) fn commit(&self, offset: usize, len: usize) -> usize {
        let mut bits = lock(&self.committed);
        let mut new = 0;
        for g in granules(offset, len) {
            if !test_and_set(&mut bits, g, true) {
                new += COMMIT_GRANULE;
            }
        }
        new
    }

    /// Gives the committed granules of `offset..offset + len` back to the kernel; the bytes
    /// that were committed.
    pub(crate) fn decommit(&self, offset: usize, len: usize) -> Result<usize> {
        let mut bits = lock(&self.committed);
        let mut was = 0;
        for g in granules(offset, len) {
            if test_and_set(&mut bits, g, false) {
                was += COMMIT_GRANULE;
            }
        }
        // SAFETY: the range lies inside this reservation's private anonymous mapping (checked
        // by the caller); `MADV_DONTNEED` only replaces its pages with zero pages.
        unsafe {
            madvise(
                self.ptr.as_ptr().add(offset).cast(),
                len,
                Advice::LinuxDontNeed,
            )
        }
        .map_err(|e| Error::invalid(format!("decommit: madvise failed: {e}")))?;
        Ok(was)
    }

    /// Bytes committed.
    pub(crate) fn committed(&self) -> usize {
        let bits = lock(&self.committed);
        bits.iter().map(|w| w.count_ones() as usize).sum::<usize>() * COMMIT_GRANULE
    }
}

fn granules(offset: usize, len: usize) -> std::ops::Range<usize> {
    offset / COMMIT_GRANULE..(offset + len) / COMMIT_GRANULE
}

/// Sets bit `g` to `to`; whether it was set.
fn test_and_set(bits: &mut [u64], g: usize, to: bool) -> bool {
    let (word, bit) = (g / 64, 1u64 << (g % 64));
    let was = bits[word] & bit != 0;
    match to {
        true => bits[word] |= bit,
        false => bits[word] &= !bit,
    }
    was
}

impl Drop for AddressReservation {
    fn drop(&mut self) {
        // SAFETY: the mapping `ptr..ptr + len` is this reservation's alone, unmapped once.
        // Nothing to report a failure to from a drop.
        let _ = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_count_once_and_decommitted_bytes_read_zero() {
        let r = AddressReservation::new(16 * COMMIT_GRANULE).unwrap();
        assert_eq!(r.commit(0, 2 * COMMIT_GRANULE), 2 * COMMIT_GRANULE);
        assert_eq!(r.commit(COMMIT_GRANULE, 2 * COMMIT_GRANULE), COMMIT_GRANULE);
        assert_eq!(r.committed(), 3 * COMMIT_GRANULE);
        // SAFETY: the first three granules are committed and nothing else uses them.
        let bytes = unsafe { std::slice::from_raw_parts_mut(r.as_ptr(), 3 * COMMIT_GRANULE) };
        bytes.fill(7);
        assert_eq!(
            r.decommit(COMMIT_GRANULE, 4 * COMMIT_GRANULE).unwrap(),
            2 * COMMIT_GRANULE
        );
        assert!(bytes[..COMMIT_GRANULE].iter().all(|&b| b == 7), "kept");
        assert!(
            bytes[COMMIT_GRANULE..].iter().all(|&b| b == 0),
            "given back"
        );
        assert_eq!(r.committed(), COMMIT_GRANULE);
    }
}
