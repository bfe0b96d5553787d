//! A cudarc kernel on a hetmem buffer (feature `cuda`): compiled by NVRTC at run time and
//! launched on the buffer's stream with the buffer's device slice as its argument
//! (`launch_builder(&f).arg(&mut x)`); the host read that follows waits for it by itself.
//! Without a GPU it says so and exits (CI builds it everywhere and runs it where one is lent).

use std::sync::Arc;

use cudarc::driver::{DeviceSlice, LaunchConfig, PushKernelArg};
use hetmem::backend::{Backend, CudaBackend};
use hetmem::manager::{AllocOptions, MemoryManager, Placement};
use hetmem::{Error, Result};

const SOURCE: &str = r#"
extern "C" __global__ void scale(float* x, float a, unsigned int n) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= a;
}"#;

fn main() -> Result<()> {
    let backend = match CudaBackend::with_index(0) {
        Ok(backend) => Arc::new(backend),
        Err(e) if std::env::var("HETMEM_REQUIRE_CUDA").as_deref() != Ok("1") => {
            println!("no CUDA device here ({e}); nothing to run");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let failed =
        |what: &str, e: &dyn std::fmt::Debug| Error::InvalidArgument(format!("{what}: {e:?}"));
    let ptx = cudarc::nvrtc::compile_ptx(SOURCE).map_err(|e| failed("NVRTC", &e))?;
    let module = backend
        .context()
        .load_module(ptx)
        .map_err(|e| failed("module", &e))?;
    let scale = module
        .load_function("scale")
        .map_err(|e| failed("function", &e))?;

    let manager = MemoryManager::new(backend.clone())?;
    let n = 1 << 20;
    let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let mut x = manager.from_slice_with(&data, AllocOptions::new().placement(Placement::Device))?;
    {
        // The guard uploads what the device lacks; the slice is its memory on its stream.
        let mut device = x.device_mut()?;
        let mut slice = device.cuda_mut::<f32>()?;
        let stream = slice.stream().clone();
        let len = slice.len() as u32;
        let mut launch = stream.launch_builder(&scale);
        launch.arg(&mut slice).arg(&3.0f32).arg(&len);
        // SAFETY: `scale` takes a float pointer, a float and a count, as pushed; the grid
        // covers `len` threads and the kernel checks its index against `len`.
        unsafe { launch.launch(LaunchConfig::for_num_elems(len)) }
            .map_err(|e| failed("launch", &e))?;
    }
    // Reading on the host waits for the kernel: it was enqueued on the buffer's stream.
    let correct = x
        .host()?
        .iter()
        .enumerate()
        .all(|(i, &v)| v == 3.0 * i as f32);
    assert!(correct, "the kernel's result");
    println!(
        "{}: scaled {n} floats with a cudarc kernel, no explicit wait",
        backend.info().name
    );
    Ok(())
}
