//! Maintenance without the user remembering it: idle cached blocks go back to the device, the
//! cache is trimmed when the device or a limit runs short, from the allocator's own calls or a
//! background thread — with the actions visible in the statistics.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hetmem::backend::{Backend, HostBackend};
use hetmem::pool::{CachingAllocator, CachingConfig, MaintenancePolicy, MaintenanceReport};
use hetmem::{AllocOptions, Error, MemoryManager, Placement};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Shared bins only, so that a released block's idle time starts when it is dropped.
fn no_thread_cache() -> CachingConfig {
    CachingConfig {
        thread_cache_blocks: 0,
        ..CachingConfig::default()
    }
}

fn idle_after(idle: Duration) -> MaintenancePolicy {
    MaintenancePolicy {
        idle_release: Some(idle),
        interval: Duration::from_millis(5),
        ..MaintenancePolicy::off()
    }
}

/// A block idle past the policy's time goes back at the next allocation that finds maintenance
/// due; one released just before stays cached.
fn idle_blocks_go_back_from_the_allocators_own_calls(b: &Arc<dyn Backend>) {
    let pool = CachingAllocator::with_config(b.clone(), no_thread_cache());
    pool.set_maintenance(idle_after(Duration::from_millis(100)));
    let live = b.usage().live_blocks;
    drop(pool.allocate(64 * KIB).unwrap());
    std::thread::sleep(Duration::from_millis(150));
    drop(pool.allocate(4 * KIB).unwrap()); // recent: stays
    std::thread::sleep(Duration::from_millis(10));
    // The allocator's own calls look at the clock every 256th time past the thread cache:
    // allocating and releasing another size soon runs the maintenance that is due.
    let other = pool.allocate(MIB).unwrap();
    for _ in 0..300 {
        if pool.stats().maintenance_runs > 0 {
            break;
        }
        drop(pool.allocate(128 * KIB).unwrap());
    }
    let s = pool.stats();
    assert!(s.maintenance_runs >= 1, "{s:?}");
    assert_eq!(s.idle_released_bytes, 64 * KIB as u64, "{s:?}");
    assert_eq!(
        s.bytes_cached,
        (4 + 128) * KIB as u64,
        "the recent blocks stay"
    );
    assert_eq!(b.usage().live_blocks, live + 3);
    drop(other);
}

/// The device reports less free memory than the policy wants kept: the whole cache goes.
#[test]
fn low_device_memory_trims_the_cache() {
    let b: Arc<dyn Backend> = Arc::new(HostBackend::with_capacity(4 * MIB as u64));
    let pool = CachingAllocator::new(b.clone());
    pool.set_maintenance(MaintenancePolicy {
        min_device_free: Some(3 * MIB as u64),
        ..MaintenancePolicy::off()
    });
    drop(pool.allocate(MIB).unwrap());
    assert_eq!(
        pool.maintain().unwrap(),
        MaintenanceReport::default(),
        "3 MiB free: no pressure"
    );
    drop(pool.allocate(2 * MIB).unwrap());
    let report = pool.maintain().unwrap();
    assert_eq!(report.pressure_released, 3 * MIB as u64);
    let s = pool.stats();
    assert_eq!((s.pressure_trims, s.bytes_cached), (1, 0));
    assert_eq!(b.usage().live_blocks, 0);
}

/// A manager trims both pools when its limit's headroom falls below the share asked for.
#[test]
fn low_limit_headroom_trims_the_managers_pools() {
    let manager = MemoryManager::builder()
        .limit(4 * MIB as u64)
        .trim_below_headroom(0.5)
        .maintenance(MaintenancePolicy::off())
        .build()
        .unwrap();
    let device = AllocOptions::new().placement(Placement::Device);
    drop(manager.alloc_with::<u8>(MIB, device.clone()).unwrap());
    assert_eq!(
        manager.maintain().unwrap().pressure_released,
        0,
        "3 MiB headroom"
    );
    // 3 MiB grow the expandable segment over the freed first block (and a sixteenth of the
    // 1 MiB it held, ahead) and stay held once dropped, leaving under 1 MiB of headroom.
    drop(manager.alloc_with::<u8>(3 * MIB, device).unwrap());
    let cached = manager.stats().cached_bytes();
    assert!(
        (3 * MIB as u64..=(3 * MIB + MIB / 16) as u64).contains(&cached),
        "{cached}"
    );
    let report = manager.maintain().unwrap();
    assert_eq!(report.pressure_released, cached);
    assert_eq!(manager.stats().cached_bytes(), 0);
    assert!(matches!(
        MemoryManager::builder().trim_below_headroom(1.5).build(),
        Err(Error::InvalidArgument(_))
    ));
}

/// A background thread releases idle memory of a program that makes no further calls.
fn a_background_thread_maintains_a_quiet_program(b: &Arc<dyn Backend>) {
    let manager = MemoryManager::builder()
        .backend(b.clone())
        .maintenance(idle_after(Duration::from_millis(20)))
        .build()
        .unwrap();
    let device = AllocOptions::new().placement(Placement::Device);
    drop(manager.alloc_with::<u8>(256 * KIB, device).unwrap());
    assert!(manager.stats().cached_bytes() >= 256 * KIB as u64);
    let maintainer = manager
        .start_maintenance(Duration::from_millis(10))
        .unwrap();
    let start = Instant::now();
    while manager.stats().cached_bytes() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the cache was never released: {:?}",
            manager.stats().device
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(maintainer);
    let s = manager.stats().device;
    assert!(s.maintenance_runs >= 1 && s.idle_released_bytes >= 256 * KIB as u64);
    assert!(manager.start_maintenance(Duration::ZERO).is_err());
}

/// With maintenance off nothing goes back on its own, however long it sits.
#[test]
fn maintenance_off_keeps_the_cache() {
    let b: Arc<dyn Backend> = Arc::new(HostBackend::new());
    let pool = CachingAllocator::with_config(b.clone(), no_thread_cache());
    pool.set_maintenance(MaintenancePolicy::off());
    drop(pool.allocate(64 * KIB).unwrap());
    std::thread::sleep(Duration::from_millis(30));
    drop(pool.allocate(MIB).unwrap());
    let s = pool.stats();
    assert_eq!(
        (s.maintenance_runs, s.bytes_cached),
        (0, (64 * KIB + MIB) as u64)
    );
}

common::backend_suite!(
    [
        host => crate::common::host(),
        opencl_dev0 => crate::common::opencl(0),
        wgpu => crate::common::wgpu(),
        cuda_dev0 => crate::common::cuda(0),
    ],
    [
        idle_blocks_go_back_from_the_allocators_own_calls,
        a_background_thread_maintains_a_quiet_program,
    ]
);
