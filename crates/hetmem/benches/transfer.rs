//! The transfer engine against one raw backend call from the same pageable memory and against
//! memcpy, in the same run, on the host backend and the first OpenCL device.
//!
//! `cargo bench -p hetmem --all-features --bench transfer` (prints GB/s per size and plan)

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::backends;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hetmem::backend::CopyRegion;
use hetmem::transfer::{BatchWrite, Strategy, TransferConfig, TransferEngine};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const SIZES: [(usize, &str); 5] = [
    (4 * KIB, "4KiB"),
    (64 * KIB, "64KiB"),
    (MIB, "1MiB"),
    (16 * MIB, "16MiB"),
    (256 * MIB, "256MiB"),
];

fn h2d_d2h(c: &mut Criterion) {
    for (name, backend) in backends() {
        let q = backend.default_queue().clone();
        let engine = TransferEngine::new(backend.clone());
        let with = |strategy| {
            TransferEngine::with_config(
                backend.clone(),
                TransferConfig {
                    strategy,
                    direct_max: 0,
                    ..TransferConfig::default()
                },
            )
            .unwrap()
        };
        let (chunked, mapped) = (with(Strategy::Chunked), with(Strategy::Mapped));
        for (dir, write) in [("h2d", true), ("d2h", false)] {
            let mut group = c.benchmark_group(format!("{dir}_{name}"));
            group
                .sample_size(10)
                .measurement_time(Duration::from_secs(2));
            for (len, label) in SIZES {
                group.throughput(Throughput::Bytes(len as u64));
                let mut host = vec![7u8; len];
                let mut block = backend.allocate(len).unwrap();
                let mut other = vec![0u8; len];
                group.bench_function(BenchmarkId::new("hetmem", label), |b| {
                    b.iter(|| {
                        if write {
                            engine.write(&mut block, 0, &host).unwrap()
                        } else {
                            engine.read(&block, 0, &mut host).unwrap()
                        }
                    })
                });
                group.bench_function(BenchmarkId::new("hetmem_mapped", label), |b| {
                    b.iter(|| {
                        if write {
                            mapped.write(&mut block, 0, &host).unwrap()
                        } else {
                            mapped.read(&block, 0, &mut host).unwrap()
                        }
                    })
                });
                if len >= 16 * MIB {
                    group.bench_function(BenchmarkId::new("hetmem_chunked", label), |b| {
                        b.iter(|| {
                            if write {
                                chunked.write(&mut block, 0, &host).unwrap()
                            } else {
                                chunked.read(&block, 0, &mut host).unwrap()
                            }
                        })
                    });
                }
                group.bench_function(BenchmarkId::new("raw_call", label), |b| {
                    b.iter(|| {
                        if write {
                            backend.write(&q, &mut block, 0, &host).unwrap()
                        } else {
                            backend.read(&q, &block, 0, &mut host).unwrap()
                        }
                    })
                });
                group.bench_function(BenchmarkId::new("memcpy", label), |b| {
                    b.iter(|| other.copy_from_slice(black_box(&host)))
                });
                backend.release(block).unwrap();
            }
            group.finish();
        }
        let mut group = c.benchmark_group(format!("d2d_{name}"));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(2));
        for (len, label) in SIZES {
            group.throughput(Throughput::Bytes(len as u64));
            let src = backend.allocate(len).unwrap();
            let mut dst = backend.allocate(len).unwrap();
            group.bench_function(BenchmarkId::new("hetmem", label), |b| {
                b.iter(|| engine.copy(&src, 0, &mut dst, 0, len).unwrap())
            });
            group.bench_function(BenchmarkId::new("raw_call", label), |b| {
                b.iter(|| {
                    backend
                        .copy(&q, &src, &mut dst, CopyRegion::prefix(len))
                        .unwrap()
                        .wait()
                        .unwrap()
                })
            });
            backend.release(src).unwrap();
            backend.release(dst).unwrap();
        }
        group.finish();
    }
}

/// 1000 writes of 4 KiB: one batch against 1000 blocking calls.
fn batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_h2d_4KiBx1000");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(2));
    for (name, backend) in backends() {
        let q = backend.default_queue().clone();
        let engine = TransferEngine::new(backend.clone());
        let mut blocks: Vec<_> = (0..1000)
            .map(|_| backend.allocate(4 * KIB).unwrap())
            .collect();
        let sources: Vec<Vec<u8>> = (0..1000).map(|i| vec![i as u8; 4 * KIB]).collect();
        group.bench_function(BenchmarkId::new("hetmem_batch", &name), |b| {
            b.iter(|| {
                let mut items: Vec<BatchWrite> = blocks
                    .iter_mut()
                    .zip(&sources)
                    .map(|(dst, src)| BatchWrite {
                        dst,
                        offset: 0,
                        src,
                    })
                    .collect();
                engine.write_batch(&mut items).unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("raw_blocking_writes", &name), |b| {
            b.iter(|| {
                for (dst, src) in blocks.iter_mut().zip(&sources) {
                    backend.write(&q, dst, 0, src).unwrap();
                }
            })
        });
        for block in blocks {
            backend.release(block).unwrap();
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500));
    targets = h2d_d2h, batch
}
criterion_main!(benches);
