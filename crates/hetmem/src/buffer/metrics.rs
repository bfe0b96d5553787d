//! Per-buffer metrics: what moved each way, how long it took, and when the buffer was last used.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{CoherenceState, Residency};
use crate::transfer::{Direction, DirectionCounters, DirectionStats};

/// A snapshot of one buffer's metrics (shared by the buffer and all its views). A transfer is
/// one sync of a side or one ranged direct access, however many ranges it moved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BufferMetrics {
    /// Host → device.
    pub host_to_device: DirectionStats,
    /// Device → host.
    pub device_to_host: DirectionStats,
    /// Device → device (copies between buffers, reallocation on resize).
    pub device_to_device: DirectionStats,
    /// When the buffer was last accessed (a guard, a read or a write), if ever.
    pub last_access: Option<Instant>,
    /// The coherence state now.
    pub state: CoherenceState,
    /// One allocation or two copies.
    pub residency: Residency,
    /// The buffer's length in bytes.
    pub bytes: usize,
}

/// The live counters behind [`BufferMetrics`].
pub(crate) struct MetricCells {
    pub(crate) created: Instant,
    /// Nanoseconds after `created` of the last access, plus one (0: never accessed).
    last_access: AtomicU64,
    pub(crate) transfers: DirectionCounters,
}

impl MetricCells {
    pub(crate) fn new() -> Self {
        MetricCells {
            created: Instant::now(),
            last_access: AtomicU64::new(0),
            transfers: DirectionCounters::default(),
        }
    }

    pub(crate) fn touch(&self) {
        let nanos = self.created.elapsed().as_nanos() as u64;
        self.last_access.store(nanos + 1, Ordering::Relaxed);
    }

    /// Records one transfer of `bytes` that started at `start`.
    pub(crate) fn record(&self, direction: Direction, bytes: usize, start: Instant) {
        self.transfers.record(direction, bytes, start);
    }

    pub(crate) fn last_access(&self) -> Option<Instant> {
        match self.last_access.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.created + Duration::from_nanos(n - 1)),
        }
    }
}
