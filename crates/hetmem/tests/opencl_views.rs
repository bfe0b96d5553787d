//! Device guards as OpenCL buffers for users' kernels (`cl_buffer`): a view with an offset is
//! a real sub-buffer at index 0, misaligned views are refused, memory objects are neither leaked
//! nor released twice, and kernels enqueued on the buffer's queue need no wait. On every PoCL
//! device, through pooled blocks (themselves sub-buffers of a segment) and unpooled ones.
#![cfg(feature = "opencl")]

mod common;

use std::sync::Arc;

use hetmem::backend::{Backend, OpenClBackend};
use hetmem::manager::{AllocMode, AllocOptions, MemoryManager, Placement};
use hetmem::{Error, UnifiedBuffer};
use opencl3::command_queue::CommandQueue;
use opencl3::kernel::Kernel;
use opencl3::memory::{ClMem, CL_MEM_READ_ONLY, CL_MEM_REFERENCE_COUNT};
use opencl3::program::Program;

const SOURCE: &str = "__kernel void scale(__global float* x, float a) { x[get_global_id(0)] *= a; }
__kernel void sum(__global const float* x, __global float* out) { out[0] = x[0] + x[1]; }";

struct Fixture {
    backend: Arc<OpenClBackend>,
    manager: MemoryManager,
    scale: Kernel,
    sum: Kernel,
}

fn fixture(index: usize) -> Option<Fixture> {
    let all = OpenClBackend::all();
    let mut all = match all {
        Ok(all) if index < all.len() => all,
        other => {
            let error = other.err().map(|e| e.to_string());
            assert!(
                !common::opencl_required() || index > 0,
                "no OpenCL device: {error:?}"
            );
            common::skip("opencl", "no such OpenCL device");
            return None;
        }
    };
    let backend = Arc::new(all.swap_remove(index));
    let program = Program::create_and_build_from_source(backend.context(), SOURCE, "").unwrap();
    let scale = Kernel::create(&program, "scale").unwrap();
    let sum = Kernel::create(&program, "sum").unwrap();
    let manager = MemoryManager::new(backend.clone()).unwrap();
    Some(Fixture {
        backend,
        manager,
        scale,
        sum,
    })
}

fn counting(f: &Fixture, n: usize, mode: AllocMode) -> UnifiedBuffer<f32> {
    let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let options = AllocOptions::new().placement(Placement::Device).mode(mode);
    f.manager.from_slice_with(&data, options).unwrap()
}

/// Enqueues `kernel`, its arguments set, over `n` work items, without waiting.
fn run(kernel: &Kernel, n: usize, queue: &CommandQueue) {
    // SAFETY: every argument of `kernel` is set (by the caller), and `n` items stay inside
    // the buffers it was given.
    unsafe {
        queue.enqueue_nd_range_kernel(kernel.get(), 1, std::ptr::null(), &n, std::ptr::null(), &[])
    }
    .unwrap();
}

fn queue<'q>(f: &Fixture, q: &'q hetmem::backend::Queue) -> &'q CommandQueue {
    f.backend.command_queue(q).unwrap()
}

/// `scale(view, 3)` through the view's sub-buffer, on the buffer's queue, never waited for:
/// the host read that follows sees exactly the view's elements tripled.
fn a_view_is_a_sub_buffer_at_index_zero(f: &Fixture, mode: AllocMode) {
    let n = 4096;
    let mut x = counting(f, n, mode);
    let align = f.backend.info().alignment / 4; // elements per alignment step
    let (start, end) = (align * 3, align * 3 + 1000);
    {
        let mut view = x.slice_mut(start..end).unwrap();
        let device = view.device_mut().unwrap();
        let arg = device.cl_buffer::<f32>().unwrap();
        assert_eq!(arg.len(), end - start);
        arg.set_arg(&f.scale, 0).unwrap();
        // SAFETY: argument 1 of `scale` is a float.
        unsafe { f.scale.set_arg(1, &3.0f32) }.unwrap();
        run(&f.scale, arg.len(), queue(f, device.queue()));
    }
    let got = x.to_vec().unwrap();
    let expected: Vec<f32> = (0..n)
        .map(|i| {
            if (start..end).contains(&i) {
                3.0 * i as f32
            } else {
                i as f32
            }
        })
        .collect();
    assert!(got == expected, "{mode:?}: only the view was scaled");
}

/// A view that does not start on the device's alignment is refused, typed, and nothing runs.
fn a_misaligned_view_is_refused(f: &Fixture) {
    let x = counting(f, 1024, AllocMode::Pooled);
    let view = x.slice(1..9).unwrap();
    let device = view.device().unwrap();
    let refused = device.cl_buffer::<f32>();
    assert!(
        matches!(refused, Err(Error::Misaligned { offset: 4, .. })),
        "{:?}",
        refused.err()
    );
    let elements = device.cl_buffer::<[f32; 3]>();
    assert!(
        matches!(elements, Err(Error::IncompatibleCast { .. })),
        "8 floats are not 3s"
    );
}

/// Lending takes its own reference and gives it back: the block's reference count is the same
/// before and after, whole or as a sub-buffer, and a read guard's sub-buffer is read-only.
fn memory_objects_are_neither_leaked_nor_released_twice(f: &Fixture) {
    let mut x = counting(f, 2048, AllocMode::Unpooled);
    let refs = |g: &hetmem::buffer::DeviceRef<'_>| {
        let mem = g.block().raw_handle();
        u32::from(opencl3::memory::get_mem_object_info(mem, CL_MEM_REFERENCE_COUNT).unwrap())
    };
    let device = x.device().unwrap();
    let before = refs(&device);
    {
        let whole = device.cl_buffer::<f32>().unwrap();
        assert_eq!(refs(&device), before + 1, "the whole block, retained once");
        assert_eq!(whole.get(), device.block().raw_handle());
    }
    assert_eq!(refs(&device), before);
    drop(device);
    let align = f.backend.info().alignment / 4;
    let view = x.slice(align..align * 2).unwrap();
    let device = view.device().unwrap();
    {
        let sub = device.cl_buffer::<f32>().unwrap();
        assert_ne!(
            sub.get(),
            device.block().raw_handle(),
            "a sub-buffer of its own"
        );
        assert_eq!(sub.flags().unwrap() & CL_MEM_READ_ONLY, CL_MEM_READ_ONLY);
    }
    drop(device);
    x.resize(4096).unwrap(); // the block goes on working after its sub-buffers went
    assert_eq!(
        x.to_vec().unwrap()[..2048],
        (0..2048).map(|i| i as f32).collect::<Vec<_>>()
    );
}

/// Views of two buffers as the two arguments of one kernel; a wrong argument comes back as a
/// typed error from OpenCL, not a crash.
fn two_views_in_one_kernel_and_a_wrong_argument(f: &Fixture) {
    let align = f.backend.info().alignment / 4;
    let mut x = counting(f, align * 2, AllocMode::Pooled);
    x.write(align, &[1.5, 2.25]).unwrap();
    let mut y = counting(f, align * 2, AllocMode::Pooled);
    let input = x.slice(align..align + 2).unwrap();
    let mut output = y.slice_mut(align..align + 1).unwrap();
    {
        let from = input.device().unwrap();
        let to = output.device_mut().unwrap();
        let (a, b) = (
            from.cl_buffer::<f32>().unwrap(),
            to.cl_buffer::<f32>().unwrap(),
        );
        a.set_arg(&f.sum, 0).unwrap();
        b.set_arg(&f.sum, 1).unwrap();
        assert!(
            matches!(a.set_arg(&f.sum, 7), Err(Error::Backend(_))),
            "no argument 7"
        );
        run(&f.sum, 1, queue(f, to.queue()));
    }
    let mut expected: Vec<f32> = (0..align * 2).map(|i| i as f32).collect();
    expected[align] = 3.75;
    assert!(y.to_vec().unwrap() == expected);
}

fn on_device(index: usize) {
    let Some(f) = fixture(index) else { return };
    a_view_is_a_sub_buffer_at_index_zero(&f, AllocMode::Pooled);
    a_view_is_a_sub_buffer_at_index_zero(&f, AllocMode::Unpooled);
    a_misaligned_view_is_refused(&f);
    memory_objects_are_neither_leaked_nor_released_twice(&f);
    two_views_in_one_kernel_and_a_wrong_argument(&f);
}

#[test]
fn opencl_dev0() {
    on_device(0);
}

#[test]
fn opencl_dev1() {
    on_device(1);
}

/// Other backends' blocks are no OpenCL buffers.
#[test]
fn host_blocks_are_refused() {
    let m = MemoryManager::new(Arc::new(hetmem::backend::HostBackend::new())).unwrap();
    let x = m.from_slice(&[1.0f32; 64]).unwrap();
    let device = x.device().unwrap();
    assert!(matches!(
        device.cl_buffer::<f32>(),
        Err(Error::Unsupported { .. })
    ));
}
