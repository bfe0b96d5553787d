//! [`MemoryManagerBuilder`]: the backend, pool configuration, memory limit and tracking level of
//! a [`MemoryManager`].

use std::sync::Arc;

use super::registry::{Registry, Tracking};
use super::MemoryManager;
use crate::backend::{Backend, HostBackend};
use crate::buffer::BufferContext;
use crate::error::{Error, Result};
use crate::pool::{CachingAllocator, CachingConfig, MemoryLimit};
use crate::transfer::TransferConfig;

/// How much memory a manager may hold.
#[derive(Debug, Clone, Copy, PartialEq)]
enum LimitSpec {
    Bytes(u64),
    /// A share of the device's total memory.
    Fraction(f64),
}

/// Configures a [`MemoryManager`]. Made by [`MemoryManager::builder`].
#[derive(Debug, Clone, Default)]
pub struct MemoryManagerBuilder {
    backend: Option<Arc<dyn Backend>>,
    device_pool: CachingConfig,
    host_pool: CachingConfig,
    limit: Option<LimitSpec>,
    tracking: Option<Tracking>,
    transfers: TransferConfig,
}

impl MemoryManagerBuilder {
    /// The device the manager allocates on (default: a new [`HostBackend`]).
    pub fn backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// The configuration of the pool device memory comes from.
    pub fn device_pool(mut self, config: CachingConfig) -> Self {
        self.device_pool = config;
        self
    }

    /// The configuration of the pool host copies come from.
    pub fn host_pool(mut self, config: CachingConfig) -> Self {
        self.host_pool = config;
        self
    }

    /// How buffers move their data: chunk size, queues, a forced strategy, retries,
    /// verification (default: [`TransferConfig::default`], chosen by measurement).
    pub fn transfers(mut self, config: TransferConfig) -> Self {
        self.transfers = config;
        self
    }

    /// At most `bytes` held from the backends, cached memory included (default: no limit).
    pub fn limit(mut self, bytes: u64) -> Self {
        self.limit = Some(LimitSpec::Bytes(bytes));
        self
    }

    /// At most this share (0 < `fraction` ≤ 1) of the device's total memory, like PyTorch's
    /// `set_per_process_memory_fraction`.
    pub fn limit_fraction(mut self, fraction: f64) -> Self {
        self.limit = Some(LimitSpec::Fraction(fraction));
        self
    }

    /// How much to record per allocation (default: `HETMEM_TRACK` if set, otherwise
    /// [`Tracking::Outstanding`]). Set here, it overrides the environment.
    pub fn tracking(mut self, tracking: Tracking) -> Self {
        self.tracking = Some(tracking);
        self
    }

    /// The manager. Fails on an invalid limit or an unknown `HETMEM_TRACK` value.
    pub fn build(self) -> Result<MemoryManager> {
        let backend = self.backend.unwrap_or_else(|| Arc::new(HostBackend::new()));
        let limit_bytes = match self.limit {
            None => u64::MAX,
            Some(LimitSpec::Bytes(bytes)) => bytes,
            Some(LimitSpec::Fraction(f)) if f > 0.0 && f <= 1.0 => {
                (backend.info().total_memory as f64 * f) as u64
            }
            Some(LimitSpec::Fraction(f)) => {
                return Err(Error::invalid(format!(
                    "memory fraction {f} is outside (0, 1]"
                )))
            }
        };
        let tracking = match self.tracking {
            Some(t) => t,
            None => Tracking::from_env()?.unwrap_or_default(),
        };
        // Both pools charge one limit, so either gives up its cache when the other needs room.
        let limit = MemoryLimit::new(limit_bytes)?;
        let host: Arc<dyn Backend> = Arc::new(HostBackend::new());
        let device = CachingAllocator::with_limit(backend, self.device_pool, limit.clone());
        let host = CachingAllocator::with_limit(host, self.host_pool, limit.clone());
        let caps = device.backend().capabilities();
        Ok(MemoryManager {
            context: BufferContext::with_transfers(device, host, self.transfers)?,
            registry: Arc::new(Registry::new(tracking)),
            limit,
            caps,
        })
    }
}
