//! Zero-copy host access to blocks on adapters whose memory the host sees: storage buffers made
//! mappable too (`MAPPABLE_PRIMARY_BUFFERS`, asked for on CPU and integrated adapters), mapped
//! in place — no read-back buffer, no staging copy.
//!
//! wgpu maps whole buffers: while any range of a buffer is mapped, no submission may use the
//! buffer at all (reading or writing, any range). So only a block that is its whole buffer is
//! mapped; one carved from a buffer shared with other blocks (the splitting allocator's
//! segments) would hold its neighbours' work off the device, and is refused
//! ([`WgpuBlock::is_whole`]). A buffer maps once at a time (wgpu panics on a second
//! `map_async`): a second mapping waits for the first to end ([`MappedBuffers`]).

use std::sync::{mpsc, Condvar, Mutex};

use super::block::WgpuBlock;
use super::device::{backend_error, GpuDevice, ALIGN};
use crate::backend::MapMode;
use crate::error::Result;
use crate::sync::Unpoison;

/// The buffers mapped now, so that a second mapping of one waits for the first to end.
#[derive(Default)]
pub(super) struct MappedBuffers {
    buffers: Mutex<Vec<wgpu::Buffer>>,
    unmapped: Condvar,
}

impl MappedBuffers {
    /// Waits until `buffer` is not mapped and claims it.
    fn claim(&self, buffer: &wgpu::Buffer) {
        let buffers = self.buffers.lock().unpoisoned();
        let mut buffers = (self.unmapped.wait_while(buffers, |b| b.contains(buffer))).unpoisoned();
        buffers.push(buffer.clone());
    }

    /// Lets the next mapping of `buffer` go ahead.
    fn release(&self, buffer: &wgpu::Buffer) {
        self.buffers.lock().unpoisoned().retain(|b| b != buffer);
        self.unmapped.notify_all();
    }
}

impl WgpuBlock {
    /// Whether the block (of `size` bytes) is its buffer, all of it: the buffer holds no other
    /// block, so mapping it holds nobody else's work back.
    pub(super) fn is_whole(&self, size: usize) -> bool {
        self.offset == 0 && self.buffer.size() == size.next_multiple_of(ALIGN) as u64
    }
}

impl GpuDevice {
    /// Maps bytes `offset..offset + len` of `block` once the work asked for so far is done (the
    /// writes made so far are submitted first, so the mapping sees them) and returns where they
    /// are. The caller checked that the block is a whole mappable buffer.
    pub(super) fn map(
        &self,
        block: &WgpuBlock,
        offset: usize,
        len: usize,
        mode: MapMode,
    ) -> Result<*mut u8> {
        // wgpu maps from a multiple of 8 bytes to a multiple of 4; the buffer is a multiple of
        // 4 bytes long, so the widened range stays inside it.
        let (at, end) = (block.at(offset), block.at(offset + len));
        let range =
            at / wgpu::MAP_ALIGNMENT * wgpu::MAP_ALIGNMENT..end.next_multiple_of(ALIGN as u64);
        let skip = (at - range.start) as usize;
        self.mapped.claim(&block.buffer);
        let mapping = self.map_claimed(block, range, mode);
        if mapping.is_err() {
            self.mapped.release(&block.buffer);
        }
        Ok(mapping?.wrapping_add(skip))
    }

    /// [`GpuDevice::map`] of the buffer's `range`, claimed.
    fn map_claimed(
        &self,
        block: &WgpuBlock,
        range: std::ops::Range<u64>,
        mode: MapMode,
    ) -> Result<*mut u8> {
        self.flush();
        let slice = block.buffer.slice(range);
        let (sent, mapped) = mpsc::channel();
        let wgpu_mode = match mode {
            MapMode::Read => wgpu::MapMode::Read,
            MapMode::Write | MapMode::WriteDiscard => wgpu::MapMode::Write,
        };
        slice.map_async(wgpu_mode, move |outcome| {
            let _ = sent.send(outcome);
        });
        let outcome = loop {
            (self.device.poll(wgpu::PollType::Wait))
                .map_err(|_| backend_error("map", "device lost or wait timed out"))?;
            // The callback runs in a poll: this one's, or the polling thread's.
            if let Ok(outcome) = mapped.try_recv() {
                break outcome;
            }
        };
        outcome.map_err(|_| backend_error("map", "mapping the buffer failed"))?;
        // The views only track which ranges are handed out; the memory stays mapped until
        // `unmap`, so their pointer outlives them.
        Ok(match mode {
            MapMode::Read => slice.get_mapped_range().as_ptr().cast_mut(),
            MapMode::Write | MapMode::WriteDiscard => slice.get_mapped_range_mut().as_mut_ptr(),
        })
    }

    /// Ends the mapping of `block`'s buffer: the device sees what was written.
    pub(super) fn unmap(&self, block: &WgpuBlock) -> Result<()> {
        block.buffer.unmap();
        self.mapped.release(&block.buffer);
        self.check("unmap")
    }
}
