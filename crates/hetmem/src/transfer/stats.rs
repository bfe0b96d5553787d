//! Transfer statistics: what moved each way, how fast, and what went wrong.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::backend::PerThread;
use crate::host::Stopwatch;

/// The way bytes moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Direction {
    /// Host → device.
    HostToDevice,
    /// Device → host.
    DeviceToHost,
    /// Device → device (on one device, or across devices).
    DeviceToDevice,
}

impl Direction {
    /// Every direction.
    pub const ALL: [Direction; 3] = [
        Direction::HostToDevice,
        Direction::DeviceToHost,
        Direction::DeviceToDevice,
    ];
}

/// Transfers in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DirectionStats {
    /// Transfers completed.
    pub transfers: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Time spent moving them. Transfers of 64 KiB and more are timed exactly; shorter ones on
    /// the coarse monotonic clock (1–4 ms ticks, a few nanoseconds a reading where an exact
    /// reading costs as much as a 4 KiB copy): each counts as zero or whole ticks, right on
    /// average — so over many short transfers this sum is right, and over a few it is not.
    pub time: Duration,
    /// Fastest single transfer of at least 1 MiB, in bytes per second (0 if none).
    pub peak_bandwidth: f64,
}

impl DirectionStats {
    /// Average bandwidth in bytes per second, when anything took measurable time.
    pub fn bandwidth(&self) -> Option<f64> {
        let secs = self.time.as_secs_f64();
        (secs > 0.0).then(|| self.bytes as f64 / secs)
    }

    /// Adds `other`'s transfers to these (the peak is the higher one).
    pub fn merge(&mut self, other: &DirectionStats) {
        self.transfers += other.transfers;
        self.bytes += other.bytes;
        self.time += other.time;
        self.peak_bandwidth = self.peak_bandwidth.max(other.peak_bandwidth);
    }
}

#[derive(Default)]
struct DirectionCells {
    transfers: AtomicU64,
    bytes: AtomicU64,
    nanos: AtomicU64,
    /// f64 bits of the peak bandwidth (non-negative, so the bits order like the values).
    peak: AtomicU64,
}

/// Live counters for one direction each.
#[derive(Default)]
pub(crate) struct DirectionCounters {
    cells: [DirectionCells; 3],
}

impl DirectionCounters {
    /// Records one transfer of `bytes` that started at `start`.
    pub(crate) fn record(&self, direction: Direction, bytes: usize, start: Stopwatch) {
        let c = &self.cells[direction as usize];
        let elapsed = start.elapsed();
        c.transfers.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        c.nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        if bytes >= 1 << 20 && elapsed > Duration::ZERO {
            let bandwidth = bytes as f64 / elapsed.as_secs_f64();
            c.peak.fetch_max(bandwidth.to_bits(), Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self, direction: Direction) -> DirectionStats {
        let c = &self.cells[direction as usize];
        DirectionStats {
            transfers: c.transfers.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            time: Duration::from_nanos(c.nanos.load(Ordering::Relaxed)),
            peak_bandwidth: f64::from_bits(c.peak.load(Ordering::Relaxed)),
        }
    }
}

/// A transfer engine's counters: each thread adds to its own set — no atomic read-modify-write
/// on a transfer, where shared counters cost five — and a snapshot sums them. The peaks stay
/// shared: only transfers of 1 MiB and more touch them.
pub(crate) struct EngineCounters {
    threads: PerThread<Tally>,
    peaks: [AtomicU64; 3],
}

/// One thread's counts.
#[derive(Default)]
struct Tally {
    moved: [Moved; 3],
    /// Transfers started on this thread and not ended (one thread runs a transfer throughout).
    in_flight: u64,
}

#[derive(Default, Clone, Copy)]
struct Moved {
    transfers: u64,
    bytes: u64,
    nanos: u64,
}

impl EngineCounters {
    pub(crate) fn new() -> Self {
        EngineCounters {
            threads: PerThread::new(),
            peaks: Default::default(),
        }
    }

    /// Counts a transfer in flight until the returned guard drops, and as done once
    /// [`Running::finish`] says so.
    #[inline]
    pub(crate) fn begin(&self) -> Running<'_> {
        self.threads.with(|t| t.in_flight += 1);
        Running {
            counters: self,
            done: None,
        }
    }

    /// Each direction's figures and the transfers in flight, in one pass over the threads.
    pub(crate) fn snapshot(&self) -> ([DirectionStats; 3], u64) {
        let (mut moved, mut in_flight) = ([Moved::default(); 3], 0);
        self.threads.for_each(|t| {
            for (sum, m) in moved.iter_mut().zip(&t.moved) {
                sum.transfers += m.transfers;
                sum.bytes += m.bytes;
                sum.nanos += m.nanos;
            }
            in_flight += t.in_flight;
        });
        let stats = std::array::from_fn(|d| DirectionStats {
            transfers: moved[d].transfers,
            bytes: moved[d].bytes,
            time: Duration::from_nanos(moved[d].nanos),
            peak_bandwidth: f64::from_bits(self.peaks[d].load(Ordering::Relaxed)),
        });
        (stats, in_flight)
    }
}

/// A transfer in flight (see [`EngineCounters::begin`]).
pub(crate) struct Running<'a> {
    counters: &'a EngineCounters,
    done: Option<(Direction, usize, Duration)>,
}

impl Running<'_> {
    /// The transfer moved `bytes` in `elapsed`.
    pub(crate) fn finish(mut self, direction: Direction, bytes: usize, elapsed: Duration) {
        self.done = Some((direction, bytes, elapsed));
    }
}

impl Drop for Running<'_> {
    #[inline]
    fn drop(&mut self) {
        let done = self.done;
        self.counters.threads.with(|t| {
            t.in_flight -= 1;
            if let Some((direction, bytes, elapsed)) = done {
                let m = &mut t.moved[direction as usize];
                m.transfers += 1;
                m.bytes += bytes as u64;
                m.nanos += elapsed.as_nanos() as u64;
            }
        });
        if let Some((direction, bytes, elapsed)) = done {
            if bytes >= 1 << 20 && elapsed > Duration::ZERO {
                let bandwidth = bytes as f64 / elapsed.as_secs_f64();
                self.counters.peaks[direction as usize]
                    .fetch_max(bandwidth.to_bits(), Ordering::Relaxed);
            }
        }
    }
}

/// A snapshot of a transfer engine's statistics.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TransferStats {
    /// Host → device.
    pub host_to_device: DirectionStats,
    /// Device → host.
    pub device_to_host: DirectionStats,
    /// Device → device.
    pub device_to_device: DirectionStats,
    /// Operations retried after a transient failure.
    pub retries: u64,
    /// Transfers that failed for good.
    pub failures: u64,
    /// Transfers in progress now.
    pub in_flight: u64,
}
