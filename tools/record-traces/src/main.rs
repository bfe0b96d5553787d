//! Records the allocation traces of real tensor workloads — candle's CPU backend running a
//! training loop, a decoding loop whose key/value cache grows a token at a time, and batched
//! inference at varying batch sizes — through a recording global allocator, and writes them as
//! hetmem traces (JSON lines) into `data/traces/`.
//!
//! Run from the repository root: `cargo run --release --manifest-path
//! tools/record-traces/Cargo.toml`. Only allocations of at least `MIN_BYTES` are recorded:
//! tensor storage, what a device allocator would serve; the small bookkeeping allocations of
//! the Rust program around it are left out.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var, D};

/// Allocations smaller than this are not recorded.
const MIN_BYTES: usize = 4096;
/// Most events per recording (each three words, in static memory: recording never allocates).
const CAPACITY: usize = 1 << 21;

struct Recording;

static ON: AtomicBool = AtomicBool::new(false);
static NEXT: AtomicUsize = AtomicUsize::new(0);
/// Per event: size with the top bit set for a free; the address; nanoseconds since the start.
static EVENTS: [[AtomicU64; 3]; CAPACITY] = [const { [const { AtomicU64::new(0) }; 3] }; CAPACITY];
static START: AtomicU64 = AtomicU64::new(0);

const FREE: u64 = 1 << 63;

fn now_ns() -> u64 {
    // A monotonic clock read without allocating.
    let mut ts = std::mem::MaybeUninit::<[i64; 2]>::uninit();
    // SAFETY: clock_gettime writes a timespec (two longs on x86-64 Linux) into `ts`.
    unsafe {
        extern "C" {
            fn clock_gettime(clock: i32, ts: *mut [i64; 2]) -> i32;
        }
        clock_gettime(1, ts.as_mut_ptr());
        let [s, ns] = ts.assume_init();
        s as u64 * 1_000_000_000 + ns as u64
    }
}

fn note(size: u64, address: usize) {
    if !ON.load(Ordering::Relaxed) {
        return;
    }
    let i = NEXT.fetch_add(1, Ordering::Relaxed);
    if i < CAPACITY {
        let e = &EVENTS[i];
        e[0].store(size, Ordering::Relaxed);
        e[1].store(address as u64, Ordering::Relaxed);
        e[2].store(now_ns() - START.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

// SAFETY: every call is passed to the system allocator unchanged; recording only writes to
// static atomics.
unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout, passed on.
        let ptr = unsafe { System.alloc(layout) };
        if layout.size() >= MIN_BYTES && !ptr.is_null() {
            note(layout.size() as u64, ptr as usize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= MIN_BYTES {
            note(layout.size() as u64 | FREE, ptr as usize);
        }
        // SAFETY: the caller's pointer and layout, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Recording = Recording;

/// Runs `workload` with recording on and writes its trace to `data/traces/NAME.jsonl`.
fn record(name: &str, workload: impl FnOnce() -> candle_core::Result<()>) {
    NEXT.store(0, Ordering::SeqCst);
    START.store(now_ns(), Ordering::SeqCst);
    ON.store(true, Ordering::SeqCst);
    let started = Instant::now();
    workload().expect("the workload runs");
    ON.store(false, Ordering::SeqCst);
    let count = NEXT.load(Ordering::SeqCst).min(CAPACITY);
    // Frees of blocks allocated before recording started are left out; ids are addresses,
    // unique among live blocks.
    let mut live = std::collections::HashSet::new();
    let path = format!("data/traces/{name}.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).expect("data/traces exists"));
    let mut written = 0;
    for e in &EVENTS[..count] {
        let (size, address, time) = (e[0].load(Ordering::Relaxed), e[1].load(Ordering::Relaxed), e[2].load(Ordering::Relaxed));
        let (action, bytes) = match size & FREE {
            0 => ("alloc", size),
            _ => ("free", size & !FREE),
        };
        let known = match action {
            "alloc" => live.insert(address),
            _ => live.remove(&address),
        };
        if !known {
            continue;
        }
        let line = serde_json::json!({
            "time_ns": time, "thread": 0, "action": action, "id": address, "bytes": bytes,
        });
        writeln!(out, "{line}").unwrap();
        written += 1;
    }
    out.flush().unwrap();
    eprintln!("{path}: {written} events in {:.1} s", started.elapsed().as_secs_f64());
}

/// Two-layer perceptron trained by gradient descent: forward, loss, backward, update.
fn mlp_training() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let w1 = Var::randn(0f32, 0.05, (784, 512), &dev)?;
    let w2 = Var::randn(0f32, 0.05, (512, 10), &dev)?;
    for step in 0..60 {
        let batch = [32usize, 64, 128][step % 3];
        let x = Tensor::randn(0f32, 1.0, (batch, 784), &dev)?;
        let y = Tensor::randn(0f32, 1.0, (batch, 10), &dev)?;
        let hidden = x.matmul(w1.as_tensor())?.relu()?;
        let out = hidden.matmul(w2.as_tensor())?;
        let loss = (out - y)?.sqr()?.mean_all()?;
        let grads = loss.backward()?;
        for w in [&w1, &w2] {
            let g = grads.get(w.as_tensor()).expect("a gradient");
            w.set(&(w.as_tensor() - (g * 0.01)?)?)?;
        }
    }
    Ok(())
}

/// Autoregressive decoding of one attention head: each step appends a token's key and value to
/// caches that grow by concatenation, and attends over the whole cache.
fn kv_cache_decoding() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let (heads, dim) = (8usize, 64usize);
    let mut keys = Tensor::zeros((heads, 0, dim), DType::F32, &dev)?;
    let mut values = Tensor::zeros((heads, 0, dim), DType::F32, &dev)?;
    for _ in 0..384 {
        let q = Tensor::randn(0f32, 1.0, (heads, 1, dim), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (heads, 1, dim), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (heads, 1, dim), &dev)?;
        keys = Tensor::cat(&[&keys, &k], 1)?;
        values = Tensor::cat(&[&values, &v], 1)?;
        let scores = (q.matmul(&keys.t()?)? / (dim as f64).sqrt())?;
        let weights = scores.exp()?;
        let weights = weights.broadcast_div(&weights.sum_keepdim(D::Minus1)?)?;
        let _out = weights.matmul(&values)?;
    }
    Ok(())
}

/// Batched inference of a three-layer network at the batch sizes requests arrive in.
fn batched_inference() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let layers = [
        Tensor::randn(0f32, 0.05, (1024, 1024), &dev)?,
        Tensor::randn(0f32, 0.05, (1024, 1024), &dev)?,
        Tensor::randn(0f32, 0.05, (1024, 256), &dev)?,
    ];
    let mut seed = 12345u64;
    for _ in 0..120 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let batch = 1 + (seed >> 33) as usize % 96;
        let mut x = Tensor::randn(0f32, 1.0, (batch, 1024), &dev)?;
        for w in &layers {
            x = x.matmul(w)?.relu()?;
        }
        let _probabilities = x.exp()?;
    }
    Ok(())
}

fn main() {
    std::fs::create_dir_all("data/traces").expect("data/traces can be made");
    record("candle-mlp-training", mlp_training);
    record("candle-kv-cache-decoding", kv_cache_decoding);
    record("candle-batched-inference", batched_inference);
}
