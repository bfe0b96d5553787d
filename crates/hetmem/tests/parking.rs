//! Parked buffers on real backends: a buffer dropped whole is made into the next buffer of its
//! length, label and placement on its thread — reading as new, counted as new — and only such
//! a buffer; exposed, unpooled and adopted memory is never parked; trimming, pressure,
//! maintenance and the manager's end let parked buffers go, from every thread.

mod common;

use std::sync::Arc;
use std::time::Duration;

use hetmem::backend::Backend;
use hetmem::manager::{AllocMode, AllocOptions, MemoryManager, Placement, Tracking};

const MIB: usize = 1 << 20;

use common::manager;

fn on_device() -> AllocOptions {
    AllocOptions::new().placement(Placement::Device)
}

/// Fills a new buffer on the host, moves it to the device, drops it.
fn use_and_drop(m: &MemoryManager, len: usize, options: AllocOptions) {
    let mut buffer = m.alloc_with::<u8>(len, options).unwrap();
    buffer.host_mut().unwrap().fill(0xAB);
    buffer.prefetch_to_device().unwrap().wait().unwrap();
    drop(buffer);
}

fn a_dropped_buffer_is_made_again_reading_as_new(backend: &Arc<dyn Backend>) {
    let m = manager(backend);
    let labelled = on_device().label("weights");
    use_and_drop(&m, MIB, labelled.clone());
    let s = m.stats();
    assert_eq!(
        (s.parked.buffers, s.live_buffers(), s.bytes_current),
        (1, 0, 0)
    );
    assert!(m.outstanding().is_empty(), "a parked buffer is not live");
    assert_eq!(s.device.bytes_in_use, 0, "its block counts cached: {s:?}");
    assert!(s.device.bytes_cached >= MIB as u64, "{s:?}");
    assert_eq!(s.parked.blocks[1], 1, "its device block: {:?}", s.parked);
    assert!(s.parked.largest_block[1] >= MIB as u64, "{:?}", s.parked);
    assert!(s.device.largest_cached_block >= MIB as u64, "{s:?}");
    let summary = s.summary();
    assert!(summary.contains("parked buffers"), "{summary}");
    let carves = s.device_segments.carves;

    let mut again = m.alloc_with::<u8>(MIB, labelled.clone()).unwrap();
    let s = m.stats();
    assert_eq!((s.parked.buffers, s.parked.reuses), (0, 1));
    assert_eq!(s.device_segments.carves, carves, "no new block was carved");
    assert_eq!(
        (s.allocations, s.releases, s.bytes_current),
        (2, 1, MIB as u64)
    );
    let live = m.outstanding();
    assert_eq!(live.len(), 1);
    assert_eq!((live[0].id, live[0].label.as_deref()), (2, Some("weights")));
    assert_eq!(
        again.metrics().host_to_device.transfers,
        0,
        "its cells are new"
    );
    assert_eq!(again.to_vec().unwrap(), vec![0; MIB], "it reads as zeros");
    again.write(5, &[1, 2, 3]).unwrap();
    again.prefetch_to_device().unwrap().wait().unwrap();
    again.invalidate(hetmem::buffer::Side::Host).unwrap();
    assert_eq!(again.to_vec().unwrap()[4..9], [0, 1, 2, 3, 0]);
    drop(again);

    // Made with contents: they are the ones given, whatever the parked buffer held.
    let data = common::pattern(MIB, 3);
    let copy = m.from_slice_with(&data, labelled).unwrap();
    assert_eq!(m.stats().parked.reuses, 2);
    assert_eq!(copy.to_vec().unwrap(), data);
    let usage = m.usage();
    assert_eq!(
        (usage[0].label.as_deref(), usage[0].buffers),
        (Some("weights"), 3)
    );
}

/// A buffer dropped with an upload in flight behind a gate on its queue waits for it before it
/// is parked: the buffer made of it reads zeros on both sides once everything has landed.
fn a_transfer_in_flight_lands_before_its_buffer_is_parked(backend: &Arc<dyn Backend>) {
    let m = manager(backend);
    let n = MIB / 4;
    let buffer = m.from_slice_with(&vec![5u32; n], on_device()).unwrap();
    let gate = common::Gate::close(backend, m.context().queue(), Duration::from_millis(80));
    let upload = buffer.prefetch_to_device().unwrap();
    drop(buffer);
    drop(gate);
    drop(upload);
    let again = m.alloc_with::<u32>(n, on_device()).unwrap();
    assert_eq!(m.stats().parked.reuses, 1);
    assert_eq!(again.to_vec().unwrap(), vec![0; n]);
    backend.synchronize().unwrap();
    assert_eq!(common::device_contents(backend, &again), vec![0; n]);
}

fn only_a_like_buffer_is_made_of_a_parked_one(backend: &Arc<dyn Backend>) {
    let m = manager(backend);
    use_and_drop(&m, MIB, on_device().label("a"));
    let mut unlike = vec![
        (MIB, on_device().label("b")),
        (MIB, on_device()),
        (MIB / 2, on_device().label("a")),
        (MIB, on_device().label("a").mode(AllocMode::Unpooled)),
    ];
    let on_host = AllocOptions::new().label("a").placement(Placement::Host);
    let placement = |options: &AllocOptions| m.decide(options, MIB).unwrap().placement;
    if placement(&on_host) != placement(&on_device()) {
        unlike.insert(3, (MIB, on_host)); // on the host backend, the same placement
    }
    for (len, options) in unlike {
        let other = m.alloc_with::<u8>(len, options.clone()).unwrap();
        assert_eq!(m.stats().parked.reuses, 0, "{options:?}");
        drop(other);
    }
    // Three unlike ones parked beside the first, filling the shelf (the unpooled one is never
    // parked, the one on the host finds the shelf full); the first is still there.
    assert_eq!(m.stats().parked.buffers, 4);
    drop(m.alloc_with::<u8>(MIB, on_device().label("a")).unwrap());
    assert_eq!(m.stats().parked.reuses, 1);
}

fn exposed_adopted_and_unpooled_buffers_are_never_parked(backend: &Arc<dyn Backend>) {
    let m = manager(backend);
    let mut exposed = m.alloc_with::<u8>(MIB, on_device()).unwrap();
    drop(exposed.device_mut().unwrap());
    drop(exposed);
    let unpooled = on_device().mode(AllocMode::Unpooled);
    drop(m.alloc_with::<u8>(MIB, unpooled).unwrap());
    let adopted = hetmem::host::ExternalHost::from_vec(vec![7u8; 4096]).unwrap();
    drop(m.adopt_host::<u8>(adopted).unwrap());
    let s = m.stats();
    assert_eq!((s.parked.buffers, s.releases), (0, 3), "{:?}", s.parked);
}

fn trim_pressure_and_maintenance_let_parked_buffers_go(backend: &Arc<dyn Backend>) {
    let m = manager(backend);
    use_and_drop(&m, MIB, on_device());
    let cached = m.stats().cached_bytes();
    assert_eq!(m.trim().unwrap(), cached);
    let s = m.stats();
    assert_eq!((s.parked.buffers, s.reserved_bytes()), (0, 0));

    use_and_drop(&m, MIB, on_device());
    assert_eq!(m.stats().parked.buffers, 1);
    m.maintain().unwrap();
    assert_eq!(
        m.stats().parked.buffers,
        0,
        "maintenance empties the shelves"
    );

    // Under a limit a MiB above what the parked buffer holds, an unlike one takes its room.
    use_and_drop(&m, 2 * MIB, on_device().label("a"));
    let held = m.stats().reserved_bytes();
    m.set_limit(Some(held + MIB as u64)).unwrap();
    assert_eq!(m.stats().parked.buffers, 1);
    let b = m.alloc_with::<u8>(2 * MIB, on_device().label("b")).unwrap();
    assert_eq!(m.stats().parked.buffers, 0, "pressure let it go");
    assert_eq!(b.to_vec().unwrap(), vec![0; 2 * MIB]);
}

fn each_thread_parks_its_own_and_trim_reaches_all(backend: &Arc<dyn Backend>) {
    let m = manager(backend);
    // The other thread lives on meanwhile (a thread that ended leaves its shelf to the next
    // thread that starts using the manager, as pools leave their thread caches).
    let (parked, done) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
    std::thread::scope(|s| {
        s.spawn(|| {
            use_and_drop(&m, MIB, on_device());
            parked.wait();
            done.wait();
        });
        parked.wait();
        assert_eq!(m.stats().parked.buffers, 1);
        drop(m.alloc_with::<u8>(MIB, on_device()).unwrap());
        let s = m.stats();
        assert_eq!(
            (s.parked.buffers, s.parked.reuses),
            (2, 0),
            "another thread's"
        );
        done.wait();
    });
    m.trim().unwrap();
    let s = m.stats();
    assert_eq!((s.parked.buffers, s.reserved_bytes()), (0, 0));
}

fn a_thread_keeps_at_most_its_count_and_bytes(backend: &Arc<dyn Backend>) {
    let m = manager(backend);
    let buffers: Vec<_> = (0..6)
        .map(|_| m.alloc_with::<u8>(MIB, on_device()).unwrap())
        .collect();
    drop(buffers);
    assert_eq!(m.stats().parked.buffers, 4);
    let few = MemoryManager::builder()
        .backend(backend.clone())
        .parked_buffers(2)
        .build()
        .unwrap();
    let big: Vec<_> = (0..2)
        .map(|_| few.alloc_with::<u8>(40 * MIB, on_device()).unwrap())
        .collect();
    drop(big);
    let s = few.stats();
    assert_eq!(s.parked.buffers, 1, "64 MiB a thread: {:?}", s.parked);
    assert_eq!(s.parked.bytes[1], 40 * MIB as u64);
}

fn parking_is_off_where_asked_or_where_allocations_are_traced(backend: &Arc<dyn Backend>) {
    let off = MemoryManager::builder()
        .backend(backend.clone())
        .parked_buffers(0);
    let traced = MemoryManager::builder()
        .backend(backend.clone())
        .tracking(Tracking::Backtraces);
    let recorded = MemoryManager::builder()
        .backend(backend.clone())
        .recorder(Arc::new(hetmem::record::Recorder::new(64)));
    for builder in [off, traced, recorded] {
        let m = builder.build().unwrap();
        use_and_drop(&m, MIB, on_device());
        use_and_drop(&m, MIB, on_device());
        let s = m.stats();
        assert_eq!((s.parked.buffers, s.parked.reuses, s.releases), (0, 0, 2));
    }
}

fn a_manager_going_lets_its_parked_buffers_go(backend: &Arc<dyn Backend>) {
    let holders = Arc::strong_count(backend);
    let m = manager(backend);
    use_and_drop(&m, MIB, on_device());
    let survivor = m.alloc_with::<u8>(MIB, on_device()).unwrap();
    assert_eq!(m.stats().parked.reuses, 1);
    drop(m);
    assert!(
        Arc::strong_count(backend) > holders,
        "the survivor holds the pools"
    );
    assert_eq!(survivor.to_vec().unwrap(), vec![0; MIB]);
    drop(survivor);
    assert_eq!(
        Arc::strong_count(backend),
        holders,
        "nothing parked after the manager went: the pools and their blocks are gone"
    );
}

common::backend_suite!(
    [
        host => crate::common::host(),
        opencl => crate::common::opencl(0),
        wgpu => crate::common::wgpu(),
        cuda => crate::common::cuda(0),
    ],
    [
        a_dropped_buffer_is_made_again_reading_as_new,
        a_transfer_in_flight_lands_before_its_buffer_is_parked,
        only_a_like_buffer_is_made_of_a_parked_one,
        exposed_adopted_and_unpooled_buffers_are_never_parked,
        trim_pressure_and_maintenance_let_parked_buffers_go,
        each_thread_parks_its_own_and_trim_reaches_all,
        a_thread_keeps_at_most_its_count_and_bytes,
        parking_is_off_where_asked_or_where_allocations_are_traced,
        a_manager_going_lets_its_parked_buffers_go,
    ]
);
