//! What only the wgpu backend has: users' compute shaders over guards' bindings (ordered with
//! no wait in user code), its refusals, and wgpu's own error reports. Everything else runs in
//! the shared suites, instantiated for wgpu. Without an adapter each test says SKIPPED, unless
//! `HETMEM_REQUIRE_WGPU=1`.
#![cfg(feature = "wgpu")]

mod common;

use std::sync::Arc;

use hetmem::backend::{Backend, WgpuBackend};
use hetmem::manager::{AllocOptions, MemoryManager, Placement};
use hetmem::{Error, UnifiedBuffer};

/// Adds `add` to every element the binding covers.
const ADD: &str = "
struct Add { value: u32 }
@group(0) @binding(0) var<storage, read_write> data: array<u32>;
@group(0) @binding(1) var<uniform> add: Add;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&data)) {
        data[id.x] = data[id.x] + add.value;
    }
}";

fn backend() -> Option<Arc<WgpuBackend>> {
    match WgpuBackend::all() {
        Ok(mut all) => Some(Arc::new(all.swap_remove(0))),
        Err(e) => {
            assert!(
                !common::wgpu_required(),
                "HETMEM_REQUIRE_WGPU=1 but wgpu is unavailable: {e}"
            );
            common::skip("wgpu:0", &e.to_string());
            None
        }
    }
}

/// A shader adding to every element of a binding, submitted to the device's queue.
struct Adder {
    pipeline: wgpu::ComputePipeline,
}

impl Adder {
    fn new(b: &WgpuBackend) -> Self {
        let module = b
            .device()
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("add"),
                source: wgpu::ShaderSource::Wgsl(ADD.into()),
            });
        let pipeline = b
            .device()
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("add"),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        Adder { pipeline }
    }

    fn run(&self, b: &WgpuBackend, binding: wgpu::BufferBinding<'_>, len: usize, value: u32) {
        use wgpu::util::DeviceExt;
        let device = b.device();
        let add = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: &value.to_ne_bytes(),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &self.pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(binding),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: add.as_entire_binding(),
                },
            ],
        });
        let mut encoder = device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(len.div_ceil(64) as u32, 1, 1);
        }
        b.wgpu_queue().submit([encoder.finish()]);
    }
}

fn on_device(m: &MemoryManager, data: &[u32]) -> UnifiedBuffer<u32> {
    let options = AllocOptions::new().placement(Placement::Device);
    m.from_slice_with(data, options).unwrap()
}

/// Upload, shader, download, shader again after a host write: every step ordered by hetmem
/// alone, contents exact, and wgpu reported nothing.
#[test]
fn shaders_on_guards_are_ordered_without_waits() {
    let Some(b) = backend() else { return };
    let adder = Adder::new(&b);
    let m = MemoryManager::new(b.clone()).unwrap();
    let n = 10_000;
    let mut x = on_device(&m, &(0..n as u32).collect::<Vec<_>>());
    adder.run(&b, x.device_mut().unwrap().wgpu_binding().unwrap(), n, 5);
    assert!(x
        .host()
        .unwrap()
        .iter()
        .enumerate()
        .all(|(i, &v)| v == i as u32 + 5));
    // A host write of one element, then the shader: the upload goes first.
    x.write(7, &[1000]).unwrap();
    adder.run(&b, x.device_mut().unwrap().wgpu_binding().unwrap(), n, 1);
    let host = x.to_vec().unwrap();
    assert_eq!(host[7], 1001);
    assert!(host
        .iter()
        .enumerate()
        .all(|(i, &v)| i == 7 || v == i as u32 + 6));
    assert!(b.error_messages().is_empty(), "{:?}", b.error_messages());
}

/// A view's binding starts at the view: the shader sees it from index 0 and nothing else
/// changes.
#[test]
fn a_view_binds_from_its_start() {
    let Some(b) = backend() else { return };
    let adder = Adder::new(&b);
    let m = MemoryManager::new(b.clone()).unwrap();
    let n = 4096;
    let mut x = on_device(&m, &vec![1u32; n]);
    let step = b.info().alignment / 4;
    let range = step..step * 3;
    {
        let mut view = x.slice_mut(range.clone()).unwrap();
        adder.run(
            &b,
            view.device_mut().unwrap().wgpu_binding().unwrap(),
            range.len(),
            9,
        );
    }
    let host = x.to_vec().unwrap();
    for (i, v) in host.into_iter().enumerate() {
        assert_eq!(v, if range.contains(&i) { 10 } else { 1 }, "element {i}");
    }
}

/// Refusals are typed: a view off the binding alignment, a binding of another backend's
/// buffer.
#[test]
fn bad_bindings_are_typed_errors() {
    let Some(b) = backend() else { return };
    let m = MemoryManager::new(b.clone()).unwrap();
    let mut x = on_device(&m, &vec![0u32; 1024]);
    let mut view = x.slice_mut(1..5).unwrap();
    let guard = view.device_mut().unwrap();
    assert!(matches!(
        guard.wgpu_binding(),
        Err(Error::Misaligned { offset: 4, .. })
    ));
    drop(guard);
    let host = MemoryManager::new(Arc::new(hetmem::backend::HostBackend::new())).unwrap();
    let y = host.from_slice(&[1u32; 16]).unwrap();
    assert!(matches!(
        y.device().unwrap().wgpu_binding(),
        Err(Error::Unsupported { .. })
    ));
}

/// An error wgpu reports on its own (a user's invalid bind group) fails hetmem's next
/// blocking call with its kind, once, and keeps wgpu's message.
#[test]
fn errors_wgpu_reports_fail_the_next_call() {
    let Some(b) = backend() else { return };
    let block = b.allocate(64).unwrap();
    // A bind group with no layout entries but one entry: invalid.
    let empty = b
        .device()
        .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: None,
            entries: &[],
        });
    let stray = b.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let _ = b.device().create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &empty,
        entries: &[wgpu::BindGroupEntry {
            binding: 0,
            resource: stray.as_entire_binding(),
        }],
    });
    let mut out = [0u8; 64];
    let failed = b.read(b.default_queue(), &block, 0, &mut out);
    assert!(
        matches!(&failed, Err(Error::Backend(e)) if e.name == "validation error"),
        "{failed:?}"
    );
    assert_eq!(b.error_messages().len(), 1);
    b.read(b.default_queue(), &block, 0, &mut out).unwrap();
    assert_eq!(out, [0u8; 64], "storage buffers start zeroed");
    b.release(block).unwrap();
}

/// Sizes over the device's largest buffer are refused before wgpu sees them.
#[test]
fn sizes_over_the_limits_are_refused() {
    let Some(b) = backend() else { return };
    let max = b.limits().max_buffer_size;
    assert!(b.info().max_allocation <= max);
    let refused = b.allocate(max as usize + 1);
    assert!(
        matches!(refused, Err(Error::AllocationTooLarge { max: m, .. }) if m == b.info().max_allocation),
        "{refused:?}"
    );
    assert!(b.error_messages().is_empty(), "{:?}", b.error_messages());
}

/// Where the adapter's memory is the host's (llvmpipe), a block that is a whole buffer maps in
/// place: a map guard writes the device copy with nothing transferred, the shader sees it, and
/// the next map guard sees the shader's result with no wait in user code. A block carved from
/// a buffer shared with others is not mapped (typed refusal), and the engine's mapped plan
/// copies it instead.
#[test]
fn whole_buffers_map_in_place() {
    let Some(b) = backend() else { return };
    if !b.capabilities().mapped_access {
        common::skip("wgpu:0", "the adapter's storage buffers are not mappable");
        return;
    }
    let adder = Adder::new(&b);
    // Every buffer its own wgpu buffer: no splitting allocator carving shared segments.
    let m = MemoryManager::builder()
        .backend(b.clone())
        .without_splitting()
        .build()
        .unwrap();
    let n = 10_000;
    let mut x = m
        .alloc_with::<u32>(n, AllocOptions::new().placement(Placement::Device))
        .unwrap();
    let before = m.stats().transfers;
    x.map_discard()
        .unwrap()
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = i as u32);
    adder.run(&b, x.device_mut().unwrap().wgpu_binding().unwrap(), n, 3);
    {
        let mapped = x.map_read().unwrap();
        assert!(mapped.iter().enumerate().all(|(i, &v)| v == i as u32 + 3));
    }
    let after = m.stats().transfers;
    assert_eq!(
        (after.host_to_device.bytes, after.device_to_host.bytes),
        (before.host_to_device.bytes, before.device_to_host.bytes),
        "mapping moved no bytes"
    );
    // The host copy follows the device's on demand.
    assert_eq!(x.to_vec().unwrap()[n - 1], n as u32 + 2);

    // A block carved from a shared buffer.
    let q = b.default_queue();
    let segment = b.allocate(1 << 16).unwrap();
    let mut carved = b.view(&segment, 4096, 4096).unwrap();
    assert!(b.maps(&segment) && !b.maps(&carved));
    let refused = b.map(q, &carved, 0, 64, hetmem::backend::MapMode::Read);
    assert!(
        matches!(refused, Err(Error::Unsupported { .. })),
        "{refused:?}"
    );
    assert!(!b.write_mapped(q, &mut carved, 0, 64, &mut |_| ()).unwrap());
    let engine = hetmem::transfer::TransferEngine::with_config(
        b.clone(),
        hetmem::transfer::TransferConfig {
            strategy: hetmem::transfer::Strategy::Mapped,
            direct_max: 0,
            ..Default::default()
        },
    )
    .unwrap();
    engine.write(&mut carved, 0, &[7u8; 4096]).unwrap();
    let mut back = vec![0u8; 4096];
    engine.read(&carved, 0, &mut back).unwrap();
    assert_eq!(back, vec![7u8; 4096]);
    // `Auto` reads through mappings here, and falls back for the carved block.
    let auto = hetmem::transfer::TransferEngine::new(b.clone());
    assert_eq!(auto.plan_read(4096), hetmem::transfer::Plan::Mapped);
    let mut whole = b.allocate(4096).unwrap();
    auto.write(&mut whole, 0, &[9u8; 4096]).unwrap();
    auto.read(&whole, 0, &mut back).unwrap();
    assert_eq!(back, vec![9u8; 4096]);
    auto.read(&carved, 100, &mut back[..50]).unwrap();
    assert_eq!(back[..50], [7u8; 50]);
    b.release(whole).unwrap();
    b.release_view(carved).unwrap();
    b.release(segment).unwrap();
    assert!(b.error_messages().is_empty(), "{:?}", b.error_messages());
}
