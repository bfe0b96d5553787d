//! Queues that run work at once — unless told to wait for an event that has not finished
//! (`enqueue_wait`). Then the queue holds its asynchronous work, in order, and runs it on the
//! thread that finishes the event, as a device's queue holds work behind a user event. So the
//! gate pattern — wait on a user event, enqueue work, complete the event later from the same
//! thread — works where the device itself cannot wait for a host event: on the host backend,
//! and on wgpu, whose queues take no host-completed events.
//!
//! On the host, held work writes and reads block memory after its call has returned, so no
//! other access may touch those blocks until it has run: every immediate access of the host
//! backend to a block (a copy, a fill, `host_bytes`, `release`) first waits for held work on
//! that block ([`Held::wait_for`]). Blocks without held work pay one atomic load. (wgpu's
//! buffers keep themselves alive for the work that holds them, and name no blocks.)

use crate::sync::Unpoison;
use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::{Event, ManualEvent};

/// Work to run once the gates before it have opened; `Err(code)` fails its event.
pub(super) type Job = Box<dyn FnOnce() -> std::result::Result<(), i64> + Send>;

/// The blocks that held work of one backend's queues will touch.
#[derive(Default)]
pub(super) struct Held {
    /// Jobs held on all queues: zero on the fast path.
    jobs: AtomicUsize,
    /// Held jobs per block address.
    blocks: Mutex<HashMap<usize, usize>>,
    released: Condvar,
}

impl Held {
    /// Whether no job is held on any queue: the fast path, one load.
    pub(super) fn is_idle(&self) -> bool {
        self.jobs.load(Ordering::Acquire) == 0
    }

    /// Waits until no held job touches any of `blocks` (addresses of blocks).
    pub(super) fn wait_for(&self, blocks: &[usize]) {
        if self.is_idle() {
            return;
        }
        let mut held = self.blocks.lock().unpoisoned();
        while blocks.iter().any(|b| held.contains_key(b)) {
            held = self.released.wait(held).unpoisoned();
        }
    }

    /// Waits until no job is held on any queue.
    pub(super) fn wait_all(&self) {
        if self.is_idle() {
            return;
        }
        let mut held = self.blocks.lock().unpoisoned();
        while self.jobs.load(Ordering::Acquire) != 0 {
            held = self.released.wait(held).unpoisoned();
        }
    }

    fn add(&self, blocks: &[usize]) {
        let mut held = self.blocks.lock().unpoisoned();
        for &b in blocks {
            *held.entry(b).or_default() += 1;
        }
        self.jobs.fetch_add(1, Ordering::AcqRel);
    }

    fn remove(&self, blocks: &[usize]) {
        let mut held = self.blocks.lock().unpoisoned();
        for b in blocks {
            if let Some(n) = held.get_mut(b) {
                *n -= 1;
                if *n == 0 {
                    held.remove(b);
                }
            }
        }
        self.jobs.fetch_sub(1, Ordering::AcqRel);
        drop(held);
        self.released.notify_all();
    }
}

/// One host queue.
pub(super) struct HoldingQueue {
    shared: Arc<Shared>,
}

struct Shared {
    /// Items waiting: zero on the fast path (nothing held, work runs at once).
    waiting: AtomicUsize,
    items: Mutex<Items>,
    drained: Condvar,
    held: Arc<Held>,
}

#[derive(Default)]
struct Items {
    queue: VecDeque<Item>,
    /// A thread is running held work (one at a time keeps the order).
    running: bool,
}

enum Item {
    Gate(Event),
    Work {
        job: Job,
        blocks: Vec<usize>,
        done: Arc<ManualEvent>,
    },
}

impl HoldingQueue {
    pub(super) fn new(held: Arc<Held>) -> Self {
        HoldingQueue {
            shared: Arc::new(Shared {
                waiting: AtomicUsize::new(0),
                items: Mutex::new(Items::default()),
                drained: Condvar::new(),
                held,
            }),
        }
    }

    /// Whether work submitted now must be held (a gate before it has not opened).
    pub(super) fn is_holding(&self) -> bool {
        self.shared.waiting.load(Ordering::Acquire) != 0
    }

    /// Later work waits for `event`.
    pub(super) fn gate(&self, event: &Event) {
        if event.is_finished() {
            return;
        }
        self.push(Item::Gate(event.clone()));
        let shared = self.shared.clone();
        // Runs at once if the event finished meanwhile; a callback error only means the event
        // is gone, and then `drain` from the next push finds it finished.
        let _ = event.on_complete(move |_| shared.drain());
    }

    /// Holds `job`, which touches `blocks`, behind the gates; its event finishes once it ran.
    pub(super) fn hold(&self, blocks: &[usize], job: Job) -> Event {
        let done = ManualEvent::new();
        self.shared.held.add(blocks);
        self.push(Item::Work {
            job,
            blocks: blocks.to_vec(),
            done: done.clone(),
        });
        self.shared.drain();
        Event::from_source(done)
    }

    /// Waits until nothing is held on this queue: blocking calls come after held work.
    pub(super) fn wait_drained(&self) {
        if !self.is_holding() {
            return;
        }
        let mut items = self.shared.items.lock().unpoisoned();
        while !items.queue.is_empty() || items.running {
            items = self.shared.drained.wait(items).unpoisoned();
        }
    }

    fn push(&self, item: Item) {
        let mut items = self.shared.items.lock().unpoisoned();
        items.queue.push_back(item);
        self.shared.waiting.fetch_add(1, Ordering::AcqRel);
    }
}

impl Shared {
    /// Runs held work up to the first gate still closed; abandons it all behind a failed gate.
    fn drain(&self) {
        let mut items = self.items.lock().unpoisoned();
        if items.running {
            return; // the thread running held work picks up what follows
        }
        items.running = true;
        loop {
            let ready = match items.queue.front() {
                None => break,
                Some(Item::Gate(event)) => match event.status() {
                    Ok(status) if !status.is_finished() => break,
                    Ok(super::EventStatus::Complete) => Ok(()),
                    _ => Err(()),
                },
                Some(Item::Work { .. }) => Ok(()),
            };
            let item = items.queue.pop_front().expect("the front was just seen");
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            if ready.is_err() {
                // A failed gate: the work behind it is abandoned with an error, as a device's
                // would be.
                let abandoned: Vec<Item> = items.queue.drain(..).collect();
                self.waiting.fetch_sub(abandoned.len(), Ordering::AcqRel);
                drop(items);
                for item in abandoned {
                    self.finish(item, false);
                }
                items = self.items.lock().unpoisoned();
                continue;
            }
            drop(items);
            self.finish(item, true);
            items = self.items.lock().unpoisoned();
        }
        items.running = false;
        drop(items);
        self.drained.notify_all();
    }

    /// Runs (or abandons) one item outside the lock and releases its blocks.
    fn finish(&self, item: Item, run: bool) {
        let Item::Work { job, blocks, done } = item else {
            return;
        };
        let outcome = match run {
            true => catch_unwind(AssertUnwindSafe(job)).unwrap_or(Err(-1)),
            false => Err(-1),
        };
        self.held.remove(&blocks);
        // Made here for this job alone: it cannot have been finished before.
        let _ = done.finish(outcome);
    }
}
