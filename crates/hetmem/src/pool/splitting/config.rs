//! The rules of a [`SplittingResource`](super::SplittingResource).

/// The rules of a [`SplittingResource`](super::SplittingResource) (see its documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplittingConfig {
    /// Requests up to this size go straight to the resource below; larger ones are carved.
    /// 0 by default: small blocks share the segments too (passing them through made each a
    /// backend allocation whenever a cache in front missed).
    pub split_above: usize,
    /// Blocks are multiples of this (at least the device's alignment).
    pub granularity: usize,
    /// Requests below this share segments of `small_segment` bytes.
    pub small_request: usize,
    /// The segment size for requests below `small_request`.
    pub small_segment: usize,
    /// Larger requests get a segment of their size rounded up to this.
    pub segment_rounding: usize,
    /// Where the backend has virtual memory ([`Backend::commit_granularity`]), carve from one
    /// expandable segment — address space reserved once, memory committed as the segment grows
    /// and given back from its free ranges — rather than from segments added one by one.
    ///
    /// [`Backend::commit_granularity`]: crate::backend::Backend::commit_granularity
    pub expandable: bool,
    /// For an expandable segment: growing first gives back the memory of free granules (from
    /// the top) past this percentage of the bytes carved, trading commits for footprint, and
    /// commits nothing ahead (measured on a recorded key/value-cache trace, 12: 1.11× its live
    /// bytes at most but a commit every third request; `None`: 1.39×, a commit every 60).
    /// `None`, the default, keeps free memory until a trim — when a limit or the device runs
    /// short, or the manager trims idle pools — as PyTorch does, and commits a sixteenth of
    /// what is committed ahead whenever the segment grows at its top.
    pub free_committed_percent: Option<u32>,
}

impl Default for SplittingConfig {
    /// Carve every request, 512-byte granularity, an expandable segment where the backend has
    /// virtual memory; otherwise segments for requests under 10 MiB of an eighth of what is
    /// held (2 to 20 MiB, PyTorch's 20 MiB at most), 2 MiB rounding above.
    fn default() -> Self {
        SplittingConfig {
            split_above: 0,
            granularity: 512,
            small_request: 10 << 20,
            small_segment: 20 << 20,
            segment_rounding: 2 << 20,
            expandable: true,
            free_committed_percent: None,
        }
    }
}
