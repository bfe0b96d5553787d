//! Which granules of an expandable segment have memory behind them: runs of granules, so that
//! growing and shrinking make one backend call per run rather than per granule.

use std::collections::BTreeMap;
use std::ops::Range;

/// Committed runs of granule indices, `start → end`, none touching another.
#[derive(Debug, Default)]
pub(super) struct Committed {
    runs: BTreeMap<usize, usize>,
    granules: usize,
}

impl Committed {
    /// The runs of `range` that are not committed.
    pub(super) fn missing(&self, range: Range<usize>) -> Vec<Range<usize>> {
        let mut missing = Vec::new();
        if range.is_empty() {
            return missing;
        }
        let mut at = range.start;
        for (start, end) in self.overlapping(&range) {
            if start > at {
                missing.push(at..start);
            }
            at = at.max(end);
        }
        if at < range.end {
            missing.push(at..range.end);
        }
        missing
    }

    /// The committed runs inside `range`, clipped to it.
    pub(super) fn present(&self, range: Range<usize>) -> Vec<Range<usize>> {
        (self.overlapping(&range).into_iter())
            .map(|(s, e)| s.max(range.start)..e.min(range.end))
            .collect()
    }

    fn overlapping(&self, range: &Range<usize>) -> Vec<(usize, usize)> {
        if range.is_empty() {
            return Vec::new();
        }
        let before = self.runs.range(..range.start).next_back();
        let first = before.filter(|&(_, &end)| end > range.start);
        (first
            .into_iter()
            .chain(self.runs.range(range.start..range.end)))
        .map(|(&s, &e)| (s, e))
        .collect()
    }

    /// Marks `range` committed (it was not, by the caller's `missing`).
    pub(super) fn insert(&mut self, range: Range<usize>) {
        let (mut start, mut end) = (range.start, range.end);
        self.granules += range.len();
        if let Some((&s, &e)) = self.runs.range(..=start).next_back() {
            if e == start {
                self.runs.remove(&s);
                start = s;
            }
        }
        if let Some(e) = self.runs.remove(&end) {
            end = e;
        }
        self.runs.insert(start, end);
    }

    /// Marks `range` (committed, by the caller's `present`) not committed.
    pub(super) fn remove(&mut self, range: Range<usize>) {
        let Some((&s, &e)) = self.runs.range(..=range.start).next_back() else {
            return;
        };
        self.runs.remove(&s);
        if s < range.start {
            self.runs.insert(s, range.start);
        }
        if range.end < e {
            self.runs.insert(range.end, e);
        }
        self.granules -= range.len();
    }

    /// Granules committed.
    pub(super) fn granules(&self) -> usize {
        self.granules
    }

    /// One past the last committed granule.
    pub(super) fn end(&self) -> usize {
        self.runs.last_key_value().map_or(0, |(_, &e)| e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn runs_match_a_bitmap(ops in prop::collection::vec((0usize..64, 1usize..16, any::<bool>()), 0..50)) {
            let mut committed = Committed::default();
            let mut bits = [false; 80];
            for (start, len, commit) in ops {
                let range = start..start + len;
                if commit {
                    for r in committed.missing(range.clone()) {
                        committed.insert(r);
                    }
                } else {
                    for r in committed.present(range.clone()) {
                        committed.remove(r);
                    }
                }
                bits[range].fill(commit);
                let expected: Vec<usize> = (0..80).filter(|&g| bits[g]).collect();
                let actual: Vec<usize> = committed.present(0..80).into_iter().flatten().collect();
                prop_assert_eq!(&actual, &expected);
                prop_assert_eq!(committed.granules(), expected.len());
                let runs: Vec<_> = committed.runs.iter().collect();
                prop_assert!(runs.windows(2).all(|w| w[0].1 < w[1].0), "runs never touch");
            }
        }
    }
}
