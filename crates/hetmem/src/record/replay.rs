//! Replaying a trace against an allocator configuration on a real backend, counting what the
//! configuration takes from the backend: hit rate, backend allocations, peak reserved against
//! peak live, fragmentation, time per operation and the first refused allocation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::timed::Timed;
use super::{Action, Trace};
use crate::backend::Backend;
use crate::error::Result;
use crate::pool::{
    CachingAllocator, CachingConfig, PooledBlock, SegmentSnapshot, SizeClasses, SplittingConfig,
    SplittingResource,
};
use crate::resource::{
    LimitingResource, MemoryLimit, MemoryResource, PlainResource, StatisticsResource,
};

/// An allocator stack a trace can be replayed against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "serde", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum AllocatorConfig {
    /// The manager's default: the splitting allocator (an expandable segment where the
    /// backend has virtual memory), with no cache of its own in front.
    Default,
    /// The default, giving back free memory of its expandable segment past 12% of what is
    /// carved whenever it grows ([`SplittingConfig::free_committed_percent`]): the smallest
    /// footprint, for more commits.
    Compact,
    /// Size classes (4 per doubling) at every size, each block a backend allocation: the stack
    /// without splitting.
    Classes,
    /// One class per power of two, the classic scheme.
    PowerOfTwo,
    /// No caching: a backend allocation per request.
    Unpooled,
}

impl AllocatorConfig {
    /// Every configuration, in the order `hetmem replay` reports them.
    pub const ALL: [AllocatorConfig; 5] = [
        AllocatorConfig::Default,
        AllocatorConfig::Compact,
        AllocatorConfig::Classes,
        AllocatorConfig::PowerOfTwo,
        AllocatorConfig::Unpooled,
    ];

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            AllocatorConfig::Default => "default",
            AllocatorConfig::Compact => "compact",
            AllocatorConfig::Classes => "classes",
            AllocatorConfig::PowerOfTwo => "power-of-two",
            AllocatorConfig::Unpooled => "unpooled",
        }
    }
}

/// How to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplayOptions {
    /// A memory limit over what the stack takes from the backend.
    pub limit: Option<u64>,
    /// Points of the live/reserved curve to keep (0: none).
    pub curve_points: usize,
    /// Take a picture of the splitting allocator's segments after this event.
    pub snapshot_at: Option<usize>,
}

/// Live and reserved bytes after one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "serde", derive(schemars::JsonSchema))]
pub struct CurvePoint {
    /// The event's index.
    pub event: usize,
    /// Bytes the trace holds live.
    pub live: u64,
    /// Bytes the stack holds from the backend.
    pub reserved: u64,
}

/// The first allocation the configuration refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "serde", derive(schemars::JsonSchema))]
pub struct ReplayFailure {
    /// The event's index in the trace.
    pub event: usize,
    /// The bytes it asked for.
    pub bytes: u64,
    /// Bytes live just before it.
    pub live: u64,
    /// Why.
    pub error: String,
}

/// What replaying a trace against one configuration measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "serde", derive(schemars::JsonSchema))]
pub struct ReplayOutcome {
    /// The configuration.
    pub config: AllocatorConfig,
    /// Events replayed (all of them unless an allocation was refused).
    pub events: usize,
    /// Allocations asked.
    pub requests: u64,
    /// Allocations the stack made from the backend (segments included).
    pub backend_allocations: u64,
    /// Ranges of an expandable segment committed: backend calls, though not allocations.
    pub commits: u64,
    /// Requests served without a backend call (an allocation or a commit), as a share of all.
    pub hit_rate: f64,
    /// The most bytes the trace held live at once.
    pub peak_live: u64,
    /// The most bytes the stack held from the backend at once.
    pub peak_reserved: u64,
    /// The share of held-but-unused bytes outside the largest free piece, when the stack held
    /// the most (0: one piece, or nothing free).
    pub fragmentation: f64,
    /// Wall time per event, backend calls included.
    pub ns_per_event: f64,
    /// Of that, the time spent in the backend's calls (allocating, releasing, committing).
    pub backend_ns_per_event: f64,
    /// The first refused allocation, if any.
    pub failure: Option<ReplayFailure>,
    /// Live and reserved bytes through the trace.
    pub curve: Vec<CurvePoint>,
    /// The segments after `snapshot_at` (the default configuration only).
    pub snapshot: Option<Vec<SegmentSnapshot>>,
}

impl ReplayOutcome {
    /// Peak reserved over peak live.
    pub fn reserved_ratio(&self) -> f64 {
        self.peak_reserved as f64 / self.peak_live.max(1) as f64
    }

    /// Time per event spent outside the backend: the allocator's own (and the replay loop's).
    pub fn allocator_ns_per_event(&self) -> f64 {
        (self.ns_per_event - self.backend_ns_per_event).max(0.0)
    }
}

/// Replays `trace` against `config` on `backend`: every allocation of the trace is made (and
/// freed) for real, in order, from one thread.
pub fn replay(
    trace: &Trace,
    backend: Arc<dyn Backend>,
    config: AllocatorConfig,
    options: ReplayOptions,
) -> Result<ReplayOutcome> {
    let timed = Arc::new(Timed::new(Arc::new(PlainResource::new(backend))));
    let driver = Arc::new(StatisticsResource::new(timed.clone()));
    let below: Arc<dyn MemoryResource> = match options.limit {
        Some(bytes) => Arc::new(LimitingResource::new(
            driver.clone(),
            MemoryLimit::new(bytes)?,
        )),
        None => driver.clone(),
    };
    let (pool, split) = stack(below, config)?;
    let stride = match options.curve_points {
        0 => usize::MAX,
        n => trace.events.len().div_ceil(n).max(1),
    };
    let mut outcome = ReplayOutcome {
        config,
        events: 0,
        requests: 0,
        backend_allocations: 0,
        commits: 0,
        hit_rate: 0.0,
        peak_live: 0,
        peak_reserved: 0,
        fragmentation: 0.0,
        ns_per_event: 0.0,
        backend_ns_per_event: 0.0,
        failure: None,
        curve: Vec::new(),
        snapshot: None,
    };
    let mut blocks: HashMap<u64, PooledBlock> = HashMap::new();
    let mut live = 0u64;
    let start = Instant::now();
    for (index, event) in trace.events.iter().enumerate() {
        match event.action {
            Action::Alloc | Action::Resize => {
                if let Some(old) = blocks.remove(&event.id) {
                    live -= old.len() as u64;
                }
                if event.bytes > 0 {
                    outcome.requests += 1;
                    match pool.allocate(event.bytes as usize) {
                        Ok(block) => {
                            live += event.bytes;
                            blocks.insert(event.id, block);
                        }
                        Err(e) => {
                            outcome.failure = Some(ReplayFailure {
                                event: index,
                                bytes: event.bytes,
                                live,
                                error: e.to_string(),
                            });
                            break;
                        }
                    }
                }
            }
            Action::Free => {
                if let Some(block) = blocks.remove(&event.id) {
                    live -= block.len() as u64;
                }
            }
            Action::Trim => {
                pool.trim()?;
                if let Some(split) = &split {
                    crate::resource::Trim::trim(split.as_ref())?;
                }
            }
            Action::AllocFailed | Action::Upload | Action::Download | Action::DeviceCopy => {}
        }
        outcome.events = index + 1;
        outcome.peak_live = outcome.peak_live.max(live);
        let reserved = driver.stats().bytes;
        if reserved > outcome.peak_reserved {
            outcome.peak_reserved = reserved;
            outcome.fragmentation = fragmentation(&pool, split.as_deref());
        }
        if index % stride == 0 || index + 1 == trace.events.len() {
            outcome.curve.push(CurvePoint {
                event: index,
                live,
                reserved,
            });
        }
        if options.snapshot_at == Some(index) {
            outcome.snapshot = split.as_ref().map(|s| s.snapshot());
        }
    }
    let events = outcome.events.max(1) as f64;
    outcome.ns_per_event = start.elapsed().as_nanos() as f64 / events;
    outcome.backend_ns_per_event = timed.nanos() as f64 / events;
    drop(blocks);
    let driven = driver.stats();
    outcome.backend_allocations = driven.allocations;
    outcome.commits = driven.commits;
    let requests = outcome.requests.max(1) as f64;
    let calls = (driven.allocations + driven.commits) as f64;
    outcome.hit_rate = (1.0 - calls / requests).max(0.0);
    Ok(outcome)
}

/// The cache, and the splitting allocator under it if the configuration has one.
fn stack(
    below: Arc<dyn MemoryResource>,
    config: AllocatorConfig,
) -> Result<(CachingAllocator, Option<Arc<SplittingResource>>)> {
    let cache = |classes| CachingConfig {
        classes,
        ..CachingConfig::default()
    };
    Ok(match config {
        AllocatorConfig::Default | AllocatorConfig::Compact => {
            let rules = SplittingConfig {
                free_committed_percent: (config == AllocatorConfig::Compact).then_some(12),
                ..SplittingConfig::default()
            };
            let split = SplittingResource::over(below, rules)?;
            let front = CachingConfig::unpooled();
            (CachingAllocator::over(split.clone(), front), Some(split))
        }
        AllocatorConfig::Classes => (
            CachingAllocator::over(below, CachingConfig::default()),
            None,
        ),
        AllocatorConfig::PowerOfTwo => (
            CachingAllocator::over(below, cache(SizeClasses::power_of_two())),
            None,
        ),
        AllocatorConfig::Unpooled => (
            CachingAllocator::over(below, CachingConfig::unpooled()),
            None,
        ),
    })
}

/// Free bytes outside the largest free piece, over all free bytes the stack holds.
fn fragmentation(pool: &CachingAllocator, split: Option<&SplittingResource>) -> f64 {
    let cache = pool.stats();
    let (mut free, mut largest) = (cache.bytes_cached, cache.largest_cached_block);
    if let Some(split) = split {
        let s = split.stats();
        free += s.reserved_bytes - s.used_bytes;
        largest = largest.max(s.largest_free);
    }
    match free {
        0 => 0.0,
        _ => 1.0 - largest as f64 / free as f64,
    }
}
