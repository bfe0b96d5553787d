//! `buffer.*`: unified buffers against whole-buffer syncs and plain slices.

use std::hint::black_box;
use std::sync::Arc;

use hetmem::backend::Backend;
use hetmem::buffer::{BufferContext, Residency};
use hetmem::Result;

use super::harness::{compare, compare_auto, latency, Effort, Side};
use super::report::{Better, Measurement};
use super::Suite;

pub fn register(suite: &mut Suite) {
    suite.case_of_several(
        &["buffer.lazy_sync.bytes_ratio", "buffer.lazy_sync.speedup"],
        lazy_sync,
    );
    suite.case("buffer.guard_ns", guard);
}

/// 1-element host writes into a 64 MiB buffer, each followed by device access: hetmem moves
/// the dirty range; the baseline uploads the whole buffer each time.
fn lazy_sync(backend: &Arc<dyn Backend>, effort: Effort) -> Result<Vec<Measurement>> {
    const ELEMENTS: usize = 16 << 20; // 64 MiB of f32
    let ctx = BufferContext::new(backend.clone());
    let mut buf = ctx.alloc_with::<f32>(ELEMENTS, Residency::Mirrored)?;
    buf.host_discard()?.fill(1.0);
    buf.sync()?.wait()?;
    let q = backend.default_queue().clone();
    let mut block = backend.allocate(ELEMENTS * 4)?;
    let mut host = vec![1.0f32; ELEMENTS];
    let mut i = 0usize;
    let before = buf.metrics().host_to_device;
    let timed = compare(effort.samples, 3, |side| {
        i = (i + 4099) % ELEMENTS;
        match side {
            Side::Hetmem => {
                buf.write(i, &[i as f32])?;
                black_box(buf.device()?.offset());
                Ok(())
            }
            Side::Baseline => {
                host[i] = i as f32;
                backend.write(&q, &mut block, 0, bytemuck::cast_slice(&host))
            }
        }
    });
    backend.release(block)?;
    let (ours, theirs) = timed?.medians();
    let after = buf.metrics().host_to_device;
    let per_sync =
        (after.bytes - before.bytes) as f64 / (after.transfers - before.transfers).max(1) as f64;
    let whole = (ELEMENTS * 4) as f64;
    Ok(vec![
        Measurement::new(
            "buffer.lazy_sync.bytes_ratio",
            per_sync / whole,
            "of the buffer",
            Better::Lower,
            "whole-buffer sync each time",
            1.0,
        ),
        Measurement::new(
            "buffer.lazy_sync.speedup",
            theirs / ours,
            "x",
            Better::Higher,
            "whole-buffer sync each time",
            1.0,
        ),
    ])
}

/// A host guard on an already-valid side against borrowing a plain slice.
fn guard(backend: &Arc<dyn Backend>, effort: Effort) -> Result<Measurement> {
    let ctx = BufferContext::new(backend.clone());
    let mut buf = ctx.alloc_with::<f32>(1 << 18, Residency::Mirrored)?;
    buf.host_discard()?.fill(1.0);
    buf.sync()?.wait()?;
    let plain = vec![1.0f32; 1 << 18];
    let timings = compare_auto(effort, |side| {
        match side {
            Side::Hetmem => black_box(buf.host()?[7]),
            Side::Baseline => black_box(black_box(&plain[..])[7]),
        };
        Ok(())
    })?;
    Ok(latency(
        "buffer.guard_ns",
        &timings,
        "plain slice borrow",
        "ns",
    ))
}
