//! Unified buffers over MPI across 1, 2 and 4 ranks (feature `mpi`). Run by `cargo test`, this
//! binary relaunches itself under `mpirun -np N` and fails if any rank does; without `mpirun` it
//! says SKIPPED, unless `HETMEM_REQUIRE_MPI=1`. Each rank runs every case on the host backend
//! and on its node-local OpenCL device (PoCL in CI), with contents checked exactly.

use std::process::Command;
use std::sync::Arc;

use hetmem::backend::{Backend, BackendKind, HostBackend};
use hetmem::buffer::Side;
use hetmem::manager::{AllocOptions, MemoryManager, Placement};
use hetmem::{mpi as hmpi, Error, UnifiedBuffer};
use mpi::collective::{CommunicatorCollectives, SystemOperation};
use mpi::topology::{Communicator, SimpleCommunicator};

const MIB: usize = 1 << 20;

fn main() {
    if std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some() || std::env::var_os("PMI_SIZE").is_some()
    {
        rank();
    } else {
        launch();
    }
}

/// Runs this binary on 1, 2 and 4 ranks.
fn launch() {
    let required = std::env::var("HETMEM_REQUIRE_MPI").is_ok_and(|v| v == "1");
    let found = Command::new("mpirun").arg("--version").output();
    if found.is_err() {
        assert!(!required, "HETMEM_REQUIRE_MPI=1 but there is no mpirun");
        println!("SKIPPED mpi: no mpirun (install Open MPI: openmpi-bin libopenmpi-dev)");
        return;
    }
    let me = std::env::current_exe().unwrap();
    for ranks in [1, 2, 4] {
        let status = Command::new("mpirun")
            .args(["-np", &ranks.to_string(), "--oversubscribe"])
            .arg(&me)
            // Open MPI refuses root unless told twice; CI runs as root.
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .status()
            .unwrap();
        assert!(status.success(), "{ranks} ranks: {status}");
        println!("mpi: every case passed on {ranks} rank(s)");
    }
}

/// One rank: every case on every backend.
fn rank() {
    let universe = mpi::initialize().expect("MPI initialised once");
    let world = universe.world();
    let mut backends: Vec<Arc<dyn Backend>> = vec![Arc::new(HostBackend::new())];
    match hmpi::local_device(&world, BackendKind::OpenCl) {
        Ok(device) => {
            the_local_device_is_dealt_round_robin(&world, &device);
            backends.push(device);
        }
        Err(e) => {
            let required = std::env::var("HETMEM_REQUIRE_OPENCL").is_ok_and(|v| v == "1");
            assert!(!required, "HETMEM_REQUIRE_OPENCL=1 but: {e}");
            println!("SKIPPED mpi on OpenCL: {e}");
        }
    }
    for backend in backends {
        let m = MemoryManager::new(backend.clone()).unwrap();
        let label = backend.info().label();
        if world.size() > 1 {
            messages_arrive_whole_around_a_ring(&world, &m);
            refused_messages_leave_the_buffer_and_the_next_message_intact(&world, &m);
        }
        all_reduce_sums_exactly(&world, &m);
        all_reduce_in_place_and_broadcast(&world, &m);
        agree_finds_mismatched_lengths_and_types(&world, &m);
        device_path(&world, &m);
        world.barrier();
        if world.rank() == 0 {
            println!("mpi: {} rank(s) on {label}: ok", world.size());
        }
    }
}

/// A buffer of `values` whose newest data is only on the device (uploaded and declared
/// written there), so that sending it must bring it back first.
fn device_only<T: hetmem::element::Element>(m: &MemoryManager, values: &[T]) -> UnifiedBuffer<T> {
    let mut buffer = m
        .from_slice_with(values, AllocOptions::new().placement(Placement::Device))
        .unwrap();
    drop(buffer.device_mut().unwrap());
    if buffer.residency() == hetmem::buffer::Residency::Mirrored {
        assert!(!buffer.is_on_host());
    }
    buffer
}

/// Reads what the device holds: uploads, declares the host copy stale, downloads.
fn through_the_device<T: hetmem::element::Element>(buffer: &mut UnifiedBuffer<T>) -> Vec<T> {
    drop(buffer.device().unwrap());
    if buffer.residency() == hetmem::buffer::Residency::Mirrored {
        buffer.invalidate(Side::Host).unwrap();
    }
    buffer.to_vec().unwrap()
}

fn pattern(rank: i32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32 * 31 + rank as u32 * 7) as u8)
        .collect()
}

/// Each rank sends to the next and receives from the previous, 1 B to 64 MiB, contents exact,
/// through a device round trip on both ends.
fn messages_arrive_whole_around_a_ring(world: &SimpleCommunicator, m: &MemoryManager) {
    let (me, n) = (world.rank(), world.size());
    let (next, previous) = (
        world.process_at_rank((me + 1) % n),
        world.process_at_rank((me + n - 1) % n),
    );
    for len in [1, 4096 + 3, MIB, 64 * MIB] {
        let outgoing = device_only(m, &pattern(me, len));
        let mut incoming = m.alloc::<u8>(len).unwrap();
        // Even ranks send first: a blocking ring of an even number of ranks cannot deadlock.
        if me % 2 == 0 {
            hmpi::send(&outgoing, &next, 1).unwrap();
            hmpi::receive(&mut incoming, &previous, 1).unwrap();
        } else {
            hmpi::receive(&mut incoming, &previous, 1).unwrap();
            hmpi::send(&outgoing, &next, 1).unwrap();
        }
        assert!(
            through_the_device(&mut incoming) == pattern((me + n - 1) % n, len),
            "{len} B"
        );
    }
}

/// A message of the wrong length or element size is refused with a typed error, the buffer
/// keeps its contents, and the message after it arrives as sent.
fn refused_messages_leave_the_buffer_and_the_next_message_intact(
    world: &SimpleCommunicator,
    m: &MemoryManager,
) {
    let me = world.rank();
    if me > 1 {
        return;
    }
    let other = world.process_at_rank(1 - me);
    if me == 0 {
        hmpi::send(&m.from_slice(&[1.5f32; 10]).unwrap(), &other, 2).unwrap();
        hmpi::send(&m.from_slice(&[2.5f32; 3]).unwrap(), &other, 2).unwrap();
        hmpi::send(&m.from_slice(&[7.0f64; 4]).unwrap(), &other, 2).unwrap();
    } else {
        let mut shorter = m.from_slice(&[9.0f32; 8]).unwrap();
        let refused = hmpi::receive(&mut shorter, &other, 2);
        assert!(
            matches!(
                refused,
                Err(Error::LengthMismatch {
                    expected: 8,
                    actual: 10,
                    ..
                })
            ),
            "{refused:?}"
        );
        assert_eq!(shorter.to_vec().unwrap(), [9.0f32; 8]);
        let mut wider = m.from_slice(&[9.0f64; 2]).unwrap();
        let refused = hmpi::receive(&mut wider, &other, 2);
        assert!(
            matches!(refused, Err(Error::TypeMismatch { .. })),
            "{refused:?}"
        );
        assert_eq!(wider.to_vec().unwrap(), [9.0f64; 2]);
        let mut right = m.alloc::<f64>(4).unwrap();
        hmpi::receive(&mut right, &other, 2).unwrap();
        assert_eq!(right.to_vec().unwrap(), [7.0f64; 4]);
    }
    let mut longer = m.alloc::<f32>(5).unwrap();
    let mut short = m.alloc::<f32>(4).unwrap();
    let local = hmpi::all_reduce_into(world, &longer, &mut short, SystemOperation::sum());
    assert!(
        matches!(local, Err(Error::LengthMismatch { .. })),
        "{local:?}"
    );
    longer.host_mut().unwrap()[0] = 1.0; // still a usable buffer
}

/// Every rank's values summed, 1 KiB to 64 MiB of `f32` (small integers: the sums are exact),
/// the sources' newest data on their devices.
fn all_reduce_sums_exactly(world: &SimpleCommunicator, m: &MemoryManager) {
    let (me, n) = (world.rank(), world.size());
    for bytes in [1024, MIB, 64 * MIB] {
        let len = bytes / 4;
        let values: Vec<f32> = (0..len)
            .map(|i| (me as usize * 3 + i % 1000) as f32)
            .collect();
        let send = device_only(m, &values);
        let mut sum = m.alloc::<f32>(len).unwrap();
        hmpi::all_reduce_into(world, &send, &mut sum, SystemOperation::sum()).unwrap();
        let ranks = n as usize;
        let expected: Vec<f32> = (0..len)
            .map(|i| (3 * ranks * (ranks - 1) / 2 + ranks * (i % 1000)) as f32)
            .collect();
        assert!(through_the_device(&mut sum) == expected, "{bytes} B");
    }
}

/// In-place all-reduce (maximum), then a broadcast from the last rank: the root's copies stay
/// valid, every other rank's host copy becomes the newest.
fn all_reduce_in_place_and_broadcast(world: &SimpleCommunicator, m: &MemoryManager) {
    let (me, n) = (world.rank(), world.size());
    let mut values = m.from_slice(&[me as i64, -(me as i64), 5]).unwrap();
    hmpi::all_reduce(world, &mut values, SystemOperation::max()).unwrap();
    assert_eq!(values.to_vec().unwrap(), [n as i64 - 1, 0, 5]);

    let root = world.process_at_rank(n - 1);
    let data: Vec<u32> = (0..MIB as u32).map(|i| i ^ 0x5a5a).collect();
    let mut buffer = if me == n - 1 {
        device_only(m, &data)
    } else {
        m.from_slice(&vec![0u32; MIB]).unwrap()
    };
    hmpi::broadcast(&root, &mut buffer).unwrap();
    if me == n - 1 {
        assert!(buffer.is_on_device(), "the root's device copy stays valid");
    }
    assert!(through_the_device(&mut buffer) == data);
}

/// `agree` sees what MPI does not: ranks with different lengths or element types.
fn agree_finds_mismatched_lengths_and_types(world: &SimpleCommunicator, m: &MemoryManager) {
    let (me, n) = (world.rank(), world.size());
    hmpi::agree(world, &m.alloc::<f32>(100).unwrap()).unwrap();
    if n == 1 {
        return;
    }
    let uneven = m.alloc::<f32>(100 + (me == 0) as usize).unwrap();
    let refused = hmpi::agree(world, &uneven);
    assert!(
        matches!(refused, Err(Error::LengthMismatch { .. })),
        "{refused:?}"
    );
    let refused = if me == 0 {
        hmpi::agree(world, &m.alloc::<u32>(10).unwrap())
    } else {
        hmpi::agree(world, &m.alloc::<f32>(10).unwrap())
    };
    assert!(
        matches!(refused, Err(Error::TypeMismatch { .. })),
        "{refused:?}"
    );
}

/// The device path hands MPI the device copies where they are addresses (the host backend;
/// CUDA with a CUDA-aware MPI) and refuses an OpenCL buffer before anything is sent.
fn device_path(world: &SimpleCommunicator, m: &MemoryManager) {
    let (me, n) = (world.rank(), world.size());
    let values: Vec<f32> = (0..4096).map(|i| (i + me as usize) as f32).collect();
    let send = device_only(m, &values);
    let mut sum = m.alloc::<f32>(values.len()).unwrap();
    let outcome = hmpi::all_reduce_into_device(world, &send, &mut sum, SystemOperation::sum());
    if m.backend().info().kind == BackendKind::OpenCl {
        assert!(
            matches!(outcome, Err(Error::Unsupported { .. })),
            "{outcome:?}"
        );
        return;
    }
    outcome.unwrap();
    assert!(sum.is_on_device());
    the_device_path_waits_for_work_on_the_buffers_queue(world, m);
    let ranks = n as usize;
    let expected: Vec<f32> = (0..4096)
        .map(|i| (ranks * i + ranks * (ranks - 1) / 2) as f32)
        .collect();
    assert!(sum.to_vec().unwrap() == expected);
    if n > 1 && me < 2 {
        let other = world.process_at_rank(1 - me);
        let mut incoming = m.alloc::<f32>(values.len()).unwrap();
        if me == 0 {
            hmpi::send_device(&send, &other, 3).unwrap();
            hmpi::receive_device(&mut incoming, &other, 3).unwrap();
        } else {
            hmpi::receive_device(&mut incoming, &other, 3).unwrap();
            hmpi::send_device(&send, &other, 3).unwrap();
        }
        let theirs: Vec<f32> = (0..4096).map(|i| (i + 1 - me as usize) as f32).collect();
        assert!(incoming.to_vec().unwrap() == theirs);
    }
}

/// Work enqueued on a buffer's queue behind a gate — a fill the device path must not overtake —
/// runs before MPI reads the device copy: the all-reduce sees the filled values.
fn the_device_path_waits_for_work_on_the_buffers_queue(
    world: &SimpleCommunicator,
    m: &MemoryManager,
) {
    let backend = m.backend().clone();
    let mut gated = device_only(m, &[1.0f32; 4096]);
    let gate = backend.create_user_event().unwrap();
    {
        let mut device = gated.device_mut().unwrap();
        let queue = device.queue().clone();
        backend.enqueue_wait(&queue, gate.event()).unwrap();
        let len = device.byte_len();
        backend
            .fill(&queue, device.block_mut(), 0, len, &7.0f32.to_ne_bytes())
            .unwrap();
    }
    let opener = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        gate.complete().unwrap();
    });
    let mut seen = m.alloc::<f32>(4096).unwrap();
    hmpi::all_reduce_into_device(world, &gated, &mut seen, SystemOperation::sum()).unwrap();
    opener.join().unwrap();
    let ranks = world.size() as f32;
    assert!(
        seen.to_vec().unwrap().iter().all(|&v| v == 7.0 * ranks),
        "the fill ran first"
    );
}

/// Ranks on one node take its devices in turn.
fn the_local_device_is_dealt_round_robin(world: &SimpleCommunicator, device: &Arc<dyn Backend>) {
    let count = hetmem::backend::OpenClBackend::all().unwrap().len();
    let expected = hmpi::local_rank(world) % count;
    let label = device.info().label();
    assert!(
        label.ends_with(&format!(":{expected}")),
        "{label}, expected device {expected}"
    );
}
