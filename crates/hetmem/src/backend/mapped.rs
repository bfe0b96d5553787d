//! Mapped access and shared allocations, checked once for every device: what
//! [`Backend::map`], [`Backend::unmap`], [`Backend::write_mapped`], [`Backend::read_mapped`],
//! [`Backend::allocate_shared`] and [`Backend::migrate`] do over a [`RawBackend`]. Blocks the
//! host addresses (host memory, shared allocations) are reached in place, without a driver
//! call; other blocks through the device's own map and unmap.

use std::ptr::NonNull;

use super::checked::{check_allocation, check_block, check_owner};
use super::raw::RawBackend;
use super::{Backend, DeviceBlock, MapMode, MigrateTo, Queue};
use crate::error::{Error, Result};

/// [`Backend::map`].
pub(super) fn map<R: RawBackend>(
    raw: &R,
    queue: &Queue,
    block: &DeviceBlock,
    offset: usize,
    len: usize,
    mode: MapMode,
) -> Result<*mut u8> {
    check_owner("queue", RawBackend::id(raw), queue.backend())?;
    check_block(RawBackend::id(raw), "mapped block", block, offset, len)?;
    if len == 0 {
        return Err(Error::ZeroLength { what: "mapping" });
    }
    if let Some(ptr) = Backend::host_ptr(raw, block) {
        return Ok(ptr.wrapping_add(offset));
    }
    if !RawBackend::maps(raw, block) {
        return Err(unsupported(raw, "map this block into the host"));
    }
    // SAFETY: queue and block are this backend's and the range lies inside (checked).
    unsafe { RawBackend::map(raw, queue, block, offset, len, mode) }
}

/// [`Backend::unmap`].
pub(super) fn unmap<R: RawBackend>(
    raw: &R,
    queue: &Queue,
    block: &DeviceBlock,
    ptr: *mut u8,
) -> Result<()> {
    check_owner("queue", RawBackend::id(raw), queue.backend())?;
    check_owner("mapped block", RawBackend::id(raw), block.backend())?;
    if Backend::host_ptr(raw, block).is_some() {
        return Ok(());
    }
    if !RawBackend::maps(raw, block) {
        return Err(unsupported(raw, "map this block into the host"));
    }
    // SAFETY: queue and block are this backend's; the device checks that `ptr` is a live
    // mapping of the block (a mapping is only made by `map` above).
    unsafe { RawBackend::unmap(raw, queue, block, ptr) }
}

/// [`Backend::write_mapped`].
pub(super) fn write_mapped<R: RawBackend>(
    raw: &R,
    queue: &Queue,
    dst: &mut DeviceBlock,
    offset: usize,
    len: usize,
    access: &mut dyn FnMut(&mut [u8]),
) -> Result<bool> {
    check_owner("queue", RawBackend::id(raw), queue.backend())?;
    check_block(
        RawBackend::id(raw),
        "mapped write destination",
        dst,
        offset,
        len,
    )?;
    if let Some(bytes) = Backend::host_bytes_mut(raw, dst) {
        access(&mut bytes[offset..offset + len]);
        return Ok(true);
    }
    if !RawBackend::maps(raw, dst) {
        return Ok(false);
    }
    // The buffers' map guards' mapping: unmapped on drop, so a panicking access still unmaps.
    let mut mapping = MappingMut::write(raw, queue, dst, offset, len, true)?;
    access(mapping.bytes_mut());
    mapping.unmap().map(|()| true)
}

/// [`Backend::read_mapped`].
pub(super) fn read_mapped<R: RawBackend>(
    raw: &R,
    queue: &Queue,
    src: &DeviceBlock,
    offset: usize,
    len: usize,
    access: &mut dyn FnMut(&[u8]),
) -> Result<bool> {
    check_owner("queue", RawBackend::id(raw), queue.backend())?;
    check_block(RawBackend::id(raw), "mapped read source", src, offset, len)?;
    if let Some(bytes) = Backend::host_bytes(raw, src) {
        access(&bytes[offset..offset + len]);
        return Ok(true);
    }
    if !RawBackend::maps(raw, src) {
        return Ok(false);
    }
    let mapping = Mapping::read(raw, queue, src, offset, len)?;
    access(mapping.bytes());
    mapping.unmap().map(|()| true)
}

/// [`Backend::allocate_shared`].
pub(super) fn allocate_shared<R: RawBackend>(raw: &R, bytes: usize) -> Result<DeviceBlock> {
    check_allocation(bytes, RawBackend::max_allocation(raw))?;
    if !RawBackend::capabilities(raw).shared_allocations {
        return Err(unsupported(raw, "allocate memory shared with the host"));
    }
    let counters = RawBackend::usage_counters(raw);
    if !counters.try_allocate(bytes) {
        return Err(Error::OutOfMemory {
            backend: RawBackend::kind(raw),
            requested: bytes as u64,
            diagnosis: None,
        });
    }
    RawBackend::allocate_shared(raw, bytes).inspect_err(|_| counters.undo_allocate(bytes))
}

/// [`Backend::migrate`].
pub(super) fn migrate<R: RawBackend>(
    raw: &R,
    queue: &Queue,
    block: &DeviceBlock,
    to: MigrateTo,
) -> Result<()> {
    check_owner("queue", RawBackend::id(raw), queue.backend())?;
    check_owner("shared block", RawBackend::id(raw), block.backend())?;
    if block.shared_address().is_none() {
        return Err(Error::invalid(
            "only a shared allocation (Backend::allocate_shared) migrates",
        ));
    }
    // SAFETY: queue and block are this backend's, and the block is a shared allocation.
    unsafe { RawBackend::migrate(raw, queue, block, to) }
}

fn unsupported<R: RawBackend>(raw: &R, what: &'static str) -> Error {
    Error::Unsupported {
        backend: RawBackend::kind(raw),
        what,
    }
}

/// A live mapping of a block's bytes for reading ([`Backend::map`]), unmapped when dropped:
/// what a buffer's map guard holds. It borrows the block, so the block outlives it.
pub(crate) struct Mapping<'a> {
    backend: &'a dyn Backend,
    queue: &'a Queue,
    block: &'a DeviceBlock,
    /// `None` for an empty range, which maps nothing.
    ptr: Option<NonNull<u8>>,
    len: usize,
}

impl<'a> Mapping<'a> {
    /// Maps `len` bytes at `offset` of `block` for reading, after the work enqueued on `queue`.
    pub(crate) fn read(
        backend: &'a dyn Backend,
        queue: &'a Queue,
        block: &'a DeviceBlock,
        offset: usize,
        len: usize,
    ) -> Result<Self> {
        Self::new(backend, queue, block, offset, len, MapMode::Read)
    }

    fn new(
        backend: &'a dyn Backend,
        queue: &'a Queue,
        block: &'a DeviceBlock,
        offset: usize,
        len: usize,
        mode: MapMode,
    ) -> Result<Self> {
        let ptr = match len {
            0 => None,
            _ => {
                let ptr = backend.map(queue, block, offset, len, mode)?;
                let ptr = NonNull::new(ptr);
                if ptr.is_none() {
                    return Err(Error::invalid("the device mapped a null pointer"));
                }
                ptr
            }
        };
        Ok(Mapping {
            backend,
            queue,
            block,
            ptr,
            len,
        })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match self.ptr {
            // SAFETY: `map` returned `len` host-accessible, initialised bytes that stay mapped
            // (and the block allocated: it is borrowed) until this value unmaps them.
            Some(ptr) => unsafe { std::slice::from_raw_parts(ptr.as_ptr(), self.len) },
            None => &[],
        }
    }

    /// Unmaps and reports how it went (dropping unmaps too, ignoring a failure).
    pub(crate) fn unmap(mut self) -> Result<()> {
        self.end()
    }

    fn end(&mut self) -> Result<()> {
        match self.ptr.take() {
            Some(ptr) => self.backend.unmap(self.queue, self.block, ptr.as_ptr()),
            None => Ok(()),
        }
    }
}

impl Drop for Mapping<'_> {
    fn drop(&mut self) {
        let _ = self.end();
    }
}

/// A live mapping of a block's bytes for writing: the block is borrowed exclusively, so no
/// other access to it can exist meanwhile.
pub(crate) struct MappingMut<'a>(Mapping<'a>);

impl<'a> MappingMut<'a> {
    /// Maps `len` bytes at `offset` of `block` for reading and writing, or with `discard` for
    /// overwriting (the device's bytes are not fetched), after the work enqueued on `queue`.
    pub(crate) fn write(
        backend: &'a dyn Backend,
        queue: &'a Queue,
        block: &'a mut DeviceBlock,
        offset: usize,
        len: usize,
        discard: bool,
    ) -> Result<Self> {
        let mode = if discard {
            MapMode::WriteDiscard
        } else {
            MapMode::Write
        };
        Mapping::new(backend, queue, block, offset, len, mode).map(MappingMut)
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.bytes()
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        match self.0.ptr {
            // SAFETY: as in `Mapping::bytes`; the block was borrowed exclusively for this
            // mapping's life, and this `&mut self` is the only way to the bytes.
            Some(ptr) => unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr(), self.0.len) },
            None => &mut [],
        }
    }

    /// Unmaps and reports how it went: the device then holds what was written.
    pub(crate) fn unmap(self) -> Result<()> {
        self.0.unmap()
    }
}
