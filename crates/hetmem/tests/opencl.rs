//! OpenCL-specific behaviour: device enumeration, the registry, several devices side by side, and
//! user kernels running on hetmem's blocks through their raw handles.
#![cfg(feature = "opencl")]

mod common;

use std::sync::Arc;

use common::{opencl_required, pattern, skip};
use hetmem::backend::{Backend, BackendKind, CopyRegion, OpenClBackend};
use hetmem::Error;

fn all_or_skip() -> Option<Vec<OpenClBackend>> {
    match OpenClBackend::all() {
        Ok(all) => Some(all),
        Err(e) => {
            assert!(
                !opencl_required(),
                "HETMEM_REQUIRE_OPENCL=1 but OpenCL is unavailable: {e}"
            );
            skip("opencl", &e.to_string());
            None
        }
    }
}

#[test]
fn pocl_devices_env_gives_one_backend_per_device() {
    let Some(all) = all_or_skip() else { return };
    let Ok(spec) = std::env::var("POCL_DEVICES") else {
        skip("opencl", "POCL_DEVICES is not set");
        return;
    };
    let pocl = all
        .iter()
        .filter(|b| b.info().driver.contains("Portable Computing Language"))
        .count();
    assert_eq!(pocl, spec.split_whitespace().count(), "POCL_DEVICES={spec}");
    let labels: Vec<String> = all.iter().map(|b| b.info().label()).collect();
    let expected: Vec<String> = (0..all.len()).map(|i| format!("opencl:{i}")).collect();
    assert_eq!(labels, expected, "devices are numbered in order");
}

#[test]
fn registry_lists_host_then_every_opencl_device() {
    let Some(all) = all_or_skip() else { return };
    let listed = hetmem::backends();
    assert_eq!(listed[0].info().kind, BackendKind::Host);
    let opencl: Vec<_> = listed
        .iter()
        .filter(|b| b.info().kind == BackendKind::OpenCl)
        .collect();
    assert_eq!(opencl.len(), all.len());
    let cuda = hetmem::backend::probe()
        .into_iter()
        .find(|p| p.kind == BackendKind::Cuda)
        .unwrap();
    match cuda.outcome {
        // Only with the feature, on a machine with a GPU.
        Ok(devices) => assert!(cfg!(feature = "cuda") && !devices.is_empty()),
        Err(e) => assert!(matches!(
            e,
            Error::BackendUnavailable {
                backend: BackendKind::Cuda,
                ..
            }
        )),
    }
}

#[test]
fn blocks_queues_and_staging_do_not_cross_devices() {
    let Some(mut all) = all_or_skip() else { return };
    if all.len() < 2 {
        skip(
            "opencl",
            "needs two OpenCL devices (POCL_DEVICES=\"pthread pthread\")",
        );
        return;
    }
    let second = all.swap_remove(1);
    let first = all.swap_remove(0);
    let mut block = first.allocate(256).unwrap();
    let mut other = second.allocate(256).unwrap();
    let staging = first.allocate_staging(256).unwrap();
    let q1 = first.default_queue().clone();
    let q2 = second.default_queue().clone();
    let foreign =
        |r: hetmem::Result<()>| assert!(matches!(r, Err(Error::ForeignHandle { .. })), "{r:?}");
    foreign(second.write(&q2, &mut block, 0, &[1]));
    foreign(second.write(&q1, &mut other, 0, &[1]));
    foreign(
        second
            .copy(&q2, &block, &mut other, CopyRegion::prefix(8))
            .map(drop),
    );
    foreign(
        second
            .write_staged(&q2, &mut other, &staging, CopyRegion::prefix(8))
            .map(drop),
    );
    let Err(Error::ReleasedToWrongBackend { block, .. }) = second.release(block) else {
        panic!("a block released to the wrong device must come back");
    };
    second.release(other).unwrap();
    assert_eq!(second.usage().live_blocks, 0);
    assert_eq!(
        first.usage().live_blocks,
        1,
        "the rejected block is still the first device's"
    );
    first.release(block).unwrap();
    assert_eq!(first.usage().live_blocks, 0);
}

#[test]
fn user_kernel_runs_on_a_block_through_its_raw_handle() {
    use opencl3::kernel::{ExecuteKernel, Kernel};
    use opencl3::program::Program;

    let Some(mut all) = all_or_skip() else { return };
    let backend = Arc::new(all.swap_remove(0));
    let program = Program::create_and_build_from_source(
        backend.context(),
        "__kernel void add_one(__global uchar* data) { size_t i = get_global_id(0); data[i] += 1; }",
        "",
    )
    .expect("kernel builds");
    let kernel = Kernel::create(&program, "add_one").unwrap();
    let n = 4096;
    let data = pattern(n, 3);
    let queue = backend.default_queue().clone();
    let mut block = backend.allocate(n).unwrap();
    backend.write(&queue, &mut block, 0, &data).unwrap();
    let mem = block.raw_handle();
    let command_queue = backend.command_queue(&queue).unwrap();
    // SAFETY: the kernel takes one global buffer argument, `mem` is a live cl_mem of this
    // backend's context holding `n` bytes, and the global size is `n`.
    let done = unsafe {
        ExecuteKernel::new(&kernel)
            .set_arg(&mem)
            .set_global_work_size(n)
            .enqueue_nd_range(command_queue)
            .unwrap()
    };
    done.wait().unwrap();
    let mut out = vec![0u8; n];
    backend.read(&queue, &block, 0, &mut out).unwrap();
    let expected: Vec<u8> = data.iter().map(|x| x.wrapping_add(1)).collect();
    assert_eq!(out, expected);
    backend.release(block).unwrap();
}

#[test]
fn pocl_reports_unified_memory_and_async_copies() {
    let Some(all) = all_or_skip() else { return };
    for backend in all
        .iter()
        .filter(|b| b.info().driver.contains("Portable Computing Language"))
    {
        let caps = backend.capabilities();
        assert!(caps.unified_memory, "PoCL's CPU devices share host memory");
        assert!(caps.async_copies);
        assert!(backend.info().max_allocation <= backend.info().total_memory);
    }
}

/// Real kernels, as a user launches them, on a buffer's queue behind a gate and on a queue of
/// the user's own: nobody waits for them, and the host sees both results.
#[test]
fn user_kernels_on_a_buffer_need_no_wait() {
    use opencl3::kernel::{ExecuteKernel, Kernel};
    use opencl3::program::Program;

    let Some(mut all) = all_or_skip() else { return };
    let second = (all.len() > 1).then(|| all.swap_remove(1));
    let backend = Arc::new(all.swap_remove(0));
    let program = Program::create_and_build_from_source(
        backend.context(),
        "__kernel void twice(__global uint* x) { size_t i = get_global_id(0); x[i] = 2 * x[i] + 1; }",
        "",
    )
    .expect("kernel builds");
    let kernel = Kernel::create(&program, "twice").unwrap();
    let launch = |mem: *mut std::ffi::c_void, queue: &hetmem::backend::Queue, n: usize| {
        let queue = backend.command_queue(queue).unwrap();
        // SAFETY: `twice` takes one global uint buffer; `mem` is a live cl_mem of this
        // backend's context holding `n` uints, and the global size is `n`.
        unsafe {
            ExecuteKernel::new(&kernel)
                .set_arg(&mem)
                .set_global_work_size(n)
                .enqueue_nd_range(queue)
                .unwrap()
        }
    };
    let manager = hetmem::MemoryManager::new(backend.clone()).unwrap();
    let n = 1 << 20;
    let data: Vec<u32> = (0..n as u32).collect();
    let mut buf = manager.from_slice(&data).unwrap();
    let gate = {
        let mut d = buf.device_mut().unwrap();
        let dyn_backend: Arc<dyn Backend> = backend.clone();
        let gate = common::Gate::close(
            &dyn_backend,
            d.queue(),
            std::time::Duration::from_millis(80),
        );
        let queue = d.queue().clone();
        launch(d.block_mut().raw_handle(), &queue, n);
        gate
    };
    let own = backend.create_queue().unwrap();
    {
        let mut d = buf.device_mut().unwrap();
        d.ready_on(&own).unwrap();
        let event = launch(d.block_mut().raw_handle(), &own, n);
        d.record(&backend.wrap_event(event).unwrap()).unwrap();
    }
    let seen = gate.after(|| buf.to_vec().unwrap());
    let expected: Vec<u32> = data.iter().map(|&x| 4 * x + 3).collect();
    assert_eq!(seen, expected);

    // An event of another context is refused.
    if let Some(second) = second {
        let mut block = second.allocate(64).unwrap();
        let event = second
            .fill(second.default_queue(), &mut block, 0, 64, &[1])
            .unwrap();
        event.wait().unwrap();
        let queue = second.command_queue(second.default_queue()).unwrap();
        // SAFETY: an empty wait list; the marker's event is owned by the returned Event.
        let raw = unsafe {
            opencl3::command_queue::enqueue_marker_with_wait_list(queue.get(), 0, std::ptr::null())
        }
        .unwrap();
        let foreign = opencl3::event::Event::new(raw);
        assert!(backend.wrap_event(foreign).is_err());
        second.release(block).unwrap();
    }
}
