//! The primitive side of the seam, called directly on every backend present: each
//! `RawBackend` primitive moves the right bytes when given valid arguments — what the checked
//! `Backend` (the conformance suite's subject) relies on.

mod common;

use hetmem::backend::raw::RawBackend;
use hetmem::backend::{CopyRegion, DeviceBlock, MapMode, MigrateTo, ReadPart, WritePart};

use common::pattern;

/// Reads a whole block back through the primitives.
fn contents<R: RawBackend>(b: &R, block: &DeviceBlock) -> Vec<u8> {
    let mut out = vec![0u8; block.size()];
    // SAFETY: the block is `b`'s and the range is the whole block.
    unsafe { b.read(b.default_queue(), block, 0, &mut out) }.unwrap();
    out
}

fn primitives_move_the_right_bytes<R: RawBackend>(b: &R) {
    const N: usize = 4096;
    let q = b.default_queue().clone();
    // Counting allocations is the checked layer's job: the primitives leave the counters alone.
    let counted = b.usage_counters().snapshot().allocations;
    let mut x = b.allocate(N).unwrap();
    let mut y = b.allocate(N).unwrap();
    assert_eq!((x.size(), y.size()), (N, N));

    // SAFETY: blocks, staging and queues are `b`'s, and every range and pattern used below
    // lies inside its object and follows the fill rule.
    unsafe {
        b.write(&q, &mut x, 0, &pattern(N, 1)).unwrap();
        b.write(&q, &mut x, 100, &[7u8; 28]).unwrap();
        let mut want = pattern(N, 1);
        want[100..128].fill(7);
        assert_eq!(contents(b, &x), want);

        b.copy(
            &q,
            &x,
            &mut y,
            CopyRegion {
                src_offset: 64,
                dst_offset: 0,
                len: N - 64,
            },
        )
        .unwrap()
        .wait()
        .unwrap();
        b.fill(&q, &mut y, N - 64, 64, &[1, 2, 3, 4])
            .unwrap()
            .wait()
            .unwrap();
        let mut copied = want[64..].to_vec();
        copied.extend((0..64).map(|i| [1u8, 2, 3, 4][i % 4]));
        assert_eq!(contents(b, &y), copied);

        let mut staging = b.allocate_staging(N).unwrap();
        staging
            .as_mut_slice()
            .unwrap()
            .copy_from_slice(&pattern(N, 9));
        let wrote = b
            .write_staged(
                &q,
                &mut x,
                &staging,
                CopyRegion {
                    src_offset: 16,
                    dst_offset: 8,
                    len: 512,
                },
            )
            .unwrap();
        wrote.wait().unwrap();
        let read = b
            .read_staged(&q, &y, &mut staging, CopyRegion::prefix(64))
            .unwrap();
        read.wait().unwrap();
        assert_eq!(&contents(b, &x)[8..520], &pattern(N, 9)[16..528]);
        assert_eq!(&staging.as_slice().unwrap()[..64], &copied[..64]);

        let queues = [q.clone(), b.create_queue().unwrap()];
        let (one, two) = (pattern(300, 4), pattern(200, 5));
        let parts = [
            WritePart {
                block: 0,
                offset: 0,
                src: &one,
            },
            WritePart {
                block: 1,
                offset: 1000,
                src: &two,
            },
        ];
        b.write_parts(&queues, &mut [&mut x, &mut y], &parts)
            .unwrap();
        let (mut back_one, mut back_two) = (vec![0u8; 300], vec![0u8; 200]);
        let mut reads = [
            ReadPart {
                block: 0,
                offset: 0,
                dst: &mut back_one,
            },
            ReadPart {
                block: 1,
                offset: 1000,
                dst: &mut back_two,
            },
        ];
        b.read_parts(&queues, &[&x, &y], &mut reads).unwrap();
        assert_eq!((back_one, back_two), (one, two));

        let marker = b.enqueue_marker(&queues[1]).unwrap();
        b.enqueue_wait(&q, &marker).unwrap();
        b.synchronize().unwrap();
        assert!(marker.is_finished());

        // The capabilities say which optional primitives answer; the others refuse.
        let caps = b.capabilities();
        let address = b.host_address(&x);
        if caps.host_addressable {
            let bytes = std::slice::from_raw_parts(address.unwrap(), N);
            assert_eq!(bytes, &contents(b, &x)[..]);
        } else {
            assert!(address.is_err());
        }
        let mapping = b.map(&q, &y, 0, 8, MapMode::WriteDiscard);
        if caps.mapped_access && !caps.host_addressable {
            let ptr = mapping.unwrap();
            std::slice::from_raw_parts_mut(ptr, 8).copy_from_slice(&[6u8; 8]);
            b.unmap(&q, &y, ptr).unwrap();
            assert_eq!(&contents(b, &y)[..8], &[6u8; 8]);
        } else {
            assert!(mapping.is_err());
        }
        let shared = RawBackend::allocate_shared(b, N);
        if caps.shared_allocations {
            let block = shared.unwrap();
            let host = block.shared_address().unwrap();
            assert_eq!(std::slice::from_raw_parts(host, N), &[0u8; N][..]);
            host.write_bytes(3, N);
            assert_eq!(contents(b, &block), vec![3u8; N]);
            b.migrate(&q, &block, MigrateTo::Host).unwrap();
            b.release(block).unwrap();
        } else {
            assert!(shared.is_err());
        }

        b.release(x).unwrap();
        b.release(y).unwrap();
    }
    assert_eq!(b.usage_counters().snapshot().allocations, counted);
}

#[test]
fn host_primitives() {
    primitives_move_the_right_bytes(&hetmem::backend::HostBackend::new());
}

#[cfg(feature = "opencl")]
#[test]
fn opencl_primitives() {
    match hetmem::backend::OpenClBackend::all() {
        Ok(all) => all.iter().for_each(primitives_move_the_right_bytes),
        Err(e) => {
            assert!(!common::opencl_required(), "OpenCL required: {e}");
            common::skip("opencl", &e.to_string());
        }
    }
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_primitives() {
    match hetmem::backend::CudaBackend::all() {
        Ok(all) => all.iter().for_each(primitives_move_the_right_bytes),
        Err(e) => {
            let required = std::env::var("HETMEM_REQUIRE_CUDA").is_ok_and(|v| v == "1");
            assert!(!required, "CUDA required: {e}");
            common::skip("cuda", &e.to_string());
        }
    }
}
