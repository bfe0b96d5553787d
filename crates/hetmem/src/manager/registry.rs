//! The manager's record of its buffers: counts and bytes (always), live allocations with their
//! labels and ages (leak tracking), what each label and placement moved (for recommendations),
//! and the peaks of open statistics scopes.

use std::backtrace::Backtrace;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::parking::{Parking, Shelf};
use super::Placement;
use crate::backend::PerThread;
use crate::buffer::{BufferEvent, MetricCells, Observer, SharedPart, Shell};
use crate::error::{Error, Result};
use crate::gauge::PeakGauge;
use crate::host::coarse_nanos;
use crate::record::{Action, Recorder};
use crate::sync::{lock, Mutex};
use crate::transfer::{Direction, DirectionStats};

/// How much the manager records per allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Tracking {
    /// Counters and byte totals only: no per-allocation bookkeeping beyond one record.
    Counts,
    /// Also the list of live allocations for [`MemoryManager::outstanding`](super::MemoryManager::outstanding).
    #[default]
    Outstanding,
    /// Also a backtrace of where each live allocation was made (costly: tens of microseconds).
    Backtraces,
}

impl Tracking {
    /// The level `HETMEM_TRACK` asks for (`counts`, `outstanding` or `backtrace`), if it is set.
    pub fn from_env() -> Result<Option<Tracking>> {
        match std::env::var("HETMEM_TRACK") {
            Ok(value) => Self::parse(&value).map(Some),
            Err(_) => Ok(None),
        }
    }

    fn parse(value: &str) -> Result<Tracking> {
        match value.trim().to_ascii_lowercase().as_str() {
            "counts" | "off" => Ok(Tracking::Counts),
            "outstanding" | "on" => Ok(Tracking::Outstanding),
            "backtrace" | "backtraces" => Ok(Tracking::Backtraces),
            other => Err(Error::invalid(format!(
                "HETMEM_TRACK={other:?} is not a tracking level: use counts, outstanding or backtrace"
            ))),
        }
    }
}

/// One live allocation, as [`MemoryManager::outstanding`](super::MemoryManager::outstanding)
/// reports it.
#[derive(Debug, Clone)]
pub struct Outstanding {
    /// The allocation's number in this manager, in allocation order.
    pub id: u64,
    /// Its length in bytes now.
    pub bytes: usize,
    /// Its label, if it was given one.
    pub label: Option<Arc<str>>,
    /// The placement it resolved to.
    pub placement: Placement,
    /// Time since it was made.
    pub age: Duration,
    /// Host → device transfers so far.
    pub host_to_device: DirectionStats,
    /// Device → host transfers so far.
    pub device_to_host: DirectionStats,
    /// What was last done with it and how long ago, if anything yet.
    pub last_event: Option<(BufferEvent, Duration)>,
    /// Where it was made, with [`Tracking::Backtraces`].
    pub backtrace: Option<Arc<Backtrace>>,
    /// The handles of its host and device blocks (0: none).
    pub(crate) blocks: [usize; 2],
}

impl fmt::Display for Outstanding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} {} bytes, {}, {}, alive {:.3} s",
            self.id,
            self.bytes,
            self.label.as_deref().unwrap_or("(no label)"),
            self.placement,
            self.age.as_secs_f64()
        )?;
        if let Some(bt) = &self.backtrace {
            write!(f, "\n{bt}")?;
        }
        Ok(())
    }
}

/// What the buffers of one label and placement did, summed over live and dropped buffers.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Usage {
    /// The label (`None`: buffers made without one).
    pub label: Option<Arc<str>>,
    /// The placement they resolved to.
    pub placement: Placement,
    /// Buffers made.
    pub buffers: u64,
    /// Their lengths in bytes, summed.
    pub bytes: u64,
    /// Buffers never accessed before they were dropped (or by now).
    pub unused: u64,
    /// Host → device transfers.
    pub host_to_device: DirectionStats,
    /// Device → host transfers.
    pub device_to_host: DirectionStats,
}

impl Usage {
    fn new(label: Option<Arc<str>>, placement: Placement) -> Self {
        Usage {
            label,
            placement,
            buffers: 0,
            bytes: 0,
            unused: 0,
            host_to_device: DirectionStats::default(),
            device_to_host: DirectionStats::default(),
        }
    }

    fn add(&mut self, record: &Record, m: &MetricCells) {
        self.buffers += 1;
        self.bytes += record.bytes.load(Ordering::Relaxed) as u64;
        self.unused += u64::from(!m.accessed());
        let each_way = [
            (&mut self.host_to_device, Direction::HostToDevice),
            (&mut self.device_to_host, Direction::DeviceToHost),
        ];
        for (total, direction) in each_way {
            if m.transfers.any(direction) {
                total.merge(&m.transfers.get(direction));
            }
        }
    }

    /// Bytes moved each way over the bytes allocated: how many times the data went across.
    pub fn round_trips(&self) -> f64 {
        let moved = self.host_to_device.bytes + self.device_to_host.bytes;
        moved as f64 / self.bytes.max(1) as f64
    }
}

/// What one thread counted: counters that only ever grow, and the usage of the buffers dropped
/// on it; and the buffers it parked. Per thread (no atomic read-modify-write or lock on an
/// allocation or a release), summed in one snapshot.
#[derive(Default)]
pub(super) struct Counts {
    allocations: u64,
    releases: u64,
    bytes_allocated: u64,
    bytes_released: u64,
    /// Usage of the buffers dropped on this thread per label and placement. A list: there are
    /// few labels, and a scan compares pointers first where hashing would read every byte.
    dropped: Vec<Usage>,
    pub(super) shelf: Shelf,
}

impl Counts {
    /// Counts a buffer of `bytes` bytes made.
    pub(super) fn made(&mut self, bytes: usize) {
        self.allocations += 1;
        self.bytes_allocated += bytes as u64;
    }

    /// Counts the buffer of `record` (with its `cells`) gone.
    pub(super) fn released(&mut self, record: &Record, cells: &MetricCells) {
        self.releases += 1;
        self.bytes_released += record.bytes() as u64;
        fold(&mut self.dropped, record, cells);
    }
}

/// The counters of every thread, summed ([`Registry::totals`]).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Totals {
    pub(crate) allocations: u64,
    pub(crate) releases: u64,
    pub(crate) bytes_allocated: u64,
    pub(crate) bytes_released: u64,
}

/// One allocation's record: its buffer's observer (which keeps the byte counts right through
/// resizes and folds the buffer's usage into the registry when the buffer goes), inside the
/// buffer's [`SharedPart`] beside its metric cells and copies — the buffer's one allocation —
/// which the live list shares. Holds the registry, so a buffer outliving its manager still reports to it safely;
/// the cycle this makes with the live list is broken when the buffer goes.
pub(crate) struct Record {
    registry: Arc<Registry>,
    /// Its place in the live list: `UNREGISTERED` until the buffer is made (a failed
    /// allocation leaves no trace in the books), `UNLISTED` when live allocations are not
    /// listed.
    slot: AtomicUsize,
    /// Its number; a parked buffer made into a new one takes a new number.
    pub(super) id: AtomicU64,
    /// Its buffer is parked ([`Parking`]): listed, but no live allocation.
    pub(super) parked: AtomicBool,
    bytes: AtomicUsize,
    label: Option<Arc<str>>,
    placement: Placement,
    backtrace: Option<Arc<Backtrace>>,
}

/// Live buffers' shared parts (their records and cells) in slots reused through a free list: O(1)
/// insertion and removal without hashing (measured: a `HashMap` with the default hasher cost
/// ~40 ns per allocation and release).
#[derive(Default)]
struct Slab {
    slots: Vec<Option<Arc<SharedPart>>>,
    free: Vec<usize>,
}

impl Slab {
    fn insert(&mut self, part: Arc<SharedPart>) -> usize {
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(part);
                slot
            }
            None => {
                self.slots.push(Some(part));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, slot: usize) {
        if let Some(entry) = self.slots.get_mut(slot) {
            if entry.take().is_some() {
                self.free.push(slot);
            }
        }
    }

    /// The live records, each with its buffer's cells.
    fn records(&self) -> impl Iterator<Item = (&Record, &MetricCells)> {
        self.slots
            .iter()
            .flatten()
            .filter_map(|l| Some((record_of(l)?, &***l)))
            .filter(|(r, _)| !r.parked.load(Ordering::Relaxed))
    }
}

pub(crate) struct Registry {
    tracking: Tracking,
    pub(super) next_id: AtomicU64,
    pub(super) counts: PerThread<Counts>,
    /// Bytes of live buffers: shared, for its exact peak.
    pub(crate) live_bytes: PeakGauge,
    live: Mutex<Slab>,
    /// Peaks of live bytes within each open statistics scope.
    scopes: Mutex<Vec<Arc<AtomicU64>>>,
    open_scopes: AtomicUsize,
    /// Where allocations, frees and resizes are recorded, if anywhere.
    pub(crate) recorder: Option<Arc<Recorder>>,
    /// Set in the ids this manager records (a number of its own in the top bits), so that
    /// managers sharing a recorder never reuse one another's ids.
    trace_tag: u64,
    /// The queue its buffers' work is ordered on (its key), the stream of every event it
    /// records.
    pub(crate) queue: usize,
    /// The rules of the buffers dropped whole and kept for the next like them (each thread's
    /// are in its `counts`).
    pub(super) parking: Parking,
}

impl Registry {
    /// `parked_per_thread`: buffers each thread keeps whole for the next like them — none where
    /// allocations are recorded or their backtraces taken (a parked buffer made into a new one
    /// would have neither).
    pub(crate) fn new(
        tracking: Tracking,
        recorder: Option<Arc<Recorder>>,
        queue: usize,
        parked_per_thread: usize,
    ) -> Self {
        static MANAGERS: AtomicU64 = AtomicU64::new(0);
        let parks = recorder.is_none() && tracking < Tracking::Backtraces;
        Registry {
            parking: Parking::new(if parks { parked_per_thread } else { 0 }),
            recorder,
            queue,
            trace_tag: MANAGERS.fetch_add(1, Ordering::Relaxed) << 40,
            tracking,
            next_id: AtomicU64::new(1),
            counts: PerThread::new(),
            live_bytes: PeakGauge::default(),
            live: Mutex::new(Slab::default()),
            scopes: Mutex::new(Vec::new()),
            open_scopes: AtomicUsize::new(0),
        }
    }

    pub(crate) fn tracking(&self) -> Tracking {
        self.tracking
    }

    /// The record of a buffer about to be made, for its [`SharedPart`]: it counts once
    /// [`Registry::register`] has seen the buffer made.
    pub(crate) fn record(
        self: &Arc<Self>,
        label: Option<Arc<str>>,
        placement: Placement,
    ) -> Record {
        Record {
            registry: self.clone(),
            slot: AtomicUsize::new(UNREGISTERED),
            id: AtomicU64::new(self.next_id.fetch_add(1, Ordering::Relaxed)),
            parked: AtomicBool::new(false),
            bytes: AtomicUsize::new(0),
            label,
            placement,
            backtrace: (self.tracking >= Tracking::Backtraces)
                .then(|| Arc::new(Backtrace::force_capture())),
        }
    }

    /// Counts a new buffer of `bytes` bytes, made with a part of this registry's
    /// [`Registry::record`], and lists it.
    pub(crate) fn register(&self, part: &Arc<SharedPart>, bytes: usize) {
        let Some(record) = record_of(part) else {
            return;
        };
        record.bytes.store(bytes, Ordering::Relaxed);
        if let Some(recorder) = &self.recorder {
            let id = self.trace_tag | record.id();
            part.trace_to(recorder.clone(), id, self.queue);
            let label = record.label.as_deref();
            recorder.record(
                Action::Alloc,
                id,
                bytes as u64,
                label,
                Some(record.placement),
                self.queue,
            );
        }
        self.count_new(bytes);
        let slot = match self.tracking >= Tracking::Outstanding {
            true => lock(&self.live).insert(part.clone()),
            false => UNLISTED,
        };
        record.slot.store(slot, Ordering::Relaxed);
    }

    fn count_new(&self, bytes: usize) {
        self.counts.with(|c| c.made(bytes));
        self.add_live(bytes);
    }

    fn grow(&self, bytes: usize) {
        self.counts.with(|c| c.bytes_allocated += bytes as u64);
        self.add_live(bytes);
    }

    /// Adds `bytes` to the live bytes and to the peaks of the open scopes.
    pub(super) fn add_live(&self, bytes: usize) {
        self.live_bytes.add(bytes as u64);
        if self.open_scopes.load(Ordering::Relaxed) > 0 {
            let now = self.live_bytes.get();
            for peak in lock(&self.scopes).iter() {
                peak.fetch_max(now, Ordering::Relaxed);
            }
        }
    }

    fn shrink(&self, bytes: usize) {
        self.counts.with(|c| c.bytes_released += bytes as u64);
        self.live_bytes.sub(bytes as u64);
    }

    /// Counts the buffer of `record` (with its `cells`) gone, and unlists it.
    fn release(&self, record: &Record, cells: &MetricCells) {
        if let Some(recorder) = &self.recorder {
            let bytes = record.bytes() as u64;
            let id = self.trace_tag | record.id();
            recorder.record(Action::Free, id, bytes, None, None, self.queue);
        }
        self.counts.with(|c| c.released(record, cells));
        self.live_bytes.sub(record.bytes() as u64);
        record.unlist();
    }

    /// Every thread's counters, summed in one snapshot ([`PerThread::for_each`] holds every
    /// thread's at once): a release counted has its allocation counted.
    pub(crate) fn totals(&self) -> Totals {
        let mut t = Totals::default();
        self.counts.for_each(|c| {
            t.allocations += c.allocations;
            t.releases += c.releases;
            t.bytes_allocated += c.bytes_allocated;
            t.bytes_released += c.bytes_released;
        });
        t
    }

    /// Live allocations, oldest first (empty below [`Tracking::Outstanding`]).
    pub(crate) fn outstanding(&self) -> Vec<Outstanding> {
        let now = coarse_nanos();
        let mut list: Vec<_> = lock(&self.live)
            .records()
            .map(|(r, cells)| describe(r, cells, now))
            .collect();
        list.sort_by_key(|o| o.id);
        list
    }

    /// Usage per label and placement, live buffers included (those only from
    /// [`Tracking::Outstanding`] up), largest first.
    pub(crate) fn usage(&self) -> Vec<Usage> {
        let mut usage: Vec<Usage> = Vec::new();
        let mut each = Vec::new();
        self.counts
            .for_each(|c| each.extend(c.dropped.iter().cloned()));
        for dropped in each {
            merge(&mut usage, dropped);
        }
        for (record, cells) in lock(&self.live).records() {
            fold(&mut usage, record, cells);
        }
        usage.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.label.cmp(&b.label)));
        usage
    }

    /// Opens a scope: the returned cell follows the peak of live bytes until it is closed.
    pub(crate) fn open_scope(&self) -> Arc<AtomicU64> {
        let peak = Arc::new(AtomicU64::new(self.live_bytes.get()));
        lock(&self.scopes).push(peak.clone());
        self.open_scopes.fetch_add(1, Ordering::Relaxed);
        peak
    }

    pub(crate) fn close_scope(&self, peak: &Arc<AtomicU64>) {
        lock(&self.scopes).retain(|p| !Arc::ptr_eq(p, peak));
        self.open_scopes.fetch_sub(1, Ordering::Relaxed);
    }

    /// The live allocation behind `part`, if it is one of this registry's records.
    pub(crate) fn describe(&self, part: &SharedPart) -> Option<Outstanding> {
        let record = record_of(part)?;
        std::ptr::eq(&*record.registry, self).then(|| describe(record, part, coarse_nanos()))
    }
}

/// Adds `more` (one thread's usage of a label and placement) to its entry in `usage`.
fn merge(usage: &mut Vec<Usage>, more: Usage) {
    let same = |u: &Usage| u.placement == more.placement && u.label == more.label;
    match usage.iter_mut().find(|u| same(u)) {
        Some(entry) => {
            entry.buffers += more.buffers;
            entry.bytes += more.bytes;
            entry.unused += more.unused;
            entry.host_to_device.merge(&more.host_to_device);
            entry.device_to_host.merge(&more.device_to_host);
        }
        None => usage.push(more),
    }
}

/// The record in `part`, if a manager's record follows it.
pub(super) fn record_of(part: &SharedPart) -> Option<&Record> {
    part.observer.as_any().downcast_ref::<Record>()
}

/// Adds `record` (with its buffer's `cells`) to its label and placement's entry in `usage`.
fn fold(usage: &mut Vec<Usage>, record: &Record, cells: &MetricCells) {
    match usage.iter_mut().find(|u| record.is(&u.label, u.placement)) {
        Some(entry) => entry.add(record, cells),
        None => {
            let mut entry = Usage::new(record.label.clone(), record.placement);
            entry.add(record, cells);
            usage.push(entry);
        }
    }
}

/// `r` (with its buffer's cells `m`) as it is at `now` ([`coarse_nanos`]: one reading for a
/// whole list, so that the last events' ages compare).
fn describe(r: &Record, m: &MetricCells, now: u64) -> Outstanding {
    Outstanding {
        id: r.id(),
        bytes: r.bytes.load(Ordering::Relaxed),
        label: r.label.clone(),
        placement: r.placement,
        age: m.age(),
        last_event: (m.last_event())
            .map(|(event, at)| (event, Duration::from_nanos(now.saturating_sub(at)))),
        blocks: m.blocks(),
        host_to_device: m.transfers.get(Direction::HostToDevice),
        device_to_host: m.transfers.get(Direction::DeviceToHost),
        backtrace: r.backtrace.clone(),
    }
}

/// A record's slot when live allocations are not listed.
const UNLISTED: usize = usize::MAX;

/// A record's slot until its buffer is made.
const UNREGISTERED: usize = usize::MAX - 1;

impl Drop for Registry {
    /// A trace streamed to a file is complete once its managers are gone (the process's own
    /// recorder, `HETMEM_TRACE`, is never dropped).
    fn drop(&mut self) {
        if let Some(recorder) = &self.recorder {
            let _ = recorder.flush();
        }
    }
}

impl Record {
    fn id(&self) -> u64 {
        self.id.load(Ordering::Relaxed)
    }

    /// Its buffer's length in bytes.
    pub(super) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether it has `label` and `placement`.
    pub(super) fn is(&self, label: &Option<Arc<str>>, placement: Placement) -> bool {
        self.placement == placement
            && match (&self.label, label) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                (a, b) => a.is_none() && b.is_none(),
            }
    }

    /// Takes its buffer off the live list (where it is listed).
    pub(super) fn unlist(&self) {
        let slot = self.slot.load(Ordering::Relaxed);
        if slot < UNREGISTERED {
            lock(&self.registry.live).remove(slot);
        }
    }
}

impl Observer for Record {
    fn resized(&self, old: usize, new: usize) {
        self.bytes.store(new, Ordering::Relaxed);
        if let Some(recorder) = &self.registry.recorder {
            let id = self.registry.trace_tag | self.id();
            let queue = self.registry.queue;
            recorder.record(Action::Resize, id, new as u64, None, None, queue);
        }
        if new > old {
            self.registry.grow(new - old);
        } else {
            self.registry.shrink(old - new);
        }
    }

    fn retired(&self, cells: &MetricCells) {
        if self.slot.load(Ordering::Relaxed) != UNREGISTERED {
            self.registry.release(self, cells);
        }
    }

    /// A made buffer, where the manager parks buffers.
    fn parks(&self) -> bool {
        self.registry.parking.is_on() && self.slot.load(Ordering::Relaxed) != UNREGISTERED
    }

    /// Parks a made buffer where its thread's shelf has room, counting it gone (it stays
    /// listed, marked parked).
    fn park(&self, shell: Shell, cells: &MetricCells) -> Option<Shell> {
        self.registry.park(self, shell, cells)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_levels_parse_from_their_names_and_reject_others() {
        assert_eq!(Tracking::parse("backtrace").unwrap(), Tracking::Backtraces);
        assert_eq!(Tracking::parse(" Counts ").unwrap(), Tracking::Counts);
        assert_eq!(Tracking::parse("on").unwrap(), Tracking::Outstanding);
        let err = Tracking::parse("verbose").unwrap_err();
        assert!(err.to_string().contains("counts, outstanding or backtrace"));
    }
}
