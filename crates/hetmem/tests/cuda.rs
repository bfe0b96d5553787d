//! CUDA-specific behaviour: enumeration, what the driver reports, several devices side by side,
//! peer copies, and the raw stream and pointer a user's own kernels need. Skipped (with a note)
//! where no GPU is present; `HETMEM_REQUIRE_CUDA=1` turns that into a failure. The backend
//! contract itself runs on CUDA in `conformance.rs`, and the pools, buffers, transfers and
//! manager suites run there too.
#![cfg(feature = "cuda")]

mod common;

use common::{cuda_required, pattern, skip};
use hetmem::backend::{Backend, BackendKind, CopyRegion, CudaBackend};
use hetmem::Error;

const MIB: usize = 1 << 20;

fn all_or_skip() -> Option<Vec<CudaBackend>> {
    match CudaBackend::all() {
        Ok(all) => Some(all),
        Err(e) => {
            assert!(
                !cuda_required(),
                "HETMEM_REQUIRE_CUDA=1 but CUDA is unavailable: {e}"
            );
            assert!(
                matches!(
                    e,
                    Error::BackendUnavailable {
                        backend: BackendKind::Cuda,
                        ..
                    }
                ),
                "absence is reported as unavailable, got {e}"
            );
            skip("cuda", &e.to_string());
            None
        }
    }
}

#[test]
fn devices_are_numbered_and_described_by_the_driver() {
    let Some(all) = all_or_skip() else { return };
    for (i, b) in all.iter().enumerate() {
        let info = b.info();
        assert_eq!(info.kind, BackendKind::Cuda);
        assert_eq!(info.label(), format!("cuda:{i}"));
        assert!(!info.name.is_empty());
        assert!(
            info.driver.contains("compute capability"),
            "{}",
            info.driver
        );
        assert!(info.total_memory > 0);
        let free = info.free_memory.expect("the driver reports free memory");
        assert!(free > 0 && free <= info.total_memory);
        assert_eq!(info.alignment, 256);
        let caps = b.capabilities();
        assert!(caps.async_copies && caps.pinned_staging && !caps.host_addressable);
    }
    let listed = hetmem::backends()
        .into_iter()
        .filter(|b| b.info().kind == BackendKind::Cuda)
        .count();
    assert_eq!(listed, all.len());
}

#[test]
fn blocks_are_raw_device_pointers_on_the_queue_stream() {
    let Some(mut all) = all_or_skip() else { return };
    let b = all.swap_remove(0);
    let data = pattern(MIB + 3, 9);
    let mut block = b.allocate(data.len()).unwrap();
    let queue = b.create_queue().unwrap();
    b.write(&queue, &mut block, 0, &data).unwrap();
    // A user's own driver call on the queue's stream, through the block's raw pointer.
    let stream = b.stream(&queue).unwrap();
    let mut back = vec![0u8; data.len()];
    // SAFETY: the block holds `data.len()` bytes; the stream is synchronised before `back`
    // is read.
    unsafe {
        cudarc::driver::result::memcpy_dtoh_async(
            &mut back,
            block.raw_handle() as cudarc::driver::sys::CUdeviceptr,
            stream.cu_stream(),
        )
        .unwrap();
    }
    stream.synchronize().unwrap();
    assert!(back == data);
    b.release(block).unwrap();
    assert_eq!(b.usage().live_blocks, 0);
}

#[test]
fn peer_copies_move_the_bytes_between_devices() {
    let Some(mut all) = all_or_skip() else { return };
    if all.len() < 2 {
        skip("cuda", "needs two CUDA devices");
        return;
    }
    let second = all.swap_remove(1);
    let first = all.swap_remove(0);
    let data = pattern(8 * MIB + 5, 4);
    let mut src = first.allocate(data.len()).unwrap();
    let mut dst = second.allocate(data.len() + 64).unwrap();
    first
        .write(first.default_queue(), &mut src, 0, &data)
        .unwrap();
    assert!(first.can_copy_to(&second));
    first
        .copy_to_peer(
            first.default_queue(),
            &src,
            &second,
            &mut dst,
            CopyRegion {
                src_offset: 0,
                dst_offset: 64,
                len: data.len(),
            },
        )
        .unwrap()
        .expect("CUDA devices copy to each other")
        .wait()
        .unwrap();
    let mut back = vec![0u8; data.len()];
    second
        .read(second.default_queue(), &dst, 64, &mut back)
        .unwrap();
    assert!(back == data);
    // Blocks stay with their devices.
    assert!(matches!(
        first.copy_to_peer(
            first.default_queue(),
            &dst,
            &second,
            &mut src,
            CopyRegion::prefix(16)
        ),
        Err(Error::ForeignHandle { .. })
    ));
    first.release(src).unwrap();
    second.release(dst).unwrap();
}

/// The engine plans a peer copy between two GPUs and the bytes arrive.
#[test]
fn the_engine_copies_between_gpus_as_peers() {
    let Some(all) = all_or_skip() else { return };
    if all.len() < 2 {
        skip("cuda", "needs two CUDA devices");
        return;
    }
    let devices: Vec<std::sync::Arc<dyn Backend>> = all
        .into_iter()
        .take(2)
        .map(|b| std::sync::Arc::new(b) as std::sync::Arc<dyn Backend>)
        .collect();
    let (a, b) = (
        hetmem::transfer::TransferEngine::new(devices[0].clone()),
        hetmem::transfer::TransferEngine::new(devices[1].clone()),
    );
    let data = pattern(5 * MIB + 1, 8);
    assert_eq!(a.plan_copy_to(&b, data.len()), hetmem::transfer::Plan::Peer);
    let mut src = devices[0].allocate(data.len()).unwrap();
    a.write(&mut src, 0, &data).unwrap();
    let mut dst = devices[1].allocate(data.len()).unwrap();
    a.copy_to(&src, 0, &b, &mut dst, 0, data.len()).unwrap();
    let mut back = vec![0u8; data.len()];
    b.read(&dst, 0, &mut back).unwrap();
    assert!(back == data);
    assert_eq!(a.stats().device_to_host.bytes, 0);
    devices[0].release(src).unwrap();
    devices[1].release(dst).unwrap();
}

/// A device pointer of the caller's becomes a buffer's device copy and is handed back once
/// through the caller's callback; a `Vec` page-locked in place becomes a pinned host copy.
#[test]
fn adopted_device_memory_and_registered_host_memory() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use cudarc::driver::result;
    use hetmem::host::ExternalHost;
    use hetmem::MemoryManager;

    let Some(mut all) = all_or_skip() else {
        return;
    };
    let cuda = all.swap_remove(0);
    cuda.context().bind_to_thread().unwrap();
    let len = 4096 * 4;
    // SAFETY: a plain device allocation of `len` bytes, freed by the callback below.
    let address = unsafe { result::malloc_sync(len) }.unwrap();
    let handed_back = Arc::new(AtomicUsize::new(0));
    let counter = handed_back.clone();
    let give_back = move || {
        counter.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the allocation above, freed once, after hetmem's last use.
        unsafe { result::free_sync(address) }.unwrap();
    };
    // SAFETY: `len` bytes of this device's memory, used by nothing else until `give_back`.
    let block = unsafe { cuda.adopt_ptr(address, len, give_back) }.unwrap();
    let backend: Arc<dyn Backend> = Arc::new(cuda);
    let manager = MemoryManager::new(backend.clone()).unwrap();
    let mut buf = manager.adopt_device::<u32>(block).unwrap();
    buf.host_mut().unwrap().fill(77);
    buf.device_mut().unwrap();
    assert!(buf.to_vec().unwrap().iter().all(|&x| x == 77));
    drop(buf);
    assert_eq!(handed_back.load(Ordering::SeqCst), 1);

    let cuda = backend.as_any().downcast_ref::<CudaBackend>().unwrap();
    let pinned = cuda
        .register_host(ExternalHost::from_vec(pattern(MIB, 3)).unwrap())
        .unwrap();
    let buf = manager.adopt_host::<u8>(pinned).unwrap();
    let _ = buf.device().unwrap();
    assert_eq!(buf.to_vec().unwrap(), pattern(MIB, 3));
}
