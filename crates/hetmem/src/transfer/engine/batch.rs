//! Batches of small writes: enqueued together from the caller's memory, or through one staging
//! buffer, and waited for once.

use super::super::stats::Direction;
use super::lane::Lane;
use super::{Plan, TransferEngine};
use crate::backend::{check_block, CopyRegion, DeviceBlock, StagingBuffer, UserEvent, WritePart};
use crate::error::{Error, Result};

/// One write of a batch.
#[derive(Debug)]
pub struct BatchWrite<'a> {
    /// Destination block.
    pub dst: &'a mut DeviceBlock,
    /// Byte offset in the block.
    pub offset: usize,
    /// Bytes to write.
    pub src: &'a [u8],
}

impl TransferEngine {
    /// The plan for a batch of writes ([`plan_batch`](super::plan_batch)).
    pub fn plan_batch(&self, items: &[BatchWrite<'_>]) -> Plan {
        let bytes = items.iter().map(|i| i.src.len()).sum();
        super::plan_batch(&self.caps, &self.config, items.len(), bytes)
    }

    /// Writes every item, as one batch where the backend copies asynchronously: every write
    /// is enqueued without waiting (from one page-locked staging buffer on a discrete GPU), and
    /// the engine waits once. Every range is checked before anything is written.
    pub fn write_batch(&self, items: &mut [BatchWrite<'_>]) -> Result<()> {
        self.write_batch_on(&Lane::new(self.queue(), None), items)
    }

    /// [`TransferEngine::write_batch`] on `lane`.
    pub(crate) fn write_batch_on(
        &self,
        lane: &Lane<'_>,
        items: &mut [BatchWrite<'_>],
    ) -> Result<()> {
        let mut total = 0usize;
        for item in items.iter() {
            check_block(
                self.backend_id,
                "batch destination",
                item.dst,
                item.offset,
                item.src.len(),
            )?;
            total = total
                .checked_add(item.src.len())
                .ok_or(Error::SizeOverflow { what: "batch size" })?;
        }
        if total == 0 {
            return Ok(());
        }
        self.run(Direction::HostToDevice, total, || {
            match self.plan_batch(items) {
                Plan::BatchedStaged { .. } => {
                    let mut staging = self.staging.take(total)?;
                    self.write_batch_staged(lane, items, &mut staging)
                }
                // Batched, or Direct: the backend's scattered write makes one call per item
                // where it cannot enqueue them together.
                plan => {
                    let queues = match plan {
                        Plan::Batched { queues, .. } => queues,
                        _ => items.len(),
                    };
                    let parts: Vec<WritePart> = items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| WritePart {
                            block: i,
                            offset: item.offset,
                            src: item.src,
                        })
                        .collect();
                    let mut blocks: Vec<&mut DeviceBlock> =
                        items.iter_mut().map(|item| &mut *item.dst).collect();
                    self.write_parts(lane, &mut blocks, &parts, parts.len(), queues)
                }
            }
        })
    }

    pub(super) fn write_batch_staged(
        &self,
        lane: &Lane<'_>,
        items: &mut [BatchWrite<'_>],
        staging: &mut StagingBuffer,
    ) -> Result<()> {
        let bytes = staging.as_mut_slice()?;
        let mut at = 0;
        let mut places = Vec::with_capacity(items.len());
        for item in items.iter() {
            bytes[at..at + item.src.len()].copy_from_slice(item.src);
            places.push(at);
            at += item.src.len();
        }
        // The writes wait behind a gate until all are enqueued: the device's threads then do
        // not contend with this one for the queue on every enqueue. (Dropped early on a
        // failure, the gate completes and releases what was enqueued.) A backend whose calls
        // run on the caller's thread has no device threads to keep away: no gate there.
        let gate = match self.caps.async_copies {
            true => Some(self.backend.create_user_event()?),
            false => None,
        };
        if let Some(gate) = &gate {
            self.backend.enqueue_wait(lane.queue, gate.event())?;
        }
        let mut events = Vec::with_capacity(items.len());
        for (item, &from) in items.iter_mut().zip(&places) {
            let (dst, offset, len) = (&mut *item.dst, item.offset, item.src.len());
            events.push(self.retrying(None, || {
                self.backend.write_staged(
                    lane.queue,
                    dst,
                    staging,
                    CopyRegion {
                        src_offset: from,
                        dst_offset: offset,
                        len,
                    },
                )
            })?);
        }
        gate.map_or(Ok(()), UserEvent::complete)?;
        for ((item, &from), event) in items.iter_mut().zip(&places).zip(events) {
            let len = item.src.len();
            self.settle_write(
                lane,
                event,
                item.dst,
                item.offset,
                staging,
                from..from + len,
            )?;
        }
        Ok(())
    }
}
