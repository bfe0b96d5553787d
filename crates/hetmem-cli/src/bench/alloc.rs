//! `alloc.*`: hetmem's pools against the raw backend, `Vec` (on the system's allocator and on
//! mimalloc) and a mutex-guarded free list.

use std::hint::black_box;
use std::sync::{Arc, Mutex};

use hetmem::backend::Backend;
use hetmem::manager::PARKED_PER_THREAD;
use hetmem::pool::{
    ArrayPool, CachingAllocator, CachingConfig, ObjectPool, SplittingConfig, SplittingResource,
};
use hetmem::resource::{MemoryLimit, PlainResource};
use hetmem::transfer::TransferEngine;
use hetmem::MemoryManager;
use hetmem::Result;

use super::harness::{compare, compare_auto, latency, Effort, Side, Timings};
use super::report::Measurement;
use super::Suite;

const MIB: usize = 1 << 20;

pub fn register(suite: &mut Suite) {
    suite.case("alloc.pool_hit", pool_hit);
    suite.case("alloc.pool_hit.free_list", pool_hit_free_list);
    suite.case("alloc.unpooled", unpooled);
    suite.case("alloc.splitting.4MiB", splitting);
    suite.case("alloc.first_use.16MiB", first_use);
    suite.case("alloc.bulk", bulk);
    suite.case_of_several(
        &["alloc.array_pool.1MiB", "alloc.array_pool.1MiB.mimalloc"],
        |_, e| array_pool(e),
    );
    suite.case_of_several(&["alloc.object_pool", "alloc.object_pool.opool"], |_, e| {
        object_pool(e)
    });
    suite.case("alloc.manager", |b, e| manager(b, e, true));
    suite.case("alloc.manager.unparked", |b, e| manager(b, e, false));
}

/// Raw allocate + release of `bytes`, the baseline of every device allocation figure.
fn raw(backend: &Arc<dyn Backend>, bytes: usize) -> Result<()> {
    backend.release(backend.allocate(bytes)?)
}

fn pool_hit(backend: &Arc<dyn Backend>, effort: Effort) -> Result<Measurement> {
    let pool = CachingAllocator::new(backend.clone());
    let timings = compare_auto(effort, |side| match side {
        Side::Hetmem => pool.allocate(MIB).map(drop),
        Side::Baseline => raw(backend, MIB),
    })?;
    Ok(latency(
        "alloc.pool_hit",
        &timings,
        "raw backend allocate + release",
        "ns",
    ))
}

/// A pool hit against the bare structure it walks: a thread-local free list per size class of
/// boxed nodes as large as a pool's (a block and the `Arc` of its home), one popped into a handle
/// and pushed back — what a pool hit costs without limits, statistics, the visitors' protocol or
/// checks on the way back: the floor a thread cache can reach on this machine.
// Boxed nodes are the point: the pool moves pointers to them, not the nodes.
#[allow(clippy::vec_box)]
fn pool_hit_free_list(backend: &Arc<dyn Backend>, effort: Effort) -> Result<Measurement> {
    /// A pool's node: a `DeviceBlock` (five words), its home's `Arc` and its recorded work.
    struct Node {
        _block: [usize; 5],
        _home: Arc<()>,
        _last_use: Option<Box<[u64]>>,
    }
    thread_local! {
        static FREE: std::cell::RefCell<Vec<Vec<Box<Node>>>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let class = black_box(
        hetmem::pool::SizeClasses::default()
            .class(MIB)
            .map_or(0, |c| c.0),
    );
    FREE.with(|free| {
        let mut free = free.borrow_mut();
        free.resize_with(class + 1, Vec::new);
        free[class].push(Box::new(Node {
            _block: [0; 5],
            _home: Arc::new(()),
            _last_use: None,
        }));
    });
    let pool = CachingAllocator::new(backend.clone());
    let timings = compare_auto(effort, |side| match side {
        Side::Hetmem => pool.allocate(MIB).map(drop),
        Side::Baseline => {
            let class = black_box(class);
            let item = FREE.with(|free| free.borrow_mut()[class].pop());
            let item = black_box(item.expect("one node, popped and pushed back"));
            FREE.with(|free| free.borrow_mut()[class].push(item));
            Ok(())
        }
    })?;
    Ok(latency(
        "alloc.pool_hit.free_list",
        &timings,
        "bare thread-local free list of the same nodes",
        "ns",
    ))
}

/// A 4 MiB block carved from a segment and merged back (the manager's stack above 64 KiB)
/// against a size-class pool hit of the same size: what splitting costs per call.
fn splitting(backend: &Arc<dyn Backend>, effort: Effort) -> Result<Measurement> {
    let split = SplittingConfig::default();
    let plain = Arc::new(PlainResource::new(backend.clone()));
    let carving = CachingAllocator::over(
        SplittingResource::over(plain, split)?,
        CachingConfig::unpooled(),
    );
    let classes = CachingAllocator::new(backend.clone());
    let timings = compare_auto(effort, |side| match side {
        Side::Hetmem => carving.allocate(4 * MIB).map(drop),
        Side::Baseline => classes.allocate(4 * MIB).map(drop),
    })?;
    Ok(latency(
        "alloc.splitting.4MiB",
        &timings,
        "size-class pool hit, 4 MiB",
        "ns",
    ))
}

/// The unpooled allocator over a limiting and a plain resource, as `AllocMode::Unpooled`
/// allocates in a manager: what the resource layers and the block handle cost on top of the
/// driver call.
fn unpooled(backend: &Arc<dyn Backend>, effort: Effort) -> Result<Measurement> {
    let limit = MemoryLimit::new(u64::MAX)?;
    let pool = CachingAllocator::with_limit(backend.clone(), CachingConfig::unpooled(), limit);
    let timings = compare_auto(effort, |side| match side {
        Side::Hetmem => pool.allocate(MIB).map(drop),
        Side::Baseline => raw(backend, MIB),
    })?;
    Ok(latency(
        "alloc.unpooled",
        &timings,
        "raw backend allocate + release",
        "ns",
    ))
}

fn first_use(backend: &Arc<dyn Backend>, effort: Effort) -> Result<Measurement> {
    let len = 16 * MIB;
    let pool = CachingAllocator::new(backend.clone());
    let engine = TransferEngine::new(backend.clone());
    let q = backend.default_queue().clone();
    let data = vec![3u8; len];
    let timings = compare_auto(effort, |side| match side {
        Side::Hetmem => {
            let mut block = pool.allocate(len)?;
            engine.write(block.block_mut(), 0, &data)
        }
        Side::Baseline => {
            let mut block = backend.allocate(len)?;
            let written = backend.write(&q, &mut block, 0, &data);
            backend.release(block)?;
            written
        }
    })?;
    Ok(latency(
        "alloc.first_use.16MiB",
        &timings,
        "raw allocate + write + release",
        "us",
    ))
}

/// 1000 sizes, log-uniform from 256 B to 1 MiB, from a fixed seed.
fn mixed_sizes() -> Vec<usize> {
    let mut rng = fastrand::Rng::with_seed(7);
    (0..1000)
        .map(|_| (256.0 * 4096f64.powf(rng.f64())) as usize)
        .collect()
}

fn bulk(backend: &Arc<dyn Backend>, effort: Effort) -> Result<Measurement> {
    let sizes = mixed_sizes();
    let pool = CachingAllocator::new(backend.clone());
    let timings = compare(effort.samples, 1, |side| match side {
        Side::Hetmem => {
            let blocks = sizes
                .iter()
                .map(|&s| pool.allocate(s))
                .collect::<Result<Vec<_>>>()?;
            drop(black_box(blocks));
            Ok(())
        }
        Side::Baseline => {
            let blocks = sizes
                .iter()
                .map(|&s| backend.allocate(s))
                .collect::<Result<Vec<_>>>()?;
            blocks.into_iter().try_for_each(|b| backend.release(b))
        }
    })?;
    Ok(latency(
        "alloc.bulk",
        &timings.per(sizes.len()),
        "raw allocate, then release, per block",
        "ns",
    ))
}

/// A 1 MiB array rented and returned, against a fresh `Vec` whose every page is touched (as a
/// fresh array's first use does): on the system's allocator in this process, and on mimalloc
/// in a child process (`hetmem-mimalloc`, beside this binary; without it, that figure is left
/// out with a note).
fn array_pool(effort: Effort) -> Result<Vec<Measurement>> {
    let pool = ArrayPool::<f32>::new();
    let len = MIB / 4;
    let timings = compare_auto(effort, |side| {
        match side {
            Side::Hetmem => drop(black_box(pool.rent(len)?)),
            Side::Baseline => {
                let mut v: Vec<f32> = Vec::with_capacity(len);
                // Writing every page, as a fresh array's first use does.
                v.resize(len, 0.0);
                black_box(&mut v);
            }
        }
        Ok(())
    })?;
    let mut figures = vec![latency(
        "alloc.array_pool.1MiB",
        &timings,
        "Vec::with_capacity + touching every page",
        "ns",
    )];
    match mimalloc_samples(len, timings.hetmem.len()) {
        Ok(baseline) => figures.push(latency(
            "alloc.array_pool.1MiB.mimalloc",
            &Timings {
                hetmem: timings.hetmem,
                baseline,
            },
            "Vec::with_capacity + touching every page, on mimalloc",
            "ns",
        )),
        Err(why) => eprintln!("note: alloc.array_pool.1MiB.mimalloc left out: {why}"),
    }
    Ok(figures)
}

/// `samples` seconds-per-array samples of `hetmem-mimalloc` for arrays of `len` `f32`s.
fn mimalloc_samples(len: usize, samples: usize) -> std::result::Result<Vec<f64>, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let child = exe.with_file_name(format!("hetmem-mimalloc{}", std::env::consts::EXE_SUFFIX));
    let out = std::process::Command::new(&child)
        .args([len.to_string(), samples.to_string()])
        .output()
        .map_err(|e| {
            format!(
                "{}: {e} (cargo build -p hetmem-cli builds it)",
                child.display()
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed: Option<Vec<f64>> = text.lines().map(|l| l.parse().ok()).collect();
    match parsed {
        Some(samples) if out.status.success() && !samples.is_empty() => Ok(samples),
        _ => Err(format!(
            "{} failed: {}",
            child.display(),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// A get and return of a scratch vector, against a `Mutex<Vec<T>>` free list and against opool
/// (a peer crate's pool: a lock-free queue, no per-thread cache).
fn object_pool(effort: Effort) -> Result<Vec<Measurement>> {
    struct OpoolScratch;
    impl opool::PoolAllocator<Vec<u8>> for OpoolScratch {
        fn allocate(&self) -> Vec<u8> {
            Vec::with_capacity(4096)
        }
        fn reset(&self, v: &mut Vec<u8>) {
            v.clear();
        }
    }
    let scratch = || Vec::<u8>::with_capacity(4096);
    let pool = ObjectPool::builder(scratch)
        .reset(|v: &mut Vec<u8>| {
            v.clear();
            true
        })
        .build()?;
    let free_list = Mutex::new(Vec::<Vec<u8>>::new());
    let timings = compare_auto(effort, |side| {
        match side {
            Side::Hetmem => pool.get().push(black_box(1)),
            Side::Baseline => {
                let popped = free_list.lock().map(|mut l| l.pop()).unwrap_or(None);
                let mut v = popped.unwrap_or_else(scratch);
                v.push(black_box(1));
                v.clear();
                if let Ok(mut l) = free_list.lock() {
                    l.push(v);
                }
            }
        }
        Ok(())
    })?;
    let opool = opool::Pool::new(64, OpoolScratch);
    let against_opool = compare_auto(effort, |side| {
        match side {
            Side::Hetmem => pool.get().push(black_box(1)),
            Side::Baseline => opool.get().push(black_box(1)),
        }
        Ok(())
    })?;
    Ok(vec![
        latency(
            "alloc.object_pool",
            &timings,
            "Mutex<Vec<T>> free list",
            "ns",
        ),
        latency("alloc.object_pool.opool", &against_opool, "opool", "ns"),
    ])
}

/// A 1 MiB buffer from the memory manager, with its default tracking (live allocations listed):
/// made of the one dropped before, parked on this thread (`alloc.manager`), or — with parking
/// off, as for a buffer unlike any parked — a new record and a block from the pools
/// (`alloc.manager.unparked`).
fn manager(backend: &Arc<dyn Backend>, effort: Effort, parked: bool) -> Result<Measurement> {
    let manager = MemoryManager::builder()
        .backend(backend.clone())
        .parked_buffers(if parked { PARKED_PER_THREAD } else { 0 })
        .build()?;
    let timings = compare_auto(effort, |side| match side {
        Side::Hetmem => manager.alloc::<u8>(MIB).map(|b| drop(black_box(b))),
        Side::Baseline => raw(backend, MIB),
    })?;
    let id = if parked {
        "alloc.manager"
    } else {
        "alloc.manager.unparked"
    };
    Ok(latency(
        id,
        &timings,
        "raw backend allocate + release",
        "ns",
    ))
}
