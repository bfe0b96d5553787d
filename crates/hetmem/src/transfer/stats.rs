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
    /// Time spent moving them. A transfer engine times transfers of 1 MiB and more exactly, and
    /// one in 128 shorter ones on each thread and direction, counting the others at their
    /// average (exact while there are few, close over many): timing each would cost up to half
    /// a 4 KiB copy. A buffer's own figures time 64 KiB and more exactly and read shorter ones on
    /// the coarse monotonic clock (1–4 ms ticks): each counts as zero or whole ticks — right on
    /// average over many, not over a few.
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

    /// Back to nothing recorded (a parked buffer made into a new one).
    pub(crate) fn reset(&self) {
        for c in &self.cells {
            for cell in [&c.transfers, &c.bytes, &c.nanos, &c.peak] {
                cell.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Whether any transfer went `direction` (one load, where [`DirectionCounters::get`] reads
    /// four).
    pub(crate) fn any(&self, direction: Direction) -> bool {
        self.cells[direction as usize]
            .transfers
            .load(Ordering::Relaxed)
            > 0
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

/// A transfer engine's counters: each thread adds to its own set — atomics that it alone writes,
/// with a plain load and store (no read-modify-write, no lock, no fence; where shared counters
/// cost five read-modify-writes, and entering a locked per-thread slot ~3.5 ns each at the
/// start and end of a transfer) — and a snapshot sums them. The peaks stay shared: only
/// transfers of 1 MiB and more touch them.
///
/// Transfers under [`EXACTLY_TIMED_FROM`] are timed by sampling: one in [`SAMPLED_ONE_IN`] on
/// each thread and direction starts a stopwatch, and the rest count at the sampled ones'
/// average. A start and a stop cost ~20 ns on the 2-vCPU VM, where a 4 KiB copy takes ~30 and a
/// 64 KiB one ~1400 (1.5%); the coarse clock's two readings cost ~8.
pub(crate) struct EngineCounters {
    threads: PerThread<(), Tally>,
    peaks: [AtomicU64; 3],
}

/// Short transfers per timed one (see [`EngineCounters`]).
const SAMPLED_ONE_IN: u64 = 128;

/// Transfers of this size and more are each timed (a stopwatch costs under 0.1% of them).
const EXACTLY_TIMED_FROM: usize = 1 << 20;

/// One thread's counts (sums wrap: the in-flight count is decremented by adding `u64::MAX`).
#[derive(Default)]
struct Tally {
    moved: [Moved; 3],
    /// Transfers started and not ended (one thread runs a transfer throughout).
    in_flight: AtomicU64,
}

#[derive(Default)]
struct Moved {
    transfers: AtomicU64,
    bytes: AtomicU64,
    /// Time of the transfers timed exactly (those of [`EXACTLY_TIMED_FROM`] bytes and more).
    nanos: AtomicU64,
    /// Short transfers begun, counting towards the next sample.
    begun: AtomicU64,
    /// Short transfers done, and of them the sampled ones and their time.
    short: AtomicU64,
    sampled: AtomicU64,
    sampled_nanos: AtomicU64,
}

/// Adds `n` to a counter: with a plain load and store where its thread `alone` writes it, else
/// (the tally torn-down threads share) with a read-modify-write. Returns the new count.
#[inline(always)]
fn add(counter: &AtomicU64, n: u64, alone: bool) -> u64 {
    if alone {
        let sum = counter.load(Ordering::Relaxed).wrapping_add(n);
        counter.store(sum, Ordering::Relaxed);
        sum
    } else {
        counter.fetch_add(n, Ordering::Relaxed).wrapping_add(n)
    }
}

/// A direction's sums over every thread.
#[derive(Default, Clone, Copy)]
struct Sums {
    transfers: u64,
    bytes: u64,
    nanos: u64,
    short: u64,
    sampled: u64,
    sampled_nanos: u64,
}

impl Sums {
    fn add(&mut self, m: &Moved) {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        self.transfers = self.transfers.wrapping_add(read(&m.transfers));
        self.bytes = self.bytes.wrapping_add(read(&m.bytes));
        self.nanos = self.nanos.wrapping_add(read(&m.nanos));
        self.short = self.short.wrapping_add(read(&m.short));
        self.sampled = self.sampled.wrapping_add(read(&m.sampled));
        self.sampled_nanos = self.sampled_nanos.wrapping_add(read(&m.sampled_nanos));
    }

    /// The time moving took: what was timed, and the short transfers at the sampled average.
    fn time(&self) -> Duration {
        let estimated = match self.sampled {
            0 => 0,
            n => (self.sampled_nanos as u128 * self.short as u128 / n as u128) as u64,
        };
        Duration::from_nanos(self.nanos + estimated)
    }
}

/// How a transfer is timed.
#[derive(Clone, Copy, PartialEq)]
enum Timing {
    Exact,
    Sampled,
    /// A short transfer counted at the sampled ones' average.
    Averaged,
}

impl EngineCounters {
    pub(crate) fn new() -> Self {
        EngineCounters {
            threads: PerThread::new(),
            peaks: Default::default(),
        }
    }

    /// Counts a transfer of `bytes` in flight until the returned guard drops, and as done once
    /// [`Running::finish`] says so; starts its stopwatch where it is timed.
    #[inline(always)]
    pub(crate) fn begin(&self, direction: Direction, bytes: usize) -> Running<'_> {
        let (tally, alone) = self.threads.shared();
        add(&tally.in_flight, 1, alone);
        let timing = if bytes >= EXACTLY_TIMED_FROM {
            Timing::Exact
        } else if add(&tally.moved[direction as usize].begun, 1, alone) % SAMPLED_ONE_IN == 1 {
            Timing::Sampled
        } else {
            Timing::Averaged
        };
        Running {
            counters: self,
            tally,
            alone,
            direction,
            bytes,
            timing,
            start: (timing != Timing::Averaged).then(Stopwatch::start),
            done: None,
        }
    }

    /// Each direction's figures and the transfers in flight, in one pass over the threads.
    pub(crate) fn snapshot(&self) -> ([DirectionStats; 3], u64) {
        let (mut sums, mut in_flight) = ([Sums::default(); 3], 0u64);
        self.threads.for_each_shared(|t| {
            for (sum, m) in sums.iter_mut().zip(&t.moved) {
                sum.add(m);
            }
            in_flight = in_flight.wrapping_add(t.in_flight.load(Ordering::Relaxed));
        });
        let stats = std::array::from_fn(|d| DirectionStats {
            transfers: sums[d].transfers,
            bytes: sums[d].bytes,
            time: sums[d].time(),
            peak_bandwidth: f64::from_bits(self.peaks[d].load(Ordering::Relaxed)),
        });
        (stats, in_flight)
    }
}

/// A transfer in flight (see [`EngineCounters::begin`]).
pub(crate) struct Running<'a> {
    counters: &'a EngineCounters,
    /// The tally the transfer began on, which it ends on (one thread runs a transfer).
    tally: &'a Tally,
    alone: bool,
    direction: Direction,
    bytes: usize,
    timing: Timing,
    start: Option<Stopwatch>,
    /// Its time once done (zero where not timed).
    done: Option<Duration>,
}

impl Running<'_> {
    /// The transfer moved its bytes.
    #[inline]
    pub(crate) fn finish(mut self) {
        self.done = Some(self.start.map_or(Duration::ZERO, |s| s.elapsed()));
    }
}

impl Drop for Running<'_> {
    #[inline]
    fn drop(&mut self) {
        let (tally, alone) = (self.tally, self.alone);
        add(&tally.in_flight, u64::MAX, alone);
        let Some(elapsed) = self.done else { return };
        let (direction, bytes) = (self.direction as usize, self.bytes);
        let m = &tally.moved[direction];
        add(&m.transfers, 1, alone);
        add(&m.bytes, bytes as u64, alone);
        let nanos = elapsed.as_nanos() as u64;
        match self.timing {
            Timing::Exact => {
                add(&m.nanos, nanos, alone);
            }
            Timing::Sampled => {
                add(&m.short, 1, alone);
                add(&m.sampled, 1, alone);
                add(&m.sampled_nanos, nanos, alone);
            }
            Timing::Averaged => {
                add(&m.short, 1, alone);
            }
        }
        if bytes >= 1 << 20 && elapsed > Duration::ZERO {
            let bandwidth = bytes as f64 / elapsed.as_secs_f64();
            self.counters.peaks[direction].fetch_max(bandwidth.to_bits(), Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Short transfers count at the sampled ones' average; exactly timed ones as timed.
    #[test]
    fn short_transfers_count_at_the_sampled_average() {
        let sums = Sums {
            nanos: 1_000,
            short: 64,
            sampled: 2,
            sampled_nanos: 200,
            ..Sums::default()
        };
        assert_eq!(sums.time(), Duration::from_nanos(1_000 + 64 * 100));
        let none_sampled = Sums {
            short: 5,
            ..Sums::default()
        };
        assert_eq!(none_sampled.time(), Duration::ZERO);
    }

    /// A counter shared by torn-down threads loses no update to a racing one.
    #[test]
    fn shared_counters_add_with_read_modify_writes() {
        let counter = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        add(&counter, 1, false);
                    }
                });
            }
        });
        assert_eq!(counter.load(Ordering::Relaxed), 20_000);
        assert_eq!(
            add(&counter, u64::MAX, true),
            19_999,
            "wraps as a decrement"
        );
    }
}
