//! A unified buffer handed to your own OpenCL kernels: hetmem moves the data, you launch the
//! kernels — on the buffer's queue, on a queue of your own, and over a view, which a kernel
//! sees as a sub-buffer starting at index 0 — and nobody waits for them by hand: the ordering
//! contract does (feature `opencl`). CI runs it on PoCL.

use std::sync::Arc;

use hetmem::backend::ClBuffer;
use hetmem::backend::{Backend, OpenClBackend};
use hetmem::manager::{AllocOptions, MemoryManager, Placement};
use hetmem::Result;
use opencl3::command_queue::CommandQueue;
use opencl3::kernel::Kernel;
use opencl3::program::Program;

const SOURCE: &str =
    "__kernel void scale(__global float* x, float a) { x[get_global_id(0)] *= a; }";

fn main() -> Result<()> {
    let backend = match OpenClBackend::with_index(0) {
        Ok(backend) => Arc::new(backend),
        Err(e) if std::env::var("HETMEM_REQUIRE_OPENCL").as_deref() != Ok("1") => {
            println!("no OpenCL device here ({e}); nothing to run");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let program = Program::create_and_build_from_source(backend.context(), SOURCE, "")
        .map_err(|e| hetmem::Error::InvalidArgument(format!("kernel build failed: {e}")))?;
    let kernel = Kernel::create(&program, "scale")
        .map_err(|e| hetmem::Error::InvalidArgument(format!("no kernel: {e}")))?;

    let manager = MemoryManager::new(backend.clone())?;
    let n = 1 << 16;
    let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let mut x = manager.from_slice_with(
        &data,
        AllocOptions::new().placement(Placement::Device).label("x"),
    )?;

    // Launch on the buffer's queue and do not wait: hetmem's next transfer of `x` is ordered
    // after everything enqueued there (the ordering contract of device guards).
    {
        // The guard uploads what the device lacks and marks the device copy newest.
        let device = x.device_mut()?;
        let arg = device.cl_buffer::<f32>()?; // the device copy as an OpenCL buffer
        launch(&kernel, &arg, 2.0, backend.command_queue(device.queue())?)?;
    }

    // A kernel on a queue of your own: `ready_on` before the launch (your queue waits for the
    // buffer's), `record` after it (the buffer's queue, and the block's return to the pool,
    // wait for your kernel). Again nothing waits here.
    let own = backend.create_queue()?;
    {
        let device = x.device_mut()?;
        device.ready_on(&own)?;
        let event = launch(
            &kernel,
            &device.cl_buffer()?,
            3.0,
            backend.command_queue(&own)?,
        )?;
        device.record(&backend.wrap_event(event)?)?;
    }

    // A view: its own sub-buffer, so the kernel's index 0 is the view's first element (views
    // must start on the device's base address alignment: every `align` floats here).
    let align = backend.info().alignment / 4;
    {
        let mut view = x.slice_mut(align..align * 3)?;
        let device = view.device_mut()?;
        launch(
            &kernel,
            &device.cl_buffer()?,
            0.5,
            backend.command_queue(device.queue())?,
        )?;
    }

    // Reading on the host waits for both kernels and downloads the device's result once.
    let host = x.host()?;
    let in_view = |i: usize| (align..align * 3).contains(&i);
    let expected = |i: usize| if in_view(i) { 3.0 } else { 6.0 } * i as f32;
    assert!(host.iter().enumerate().all(|(i, &v)| v == expected(i)));
    drop(host);
    let m = x.metrics();
    println!(
        "{}: scaled {n} floats twice and a view once on the device, no explicit wait; moved {} bytes up, {} bytes down",
        backend.info().name,
        m.host_to_device.bytes,
        m.device_to_host.bytes
    );
    Ok(())
}

/// Enqueues `scale(x, a)` over every float of `x` on `queue`, without waiting.
fn launch(
    kernel: &Kernel,
    x: &ClBuffer<'_, f32>,
    a: f32,
    queue: &CommandQueue,
) -> Result<opencl3::event::Event> {
    x.set_arg(kernel, 0)?;
    let failed = |e: opencl3::error_codes::ClError| {
        hetmem::Error::InvalidArgument(format!("launch failed: {e}"))
    };
    // SAFETY: argument 1 of `scale` is a float.
    unsafe { kernel.set_arg(1, &a) }.map_err(failed)?;
    let n = x.len();
    // SAFETY: both arguments are set; `n` work items index the `n` floats of `x`.
    unsafe {
        queue.enqueue_nd_range_kernel(kernel.get(), 1, std::ptr::null(), &n, std::ptr::null(), &[])
    }
    .map_err(failed)
}
