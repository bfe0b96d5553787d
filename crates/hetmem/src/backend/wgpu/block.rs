//! A block's handle: the wgpu buffer and where the block starts in it (views share their
//! segment's buffer), boxed so that a `DeviceBlock`'s raw handle can point at it.

use std::ffi::c_void;

use crate::backend::{BackendId, DeviceBlock};

/// What a wgpu block's handle points to.
pub(super) struct WgpuBlock {
    pub(super) buffer: wgpu::Buffer,
    /// Where the block starts in `buffer`.
    pub(super) offset: u64,
}

impl WgpuBlock {
    /// The address in `buffer` of the block's byte `offset`.
    pub(super) fn at(&self, offset: usize) -> u64 {
        self.offset + offset as u64
    }

    /// A block of `size` bytes over this handle.
    pub(super) fn into_block(self, backend: BackendId, size: usize) -> DeviceBlock {
        // SAFETY: the handle is a fresh box, handed out once and freed by `free` when the
        // block is released to this backend.
        unsafe { crate::backend::raw::device_block(backend, self.into_handle(), size) }
    }

    /// The raw handle (a box, freed by [`WgpuBlock::free`] of the block made of it).
    pub(super) fn into_handle(self) -> *mut c_void {
        Box::into_raw(Box::new(self)).cast()
    }

    /// The handle of `block`.
    ///
    /// # Safety
    /// `block` was made by [`WgpuBlock::into_block`] and not freed.
    pub(super) unsafe fn of(block: &DeviceBlock) -> &WgpuBlock {
        // SAFETY: the caller's guarantee: the handle is a live box of a `WgpuBlock`.
        unsafe { &*block.raw_handle().cast::<WgpuBlock>() }
    }

    /// Frees `block`'s handle (wgpu keeps the buffer alive for work still using it).
    ///
    /// # Safety
    /// As [`WgpuBlock::of`]; the block is consumed, so its handle is freed once.
    pub(super) unsafe fn free(block: DeviceBlock) {
        // SAFETY: the caller's guarantee: the handle is a live box of a `WgpuBlock`.
        drop(unsafe { Box::from_raw(block.into_raw().cast::<WgpuBlock>()) });
    }
}
