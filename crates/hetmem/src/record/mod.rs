//! Allocation traces: what a program allocated and freed, recorded while it runs
//! ([`Recorder`], `HETMEM_TRACE=path`) and replayed offline against other allocator settings
//! ([`replay`], `hetmem replay`) — RMM's logging adaptor and replay benchmark, Umpire's replay
//! tool.
//!
//! Transfers are recorded too (`upload`, `download`, `device_copy` of a live allocation: syncs
//! and prefetches appear as the transfers they make); replay leaves them out, being about
//! memory. The native format is JSON lines, one [`TraceEvent`] per line; RMM's CSV log
//! (`Thread,Time,Action,Pointer,Size,Stream`) is read and written too, so that logs from RMM
//! users replay here. Reading checks the trace as it goes — every free names a live
//! allocation, sizes are whole numbers — and a bad line is [`Error::BadTrace`] naming it.

mod formats;
mod recorder;
mod replay;
mod timed;

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use recorder::Recorder;
pub use replay::{
    replay, AllocatorConfig, CurvePoint, ReplayFailure, ReplayOptions, ReplayOutcome,
};

use crate::error::{Error, Result};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// An allocation of `bytes`, known as `id` until freed.
    Alloc,
    /// The allocation `id` was freed.
    Free,
    /// An allocation of `bytes` was refused (out of memory, over a limit).
    AllocFailed,
    /// The allocation `id` changed to `bytes`.
    Resize,
    /// Cached memory was given back (`bytes` of it).
    Trim,
    /// The allocation `id` moved `bytes` from the host copy to the device copy (a sync, a
    /// prefetch, a guard's upload).
    Upload,
    /// The allocation `id` moved `bytes` from the device copy to the host copy.
    Download,
    /// The allocation `id` received `bytes` by a copy on the device (from another buffer, or
    /// its own old block when resized).
    DeviceCopy,
}

/// One event of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// Nanoseconds since the recording started.
    pub time_ns: u64,
    /// The thread, numbered from 0 in order of first appearance.
    pub thread: u32,
    /// What happened.
    pub action: Action,
    /// The allocation: unique among live ones (a pointer, in RMM logs); 0 where none.
    pub id: u64,
    /// Bytes allocated, asked, resized to or trimmed.
    pub bytes: u64,
    /// The queue or stream, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<u64>,
    /// The allocation's label, where it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Where it was placed (`Device`, `Host`, …), where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<String>,
}

/// A whole trace, checked: every free and resize names a live allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// The events, in order.
    pub events: Vec<TraceEvent>,
}

impl Trace {
    /// Reads a trace file: RMM's CSV log when the name ends in `.csv`, JSON lines otherwise.
    pub fn read(path: impl AsRef<Path>) -> Result<Trace> {
        let path = path.as_ref();
        let file = std::fs::File::open(path)?;
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("csv") => Self::read_rmm_csv(file),
            _ => Self::read_jsonl(std::io::BufReader::new(file)),
        }
    }

    /// Writes the trace as JSON lines, or as RMM's CSV log when the name ends in `.csv`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let file = std::io::BufWriter::new(std::fs::File::create(path)?);
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("csv") => self.write_rmm_csv(file),
            _ => self.write_jsonl(file),
        }
    }

    /// Live bytes after each event.
    pub fn live_bytes(&self) -> Vec<u64> {
        let mut sizes: HashMap<u64, u64> = HashMap::new();
        let mut live = 0u64;
        (self.events.iter())
            .map(|e| {
                match e.action {
                    Action::Alloc => {
                        live += e.bytes;
                        sizes.insert(e.id, e.bytes);
                    }
                    Action::Free => live -= sizes.remove(&e.id).unwrap_or(0),
                    Action::Resize => {
                        let old = sizes.insert(e.id, e.bytes).unwrap_or(0);
                        live = live - old + e.bytes;
                    }
                    _ => {}
                }
                live
            })
            .collect()
    }

    /// The most bytes live at once.
    pub fn peak_live(&self) -> u64 {
        self.live_bytes().into_iter().max().unwrap_or(0)
    }
}

/// Checks events one by one as a reader takes them: frees and resizes must name a live
/// allocation, allocations a new id.
#[derive(Default)]
struct Checker {
    live: HashMap<u64, u64>,
}

impl Checker {
    fn check(&mut self, line: usize, event: &TraceEvent) -> Result<()> {
        let bad = |reason: String| Err(Error::BadTrace { line, reason });
        match event.action {
            Action::Alloc => {
                if self.live.insert(event.id, event.bytes).is_some() {
                    return bad(format!("allocation {:#x} is already live", event.id));
                }
            }
            Action::Free => {
                if self.live.remove(&event.id).is_none() {
                    return bad(format!("free of {:#x}, which is not live", event.id));
                }
            }
            Action::Resize => {
                if self.live.insert(event.id, event.bytes).is_none() {
                    self.live.remove(&event.id);
                    return bad(format!("resize of {:#x}, which is not live", event.id));
                }
            }
            Action::Upload | Action::Download | Action::DeviceCopy => {
                if !self.live.contains_key(&event.id) {
                    return bad(format!("transfer of {:#x}, which is not live", event.id));
                }
            }
            Action::AllocFailed | Action::Trim => {}
        }
        Ok(())
    }
}
