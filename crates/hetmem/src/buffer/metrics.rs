//! Per-buffer metrics: what moved each way, how long it took, and when the buffer was last used.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{CoherenceState, Residency};

/// The way bytes moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Direction {
    /// Host copy → device copy.
    HostToDevice,
    /// Device copy → host copy.
    DeviceToHost,
    /// Within the device (copies between buffers, reallocation on resize).
    DeviceToDevice,
}

/// Transfers in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DirectionMetrics {
    /// Transfers performed (one per sync of a side or ranged direct access, however many
    /// ranges it moved).
    pub transfers: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Time spent moving them.
    pub time: Duration,
}

impl DirectionMetrics {
    /// Average bandwidth in bytes per second, when anything took measurable time.
    pub fn bandwidth(&self) -> Option<f64> {
        let secs = self.time.as_secs_f64();
        (secs > 0.0).then(|| self.bytes as f64 / secs)
    }
}

/// A snapshot of one buffer's metrics (shared by the buffer and all its views).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BufferMetrics {
    /// Host → device.
    pub host_to_device: DirectionMetrics,
    /// Device → host.
    pub device_to_host: DirectionMetrics,
    /// Device → device.
    pub device_to_device: DirectionMetrics,
    /// When the buffer was last accessed (a guard, a read or a write), if ever.
    pub last_access: Option<Instant>,
    /// The coherence state now.
    pub state: CoherenceState,
    /// One allocation or two copies.
    pub residency: Residency,
    /// The buffer's length in bytes.
    pub bytes: usize,
}

#[derive(Default)]
struct DirectionCells {
    transfers: AtomicU64,
    bytes: AtomicU64,
    nanos: AtomicU64,
}

/// The live counters behind [`BufferMetrics`].
pub(crate) struct MetricCells {
    created: Instant,
    /// Nanoseconds after `created` of the last access, plus one (0: never accessed).
    last_access: AtomicU64,
    directions: [DirectionCells; 3],
}

impl MetricCells {
    pub(crate) fn new() -> Self {
        MetricCells {
            created: Instant::now(),
            last_access: AtomicU64::new(0),
            directions: Default::default(),
        }
    }

    pub(crate) fn touch(&self) {
        let nanos = self.created.elapsed().as_nanos() as u64;
        self.last_access.store(nanos + 1, Ordering::Relaxed);
    }

    /// Records one transfer of `bytes` that started at `start`.
    pub(crate) fn record(&self, direction: Direction, bytes: usize, start: Instant) {
        let cells = &self.directions[direction as usize];
        cells.transfers.fetch_add(1, Ordering::Relaxed);
        cells.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        let nanos = start.elapsed().as_nanos() as u64;
        cells.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub(crate) fn direction(&self, direction: Direction) -> DirectionMetrics {
        let cells = &self.directions[direction as usize];
        DirectionMetrics {
            transfers: cells.transfers.load(Ordering::Relaxed),
            bytes: cells.bytes.load(Ordering::Relaxed),
            time: Duration::from_nanos(cells.nanos.load(Ordering::Relaxed)),
        }
    }

    pub(crate) fn last_access(&self) -> Option<Instant> {
        match self.last_access.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.created + Duration::from_nanos(n - 1)),
        }
    }
}
