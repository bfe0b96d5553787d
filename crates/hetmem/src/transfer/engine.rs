//! [`TransferEngine`]: moves bytes between host memory and one device's blocks with a plan chosen
//! from the size and the backend's capabilities, retrying transient failures chunk by chunk.

use crate::sync::Unpoison;
use std::cell::Cell;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::retry::RetryPolicy;
use super::stats::{Direction, DirectionCounters, TransferStats};
use crate::backend::{
    check_block, Backend, Capabilities, DeviceBlock, Event, PartFailures, Queue, ReadPart,
    StagingBuffer, UserEvent, WritePart,
};
use crate::error::{Error, Result};

/// How transfers are carried out. The defaults were chosen by measurement on PoCL (see
/// `benches/transfer.rs` and the architecture document).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransferConfig {
    /// Transfers up to this many bytes are one direct call.
    pub direct_max: usize,
    /// Bytes per chunk of chunked and pipelined transfers.
    pub chunk_size: usize,
    /// Staging buffers in the pipeline's ring: how many chunks may be in flight at once.
    pub pipeline_depth: usize,
    /// Device queues the chunks of one transfer, or the writes of one batch, are spread over
    /// (the engine's own queue and `queues - 1` more), so they may run at once.
    pub queues: usize,
    /// Which plan large transfers use.
    pub strategy: Strategy,
    /// How transient failures are retried.
    pub retry: RetryPolicy,
    /// Check every transfer's destination against its source with a CRC-32 (costs a read back).
    /// A write is compared with a checksum of the caller's bytes, read back directly; a read
    /// with the device's bytes fetched again through staging, a second path: a corruption is
    /// caught unless it repeats identically on both paths.
    pub verify: bool,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            direct_max: 1 << 20,
            chunk_size: 4 << 20,
            pipeline_depth: 3,
            queues: 2,
            strategy: Strategy::Auto,
            retry: RetryPolicy::default(),
            verify: false,
        }
    }
}

/// Which plan transfers larger than `direct_max` use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Pipelined where staging is page-locked memory in front of a separate device (a discrete
    /// GPU); chunked over several queues on a device that shares memory with the host (PoCL);
    /// direct where blocks are host memory.
    #[default]
    Auto,
    /// Always one call.
    Direct,
    /// Chunks of `chunk_size` bytes spread over the engine's queues, enqueued together.
    Chunked,
    /// Through the ring of staging buffers, copying one chunk while the device moves another.
    Pipelined,
    /// Copied in place through a host mapping of the block (zero-copy where the device shares
    /// memory with the host); direct where the backend cannot map.
    Mapped,
}

/// How one transfer will be carried out; `Display` explains it in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// One backend call.
    Direct,
    /// Chunks spread over several queues, all enqueued before one wait per queue; a failed
    /// chunk is retried alone.
    Chunked {
        /// Bytes per chunk.
        chunk: usize,
        /// Number of chunks.
        chunks: usize,
        /// Queues the chunks are spread over.
        queues: usize,
    },
    /// Chunks staged through a ring of page-locked buffers: the host copies chunk k+1 while the
    /// device moves chunk k.
    Pipelined {
        /// Bytes per chunk.
        chunk: usize,
        /// Number of chunks.
        chunks: usize,
        /// Staging buffers in the ring.
        depth: usize,
    },
    /// One copy through a host mapping of the destination or source block.
    Mapped,
    /// Many small writes enqueued straight from the caller's memory without waiting, spread
    /// over several queues, and waited for once per queue.
    Batched {
        /// Writes in the batch.
        items: usize,
        /// Bytes in all.
        bytes: usize,
        /// Queues the writes are spread over.
        queues: usize,
    },
    /// Many small writes copied into one page-locked staging buffer, each enqueued from there
    /// without waiting, and waited for once: for devices that copy asynchronously only from
    /// page-locked memory (discrete GPUs).
    BatchedStaged {
        /// Writes in the batch.
        items: usize,
        /// Bytes in all.
        bytes: usize,
    },
    /// Between two devices, one copy from one to the other without host memory in between
    /// ([`Backend::copy_to_peer`](crate::Backend::copy_to_peer)).
    Peer,
    /// Between two devices: read from one into host memory, write to the other, chunk by chunk.
    ThroughHost {
        /// Bytes per chunk.
        chunk: usize,
        /// Number of chunks.
        chunks: usize,
    },
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Plan::Direct => write!(f, "direct: one backend call"),
            Plan::Mapped => write!(f, "mapped: one copy through a host mapping of the block"),
            Plan::Chunked {
                chunk,
                chunks,
                queues,
            } => write!(
                f,
                "chunked: {chunks} chunks of up to {chunk} bytes over {queues} queues, enqueued together"
            ),
            Plan::Pipelined { chunk, chunks, depth } => write!(
                f,
                "pipelined: {chunks} chunks of up to {chunk} bytes through a ring of {depth} staging buffers"
            ),
            Plan::Batched {
                items,
                bytes,
                queues,
            } => write!(
                f,
                "batched: {items} writes ({bytes} bytes) enqueued together over {queues} queues, one wait each"
            ),
            Plan::BatchedStaged { items, bytes } => write!(
                f,
                "batched through staging: {items} writes ({bytes} bytes) through one staging buffer, one wait"
            ),
            Plan::Peer => write!(
                f,
                "peer: one copy from one device to the other, not through host memory"
            ),
            Plan::ThroughHost { chunk, chunks } => write!(
                f,
                "through host: {chunks} chunks of up to {chunk} bytes read from one device and written to the other"
            ),
        }
    }
}

/// One write of a batch.
#[derive(Debug)]
pub struct BatchWrite<'a> {
    /// Destination block.
    pub dst: &'a mut DeviceBlock,
    /// Byte offset in the block.
    pub offset: usize,
    /// Bytes to write.
    pub src: &'a [u8],
}

/// Moves bytes between host memory and the blocks of one backend. Cheap to share (`&self` for
/// every transfer, from any thread); each transfer blocks until its data has arrived.
///
/// **Ordering.** A transfer runs after all work enqueued on its queue (the backend's default
/// queue, or a buffer's) before the call — whatever other queues its plan spreads chunks or
/// batch items over: each of those first waits for a marker of that queue. Since every transfer
/// has arrived when the call returns, work enqueued on the queue afterwards runs after it.
pub struct TransferEngine {
    backend: Arc<dyn Backend>,
    /// Read once: plans are made on every transfer.
    caps: Capabilities,
    /// The default queue first, then the extra queues chunks and batches spread over.
    queues: Vec<Queue>,
    config: TransferConfig,
    /// Chunk-sized staging buffers, reused across transfers.
    ring: Mutex<Vec<StagingBuffer>>,
    /// The largest batch staging buffer so far, reused.
    batch: Mutex<Option<StagingBuffer>>,
    counters: DirectionCounters,
    retries: AtomicU64,
    failures: AtomicU64,
    in_flight: AtomicU64,
}

/// Decrements the in-flight gauge when a transfer ends, however it ends.
struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where one transfer runs, and whom it tells how far it got.
pub(crate) struct Lane<'a> {
    queue: &'a Queue,
    /// Called with the bytes done so far after each chunk.
    progress: Option<&'a (dyn Fn(usize) + Sync)>,
    done: Cell<usize>,
    /// Overrides the engine's configured strategy for large transfers.
    strategy: Option<Strategy>,
}

impl<'a> Lane<'a> {
    /// A lane on `queue` that reports progress to `progress`.
    pub(crate) fn new(queue: &'a Queue, progress: Option<&'a (dyn Fn(usize) + Sync)>) -> Self {
        Lane {
            queue,
            progress,
            done: Cell::new(0),
            strategy: None,
        }
    }

    /// This lane's large transfers use `strategy` whatever the engine's configuration says.
    pub(crate) fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = Some(strategy);
        self
    }

    /// Starts counting again: the transfer is being redone.
    fn restart(&self) {
        self.done.set(0);
    }

    /// Records `bytes` more done.
    fn advance(&self, bytes: usize) {
        let done = self.done.get() + bytes;
        self.done.set(done);
        if let Some(report) = self.progress {
            report(done);
        }
    }
}

/// A chunked transfer waits after this many chunks per queue (one wave) and reports progress:
/// waiting costs about 50 µs on PoCL, a wave of 4 MiB chunks takes milliseconds.
const CHUNKS_PER_QUEUE_PER_WAVE: usize = 4;

/// The chunk ranges of `len` bytes.
fn chunks(len: usize, chunk: usize) -> Vec<Range<usize>> {
    (0..len)
        .step_by(chunk)
        .map(|s| s..(s + chunk).min(len))
        .collect()
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
        // Where blocks are host memory every call is a memcpy on the calling thread: more
        // queues would change nothing.
        if !caps.host_addressable {
            for _ in 1..config.queues {
                queues.push(backend.create_queue()?);
            }
        }
        Ok(TransferEngine {
            caps,
            queues,
            backend,
            config,
            ring: Mutex::new(Vec::new()),
            batch: Mutex::new(None),
            counters: DirectionCounters::default(),
            retries: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
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
        self.plan_with(len, self.config.strategy)
    }

    /// The plan for `len` bytes on `lane`.
    fn plan_on(&self, lane: &Lane<'_>, len: usize) -> Plan {
        self.plan_with(len, lane.strategy.unwrap_or(self.config.strategy))
    }

    /// The plan for `len` bytes with `strategy` for large transfers.
    fn plan_with(&self, len: usize, strategy: Strategy) -> Plan {
        let caps = self.caps;
        let c = &self.config;
        let strategy = match strategy {
            _ if len <= c.direct_max => Strategy::Direct,
            // Staging pays off where it is DMA-able memory in front of a separate device; on
            // unified memory (PoCL: measured 6.96 GB/s pipelined against 10.8 GB/s direct for
            // 256 MiB) it only adds a copy, but chunks on two queues run on two of the device's
            // threads.
            Strategy::Auto if caps.pinned_staging && !caps.unified_memory => Strategy::Pipelined,
            Strategy::Auto if caps.async_copies && !caps.host_addressable => Strategy::Chunked,
            Strategy::Auto => Strategy::Direct,
            chosen => chosen,
        };
        let chunks = len.div_ceil(c.chunk_size);
        match strategy {
            Strategy::Direct | Strategy::Auto => Plan::Direct,
            Strategy::Mapped => Plan::Mapped,
            Strategy::Chunked => Plan::Chunked {
                chunk: c.chunk_size,
                chunks,
                queues: self.queues.len().min(chunks),
            },
            Strategy::Pipelined => Plan::Pipelined {
                chunk: c.chunk_size,
                chunks,
                depth: c.pipeline_depth.min(chunks),
            },
        }
    }

    /// Statistics since the engine was made.
    pub fn stats(&self) -> TransferStats {
        TransferStats {
            host_to_device: self.counters.get(Direction::HostToDevice),
            device_to_host: self.counters.get(Direction::DeviceToHost),
            device_to_device: self.counters.get(Direction::DeviceToDevice),
            retries: self.retries.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
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
            self.backend.id(),
            "transfer destination",
            dst,
            offset,
            src.len(),
        )?;
        self.run(Direction::HostToDevice, src.len(), || {
            self.until_intact(lane, || {
                match self.plan_on(lane, src.len()) {
                    Plan::Pipelined { chunk, depth, .. } => {
                        self.write_pipelined(lane, dst, offset, src, chunk, depth)?
                    }
                    // Where the backend cannot map, the arm is skipped for a direct call.
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
                    Plan::Chunked { chunk, .. } => {
                        let parts: Vec<WritePart> = chunks(src.len(), chunk)
                            .into_iter()
                            .map(|r| WritePart {
                                block: 0,
                                offset: offset + r.start,
                                src: &src[r],
                            })
                            .collect();
                        self.write_parts(lane, &mut [&mut *dst], &parts, self.chunk_wave())?
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
        check_block(self.backend.id(), "transfer source", src, offset, dst.len())?;
        self.run(Direction::DeviceToHost, dst.len(), || {
            self.until_intact(lane, || {
                match self.plan_on(lane, dst.len()) {
                    Plan::Pipelined { chunk, depth, .. } => {
                        self.read_pipelined(lane, src, offset, dst, chunk, depth)?
                    }
                    // Where the backend cannot map, the arm is skipped for a direct call.
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
                    Plan::Chunked { chunk, .. } => {
                        let mut parts: Vec<ReadPart> = dst
                            .chunks_mut(chunk)
                            .enumerate()
                            .map(|(i, d)| ReadPart {
                                block: 0,
                                offset: offset + i * chunk,
                                dst: d,
                            })
                            .collect();
                        self.read_parts(lane, &[src], &mut parts, self.chunk_wave())?
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
        check_block(self.backend.id(), "copy source", src, src_offset, len)?;
        check_block(self.backend.id(), "copy destination", dst, dst_offset, len)?;
        self.run(Direction::DeviceToDevice, len, || {
            self.retrying(None, || {
                self.backend
                    .copy(lane.queue, src, src_offset, dst, dst_offset, len)?
                    .wait()
            })?;
            lane.advance(len);
            Ok(())
        })
    }

    /// Copies `len` bytes from a block of this engine's device into a block of `target`'s
    /// device: a device copy when both are one backend, a peer copy where the two backends
    /// can ([`Backend::can_copy_to`](crate::Backend::can_copy_to)), otherwise through host
    /// memory.
    pub fn copy_to(
        &self,
        src: &DeviceBlock,
        src_offset: usize,
        target: &TransferEngine,
        dst: &mut DeviceBlock,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        let plan = self.plan_copy_to(target, len);
        if plan == Plan::Direct {
            return self.copy(src, src_offset, dst, dst_offset, len);
        }
        check_block(self.backend.id(), "copy source", src, src_offset, len)?;
        check_block(
            target.backend.id(),
            "copy destination",
            dst,
            dst_offset,
            len,
        )?;
        self.run(Direction::DeviceToDevice, len, || {
            if plan == Plan::Peer {
                let copied = self.retrying(None, || {
                    let event = self.backend.copy_to_peer(
                        self.queue(),
                        src,
                        src_offset,
                        target.backend.as_ref(),
                        dst,
                        dst_offset,
                        len,
                    )?;
                    event.map(|e| e.wait()).transpose()
                })?;
                if copied.is_some() {
                    return Ok(());
                }
            }
            let chunk = self.config.chunk_size.min(len.max(1));
            let mut bounce = vec![0u8; chunk];
            for r in chunks(len, chunk) {
                let part = &mut bounce[..r.len()];
                self.read(src, src_offset + r.start, part)?;
                target.write(dst, dst_offset + r.start, part)?;
            }
            Ok(())
        })
    }

    /// The plan for a cross-device copy of `len` bytes to `target`.
    pub fn plan_copy_to(&self, target: &TransferEngine, len: usize) -> Plan {
        if target.backend.id() == self.backend.id() {
            return Plan::Direct;
        }
        if self.backend.can_copy_to(target.backend.as_ref()) {
            return Plan::Peer;
        }
        let chunk = self.config.chunk_size;
        Plan::ThroughHost {
            chunk,
            chunks: len.div_ceil(chunk),
        }
    }

    /// The plan for a batch of writes. A configured strategy other than `Auto` forces one:
    /// `Chunked` batches over the queues, `Pipelined` through staging, `Direct` and `Mapped`
    /// one call per item.
    pub fn plan_batch(&self, items: &[BatchWrite<'_>]) -> Plan {
        let caps = self.caps;
        let staged = match self.config.strategy {
            _ if items.len() < 2 => return Plan::Direct,
            Strategy::Direct | Strategy::Mapped => return Plan::Direct,
            Strategy::Chunked => false,
            Strategy::Pipelined => true,
            Strategy::Auto if caps.host_addressable || !caps.async_copies => return Plan::Direct,
            Strategy::Auto => caps.pinned_staging && !caps.unified_memory,
        };
        let (items, bytes) = (items.len(), items.iter().map(|i| i.src.len()).sum());
        if staged {
            Plan::BatchedStaged { items, bytes }
        } else {
            Plan::Batched {
                items,
                bytes,
                queues: self.queues.len().min(items),
            }
        }
    }

    /// Writes every item, as one batch where the backend copies asynchronously: every write
    /// is enqueued without waiting (from one page-locked staging buffer on a discrete GPU), and
    /// the engine waits once. Every range is checked before anything is written.
    pub fn write_batch(&self, items: &mut [BatchWrite<'_>]) -> Result<()> {
        self.write_batch_on(&Lane::new(self.queue(), None), items)
    }

    /// [`TransferEngine::write_batch`] on `lane`.
    pub(crate) fn write_batch_on(
        &self,
        lane: &Lane<'_>,
        items: &mut [BatchWrite<'_>],
    ) -> Result<()> {
        let mut total = 0usize;
        for item in items.iter() {
            check_block(
                self.backend.id(),
                "batch destination",
                item.dst,
                item.offset,
                item.src.len(),
            )?;
            total = total
                .checked_add(item.src.len())
                .ok_or(Error::SizeOverflow { what: "batch size" })?;
        }
        if total == 0 {
            return Ok(());
        }
        self.run(Direction::HostToDevice, total, || {
            match self.plan_batch(items) {
                Plan::BatchedStaged { .. } => {
                    let mut staging = self.take_batch_staging(total)?;
                    let outcome = self.write_batch_staged(lane, items, &mut staging);
                    *self.batch.lock().unpoisoned() = Some(staging);
                    outcome
                }
                // Batched, or Direct: the backend's scattered write makes one call per item
                // where it cannot enqueue them together.
                _ => {
                    let parts: Vec<WritePart> = items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| WritePart {
                            block: i,
                            offset: item.offset,
                            src: item.src,
                        })
                        .collect();
                    let mut blocks: Vec<&mut DeviceBlock> =
                        items.iter_mut().map(|item| &mut *item.dst).collect();
                    self.write_parts(lane, &mut blocks, &parts, parts.len())
                }
            }
        })
    }

    fn write_batch_staged(
        &self,
        lane: &Lane<'_>,
        items: &mut [BatchWrite<'_>],
        staging: &mut StagingBuffer,
    ) -> Result<()> {
        let bytes = staging.as_mut_slice()?;
        let mut at = 0;
        let mut places = Vec::with_capacity(items.len());
        for item in items.iter() {
            bytes[at..at + item.src.len()].copy_from_slice(item.src);
            places.push(at);
            at += item.src.len();
        }
        // The writes wait behind a gate until all are enqueued: the device's threads then do
        // not contend with this one for the queue on every enqueue. (Dropped early on a
        // failure, the gate completes and releases what was enqueued.) A backend whose calls
        // run on the caller's thread has no device threads to keep away: no gate there.
        let gate = match self.caps.async_copies {
            true => Some(self.backend.create_user_event()?),
            false => None,
        };
        if let Some(gate) = &gate {
            self.backend.enqueue_wait(lane.queue, gate.event())?;
        }
        let mut events = Vec::with_capacity(items.len());
        for (item, &from) in items.iter_mut().zip(&places) {
            let (dst, offset, len) = (&mut *item.dst, item.offset, item.src.len());
            events.push(self.retrying(None, || {
                self.backend
                    .write_staged(lane.queue, dst, offset, staging, from, len)
            })?);
        }
        gate.map_or(Ok(()), UserEvent::complete)?;
        for ((item, &from), event) in items.iter_mut().zip(&places).zip(events) {
            let len = item.src.len();
            self.settle_write(
                lane,
                event,
                item.dst,
                item.offset,
                staging,
                from..from + len,
            )?;
        }
        Ok(())
    }

    /// Runs one transfer: counts it in flight, records it, counts failures.
    fn run(
        &self,
        direction: Direction,
        bytes: usize,
        transfer: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        crate::trace::span!("hetmem.transfer", ?direction, bytes);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let _in_flight = InFlight(&self.in_flight);
        let start = Instant::now();
        match transfer() {
            Ok(()) => {
                self.counters.record(direction, bytes, start);
                Ok(())
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Runs a whole transfer again when verification finds it corrupted, up to the policy's
    /// attempts. (Other transient failures are retried per chunk inside.)
    fn until_intact(
        &self,
        lane: &Lane<'_>,
        mut transfer: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        let mut attempt = 1;
        loop {
            lane.restart();
            match transfer() {
                Err(Error::IntegrityMismatch { .. })
                    if attempt < self.config.retry.max_attempts =>
                {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    /// Runs `op` until it succeeds, fails permanently, or the policy's attempts are used up.
    /// `first` is a failure already seen (an asynchronous operation's event), which counts as
    /// the first attempt.
    fn retrying<R>(&self, first: Option<Error>, op: impl FnMut() -> Result<R>) -> Result<R> {
        match first {
            None => self.retrying_after(0, op),
            Some(e) if self.may_retry(&e, 1) => self.retrying_after(1, op),
            Some(e) => Err(e),
        }
    }

    /// Whether an operation that failed with `error` after `failed` attempts gets another.
    fn may_retry(&self, error: &Error, failed: u32) -> bool {
        error.is_retryable() && failed < self.config.retry.max_attempts
    }

    /// [`Self::retrying`] after `failed` attempts that failed transiently.
    fn retrying_after<R>(&self, mut failed: u32, mut op: impl FnMut() -> Result<R>) -> Result<R> {
        let policy = &self.config.retry;
        loop {
            if failed > 0 {
                self.retries.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(policy.delay(failed));
            }
            match op() {
                Err(e) if self.may_retry(&e, failed + 1) => failed += 1,
                done => return done,
            }
        }
    }

    /// Writes `parts` into `blocks` over the lane's queues, `wave` parts at a time (each wave
    /// enqueued at once and waited for), then retries each failed part alone if the failure
    /// was transient; reports progress part by part after each wave.
    fn write_parts(
        &self,
        lane: &Lane<'_>,
        blocks: &mut [&mut DeviceBlock],
        parts: &[WritePart<'_>],
        wave: usize,
    ) -> Result<()> {
        let queues = self.queues_for(lane, parts.len())?;
        for parts in parts.chunks(wave.max(1)) {
            let outcome = self.backend.write_parts(&queues, blocks, parts);
            for i in self.failed_parts(outcome)? {
                let p = &parts[i];
                let block = &mut *blocks[p.block];
                self.retrying_after(1, || self.backend.write(lane.queue, block, p.offset, p.src))?;
            }
            parts.iter().for_each(|p| lane.advance(p.src.len()));
        }
        Ok(())
    }

    /// [`Self::write_parts`], reading.
    fn read_parts(
        &self,
        lane: &Lane<'_>,
        blocks: &[&DeviceBlock],
        parts: &mut [ReadPart<'_>],
        wave: usize,
    ) -> Result<()> {
        let queues = self.queues_for(lane, parts.len())?;
        for parts in parts.chunks_mut(wave.max(1)) {
            let outcome = self.backend.read_parts(&queues, blocks, parts);
            for i in self.failed_parts(outcome)? {
                let p = &mut parts[i];
                let block = blocks[p.block];
                self.retrying_after(1, || self.backend.read(lane.queue, block, p.offset, p.dst))?;
            }
            parts.iter().for_each(|p| lane.advance(p.dst.len()));
        }
        Ok(())
    }

    /// Chunks per wave of a chunked transfer: enough to keep every queue busy, few enough
    /// that progress is reported as the transfer goes (every 32 MiB with the defaults).
    fn chunk_wave(&self) -> usize {
        CHUNKS_PER_QUEUE_PER_WAVE * self.queues.len()
    }

    /// The parts to retry: none if all arrived, the failed ones if the failure is transient
    /// and the policy allows another attempt; otherwise the failure.
    fn failed_parts(&self, outcome: std::result::Result<(), PartFailures>) -> Result<Vec<usize>> {
        match outcome {
            Ok(()) => Ok(Vec::new()),
            Err(PartFailures { failed, error }) if self.may_retry(&error, 1) => Ok(failed),
            Err(PartFailures { error, .. }) => Err(error),
        }
    }

    /// Waits for an asynchronous write of `staged` bytes of `staging`, redoing it
    /// (synchronously) if it failed transiently: the staging buffer still holds the bytes.
    fn settle_write(
        &self,
        lane: &Lane<'_>,
        event: Event,
        dst: &mut DeviceBlock,
        offset: usize,
        staging: &StagingBuffer,
        staged: Range<usize>,
    ) -> Result<()> {
        let len = staged.len();
        if let Err(e) = event.wait() {
            self.retrying(Some(e), || {
                self.backend
                    .write_staged(lane.queue, dst, offset, staging, staged.start, len)?
                    .wait()
            })?;
        }
        lane.advance(len);
        Ok(())
    }

    fn write_pipelined(
        &self,
        lane: &Lane<'_>,
        dst: &mut DeviceBlock,
        offset: usize,
        src: &[u8],
        chunk: usize,
        depth: usize,
    ) -> Result<()> {
        let mut ring = self.take_ring(chunk, depth)?;
        let outcome = (|| {
            let parts = chunks(src.len(), chunk);
            let mut pending: Vec<Option<(Event, usize)>> = (0..depth).map(|_| None).collect();
            for (i, r) in parts.iter().enumerate() {
                let slot = i % depth;
                if let Some((event, j)) = pending[slot].take() {
                    let p = &parts[j];
                    self.settle_write(lane, event, dst, offset + p.start, &ring[slot], 0..p.len())?;
                }
                // Waits for the device to finish reading this staging buffer's previous chunk.
                ring[slot].as_mut_slice()?[..r.len()].copy_from_slice(&src[r.clone()]);
                let staging = &ring[slot];
                let event = self.retrying(None, || {
                    self.backend.write_staged(
                        lane.queue,
                        dst,
                        offset + r.start,
                        staging,
                        0,
                        r.len(),
                    )
                })?;
                pending[slot] = Some((event, i));
            }
            for (slot, event, j) in in_chunk_order(pending) {
                let p = &parts[j];
                self.settle_write(lane, event, dst, offset + p.start, &ring[slot], 0..p.len())?;
            }
            Ok(())
        })();
        // Staging buffers wait for pending device reads before reuse, so even after a failure
        // they can go back to the ring.
        self.give_ring(ring);
        outcome
    }

    fn read_pipelined(
        &self,
        lane: &Lane<'_>,
        src: &DeviceBlock,
        offset: usize,
        dst: &mut [u8],
        chunk: usize,
        depth: usize,
    ) -> Result<()> {
        let mut ring = self.take_ring(chunk, depth)?;
        let outcome = (|| {
            let parts = chunks(dst.len(), chunk);
            let mut pending: Vec<Option<(Event, usize)>> = (0..depth).map(|_| None).collect();
            let mut finish = |slot: usize,
                              event: Event,
                              j: usize,
                              ring: &mut Vec<StagingBuffer>|
             -> Result<()> {
                let p = parts[j].clone();
                if let Err(e) = event.wait() {
                    let staging = &mut ring[slot];
                    self.retrying(Some(e), || {
                        self.backend
                            .read_staged(lane.queue, src, offset + p.start, staging, 0, p.len())?
                            .wait()
                    })?;
                }
                dst[p.clone()].copy_from_slice(&ring[slot].as_slice()?[..p.len()]);
                lane.advance(p.len());
                Ok(())
            };
            for (i, r) in parts.iter().enumerate() {
                let slot = i % depth;
                if let Some((event, j)) = pending[slot].take() {
                    finish(slot, event, j, &mut ring)?;
                }
                let staging = &mut ring[slot];
                let event = self.retrying(None, || {
                    self.backend
                        .read_staged(lane.queue, src, offset + r.start, staging, 0, r.len())
                })?;
                pending[slot] = Some((event, i));
            }
            for (slot, event, j) in in_chunk_order(pending) {
                finish(slot, event, j, &mut ring)?;
            }
            Ok(())
        })();
        self.give_ring(ring);
        outcome
    }

    /// `depth` staging buffers of at least `chunk` bytes, from the ring or new.
    fn take_ring(&self, chunk: usize, depth: usize) -> Result<Vec<StagingBuffer>> {
        let mut kept = self.ring.lock().unpoisoned();
        kept.retain(|s| s.len() >= chunk);
        let take = kept.len().min(depth);
        let mut ring: Vec<StagingBuffer> = kept.drain(..take).collect();
        drop(kept);
        while ring.len() < depth {
            ring.push(self.backend.allocate_staging(chunk)?);
        }
        Ok(ring)
    }

    fn give_ring(&self, ring: Vec<StagingBuffer>) {
        let mut kept = self.ring.lock().unpoisoned();
        kept.extend(ring);
        kept.truncate(self.config.pipeline_depth);
    }

    fn take_batch_staging(&self, bytes: usize) -> Result<StagingBuffer> {
        let kept = self.batch.lock().unpoisoned().take();
        match kept {
            Some(s) if s.len() >= bytes => Ok(s),
            _ => self.backend.allocate_staging(bytes),
        }
    }

    /// The bytes of a verified read, fetched again through another path than a direct read —
    /// a staged read — so that a corruption of one path that repeats on every call of it is
    /// caught too (a direct re-read would agree with it).
    fn read_again(
        &self,
        lane: &Lane<'_>,
        src: &DeviceBlock,
        offset: usize,
        len: usize,
    ) -> Result<Vec<u8>> {
        let mut staging = self.backend.allocate_staging(len)?;
        self.retrying(None, || {
            self.backend
                .read_staged(lane.queue, src, offset, &mut staging, 0, len)?
                .wait()
        })?;
        Ok(staging.as_slice()?[..len].to_vec())
    }

    /// With `verify` on, reads the destination back and compares checksums.
    fn verify(&self, lane: &Lane<'_>, dst: &DeviceBlock, offset: usize, src: &[u8]) -> Result<()> {
        if !self.config.verify {
            return Ok(());
        }
        let mut back = vec![0u8; src.len()];
        self.backend.read(lane.queue, dst, offset, &mut back)?;
        check_crc("host-to-device transfer", src, &back)
    }
}

/// The events still pending in a ring, with their slot, in the order of their chunks.
fn in_chunk_order(pending: Vec<Option<(Event, usize)>>) -> Vec<(usize, Event, usize)> {
    let mut rest: Vec<(usize, Event, usize)> = pending
        .into_iter()
        .enumerate()
        .filter_map(|(slot, p)| p.map(|(event, j)| (slot, event, j)))
        .collect();
    rest.sort_by_key(|&(_, _, j)| j);
    rest
}

/// Compares the CRC-32 of what was sent and what arrived.
fn check_crc(what: &'static str, expected: &[u8], actual: &[u8]) -> Result<()> {
    let (e, a) = (crc32fast::hash(expected), crc32fast::hash(actual));
    if e == a {
        Ok(())
    } else {
        Err(Error::IntegrityMismatch {
            what,
            expected: e,
            actual: a,
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
