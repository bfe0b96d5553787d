//! `hetmem replay`: an RMM log and a hetmem trace replayed against every configuration, a
//! limit that one run exceeds (non-zero exit, the event named), JSON on standard output, the
//! plot and the segment picture, and bad files refused with their line.

mod common;

use std::path::{Path, PathBuf};

use common::hetmem;

/// A scratch directory of this test's own.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hetmem-replay-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const RMM_LOG: &str = "Thread,Time,Action,Pointer,Size,Stream
7,10.000000,allocate,0x1000,1048576,0x0
7,10.000500,allocate,0x200000,4194304,0x0
8,10.001000,allocate failure,0x0,1073741824,0x0
7,10.002000,deallocate,0x1000,1048576,0x0
8,10.003000,allocate,0x1000,8388608,0x0
7,10.004000,free,0x200000,4194304,0x0
8,10.005000,free,0x1000,8388608,0x0
";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn an_rmm_log_replays_against_every_configuration() {
    let dir = scratch("all");
    let log = write(&dir, "log.csv", RMM_LOG);
    let plots = dir.join("plots");
    let out = hetmem(&[
        "replay",
        &log,
        "--snapshot-at",
        "4",
        "--plot",
        plots.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for config in ["default", "compact", "classes", "power-of-two", "unpooled"] {
        assert!(stdout.contains(config), "{stdout}");
    }
    assert!(stdout.contains("7 events, peak live 12.0 MiB"), "{stdout}");
    // After event 4 the default configuration holds 4 MiB and 8 MiB side by side in its one
    // expandable segment, the freed 1 MiB before them still committed, and a sixteenth of what
    // it held committed ahead of each growth at its top (64 KiB and 320 KiB).
    assert!(
        stdout.contains("segments of `default` after event 4"),
        "{stdout}"
    );
    assert!(
        stdout.contains("12.0 MiB of 13.3 MiB in use, 2 blocks (expandable, 13.3 MiB committed)"),
        "{stdout}"
    );
    for file in ["replay.svg", "replay.png"] {
        assert!(std::fs::metadata(plots.join(file)).unwrap().len() > 1000);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_limit_names_the_first_refused_event_and_fails_the_run() {
    let dir = scratch("limit");
    let log = write(&dir, "log.csv", RMM_LOG);
    let out = hetmem(&[
        "replay",
        &log,
        "--limit",
        "10485760",
        "--configs",
        "default,unpooled",
        "--json",
        "-",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ran out of memory under the limit: default, unpooled"),
        "{stderr}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["config"], "default");
    let failure = &results[1]["failure"];
    assert_eq!(
        (failure["event"].as_u64(), failure["bytes"].as_u64()),
        (Some(4), Some(8 << 20))
    );
    assert_eq!(failure["live"].as_u64(), Some(4 << 20));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_files_and_names_are_refused_clearly() {
    let dir = scratch("bad");
    let bad = write(
        &dir,
        "bad.csv",
        "Thread,Time,Action,Pointer,Size,Stream\n1,0.1,allocate,0x10,64,0x0\n1,0.2,resize,0x10,64,0x0\n",
    );
    let out = hetmem(&["replay", &bad]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("trace line 3: unknown action \"resize\""),
        "{stderr}"
    );
    let jsonl = write(
        &dir,
        "t.jsonl",
        "{\"time_ns\":0,\"thread\":0,\"action\":\"free\",\"id\":9,\"bytes\":1}\n",
    );
    let out = hetmem(&["replay", &jsonl]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("trace line 1: free of 0x9"));
    let out = hetmem(&["replay", &jsonl, "--configs", "buddy"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown configuration \"buddy\""));
    std::fs::remove_dir_all(&dir).unwrap();
}
