//! [`MemoryManagerBuilder`]: the backend, resource stacks, pool configuration, memory limit and
//! tracking level of a [`MemoryManager`].

use std::fmt;
use std::sync::{Arc, Weak};

use super::parking::PARKED_PER_THREAD;
use super::registry::{Registry, Tracking};
use super::MemoryManager;
use crate::backend::{Backend, HostBackend};
use crate::buffer::BufferContext;
use crate::error::{Error, Result};
use crate::host::HostSource;
use crate::pool::{
    CachingAllocator, CachingConfig, Headroom, MaintenancePolicy, SplittingConfig,
    SplittingResource,
};
use crate::record::Recorder;
use crate::resource::{
    AllocationFailure, FailureCallbackResource, LimitingResource, MemoryLimit, MemoryResource,
    PlainResource, Trim,
};
use crate::transfer::TransferConfig;

/// How much memory a manager may hold.
#[derive(Debug, Clone, Copy, PartialEq)]
enum LimitSpec {
    Bytes(u64),
    /// A share of the device's total memory.
    Fraction(f64),
}

/// Adaptors a caller wraps around a stack: given the resource below, the resource above.
type Wrap = dyn Fn(Arc<dyn MemoryResource>) -> Arc<dyn MemoryResource> + Send + Sync;

/// The adaptors of one stack, applied in the order they were added.
#[derive(Clone, Default)]
struct Adaptors(Vec<Arc<Wrap>>);

impl Adaptors {
    fn apply(&self, mut resource: Arc<dyn MemoryResource>) -> Arc<dyn MemoryResource> {
        for wrap in &self.0 {
            resource = wrap(resource);
        }
        resource
    }
}

impl fmt::Debug for Adaptors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} adaptors", self.0.len())
    }
}

/// Configures a [`MemoryManager`]. Made by [`MemoryManager::builder`].
///
/// Each pool sits on a stack of [memory resources](crate::resource):
///
/// ```text
/// CachingAllocator → SplittingResource → (your adaptors, last added on top)
///                  → LimitingResource → PlainResource
/// ```
///
/// Every request is carved by the [`SplittingResource`] (PyTorch's design), which keeps freed
/// blocks whole per thread for loops that reuse a size; the caching allocator over it keeps no
/// blocks of its own unless [`device_pool`](Self::device_pool) says otherwise (a cache of size
/// classes in front fragmented the segments). Splitting is what
/// [`splitting`](Self::splitting) configures or turns off. The limit is shared by the device and
/// the host stack; adaptors added with [`device_adaptor`](Self::device_adaptor) see what reaches
/// the device — the segments, unpooled buffers — limit refusals included.
#[derive(Debug, Clone, Default)]
pub struct MemoryManagerBuilder {
    backend: Option<Arc<dyn Backend>>,
    device_adaptors: Adaptors,
    host_adaptors: Adaptors,
    device_pool: Option<CachingConfig>,
    host_pool: Option<CachingConfig>,
    splitting: SplittingConfig,
    /// Large requests are class-rounded and cached like small ones (no splitting).
    splitting_off: bool,
    limit: Option<LimitSpec>,
    host_source: HostSource,
    maintenance: Option<MaintenancePolicy>,
    headroom: Option<f64>,
    tracking: Option<Tracking>,
    parked_buffers: Option<usize>,
    recorder: Option<Arc<Recorder>>,
    transfers: TransferConfig,
}

impl MemoryManagerBuilder {
    /// The device the manager allocates on (default: a new [`HostBackend`]).
    pub fn backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Wraps an adaptor around the device stack, above the limit and below the cache (and above
    /// adaptors added before it). `wrap` gets the resource below and returns the one above;
    /// it must keep the device's backend.
    pub fn device_adaptor(
        mut self,
        wrap: impl Fn(Arc<dyn MemoryResource>) -> Arc<dyn MemoryResource> + Send + Sync + 'static,
    ) -> Self {
        self.device_adaptors.0.push(Arc::new(wrap));
        self
    }

    /// [`device_adaptor`](Self::device_adaptor) for the stack host copies come from.
    pub fn host_adaptor(
        mut self,
        wrap: impl Fn(Arc<dyn MemoryResource>) -> Arc<dyn MemoryResource> + Send + Sync + 'static,
    ) -> Self {
        self.host_adaptors.0.push(Arc::new(wrap));
        self
    }

    /// Calls `callback` when device memory runs out (out of memory, or the limit exceeded after
    /// the caches have been trimmed): it can free memory — drop or spill buffers, trim other
    /// pools — and returns whether to retry. A [`FailureCallbackResource`] on the device stack.
    pub fn on_out_of_memory(
        self,
        callback: impl Fn(&AllocationFailure<'_>) -> bool + Send + Sync + 'static,
    ) -> Self {
        let callback = Arc::new(callback);
        self.device_adaptor(move |below| {
            let callback = callback.clone();
            Arc::new(FailureCallbackResource::new(below, move |f| callback(f)))
        })
    }

    /// How the host copies of buffers are made (default: cache-line-aligned heap memory):
    /// aligned further, on huge pages, bound to a NUMA node or locked in RAM (see
    /// [`crate::host`]). Checked when the manager is built.
    pub fn host_source(mut self, source: HostSource) -> Self {
        self.host_source = source;
        self
    }

    /// The rules of the splitting allocator under both pools (default:
    /// [`SplittingConfig::default`]); the pools' size classes stop at its `split_above`.
    pub fn splitting(mut self, config: SplittingConfig) -> Self {
        self.splitting = config;
        self.splitting_off = false;
        self
    }

    /// No splitting allocator: large requests are rounded to size classes and cached like
    /// small ones, each a backend allocation of its own (the stack before splitting existed).
    pub fn without_splitting(mut self) -> Self {
        self.splitting_off = true;
        self
    }

    /// Records every allocation, free, resize, refusal and trim of the manager's buffers
    /// ([`crate::record`]); without one, `HETMEM_TRACE=path` streams them to `path`.
    pub fn recorder(mut self, recorder: Arc<Recorder>) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// The configuration of the cache device memory comes from: by default none over the
    /// splitting allocator (it keeps freed blocks itself) and [`CachingConfig::default`]
    /// without it.
    pub fn device_pool(mut self, config: CachingConfig) -> Self {
        self.device_pool = Some(config);
        self
    }

    /// The configuration of the cache host copies come from (defaults as for
    /// [`device_pool`](Self::device_pool)).
    pub fn host_pool(mut self, config: CachingConfig) -> Self {
        self.host_pool = Some(config);
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

    /// When the pools give cached memory back on their own (default:
    /// [`MaintenancePolicy::default`], blocks idle for a minute).
    pub fn maintenance(mut self, policy: MaintenancePolicy) -> Self {
        self.maintenance = Some(policy);
        self
    }

    /// Trims both pools whenever the limit's headroom falls below `fraction` (0 < `fraction`
    /// ≤ 1) of it: cached memory goes back before an allocation has to wait for it.
    pub fn trim_below_headroom(mut self, fraction: f64) -> Self {
        self.headroom = Some(fraction);
        self
    }

    /// How many dropped buffers each thread keeps whole — record, cells and blocks — for the
    /// next buffer of the same length, label and placement it makes (default
    /// [`PARKED_PER_THREAD`]; 0: none). Buffers a device guard exposed and pinned, unpooled or
    /// adopted memory are never kept, nor anything where allocations are recorded or their
    /// backtraces taken. A thread keeps at most 64 MiB of blocks so; trimming, memory
    /// pressure and [`MemoryManager::maintain`] let them go to their pools.
    pub fn parked_buffers(mut self, per_thread: usize) -> Self {
        self.parked_buffers = Some(per_thread);
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
        let backend = (self.backend.clone()).unwrap_or_else(|| Arc::new(HostBackend::new()));
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
        let recorder = match self.recorder {
            Some(recorder) => Some(recorder),
            None => Recorder::from_env()?,
        };
        let tracking = match self.tracking {
            Some(t) => t,
            None => Tracking::from_env()?.unwrap_or_default(),
        };
        // Both stacks charge one limit, so either pool gives up its cache when the other needs
        // room.
        let limit = MemoryLimit::new(limit_bytes)?;
        let host: Arc<dyn Backend> = Arc::new(HostBackend::with_source(self.host_source)?);
        let splitting = (!self.splitting_off).then_some(self.splitting);
        let (device, device_split, device_below) = pool(
            backend,
            &limit,
            &self.device_adaptors,
            splitting,
            self.device_pool,
        )?;
        let (host, host_split, host_below) =
            pool(host, &limit, &self.host_adaptors, splitting, self.host_pool)?;
        let mut policy = self.maintenance.unwrap_or_default();
        if let Some(min_fraction) = self.headroom {
            if !(min_fraction > 0.0 && min_fraction <= 1.0) {
                return Err(Error::invalid(format!(
                    "headroom fraction {min_fraction} is outside (0, 1]"
                )));
            }
            let limit = limit.clone();
            policy.headroom = Some(Headroom {
                limit,
                min_fraction,
            });
        }
        device.set_maintenance(policy.clone());
        host.set_maintenance(policy);
        let caps = device.backend().capabilities();
        let context = BufferContext::with_unpooled_over(
            device,
            host,
            self.transfers,
            [device_below, host_below],
        )?;
        let queue = context.queue().key();
        let parked = self.parked_buffers.unwrap_or(PARKED_PER_THREAD);
        let registry = Arc::new(Registry::new(tracking, recorder, queue, parked));
        // Attached last, so that pressure lets parked buffers go into the pools before the
        // pools give back what they cache.
        limit.attach(Arc::downgrade(&registry) as Weak<dyn Trim>);
        Ok(MemoryManager {
            context,
            registry,
            limit,
            caps,
            splitting: [device_split, host_split],
        })
    }
}

/// One pool's stack: the splitting allocator (where `splitting` is on) over `adaptors` over a
/// limited plain resource of `backend`, and the cache on top (`config`, or by default none over
/// the splitting allocator). Also returns the splitting resource, for statistics, and the stack
/// under it, for unpooled buffers.
fn pool(
    backend: Arc<dyn Backend>,
    limit: &MemoryLimit,
    adaptors: &Adaptors,
    splitting: Option<SplittingConfig>,
    config: Option<CachingConfig>,
) -> Result<Pool> {
    let id = backend.id();
    let plain = Arc::new(PlainResource::new(backend));
    let limited: Arc<dyn MemoryResource> = Arc::new(LimitingResource::new(plain, limit.clone()));
    let below = adaptors.apply(limited);
    if below.backend().id() != id {
        return Err(Error::invalid(format!(
            "an adaptor replaced the stack over {id} by one over {:?}",
            below.backend()
        )));
    }
    Ok(match splitting {
        Some(rules) => {
            let split = SplittingResource::over(below.clone(), rules)?;
            let front = config.unwrap_or_else(CachingConfig::unpooled);
            let cache = CachingAllocator::over(split.clone(), front);
            (cache, Some(split), below)
        }
        None => (
            CachingAllocator::over(below.clone(), config.unwrap_or_default()),
            None,
            below,
        ),
    })
}

/// A pool, the splitting allocator under it, and the stack under that.
type Pool = (
    CachingAllocator,
    Option<Arc<SplittingResource>>,
    Arc<dyn MemoryResource>,
);
