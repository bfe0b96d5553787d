//! Finding adapters and opening their devices, and what hetmem reads of them once.

use std::sync::{Arc, Mutex};

use super::device::{GpuDevice, Uncaptured};
use super::poller::Poller;
use super::readback::ReadbackBelt;
use super::WgpuBackend;
use crate::backend::holding::{Held, HoldingQueue};
use crate::backend::{BackendId, BackendKind, Capabilities, DeviceInfo, Queue, UsageCounters};
use crate::error::{Error, Result};
use crate::sync::Unpoison;

/// The native APIs wgpu reaches: Vulkan, Metal, DX12 (not OpenGL, whose buffers wgpu emulates).
const NATIVE: wgpu::Backends = wgpu::Backends::PRIMARY;

impl WgpuBackend {
    /// One backend per adapter wgpu finds on Vulkan, Metal or DX12, in wgpu's order;
    /// [`Error::BackendUnavailable`] with the reason when there is none.
    pub fn all() -> Result<Vec<WgpuBackend>> {
        let instance = wgpu::Instance::new(&wgpu::InstanceDescriptor {
            backends: NATIVE,
            ..Default::default()
        });
        let adapters = instance.enumerate_adapters(NATIVE);
        if adapters.is_empty() {
            return Err(unavailable(
                "no Vulkan, Metal or DX12 adapter (on Linux without a GPU: apt-get install \
                 mesa-vulkan-drivers libvulkan1 gives Vulkan's CPU driver, llvmpipe)"
                    .into(),
            ));
        }
        (adapters.into_iter().enumerate())
            .map(|(index, adapter)| Self::open(&adapter, index))
            .collect()
    }

    /// The device of `adapter` (its own limits, not WebGPU's defaults), as hetmem's `index`-th
    /// wgpu device.
    pub fn open(adapter: &wgpu::Adapter, index: usize) -> Result<WgpuBackend> {
        let limits = adapter.limits();
        let info = adapter.get_info();
        let unified = matches!(
            info.device_type,
            wgpu::DeviceType::Cpu | wgpu::DeviceType::IntegratedGpu
        );
        // Mappable storage buffers cost a discrete GPU its device-local memory; where the
        // adapter's memory is the host's they are free, and host access needs no copy.
        let mappable =
            unified && (adapter.features()).contains(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("hetmem"),
            required_features: match mappable {
                true => wgpu::Features::MAPPABLE_PRIMARY_BUFFERS,
                false => wgpu::Features::empty(),
            },
            required_limits: limits.clone(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| unavailable(format!("requesting the device: {e}")))?;
        let uncaptured = Arc::new(Mutex::new(Uncaptured::default()));
        let noted = Arc::clone(&uncaptured);
        device.on_uncaptured_error(Box::new(move |error| {
            noted.lock().unpoisoned().note(&error);
        }));
        let id = BackendId::unique();
        let poller = Poller::start(device.clone(), id)
            .map_err(|e| unavailable(format!("starting the polling thread: {e}")))?;
        let held = Arc::new(Held::default());
        Ok(WgpuBackend {
            id,
            index,
            queue: Queue::new(id, Arc::new(HoldingQueue::new(held.clone()))),
            held,
            usage: UsageCounters::default(),
            // Blocks are made a multiple of wgpu's copy alignment long.
            max_allocation: limits.max_buffer_size & !(super::device::ALIGN as u64 - 1),
            alignment: limits.min_storage_buffer_offset_alignment as usize,
            unified,
            mappable,
            info,
            limits,
            gpu: Arc::new(GpuDevice {
                device,
                queue,
                poller,
                readback: ReadbackBelt::default(),
                uncaptured,
                unsubmitted: Default::default(),
                mapped: Default::default(),
            }),
        })
    }

    /// What wgpu says of the adapter (name, vendor, driver, device type, API).
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The device's limits (the adapter's own, requested in full).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// wgpu's messages for the errors it reported outside any error scope so far (the first
    /// 64); each such error also fails the next blocking call with its kind.
    pub fn error_messages(&self) -> Vec<String> {
        self.gpu.uncaptured.lock().unpoisoned().messages.clone()
    }

    pub(super) fn device_info(&self) -> DeviceInfo {
        // wgpu does not say how much memory a device has: a CPU or integrated adapter shares
        // the host's; a discrete one is known to hold at least its largest buffer.
        let total_memory = if self.unified {
            crate::backend::host::host_memory().total
        } else {
            self.max_allocation
        };
        DeviceInfo {
            kind: BackendKind::Wgpu,
            index: self.index,
            name: self.info.name.clone(),
            vendor: format!("{:?} {:#06x}", self.info.backend, self.info.vendor),
            driver: format!("{} {}", self.info.driver, self.info.driver_info)
                .trim()
                .to_owned(),
            total_memory,
            free_memory: None,
            max_allocation: self.max_allocation,
            alignment: self.alignment,
        }
    }

    pub(super) fn device_capabilities(&self) -> Capabilities {
        Capabilities {
            unified_memory: self.unified,
            peer_domain: None,
            async_copies: true,
            concurrent_queues: false,
            pinned_staging: false,
            // Storage buffers are reached through copies, or mapped where they are mappable.
            host_addressable: false,
            mapped_access: self.mappable,
            // A direct read copies into a read-back buffer first.
            mapped_reads: self.mappable,
            shared_allocations: false,
        }
    }
}

fn unavailable(reason: String) -> Error {
    Error::BackendUnavailable {
        backend: BackendKind::Wgpu,
        reason,
    }
}
