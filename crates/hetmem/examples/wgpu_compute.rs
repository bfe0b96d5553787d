//! A unified buffer handed to your own WGSL compute shader (feature `wgpu`): hetmem moves the
//! data, your shader runs on the buffer's device copy — the whole buffer, then a view, which
//! the shader sees as its own array from index 0 — and the host guard afterwards reads what the
//! shader wrote, with no wait in your code. CI runs it on Vulkan's CPU driver (llvmpipe).

use std::sync::Arc;

use hetmem::backend::WgpuBackend;
use hetmem::manager::{AllocOptions, MemoryManager, Placement};
use hetmem::Result;

/// Each element x becomes 2x + 1; the array is whatever the binding covers.
const SHADER: &str = "
@group(0) @binding(0) var<storage, read_write> data: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&data)) {
        data[id.x] = data[id.x] * 2.0 + 1.0;
    }
}";

fn main() -> Result<()> {
    let backend = match WgpuBackend::all() {
        Ok(mut all) => Arc::new(all.swap_remove(0)),
        Err(e) if std::env::var("HETMEM_REQUIRE_WGPU").as_deref() != Ok("1") => {
            println!("no wgpu adapter here ({e}); nothing to run");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let device = backend.device();
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("2x + 1"),
        source: wgpu::ShaderSource::Wgsl(SHADER.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("2x + 1"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    // Runs the shader over a guard's binding, submitted to the device's queue.
    let run = |binding: wgpu::BufferBinding<'_>, len: usize| {
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(binding),
            }],
        });
        let mut encoder = device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(len.div_ceil(64) as u32, 1, 1);
        }
        backend.wgpu_queue().submit([encoder.finish()]);
    };

    let manager = MemoryManager::new(backend.clone())?;
    let n = 1 << 14;
    let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let mut x = manager.from_slice_with(
        &data,
        AllocOptions::new().placement(Placement::Device).label("x"),
    )?;

    // The whole buffer: uploaded by the guard, then the shader.
    run(x.device_mut()?.wgpu_binding()?, n);
    // A view of elements 1024..2048: the shader sees 1024 elements from index 0.
    let view = 1024..2048;
    {
        let mut part = x.slice_mut(view.clone())?;
        run(part.device_mut()?.wgpu_binding()?, view.len());
    }

    // No wait: the host guard downloads after both shaders.
    let host = x.host()?;
    for (i, &v) in host.iter().enumerate() {
        let once = i as f32 * 2.0 + 1.0;
        let expected = if view.contains(&i) {
            once * 2.0 + 1.0
        } else {
            once
        };
        assert_eq!(v, expected, "element {i}");
    }
    println!(
        "{} on {:?}: {n} elements of 2x + 1, and twice over a view of {}; host copy exact",
        backend.adapter_info().name,
        backend.adapter_info().backend,
        view.len()
    );
    Ok(())
}
