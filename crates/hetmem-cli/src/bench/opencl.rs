//! Figures only an OpenCL device gives (other backends produce no result):
//! `interop.opencl.*`, a device guard's memory set as a kernel argument through `cl_buffer`
//! (the guard, the memory object lent — the block retained, or a sub-buffer made for a view —
//! and `set_arg`) against setting the raw `cl_mem` the user would otherwise take from the
//! block; and `transfer.batch.h2d.4KiBx1000.handwritten`, the engine's batch against the best
//! sequence a user could write by hand: non-blocking writes gated behind a user event, released
//! at once, one `clFinish`.

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
    suite.case_of_several(
        &[
            "transfer.batch.h2d.4KiBx1000.handwritten",
            "transfer.batch.h2d.4KiBx1000.handwritten.held",
        ],
        handwritten_batch,
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

/// 1000 writes of 4 KiB: the engine's batch against the hand-written OpenCL sequence (its own
/// buffers; non-blocking writes behind a user event, the event completed, one `clFinish`), µs —
/// once releasing each write's event at once, once holding them until the `clFinish` as the
/// engine must (PoCL 3.1 aborts when a failing user event ahead in the queue meets a released
/// one; see the backend's `Unfinished`).
#[cfg(feature = "opencl")]
fn handwritten_batch(
    backend: &Arc<dyn Backend>,
    effort: super::harness::Effort,
) -> Result<Vec<Measurement>> {
    use hetmem::backend::OpenClBackend;
    use hetmem::transfer::TransferEngine;
    use opencl3::event::{create_user_event, set_user_event_status, Event, CL_COMPLETE};
    use opencl3::memory::{Buffer, CL_MEM_READ_WRITE};
    use opencl3::types::CL_NON_BLOCKING;

    use super::harness::{compare, latency, Side};
    use super::transfer::write_batch;

    let Some(opencl) = backend.as_any().downcast_ref::<OpenClBackend>() else {
        return Ok(Vec::new());
    };
    let failed = |what: &str, e: opencl3::error_codes::ClError| {
        hetmem::Error::InvalidArgument(format!("{what}: {e}"))
    };
    const N: usize = 1000;
    const LEN: usize = 4 << 10;
    let engine = TransferEngine::new(backend.clone());
    let mut blocks = (0..N)
        .map(|_| backend.allocate(LEN))
        .collect::<Result<Vec<_>>>()?;
    let sources: Vec<Vec<u8>> = (0..N).map(|i| vec![i as u8; LEN]).collect();
    let context = opencl.context();
    let queue = opencl.command_queue(backend.default_queue())?;
    let mut theirs = (0..N)
        // SAFETY: a plain read-write buffer of LEN bytes, no host pointer.
        .map(|_| unsafe {
            Buffer::<u8>::create(context, CL_MEM_READ_WRITE, LEN, std::ptr::null_mut())
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| failed("clCreateBuffer", e))?;
    let mut timed = |hold: bool| {
        compare(effort.samples, 1, |side| match side {
            Side::Hetmem => write_batch(&engine, &mut blocks, &sources),
            Side::Baseline => {
                let gate =
                    create_user_event(context.get()).map_err(|e| failed("gate", e.into()))?;
                let gate = Event::new(gate);
                let mut held = Vec::with_capacity(if hold { N } else { 0 });
                for (i, (dst, src)) in theirs.iter_mut().zip(&sources).enumerate() {
                    let wait = if i == 0 { vec![gate.get()] } else { Vec::new() };
                    // SAFETY: `src` outlives the write, which completes before `finish` returns.
                    let written =
                        unsafe { queue.enqueue_write_buffer(dst, CL_NON_BLOCKING, 0, src, &wait) }
                            .map_err(|e| failed("clEnqueueWriteBuffer", e))?;
                    if hold {
                        held.push(written);
                    }
                }
                set_user_event_status(gate.get(), CL_COMPLETE)
                    .map_err(|e| failed("gate", e.into()))?;
                queue.finish().map_err(|e| failed("clFinish", e))
            }
        })
    };
    let (at_once, holding) = (timed(false), timed(true));
    for block in blocks {
        backend.release(block)?;
    }
    Ok(vec![
        latency(
            "transfer.batch.h2d.4KiBx1000.handwritten",
            &at_once?,
            "hand-written OpenCL: gated non-blocking writes, one clFinish",
            "us",
        ),
        latency(
            "transfer.batch.h2d.4KiBx1000.handwritten.held",
            &holding?,
            "the same, holding each write's event until the clFinish",
            "us",
        ),
    ])
}

#[cfg(not(feature = "opencl"))]
fn kernel_args(_: &Arc<dyn Backend>, _: super::harness::Effort) -> Result<Vec<Measurement>> {
    Ok(Vec::new())
}

#[cfg(not(feature = "opencl"))]
fn handwritten_batch(_: &Arc<dyn Backend>, _: super::harness::Effort) -> Result<Vec<Measurement>> {
    Ok(Vec::new())
}
