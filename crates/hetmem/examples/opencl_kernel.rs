//! A unified buffer handed to your own OpenCL kernels through its raw `cl_mem`: hetmem moves the
//! data, you launch the kernels — on the buffer's queue, and on a queue of your own — and
//! nobody waits for them by hand: the ordering contract does (feature `opencl`). CI runs it on
//! PoCL.

use std::sync::Arc;

use hetmem::backend::{Backend, OpenClBackend};
use hetmem::manager::{AllocOptions, MemoryManager, Placement};
use hetmem::Result;
use opencl3::command_queue::CommandQueue;
use opencl3::kernel::{ExecuteKernel, Kernel};
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
        let mut device = x.device_mut()?;
        let mem = device.block_mut().raw_handle();
        let queue = backend.command_queue(device.queue())?;
        launch(&kernel, mem, 2.0, n, queue)?;
    }

    // A kernel on a queue of your own: `ready_on` before the launch (your queue waits for the
    // buffer's), `record` after it (the buffer's queue, and the block's return to the pool,
    // wait for your kernel). Again nothing waits here.
    let own = backend.create_queue()?;
    {
        let mut device = x.device_mut()?;
        device.ready_on(&own)?;
        let mem = device.block_mut().raw_handle();
        let event = launch(&kernel, mem, 3.0, n, backend.command_queue(&own)?)?;
        device.record(&backend.wrap_event(event)?)?;
    }

    // Reading on the host waits for both kernels and downloads the device's result once.
    let host = x.host()?;
    assert!(host.iter().enumerate().all(|(i, &v)| v == 6.0 * i as f32));
    drop(host);
    let m = x.metrics();
    println!(
        "{}: scaled {n} floats twice on the device, no explicit wait; moved {} bytes up, {} bytes down",
        backend.info().name,
        m.host_to_device.bytes,
        m.device_to_host.bytes
    );
    Ok(())
}

/// Enqueues `scale(x, a)` over `n` floats of the `cl_mem` `mem` on `queue`, without waiting.
fn launch(
    kernel: &Kernel,
    mem: *mut std::ffi::c_void,
    a: f32,
    n: usize,
    queue: &CommandQueue,
) -> Result<opencl3::event::Event> {
    // SAFETY: `scale` takes one global float buffer and one float; `mem` is a live cl_mem of
    // this backend's context holding `n` floats, and the global size is `n`.
    unsafe {
        ExecuteKernel::new(kernel)
            .set_arg(&mem)
            .set_arg(&a)
            .set_global_work_size(n)
            .enqueue_nd_range(queue)
    }
    .map_err(|e| hetmem::Error::InvalidArgument(format!("launch failed: {e}")))
}
