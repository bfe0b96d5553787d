//! The transfer scheduler on every backend present: submitted transfers move the right bytes
//! and give back what they own, queued high-priority work overtakes low, cancellation and
//! shutdown hand back untouched parts, failures keep the source, progress is reported, several
//! queues and threads at once, and submissions are futures woken on completion.

mod common;

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;

use common::pattern;
use hetmem::backend::{Backend, DeviceBlock};
use hetmem::backend::{FaultKind, FaultOp, FaultyBackend};
use hetmem::pool::CachingAllocator;
use hetmem::transfer::{
    Failed, Priority, Progress, SchedulerConfig, Strategy, TransferConfig, TransferEngine,
    TransferRequest, TransferScheduler,
};
use hetmem::Error;

const KIB: usize = 1 << 10;

fn scheduler(b: &Arc<dyn Backend>, config: SchedulerConfig) -> TransferScheduler {
    let engine = TransferEngine::with_config(
        b.clone(),
        TransferConfig {
            direct_max: 16 * KIB,
            chunk_size: 64 * KIB,
            strategy: Strategy::Chunked,
            ..TransferConfig::default()
        },
    )
    .unwrap();
    TransferScheduler::new(Arc::new(engine), config).unwrap()
}

fn one_at_a_time(b: &Arc<dyn Backend>) -> TransferScheduler {
    scheduler(
        b,
        SchedulerConfig {
            queues: 1,
            max_in_flight: 1,
        },
    )
}

fn read_back(b: &Arc<dyn Backend>, block: &DeviceBlock) -> Vec<u8> {
    let mut out = vec![0u8; block.size()];
    b.read(b.default_queue(), block, 0, &mut out).unwrap();
    out
}

/// Polls a future on this thread, parking until its waker is called.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        thread::park();
    }
}

fn submitted_transfers_move_the_right_bytes(b: &Arc<dyn Backend>) {
    let s = scheduler(b, SchedulerConfig::default());
    let len = 200 * KIB + 3;
    let data = pattern(len, 3);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let write = TransferRequest::write(b.allocate(len).unwrap(), 0, data.clone())
        .on_progress(move |p| log.lock().unwrap().push(p));
    assert_eq!(write.len(), len);
    let (block, source) = s.submit(write).wait().unwrap();
    assert_eq!(source, data, "the source comes back as it was");
    assert_eq!(read_back(b, &block), data);
    // Chunked in 64 KiB: one report per chunk, the last one complete.
    let seen = seen.lock().unwrap().clone();
    let dones: Vec<usize> = seen.iter().map(|p| p.done).collect();
    assert_eq!(dones, vec![64 * KIB, 128 * KIB, 192 * KIB, len]);
    assert!(seen.iter().all(|p| p.total == len));

    let (block, back) = s
        .submit(TransferRequest::read(block, 0, vec![0u8; len]))
        .wait()
        .unwrap();
    assert_eq!(back, data);

    // Pooled blocks travel too, and go home when dropped.
    let pool = CachingAllocator::new(b.clone());
    let (block, copy) = s
        .submit(TransferRequest::copy(
            block,
            5,
            pool.allocate(len).unwrap(),
            0,
            len - 5,
        ))
        .wait()
        .unwrap();
    assert_eq!(read_back(b, copy.block())[..len - 5], data[5..]);
    drop(copy);
    assert_eq!(pool.stats().bytes_in_use, 0);

    let items: Vec<(DeviceBlock, usize, Vec<u8>)> = (0..20)
        .map(|i| (b.allocate(4 * KIB).unwrap(), 8, pattern(KIB, i)))
        .collect();
    let items = s
        .submit(TransferRequest::write_batch(items))
        .wait()
        .unwrap();
    for (i, (dst, offset, src)) in items.into_iter().enumerate() {
        assert_eq!(src, pattern(KIB, i as u8));
        assert_eq!(read_back(b, &dst)[offset..offset + KIB], src[..]);
        b.release(dst).unwrap();
    }
    b.release(block).unwrap();
    let stats = s.engine().stats();
    assert_eq!(stats.host_to_device.transfers, 2);
    assert_eq!(stats.device_to_host.bytes, len as u64);
    assert_eq!(stats.device_to_device.transfers, 1);
}

fn queued_high_priority_work_overtakes_low(b: &Arc<dyn Backend>) {
    let s = one_at_a_time(b);
    let order = Arc::new(Mutex::new(Vec::new()));
    s.pause();
    let requests = [
        ("low 1", Priority::Low),
        ("low 2", Priority::Low),
        ("normal", Priority::Normal),
        ("high 1", Priority::High),
        ("low 3", Priority::Low),
        ("high 2", Priority::High),
    ]
    .map(|(name, priority)| {
        let order = order.clone();
        TransferRequest::write(b.allocate(KIB).unwrap(), 0, vec![1u8; KIB])
            .priority(priority)
            .on_progress(move |p: Progress| {
                if p.done == p.total {
                    order.lock().unwrap().push(name);
                }
            })
    });
    let submissions = s.submit_batch(requests);
    assert_eq!(s.queued(), 6);
    assert!(submissions.iter().all(|h| !h.is_finished()), "paused");
    s.resume();
    for h in submissions {
        let (block, _) = h.wait().unwrap();
        b.release(block).unwrap();
    }
    assert_eq!(
        *order.lock().unwrap(),
        ["high 1", "high 2", "normal", "low 1", "low 2", "low 3"]
    );
}

fn cancelled_and_abandoned_transfers_give_their_parts_back(b: &Arc<dyn Backend>) {
    let s = one_at_a_time(b);
    let before = pattern(KIB, 9);
    let mut untouched = b.allocate(KIB).unwrap();
    b.write(b.default_queue(), &mut untouched, 0, &before)
        .unwrap();
    s.pause();
    let kept = s.submit(TransferRequest::write(
        b.allocate(KIB).unwrap(),
        0,
        vec![2u8; KIB],
    ));
    let cancelled = s.submit(TransferRequest::write(untouched, 0, vec![3u8; KIB]));
    assert!(cancelled.cancel());
    assert!(cancelled.is_finished());
    s.resume();
    let (block, _) = kept.wait().unwrap();
    b.release(block).unwrap();
    let Err(Failed { error, parts }) = cancelled.wait() else {
        panic!("a cancelled transfer must not succeed");
    };
    assert!(matches!(error, Error::Cancelled { .. }), "{error}");
    assert_eq!(parts.1, vec![3u8; KIB], "the source comes back");
    assert_eq!(read_back(b, &parts.0), before, "the device never saw it");

    // Dropping the scheduler cancels what is still queued.
    s.pause();
    let abandoned = s.submit(TransferRequest::write(parts.0, 0, parts.1));
    drop(s);
    let Err(failed) = abandoned.wait() else {
        panic!("queued work is cancelled by dropping the scheduler");
    };
    assert!(matches!(failed.error, Error::Cancelled { .. }));
    assert_eq!(read_back(b, &failed.parts.0), before);
    b.release(failed.parts.0).unwrap();
}

fn a_running_transfer_cannot_be_cancelled(b: &Arc<dyn Backend>) {
    let s = one_at_a_time(b);
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = Mutex::new(go_rx);
    let started_tx = Mutex::new(started_tx);
    let running = s.submit(
        TransferRequest::write(b.allocate(256 * KIB).unwrap(), 0, vec![4u8; 256 * KIB])
            .on_progress(move |p| {
                if p.done == 64 * KIB {
                    started_tx.lock().unwrap().send(()).unwrap();
                    go_rx.lock().unwrap().recv().unwrap();
                }
            }),
    );
    started_rx.recv().unwrap();
    assert!(!running.cancel(), "already running");
    go_tx.send(()).unwrap();
    let (block, _) = running.wait().unwrap();
    assert_eq!(read_back(b, &block), vec![4u8; 256 * KIB]);

    // Nor can a finished one.
    let done = s.submit(TransferRequest::read(block, 0, vec![0u8; 8]));
    while !done.is_finished() {
        thread::yield_now();
    }
    assert!(!done.cancel());
    let (block, back) = done.wait().unwrap();
    assert_eq!(back, vec![4u8; 8]);
    b.release(block).unwrap();
}

fn failures_give_the_parts_back(b: &Arc<dyn Backend>) {
    let s = scheduler(b, SchedulerConfig::default());
    let Err(failed) = s
        .submit(TransferRequest::write(
            b.allocate(KIB).unwrap(),
            1000,
            vec![5u8; 100],
        ))
        .wait()
    else {
        panic!("out of range");
    };
    assert!(
        matches!(failed.error, Error::OutOfRange { .. }),
        "{}",
        failed.error
    );
    assert_eq!(failed.parts.1, vec![5u8; 100]);
    b.release(failed.parts.0).unwrap();

    // A permanent device fault: typed error, source intact.
    let faulty = Arc::new(FaultyBackend::new(b.clone()));
    let faulty_dyn: Arc<dyn Backend> = faulty.clone();
    let s = scheduler(&faulty_dyn, SchedulerConfig::default());
    // Chunks go through the wrapped backend's scattered write: its second half fails.
    faulty.fail(FaultOp::WriteParts, 0, FaultKind::Permanent);
    let data = pattern(100 * KIB, 6);
    let Err(failed) = s
        .submit(TransferRequest::write(
            faulty.allocate(100 * KIB).unwrap(),
            0,
            data.clone(),
        ))
        .wait()
    else {
        panic!("the second chunk fails permanently");
    };
    assert!(
        matches!(failed.error, Error::Backend(_)),
        "{}",
        failed.error
    );
    assert!(!failed.error.is_retryable());
    assert_eq!(failed.parts.1, data, "the source is untouched");
    faulty.release(failed.parts.0).unwrap();
    // `?` turns a failure into the library's error.
    let as_error = || -> Result<(), Error> {
        Err(Failed {
            error: Error::Cancelled { what: "test" },
            parts: (),
        })?
    };
    assert!(matches!(as_error(), Err(Error::Cancelled { .. })));

    // A panicking progress callback fails its transfer, not the scheduler.
    let h = s.submit(
        TransferRequest::write(faulty.allocate(KIB).unwrap(), 0, vec![1u8; KIB])
            .on_progress(|_| panic!("callback bug")),
    );
    let Err(failed) = h.wait() else {
        panic!("the callback panicked");
    };
    faulty.release(failed.parts.0).unwrap();
    let (block, _) = s
        .submit(TransferRequest::write(
            faulty.allocate(KIB).unwrap(),
            0,
            vec![1u8; KIB],
        ))
        .wait()
        .unwrap();
    faulty.release(block).unwrap();
    assert_eq!(b.usage().live_blocks, 0, "no leaked block");
}

fn many_threads_on_several_queues(b: &Arc<dyn Backend>) {
    let s = Arc::new(scheduler(
        b,
        SchedulerConfig {
            queues: 2,
            max_in_flight: 3,
        },
    ));
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let (s, b) = (s.clone(), b.clone());
            thread::spawn(move || {
                let writes: Vec<_> = (0..16u8)
                    .map(|i| {
                        let data = pattern(20 * KIB + usize::from(i), t * 16 + i);
                        s.submit(TransferRequest::write(
                            b.allocate(data.len()).unwrap(),
                            0,
                            data,
                        ))
                    })
                    .collect();
                for w in writes {
                    let (block, data) = w.wait().unwrap();
                    let back =
                        block_on(s.submit(TransferRequest::read(block, 0, vec![0u8; data.len()])))
                            .unwrap();
                    assert_eq!(back.1, data);
                    b.release(back.0).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = s.engine().stats();
    assert_eq!(stats.host_to_device.transfers, 64);
    assert_eq!(stats.device_to_host.transfers, 64);
    assert_eq!((stats.in_flight, stats.failures), (0, 0));
}

fn submissions_are_futures_woken_on_completion(b: &Arc<dyn Backend>) {
    let s = one_at_a_time(b);
    s.pause();
    let submission = s.submit(TransferRequest::write(
        b.allocate(KIB).unwrap(),
        0,
        vec![8u8; KIB],
    ));
    // Polled while paused (pending), then woken by the worker that completes it.
    let outcome = thread::scope(|scope| {
        scope.spawn(|| {
            thread::sleep(std::time::Duration::from_millis(20));
            s.resume();
        });
        block_on(submission).map_err(|failed| failed.error)
    });
    let (block, _) = outcome.unwrap();
    assert_eq!(read_back(b, &block), vec![8u8; KIB]);
    b.release(block).unwrap();
}

/// A long chunked transfer (several waves of chunks over two queues) reports progress chunk by
/// chunk, in order, ending at its length; a read reports the same way.
fn long_transfers_report_progress_as_they_go(b: &Arc<dyn Backend>) {
    let s = one_at_a_time(b);
    let len = 40 * 64 * KIB + 5; // 41 chunks of 64 KiB: several waves on two queues
    let data = pattern(len, 8);
    for write in [true, false] {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let block = b.allocate(len).unwrap();
        let request = if write {
            TransferRequest::write(block, 0, data.clone())
        } else {
            let mut block = block;
            b.write(b.default_queue(), &mut block, 0, &data).unwrap();
            TransferRequest::read(block, 0, vec![0u8; len])
        };
        let (block, bytes) = s
            .submit(request.on_progress(move |p| log.lock().unwrap().push(p.done)))
            .wait()
            .unwrap();
        assert_eq!(bytes, data);
        assert_eq!(read_back(b, &block), data);
        let dones = seen.lock().unwrap().clone();
        let expected: Vec<usize> = (1..=41).map(|k| (k * 64 * KIB).min(len)).collect();
        assert_eq!(
            dones, expected,
            "write {write}: one report per chunk, in order"
        );
        b.release(block).unwrap();
    }
}

/// Host bytes whose `Drop` panics, as a user's buffer type might.
struct PanicsOnDrop(Vec<u8>);

impl AsRef<[u8]> for PanicsOnDrop {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("a user's Drop bug");
    }
}

/// A detached submission whose parts panic when the worker drops them does not take the
/// worker down: later submissions still run (issue 18, item 6).
fn a_panicking_drop_does_not_kill_the_worker(b: &Arc<dyn Backend>) {
    let s = one_at_a_time(b);
    let pool = CachingAllocator::new(b.clone());
    let block = pool.allocate(4096).unwrap();
    // Paused, so that the submission is dropped while its parts are still queued: the worker
    // holds the last reference and drops them (dropped after the transfer finished, they
    // would drop on this thread, where the user's own panic is the user's to see).
    s.pause();
    drop(s.submit(TransferRequest::write(
        block,
        0,
        PanicsOnDrop(vec![1; 4096]),
    )));
    s.resume();
    let block = pool.allocate(4096).unwrap();
    let later = s.submit(TransferRequest::write(block, 0, vec![2u8; 4096]));
    // A dead worker would leave it queued forever: fail instead of hanging.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !later.is_finished() {
        assert!(std::time::Instant::now() < deadline, "the worker died");
        thread::sleep(std::time::Duration::from_millis(1));
    }
    let (block, data) = later.wait().map_err(|f| f.error).unwrap();
    let mut back = vec![0u8; 4096];
    b.read(b.default_queue(), block.block(), 0, &mut back)
        .unwrap();
    assert_eq!(back, data);
}

common::backend_suite!(
    [
        host => crate::common::host(),
        opencl_dev0 => crate::common::opencl(0),
        wgpu => crate::common::wgpu(),
        cuda_dev0 => crate::common::cuda(0),
    ],
    [
        submitted_transfers_move_the_right_bytes,
        queued_high_priority_work_overtakes_low,
        cancelled_and_abandoned_transfers_give_their_parts_back,
        a_running_transfer_cannot_be_cancelled,
        failures_give_the_parts_back,
        many_threads_on_several_queues,
        submissions_are_futures_woken_on_completion,
        long_transfers_report_progress_as_they_go,
        a_panicking_drop_does_not_kill_the_worker,
    ]
);

#[test]
fn bad_configurations_are_typed_errors() {
    let b: Arc<dyn Backend> = Arc::new(hetmem::backend::HostBackend::new());
    let engine = Arc::new(TransferEngine::new(b));
    for config in [
        SchedulerConfig {
            queues: 0,
            max_in_flight: 1,
        },
        SchedulerConfig {
            queues: 1,
            max_in_flight: 0,
        },
    ] {
        assert!(matches!(
            TransferScheduler::new(engine.clone(), config),
            Err(Error::InvalidArgument(_))
        ));
    }
}

#[test]
fn requests_and_submissions_are_send() {
    fn check<X: Send>() {}
    check::<TransferRequest<(DeviceBlock, Vec<u8>)>>();
    check::<hetmem::transfer::Submission<(DeviceBlock, Vec<u8>)>>();
    check::<TransferScheduler>();
}
