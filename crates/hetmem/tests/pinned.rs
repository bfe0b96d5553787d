//! The pinned-host pool: reuse by size class, its limits, device work still pending on a
//! returned buffer (gated by a user event), two threads, and `HostPinned` buffers whose host copy
//! is pooled page-locked memory — on the host and PoCL.

mod common;

use std::sync::Arc;
use std::time::Duration;

use hetmem::backend::{Backend, CopyRegion};
use hetmem::pool::{PinnedConfig, PinnedPool};
use hetmem::resource::Trim;
use hetmem::{AllocOptions, Error, MemoryManager, Placement};

fn reuse_by_class(b: &Arc<dyn Backend>) {
    let pool = PinnedPool::new(b.clone());
    let mut first = pool.take(1000).unwrap();
    assert_eq!((first.requested(), first.len()), (1000, 1024));
    first.as_mut_slice().unwrap()[..4].copy_from_slice(&[1, 2, 3, 4]);
    let address = first.memory().as_ptr() as usize;
    drop(first);
    let again = pool.take(900).unwrap();
    assert_eq!(
        again.memory().as_ptr() as usize,
        address,
        "the cached buffer"
    );
    assert_eq!(&again.as_slice().unwrap()[..4], &[1, 2, 3, 4]);
    let stats = pool.stats();
    assert_eq!((stats.hits, stats.misses), (1, 1));
    assert_eq!((stats.bytes_reserved, stats.bytes_cached), (1024, 0));
    drop(again);
    assert_eq!(pool.stats().bytes_cached, 1024);
    assert_eq!(pool.trim().unwrap(), 1024);
    assert_eq!(pool.stats().bytes_reserved, 0);
    assert!(matches!(pool.take(0), Err(Error::ZeroLength { .. })));
}

fn limits_trim_then_refuse(b: &Arc<dyn Backend>) {
    let limited = |max_cached_bytes, max_bytes| {
        PinnedPool::with_config(
            b.clone(),
            PinnedConfig {
                max_cached_bytes,
                max_bytes,
                ..PinnedConfig::default()
            },
        )
    };
    let pool = limited(1 << 20, 4096);
    let held = pool.take(4096).unwrap();
    match pool.take(1) {
        Err(Error::LimitExceeded {
            requested,
            limit,
            in_use,
        }) => assert_eq!((requested, limit, in_use), (512, 4096, 4096)),
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    drop(held); // cached: the next miss frees it to make room
    let small = pool.take(1024).unwrap();
    let stats = pool.stats();
    assert_eq!((stats.bytes_reserved, stats.bytes_cached), (1024, 0));
    assert_eq!(stats.peak_reserved, 4096);
    drop(small);
    let uncached = limited(0, u64::MAX);
    drop(uncached.take(8192).unwrap());
    assert_eq!(uncached.stats().bytes_reserved, 0, "nothing kept");
}

/// A buffer goes back with a device read into it still gated; whoever takes it next waits for
/// the device before seeing its bytes.
fn pending_work_is_waited_for_by_the_next_user(b: &Arc<dyn Backend>) {
    let pool = PinnedPool::new(b.clone());
    let q = b.create_queue().unwrap();
    let mut block = b.allocate(4096).unwrap();
    b.write(&q, &mut block, 0, &[0x5A; 4096]).unwrap();
    let gate = b.create_user_event().unwrap();
    b.enqueue_wait(&q, gate.event()).unwrap();
    let mut staging = pool.take(4096).unwrap();
    b.read_staged(&q, &block, &mut staging, CopyRegion::prefix(4096))
        .unwrap();
    drop(staging); // back in the pool, the read still behind the gate
    let next = pool.take(4096).unwrap();
    assert_eq!(pool.stats().hits, 1);
    let reader = std::thread::spawn(move || next.as_slice().unwrap().to_vec());
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !reader.is_finished(),
        "the next user waits for the gated read"
    );
    gate.complete().unwrap();
    assert!(reader.join().unwrap().iter().all(|&x| x == 0x5A));
    b.release(block).unwrap();
}

fn two_threads_keep_the_books(b: &Arc<dyn Backend>) {
    let pool = PinnedPool::new(b.clone());
    std::thread::scope(|s| {
        for t in 0..2 {
            let pool = pool.clone();
            s.spawn(move || {
                for i in 0..2000 {
                    let mut p = pool.take(512 << (i % 4)).unwrap();
                    p.as_mut_slice().unwrap()[0] = t;
                }
            });
        }
    });
    let stats = pool.stats();
    assert_eq!(stats.hits + stats.misses, 4000);
    assert!(stats.misses <= 8, "at most 2 buffers per class: {stats:?}");
    assert_eq!(stats.bytes_reserved, stats.bytes_cached, "all returned");
}

/// `HostPinned` buffers keep their host copy in the engine's pinned pool: contents move both
/// ways, and a second buffer of the size reuses the first one's memory.
fn host_pinned_buffers_use_the_pool(b: &Arc<dyn Backend>) {
    let manager = MemoryManager::new(b.clone()).unwrap();
    let pinned = AllocOptions::new().placement(Placement::HostPinned);
    let data: Vec<u32> = (0..300_000).map(|i| i * 13).collect();
    let mut buf = manager.from_slice_with(&data, pinned.clone()).unwrap();
    let pool = manager.context().engine().staging_pool();
    if manager.decide(&pinned, 4).unwrap().placement != Placement::HostPinned {
        return; // the host backend: one shared allocation, nothing to pin
    }
    assert!(
        pool.stats().bytes_reserved >= 1_200_000,
        "{:?}",
        pool.stats()
    );
    buf.device_mut().unwrap();
    assert_eq!(buf.to_vec().unwrap(), data);
    buf.fill(9, 100..200).unwrap();
    let host = buf.host().unwrap().to_vec();
    assert!(host[100..200].iter().all(|&x| x == 9) && host[200..] == data[200..]);
    drop(buf);
    let hits = pool.stats().hits;
    let again = manager.alloc_with::<u32>(300_000, pinned).unwrap();
    assert!(
        again.to_vec().unwrap().iter().all(|&x| x == 0),
        "zeroed when reused"
    );
    assert_eq!(pool.stats().hits, hits + 1);
}

common::backend_suite!(
    [
        host => crate::common::host(),
        opencl_dev0 => crate::common::opencl(0),
        wgpu => crate::common::wgpu(),
        cuda_dev0 => crate::common::cuda(0),
    ],
    [
        reuse_by_class,
        limits_trim_then_refuse,
        pending_work_is_waited_for_by_the_next_user,
        two_threads_keep_the_books,
        host_pinned_buffers_use_the_pool,
    ]
);
