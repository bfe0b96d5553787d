//! Caching allocator against raw backend calls, in the same run, on the host backend and the
//! first OpenCL device (when the `opencl` feature is on and a device is present).
//!
//! `cargo bench -p hetmem --all-features --bench pool`

use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::backends;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hetmem::backend::HostBackend;
use hetmem::pool::CachingAllocator;

const MIB: usize = 1 << 20;

/// Allocate + release of a 1 MiB block: a cache hit against the raw driver round trip.
fn alloc_release(c: &mut Criterion) {
    let mut group = c.benchmark_group("alloc_release_1MiB");
    for (name, backend) in backends() {
        let pool = CachingAllocator::new(backend.clone());
        drop(pool.allocate(MIB).unwrap()); // warm: one cached block
        group.bench_function(BenchmarkId::new("pool_hit", &name), |b| {
            b.iter(|| drop(pool.allocate(std::hint::black_box(MIB)).unwrap()))
        });
        group.bench_function(BenchmarkId::new("raw_backend", &name), |b| {
            b.iter(|| {
                backend
                    .release(backend.allocate(std::hint::black_box(MIB)).unwrap())
                    .unwrap()
            })
        });
    }
    group.finish();
}

/// Allocate + first write of 16 MiB: a warm pooled block against a driver allocation that is
/// released again (which the driver and libc may recycle, warm) and against one that is kept
/// (fresh memory: its first write faults every page in, as a new buffer in a program does).
fn first_use(c: &mut Criterion) {
    let mut group = c.benchmark_group("first_use_16MiB");
    group.sample_size(20);
    let data = vec![0x5Au8; 16 * MIB];
    for (name, backend) in backends() {
        let pool = CachingAllocator::new(backend.clone());
        let q = backend.default_queue().clone();
        drop(pool.allocate(16 * MIB).unwrap());
        group.bench_function(BenchmarkId::new("pool_hit_write", &name), |b| {
            b.iter(|| {
                let mut p = pool.allocate(16 * MIB).unwrap();
                backend.write(&q, p.block_mut(), 0, &data).unwrap();
            })
        });
        group.bench_function(BenchmarkId::new("raw_alloc_write_release", &name), |b| {
            b.iter(|| {
                let mut block = backend.allocate(16 * MIB).unwrap();
                backend.write(&q, &mut block, 0, &data).unwrap();
                backend.release(block).unwrap();
            })
        });
        group.bench_function(BenchmarkId::new("raw_alloc_write_fresh", &name), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut kept = Vec::new();
                for _ in 0..iters {
                    let start = Instant::now();
                    let mut block = backend.allocate(16 * MIB).unwrap();
                    backend.write(&q, &mut block, 0, &data).unwrap();
                    timed += start.elapsed();
                    kept.push(block);
                    if kept.len() == 16 {
                        kept.drain(..).for_each(|b| backend.release(b).unwrap());
                    }
                }
                kept.into_iter().for_each(|b| backend.release(b).unwrap());
                timed
            })
        });
    }
    group.finish();
}

/// Allocate/release throughput of 1 and 2 threads sharing one pool (time per operation per
/// thread; equal times mean 2 threads do twice the work).
fn threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("threads_alloc_release");
    let pool = CachingAllocator::new(Arc::new(HostBackend::new()));
    let sizes = [4096usize, 65_536, 300_000, MIB];
    for &size in &sizes {
        drop((pool.allocate(size).unwrap(), pool.allocate(size).unwrap()));
    }
    for threads in [1usize, 2] {
        group.bench_function(BenchmarkId::new("pool_host", threads), |b| {
            b.iter_custom(|iters| {
                per_thread(threads, iters, |t, i| {
                    drop(
                        pool.allocate(sizes[(i as usize + t) % sizes.len()])
                            .unwrap(),
                    );
                })
            })
        });
    }
    group.finish();
}

/// Rent + return of 1 MiB of f32 against `Vec::with_capacity` + touching every page.
fn array_pool(c: &mut Criterion) {
    let mut group = c.benchmark_group("array_1MiB_f32");
    let pool = hetmem::pool::ArrayPool::<f32>::new();
    drop(pool.rent(MIB / 4).unwrap());
    group.bench_function("pool_rent_return", |b| {
        b.iter(|| drop(pool.rent(std::hint::black_box(MIB / 4)).unwrap()))
    });
    group.bench_function("vec_with_capacity_touch", |b| {
        b.iter(|| {
            let mut v: Vec<f32> = Vec::with_capacity(MIB / 4);
            // Filling writes every page, as a fresh array's first use does.
            v.resize(MIB / 4, 0.0);
            std::hint::black_box(&mut v);
        })
    });
    group.finish();
}

/// A 4 KiB scratch vector, the kind of object hot loops recycle.
fn scratch() -> Vec<u8> {
    Vec::with_capacity(4096)
}

struct OpoolScratch;

impl opool::PoolAllocator<Vec<u8>> for OpoolScratch {
    fn allocate(&self) -> Vec<u8> {
        scratch()
    }
    fn reset(&self, v: &mut Vec<u8>) {
        v.clear();
    }
}

/// Runs `op(thread, i)` for `i` in `0..iters` on each of `threads` threads at once; equal times
/// for 1 and 2 threads mean 2 threads do twice the work.
fn per_thread(threads: usize, iters: u64, op: impl Fn(usize, u64) + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let op = &op;
            s.spawn(move || (0..iters).for_each(|i| op(t, i)));
        }
    });
    start.elapsed()
}

/// Get + use + put of a scratch vector: hetmem's ObjectPool against opool, object-pool and a
/// `Mutex<Vec<T>>`, on 1 and 2 threads sharing one pool.
fn object_pool(c: &mut Criterion) {
    let mut group = c.benchmark_group("object_get_put");
    let hetmem_pool = hetmem::pool::ObjectPool::builder(scratch)
        .reset(|v: &mut Vec<u8>| {
            v.clear();
            true
        })
        .build()
        .unwrap();
    let opool_pool = opool::Pool::new(64, OpoolScratch);
    let object_pool_pool = object_pool::Pool::new(64, scratch);
    let mutex_pool = std::sync::Mutex::new(Vec::<Vec<u8>>::new());
    for threads in [1usize, 2] {
        group.bench_function(BenchmarkId::new("hetmem", threads), |b| {
            b.iter_custom(|iters| {
                per_thread(threads, iters, |_, _| {
                    hetmem_pool.get().push(std::hint::black_box(1))
                })
            })
        });
        group.bench_function(BenchmarkId::new("opool", threads), |b| {
            b.iter_custom(|iters| {
                per_thread(threads, iters, |_, _| {
                    opool_pool.get().push(std::hint::black_box(1))
                })
            })
        });
        group.bench_function(BenchmarkId::new("object_pool", threads), |b| {
            b.iter_custom(|iters| {
                per_thread(threads, iters, |_, _| {
                    let mut v = object_pool_pool.pull(scratch);
                    v.clear();
                    v.push(std::hint::black_box(1));
                })
            })
        });
        group.bench_function(BenchmarkId::new("mutex_vec", threads), |b| {
            b.iter_custom(|iters| {
                per_thread(threads, iters, |_, _| {
                    let popped = mutex_pool.lock().unwrap().pop();
                    let mut v = popped.unwrap_or_else(scratch);
                    v.push(std::hint::black_box(1));
                    v.clear();
                    mutex_pool.lock().unwrap().push(v);
                })
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = alloc_release, first_use, threads, array_pool, object_pool
}
criterion_main!(benches);
