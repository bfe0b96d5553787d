//! [`Background`]: a thread that carries out blocking transfer work for callers that return at
//! once — what makes a buffer's `sync` and prefetches asynchronous.
//!
//! Why a thread and not non-blocking enqueues: a buffer's host copy is ordinary host memory that
//! the caller may read through guards while an upload runs, and the backend's non-blocking calls
//! take only staging buffers, which track their pending work; a thread that makes the same
//! blocking, already ordered calls keeps every transfer plan and retry as it is, with no unsafe
//! code above the backends. One thread per context serves its buffers in the order their work
//! was started.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::TransferHandle;
use crate::backend::{Event, ManualEvent};
use crate::error::{Error, Result};

/// Every critical section here is a single store or take: a poisoned lock holds valid data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

type Job = Box<dyn FnOnce() + Send>;

/// One worker thread, started with the first job, ended when the owner drops.
#[derive(Default)]
pub(crate) struct Background {
    jobs: Mutex<Option<Sender<Job>>>,
}

/// What a background job produced, once it has finished: kept by whoever must act on it.
pub(crate) struct Finished<R> {
    event: Event,
    result: Arc<Mutex<Option<R>>>,
}

impl<R> Finished<R> {
    /// Whether the job is done (successfully or not).
    pub(crate) fn is_finished(&self) -> bool {
        self.event.is_finished()
    }

    /// Blocks until the job is done; its value, or `None` if it failed.
    pub(crate) fn wait(self) -> Option<R> {
        // The outcome is in `result`; the event's own error only repeats it.
        let _ = self.event.wait();
        lock(&self.result).take()
    }
}

impl Background {
    /// Runs `work` on the worker thread. The handle completes when `work` returns and reports
    /// its error; [`Finished`] gives its value to whoever keeps it. A panic in `work` is caught
    /// and reported as a failure, and the worker goes on serving.
    pub(crate) fn spawn<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<R> + Send + 'static,
    ) -> Result<(TransferHandle, Finished<R>)> {
        let done = ManualEvent::new();
        let event = Event::from_source(done.clone());
        let result = Arc::new(Mutex::new(None));
        let failure = Arc::new(Mutex::new(None));
        let (keep, report) = (result.clone(), failure.clone());
        let job: Job = Box::new(move || {
            let outcome = catch_unwind(AssertUnwindSafe(work))
                .unwrap_or_else(|_| Err(Error::invalid("a background transfer panicked")));
            let status = match outcome {
                Ok(value) => {
                    *lock(&keep) = Some(value);
                    Ok(())
                }
                Err(e) => {
                    *lock(&report) = Some(e);
                    Err(-1)
                }
            };
            // Finishing an event made here for this job alone cannot fail.
            let _ = done.finish(status);
        });
        self.send(job)?;
        Ok((
            TransferHandle::with_failure(vec![event.clone()], failure),
            Finished { event, result },
        ))
    }

    fn send(&self, job: Job) -> Result<()> {
        let mut jobs = lock(&self.jobs);
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
