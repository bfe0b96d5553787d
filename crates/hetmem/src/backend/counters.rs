//! Per-backend allocation counters: what is allocated through a backend right now and at most.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::gauge::Budget;

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

/// The atomic counters behind [`BackendUsage`]: one per backend, which the backend stores
/// ([`RawBackend::usage_counters`](super::raw::RawBackend::usage_counters)) and the checked
/// layer updates on every allocation and release, for every device alike.
#[derive(Debug)]
pub struct UsageCounters {
    /// Live bytes, admitted only within the backend's capacity.
    live_bytes: Budget,
    peak_bytes: AtomicU64,
    allocations: AtomicU64,
    releases: AtomicU64,
}

impl Default for UsageCounters {
    fn default() -> Self {
        Self::with_capacity(u64::MAX)
    }
}

impl UsageCounters {
    /// Counters that refuse allocations beyond `capacity` live bytes: a device of that size
    /// (the host backend standing in for one).
    pub fn with_capacity(capacity: u64) -> Self {
        UsageCounters {
            live_bytes: Budget::new(capacity),
            peak_bytes: AtomicU64::new(0),
            allocations: AtomicU64::new(0),
            releases: AtomicU64::new(0),
        }
    }

    /// Counts an allocation only if live bytes stay within the capacity; `false` otherwise.
    pub(crate) fn try_allocate(&self, bytes: usize) -> bool {
        let Some(live) = self.live_bytes.admit(bytes as u64) else {
            return false;
        };
        self.allocations.fetch_add(1, Ordering::Relaxed);
        self.peak_bytes.fetch_max(live, Ordering::Relaxed);
        true
    }

    /// Takes back a `try_allocate` whose allocation then failed.
    pub(crate) fn undo_allocate(&self, bytes: usize) {
        self.allocations.fetch_sub(1, Ordering::Relaxed);
        self.live_bytes.sub(bytes as u64);
    }

    /// Counts committed bytes of a reservation only if live bytes stay within the capacity.
    pub(crate) fn try_commit(&self, bytes: usize) -> bool {
        let Some(live) = self.live_bytes.admit(bytes as u64) else {
            return false;
        };
        self.peak_bytes.fetch_max(live, Ordering::Relaxed);
        true
    }

    /// Takes back bytes of a reservation that are no longer committed.
    pub(crate) fn decommitted(&self, bytes: usize) {
        self.live_bytes.sub(bytes as u64);
    }

    pub(crate) fn released(&self, bytes: usize) {
        self.releases.fetch_add(1, Ordering::Relaxed);
        self.live_bytes.sub(bytes as u64);
    }

    /// The counts now.
    pub fn snapshot(&self) -> BackendUsage {
        let allocations = self.allocations.load(Ordering::Relaxed);
        let releases = self.releases.load(Ordering::Relaxed);
        BackendUsage {
            live_blocks: allocations.saturating_sub(releases),
            live_bytes: self.live_bytes.used(),
            peak_bytes: self.peak_bytes.load(Ordering::Relaxed),
            allocations,
            releases,
        }
    }
}
