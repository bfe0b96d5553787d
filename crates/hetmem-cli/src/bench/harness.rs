//! Timing: warm-up first, then hetmem and its baseline sampled alternately so that drift on a
//! noisy machine hits both alike; medians, never means.

use std::hint::black_box;
use std::time::{Duration, Instant};

use hetmem::Result;

use super::report::{Better, Measurement, Samples};

/// How much to measure.
#[derive(Debug, Clone, Copy)]
pub struct Effort {
    /// Timed samples per side.
    pub samples: usize,
    /// Scale for loop counts inside a sample (operations per sample, trace lengths).
    pub scale: usize,
}

impl Effort {
    pub fn new(quick: bool) -> Self {
        if quick {
            Effort {
                samples: 5,
                scale: 1,
            }
        } else {
            Effort {
                samples: 21,
                scale: 4,
            }
        }
    }

    /// Samples for an operation that takes about `each`: fewer for the slow ones.
    pub fn samples_for(&self, each: Duration) -> usize {
        if each > Duration::from_millis(50) {
            (self.samples / 2).max(3)
        } else {
            self.samples
        }
    }
}

/// The median of `values` (sorted in place).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Which side of a comparison a call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Hetmem,
    Baseline,
}

/// Seconds per call of every timed sample of each side of a comparison.
#[derive(Debug, Clone)]
pub struct Timings {
    pub hetmem: Vec<f64>,
    pub baseline: Vec<f64>,
}

impl Timings {
    /// The two medians: hetmem's, the baseline's.
    pub fn medians(&self) -> (f64, f64) {
        (
            median(&mut self.hetmem.clone()),
            median(&mut self.baseline.clone()),
        )
    }

    /// Every sample divided by `n`: per-item times from per-batch ones.
    pub fn per(mut self, n: usize) -> Self {
        for t in self.hetmem.iter_mut().chain(&mut self.baseline) {
            *t /= n as f64;
        }
        self
    }
}

/// Seconds per call of each side of `run`: one warm-up call each, then `samples` alternating
/// samples of `iters` calls (hetmem's, the baseline's). The first failure ends the comparison.
pub fn compare_with(
    samples: usize,
    iters: (usize, usize),
    mut run: impl FnMut(Side) -> Result<()>,
) -> Result<Timings> {
    run(Side::Hetmem)?;
    run(Side::Baseline)?;
    compare_timed(samples, |side| match side {
        Side::Hetmem => time(iters.0, || run(side)),
        Side::Baseline => time(iters.1, || run(side)),
    })
}

/// `samples` alternating samples of each side, where `sample` times itself and returns the
/// seconds (so that preparation, such as allocating a fresh block, stays outside the timing).
pub fn compare_timed(
    samples: usize,
    mut sample: impl FnMut(Side) -> Result<f64>,
) -> Result<Timings> {
    let mut timings = Timings {
        hetmem: Vec::with_capacity(samples),
        baseline: Vec::with_capacity(samples),
    };
    for _ in 0..samples {
        timings.hetmem.push(sample(Side::Hetmem)?);
        timings.baseline.push(sample(Side::Baseline)?);
    }
    Ok(timings)
}

/// [`compare_with`], the same number of calls on both sides.
pub fn compare(
    samples: usize,
    iters: usize,
    run: impl FnMut(Side) -> Result<()>,
) -> Result<Timings> {
    compare_with(samples, (iters, iters), run)
}

/// [`compare_with`], sizing each side's loop so that a sample lasts about 10 ms, and taking
/// fewer samples of slow operations.
pub fn compare_auto(effort: Effort, mut run: impl FnMut(Side) -> Result<()>) -> Result<Timings> {
    let mut each = |side| -> Result<Duration> {
        run(side)?;
        let start = Instant::now();
        run(side)?;
        Ok(start.elapsed())
    };
    let (ours, theirs) = (each(Side::Hetmem)?, each(Side::Baseline)?);
    let target = Duration::from_millis(10);
    let iters = (iters_for(ours, target), iters_for(theirs, target));
    compare_with(effort.samples_for(ours.max(theirs)), iters, run)
}

/// Seconds per call over `iters` calls.
pub fn time(iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let start = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    Ok(black_box(start.elapsed().as_secs_f64() / iters as f64))
}

/// Loop count so that one sample of an operation taking about `each` lasts about `target`.
pub fn iters_for(each: Duration, target: Duration) -> usize {
    let each = each.as_secs_f64().max(1e-9);
    ((target.as_secs_f64() / each) as usize).clamp(1, 1_000_000)
}

/// How many of a time `unit` ("ns", "us", "ms") make a second; `None` for other units.
pub fn per_second(unit: &str) -> Option<f64> {
    match unit {
        "ns" => Some(1e9),
        "us" => Some(1e6),
        "ms" => Some(1e3),
        _ => None,
    }
}

/// A result whose value and baseline are the median times per operation of `timings`, reported
/// in `unit` ("ns", "us" or "ms") with every sample kept: lower is better.
pub fn latency(id: &str, timings: &Timings, baseline: &str, unit: &'static str) -> Measurement {
    let scale = per_second(unit).unwrap_or(1.0);
    let (ours, theirs) = timings.medians();
    let scaled = |v: &[f64]| v.iter().map(|t| t * scale).collect();
    Measurement::new(
        id,
        ours * scale,
        unit,
        Better::Lower,
        baseline,
        theirs * scale,
    )
    .with_samples(Samples {
        hetmem: scaled(&timings.hetmem),
        baseline: scaled(&timings.baseline),
    })
}
