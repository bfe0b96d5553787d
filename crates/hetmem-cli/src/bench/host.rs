//! `host.*`: host memory sources against plain base pages — what transparent huge pages buy
//! on first touch and on random access (fewer page faults, fewer TLB misses).

use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Instant;

use hetmem::backend::Backend;
use hetmem::host::{FileAccess, HostRegion, HostSource, MappedFile, Pages, SharedSegment};
use hetmem::MemoryManager;
use hetmem::Result;

use super::harness::{compare_timed, latency, Effort, Side};
use super::report::Measurement;
use super::Suite;

const MIB: usize = 1 << 20;

pub fn register(suite: &mut Suite) {
    suite.case("host.huge_pages.touch", |_, e| touch(e));
    suite.case("host.huge_pages.random_read", |_, e| random_read(e));
    suite.case("host.shared_segment.open_read", |_, e| shared_open_read(e));
    suite.case("host.mapped_file.upload", mapped_upload);
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

/// 64 MiB quick, 256 MiB otherwise.
fn data_len(effort: Effort) -> usize {
    64 * MIB * effort.scale
}

/// Opening a named segment as a buffer and reading all of it (what a second process does with
/// data another made), against the same bytes sent through a Unix socket into a `Vec`.
fn shared_open_read(effort: Effort) -> Result<Measurement> {
    let len = data_len(effort);
    let name = format!("hetmem-bench-{}", std::process::id());
    let manager = MemoryManager::host();
    let mut made = manager.create_shared::<u8>(&name, len)?;
    made.host_mut()?.fill(3);
    let source = vec![3u8; len];
    let sum = |bytes: &[u8]| bytes.iter().step_by(64).map(|&b| u64::from(b)).sum::<u64>();
    let timings = compare_timed(effort.samples.min(7), |side| {
        let start = Instant::now();
        let total = match side {
            Side::Hetmem => sum(&manager.open_shared::<u8>(&name)?.host()?),
            Side::Baseline => {
                let (mut reader, mut writer) = UnixStream::pair()?;
                let source = &source;
                let received = std::thread::scope(|s| {
                    s.spawn(move || {
                        writer.write_all(source)?;
                        writer.shutdown(std::net::Shutdown::Write)
                    });
                    let mut received = Vec::with_capacity(len);
                    reader.read_to_end(&mut received).map(|_| received)
                })?;
                sum(&received)
            }
        };
        black_box(total);
        Ok(start.elapsed().as_secs_f64())
    });
    SharedSegment::unlink(&name)?;
    let id = "host.shared_segment.open_read";
    Ok(latency(
        id,
        &timings?,
        "the bytes through a socket into a Vec",
        "ms",
    ))
}

/// A file uploaded to the device through a buffer over its mapping, against reading it into a
/// `Vec` and writing that (the page cache warm on both sides).
fn mapped_upload(backend: &Arc<dyn Backend>, effort: Effort) -> Result<Measurement> {
    let len = data_len(effort);
    let path = std::env::temp_dir().join(format!("hetmem-bench-{}.bin", std::process::id()));
    std::fs::write(&path, vec![5u8; len])?;
    let manager = MemoryManager::new(backend.clone())?;
    let q = backend.default_queue().clone();
    let mut block = backend.allocate(len)?;
    let timings = compare_timed(effort.samples.min(7), |side| {
        let start = Instant::now();
        match side {
            Side::Hetmem => {
                let mapped = MappedFile::open(&path, FileAccess::ReadOnly)?;
                let buf = manager.adopt_host::<u8>(mapped)?;
                buf.device()?;
            }
            Side::Baseline => {
                let bytes = std::fs::read(&path)?;
                backend.write(&q, &mut block, 0, &bytes)?;
            }
        }
        Ok(start.elapsed().as_secs_f64())
    });
    backend.release(block)?;
    std::fs::remove_file(&path)?;
    let id = "host.mapped_file.upload";
    Ok(latency(
        id,
        &timings?,
        "read into a Vec, then one write",
        "ms",
    ))
}
