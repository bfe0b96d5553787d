//! [`MemoryLimit`]: one byte limit over the memory several resource stacks take from their
//! backends, like PyTorch's per-process memory fraction. [`super::LimitingResource`] charges it.
//!
//! Every block taken from a backend under the limit is charged and every block given back
//! credited, so the limit bounds what the process really holds (in use plus cached). When a new
//! block would not fit, every cache under the limit first trims — cached memory is the first
//! thing to give up under pressure — and only if that does not make room is the allocation
//! refused with [`Error::LimitExceeded`].

use std::fmt;
use std::sync::{Arc, Weak};

use super::{Pressure, Trim};

use crate::error::{Error, Result};
use crate::gauge::Budget;

/// A byte limit shared by the resources made with it. Cheap to clone: clones are the same limit.
#[derive(Clone)]
pub struct MemoryLimit {
    inner: Arc<LimitInner>,
}

struct LimitInner {
    budget: Budget,
    /// The caches above the resources charging this limit, asked to trim under pressure.
    caches: Pressure,
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
                caches: Pressure::default(),
            }),
        })
    }

    /// The limit in bytes.
    pub fn bytes(&self) -> u64 {
        self.inner.budget.limit()
    }

    /// Bytes the resources under this limit hold from their backends now (in use plus cached).
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
            self.trim()?;
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

    /// Asks every cache under this limit to trim; returns the bytes given back under the limit
    /// (a cache giving blocks to another cache below it gives back nothing until that one
    /// does, so nothing is counted twice).
    pub fn trim(&self) -> Result<u64> {
        let before = self.reserved();
        self.inner.caches.relieve()?;
        Ok(before.saturating_sub(self.reserved()))
    }

    pub(crate) fn attach(&self, cache: Weak<dyn Trim>) {
        self.inner.caches.attach(cache);
    }

    /// Admits `bytes` more, trimming the caches first when they would not fit.
    pub(crate) fn charge(&self, bytes: u64) -> Result<()> {
        let budget = &self.inner.budget;
        if budget.try_add(bytes) {
            return Ok(());
        }
        self.trim()?;
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

impl Trim for MemoryLimit {
    fn trim(&self) -> Result<u64> {
        MemoryLimit::trim(self)
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
