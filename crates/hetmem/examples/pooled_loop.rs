//! Allocating in a hot loop: after the first round every buffer is made of the one of its size
//! dropped before (parked on this thread) or comes from the pool, so an allocation costs
//! nanoseconds, not a trip to the allocator. CI runs it.

use std::time::Instant;

use hetmem::backend::{Backend, HostBackend};
use hetmem::manager::{AllocOptions, MemoryManager};
use hetmem::Result;

fn main() -> Result<()> {
    let manager = MemoryManager::host();
    let rounds = 10_000;

    let scratch_options = AllocOptions::new().zeroed(false).label("scratch");
    let scope = manager.stats_scope();
    let start = Instant::now();
    for i in 0..rounds {
        // Scratch space of a few sizes, as a solver's iterations would take. It is overwritten
        // before it is read, so zero-filling it would be wasted work.
        let mut scratch = manager.alloc_with::<f64>(1 << (10 + i % 4), scratch_options.clone())?;
        scratch.write(0, &[i as f64])?;
    }
    let pooled = start.elapsed() / rounds;
    let delta = scope.delta();

    // The same loop straight from the backend, for comparison.
    let raw = HostBackend::new();
    let start = Instant::now();
    for i in 0..rounds {
        let block = raw.allocate(8 << (10 + i % 4))?;
        raw.release(block)?;
    }
    let direct = start.elapsed() / rounds;

    println!(
        "{rounds} allocations: {} pool hits, {} backend allocations; {pooled:?} each through the manager, {direct:?} raw",
        delta.pool_hits, delta.pool_misses
    );
    assert_eq!(delta.allocations, u64::from(rounds));
    assert!(
        delta.pool_misses <= 4,
        "one backend allocation per size, then only hits"
    );
    Ok(())
}
