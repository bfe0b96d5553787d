//! `transfer.*`: the engine against one raw backend call (memcpy, on the host backend).

use std::sync::Arc;

use hetmem::backend::{Backend, BackendKind, CopyRegion, DeviceBlock};
use hetmem::transfer::{BatchWrite, TransferEngine};
use hetmem::Result;

use super::harness::{compare, compare_auto, compare_timed, latency, time, Effort, Side, Timings};
use super::report::{Better, Measurement};
use super::Suite;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// The sizes measured, with their labels.
pub const SIZES: [(usize, &str); 5] = [
    (4 * KIB, "4KiB"),
    (64 * KIB, "64KiB"),
    (MIB, "1MiB"),
    (16 * MIB, "16MiB"),
    (256 * MIB, "256MiB"),
];

/// The directions measured.
pub const WAYS: [&str; 3] = ["h2d", "d2h", "d2d"];

pub fn register(suite: &mut Suite) {
    for way in WAYS {
        for (len, label) in SIZES {
            suite.case(&format!("transfer.{way}.{label}"), move |b, e| {
                bandwidth(b, e, way, len, label)
            });
        }
    }
    suite.case("transfer.h2d_fresh.256MiB", fresh_write);
    suite.case("transfer.batch.h2d.4KiBx1000", batch);
}

/// GB/s of the engine and of the raw call for one size and direction.
fn bandwidth(
    backend: &Arc<dyn Backend>,
    effort: Effort,
    way: &str,
    len: usize,
    label: &str,
) -> Result<Measurement> {
    let engine = TransferEngine::new(backend.clone());
    let q = backend.default_queue().clone();
    let mut host = vec![7u8; len];
    let mut block = backend.allocate(len)?;
    let mut other = backend.allocate(len)?;
    // Both blocks hold data first: reading memory never written reads the kernel's shared zero
    // page (PoCL's raw 256 MiB read ran at 17.7 GB/s that way, against ~10 GB/s from real data).
    backend.write(&q, &mut block, 0, &host)?;
    backend.write(&q, &mut other, 0, &host)?;
    let timed = compare_auto(effort, |side| match (way, side) {
        ("h2d", Side::Hetmem) => engine.write(&mut block, 0, &host),
        ("h2d", Side::Baseline) => backend.write(&q, &mut block, 0, &host),
        ("d2h", Side::Hetmem) => engine.read(&block, 0, &mut host),
        ("d2h", Side::Baseline) => backend.read(&q, &block, 0, &mut host),
        (_, Side::Hetmem) => engine.copy(&block, 0, &mut other, 0, len),
        (_, Side::Baseline) => backend
            .copy(&q, &block, &mut other, CopyRegion::prefix(len))?
            .wait(),
    });
    backend.release(block)?;
    backend.release(other)?;
    Ok(gigabytes_per_second(
        &format!("transfer.{way}.{label}"),
        backend,
        len,
        &timed?,
    ))
}

/// 256 MiB written into a block allocated just before, its memory not yet touched: a first
/// upload. The allocation and release are outside the timing.
fn fresh_write(backend: &Arc<dyn Backend>, effort: Effort) -> Result<Measurement> {
    let len = 256 * MIB;
    let engine = TransferEngine::new(backend.clone());
    let q = backend.default_queue().clone();
    let host = vec![7u8; len];
    // Every sample, not `samples_for`: how fast fresh pages fault in varies from one to the next.
    let timed = compare_timed(effort.samples, |side| {
        let mut block = backend.allocate(len)?;
        let secs = time(1, || match side {
            Side::Hetmem => engine.write(&mut block, 0, &host),
            Side::Baseline => backend.write(&q, &mut block, 0, &host),
        });
        backend.release(block)?;
        secs
    });
    Ok(gigabytes_per_second(
        "transfer.h2d_fresh.256MiB",
        backend,
        len,
        &timed?,
    ))
}

/// A bandwidth result from the seconds per transfer of `len` bytes.
fn gigabytes_per_second(
    id: &str,
    backend: &Arc<dyn Backend>,
    len: usize,
    timed: &Timings,
) -> Measurement {
    let (ours, theirs) = timed.medians();
    let baseline = if backend.info().kind == BackendKind::Host {
        "memcpy (host backend call)"
    } else {
        "one raw backend call"
    };
    let gbs = |secs: f64| len as f64 / secs / 1e9;
    Measurement::new(id, gbs(ours), "GB/s", Better::Higher, baseline, gbs(theirs))
}

/// 1000 writes of 4 KiB as one batch against 1000 raw blocking writes, µs in all.
/// `sources[i]` into `blocks[i]` at offset 0, as one batch of the engine: the hetmem side of
/// every `*.batch.*` figure.
pub fn write_batch(
    engine: &TransferEngine,
    blocks: &mut [DeviceBlock],
    sources: &[Vec<u8>],
) -> Result<()> {
    let mut items: Vec<BatchWrite> = (blocks.iter_mut().zip(sources))
        .map(|(dst, src)| BatchWrite {
            dst,
            offset: 0,
            src,
        })
        .collect();
    engine.write_batch(&mut items)
}

fn batch(backend: &Arc<dyn Backend>, effort: Effort) -> Result<Measurement> {
    let engine = TransferEngine::new(backend.clone());
    let q = backend.default_queue().clone();
    let mut blocks = (0..1000)
        .map(|_| backend.allocate(4 * KIB))
        .collect::<Result<Vec<_>>>()?;
    let sources: Vec<Vec<u8>> = (0..1000).map(|i| vec![i as u8; 4 * KIB]).collect();
    let timed = compare(effort.samples, 1, |side| match side {
        Side::Hetmem => write_batch(&engine, &mut blocks, &sources),
        Side::Baseline => blocks
            .iter_mut()
            .zip(&sources)
            .try_for_each(|(dst, src)| backend.write(&q, dst, 0, src)),
    });
    for block in blocks {
        backend.release(block)?;
    }
    Ok(latency(
        "transfer.batch.h2d.4KiBx1000",
        &timed?,
        "1000 raw blocking writes",
        "us",
    ))
}
