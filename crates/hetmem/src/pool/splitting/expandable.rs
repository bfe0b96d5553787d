//! The expandable segment of a [`SplittingResource`](super::SplittingResource): one reservation
//! of address space ([`Backend::reserve`]) that grows in place as requests are carved from its
//! end and gives back the memory of free ranges — PyTorch's expandable segments, which the
//! default stack uses wherever the backend has virtual memory.

use std::ops::Range;
use std::sync::Arc;

use super::arena::SegmentId;
use super::committed::Committed;
use crate::backend::{Backend, DeviceBlock};
use crate::error::{Error, Result};
use crate::resource::MemoryResource;

/// Growing the top commits this fraction of what is committed beyond what the carve needs.
const AHEAD: usize = 16;

/// The reservation, its segment in the arena, and which of its granules have memory behind
/// them.
pub(super) struct Expandable {
    pub(super) segment: SegmentId,
    /// Shared with commits in flight, which run without the allocator's lock.
    pub(super) reservation: Arc<DeviceBlock>,
    granule: usize,
    /// Granules with memory behind them, and those claimed for commits still in flight.
    committed: Committed,
    /// Of those, the ones claimed for commits still in flight (a trim must not give them back).
    claimed: Committed,
}

impl Expandable {
    /// Reserves `bytes` of `backend`'s address space in units of `granule`, for `segment`.
    pub(super) fn reserve(
        backend: &dyn Backend,
        bytes: usize,
        granule: usize,
        segment: SegmentId,
    ) -> Result<Self> {
        Ok(Expandable {
            segment,
            reservation: Arc::new(backend.reserve(bytes)?),
            granule,
            committed: Committed::default(),
            claimed: Committed::default(),
        })
    }

    /// Bytes of address space reserved.
    pub(super) fn size(&self) -> usize {
        self.reservation.size()
    }

    /// Bytes with memory behind them.
    pub(super) fn committed(&self) -> usize {
        self.committed.granules() * self.granule
    }

    /// Bytes up to the end of the last committed granule: the part of the segment worth
    /// showing.
    pub(super) fn extent(&self) -> usize {
        self.committed.end() * self.granule
    }

    /// Bytes of `offset..offset + len` with memory behind them.
    pub(super) fn committed_within(&self, offset: usize, len: usize) -> usize {
        let g = self.granule;
        let covering = offset / g..(offset + len).div_ceil(g);
        (self.committed.present(covering).into_iter())
            .map(|r| (r.end * g).min(offset + len) - (r.start * g).max(offset))
            .sum()
    }

    /// The runs of granules under `offset..offset + len` without memory — and, where that
    /// grows the segment's top and `ahead` is set, a sixteenth of what is committed beyond, so
    /// that a segment growing step by step makes fewer commits — marked committed and claimed
    /// now (the commits are made without the allocator's lock; [`Expandable::settle`] ends the
    /// claims); in bytes.
    pub(super) fn claim(&mut self, offset: usize, len: usize, ahead: bool) -> Vec<Range<usize>> {
        let g = self.granule;
        let mut covering = offset / g..(offset + len).div_ceil(g);
        if ahead && covering.end > self.committed.end() {
            let ahead = self.committed.granules() / AHEAD;
            covering.end = (covering.end + ahead).min(self.size() / g);
        }
        let missing = self.committed.missing(covering);
        for run in &missing {
            self.committed.insert(run.clone());
            self.claimed.insert(run.clone());
        }
        missing
            .into_iter()
            .map(|r| r.start * g..r.end * g)
            .collect()
    }

    /// Ends the claims `runs` (what [`Expandable::claim`] returned): the first `committed`
    /// have memory now, the rest failed and are taken back.
    pub(super) fn settle(&mut self, runs: &[Range<usize>], committed: usize) {
        let g = self.granule;
        for (i, run) in runs.iter().enumerate() {
            let granules = run.start / g..run.end / g;
            self.claimed.remove(granules.clone());
            if i >= committed {
                self.committed.remove(granules);
            }
        }
    }

    /// Gives back the memory of the granules wholly inside `free` (free ranges of the segment,
    /// by offset and length), from the highest address down, until no more than `keep` bytes
    /// are committed; the bytes given back. A failed call leaves its granules committed.
    pub(super) fn shrink(
        &mut self,
        upstream: &dyn MemoryResource,
        free: &[(usize, usize)],
        keep: usize,
    ) -> Result<u64> {
        let g = self.granule;
        let mut given = 0;
        for &(offset, len) in free.iter().rev() {
            let inside = offset.div_ceil(g)..(offset + len) / g;
            let present = self.committed.present(inside).into_iter();
            // Granules claimed for a commit in flight are not there to give back yet.
            let free_runs: Vec<_> = present.flat_map(|r| self.claimed.missing(r)).collect();
            for run in free_runs.into_iter().rev() {
                let excess = self.committed().saturating_sub(keep).div_ceil(g);
                if excess == 0 {
                    return Ok(given);
                }
                let run = run.end.saturating_sub(excess).max(run.start)..run.end;
                upstream.decommit(&self.reservation, run.start * g, run.len() * g)?;
                self.committed.remove(run.clone());
                given += (run.len() * g) as u64;
            }
        }
        Ok(given)
    }

    /// Gives back every committed byte, then the address space (once no commit holds it).
    pub(super) fn release(mut self, upstream: &dyn MemoryResource) -> Result<()> {
        self.shrink(upstream, &[(0, self.size())], 0)?;
        match Arc::try_unwrap(self.reservation) {
            Ok(reservation) => upstream.backend().release(reservation),
            Err(_) => Err(Error::invalid(
                "splitting: a commit still holds the reservation",
            )),
        }
    }
}
