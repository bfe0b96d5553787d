//! [`TransferScheduler`]: asynchronous transfers on several queues of one device, a bounded
//! number in flight, queued work ordered by [`Priority`], cancellable until it starts.
//!
//! A submitted [`TransferRequest`] owns what it moves (the device block and the host memory, as
//! any `BorrowMut<DeviceBlock>` and `AsRef<[u8]>`/`AsMut<[u8]>`): the device can never touch
//! memory its owner has freed, and the [`Submission`] gives everything back when the transfer
//! ends — on failure and cancellation too, inside [`Failed`]. Dropping a submission detaches
//! it: the transfer still runs and its parts are dropped when it is done.

use crate::sync::Unpoison;
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

use super::engine::{Lane, TransferEngine};
use super::request::{Failed, Outcome, Progress, TransferRequest};
use crate::backend::Queue;
use crate::error::{Error, Result};

/// How urgent a submitted transfer is. Queued work starts highest priority first, and in
/// submission order within one priority; work already running is never interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Background work (prefetches, write-backs).
    Low,
    /// The default.
    #[default]
    Normal,
    /// Work something is waiting for now.
    High,
}

/// How a [`TransferScheduler`] runs work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Device queues the transfers are spread over; work on different queues may overlap.
    pub queues: usize,
    /// Transfers running at once (one worker thread each); the rest wait in the queue.
    pub max_in_flight: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            queues: 2,
            max_in_flight: 2,
        }
    }
}

enum State<P> {
    Queued(TransferRequest<P>),
    Running,
    Done(Outcome<P>),
    Taken,
}

struct SlotInner<P> {
    state: State<P>,
    /// Held under the same lock as `state`, so a completion can never slip between a poll's
    /// check and its registration.
    waker: Option<Waker>,
}

/// Where a submission's request waits and its outcome lands.
struct Slot<P> {
    inner: Mutex<SlotInner<P>>,
    finished: Condvar,
}

impl<P> Slot<P> {
    fn lock(&self) -> MutexGuard<'_, SlotInner<P>> {
        self.inner.lock().unpoisoned()
    }

    fn finish(&self, mut inner: MutexGuard<'_, SlotInner<P>>, outcome: Outcome<P>) {
        inner.state = State::Done(outcome);
        let waker = inner.waker.take();
        drop(inner);
        self.finished.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Ends a still-queued request with [`Error::Cancelled`]; false if it had already started.
    fn cancel(&self) -> bool {
        let mut inner = self.lock();
        let Some(request) = inner.start() else {
            return false;
        };
        let error = Error::Cancelled {
            what: "queued transfer",
        };
        let parts = request.parts;
        self.finish(inner, Err(Failed { error, parts }));
        true
    }
}

impl<P> SlotInner<P> {
    /// Takes the request out if it is still queued, marking it running.
    fn start(&mut self) -> Option<TransferRequest<P>> {
        match std::mem::replace(&mut self.state, State::Running) {
            State::Queued(request) => Some(request),
            other => {
                self.state = other;
                None
            }
        }
    }
}

/// The scheduler's type-erased view of a slot.
trait Job: Send + Sync {
    /// Runs the request if it is still queued.
    fn run(&self, engine: &TransferEngine, queue: &Queue);
    /// Ends the request with [`Error::Cancelled`] if it is still queued.
    fn cancel(&self) -> bool;
}

impl<P: Send + 'static> Job for Slot<P> {
    fn run(&self, engine: &TransferEngine, queue: &Queue) {
        let Some(request) = self.lock().start() else {
            return; // cancelled while it waited
        };
        let TransferRequest {
            mut parts,
            operation,
            total,
            progress,
            ..
        } = request;
        let report = progress.map(|callback| move |done| callback(Progress { done, total }));
        let report_ref = report.as_ref().map(|r| r as &(dyn Fn(usize) + Sync));
        let lane = Lane::new(queue, report_ref);
        // A panicking progress callback must not leave the submission waiting forever.
        let result = catch_unwind(AssertUnwindSafe(|| operation(engine, &lane, &mut parts)))
            .unwrap_or_else(|_| Err(Error::invalid("a transfer's progress callback panicked")));
        let outcome = match result {
            Ok(()) => Ok(parts),
            Err(error) => Err(Failed { error, parts }),
        };
        self.finish(self.lock(), outcome);
    }

    fn cancel(&self) -> bool {
        Slot::cancel(self)
    }
}

/// A queued job, ordered by priority, then by submission.
struct Entry {
    priority: Priority,
    seq: u64,
    job: Arc<dyn Job>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // A max-heap: higher priority first, then the earlier submission.
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

#[derive(Default)]
struct Waiting {
    heap: BinaryHeap<Entry>,
    next_seq: u64,
    paused: bool,
    shutting_down: bool,
}

struct Shared {
    engine: Arc<TransferEngine>,
    waiting: Mutex<Waiting>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unpoisoned()
    }

    /// A worker: takes the most urgent job whenever not paused, until shut down.
    fn work(&self, queue: Queue) {
        loop {
            let job = {
                let mut waiting = self.lock();
                loop {
                    if waiting.shutting_down {
                        return;
                    }
                    if !waiting.paused {
                        if let Some(entry) = waiting.heap.pop() {
                            break entry.job;
                        }
                    }
                    waiting = self.ready.wait(waiting).unpoisoned();
                }
            };
            // A panic here — in the parts' `Drop` when nobody waits for them any more, or in a
            // waker — is caught: the worker goes on serving the queue.
            let _ = catch_unwind(AssertUnwindSafe(|| {
                job.run(&self.engine, &queue);
                drop(job);
            }));
        }
    }
}

/// Runs submitted transfers on worker threads over several queues of one device.
///
/// ```
/// use std::sync::Arc;
/// use hetmem::backend::{Backend, HostBackend};
/// use hetmem::transfer::{Priority, SchedulerConfig, TransferEngine, TransferRequest, TransferScheduler};
///
/// let backend: Arc<dyn Backend> = Arc::new(HostBackend::new());
/// let engine = Arc::new(TransferEngine::new(backend.clone()));
/// let scheduler = TransferScheduler::new(engine, SchedulerConfig::default())?;
/// let block = backend.allocate(4096)?;
/// let upload = scheduler.submit(
///     TransferRequest::write(block, 0, vec![7u8; 4096]).priority(Priority::High),
/// );
/// let (block, _source) = upload.wait()?;
/// let (block, back) = scheduler.submit(TransferRequest::read(block, 0, vec![0u8; 4096])).wait()?;
/// assert!(back.iter().all(|&b| b == 7));
/// backend.release(block)?;
/// # Ok::<(), hetmem::Error>(())
/// ```
pub struct TransferScheduler {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl TransferScheduler {
    /// Starts `config.max_in_flight` workers spread over `config.queues` new queues of the
    /// engine's device.
    pub fn new(engine: Arc<TransferEngine>, config: SchedulerConfig) -> Result<Self> {
        if config.queues == 0 || config.max_in_flight == 0 {
            return Err(Error::invalid(format!(
                "a scheduler needs at least one queue and one transfer in flight: {config:?}"
            )));
        }
        let queues = (0..config.queues)
            .map(|_| engine.backend().create_queue())
            .collect::<Result<Vec<_>>>()?;
        let shared = Arc::new(Shared {
            engine,
            waiting: Mutex::new(Waiting::default()),
            ready: Condvar::new(),
        });
        let workers = (0..config.max_in_flight)
            .map(|i| {
                let shared = shared.clone();
                let queue = queues[i % queues.len()].clone();
                std::thread::Builder::new()
                    .name(format!("hetmem-transfer-{i}"))
                    .spawn(move || shared.work(queue))
                    .map_err(Error::Os)
            })
            .collect::<Result<Vec<_>>>();
        let mut scheduler = TransferScheduler {
            shared,
            workers: Vec::new(),
        };
        // On a spawn failure, dropping `scheduler` stops the workers already started.
        scheduler.workers = workers?;
        Ok(scheduler)
    }

    /// The engine that carries out the transfers (its statistics count them).
    pub fn engine(&self) -> &Arc<TransferEngine> {
        &self.shared.engine
    }

    /// Queues one transfer.
    pub fn submit<P: Send + 'static>(&self, request: TransferRequest<P>) -> Submission<P> {
        self.submit_batch([request]).pop().expect("one submitted")
    }

    /// Queues several transfers at once: none starts before all are queued, so their
    /// priorities order them among themselves.
    pub fn submit_batch<P: Send + 'static>(
        &self,
        requests: impl IntoIterator<Item = TransferRequest<P>>,
    ) -> Vec<Submission<P>> {
        let requests: Vec<_> = requests.into_iter().collect();
        let mut submissions = Vec::with_capacity(requests.len());
        let mut waiting = self.shared.lock();
        for request in requests {
            let priority = request.priority;
            let slot = Arc::new(Slot {
                inner: Mutex::new(SlotInner {
                    state: State::Queued(request),
                    waker: None,
                }),
                finished: Condvar::new(),
            });
            let seq = waiting.next_seq;
            waiting.next_seq += 1;
            waiting.heap.push(Entry {
                priority,
                seq,
                job: slot.clone(),
            });
            submissions.push(Submission { slot });
        }
        drop(waiting);
        self.shared.ready.notify_all();
        submissions
    }

    /// Stops starting queued work (running work finishes); submissions still queue.
    pub fn pause(&self) {
        self.shared.lock().paused = true;
    }

    /// Starts queued work again, most urgent first.
    pub fn resume(&self) {
        self.shared.lock().paused = false;
        self.shared.ready.notify_all();
    }

    /// Transfers queued and not yet started (cancelled ones may still be counted until a
    /// worker passes them).
    pub fn queued(&self) -> usize {
        self.shared.lock().heap.len()
    }
}

impl Drop for TransferScheduler {
    /// Cancels what is still queued (those submissions end with [`Error::Cancelled`] and their
    /// parts) and waits for running transfers.
    fn drop(&mut self) {
        let abandoned = {
            let mut waiting = self.shared.lock();
            waiting.shutting_down = true;
            std::mem::take(&mut waiting.heap)
        };
        self.shared.ready.notify_all();
        for entry in abandoned {
            entry.job.cancel();
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl fmt::Debug for TransferScheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransferScheduler")
            .field("workers", &self.workers.len())
            .field("queued", &self.queued())
            .field("engine", &self.shared.engine)
            .finish()
    }
}

/// A submitted transfer: wait for it, await it, or cancel it while it is queued.
#[must_use = "a submission gives back what the transfer owned; wait for it or await it"]
pub struct Submission<P> {
    slot: Arc<Slot<P>>,
}

impl<P> Submission<P> {
    /// Blocks until the transfer ends.
    pub fn wait(self) -> Outcome<P> {
        let mut inner = self.slot.lock();
        loop {
            match std::mem::replace(&mut inner.state, State::Taken) {
                State::Done(outcome) => return outcome,
                other => inner.state = other,
            }
            inner = self.slot.finished.wait(inner).unpoisoned();
        }
    }

    /// Cancels the transfer if it has not started: it then ends with [`Error::Cancelled`] and
    /// its parts. False when it is already running or done.
    pub fn cancel(&self) -> bool {
        self.slot.cancel()
    }

    /// Whether the transfer has ended.
    pub fn is_finished(&self) -> bool {
        matches!(self.slot.lock().state, State::Done(_) | State::Taken)
    }
}

impl<P> Future for Submission<P> {
    type Output = Outcome<P>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<P>> {
        let mut inner = self.slot.lock();
        match std::mem::replace(&mut inner.state, State::Taken) {
            State::Done(outcome) => Poll::Ready(outcome),
            State::Taken => panic!("a Submission polled after it completed"),
            pending => {
                inner.state = pending;
                inner.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<P> fmt::Debug for Submission<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Submission")
            .field("finished", &self.is_finished())
            .finish()
    }
}
