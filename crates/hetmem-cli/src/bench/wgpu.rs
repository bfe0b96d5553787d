//! Figures only a wgpu device gives (other backends produce no result), each against what a
//! wgpu user writes by hand on buffers of their own: `wgpu.transfer.h2d.*` (the engine's write,
//! until the device has it, against `Queue::write_buffer` + `submit` + a wait),
//! `wgpu.transfer.d2h.*` (the engine's read against a copy into a mappable buffer kept for
//! the purpose, `map_async`, a wait and the copy out), `wgpu.alloc.pool_hit` (a pooled 1 MiB
//! block against `create_buffer` + drop) and `wgpu.transfer.batch.h2d.4KiBx1000` (the
//! engine's batch against 1000 × `write_buffer` + `submit`, then a wait).

use std::sync::Arc;

use hetmem::backend::Backend;
use hetmem::Result;

use super::report::Measurement;
use super::transfer::SIZES;
use super::Suite;

pub fn register(suite: &mut Suite) {
    for way in ["h2d", "d2h"] {
        for (len, label) in SIZES {
            suite.case_of_several(&[&format!("wgpu.transfer.{way}.{label}")], move |b, e| {
                measured::transfer(b, e, way, len, label)
            });
        }
    }
    suite.case_of_several(&["wgpu.alloc.pool_hit"], measured::pool_hit);
    suite.case_of_several(&["wgpu.transfer.batch.h2d.4KiBx1000"], measured::batch);
}

#[cfg(feature = "wgpu")]
mod measured {
    use std::sync::mpsc;

    use hetmem::backend::WgpuBackend;
    use hetmem::pool::CachingAllocator;
    use hetmem::transfer::TransferEngine;

    use super::super::harness::{compare, compare_auto, latency, Effort, Side};
    use super::super::report::Better;
    use super::super::transfer::write_batch;
    use super::*;

    fn wgpu_of(backend: &Arc<dyn Backend>) -> Option<&WgpuBackend> {
        backend.as_any().downcast_ref::<WgpuBackend>()
    }

    /// A storage buffer of the user's own, as hetmem's blocks are made.
    fn storage(device: &wgpu::Device, len: usize) -> wgpu::Buffer {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("baseline"),
            size: len as u64,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    fn wait(device: &wgpu::Device) -> Result<()> {
        device
            .poll(wgpu::PollType::Wait)
            .map(drop)
            .map_err(|e| hetmem::Error::InvalidArgument(format!("wgpu poll: {e}")))
    }

    /// The hand-written read: into a mappable buffer, mapped, waited for, copied out.
    fn raw_read(
        gpu: &WgpuBackend,
        src: &wgpu::Buffer,
        staging: &wgpu::Buffer,
        out: &mut [u8],
    ) -> Result<()> {
        let len = out.len() as u64;
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(src, 0, staging, 0, len);
        gpu.wgpu_queue().submit([encoder.finish()]);
        let (sent, mapped) = mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, ..len, move |r| drop(sent.send(r)));
        wait(gpu.device())?;
        let outcome = mapped
            .recv()
            .map_err(|_| hetmem::Error::InvalidArgument("the map callback never ran".into()))?;
        outcome.map_err(|e| hetmem::Error::InvalidArgument(format!("map_async: {e}")))?;
        out.copy_from_slice(&staging.get_mapped_range(..len));
        staging.unmap();
        Ok(())
    }

    pub fn transfer(
        backend: &Arc<dyn Backend>,
        effort: Effort,
        way: &str,
        len: usize,
        label: &str,
    ) -> Result<Vec<Measurement>> {
        let Some(gpu) = wgpu_of(backend) else {
            return Ok(Vec::new());
        };
        let engine = TransferEngine::new(backend.clone());
        let q = backend.default_queue().clone();
        let mut host = vec![7u8; len];
        let mut block = backend.allocate(len)?;
        engine.write(&mut block, 0, &host)?;
        let theirs = storage(gpu.device(), len);
        gpu.wgpu_queue().write_buffer(&theirs, 0, &host);
        let staging = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("baseline read-back"),
            size: len as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let timed = compare_auto(effort, |side| match (way, side) {
            ("h2d", Side::Hetmem) => {
                engine.write(&mut block, 0, &host)?;
                backend.enqueue_marker(&q)?.wait()
            }
            ("h2d", Side::Baseline) => {
                gpu.wgpu_queue().write_buffer(&theirs, 0, &host);
                gpu.wgpu_queue().submit([]);
                wait(gpu.device())
            }
            (_, Side::Hetmem) => engine.read(&block, 0, &mut host),
            (_, Side::Baseline) => raw_read(gpu, &theirs, &staging, &mut host),
        });
        backend.release(block)?;
        let (ours, raw) = timed?.medians();
        let gbs = |secs: f64| len as f64 / secs / 1e9;
        let baseline = match way {
            "h2d" => "wgpu write_buffer + submit + wait",
            _ => "wgpu copy to a kept MAP_READ buffer + map_async + wait",
        };
        Ok(vec![Measurement::new(
            &format!("wgpu.transfer.{way}.{label}"),
            gbs(ours),
            "GB/s",
            Better::Higher,
            baseline,
            gbs(raw),
        )])
    }

    pub fn pool_hit(backend: &Arc<dyn Backend>, effort: Effort) -> Result<Vec<Measurement>> {
        let Some(gpu) = wgpu_of(backend) else {
            return Ok(Vec::new());
        };
        let pool = CachingAllocator::new(backend.clone());
        drop(pool.allocate(1 << 20)?);
        let timed = compare_auto(effort, |side| {
            match side {
                Side::Hetmem => drop(pool.allocate(1 << 20)?),
                Side::Baseline => drop(storage(gpu.device(), 1 << 20)),
            }
            Ok(())
        })?;
        Ok(vec![latency(
            "wgpu.alloc.pool_hit",
            &timed,
            "wgpu create_buffer (1 MiB storage) + drop",
            "ns",
        )])
    }

    pub fn batch(backend: &Arc<dyn Backend>, effort: Effort) -> Result<Vec<Measurement>> {
        const N: usize = 1000;
        const LEN: usize = 4 << 10;
        let Some(gpu) = wgpu_of(backend) else {
            return Ok(Vec::new());
        };
        let engine = TransferEngine::new(backend.clone());
        let q = backend.default_queue().clone();
        let mut blocks = (0..N)
            .map(|_| backend.allocate(LEN))
            .collect::<Result<Vec<_>>>()?;
        let theirs: Vec<wgpu::Buffer> = (0..N).map(|_| storage(gpu.device(), LEN)).collect();
        let sources: Vec<Vec<u8>> = (0..N).map(|i| vec![i as u8; LEN]).collect();
        let timed = compare(effort.samples, 1, |side| match side {
            Side::Hetmem => {
                write_batch(&engine, &mut blocks, &sources)?;
                backend.enqueue_marker(&q)?.wait()
            }
            Side::Baseline => {
                for (dst, src) in theirs.iter().zip(&sources) {
                    gpu.wgpu_queue().write_buffer(dst, 0, src);
                    gpu.wgpu_queue().submit([]);
                }
                wait(gpu.device())
            }
        });
        for block in blocks {
            backend.release(block)?;
        }
        Ok(vec![latency(
            "wgpu.transfer.batch.h2d.4KiBx1000",
            &timed?,
            "1000 × wgpu write_buffer + submit, one wait",
            "us",
        )])
    }
}

#[cfg(not(feature = "wgpu"))]
mod measured {
    use super::super::harness::Effort;
    use super::*;

    pub fn transfer(
        _: &Arc<dyn Backend>,
        _: Effort,
        _: &str,
        _: usize,
        _: &str,
    ) -> Result<Vec<Measurement>> {
        Ok(Vec::new())
    }

    pub fn pool_hit(_: &Arc<dyn Backend>, _: Effort) -> Result<Vec<Measurement>> {
        Ok(Vec::new())
    }

    pub fn batch(_: &Arc<dyn Backend>, _: Effort) -> Result<Vec<Measurement>> {
        Ok(Vec::new())
    }
}
