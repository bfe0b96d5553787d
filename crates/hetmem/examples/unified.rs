//! The README's unified-buffer tour, kept compiling and running by CI on every backend.

use hetmem::manager::{AllocOptions, MemoryManager, Placement};
use hetmem::Result;

fn main() -> Result<()> {
    for backend in hetmem::backends() {
        let label = backend.info().label();
        let manager = MemoryManager::new(backend.clone())?;
        let mut buf =
            manager.alloc_with::<f32>(1 << 20, AllocOptions::new().placement(Placement::Host))?;

        buf.host_discard()?.fill(1.0); // written on the host: nothing moves
        let device = buf.device()?; // the device needs it: one upload of 4 MiB
                                    // `device.block()` is the raw cl_mem / host block for your own kernels.
        drop(device);

        buf.write(12_345, &[2.0])?; // one element changes on the host...
        buf.prefetch_to_device()?.wait()?; // ...so 4 bytes move, not 4 MiB

        {
            // A view aliases its parent; a device-side write through it marks only its range.
            let mut view = buf.slice_mut(100..104)?;
            let mut d = view.device_mut()?;
            let (q, offset) = (d.queue().clone(), d.offset());
            backend.write(
                &q,
                d.block_mut(),
                offset,
                bytemuck::cast_slice(&[3.0f32; 4]),
            )?;
        }
        assert_eq!(buf.host()?[100..105], [3.0, 3.0, 3.0, 3.0, 1.0]); // 16 bytes come back

        let m = buf.metrics();
        println!(
            "{label}: host→device {} transfers, {} bytes; device→host {} transfers, {} bytes",
            m.host_to_device.transfers,
            m.host_to_device.bytes,
            m.device_to_host.transfers,
            m.device_to_host.bytes
        );
    }
    Ok(())
}
