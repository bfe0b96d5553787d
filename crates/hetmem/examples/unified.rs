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

        // The device copy mapped into host memory: zero-copy where the device shares memory
        // with the host (PoCL, integrated GPUs); unmapped when the guard drops.
        let caps = backend.capabilities();
        if caps.mapped_access || caps.host_addressable {
            assert_eq!(buf.map_read()?[100], 3.0); // the device copy, read in place
            buf.map_write()?[0] = 4.0; // written in place: the host copy goes stale there
            assert_eq!(buf.host()?[0], 4.0);
        }
        // One allocation both sides address (OpenCL fine-grained SVM, CUDA managed memory):
        // never a transfer.
        if caps.shared_allocations || caps.host_addressable {
            let shared = AllocOptions::new().placement(Placement::Shared);
            let mut one = manager.alloc_with::<f32>(1 << 20, shared)?;
            one.host_discard()?.fill(5.0);
            drop(one.device()?); // nothing moves
            assert_eq!(one.metrics().host_to_device.bytes, 0);
        }

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
