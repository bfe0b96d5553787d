//! CUDA events as hetmem [`EventSource`]s, and completion callbacks.
//!
//! The driver runs host functions (`cuLaunchHostFunc`) on a thread of its own where no CUDA
//! call is allowed, and hetmem's callbacks may well make one (a transfer handle's callback can
//! start the next transfer). So the driver's thread only hands each callback over a channel to
//! a notifier thread of hetmem's, which runs it.

use std::any::Any;
use std::ffi::c_void;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, OnceLock};

use cudarc::driver::sys::CUevent_wait_flags;
use cudarc::driver::{result, CudaContext, CudaEvent, CudaStream};

use super::driver::{cu_error, DriverResult};
use crate::backend::raw::{CompletionCallback, EventSource};
use crate::backend::{BackendId, Event, EventStatus};
use crate::error::{Error, Result};

/// One recorded CUDA event; destroyed when the last clone of the hetmem [`Event`] drops.
pub(super) struct CuEvent {
    event: Arc<CudaEvent>,
    backend: BackendId,
    notifier: Arc<Notifier>,
}

impl CuEvent {
    /// Records the work enqueued on `stream` so far.
    pub(super) fn record(
        stream: &CudaStream,
        backend: BackendId,
        notifier: &Arc<Notifier>,
    ) -> Result<Event> {
        let event = stream.record_event(None).cu("cuEventRecord")?;
        Ok(Event::from_source(Arc::new(CuEvent {
            event: Arc::new(event),
            backend,
            notifier: notifier.clone(),
        })))
    }

    /// The driver's event, for `cuStreamWaitEvent` (which accepts events of any device).
    pub(super) fn cuda(&self) -> &CudaEvent {
        &self.event
    }
}

impl EventSource for CuEvent {
    fn backend(&self) -> Option<BackendId> {
        Some(self.backend)
    }

    fn wait(&self) -> Result<()> {
        self.event.synchronize().cu("cuEventSynchronize")
    }

    fn status(&self) -> Result<EventStatus> {
        self.event
            .context()
            .bind_to_thread()
            .cu("cuCtxSetCurrent")?;
        Ok(match self.event.try_is_complete() {
            Ok(true) => EventStatus::Complete,
            Ok(false) => EventStatus::Running,
            Err(e) => EventStatus::Failed(e.0 as i64),
        })
    }

    fn on_complete(&self, callback: CompletionCallback) -> Result<()> {
        self.event
            .context()
            .bind_to_thread()
            .cu("cuCtxSetCurrent")?;
        if self.event.try_is_complete() == Ok(true) {
            callback(Ok(()));
            return Ok(());
        }
        self.notifier.after(&self.event, callback)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// What the driver's thread hands to the notifier thread.
struct Delivery {
    callback: CompletionCallback,
    event: Arc<CudaEvent>,
    to: Sender<Delivery>,
}

/// Runs completion callbacks of one backend's events on a hetmem thread, in completion order.
pub(super) struct Notifier {
    ctx: Arc<CudaContext>,
    /// A stream of its own, so that a callback waits for its event only, not for later work
    /// on the event's stream.
    stream: Arc<CudaStream>,
    /// The notifier thread's inbox; the thread starts with the first callback and ends when
    /// the backend and every pending delivery are gone.
    inbox: OnceLock<Sender<Delivery>>,
}

impl Notifier {
    pub(super) fn new(ctx: &Arc<CudaContext>) -> Result<Self> {
        Ok(Notifier {
            ctx: ctx.clone(),
            stream: ctx.new_stream().cu("cuStreamCreate")?,
            inbox: OnceLock::new(),
        })
    }

    fn inbox(&self) -> Result<Sender<Delivery>> {
        if let Some(inbox) = self.inbox.get() {
            return Ok(inbox.clone());
        }
        let (to, from) = channel::<Delivery>();
        let ctx = self.ctx.clone();
        std::thread::Builder::new()
            .name("hetmem-cuda-notifier".into())
            .spawn(move || {
                let _ = ctx.bind_to_thread();
                for delivery in from {
                    let outcome = match delivery.event.try_is_complete() {
                        Err(e) => Err(cu_error("cuEventQuery", e)),
                        Ok(_) => Ok(()),
                    };
                    let callback = delivery.callback;
                    // A panicking callback must not end the thread that serves the others.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(move || callback(outcome)));
                }
            })
            .map_err(|e| Error::invalid(format!("cannot start the CUDA notifier thread: {e}")))?;
        Ok(self.inbox.get_or_init(|| to).clone())
    }

    /// Runs `callback` once `event` has completed.
    fn after(&self, event: &Arc<CudaEvent>, callback: CompletionCallback) -> Result<()> {
        let to = self.inbox()?;
        self.stream.wait(event).cu("cuStreamWaitEvent")?;
        let delivery = Box::new(Delivery {
            callback,
            event: event.clone(),
            to,
        });
        // SAFETY: `deliver` reclaims its argument as a Box<Delivery>.
        unsafe { launch(&self.stream, deliver, delivery) }
    }
}

/// Makes work enqueued on `stream` after this call wait until `event`, an event of another
/// kind (a host-completed user event, another backend's), has finished: a host function blocks
/// the stream until then. Host functions of this context run one at a time, so callbacks due
/// meanwhile wait too.
pub(super) fn gate(stream: &CudaStream, event: &Event) -> Result<()> {
    // SAFETY: `block_until` reclaims its argument as a Box<Event>.
    unsafe { launch(stream, block_until, Box::new(event.clone())) }
}

/// Has the driver call `host_fn(data)` once `stream` reaches this point.
///
/// # Safety
/// `host_fn` must take back ownership of its argument as a `Box<T>`.
unsafe fn launch<T>(
    stream: &CudaStream,
    host_fn: unsafe extern "C" fn(*mut c_void),
    data: Box<T>,
) -> Result<()> {
    let data = Box::into_raw(data);
    // SAFETY: the stream is live (borrowed); the driver calls `host_fn` exactly once with
    // `data`, which `host_fn` reclaims (the caller's promise).
    let launched =
        unsafe { result::stream::launch_host_function(stream.cu_stream(), host_fn, data.cast()) };
    if let Err(e) = launched {
        // SAFETY: the driver refused the host function, so it will never call it; the box is
        // still ours and is reclaimed exactly once here.
        drop(unsafe { Box::from_raw(data) });
        return Err(cu_error("cuLaunchHostFunc", e));
    }
    Ok(())
}

/// Makes `stream` wait for a CUDA event (of any device) without blocking the host.
pub(super) fn stream_wait(stream: &CudaStream, event: &CuEvent) -> Result<()> {
    stream.context().bind_to_thread().cu("cuCtxSetCurrent")?;
    // SAFETY: both handles are live (borrowed) for the call; the driver copies the event's
    // state, so the event may be destroyed afterwards.
    unsafe {
        result::stream::wait_event(
            stream.cu_stream(),
            event.cuda().cu_event(),
            CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT,
        )
    }
    .cu("cuStreamWaitEvent")
}

/// Host function: passes the callback to the notifier thread (no CUDA call allowed here).
///
/// # Safety
/// Only for `cuLaunchHostFunc`, with a pointer leaked from a `Box<Delivery>`, once.
unsafe extern "C" fn deliver(data: *mut c_void) {
    // SAFETY: `data` is the Box<Delivery> leaked in `Notifier::after`, passed to exactly one
    // host-function launch, so it is reclaimed exactly once.
    let delivery = unsafe { Box::from_raw(data.cast::<Delivery>()) };
    let to = delivery.to.clone();
    // Sending never blocks; it fails only when the notifier thread is gone, and then nobody
    // waits for the callback.
    let _ = to.send(*delivery);
}

/// Host function: blocks the stream until a foreign event has finished.
///
/// # Safety
/// Only for `cuLaunchHostFunc`, with a pointer leaked from a `Box<Event>`, once.
unsafe extern "C" fn block_until(data: *mut c_void) {
    // SAFETY: `data` is the Box<Event> leaked in `gate`, reclaimed exactly once.
    let event = unsafe { Box::from_raw(data.cast::<Event>()) };
    // A panic must not unwind into the driver's frames; the outcome only opens the gate.
    let _ = std::panic::catch_unwind(AssertUnwindSafe(move || event.wait()));
}
