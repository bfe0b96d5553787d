//! Sixteen threads hammer one backend's caching allocator, array and object pools, memory
//! manager and one shared buffer at once. Every block and array carries canaries written when
//! it is handed out and checked when it goes back, so a double hand-out or a stray write shows;
//! the shared buffer is checked against the one value its last writer filled it with. At the
//! end every pool is empty of users and the backend holds no block: nothing leaked.
//!
//! `HETMEM_STRESS_OPS` sets the operations per backend (default 10⁶; a tenth of that on wgpu,
//! where every read of device memory is a round trip through the device's queue — ~70 µs on
//! llvmpipe, which would make the default run for minutes).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use hetmem::backend::{Backend, BackendKind};
use hetmem::pool::{ArrayPool, ObjectPool};
use hetmem::pool::{CachingAllocator, PooledBlock};
use hetmem::{MemoryManager, UnifiedBuffer};

const THREADS: usize = 16;
const SHARED_LEN: usize = 1024;

fn total_ops(backend: &Arc<dyn Backend>) -> u64 {
    let ops = std::env::var("HETMEM_STRESS_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    match backend.info().kind {
        BackendKind::Wgpu => ops / 10,
        _ => ops,
    }
}

/// A small, fast, deterministic generator per thread (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Below a power of two drawn from `2^low..2^(low + spread)`: small sizes often, large
    /// ones sometimes.
    fn size(&mut self, low: u64, spread: u64) -> usize {
        let bits = low + self.below(spread);
        self.below(1 << bits) as usize
    }
}

/// What one thread wrote into a block it holds: 16 bytes at each end.
fn canary(thread: usize, seq: u64) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&((thread as u64) << 48 | seq).to_le_bytes());
    bytes[8..].copy_from_slice(&(!seq).to_le_bytes());
    bytes
}

struct Shared {
    backend: Arc<dyn Backend>,
    pool: CachingAllocator,
    arrays: ArrayPool<u64>,
    objects: ObjectPool<Vec<u64>>,
    manager: MemoryManager,
    buffer: RwLock<UnifiedBuffer<u32>>,
    /// The value the shared buffer was last filled with.
    generation: AtomicU64,
    ops: AtomicU64,
}

/// One thread's share of the operations.
fn worker(shared: &Shared, thread: usize, ops: u64) {
    let b = &shared.backend;
    let q = b.default_queue().clone();
    let mut rng =
        Rng(0x9e37_79b9_7f4a_7c15 ^ (thread as u64 + 1).wrapping_mul(0x1234_5678_9abc_def1));
    let mut held: Vec<(PooledBlock, [u8; 16])> = Vec::new();
    let check = |block: &PooledBlock, expect: &[u8; 16]| {
        let mut out = [0u8; 16];
        for offset in [0, block.len() - 16] {
            b.read(&q, block.block(), offset, &mut out).unwrap();
            assert_eq!(&out, expect, "canary of a held block at {offset}");
        }
    };
    for seq in 0..ops {
        match rng.below(100) {
            // The caching allocator: take a block and mark both ends, or give one back.
            0..=59 => {
                if held.len() < 8 && (held.is_empty() || rng.below(2) == 0) {
                    let len = 32 + rng.size(8, 12);
                    let mut block = shared.pool.allocate(len).unwrap();
                    let mark = canary(thread, seq);
                    for offset in [0, len - 16] {
                        b.write(&q, block.block_mut(), offset, &mark).unwrap();
                    }
                    held.push((block, mark));
                } else {
                    let (block, mark) = held.swap_remove(rng.below(held.len() as u64) as usize);
                    check(&block, &mark);
                }
            }
            // The array pool: a rented array is ours alone until it goes back.
            60..=74 => {
                let len = 1 + rng.size(0, 14);
                let mut array = shared.arrays.rent(len).unwrap();
                let mark = (thread as u64) << 48 | seq;
                array[0] = mark;
                array[len - 1] = mark;
                std::hint::black_box(&mut array);
                assert_eq!((array[0], array[len - 1]), (mark, mark), "array canary");
            }
            // The object pool: an object comes back reset, and is ours while held.
            75..=84 => {
                let mut object = shared.objects.get();
                assert!(object.is_empty(), "objects come back reset");
                object.extend([thread as u64, seq]);
                std::hint::black_box(&mut object);
                assert_eq!(object[..], [thread as u64, seq]);
            }
            // The manager: a buffer of our own, written and read back.
            85..=94 => {
                let len = 1 + rng.below(256) as usize;
                let tag = (thread as u32) << 24 | (seq as u32 & 0xff_ffff);
                let mut buffer = shared.manager.from_slice(&vec![tag; len]).unwrap();
                if rng.below(4) == 0 {
                    buffer.prefetch_to_device().unwrap().wait().unwrap();
                    drop(buffer.device_mut().unwrap());
                }
                assert!(buffer.to_vec().unwrap().iter().all(|&v| v == tag));
            }
            // The shared buffer: readers see one value throughout; writers refill it.
            _ => {
                if rng.below(4) == 0 {
                    let mut buffer = shared.buffer.write().unwrap();
                    let value = shared.generation.fetch_add(1, Ordering::Relaxed) as u32 + 1;
                    buffer.fill(value, ..).unwrap();
                    if rng.below(2) == 0 {
                        buffer.prefetch_to_device().unwrap().wait().unwrap();
                        drop(buffer.device_mut().unwrap()); // readers must download
                    }
                } else {
                    let buffer = shared.buffer.read().unwrap();
                    let seen = buffer.to_vec().unwrap();
                    let value = shared.generation.load(Ordering::Relaxed) as u32;
                    assert!(seen.iter().all(|&v| v == value), "shared buffer torn");
                }
            }
        }
    }
    for (block, mark) in held.drain(..) {
        check(&block, &mark);
    }
    shared.ops.fetch_add(ops, Ordering::Relaxed);
}

fn sixteen_threads_of_everything(backend: &Arc<dyn Backend>) {
    let before = backend.usage().live_blocks;
    let manager = MemoryManager::new(backend.clone()).unwrap();
    let shared = Shared {
        pool: CachingAllocator::new(backend.clone()),
        arrays: ArrayPool::new(),
        objects: ObjectPool::builder(Vec::new)
            .reset(|v: &mut Vec<u64>| {
                v.clear();
                true
            })
            .build()
            .unwrap(),
        buffer: RwLock::new(manager.alloc(SHARED_LEN).unwrap()),
        manager,
        backend: backend.clone(),
        generation: AtomicU64::new(0),
        ops: AtomicU64::new(0),
    };
    let total = total_ops(backend);
    let per_thread = total.div_ceil(THREADS as u64);
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        for thread in 0..THREADS {
            let shared = &shared;
            s.spawn(move || worker(shared, thread, per_thread));
        }
    });
    let ops = shared.ops.load(Ordering::Relaxed);
    assert!(ops >= total);
    eprintln!(
        "{ops} operations on {} in {:.1} s",
        backend.info().name,
        start.elapsed().as_secs_f64()
    );

    let Shared {
        pool,
        arrays,
        objects,
        manager,
        buffer,
        ..
    } = shared;
    assert_eq!(pool.stats().bytes_in_use, 0, "every block came back");
    let a = arrays.stats();
    assert_eq!(a.rented, a.returned, "every array came back: {a:?}");
    let o = objects.stats();
    assert_eq!(
        (o.gets, o.live),
        (o.returns, o.idle),
        "every object came back: {o:?}"
    );
    drop(buffer);
    assert_eq!(manager.stats().live_buffers(), 0);
    drop((pool, manager));
    backend.synchronize().unwrap();
    assert_eq!(backend.usage().live_blocks, before, "no block leaked");
}

common::backend_suite!(
    [
        host => crate::common::host(),
        opencl_dev0 => crate::common::opencl(0),
        wgpu => crate::common::wgpu(),
        cuda_dev0 => crate::common::cuda(0),
    ],
    [sixteen_threads_of_everything]
);
