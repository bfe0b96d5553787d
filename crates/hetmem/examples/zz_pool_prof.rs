use hetmem::backend::HostBackend;
use hetmem::pool::CachingAllocator;
use std::sync::Arc;
fn main() -> hetmem::Result<()> {
    let backend: Arc<dyn hetmem::backend::Backend> = Arc::new(HostBackend::new());
    let pool = CachingAllocator::new(backend.clone());
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(10_000_000);
    drop(pool.allocate(1 << 20)?);
    let t = std::time::Instant::now();
    for _ in 0..n {
        drop(std::hint::black_box(pool.allocate(1 << 20)?));
    }
    println!(
        "pool hit: {:.1} ns",
        t.elapsed().as_nanos() as f64 / n as f64
    );
    Ok(())
}
