//! Stale byte ranges of one side of a buffer, and the transfers that bring them up to date.
// A `Vec` of one `Range` is what this module means: one transfer covering that range.
#![allow(clippy::single_range_in_vec_init)]

use std::ops::Range;

use smallvec::{smallvec, SmallVec};

/// Ranges, the first inline (as small as a `Vec`): a buffer's stale set is mostly one range (or none), so
/// marking a side stale and planning its transfer allocate nothing.
pub(crate) type Ranges = SmallVec<[Range<usize>; 1]>;

/// Neighbouring stale ranges closer than this are moved as one transfer: one more transfer call
/// costs more than moving this many extra bytes (a blocking call is tens of µs on PoCL; 64 KiB
/// moves in a few µs at memory bandwidth).
pub(crate) const MERGE_GAP: usize = 64 * 1024;

/// When the merged transfers would cover at least this fraction of the buffer, the whole buffer
/// moves in one call instead.
const WHOLE_FRACTION: f64 = 0.75;

/// Most ranges kept; past it the closest neighbours are merged, so scattered writes cost bounded
/// memory and bounded work per sync.
const MAX_RANGES: usize = 1024;

/// A set of byte ranges, kept sorted, disjoint, and merged where they touch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RangeSet {
    ranges: Ranges,
}

impl RangeSet {
    /// The set holding `0..len` (empty for `len == 0`).
    pub(crate) fn full(len: usize) -> Self {
        let mut set = RangeSet::default();
        set.insert(0..len);
        set
    }

    pub(crate) fn clear(&mut self) {
        self.ranges.clear();
    }

    /// The ranges, in order.
    pub(crate) fn ranges(&self) -> &[Range<usize>] {
        &self.ranges
    }

    /// Total bytes covered.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.ranges.iter().map(|r| r.len()).sum()
    }

    /// Adds `range`, merging it with every range it overlaps or touches.
    pub(crate) fn insert(&mut self, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        // First range that ends at or after the new start, and first that starts after its end.
        let first = self.ranges.partition_point(|r| r.end < range.start);
        let last = self.ranges.partition_point(|r| r.start <= range.end);
        let merged = if first < last {
            self.ranges[first].start.min(range.start)..self.ranges[last - 1].end.max(range.end)
        } else {
            range
        };
        self.ranges.drain(first..last);
        self.ranges.insert(first, merged);
        if self.ranges.len() > MAX_RANGES {
            self.coalesce();
        }
    }

    /// The set minus `exclude`.
    pub(crate) fn without(&self, exclude: &Range<usize>) -> RangeSet {
        if exclude.is_empty() {
            return self.clone();
        }
        let mut out = Ranges::new();
        for r in &self.ranges {
            if r.end <= exclude.start || r.start >= exclude.end {
                out.push(r.clone());
                continue;
            }
            if r.start < exclude.start {
                out.push(r.start..exclude.start);
            }
            if r.end > exclude.end {
                out.push(exclude.end..r.end);
            }
        }
        RangeSet { ranges: out }
    }

    /// The transfers that cover the set within a buffer of `len` bytes: neighbours closer than
    /// [`MERGE_GAP`] merged, or the whole buffer when that covers nearly as much anyway.
    pub(crate) fn plan(&self, len: usize) -> Ranges {
        let mut out = Ranges::new();
        for r in &self.ranges {
            match out.last_mut() {
                Some(last) if r.start - last.end <= MERGE_GAP => last.end = r.end,
                _ => out.push(r.clone()),
            }
        }
        let covered: usize = out.iter().map(|r| r.len()).sum();
        if out.len() > 1 && covered as f64 >= WHOLE_FRACTION * len as f64 {
            return smallvec![0..len];
        }
        out
    }

    /// [`RangeSet::plan`] leaving out `exclude`, even where merging would have covered it: bytes
    /// about to be overwritten whole, or where the two sides differ and must not be copied.
    pub(crate) fn plan_without(&self, len: usize, exclude: &Range<usize>) -> Ranges {
        RangeSet {
            ranges: self.plan(len),
        }
        .without(exclude)
        .ranges
    }

    /// Halves the number of ranges by merging across the smallest gaps.
    fn coalesce(&mut self) {
        let mut gaps: Vec<usize> = self
            .ranges
            .windows(2)
            .map(|w| w[1].start - w[0].end)
            .collect();
        gaps.sort_unstable();
        let limit = gaps[gaps.len() / 2];
        let mut out = Ranges::with_capacity(self.ranges.len() / 2 + 1);
        for r in self.ranges.drain(..) {
            match out.last_mut() {
                Some(last) if r.start - last.end <= limit => last.end = r.end,
                _ => out.push(r),
            }
        }
        self.ranges = out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reference model: one flag per byte.
    fn bitmap(set: &RangeSet, len: usize) -> Vec<bool> {
        let mut bits = vec![false; len];
        for r in set.ranges() {
            bits[r.clone()].iter_mut().for_each(|b| *b = true);
        }
        bits
    }

    fn well_formed(set: &RangeSet) -> bool {
        set.ranges().iter().all(|r| !r.is_empty())
            && set.ranges().windows(2).all(|w| w[0].end < w[1].start)
    }

    #[test]
    fn inserts_merge_overlapping_and_touching_ranges() {
        let mut s = RangeSet::default();
        s.insert(10..20);
        s.insert(30..40);
        s.insert(20..25);
        assert_eq!(s.ranges(), &[10..25, 30..40]);
        s.insert(5..35);
        assert_eq!(s.ranges(), &[5..40]);
        s.insert(0..0);
        assert_eq!(s.bytes(), 35);
        assert_eq!(s.without(&(10..20)).ranges(), &[5..10, 20..40]);
    }

    #[test]
    fn plans_merge_near_neighbours_and_go_whole_when_cheaper() {
        let mut s = RangeSet::default();
        s.insert(0..4);
        s.insert(100..104);
        s.insert(10 * MERGE_GAP..10 * MERGE_GAP + 4);
        let len = 64 << 20;
        assert_eq!(
            &s.plan(len)[..],
            [0..104, 10 * MERGE_GAP..10 * MERGE_GAP + 4]
        );
        let mut most = RangeSet::default();
        most.insert(0..len / 2);
        most.insert(len / 2 + 2 * MERGE_GAP..len);
        assert_eq!(&most.plan(len)[..], [0..len]);
    }

    #[test]
    fn scattered_writes_stay_bounded() {
        let mut s = RangeSet::default();
        for i in 0..10 * MAX_RANGES {
            s.insert(i * 10..i * 10 + 1);
        }
        assert!(s.ranges().len() <= MAX_RANGES);
        assert!(well_formed(&s));
        // Coalescing only grows the set: every written byte is still covered.
        let bits = bitmap(&s, 10 * 10 * MAX_RANGES);
        assert!((0..10 * MAX_RANGES).all(|i| bits[i * 10]));
    }

    proptest! {
        #[test]
        fn matches_a_bitmap(ops in prop::collection::vec((0usize..200, 0usize..40, any::<bool>()), 0..60)) {
            let len = 240;
            let mut set = RangeSet::default();
            let mut model = vec![false; len];
            for (start, n, remove) in ops {
                let r = start..start + n;
                if remove {
                    set = set.without(&r);
                    model[r].iter_mut().for_each(|b| *b = false);
                } else {
                    set.insert(r.clone());
                    model[r].iter_mut().for_each(|b| *b = true);
                }
                prop_assert!(well_formed(&set));
                prop_assert_eq!(bitmap(&set, len), model.clone());
            }
            // A plan covers every stale byte and stays inside the buffer.
            let planned = RangeSet { ranges: set.plan(len) };
            let covered = bitmap(&planned, len);
            prop_assert!(model.iter().zip(&covered).all(|(m, c)| !m || *c));
        }
    }
}
