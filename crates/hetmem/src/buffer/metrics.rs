//! Per-buffer metrics: what moved each way, how long it took, and when the buffer was last used.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::{CoherenceState, Residency, Side};
use crate::host::coarse_nanos;
use crate::host::Stopwatch;
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
    /// When the buffer was last accessed (a guard, a read or a write), if ever: to the
    /// scheduler's tick (1–4 ms), the coarse clock being what keeps a guard's stamp cheap.
    pub last_access: Option<Instant>,
    /// The coherence state now.
    pub state: CoherenceState,
    /// One allocation or two copies.
    pub residency: Residency,
    /// The buffer's length in bytes.
    pub bytes: usize,
}

/// What was last done with a buffer, as a [memory snapshot](crate::manager::MemorySnapshot)
/// reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "serde", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum BufferEvent {
    /// A guard, a read or a write.
    Access,
    /// A transfer host → device.
    Upload,
    /// A transfer device → host.
    Download,
    /// A copy device → device (between buffers, or reallocating on resize).
    DeviceCopy,
}

impl BufferEvent {
    const ALL: [BufferEvent; 4] = [
        BufferEvent::Access,
        BufferEvent::Upload,
        BufferEvent::Download,
        BufferEvent::DeviceCopy,
    ];
}

/// The live counters behind [`BufferMetrics`].
pub(crate) struct MetricCells {
    /// When it was made, on the coarse clock ([`coarse_nanos`]): a buffer's age is read to the
    /// tick, and a precise reading would cost every allocation ~20 ns.
    created: AtomicU64,
    /// The [`coarse_nanos`] reading of the last access, plus one (0: never accessed).
    last_access: AtomicU64,
    pub(crate) transfers: DirectionCounters,
    /// The last event: nanoseconds after `created` shifted left by 2, or'ed with the index of
    /// its [`BufferEvent`], plus one (0: none yet).
    last_event: AtomicU64,
    /// The handles of the host and device blocks (0: none), by which a snapshot finds which
    /// ranges of a pool's segments are this buffer's.
    blocks: [AtomicUsize; 2],
    /// Where each transfer is also recorded, with the buffer's id there: set once, by a
    /// manager that records ([`crate::record`]).
    trace: OnceLock<(Arc<Recorder>, u64, usize)>,
}

impl MetricCells {
    #[inline]
    pub(crate) fn new() -> Self {
        MetricCells {
            created: AtomicU64::new(coarse_nanos()),
            last_access: AtomicU64::new(0),
            transfers: DirectionCounters::default(),
            last_event: AtomicU64::new(0),
            blocks: [AtomicUsize::new(0), AtomicUsize::new(0)],
            trace: OnceLock::new(),
        }
    }

    /// The cells of a buffer made now, the blocks' handles kept (a parked buffer's shell made
    /// into a new buffer keeps its blocks). Not traced: managers that record park nothing.
    pub(crate) fn reset(&self) {
        self.created.store(coarse_nanos(), Ordering::Relaxed);
        self.last_access.store(0, Ordering::Relaxed);
        self.transfers.reset();
        self.last_event.store(0, Ordering::Relaxed);
    }

    /// Stamps an access (a guard, a read, a write) on the coarse clock: to the scheduler's tick
    /// (1–4 ms), read in a few nanoseconds where the precise clock costs a guard ~20.
    #[inline]
    pub(crate) fn touch(&self) {
        let now = coarse_nanos();
        self.last_access.store(now + 1, Ordering::Relaxed);
        self.happened(BufferEvent::Access, now);
    }

    /// Notes `event` at `now` ([`coarse_nanos`]).
    fn happened(&self, event: BufferEvent, now: u64) {
        let packed = (now << 2 | event as u64) + 1;
        self.last_event.store(packed, Ordering::Relaxed);
    }

    /// The last event and its stamp ([`coarse_nanos`]), if any yet.
    pub(crate) fn last_event(&self) -> Option<(BufferEvent, u64)> {
        let packed = self.last_event.load(Ordering::Relaxed).checked_sub(1)?;
        Some((BufferEvent::ALL[(packed & 3) as usize], packed >> 2))
    }

    /// Notes that `block` (its handle) is now the buffer's `side` copy.
    pub(crate) fn placed(&self, side: Side, handle: usize) {
        self.blocks[side as usize].store(handle, Ordering::Relaxed);
    }

    /// Notes that the block `handle` is no longer either copy.
    pub(crate) fn retired(&self, handle: usize) {
        for cell in &self.blocks {
            let _ = cell.compare_exchange(handle, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// The handles of the host and device blocks now (0: none).
    pub(crate) fn blocks(&self) -> [usize; 2] {
        self.blocks.each_ref().map(|b| b.load(Ordering::Relaxed))
    }

    /// Records one transfer of `bytes` that started at `start`.
    pub(crate) fn record(&self, direction: Direction, bytes: usize, start: Stopwatch) {
        self.transfers.record(direction, bytes, start);
        let event = match direction {
            Direction::HostToDevice => BufferEvent::Upload,
            Direction::DeviceToHost => BufferEvent::Download,
            Direction::DeviceToDevice => BufferEvent::DeviceCopy,
        };
        self.happened(event, coarse_nanos());
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

    /// How long ago the buffer was made, to the coarse clock's tick.
    pub(crate) fn age(&self) -> Duration {
        Duration::from_nanos(coarse_nanos().saturating_sub(self.created()))
    }

    /// Whether the buffer was ever accessed (no clock read, unlike [`MetricCells::last_access`]).
    pub(crate) fn accessed(&self) -> bool {
        self.last_access.load(Ordering::Relaxed) != 0
    }

    fn created(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
    }

    pub(crate) fn last_access(&self) -> Option<Instant> {
        let stamp = self.last_access.load(Ordering::Relaxed).checked_sub(1)?;
        // Never before the buffer was made: the stamp is at least `created`.
        let ago = Duration::from_nanos(coarse_nanos().saturating_sub(stamp.max(self.created())));
        let now = Instant::now();
        Some(now.checked_sub(ago).unwrap_or(now))
    }
}
