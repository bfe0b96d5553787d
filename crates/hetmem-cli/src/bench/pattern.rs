//! `pattern.*`: usage patterns — allocation from several threads, and a replayed random
//! allocation trace of the shape RMM's benchmarks use, through the manager's default stack
//! (the splitting allocator) against power-of-two classes.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use hetmem::backend::Backend;
use hetmem::pool::{
    CachingAllocator, CachingConfig, PooledBlock, SizeClasses, SplittingConfig, SplittingResource,
};
use hetmem::record::{self, Action, AllocatorConfig, ReplayOptions, Trace, TraceEvent};
use hetmem::resource::{MemoryResource, PlainResource, StatisticsResource};
use hetmem::Result;

use super::harness::{median, Effort};
use super::report::{Better, Measurement};
use super::Suite;

pub fn register(suite: &mut Suite) {
    for threads in [1usize, 2] {
        let id = format!("pattern.concurrent.{threads}threads");
        suite.case(&id.clone(), move |b, e| concurrent(b, e, threads, &id));
    }
    suite.case_of_several(
        &[
            "pattern.replay.waste_pct",
            "pattern.replay.hit_rate_pct",
            "pattern.replay.peak_reserved_ratio",
        ],
        replay,
    );
    suite.case("pattern.replay.long.allocator_ns_per_event", long_replay);
    for (name, _) in TRACES {
        let ids = [
            format!("pattern.replay.{name}.hit_rate_pct"),
            format!("pattern.replay.{name}.peak_reserved_ratio"),
            format!("pattern.replay.{name}.compact.peak_reserved_ratio"),
        ];
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        suite.case_of_several(&refs, move |b, _| recorded(b, name));
    }
}

/// Allocation traces recorded from candle workloads (`data/traces/README.md`), built in.
const TRACES: [(&str, &str); 3] = [
    (
        "mlp_training",
        include_str!("../../../../data/traces/candle-mlp-training.jsonl"),
    ),
    (
        "kv_cache",
        include_str!("../../../../data/traces/candle-kv-cache-decoding.jsonl"),
    ),
    (
        "batched_inference",
        include_str!("../../../../data/traces/candle-batched-inference.jsonl"),
    ),
];

/// A recorded trace through the manager's default stack against the stack without splitting
/// (size classes at every size, as before): hit rate and peak reserved over peak live.
fn recorded(backend: &Arc<dyn Backend>, name: &str) -> Result<Vec<Measurement>> {
    let text = (TRACES.iter())
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .unwrap_or_default();
    let trace = Trace::read_jsonl(text.as_bytes())?;
    let run = |config| record::replay(&trace, backend.clone(), config, ReplayOptions::default());
    let (ours, compact, theirs) = (
        run(AllocatorConfig::Default)?,
        run(AllocatorConfig::Compact)?,
        run(AllocatorConfig::Classes)?,
    );
    let baseline = "the same trace, size classes without splitting";
    Ok(vec![
        Measurement::new(
            &format!("pattern.replay.{name}.hit_rate_pct"),
            100.0 * ours.hit_rate,
            "%",
            Better::Higher,
            baseline,
            100.0 * theirs.hit_rate,
        ),
        Measurement::new(
            &format!("pattern.replay.{name}.peak_reserved_ratio"),
            ours.reserved_ratio(),
            "x",
            Better::Lower,
            baseline,
            theirs.reserved_ratio(),
        ),
        Measurement::new(
            &format!("pattern.replay.{name}.compact.peak_reserved_ratio"),
            compact.reserved_ratio(),
            "x",
            Better::Lower,
            baseline,
            theirs.reserved_ratio(),
        ),
    ])
}

/// Allocate/release operations per second of 64 KiB blocks on `threads` threads at once.
fn concurrent(
    backend: &Arc<dyn Backend>,
    effort: Effort,
    threads: usize,
    id: &str,
) -> Result<Measurement> {
    const BYTES: usize = 64 << 10;
    let per_thread = 2000 * effort.scale;
    let pool = CachingAllocator::new(backend.clone());
    let run = |pooled: bool| -> Result<f64> {
        let start = Instant::now();
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| -> Result<()> {
                        for _ in 0..per_thread {
                            if pooled {
                                drop(black_box(pool.allocate(BYTES)?));
                            } else {
                                backend.release(black_box(backend.allocate(BYTES)?))?;
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            workers
                .into_iter()
                .try_for_each(|w| w.join().expect("benchmark thread panicked"))
        })?;
        Ok((threads * per_thread) as f64 / start.elapsed().as_secs_f64())
    };
    run(true)?;
    run(false)?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..effort.samples {
        ours.push(run(true)?);
        theirs.push(run(false)?);
    }
    Ok(Measurement::new(
        id,
        median(&mut ours),
        "ops/s",
        Better::Higher,
        "raw backend allocate + release",
        median(&mut theirs),
    ))
}

/// What one replay of the trace left behind.
struct Replayed {
    waste_pct: f64,
    hit_rate_pct: f64,
    peak_reserved_ratio: f64,
}

/// The allocator stacks a trace is replayed against.
#[derive(Clone, Copy)]
enum Stack {
    /// The manager's default: the splitting allocator, with no cache of its own in front.
    Default,
    /// A caching allocator with these classes at every size (no splitting).
    Classes(SizeClasses),
}

/// Replays a seeded trace: each step allocates (probability 0.73, log-uniform 256 B to 64 MiB,
/// while the live bytes stay under a cap) or frees a random live block. What the stack takes
/// from the backend is counted under it: a hit is a request served without a backend
/// allocation, and peak reserved is the most bytes held from the backend at once.
fn replay_with(backend: &Arc<dyn Backend>, stack: Stack, steps: usize) -> Result<Replayed> {
    const CAP: usize = 512 << 20;
    let driver = Arc::new(StatisticsResource::new(Arc::new(PlainResource::new(
        backend.clone(),
    ))));
    let below: Arc<dyn MemoryResource> = driver.clone();
    let (pool, split) = match stack {
        Stack::Default => {
            let split = SplittingResource::over(below, SplittingConfig::default())?;
            let pool = CachingAllocator::over(split.clone(), CachingConfig::unpooled());
            (pool, Some(split))
        }
        Stack::Classes(classes) => (
            CachingAllocator::over(
                below,
                CachingConfig {
                    classes,
                    ..CachingConfig::default()
                },
            ),
            None,
        ),
    };
    let mut rng = fastrand::Rng::with_seed(42);
    let mut live: Vec<PooledBlock> = Vec::new();
    let (mut requested, mut peak_requested, mut requests) = (0usize, 0usize, 0u64);
    let (mut waste_sum, mut samples) = (0.0, 0usize);
    for _ in 0..steps {
        let size = (256.0 * 262_144f64.powf(rng.f64())) as usize;
        if rng.f64() < 0.73 && requested + size <= CAP {
            live.push(pool.allocate(size)?);
            requests += 1;
            requested += size;
            peak_requested = peak_requested.max(requested);
        } else if !live.is_empty() {
            let gone = live.swap_remove(rng.usize(..live.len()));
            requested -= gone.len();
        }
        if requested > 0 {
            // What the live blocks hold: their classes, or the carved ranges (rounded to the
            // splitting allocator's granularity) where every block is carved.
            let held = match &split {
                Some(split) => split.stats().used_bytes as usize,
                None => live.iter().map(PooledBlock::capacity).sum(),
            };
            waste_sum += (held - requested) as f64 / held as f64;
            samples += 1;
        }
    }
    let stats = driver.stats();
    Ok(Replayed {
        waste_pct: 100.0 * waste_sum / samples.max(1) as f64,
        hit_rate_pct: 100.0
            * (1.0 - (stats.allocations + stats.commits) as f64 / requests.max(1) as f64),
        peak_reserved_ratio: stats.peak_bytes as f64 / peak_requested.max(1) as f64,
    })
}

/// A random trace of `events` events of the shape of the synthetic replay (256 B to 64 MiB,
/// log-uniform, at most 512 MiB live), as a [`Trace`] for [`record::replay`].
fn long_trace(events: usize) -> Trace {
    const CAP: u64 = 512 << 20;
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut live, mut bytes, mut next) = (Vec::<(u64, u64)>::new(), 0u64, 1u64);
    let mut trace = Trace::default();
    for time_ns in 0..events as u64 {
        let size = (256.0 * 262_144f64.powf(rng.f64())) as u64;
        let (action, id, size) = if rng.f64() < 0.55 && bytes + size <= CAP || live.is_empty() {
            live.push((next, size));
            bytes += size;
            next += 1;
            (Action::Alloc, next - 1, size)
        } else {
            let (id, size) = live.swap_remove(rng.usize(..live.len()));
            bytes -= size;
            (Action::Free, id, size)
        };
        trace.events.push(TraceEvent {
            time_ns,
            thread: 0,
            action,
            id,
            bytes: size,
            stream: None,
            label: None,
            placement: None,
        });
    }
    trace
}

/// A long random trace (250 000 events quick, 1 000 000 in full) replayed through the default
/// stack: the allocator's own time per event, backend calls excluded, against the classic
/// caching allocator's (power-of-two classes, backend calls excluded too).
fn long_replay(backend: &Arc<dyn Backend>, effort: Effort) -> Result<Measurement> {
    let trace = long_trace(250_000 * effort.scale);
    let run = |config| record::replay(&trace, backend.clone(), config, ReplayOptions::default());
    let (ours, classic) = (
        run(AllocatorConfig::Default)?,
        run(AllocatorConfig::PowerOfTwo)?,
    );
    Ok(Measurement::new(
        "pattern.replay.long.allocator_ns_per_event",
        ours.allocator_ns_per_event(),
        "ns",
        Better::Lower,
        "the same replay through power-of-two classes, backend calls excluded from both",
        classic.allocator_ns_per_event(),
    ))
}

fn replay(backend: &Arc<dyn Backend>, effort: Effort) -> Result<Vec<Measurement>> {
    let steps = 3000 * effort.scale;
    let ours = replay_with(backend, Stack::Default, steps)?;
    let theirs = replay_with(backend, Stack::Classes(SizeClasses::power_of_two()), steps)?;
    let baseline = "the same trace, power-of-two classes";
    Ok(vec![
        Measurement::new(
            "pattern.replay.waste_pct",
            ours.waste_pct,
            "%",
            Better::Lower,
            baseline,
            theirs.waste_pct,
        ),
        Measurement::new(
            "pattern.replay.hit_rate_pct",
            ours.hit_rate_pct,
            "%",
            Better::Higher,
            baseline,
            theirs.hit_rate_pct,
        ),
        Measurement::new(
            "pattern.replay.peak_reserved_ratio",
            ours.peak_reserved_ratio,
            "x",
            Better::Lower,
            baseline,
            theirs.peak_reserved_ratio,
        ),
    ])
}
