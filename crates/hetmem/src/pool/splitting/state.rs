//! The splitting allocator's state behind its lock: the arena, the segments, the live views,
//! freed blocks waiting for device work, and the expandable segment.

use std::collections::HashMap;

use rustc_hash::FxHashMap;

use super::arena::{Arena, Carved, SegmentId};
use super::expandable::Expandable;
use crate::backend::{Backend, DeviceBlock, Event};

#[derive(Default)]
pub(super) struct State {
    pub(super) arena: Arena,
    pub(super) segments: HashMap<SegmentId, DeviceBlock>,
    /// Live views, by handle: the range each was carved from.
    pub(super) views: FxHashMap<usize, Carved>,
    /// Freed blocks whose device work may still run.
    pub(super) pending: Vec<(SegmentId, usize, Vec<Event>)>,
    /// The expandable segment, once reserved.
    pub(super) expandable: Option<Expandable>,
    /// The backend could not reserve one: carve from segments.
    pub(super) no_expandable: bool,
    /// Commits in flight, made without the lock: a carve over granules they claimed waits.
    pub(super) growing: usize,
    pub(super) segment_allocations: u64,
    pub(super) segment_releases: u64,
    pub(super) carves: u64,
    pub(super) grows: u64,
}

impl State {
    /// Bytes with memory behind them: every segment's, the expandable one's committed part.
    pub(super) fn reserved(&self) -> usize {
        let all = self.arena.reserved();
        self.expandable
            .as_ref()
            .map_or(all, |e| all - e.size() + e.committed())
    }

    /// The longest free range with memory behind it (of an expandable segment's, the bytes
    /// committed).
    pub(super) fn largest_free(&self) -> usize {
        let Some(e) = &self.expandable else {
            return self.arena.largest_free();
        };
        let own = (self.arena.free_ranges(e.segment).into_iter())
            .map(|(offset, len)| e.committed_within(offset, len))
            .max()
            .unwrap_or(0);
        own.max(self.arena.largest_free_except(e.segment))
    }

    /// Frees the pending blocks whose work is done.
    pub(super) fn collect(&mut self) {
        let arena = &mut self.arena;
        self.pending.retain_mut(|(segment, offset, after)| {
            after.retain(|e| !e.is_finished());
            let done = after.is_empty();
            if done {
                arena.free(*segment, *offset);
            }
            !done
        });
    }

    /// Merges a freed block kept whole (a view registered in `views`) into the arena; a view
    /// this allocator did not carve (swapped in from elsewhere) only loses its handle.
    pub(super) fn merge(&mut self, backend: &dyn Backend, view: DeviceBlock) {
        let carved = self.views.remove(&(view.raw_handle() as usize));
        // Letting go of a view's handle frees no memory; a failure leaves a handle behind.
        let _ = backend.release_view(view);
        if let Some(c) = carved {
            self.arena.free(c.segment, c.offset);
        }
    }

    /// Takes out every segment with nothing carved from it but blocks whose device work is
    /// still pending, to be released after that work (the backend orders a release after the
    /// events given with it). Blocks kept whole must have been merged first.
    pub(super) fn unused(&mut self) -> Vec<(DeviceBlock, Vec<Event>)> {
        self.collect();
        let mut after: HashMap<SegmentId, (usize, Vec<Event>)> = HashMap::new();
        for (segment, offset, events) in &self.pending {
            let len = self.arena.used_at(*segment, *offset).unwrap_or(0);
            let entry = after.entry(*segment).or_default();
            entry.0 += len;
            entry.1.extend(events.iter().cloned());
        }
        let arena = &mut self.arena;
        let expandable = self.expandable.as_ref().map(|e| e.segment);
        self.pending.retain(|(segment, offset, _)| {
            let only_pending = Some(*segment) != expandable
                && (after.get(segment)).is_some_and(|(len, _)| *len == arena.used_in(*segment));
            if only_pending {
                arena.free(*segment, *offset);
            }
            !only_pending
        });
        let mut unused = self.arena.unused_segments();
        unused.retain(|&id| Some(id) != expandable);
        let blocks: Vec<_> = (unused.into_iter())
            .filter_map(|id| {
                self.arena.remove_segment(id)?;
                let events = after.remove(&id).map(|(_, e)| e).unwrap_or_default();
                Some((self.segments.remove(&id)?, events))
            })
            .collect();
        self.segment_releases += blocks.len() as u64;
        blocks
    }
}
