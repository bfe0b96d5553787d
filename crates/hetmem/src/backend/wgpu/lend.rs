//! A device guard's memory as a wgpu buffer binding, for the bind groups of users' compute
//! shaders. Submit to the device's queue ([`WgpuBackend::wgpu_queue`]): hetmem's own work on the
//! buffer is submitted there before the binding is handed out, and its later work after.

use std::num::NonZeroU64;
use std::ops::Range;

use super::block::WgpuBlock;
use super::device::ALIGN;
use super::WgpuBackend;
use crate::backend::{Backend, DeviceBlock, Queue};
use crate::error::{Error, Result};

/// `range` of `block` as a binding; `queue` is the buffer's.
pub(crate) fn lend<'g>(
    backend: &dyn Backend,
    block: &'g DeviceBlock,
    range: Range<usize>,
    queue: &Queue,
) -> Result<wgpu::BufferBinding<'g>> {
    let wgpu = backend.as_any().downcast_ref::<WgpuBackend>();
    let Some(wgpu) = wgpu.filter(|w| block.backend() == w.id && queue.backend() == w.id) else {
        return Err(Error::Unsupported {
            backend: backend.info().kind,
            what: "lend a block as a wgpu binding (it is not a wgpu block)",
        });
    };
    // Work held on the buffer's queue (behind a gate) is submitted first, so that the user's
    // submission comes after it.
    wgpu.holding(queue)?.wait_drained();
    // SAFETY: the block is this backend's (checked above) and lives as long as the borrow.
    let handle = unsafe { WgpuBlock::of(block) };
    let offset = handle.at(range.start);
    if offset % wgpu.alignment as u64 != 0 {
        return Err(Error::Misaligned {
            what: "a wgpu storage binding (min_storage_buffer_offset_alignment)",
            offset,
            alignment: wgpu.alignment as u64,
        });
    }
    // Bindings are whole words; a block's buffer always ends on one.
    let size = NonZeroU64::new(range.len().next_multiple_of(ALIGN) as u64)
        .ok_or_else(|| Error::invalid("a wgpu binding of no bytes"))?;
    Ok(wgpu::BufferBinding {
        buffer: &handle.buffer,
        offset,
        size: Some(size),
    })
}
