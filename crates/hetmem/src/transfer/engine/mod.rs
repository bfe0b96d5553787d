//! [`TransferEngine`]: moves bytes between host memory and one device's blocks with a plan chosen
//! from the size and the backend's capabilities, retrying transient failures chunk by chunk.
//!
//! Planning is a pure function ([`plan`]); the ways of carrying a plan out live in their own
//! files: [`pipeline`], [`batch`], [`peer`], with retries in [`attempts`] and verification in
//! [`verify`].

mod attempts;
mod batch;
mod lane;
mod peer;
mod pipeline;
mod plan;
mod verify;

pub use batch::BatchWrite;
pub(crate) use lane::Lane;
pub use plan::{plan, plan_batch, plan_read, Plan, Strategy, TransferConfig};

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::stats::{Direction, EngineCounters, TransferStats};
use crate::backend::{
    check_block, Backend, BackendId, Capabilities, CopyRegion, DeviceBlock, Queue, ReadPart,
    WritePart,
};
use crate::error::{Error, Result};
use crate::pool::{PinnedConfig, PinnedPool};
use lane::chunks;
use verify::check_crc;

/// Moves bytes between host memory and the blocks of one backend. Cheap to share (`&self` for
/// every transfer, from any thread); each transfer blocks until its data has arrived.
///
/// **Ordering.** A transfer runs after all work enqueued on its queue (the backend's default
/// queue, or a buffer's) before the call — whatever other queues its plan spreads chunks or
/// batch items over: each of those first waits for a marker of that queue. Since every transfer
/// has arrived when the call returns, work enqueued on the queue afterwards runs after it.
pub struct TransferEngine {
    backend: Arc<dyn Backend>,
    /// `backend.id()`, read once: every transfer checks its blocks against it.
    backend_id: BackendId,
    /// Read once: plans are made on every transfer.
    caps: Capabilities,
    /// The default queue first, then the extra queues chunks and batches spread over.
    queues: Vec<Queue>,
    config: TransferConfig,
    /// Page-locked staging memory for pipelined and batched transfers and verification,
    /// reused across transfers (and by `HostPinned` buffers of a context).
    staging: PinnedPool,
    counters: EngineCounters,
    retries: AtomicU64,
    failures: AtomicU64,
}

impl TransferEngine {
    /// An engine over `backend`'s default queue with the default configuration.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self::with_config(backend, TransferConfig::default()).expect("the defaults are valid")
    }

    /// An engine over `backend`'s default queue.
    pub fn with_config(backend: Arc<dyn Backend>, config: TransferConfig) -> Result<Self> {
        config.retry.validate()?;
        if config.chunk_size == 0 || config.pipeline_depth == 0 || config.queues == 0 {
            return Err(Error::invalid(format!(
                "transfer chunk size, pipeline depth and queues must be positive: {config:?}"
            )));
        }
        let caps = backend.capabilities();
        let mut queues = vec![backend.default_queue().clone()];
        for _ in 1..plan::queue_count(&caps, &config) {
            queues.push(backend.create_queue()?);
        }
        Ok(TransferEngine {
            backend_id: backend.id(),
            caps,
            queues,
            // Up to 256 MiB of page-locked memory kept for reuse.
            staging: PinnedPool::with_config(
                backend.clone(),
                PinnedConfig {
                    max_cached_bytes: 256 << 20,
                    ..PinnedConfig::default()
                },
            ),
            backend,
            config,
            counters: EngineCounters::new(),
            retries: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// The queue blocking transfers run on: the backend's default queue.
    fn queue(&self) -> &Queue {
        &self.queues[0]
    }

    /// The queues `parts` parts of one of `lane`'s transfers spread over — its own, then the
    /// engine's extras — with every extra ordered after the work already on the lane's queue
    /// (the user's kernels included): a marker there that each extra waits for. The transfer
    /// blocks until every part has arrived, so work enqueued on the lane's queue afterwards is
    /// ordered after all of it.
    fn queues_for(&self, lane: &Lane<'_>, parts: usize) -> Result<Vec<Queue>> {
        let used = self.queues.len().min(parts).max(1);
        let queues: Vec<Queue> = std::iter::once(lane.queue)
            .chain(&self.queues[1..used])
            .cloned()
            .collect();
        if let [own, extras @ ..] = &queues[..] {
            if !extras.is_empty() {
                let before = self.backend.enqueue_marker(own)?;
                for extra in extras {
                    self.backend.enqueue_wait(extra, &before)?;
                }
            }
        }
        Ok(queues)
    }

    /// The backend transfers go to.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The configuration.
    pub fn config(&self) -> &TransferConfig {
        &self.config
    }

    /// The plan a host↔device transfer of `len` bytes uses.
    pub fn plan(&self, len: usize) -> Plan {
        plan::plan(&self.caps, &self.config, len)
    }

    /// The plan a device→host read of `len` bytes uses (mapped where that reads fastest).
    pub fn plan_read(&self, len: usize) -> Plan {
        plan::plan_read(&self.caps, &self.config, len)
    }

    /// The plan for `len` bytes on `lane`.
    fn plan_on(&self, lane: &Lane<'_>, len: usize) -> Plan {
        let strategy = lane.strategy.unwrap_or(self.config.strategy);
        plan::plan_with(&self.caps, &self.config, len, strategy)
    }

    /// The plan for reading `len` bytes on `lane`.
    fn plan_read_on(&self, lane: &Lane<'_>, len: usize) -> Plan {
        let strategy = lane.strategy.unwrap_or(self.config.strategy);
        plan::plan_read_with(&self.caps, &self.config, len, strategy)
    }

    /// The pool of page-locked memory staged transfers use (shared with the `HostPinned`
    /// buffers of a context).
    pub fn staging_pool(&self) -> &PinnedPool {
        &self.staging
    }

    /// Statistics since the engine was made.
    pub fn stats(&self) -> TransferStats {
        let ([host_to_device, device_to_host, device_to_device], in_flight) =
            self.counters.snapshot();
        TransferStats {
            host_to_device,
            device_to_host,
            device_to_device,
            retries: self.retries.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            in_flight,
        }
    }

    /// Copies `src` into `dst` at byte `offset`. On failure the destination range holds
    /// unspecified bytes (the source is untouched), and the error says whether it was permanent.
    pub fn write(&self, dst: &mut DeviceBlock, offset: usize, src: &[u8]) -> Result<()> {
        self.write_on(&Lane::new(self.queue(), None), dst, offset, src)
    }

    /// [`TransferEngine::write`] on `lane`.
    pub(crate) fn write_on(
        &self,
        lane: &Lane<'_>,
        dst: &mut DeviceBlock,
        offset: usize,
        src: &[u8],
    ) -> Result<()> {
        check_block(
            self.backend_id,
            "transfer destination",
            dst,
            offset,
            src.len(),
        )?;
        if src.len() <= self.config.direct_max && !self.config.verify {
            // The common small write: one call, planned by a comparison.
            return self.run(Direction::HostToDevice, src.len(), || {
                self.retrying(None, || self.backend.write(lane.queue, dst, offset, src))?;
                lane.advance(src.len());
                Ok(())
            });
        }
        self.run(Direction::HostToDevice, src.len(), || {
            self.until_intact(lane, || {
                match self.plan_on(lane, src.len()) {
                    Plan::Pipelined { chunk, depth, .. } => {
                        self.write_pipelined(lane, dst, offset, src, chunk, depth)?
                    }
                    // A mapping refused at run time falls through to a direct call.
                    Plan::Mapped
                        if self.retrying(None, || {
                            self.backend.write_mapped(
                                lane.queue,
                                dst,
                                offset,
                                src.len(),
                                &mut |bytes| bytes.copy_from_slice(src),
                            )
                        })? =>
                    {
                        lane.advance(src.len())
                    }
                    Plan::Chunked { chunk, queues, .. } => {
                        let parts: Vec<WritePart> = chunks(src.len(), chunk)
                            .into_iter()
                            .map(|r| WritePart {
                                block: 0,
                                offset: offset + r.start,
                                src: &src[r],
                            })
                            .collect();
                        self.write_parts(lane, &mut [&mut *dst], &parts, self.chunk_wave(), queues)?
                    }
                    _ => {
                        self.retrying(None, || self.backend.write(lane.queue, dst, offset, src))?;
                        lane.advance(src.len());
                    }
                }
                self.verify(lane, dst, offset, src)
            })
        })
    }

    /// Copies from `src` at byte `offset` into `dst`.
    pub fn read(&self, src: &DeviceBlock, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.read_on(&Lane::new(self.queue(), None), src, offset, dst)
    }

    /// [`TransferEngine::read`] on `lane`.
    pub(crate) fn read_on(
        &self,
        lane: &Lane<'_>,
        src: &DeviceBlock,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<()> {
        check_block(self.backend_id, "transfer source", src, offset, dst.len())?;
        self.run(Direction::DeviceToHost, dst.len(), || {
            self.until_intact(lane, || {
                match self.plan_read_on(lane, dst.len()) {
                    Plan::Pipelined { chunk, depth, .. } => {
                        self.read_pipelined(lane, src, offset, dst, chunk, depth)?
                    }
                    // A mapping refused at run time falls through to a direct call.
                    Plan::Mapped
                        if self.retrying(None, || {
                            let len = dst.len();
                            self.backend
                                .read_mapped(lane.queue, src, offset, len, &mut |bytes| {
                                    dst.copy_from_slice(bytes)
                                })
                        })? =>
                    {
                        lane.advance(dst.len())
                    }
                    Plan::Chunked { chunk, queues, .. } => {
                        let mut parts: Vec<ReadPart> = dst
                            .chunks_mut(chunk)
                            .enumerate()
                            .map(|(i, d)| ReadPart {
                                block: 0,
                                offset: offset + i * chunk,
                                dst: d,
                            })
                            .collect();
                        self.read_parts(lane, &[src], &mut parts, self.chunk_wave(), queues)?
                    }
                    _ => {
                        self.retrying(None, || self.backend.read(lane.queue, src, offset, dst))?;
                        lane.advance(dst.len());
                    }
                }
                if self.config.verify {
                    let again = self.read_again(lane, src, offset, dst.len())?;
                    check_crc("device-to-host transfer", &again, dst)?;
                }
                Ok(())
            })
        })
    }

    /// Repeats `pattern` over `len` bytes of `dst` at `offset` on the device and waits for it,
    /// retrying transient failures like a transfer (a fill can be redone). The pattern rule is
    /// [`Backend::fill`](crate::backend::Backend::fill)'s. Not counted as a transfer.
    pub fn fill(
        &self,
        dst: &mut DeviceBlock,
        offset: usize,
        len: usize,
        pattern: &[u8],
    ) -> Result<()> {
        self.fill_on(&Lane::new(self.queue(), None), dst, offset, len, pattern)
    }

    /// [`TransferEngine::fill`] on `lane`.
    pub(crate) fn fill_on(
        &self,
        lane: &Lane<'_>,
        dst: &mut DeviceBlock,
        offset: usize,
        len: usize,
        pattern: &[u8],
    ) -> Result<()> {
        self.retrying(None, || {
            (self.backend)
                .fill(lane.queue, dst, offset, len, pattern)?
                .wait()
        })
    }

    /// Copies `len` bytes between two blocks of this engine's device.
    pub fn copy(
        &self,
        src: &DeviceBlock,
        src_offset: usize,
        dst: &mut DeviceBlock,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        let lane = Lane::new(self.queue(), None);
        self.copy_on(&lane, src, src_offset, dst, dst_offset, len)
    }

    /// [`TransferEngine::copy`] on `lane`.
    pub(crate) fn copy_on(
        &self,
        lane: &Lane<'_>,
        src: &DeviceBlock,
        src_offset: usize,
        dst: &mut DeviceBlock,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        check_block(self.backend_id, "copy source", src, src_offset, len)?;
        check_block(self.backend_id, "copy destination", dst, dst_offset, len)?;
        self.run(Direction::DeviceToDevice, len, || {
            self.retrying(None, || {
                self.backend
                    .copy(
                        lane.queue,
                        src,
                        dst,
                        CopyRegion {
                            src_offset,
                            dst_offset,
                            len,
                        },
                    )?
                    .wait()
            })?;
            lane.advance(len);
            Ok(())
        })
    }
}

impl fmt::Debug for TransferEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransferEngine")
            .field("backend", &self.backend)
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}
