//! Unified buffers against the naive alternatives, in the same run, on the host backend and the
//! first OpenCL device.
//!
//! `cargo bench -p hetmem --all-features --bench buffer`

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::backends;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hetmem::buffer::{BufferContext, Residency};

const ELEMENTS: usize = 16 << 20; // 64 MiB of f32

/// One-element host write into 64 MiB, then device access: a lazy, range-precise sync against
/// the naive whole-buffer upload after every write. Also prints the bytes each moved.
fn lazy_sync(c: &mut Criterion) {
    let mut group = c.benchmark_group("lazy_sync_64MiB");
    group.sample_size(20);
    for (name, backend) in backends() {
        let ctx = BufferContext::new(backend.clone());
        let mut buf = ctx
            .alloc_with::<f32>(ELEMENTS, Residency::Mirrored)
            .unwrap();
        buf.host_discard().unwrap().fill(1.0);
        buf.sync().unwrap().wait().unwrap();
        let mut i = 0usize;
        let before = buf.metrics().host_to_device;
        group.bench_function(BenchmarkId::new("hetmem_write1_device", &name), |b| {
            b.iter(|| {
                i = (i + 4099) % ELEMENTS;
                buf.write(i, &[i as f32]).unwrap();
                black_box(buf.device().unwrap().block().raw_handle());
            })
        });
        let after = buf.metrics().host_to_device;
        let per_sync =
            (after.bytes - before.bytes) as f64 / (after.transfers - before.transfers) as f64;

        let q = backend.default_queue().clone();
        let mut block = backend.allocate(ELEMENTS * 4).unwrap();
        let mut host = vec![1.0f32; ELEMENTS];
        group.bench_function(BenchmarkId::new("naive_write1_upload_all", &name), |b| {
            b.iter(|| {
                i = (i + 4099) % ELEMENTS;
                host[i] = i as f32;
                backend
                    .write(&q, &mut block, 0, bytemuck::cast_slice(&host))
                    .unwrap();
            })
        });
        backend.release(block).unwrap();
        let naive = (ELEMENTS * 4) as f64;
        println!(
            "lazy_sync_64MiB/{name}: {per_sync:.0} bytes per sync against {naive:.0} naive: ratio {:.2e}",
            per_sync / naive
        );
    }
    group.finish();
}

/// A guard on a side that is already valid, against borrowing a plain slice.
fn guard(c: &mut Criterion) {
    let mut group = c.benchmark_group("guard_valid_side");
    for (name, backend) in backends() {
        let ctx = BufferContext::new(backend);
        let buf = ctx.from_slice(&vec![1.0f32; 1 << 18]).unwrap();
        let mut mirrored = ctx.alloc_with::<f32>(1 << 18, Residency::Mirrored).unwrap();
        mirrored.host_discard().unwrap().fill(1.0);
        mirrored.sync().unwrap().wait().unwrap();
        group.bench_function(BenchmarkId::new("host", &name), |b| {
            b.iter(|| black_box(mirrored.host().unwrap()[7]))
        });
        group.bench_function(BenchmarkId::new("device", &name), |b| {
            b.iter(|| black_box(mirrored.device().unwrap().offset()))
        });
        group.bench_function(BenchmarkId::new("host_mut_dirty", &name), |b| {
            b.iter(|| black_box(mirrored.host_mut().unwrap()[7]))
        });
        if name == "host" {
            group.bench_function(BenchmarkId::new("host_shared", &name), |b| {
                b.iter(|| black_box(buf.host().unwrap()[7]))
            });
        }
    }
    let plain = vec![1.0f32; 1 << 18];
    group.bench_function("baseline_slice_borrow", |b| {
        b.iter(|| black_box(black_box(&plain[..])[7]))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = lazy_sync, guard
}
criterion_main!(benches);
