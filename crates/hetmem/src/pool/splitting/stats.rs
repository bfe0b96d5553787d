//! What a [`SplittingResource`](super::SplittingResource) holds, counted and pictured.

/// What a [`SplittingResource`](super::SplittingResource) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SplittingStats {
    /// Segments held.
    pub segments: u64,
    /// Bytes in segments with memory behind them (of an expandable segment, what is
    /// committed).
    pub reserved_bytes: u64,
    /// Bytes in blocks handed out (freed blocks waiting for device work included).
    pub used_bytes: u64,
    /// The longest free range merged into its neighbours (freed blocks kept whole for reuse
    /// are free but not merged until a request needs the room).
    pub largest_free: u64,
    /// Segments allocated from the resource below, ever.
    pub segment_allocations: u64,
    /// Segments given back, ever.
    pub segment_releases: u64,
    /// Blocks carved, ever.
    pub carves: u64,
    /// Blocks handed out again whole, of the same length, right after being freed, ever.
    pub reuses: u64,
    /// Carves that committed memory of the expandable segment from the resource below, ever.
    pub grows: u64,
}

impl SplittingStats {
    /// Requests served with memory already held: neither a new segment nor a commit.
    pub fn hits(&self) -> u64 {
        (self.carves + self.reuses).saturating_sub(self.misses())
    }

    /// Requests that took memory from the resource below: a segment or a commit.
    pub fn misses(&self) -> u64 {
        self.segment_allocations + self.grows
    }

    /// The share of free segment bytes outside the longest free range: 0 when the free space
    /// is one piece, near 1 when it is many small pieces.
    pub fn fragmentation(&self) -> f64 {
        let free = self.reserved_bytes - self.used_bytes;
        match free {
            0 => 0.0,
            _ => 1.0 - self.largest_free as f64 / free as f64,
        }
    }
}

/// One segment as it is at a [`snapshot`](super::SplittingResource::snapshot): its size and
/// its ranges in address order, so that fragmentation can be seen and not only counted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "serde", derive(schemars::JsonSchema))]
pub struct SegmentSnapshot {
    /// Bytes in the segment (for an expandable segment, up to the end of what is committed or
    /// carved: the rest is address space only).
    pub size: u64,
    /// Whether it is an expandable segment.
    pub expandable: bool,
    /// Bytes of it with memory behind them (all of them, for a segment that is not
    /// expandable).
    pub committed: u64,
    /// Its ranges, tiling it.
    pub ranges: Vec<RangeSnapshot>,
}

/// One range of a [`SegmentSnapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "serde", derive(schemars::JsonSchema))]
pub struct RangeSnapshot {
    /// Where it starts in the segment.
    pub offset: u64,
    /// Its length.
    pub len: u64,
    /// Handed out (or freed with device work still pending), rather than free.
    pub used: bool,
    /// The live buffer whose copy it is ([`BufferSnapshot::id`]), in a memory manager's
    /// snapshot; `None` for free ranges and for used ones no buffer holds (kept by a cache
    /// above, or allocated outside buffers).
    ///
    /// [`BufferSnapshot::id`]: crate::manager::BufferSnapshot::id
    pub buffer: Option<u64>,
    /// The handle of the block carved here (0: none), to find its buffer.
    #[serde(skip)]
    pub(crate) handle: usize,
}
