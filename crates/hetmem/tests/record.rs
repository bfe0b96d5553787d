//! Allocation traces: recorded from a manager, written and read back (JSON lines and RMM's
//! CSV), replayed against every allocator configuration on every backend present, bad files
//! refused with the line named, and the dump written when memory runs out.

mod common;

use std::sync::Arc;

use hetmem::backend::Backend;
use hetmem::buffer::{BufferEvent, Residency};
use hetmem::record::{replay, Action, AllocatorConfig, Recorder, ReplayOptions, Trace, TraceEvent};
use hetmem::{AllocOptions, Error, MemoryManager, Placement};

const MIB: usize = 1 << 20;

fn device() -> AllocOptions {
    AllocOptions::new().placement(Placement::Device)
}

/// A manager whose every allocation is recorded in memory.
fn recorded(b: &Arc<dyn Backend>) -> (MemoryManager, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::new(10_000));
    let m = MemoryManager::builder()
        .backend(b.clone())
        .recorder(recorder.clone())
        .build()
        .unwrap();
    (m, recorder)
}

/// What a manager did is what the trace says, in order, and replaying the trace against every
/// configuration reproduces its live-bytes curve exactly.
fn record_then_replay_reproduces_the_live_curve(b: &Arc<dyn Backend>) {
    let (m, recorder) = recorded(b);
    let a = m.alloc_with::<u8>(3 * MIB, device().label("a")).unwrap();
    let mut c = m.alloc_with::<u32>(1000, device()).unwrap();
    let d = m.alloc_with::<u8>(12 * MIB, device()).unwrap();
    drop(a);
    c.resize(5000).unwrap();
    drop(d);
    m.trim().unwrap();
    drop(c);
    let trace = recorder.events();
    let actions: Vec<Action> = trace.events.iter().map(|e| e.action).collect();
    use Action::*;
    assert_eq!(
        actions,
        [Alloc, Alloc, Alloc, Free, Resize, Free, Trim, Free]
    );
    let first = &trace.events[0];
    assert_eq!(
        (first.bytes, first.label.as_deref()),
        (3 * MIB as u64, Some("a"))
    );
    // Device memory where it is separate; the host backend's is the host's: one allocation.
    let placed = if b.capabilities().host_addressable {
        "Shared"
    } else {
        "Device"
    };
    assert_eq!(first.placement.as_deref(), Some(placed));
    assert!(trace
        .events
        .windows(2)
        .all(|w| w[0].time_ns <= w[1].time_ns));
    let (a_mib, d_mib, c0, c1) = (3 * MIB as u64, 12 * MIB as u64, 4000, 20_000);
    assert_eq!(
        trace.live_bytes(),
        vec![
            a_mib,
            a_mib + c0,
            a_mib + c0 + d_mib,
            c0 + d_mib,
            c1 + d_mib,
            c1,
            c1,
            0
        ]
    );
    let options = ReplayOptions {
        curve_points: trace.events.len(),
        ..ReplayOptions::default()
    };
    for config in AllocatorConfig::ALL {
        let outcome = replay(&trace, b.clone(), config, options).unwrap();
        let live: Vec<u64> = outcome.curve.iter().map(|p| p.live).collect();
        assert_eq!(live, trace.live_bytes(), "{config:?}");
        assert_eq!(outcome.peak_live, trace.peak_live());
        assert!(outcome.peak_reserved >= outcome.peak_live, "{config:?}");
        assert_eq!(outcome.requests, 4);
        assert!(outcome.failure.is_none());
    }
}

/// A buffer's transfers are in the trace, with the buffer's id and the bytes that moved, and
/// the trace still replays (transfers are not about memory and are left out there).
fn transfers_are_recorded(b: &Arc<dyn Backend>) {
    let (m, recorder) = recorded(b);
    let mut buf = m
        .alloc_with::<u32>(1 << 16, AllocOptions::new().placement(Placement::Host))
        .unwrap();
    buf.host_mut().unwrap()[7] = 7;
    drop(buf.device().unwrap());
    buf.write(10, &[1, 2]).unwrap();
    buf.sync().unwrap().wait().unwrap();
    drop(buf);
    let trace = recorder.events();
    let id = trace.events[0].id;
    let moved: Vec<(Action, u64)> = (trace.events.iter())
        .filter(|e| e.id == id && !matches!(e.action, Action::Alloc | Action::Free))
        .map(|e| (e.action, e.bytes))
        .collect();
    if b.capabilities().host_addressable {
        assert!(moved.is_empty(), "one allocation: nothing moves");
    } else {
        // The whole buffer once, then only the 8 bytes written.
        assert_eq!(moved, [(Action::Upload, 1 << 18), (Action::Upload, 8)]);
    }
    let outcome = replay(
        &trace,
        b.clone(),
        AllocatorConfig::Default,
        Default::default(),
    )
    .unwrap();
    assert_eq!(outcome.requests, 1);
}

/// Every event names the stream its buffer's work is ordered on (numbered in order of
/// appearance): managers over one device share its queue, another device's is another stream;
/// a buffer's transfers are on its stream too, which RMM's `Stream` column carries.
fn events_name_their_stream(b: &Arc<dyn Backend>) {
    let recorder = Arc::new(Recorder::new(10_000));
    let manager = |backend: Arc<dyn Backend>| {
        (MemoryManager::builder())
            .backend(backend)
            .recorder(recorder.clone())
            .build()
            .unwrap()
    };
    let other: Arc<dyn Backend> = Arc::new(hetmem::backend::HostBackend::new());
    let (first, second, third) = (manager(b.clone()), manager(other), manager(b.clone()));
    let z = third.alloc_with::<u32>(16, device()).unwrap();
    drop(z);
    let mut x = first.alloc_with::<u32>(1024, device()).unwrap();
    let y = second.alloc_with::<u32>(1024, device()).unwrap();
    x.write(0, &[1, 2, 3]).unwrap();
    drop((x, y));
    let trace = recorder.events();
    let streams: Vec<(Action, Option<u64>)> = (trace.events.iter())
        .map(|e| (e.action, e.stream))
        .filter(|(a, _)| matches!(a, Action::Alloc | Action::Free))
        .collect();
    use Action::*;
    assert_eq!(
        streams,
        [
            (Alloc, Some(0)),
            (Free, Some(0)),
            (Alloc, Some(0)),
            (Alloc, Some(1)),
            (Free, Some(0)),
            (Free, Some(1))
        ]
    );
    assert!(
        (trace.events.iter())
            .filter(|e| e.action == Upload)
            .all(|e| e.stream == Some(0)),
        "a transfer is on its buffer's stream"
    );
    let mut csv = Vec::new();
    trace.write_rmm_csv(&mut csv).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    let columns: Vec<&str> = csv.lines().nth(4).unwrap().split(',').collect();
    assert_eq!(columns[5], "0x1", "the other device's stream: {csv}");
}

/// A trace written as JSON lines or RMM CSV reads back as it was (RMM has no trims, and
/// spells a resize as a free and an allocation).
fn traces_round_trip_through_both_formats(b: &Arc<dyn Backend>) {
    let (m, recorder) = recorded(b);
    let kept = m.alloc::<u8>(4096).unwrap();
    drop(m.alloc::<u8>(2 * MIB).unwrap());
    let trace = recorder.events();
    drop(kept);
    let dir = std::env::temp_dir().join(format!("hetmem-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jsonl = dir.join(format!("{:?}.jsonl", b.id()));
    trace.write(&jsonl).unwrap();
    assert_eq!(Trace::read(&jsonl).unwrap(), trace);
    let csv = dir.join(format!("{:?}.csv", b.id()));
    trace.write(&csv).unwrap();
    let back = Trace::read(&csv).unwrap();
    let strip = |e: &TraceEvent| (e.action, e.id, e.bytes, e.thread);
    assert_eq!(
        back.events.iter().map(strip).collect::<Vec<_>>(),
        trace.events.iter().map(strip).collect::<Vec<_>>()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A hand-written RMM log with a refused allocation imports as written; replayed under a
/// limit, the first allocation that does not fit is reported with what was live.
fn an_rmm_log_imports_and_replays_under_a_limit(b: &Arc<dyn Backend>) {
    let log = "Thread,Time,Action,Pointer,Size,Stream
140573312345856,1634567890.000000,allocate,0x7f8a40000000,1048576,0x7f8a38001020
140573312345856,1634567890.000500,allocate,0x7f8a40100000,4194304,0x7f8a38001020
140573312349999,1634567890.001000,allocate failure,0x0,1073741824,0x0
140573312345856,1634567890.002000,deallocate,0x7f8a40000000,1048576,0x7f8a38001020
140573312349999,1634567890.003000,allocate,0x7f8a40000000,8388608,0x0
";
    let trace = Trace::read_rmm_csv(log.as_bytes()).unwrap();
    let e = &trace.events;
    assert_eq!(e.len(), 5);
    assert_eq!(e[2].action, Action::AllocFailed);
    assert_eq!((e[2].thread, e[4].thread), (1, 1));
    assert_eq!((e[1].id, e[1].bytes), (0x7f8a40100000, 4 << 20));
    assert_eq!(e[1].time_ns, 500_000);
    assert_eq!(e[0].stream, Some(0x7f8a38001020));
    assert_eq!(trace.peak_live(), 12 << 20);
    let options = ReplayOptions {
        limit: Some(10 << 20),
        ..ReplayOptions::default()
    };
    let outcome = replay(&trace, b.clone(), AllocatorConfig::Default, options).unwrap();
    let failure = outcome.failure.expect("8 MiB beside 4 MiB exceeds 10 MiB");
    assert_eq!(
        (failure.event, failure.bytes, failure.live),
        (4, 8 << 20, 4 << 20)
    );
    assert!(failure.error.contains("limit"), "{}", failure.error);
    let free = replay(
        &trace,
        b.clone(),
        AllocatorConfig::Default,
        Default::default(),
    )
    .unwrap();
    assert!(free.failure.is_none());
}

#[test]
fn bad_trace_files_name_their_line() {
    let jsonl = |text: &str| Trace::read_jsonl(text.as_bytes()).unwrap_err();
    let alloc = r#"{"time_ns":0,"thread":0,"action":"alloc","id":1,"bytes":8}"#;
    let cases: Vec<(Error, usize, &str)> = vec![
        (jsonl(&format!("{alloc}\n{{\"time_ns\":1,\"thr")), 2, "EOF"),
        (
            jsonl(r#"{"time_ns":0,"thread":0,"action":"grow","id":1,"bytes":8}"#),
            1,
            "unknown variant",
        ),
        (
            jsonl(r#"{"time_ns":0,"thread":0,"action":"alloc","id":1,"bytes":-8}"#),
            1,
            "invalid value",
        ),
        (
            jsonl(&format!(
                "{alloc}\n\n{}",
                r#"{"time_ns":5,"thread":0,"action":"free","id":2,"bytes":0}"#
            )),
            3,
            "not live",
        ),
        (jsonl(&format!("{alloc}\n{alloc}")), 2, "already live"),
        (
            jsonl(r#"{"time_ns":0,"thread":0,"action":"upload","id":5,"bytes":8}"#),
            1,
            "transfer of 0x5, which is not live",
        ),
    ];
    let header = "Thread,Time,Action,Pointer,Size,Stream\n";
    let csv = |rows: &str| Trace::read_rmm_csv(format!("{header}{rows}").as_bytes()).unwrap_err();
    let more: Vec<(Error, usize, &str)> = vec![
        (csv("1,0.5,allocate,0x10,64\n"), 2, "columns"),
        (
            csv("1,0.5,allocate,0x10,64,0x0\n1,0.6,grow,0x10,64,0x0\n"),
            3,
            "unknown action",
        ),
        (csv("1,0.5,allocate,0x10,-64,0x0\n"), 2, "negative size"),
        (csv("1,0.5,deallocate,0x99,64,0x0\n"), 2, "not live"),
        (csv("1,noon,allocate,0x10,64,0x0\n"), 2, "bad time"),
        (
            Trace::read_rmm_csv("Thread,When,Action\n".as_bytes()).unwrap_err(),
            1,
            "expected the columns",
        ),
    ];
    for (err, line, says) in cases.into_iter().chain(more) {
        match &err {
            Error::BadTrace { line: l, reason } => {
                assert_eq!(*l, line, "{err}");
                assert!(reason.contains(says), "{err} should say {says:?}");
            }
            other => panic!("expected BadTrace, got {other:?}"),
        }
    }
}

/// Running out of memory under a streamed trace writes the last events and a snapshot beside
/// it, and the refusal is in the trace.
#[test]
fn running_out_of_memory_dumps_the_trace_and_a_snapshot() {
    let dir = std::env::temp_dir().join(format!("hetmem-oom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("trace.jsonl");
    let recorder = Arc::new(Recorder::streaming_to(&path, 100).unwrap());
    let m = MemoryManager::builder()
        .limit(4 * MIB as u64)
        .recorder(recorder.clone())
        .build()
        .unwrap();
    let _kept = m.alloc_with::<u8>(3 * MIB, device().label("kept")).unwrap();
    assert!(matches!(
        m.alloc_with::<u8>(2 * MIB, device()),
        Err(Error::LimitExceeded { .. })
    ));
    let dump: serde_json::Value =
        serde_json::from_reader(std::fs::File::open(dir.join("trace.jsonl.oom.json")).unwrap())
            .unwrap();
    assert!(dump["error"].as_str().unwrap().contains("limit"));
    let events = dump["events"].as_array().unwrap();
    assert_eq!(events.last().unwrap()["action"], "alloc_failed");
    assert_eq!(dump["snapshot"]["buffers"][0]["label"], "kept");
    let kept = &dump["snapshot"]["buffers"][0]["id"];
    let ranges = dump["snapshot"]["device_segments"][0]["ranges"]
        .as_array()
        .unwrap();
    assert!(ranges.iter().any(|r| &r["buffer"] == kept), "{ranges:?}");
    recorder.flush().unwrap();
    let streamed = Trace::read(&path).unwrap();
    assert_eq!(streamed.events.len(), 2);
    assert_eq!(streamed.events[1].action, Action::AllocFailed);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A snapshot shows the device segments range by range and the live buffers.
fn snapshots_show_segments_and_buffers(b: &Arc<dyn Backend>) {
    let m = MemoryManager::new(b.clone()).unwrap();
    let blocks: Vec<_> = (0..3)
        .map(|i| {
            m.alloc_with::<u8>(4 * MIB, device().label(format!("b{i}")))
                .unwrap()
        })
        .collect();
    let snapshot = m.snapshot();
    let segments = &snapshot.device_segments;
    assert!(!segments.is_empty());
    for segment in segments {
        let tiled: u64 = segment.ranges.iter().map(|r| r.len).sum();
        assert_eq!(tiled, segment.size, "ranges tile their segment");
    }
    let used: Vec<_> = segments
        .iter()
        .flat_map(|s| &s.ranges)
        .filter(|r| r.used)
        .collect();
    assert_eq!(used.len(), 3);
    assert!(used.iter().all(|r| r.len == 4 << 20));
    let labels: Vec<_> = snapshot
        .buffers
        .iter()
        .map(|b| b.label.clone().unwrap())
        .collect();
    assert_eq!(labels, ["b0", "b1", "b2"]);
    let json = serde_json::to_value(&snapshot).unwrap();
    let ranges = json["device_segments"][0]["ranges"].as_array().unwrap();
    assert_eq!(ranges.len(), segments[0].ranges.len());
    // Each used range names the buffer whose copy it is, with its label and last event.
    let owners: Vec<_> = used
        .iter()
        .map(|r| snapshot.owner(r).unwrap().label.clone().unwrap())
        .collect();
    let mut sorted = owners.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["b0", "b1", "b2"],
        "every used range has its own buffer"
    );
    assert!(snapshot.buffers.iter().all(|b| b.last_event.is_none()));
    let mut blocks = blocks;
    blocks[1].host_mut().unwrap()[..4].copy_from_slice(&[1, 2, 3, 4]);
    blocks[2].host_mut().unwrap()[..4].copy_from_slice(&[5, 6, 7, 8]);
    blocks[2].sync().unwrap().wait().unwrap();
    let snapshot = m.snapshot();
    let last: Vec<_> = snapshot.buffers.iter().map(|b| b.last_event).collect();
    // The sync uploads where the buffer has two copies; with one (host memory) it moves nothing.
    let synced = match blocks[2].residency() {
        Residency::Mirrored => BufferEvent::Upload,
        _ => BufferEvent::Access,
    };
    assert_eq!(last, [None, Some(BufferEvent::Access), Some(synced)]);
    let ago = |i: usize| snapshot.buffers[i].last_event_ms_ago.unwrap();
    // Events are stamped to the scheduler's tick (1–4 ms): b2's came after b1's.
    assert!(ago(2) <= ago(1) && ago(1) <= snapshot.buffers[1].age_ms + 10.0);
    // With two copies, b1 and b2 now have host copies too: the host pool's ranges name them.
    let mirrored = blocks[1].residency() == Residency::Mirrored;
    let mut host_owners: Vec<_> = (snapshot.host_segments.iter())
        .flat_map(|s| &s.ranges)
        .filter_map(|r| snapshot.owner(r))
        .map(|b| b.label.clone().unwrap())
        .collect();
    host_owners.sort();
    let expected: &[&str] = if mirrored { &["b1", "b2"] } else { &[] };
    assert_eq!(host_owners, expected);
    drop(blocks);
    let snapshot = m.snapshot();
    let segments = snapshot
        .device_segments
        .iter()
        .chain(&snapshot.host_segments);
    assert!(segments.flat_map(|s| &s.ranges).all(|r| r.buffer.is_none()));
}

common::backend_suite!(
    [
        host => crate::common::host(),
        opencl_dev0 => crate::common::opencl(0),
        wgpu => crate::common::wgpu(),
        cuda_dev0 => crate::common::cuda(0),
    ],
    [
        record_then_replay_reproduces_the_live_curve,
        traces_round_trip_through_both_formats,
        an_rmm_log_imports_and_replays_under_a_limit,
        transfers_are_recorded,
        events_name_their_stream,
        snapshots_show_segments_and_buffers,
    ]
);
