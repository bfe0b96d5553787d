//! The README's API tour, kept compiling and running by CI.

use hetmem::backend::CopyRegion;
use hetmem::Result;

fn main() -> Result<()> {
    for backend in hetmem::backends() {
        let info = backend.info();
        let queue = backend.default_queue().clone();

        // Blocking transfers from pageable memory.
        let mut block = backend.allocate(1 << 20)?;
        backend.write(&queue, &mut block, 0, &vec![7u8; 1 << 20])?;

        // Asynchronous device work returns events, which can be waited on or call back.
        backend
            .fill(&queue, &mut block, 0, 4096, &[0xAB])?
            .on_complete(|r| assert!(r.is_ok()))?;

        // Asynchronous transfers go through staging memory that waits for the device itself.
        let mut staging = backend.allocate_staging(4096)?;
        backend.read_staged(&queue, &block, &mut staging, CopyRegion::prefix(4096))?;
        assert!(staging.as_slice()?.iter().all(|&b| b == 0xAB));

        println!("{}: {} ok", info.label(), info.name);
        backend.release(block)?;
    }
    Ok(())
}
