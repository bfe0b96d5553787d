//! The one checked implementation of [`Backend`] over every [`RawBackend`]: argument checks,
//! usage counting (with the device's capacity), the recording of staged transfers on their
//! staging buffers, host access to host-addressable blocks and shared allocations, and peer
//! copies between host-addressable backends live here once, for every device; mapped access
//! and shared allocations in `mapped.rs`.

use std::any::Any;

use super::mapped;
use super::parts::{block_for, queue_for, Failures};
use super::raw::RawBackend;
use super::{
    Backend, BackendId, BackendUsage, Capabilities, CopyRegion, DeviceBlock, DeviceInfo, Event,
    MapMode, MigrateTo, PartFailures, Queue, ReadPart, StagingBuffer, UserEvent, WritePart,
};
use crate::error::{Error, Result};

/// Keeps [`Backend`] implemented only here.
pub trait Sealed {}

impl<R: RawBackend> Sealed for R {}

/// The queues of a scattered transfer, checked: at least one, all this backend's.
fn check_queues(backend: BackendId, queues: &[Queue]) -> Result<()> {
    queue_for(queues, 0)?;
    queues
        .iter()
        .try_for_each(|q| check_owner("queue", backend, q.backend()))
}

/// The first thing wrong with a scattered transfer, and the part it stops at: no queue or a
/// foreign one stops it at part 0, else the first part whose block or range is bad.
fn first_invalid(
    backend: BackendId,
    queues: &[Queue],
    parts: impl Iterator<Item = Result<()>>,
) -> Option<(usize, Error)> {
    if let Err(e) = check_queues(backend, queues) {
        return Some((0, e));
    }
    parts
        .enumerate()
        .find_map(|(i, part)| part.err().map(|e| (i, e)))
}

/// Runs a scattered transfer as if its parts were tried in turn: the parts before the first
/// invalid one go to the device (`run(n)` moves parts `0..n`), the invalid part fails with its
/// error, and — that error being permanent — the parts after it are abandoned.
fn in_turn_until(
    count: usize,
    invalid: Option<(usize, Error)>,
    run: impl FnOnce(usize) -> std::result::Result<(), PartFailures>,
) -> std::result::Result<(), PartFailures> {
    let Some((first_bad, error)) = invalid else {
        return run(count);
    };
    let mut failures = Failures::default();
    if first_bad > 0 {
        if let Err(f) = run(first_bad) {
            failures.add_all(f.failed, f.error);
        }
    }
    failures.add_all(first_bad..count, error);
    failures.into_result()
}

impl<R: RawBackend> Backend for R {
    fn id(&self) -> BackendId {
        RawBackend::id(self)
    }

    fn info(&self) -> DeviceInfo {
        RawBackend::info(self)
    }

    fn capabilities(&self) -> Capabilities {
        RawBackend::capabilities(self)
    }

    fn usage(&self) -> BackendUsage {
        self.usage_counters().snapshot()
    }

    fn as_any(&self) -> &dyn Any {
        RawBackend::as_any(self)
    }

    fn allocate(&self, bytes: usize) -> Result<DeviceBlock> {
        check_allocation(bytes, self.max_allocation())?;
        let counters = self.usage_counters();
        if !counters.try_allocate(bytes) {
            return Err(Error::OutOfMemory {
                backend: self.kind(),
                requested: bytes as u64,
                diagnosis: None,
            });
        }
        RawBackend::allocate(self, bytes).inspect_err(|_| counters.undo_allocate(bytes))
    }

    fn release(&self, block: DeviceBlock) -> Result<()> {
        let block = check_release(RawBackend::id(self), block)?;
        if block.is_view() {
            // Its memory is its segment's: releasing it as an allocation would free that.
            return Err(Error::ReleasedAsWrongKind {
                called: "release",
                block,
            });
        }
        if block.is_reservation() {
            return super::reservation::release(self, block);
        }
        let bytes = block.size();
        // SAFETY: the block is this backend's (checked).
        unsafe { RawBackend::release(self, block) }?;
        self.usage_counters().released(bytes);
        Ok(())
    }

    fn maps(&self, block: &DeviceBlock) -> bool {
        Backend::host_ptr(self, block).is_some()
            || (check_owner("device block", RawBackend::id(self), block.backend()).is_ok()
                && RawBackend::maps(self, block))
    }

    fn host_ptr(&self, block: &DeviceBlock) -> Option<*mut u8> {
        check_owner("device block", RawBackend::id(self), block.backend()).ok()?;
        if let Some(shared) = block.shared_address() {
            return Some(shared);
        }
        if !self.capabilities().host_addressable {
            return None;
        }
        // SAFETY: the block is this backend's (checked).
        unsafe { self.host_address(block) }.ok()
    }

    fn host_bytes<'a>(&self, block: &'a DeviceBlock) -> Option<&'a [u8]> {
        let ptr = self.host_ptr(block)?;
        // SAFETY: `host_address` points to `size()` initialised bytes that stay allocated until
        // `release`, which consumes the block and so cannot run while this borrow lives; writes
        // through the backend need `&mut DeviceBlock`, which the borrow excludes.
        Some(unsafe { std::slice::from_raw_parts(ptr, block.size()) })
    }

    fn host_bytes_mut<'a>(&self, block: &'a mut DeviceBlock) -> Option<&'a mut [u8]> {
        let ptr = self.host_ptr(block)?;
        // SAFETY: as in `host_bytes`; the exclusive borrow of the block excludes every other
        // access through safe code for the slice's lifetime.
        Some(unsafe { std::slice::from_raw_parts_mut(ptr, block.size()) })
    }

    fn write_mapped(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        offset: usize,
        len: usize,
        access: &mut dyn FnMut(&mut [u8]),
    ) -> Result<bool> {
        mapped::write_mapped(self, queue, dst, offset, len, access)
    }

    fn read_mapped(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        offset: usize,
        len: usize,
        access: &mut dyn FnMut(&[u8]),
    ) -> Result<bool> {
        mapped::read_mapped(self, queue, src, offset, len, access)
    }

    fn map(
        &self,
        queue: &Queue,
        block: &DeviceBlock,
        offset: usize,
        len: usize,
        mode: MapMode,
    ) -> Result<*mut u8> {
        mapped::map(self, queue, block, offset, len, mode)
    }

    fn unmap(&self, queue: &Queue, block: &DeviceBlock, ptr: *mut u8) -> Result<()> {
        mapped::unmap(self, queue, block, ptr)
    }

    fn allocate_shared(&self, bytes: usize) -> Result<DeviceBlock> {
        mapped::allocate_shared(self, bytes)
    }

    fn migrate(&self, queue: &Queue, block: &DeviceBlock, to: MigrateTo) -> Result<()> {
        mapped::migrate(self, queue, block, to)
    }

    fn view(&self, segment: &DeviceBlock, offset: usize, len: usize) -> Result<DeviceBlock> {
        let id = RawBackend::id(self);
        check_block(id, "view segment", segment, offset, len)?;
        if len == 0 {
            return Err(Error::ZeroLength { what: "view" });
        }
        let alignment = RawBackend::alignment(self);
        if offset % alignment != 0 {
            return Err(Error::invalid(format!(
                "a view's offset must be a multiple of the device's alignment ({alignment} \
                 bytes), got {offset}"
            )));
        }
        // SAFETY: the segment is this backend's; range and alignment are checked.
        let handle = unsafe { RawBackend::view(self, segment, offset, len) }?;
        // SAFETY: `handle` is the device's view of exactly that range.
        Ok(unsafe { segment.view(handle, offset, len) })
    }

    fn release_view(&self, view: DeviceBlock) -> Result<()> {
        let view = check_release(RawBackend::id(self), view)?;
        if !view.is_view() {
            return Err(Error::ReleasedAsWrongKind {
                called: "release_view",
                block: view,
            });
        }
        // SAFETY: the block is a view this backend made.
        unsafe { RawBackend::release_view(self, view) }
    }

    fn commit_granularity(&self) -> Option<usize> {
        RawBackend::commit_granularity(self)
    }

    fn reserve(&self, bytes: usize) -> Result<DeviceBlock> {
        super::reservation::reserve(self, bytes)
    }

    fn commit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<()> {
        super::reservation::commit(self, reservation, offset, len)
    }

    fn decommit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<()> {
        super::reservation::decommit(self, reservation, offset, len)
    }

    fn allocate_staging(&self, bytes: usize) -> Result<StagingBuffer> {
        check_allocation(bytes, self.max_allocation())?;
        RawBackend::allocate_staging(self, bytes)
    }

    fn default_queue(&self) -> &Queue {
        RawBackend::default_queue(self)
    }

    fn create_queue(&self) -> Result<Queue> {
        RawBackend::create_queue(self)
    }

    fn write(&self, queue: &Queue, dst: &mut DeviceBlock, offset: usize, src: &[u8]) -> Result<()> {
        let id = RawBackend::id(self);
        check_owner("queue", id, queue.backend())?;
        check_block(id, "write destination", dst, offset, src.len())?;
        // SAFETY: queue and block are this backend's and the range lies inside (checked).
        unsafe { RawBackend::write(self, queue, dst, offset, src) }
    }

    fn read(&self, queue: &Queue, src: &DeviceBlock, offset: usize, dst: &mut [u8]) -> Result<()> {
        let id = RawBackend::id(self);
        check_owner("queue", id, queue.backend())?;
        check_block(id, "read source", src, offset, dst.len())?;
        // SAFETY: queue and block are this backend's and the range lies inside (checked).
        unsafe { RawBackend::read(self, queue, src, offset, dst) }
    }

    fn write_parts(
        &self,
        queues: &[Queue],
        blocks: &mut [&mut DeviceBlock],
        parts: &[WritePart<'_>],
    ) -> std::result::Result<(), PartFailures> {
        let id = RawBackend::id(self);
        let each = (parts.iter())
            .map(|p| block_for(id, &*blocks, p.block, p.offset, p.src.len()).map(drop));
        let invalid = first_invalid(id, queues, each);
        in_turn_until(parts.len(), invalid, |n| {
            // SAFETY: the queues and the parts run (those before the first invalid) were checked.
            unsafe { RawBackend::write_parts(self, queues, blocks, &parts[..n]) }
        })
    }

    fn read_parts(
        &self,
        queues: &[Queue],
        blocks: &[&DeviceBlock],
        parts: &mut [ReadPart<'_>],
    ) -> std::result::Result<(), PartFailures> {
        let id = RawBackend::id(self);
        let each =
            (parts.iter()).map(|p| block_for(id, blocks, p.block, p.offset, p.dst.len()).map(drop));
        let invalid = first_invalid(id, queues, each);
        in_turn_until(parts.len(), invalid, |n| {
            // SAFETY: the queues and the parts run (those before the first invalid) were checked.
            unsafe { RawBackend::read_parts(self, queues, blocks, &mut parts[..n]) }
        })
    }

    fn write_staged(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        src: &StagingBuffer,
        region: CopyRegion,
    ) -> Result<Event> {
        let id = RawBackend::id(self);
        let CopyRegion {
            src_offset,
            dst_offset,
            len,
        } = region;
        check_owner("queue", id, queue.backend())?;
        check_block(id, "staged write destination", dst, dst_offset, len)?;
        check_staging(id, "staged write source", src, src_offset, len)?;
        // SAFETY: queue, block and staging are this backend's and the ranges lie inside.
        let event = unsafe { RawBackend::write_staged(self, queue, dst, src, region) }?;
        // Recorded before the borrow of `src` ends: its host writers and its Drop wait for the
        // device to have read it.
        src.track_device_read(event.clone());
        Ok(event)
    }

    fn read_staged(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        dst: &mut StagingBuffer,
        region: CopyRegion,
    ) -> Result<Event> {
        let id = RawBackend::id(self);
        let CopyRegion {
            src_offset,
            dst_offset,
            len,
        } = region;
        check_owner("queue", id, queue.backend())?;
        check_block(id, "staged read source", src, src_offset, len)?;
        check_staging(id, "staged read destination", dst, dst_offset, len)?;
        // SAFETY: queue, block and staging are this backend's and the ranges lie inside.
        let event = unsafe { RawBackend::read_staged(self, queue, src, dst, region) }?;
        // Recorded before the borrow of `dst` ends: every host access and its Drop wait for the
        // device to have written it.
        dst.track_device_write(event.clone());
        Ok(event)
    }

    fn copy(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        dst: &mut DeviceBlock,
        region: CopyRegion,
    ) -> Result<Event> {
        let id = RawBackend::id(self);
        let CopyRegion {
            src_offset,
            dst_offset,
            len,
        } = region;
        check_owner("queue", id, queue.backend())?;
        check_block(id, "copy source", src, src_offset, len)?;
        check_block(id, "copy destination", dst, dst_offset, len)?;
        // SAFETY: queue and blocks are this backend's and the ranges lie inside (checked).
        unsafe { RawBackend::copy(self, queue, src, dst, region) }
    }

    fn can_copy_to(&self, other: &dyn Backend) -> bool {
        other.id() != RawBackend::id(self)
            && self
                .capabilities()
                .copies_directly_to(&other.capabilities())
    }

    fn copy_to_peer(
        &self,
        queue: &Queue,
        src: &DeviceBlock,
        dst_backend: &dyn Backend,
        dst: &mut DeviceBlock,
        region: CopyRegion,
    ) -> Result<Option<Event>> {
        let id = RawBackend::id(self);
        let CopyRegion {
            src_offset,
            dst_offset,
            len,
        } = region;
        check_owner("queue", id, queue.backend())?;
        check_block(id, "peer copy source", src, src_offset, len)?;
        check_block(
            dst_backend.id(),
            "peer copy destination",
            dst,
            dst_offset,
            len,
        )?;
        if !self.can_copy_to(dst_backend) {
            return Ok(None);
        }
        // Blocks of two host-addressable backends are host memory: one memcpy. (Shared
        // allocations of device backends are not: device work on them may be pending.)
        let host_memory = |caps: Capabilities| caps.host_addressable;
        if host_memory(self.capabilities()) && host_memory(dst_backend.capabilities()) {
            if let (Some(from), Some(to)) = (self.host_bytes(src), dst_backend.host_bytes_mut(dst))
            {
                let (from, to) = (&from[src_offset..], &mut to[dst_offset..]);
                to[..len].copy_from_slice(&from[..len]);
                return Ok(Some(Event::complete()));
            }
        }
        // SAFETY: queue and source are this backend's, the destination is `dst_backend`'s, both
        // ranges lie inside (checked), and the two backends share a peer domain.
        unsafe { RawBackend::copy_to_peer(self, queue, src, dst_backend, dst, region) }.map(Some)
    }

    fn fill(
        &self,
        queue: &Queue,
        dst: &mut DeviceBlock,
        offset: usize,
        len: usize,
        pattern: &[u8],
    ) -> Result<Event> {
        let id = RawBackend::id(self);
        check_owner("queue", id, queue.backend())?;
        check_owner("device block", id, dst.backend())?;
        check_fill(offset, len, pattern, dst.size())?;
        // SAFETY: queue and block are this backend's; range and pattern follow the rule.
        unsafe { RawBackend::fill(self, queue, dst, offset, len, pattern) }
    }

    fn enqueue_wait(&self, queue: &Queue, event: &Event) -> Result<()> {
        check_owner("queue", RawBackend::id(self), queue.backend())?;
        RawBackend::enqueue_wait(self, queue, event)
    }

    fn enqueue_marker(&self, queue: &Queue) -> Result<Event> {
        check_owner("queue", RawBackend::id(self), queue.backend())?;
        RawBackend::enqueue_marker(self, queue)
    }

    fn create_user_event(&self) -> Result<UserEvent> {
        RawBackend::create_user_event(self)
    }

    fn synchronize(&self) -> Result<()> {
        RawBackend::synchronize(self)
    }
}

/// Checks that a handle belongs to the backend `expected`.
pub(crate) fn check_owner(what: &'static str, expected: BackendId, found: BackendId) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(Error::ForeignHandle {
            what,
            expected,
            found,
        })
    }
}

/// Checks that `block` belongs to `backend` and that `offset..offset + len` lies inside it.
pub(crate) fn check_block(
    backend: BackendId,
    what: &'static str,
    block: &DeviceBlock,
    offset: usize,
    len: usize,
) -> Result<()> {
    check_owner("device block", backend, block.backend())?;
    crate::element::check_range(what, offset, len, block.size())
}

/// Checks that `staging` belongs to `backend` and that `offset..offset + len` lies inside it.
pub(crate) fn check_staging(
    backend: BackendId,
    what: &'static str,
    staging: &StagingBuffer,
    offset: usize,
    len: usize,
) -> Result<()> {
    check_owner("staging buffer", backend, staging.backend())?;
    crate::element::check_range(what, offset, len, staging.len())
}

/// Accepts a block for release only from its own backend; otherwise hands it back in the error.
pub(crate) fn check_release(expected: BackendId, block: DeviceBlock) -> Result<DeviceBlock> {
    if block.backend() == expected {
        Ok(block)
    } else {
        Err(Error::ReleasedToWrongBackend { expected, block })
    }
}

/// Validates a fill pattern and range, the rule every backend shares.
pub(crate) fn check_fill(offset: usize, len: usize, pattern: &[u8], size: usize) -> Result<()> {
    crate::element::check_range("fill destination", offset, len, size)?;
    let p = pattern.len();
    if p == 0 || p > 128 || !p.is_power_of_two() {
        return Err(Error::invalid(format!(
            "fill pattern length must be a power of two from 1 to 128 bytes, got {p}"
        )));
    }
    if offset % p != 0 || len % p != 0 {
        return Err(Error::invalid(format!(
            "fill offset {offset} and length {len} must be multiples of the pattern length {p}"
        )));
    }
    Ok(())
}

/// Checks an allocation request against the device's limit.
pub(crate) fn check_allocation(bytes: usize, max: u64) -> Result<()> {
    if bytes == 0 {
        return Err(Error::ZeroLength { what: "allocation" });
    }
    if bytes as u64 > max {
        return Err(Error::AllocationTooLarge {
            requested: bytes as u64,
            max,
        });
    }
    Ok(())
}
