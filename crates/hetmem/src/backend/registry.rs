//! Discovering the backends this machine has.

use std::sync::Arc;

use super::{Backend, BackendKind, HostBackend};
use crate::error::Result;

/// What probing one kind of backend found: its devices, or why there are none.
#[derive(Debug)]
pub struct BackendProbe {
    /// The kind probed.
    pub kind: BackendKind,
    /// One backend per device, or the reason the kind is unavailable.
    pub outcome: Result<Vec<Arc<dyn Backend>>>,
}

/// Probes every backend kind hetmem knows: host, OpenCL, CUDA. A kind that is not compiled in or
/// not present on the machine is reported with the reason, never a panic.
pub fn probe() -> Vec<BackendProbe> {
    vec![
        BackendProbe {
            kind: BackendKind::Host,
            outcome: Ok(vec![Arc::new(HostBackend::new()) as Arc<dyn Backend>]),
        },
        BackendProbe {
            kind: BackendKind::OpenCl,
            outcome: opencl(),
        },
        BackendProbe {
            kind: BackendKind::Cuda,
            outcome: cuda(),
        },
    ]
}

/// Every backend available on this machine: the host backend first, then one per OpenCL and
/// CUDA device. Each call creates fresh backends (and driver contexts).
pub fn backends() -> Vec<Arc<dyn Backend>> {
    probe()
        .into_iter()
        .filter_map(|p| p.outcome.ok())
        .flatten()
        .collect()
}

#[cfg(feature = "opencl")]
fn opencl() -> Result<Vec<Arc<dyn Backend>>> {
    Ok(super::OpenClBackend::all()?
        .into_iter()
        .map(|b| Arc::new(b) as Arc<dyn Backend>)
        .collect())
}

#[cfg(not(feature = "opencl"))]
fn opencl() -> Result<Vec<Arc<dyn Backend>>> {
    Err(not_compiled(BackendKind::OpenCl, "opencl"))
}

#[cfg(feature = "cuda")]
fn cuda() -> Result<Vec<Arc<dyn Backend>>> {
    Ok(super::CudaBackend::all()?
        .into_iter()
        .map(|b| Arc::new(b) as Arc<dyn Backend>)
        .collect())
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<Vec<Arc<dyn Backend>>> {
    Err(not_compiled(BackendKind::Cuda, "cuda"))
}

#[cfg(any(not(feature = "opencl"), not(feature = "cuda")))]
fn not_compiled(backend: BackendKind, feature: &str) -> crate::error::Error {
    crate::error::Error::BackendUnavailable {
        backend,
        reason: format!("hetmem was built without the `{feature}` feature"),
    }
}
