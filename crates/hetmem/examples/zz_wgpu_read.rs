use hetmem::backend::{Backend, WgpuBackend};
use hetmem::transfer::{Strategy, TransferConfig, TransferEngine};
use std::sync::Arc;
use std::time::Instant;
fn main() {
    let b: Arc<dyn Backend> = Arc::new(WgpuBackend::all().unwrap().swap_remove(0));
    for len in [4usize << 10, 64 << 10, 1 << 20, 16 << 20, 256 << 20] {
        let mut block = b.allocate(len).unwrap();
        let auto = TransferEngine::new(b.clone());
        let mapped = TransferEngine::with_config(
            b.clone(),
            TransferConfig {
                strategy: Strategy::Mapped,
                direct_max: 0,
                ..Default::default()
            },
        )
        .unwrap();
        auto.write(&mut block, 0, &vec![5u8; len]).unwrap();
        let mut out = vec![0u8; len];
        let iters = (64 << 20) / len + 3;
        let mut t = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..7 {
            for (k, e) in [&auto, &mapped].iter().enumerate() {
                let s = Instant::now();
                for _ in 0..iters {
                    e.read(&block, 0, &mut out).unwrap();
                }
                t[k].push(s.elapsed().as_secs_f64() / iters as f64);
                let data = vec![k as u8; len];
                let s = Instant::now();
                for _ in 0..iters {
                    e.write(&mut block, 0, &data).unwrap();
                    b.enqueue_marker(b.default_queue()).unwrap().wait().unwrap();
                }
                t[k + 2].push(s.elapsed().as_secs_f64() / iters as f64);
            }
        }
        let m: Vec<f64> = t
            .iter_mut()
            .map(|v| {
                v.sort_by(f64::total_cmp);
                v[3]
            })
            .collect();
        println!("{:>10} read auto {:8.1} us mapped {:8.1} us ({:.2}x) | write auto {:8.1} mapped {:8.1} ({:.2}x)", len, m[0]*1e6, m[1]*1e6, m[0]/m[1], m[2]*1e6, m[3]*1e6, m[2]/m[3]);
        b.release(block).unwrap();
    }
}
