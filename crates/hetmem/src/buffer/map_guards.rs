//! Map guards: the device copy of a buffer mapped into host memory (the seeds' `MapAsync` /
//! `UnmapAsync`) — zero-copy where the device shares memory with the host (PoCL, integrated
//! GPUs, shared allocations), a driver copy elsewhere — and unmapped when the guard drops.
//!
//! A map guard takes the buffer exclusively, whatever its mode: while a block is mapped the
//! device must not write it, and a second mapping of one block in the same thread would wait
//! for the first on OpenCL. Ordering follows the [ordering contract](super#the-ordering-contract):
//! the map waits for the work enqueued on the buffer's queue (your kernels), and the unmap is
//! enqueued there and waited for, so work you enqueue afterwards sees what was written.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut, Range};

use super::coherence::Side;
use super::storage::BufferStorage;
use super::tracker::{allocated, allocated_mut};
use crate::backend::{Mapping, MappingMut};
use crate::element::Element;
use crate::error::{Error, Result};

/// The device copy mapped for reading, as a slice.
pub struct MapRef<'a, T: Element> {
    mapping: Mapping<'a>,
    _element: PhantomData<T>,
}

/// The device copy mapped for writing, as a slice. The host copy was marked stale over this
/// range when the guard was made; the device holds what was written once the guard is gone.
pub struct MapMut<'a, T: Element> {
    mapping: MappingMut<'a>,
    _element: PhantomData<T>,
}

impl<T: Element> MapRef<'_, T> {
    /// Unmaps now and reports a failure, which dropping the guard cannot.
    pub fn unmap(self) -> Result<()> {
        self.mapping.unmap()
    }
}

impl<T: Element> MapMut<'_, T> {
    /// Unmaps now and reports a failure, which dropping the guard cannot: after `Ok` the device
    /// holds what was written.
    pub fn unmap(self) -> Result<()> {
        self.mapping.unmap()
    }
}

impl<T: Element> Deref for MapRef<'_, T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        bytemuck::cast_slice(self.mapping.bytes())
    }
}

impl<T: Element> Deref for MapMut<'_, T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        bytemuck::cast_slice(self.mapping.bytes())
    }
}

impl<T: Element> DerefMut for MapMut<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        bytemuck::cast_slice_mut(self.mapping.bytes_mut())
    }
}

/// Checks once that the mapped bytes are a slice of `T` (its alignment), so that `deref` cannot
/// fail.
fn check_elements<T: Element>(bytes: &[u8]) -> Result<()> {
    bytemuck::try_cast_slice::<u8, T>(bytes)
        .map(drop)
        .map_err(|e| Error::invalid(format!("mapped view: {e}")))
}

impl BufferStorage {
    /// Maps `range` of the device copy for reading, once it is valid there.
    pub(crate) fn map_read<T: Element>(&mut self, range: Range<usize>) -> Result<MapRef<'_, T>> {
        self.core.ctx.check_open("mapping a buffer")?;
        self.acquire(Side::Device)?;
        self.await_device_work()?;
        let (core, _, slots, _) = self.parts_mut();
        let block = allocated(slots.device.get_mut());
        let (backend, queue) = (core.ctx.device_backend(), &core.ctx.queue);
        let mapping = Mapping::read(backend, queue, block, range.start, range.len())?;
        check_elements::<T>(mapping.bytes())?;
        Ok(MapRef {
            mapping,
            _element: PhantomData,
        })
    }

    /// Maps `range` of the device copy for writing, made valid and newest there first unless
    /// `discard` (every element is overwritten).
    pub(crate) fn map_write<T: Element>(
        &mut self,
        range: Range<usize>,
        discard: bool,
    ) -> Result<MapMut<'_, T>> {
        self.core.ctx.check_open("mapping a buffer")?;
        if range.is_empty() {
            // An empty view still maps from a block.
            self.acquire(Side::Device)?;
        }
        self.acquire_mut(Side::Device, range.clone(), discard)?;
        self.await_device_work()?;
        let (core, _, slots, _) = self.parts_mut();
        let block = allocated_mut(slots.device.get_mut());
        let (backend, queue) = (core.ctx.device_backend(), &core.ctx.queue);
        let mapping = MappingMut::write(backend, queue, block, range.start, range.len(), discard)?;
        check_elements::<T>(mapping.bytes())?;
        Ok(MapMut {
            mapping,
            _element: PhantomData,
        })
    }
}

impl<T: Element + fmt::Debug> fmt::Debug for MapRef<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Element + fmt::Debug> fmt::Debug for MapMut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}
