//! [`UnifiedBuffer`]: typed access to a [`BufferStorage`], for the owner and for its views.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Bound, Deref, DerefMut, Range, RangeBounds};

use super::guards::{DeviceMut, DeviceRef, HostMut, HostRef};
use super::map_guards::{MapMut, MapRef};
use super::metrics::BufferMetrics;
use super::storage::{BufferStorage, OwnedStorage};
use super::{CoherenceState, Residency, Side};
use crate::element::{byte_len, cast_len, check_range, Element};
use crate::error::{Error, Result};
use crate::transfer::{OwnedTransfer, TransferHandle};

/// Data that lives on the host, on a device, or both, moved only when a stale side is about to
/// be used, and then only the ranges that changed.
///
/// Made by a [`BufferContext`](super::BufferContext). The owner is `UnifiedBuffer<T>`; views made
/// by [`slice`](UnifiedBuffer::slice) and [`cast`](UnifiedBuffer::cast) are the same type over a
/// borrowed storage ([`BufferView`], [`BufferViewMut`]), so they have the same API and alias the
/// parent's memory.
///
/// Access goes through guards: [`host`](Self::host) / [`device`](Self::device) read through
/// `&self` (from any number of threads; a lazy transfer they need happens once),
/// [`host_mut`](Self::host_mut) / [`device_mut`](Self::device_mut) read and write, and
/// [`host_discard`](Self::host_discard) / [`device_discard`](Self::device_discard) promise to
/// overwrite everything, so nothing is transferred. The states and transfers follow
/// [`coherence`](super::coherence)'s table.
///
/// ```
/// use std::sync::Arc;
/// use hetmem::buffer::{BufferContext, Residency};
/// use hetmem::backend::{Backend, HostBackend};
///
/// let ctx = BufferContext::new(Arc::new(HostBackend::new()));
/// let mut buf = ctx.alloc_with::<f32>(1 << 20, Residency::Mirrored)?;
/// buf.host_discard()?.fill(1.0);       // written on the host, no transfer
/// buf.write(10, &[5.0])?;              // one element changes
/// let device = buf.device()?;          // uploads everything once: the device copy is new
/// assert_eq!(device.byte_len(), 4 << 20);
/// drop(device);
/// buf.write(20, &[7.0])?;
/// buf.prefetch_to_device()?.wait()?;   // moves 4 bytes, not 4 MiB
/// assert_eq!(buf.metrics().host_to_device.bytes, (4 << 20) + 4);
/// # Ok::<(), hetmem::Error>(())
/// ```
pub struct UnifiedBuffer<T: Element, S = OwnedStorage> {
    storage: S,
    /// Byte offset of this view in the storage.
    offset: usize,
    /// Length in elements.
    len: usize,
    _element: PhantomData<T>,
}

/// A view of a buffer, borrowed for reading.
pub type BufferView<'a, T> = UnifiedBuffer<T, &'a BufferStorage>;
/// A view of a buffer, borrowed for writing.
pub type BufferViewMut<'a, T> = UnifiedBuffer<T, &'a mut BufferStorage>;

/// `range` of a view of `len` elements, checked.
fn element_range(range: impl RangeBounds<usize>, len: usize) -> Result<Range<usize>> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.checked_add(1).ok_or(Error::SizeOverflow {
            what: "range start",
        })?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e
            .checked_add(1)
            .ok_or(Error::SizeOverflow { what: "range end" })?,
        Bound::Excluded(&e) => e,
        Bound::Unbounded => len,
    };
    if start > len || end > len {
        return Err(Error::OutOfRange {
            what: "buffer range",
            offset: start as u64,
            len: end.saturating_sub(start) as u64,
            size: len as u64,
        });
    }
    if start > end {
        return Err(Error::invalid(format!(
            "range starts at {start} after its end {end}"
        )));
    }
    Ok(start..end)
}

impl<T: Element> UnifiedBuffer<T> {
    pub(crate) fn from_storage(storage: BufferStorage, len: usize) -> Self {
        UnifiedBuffer {
            storage: OwnedStorage::new(storage),
            offset: 0,
            len,
            _element: PhantomData,
        }
    }

    /// Changes the length to `len` elements, keeping the prefix; new elements read as zeros.
    /// Valid copies are reallocated (in place when the block has room), stale ones released.
    pub fn resize(&mut self, len: usize) -> Result<()> {
        if len == 0 {
            return Err(Error::ZeroLength { what: "buffer" });
        }
        let bytes = byte_len::<T>(len)?;
        self.storage.ctx().check_size(bytes)?;
        self.storage.resize(bytes)?;
        self.len = len;
        Ok(())
    }

    /// Drops the device copy, keeping the data on the host (downloading first if needed).
    pub fn compact(&mut self) -> Result<()> {
        self.storage.compact()
    }

    /// Declares `side` stale: use it after device work the buffer did not see (a kernel given
    /// the block through a read guard's raw handle) changed the other side. Refused with
    /// [`Error::Coherence`] when `side` holds the only valid copy.
    pub fn invalidate(&mut self, side: Side) -> Result<()> {
        self.storage.invalidate(side)
    }
}

impl<T: Element, S: Deref<Target = BufferStorage>> UnifiedBuffer<T, S> {
    pub(crate) fn storage(&self) -> &BufferStorage {
        &self.storage
    }

    /// Length in elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the view has no elements (a buffer never does; a view may).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Length in bytes.
    pub fn byte_len(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }

    /// Byte offset of this view in its buffer (0 for the buffer itself).
    pub fn byte_offset(&self) -> usize {
        self.offset
    }

    fn bytes(&self) -> Range<usize> {
        self.offset..self.offset + self.byte_len()
    }

    /// Byte range of `elements` of this view inside the storage.
    fn bytes_of(&self, elements: Range<usize>) -> Range<usize> {
        let size = std::mem::size_of::<T>();
        self.offset + elements.start * size..self.offset + elements.end * size
    }

    /// The host copy, for reading; downloads the stale ranges first if the device is newer.
    pub fn host(&self) -> Result<HostRef<'_, T>> {
        self.storage.acquire(Side::Host)?;
        HostRef::new(self.storage.host_bytes()?, self.bytes())
    }

    /// The device copy, for reading (by your kernels); uploads the stale ranges first if the
    /// host is newer.
    pub fn device(&self) -> Result<DeviceRef<'_>> {
        self.storage.ctx().check_open("device access")?;
        self.storage.acquire(Side::Device)?;
        self.storage.expose();
        Ok(DeviceRef {
            slot: self.storage.device_slot(),
            ctx: self.storage.ctx(),
            range: self.bytes(),
        })
    }

    /// Copies `dst.len()` elements starting at element `offset` into `dst`, from whichever side
    /// is valid (a device read of exactly those bytes when only the device is). Changes no state.
    pub fn read(&self, offset: usize, dst: &mut [T]) -> Result<()> {
        check_range("buffer read", offset, dst.len(), self.len)?;
        let start = self.bytes_of(offset..offset + dst.len()).start;
        self.storage.read_into(start, bytemuck::cast_slice_mut(dst))
    }

    /// The contents as a vector.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        let mut out = vec![T::zeroed(); self.len];
        self.read(0, &mut out)?;
        Ok(out)
    }

    /// A view of `range` (in elements of this view) that aliases this buffer's memory.
    pub fn slice(&self, range: impl RangeBounds<usize>) -> Result<BufferView<'_, T>> {
        let r = element_range(range, self.len)?;
        Ok(UnifiedBuffer {
            storage: &*self.storage,
            offset: self.bytes_of(r.clone()).start,
            len: r.len(),
            _element: PhantomData,
        })
    }

    /// A view of the same bytes as elements of `U`; the byte length must divide and the offset
    /// be aligned for `U`.
    pub fn cast<U: Element>(&self) -> Result<BufferView<'_, U>> {
        let len = cast_len::<U>(self.offset, self.byte_len())?;
        Ok(UnifiedBuffer {
            storage: &*self.storage,
            offset: self.offset,
            len,
            _element: PhantomData,
        })
    }

    /// Starts making both sides valid (of the whole buffer, also when called on a view) and
    /// returns once the transfer is started: its handle completes when it is done. Meanwhile
    /// the stale side is still stale — a guard or operation that needs it waits for the
    /// transfer — and the valid side stays usable. Dropping the handle is safe: the transfer
    /// goes on and the buffer takes it in. A failed transfer changes nothing (the handle
    /// reports it; the next use transfers again). Ordered on the buffer's queue like every
    /// transfer: after the work already enqueued there.
    pub fn sync(&self) -> Result<TransferHandle> {
        self.storage.sync()
    }

    /// Reads `range` (in elements) into a new vector without waiting for the device: from the
    /// device copy on the context's background thread where only the device holds a valid
    /// copy, otherwise from the host copy at once. The transfer owns the vector until the
    /// device is done; `wait` (or `.await`) gives it back. Ordered on the buffer's queue.
    pub fn read_async(&self, range: impl RangeBounds<usize>) -> Result<OwnedTransfer<Vec<T>>> {
        let r = element_range(range, self.len)?;
        let start = self.bytes_of(r.clone()).start;
        self.storage.read_async(start, vec![T::zeroed(); r.len()])
    }

    /// Starts making the host copy valid ahead of use; asynchronous like [`Self::sync`].
    pub fn prefetch_to_host(&self) -> Result<TransferHandle> {
        self.storage.acquire_async(Side::Host)
    }

    /// Starts making the device copy valid ahead of use; asynchronous like [`Self::sync`].
    pub fn prefetch_to_device(&self) -> Result<TransferHandle> {
        self.storage.acquire_async(Side::Device)
    }

    /// The coherence state of the buffer.
    pub fn state(&self) -> CoherenceState {
        self.storage.state()
    }

    /// Whether the host holds a valid copy (a finished transfer counts; one in flight not).
    pub fn is_on_host(&self) -> bool {
        self.state().is_valid(Side::Host)
    }

    /// Whether the device holds a valid copy (a finished transfer counts; one in flight not).
    pub fn is_on_device(&self) -> bool {
        self.state().is_valid(Side::Device)
    }

    /// Whether one side is newer than the other.
    pub fn is_dirty(&self) -> bool {
        matches!(
            self.state(),
            CoherenceState::HostDirty | CoherenceState::DeviceDirty
        )
    }

    /// One allocation or two copies.
    pub fn residency(&self) -> Residency {
        self.storage.residency()
    }

    /// Transfers each way, last access and state of the buffer (shared by all its views).
    pub fn metrics(&self) -> BufferMetrics {
        self.storage.metrics()
    }
}

impl<T: Element, S: DerefMut<Target = BufferStorage>> UnifiedBuffer<T, S> {
    /// The host copy, for reading and writing; downloads the stale ranges first if the device
    /// is newer, and marks the device copy stale over this view.
    pub fn host_mut(&mut self) -> Result<HostMut<'_, T>> {
        self.host_access(false)
    }

    /// The host copy, for overwriting every element: no download; the contents are whatever
    /// the memory held.
    pub fn host_discard(&mut self) -> Result<HostMut<'_, T>> {
        self.host_access(true)
    }

    fn host_access(&mut self, discard: bool) -> Result<HostMut<'_, T>> {
        let range = self.bytes();
        HostMut::new(self.storage.host_range_mut(range, discard)?)
    }

    /// `range` (in elements) of the host copy, for reading and writing; only that range of the
    /// device copy goes stale.
    pub fn host_mut_range(&mut self, range: impl RangeBounds<usize>) -> Result<HostMut<'_, T>> {
        let r = element_range(range, self.len)?;
        let bytes = self.bytes_of(r);
        HostMut::new(self.storage.host_range_mut(bytes, false)?)
    }

    /// The device copy, for kernels that read and write it; uploads stale ranges first and
    /// marks the host copy stale over this view.
    pub fn device_mut(&mut self) -> Result<DeviceMut<'_>> {
        self.device_access(false)
    }

    /// The device copy, for kernels that overwrite every element: no upload.
    pub fn device_discard(&mut self) -> Result<DeviceMut<'_>> {
        self.device_access(true)
    }

    fn device_access(&mut self, discard: bool) -> Result<DeviceMut<'_>> {
        self.storage.ctx().check_open("device access")?;
        let range = self.bytes();
        // An empty view still needs a block to hand out.
        if range.is_empty() {
            self.storage.acquire(Side::Device)?;
        }
        self.storage
            .acquire_mut(Side::Device, range.clone(), discard)?;
        self.storage.expose();
        let lent = self.storage.lend_device();
        Ok(DeviceMut { lent, range })
    }

    /// The device copy mapped into host memory for reading ([map guards](super::MapRef)):
    /// zero-copy where the device shares memory with the host; uploads stale ranges first.
    /// Exclusive like the mutable guards, and unmapped when the guard drops.
    pub fn map_read(&mut self) -> Result<MapRef<'_, T>> {
        let range = self.bytes();
        self.storage.map_read(range)
    }

    /// The device copy mapped for reading and writing; uploads stale ranges first and marks
    /// the host copy stale over this view. The device holds what was written once the guard
    /// drops (or [`MapMut::unmap`] returns).
    pub fn map_write(&mut self) -> Result<MapMut<'_, T>> {
        let range = self.bytes();
        self.storage.map_write(range, false)
    }

    /// The device copy mapped for overwriting every element: nothing is uploaded or fetched
    /// (OpenCL's `CL_MAP_WRITE_INVALIDATE_REGION`), so the contents start unspecified.
    pub fn map_discard(&mut self) -> Result<MapMut<'_, T>> {
        let range = self.bytes();
        self.storage.map_write(range, true)
    }

    /// Writes `src` at element `offset` into the newest copy (never forcing a download); the
    /// other side goes stale over exactly those elements.
    pub fn write(&mut self, offset: usize, src: &[T]) -> Result<()> {
        check_range("buffer write", offset, src.len(), self.len)?;
        let start = self.bytes_of(offset..offset + src.len()).start;
        self.storage.write_from(start, bytemuck::cast_slice(src))
    }

    /// Writes `data` at element `offset` without waiting for the device: into the device copy
    /// on the context's background thread where both copies are valid or the device holds the
    /// only one (the host copy goes stale over those elements), otherwise at once like
    /// [`Self::write`]. The transfer owns
    /// `data` until the device is done with it; `wait` (or `.await`) gives it back. Ordered
    /// on the buffer's queue; a guard or operation that needs the device copy waits for it.
    /// If it fails, a synchronized buffer keeps its host copy (the device copy goes stale over
    /// the range); where the device held the only copy, the range is unspecified.
    pub fn write_async(&mut self, offset: usize, data: Vec<T>) -> Result<OwnedTransfer<Vec<T>>> {
        check_range("buffer write", offset, data.len(), self.len)?;
        let start = self.bytes_of(offset..offset + data.len()).start;
        self.storage.write_async(start, data)
    }

    /// Sets every element of `range` to `value`, on the device when only the device is valid.
    pub fn fill(&mut self, value: T, range: impl RangeBounds<usize>) -> Result<()> {
        let r = element_range(range, self.len)?;
        let bytes = self.bytes_of(r);
        if bytes.is_empty() {
            return Ok(());
        }
        self.storage.fill(bytes, bytemuck::bytes_of(&value))
    }

    /// Copies `other` (of the same length) into this buffer: device to device when `other` is
    /// valid on the same device, otherwise from whichever side of `other` is valid.
    pub fn copy_from<S2: Deref<Target = BufferStorage>>(
        &mut self,
        other: &UnifiedBuffer<T, S2>,
    ) -> Result<()> {
        if other.len != self.len {
            return Err(Error::LengthMismatch {
                what: "buffer copy",
                expected: self.len as u64,
                actual: other.len as u64,
            });
        }
        if self.len == 0 {
            return Ok(());
        }
        let (dst, src) = (self.bytes(), other.bytes());
        self.storage.copy_from(dst, &other.storage, src)
    }

    /// A writable view of `range` (in elements of this view).
    pub fn slice_mut(&mut self, range: impl RangeBounds<usize>) -> Result<BufferViewMut<'_, T>> {
        let r = element_range(range, self.len)?;
        Ok(UnifiedBuffer {
            offset: self.bytes_of(r.clone()).start,
            storage: &mut *self.storage,
            len: r.len(),
            _element: PhantomData,
        })
    }

    /// A writable view of the same bytes as elements of `U`.
    pub fn cast_mut<U: Element>(&mut self) -> Result<BufferViewMut<'_, U>> {
        let len = cast_len::<U>(self.offset, self.byte_len())?;
        Ok(UnifiedBuffer {
            storage: &mut *self.storage,
            offset: self.offset,
            len,
            _element: PhantomData,
        })
    }
}

impl<T: Element, S: Deref<Target = BufferStorage>> fmt::Debug for UnifiedBuffer<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnifiedBuffer")
            .field("element", &std::any::type_name::<T>())
            .field("len", &self.len)
            .field("byte_offset", &self.offset)
            .field("state", &self.state())
            .field("residency", &self.residency())
            .finish()
    }
}

/// Small-size checks of the guard paths, which borrow host memory the backend hands out through
/// `unsafe`: CI runs these under Miri.
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::{Backend, HostBackend};
    use crate::buffer::BufferContext;

    #[test]
    fn guards_views_and_threads_on_both_residencies() {
        let backend: Arc<dyn Backend> = Arc::new(HostBackend::new());
        let ctx = BufferContext::new(backend.clone());
        for residency in [Residency::Mirrored, Residency::Shared] {
            let mut buf = ctx.alloc_with::<u16>(24, residency).unwrap();
            buf.host_discard().unwrap().copy_from_slice(&[7; 24]);
            {
                let mut view = buf.slice_mut(4..8).unwrap();
                view.host_mut().unwrap()[1] = 9;
                let mut d = view.device_mut().unwrap();
                let (q, offset) = (d.queue().clone(), d.offset());
                backend.write(&q, d.block_mut(), offset, &[1, 0]).unwrap();
            }
            // Two threads hold host and device guards at once while one sync happens.
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        let host = buf.host().unwrap();
                        let device = buf.device().unwrap();
                        assert_eq!(&host[3..7], &[7, 1, 9, 7]);
                        assert_eq!(device.byte_len(), 48);
                    });
                }
            });
            let bytes = buf.cast::<u8>().unwrap();
            assert_eq!(&bytes.host().unwrap()[8..10], &[1, 0]);
            buf.resize(40).unwrap();
            assert_eq!(&buf.to_vec().unwrap()[22..26], &[7, 7, 0, 0]);
            buf.compact().unwrap();
            assert_eq!(buf.host().unwrap()[5], 9);
        }
    }
}
