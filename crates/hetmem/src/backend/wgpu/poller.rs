//! Completion of wgpu work: wgpu runs its callbacks (`on_submitted_work_done`, `map_async`)
//! only inside `Device::poll`, so a thread of hetmem's polls while any event is outstanding —
//! events finish without anyone waiting on them, and no user's async runtime is ever blocked.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::backend::raw::{CompletionCallback, EventSource, ManualEvent};
use crate::backend::{BackendId, Event, EventStatus};
use crate::error::Result;
use crate::sync::Unpoison;

/// The polling thread of one device.
pub(super) struct Poller {
    shared: Arc<Shared>,
    backend: BackendId,
    device: wgpu::Device,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    /// Events whose callbacks have not run yet.
    outstanding: Mutex<usize>,
    wake: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn fulfilled(&self) {
        *self.outstanding.lock().unpoisoned() -= 1;
    }
}

impl Poller {
    pub(super) fn start(device: wgpu::Device, backend: BackendId) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            outstanding: Mutex::new(0),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let (polled, polling) = (shared.clone(), device.clone());
        let thread = std::thread::Builder::new()
            .name("hetmem-wgpu-poll".into())
            .spawn(move || loop {
                {
                    let mut outstanding = polled.outstanding.lock().unpoisoned();
                    while *outstanding == 0 && !polled.stop.load(Ordering::Acquire) {
                        outstanding = polled.wake.wait(outstanding).unpoisoned();
                    }
                    if *outstanding == 0 {
                        return; // stopped, nothing left to finish
                    }
                }
                if polling.poll(wgpu::PollType::Wait).is_err() {
                    // A lost device finishes nothing more; do not spin on it.
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            })?;
        Ok(Poller {
            shared,
            backend,
            device,
            thread: Some(thread),
        })
    }

    /// An event that finishes once the work submitted to `queue` so far has.
    pub(super) fn after_submitted(&self, queue: &wgpu::Queue) -> Event {
        let done = ManualEvent::new();
        *self.shared.outstanding.lock().unpoisoned() += 1;
        self.shared.wake.notify_one();
        let (finished, shared) = (done.clone(), self.shared.clone());
        queue.on_submitted_work_done(move || {
            // Made for this callback alone: it cannot have been finished before.
            let _ = finished.finish(Ok(()));
            shared.fulfilled();
        });
        crate::backend::raw::event(Arc::new(Submitted {
            done,
            backend: self.backend,
            device: self.device.clone(),
        }))
    }

    /// Whether `event` is this device's own submitted work (which its one queue orders).
    pub(super) fn owns(&self, event: &Event) -> bool {
        crate::backend::raw::event_source(event)
            .and_then(|source| source.as_any().downcast_ref::<Submitted>())
            .is_some_and(|submitted| submitted.backend == self.backend)
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Work submitted to a wgpu queue, finished from a `on_submitted_work_done` callback.
struct Submitted {
    done: Arc<ManualEvent>,
    backend: BackendId,
    /// A waiter polls the device itself: the callback then runs on its thread, without a
    /// hand-over from the polling thread.
    device: wgpu::Device,
}

impl EventSource for Submitted {
    fn backend(&self) -> Option<BackendId> {
        Some(self.backend)
    }

    fn wait(&self) -> Result<()> {
        if !self.done.status()?.is_finished() {
            // An error means a lost device; the polling thread then finishes nothing either,
            // and the wait below reports what happened to the event.
            let _ = self.device.poll(wgpu::PollType::Wait);
        }
        self.done.wait()
    }

    fn status(&self) -> Result<EventStatus> {
        self.done.status()
    }

    fn on_complete(&self, callback: CompletionCallback) -> Result<()> {
        self.done.on_complete(callback)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
