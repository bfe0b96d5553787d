//! Maintenance without the user remembering it (the seeds' `EnableAutoDefragmentation`,
//! `MaintenanceInterval`, `TrimPoolOnPressure`): cached blocks idle for longer than a set time go
//! back to the device, and the whole cache is trimmed when the device's free memory or a limit's
//! headroom runs low.
//!
//! It runs from the allocator's own calls — every 256th call of a thread that goes past its
//! cache (misses, shared-bin hits, blocks going back to the shared bins) checks whether a run is
//! due (at most one per interval, one thread at a time), so the clock is read rarely, pool hits
//! never read it, and nothing has to be started; [`MemoryManager::start_maintenance`]
//! adds a background thread for programs that go quiet while holding a cache.
//!
//! [`MemoryManager::start_maintenance`]: crate::MemoryManager::start_maintenance

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use super::{Cached, CachingAllocator, Inner};
use crate::backend::Event;
use crate::error::Result;
use crate::resource::MemoryLimit;
use crate::sync::{lock, Unpoison};

/// When a caching allocator gives cached memory back on its own.
#[derive(Debug, Clone)]
pub struct MaintenancePolicy {
    /// Cached blocks unused for longer than this go back to the resource below (a block in a
    /// thread's own cache first moves to the shared bins, so it goes after one more interval).
    /// `None` keeps them until trimmed.
    pub idle_release: Option<Duration>,
    /// Trim the whole cache when the device reports less free memory than this.
    pub min_device_free: Option<u64>,
    /// Trim the whole cache when a limit's headroom falls below a share of it.
    pub headroom: Option<Headroom>,
    /// How often a run is due.
    pub interval: Duration,
}

/// A limit whose headroom (limit minus reserved) must stay above `min_fraction` of it.
#[derive(Debug, Clone)]
pub struct Headroom {
    /// The limit watched.
    pub limit: MemoryLimit,
    /// Share of the limit (0 to 1) kept free.
    pub min_fraction: f64,
}

impl Default for MaintenancePolicy {
    /// Blocks idle for a minute go back; checked at most once a second; no pressure trims.
    fn default() -> Self {
        MaintenancePolicy {
            idle_release: Some(Duration::from_secs(60)),
            min_device_free: None,
            headroom: None,
            interval: Duration::from_secs(1),
        }
    }
}

impl MaintenancePolicy {
    /// Never gives anything back on its own.
    pub fn off() -> Self {
        MaintenancePolicy {
            idle_release: None,
            ..MaintenancePolicy::default()
        }
    }

    /// Whether the device or the limit is short of memory now.
    fn under_pressure(&self, inner: &Inner) -> bool {
        let device = self
            .min_device_free
            .is_some_and(|min| (inner.backend.info().free_memory).is_some_and(|free| free < min));
        let limit = self.headroom.as_ref().is_some_and(|h| {
            let (bytes, reserved) = (h.limit.bytes(), h.limit.reserved());
            (bytes.saturating_sub(reserved) as f64) < h.min_fraction * bytes as f64
        });
        device || limit
    }
}

/// What one maintenance run gave back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaintenanceReport {
    /// Bytes of blocks idle past `idle_release`.
    pub idle_released: u64,
    /// Bytes trimmed because memory was short.
    pub pressure_released: u64,
}

/// The policy and when it next runs.
pub(super) struct Schedule {
    policy: RwLock<MaintenancePolicy>,
    epoch: Instant,
    /// Nanoseconds after `epoch` when the next run is due.
    next_due: AtomicU64,
    pub(super) runs: AtomicU64,
    pub(super) idle_released: AtomicU64,
    pub(super) pressure_trims: AtomicU64,
}

impl Schedule {
    pub(super) fn new(policy: MaintenancePolicy) -> Self {
        let schedule = Schedule {
            policy: RwLock::new(MaintenancePolicy::off()),
            epoch: Instant::now(),
            next_due: AtomicU64::new(u64::MAX),
            runs: AtomicU64::new(0),
            idle_released: AtomicU64::new(0),
            pressure_trims: AtomicU64::new(0),
        };
        schedule.set(policy);
        schedule
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn set(&self, policy: MaintenancePolicy) {
        let active = policy.idle_release.is_some()
            || policy.min_device_free.is_some()
            || policy.headroom.is_some();
        let next = match active {
            true => self.now().saturating_add(policy.interval.as_nanos() as u64),
            false => u64::MAX,
        };
        *self.policy.write().unpoisoned() = policy;
        self.next_due.store(next, Ordering::Relaxed);
    }

    /// Whether this thread should run maintenance now: it is due, and no other thread took
    /// this run first.
    fn claim(&self) -> bool {
        let due = self.next_due.load(Ordering::Relaxed);
        if due == u64::MAX {
            return false;
        }
        let now = self.now();
        if now < due {
            return false;
        }
        let interval = self.policy.read().unpoisoned().interval.as_nanos() as u64;
        let next = now.saturating_add(interval);
        (self.next_due)
            .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

impl Inner {
    /// Releases the shared bins' blocks cached for at least `idle` with no work pending on
    /// them. Returns the bytes released.
    fn evict_idle(&self, idle: Duration) -> Result<u64> {
        let mut released = 0;
        for bin in self.bins.iter() {
            let idle_blocks: Vec<Cached> = {
                let mut bin = lock(bin);
                let (old, keep) = std::mem::take(&mut *bin).into_iter().partition(|c| {
                    c.since.elapsed() >= idle && c.pending.iter().all(Event::is_finished)
                });
                *bin = keep;
                old
            };
            for cached in idle_blocks {
                let size = cached.block.size() as u64;
                self.cached.sub(size);
                self.release_to_backend(cached.block, Vec::new())?;
                released += size;
            }
        }
        Ok(released)
    }

    /// Runs maintenance if it is due (the allocator's calls come here).
    pub(super) fn maybe_maintain(&self) {
        if self.schedule.claim() {
            // Nobody to report a failed release to from inside an allocation.
            let _ = self.maintain();
        }
    }

    pub(super) fn maintain(&self) -> Result<MaintenanceReport> {
        let policy = self.schedule.policy.read().unpoisoned().clone();
        self.schedule.runs.fetch_add(1, Ordering::Relaxed);
        let mut report = MaintenanceReport::default();
        if let Some(idle) = policy.idle_release {
            self.flush_threads();
            // Idle blocks, and below them what that lets go (a splitting allocator's segments
            // left unused).
            report.idle_released = self.evict_idle(idle)? + self.upstream.trim()?;
            (self.schedule.idle_released).fetch_add(report.idle_released, Ordering::Relaxed);
        }
        if policy.under_pressure(self) {
            // What the cache gives back and, below it, what that lets go (a splitting
            // allocator's segments left unused).
            report.pressure_released = self.trim_to(0)? + self.upstream.trim()?;
            self.schedule.pressure_trims.fetch_add(1, Ordering::Relaxed);
        }
        Ok(report)
    }
}

impl CachingAllocator {
    /// Replaces the maintenance policy (the next run is one interval from now).
    pub fn set_maintenance(&self, policy: MaintenancePolicy) {
        self.inner.schedule.set(policy);
    }

    /// Runs maintenance now, whether due or not.
    pub fn maintain(&self) -> Result<MaintenanceReport> {
        self.inner.maintain()
    }
}
