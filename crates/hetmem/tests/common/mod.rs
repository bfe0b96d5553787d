//! Backend fixtures shared by the integration tests.
//!
//! OpenCL and CUDA fixtures return `None` (and say so on stdout) when no such device is present,
//! unless `HETMEM_REQUIRE_OPENCL=1` or `HETMEM_REQUIRE_CUDA=1`, which turn absence into a test
//! failure.
#![allow(dead_code, unused_macros, unused_imports)] // each test file uses a subset

use std::io::Write;
use std::sync::Arc;

use hetmem::{Backend, HostBackend};

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
    match hetmem::OpenClBackend::all() {
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
    match hetmem::CudaBackend::all() {
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
