//! [`Maintainer`]: a background thread that runs the pools' maintenance on a timer, for programs
//! that go quiet while holding a cache (the allocators' own calls drive it otherwise).

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::pool::{CachingAllocator, MaintenanceReport};

/// Runs maintenance on a manager's pools every interval until dropped. Made by
/// [`MemoryManager::start_maintenance`](super::MemoryManager::start_maintenance).
#[must_use = "maintenance stops when the Maintainer is dropped"]
pub struct Maintainer {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Maintainer {
    /// Runs `first` (letting parked buffers go to the pools), then each pool's maintenance,
    /// every `interval`.
    pub(crate) fn start(
        first: impl Fn() + Send + 'static,
        pools: Vec<CachingAllocator>,
        interval: Duration,
    ) -> Result<Self> {
        if interval.is_zero() {
            return Err(Error::invalid("a maintenance interval of zero would spin"));
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("hetmem-maintenance".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    first();
                    for pool in &pools {
                        // A failed release is retried on the next run; nobody else to tell.
                        let _ = pool.maintain();
                    }
                }
            })
            .map_err(|e| Error::invalid(format!("cannot start the maintenance thread: {e}")))?;
        Ok(Maintainer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Maintainer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The sum of two reports.
pub(crate) fn sum(a: MaintenanceReport, b: MaintenanceReport) -> MaintenanceReport {
    MaintenanceReport {
        idle_released: a.idle_released + b.idle_released,
        pressure_released: a.pressure_released + b.pressure_released,
    }
}
