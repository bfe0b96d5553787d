//! [`MemoryLimit`]: one byte limit over the memory several pools reserve from their backends,
//! like RMM's `limiting_resource_adaptor` or PyTorch's per-process memory fraction.
//!
//! A pool under a limit charges every block it takes from its backend and credits every block it
//! gives back, so the limit bounds what the process really holds (in use plus cached). When a new
//! block would not fit, every pool under the limit first releases its cached blocks — cached
//! memory is the first thing to give up under pressure — and only if that does not make room is
//! the allocation refused with [`Error::LimitExceeded`].

use std::fmt;
use std::sync::{Arc, Weak};

use crate::error::{Error, Result};
use crate::gauge::Budget;
use crate::sync::{lock, Mutex};

/// A byte limit shared by the pools made with it. Cheap to clone: clones are the same limit.
#[derive(Clone)]
pub struct MemoryLimit {
    inner: Arc<LimitInner>,
}

struct LimitInner {
    budget: Budget,
    /// The pools charging this limit, asked to release their caches under pressure.
    pools: Mutex<Vec<Weak<dyn Relieve>>>,
}

/// A pool that can give its cached memory back to make room under a limit.
pub(crate) trait Relieve: Send + Sync {
    /// Releases every cached block; returns the bytes released.
    fn relieve(&self) -> Result<u64>;
}

impl MemoryLimit {
    /// A limit of `bytes` bytes. Zero is refused: nothing could ever be allocated.
    pub fn new(bytes: u64) -> Result<Self> {
        if bytes == 0 {
            return Err(Error::ZeroLength {
                what: "memory limit",
            });
        }
        Ok(MemoryLimit {
            inner: Arc::new(LimitInner {
                budget: Budget::new(bytes),
                pools: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The limit in bytes.
    pub fn bytes(&self) -> u64 {
        self.inner.budget.limit()
    }

    /// Bytes the pools under this limit hold from their backends now (in use plus cached).
    pub fn reserved(&self) -> u64 {
        self.inner.budget.used()
    }

    /// Changes the limit. Caches are released first when the memory held is above the new
    /// limit; a limit below the memory still in use after that is refused with
    /// [`Error::LimitBelowUse`], and the old limit stays.
    pub fn set(&self, bytes: u64) -> Result<()> {
        if bytes == 0 {
            return Err(Error::ZeroLength {
                what: "memory limit",
            });
        }
        if self.reserved() > bytes {
            self.relieve()?;
        }
        let in_use = self.reserved();
        if in_use > bytes {
            return Err(Error::LimitBelowUse {
                limit: bytes,
                in_use,
            });
        }
        self.inner.budget.set_limit(bytes);
        Ok(())
    }

    /// Asks every pool under this limit to release its cache; returns the bytes released.
    pub fn relieve(&self) -> Result<u64> {
        let pools: Vec<_> = lock(&self.inner.pools)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let mut released = 0;
        for pool in pools {
            released += pool.relieve()?;
        }
        Ok(released)
    }

    pub(crate) fn attach(&self, pool: Weak<dyn Relieve>) {
        let mut pools = lock(&self.inner.pools);
        pools.retain(|p| p.strong_count() > 0);
        pools.push(pool);
    }

    /// Admits `bytes` more, releasing the pools' caches first when they would not fit.
    pub(crate) fn charge(&self, bytes: u64) -> Result<()> {
        let budget = &self.inner.budget;
        if budget.try_add(bytes) {
            return Ok(());
        }
        self.relieve()?;
        if budget.try_add(bytes) {
            return Ok(());
        }
        Err(Error::LimitExceeded {
            requested: bytes,
            limit: budget.limit(),
            in_use: budget.used(),
        })
    }

    pub(crate) fn credit(&self, bytes: u64) {
        self.inner.budget.sub(bytes);
    }
}

impl fmt::Debug for MemoryLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryLimit")
            .field("bytes", &self.bytes())
            .field("reserved", &self.reserved())
            .finish()
    }
}
