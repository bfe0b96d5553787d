//! Verification: a CRC-32 of the destination against the source after a transfer, the read
//! side fetched again through staging (a second path).

use super::lane::Lane;
use super::TransferEngine;
use crate::backend::{CopyRegion, DeviceBlock};
use crate::error::{Error, Result};

impl TransferEngine {
    /// The bytes of a verified read, fetched again through another path than a direct read —
    /// a staged read — so that a corruption of one path that repeats on every call of it is
    /// caught too (a direct re-read would agree with it).
    pub(super) fn read_again(
        &self,
        lane: &Lane<'_>,
        src: &DeviceBlock,
        offset: usize,
        len: usize,
    ) -> Result<Vec<u8>> {
        let mut staging = self.staging.take(len)?;
        self.retrying(None, || {
            self.backend
                .read_staged(
                    lane.queue,
                    src,
                    &mut staging,
                    CopyRegion {
                        src_offset: offset,
                        dst_offset: 0,
                        len,
                    },
                )?
                .wait()
        })?;
        Ok(staging.as_slice()?[..len].to_vec())
    }

    /// With `verify` on, reads the destination back and compares checksums.
    pub(super) fn verify(
        &self,
        lane: &Lane<'_>,
        dst: &DeviceBlock,
        offset: usize,
        src: &[u8],
    ) -> Result<()> {
        if !self.config.verify {
            return Ok(());
        }
        let mut back = vec![0u8; src.len()];
        self.backend.read(lane.queue, dst, offset, &mut back)?;
        check_crc("host-to-device transfer", src, &back)
    }
}

/// Compares the CRC-32 of what was sent and what arrived.
pub(super) fn check_crc(what: &'static str, expected: &[u8], actual: &[u8]) -> Result<()> {
    let (e, a) = (crc32fast::hash(expected), crc32fast::hash(actual));
    if e == a {
        Ok(())
    } else {
        Err(Error::IntegrityMismatch {
            what,
            expected: e,
            actual: a,
        })
    }
}
