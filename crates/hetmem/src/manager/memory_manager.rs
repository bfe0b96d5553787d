//! [`MemoryManager`]: allocation, placement, limits, statistics and diagnostics in one object.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use super::maintainer::{self, Maintainer};
use super::placement::{decide, Decision};
use super::recommend::{recommend, Recommendation};
use super::registry::{Outstanding, Registry, Tracking, Usage};
use super::snapshot::{self, MemorySnapshot};
use super::stats::{MemoryStats, StatsScope};
use super::{AllocMode, AllocOptions, MemoryManagerBuilder};
use crate::backend::{Backend, Capabilities, DeviceBlock};
use crate::buffer::{BufferContext, BufferStorage, SharedPart, UnifiedBuffer};
use crate::element::{byte_len, Element};
use crate::error::{Error, Result};
use crate::host::{HostMemory, SharedSegment};
use crate::pool::{MaintenanceReport, SplittingResource};
use crate::record::{Action, Recorder};
use crate::resource::MemoryLimit;
use crate::Placement;

/// The object users start from: one device, two pools (device memory and host copies), a
/// placement policy, a memory limit and the record of every buffer.
///
/// Buffers are [`UnifiedBuffer`]s whose memory comes from the pools and goes back to them when
/// they drop. `alloc` takes the memory of the buffer's home side at once (so a limit or an
/// out-of-memory shows at the call); the other side is taken when first used.
///
/// # Dropping the manager while buffers live
/// Safe, and never a leak. Each buffer keeps the pools and the record alive, so its memory
/// returns to the pools when it drops and the pools release everything once the last buffer is
/// gone. Meanwhile the buffers keep their host data, readable and writable, but can no longer
/// allocate, transfer or hand out device access: those return [`Error::ContextClosed`].
pub struct MemoryManager {
    pub(crate) context: BufferContext,
    pub(crate) registry: Arc<Registry>,
    pub(crate) limit: MemoryLimit,
    pub(crate) caps: Capabilities,
    /// The splitting allocators under the device and the host pool, where splitting is on.
    pub(crate) splitting: [Option<Arc<SplittingResource>>; 2],
}

impl MemoryManager {
    /// A manager over host memory: works on every machine, no setup.
    pub fn host() -> Self {
        Self::builder()
            .tracking(Tracking::from_env().ok().flatten().unwrap_or_default())
            .build()
            .expect("a host manager without a limit has nothing to refuse")
    }

    /// A manager over `backend` with default pools, no limit, and tracking from `HETMEM_TRACK`.
    pub fn new(backend: Arc<dyn Backend>) -> Result<Self> {
        Self::builder().backend(backend).build()
    }

    /// Configures a manager: backend, pools, limit, tracking.
    pub fn builder() -> MemoryManagerBuilder {
        MemoryManagerBuilder::default()
    }

    /// The device's backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        self.context.backend()
    }

    /// The pools, queue and transfer engine buffers are made from.
    pub fn context(&self) -> &BufferContext {
        &self.context
    }

    /// A buffer of `len` elements that reads as zeros, placed automatically.
    pub fn alloc<T: Element>(&self, len: usize) -> Result<UnifiedBuffer<T>> {
        self.alloc_with(len, AllocOptions::default())
    }

    /// A buffer of `len` elements placed, zeroed and labelled as `options` say.
    pub fn alloc_with<T: Element>(
        &self,
        len: usize,
        options: AllocOptions,
    ) -> Result<UnifiedBuffer<T>> {
        let label = options.label.clone();
        self.allocate::<T>(len, options)
            .inspect_err(|e| self.refused(e, len, label))
    }

    /// Records a refused allocation and, where memory ran out and a trace is streamed, dumps
    /// the last events and a snapshot beside it.
    fn refused(&self, error: &Error, len: usize, label: Option<Arc<str>>) {
        let Some(recorder) = &self.registry.recorder else {
            return;
        };
        if matches!(
            error,
            Error::OutOfMemory { .. } | Error::LimitExceeded { .. }
        ) {
            let (label, queue) = (label.as_deref(), self.registry.queue);
            recorder.record(Action::AllocFailed, 0, len as u64, label, None, queue);
            snapshot::dump_on_oom(self, error);
        }
    }

    fn allocate<T: Element>(&self, len: usize, options: AllocOptions) -> Result<UnifiedBuffer<T>> {
        let bytes = byte_len::<T>(len)?;
        let decision = self.decide(&options, bytes)?;
        let shape = (self.context).shape_for::<T>(len, decision.residency, decision.strategy)?;
        let pooled = options.mode != AllocMode::Unpooled;
        if pooled && decision.placement != Placement::HostPinned {
            let (label, placement) = (&options.label, decision.placement);
            let parked = (self.registry).take_parked(&shape, decision.home, label, placement);
            if let Some(shell) = parked {
                let mut storage = self.context.storage_from_shell(shell);
                storage.set_zero_fill(options.zeroed);
                return Ok(UnifiedBuffer::from_storage(storage, len));
            }
        }
        let record = self.registry.record(options.label, decision.placement);
        let mut storage = (self.context).storage_of(shape, pooled, SharedPart::new(record));
        if decision.placement == Placement::HostPinned {
            storage.pin_host();
        }
        storage.reserve(decision.home, options.zeroed)?;
        self.registry.register(storage.part(), bytes);
        Ok(UnifiedBuffer::from_storage(storage, len))
    }

    /// A buffer holding a copy of `data`, placed automatically.
    pub fn from_slice<T: Element>(&self, data: &[T]) -> Result<UnifiedBuffer<T>> {
        self.from_slice_with(data, AllocOptions::default())
    }

    /// A buffer holding a copy of `data`, placed and labelled as `options` say.
    pub fn from_slice_with<T: Element>(
        &self,
        data: &[T],
        options: AllocOptions,
    ) -> Result<UnifiedBuffer<T>> {
        let mut buffer = self.alloc_with(data.len(), options.zeroed(false))?;
        buffer.host_discard()?.copy_from_slice(data);
        Ok(buffer)
    }

    /// A buffer whose host copy is `memory`, zero-copy: a [`SharedSegment`], a
    /// [`MappedFile`](crate::host::MappedFile), an [`ExternalHost`](crate::host::ExternalHost)
    /// (see [`BufferContext::adopt_host`]). Its contents are the buffer's, valid on the host;
    /// it is charged to the limit and let go when the buffer drops.
    pub fn adopt_host<T: Element>(&self, memory: impl HostMemory) -> Result<UnifiedBuffer<T>> {
        let record = self.registry.record(None, Placement::Host);
        let (storage, len) = self
            .context
            .adopted_storage::<T>(memory, SharedPart::new(record))?;
        self.registry.register(storage.part(), byte_len::<T>(len)?);
        Ok(UnifiedBuffer::from_storage(storage, len))
    }

    /// A buffer whose device copy is `block`, device memory made outside hetmem and adopted by
    /// this manager's backend (see [`BufferContext::adopt_device`]).
    pub fn adopt_device<T: Element>(&self, block: DeviceBlock) -> Result<UnifiedBuffer<T>> {
        let record = self.registry.record(None, Placement::Device);
        let (storage, len) =
            (self.context).adopted_device_storage::<T>(block, SharedPart::new(record))?;
        self.registry.register(storage.part(), byte_len::<T>(len)?);
        Ok(UnifiedBuffer::from_storage(storage, len))
    }

    /// A new named shared-memory segment of `len` zeroed `T`s as a buffer's host copy: another
    /// process opens it with [`MemoryManager::open_shared`] (see [`SharedSegment`] for names,
    /// permissions and lifetime).
    pub fn create_shared<T: Element>(&self, name: &str, len: usize) -> Result<UnifiedBuffer<T>> {
        self.adopt_host(SharedSegment::create::<T>(name, len)?)
    }

    /// The shared-memory segment `name`, made with the same `T`, as a buffer's host copy.
    pub fn open_shared<T: Element>(&self, name: &str) -> Result<UnifiedBuffer<T>> {
        self.adopt_host(SharedSegment::open::<T>(name)?)
    }

    /// How a buffer of `bytes` bytes with `options` would be built on this device.
    pub fn decide(&self, options: &AllocOptions, bytes: usize) -> Result<Decision> {
        let placement = options.resolved_placement()?;
        decide(placement, options.access, &self.caps, bytes)
    }

    /// Releases every cached block of both pools to the backends; returns the bytes released.
    pub fn trim(&self) -> Result<u64> {
        let given = self.limit.trim()?;
        if let Some(recorder) = &self.registry.recorder {
            recorder.record(Action::Trim, 0, given, None, None, self.registry.queue);
        }
        Ok(given)
    }

    /// Where the memory is now: the segments range by range, the live buffers with labels and
    /// ages (serialisable).
    pub fn snapshot(&self) -> MemorySnapshot {
        MemorySnapshot::take(self)
    }

    /// The recorder of this manager's allocations, if one records them.
    pub fn recorder(&self) -> Option<&Arc<Recorder>> {
        self.registry.recorder.as_ref()
    }

    /// Lets the parked buffers go to their pools, then runs both pools' maintenance now (idle
    /// release and pressure trims, as the policy set on the builder says); returns what it gave
    /// back.
    pub fn maintain(&self) -> Result<MaintenanceReport> {
        self.registry.unpark_all();
        let device = self.context.device_pool().maintain()?;
        Ok(maintainer::sum(
            device,
            self.context.host_pool().maintain()?,
        ))
    }

    /// Runs [`MemoryManager::maintain`] on a background thread every `interval` until the
    /// returned [`Maintainer`] drops (the pools also run theirs from their own calls when it
    /// is due).
    pub fn start_maintenance(&self, interval: Duration) -> Result<Maintainer> {
        let pools = vec![
            self.context.device_pool().clone(),
            self.context.host_pool().clone(),
        ];
        let registry = Arc::downgrade(&self.registry);
        let unpark = move || {
            if let Some(registry) = registry.upgrade() {
                registry.unpark_all();
            }
        };
        Maintainer::start(unpark, pools, interval)
    }

    /// The memory limit in bytes, if one is set.
    pub fn limit(&self) -> Option<u64> {
        Some(self.limit.bytes()).filter(|&b| b != u64::MAX)
    }

    /// Sets the memory limit (`None`: no limit). Caches are released first when the memory held
    /// is above it; a limit below the memory in use is refused with [`Error::LimitBelowUse`].
    pub fn set_limit(&self, bytes: Option<u64>) -> Result<()> {
        self.limit.set(bytes.unwrap_or(u64::MAX))
    }

    /// All statistics now.
    pub fn stats(&self) -> MemoryStats {
        MemoryStats::collect(self)
    }

    /// Starts new peak windows (buffer bytes and both pools) at the current values (parked
    /// buffers go to their pools first, so that the pools' in-use windows start exact).
    pub fn reset_peaks(&self) {
        self.registry.unpark_all();
        self.registry.live_bytes.reset_peak();
        self.context.device_pool().reset_peaks();
        self.context.host_pool().reset_peaks();
    }

    /// Opens a region whose statistics are measured on their own; scopes nest.
    pub fn stats_scope(&self) -> StatsScope<'_> {
        StatsScope::open(self)
    }

    /// A human-readable table of the statistics, then the live allocations and advice.
    pub fn summary(&self) -> String {
        let mut out = format!("{:?}\n{}", self.backend(), self.stats().summary());
        let live = self.outstanding();
        if !live.is_empty() {
            out.push_str(&format!("{} live allocations, oldest first:\n", live.len()));
            for o in live.iter().take(10) {
                out.push_str(&format!("  {o}\n"));
            }
        }
        for r in self.recommendations() {
            out.push_str(&format!("advice: {r}\n"));
        }
        out
    }

    /// Live allocations, oldest first, with size, label and age (and where they were made, with
    /// [`Tracking::Backtraces`]). Empty with [`Tracking::Counts`].
    pub fn outstanding(&self) -> Vec<Outstanding> {
        self.registry.outstanding()
    }

    /// The tracking level in force.
    pub fn tracking(&self) -> Tracking {
        self.registry.tracking()
    }

    /// What each label and placement did: buffers, bytes, transfers each way.
    pub fn usage(&self) -> Vec<Usage> {
        self.registry.usage()
    }

    /// Advice derived from [`MemoryManager::usage`].
    pub fn recommendations(&self) -> Vec<Recommendation> {
        recommend(&self.usage(), &self.caps)
    }

    /// The record of `buffer` (or of the buffer a view belongs to), or
    /// [`Error::ForeignBuffer`] when another manager or a plain context made it.
    pub fn allocation<T: Element, S: Deref<Target = BufferStorage>>(
        &self,
        buffer: &UnifiedBuffer<T, S>,
    ) -> Result<Outstanding> {
        (self.registry)
            .describe(buffer.storage().part())
            .ok_or(Error::ForeignBuffer {
                what: "describing an allocation",
            })
    }
}

impl Drop for MemoryManager {
    /// Lets the parked buffers go (they hold the registry, which holds them); buffers still
    /// alive are let go as they drop.
    fn drop(&mut self) {
        self.registry.close_parking();
    }
}

impl fmt::Debug for MemoryManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryManager")
            .field("backend", self.backend())
            .field("limit", &self.limit())
            .field("tracking", &self.tracking())
            .finish()
    }
}
