//! Backend fixtures shared by the integration tests.
//!
//! OpenCL and CUDA fixtures return `None` (and say so on stdout) when no such device is present,
//! unless `HETMEM_REQUIRE_OPENCL=1` or `HETMEM_REQUIRE_CUDA=1`, which turn absence into a test
//! failure.
#![allow(dead_code, unused_macros, unused_imports)] // each test file uses a subset

use std::io::Write;
use std::sync::Arc;

use hetmem::backend::{Backend, HostBackend};

pub mod buffers;

/// A manager over `backend` that lists its live buffers, whatever `HETMEM_TRACK` says.
pub fn manager(backend: &Arc<dyn Backend>) -> hetmem::MemoryManager {
    hetmem::MemoryManager::builder()
        .backend(backend.clone())
        .tracking(hetmem::manager::Tracking::Outstanding)
        .build()
        .unwrap()
}

/// Every byte of `block`, read on the backend's default queue.
pub fn block_contents(b: &Arc<dyn Backend>, block: &hetmem::backend::DeviceBlock) -> Vec<u8> {
    let mut out = vec![0u8; block.size()];
    b.read(b.default_queue(), block, 0, &mut out).unwrap();
    out
}

/// A fresh host backend.
pub fn host() -> Option<Arc<dyn Backend>> {
    Some(Arc::new(HostBackend::new()))
}

/// Whether the environment demands a working OpenCL platform.
pub fn opencl_required() -> bool {
    std::env::var("HETMEM_REQUIRE_OPENCL").is_ok_and(|v| v == "1")
}

/// Says on the real stdout (past the test harness's capture) that a test was skipped.
pub fn skip(label: &str, reason: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    let _ = writeln!(std::io::stdout(), "SKIPPED {test} on {label}: {reason}");
}

/// The `index`-th OpenCL device, or `None` with a note when this machine has none.
#[cfg(feature = "opencl")]
pub fn opencl(index: usize) -> Option<Arc<dyn Backend>> {
    match hetmem::backend::OpenClBackend::all() {
        Ok(mut all) if index < all.len() => Some(Arc::new(all.swap_remove(index))),
        Ok(all) => {
            skip(
                &format!("opencl:{index}"),
                &format!(
                    "only {} OpenCL device(s); set POCL_DEVICES=\"pthread pthread\"",
                    all.len()
                ),
            );
            None
        }
        Err(e) => {
            assert!(
                !opencl_required(),
                "HETMEM_REQUIRE_OPENCL=1 but OpenCL is unavailable: {e}"
            );
            skip(&format!("opencl:{index}"), &e.to_string());
            None
        }
    }
}

#[cfg(not(feature = "opencl"))]
pub fn opencl(index: usize) -> Option<Arc<dyn Backend>> {
    assert!(
        !opencl_required(),
        "HETMEM_REQUIRE_OPENCL=1 but hetmem was built without the `opencl` feature"
    );
    skip(
        &format!("opencl:{index}"),
        "built without the `opencl` feature",
    );
    None
}

/// Whether the environment demands a working CUDA device (set it on GPU machines).
pub fn cuda_required() -> bool {
    std::env::var("HETMEM_REQUIRE_CUDA").is_ok_and(|v| v == "1")
}

/// The `index`-th CUDA device, or `None` with a note when this machine has none.
#[cfg(feature = "cuda")]
pub fn cuda(index: usize) -> Option<Arc<dyn Backend>> {
    match hetmem::backend::CudaBackend::all() {
        Ok(mut all) if index < all.len() => Some(Arc::new(all.swap_remove(index))),
        Ok(all) => {
            skip(
                &format!("cuda:{index}"),
                &format!("only {} CUDA device(s)", all.len()),
            );
            None
        }
        Err(e) => {
            assert!(
                !cuda_required(),
                "HETMEM_REQUIRE_CUDA=1 but CUDA is unavailable: {e}"
            );
            skip(&format!("cuda:{index}"), &e.to_string());
            None
        }
    }
}

#[cfg(not(feature = "cuda"))]
pub fn cuda(index: usize) -> Option<Arc<dyn Backend>> {
    assert!(
        !cuda_required(),
        "HETMEM_REQUIRE_CUDA=1 but hetmem was built without the `cuda` feature"
    );
    skip(&format!("cuda:{index}"), "built without the `cuda` feature");
    None
}

/// Whether the environment demands a working wgpu adapter (CI sets it after installing
/// Vulkan's CPU driver).
pub fn wgpu_required() -> bool {
    std::env::var("HETMEM_REQUIRE_WGPU").is_ok_and(|v| v == "1")
}

/// The first wgpu adapter's device, or `None` with a note when this machine has none.
#[cfg(feature = "wgpu")]
pub fn wgpu() -> Option<Arc<dyn Backend>> {
    match hetmem::backend::WgpuBackend::all() {
        Ok(mut all) => Some(Arc::new(all.swap_remove(0))),
        Err(e) => {
            assert!(
                !wgpu_required(),
                "HETMEM_REQUIRE_WGPU=1 but wgpu is unavailable: {e}"
            );
            skip("wgpu:0", &e.to_string());
            None
        }
    }
}

#[cfg(not(feature = "wgpu"))]
pub fn wgpu() -> Option<Arc<dyn Backend>> {
    assert!(
        !wgpu_required(),
        "HETMEM_REQUIRE_WGPU=1 but hetmem was built without the `wgpu` feature"
    );
    skip("wgpu:0", "built without the `wgpu` feature");
    None
}

/// Deterministic, position-dependent test bytes (never all equal, so offsets errors show).
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8 ^ seed)
        .collect()
}

/// Instantiates generic backend tests once per backend, as `#[test]`s named `backend::test`:
/// `backend_suite!([host => common::host(), …], [test_a, test_b]);` with each test a function
/// `fn(&Arc<dyn Backend>)` at the invoking file's top level. Absent backends skip.
macro_rules! backend_suite {
    ([$($backend:ident => $make:expr),* $(,)?], $tests:tt) => {$(
        mod $backend {
            crate::common::backend_suite!(@tests $make, $tests);
        }
    )*};
    (@tests $make:expr, [$($test:ident),* $(,)?]) => {$(
        #[test]
        fn $test() {
            if let Some(backend) = $make {
                super::$test(&backend);
            }
        }
    )*};
}
pub(crate) use backend_suite;

/// A user event that holds a queue closed until a thread of its own opens it, `after` from
/// now: work enqueued on the queue meanwhile waits behind it, as a kernel still running would
/// hold it (on every backend: host queues hold their work behind it too).
pub struct Gate {
    opened: Arc<std::sync::atomic::AtomicBool>,
    opener: Option<std::thread::JoinHandle<()>>,
}

impl Gate {
    /// Closes `queue` of `backend` until `after` from now.
    pub fn close(
        backend: &Arc<dyn Backend>,
        queue: &hetmem::backend::Queue,
        after: std::time::Duration,
    ) -> Self {
        let event = backend.create_user_event().unwrap();
        let wait_on = event.event().clone();
        let opened = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = opened.clone();
        let opener = std::thread::spawn(move || {
            std::thread::sleep(after);
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            event.complete().unwrap();
        });
        backend.enqueue_wait(queue, &wait_on).unwrap();
        Gate {
            opened,
            opener: Some(opener),
        }
    }

    /// Whether the gate has opened.
    pub fn is_open(&self) -> bool {
        self.opened.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Runs `op` on another thread, as a second user thread would, and checks that it finished
    /// only after the gate opened: it waited for the work behind the gate.
    pub fn after<R: Send>(&self, op: impl FnOnce() -> R + Send) -> R {
        std::thread::scope(|s| {
            let (r, open) = s
                .spawn(|| {
                    let r = op();
                    (r, self.is_open())
                })
                .join()
                .unwrap();
            assert!(open, "the operation finished before the gate opened");
            r
        })
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(opener) = self.opener.take() {
            let _ = opener.join();
        }
    }
}

/// `len` bytes (a multiple of 8) whose every 8-byte word differs from its neighbours: quick to
/// make at 64 MiB even in a debug build.
pub fn words(len: usize, seed: u64) -> Vec<u8> {
    let mut w = vec![0u64; len / 8];
    for (i, x) in w.iter_mut().enumerate() {
        *x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
    }
    bytemuck::cast_slice(&w).to_vec()
}

/// The device copy's contents, read through the backend itself (not through the buffer), as a
/// user's kernel would see them.
pub fn device_contents(b: &Arc<dyn Backend>, buf: &hetmem::UnifiedBuffer<u32>) -> Vec<u32> {
    let d = buf.device().unwrap();
    let mut out = vec![0u32; buf.len()];
    b.read(
        d.queue(),
        d.block(),
        d.offset(),
        bytemuck::cast_slice_mut(&mut out),
    )
    .unwrap();
    out
}
