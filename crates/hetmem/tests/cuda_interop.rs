//! Device guards as cudarc device slices (`cuda`, `cuda_mut`): cudarc copies, fills and NCCL
//! collectives on hetmem buffers and views, on the buffer's stream with no wait in user code,
//! and on another stream. Runs where a GPU is present (`HETMEM_REQUIRE_CUDA=1` makes absence a
//! failure); the refusal on other backends runs everywhere.
#![cfg(feature = "cuda")]

mod common;

use std::sync::Arc;

use cudarc::driver::DeviceSlice;
use hetmem::backend::{CudaBackend, HostBackend};
use hetmem::manager::{AllocOptions, MemoryManager, Placement};
use hetmem::Error;

fn manager_or_skip() -> Option<MemoryManager> {
    match CudaBackend::all() {
        Ok(mut all) if !all.is_empty() => {
            Some(MemoryManager::new(Arc::new(all.swap_remove(0))).unwrap())
        }
        other => {
            let reason = other
                .err()
                .map_or("no device".to_owned(), |e| e.to_string());
            assert!(
                !common::cuda_required(),
                "HETMEM_REQUIRE_CUDA=1 but: {reason}"
            );
            common::skip("cuda", &reason);
            None
        }
    }
}

fn on_device(m: &MemoryManager, data: &[f32]) -> hetmem::UnifiedBuffer<f32> {
    m.from_slice_with(data, AllocOptions::new().placement(Placement::Device))
        .unwrap()
}

/// cudarc writes a buffer and a view through `cuda_mut` on the buffer's stream; the host read
/// that follows sees it without any wait in between.
#[test]
fn cudarc_writes_through_a_guard_need_no_wait() {
    let Some(m) = manager_or_skip() else { return };
    let data: Vec<f32> = (0..4096).map(|i| i as f32).collect();
    let mut x = on_device(&m, &[0.0; 4096]);
    {
        let mut device = x.device_discard().unwrap();
        let mut slice = device.cuda_mut::<f32>().unwrap();
        assert_eq!(slice.len(), 4096);
        let stream = slice.stream().clone();
        stream.memcpy_htod(&data, &mut slice).unwrap();
    }
    {
        let mut view = x.slice_mut(1024..2048).unwrap();
        let mut device = view.device_mut().unwrap();
        let mut slice = device.cuda_mut::<f32>().unwrap();
        assert_eq!(slice.len(), 1024);
        let stream = slice.stream().clone();
        stream.memset_zeros(&mut slice).unwrap();
    }
    let expected: Vec<f32> = (0..4096)
        .map(|i| {
            if (1024..2048).contains(&i) {
                0.0
            } else {
                i as f32
            }
        })
        .collect();
    assert!(x.to_vec().unwrap() == expected);
}

/// cudarc reads a buffer hetmem uploaded, and work on another stream waits for the buffer's.
#[test]
fn cudarc_reads_and_other_streams_are_ordered() {
    let Some(m) = manager_or_skip() else { return };
    let data: Vec<f32> = (0..1 << 20).map(|i| (i % 977) as f32).collect();
    let x = on_device(&m, &data);
    let device = x.device().unwrap();
    let slice = device.cuda::<f32>().unwrap();
    let other = slice.stream().context().new_stream().unwrap();
    let mut out = vec![0f32; data.len()];
    other.memcpy_dtoh(&slice, &mut out).unwrap();
    assert!(
        out == data,
        "the other stream saw the upload hetmem enqueued"
    );
}

/// NCCL takes hetmem buffers as they are: an all-reduce of one rank is a copy.
#[cfg(feature = "nccl")]
#[test]
fn nccl_all_reduce_on_buffers() {
    use cudarc::nccl::{Comm, ReduceOp};
    let Some(m) = manager_or_skip() else { return };
    let data: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
    let x = on_device(&m, &data);
    let mut y = on_device(&m, &[0.0; 1000]);
    {
        let from = x.device().unwrap();
        let mut to = y.device_discard().unwrap();
        let send = from.cuda::<f32>().unwrap();
        let stream = send.stream().clone();
        let comm = match Comm::from_devices(vec![stream]) {
            Ok(mut comms) => comms.remove(0),
            Err(e) => {
                assert!(!common::cuda_required(), "NCCL unavailable: {e:?}");
                common::skip("nccl", &format!("{e:?}"));
                return;
            }
        };
        comm.all_reduce(&send, &mut to.cuda_mut::<f32>().unwrap(), &ReduceOp::Sum)
            .unwrap();
    }
    assert!(y.to_vec().unwrap() == data);
}

/// Other backends' blocks are no CUDA memory: a typed refusal.
#[test]
fn host_blocks_are_refused() {
    let m = MemoryManager::new(Arc::new(HostBackend::new())).unwrap();
    let mut x = m.from_slice(&[1.0f32; 64]).unwrap();
    assert!(matches!(
        x.device().unwrap().cuda::<f32>().err(),
        Some(Error::Unsupported { .. })
    ));
    assert!(matches!(
        x.device_mut().unwrap().cuda_mut::<f32>().err(),
        Some(Error::Unsupported { .. })
    ));
}
