//! Unified buffers against a `Vec<u32>` model: any sequence of operations — in range or not,
//! through views, guards, syncs and asynchronous transfers, on mirrored or shared residency,
//! with any transfer strategy — leaves each buffer reading exactly as its model, and bad input
//! is an error that changes nothing.
#![no_main]

use std::sync::Arc;

use hetmem::buffer::Residency;
use hetmem::pool::CachingAllocator;
use hetmem::transfer::{Strategy, TransferConfig};
use hetmem::UnifiedBuffer;
use hetmem::backend::{Backend, HostBackend};
use hetmem::buffer::BufferContext;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    mirrored: bool,
    strategy: u8,
    lens: (u8, u8),
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Write {
        which: bool,
        offset: u16,
        data: Vec<u32>,
    },
    Read {
        which: bool,
        offset: u16,
        len: u8,
    },
    Fill {
        which: bool,
        value: u32,
        start: u16,
        end: u16,
    },
    Resize {
        which: bool,
        len: u16,
    },
    ToDevice {
        which: bool,
    },
    ToHost {
        which: bool,
    },
    DeviceWrite {
        which: bool,
        offset: u16,
        data: Vec<u32>,
    },
    HostWrite {
        which: bool,
        start: u16,
        end: u16,
        value: u32,
    },
    ViewWrite {
        which: bool,
        start: u16,
        end: u16,
        offset: u16,
        data: Vec<u32>,
    },
    CopyFrom {
        which: bool,
    },
    WriteAsync {
        which: bool,
        offset: u16,
        data: Vec<u32>,
        wait: bool,
    },
    ReadAsync {
        which: bool,
        start: u16,
        end: u16,
    },
    Compact {
        which: bool,
    },
}

/// `start..end` when it lies in `0..len` and is not empty.
fn in_range(start: usize, end: usize, len: usize) -> bool {
    start < end && end <= len
}

struct Pair {
    buffers: [UnifiedBuffer<u32>; 2],
    models: [Vec<u32>; 2],
}

impl Pair {
    /// Buffer `which` and its model.
    fn pick(&mut self, which: bool) -> (&mut UnifiedBuffer<u32>, &mut Vec<u32>) {
        let i = usize::from(which);
        (&mut self.buffers[i], &mut self.models[i])
    }

    fn run(&mut self, op: Op, backend: &Arc<dyn Backend>) {
        let at = |which: bool| usize::from(which);
        match op {
            Op::Write {
                which,
                offset,
                data,
            } => {
                let (b, m) = self.pick(which);
                let (offset, end) = (offset as usize, offset as usize + data.len());
                let ok = b.write(offset, &data).is_ok();
                assert_eq!(ok, in_range(offset, end, m.len()));
                if ok {
                    m[offset..end].copy_from_slice(&data);
                }
            }
            Op::Read { which, offset, len } => {
                let (b, m) = self.pick(which);
                let (offset, end) = (offset as usize, offset as usize + len as usize);
                let mut out = vec![0; len as usize];
                let ok = b.read(offset, &mut out).is_ok();
                assert_eq!(ok, in_range(offset, end, m.len()));
                if ok {
                    assert_eq!(out, m[offset..end]);
                }
            }
            Op::Fill {
                which,
                value,
                start,
                end,
            } => {
                let (b, m) = self.pick(which);
                let (start, end) = (start as usize, end as usize);
                let ok = b.fill(value, start..end).is_ok();
                assert_eq!(ok, start <= end && end <= m.len());
                if ok {
                    m[start..end].fill(value);
                }
            }
            Op::Resize { which, len } => {
                let (b, m) = self.pick(which);
                let len = len as usize % 4096;
                let ok = b.resize(len).is_ok();
                assert_eq!(ok, len > 0);
                if ok {
                    m.resize(len, 0);
                }
            }
            Op::ToDevice { which } => {
                self.buffers[at(which)]
                    .prefetch_to_device()
                    .unwrap()
                    .wait()
                    .unwrap();
            }
            Op::ToHost { which } => {
                self.buffers[at(which)]
                    .prefetch_to_host()
                    .unwrap()
                    .wait()
                    .unwrap();
            }
            Op::DeviceWrite {
                which,
                offset,
                data,
            } => {
                let (b, m) = self.pick(which);
                let (offset, end) = (offset as usize, offset as usize + data.len());
                if !in_range(offset, end, m.len()) {
                    return;
                }
                let mut guard = b.device_mut().unwrap();
                let byte = guard.offset() + offset * 4;
                let queue = guard.queue().clone();
                let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_ne_bytes()).collect();
                backend
                    .write(&queue, guard.block_mut(), byte, &bytes)
                    .unwrap();
                m[offset..end].copy_from_slice(&data);
            }
            Op::HostWrite {
                which,
                start,
                end,
                value,
            } => {
                let (b, m) = self.pick(which);
                let (start, end) = (start as usize, end as usize);
                let ok = match b.host_mut_range(start..end) {
                    Ok(mut guard) => {
                        guard.fill(value);
                        true
                    }
                    Err(_) => false,
                };
                assert_eq!(ok, start <= end && end <= m.len());
                if ok {
                    m[start..end].fill(value);
                }
            }
            Op::ViewWrite {
                which,
                start,
                end,
                offset,
                data,
            } => {
                let (b, m) = self.pick(which);
                let (start, end) = (start as usize, end as usize);
                let Ok(mut view) = b.slice_mut(start..end) else {
                    assert!(!(start <= end && end <= m.len()));
                    return;
                };
                let (offset, stop) = (offset as usize, offset as usize + data.len());
                let ok = view.write(offset, &data).is_ok();
                assert_eq!(ok, in_range(offset, stop, end - start));
                if ok {
                    m[start + offset..start + stop].copy_from_slice(&data);
                }
            }
            Op::CopyFrom { which } => {
                let [a, b] = &mut self.buffers;
                let (dst, src) = if which { (b, &*a) } else { (a, &*b) };
                let ok = dst.copy_from(src).is_ok();
                let [ma, mb] = &mut self.models;
                let (mdst, msrc) = if which { (mb, &*ma) } else { (ma, &*mb) };
                assert_eq!(ok, mdst.len() == msrc.len());
                if ok {
                    mdst.copy_from_slice(msrc);
                }
            }
            Op::WriteAsync {
                which,
                offset,
                data,
                wait,
            } => {
                let (b, m) = self.pick(which);
                let (offset, end) = (offset as usize, offset as usize + data.len());
                match b.write_async(offset, data.clone()) {
                    Ok(transfer) => {
                        assert!(in_range(offset, end, m.len()));
                        m[offset..end].copy_from_slice(&data);
                        if wait {
                            assert_eq!(transfer.wait().unwrap(), data, "the data comes back");
                        }
                    }
                    Err(_) => assert!(!in_range(offset, end, m.len())),
                }
            }
            Op::ReadAsync { which, start, end } => {
                let (b, m) = self.pick(which);
                let (start, end) = (start as usize, end as usize);
                match b.read_async(start..end) {
                    Ok(transfer) => assert_eq!(transfer.wait().unwrap(), m[start..end]),
                    Err(_) => assert!(!in_range(start, end, m.len())),
                }
            }
            Op::Compact { which } => self.buffers[at(which)].compact().unwrap(),
        }
    }

    fn check(&self) {
        for (b, m) in self.buffers.iter().zip(&self.models) {
            assert_eq!(&b.to_vec().unwrap(), m);
        }
    }
}

fuzz_target!(|input: Input| {
    let backend: Arc<dyn Backend> = Arc::new(HostBackend::new());
    let strategy = [
        Strategy::Auto,
        Strategy::Direct,
        Strategy::Chunked,
        Strategy::Pipelined,
        Strategy::Mapped,
    ][input.strategy as usize % 5];
    let transfers = TransferConfig {
        direct_max: 64,
        chunk_size: 256,
        strategy,
        ..TransferConfig::default()
    };
    let context = BufferContext::with_transfers(
        CachingAllocator::new(backend.clone()),
        CachingAllocator::new(Arc::new(HostBackend::new())),
        transfers,
    )
    .unwrap();
    let residency = if input.mirrored {
        Residency::Mirrored
    } else {
        Residency::Shared
    };
    let lens = [1 + input.lens.0 as usize * 4, 1 + input.lens.1 as usize * 4];
    let mut pair = Pair {
        buffers: lens.map(|len| context.alloc_with(len, residency).unwrap()),
        models: lens.map(|len| vec![0; len]),
    };
    for op in input.ops.into_iter().take(64) {
        pair.run(op, &backend);
        pair.check();
    }
});
