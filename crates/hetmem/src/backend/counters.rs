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
        self.allocations.fetch_add(1, Ordering::Relaxed);
        let now = self.live_bytes.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        self.peak_bytes.fetch_max(now, Ordering::Relaxed);
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
