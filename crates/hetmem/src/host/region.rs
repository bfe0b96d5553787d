//! [`HostRegion`]: one zeroed allocation of host memory made as a [`HostSource`] says, freed on
//! drop. The heap serves plain sources; everything else is an anonymous mapping of its own,
//! over-sized and trimmed to the alignment, advised, bound and locked before it is handed out.

use std::alloc::{self, Layout};
use std::ffi::c_void;
use std::ptr::NonNull;

use rustix::io::Errno;
use rustix::mm::{madvise, mlock, mmap_anonymous, munmap, Advice, MapFlags, ProtFlags};

use super::source::{Granted, HostSource, Numa, Pages, HUGE_PAGE};
use super::system::{memlock_limit, numa_nodes, reserved_huge_pages, thp_mode};
use crate::backend::BackendKind;
use crate::error::{Error, Result};

/// One allocation of host memory from a [`HostSource`]: `len` zeroed bytes at an address
/// aligned as asked, valid until the region drops.
#[derive(Debug)]
pub struct HostRegion {
    ptr: NonNull<u8>,
    len: usize,
    /// How to give it back: a heap layout, or the mapping's length (`ptr` is its start).
    memory: Memory,
    granted: Granted,
}

#[derive(Debug)]
enum Memory {
    Heap(Layout),
    Mapped(usize),
}

// SAFETY: the region owns its memory exclusively; it hands out bytes only through `&self` /
// `&mut self` borrows or raw pointers whose users take on the aliasing rules.
unsafe impl Send for HostRegion {}
// SAFETY: see `Send`; `&HostRegion` reads only.
unsafe impl Sync for HostRegion {}

impl HostRegion {
    /// `len` zeroed bytes made as `source` says. Typed errors: zero length, a bad alignment, a
    /// node that is not online, sizes that overflow, memory the system cannot give, and a
    /// locked-memory limit that is too low ([`Error::MemoryLockLimit`]).
    pub fn allocate(source: &HostSource, len: usize) -> Result<HostRegion> {
        source.check()?;
        if len == 0 {
            return Err(Error::ZeroLength {
                what: "host allocation",
            });
        }
        let page = rustix::param::page_size();
        if source.is_heap(page) {
            return heap(source, len);
        }
        if let Numa::Bind(node) | Numa::Prefer(node) = source.numa {
            let online = numa_nodes();
            if !online.contains(&node) {
                return Err(Error::invalid(format!(
                    "NUMA node {node} is not online (online: {online:?})"
                )));
            }
        }
        let mut region = mapped(source, len, page)?;
        if let Numa::Bind(node) | Numa::Prefer(node) = source.numa {
            let mode = match source.numa {
                Numa::Bind(_) => libc::MPOL_BIND,
                _ => libc::MPOL_PREFERRED,
            };
            bind(region.ptr, region.mapped_len(), mode, node)?;
            region.granted.node = Some(node);
        }
        if source.locked {
            // SAFETY: the range is the region's own live mapping.
            unsafe { mlock(region.ptr.as_ptr().cast(), region.mapped_len()) }
                .map_err(|e| lock_error(e, region.mapped_len() as u64))?;
            region.granted.locked = true;
        }
        Ok(region)
    }

    /// Where the bytes start.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// How many bytes were asked for (the mapping may be longer, to a page boundary).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a region has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// What the system granted: the pages, any fallback and why, the node, the lock.
    pub fn granted(&self) -> &Granted {
        &self.granted
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` zeroed-then-written bytes live as long as `self`; `&self` excludes writers.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, for writing.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as `as_slice`; `&mut self` makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    fn mapped_len(&self) -> usize {
        match self.memory {
            Memory::Heap(layout) => layout.size(),
            Memory::Mapped(len) => len,
        }
    }
}

impl Drop for HostRegion {
    fn drop(&mut self) {
        match self.memory {
            // SAFETY: allocated by `heap` with this layout, freed once.
            Memory::Heap(layout) => unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) },
            Memory::Mapped(len) => {
                // SAFETY: the mapping `ptr..ptr + len` is this region's alone; unmapping also
                // unlocks it. Nothing to report a failure to from a drop.
                let _ = unsafe { munmap(self.ptr.as_ptr().cast(), len) };
            }
        }
    }
}

fn out_of_memory(bytes: usize) -> Error {
    Error::OutOfMemory {
        backend: BackendKind::Host,
        requested: bytes as u64,
        diagnosis: None,
    }
}

fn heap(source: &HostSource, len: usize) -> Result<HostRegion> {
    let layout =
        Layout::from_size_align(len, source.alignment).map_err(|_| Error::SizeOverflow {
            what: "host allocation size",
        })?;
    // SAFETY: `len > 0` (checked), so the layout has a non-zero size.
    let ptr = NonNull::new(unsafe { alloc::alloc_zeroed(layout) }).ok_or(out_of_memory(len))?;
    Ok(HostRegion {
        ptr,
        len,
        memory: Memory::Heap(layout),
        granted: granted(Pages::Base, None),
    })
}

fn granted(pages: Pages, fallback: Option<String>) -> Granted {
    Granted {
        pages,
        fallback,
        node: None,
        locked: false,
    }
}

/// A mapping for `source`, trying its pages and falling back: explicit huge pages, then
/// transparent ones, then base pages, each fallback with its reason.
fn mapped(source: &HostSource, len: usize, page: usize) -> Result<HostRegion> {
    let mut fallback = None;
    if source.pages == Pages::Huge {
        let flags = MapFlags::HUGETLB | MapFlags::HUGE_2MB;
        match map_aligned(
            len,
            source.alignment.max(HUGE_PAGE),
            HUGE_PAGE,
            HUGE_PAGE,
            flags,
        ) {
            Ok((ptr, mapped)) => return Ok(region(ptr, len, mapped, granted(Pages::Huge, None))),
            Err(e) => {
                fallback = Some(format!(
                    "explicit huge pages refused ({e}; vm.nr_hugepages = {})",
                    reserved_huge_pages()
                ))
            }
        }
    }
    if source.pages != Pages::Base {
        let mode = thp_mode();
        if matches!(mode.as_deref(), Some("always" | "madvise")) {
            let align = source.alignment.max(HUGE_PAGE);
            let (ptr, mapped) = map_aligned(len, align, HUGE_PAGE, page, MapFlags::empty())
                .map_err(|_| out_of_memory(len))?;
            // SAFETY: the range is the mapping just made.
            let advised = unsafe { madvise(ptr.as_ptr().cast(), mapped, Advice::LinuxHugepage) };
            if advised.is_ok() {
                return Ok(region(
                    ptr,
                    len,
                    mapped,
                    granted(Pages::Transparent, fallback),
                ));
            }
            // SAFETY: the mapping just made, not handed out.
            let _ = unsafe { munmap(ptr.as_ptr().cast(), mapped) };
        }
        let why = format!(
            "transparent huge pages unavailable (mode {})",
            mode.as_deref().unwrap_or("absent")
        );
        fallback = Some(match fallback {
            Some(first) => format!("{first}; {why}"),
            None => why,
        });
    }
    let (ptr, mapped) = map_aligned(
        len,
        source.alignment.max(page),
        page,
        page,
        MapFlags::empty(),
    )
    .map_err(|_| out_of_memory(len))?;
    Ok(region(ptr, len, mapped, granted(Pages::Base, fallback)))
}

fn region(ptr: NonNull<u8>, len: usize, mapped: usize, granted: Granted) -> HostRegion {
    HostRegion {
        ptr,
        len,
        memory: Memory::Mapped(mapped),
        granted,
    }
}

/// A private anonymous mapping of `len` bytes rounded up to `granule`, starting at a multiple
/// of `align`: mapped `align - base` bytes longer (the kernel places mappings at multiples of
/// `base`: a page, or a huge page for `MAP_HUGETLB`), then trimmed.
fn map_aligned(
    len: usize,
    align: usize,
    granule: usize,
    base: usize,
    flags: MapFlags,
) -> std::result::Result<(NonNull<u8>, usize), Errno> {
    let size = len.checked_next_multiple_of(granule).ok_or(Errno::NOMEM)?;
    let extra = align - base;
    let total = size.checked_add(extra).ok_or(Errno::NOMEM)?;
    let prot = ProtFlags::READ | ProtFlags::WRITE;
    // SAFETY: a new private anonymous mapping at an address the kernel chooses; it aliases nothing.
    let mapping =
        unsafe { mmap_anonymous(std::ptr::null_mut(), total, prot, flags | MapFlags::PRIVATE) }?
            .cast::<u8>();
    let start = (mapping as usize).next_multiple_of(align);
    let head = start - mapping as usize;
    let tail = extra - head;
    // SAFETY: head and tail are the parts of the mapping just made outside `start..start +
    // size`, each a whole number of `base` units (the mapping, `align` and `size` are).
    unsafe {
        if head > 0 {
            munmap(mapping.cast::<c_void>(), head)?;
        }
        if tail > 0 {
            munmap((start + size) as *mut c_void, tail)?;
        }
    }
    let start = NonNull::new(start as *mut u8).ok_or(Errno::NOMEM)?;
    Ok((start, size))
}

/// Binds or prefers the pages of `len` bytes at `ptr` to `node`, before they are touched.
fn bind(ptr: NonNull<u8>, len: usize, mode: i32, node: usize) -> Result<()> {
    const BITS: usize = libc::c_ulong::BITS as usize;
    let mut mask = vec![0 as libc::c_ulong; node / BITS + 1];
    mask[node / BITS] |= 1 << (node % BITS);
    // SAFETY: the range is a live mapping of ours; `mask` holds `mask.len() * BITS` bits, the
    // count passed as `maxnode`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            ptr.as_ptr(),
            len,
            mode,
            mask.as_ptr(),
            mask.len() * BITS,
            0u32,
        )
    };
    if rc != 0 {
        return Err(Error::Os(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// `mlock`'s refusal as the typed error: over `RLIMIT_MEMLOCK` (`ENOMEM`, or `EPERM` where
/// the limit is 0), anything else as the OS said.
fn lock_error(e: Errno, requested: u64) -> Error {
    match e {
        Errno::NOMEM | Errno::PERM | Errno::AGAIN => Error::MemoryLockLimit {
            requested,
            limit: memlock_limit(),
        },
        other => Error::Os(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The heap path (also under Miri): aligned, zeroed, writable, freed with its layout.
    #[test]
    fn heap_regions_are_aligned_zeroed_and_writable() {
        for alignment in [1, 2, 8, 64, 256, 4096] {
            let source = HostSource {
                alignment,
                ..HostSource::default()
            };
            for len in [1, 7, 100, 5000] {
                let mut region = HostRegion::allocate(&source, len).unwrap();
                assert_eq!(region.as_ptr() as usize % alignment, 0);
                assert!(region.as_slice().iter().all(|&b| b == 0));
                region.as_mut_slice().fill(0xEE);
                assert!(region.as_slice().iter().all(|&b| b == 0xEE));
                assert_eq!(region.granted().pages, Pages::Base);
            }
        }
    }
}
