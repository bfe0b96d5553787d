//! [`MemorySnapshot`]: where a manager's memory is at one moment — the splitting allocators'
//! segments range by range, each used range with the buffer it holds, and the live buffers
//! with their labels, ages and last events — serialisable, and written beside a streamed trace
//! when memory runs out.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::MemoryManager;
use crate::buffer::BufferEvent;
use crate::error::{Error, Result};
use crate::pool::{RangeSnapshot, SegmentSnapshot};
use crate::record::TraceEvent;

/// A manager's memory at one moment. Made by [`MemoryManager::snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct MemorySnapshot {
    /// The device pool's segments (blocks above 4 KiB are carved from them), in order.
    pub device_segments: Vec<SegmentSnapshot>,
    /// The host pool's segments.
    pub host_segments: Vec<SegmentSnapshot>,
    /// The live buffers, oldest first (listed where the manager tracks outstanding buffers).
    pub buffers: Vec<BufferSnapshot>,
}

/// One live buffer of a [`MemorySnapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct BufferSnapshot {
    /// Its number in the manager, in allocation order.
    pub id: u64,
    /// Its length in bytes.
    pub bytes: usize,
    /// Its label, if any.
    pub label: Option<String>,
    /// The placement it resolved to.
    pub placement: String,
    /// Milliseconds since it was made.
    pub age_ms: f64,
    /// Bytes it moved host → device and device → host.
    pub moved: [u64; 2],
    /// What was last done with it, if anything yet.
    pub last_event: Option<BufferEvent>,
    /// Milliseconds since then (an access is stamped to the scheduler's tick, 1–4 ms).
    pub last_event_ms_ago: Option<f64>,
}

impl MemorySnapshot {
    pub(crate) fn take(manager: &MemoryManager) -> Self {
        let outstanding = manager.registry.outstanding();
        let owners: HashMap<usize, u64> = (outstanding.iter())
            .flat_map(|o| o.blocks.map(|handle| (handle, o.id)))
            .filter(|&(handle, _)| handle != 0)
            .collect();
        let segments = |i: usize| {
            let mut segments = (manager.splitting[i].as_ref())
                .map(|s| s.snapshot())
                .unwrap_or_default();
            for range in segments.iter_mut().flat_map(|s| &mut s.ranges) {
                range.buffer = owners.get(&range.handle).copied().filter(|_| range.used);
            }
            segments
        };
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let buffers = (outstanding.iter())
            .map(|o| BufferSnapshot {
                id: o.id,
                bytes: o.bytes,
                label: o.label.as_deref().map(str::to_owned),
                placement: o.placement.name().to_owned(),
                age_ms: ms(o.age),
                moved: [o.host_to_device.bytes, o.device_to_host.bytes],
                last_event: o.last_event.map(|(event, _)| event),
                last_event_ms_ago: o.last_event.map(|(_, ago)| ms(ago)),
            })
            .collect();
        MemorySnapshot {
            device_segments: segments(0),
            host_segments: segments(1),
            buffers,
        }
    }

    /// The live buffer whose copy `range` (of one of this snapshot's segments) is, if any.
    pub fn owner(&self, range: &RangeSnapshot) -> Option<&BufferSnapshot> {
        let id = range.buffer?;
        self.buffers.iter().find(|b| b.id == id)
    }
}

/// What goes into an out-of-memory dump.
#[derive(Serialize)]
struct OomDump<'a> {
    error: String,
    events: Vec<TraceEvent>,
    snapshot: &'a MemorySnapshot,
}

/// Writes `error`, the recorder's last events and a snapshot to `<trace>.oom.json` beside the
/// streamed trace; the file's path, or `None` where nothing is streamed.
pub(crate) fn dump_on_oom(manager: &MemoryManager, error: &Error) -> Option<PathBuf> {
    let recorder = manager.registry.recorder.as_ref()?;
    let mut path = recorder.path()?.as_os_str().to_owned();
    path.push(".oom.json");
    let path = PathBuf::from(path);
    let snapshot = MemorySnapshot::take(manager);
    let dump = OomDump {
        error: error.to_string(),
        events: recorder.events().events,
        snapshot: &snapshot,
    };
    let written: Result<()> = (|| {
        let _ = recorder.flush();
        let file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        serde_json::to_writer_pretty(file, &dump).map_err(std::io::Error::from)?;
        Ok(())
    })();
    written.ok().map(|()| path)
}
