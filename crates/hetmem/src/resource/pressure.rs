//! [`Pressure`]: the caches a resource asks to trim when it runs short.

use std::sync::Weak;

use super::Trim;
use crate::error::Result;
use crate::sync::Unpoison;

/// Weak references to the caches registered above a resource.
#[derive(Default)]
pub(crate) struct Pressure {
    caches: std::sync::Mutex<Vec<Weak<dyn Trim>>>,
}

impl Pressure {
    /// Adds a cache, forgetting those that are gone.
    pub(crate) fn attach(&self, cache: Weak<dyn Trim>) {
        let mut caches = self.caches.lock().unpoisoned();
        caches.retain(|c| c.strong_count() > 0);
        caches.push(cache);
    }

    /// Asks every live cache to trim, the last registered first: a cache stacked on another
    /// registers after it, and must empty into it before the lower one empties into the device.
    /// Outside the lock: trimming deallocates through the very resources that hold this list.
    /// Returns the bytes given back.
    pub(crate) fn relieve(&self) -> Result<u64> {
        let caches: Vec<_> = self
            .caches
            .lock()
            .unpoisoned()
            .iter()
            .rev()
            .filter_map(Weak::upgrade)
            .collect();
        let mut released = 0;
        for cache in caches {
            released += cache.trim()?;
        }
        Ok(released)
    }
}
