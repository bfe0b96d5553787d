//! The bookkeeping of the splitting allocator: segments tiled by ranges, best fit over the free
//! ranges, and merging of free neighbours. Pure — no memory is touched — so it is checked
//! against a model on its own (below).

use std::collections::{BTreeMap, BTreeSet};

/// Which segment a range is in: an index into the arena's segment slots.
pub(super) type SegmentId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    Used,
}

/// One segment: its ranges by offset, which tile it exactly.
struct Segment {
    size: usize,
    ranges: BTreeMap<usize, (usize, State)>,
}

/// Segments and their ranges. Every byte of every segment is in exactly one range; no two free
/// ranges touch (they are merged when freed).
#[derive(Default)]
pub(super) struct Arena {
    segments: Vec<Option<Segment>>,
    /// Free ranges as `(len, segment, offset)`: the first at or above a length is its best fit
    /// (smallest, then oldest segment, then lowest offset).
    free: BTreeSet<(usize, SegmentId, usize)>,
    reserved: usize,
    used: usize,
}

/// A range handed out: where, and how long (at least what was asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Carved {
    pub(super) segment: SegmentId,
    pub(super) offset: usize,
    pub(super) len: usize,
}

/// One range of a segment, for snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RangeInfo {
    pub(super) offset: usize,
    pub(super) len: usize,
    pub(super) used: bool,
}

impl Arena {
    /// Adds a free segment of `size` bytes.
    pub(super) fn add_segment(&mut self, size: usize) -> SegmentId {
        let segment = Segment {
            size,
            ranges: BTreeMap::from([(0, (size, State::Free))]),
        };
        let id = match self.segments.iter().position(Option::is_none) {
            Some(slot) => {
                self.segments[slot] = Some(segment);
                slot
            }
            None => {
                self.segments.push(Some(segment));
                self.segments.len() - 1
            }
        };
        self.free.insert((size, id, 0));
        self.reserved += size;
        id
    }

    /// The best-fitting free range for `len` bytes, split when what is left is at least
    /// `min_rest` bytes (a smaller rest goes with the range, so that no useless slivers are
    /// made); `None` when no free range is long enough.
    pub(super) fn carve(&mut self, len: usize, min_rest: usize) -> Option<Carved> {
        let &(free_len, segment, offset) = self.free.range((len, 0, 0)..).next()?;
        self.free.remove(&(free_len, segment, offset));
        let ranges = &mut self.segments[segment].as_mut()?.ranges;
        let rest = free_len - len;
        let given = if rest > 0 && rest >= min_rest {
            ranges.insert(offset + len, (rest, State::Free));
            self.free.insert((rest, segment, offset + len));
            len
        } else {
            free_len
        };
        ranges.insert(offset, (given, State::Used));
        self.used += given;
        Some(Carved {
            segment,
            offset,
            len: given,
        })
    }

    /// Frees the used range at `offset` of `segment`, merged with its free neighbours; its
    /// length, or `None` if no used range starts there.
    pub(super) fn free(&mut self, segment: SegmentId, offset: usize) -> Option<usize> {
        let ranges = &mut self.segments.get_mut(segment)?.as_mut()?.ranges;
        let &(len, state) = ranges.get(&offset)?;
        if state != State::Used {
            return None;
        }
        let (mut start, mut merged) = (offset, len);
        if let Some(&(next, State::Free)) = ranges.get(&(offset + len)) {
            ranges.remove(&(offset + len));
            self.free.remove(&(next, segment, offset + len));
            merged += next;
        }
        if let Some((&before, &(before_len, State::Free))) = ranges.range(..offset).next_back() {
            ranges.remove(&offset);
            self.free.remove(&(before_len, segment, before));
            start = before;
            merged += before_len;
        }
        ranges.insert(start, (merged, State::Free));
        self.free.insert((merged, segment, start));
        self.used -= len;
        Some(len)
    }

    /// The segments with nothing carved from them.
    pub(super) fn unused_segments(&self) -> Vec<SegmentId> {
        (self.segments.iter().enumerate())
            .filter_map(|(id, s)| s.as_ref().filter(|s| is_unused(s)).map(|_| id))
            .collect()
    }

    /// Takes an unused segment out; its size, or `None` if it is in use or absent.
    pub(super) fn remove_segment(&mut self, segment: SegmentId) -> Option<usize> {
        let slot = self.segments.get_mut(segment)?;
        let size = slot.as_ref().filter(|s| is_unused(s))?.size;
        *slot = None;
        self.free.remove(&(size, segment, 0));
        self.reserved -= size;
        Some(size)
    }

    /// The length of the used range at `offset` of `segment`.
    pub(super) fn used_at(&self, segment: SegmentId, offset: usize) -> Option<usize> {
        let ranges = &self.segments.get(segment)?.as_ref()?.ranges;
        ranges
            .get(&offset)
            .filter(|r| r.1 == State::Used)
            .map(|r| r.0)
    }

    /// Bytes in the used ranges of `segment`.
    pub(super) fn used_in(&self, segment: SegmentId) -> usize {
        (self.segments.get(segment).and_then(Option::as_ref)).map_or(0, |s| {
            s.ranges
                .values()
                .filter(|r| r.1 == State::Used)
                .map(|r| r.0)
                .sum()
        })
    }

    /// Bytes in segments.
    pub(super) fn reserved(&self) -> usize {
        self.reserved
    }

    /// Bytes in used ranges (what was asked, rounded, and any unsplit rest).
    pub(super) fn used(&self) -> usize {
        self.used
    }

    /// The longest free range.
    pub(super) fn largest_free(&self) -> usize {
        self.free.last().map_or(0, |&(len, _, _)| len)
    }

    /// The longest free range outside segment `except`.
    pub(super) fn largest_free_except(&self, except: SegmentId) -> usize {
        (self.free.iter().rev())
            .find(|&&(_, segment, _)| segment != except)
            .map_or(0, |&(len, _, _)| len)
    }

    /// The free ranges of `segment` as `(offset, len)`, in address order.
    pub(super) fn free_ranges(&self, segment: SegmentId) -> Vec<(usize, usize)> {
        let Some(Some(s)) = self.segments.get(segment) else {
            return Vec::new();
        };
        (s.ranges.iter())
            .filter(|(_, r)| r.1 == State::Free)
            .map(|(&offset, &(len, _))| (offset, len))
            .collect()
    }

    /// Live segments.
    pub(super) fn segment_count(&self) -> usize {
        self.segments.iter().flatten().count()
    }

    /// Every segment's id, size and ranges in address order.
    pub(super) fn layout(&self) -> Vec<(SegmentId, usize, Vec<RangeInfo>)> {
        (self.segments.iter().enumerate())
            .filter_map(|(id, s)| {
                let s = s.as_ref()?;
                let ranges = (s.ranges.iter())
                    .map(|(&offset, &(len, state))| RangeInfo {
                        offset,
                        len,
                        used: state == State::Used,
                    })
                    .collect();
                Some((id, s.size, ranges))
            })
            .collect()
    }
}

fn is_unused(segment: &Segment) -> bool {
    segment.ranges.len() == 1 && segment.ranges.get(&0) == Some(&(segment.size, State::Free))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Carve this many units (a unit is 512 bytes), growing a segment if none fits.
        Carve(usize),
        /// Free the live range at this index (modulo the count).
        Free(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (1usize..64).prop_map(Op::Carve),
            2 => any::<usize>().prop_map(Op::Free),
        ]
    }

    /// The arena's layout against what the model holds live: ranges tile each segment, no two
    /// free ranges touch, the live ranges are exactly the used ones, and the totals add up.
    fn check(arena: &Arena, live: &[Carved]) {
        let (mut used, mut reserved) = (0, 0);
        let mut used_ranges = Vec::new();
        for (id, size, ranges) in arena.layout() {
            reserved += size;
            let mut at = 0;
            let mut previous_free = false;
            for r in &ranges {
                assert_eq!(r.offset, at, "ranges tile segment {id}");
                assert!(r.len > 0);
                assert!(!previous_free || r.used, "two free neighbours in {id}");
                previous_free = !r.used;
                at += r.len;
                if r.used {
                    used += r.len;
                    used_ranges.push((id, r.offset, r.len));
                }
            }
            assert_eq!(at, size, "segment {id} is covered exactly");
        }
        let mut expected: Vec<_> = live.iter().map(|c| (c.segment, c.offset, c.len)).collect();
        expected.sort_unstable();
        used_ranges.sort_unstable();
        assert_eq!(used_ranges, expected, "the used ranges are the live ones");
        assert_eq!((arena.used(), arena.reserved()), (used, reserved));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn carving_and_freeing_keep_every_byte_accounted(ops in prop::collection::vec(op(), 1..40)) {
            const UNIT: usize = 512;
            let mut arena = Arena::default();
            let mut live: Vec<Carved> = Vec::new();
            for op in ops {
                match op {
                    Op::Carve(units) => {
                        let len = units * UNIT;
                        let carved = match arena.carve(len, 4 * UNIT) {
                            Some(c) => c,
                            None => {
                                arena.add_segment((len * 2).max(32 * UNIT));
                                arena.carve(len, 4 * UNIT).expect("a new segment fits")
                            }
                        };
                        prop_assert!(carved.len >= len && carved.len < len + 4 * UNIT);
                        live.push(carved);
                    }
                    Op::Free(i) if !live.is_empty() => {
                        let c = live.swap_remove(i % live.len());
                        prop_assert_eq!(arena.free(c.segment, c.offset), Some(c.len));
                        prop_assert_eq!(arena.free(c.segment, c.offset), None, "freed twice");
                    }
                    Op::Free(_) => {}
                }
                check(&arena, &live);
            }
            for c in live.drain(..) {
                arena.free(c.segment, c.offset);
            }
            check(&arena, &live);
            let unused = arena.unused_segments();
            prop_assert_eq!(unused.len(), arena.segment_count(), "merging is complete");
            for id in unused {
                prop_assert!(arena.remove_segment(id).is_some());
            }
            prop_assert_eq!(arena.reserved(), 0);
        }
    }

    #[test]
    fn best_fit_takes_the_smallest_range_that_fits() {
        let mut arena = Arena::default();
        let big = arena.add_segment(1000);
        let small = arena.add_segment(300);
        let c = arena.carve(250, 1).unwrap();
        assert_eq!((c.segment, c.offset, c.len), (small, 0, 250));
        let c = arena.carve(40, 100).unwrap();
        assert_eq!(
            (c.segment, c.offset, c.len),
            (small, 250, 50),
            "the smallest fit; a 10-byte rest under min_rest goes with it"
        );
        let c = arena.carve(100, 1).unwrap();
        assert_eq!((c.segment, c.offset, c.len), (big, 0, 100));
        assert_eq!(arena.carve(950, 1), None, "900 bytes are left");
        assert_eq!(arena.largest_free(), 900);
        assert_eq!(arena.free(big, 1), None, "no range starts there");
        assert_eq!(arena.free(big, 0), Some(100));
        assert_eq!(arena.largest_free(), 1000, "merged with its free neighbour");
    }
}
