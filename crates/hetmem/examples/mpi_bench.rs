//! MPI all-reduce from hetmem buffers against the same from plain `Vec`s, in the same run
//! (feature `mpi`): what hetmem's guards and coherence add to a collective. Sizes 1 KiB to
//! 64 MiB of `f32`, median time on rank 0 after a barrier:
//!
//! ```text
//! mpirun -np 2 target/release/examples/mpi_bench [--quick]
//! ```
//!
//! Two baselines: a `Vec` as `malloc` places it (16 bytes past a page boundary for large
//! sizes), and the same values in a page-aligned slice, where hetmem's host copies start.
//! Open MPI's large reductions run a few per cent slower from page-aligned buffers than from
//! `malloc`'s (measured here: both `Vec`s, and hetmem's buffers sliced 16 bytes in), so the
//! second ratio is what hetmem itself adds and the first what a user would see.

use std::time::Instant;

use hetmem::{mpi as hmpi, MemoryManager, Result};
use mpi::collective::{CommunicatorCollectives, SystemOperation};
use mpi::topology::Communicator;

/// The order of the three sides in each round, cycled, so each side runs after each other
/// side equally often (the 64 MiB buffers fit in a large last-level cache, and whoever ran
/// just before decides what is warm in it).
const ORDERS: [[usize; 3]; 6] = [
    [0, 1, 2],
    [1, 2, 0],
    [2, 0, 1],
    [0, 2, 1],
    [2, 1, 0],
    [1, 0, 2],
];

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
            "{:>9}  {:>10}  {:>10}  {:>12}  {:>13}  {:>13}",
            "bytes", "hetmem", "Vec", "aligned Vec", "Vec / hetmem", "aligned / h."
        );
    }
    for kib in [1usize, 16, 256, 4096, 65536] {
        let len = kib * 256;
        let rounds = match (quick, kib) {
            (true, k) if k >= 4096 => 6,
            (true, _) => 48,
            (false, k) if k >= 4096 => 36,
            (false, _) => 402,
        };
        let values: Vec<f32> = (0..len).map(|i| (i % 100) as f32).collect();
        let send = manager.from_slice(&values)?;
        let mut recv = manager.alloc::<f32>(len)?;
        let mut plain = vec![0f32; len];
        let mut aligned_send = PageAligned::new(len);
        aligned_send.slice().copy_from_slice(&values);
        let mut aligned_recv = PageAligned::new(len);
        let mut times = [Vec::new(), Vec::new(), Vec::new()];
        for round in 0..rounds {
            for side in ORDERS[round % ORDERS.len()] {
                world.barrier();
                let start = Instant::now();
                match side {
                    0 => hmpi::all_reduce_into(&world, &send, &mut recv, SystemOperation::sum())?,
                    1 => world.all_reduce_into(&values[..], &mut plain[..], SystemOperation::sum()),
                    _ => world.all_reduce_into(
                        &aligned_send.slice()[..],
                        aligned_recv.slice(),
                        SystemOperation::sum(),
                    ),
                }
                times[side].push(start.elapsed().as_secs_f64());
            }
        }
        assert!(recv.host()?[..] == plain[..], "hetmem and Vec sum alike");
        assert!(aligned_recv.slice()[..] == plain[..], "both Vecs sum alike");
        if world.rank() == 0 {
            let [ours, vec, aligned] = times.map(|mut t| median(&mut t));
            println!(
                "{:>9}  {:>10.2}  {:>10.2}  {:>12.2}  {:>12.3}×  {:>12.3}×",
                kib * 1024,
                ours * 1e6,
                vec * 1e6,
                aligned * 1e6,
                vec / ours,
                aligned / ours
            );
        }
    }
    Ok(())
}

/// `len` values starting at a page boundary, inside a `Vec` a page longer.
struct PageAligned {
    storage: Vec<f32>,
    start: usize,
}

impl PageAligned {
    fn new(len: usize) -> Self {
        let page = 4096 / size_of::<f32>();
        let storage = vec![0f32; len + page];
        let start = storage.as_ptr().align_offset(4096);
        Self { storage, start }
    }

    fn slice(&mut self) -> &mut [f32] {
        let len = self.storage.len() - 4096 / size_of::<f32>();
        &mut self.storage[self.start..self.start + len]
    }
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}
