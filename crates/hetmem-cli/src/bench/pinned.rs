//! `pinned.*`: page-locked host memory — transfers from and to it against pageable memory, and
//! the pinned pool's reuse against page-locking fresh memory.

use std::sync::Arc;

use hetmem::backend::Backend;
use hetmem::pool::PinnedPool;
use hetmem::Result;

use super::harness::{compare_auto, latency, Effort, Side};
use super::report::{Better, Measurement};
use super::Suite;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const SIZES: [(usize, &str); 4] = [
    (64 * KIB, "64KiB"),
    (MIB, "1MiB"),
    (16 * MIB, "16MiB"),
    (256 * MIB, "256MiB"),
];

pub fn register(suite: &mut Suite) {
    for way in ["h2d", "d2h"] {
        for (len, label) in SIZES {
            suite.case(&format!("pinned.{way}.{label}"), move |b, e| {
                pinned_vs_pageable(b, e, way, len, label)
            });
        }
    }
    suite.case("pinned.pool_hit", pool_hit);
}

/// GB/s of one raw transfer from (or into) pooled page-locked memory against the same from a
/// pageable `Vec`.
fn pinned_vs_pageable(
    backend: &Arc<dyn Backend>,
    effort: Effort,
    way: &str,
    len: usize,
    label: &str,
) -> Result<Measurement> {
    let pool = PinnedPool::new(backend.clone());
    let q = backend.default_queue().clone();
    let mut pinned = pool.take(len)?;
    pinned.as_mut_slice()?.fill(7);
    let mut pageable = vec![7u8; len];
    let mut block = backend.allocate(len)?;
    backend.write(&q, &mut block, 0, &pageable)?;
    let timed = compare_auto(effort, |side| match (way, side) {
        ("h2d", Side::Hetmem) => backend.write(&q, &mut block, 0, &pinned.as_slice()?[..len]),
        ("h2d", Side::Baseline) => backend.write(&q, &mut block, 0, &pageable),
        (_, Side::Hetmem) => backend.read(&q, &block, 0, &mut pinned.as_mut_slice()?[..len]),
        (_, Side::Baseline) => backend.read(&q, &block, 0, &mut pageable),
    });
    backend.release(block)?;
    let (ours, theirs) = timed?.medians();
    let gbs = |secs: f64| len as f64 / secs / 1e9;
    Ok(Measurement::new(
        &format!("pinned.{way}.{label}"),
        gbs(ours),
        "GB/s",
        Better::Higher,
        "the same call on pageable memory",
        gbs(theirs),
    ))
}

/// Taking and giving back 1 MiB of page-locked memory from the pool against page-locking and
/// freeing it each time.
fn pool_hit(backend: &Arc<dyn Backend>, effort: Effort) -> Result<Measurement> {
    let pool = PinnedPool::new(backend.clone());
    let timings = compare_auto(effort, |side| match side {
        Side::Hetmem => pool.take(MIB).map(drop),
        Side::Baseline => backend.allocate_staging(MIB).map(drop),
    })?;
    Ok(latency(
        "pinned.pool_hit",
        &timings,
        "fresh page-locked allocation + free",
        "ns",
    ))
}
