//! Named shared memory between real processes (this test binary, run again as a child): a child
//! writes what the parent reads through a buffer, a creator that dies leaves a segment that still
//! opens and unlinks, segments are mode 0600, and bad names and mismatched opens are typed errors.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Arc;

use hetmem::backend::{Backend, HostBackend};
use hetmem::host::SharedSegment;
use hetmem::{Error, MemoryManager};

/// A name no other run uses.
fn unique(tag: &str) -> String {
    format!("hetmem-test-{}-{tag}", std::process::id())
}

/// Runs this test binary's test `test` alone in a child process with `SEGMENT=name`.
fn child(test: &str, name: &str) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("SEGMENT", name)
        .output()
        .unwrap()
}

/// The device buffers are checked on: the first OpenCL device where there is one, else host.
fn device() -> Arc<dyn Backend> {
    common::opencl(0).unwrap_or_else(|| Arc::new(HostBackend::new()))
}

fn manager() -> MemoryManager {
    MemoryManager::new(device()).unwrap()
}

#[test]
fn a_child_process_writes_what_the_parent_reads() {
    const TEST: &str = "a_child_process_writes_what_the_parent_reads";
    if let Ok(name) = std::env::var("SEGMENT") {
        // The child: sees the parent's values, writes its own, through a buffer of its own.
        let mut buf = manager().open_shared::<u32>(&name).unwrap();
        let seen = buf.to_vec().unwrap();
        assert!(
            seen.iter().enumerate().all(|(i, &x)| x == i as u32),
            "{seen:?}"
        );
        for (i, x) in buf.host_mut().unwrap().iter_mut().enumerate() {
            *x = i as u32 * 3 + 1;
        }
        println!("child wrote the segment");
        return;
    }
    let name = unique("child-writes");
    let manager = manager();
    let mut buf = manager.create_shared::<u32>(&name, 10_000).unwrap();
    for (i, x) in buf.host_mut().unwrap().iter_mut().enumerate() {
        *x = i as u32;
    }
    let out = child(TEST, &name);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("child wrote the segment"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The host copy is the segment: the child's values, uploaded to the device and back.
    let want: Vec<u32> = (0..10_000).map(|i| i * 3 + 1).collect();
    assert_eq!(&buf.host().unwrap()[..], &want[..]);
    buf.device_mut().unwrap();
    assert_eq!(buf.to_vec().unwrap(), want);
    SharedSegment::unlink(&name).unwrap();
}

#[test]
fn a_dead_creator_leaves_a_segment_that_opens_and_unlinks() {
    const TEST: &str = "a_dead_creator_leaves_a_segment_that_opens_and_unlinks";
    if let Ok(name) = std::env::var("SEGMENT") {
        let mut segment = manager().create_shared::<u64>(&name, 512).unwrap();
        segment.host_mut().unwrap()[..256].fill(0xDEAD);
        println!("child dies now");
        std::process::abort(); // no unlink, no unmap, no destructors
    }
    let name = unique("dead-creator");
    let out = child(TEST, &name);
    assert!(!out.status.success(), "the child aborted");
    assert!(String::from_utf8_lossy(&out.stdout).contains("child dies now"));
    let buf = manager().open_shared::<u64>(&name).unwrap();
    let seen = buf.to_vec().unwrap();
    assert!(seen[..256].iter().all(|&x| x == 0xDEAD));
    assert!(seen[256..].iter().all(|&x| x == 0));
    SharedSegment::unlink(&name).unwrap();
    drop(buf);
    let gone = SharedSegment::open::<u64>(&name).unwrap_err();
    assert!(
        matches!(&gone, Error::Os(e) if e.kind() == std::io::ErrorKind::NotFound),
        "{gone}"
    );
}

#[test]
fn segments_are_private_to_their_user() {
    let name = unique("mode");
    let segment = SharedSegment::create::<u8>(&name, 4096).unwrap();
    let mode = std::fs::metadata(format!("/dev/shm/{name}"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!((segment.name(), segment.elements()), (name.as_str(), 4096));
    SharedSegment::unlink(&name).unwrap();
}

#[test]
fn bad_names_are_typed_errors() {
    let long = "x".repeat(hetmem::host::MAX_NAME + 1);
    let bad = [
        "",
        ".",
        "..",
        "a/b",
        "/a",
        "a/",
        "a b",
        "a\0b",
        "é",
        "name*",
        "semi;colon",
        "tab\t",
        "new\nline",
        "dollar$",
        "quote'",
        "back\\slash",
        "percent%",
        "colon:",
        "comma,",
        "at@",
        "plus+",
        "(paren)",
        "~home",
        &long,
    ];
    assert!(bad.len() >= 20);
    for name in bad {
        let errors = [
            SharedSegment::create::<u32>(name, 4).map(drop),
            SharedSegment::open::<u32>(name).map(drop),
            SharedSegment::unlink(name),
            manager().create_shared::<u32>(name, 4).map(drop),
        ];
        for e in errors {
            assert!(
                matches!(e, Err(Error::InvalidArgument(_))),
                "{name:?}: {e:?}"
            );
        }
    }
    // The longest name accepted works.
    let longest = format!("{}{}", unique("l"), "y".repeat(hetmem::host::MAX_NAME))
        .split_at(hetmem::host::MAX_NAME)
        .0
        .to_owned();
    SharedSegment::create::<u8>(&longest, 1).unwrap();
    SharedSegment::unlink(&longest).unwrap();
}

#[test]
fn mismatched_opens_are_typed_errors() {
    let cast = |r: hetmem::Result<SharedSegment>, why: &str| match r {
        Err(Error::IncompatibleCast { reason, .. }) => assert!(reason.contains(why), "{reason}"),
        other => panic!("expected IncompatibleCast ({why}), got {other:?}"),
    };
    let name = unique("mismatch");
    let made = SharedSegment::create::<u32>(&name, 100).unwrap();
    cast(SharedSegment::open::<f32>(&name), "another type");
    cast(SharedSegment::open::<u64>(&name), "another type");
    let exists = SharedSegment::create::<u32>(&name, 100).unwrap_err();
    assert!(matches!(&exists, Error::Os(e) if e.kind() == std::io::ErrorKind::AlreadyExists));
    // Cut short behind hetmem's back: below what the header says, then below the header.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/{name}"))
        .unwrap();
    drop(made);
    file.set_len(64 + 4 * 50).unwrap();
    cast(
        SharedSegment::open::<u32>(&name),
        "shorter than its header says",
    );
    file.set_len(10).unwrap();
    cast(SharedSegment::open::<u32>(&name), "shorter than its header");
    SharedSegment::unlink(&name).unwrap();
    // A segment hetmem did not make.
    let foreign = unique("foreign");
    std::fs::write(format!("/dev/shm/{foreign}"), [0u8; 128]).unwrap();
    cast(SharedSegment::open::<u32>(&foreign), "not made by hetmem");
    SharedSegment::unlink(&foreign).unwrap();
    let missing = SharedSegment::open::<u32>(&unique("missing")).unwrap_err();
    assert!(matches!(&missing, Error::Os(e) if e.kind() == std::io::ErrorKind::NotFound));
    assert!(matches!(
        SharedSegment::create::<u32>(&unique("empty"), 0),
        Err(Error::ZeroLength { .. })
    ));
}
