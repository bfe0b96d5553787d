//! Memory hetmem did not allocate as a buffer's host copy: mapped files round-trip through a
//! device and back to disk (read-only files are never written), the caller's `Vec` and raw
//! memory are used in place and released exactly once, and bad input is a typed error with
//! nothing leaked.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hetmem::backend::{Backend, HostBackend};
use hetmem::host::{ExternalHost, FileAccess, HostRegion, HostSource, MappedFile};
use hetmem::{Error, MemoryManager};

fn device() -> Arc<dyn Backend> {
    common::opencl(0).unwrap_or_else(|| Arc::new(HostBackend::new()))
}

fn path(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("hetmem-{}-{tag}", std::process::id()))
}

fn words(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks(4)
        .map(|c| u32::from_ne_bytes(c.try_into().unwrap()))
        .collect()
}

/// Writes `data` into the buffer's device copy, as a user's kernel would.
fn device_write(
    manager: &MemoryManager,
    buf: &mut hetmem::UnifiedBuffer<u32>,
    offset: usize,
    data: &[u32],
) {
    let mut d = buf.device_mut().unwrap();
    let (q, base) = (d.queue().clone(), d.offset());
    let bytes: &[u8] = bytemuck::cast_slice(data);
    manager
        .backend()
        .write(&q, d.block_mut(), base + offset * 4, bytes)
        .unwrap();
}

#[test]
fn a_mapped_file_round_trips_through_a_device_and_back_to_disk() {
    let file = path("round-trip");
    let data: Vec<u32> = (0..300_000).map(|i| i * 7).collect();
    std::fs::write(&file, bytemuck::cast_slice(&data)).unwrap();
    let manager = MemoryManager::new(device()).unwrap();
    let mapped = MappedFile::open(&file, FileAccess::ReadWrite).unwrap();
    let mapping = hetmem::host::HostMemory::as_ptr(&mapped) as usize;
    let mut buf = manager.adopt_host::<u32>(mapped).unwrap();
    assert_eq!(buf.len(), 300_000);
    assert_eq!(buf.host().unwrap().as_ptr() as usize, mapping, "zero-copy");
    device_write(&manager, &mut buf, 1000, &[5; 100]);
    let back = buf.host().unwrap().to_vec(); // a host guard downloads into the mapping
    assert!(back[1000..1100].iter().all(|&x| x == 5));
    drop(buf); // unmapped
    let on_disk = words(&std::fs::read(&file).unwrap());
    assert_eq!(on_disk[..1000], data[..1000]);
    assert!(on_disk[1000..1100].iter().all(|&x| x == 5));
    assert_eq!(on_disk[1100..], data[1100..]);
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn a_read_only_file_is_never_written() {
    let file = path("read-only");
    let data: Vec<u32> = (0..4096).collect();
    std::fs::write(&file, bytemuck::cast_slice(&data)).unwrap();
    let manager = MemoryManager::new(device()).unwrap();
    let mapped = MappedFile::open(&file, FileAccess::ReadOnly).unwrap();
    mapped.flush().unwrap();
    let mut buf = manager.adopt_host::<u32>(mapped).unwrap();
    buf.host_mut().unwrap()[..10].fill(99);
    device_write(&manager, &mut buf, 20, &[77; 10]);
    let back = buf.to_vec().unwrap();
    assert!(back[..10].iter().all(|&x| x == 99) && back[20..30].iter().all(|&x| x == 77));
    drop(buf);
    assert_eq!(
        words(&std::fs::read(&file).unwrap()),
        data,
        "the file is untouched"
    );
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn a_created_file_holds_what_the_buffer_wrote() {
    let file = path("created");
    let mapped = MappedFile::create(&file, 8 * 1024).unwrap();
    assert_eq!(mapped.access(), FileAccess::ReadWrite);
    assert_eq!(mapped.path(), file.as_path());
    let manager = MemoryManager::new(device()).unwrap();
    let mut buf = manager.adopt_host::<u32>(mapped).unwrap();
    assert!(buf.to_vec().unwrap().iter().all(|&x| x == 0));
    buf.fill(0xABCD, ..).unwrap();
    buf.to_vec().unwrap();
    drop(buf);
    let on_disk = words(&std::fs::read(&file).unwrap());
    assert_eq!(on_disk.len(), 2048);
    assert!(on_disk.iter().all(|&x| x == 0xABCD), "{:?}", &on_disk[..4]);
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn empty_ragged_and_missing_files_are_typed_errors() {
    let manager = MemoryManager::host();
    let empty = path("empty");
    std::fs::write(&empty, []).unwrap();
    for access in [FileAccess::ReadOnly, FileAccess::ReadWrite] {
        assert!(matches!(
            MappedFile::open(&empty, access),
            Err(Error::ZeroLength { .. })
        ));
    }
    assert!(matches!(
        MappedFile::create(path("zero"), 0),
        Err(Error::ZeroLength { .. })
    ));
    let ragged = path("ragged");
    std::fs::write(&ragged, [1u8; 10]).unwrap();
    let mapped = MappedFile::open(&ragged, FileAccess::ReadOnly).unwrap();
    assert!(matches!(
        manager.adopt_host::<u32>(mapped),
        Err(Error::IncompatibleCast { .. })
    ));
    let missing = MappedFile::open(path("missing"), FileAccess::ReadOnly).unwrap_err();
    assert!(matches!(&missing, Error::Os(e) if e.kind() == std::io::ErrorKind::NotFound));
    for f in [empty, ragged] {
        std::fs::remove_file(f).unwrap();
    }
    assert_eq!(manager.stats().device.bytes_in_use, 0);
}

#[test]
fn a_vec_becomes_a_buffer_without_a_copy() {
    let data: Vec<u32> = (0..100_000).map(|i| i ^ 0x5555).collect();
    let (address, want) = (data.as_ptr() as usize, data.clone());
    let manager = MemoryManager::new(device()).unwrap();
    let mut buf = manager
        .adopt_host::<u32>(ExternalHost::from_vec(data).unwrap())
        .unwrap();
    assert_eq!(buf.host().unwrap().as_ptr() as usize, address);
    buf.device_mut().unwrap();
    assert_eq!(buf.to_vec().unwrap(), want);
    assert!(matches!(
        ExternalHost::from_vec(Vec::<u32>::new()),
        Err(Error::ZeroLength { .. })
    ));
    // Seven bytes are not a whole number of u32s.
    let seven = ExternalHost::from_vec(vec![1u8; 7]).unwrap();
    assert!(matches!(
        manager.adopt_host::<u32>(seven),
        Err(Error::IncompatibleCast { .. })
    ));
}

#[test]
fn raw_memory_is_released_exactly_once_even_when_refused() {
    let released = Arc::new(AtomicUsize::new(0));
    let raw = |len: usize| {
        let memory = Box::leak(vec![3u8; len].into_boxed_slice());
        let (ptr, counter) = (memory.as_mut_ptr(), released.clone());
        let address = ptr.expose_provenance(); // a raw pointer is not Send; its address is
        let give_back = move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let ptr = std::ptr::with_exposed_provenance_mut::<u8>(address);
            // SAFETY: the slice leaked above, given back once.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) });
        };
        // SAFETY: `len` bytes at `ptr` live until `give_back` runs, and only hetmem uses them.
        unsafe { ExternalHost::from_raw_parts(ptr, len, give_back) }.unwrap()
    };
    let manager = MemoryManager::new(device()).unwrap();
    let buf = manager.adopt_host::<u8>(raw(4096)).unwrap();
    assert!(buf.to_vec().unwrap().iter().all(|&b| b == 3));
    assert_eq!(released.load(Ordering::SeqCst), 0);
    drop(buf);
    assert_eq!(released.load(Ordering::SeqCst), 1);
    // Over the manager's limit: refused, and still given back.
    let small = MemoryManager::builder().limit(1024).build().unwrap();
    let refused = small.adopt_host::<u8>(raw(4096)).unwrap_err();
    assert!(matches!(refused, Error::LimitExceeded { .. }), "{refused}");
    assert_eq!(released.load(Ordering::SeqCst), 2);
    assert_eq!(small.stats().host.bytes_in_use, 0);
    // SAFETY: a null pointer is refused before anything is kept.
    let null = unsafe { ExternalHost::from_raw_parts(std::ptr::null_mut(), 8, || ()) };
    assert!(matches!(null, Err(Error::InvalidArgument(_))));
}

#[test]
fn regions_can_be_adopted_too() {
    let source = HostSource {
        alignment: 1 << 16,
        ..HostSource::default()
    };
    let region = HostRegion::allocate(&source, 64 * 1024).unwrap();
    let address = region.as_ptr() as usize;
    let manager = MemoryManager::new(device()).unwrap();
    let mut buf = manager.adopt_host::<u64>(region).unwrap();
    assert_eq!(buf.host().unwrap().as_ptr() as usize, address);
    buf.fill(42, ..).unwrap();
    buf.device_mut().unwrap();
    assert!(buf.to_vec().unwrap().iter().all(|&x| x == 42));
    let listed = manager.outstanding();
    assert_eq!(listed.len(), 1, "the adopted buffer is tracked");
}

/// A `cl_mem` the user made becomes a buffer's device copy without a copy; hetmem holds a
/// reference of its own, so the user's buffer outlives the hetmem buffer and shows what it wrote.
#[cfg(feature = "opencl")]
#[test]
fn a_users_cl_mem_becomes_a_buffer_and_stays_theirs() {
    use hetmem::backend::OpenClBackend;
    use opencl3::memory::{Buffer, ClMem, CL_MEM_READ_WRITE};
    use opencl3::types::CL_BLOCKING;

    let (Some(b), Some(other)) = (common::opencl(0), common::opencl(1)) else {
        return;
    };
    let cl = b.as_any().downcast_ref::<OpenClBackend>().unwrap();
    // SAFETY: a plain read-write buffer without a host pointer.
    let user = unsafe {
        Buffer::<u32>::create(cl.context(), CL_MEM_READ_WRITE, 4096, std::ptr::null_mut())
    }
    .unwrap();
    let queue = cl.command_queue(b.default_queue()).unwrap();
    let data: Vec<u32> = (0..4096).map(|i| i * 5).collect();
    let mut user = user;
    // SAFETY: a blocking write of 4096 u32s into a 4096-element buffer.
    unsafe { queue.enqueue_write_buffer(&mut user, CL_BLOCKING, 0, &data, &[]) }.unwrap();

    let manager = MemoryManager::new(b.clone()).unwrap();
    let live = b.usage().live_bytes;
    let block = cl.adopt_mem(&user).unwrap();
    assert_eq!(block.raw_handle(), user.get());
    assert_eq!(b.usage().live_bytes, live + 16384);
    let mut buf = manager.adopt_device::<u32>(block).unwrap();
    assert_eq!(buf.to_vec().unwrap(), data);
    buf.host_mut().unwrap()[..10].fill(1);
    buf.device_mut().unwrap(); // uploads into the user's cl_mem
    drop(buf);
    assert_eq!(b.usage().live_bytes, live, "hetmem's reference is gone");
    assert_eq!(user.reference_count().unwrap(), 1, "the user's is not");
    let mut seen = vec![0u32; 4096];
    // SAFETY: a blocking read of the whole buffer.
    unsafe { queue.enqueue_read_buffer(&user, CL_BLOCKING, 0, &mut seen, &[]) }.unwrap();
    assert!(seen[..10].iter().all(|&x| x == 1));
    assert_eq!(seen[10..], data[10..]);

    // A cl_mem of another device's context, and a block of another backend, are refused; the
    // block comes back to be released by its owner.
    let foreign = other.as_any().downcast_ref::<OpenClBackend>().unwrap();
    assert!(matches!(
        foreign.adopt_mem(&user),
        Err(Error::InvalidArgument(_))
    ));
    let theirs = other.allocate(64).unwrap();
    match manager.adopt_device::<u32>(theirs) {
        Err(Error::ReleasedToWrongBackend { block, .. }) => other.release(block).unwrap(),
        other => panic!("expected the block back, got {other:?}"),
    }
    let ragged = b.allocate(10).unwrap();
    assert!(matches!(
        manager.adopt_device::<u32>(ragged),
        Err(Error::IncompatibleCast { .. })
    ));
    assert_eq!(b.usage().live_bytes, live, "the ragged block was released");
}

/// Host memory as the storage of a new `cl_mem` (`USE_HOST_PTR`): the buffer's device copy is
/// those bytes, and they are let go exactly once, when OpenCL destroys the buffer.
#[cfg(feature = "opencl")]
#[test]
fn host_memory_wrapped_as_a_cl_mem_is_let_go_once() {
    use hetmem::backend::OpenClBackend;

    let Some(b) = common::opencl(0) else {
        return;
    };
    let cl = b.as_any().downcast_ref::<OpenClBackend>().unwrap();
    let released = Arc::new(AtomicUsize::new(0));
    let data: Vec<u32> = (0..8192).map(|i| i * 11).collect();
    let owner = Box::leak(data.clone().into_boxed_slice());
    let (address, len, counter) = (
        owner.as_mut_ptr().expose_provenance(),
        owner.len(),
        released.clone(),
    );
    let give_back = move || {
        counter.fetch_add(1, Ordering::SeqCst);
        let ptr = std::ptr::with_exposed_provenance_mut::<u32>(address);
        // SAFETY: the slice leaked above, given back once.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) });
    };
    let ptr = std::ptr::with_exposed_provenance_mut::<u8>(address);
    // SAFETY: `len` u32s leaked above, used by nothing else until `give_back`.
    let memory = unsafe { ExternalHost::from_raw_parts(ptr, len * 4, give_back) }.unwrap();
    let live = b.usage().live_bytes;
    let block = cl.wrap_host(memory).unwrap();
    assert_eq!(b.usage().live_bytes, live + 32768);
    let manager = MemoryManager::new(b.clone()).unwrap();
    let mut buf = manager.adopt_device::<u32>(block).unwrap();
    assert_eq!(buf.to_vec().unwrap(), data);
    device_write(&manager, &mut buf, 100, &[4; 50]);
    let back = buf.to_vec().unwrap();
    assert!(back[100..150].iter().all(|&x| x == 4));
    assert_eq!(released.load(Ordering::SeqCst), 0, "in use");
    drop(buf);
    b.synchronize().unwrap();
    // The destructor callback runs once OpenCL has destroyed the buffer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while released.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(released.load(Ordering::SeqCst), 1);
    assert_eq!(b.usage().live_bytes, live);
}

/// A sync that fails leaves an adopted host copy (a `Vec`) and a pinned one (`HostPinned`)
/// valid and untouched; the next sync succeeds.
#[test]
fn failed_uploads_keep_adopted_and_pinned_host_copies_valid() {
    use hetmem::backend::{FaultKind, FaultOp, FaultyBackend};
    use hetmem::{AllocOptions, Placement};

    let device = device();
    if device.capabilities().host_addressable {
        // The host backend keeps one copy: there is no upload to fail.
        common::skip("host", "no OpenCL device: nothing is uploaded");
        return;
    }
    let faulty = Arc::new(FaultyBackend::new(device));
    let manager = MemoryManager::new(faulty.clone()).unwrap();
    let fail_next_uploads = || {
        for op in [FaultOp::Write, FaultOp::WriteParts, FaultOp::WriteStaged] {
            faulty.fail(op, faulty.calls(op), FaultKind::Permanent);
        }
    };
    let data: Vec<u32> = (0..50_000).map(|i| i * 3).collect();
    let adopted = manager
        .adopt_host::<u32>(ExternalHost::from_vec(data.clone()).unwrap())
        .unwrap();
    let pinned = manager
        .from_slice_with(&data, AllocOptions::new().placement(Placement::HostPinned))
        .unwrap();
    for mut buf in [adopted, pinned] {
        fail_next_uploads();
        let before = faulty.injected();
        assert!(buf.device().is_err(), "the upload fails");
        assert!(faulty.injected() > before);
        assert!(buf.is_on_host());
        assert_eq!(
            &buf.host().unwrap()[..],
            &data[..],
            "the host copy is intact"
        );
        faulty.clear();
        buf.device_mut().unwrap(); // the upload succeeds now; the device copy is newest
        assert_eq!(buf.to_vec().unwrap(), data);
    }
}
