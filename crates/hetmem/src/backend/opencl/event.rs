//! OpenCL events as hetmem [`EventSource`]s, with completion callbacks through
//! `clSetEventCallback`.

use std::any::Any;
use std::ffi::c_void;
use std::panic::AssertUnwindSafe;

use opencl3::event::{Event as ClEventHandle, CL_COMPLETE, CL_QUEUED, CL_RUNNING, CL_SUBMITTED};
use opencl3::types::{cl_event, cl_int};

use super::cl_error;
use crate::backend::{BackendId, CompletionCallback, EventSource, EventStatus};
use crate::error::Result;

/// One `cl_event`, released when the last clone of the hetmem [`Event`](crate::Event) drops.
pub(super) struct ClEvent {
    event: ClEventHandle,
    backend: BackendId,
}

impl ClEvent {
    /// Takes ownership of one reference to `raw`.
    pub(super) fn new(raw: cl_event, backend: BackendId) -> Self {
        Self::from_handle(ClEventHandle::new(raw), backend)
    }

    /// Wraps an event opencl3 already owns.
    pub(super) fn from_handle(event: ClEventHandle, backend: BackendId) -> Self {
        ClEvent { event, backend }
    }

    pub(super) fn raw(&self) -> cl_event {
        self.event.get()
    }
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
