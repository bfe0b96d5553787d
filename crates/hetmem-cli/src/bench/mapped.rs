//! `map.*` and `shared.*`: a buffer's device copy reached in place (map guards, shared
//! placement) against what a user would otherwise do — copy it out into a `Vec` and back.
//! Where the device can neither map nor share, these produce no result.

use std::sync::Arc;

use hetmem::backend::Backend;
use hetmem::buffer::{BufferContext, Residency};
use hetmem::{AllocOptions, MemoryManager, Placement, Result, UnifiedBuffer};

use super::harness::{compare_auto, Effort, Side, Timings};
use super::report::{Better, Measurement};
use super::Suite;

const LEN: usize = 16 << 20;
const WORDS: usize = LEN / 4;

pub fn register(suite: &mut Suite) {
    suite.case_of_several(&["map.read.16MiB", "map.write_discard.16MiB"], maps);
    suite.case_of_several(&["shared.host_then_device.16MiB"], shared);
}

/// A sum over the words, so that every byte is read.
fn sum(words: &[u32]) -> u32 {
    words.iter().fold(0u32, |s, &w| s.wrapping_add(w))
}

/// Reading 16 MiB of a buffer's device copy through a map guard against reading it into a
/// `Vec` with one raw call; overwriting it through a write-discard map against filling a
/// `Vec` and writing it with one raw call. GB/s of bytes reached.
fn maps(backend: &Arc<dyn Backend>, effort: Effort) -> Result<Vec<Measurement>> {
    let caps = backend.capabilities();
    if !caps.mapped_access && !caps.host_addressable {
        return Ok(Vec::new());
    }
    let ctx = BufferContext::new(backend.clone());
    let mut buf: UnifiedBuffer<u32> = ctx.alloc_with(WORDS, Residency::Mirrored)?;
    buf.map_discard()?.fill(3);
    let q = backend.default_queue().clone();
    let mut copy = vec![0u32; WORDS];
    let mut seen = 0u32;
    let read = compare_auto(effort, |side| {
        match side {
            Side::Hetmem => seen ^= sum(&buf.map_read()?),
            Side::Baseline => {
                let d = buf.device()?;
                backend.read(&q, d.block(), 0, bytemuck::cast_slice_mut(&mut copy))?;
                seen ^= sum(&copy);
            }
        }
        Ok(())
    })?;
    std::hint::black_box(seen);
    let mut value = 0u32;
    let write = compare_auto(effort, |side| {
        value = value.wrapping_add(1);
        match side {
            Side::Hetmem => buf.map_discard()?.fill(value),
            Side::Baseline => {
                copy.fill(value);
                let mut d = buf.device_discard()?;
                backend.write(&q, d.block_mut(), 0, bytemuck::cast_slice(&copy))?;
            }
        }
        Ok(())
    })?;
    Ok(vec![
        bandwidth("map.read.16MiB", &read, "read into a Vec (one raw call)"),
        bandwidth(
            "map.write_discard.16MiB",
            &write,
            "fill a Vec, write it (one raw call)",
        ),
    ])
}

/// A host write of 16 MiB followed by device access, on a `Placement::Shared` buffer (one
/// allocation: nothing moves) against a two-copy buffer (an upload). Where the device has no
/// shared memory, no result.
fn shared(backend: &Arc<dyn Backend>, effort: Effort) -> Result<Vec<Measurement>> {
    let caps = backend.capabilities();
    if !caps.shared_allocations && !caps.host_addressable {
        return Ok(Vec::new());
    }
    let m = MemoryManager::new(backend.clone())?;
    let mut one: UnifiedBuffer<u32> =
        m.alloc_with(WORDS, AllocOptions::new().placement(Placement::Shared))?;
    let ctx = BufferContext::new(backend.clone());
    let mut two: UnifiedBuffer<u32> = ctx.alloc_with(WORDS, Residency::Mirrored)?;
    let mut value = 0u32;
    let timed = compare_auto(effort, |side| {
        value = value.wrapping_add(1);
        let buf = match side {
            Side::Hetmem => &mut one,
            Side::Baseline => &mut two,
        };
        buf.host_discard()?.fill(value);
        drop(buf.device()?);
        Ok(())
    })?;
    Ok(vec![bandwidth(
        "shared.host_then_device.16MiB",
        &timed,
        "two copies: host write, then upload",
    )])
}

fn bandwidth(id: &str, timed: &Timings, baseline: &str) -> Measurement {
    let (ours, theirs) = timed.medians();
    let gbs = |secs: f64| LEN as f64 / secs / 1e9;
    Measurement::new(id, gbs(ours), "GB/s", Better::Higher, baseline, gbs(theirs))
}
