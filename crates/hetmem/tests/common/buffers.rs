//! Unified-buffer fixtures shared by the buffer tests.

use std::sync::Arc;

use hetmem::backend::Backend;
use hetmem::buffer::{BufferContext, Residency, UnifiedBuffer};

/// A context whose buffers keep two copies, so that every transfer is real.
pub fn mirrored(b: &Arc<dyn Backend>) -> BufferContext {
    BufferContext::new(b.clone())
}

pub fn alloc(ctx: &BufferContext, len: usize) -> UnifiedBuffer<u32> {
    ctx.alloc_with(len, Residency::Mirrored).unwrap()
}

pub fn from_slice(ctx: &BufferContext, data: &[u32]) -> UnifiedBuffer<u32> {
    let mut buf = alloc(ctx, data.len());
    buf.host_discard().unwrap().copy_from_slice(data);
    buf
}

pub fn values(len: usize, seed: u32) -> Vec<u32> {
    (0..len as u32)
        .map(|i| i.wrapping_mul(2_654_435_761) ^ seed)
        .collect()
}

/// Writes `data` into the device copy through the backend, as a user's kernel would.
pub fn device_write(b: &Arc<dyn Backend>, buf: &mut UnifiedBuffer<u32>, data: &[u32]) {
    let mut d = buf.device_mut().unwrap();
    let (q, offset) = (d.queue().clone(), d.offset());
    b.write(&q, d.block_mut(), offset, bytemuck::cast_slice(data))
        .unwrap();
}
