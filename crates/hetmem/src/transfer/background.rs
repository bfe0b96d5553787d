//! [`Background`]: a thread that carries out blocking transfer work for callers that return at
//! once — what makes a buffer's `sync` and prefetches asynchronous.
//!
//! Why a thread and not non-blocking enqueues: a buffer's host copy is ordinary host memory that
//! the caller may read through guards while an upload runs, and the backend's non-blocking calls
//! take only staging buffers, which track their pending work; a thread that makes the same
//! blocking, already ordered calls keeps every transfer plan and retry as it is, with no unsafe
//! code above the backends. One thread per context serves its buffers in the order their work
//! was started.

use crate::sync::Unpoison;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use super::TransferHandle;
use crate::backend::{Event, ManualEvent};
use crate::error::{Error, Result};

type Job = Box<dyn FnOnce() + Send>;

/// One worker thread, started with the first job, ended when the owner drops.
#[derive(Default)]
pub(crate) struct Background {
    jobs: Mutex<Option<Sender<Job>>>,
}

/// The value a background job leaves, once it has finished.
pub(crate) struct Finished<R> {
    handle: TransferHandle,
    value: Arc<Mutex<Option<R>>>,
}

impl<R> Finished<R> {
    /// Whether the job is done (successfully or not).
    pub(crate) fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// The job's completion (failed when the job failed).
    pub(crate) fn event(&self) -> Event {
        self.handle.events()[0].clone()
    }

    /// The job's handle, for a job whose value nobody needs.
    pub(crate) fn into_handle(self) -> TransferHandle {
        self.handle
    }

    /// Blocks until the job is done: its outcome and its value (`None` only if it panicked).
    pub(crate) fn wait(self) -> (Result<()>, Option<R>) {
        let outcome = self.handle.wait();
        (outcome, self.value.lock().unpoisoned().take())
    }
}

impl Background {
    /// Runs `work` on the worker thread. `work` returns its outcome — what the returned
    /// [`Finished`] reports — and a value it always hands back (host memory it owned, say). A
    /// panic in `work` is caught and reported as a failure, and the worker goes on serving.
    pub(crate) fn spawn<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> (Result<()>, R) + Send + 'static,
    ) -> Result<Finished<R>> {
        let done = ManualEvent::new();
        let event = Event::from_source(done.clone());
        let value = Arc::new(Mutex::new(None));
        let failure = Arc::new(Mutex::new(None));
        let (keep, report) = (value.clone(), failure.clone());
        let job: Job = Box::new(move || {
            let outcome = match catch_unwind(AssertUnwindSafe(work)) {
                Ok((outcome, value)) => {
                    *keep.lock().unpoisoned() = Some(value);
                    outcome
                }
                Err(_) => Err(Error::invalid("a background transfer panicked")),
            };
            let status = outcome.map_err(|e| {
                *report.lock().unpoisoned() = Some(e);
                -1
            });
            // Finishing an event made here for this job alone cannot fail.
            let _ = done.finish(status);
        });
        self.send(job)?;
        Ok(Finished {
            handle: TransferHandle::with_failure(vec![event], failure),
            value,
        })
    }

    fn send(&self, job: Job) -> Result<()> {
        let mut jobs = self.jobs.lock().unpoisoned();
        let job = match jobs.as_ref() {
            None => job,
            Some(sender) => match sender.send(job) {
                Ok(()) => return Ok(()),
                // The worker is gone (jobs never unwind out of it, so only a thread that could
                // not start): start another.
                Err(returned) => returned.0,
            },
        };
        let (sender, receiver) = channel::<Job>();
        std::thread::Builder::new()
            .name("hetmem-sync".into())
            .spawn(move || receiver.into_iter().for_each(|job| job()))
            .map_err(Error::Os)?;
        sender
            .send(job)
            .map_err(|_| Error::invalid("the background transfer thread ended at once"))?;
        *jobs = Some(sender);
        Ok(())
    }
}

/// An asynchronous transfer that owns host memory until the device is done with it: `wait`
/// (or `.await`) gives back what it owned — the data written, or the data read — or the
/// failure. Dropping it early is safe: the transfer goes on, and the memory is freed after it.
#[must_use = "an owned transfer reports its failure and gives its memory back; wait for it"]
pub struct OwnedTransfer<R> {
    state: Owned<R>,
}

enum Owned<R> {
    /// Done before it was returned (no device work was needed).
    Ready(Result<R>),
    Running(Finished<R>),
    Taken,
}

impl<R> OwnedTransfer<R> {
    pub(crate) fn ready(outcome: Result<R>) -> Self {
        OwnedTransfer {
            state: Owned::Ready(outcome),
        }
    }

    pub(crate) fn running(finished: Finished<R>) -> Self {
        OwnedTransfer {
            state: Owned::Running(finished),
        }
    }

    /// Whether the transfer has finished (successfully or not).
    pub fn is_finished(&self) -> bool {
        match &self.state {
            Owned::Running(f) => f.is_finished(),
            _ => true,
        }
    }

    /// Blocks until the device is done: the memory the transfer owned, or its failure.
    pub fn wait(self) -> Result<R> {
        match self.state {
            Owned::Ready(outcome) => outcome,
            Owned::Running(finished) => {
                let (outcome, value) = finished.wait();
                with_value(outcome, value)
            }
            Owned::Taken => Err(taken()),
        }
    }
}

fn with_value<R>(outcome: Result<()>, value: Option<R>) -> Result<R> {
    outcome?;
    value.ok_or_else(|| Error::invalid("a background transfer panicked"))
}

fn taken() -> Error {
    Error::invalid("an owned transfer was used after it completed")
}

// No field is ever pinned: the state is moved in and out by value.
impl<R> Unpin for OwnedTransfer<R> {}

impl<R> Future for OwnedTransfer<R> {
    type Output = Result<R>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        let this = Pin::into_inner(self);
        let outcome = match std::mem::replace(&mut this.state, Owned::Taken) {
            Owned::Running(mut finished) => match Pin::new(&mut finished.handle).poll(cx) {
                Poll::Pending => {
                    this.state = Owned::Running(finished);
                    return Poll::Pending;
                }
                Poll::Ready(outcome) => {
                    with_value(outcome, finished.value.lock().unpoisoned().take())
                }
            },
            Owned::Ready(outcome) => outcome,
            Owned::Taken => Err(taken()),
        };
        Poll::Ready(outcome)
    }
}

impl<R> std::fmt::Debug for OwnedTransfer<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedTransfer")
            .field("finished", &self.is_finished())
            .finish()
    }
}
