//! What every wgpu operation is made of, shared by calls made at once and work a holding queue
//! runs later: writes through `Queue::write_buffer` (edges outside wgpu's 4-byte copy alignment
//! read, patched and written back), reads through a mappable read-back buffer, copies and
//! fills through command encoders, submitted at once so that wgpu's one queue orders
//! everything in the order it was asked for. Writes alone are not submitted: wgpu puts the
//! writes made so far before the next submission (any of hetmem's, or the user's), and a
//! submission costs tens of microseconds; what needs them done — an event, a wait — submits
//! first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::block::WgpuBlock;
use super::mapping::MappedBuffers;
use super::poller::Poller;
use super::readback::ReadbackBelt;
use crate::backend::{BackendKind, Event};
use crate::error::{BackendError, Error, Result};
use crate::sync::Unpoison;

/// wgpu's copy alignment (`COPY_BUFFER_ALIGNMENT`): offsets and sizes of copies and writes.
pub(super) const ALIGN: usize = wgpu::COPY_BUFFER_ALIGNMENT as usize;

/// Largest piece a fill writes from host memory at once.
const FILL_CHUNK: usize = 4 << 20;

/// Bytes written before they are submitted anyway.
const UNSUBMITTED_MAX: usize = 8 << 20;

/// Largest piece of one write, and of one read (a multiple of the copy alignment).
const WRITE_PIECE: usize = 4 << 20;
const READ_PIECE: usize = 16 << 20;

/// A read whose copies are submitted and whose read-back buffer is being mapped.
struct StartedRead {
    staging: wgpu::Buffer,
    /// Per part: bytes before it in its first word, the words copied, where they land.
    spans: Vec<(usize, usize, usize)>,
    mapped: mpsc::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
    submitted: wgpu::SubmissionIndex,
}

/// Errors wgpu reported outside any error scope (validation, internal, lost device).
#[derive(Default)]
pub(super) struct Uncaptured {
    /// The kind of the first not yet returned: the next blocking call returns it.
    pub(super) unreported: Option<&'static str>,
    /// wgpu's messages, the first 64 of them.
    pub(super) messages: Vec<String>,
}

impl Uncaptured {
    pub(super) fn note(&mut self, error: &wgpu::Error) {
        self.unreported.get_or_insert(error_kind(error));
        if self.messages.len() < 64 {
            self.messages.push(error.to_string());
        }
    }
}

/// One wgpu device and its queue, with what hetmem keeps beside them.
pub(super) struct GpuDevice {
    pub(super) device: wgpu::Device,
    pub(super) queue: wgpu::Queue,
    pub(super) poller: Poller,
    pub(super) readback: ReadbackBelt,
    /// Errors wgpu reported outside any error scope.
    pub(super) uncaptured: Arc<Mutex<Uncaptured>>,
    /// Bytes written since the last submission.
    pub(super) unsubmitted: AtomicUsize,
    /// Buffers mapped now (`mapping.rs`).
    pub(super) mapped: MappedBuffers,
}

impl GpuDevice {
    /// The first error wgpu reported on its own since the last call, as a typed error.
    pub(super) fn check(&self, operation: &'static str) -> Result<()> {
        let mut errors = self.uncaptured.lock().unpoisoned();
        match errors.unreported.take() {
            Some(kind) => Err(backend_error(operation, kind)),
            None => Ok(()),
        }
    }

    /// An event that finishes when the work asked for so far has.
    pub(super) fn marker(&self) -> Event {
        self.flush();
        self.poller.after_submitted(&self.queue)
    }

    /// Submits the writes made since the last submission.
    pub(super) fn flush(&self) {
        if self.unsubmitted.swap(0, Ordering::AcqRel) != 0 {
            self.queue.submit([]);
        }
    }

    /// Notes `len` bytes written; past [`UNSUBMITTED_MAX`] they are submitted, so that wgpu
    /// can reuse the staging memory they took.
    fn wrote(&self, len: usize) {
        if self.unsubmitted.fetch_add(len.max(1), Ordering::AcqRel) + len > UNSUBMITTED_MAX {
            self.flush();
        }
    }

    /// Submits `commands` (after the writes made so far, which wgpu puts first).
    pub(super) fn submit(&self, commands: wgpu::CommandEncoder) -> wgpu::SubmissionIndex {
        self.unsubmitted.store(0, Ordering::Release);
        self.queue.submit([commands.finish()])
    }

    /// Waits for everything asked for so far.
    pub(super) fn wait_idle(&self) -> Result<()> {
        self.flush();
        self.device
            .poll(wgpu::PollType::Wait)
            .map_err(|_| backend_error("wait", "device lost or wait timed out"))?;
        Ok(())
    }

    /// Writes `src` at `offset` of `dst`, submitted: what later work on the queue sees.
    pub(super) fn write(&self, dst: &WgpuBlock, offset: usize, src: &[u8]) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        let (start, end) = (offset, offset + src.len());
        let (outer_start, outer_end) = (start / ALIGN * ALIGN, end.div_ceil(ALIGN) * ALIGN);
        if (outer_start, outer_end) == (start, end) {
            for (i, piece) in src.chunks(WRITE_PIECE).enumerate() {
                let at = dst.at(start + i * WRITE_PIECE);
                self.queue.write_buffer(&dst.buffer, at, piece);
                self.wrote(piece.len());
            }
            return Ok(());
        }
        // The words the range only partly covers keep their other bytes: both read in one
        // round trip, patched, and the whole words written.
        let mut window = vec![0u8; outer_end - outer_start];
        if window.len() == ALIGN {
            self.read(dst, outer_start, &mut window)?;
        } else {
            let last = window.len() - ALIGN;
            let (head, rest) = window.split_at_mut(ALIGN);
            let tail = &mut rest[last - ALIGN..];
            self.read_many(&mut [(dst, outer_start, head), (dst, outer_start + last, tail)])?;
        }
        window[start - outer_start..end - outer_start].copy_from_slice(src);
        self.write(dst, outer_start, &window)
    }

    /// Reads `dst.len()` bytes at `offset` of `src` once the work asked for before is done:
    /// large reads in pieces through read-back buffers small enough to be kept (a fresh
    /// 256 MiB mappable buffer per read costs more than the copy), two in flight, so that the
    /// device fills one while the host copies the other out.
    pub(super) fn read(&self, src: &WgpuBlock, offset: usize, dst: &mut [u8]) -> Result<()> {
        let mut in_flight = std::collections::VecDeque::new();
        for (i, piece) in dst.chunks_mut(READ_PIECE).enumerate() {
            let started = self.start_read(&[(src, offset + i * READ_PIECE, piece.len())]);
            in_flight.push_back((started, piece));
            if in_flight.len() == 2 {
                let (started, piece) = in_flight.pop_front().expect("two in flight");
                self.finish_read(started, &mut [piece])?;
            }
        }
        for (started, piece) in in_flight {
            self.finish_read(started, &mut [piece])?;
        }
        Ok(())
    }

    /// Reads every `(block, offset, into)` part through one read-back buffer: one submission,
    /// one mapping and one wait for them all.
    pub(super) fn read_many(&self, parts: &mut [(&WgpuBlock, usize, &mut [u8])]) -> Result<()> {
        let wanted: Vec<_> = parts
            .iter()
            .map(|(b, at, dst)| (*b, *at, dst.len()))
            .collect();
        let started = self.start_read(&wanted);
        let mut into: Vec<&mut [u8]> = parts.iter_mut().map(|(.., dst)| &mut **dst).collect();
        self.finish_read(started, &mut into)
    }

    /// Copies every `(block, offset, len)` part into one read-back buffer and asks for it to
    /// be mapped.
    fn start_read(&self, parts: &[(&WgpuBlock, usize, usize)]) -> Option<StartedRead> {
        // Each part's covering words, and where they land in the read-back buffer.
        let spans: Vec<(usize, usize, usize)> = parts
            .iter()
            .scan(0, |at, &(_, offset, len)| {
                let start = offset / ALIGN * ALIGN;
                let covered = (offset + len).div_ceil(ALIGN) * ALIGN - start;
                let span = (offset - start, covered, *at);
                *at += covered;
                Some(span)
            })
            .collect();
        let total: usize = spans.iter().map(|&(_, len, _)| len).sum();
        if total == 0 {
            return None;
        }
        let staging = self.readback.take(&self.device, total);
        let mut encoder = self.device.create_command_encoder(&Default::default());
        for (&(src, offset, _), &(skip, len, at)) in parts.iter().zip(&spans) {
            if len > 0 {
                let (from, to) = (src.at(offset - skip), at as u64);
                encoder.copy_buffer_to_buffer(&src.buffer, from, &staging, to, len as u64);
            }
        }
        let submitted = self.submit(encoder);
        let (sent, mapped) = mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |outcome| {
            let _ = sent.send(outcome);
        });
        Some(StartedRead {
            staging,
            spans,
            mapped,
            submitted,
        })
    }

    /// Waits for a started read and copies its parts out, in order, into `into`.
    fn finish_read(&self, started: Option<StartedRead>, into: &mut [&mut [u8]]) -> Result<()> {
        let Some(started) = started else {
            return Ok(());
        };
        let outcome = loop {
            let submitted = wgpu::PollType::wait_for(started.submitted.clone());
            (self.device.poll(submitted))
                .map_err(|_| backend_error("read", "device lost or wait timed out"))?;
            // The callback runs in a poll: this one's, or the polling thread's.
            if let Ok(outcome) = started.mapped.try_recv() {
                break outcome;
            }
        };
        outcome.map_err(|_| backend_error("read", "mapping the read-back buffer failed"))?;
        {
            let view = started.staging.get_mapped_range(..);
            for (dst, &(skip, _, at)) in into.iter_mut().zip(&started.spans) {
                dst.copy_from_slice(&view[at + skip..at + skip + dst.len()]);
            }
        }
        started.staging.unmap();
        self.readback.give(started.staging);
        self.check("read")
    }

    /// Copies `len` bytes between blocks; submitted, not waited for.
    pub(super) fn copy(
        &self,
        src: &WgpuBlock,
        src_offset: usize,
        dst: &WgpuBlock,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        if [src_offset, dst_offset, len].iter().any(|v| v % ALIGN != 0) {
            // Outside wgpu's alignment: through the host, in order.
            let mut bytes = vec![0u8; len];
            self.read(src, src_offset, &mut bytes)?;
            return self.write(dst, dst_offset, &bytes);
        }
        let mut encoder = self.device.create_command_encoder(&Default::default());
        let (from, to, size) = (src.at(src_offset), dst.at(dst_offset), len as u64);
        if src.buffer == dst.buffer {
            // Views of one buffer: WebGPU copies between two buffers only.
            let between = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("hetmem copy within one buffer"),
                size,
                usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            encoder.copy_buffer_to_buffer(&src.buffer, from, &between, 0, size);
            encoder.copy_buffer_to_buffer(&between, 0, &dst.buffer, to, size);
        } else {
            encoder.copy_buffer_to_buffer(&src.buffer, from, &dst.buffer, to, size);
        }
        self.submit(encoder);
        Ok(())
    }

    /// Repeats `pattern` over `len` bytes at `offset`; submitted, not waited for.
    pub(super) fn fill(
        &self,
        dst: &WgpuBlock,
        offset: usize,
        len: usize,
        pattern: &[u8],
    ) -> Result<()> {
        let aligned = offset % ALIGN == 0 && len % ALIGN == 0;
        if aligned && pattern.iter().all(|&b| b == 0) {
            let mut encoder = self.device.create_command_encoder(&Default::default());
            encoder.clear_buffer(&dst.buffer, dst.at(offset), Some(len as u64));
            self.submit(encoder);
            return Ok(());
        }
        // Chunks that hold whole patterns (patterns are powers of two up to 128 bytes).
        let chunk: Vec<u8> = pattern
            .iter()
            .copied()
            .cycle()
            .take(FILL_CHUNK.min(len))
            .collect();
        let mut done = 0;
        while done < len {
            let n = chunk.len().min(len - done);
            self.write(dst, offset + done, &chunk[..n])?;
            done += n;
        }
        Ok(())
    }
}

/// A wgpu failure as hetmem's typed backend error: `name` says which kind (wgpu's messages are
/// kept apart, [`GpuDevice::uncaptured`]).
pub(super) fn backend_error(operation: &'static str, name: &'static str) -> Error {
    Error::Backend(BackendError {
        backend: BackendKind::Wgpu,
        operation,
        code: 0,
        name,
        retryable: false,
    })
}

/// The kind of a wgpu error, for [`backend_error`].
pub(super) fn error_kind(error: &wgpu::Error) -> &'static str {
    match error {
        wgpu::Error::OutOfMemory { .. } => "out of memory",
        wgpu::Error::Validation { .. } => "validation error",
        wgpu::Error::Internal { .. } => "internal error",
    }
}
