//! Events: the completion of device work, waitable, queryable, and able to call back.

use crate::sync::Unpoison;
use std::any::Any;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::BackendId;
use crate::error::{Error, Result};

/// Where an event's work stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStatus {
    /// Enqueued, not yet handed to the device.
    Queued,
    /// Handed to the device, not yet running.
    Submitted,
    /// Running.
    Running,
    /// Done successfully.
    Complete,
    /// Ended with the backend's (negative) status code.
    Failed(i64),
}

impl EventStatus {
    /// Complete or failed: nothing further will happen.
    pub fn is_finished(self) -> bool {
        matches!(self, EventStatus::Complete | EventStatus::Failed(_))
    }
}

/// Called once when an event finishes, with `Ok(())` or the failure.
pub type CompletionCallback = Box<dyn FnOnce(Result<()>) + Send + 'static>;

/// What a backend implements to make its completion objects into [`Event`]s.
pub trait EventSource: Send + Sync + 'static {
    /// The backend whose work this is (`None` for host-side events any backend may wait on).
    fn backend(&self) -> Option<BackendId>;
    /// Blocks until finished; `Err` if the work failed.
    fn wait(&self) -> Result<()>;
    /// Where the work stands now.
    fn status(&self) -> Result<EventStatus>;
    /// Registers `callback` to run once when the work finishes (at once if it already has).
    fn on_complete(&self, callback: CompletionCallback) -> Result<()>;
    /// For the backend to reach its own event type.
    fn as_any(&self) -> &dyn Any;
}

/// The completion of some device work. Cheap to clone; all clones refer to the same work.
#[derive(Clone)]
pub struct Event {
    source: Option<Arc<dyn EventSource>>,
}

impl Event {
    /// An event that has already completed: what synchronous backends return.
    pub fn complete() -> Self {
        Event { source: None }
    }

    /// Wraps a backend's completion object ([`raw::event`](super::raw::event)).
    pub(crate) fn from_source(source: Arc<dyn EventSource>) -> Self {
        Event {
            source: Some(source),
        }
    }

    /// The backend's completion object, `None` for an event created already complete
    /// ([`raw::event_source`](super::raw::event_source)).
    pub(crate) fn source(&self) -> Option<&Arc<dyn EventSource>> {
        self.source.as_ref()
    }

    /// Blocks until the work is finished.
    pub fn wait(&self) -> Result<()> {
        match &self.source {
            None => Ok(()),
            Some(s) => s.wait(),
        }
    }

    /// Where the work stands.
    pub fn status(&self) -> Result<EventStatus> {
        match &self.source {
            None => Ok(EventStatus::Complete),
            Some(s) => s.status(),
        }
    }

    /// Whether the work has finished (successfully or not).
    pub fn is_finished(&self) -> bool {
        self.status().map_or(true, EventStatus::is_finished)
    }

    /// Runs `callback` once when the work finishes; at once, on this thread, if it already has.
    pub fn on_complete(&self, callback: impl FnOnce(Result<()>) + Send + 'static) -> Result<()> {
        match &self.source {
            None => {
                callback(Ok(()));
                Ok(())
            }
            Some(s) => s.on_complete(Box::new(callback)),
        }
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("status", &self.status().ok())
            .finish()
    }
}

/// An event finished by host code: the host backend's user events, and a building block for
/// backends and wrappers that complete work on their own threads.
#[derive(Default)]
pub struct ManualEvent {
    state: Mutex<ManualState>,
    finished: Condvar,
}

#[derive(Default)]
struct ManualState {
    outcome: Option<std::result::Result<(), i64>>,
    callbacks: Vec<CompletionCallback>,
}

impl ManualEvent {
    /// A new, unfinished event.
    pub fn new() -> Arc<Self> {
        Arc::new(ManualEvent::default())
    }

    fn lock(&self) -> MutexGuard<'_, ManualState> {
        // Callbacks run outside the lock, so a poisoned lock only means a waiter panicked; the
        // state itself is always consistent.
        self.state.lock().unpoisoned()
    }

    /// Finishes the event: `Ok(())` for success, `Err(code)` for failure with a negative code.
    /// Finishing twice is an error and changes nothing.
    pub fn finish(&self, outcome: std::result::Result<(), i64>) -> Result<()> {
        let callbacks = {
            let mut state = self.lock();
            if state.outcome.is_some() {
                return Err(Error::invalid("event already finished"));
            }
            state.outcome = Some(outcome);
            std::mem::take(&mut state.callbacks)
        };
        self.finished.notify_all();
        for callback in callbacks {
            run_callback(callback, outcome_to_result(outcome));
        }
        Ok(())
    }
}

/// Runs a completion callback; a panic in it is caught, so it reaches neither whoever finished
/// the event (a `UserEvent`'s drop, a driver thread) nor the callbacks after it.
fn run_callback(callback: CompletionCallback, outcome: Result<()>) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(outcome)));
}

fn outcome_to_result(outcome: std::result::Result<(), i64>) -> Result<()> {
    outcome.map_err(|code| {
        Error::Backend(crate::error::BackendError {
            backend: super::BackendKind::Host,
            operation: "user event",
            code,
            name: "EVENT_FAILED",
            retryable: false,
        })
    })
}

impl EventSource for ManualEvent {
    fn backend(&self) -> Option<BackendId> {
        None
    }

    fn wait(&self) -> Result<()> {
        let mut state = self.lock();
        loop {
            if let Some(outcome) = state.outcome {
                return outcome_to_result(outcome);
            }
            state = self.finished.wait(state).unpoisoned();
        }
    }

    fn status(&self) -> Result<EventStatus> {
        Ok(match self.lock().outcome {
            None => EventStatus::Queued,
            Some(Ok(())) => EventStatus::Complete,
            Some(Err(code)) => EventStatus::Failed(code),
        })
    }

    fn on_complete(&self, callback: CompletionCallback) -> Result<()> {
        let outcome = {
            let mut state = self.lock();
            match state.outcome {
                Some(outcome) => outcome,
                None => {
                    state.callbacks.push(callback);
                    return Ok(());
                }
            }
        };
        run_callback(callback, outcome_to_result(outcome));
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A host-completed event a backend's queues can wait on ([`Backend::enqueue_wait`]).
///
/// Dropping it unfinished completes it, so a forgotten user event never hangs a queue.
///
/// [`Backend::enqueue_wait`]: super::Backend::enqueue_wait
pub struct UserEvent {
    event: Event,
    finish: Option<Box<dyn FnOnce(bool) -> Result<()> + Send + Sync>>,
}

impl UserEvent {
    /// A user event completed on the host alone ([`ManualEvent`]), for backends whose devices
    /// have no host-completed events of their own (the host backend, CUDA).
    pub(crate) fn manual() -> Self {
        let source = ManualEvent::new();
        let event = Event::from_source(source.clone());
        UserEvent::new(
            event,
            Box::new(move |ok| source.finish(if ok { Ok(()) } else { Err(-1) })),
        )
    }

    /// Built by backends ([`raw::user_event`](super::raw::user_event)): `finish(true)` completes
    /// the event, `finish(false)` fails it.
    pub(crate) fn new(
        event: Event,
        finish: Box<dyn FnOnce(bool) -> Result<()> + Send + Sync>,
    ) -> Self {
        UserEvent {
            event,
            finish: Some(finish),
        }
    }

    /// The event to wait on or to gate a queue with.
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// Completes the event successfully, releasing the work that waits on it.
    pub fn complete(mut self) -> Result<()> {
        self.finish.take().map_or(Ok(()), |f| f(true))
    }

    /// Fails the event: work that waits on it is abandoned with an error.
    pub fn fail(mut self) -> Result<()> {
        self.finish.take().map_or(Ok(()), |f| f(false))
    }
}

impl Drop for UserEvent {
    fn drop(&mut self) {
        if let Some(finish) = self.finish.take() {
            // Nothing to report to from Drop; an error here means the driver already tore the
            // event down, which leaves nothing waiting on it.
            let _ = finish(true);
        }
    }
}

impl fmt::Debug for UserEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserEvent")
            .field("event", &self.event)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn manual_event_runs_callbacks_once_and_wakes_waiters() {
        let source = ManualEvent::new();
        let event = Event::from_source(source.clone());
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        event
            .on_complete(move |r| {
                assert!(r.is_ok());
                c.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        assert_eq!(event.status().unwrap(), EventStatus::Queued);
        let waiter = {
            let e = event.clone();
            std::thread::spawn(move || e.wait())
        };
        source.finish(Ok(())).unwrap();
        waiter.join().unwrap().unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(source.finish(Ok(())).is_err(), "second finish is refused");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A callback registered after completion runs at once.
        let c = calls.clone();
        event
            .on_complete(move |_| {
                c.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// A panicking callback reaches neither the finisher nor the callbacks after it (issue 18,
    /// item 7).
    #[test]
    fn a_panicking_callback_harms_nobody() {
        let source = ManualEvent::new();
        let event = Event::from_source(source.clone());
        let calls = Arc::new(AtomicUsize::new(0));
        event.on_complete(|_| panic!("callback bug")).unwrap();
        let c = calls.clone();
        event
            .on_complete(move |_| {
                c.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        source.finish(Ok(())).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "the later callback ran");
        // Registered after completion, it runs at once: still caught.
        event.on_complete(|_| panic!("late callback bug")).unwrap();
        // A user event dropped unfinished completes without unwinding into its owner.
        let gate = UserEvent::manual();
        gate.event()
            .on_complete(|_| panic!("gate callback bug"))
            .unwrap();
        drop(gate);
    }

    #[test]
    fn failed_manual_event_reports_the_code() {
        let source = ManualEvent::new();
        let event = Event::from_source(source.clone());
        source.finish(Err(-5)).unwrap();
        assert_eq!(event.status().unwrap(), EventStatus::Failed(-5));
        assert!(matches!(event.wait(), Err(Error::Backend(e)) if e.code == -5));
    }
}
