//! OpenCL events as hetmem [`EventSource`]s, with completion callbacks through
//! `clSetEventCallback`.

use std::any::Any;
use std::ffi::c_void;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use crate::sync::Unpoison;

use opencl3::event::{Event as ClEventHandle, CL_COMPLETE, CL_QUEUED, CL_RUNNING, CL_SUBMITTED};
use opencl3::types::{cl_event, cl_int};

use super::{cl_error, OpenClBackend};
use crate::backend::raw::{CompletionCallback, EventSource};
use crate::backend::{BackendId, EventStatus};
use crate::error::Result;

/// One `cl_event`, released when the last clone of the hetmem [`Event`](crate::backend::Event) drops —
/// or, when it has not finished by then, handed to the backend's [`Unfinished`] to be released
/// once it has.
pub(super) struct ClEvent {
    event: ClEventHandle,
    backend: BackendId,
    keeper: Arc<Unfinished>,
}

impl ClEvent {
    /// Takes ownership of one reference to `raw`, an event of `backend`'s context.
    pub(super) fn new(raw: cl_event, backend: &OpenClBackend) -> Self {
        Self::from_handle(ClEventHandle::new(raw), backend)
    }

    /// Wraps an event opencl3 already owns.
    pub(super) fn from_handle(event: ClEventHandle, backend: &OpenClBackend) -> Self {
        ClEvent {
            event,
            backend: backend.id,
            keeper: backend.unfinished.clone(),
        }
    }

    pub(super) fn raw(&self) -> cl_event {
        self.event.get()
    }
}

impl Drop for ClEvent {
    fn drop(&mut self) {
        if !is_complete(&self.event) {
            // SAFETY: `self.event` holds a live reference; the new one goes to the keeper,
            // which releases it, and `self.event` releases its own as it drops.
            if unsafe { cl3::event::retain_event(self.raw()) }.is_ok() {
                self.keeper.keep(self.raw());
            }
        }
    }
}

/// Completed successfully. A failed event (negative status) is not: PoCL may still be walking
/// the commands behind it to fail them, and meets a freed event as a fatal error.
fn is_complete(event: &ClEventHandle) -> bool {
    event
        .command_execution_status()
        .is_ok_and(|status| status.0 == CL_COMPLETE)
}

impl EventSource for ClEvent {
    fn backend(&self) -> Option<BackendId> {
        Some(self.backend)
    }

    fn wait(&self) -> Result<()> {
        self.event
            .wait()
            .map_err(|e| cl_error("clWaitForEvents", e.0))
    }

    fn status(&self) -> Result<EventStatus> {
        let status = self
            .event
            .command_execution_status()
            .map_err(|e| cl_error("clGetEventInfo", e.0))?
            .0;
        Ok(match status {
            CL_COMPLETE => EventStatus::Complete,
            CL_RUNNING => EventStatus::Running,
            CL_SUBMITTED => EventStatus::Submitted,
            CL_QUEUED => EventStatus::Queued,
            code => EventStatus::Failed(code.into()),
        })
    }

    fn on_complete(&self, callback: CompletionCallback) -> Result<()> {
        let data = Box::into_raw(Box::new(callback)).cast::<c_void>();
        if let Err(e) = self
            .event
            .set_callback(CL_COMPLETE, on_event_complete, data)
        {
            // SAFETY: the driver refused the callback, so it will never call it; the box is
            // still ours and is reclaimed exactly once here.
            drop(unsafe { Box::from_raw(data.cast::<CompletionCallback>()) });
            return Err(cl_error("clSetEventCallback", e.0));
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The `clSetEventCallback` trampoline: runs the boxed callback once, on a driver thread.
extern "C" fn on_event_complete(_event: cl_event, status: cl_int, data: *mut c_void) {
    // SAFETY: `data` is the `Box<CompletionCallback>` leaked in `on_complete`; OpenCL calls a
    // registered callback exactly once, so the box is reclaimed exactly once.
    let callback = unsafe { Box::from_raw(data.cast::<CompletionCallback>()) };
    let outcome = if status < 0 {
        Err(cl_error("command", status))
    } else {
        Ok(())
    };
    // A panic must not unwind into the driver's C frames.
    let _ = std::panic::catch_unwind(AssertUnwindSafe(move || callback(outcome)));
}

/// Events that must outlive the work that refers to them: those of commands hetmem enqueues
/// without handing the event to anyone (barriers, the non-blocking parts of a scatter or
/// gather) and of dropped hetmem events, held until they complete; and every event a barrier
/// waits for, held until that barrier completes. PoCL 3.1 walks the commands behind a failed
/// user event — and their wait lists — to fail them, and aborts the process ("PTHREAD ERROR in
/// pocl_update_event_failed") when it meets an event already released: a released-at-once event
/// behind a gate, or a completed gate a pending barrier still lists, made `UserEvent::fail`
/// fatal. Failed events are held until `synchronize` (`clear`), when nothing is pending.
#[derive(Default)]
pub(super) struct Unfinished {
    events: std::sync::Mutex<Vec<Held>>,
}

/// An event held, and the command whose completion lets it go (itself, or the barrier waiting
/// for it).
struct Held {
    event: ClEventHandle,
    until: Option<ClEventHandle>,
}

impl Held {
    fn may_go(&self) -> bool {
        is_complete(self.until.as_ref().unwrap_or(&self.event))
    }
}

impl Unfinished {
    /// Holds `raw` (one reference, taken over) until it finishes. Finished events are let go
    /// whenever the list has doubled since the last sweep, so it stays as long as the work in
    /// flight.
    pub(super) fn keep(&self, raw: cl_event) {
        self.keep_handle(ClEventHandle::new(raw));
    }

    /// [`Unfinished::keep`] of an event already wrapped.
    pub(super) fn keep_handle(&self, event: ClEventHandle) {
        self.hold(Held { event, until: None });
    }

    /// Holds `waited` (one reference, taken over) until `barrier` (one reference, taken over),
    /// a command that waits for it, completes.
    pub(super) fn keep_while_waited(&self, waited: cl_event, barrier: cl_event) {
        self.hold(Held {
            event: ClEventHandle::new(waited),
            until: Some(ClEventHandle::new(barrier)),
        });
    }

    fn hold(&self, held: Held) {
        let mut events = self.events.lock().unpoisoned();
        events.push(held);
        if events.len().is_power_of_two() && events.len() >= 64 {
            events.retain(|h| !h.may_go());
        }
    }

    /// Lets every held event go: all work has finished (after `clFinish` on every queue).
    pub(super) fn clear(&self) {
        self.events.lock().unpoisoned().clear();
    }
}
