//! 1000 random interleavings of user device work (on the buffer's queue and on a queue of the
//! user's own, sometimes behind a gate), guards, writes, syncs and prefetches whose handles are
//! waited for or dropped, owned asynchronous transfers, compaction and drops, checked against a
//! plain `Vec` after every step that reads: the contents are always exact.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{device_contents, Gate};
use hetmem::backend::Backend;
use hetmem::transfer::{Strategy, TransferConfig};
use hetmem::MemoryManager;

const CASES: u64 = 1000;
const STEPS: usize = 12;

/// Managers whose transfers take every plan at these small sizes.
fn managers(b: &Arc<dyn Backend>) -> Vec<MemoryManager> {
    [
        Strategy::Auto,
        Strategy::Chunked,
        Strategy::Pipelined,
        Strategy::Mapped,
    ]
    .into_iter()
    .map(|strategy| {
        MemoryManager::builder()
            .backend(b.clone())
            .transfers(TransferConfig {
                strategy,
                direct_max: 4 << 10,
                chunk_size: 16 << 10,
                ..TransferConfig::default()
            })
            .build()
            .unwrap()
    })
    .collect()
}

/// Panics with where `got` first differs from `want`.
fn same(got: &[u32], want: &[u32], what: impl Fn() -> String) {
    if let Some(i) = got.iter().zip(want).position(|(g, w)| g != w) {
        let bad = got[i..]
            .iter()
            .zip(&want[i..])
            .take_while(|(g, w)| g != w)
            .count();
        panic!(
            "{}: element {i} is {} where {} was expected ({bad} wrong in a row, length {})",
            what(),
            got[i],
            want[i],
            got.len()
        );
    }
}

fn random_interleavings_match_a_model(b: &Arc<dyn Backend>) {
    let managers = managers(b);
    let own = b.create_queue().unwrap();
    for case in 0..CASES {
        let mut rng = fastrand::Rng::with_seed(case);
        let m = &managers[rng.usize(..managers.len())];
        let n = [1024, 16 << 10][rng.usize(..2)];
        let mut model: Vec<u32> = (0..n as u32).map(|i| i ^ case as u32).collect();
        let mut buf = m.from_slice(&model).unwrap();
        let mut log = Vec::new();
        for _ in 0..STEPS {
            let (a, z) = {
                let (x, y) = (rng.usize(..=n), rng.usize(..=n));
                (x.min(y), x.max(y))
            };
            let v = rng.u32(..);
            let op = rng.usize(..15);
            log.push((op, a, z));
            let what = || format!("case {case}, steps {log:?}");
            match op {
                // The user's kernel on the buffer's queue, not waited for; sometimes behind a gate.
                0 => {
                    let mut view = buf.slice_mut(a..z).unwrap();
                    let mut d = view.device_mut().unwrap();
                    let (q, off, len) = (d.queue().clone(), d.offset(), d.byte_len());
                    let _gate = rng
                        .bool()
                        .then(|| Gate::close(b, &q, Duration::from_millis(1)));
                    if len > 0 {
                        let _ = b
                            .fill(&q, d.block_mut(), off, len, &v.to_ne_bytes())
                            .unwrap();
                    }
                    model[a..z].fill(v);
                }
                // The user's kernel on a queue of their own, declared with `record`.
                1 if z > a => {
                    let mut d = buf.device_mut().unwrap();
                    d.ready_on(&own).unwrap();
                    let off = d.offset() + a * 4;
                    let event = b
                        .fill(&own, d.block_mut(), off, (z - a) * 4, &v.to_ne_bytes())
                        .unwrap();
                    d.record(&event).unwrap();
                    model[a..z].fill(v);
                }
                1 => {}
                2 => {
                    let mut h = buf.host_mut_range(a..z).unwrap();
                    for (i, x) in h.iter_mut().enumerate() {
                        *x = v.wrapping_add(i as u32);
                    }
                    for (i, x) in model[a..z].iter_mut().enumerate() {
                        *x = v.wrapping_add(i as u32);
                    }
                }
                3 if z > a => {
                    let src: Vec<u32> = (0..(z - a) as u32).map(|i| v ^ i).collect();
                    buf.write(a, &src).unwrap();
                    model[a..z].copy_from_slice(&src);
                }
                3 => {}
                4 => {
                    buf.fill(v, a..z).unwrap();
                    model[a..z].fill(v);
                }
                5..=7 => {
                    let handle = match op {
                        5 => buf.sync(),
                        6 => buf.prefetch_to_host(),
                        _ => buf.prefetch_to_device(),
                    }
                    .unwrap();
                    if rng.bool() {
                        handle.wait().unwrap();
                    }
                }
                8 => same(&buf.host().unwrap(), &model, what),
                9 => {
                    let mut out = vec![0u32; z - a];
                    buf.read(a, &mut out).unwrap();
                    same(&out, &model[a..z], what);
                }
                10 => same(&device_contents(b, &buf), &model, what),
                11 => buf.compact().unwrap(),
                12 => buf = m.from_slice(&model).unwrap(),
                13 if z > a => {
                    let src: Vec<u32> = (0..(z - a) as u32).map(|i| v.rotate_left(i)).collect();
                    let pending = buf.write_async(a, src.clone()).unwrap();
                    if rng.bool() {
                        assert_eq!(pending.wait().unwrap(), src, "{}", what());
                    }
                    model[a..z].copy_from_slice(&src);
                }
                13 => {}
                _ => {
                    let got = buf.read_async(a..z).unwrap().wait().unwrap();
                    same(&got, &model[a..z], what);
                }
            }
        }
        same(&buf.to_vec().unwrap(), &model, || {
            format!("case {case}, steps {log:?}")
        });
    }
}

common::backend_suite!(
    [
        host => crate::common::host(),
        opencl_dev0 => crate::common::opencl(0),
        wgpu => crate::common::wgpu(),
        cuda_dev0 => crate::common::cuda(0),
    ],
    [random_interleavings_match_a_model]
);
