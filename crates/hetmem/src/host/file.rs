//! [`MappedFile`]: a file mapped into memory as a buffer's host copy — zero-copy on the host,
//! uploads straight from the page cache.
//!
//! The mapping covers exactly the file's length when it is opened, so no access through hetmem
//! reaches past its end (where a mapping would raise `SIGBUS`). Another process that shortens
//! the file while it is mapped can still cause one; hetmem cannot prevent that (regular files
//! have no seals), so keep mapped files to yourself while they are open.

use std::ffi::c_void;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use rustix::mm::{mmap, msync, munmap, MapFlags, MsyncFlags, ProtFlags};

use super::HostMemory;
use crate::error::{Error, Result};

/// How a file is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAccess {
    /// Reads come from the file; writes stay in this process (a private, copy-on-write
    /// mapping) and never reach the file.
    ReadOnly,
    /// Reads and writes go to the file (a shared mapping); [`MappedFile::flush`] makes them
    /// durable.
    ReadWrite,
}

/// A whole file mapped into memory.
#[derive(Debug)]
pub struct MappedFile {
    path: PathBuf,
    ptr: NonNull<u8>,
    len: usize,
    access: FileAccess,
}

// SAFETY: the mapping is owned by this value; access to the bytes is through `HostMemory`'s
// contract.
unsafe impl Send for MappedFile {}
// SAFETY: see `Send`.
unsafe impl Sync for MappedFile {}

impl MappedFile {
    /// Maps the existing file at `path`. An empty file is [`Error::ZeroLength`]; a missing or
    /// unreadable one the OS error.
    pub fn open(path: impl AsRef<Path>, access: FileAccess) -> Result<Self> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(access == FileAccess::ReadWrite)
            .open(path)
            .map_err(|e| io(path, e))?;
        Self::map(path, &file, access)
    }

    /// Creates (or truncates) the file at `path` with `len` zero bytes and maps it for reading
    /// and writing.
    pub fn create(path: impl AsRef<Path>, len: usize) -> Result<Self> {
        let path = path.as_ref();
        if len == 0 {
            return Err(Error::ZeroLength {
                what: "mapped file",
            });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| io(path, e))?;
        file.set_len(len as u64).map_err(|e| io(path, e))?;
        Self::map(path, &file, FileAccess::ReadWrite)
    }

    fn map(path: &Path, file: &File, access: FileAccess) -> Result<Self> {
        let size = file.metadata().map_err(|e| io(path, e))?.len();
        let len = usize::try_from(size).map_err(|_| Error::SizeOverflow {
            what: "mapped file length",
        })?;
        if len == 0 {
            return Err(Error::ZeroLength {
                what: "mapped file",
            });
        }
        let flags = match access {
            FileAccess::ReadOnly => MapFlags::PRIVATE,
            FileAccess::ReadWrite => MapFlags::SHARED,
        };
        let prot = ProtFlags::READ | ProtFlags::WRITE;
        // SAFETY: a new mapping of exactly the file's length at an address the kernel chooses.
        let ptr = unsafe { mmap(std::ptr::null_mut(), len, prot, flags, file, 0) }
            .map_err(|e| io(path, e.into()))?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(Error::SizeOverflow {
            what: "mapped file address",
        })?;
        Ok(MappedFile {
            path: path.to_owned(),
            ptr,
            len,
            access,
        })
    }

    /// Writes changed pages back to the file and waits for the disk (`msync`); nothing to do
    /// for a read-only mapping.
    pub fn flush(&self) -> Result<()> {
        if self.access == FileAccess::ReadOnly {
            return Ok(());
        }
        // SAFETY: the range is this value's live mapping.
        unsafe {
            msync(
                self.ptr.as_ptr().cast::<c_void>(),
                self.len,
                MsyncFlags::SYNC,
            )
        }
        .map_err(|e| io(&self.path, e.into()))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How it is mapped.
    pub fn access(&self) -> FileAccess {
        self.access
    }
}

// SAFETY: the mapping covers `len` bytes of the file (read and write: private copy-on-write for
// read-only files), live until drop.
unsafe impl HostMemory for MappedFile {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    fn len(&self) -> usize {
        self.len
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: the mapping is this value's; nothing uses it after drop. Shared pages are in
        // the page cache already: the file sees them without an msync.
        let _ = unsafe { munmap(self.ptr.as_ptr().cast::<c_void>(), self.len) };
    }
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Os(std::io::Error::new(
        e.kind(),
        format!("{}: {e}", path.display()),
    ))
}
