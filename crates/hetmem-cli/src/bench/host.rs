//! `host.*`: host memory sources against plain base pages — what transparent huge pages buy
//! on first touch and on random access (fewer page faults, fewer TLB misses).

use std::hint::black_box;
use std::time::Instant;

use hetmem::host::{HostRegion, HostSource, Pages};
use hetmem::Result;

use super::harness::{compare_timed, latency, Effort, Side};
use super::report::Measurement;
use super::Suite;

const MIB: usize = 1 << 20;

pub fn register(suite: &mut Suite) {
    suite.case("host.huge_pages.touch", |_, e| touch(e));
    suite.case("host.huge_pages.random_read", |_, e| random_read(e));
}

/// 256 MiB quick, 1 GiB otherwise.
fn region_len(effort: Effort) -> usize {
    256 * MIB * effort.scale
}

/// Transparent huge pages on hetmem's side, base pages on the baseline's.
fn source(side: Side) -> HostSource {
    HostSource {
        pages: match side {
            Side::Hetmem => Pages::Transparent,
            Side::Baseline => Pages::Base,
        },
        // A mapping on both sides (the heap would serve base pages from a mapping of its own).
        alignment: 1 << 21,
        ..HostSource::default()
    }
}

/// Allocating the region and writing one byte in every 4 KiB page: the page faults.
fn touch(effort: Effort) -> Result<Measurement> {
    let len = region_len(effort);
    let timings = compare_timed(effort.samples.min(7), |side| {
        let start = Instant::now();
        let mut region = HostRegion::allocate(&source(side), len)?;
        for page in region.as_mut_slice().chunks_mut(4096) {
            page[0] = 1;
        }
        black_box(&region);
        Ok(start.elapsed().as_secs_f64())
    })?;
    let id = "host.huge_pages.touch";
    Ok(latency(
        id,
        &timings,
        "the same on base pages (4 KiB)",
        "ms",
    ))
}

/// Reads of 8 bytes at random places in a touched region, each depending on the last (so the
/// TLB misses cannot overlap), per read.
fn random_read(effort: Effort) -> Result<Measurement> {
    let len = region_len(effort);
    let mut regions =
        [Side::Hetmem, Side::Baseline].map(|side| HostRegion::allocate(&source(side), len));
    for region in regions.iter_mut().flatten() {
        region.as_mut_slice().fill(1);
    }
    let [ours, theirs] = regions;
    let (ours, theirs) = (ours?, theirs?);
    let reads = 1 << 20;
    let timings = compare_timed(effort.samples, |side| {
        let bytes = match side {
            Side::Hetmem => ours.as_slice(),
            Side::Baseline => theirs.as_slice(),
        };
        let words = bytes.len() / 8;
        let mut rng = fastrand::Rng::with_seed(11);
        let mut at = 0usize;
        let start = Instant::now();
        for _ in 0..reads {
            let i = (rng.usize(..words) ^ at) % words;
            at = usize::from(bytes[i * 8]);
        }
        black_box(at);
        Ok(start.elapsed().as_secs_f64() / reads as f64)
    })?;
    let id = "host.huge_pages.random_read";
    Ok(latency(
        id,
        &timings,
        "the same on base pages (4 KiB)",
        "ns",
    ))
}
