//! Quick start: one manager, buffers that read as zeros, data in and out, and what it cost.
//! The README's tour; CI runs it.

use hetmem::manager::{AccessPattern, AllocOptions, MemoryManager};
use hetmem::Result;

fn main() -> Result<()> {
    // Host memory: works everywhere, no setup. `MemoryManager::new(backend)` for a device.
    let manager = MemoryManager::host();

    // A buffer of 1M f32 that reads as zeros; memory comes from the manager's pools.
    let mut signal = manager.alloc::<f32>(1 << 20)?;
    signal
        .host_mut()?
        .iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x = i as f32);

    // From existing data, with a label for statistics and an access hint for placement.
    let taps = manager.from_slice_with(
        &[0.25f32, 0.5, 0.25],
        AllocOptions::new()
            .label("taps")
            .access(AccessPattern::ReadMostly),
    )?;

    let taps = taps.host()?;
    let filtered: Vec<f32> = signal
        .host()?
        .windows(3)
        .map(|w| w.iter().zip(taps.iter()).map(|(a, b)| a * b).sum())
        .collect();
    assert_eq!(filtered[10], 11.0);

    let stats = manager.stats();
    println!(
        "{} buffers, {} bytes live (peak {}), pool hit rate {:.0}%",
        stats.live_buffers(),
        stats.bytes_current,
        stats.bytes_peak,
        100.0 * stats.hit_rate()
    );
    Ok(())
}
