//! Pipelined transfers through a ring of page-locked staging buffers: the host copies one chunk
//! while the device moves another.

use super::lane::{chunks, Lane, CHUNKS_PER_QUEUE_PER_WAVE};
use super::TransferEngine;
use crate::backend::{CopyRegion, DeviceBlock, Event};
use crate::error::Result;
use crate::pool::PinnedBuffer;

impl TransferEngine {
    /// Chunks per wave of a chunked transfer: enough to keep every queue busy, few enough
    /// that progress is reported as the transfer goes (every 32 MiB with the defaults).
    pub(super) fn chunk_wave(&self) -> usize {
        CHUNKS_PER_QUEUE_PER_WAVE * self.queues.len()
    }

    pub(super) fn write_pipelined(
        &self,
        lane: &Lane<'_>,
        dst: &mut DeviceBlock,
        offset: usize,
        src: &[u8],
        chunk: usize,
        depth: usize,
    ) -> Result<()> {
        let mut ring = self.take_ring(chunk, depth)?;
        let outcome = (|| {
            let parts = chunks(src.len(), chunk);
            let mut pending: Vec<Option<(Event, usize)>> = (0..depth).map(|_| None).collect();
            for (i, r) in parts.iter().enumerate() {
                let slot = i % depth;
                if let Some((event, j)) = pending[slot].take() {
                    let p = &parts[j];
                    self.settle_write(lane, event, dst, offset + p.start, &ring[slot], 0..p.len())?;
                }
                // Waits for the device to finish reading this staging buffer's previous chunk.
                ring[slot].as_mut_slice()?[..r.len()].copy_from_slice(&src[r.clone()]);
                let staging = &ring[slot];
                let event = self.retrying(None, || {
                    self.backend.write_staged(
                        lane.queue,
                        dst,
                        staging,
                        CopyRegion {
                            src_offset: 0,
                            dst_offset: offset + r.start,
                            len: r.len(),
                        },
                    )
                })?;
                pending[slot] = Some((event, i));
            }
            for (slot, event, j) in in_chunk_order(pending) {
                let p = &parts[j];
                self.settle_write(lane, event, dst, offset + p.start, &ring[slot], 0..p.len())?;
            }
            Ok(())
        })();
        // Staging buffers wait for pending device reads before reuse, so even after a failure
        // they can go back to the ring.
        self.give_ring(ring);
        outcome
    }

    pub(super) fn read_pipelined(
        &self,
        lane: &Lane<'_>,
        src: &DeviceBlock,
        offset: usize,
        dst: &mut [u8],
        chunk: usize,
        depth: usize,
    ) -> Result<()> {
        let mut ring = self.take_ring(chunk, depth)?;
        let outcome = (|| {
            let parts = chunks(dst.len(), chunk);
            let mut pending: Vec<Option<(Event, usize)>> = (0..depth).map(|_| None).collect();
            let mut finish =
                |slot: usize, event: Event, j: usize, ring: &mut Vec<PinnedBuffer>| -> Result<()> {
                    let p = parts[j].clone();
                    if let Err(e) = event.wait() {
                        let staging = &mut ring[slot];
                        self.retrying(Some(e), || {
                            self.backend
                                .read_staged(
                                    lane.queue,
                                    src,
                                    staging,
                                    CopyRegion {
                                        src_offset: offset + p.start,
                                        dst_offset: 0,
                                        len: p.len(),
                                    },
                                )?
                                .wait()
                        })?;
                    }
                    dst[p.clone()].copy_from_slice(&ring[slot].as_slice()?[..p.len()]);
                    lane.advance(p.len());
                    Ok(())
                };
            for (i, r) in parts.iter().enumerate() {
                let slot = i % depth;
                if let Some((event, j)) = pending[slot].take() {
                    finish(slot, event, j, &mut ring)?;
                }
                let staging = &mut ring[slot];
                let event = self.retrying(None, || {
                    self.backend.read_staged(
                        lane.queue,
                        src,
                        staging,
                        CopyRegion {
                            src_offset: offset + r.start,
                            dst_offset: 0,
                            len: r.len(),
                        },
                    )
                })?;
                pending[slot] = Some((event, i));
            }
            for (slot, event, j) in in_chunk_order(pending) {
                finish(slot, event, j, &mut ring)?;
            }
            Ok(())
        })();
        self.give_ring(ring);
        outcome
    }

    /// `depth` staging buffers of at least `chunk` bytes, from the pinned pool.
    pub(super) fn take_ring(&self, chunk: usize, depth: usize) -> Result<Vec<PinnedBuffer>> {
        (0..depth).map(|_| self.staging.take(chunk)).collect()
    }

    /// Gives a ring back to the pinned pool (its buffers may still have device work pending:
    /// their next user waits for it).
    pub(super) fn give_ring(&self, ring: Vec<PinnedBuffer>) {
        drop(ring);
    }
}

// The events still pending in a ring, with their slot, in the order of their chunks.
pub(super) fn in_chunk_order(pending: Vec<Option<(Event, usize)>>) -> Vec<(usize, Event, usize)> {
    let mut rest: Vec<(usize, Event, usize)> = pending
        .into_iter()
        .enumerate()
        .filter_map(|(slot, p)| p.map(|(event, j)| (slot, event, j)))
        .collect();
    rest.sort_by_key(|&(_, _, j)| j);
    rest
}
