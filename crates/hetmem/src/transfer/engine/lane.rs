//! [`Lane`]: where one transfer runs and whom it tells how far it got; the chunking rule.

use std::cell::Cell;
use std::ops::Range;

use super::Strategy;
use crate::backend::Queue;

/// Where one transfer runs, and whom it tells how far it got.
pub(crate) struct Lane<'a> {
    pub(super) queue: &'a Queue,
    /// Called with the bytes done so far after each chunk.
    pub(super) progress: Option<&'a (dyn Fn(usize) + Sync)>,
    pub(super) done: Cell<usize>,
    /// Overrides the engine's configured strategy for large transfers.
    pub(super) strategy: Option<Strategy>,
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
    pub(super) fn restart(&self) {
        self.done.set(0);
    }

    /// Records `bytes` more done.
    pub(super) fn advance(&self, bytes: usize) {
        let done = self.done.get() + bytes;
        self.done.set(done);
        if let Some(report) = self.progress {
            report(done);
        }
    }
}

/// A chunked transfer waits after this many chunks per queue (one wave) and reports progress:
/// waiting costs about 50 µs on PoCL, a wave of 4 MiB chunks takes milliseconds.
pub(super) const CHUNKS_PER_QUEUE_PER_WAVE: usize = 4;

/// The chunk ranges of `len` bytes.
pub(super) fn chunks(len: usize, chunk: usize) -> Vec<Range<usize>> {
    (0..len)
        .step_by(chunk)
        .map(|s| s..(s + chunk).min(len))
        .collect()
}
