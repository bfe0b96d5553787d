//! Discovering the backends this machine has.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::{Backend, BackendKind, HostBackend};
use crate::error::{Error, Result};

/// What probing one kind of backend found: its devices, or why there are none.
#[derive(Debug)]
pub struct BackendProbe {
    /// The kind probed.
    pub kind: BackendKind,
    /// One backend per device, or the reason the kind is unavailable.
    pub outcome: Result<Vec<Arc<dyn Backend>>>,
}

/// Probes every backend kind hetmem knows: host, OpenCL, CUDA, wgpu. A kind that is not compiled in or
/// not present on the machine is reported with the reason, never a panic.
pub fn probe() -> Vec<BackendProbe> {
    [
        BackendKind::Host,
        BackendKind::OpenCl,
        BackendKind::Cuda,
        BackendKind::Wgpu,
    ]
    .into_iter()
    .map(|kind| BackendProbe {
        kind,
        outcome: devices(kind),
    })
    .collect()
}

/// One backend per device of `kind`, or why there are none.
pub(crate) fn devices(kind: BackendKind) -> Result<Vec<Arc<dyn Backend>>> {
    match kind {
        BackendKind::Host => Ok(vec![Arc::new(HostBackend::new()) as Arc<dyn Backend>]),
        BackendKind::OpenCl => opencl(),
        BackendKind::Cuda => cuda(),
        BackendKind::Wgpu => wgpu(),
    }
}

/// A device by name, as the command line and `DeviceInfo::label` write it: `host`, `opencl`,
/// `opencl:1`, `cuda:0` (the index defaults to 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceName {
    /// The family.
    pub kind: BackendKind,
    /// The device's index among its family's.
    pub index: usize,
}

impl DeviceName {
    /// The backend of this device: [`Error::BackendUnavailable`](crate::Error) where the kind is
    /// not built in, not present, or has no device of this index.
    pub fn open(&self) -> Result<Arc<dyn Backend>> {
        let devices = devices(self.kind)?;
        let count = devices.len();
        (devices.into_iter().nth(self.index)).ok_or_else(|| Error::BackendUnavailable {
            backend: self.kind,
            reason: format!("{count} device(s), no index {}", self.index),
        })
    }
}

impl FromStr for DeviceName {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        let (kind, index) = match name.split_once(':') {
            Some((kind, index)) => {
                let index = index.parse().map_err(|_| {
                    Error::invalid(format!("bad device index in {name:?}: expected kind:N"))
                })?;
                (kind, index)
            }
            None => (name, 0),
        };
        let kind = match kind.to_ascii_lowercase().as_str() {
            "host" => BackendKind::Host,
            "opencl" => BackendKind::OpenCl,
            "cuda" => BackendKind::Cuda,
            "wgpu" => BackendKind::Wgpu,
            other => {
                return Err(Error::invalid(format!(
                    "unknown backend {other:?}: expected host, opencl[:N], cuda[:N] or wgpu[:N]"
                )))
            }
        };
        Ok(DeviceName { kind, index })
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.index)
    }
}

/// Every backend available on this machine: the host backend first, then one per OpenCL, CUDA
/// and wgpu device. Each call creates fresh backends (and driver contexts).
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

#[cfg(feature = "wgpu")]
fn wgpu() -> Result<Vec<Arc<dyn Backend>>> {
    Ok(super::WgpuBackend::all()?
        .into_iter()
        .map(|b| Arc::new(b) as Arc<dyn Backend>)
        .collect())
}

#[cfg(not(feature = "wgpu"))]
fn wgpu() -> Result<Vec<Arc<dyn Backend>>> {
    Err(not_compiled(BackendKind::Wgpu, "wgpu"))
}

#[cfg(any(not(feature = "opencl"), not(feature = "cuda"), not(feature = "wgpu")))]
fn not_compiled(backend: BackendKind, feature: &str) -> crate::error::Error {
    crate::error::Error::BackendUnavailable {
        backend,
        reason: format!("hetmem was built without the `{feature}` feature"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_as_labels_print_and_refuse_the_rest() {
        let name: DeviceName = "OpenCL:1".parse().unwrap();
        assert_eq!((name.kind, name.index), (BackendKind::OpenCl, 1));
        assert_eq!(name.to_string(), "opencl:1");
        assert_eq!("cuda".parse::<DeviceName>().unwrap().to_string(), "cuda:0");
        let host = "host".parse::<DeviceName>().unwrap();
        assert_eq!(host.open().unwrap().info().label(), "host:0");
        for bad in ["metal", "opencl:x", "host:-1", ""] {
            assert!(
                matches!(bad.parse::<DeviceName>(), Err(Error::InvalidArgument(_))),
                "{bad}"
            );
        }
        let missing = DeviceName {
            kind: BackendKind::Host,
            index: 3,
        };
        assert!(matches!(
            missing.open(),
            Err(Error::BackendUnavailable { .. })
        ));
    }
}
