//! The caching allocator and the array pool against a model: blocks and arrays keep what was
//! written into them while held, no block is handed out twice, the byte accounting balances
//! after every operation, and the backend holds exactly the blocks the pool says it holds.
#![no_main]

use std::sync::Arc;

use hetmem::pool::{ArrayPool, ArrayPoolConfig, CachingConfig, SizeClasses};
use hetmem::backend::{Backend, HostBackend, UserEvent};
use hetmem::pool::{CachingAllocator, PooledBlock};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    per_doubling: u8,
    max_cached: u16,
    thread_blocks: u8,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Allocate(u16),
    Write {
        index: u8,
        offset: u16,
        value: u8,
    },
    Release(u8),
    /// Released with device work still pending behind a gate.
    ReleasePending(u8),
    OpenGates,
    Trim(u16),
    SetMaxCached(u16),
    Rent(u16),
    Return(u8),
    Shrink(u8),
}

struct Held {
    block: PooledBlock,
    model: Vec<u8>,
}

fn check_block(backend: &Arc<dyn Backend>, held: &Held) {
    let mut out = vec![0u8; held.model.len()];
    backend
        .read(backend.default_queue(), held.block.block(), 0, &mut out)
        .unwrap();
    assert_eq!(out, held.model, "a held block keeps its bytes");
}

fuzz_target!(|input: Input| {
    let backend: Arc<dyn Backend> = Arc::new(HostBackend::new());
    let config = CachingConfig {
        classes: SizeClasses::new(1 << (input.per_doubling % 4), 64, 1 << 14).unwrap(),
        max_cached_bytes: input.max_cached as u64 * 4,
        max_blocks_per_class: 4,
        thread_cache_blocks: input.thread_blocks as usize % 3,
        thread_cache_bytes: 1 << 14,
    };
    let pool = CachingAllocator::with_config(backend.clone(), config);
    let arrays = ArrayPool::<u8>::with_config(ArrayPoolConfig {
        max_len: 1 << 12,
        ..ArrayPoolConfig::default()
    })
    .unwrap();
    let q = backend.default_queue().clone();
    let mut held: Vec<Held> = Vec::new();
    let mut gates: Vec<UserEvent> = Vec::new();
    let mut rented = Vec::new();
    for op in input.ops.into_iter().take(128) {
        match op {
            Op::Allocate(len) => {
                let len = len as usize % 20_000;
                match pool.allocate(len) {
                    Ok(mut block) => {
                        // A fresh or reused block: give it known contents.
                        let model = vec![len as u8; len];
                        backend.write(&q, block.block_mut(), 0, &model).unwrap();
                        for other in &held {
                            assert_ne!(
                                other.block.block().raw_handle(),
                                block.block().raw_handle()
                            );
                        }
                        held.push(Held { block, model });
                    }
                    Err(_) => assert_eq!(len, 0),
                }
            }
            Op::Write {
                index,
                offset,
                value,
            } if !held.is_empty() => {
                let n = held.len();
                let h = &mut held[index as usize % n];
                let offset = offset as usize % h.model.len();
                backend
                    .write(&q, h.block.block_mut(), offset, &[value])
                    .unwrap();
                h.model[offset] = value;
            }
            Op::Release(index) if !held.is_empty() => {
                let h = held.swap_remove(index as usize % held.len());
                check_block(&backend, &h);
            }
            Op::ReleasePending(index) if !held.is_empty() => {
                let h = held.swap_remove(index as usize % held.len());
                let gate = backend.create_user_event().unwrap();
                h.block.release_after(gate.event().clone());
                gates.push(gate);
            }
            Op::OpenGates => gates.drain(..).for_each(|g| g.complete().unwrap()),
            Op::Trim(target) => drop(pool.trim_to(target as u64 * 4).unwrap()),
            Op::SetMaxCached(limit) => pool.set_max_cached_bytes(limit as u64 * 4).unwrap(),
            Op::Rent(len) => {
                let len = 1 + len as usize % 8192;
                let mut array = arrays.rent(len).unwrap();
                array.fill(len as u8);
                rented.push(array);
            }
            Op::Return(index) if !rented.is_empty() => {
                let array = rented.swap_remove(index as usize % rented.len());
                assert!(array.iter().all(|&v| v == array.len() as u8));
            }
            Op::Shrink(fraction) => drop(arrays.trim_fraction(fraction as f64 / 255.0)),
            _ => {}
        }
        let s = pool.stats();
        assert_eq!(s.bytes_in_use + s.bytes_cached, s.bytes_reserved, "{s:?}");
        assert_eq!(backend.usage().live_bytes, s.bytes_reserved);
        assert!(s.bytes_cached <= pool.stats().bytes_reserved);
    }
    for h in &held {
        check_block(&backend, h);
    }
    drop(held);
    drop(gates); // completes them
    pool.trim().unwrap();
    assert_eq!(backend.usage().live_blocks, 0, "nothing leaked");
});
