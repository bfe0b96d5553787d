//! `hetmem-mimalloc LEN SAMPLES`: the array pool's second baseline, what a user reaches for
//! instead of a pool — `Vec::with_capacity` and touching every page, under mimalloc. A process
//! of its own, because a global allocator is the whole program's (`hetmem bench` runs on the
//! system's, as a user of hetmem would). Prints one line per sample: seconds per array of
//! `LEN` `f32`s; each sample lasts about 10 ms.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map_while(|a| a.parse().ok())
        .collect();
    let &[len, samples] = &args[..] else {
        eprintln!("usage: hetmem-mimalloc LEN SAMPLES");
        return ExitCode::FAILURE;
    };
    let array = || {
        let mut v: Vec<f32> = Vec::with_capacity(len);
        v.resize(len, 0.0);
        black_box(&mut v);
    };
    array();
    let start = Instant::now();
    array();
    let each = start.elapsed().as_secs_f64().max(1e-9);
    let iters = ((Duration::from_millis(10).as_secs_f64() / each) as usize).clamp(1, 1_000_000);
    for _ in 0..samples {
        let start = Instant::now();
        for _ in 0..iters {
            array();
        }
        println!("{:e}", start.elapsed().as_secs_f64() / iters as f64);
    }
    ExitCode::SUCCESS
}
