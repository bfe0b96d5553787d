//! `pattern.*`: usage patterns — allocation from several threads, and a replayed random
//! allocation trace of the shape RMM's benchmarks use.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use hetmem::backend::Backend;
use hetmem::pool::{CachingAllocator, CachingConfig, PooledBlock, SizeClasses};
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

/// Replays a seeded trace: each step allocates (probability 0.73, log-uniform 256 B to 64 MiB,
/// while the live bytes stay under a cap) or frees a random live block.
fn replay_with(backend: &Arc<dyn Backend>, classes: SizeClasses, steps: usize) -> Result<Replayed> {
    const CAP: usize = 512 << 20;
    let pool = CachingAllocator::with_config(
        backend.clone(),
        CachingConfig {
            classes,
            ..CachingConfig::default()
        },
    );
    let mut rng = fastrand::Rng::with_seed(42);
    let mut live: Vec<PooledBlock> = Vec::new();
    let (mut requested, mut peak_requested) = (0usize, 0usize);
    let (mut waste_sum, mut samples) = (0.0, 0usize);
    for _ in 0..steps {
        let size = (256.0 * 262_144f64.powf(rng.f64())) as usize;
        if rng.f64() < 0.73 && requested + size <= CAP {
            live.push(pool.allocate(size)?);
            requested += size;
            peak_requested = peak_requested.max(requested);
        } else if !live.is_empty() {
            let gone = live.swap_remove(rng.usize(..live.len()));
            requested -= gone.len();
        }
        let stats = pool.stats();
        if stats.bytes_in_use > 0 {
            waste_sum += stats.waste_bytes as f64 / stats.bytes_in_use as f64;
            samples += 1;
        }
    }
    let stats = pool.stats();
    Ok(Replayed {
        waste_pct: 100.0 * waste_sum / samples.max(1) as f64,
        hit_rate_pct: 100.0 * stats.hit_rate(),
        peak_reserved_ratio: stats.peak_reserved as f64 / peak_requested.max(1) as f64,
    })
}

fn replay(backend: &Arc<dyn Backend>, effort: Effort) -> Result<Vec<Measurement>> {
    let steps = 3000 * effort.scale;
    let ours = replay_with(backend, SizeClasses::default(), steps)?;
    let theirs = replay_with(backend, SizeClasses::power_of_two(), steps)?;
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
