//! Parking: buffers dropped whole, kept per thread and made into the next buffer of the same
//! shape, label and placement on that thread — what a loop that allocates and drops a buffer
//! costs is then no new record, no block from a pool and no lock (the shell's record stays in
//! the live list, marked parked). Each thread's [`Shelf`] sits beside its counters in the
//! registry, so that parking a buffer and counting it gone enter one per-thread slot once.
//!
//! Like a pool's thread cache, a shelf is bounded ([`PARKED_PER_THREAD`] by default,
//! [`PARKED_BYTES`]) and given back — its buffers' blocks to their pools — when the manager
//! trims, relieves memory pressure or runs maintenance, and when it goes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::registry::{record_of, Record, Registry};
use super::Placement;
use crate::buffer::{MetricCells, Shape, Shell, Side};
use crate::error::Result;
use crate::resource::Trim;

/// Buffers one thread keeps parked, by default: a loop's few buffers at a time.
pub const PARKED_PER_THREAD: usize = 4;

/// Bytes of blocks one thread keeps parked, at most (a pool's thread cache keeps as many).
pub(crate) const PARKED_BYTES: usize = 64 << 20;

/// The rules every shelf of a manager keeps.
pub(crate) struct Parking {
    /// Buffers each thread keeps (0: none).
    per_thread: usize,
    /// Set when the manager goes: nothing is parked from then on.
    closed: AtomicBool,
}

/// One thread's parked buffers, the last parked last. A shelf is never dropped with buffers on
/// it (each holds the registry, which holds the shelves): they leave it made into a new
/// buffer or let go ([`Registry::unpark_all`]).
#[derive(Default)]
pub(crate) struct Shelf {
    parked: Vec<Shell>,
    /// Bytes of their blocks.
    bytes: usize,
    /// Buffers made of a parked one on this thread.
    reuses: u64,
}

/// What is parked now, in [`MemoryStats`](super::MemoryStats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ParkedStats {
    /// Buffers parked now.
    pub buffers: u64,
    /// Bytes of their host and their device blocks: counted cached in the pools' statistics
    /// of [`MemoryStats`](super::MemoryStats) (a pool's own statistics count them in use).
    pub bytes: [u64; 2],
    /// Blocks among them, host and device.
    pub blocks: [u64; 2],
    /// The largest host and the largest device block among them.
    pub largest_block: [u64; 2],
    /// Buffers made of a parked one so far.
    pub reuses: u64,
}

impl Parking {
    pub(crate) fn new(per_thread: usize) -> Self {
        Parking {
            per_thread,
            closed: AtomicBool::new(false),
        }
    }

    /// Whether buffers are parked at all.
    #[inline]
    pub(crate) fn is_on(&self) -> bool {
        self.per_thread > 0
    }

    /// Keeps `shell` on `shelf` (its thread's, entered) if there is room (`None`), or hands
    /// it back.
    #[inline]
    pub(crate) fn park(&self, shelf: &mut Shelf, shell: Shell) -> Option<Shell> {
        let bytes = shell.held.iter().sum::<usize>();
        // Read on the shelf: `close` stores before it visits every shelf, so a shelf it does
        // not visit sees the store.
        let closed = self.closed.load(Ordering::Relaxed);
        let full = shelf.parked.len() >= self.per_thread || shelf.bytes + bytes > PARKED_BYTES;
        if closed || full {
            return Some(shell);
        }
        shelf.bytes += bytes;
        shelf.parked.push(shell);
        None
    }

    /// The shell parked last on `shelf` of `shape`, `label` and `placement`, holding the block
    /// a new buffer takes on `home`.
    #[inline]
    pub(crate) fn take(
        &self,
        shelf: &mut Shelf,
        shape: &Shape,
        home: Side,
        label: &Option<Arc<str>>,
        placement: Placement,
    ) -> Option<Shell> {
        let fits = |shell: &Shell| {
            shell.shape == *shape
                && shell.holds(home)
                && record_of(&shell.part).is_some_and(|r| r.is(label, placement))
        };
        let at = shelf.parked.iter().rposition(fits)?;
        let shell = shelf.parked.swap_remove(at);
        shelf.bytes -= shell.held.iter().sum::<usize>();
        shelf.reuses += 1;
        Some(shell)
    }

    /// Parks nothing from now on (the caller then lets every parked buffer go).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

impl Shelf {
    /// Moves every parked buffer into `all`, to be let go outside the thread's slot (letting
    /// go takes the live list's lock).
    pub(crate) fn empty_into(&mut self, all: &mut Vec<Shell>) {
        self.bytes = 0;
        all.append(&mut self.parked);
    }

    /// Adds what is parked here to `stats`.
    pub(crate) fn add_to(&self, stats: &mut ParkedStats) {
        stats.reuses += self.reuses;
        for shell in &self.parked {
            stats.buffers += 1;
            for (side, &held) in shell.held.iter().enumerate() {
                stats.bytes[side] += held as u64;
                stats.blocks[side] += u64::from(held > 0);
                stats.largest_block[side] = stats.largest_block[side].max(held as u64);
            }
        }
    }
}

impl Registry {
    /// Parks the buffer of `record` as `shell` where its thread's shelf has room, counting it
    /// gone (`cells`: its cells) in the same entry of the thread's slot; it stays listed,
    /// marked parked. Otherwise hands it back. (Asked only where parking is on.)
    pub(super) fn park(&self, record: &Record, shell: Shell, cells: &MetricCells) -> Option<Shell> {
        record.parked.store(true, Ordering::Relaxed);
        let refused = self.counts.with(|c| {
            let refused = self.parking.park(&mut c.shelf, shell);
            if refused.is_none() {
                c.released(record, cells);
            }
            refused
        });
        match refused {
            Some(_) => record.parked.store(false, Ordering::Relaxed),
            None => self.live_bytes.sub(record.bytes() as u64),
        }
        refused
    }

    /// A buffer parked on this thread of `shape`, `label` and `placement`, holding the block
    /// a new buffer takes on `home`, counted as a new buffer: a new number, listed again.
    /// (Parked buffers are never recorded.)
    pub(crate) fn take_parked(
        &self,
        shape: &Shape,
        home: Side,
        label: &Option<Arc<str>>,
        placement: Placement,
    ) -> Option<Shell> {
        if !self.parking.is_on() {
            return None;
        }
        let shell = self.counts.with(|c| {
            let shell = self
                .parking
                .take(&mut c.shelf, shape, home, label, placement)?;
            c.made(shape.len);
            Some(shell)
        })?;
        if let Some(record) = record_of(&shell.part) {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            record.id.store(id, Ordering::Relaxed);
            record.parked.store(false, Ordering::Relaxed);
        }
        self.add_live(shape.len);
        Some(shell)
    }

    /// Lets every thread's parked buffers go: off the live list, their blocks back to their
    /// pools with their parts.
    pub(crate) fn unpark_all(&self) {
        let mut all = Vec::new();
        self.counts.for_each(|c| c.shelf.empty_into(&mut all));
        // Outside the slots: unlisting takes the live list's lock.
        for shell in all {
            if let Some(record) = record_of(&shell.part) {
                record.unlist();
            }
        }
    }

    /// Parks nothing from now on, and lets every parked buffer go.
    pub(crate) fn close_parking(&self) {
        self.parking.close();
        self.unpark_all();
    }

    /// What every thread has parked now.
    pub(crate) fn parked(&self) -> ParkedStats {
        let mut stats = ParkedStats::default();
        self.counts.for_each(|c| c.shelf.add_to(&mut stats));
        stats
    }
}

impl Trim for Registry {
    /// Lets the parked buffers go; their blocks go to their pools, so nothing is given back
    /// under the limit yet.
    fn trim(&self) -> Result<u64> {
        self.unpark_all();
        Ok(0)
    }
}
