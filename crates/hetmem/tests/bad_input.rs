//! Bad input is a typed error, never a panic or an abort, and leaves what exists intact.
#![allow(clippy::reversed_empty_ranges)] // reversed ranges are bad input under test

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::pattern;
use hetmem::backend::{Backend, HostBackend};
use hetmem::backend::{CopyRegion, DeviceBlock, Queue, StagingBuffer};
use hetmem::buffer::BufferContext;
use hetmem::pool::{ArrayPool, ArrayPoolConfig, CachingConfig, ObjectPool, SizeClasses};
use hetmem::pool::{CachingAllocator, PooledBlock};
use hetmem::resource::MemoryLimit;
use hetmem::transfer::{
    BatchWrite, RetryPolicy, SchedulerConfig, TransferConfig, TransferEngine, TransferRequest,
    TransferScheduler,
};
use hetmem::{AllocOptions, Error, MemoryManager, Placement, Result, UnifiedBuffer};

/// Sizes no allocator can supply: `vec!` would panic ("capacity overflow") or abort the
/// process ("memory allocation failed"); the pool says `OutOfMemory` and keeps working.
#[test]
fn array_pool_refuses_impossible_sizes() {
    let pool = ArrayPool::<u8>::new();
    let mut kept = pool.rent(1000).unwrap();
    kept[7] = 42;
    for len in [usize::MAX, usize::MAX / 2, 1 << 42] {
        match pool.rent(len) {
            Err(Error::OutOfMemory { .. } | Error::SizeOverflow { .. }) => {}
            other => panic!(
                "rent({len}): expected a typed error, got {:?}",
                other.map(|r| r.len())
            ),
        }
    }
    assert!(matches!(
        ArrayPool::<u64>::new().rent(usize::MAX / 4),
        Err(Error::SizeOverflow { .. })
    ));
    assert_eq!(kept[7], 42, "existing rentals are untouched");
    assert_eq!(pool.stats().rented, 1, "failed rents are not counted");
    drop(kept);
    assert_eq!(pool.rent(1000).unwrap().len(), 1000);
}

#[test]
fn size_classes_past_the_last_have_no_size() {
    let classes = SizeClasses::new(4, 256, 1 << 20).unwrap();
    let count = classes.count();
    assert!(classes.size(count - 1).is_some());
    for index in [count, count + 1, 1 << 20, usize::MAX] {
        assert_eq!(classes.size(index), None, "index {index}");
    }
    assert_eq!(classes.size(count - 1), Some(1 << 20));
    assert_eq!(classes.class(1 << 20), Some((count - 1, 1 << 20)));
    assert_eq!(classes.class((1 << 20) + 1), None);
}

#[test]
fn extreme_retry_policies_are_refused_at_construction() {
    let backend = std::sync::Arc::new(HostBackend::new());
    for retry in [
        RetryPolicy {
            max_delay: Duration::MAX,
            ..RetryPolicy::default()
        },
        RetryPolicy {
            base_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(1),
            ..RetryPolicy::default()
        },
        RetryPolicy {
            multiplier: f64::NAN,
            ..RetryPolicy::default()
        },
    ] {
        let config = TransferConfig {
            retry,
            ..TransferConfig::default()
        };
        assert!(
            matches!(
                TransferEngine::with_config(backend.clone(), config),
                Err(Error::InvalidArgument(_))
            ),
            "{retry:?}"
        );
    }
}

/// One bad call: what it does to the fixture, and the error it must give.
struct Case {
    name: &'static str,
    run: fn(&mut Fixture) -> Result<()>,
    expect: fn(&Error) -> bool,
}

/// `"name": |f| call => ErrorPattern` — the call's `Ok` value is discarded.
macro_rules! cases {
    ($($name:literal: |$f:ident| $body:expr => $pattern:pat),* $(,)?) => {
        vec![$(Case {
            name: $name,
            run: |$f: &mut Fixture| -> Result<()> { $body.map(drop) },
            expect: |e: &Error| matches!(e, $pattern),
        }),*]
    };
}

const LEN: usize = 64;

/// What every case may try to damage: a buffer whose newest copy is on the device, a raw block,
/// a staging buffer and a pool, each with known contents, and handles of a second backend.
struct Fixture {
    backend: Arc<dyn Backend>,
    other: Arc<dyn Backend>,
    manager: MemoryManager,
    buffer: UnifiedBuffer<u32>,
    shorter: UnifiedBuffer<u32>,
    stranger: UnifiedBuffer<u32>,
    block: DeviceBlock,
    foreign_block: DeviceBlock,
    staging: StagingBuffer,
    engine: TransferEngine,
    pool: CachingAllocator,
    pooled: PooledBlock,
    arrays: ArrayPool<u8>,
}

fn contents() -> Vec<u32> {
    (0..LEN as u32).map(|i| i * 3 + 1).collect()
}

impl Fixture {
    fn new(backend: &Arc<dyn Backend>) -> Self {
        let other: Arc<dyn Backend> = Arc::new(HostBackend::new());
        let manager = MemoryManager::new(backend.clone()).unwrap();
        let mut buffer = manager.from_slice(&contents()).unwrap();
        buffer.prefetch_to_device().unwrap().wait().unwrap();
        drop(buffer.device_mut().unwrap()); // the device copy is now the only valid one
        let q = backend.default_queue();
        let mut block = backend.allocate(256).unwrap();
        backend.write(q, &mut block, 0, &pattern(256, 5)).unwrap();
        let mut staging = backend.allocate_staging(256).unwrap();
        staging
            .as_mut_slice()
            .unwrap()
            .copy_from_slice(&pattern(256, 6));
        let pool = CachingAllocator::new(backend.clone());
        let mut pooled = pool.allocate(100).unwrap();
        backend
            .write(q, pooled.block_mut(), 0, &pattern(100, 7))
            .unwrap();
        Fixture {
            shorter: manager.alloc(LEN / 2).unwrap(),
            stranger: MemoryManager::new(other.clone())
                .unwrap()
                .from_slice(&[5u32; LEN])
                .unwrap(),
            foreign_block: other.allocate(256).unwrap(),
            engine: TransferEngine::new(backend.clone()),
            arrays: ArrayPool::new(),
            backend: backend.clone(),
            other,
            manager,
            buffer,
            block,
            staging,
            pool,
            pooled,
        }
    }

    fn queue(&self) -> &Queue {
        self.backend.default_queue()
    }

    /// Everything still holds what it held, and the books still balance.
    fn check(&mut self, case: &str) {
        assert_eq!(self.buffer.to_vec().unwrap(), contents(), "{case}: buffer");
        drop(self.buffer.device_mut().unwrap());
        assert_eq!(
            self.stranger.to_vec().unwrap(),
            [5; LEN],
            "{case}: other buffer"
        );
        let mut out = vec![0u8; 256];
        self.backend
            .read(self.queue(), &self.block, 0, &mut out)
            .unwrap();
        assert_eq!(out, pattern(256, 5), "{case}: block");
        assert_eq!(
            self.staging.as_slice().unwrap(),
            pattern(256, 6),
            "{case}: staging"
        );
        let mut out = vec![0u8; 100];
        self.backend
            .read(self.queue(), self.pooled.block(), 0, &mut out)
            .unwrap();
        assert_eq!(out, pattern(100, 7), "{case}: pooled block");
        let s = self.pool.stats();
        assert_eq!(
            s.bytes_in_use + s.bytes_cached,
            s.bytes_reserved,
            "{case}: {s:?}"
        );
        let stats = self.manager.stats();
        assert_eq!(stats.live_buffers(), 2, "{case}: live buffers");
    }
}

fn foreign_queue(f: &Fixture) -> Queue {
    f.other.default_queue().clone()
}

fn big_retry(max_delay: Duration, base_delay: Duration, multiplier: f64) -> TransferConfig {
    TransferConfig {
        retry: RetryPolicy {
            max_delay,
            base_delay,
            multiplier,
            ..RetryPolicy::default()
        },
        ..TransferConfig::default()
    }
}

fn manager_cases() -> Vec<Case> {
    use Placement::*;
    cases![
        "alloc 0": |f| f.manager.alloc::<u32>(0) => Error::ZeroLength { .. },
        "alloc usize::MAX u32s": |f| f.manager.alloc::<u32>(usize::MAX) => Error::SizeOverflow { .. },
        "alloc usize::MAX/4 u64s": |f| f.manager.alloc::<u64>(usize::MAX / 4) => Error::SizeOverflow { .. },
        "alloc usize::MAX bytes": |f| f.manager.alloc::<u8>(usize::MAX) => Error::AllocationTooLarge { .. } | Error::OutOfMemory { .. },
        "alloc 2^50 bytes": |f| f.manager.alloc::<u8>(1 << 50) => Error::AllocationTooLarge { .. } | Error::OutOfMemory { .. },
        "alloc 2^50 on the device": |f| f.manager.alloc_with::<u8>(1 << 50, AllocOptions::new().placement(Device)) => Error::AllocationTooLarge { .. } | Error::OutOfMemory { .. },
        "alloc 2^50 pinned": |f| f.manager.alloc_with::<u8>(1 << 50, AllocOptions::new().placement(HostPinned)) => Error::AllocationTooLarge { .. } | Error::OutOfMemory { .. },
        "alloc 2^50 shared": |f| f.manager.alloc_with::<u8>(1 << 50, AllocOptions::new().placement(Shared)) => Error::AllocationTooLarge { .. } | Error::OutOfMemory { .. } | Error::InvalidArgument(_),
        "alloc 2^50 on the host": |f| f.manager.alloc_with::<u8>(1 << 50, AllocOptions::new().placement(Host)) => Error::AllocationTooLarge { .. } | Error::OutOfMemory { .. },
        "from_slice empty": |f| f.manager.from_slice::<u32>(&[]) => Error::ZeroLength { .. },
        "limit below use": |f| f.manager.set_limit(Some(1)) => Error::LimitBelowUse { .. },
        "limit zero": |f| f.manager.set_limit(Some(0)) => Error::ZeroLength { .. } | Error::LimitBelowUse { .. },
        "limit fraction NaN": |f| MemoryManager::builder().backend(f.backend.clone()).limit_fraction(f64::NAN).build() => Error::InvalidArgument(_),
        "limit fraction negative": |f| MemoryManager::builder().backend(f.backend.clone()).limit_fraction(-0.5).build() => Error::InvalidArgument(_),
        "limit fraction above one": |f| MemoryManager::builder().backend(f.backend.clone()).limit_fraction(1.5).build() => Error::InvalidArgument(_),
        "limit fraction infinite": |f| MemoryManager::builder().backend(f.backend.clone()).limit_fraction(f64::INFINITY).build() => Error::InvalidArgument(_),
        "limit zero bytes": |f| MemoryManager::builder().backend(f.backend.clone()).limit(0).build() => Error::ZeroLength { .. } | Error::InvalidArgument(_),
        "builder with bad transfers": |f| MemoryManager::builder().backend(f.backend.clone()).transfers(big_retry(Duration::MAX, Duration::from_millis(1), 2.0)).build() => Error::InvalidArgument(_),
        "over the manager's limit": |f| {
            let limited = MemoryManager::builder().backend(f.backend.clone()).limit(1 << 20).build()?;
            let _kept = limited.alloc::<u8>(1 << 19)?;
            limited.alloc_with::<u8>(1 << 20, AllocOptions::new().placement(Device))
        } => Error::LimitExceeded { .. },
        "closed context": |f| {
            let manager = MemoryManager::new(f.backend.clone())?;
            manager.context().close();
            manager.alloc::<u32>(4)
        } => Error::ContextClosed { .. },
    ]
}

fn buffer_cases() -> Vec<Case> {
    use std::ops::Bound::*;
    cases![
        "write past the end": |f| f.buffer.write(LEN, &[1]) => Error::OutOfRange { .. },
        "write straddling the end": |f| f.buffer.write(LEN - 4, &[0; 5]) => Error::OutOfRange { .. },
        "write at usize::MAX": |f| f.buffer.write(usize::MAX, &[1]) => Error::OutOfRange { .. } | Error::SizeOverflow { .. },
        "write nothing": |f| f.buffer.write(0, &[]) => Error::ZeroLength { .. },
        "read past the end": |f| f.buffer.read(0, &mut [0; LEN + 1]) => Error::OutOfRange { .. },
        "read at usize::MAX": |f| f.buffer.read(usize::MAX, &mut [0; 1]) => Error::OutOfRange { .. } | Error::SizeOverflow { .. },
        "fill a reversed range": |f| f.buffer.fill(7, 10..5) => Error::OutOfRange { .. } | Error::InvalidArgument(_),
        "fill past the end": |f| f.buffer.fill(7, 0..LEN + 1) => Error::OutOfRange { .. },
        "fill to usize::MAX inclusive": |f| f.buffer.fill(7, ..=usize::MAX) => Error::OutOfRange { .. } | Error::SizeOverflow { .. },
        "fill from past usize::MAX": |f| f.buffer.fill(7, (Excluded(usize::MAX), Unbounded)) => Error::OutOfRange { .. } | Error::SizeOverflow { .. },
        "slice past the end": |f| f.buffer.slice(LEN + 1..) => Error::OutOfRange { .. },
        "slice reversed": |f| f.buffer.slice(3..2) => Error::OutOfRange { .. } | Error::InvalidArgument(_),
        "slice through the end inclusive": |f| f.buffer.slice(..=LEN) => Error::OutOfRange { .. },
        "slice_mut past the end": |f| f.buffer.slice_mut(0..100) => Error::OutOfRange { .. },
        "cast to a larger, misaligned element": |f| f.buffer.slice(1..4)?.cast::<u64>() => Error::IncompatibleCast { .. },
        "cast a length that does not divide": |f| f.buffer.slice(0..3)?.cast::<u64>() => Error::IncompatibleCast { .. },
        "cast_mut a length that does not divide": |f| f.buffer.slice_mut(0..3)?.cast_mut::<[u32; 2]>().map(drop) => Error::IncompatibleCast { .. },
        "view write past its end": |f| f.buffer.slice_mut(8..16)?.write(7, &[1, 2]) => Error::OutOfRange { .. },
        "view fill past its end": |f| f.buffer.slice_mut(8..16)?.fill(1, 0..9) => Error::OutOfRange { .. },
        "view of a view past its end": |f| f.buffer.slice(8..16)?.slice(0..9).map(drop) => Error::OutOfRange { .. },
        "view read past its end": |f| f.buffer.slice(60..)?.read(0, &mut [0; 5]) => Error::OutOfRange { .. },
        "host_mut_range past the end": |f| f.buffer.host_mut_range(0..LEN + 1) => Error::OutOfRange { .. },
        "read_async past the end": |f| f.buffer.read_async(0..LEN + 1) => Error::OutOfRange { .. },
        "read_async reversed": |f| f.buffer.read_async(5..2) => Error::OutOfRange { .. } | Error::InvalidArgument(_),
        "write_async past the end": |f| f.buffer.write_async(LEN, vec![1]) => Error::OutOfRange { .. },
        "write_async straddling the end": |f| f.buffer.write_async(1, vec![0; LEN]) => Error::OutOfRange { .. },
        "describe another manager's buffer": |f| f.manager.allocation(&f.stranger) => Error::ForeignBuffer { .. },
        "copy from a longer view of another context": |f| f.buffer.slice_mut(0..8)?.copy_from(&f.stranger.slice(0..9)?) => Error::LengthMismatch { .. },
        "copy from a shorter buffer": |f| f.buffer.copy_from(&f.shorter) => Error::LengthMismatch { .. },
        "resize to usize::MAX": |f| f.buffer.resize(usize::MAX) => Error::SizeOverflow { .. },
        "resize to 2^60 elements": |f| f.buffer.resize(1 << 60) => Error::SizeOverflow { .. } | Error::AllocationTooLarge { .. } | Error::OutOfMemory { .. },
        "resize to 2^48 elements": |f| f.buffer.resize(1 << 48) => Error::AllocationTooLarge { .. } | Error::OutOfMemory { .. },
        "resize to nothing": |f| f.buffer.resize(0) => Error::ZeroLength { .. },
        "ready_on a foreign queue": |f| { let q = foreign_queue(f); f.buffer.device()?.ready_on(&q) } => Error::ForeignHandle { .. },
    ]
}

fn backend_cases() -> Vec<Case> {
    cases![
        "allocate 0": |f| f.backend.allocate(0) => Error::ZeroLength { .. },
        "allocate usize::MAX": |f| f.backend.allocate(usize::MAX) => Error::AllocationTooLarge { .. } | Error::OutOfMemory { .. },
        "allocate 2^50": |f| f.backend.allocate(1 << 50) => Error::AllocationTooLarge { .. } | Error::OutOfMemory { .. },
        "allocate_staging 0": |f| f.backend.allocate_staging(0) => Error::ZeroLength { .. },
        "allocate_staging usize::MAX": |f| f.backend.allocate_staging(usize::MAX) => Error::AllocationTooLarge { .. } | Error::OutOfMemory { .. },
        "write past the block": |f| { let q = f.queue().clone(); f.backend.write(&q, &mut f.block, 250, &[0; 10]) } => Error::OutOfRange { .. },
        "block write at usize::MAX": |f| { let q = f.queue().clone(); f.backend.write(&q, &mut f.block, usize::MAX, &[1]) } => Error::OutOfRange { .. } | Error::SizeOverflow { .. },
        "block write of nothing": |f| { let q = f.queue().clone(); f.backend.write(&q, &mut f.block, 0, &[]) } => Error::ZeroLength { .. },
        "read past the block": |f| f.backend.read(f.queue(), &f.block, 256, &mut [0; 1]) => Error::OutOfRange { .. },
        "read on a foreign queue": |f| f.backend.read(&foreign_queue(f), &f.block, 0, &mut [0; 1]) => Error::ForeignHandle { .. },
        "write a foreign block": |f| { let q = f.queue().clone(); f.backend.write(&q, &mut f.foreign_block, 0, &[1]) } => Error::ForeignHandle { .. },
        "read a foreign block": |f| f.backend.read(f.queue(), &f.foreign_block, 0, &mut [0; 1]) => Error::ForeignHandle { .. },
        "fill with an empty pattern": |f| { let q = f.queue().clone(); f.backend.fill(&q, &mut f.block, 0, 16, &[]) } => Error::InvalidArgument(_) | Error::ZeroLength { .. },
        "fill with a 3-byte pattern": |f| { let q = f.queue().clone(); f.backend.fill(&q, &mut f.block, 0, 12, &[1, 2, 3]) } => Error::InvalidArgument(_),
        "fill a length the pattern does not divide": |f| { let q = f.queue().clone(); f.backend.fill(&q, &mut f.block, 0, 6, &[1, 2, 3, 4]) } => Error::InvalidArgument(_),
        "fill at an offset the pattern does not divide": |f| { let q = f.queue().clone(); f.backend.fill(&q, &mut f.block, 2, 8, &[1, 2, 3, 4]) } => Error::InvalidArgument(_),
        "fill past the block": |f| { let q = f.queue().clone(); f.backend.fill(&q, &mut f.block, 128, 256, &[1]) } => Error::OutOfRange { .. },
        "fill a foreign block": |f| { let q = f.queue().clone(); f.backend.fill(&q, &mut f.foreign_block, 0, 4, &[1]) } => Error::ForeignHandle { .. },
        "copy from past the source": |f| { let q = f.queue().clone(); let src = f.pooled.block(); f.backend.copy(&q, src, &mut f.block, CopyRegion { src_offset: src.size() - 50, dst_offset: 0, len: 100 }) } => Error::OutOfRange { .. },
        "copy to past the destination": |f| { let q = f.queue().clone(); let src = f.pooled.block(); f.backend.copy(&q, src, &mut f.block, CopyRegion { src_offset: 0, dst_offset: 200, len: 100 }) } => Error::OutOfRange { .. },
        "copy a region whose end overflows": |f| { let q = f.queue().clone(); let src = f.pooled.block(); f.backend.copy(&q, src, &mut f.block, CopyRegion { src_offset: usize::MAX - 1, dst_offset: 0, len: 4 }) } => Error::SizeOverflow { .. },
        "copy nothing": |f| { let q = f.queue().clone(); let src = f.pooled.block(); f.backend.copy(&q, src, &mut f.block, CopyRegion::prefix(0)) } => Error::ZeroLength { .. },
        "copy from a foreign block": |f| { let q = f.queue().clone(); f.backend.copy(&q, &f.foreign_block, &mut f.block, CopyRegion::prefix(4)) } => Error::ForeignHandle { .. },
        "staged write past the staging buffer": |f| { let q = f.queue().clone(); f.backend.write_staged(&q, &mut f.block, &f.staging, CopyRegion { src_offset: 200, dst_offset: 0, len: 100 }) } => Error::OutOfRange { .. },
        "staged write past the block": |f| { let q = f.queue().clone(); f.backend.write_staged(&q, &mut f.block, &f.staging, CopyRegion { src_offset: 0, dst_offset: 200, len: 100 }) } => Error::OutOfRange { .. },
        "staged read past the block": |f| { let q = f.queue().clone(); f.backend.read_staged(&q, &f.block, &mut f.staging, CopyRegion { src_offset: 200, dst_offset: 0, len: 100 }) } => Error::OutOfRange { .. },
        "staged read past the staging buffer": |f| { let q = f.queue().clone(); f.backend.read_staged(&q, &f.block, &mut f.staging, CopyRegion { src_offset: 0, dst_offset: 250, len: 10 }) } => Error::OutOfRange { .. },
        "mapped write past the block": |f| { let q = f.queue().clone(); f.backend.write_mapped(&q, &mut f.block, 250, 10, &mut |b| b.fill(0)) } => Error::OutOfRange { .. },
        "mapped read past the block": |f| f.backend.read_mapped(f.queue(), &f.block, 250, 10, &mut |_| ()) => Error::OutOfRange { .. },
        "peer copy past the destination": |f| { let q = f.queue().clone(); f.backend.copy_to_peer(&q, &f.block, &*f.other, &mut f.foreign_block, CopyRegion { src_offset: 0, dst_offset: 200, len: 100 }) } => Error::OutOfRange { .. },
        "wait on a foreign queue": |f| { let gate = f.backend.create_user_event()?; f.backend.enqueue_wait(&foreign_queue(f), gate.event()) } => Error::ForeignHandle { .. },
        "marker on a foreign queue": |f| f.backend.enqueue_marker(&foreign_queue(f)) => Error::ForeignHandle { .. },
        "release a foreign block": |f| { let block = f.other.allocate(8)?; f.backend.release(block) } => Error::ReleasedToWrongBackend { .. },
    ]
}

fn engine_cases() -> Vec<Case> {
    cases![
        "engine write past the block": |f| f.engine.write(&mut f.block, 300, &[1]) => Error::OutOfRange { .. },
        "engine write straddling the end": |f| f.engine.write(&mut f.block, 200, &[1; 100]) => Error::OutOfRange { .. },
        "engine read at usize::MAX": |f| f.engine.read(&f.block, usize::MAX, &mut [0; 2]) => Error::OutOfRange { .. } | Error::SizeOverflow { .. },
        "engine write a foreign block": |f| f.engine.write(&mut f.foreign_block, 0, &[1]) => Error::ForeignHandle { .. },
        "engine copy past the source": |f| f.engine.copy(f.pooled.block(), f.pooled.capacity() - 50, &mut f.block, 0, 100) => Error::OutOfRange { .. },
        "engine batch with one bad item": |f| {
            let mut spare = f.pool.allocate(64)?;
            f.engine.write_batch(&mut [
                BatchWrite { dst: spare.block_mut(), offset: 0, src: &[9; 64] },
                BatchWrite { dst: &mut f.block, offset: 255, src: &[9; 2] },
            ])
        } => Error::OutOfRange { .. },
        "engine with zero chunk size": |f| TransferEngine::with_config(f.backend.clone(), TransferConfig { chunk_size: 0, ..TransferConfig::default() }) => Error::InvalidArgument(_),
        "engine with zero queues": |f| TransferEngine::with_config(f.backend.clone(), TransferConfig { queues: 0, ..TransferConfig::default() }) => Error::InvalidArgument(_),
        "engine with zero pipeline depth": |f| TransferEngine::with_config(f.backend.clone(), TransferConfig { pipeline_depth: 0, ..TransferConfig::default() }) => Error::InvalidArgument(_),
        "retry with an endless delay": |f| TransferEngine::with_config(f.backend.clone(), big_retry(Duration::MAX, Duration::from_millis(1), 2.0)) => Error::InvalidArgument(_),
        "retry with base above max": |f| TransferEngine::with_config(f.backend.clone(), big_retry(Duration::from_secs(1), Duration::from_secs(10), 2.0)) => Error::InvalidArgument(_),
        "retry with a NaN multiplier": |f| TransferEngine::with_config(f.backend.clone(), big_retry(Duration::from_secs(1), Duration::from_millis(1), f64::NAN)) => Error::InvalidArgument(_),
        "retry with a shrinking multiplier": |f| TransferEngine::with_config(f.backend.clone(), big_retry(Duration::from_secs(1), Duration::from_millis(1), 0.5)) => Error::InvalidArgument(_),
        "scheduler with no workers": |f| TransferScheduler::new(Arc::new(TransferEngine::new(f.backend.clone())), SchedulerConfig { max_in_flight: 0, ..SchedulerConfig::default() }) => Error::InvalidArgument(_),
        "scheduler with no queues": |f| TransferScheduler::new(Arc::new(TransferEngine::new(f.backend.clone())), SchedulerConfig { queues: 0, ..SchedulerConfig::default() }) => Error::InvalidArgument(_),
        "scheduled write past the block": |f| {
            let scheduler = TransferScheduler::new(Arc::new(TransferEngine::new(f.backend.clone())), SchedulerConfig::default())?;
            let block = f.pool.allocate(64)?;
            let end = block.capacity() - 4;
            let outcome = scheduler.submit(TransferRequest::write(block, end, vec![1u8; 8])).wait();
            outcome.map(drop).map_err(|failed| failed.error)
        } => Error::OutOfRange { .. },
    ]
}

fn pool_cases() -> Vec<Case> {
    cases![
        "pool allocate 0": |f| f.pool.allocate(0) => Error::ZeroLength { .. },
        "pool allocate usize::MAX": |f| f.pool.allocate(usize::MAX) => Error::AllocationTooLarge { .. } | Error::OutOfMemory { .. },
        "pool allocate 2^50": |f| f.pool.allocate(1 << 50) => Error::AllocationTooLarge { .. } | Error::OutOfMemory { .. },
        "pool over its limit": |f| {
            let limit = MemoryLimit::new(4096)?;
            let pool = CachingAllocator::with_limit(f.backend.clone(), CachingConfig::default(), limit);
            let _kept = pool.allocate(4096)?;
            pool.allocate(1)
        } => Error::LimitExceeded { .. },
        "limit of zero": |_f| MemoryLimit::new(0) => Error::ZeroLength { .. },
        "limit set below its use": |f| {
            let limit = MemoryLimit::new(1 << 20)?;
            let pool = CachingAllocator::with_limit(f.backend.clone(), CachingConfig::default(), limit.clone());
            let _kept = pool.allocate(1 << 19)?;
            limit.set(1 << 10)
        } => Error::LimitBelowUse { .. },
        "size classes with zero per doubling": |_f| SizeClasses::new(0, 256, 1 << 20) => Error::InvalidArgument(_),
        "size classes with a min that is no power of two": |_f| SizeClasses::new(4, 300, 1 << 20) => Error::InvalidArgument(_),
        "size classes with min above max": |_f| SizeClasses::new(4, 1 << 20, 256) => Error::InvalidArgument(_),
        "size classes from zero": |_f| SizeClasses::new(4, 0, 1 << 20) => Error::InvalidArgument(_),
        "size classes with absurd subdivision": |_f| SizeClasses::new(usize::MAX, 256, 1 << 20) => Error::InvalidArgument(_),
        "size classes up to usize::MAX": |_f| SizeClasses::new(4, 256, usize::MAX) => Error::InvalidArgument(_),
        "array rent usize::MAX": |f| f.arrays.rent(usize::MAX) => Error::OutOfMemory { .. } | Error::SizeOverflow { .. },
        "array rent 2^42": |f| f.arrays.rent(1 << 42) => Error::OutOfMemory { .. },
        "array rent usize::MAX/4 u64s": |_f| ArrayPool::<u64>::new().rent(usize::MAX / 4) => Error::SizeOverflow { .. },
        "array pool from zero": |_f| ArrayPool::<u8>::with_config(ArrayPoolConfig { min_len: 0, ..ArrayPoolConfig::default() }) => Error::InvalidArgument(_),
        "array pool with min above max": |_f| ArrayPool::<u8>::with_config(ArrayPoolConfig { min_len: 1 << 20, max_len: 16, ..ArrayPoolConfig::default() }) => Error::InvalidArgument(_),
        "array pool with buckets that are no power of two": |_f| ArrayPool::<u8>::with_config(ArrayPoolConfig { min_len: 24, ..ArrayPoolConfig::default() }) => Error::InvalidArgument(_),
        "object pool prefilled beyond its idle bound": |_f| ObjectPool::builder(|| 0u8).max_idle(2).prefill(3).build() => Error::InvalidArgument(_),
        "context with a device pool as host pool": |f| {
            let device = CachingAllocator::new(f.backend.clone());
            let host = if f.backend.capabilities().host_addressable {
                return Err(Error::InvalidArgument("no such pool on the host backend".into()));
            } else {
                CachingAllocator::new(f.backend.clone())
            };
            BufferContext::with_pools(device, host)
        } => Error::InvalidArgument(_),
        "context with bad transfers": |f| BufferContext::with_transfers(CachingAllocator::new(f.backend.clone()), CachingAllocator::new(f.other.clone()), TransferConfig { queues: 0, ..TransferConfig::default() }) => Error::InvalidArgument(_),
    ]
}

/// Every case gives its error and leaves the fixture as it was; the fixture's books balance
/// at the end, with nothing the cases made still held.
fn every_bad_call_is_a_typed_error_and_harms_nothing(backend: &Arc<dyn Backend>) {
    let live_before = backend.usage().live_blocks;
    let mut fixture = Fixture::new(backend);
    let all: Vec<Case> = [
        manager_cases(),
        buffer_cases(),
        backend_cases(),
        engine_cases(),
        pool_cases(),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(all.len() >= 80, "{} cases", all.len());
    eprintln!("{} bad-input cases", all.len());
    let mut names = std::collections::HashSet::new();
    for case in &all {
        assert!(names.insert(case.name), "duplicate case {}", case.name);
        match (case.run)(&mut fixture) {
            Err(e) if (case.expect)(&e) => {}
            Err(e) => panic!("{}: wrong error: {e:?}", case.name),
            Ok(()) => panic!("{}: accepted", case.name),
        }
        fixture.check(case.name);
    }
    let Fixture {
        backend,
        other,
        manager,
        buffer,
        shorter,
        stranger,
        block,
        foreign_block,
        staging,
        engine,
        pool,
        pooled,
        arrays,
    } = fixture;
    backend.release(block).unwrap();
    other.release(foreign_block).unwrap();
    drop((
        buffer, shorter, stranger, manager, staging, engine, pooled, pool, arrays,
    ));
    backend.synchronize().unwrap();
    assert_eq!(backend.usage().live_blocks, live_before, "blocks leaked");
}

/// Issue 18, item 8, through a buffer: a smaller block swapped in through a device guard is not
/// taken for the buffer's device copy. The buffer lets it go when the guard ends; the bytes
/// whose only copy was on the device left with the swapped-out block (the swapper holds them)
/// and read as zeros; the rest of the host copy is kept. No panic, no leak.
fn a_block_swapped_into_a_buffer_is_let_go(backend: &Arc<dyn Backend>) {
    let manager = MemoryManager::new(backend.clone()).unwrap();
    let mut buffer = manager.from_slice(&contents()).unwrap();
    buffer.prefetch_to_device().unwrap().wait().unwrap();
    let mut small = backend.allocate(16).unwrap();
    {
        let mut view = buffer.slice_mut(0..8).unwrap();
        let mut guard = view.device_mut().unwrap();
        std::mem::swap(guard.block_mut(), &mut small);
    }
    let shared = backend.capabilities().host_addressable; // one allocation for both sides
    let mut expect = contents();
    let gone = if shared { 0..LEN } else { 0..8 };
    expect[gone].fill(0);
    assert_eq!(buffer.to_vec().unwrap(), expect);
    let mut taken = vec![0u8; 32];
    backend
        .read(backend.default_queue(), &small, 0, &mut taken)
        .unwrap();
    assert_eq!(
        taken,
        bytemuck::cast_slice::<u32, u8>(&contents()[..8]),
        "the swapper has them"
    );
    // The buffer works on: a fresh device copy, written and read back.
    buffer.fill(9, 4..12).unwrap();
    buffer.prefetch_to_device().unwrap().wait().unwrap();
    drop(buffer.device_mut().unwrap());
    expect[4..12].fill(9);
    assert_eq!(buffer.to_vec().unwrap(), expect);
    drop(buffer);
    let pool = manager.context().device_pool();
    assert_eq!(pool.stats().foreign_returns, 1);
    assert_eq!(pool.stats().bytes_in_use, 0);
    // The swapped-out block is a view of a segment where the pool carves every block: the
    // swapper gives it back as one, and its range stays carved until the pool goes.
    match small.is_view() {
        true => backend.release_view(small),
        false => backend.release(small),
    }
    .unwrap();
    manager.trim().unwrap();
    drop(manager);
    backend.synchronize().unwrap();
    assert_eq!(backend.usage().live_blocks, 0, "nothing leaked");
}

common::backend_suite!(
    [
        host => crate::common::host(),
        opencl_dev0 => crate::common::opencl(0),
        wgpu => crate::common::wgpu(),
        cuda_dev0 => crate::common::cuda(0),
    ],
    [
        every_bad_call_is_a_typed_error_and_harms_nothing,
        a_block_swapped_into_a_buffer_is_let_go,
    ]
);
