//! [`Recorder`]: a manager's allocation trace as it happens — the last events in a bounded
//! ring, and every event streamed to a file when asked (`HETMEM_TRACE=path`).

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::thread::ThreadId;
use std::time::Instant;

use super::{Action, Trace, TraceEvent};
use crate::error::{Error, Result};
use crate::manager::Placement;
use crate::sync::{lock, Mutex};

/// Records a manager's allocations, frees, refusals, resizes and trims, with time, thread,
/// size, label and placement. Give one to
/// [`MemoryManagerBuilder::recorder`](crate::manager::MemoryManagerBuilder::recorder), or set
/// `HETMEM_TRACE=path` to stream every manager's events to `path` as JSON lines.
pub struct Recorder {
    start: Instant,
    inner: Mutex<Inner>,
    /// Where the stream goes, if anywhere: an out-of-memory dump is written beside it.
    path: Option<PathBuf>,
}

struct Inner {
    ring: VecDeque<TraceEvent>,
    capacity: usize,
    out: Option<BufWriter<File>>,
    threads: HashMap<ThreadId, u32>,
    /// Queues by identity, numbered in order of first appearance.
    streams: HashMap<usize, u64>,
    /// The first write error, reported by [`Recorder::flush`] (a recording call has nobody to
    /// report to).
    failed: Option<std::io::Error>,
}

impl Recorder {
    /// Keeps the last `capacity` events in memory.
    pub fn new(capacity: usize) -> Self {
        Recorder {
            start: Instant::now(),
            inner: Mutex::new(Inner {
                ring: VecDeque::with_capacity(capacity.min(1 << 16)),
                capacity,
                out: None,
                threads: HashMap::new(),
                streams: HashMap::new(),
                failed: None,
            }),
            path: None,
        }
    }

    /// Also streams every event to `path` (created, or truncated) as JSON lines.
    pub fn streaming_to(path: impl AsRef<Path>, capacity: usize) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::create(&path)?;
        let mut recorder = Self::new(capacity);
        lock(&recorder.inner).out = Some(BufWriter::new(file));
        recorder.path = Some(path);
        Ok(recorder)
    }

    /// The process's streaming recorder if `HETMEM_TRACE` names a file (the last 4096 events
    /// kept in memory too): one for every manager, so that their events share one trace.
    pub fn from_env() -> Result<Option<Arc<Recorder>>> {
        static ENV: OnceLock<std::result::Result<Option<Arc<Recorder>>, String>> = OnceLock::new();
        let recorder = ENV.get_or_init(|| match std::env::var_os("HETMEM_TRACE") {
            Some(path) if !path.is_empty() => Self::streaming_to(path, 4096)
                .map(|r| Some(Arc::new(r)))
                .map_err(|e| e.to_string()),
            _ => Ok(None),
        });
        (recorder.clone()).map_err(|reason| Error::invalid(format!("HETMEM_TRACE: {reason}")))
    }

    /// The events still in memory, oldest first.
    pub fn events(&self) -> Trace {
        Trace {
            events: lock(&self.inner).ring.iter().cloned().collect(),
        }
    }

    /// Writes buffered events to the stream and reports the first write error, if any.
    pub fn flush(&self) -> Result<()> {
        let mut inner = lock(&self.inner);
        if let Some(e) = inner.failed.take() {
            return Err(e.into());
        }
        if let Some(out) = &mut inner.out {
            out.flush()?;
        }
        Ok(())
    }

    /// Where the stream goes, if anywhere.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub(crate) fn record(
        &self,
        action: Action,
        id: u64,
        bytes: u64,
        label: Option<&str>,
        placement: Option<Placement>,
        queue: usize,
    ) {
        let time_ns = self.start.elapsed().as_nanos() as u64;
        let mut inner = lock(&self.inner);
        let next = inner.threads.len() as u32;
        let thread = *inner
            .threads
            .entry(std::thread::current().id())
            .or_insert(next);
        let next = inner.streams.len() as u64;
        let stream = *inner.streams.entry(queue).or_insert(next);
        let event = TraceEvent {
            time_ns,
            thread,
            action,
            id,
            bytes,
            stream: Some(stream),
            label: label.map(str::to_owned),
            placement: placement.map(|p| p.name().to_owned()),
        };
        inner.write(&event);
        if inner.capacity > 0 {
            if inner.ring.len() == inner.capacity {
                inner.ring.pop_front();
            }
            inner.ring.push_back(event);
        }
    }
}

impl Inner {
    fn write(&mut self, event: &TraceEvent) {
        let Some(out) = &mut self.out else { return };
        let written = serde_json::to_writer(&mut *out, event)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"));
        if let Err(e) = written {
            self.failed.get_or_insert(e);
            self.out = None;
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("path", &self.path)
            .finish()
    }
}
