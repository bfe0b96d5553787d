//! Host memory sources (`hetmem::host`): alignment checked by address, huge pages with the
//! kernel's own evidence (`AnonHugePages`) and the fallback when none are reserved, NUMA binding
//! checked page by page, locked memory in `VmLck` and the limit's typed error in a real child
//! process, bad input — each source alone, as a backend, and as the host side of buffers on the
//! host and PoCL.

mod common;

use std::sync::Arc;

use hetmem::backend::{Backend, HostBackend};
use hetmem::host::{
    anon_huge_bytes, host_system, page_nodes, HostRegion, HostSource, Numa, Pages, HUGE_PAGE,
};
use hetmem::{Error, MemoryManager};

const MIB: usize = 1 << 20;

fn source(alignment: usize, pages: Pages) -> HostSource {
    HostSource {
        alignment,
        pages,
        ..HostSource::default()
    }
}

/// Writes a pattern over the whole region and reads it back.
fn round_trip(region: &mut HostRegion) {
    assert!(
        region.as_slice().iter().all(|&b| b == 0),
        "fresh memory is zeroed"
    );
    let len = region.len();
    for (i, b) in region.as_mut_slice().iter_mut().enumerate() {
        *b = (i * 7 + len) as u8;
    }
    assert!(region
        .as_slice()
        .iter()
        .enumerate()
        .all(|(i, &b)| b == (i * 7 + len) as u8));
}

#[test]
fn every_alignment_is_met_from_a_byte_to_sixty_four_mib() {
    for shift in [0, 3, 6, 12, 16, 21, 26] {
        let alignment = 1usize << shift;
        for len in [1, 4095, 4097, 3 * MIB + 5] {
            let mut region = HostRegion::allocate(&source(alignment, Pages::Base), len).unwrap();
            assert_eq!(
                region.as_ptr() as usize % alignment,
                0,
                "{alignment} / {len}"
            );
            assert_eq!(region.len(), len);
            assert_eq!(region.granted().pages, Pages::Base);
            round_trip(&mut region);
        }
    }
}

#[test]
fn bad_sources_and_sizes_are_typed_errors() {
    for alignment in [0, 3, 48, 96, 1 << 31] {
        let bad = source(alignment, Pages::Base);
        assert!(
            matches!(
                HostRegion::allocate(&bad, 64),
                Err(Error::InvalidArgument(_))
            ),
            "alignment {alignment}"
        );
        assert!(matches!(
            HostBackend::with_source(bad),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            MemoryManager::builder().host_source(bad).build(),
            Err(Error::InvalidArgument(_))
        ));
    }
    let heap = HostSource::default();
    let mapped = source(1 << 16, Pages::Transparent);
    for s in [heap, mapped] {
        assert!(matches!(
            HostRegion::allocate(&s, 0),
            Err(Error::ZeroLength { .. })
        ));
    }
    assert!(matches!(
        HostRegion::allocate(&heap, usize::MAX - 8),
        Err(Error::SizeOverflow { .. })
    ));
    assert!(matches!(
        HostRegion::allocate(&mapped, usize::MAX - 8),
        Err(Error::OutOfMemory { .. })
    ));
    let far = HostSource {
        numa: Numa::Bind(4096),
        ..HostSource::default()
    };
    let refused = HostRegion::allocate(&far, 4096).unwrap_err();
    assert!(
        matches!(&refused, Error::InvalidArgument(m) if m.contains("4096")),
        "{refused}"
    );
}

#[test]
fn transparent_huge_pages_back_the_region_where_the_kernel_offers_them() {
    let len = 8 * MIB;
    let mut region = HostRegion::allocate(&source(64, Pages::Transparent), len).unwrap();
    assert_eq!(region.as_ptr() as usize % HUGE_PAGE, 0);
    round_trip(&mut region);
    let mode = host_system().transparent_huge_pages;
    match mode.as_deref() {
        Some("always" | "madvise") => {
            assert_eq!(region.granted().pages, Pages::Transparent);
            assert_eq!(region.granted().fallback, None);
            let huge = anon_huge_bytes(region.as_ptr()).expect("the region is mapped");
            assert!(
                huge >= HUGE_PAGE as u64,
                "AnonHugePages {huge} for {len} bytes"
            );
        }
        _ => {
            assert_eq!(region.granted().pages, Pages::Base);
            let why = region.granted().fallback.clone().unwrap();
            assert!(why.contains("transparent huge pages unavailable"), "{why}");
        }
    }
}

#[test]
fn explicit_huge_pages_fall_back_with_the_reason() {
    let mut region = HostRegion::allocate(&source(64, Pages::Huge), 3 * MIB).unwrap();
    round_trip(&mut region);
    let reserved = host_system().reserved_huge_pages;
    if reserved >= 2 {
        assert_eq!(region.granted().pages, Pages::Huge);
        return;
    }
    // This machine reserves none (vm.nr_hugepages = 0): MAP_HUGETLB fails and says why.
    assert_ne!(region.granted().pages, Pages::Huge);
    let why = region.granted().fallback.clone().unwrap();
    assert!(
        why.contains("explicit huge pages refused") && why.contains("nr_hugepages = "),
        "{why}"
    );
}

#[test]
fn numa_binding_puts_every_page_on_the_node() {
    let system = host_system();
    assert!(!system.numa_nodes.is_empty());
    let node = system.numa_nodes[0];
    for numa in [Numa::Bind(node), Numa::Prefer(node)] {
        let s = HostSource {
            numa,
            ..HostSource::default()
        };
        let mut region = HostRegion::allocate(&s, 2 * MIB + 123).unwrap();
        assert_eq!(region.granted().node, Some(node));
        round_trip(&mut region);
        let nodes = page_nodes(region.as_ptr(), region.len()).unwrap();
        assert_eq!(nodes.len(), (2 * MIB + 123).div_ceil(4096));
        assert!(
            nodes.iter().all(|&n| n == node as i32),
            "{numa:?}: {nodes:?}"
        );
    }
}

/// `VmLck` of this process, in bytes.
fn locked_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmLck:")).unwrap();
    let kb: u64 = line[6..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

#[test]
fn locked_memory_is_counted_while_it_lives() {
    let s = HostSource {
        locked: true,
        ..HostSource::default()
    };
    let before = locked_bytes();
    let backend = HostBackend::with_source(s).unwrap();
    let block = Backend::allocate(&backend, 4 * MIB).unwrap();
    assert!(locked_bytes() >= before + 4 * MIB as u64);
    assert_eq!(backend.source_stats().locked_bytes, 4 * MIB as u64);
    Backend::release(&backend, block).unwrap();
    assert_eq!(backend.source_stats().locked_bytes, 0);
    assert!(locked_bytes() < before + 4 * MIB as u64);
}

/// Run in a child process (this test binary, this test alone): below a 64 KiB locked-memory
/// limit and without root's `CAP_IPC_LOCK`, locking 1 MiB is the typed error with the limit.
#[test]
fn locking_beyond_the_limit_is_a_typed_error() {
    const CHILD: &str = "HETMEM_LOCK_LIMIT_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let limit = 64 * 1024;
        rustix::process::setrlimit(
            rustix::process::Resource::Memlock,
            rustix::process::Rlimit {
                current: Some(limit),
                maximum: Some(limit),
            },
        )
        .unwrap();
        // Capabilities are per thread: this thread, which allocates, drops root's CAP_IPC_LOCK.
        if rustix::process::geteuid().is_root() {
            rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(65534)).unwrap();
        }
        let s = HostSource {
            locked: true,
            ..HostSource::default()
        };
        match HostRegion::allocate(&s, MIB) {
            Err(Error::MemoryLockLimit {
                requested,
                limit: Some(l),
            }) => {
                assert_eq!((requested, l), (MIB as u64, limit));
            }
            other => panic!("expected MemoryLockLimit, got {other:?}"),
        }
        println!("child checked the lock limit");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "locking_beyond_the_limit_is_a_typed_error",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("child checked the lock limit"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Buffers whose host copies come from `source`, on `device`: contents round-trip through the
/// device, and the host copy starts where the source says.
fn buffers_use_the_source(device: Arc<dyn Backend>, source: HostSource) {
    let manager = MemoryManager::builder()
        .backend(device)
        .host_source(source)
        .build()
        .unwrap();
    let data: Vec<u32> = (0..3 * MIB as u32 / 4)
        .map(|i| i.wrapping_mul(2_654_435_761))
        .collect();
    let mut buf = manager.from_slice(&data).unwrap();
    buf.sync().unwrap().wait().unwrap();
    assert_eq!(
        buf.host().unwrap().as_ptr() as usize % source.alignment,
        0,
        "host copy alignment"
    );
    buf.device_mut().unwrap();
    assert_eq!(buf.to_vec().unwrap(), data);
    buf.fill(7, 10..20).unwrap();
    let back = buf.to_vec().unwrap();
    assert!(back[10..20].iter().all(|&x| x == 7));
    assert_eq!(back[20..], data[20..]);
}

#[test]
fn buffers_on_the_host_use_a_sourced_host_backend() {
    let s = source(1 << 21, Pages::Transparent);
    let device: Arc<dyn Backend> = Arc::new(HostBackend::with_source(s).unwrap());
    buffers_use_the_source(device.clone(), s);
    let stats = device
        .as_any()
        .downcast_ref::<HostBackend>()
        .unwrap()
        .source_stats();
    assert!(
        stats.base_pages + stats.transparent_huge_pages > 0,
        "{stats:?}"
    );
}

#[test]
fn buffers_on_pocl_take_their_host_copies_from_the_source() {
    let Some(device) = common::opencl(0) else {
        return;
    };
    buffers_use_the_source(device, source(1 << 16, Pages::Transparent));
    buffers_use_the_source(common::opencl(0).unwrap(), source(1 << 21, Pages::Huge));
}

/// The manager's statistics report what the host source was granted, fallbacks included.
#[test]
fn manager_statistics_report_the_host_source() {
    let manager = MemoryManager::builder()
        .backend(common::opencl(0).unwrap_or_else(|| Arc::new(HostBackend::new())))
        .host_source(source(64, Pages::Huge))
        .build()
        .unwrap();
    let buf = manager.from_slice(&vec![1u32; 1 << 20]).unwrap();
    let stats = manager.stats();
    if manager.decide(&Default::default(), 4).unwrap().residency
        == hetmem::buffer::Residency::Shared
    {
        return; // one allocation on the host device: no host copy to source
    }
    let h = &stats.host_source;
    assert_eq!(
        h.base_pages + h.transparent_huge_pages + h.huge_pages,
        1,
        "{h:?}"
    );
    if host_system().reserved_huge_pages == 0 {
        let why = h.last_fallback.as_deref().unwrap();
        assert!(why.contains("nr_hugepages = 0"), "{why}");
        assert!(stats.summary().contains("fell back"), "{}", stats.summary());
    }
    drop(buf);
}
