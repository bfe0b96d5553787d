//! Scattered transfers (`Backend::write_parts`/`read_parts`) on every backend: parts spread over
//! queues land exactly, and failed parts are named while the others arrive.

mod common;

use std::sync::Arc;

use common::{block_contents as read_all, pattern};
use hetmem::backend::{Backend, DeviceBlock, ReadPart, WritePart};
use hetmem::Error;

const MIB: usize = 1 << 20;

fn q(b: &Arc<dyn Backend>) -> hetmem::backend::Queue {
    b.default_queue().clone()
}

/// Parts spread over two queues land exactly, several in one block, and read back the same way.
fn scattered_parts_land_exactly(b: &Arc<dyn Backend>) {
    let queues = [q(b), b.create_queue().unwrap()];
    let mut blocks: Vec<_> = (0..3).map(|_| b.allocate(3 * MIB).unwrap()).collect();
    for block in &mut blocks {
        b.write(&q(b), block, 0, &vec![0u8; 3 * MIB]).unwrap();
    }
    // (block, offset, length): two parts share block 1, one crosses a MiB boundary.
    let layout = [
        (0, 0, 5),
        (1, 7, MIB),
        (2, 3, 4096),
        (1, MIB + 7, MIB + 1),
        (0, MIB - 2, 9),
    ];
    let sources: Vec<Vec<u8>> = layout
        .iter()
        .enumerate()
        .map(|(i, &(_, _, len))| pattern(len, 10 + i as u8))
        .collect();
    let parts: Vec<WritePart> = layout
        .iter()
        .zip(&sources)
        .map(|(&(block, offset, _), src)| WritePart { block, offset, src })
        .collect();
    let mut targets: Vec<&mut DeviceBlock> = blocks.iter_mut().collect();
    b.write_parts(&queues, &mut targets, &parts).unwrap();
    let mut expected = vec![vec![0u8; 3 * MIB]; 3];
    for (&(block, offset, len), src) in layout.iter().zip(&sources) {
        expected[block][offset..offset + len].copy_from_slice(src);
    }
    for (block, want) in blocks.iter().zip(&expected) {
        assert!(
            read_all(b, block) == *want,
            "every block holds exactly its parts"
        );
    }

    let mut back: Vec<Vec<u8>> = layout.iter().map(|&(_, _, len)| vec![0u8; len]).collect();
    let mut reads: Vec<ReadPart> = layout
        .iter()
        .zip(&mut back)
        .map(|(&(block, offset, _), dst)| ReadPart { block, offset, dst })
        .collect();
    let sources_of: Vec<&DeviceBlock> = blocks.iter().collect();
    b.read_parts(&queues, &sources_of, &mut reads).unwrap();
    assert_eq!(back, sources);
    for block in blocks {
        b.release(block).unwrap();
    }
}

/// A bad part is reported by index with a typed error; the parts before it arrive, and a
/// transfer with no queue fails every part without touching anything.
fn failed_parts_are_named(b: &Arc<dyn Backend>) {
    let queues = [q(b), b.create_queue().unwrap()];
    let mut block = b.allocate(4096).unwrap();
    b.write(&q(b), &mut block, 0, &[0u8; 4096]).unwrap();
    let (good, big) = (pattern(100, 1), vec![9u8; 4097]);
    let parts = [
        WritePart {
            block: 0,
            offset: 0,
            src: &good,
        },
        WritePart {
            block: 0,
            offset: 0,
            src: &big,
        },
        WritePart {
            block: 3,
            offset: 0,
            src: &good,
        },
    ];
    let failed = b
        .write_parts(&queues, &mut [&mut block], &parts)
        .unwrap_err();
    assert!(
        failed.failed.contains(&1) && !failed.failed.contains(&0),
        "{failed:?}"
    );
    assert!(
        failed.failed.contains(&2),
        "a permanent failure stops what has not started"
    );
    assert!(
        matches!(failed.error, Error::OutOfRange { .. }),
        "{}",
        failed.error
    );
    assert_eq!(read_all(b, &block)[..100], good[..]);

    let failed = b
        .write_parts(&[], &mut [&mut block], &parts[..1])
        .unwrap_err();
    assert_eq!(failed.failed, [0]);
    assert!(
        matches!(failed.error, Error::InvalidArgument(_)),
        "{}",
        failed.error
    );
    let mut dst = [0u8; 8];
    let failed = b
        .read_parts(
            &queues,
            &[&block],
            &mut [ReadPart {
                block: 1,
                offset: 0,
                dst: &mut dst,
            }],
        )
        .unwrap_err();
    assert_eq!(failed.failed, [0]);
    assert_eq!(dst, [0u8; 8]);
    b.release(block).unwrap();
}

common::backend_suite!(
    [
        host => crate::common::host(),
        opencl_dev0 => crate::common::opencl(0),
        wgpu => crate::common::wgpu(),
        opencl_dev1 => crate::common::opencl(1),
        cuda_dev0 => crate::common::cuda(0),
    ],
    [scattered_parts_land_exactly, failed_parts_are_named]
);
