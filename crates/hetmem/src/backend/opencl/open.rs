//! Opening OpenCL devices: every platform's devices, each with its own context, queues and
//! capabilities.

use std::sync::{Arc, Mutex};

use opencl3::context::Context;
use opencl3::device::{Device, CL_DEVICE_SVM_FINE_GRAIN_BUFFER, CL_DEVICE_TYPE_ALL};
use opencl3::error_codes::CL_DEVICE_NOT_FOUND;
use opencl3::platform::{get_platforms, Platform};

use super::errors::{cl_error, unavailable};
use super::mapping::Mapped;
use super::{OpenClBackend, CL_PLATFORM_NOT_FOUND_KHR};
use crate::backend::raw::RawBackend;
use crate::backend::{BackendId, BackendKind, Capabilities, DeviceInfo, Queue, UsageCounters};
use crate::error::Result;
use crate::sync::Unpoison;

impl OpenClBackend {
    /// One backend per device of every OpenCL platform, numbered in platform order.
    pub fn all() -> Result<Vec<OpenClBackend>> {
        // Some ICDs (PoCL among them) initialise lazily and can report no device to a second
        // thread that enumerates while the first is still initialising: enumerate one at a time.
        static ENUMERATION: Mutex<()> = Mutex::new(());
        let _one_at_a_time = ENUMERATION.lock().unpoisoned();
        if !cl3::is_opencl_runtime_available() {
            return Err(unavailable(
                "no OpenCL ICD loader (libOpenCL.so.1) could be loaded; install one with an ICD \
                 such as PoCL (Debian: ocl-icd-libopencl1 pocl-opencl-icd) or a GPU driver",
            ));
        }
        let platforms = get_platforms().map_err(|e| match e.0 {
            CL_PLATFORM_NOT_FOUND_KHR => unavailable(
                "the OpenCL loader found no platform; install an ICD such as pocl-opencl-icd",
            ),
            code => cl_error("clGetPlatformIDs", code),
        })?;
        let mut backends = Vec::new();
        for platform in &platforms {
            let ids = match platform.get_devices(CL_DEVICE_TYPE_ALL) {
                Ok(ids) => ids,
                Err(e) if e.0 == CL_DEVICE_NOT_FOUND => continue,
                Err(e) => return Err(cl_error("clGetDeviceIDs", e.0)),
            };
            for id in ids {
                backends.push(OpenClBackend::new(
                    backends.len(),
                    platform,
                    Device::new(id),
                )?);
            }
        }
        if backends.is_empty() {
            return Err(unavailable(
                "OpenCL platforms are installed but expose no device",
            ));
        }
        Ok(backends)
    }

    /// The backend for the `index`-th OpenCL device (`opencl:index`).
    pub fn with_index(index: usize) -> Result<OpenClBackend> {
        let mut all = OpenClBackend::all()?;
        let count = all.len();
        if index >= count {
            return Err(unavailable(&format!(
                "OpenCL device {index} requested, but this machine has {count}"
            )));
        }
        Ok(all.swap_remove(index))
    }

    fn new(index: usize, platform: &Platform, device: Device) -> Result<Self> {
        let context =
            Context::from_device(&device).map_err(|e| cl_error("clCreateContext", e.0))?;
        let id = BackendId::unique();
        let info = DeviceInfo {
            kind: BackendKind::OpenCl,
            index,
            name: device.name().unwrap_or_default(),
            vendor: device.vendor().unwrap_or_default(),
            driver: format!(
                "{} {}",
                platform.name().unwrap_or_default(),
                device.driver_version().unwrap_or_default()
            ),
            total_memory: device
                .global_mem_size()
                .map_err(|e| cl_error("clGetDeviceInfo", e.0))?,
            free_memory: None,
            max_allocation: device
                .max_mem_alloc_size()
                .map_err(|e| cl_error("clGetDeviceInfo", e.0))?,
            // CL_DEVICE_MEM_BASE_ADDR_ALIGN is in bits.
            alignment: (device.mem_base_addr_align().unwrap_or(8) as usize / 8).max(1),
        };
        let capabilities = Capabilities {
            unified_memory: device.host_unified_memory().unwrap_or(false),
            peer_domain: None,
            async_copies: true,
            concurrent_queues: true,
            pinned_staging: true,
            // A cl_mem is reachable from the host only while mapped.
            host_addressable: false,
            mapped_access: true,
            mapped_reads: false,
            // Fine-grained buffer SVM: host and device share the pointer, no map needed.
            shared_allocations: device.svm_mem_capability() & CL_DEVICE_SVM_FINE_GRAIN_BUFFER != 0,
        };
        let mut backend = OpenClBackend {
            id,
            device,
            context,
            queue: Queue::new(id, Arc::new(())),
            queues: Mutex::new(Vec::new()),
            mapped: Mapped::default(),
            unfinished: Arc::default(),
            info,
            capabilities,
            usage: UsageCounters::default(),
        };
        backend.queue = RawBackend::create_queue(&backend)?;
        Ok(backend)
    }
}
