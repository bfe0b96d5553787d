//! Lock-free accounting shared by the backends and the pools: a gauge with a resettable peak,
//! and a budget that admits units only while they fit under a limit. Model-checked with loom
//! (the `loom_tests` below).

use crate::sync::{AtomicU64, Ordering};

/// A current value with its high-water mark.
#[derive(Debug, Default)]
pub(crate) struct PeakGauge {
    current: AtomicU64,
    peak: AtomicU64,
}

impl PeakGauge {
    pub(crate) fn add(&self, n: u64) {
        let now = self.current.fetch_add(n, Ordering::Relaxed) + n;
        // A plain load first: the read-modify-write is only needed when a new peak is reached.
        if now > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
    }

    pub(crate) fn sub(&self, n: u64) {
        self.current.fetch_sub(n, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.current.load(Ordering::Relaxed)
    }

    pub(crate) fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Starts a new peak window at the current value.
    pub(crate) fn reset_peak(&self) {
        self.peak.store(self.get(), Ordering::Relaxed);
    }
}

/// Bytes admitted under a limit: `try_add` never lets the total exceed it, even when threads race.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicU64,
    limit: AtomicU64,
}

impl Budget {
    pub(crate) fn new(limit: u64) -> Self {
        Budget {
            used: AtomicU64::new(0),
            limit: AtomicU64::new(limit),
        }
    }

    /// Admits `n` units if they fit under the limit.
    pub(crate) fn try_add(&self, n: u64) -> bool {
        self.admit(n).is_some()
    }

    /// Admits `n` units if they fit under the limit, returning the new total.
    pub(crate) fn admit(&self, n: u64) -> Option<u64> {
        let limit = self.limit.load(Ordering::Relaxed);
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let next = used.checked_add(n).filter(|&next| next <= limit)?;
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(next),
                Err(actual) => used = actual,
            }
        }
    }

    pub(crate) fn sub(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }

    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    pub(crate) fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }
}

/// Exhaustive interleavings of the accounting under loom: `RUSTFLAGS="--cfg loom" cargo test
/// -p hetmem --lib --release loom`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    #[test]
    fn loom_budget_never_exceeds_its_limit() {
        loom::model(|| {
            let budget = Arc::new(Budget::new(10));
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let budget = budget.clone();
                    thread::spawn(move || {
                        let first = budget.try_add(4);
                        let second = budget.try_add(4);
                        u64::from(first) * 4 + u64::from(second) * 4
                    })
                })
                .collect();
            let admitted: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
            // 10 bytes admit exactly two 4-byte grants, whatever the interleaving.
            assert_eq!(admitted, 8);
            assert_eq!(budget.used(), 8);
        });
    }

    #[test]
    fn loom_peak_gauge_sees_the_true_maximum() {
        loom::model(|| {
            let gauge = Arc::new(PeakGauge::default());
            let handles: Vec<_> = [3u64, 5]
                .into_iter()
                .map(|n| {
                    let gauge = gauge.clone();
                    thread::spawn(move || {
                        gauge.add(n);
                        gauge.sub(n);
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            assert_eq!(gauge.get(), 0);
            let peak = gauge.peak();
            // Either both were live at once (8) or only the larger one at its peak (5).
            assert!(peak == 8 || peak == 5, "peak {peak}");
        });
    }
}
