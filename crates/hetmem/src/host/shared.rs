//! [`SharedSegment`]: a named POSIX shared-memory segment holding elements of one type, made by
//! one process and opened by name from others, usable as a buffer's host copy.
//!
//! A 64-byte header before the elements names their type (size, alignment, a hash of the type's
//! name) and count, so that opening with the wrong `T`, a segment still being made, or one cut
//! short is a typed error. Segments are created with mode 0600 (only this user) and live until
//! [`SharedSegment::unlink`], as POSIX shared memory does: a segment whose creator died stays in
//! `/dev/shm`, and opens normally if the creator had finished making it (its header is written
//! before `create` returns) — or fails with "not finished" if it died inside `create`; either way
//! `unlink` removes it.

use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{fstat, ftruncate, Mode};
use rustix::io::Errno;
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
use rustix::shm;

use super::HostMemory;
use crate::element::{byte_len, Element};
use crate::error::{Error, Result};

/// Bytes before the elements; a multiple of every element alignment hetmem accepts.
const HEADER: usize = 64;
const MAGIC: [u8; 8] = *b"HETMEMSH";
const VERSION: u32 = 1;
/// Longest name accepted (the kernel's limit is 255 bytes with the leading `/`).
pub const MAX_NAME: usize = 200;

/// The header at the start of every segment.
#[repr(C)]
struct Header {
    magic: [u8; 8],
    version: u32,
    element_size: u32,
    element_align: u32,
    _pad: u32,
    elements: u64,
    type_hash: u64,
    /// 1 once the creator has written everything above (stored last, with release ordering).
    ready: AtomicU64,
}

/// A named shared-memory segment mapped into this process: the elements, zero-copy.
#[derive(Debug)]
pub struct SharedSegment {
    name: String,
    base: NonNull<u8>,
    mapped: usize,
    elements: usize,
    element_size: usize,
}

// SAFETY: the mapping is owned by this value; access to the bytes is through `HostMemory`'s
// contract (shared with other processes by design).
unsafe impl Send for SharedSegment {}
// SAFETY: see `Send`.
unsafe impl Sync for SharedSegment {}

impl SharedSegment {
    /// Creates the segment `name` holding `len` zeroed `T`s, readable and writable by this user
    /// only. A name in use is an error (`AlreadyExists`): open it, or unlink it first.
    pub fn create<T: Element>(name: &str, len: usize) -> Result<Self> {
        let path = path(name)?;
        if len == 0 {
            return Err(Error::ZeroLength {
                what: "shared segment",
            });
        }
        let bytes = byte_len::<T>(len)?;
        let mapped = bytes.checked_add(HEADER).ok_or(Error::SizeOverflow {
            what: "shared segment size",
        })?;
        let flags = shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR;
        let fd = shm::open(&path, flags, Mode::RUSR | Mode::WUSR).map_err(|e| os(name, e))?;
        let made = ftruncate(&fd, mapped as u64).and_then(|()| map(&fd, mapped));
        let base = match made {
            Ok(base) => base,
            Err(e) => {
                let _ = shm::unlink(&path);
                return Err(os(name, e));
            }
        };
        let segment = SharedSegment {
            name: name.to_owned(),
            base,
            mapped,
            elements: len,
            element_size: std::mem::size_of::<T>(),
        };
        let header = segment.header();
        // SAFETY: the fresh mapping is `mapped >= HEADER` zeroed bytes, page-aligned, ours
        // alone until `ready` is set; these writes are the header's plain fields.
        unsafe {
            let h = header.cast_mut();
            (*h).magic = MAGIC;
            (*h).version = VERSION;
            (*h).element_size = std::mem::size_of::<T>() as u32;
            (*h).element_align = std::mem::align_of::<T>() as u32;
            (*h).elements = len as u64;
            (*h).type_hash = type_hash::<T>();
        }
        // SAFETY: as above; `ready` is an atomic other processes read with acquire ordering.
        unsafe { &(*header).ready }.store(1, Ordering::Release);
        Ok(segment)
    }

    /// Opens the segment `name`, made by [`SharedSegment::create`] with the same `T` (in this
    /// process or another). A segment of another type, one still being made, or one shorter
    /// than its header says is [`Error::IncompatibleCast`]; a missing one `NotFound`.
    pub fn open<T: Element>(name: &str) -> Result<Self> {
        let path = path(name)?;
        let fd = shm::open(&path, shm::OFlags::RDWR, Mode::empty()).map_err(|e| os(name, e))?;
        let size = fstat(&fd).map_err(|e| os(name, e))?.st_size.max(0) as usize;
        let misfit = |bytes, reason| Error::IncompatibleCast {
            to: std::any::type_name::<T>(),
            size: std::mem::size_of::<T>(),
            align: std::mem::align_of::<T>(),
            bytes,
            offset: HEADER,
            reason,
        };
        if size < HEADER {
            return Err(misfit(size, "the segment is shorter than its header"));
        }
        let base = map(&fd, size).map_err(|e| os(name, e))?;
        let mut segment = SharedSegment {
            name: name.to_owned(),
            base,
            mapped: size,
            elements: 0,
            element_size: std::mem::size_of::<T>(),
        };
        // SAFETY: the mapping holds at least `HEADER` bytes; the header is read only after
        // `ready` (acquire) says its writer is done.
        let header = unsafe { &*segment.header() };
        let data = size - HEADER;
        if header.magic != MAGIC || header.ready.load(Ordering::Acquire) != 1 {
            return Err(misfit(
                data,
                "the segment was not made by hetmem, or not finished",
            ));
        }
        if header.version != VERSION
            || header.element_size as usize != std::mem::size_of::<T>()
            || header.element_align as usize != std::mem::align_of::<T>()
            || header.type_hash != type_hash::<T>()
        {
            return Err(misfit(data, "the segment holds elements of another type"));
        }
        let elements = usize::try_from(header.elements).unwrap_or(usize::MAX);
        if byte_len::<T>(elements).map_or(true, |bytes| bytes > data) {
            return Err(misfit(data, "the segment is shorter than its header says"));
        }
        segment.elements = elements;
        Ok(segment)
    }

    /// Removes the segment `name` from the system: processes that have it mapped keep it until
    /// they drop it; opening it by name fails from now on.
    pub fn unlink(name: &str) -> Result<()> {
        shm::unlink(path(name)?).map_err(|e| os(name, e))
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many elements it holds.
    pub fn elements(&self) -> usize {
        self.elements
    }

    fn header(&self) -> *const Header {
        self.base.as_ptr().cast::<Header>()
    }
}

// SAFETY: `len()` bytes after the header lie inside the mapping, which lives until drop.
unsafe impl HostMemory for SharedSegment {
    fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr().wrapping_add(HEADER)
    }
    fn len(&self) -> usize {
        self.elements * self.element_size
    }
}

impl Drop for SharedSegment {
    fn drop(&mut self) {
        // SAFETY: the mapping is this value's; nothing uses it after drop.
        let _ = unsafe { munmap(self.base.as_ptr().cast::<c_void>(), self.mapped) };
    }
}

/// The POSIX name of segment `name`, or a typed error: 1 to [`MAX_NAME`] bytes of ASCII
/// letters, digits, `.`, `_` and `-`, not `.` or `..`.
fn path(name: &str) -> Result<String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty()
        || name.len() > MAX_NAME
        || name == "."
        || name == ".."
        || !name.chars().all(ok_char)
    {
        return Err(Error::invalid(format!(
            "shared segment name {name:?}: use 1 to {MAX_NAME} ASCII letters, digits, '.', '_' \
             or '-' (not \".\" or \"..\")"
        )));
    }
    Ok(format!("/{name}"))
}

fn map(fd: &rustix::fd::OwnedFd, len: usize) -> std::result::Result<NonNull<u8>, Errno> {
    let prot = ProtFlags::READ | ProtFlags::WRITE;
    // SAFETY: a new shared mapping of the segment at an address the kernel chooses.
    let ptr = unsafe { mmap(std::ptr::null_mut(), len, prot, MapFlags::SHARED, fd, 0) }?;
    NonNull::new(ptr.cast::<u8>()).ok_or(Errno::NOMEM)
}

/// An OS failure on segment `name`, keeping its kind (`NotFound`, `AlreadyExists`, …).
fn os(name: &str, e: Errno) -> Error {
    let e = std::io::Error::from(e);
    Error::Os(std::io::Error::new(
        e.kind(),
        format!("shared segment {name:?}: {e}"),
    ))
}

/// FNV-1a of the element type's name: the same in every process of one program.
fn type_hash<T>() -> u64 {
    std::any::type_name::<T>()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}
