//! An all-reduce of a `UnifiedBuffer<f32>` across MPI ranks (feature `mpi`), each rank on its
//! node-local device: the values are made on the device, summed across ranks through MPI, and
//! used on the device again — no download, upload or wait written by hand. CI runs it on 4
//! ranks, on the host backend and on PoCL:
//!
//! ```text
//! mpirun -np 4 --oversubscribe target/debug/examples/mpi_all_reduce [host|opencl]
//! ```

use std::sync::Arc;

use hetmem::backend::{Backend, BackendKind, HostBackend};
use hetmem::manager::{AllocOptions, MemoryManager, Placement};
use hetmem::{mpi as hmpi, Result};
use mpi::collective::SystemOperation;
use mpi::topology::Communicator;

fn main() -> Result<()> {
    let universe = mpi::initialize().expect("MPI is initialised once");
    let world = universe.world();
    let (rank, ranks) = (world.rank(), world.size());
    let backend: Arc<dyn Backend> = match std::env::args().nth(1).as_deref() {
        Some("opencl") => hmpi::local_device(&world, BackendKind::OpenCl)?,
        _ => Arc::new(HostBackend::new()),
    };
    let manager = MemoryManager::new(backend.clone())?;
    let on_device = AllocOptions::new().placement(Placement::Device);

    // Each rank's contribution, its newest copy on the device (where a kernel would write it).
    let n = 1 << 20;
    let mine: Vec<f32> = (0..n).map(|i| (rank as usize + i % 7) as f32).collect();
    let mut contribution = manager.from_slice_with(&mine, on_device.clone())?;
    drop(contribution.device_mut()?);

    // Summed across ranks: the contribution comes back from the device, the sum lands in the
    // host copy and is marked newest.
    let mut sum = manager.alloc_with::<f32>(n, on_device)?;
    hmpi::agree(&world, &sum)?;
    hmpi::all_reduce_into(&world, &contribution, &mut sum, SystemOperation::sum())?;

    // Back on the device for the next kernel: the device guard uploads the sum once.
    drop(sum.device()?);
    let total = ranks as usize;
    let correct = (sum.host()?.iter().enumerate())
        .all(|(i, &v)| v == (total * (total - 1) / 2 + total * (i % 7)) as f32);
    assert!(correct, "rank {rank}: the sum is wrong");
    if rank == 0 {
        let m = sum.metrics();
        println!(
            "{ranks} ranks on {}: summed {n} floats; rank 0 moved {} bytes down, {} bytes up",
            backend.info().name,
            contribution.metrics().device_to_host.bytes + m.device_to_host.bytes,
            m.host_to_device.bytes,
        );
    }
    Ok(())
}
