//! The host backend's primitives, at small sizes: every `unsafe` block runs here, also under
//! Miri.

use super::*;

#[test]
fn repeating_fill_matches_the_pattern_everywhere() {
    for (len, pattern) in [
        (12, &[1u8, 2, 3][..]),
        (4096, &[9, 8, 7, 6]),
        (5, &[4]),
        (0, &[1, 2]),
    ] {
        let mut bytes = vec![0u8; len];
        fill_repeating(&mut bytes, pattern);
        let expected: Vec<u8> = pattern.iter().copied().cycle().take(len).collect();
        assert_eq!(bytes, expected);
    }
}

fn bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

#[test]
fn host_bytes_alias_the_block_and_refuse_foreign_blocks() {
    let b: &dyn Backend = &HostBackend::new();
    let other: &dyn Backend = &HostBackend::new();
    let q = b.default_queue().clone();
    let mut x = b.allocate(16).unwrap();
    b.host_bytes_mut(&mut x).unwrap()[3] = 42;
    let mut out = [0u8; 16];
    b.read(&q, &x, 0, &mut out).unwrap();
    assert_eq!(out[3], 42);
    b.write(&q, &mut x, 8, &[7, 8]).unwrap();
    assert_eq!(&b.host_bytes(&x).unwrap()[8..10], &[7, 8]);
    assert!(other.host_bytes(&x).is_none());
    assert!(other.host_bytes_mut(&mut x).is_none());
    b.release(x).unwrap();
}

#[test]
fn write_read_copy_fill_release() {
    let b: &dyn Backend = &HostBackend::new();
    let q = b.default_queue().clone();
    let mut x = b.allocate(100).unwrap();
    let mut y = b.allocate(100).unwrap();
    assert_eq!(x.raw_handle() as usize % HOST_ALIGNMENT, 0);
    let mut out = vec![1u8; 100];
    b.read(&q, &x, 0, &mut out).unwrap();
    assert_eq!(out, vec![0u8; 100], "fresh blocks are zeroed");
    b.write(&q, &mut x, 10, &bytes(50)).unwrap();
    b.copy(
        &q,
        &x,
        &mut y,
        CopyRegion {
            src_offset: 10,
            dst_offset: 0,
            len: 50,
        },
    )
    .unwrap();
    b.fill(&q, &mut y, 64, 32, &[1, 2, 3, 4]).unwrap();
    b.read(&q, &y, 0, &mut out).unwrap();
    assert_eq!(&out[..50], &bytes(50)[..]);
    assert_eq!(&out[50..64], &[0u8; 14]);
    assert_eq!(&out[64..68], &[1, 2, 3, 4]);
    assert_eq!(&out[88..96], &[1, 2, 3, 4, 1, 2, 3, 4]);
    assert_eq!(&out[96..], &[0u8; 4], "fill stops at its range");
    b.release(x).unwrap();
    b.release(y).unwrap();
    assert_eq!(b.usage().live_bytes, 0);
}

/// Work held behind a gate (every held path: fill, copy, staged write and read, marker)
/// runs in order once the gate opens, on the opening thread; host access to its blocks
/// waits for it. Run under Miri with the rest of this module.
#[test]
fn held_work_runs_in_order_when_the_gate_opens() {
    let b: &dyn Backend = &HostBackend::new();
    let q = b.create_queue().unwrap();
    let mut s = b.allocate_staging(32).unwrap();
    s.as_mut_slice().unwrap().copy_from_slice(&bytes(32));
    let (mut x, mut y) = (b.allocate(64).unwrap(), b.allocate(64).unwrap());
    let mut back = b.allocate_staging(64).unwrap();
    let gate = b.create_user_event().unwrap();
    b.enqueue_wait(&q, gate.event()).unwrap();
    let events = [
        b.fill(&q, &mut x, 0, 64, &[3]).unwrap(),
        b.write_staged(
            &q,
            &mut x,
            &s,
            CopyRegion {
                src_offset: 0,
                dst_offset: 16,
                len: 32,
            },
        )
        .unwrap(),
        b.copy(&q, &x, &mut y, CopyRegion::prefix(64)).unwrap(),
        b.read_staged(&q, &y, &mut back, CopyRegion::prefix(64))
            .unwrap(),
        b.enqueue_marker(&q).unwrap(),
    ];
    assert!(
        events.iter().all(|e| !e.is_finished()),
        "held behind the gate"
    );
    gate.complete().unwrap();
    assert!(events.iter().all(Event::is_finished));
    let mut expected = [3u8; 64];
    expected[16..48].copy_from_slice(&bytes(32));
    assert_eq!(back.as_slice().unwrap(), &expected[..]);
    assert_eq!(b.host_bytes(&y).unwrap(), &expected[..]);
    b.release(x).unwrap();
    b.release(y).unwrap();
}

#[test]
fn staging_round_trip_and_drop() {
    let b: &dyn Backend = &HostBackend::new();
    let q = b.default_queue().clone();
    let mut s = b.allocate_staging(33).unwrap();
    assert_eq!(s.as_slice().unwrap(), &[0u8; 33][..]);
    s.as_mut_slice().unwrap().copy_from_slice(&bytes(33));
    let mut block = b.allocate(40).unwrap();
    b.write_staged(
        &q,
        &mut block,
        &s,
        CopyRegion {
            src_offset: 0,
            dst_offset: 7,
            len: 33,
        },
    )
    .unwrap()
    .wait()
    .unwrap();
    let mut back = b.allocate_staging(33).unwrap();
    b.read_staged(
        &q,
        &block,
        &mut back,
        CopyRegion {
            src_offset: 7,
            dst_offset: 0,
            len: 33,
        },
    )
    .unwrap();
    assert_eq!(back.as_slice().unwrap(), &bytes(33)[..]);
    drop(s);
    b.release(block).unwrap();
}

#[test]
fn foreign_and_out_of_range_leave_memory_alone() {
    let a: &dyn Backend = &HostBackend::new();
    let b: &dyn Backend = &HostBackend::new();
    let mut block = a.allocate(8).unwrap();
    assert!(matches!(
        b.write(b.default_queue(), &mut block, 0, &[1]),
        Err(Error::ForeignHandle { .. })
    ));
    assert!(matches!(
        a.write(a.default_queue(), &mut block, 4, &[1; 5]),
        Err(Error::OutOfRange { .. })
    ));
    let Err(Error::ReleasedToWrongBackend { block, .. }) = b.release(block) else {
        panic!("release to the wrong backend must fail");
    };
    assert_eq!(a.usage().live_blocks, 1);
    a.release(block).unwrap();
    assert_eq!(a.usage().live_blocks, 0);
}

#[test]
fn views_alias_their_segment_and_go_back_as_views() {
    let b: &dyn Backend = &HostBackend::new();
    let q = b.default_queue().clone();
    let mut segment = b.allocate(1024).unwrap();
    let mut view = b.view(&segment, 512, 256).unwrap();
    assert!(view.is_view() && view.size() == 256);
    b.host_bytes_mut(&mut view).unwrap().fill(5);
    b.write(&q, &mut view, 250, &[6, 7]).unwrap();
    let seen = b.host_bytes(&segment).unwrap();
    assert!(seen[512..762].iter().all(|&x| x == 5));
    assert_eq!(&seen[762..764], &[6, 7]);
    assert!(
        seen[..512].iter().all(|&x| x == 0),
        "outside the view untouched"
    );
    b.fill(&q, &mut segment, 0, 1024, &[1])
        .unwrap()
        .wait()
        .unwrap();
    assert!(b.host_bytes(&view).unwrap().iter().all(|&x| x == 1));
    let Err(Error::ReleasedAsWrongKind { block: view, .. }) = b.release(view) else {
        panic!("a view released as an allocation");
    };
    b.release_view(view).unwrap();
    assert_eq!(b.usage().live_blocks, 1, "views are not allocations");
    b.release(segment).unwrap();
}
