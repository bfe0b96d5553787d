//! `interop.*`: handing hetmem's memory to users' kernels. On OpenCL, a device guard's memory
//! set as a kernel argument through `cl_buffer` (the guard, the memory object lent — the block
//! retained, or a sub-buffer made for a view — and `set_arg`) against setting the raw `cl_mem`
//! the user would otherwise take from the block. Other backends produce no result.

use std::sync::Arc;

use hetmem::backend::Backend;
use hetmem::Result;

use super::report::Measurement;
use super::Suite;

pub fn register(suite: &mut Suite) {
    suite.case_of_several(
        &[
            "interop.opencl.kernel_arg",
            "interop.opencl.kernel_arg.view",
        ],
        kernel_args,
    );
}

#[cfg(feature = "opencl")]
fn kernel_args(
    backend: &Arc<dyn Backend>,
    effort: super::harness::Effort,
) -> Result<Vec<Measurement>> {
    use hetmem::backend::OpenClBackend;
    use hetmem::{AllocOptions, MemoryManager, Placement};
    use opencl3::kernel::Kernel;
    use opencl3::program::Program;

    use super::harness::{compare_auto, latency, Side};

    let Some(opencl) = backend.as_any().downcast_ref::<OpenClBackend>() else {
        return Ok(Vec::new());
    };
    let failed = |what: &str, e: opencl3::error_codes::ClError| {
        hetmem::Error::InvalidArgument(format!("{what}: {e}"))
    };
    const SOURCE: &str = "__kernel void scale(__global float* x) { x[get_global_id(0)] *= 2.0f; }";
    let program = Program::create_and_build_from_source(opencl.context(), SOURCE, "")
        .map_err(|e| hetmem::Error::InvalidArgument(format!("kernel build: {e}")))?;
    let kernel = Kernel::create(&program, "scale").map_err(|e| failed("kernel", e))?;
    let manager = MemoryManager::new(backend.clone())?;
    let mut buffer =
        manager.alloc_with::<f32>(1 << 16, AllocOptions::new().placement(Placement::Device))?;
    let mem = buffer.device()?.block().raw_handle();
    let align = backend.info().alignment / 4;
    let mut whole = |side: Side| -> Result<()> {
        match side {
            Side::Hetmem => buffer.device_mut()?.cl_buffer::<f32>()?.set_arg(&kernel, 0),
            // SAFETY: `mem` is the buffer's live cl_mem, `scale` takes a global pointer.
            Side::Baseline => unsafe { kernel.set_arg(0, &mem) }.map_err(|e| failed("set_arg", e)),
        }
    };
    let whole = compare_auto(effort, &mut whole)?;
    let mut view = |side: Side| -> Result<()> {
        match side {
            Side::Hetmem => {
                let mut view = buffer.slice_mut(align..align * 2)?;
                let device = view.device_mut()?;
                device.cl_buffer::<f32>()?.set_arg(&kernel, 0)
            }
            // SAFETY: as above.
            Side::Baseline => unsafe { kernel.set_arg(0, &mem) }.map_err(|e| failed("set_arg", e)),
        }
    };
    let view = compare_auto(effort, &mut view)?;
    let baseline = "clSetKernelArg with the raw cl_mem";
    Ok(vec![
        latency("interop.opencl.kernel_arg", &whole, baseline, "ns"),
        latency("interop.opencl.kernel_arg.view", &view, baseline, "ns"),
    ])
}

#[cfg(not(feature = "opencl"))]
fn kernel_args(_: &Arc<dyn Backend>, _: super::harness::Effort) -> Result<Vec<Measurement>> {
    Ok(Vec::new())
}
