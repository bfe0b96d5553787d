//! Statistics and diagnostics: labels, scopes, the summary table, leak reports and advice.
//! CI runs it.

use hetmem::manager::{AllocOptions, MemoryManager, Placement};
use hetmem::Result;

fn main() -> Result<()> {
    let manager = MemoryManager::builder().limit(256 << 20).build()?;

    let weights = manager.alloc_with::<f32>(1 << 20, AllocOptions::new().label("weights"))?;
    let phase = manager.stats_scope();
    for _ in 0..8 {
        let _activations =
            manager.alloc_with::<f32>(1 << 18, AllocOptions::new().label("activations"))?;
    }
    let d = phase.delta();
    println!(
        "phase: {} allocations, peak +{} bytes, {} pool hits / {} misses",
        d.allocations, d.peak_increase, d.pool_hits, d.pool_misses
    );
    drop(phase);

    let _forgotten = manager.alloc_with::<u8>(4096, AllocOptions::new().label("forgotten"));
    println!("{}", manager.summary());
    for live in manager.outstanding() {
        println!("live: {live}");
    }
    let placement = manager.decide(&AllocOptions::new().placement(Placement::Device), 1 << 20)?;
    println!("Placement::Device here resolves to {placement:?}");
    drop(weights);
    Ok(())
}
