//! Backends shared by the benchmarks.

use std::sync::Arc;

use hetmem::backend::{Backend, HostBackend};

/// The host backend and, with the `opencl` feature and a device present, the first OpenCL
/// device, each with a short name for benchmark ids.
pub fn backends() -> Vec<(String, Arc<dyn Backend>)> {
    let mut all: Vec<(String, Arc<dyn Backend>)> =
        vec![("host".into(), Arc::new(HostBackend::new()))];
    #[cfg(feature = "opencl")]
    if let Ok(mut cl) = hetmem::backend::OpenClBackend::all() {
        all.push(("opencl0".into(), Arc::new(cl.swap_remove(0))));
    }
    all
}
