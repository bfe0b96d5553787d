//! [`TransferScheduler`]: asynchronous transfers on several queues of one device, a bounded
//! number in flight, queued work ordered by [`Priority`], cancellable until it starts.
//!
//! A submitted [`TransferRequest`] owns what it moves (the device block and the host memory, as
//! any `BorrowMut<DeviceBlock>` and `AsRef<[u8]>`/`AsMut<[u8]>`): the device can never touch
//! memory its owner has freed, and the [`Submission`] gives everything back when the transfer
//! ends — on failure and cancellation too, inside [`Failed`]. Dropping a submission detaches
//! it: the transfer still runs and its parts are dropped when it is done.

use crate::sync::Unpoison;
use std::borrow::{Borrow, BorrowMut};
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

use super::engine::{BatchWrite, Lane, TransferEngine};
use crate::backend::{DeviceBlock, Queue};
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

/// How far a transfer got, for progress callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes moved so far (after each chunk; back to zero if verification redoes the transfer).
    pub done: usize,
    /// Bytes in the transfer.
    pub total: usize,
}

type Operation<P> = Box<dyn FnOnce(&TransferEngine, &Lane<'_>, &mut P) -> Result<()> + Send>;
type ProgressCallback = Arc<dyn Fn(Progress) + Send + Sync>;

/// A transfer to submit, owning its parts `P` until it ends.
pub struct TransferRequest<P> {
    parts: P,
    operation: Operation<P>,
    total: usize,
    priority: Priority,
    progress: Option<ProgressCallback>,
}

impl<D, S> TransferRequest<(D, S)>
where
    D: BorrowMut<DeviceBlock> + Send + 'static,
    S: AsRef<[u8]> + Send + 'static,
{
    /// Writes `src` into `dst` at byte `offset`; gives back `(dst, src)`.
    pub fn write(dst: D, offset: usize, src: S) -> Self {
        let total = src.as_ref().len();
        Self::new((dst, src), total, move |engine, lane, (dst, src)| {
            engine.write_on(lane, D::borrow_mut(dst), offset, S::as_ref(src))
        })
    }
}

impl<D, H> TransferRequest<(D, H)>
where
    D: Borrow<DeviceBlock> + Send + 'static,
    H: AsMut<[u8]> + Send + 'static,
{
    /// Reads from `src` at byte `offset` into all of `dst`; gives back `(src, dst)`.
    pub fn read(src: D, offset: usize, mut dst: H) -> Self {
        let total = dst.as_mut().len();
        Self::new((src, dst), total, move |engine, lane, (src, dst)| {
            engine.read_on(lane, D::borrow(src), offset, dst.as_mut())
        })
    }
}

impl<A, B> TransferRequest<(A, B)>
where
    A: Borrow<DeviceBlock> + Send + 'static,
    B: BorrowMut<DeviceBlock> + Send + 'static,
{
    /// Copies `len` bytes from `src` at `src_offset` to `dst` at `dst_offset`, both blocks of
    /// the scheduler's device; gives back `(src, dst)`.
    pub fn copy(src: A, src_offset: usize, dst: B, dst_offset: usize, len: usize) -> Self {
        Self::new((src, dst), len, move |engine, lane, (src, dst)| {
            engine.copy_on(
                lane,
                A::borrow(src),
                src_offset,
                B::borrow_mut(dst),
                dst_offset,
                len,
            )
        })
    }
}

impl<D, S> TransferRequest<Vec<(D, usize, S)>>
where
    D: BorrowMut<DeviceBlock> + Send + 'static,
    S: AsRef<[u8]> + Send + 'static,
{
    /// Writes every `(dst, offset, src)` as one batch (see [`TransferEngine::write_batch`]);
    /// gives the items back.
    pub fn write_batch(items: Vec<(D, usize, S)>) -> Self {
        let total = items.iter().fold(0usize, |sum, (_, _, s)| {
            sum.saturating_add(s.as_ref().len())
        });
        Self::new(items, total, |engine, lane, items| {
            let mut batch: Vec<BatchWrite<'_>> = items
                .iter_mut()
                .map(|(dst, offset, src)| BatchWrite {
                    dst: D::borrow_mut(dst),
                    offset: *offset,
                    src: S::as_ref(src),
                })
                .collect();
            engine.write_batch_on(lane, &mut batch)
        })
    }
}

impl<P> TransferRequest<P> {
    fn new(
        parts: P,
        total: usize,
        operation: impl FnOnce(&TransferEngine, &Lane<'_>, &mut P) -> Result<()> + Send + 'static,
    ) -> Self {
        TransferRequest {
            parts,
            operation: Box::new(operation),
            total,
            priority: Priority::Normal,
            progress: None,
        }
    }

    /// Sets the priority (default [`Priority::Normal`]).
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Calls `callback` on the worker thread after each chunk with the bytes done so far.
    pub fn on_progress(mut self, callback: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(callback));
        self
    }

    /// Bytes the transfer moves.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether it moves nothing.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

impl<P> fmt::Debug for TransferRequest<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransferRequest")
            .field("bytes", &self.total)
            .field("priority", &self.priority)
            .finish()
    }
}

/// A transfer that did not happen (or not completely), with the parts it owned.
pub struct Failed<P> {
    /// Why.
    pub error: Error,
    /// What the request owned, given back untouched by the scheduler (a write's destination
    /// range holds unspecified bytes; its source is intact).
    pub parts: P,
}

impl<P> fmt::Debug for Failed<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failed")
            .field("error", &self.error)
            .finish()
    }
}

impl<P> fmt::Display for Failed<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<P> std::error::Error for Failed<P> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<P> From<Failed<P>> for Error {
    fn from(failed: Failed<P>) -> Self {
        failed.error
    }
}

/// What a submission ends with: the parts back, or the failure with the parts.
pub type Outcome<P> = std::result::Result<P, Failed<P>>;

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
