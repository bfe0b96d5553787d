//! MPI all-reduce from hetmem buffers against the same from plain `Vec`s, in the same run
//! (feature `mpi`): what hetmem's guards and coherence add to a collective. Sizes 1 KiB to
//! 64 MiB of `f32`, the two sides interleaved (each first
//! in turn), median time on rank 0 after a barrier:
//!
//! ```text
//! mpirun -np 2 target/release/examples/mpi_bench [--quick]
//! ```

use std::time::Instant;

use hetmem::{mpi as hmpi, MemoryManager, Result};
use mpi::collective::{CommunicatorCollectives, SystemOperation};
use mpi::topology::Communicator;

fn main() -> Result<()> {
    let universe = mpi::initialize().expect("MPI is initialised once");
    let world = universe.world();
    let quick = std::env::args().any(|a| a == "--quick");
    let manager = MemoryManager::new(std::sync::Arc::new(hetmem::backend::HostBackend::new()))?;
    if world.rank() == 0 {
        println!(
            "all-reduce (sum of f32) on {} ranks: median µs",
            world.size()
        );
        println!(
            "{:>9}  {:>12}  {:>12}  {:>17}",
            "bytes", "hetmem", "Vec", "Vec / hetmem"
        );
    }
    for kib in [1usize, 16, 256, 4096, 65536] {
        let len = kib * 256;
        let rounds = match (quick, kib) {
            (true, k) if k >= 4096 => 9,
            (true, _) => 50,
            (false, k) if k >= 4096 => 21,
            (false, _) => 401,
        };
        let values: Vec<f32> = (0..len).map(|i| (i % 100) as f32).collect();
        let send = manager.from_slice(&values)?;
        let mut recv = manager.alloc::<f32>(len)?;
        let mut plain = vec![0f32; len];
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        // Which side goes first alternates, so neither always finds the caches as the other
        // left them.
        for round in 0..rounds {
            for side in [round % 2, 1 - round % 2] {
                world.barrier();
                let start = Instant::now();
                if side == 0 {
                    hmpi::all_reduce_into(&world, &send, &mut recv, SystemOperation::sum())?;
                } else {
                    world.all_reduce_into(&values[..], &mut plain[..], SystemOperation::sum());
                }
                [&mut ours, &mut theirs][side].push(start.elapsed().as_secs_f64());
            }
        }
        assert!(recv.host()?[..] == plain[..], "both sides sum alike");
        if world.rank() == 0 {
            let (ours, theirs) = (median(&mut ours), median(&mut theirs));
            println!(
                "{:>9}  {:>12.2}  {:>12.2}  {:>16.3}×",
                kib * 1024,
                ours * 1e6,
                theirs * 1e6,
                theirs / ours
            );
        }
    }
    Ok(())
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}
