//! Per-buffer metrics: what moved each way, how long it took, and when the buffer was last used.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::{CoherenceState, Residency};
use crate::record::{Action, Recorder};
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
    /// Where each transfer is also recorded, with the buffer's id there: set once, by a
    /// manager that records ([`crate::record`]).
    trace: OnceLock<(Arc<Recorder>, u64, usize)>,
}

impl MetricCells {
    pub(crate) fn new() -> Self {
        MetricCells {
            created: Instant::now(),
            last_access: AtomicU64::new(0),
            transfers: DirectionCounters::default(),
            trace: OnceLock::new(),
        }
    }

    pub(crate) fn touch(&self) {
        let nanos = self.created.elapsed().as_nanos() as u64;
        self.last_access.store(nanos + 1, Ordering::Relaxed);
    }

    /// Records one transfer of `bytes` that started at `start`.
    pub(crate) fn record(&self, direction: Direction, bytes: usize, start: Instant) {
        self.transfers.record(direction, bytes, start);
        if let Some((recorder, id, queue)) = self.trace.get() {
            let action = match direction {
                Direction::HostToDevice => Action::Upload,
                Direction::DeviceToHost => Action::Download,
                Direction::DeviceToDevice => Action::DeviceCopy,
            };
            recorder.record(action, *id, bytes as u64, None, None, *queue);
        }
    }

    /// Records this buffer's transfers in `recorder` too, as `id`, on the stream of the queue
    /// whose key is `queue`.
    pub(crate) fn trace_to(&self, recorder: Arc<Recorder>, id: u64, queue: usize) {
        let _ = self.trace.set((recorder, id, queue));
    }

    pub(crate) fn last_access(&self) -> Option<Instant> {
        match self.last_access.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.created + Duration::from_nanos(n - 1)),
        }
    }
}
