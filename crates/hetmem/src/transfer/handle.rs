//! [`TransferHandle`]: the completion of a transfer, as a `Future` and as a blocking `wait()`.

use crate::sync::Unpoison;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::backend::Event;
use crate::error::{Error, Result};

/// The completion of a transfer made of one or more device operations.
///
/// Await it (it is woken from the backend's completion callback, so it needs no particular async
/// runtime) or call [`TransferHandle::wait`]. Dropping it does not cancel or detach anything:
/// whoever started the transfer keeps what the device still uses alive until it is done.
#[must_use = "a transfer handle reports the transfer's failure; wait for it or await it"]
pub struct TransferHandle {
    events: Vec<Event>,
    /// The real error of work whose event can only say that it failed (background work).
    failure: Option<Arc<Mutex<Option<Error>>>>,
    /// Events before this index have finished successfully.
    next: usize,
    /// The event whose completion callback is registered to wake `waker`.
    registered: Option<usize>,
    waker: Arc<Mutex<Option<Waker>>>,
}

impl TransferHandle {
    /// A handle for work that has already finished.
    pub fn finished() -> Self {
        Self::from_events(Vec::new())
    }

    /// A handle that completes when every one of `events` has.
    pub fn from_events(events: Vec<Event>) -> Self {
        TransferHandle {
            events,
            failure: None,
            next: 0,
            registered: None,
            waker: Arc::new(Mutex::new(None)),
        }
    }

    /// A handle for `events` whose failure is described by the error left in `failure`.
    pub(crate) fn with_failure(events: Vec<Event>, failure: Arc<Mutex<Option<Error>>>) -> Self {
        TransferHandle {
            failure: Some(failure),
            ..Self::from_events(events)
        }
    }

    /// The error to report for a failed event: the described one where there is one.
    fn explain(&self, generic: Error) -> Error {
        self.failure
            .as_ref()
            .and_then(|f| f.lock().unpoisoned().take())
            .unwrap_or(generic)
    }

    /// The operations' events.
    pub(crate) fn events(&self) -> &[Event] {
        &self.events
    }

    /// Whether every operation has finished (successfully or not).
    pub fn is_finished(&self) -> bool {
        self.events[self.next..].iter().all(Event::is_finished)
    }

    /// Blocks until every operation has finished; the first failure, if any.
    pub fn wait(self) -> Result<()> {
        let mut first_error = None;
        for event in &self.events[self.next..] {
            if let Err(e) = event.wait() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), |e| Err(self.explain(e)))
    }
}

impl Future for TransferHandle {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        while let Some(event) = this.events.get(this.next) {
            if !event.is_finished() {
                break;
            }
            // Finished: `wait` returns at once, with the failure if there was one.
            if let Err(e) = event.wait() {
                this.next = this.events.len();
                return Poll::Ready(Err(this.explain(e)));
            }
            this.next += 1;
        }
        let Some(event) = this.events.get(this.next) else {
            return Poll::Ready(Ok(()));
        };
        *this.waker.lock().unpoisoned() = Some(cx.waker().clone());
        if this.registered != Some(this.next) {
            this.registered = Some(this.next);
            let slot = this.waker.clone();
            let wake = move |_: Result<()>| {
                let waker = slot.lock().unpoisoned().take();
                if let Some(waker) = waker {
                    waker.wake();
                }
            };
            if let Err(e) = event.on_complete(wake) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Pending
    }
}

impl fmt::Debug for TransferHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransferHandle")
            .field("operations", &self.events.len())
            .field("finished", &self.is_finished())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, HostBackend};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    /// Counts wake-ups.
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_pending_handle_is_woken_by_completion_and_reports_failure() {
        let backend = HostBackend::new();
        let gate = backend.create_user_event().unwrap();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let mut handle = TransferHandle::from_events(vec![Event::complete(), gate.event().clone()]);
        assert!(!handle.is_finished());
        assert!(Pin::new(&mut handle).poll(&mut cx).is_pending());
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
        gate.complete().unwrap();
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            1,
            "completion wakes the task"
        );
        assert!(matches!(
            Pin::new(&mut handle).poll(&mut cx),
            Poll::Ready(Ok(()))
        ));

        let failing = backend.create_user_event().unwrap();
        let handle = TransferHandle::from_events(vec![failing.event().clone()]);
        failing.fail().unwrap();
        assert!(handle.is_finished());
        assert!(handle.wait().is_err());
        assert!(TransferHandle::finished().wait().is_ok());
    }
}
