//! [`Parking`]: buffers dropped whole, kept per thread and made into the next buffer of the
//! same shape, label and placement on that thread — what a loop that allocates and drops a
//! buffer costs is then no new record, no block from a pool and no lock (the shell's record
//! stays in the live list, marked parked).
//!
//! Like a pool's thread cache, a shelf is bounded ([`PARKED_BYTES`] and a count per thread) and
//! given back — its buffers' blocks to their pools — when the manager trims, relieves memory
//! pressure or runs maintenance, and when it goes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::registry::record_of;
use super::Placement;
use crate::backend::PerThread;
use crate::buffer::{Shape, Shell, Side};

/// Buffers one thread keeps parked, by default: a loop's few buffers at a time.
pub const PARKED_PER_THREAD: usize = 4;

/// Bytes of blocks one thread keeps parked, at most (a pool's thread cache keeps as many).
pub(crate) const PARKED_BYTES: usize = 64 << 20;

/// Every thread's parked buffers, for one manager.
pub(crate) struct Parking {
    shelves: PerThread<Shelf>,
    /// Buffers each thread keeps (0: none).
    per_thread: usize,
    /// Set when the manager goes: nothing is parked from then on.
    closed: AtomicBool,
}

/// One thread's parked buffers, the last parked last.
#[derive(Default)]
struct Shelf {
    parked: Vec<Parked>,
    /// Bytes of their blocks.
    bytes: usize,
    /// Buffers made of a parked one on this thread.
    reuses: u64,
}

/// A parked shell. Let go, it leaves the live list, and its blocks go back to their pools with
/// its part.
struct Parked(Option<Shell>);

impl Drop for Parked {
    fn drop(&mut self) {
        if let Some(record) = self.0.as_ref().and_then(|s| record_of(&s.part)) {
            record.unlist();
        }
    }
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
    /// The largest block among them.
    pub largest_block: u64,
    /// Buffers made of a parked one so far.
    pub reuses: u64,
}

impl Parking {
    pub(crate) fn new(per_thread: usize) -> Self {
        Parking {
            shelves: PerThread::new(),
            per_thread,
            closed: AtomicBool::new(false),
        }
    }

    /// Keeps `shell` on this thread's shelf if there is room (`None`), or hands it back.
    pub(crate) fn park(&self, shell: Shell) -> Option<Shell> {
        if self.per_thread == 0 {
            return Some(shell);
        }
        let bytes = shell.held.iter().sum::<usize>();
        self.shelves.with(|shelf| {
            // Read on the shelf: `close` stores before it visits every shelf, so a shelf it
            // does not visit sees the store.
            let closed = self.closed.load(Ordering::Relaxed);
            if closed || shelf.parked.len() >= self.per_thread || shelf.bytes + bytes > PARKED_BYTES
            {
                return Some(shell);
            }
            shelf.bytes += bytes;
            shelf.parked.push(Parked(Some(shell)));
            None
        })
    }

    /// The shell parked last on this thread of `shape`, `label` and `placement`, holding the
    /// block a new buffer takes on `home`.
    pub(crate) fn take(
        &self,
        shape: &Shape,
        home: Side,
        label: &Option<Arc<str>>,
        placement: Placement,
    ) -> Option<Shell> {
        if self.per_thread == 0 {
            return None;
        }
        let fits = |shell: &Shell| {
            shell.shape == *shape
                && shell.holds(home)
                && record_of(&shell.part).is_some_and(|r| r.is(label, placement))
        };
        self.shelves.with(|shelf| {
            let at = (shelf.parked.iter()).rposition(|p| p.0.as_ref().is_some_and(fits))?;
            let shell = shelf.parked.swap_remove(at).0.take()?;
            shelf.bytes -= shell.held.iter().sum::<usize>();
            shelf.reuses += 1;
            Some(shell)
        })
    }

    /// Lets every parked buffer go, their blocks back to their pools.
    pub(crate) fn drain(&self) {
        let mut all = Vec::new();
        self.shelves.for_each(|shelf| {
            shelf.bytes = 0;
            all.append(&mut shelf.parked);
        });
        drop(all); // outside the shelves: letting go takes the live list's lock
    }

    /// Parks nothing from now on, and lets every parked buffer go.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.drain();
    }

    pub(crate) fn stats(&self) -> ParkedStats {
        let mut stats = ParkedStats::default();
        self.shelves.for_each(|shelf| {
            stats.reuses += shelf.reuses;
            for shell in shelf.parked.iter().filter_map(|p| p.0.as_ref()) {
                stats.buffers += 1;
                for (side, &held) in shell.held.iter().enumerate() {
                    stats.bytes[side] += held as u64;
                    stats.blocks[side] += u64::from(held > 0);
                    stats.largest_block = stats.largest_block.max(held as u64);
                }
            }
        });
        stats
    }
}
