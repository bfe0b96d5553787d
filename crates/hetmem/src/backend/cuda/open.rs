//! Opening CUDA devices: the driver's device list, each device's primary context, streams and
//! capabilities.

use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::sys::{self, CUdevice_attribute};
use cudarc::driver::{result, CudaContext};

use super::adopt::Adopted;
use super::driver::{self, check_driver, unavailable, DriverResult, Status};
use super::event::Notifier;
use super::managed::managed_memory;
use super::{guarded, CudaBackend, ALIGNMENT};
use crate::backend::{
    BackendId, BackendKind, Capabilities, DeviceInfo, PeerDomain, Queue, UsageCounters,
};
use crate::error::Result;

impl CudaBackend {
    /// One backend per CUDA device, in the driver's order.
    pub fn all() -> Result<Vec<CudaBackend>> {
        guarded(|| {
            check_driver()?;
            match result::init() {
                Ok(()) => {}
                Err(e) if e.0 == sys::CUresult::CUDA_ERROR_NO_DEVICE => {
                    return Err(unavailable(
                        "the NVIDIA driver is installed but sees no GPU",
                    ))
                }
                Err(e) => {
                    return Err(unavailable(&format!(
                        "the CUDA driver failed to initialise: {}",
                        driver::cu_error("cuInit", e)
                    )))
                }
            }
            let count = result::device::get_count().cu("cuDeviceGetCount")?;
            if count <= 0 {
                return Err(unavailable(
                    "the NVIDIA driver is installed but sees no GPU",
                ));
            }
            (0..count as usize).map(CudaBackend::new).collect()
        })
    }

    /// The backend for the `index`-th CUDA device (`cuda:index`).
    pub fn with_index(index: usize) -> Result<CudaBackend> {
        let mut all = CudaBackend::all()?;
        let count = all.len();
        if index >= count {
            return Err(unavailable(&format!(
                "CUDA device {index} requested, but this machine has {count}"
            )));
        }
        Ok(all.swap_remove(index))
    }

    fn new(ordinal: usize) -> Result<Self> {
        let ctx = CudaContext::new(ordinal).cu("cuDevicePrimaryCtxRetain")?;
        let (major, minor) = ctx.compute_capability().cu("cuDeviceGetAttribute")?;
        let total = ctx.total_mem().cu("cuDeviceTotalMem")? as u64;
        let mut version = 0;
        // SAFETY: writes one int.
        unsafe { sys::cuDriverGetVersion(&mut version) }.cu("cuDriverGetVersion")?;
        let pools = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED)
            .cu("cuDeviceGetAttribute")?
            > 0;
        let async_allocation =
            pools && driver::missing_symbol(driver::ASYNC_ALLOCATION_SYMBOLS).is_none();
        let info = DeviceInfo {
            kind: BackendKind::Cuda,
            index: ordinal,
            name: ctx.name().cu("cuDeviceGetName")?,
            vendor: "NVIDIA".to_owned(),
            driver: format!(
                "CUDA driver {}.{}, compute capability {major}.{minor}",
                version / 1000,
                version % 1000 / 10
            ),
            total_memory: total,
            free_memory: None,
            max_allocation: total,
            alignment: ALIGNMENT,
        };
        let capabilities = Capabilities {
            // Even on integrated GPUs, cuMemAlloc memory is not host-addressable.
            unified_memory: false,
            // `cuMemcpyPeerAsync` copies between any two contexts: directly where the devices
            // have peer access, staged by the driver where they do not.
            peer_domain: Some(cuda_peers()),
            async_copies: true,
            concurrent_queues: true,
            pinned_staging: true,
            host_addressable: false,
            mapped_access: false,
            mapped_reads: false,
            shared_allocations: managed_memory(&ctx)?,
        };
        let commit_granularity = super::reserve::commit_granularity(&ctx)?;
        let default_stream = ctx.new_stream().cu("cuStreamCreate")?;
        let id = BackendId::unique();
        Ok(CudaBackend {
            id,
            queue: Queue::new(id, Arc::new(default_stream.clone())),
            streams: Mutex::new(vec![default_stream.clone()]),
            default_stream,
            notifier: Arc::new(Notifier::new(&ctx)?),
            ctx,
            async_allocation,
            info,
            capabilities,
            usage: UsageCounters::default(),
            adopted: Adopted::default(),
            commit_granularity,
            reservations: super::reserve::Reservations::default(),
        })
    }
}

/// The one peer domain of every CUDA device in the process.
fn cuda_peers() -> PeerDomain {
    static DOMAIN: OnceLock<PeerDomain> = OnceLock::new();
    *DOMAIN.get_or_init(PeerDomain::unique)
}
