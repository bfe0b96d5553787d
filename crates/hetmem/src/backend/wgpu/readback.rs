//! Read-back buffers (`MAP_READ | COPY_DST`) kept for reuse: wgpu reads device memory only
//! through a mappable buffer, and making one per read costs a driver allocation each time.

use std::sync::Mutex;

use crate::sync::Unpoison;

/// Buffers kept at most, and the largest kept (bigger ones are made for one read).
const KEPT: usize = 8;
const LARGEST_KEPT: u64 = 64 << 20;

/// Mappable read-back buffers, by size (powers of two from 256 bytes).
#[derive(Default)]
pub(super) struct ReadbackBelt {
    free: Mutex<Vec<wgpu::Buffer>>,
}

impl ReadbackBelt {
    /// A read-back buffer of at least `len` bytes, unmapped.
    pub(super) fn take(&self, device: &wgpu::Device, len: usize) -> wgpu::Buffer {
        let size = (len as u64).next_power_of_two().max(256);
        let mut free = self.free.lock().unpoisoned();
        if let Some(i) = free.iter().position(|b| b.size() == size) {
            return free.swap_remove(i);
        }
        drop(free);
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("hetmem read-back"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Keeps `buffer` (unmapped) for a later read, unless it is large or enough are kept.
    pub(super) fn give(&self, buffer: wgpu::Buffer) {
        let mut free = self.free.lock().unpoisoned();
        if buffer.size() <= LARGEST_KEPT {
            if free.len() == KEPT {
                free.remove(0);
            }
            free.push(buffer);
        }
    }
}
