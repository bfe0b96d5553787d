//! Per-backend allocation counters: what is allocated through a backend right now and at most.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of what a backend has handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BackendUsage {
    /// Blocks allocated and not yet released.
    pub live_blocks: u64,
    /// Bytes in those blocks.
    pub live_bytes: u64,
    /// The most bytes live at once since the backend was created.
    pub peak_bytes: u64,
    /// Successful allocations, ever.
    pub allocations: u64,
    /// Releases, ever.
    pub releases: u64,
}

/// The atomic counters behind [`BackendUsage`]; one per backend, updated on allocate and release.
#[derive(Debug, Default)]
pub(crate) struct UsageCounters {
    live_bytes: AtomicU64,
    peak_bytes: AtomicU64,
    allocations: AtomicU64,
    releases: AtomicU64,
}

impl UsageCounters {
    pub(crate) fn allocated(&self, bytes: usize) {
        let counted = self.try_allocate(bytes, u64::MAX);
        debug_assert!(counted, "live bytes overflowed u64");
    }

    /// Counts an allocation only if live bytes stay within `capacity`; `false` otherwise.
    pub(crate) fn try_allocate(&self, bytes: usize, capacity: u64) -> bool {
        let bytes = bytes as u64;
        let mut live = self.live_bytes.load(Ordering::Relaxed);
        loop {
            let Some(next) = live.checked_add(bytes).filter(|&n| n <= capacity) else {
                return false;
            };
            match self.live_bytes.compare_exchange_weak(
                live,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.allocations.fetch_add(1, Ordering::Relaxed);
                    self.peak_bytes.fetch_max(next, Ordering::Relaxed);
                    return true;
                }
                Err(actual) => live = actual,
            }
        }
    }

    /// Takes back a `try_allocate` whose allocation then failed.
    pub(crate) fn undo_allocate(&self, bytes: usize) {
        self.allocations.fetch_sub(1, Ordering::Relaxed);
        self.live_bytes.fetch_sub(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn released(&self, bytes: usize) {
        self.releases.fetch_add(1, Ordering::Relaxed);
        self.live_bytes.fetch_sub(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> BackendUsage {
        let allocations = self.allocations.load(Ordering::Relaxed);
        let releases = self.releases.load(Ordering::Relaxed);
        BackendUsage {
            live_blocks: allocations.saturating_sub(releases),
            live_bytes: self.live_bytes.load(Ordering::Relaxed),
            peak_bytes: self.peak_bytes.load(Ordering::Relaxed),
            allocations,
            releases,
        }
    }
}
