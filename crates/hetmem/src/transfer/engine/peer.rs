//! Copies between the blocks of two devices: a peer copy where the drivers have one, otherwise
//! through host memory chunk by chunk.

use super::super::stats::Direction;
use super::lane::chunks;
use super::{Plan, TransferEngine};
use crate::backend::{check_block, CopyRegion, DeviceBlock};
use crate::error::Result;

impl TransferEngine {
    /// Copies `len` bytes from a block of this engine's device into a block of `target`'s
    /// device: a device copy when both are one backend, a peer copy where the two backends
    /// can ([`Backend::can_copy_to`](crate::backend::Backend::can_copy_to)), otherwise through host
    /// memory.
    pub fn copy_to(
        &self,
        src: &DeviceBlock,
        src_offset: usize,
        target: &TransferEngine,
        dst: &mut DeviceBlock,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        let plan = self.plan_copy_to(target, len);
        if plan == Plan::Direct {
            return self.copy(src, src_offset, dst, dst_offset, len);
        }
        check_block(self.backend_id, "copy source", src, src_offset, len)?;
        check_block(target.backend_id, "copy destination", dst, dst_offset, len)?;
        self.run(Direction::DeviceToDevice, len, || {
            if plan == Plan::Peer {
                let copied = self.retrying(None, || {
                    let event = self.backend.copy_to_peer(
                        self.queue(),
                        src,
                        target.backend.as_ref(),
                        dst,
                        CopyRegion {
                            src_offset,
                            dst_offset,
                            len,
                        },
                    )?;
                    event.map(|e| e.wait()).transpose()
                })?;
                if copied.is_some() {
                    return Ok(());
                }
            }
            let chunk = self.config.chunk_size.min(len.max(1));
            let mut bounce = vec![0u8; chunk];
            for r in chunks(len, chunk) {
                let part = &mut bounce[..r.len()];
                self.read(src, src_offset + r.start, part)?;
                target.write(dst, dst_offset + r.start, part)?;
            }
            Ok(())
        })
    }

    /// The plan for a cross-device copy of `len` bytes to `target`.
    pub fn plan_copy_to(&self, target: &TransferEngine, len: usize) -> Plan {
        if target.backend_id == self.backend_id {
            return Plan::Direct;
        }
        if self.backend.can_copy_to(target.backend.as_ref()) {
            return Plan::Peer;
        }
        let chunk = self.config.chunk_size;
        Plan::ThroughHost {
            chunk,
            chunks: len.div_ceil(chunk),
        }
    }
}
