//! [`SplittingResource`]: blocks carved from segments and merged back when freed.

mod arena;

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use arena::{Arena, SegmentId};

use crate::backend::{Backend, DeviceBlock, Event};
use crate::error::{Error, Result};
use crate::pool::CachingConfig;
use crate::resource::{MemoryResource, Pressure, Trim};
use crate::sync::{lock, Mutex};

/// The rules of a [`SplittingResource`] (see its documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplittingConfig {
    /// Requests up to this size go straight to the resource below (a cache's size classes
    /// serve them); larger ones are carved.
    pub split_above: usize,
    /// Blocks are multiples of this (at least the device's alignment).
    pub granularity: usize,
    /// Requests below this share segments of `small_segment` bytes.
    pub small_request: usize,
    /// The segment size for requests below `small_request`.
    pub small_segment: usize,
    /// Larger requests get a segment of their size rounded up to this.
    pub segment_rounding: usize,
}

impl SplittingConfig {
    /// `config` made fit to sit in front of this allocator: size classes up to 64 KiB only,
    /// two blocks deep, at most 512 KiB per thread and 1 MiB in all, so that a loop reusing a
    /// small size is served from the cache's thread-local fast path while freed blocks past
    /// that come down here and merge (a cache holding every class's blocks is what made growing
    /// workloads hold several times their need: 6.1× on a recorded key/value-cache trace).
    pub fn cache_in_front(&self, config: CachingConfig) -> CachingConfig {
        CachingConfig {
            classes: config.classes.up_to(FRONT_CLASSES_UP_TO),
            max_blocks_per_class: config.max_blocks_per_class.min(FRONT_BLOCKS_PER_CLASS),
            thread_cache_bytes: config.thread_cache_bytes.min(FRONT_THREAD_BYTES),
            max_cached_bytes: config.max_cached_bytes.min(FRONT_CACHED_BYTES),
            ..config
        }
    }
}

/// Largest size class of the cache in front.
const FRONT_CLASSES_UP_TO: usize = 64 << 10;
/// Blocks per class in the front cache's shared bins.
const FRONT_BLOCKS_PER_CLASS: usize = 2;
/// Bytes each thread keeps in the front cache.
const FRONT_THREAD_BYTES: u64 = 512 << 10;
/// Bytes the front cache keeps in all.
const FRONT_CACHED_BYTES: u64 = 1 << 20;

impl Default for SplittingConfig {
    /// Split above 4 KiB, 512-byte granularity, segments for requests under 10 MiB of an eighth
    /// of what is held (2 to 20 MiB, PyTorch's 20 MiB at most), 2 MiB rounding above.
    fn default() -> Self {
        SplittingConfig {
            split_above: 4096,
            granularity: 512,
            small_request: 10 << 20,
            small_segment: 20 << 20,
            segment_rounding: 2 << 20,
        }
    }
}

/// What a [`SplittingResource`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SplittingStats {
    /// Segments held.
    pub segments: u64,
    /// Bytes in segments.
    pub reserved_bytes: u64,
    /// Bytes in blocks handed out (freed blocks waiting for device work included).
    pub used_bytes: u64,
    /// The longest free range merged into its neighbours (freed blocks kept whole for reuse
    /// are free but not merged until a request needs the room).
    pub largest_free: u64,
    /// Segments allocated from the resource below, ever.
    pub segment_allocations: u64,
    /// Segments given back, ever.
    pub segment_releases: u64,
    /// Blocks carved, ever.
    pub carves: u64,
    /// Blocks handed out again whole, of the same length, right after being freed, ever.
    pub reuses: u64,
}

impl SplittingStats {
    /// The share of free segment bytes outside the longest free range: 0 when the free space
    /// is one piece, near 1 when it is many small pieces.
    pub fn fragmentation(&self) -> f64 {
        let free = self.reserved_bytes - self.used_bytes;
        match free {
            0 => 0.0,
            _ => 1.0 - self.largest_free as f64 / free as f64,
        }
    }
}

/// One segment as it is at a [`SplittingResource::snapshot`]: its size and its ranges in
/// address order, so that fragmentation can be seen and not only counted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SegmentSnapshot {
    /// Bytes in the segment.
    pub size: u64,
    /// Its ranges, tiling it.
    pub ranges: Vec<RangeSnapshot>,
}

/// One range of a [`SegmentSnapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RangeSnapshot {
    /// Where it starts in the segment.
    pub offset: u64,
    /// Its length.
    pub len: u64,
    /// Handed out (or freed with device work still pending), rather than free.
    pub used: bool,
}

/// Carves blocks from segments of the resource below and merges them back when freed — the
/// design of PyTorch's caching allocator and of RMM's arena — so that a request holds what it asks,
/// rounded to 512 bytes, instead of a size class, and freed space serves any later request that
/// fits. It is why a growing workload (a key/value cache, say) does not hold one cached block
/// of every size it went through.
///
/// **Rules.** Requests up to `split_above` (4 KiB) pass through to the resource below. Larger
/// ones are rounded up to the granularity (512 bytes, or the device's alignment if larger) and
/// carved from the free range that fits best (the smallest; then the oldest segment; then the
/// lowest address), the rest split off as a free range. A freed block is kept whole for a next
/// request of exactly its length (a loop allocating one size takes it back at once); any other
/// request merges it first. With nothing free that fits, a segment is allocated: for requests
/// under `small_request` (10 MiB) an eighth of what is held already, between `segment_rounding`
/// (2 MiB) and `small_segment` (20 MiB), so that several share it and a small program's
/// footprint stays near its need; otherwise the request rounded up to `segment_rounding` —
/// under a limit, no more ahead of the request than half of what the limit leaves
/// ([`MemoryResource::headroom`]). A freed block merges with its free neighbours; a block freed
/// while device work may still use it (events given to `deallocate`) becomes free only once
/// that work is done. Segments with nothing carved go back below on [`Trim::trim`], when a
/// limit or the device runs short (the resource registers for pressure), or to make room for a
/// segment that does not fit. A cache in front ([`SplittingConfig::cache_in_front`]) keeps a
/// few blocks of each small size class for loops that reuse one.
///
/// Blocks are views of their segment ([`Backend::view`]): pointers into it on host memory and
/// CUDA, sub-buffers on OpenCL — kernels take them as any block.
pub struct SplittingResource {
    upstream: Arc<dyn MemoryResource>,
    config: SplittingConfig,
    /// `config.granularity`, raised to the device's alignment.
    granularity: usize,
    state: Mutex<State>,
    /// The caches above, asked to trim when a segment does not fit.
    pressure: Pressure,
}

#[derive(Default)]
struct State {
    arena: Arena,
    segments: HashMap<SegmentId, DeviceBlock>,
    /// Live views, by handle: where each was carved.
    views: HashMap<usize, (SegmentId, usize)>,
    /// Freed blocks whose device work may still run.
    pending: Vec<(SegmentId, usize, Vec<Event>)>,
    /// Freed blocks kept whole, newest last, for a request of the same length: handed out again
    /// without carving or making a view (a loop allocating one size pays no tree walk and, on
    /// OpenCL, no sub-buffer). Merged into the arena by any other request (so that best fit
    /// sees all the free space), and on trim.
    recent: Vec<Recent>,
    segment_allocations: u64,
    segment_releases: u64,
    carves: u64,
    reuses: u64,
}

/// A freed block kept whole: its view, still registered in `views`, and where it was carved.
struct Recent {
    view: DeviceBlock,
    segment: SegmentId,
    offset: usize,
}

/// Most freed blocks kept whole.
const RECENT: usize = 16;

impl State {
    /// Frees the pending blocks whose work is done.
    fn collect(&mut self) {
        let arena = &mut self.arena;
        self.pending.retain_mut(|(segment, offset, after)| {
            after.retain(|e| !e.is_finished());
            let done = after.is_empty();
            if done {
                arena.free(*segment, *offset);
            }
            !done
        });
    }

    /// A recently freed block of exactly `len` bytes, the newest first.
    fn reuse(&mut self, len: usize) -> Option<DeviceBlock> {
        let at = self.recent.iter().rposition(|r| r.view.size() == len)?;
        self.reuses += 1;
        Some(self.recent.remove(at).view)
    }

    /// Keeps a freed block whole for reuse, merging the oldest kept one if there are too many.
    fn keep(&mut self, backend: &dyn Backend, recent: Recent) {
        if self.recent.len() == RECENT {
            let oldest = self.recent.remove(0);
            self.merge(backend, oldest);
        }
        self.recent.push(recent);
    }

    /// Merges every block kept whole into the arena.
    fn flush(&mut self, backend: &dyn Backend) {
        for recent in std::mem::take(&mut self.recent) {
            self.merge(backend, recent);
        }
    }

    fn merge(&mut self, backend: &dyn Backend, recent: Recent) {
        self.views.remove(&(recent.view.raw_handle() as usize));
        // Letting go of a view's handle frees no memory; a failure leaves a handle behind.
        let _ = backend.release_view(recent.view);
        self.arena.free(recent.segment, recent.offset);
    }

    /// Bytes in blocks kept whole.
    fn kept(&self) -> usize {
        self.recent.iter().map(|r| r.view.size()).sum()
    }

    /// Takes out every segment with nothing carved from it but blocks whose device work is
    /// still pending, to be released after that work (the backend orders a release after the
    /// events given with it).
    fn unused(&mut self, backend: &dyn Backend) -> Vec<(DeviceBlock, Vec<Event>)> {
        self.flush(backend);
        self.collect();
        let mut after: HashMap<SegmentId, (usize, Vec<Event>)> = HashMap::new();
        for (segment, offset, events) in &self.pending {
            let len = self.arena.used_at(*segment, *offset).unwrap_or(0);
            let entry = after.entry(*segment).or_default();
            entry.0 += len;
            entry.1.extend(events.iter().cloned());
        }
        let arena = &mut self.arena;
        self.pending.retain(|(segment, offset, _)| {
            let only_pending = after
                .get(segment)
                .is_some_and(|(len, _)| *len == arena.used_in(*segment));
            if only_pending {
                arena.free(*segment, *offset);
            }
            !only_pending
        });
        let unused = self.arena.unused_segments();
        let blocks: Vec<_> = (unused.into_iter())
            .filter_map(|id| {
                self.arena.remove_segment(id)?;
                let events = after.remove(&id).map(|(_, e)| e).unwrap_or_default();
                Some((self.segments.remove(&id)?, events))
            })
            .collect();
        self.segment_releases += blocks.len() as u64;
        blocks
    }
}

impl SplittingResource {
    /// Carves blocks from segments of `upstream` as `config` says; it registers with
    /// `upstream` so that a resource below that runs short can ask it to give back its unused
    /// segments.
    pub fn over(upstream: Arc<dyn MemoryResource>, config: SplittingConfig) -> Result<Arc<Self>> {
        let g = config.granularity;
        if !g.is_power_of_two() || config.segment_rounding % g != 0 || config.small_segment == 0 {
            return Err(Error::invalid(format!(
                "splitting: the granularity must be a power of two dividing the segment \
                 rounding, and segments non-empty: {config:?}"
            )));
        }
        let alignment = upstream.backend().info().alignment.next_power_of_two();
        let resource = Arc::new(SplittingResource {
            granularity: g.max(alignment),
            upstream,
            config,
            state: Mutex::new(State::default()),
            pressure: Pressure::default(),
        });
        let cache: Arc<dyn Trim> = resource.clone();
        resource.upstream.on_pressure(Arc::downgrade(&cache));
        Ok(resource)
    }

    /// The rules.
    pub fn config(&self) -> &SplittingConfig {
        &self.config
    }

    /// What it holds now.
    pub fn stats(&self) -> SplittingStats {
        let state = lock(&self.state);
        SplittingStats {
            segments: state.arena.segment_count() as u64,
            reserved_bytes: state.arena.reserved() as u64,
            used_bytes: (state.arena.used() - state.kept()) as u64,
            largest_free: state.arena.largest_free() as u64,
            segment_allocations: state.segment_allocations,
            segment_releases: state.segment_releases,
            carves: state.carves,
            reuses: state.reuses,
        }
    }

    /// Every segment and its ranges now.
    /// Blocks kept whole for reuse are merged first, so that the picture shows free space as
    /// it can be used.
    pub fn snapshot(&self) -> Vec<SegmentSnapshot> {
        let mut state = lock(&self.state);
        state.flush(self.backend().as_ref());
        (state.arena.layout().into_iter())
            .map(|(_, size, ranges)| SegmentSnapshot {
                size: size as u64,
                ranges: (ranges.into_iter())
                    .map(|r| RangeSnapshot {
                        offset: r.offset as u64,
                        len: r.len as u64,
                        used: r.used,
                    })
                    .collect(),
            })
            .collect()
    }

    /// The size of a new segment for a block of `len` bytes: at least `len`, and ahead of it no
    /// more than half of what a limit below leaves (so that growing ahead neither makes caches
    /// trim nor takes all the room the limit's other pools share).
    fn segment_size(&self, len: usize) -> Result<usize> {
        let c = &self.config;
        let rounding = c.segment_rounding.max(self.granularity);
        let exact = round_up(len, rounding)?;
        // Ahead of small requests, an eighth of what is held already (rounded down), between
        // one rounding and `small_segment`: a small program's footprint stays near its need,
        // a large one's segments are few.
        let reserved = lock(&self.state).arena.reserved();
        let ahead = (reserved / 8 - reserved / 8 % rounding).clamp(rounding, c.small_segment);
        let size = match len < c.small_request {
            true => exact.max(ahead),
            false => exact,
        };
        let room = self.upstream.headroom().map_or(usize::MAX, |room| {
            let half = usize::try_from(room / 2).unwrap_or(usize::MAX);
            half - half % self.granularity
        });
        Ok(size.min(room).max(len))
    }

    /// Carves `len` bytes, growing by a segment if nothing free fits: the usual size first;
    /// if the resource below runs short of a segment bigger than `len`, after the caches above
    /// have trimmed (their blocks may free room here) and the unused segments have gone back, a
    /// fitting range or a segment of exactly `len`.
    fn carve(&self, len: usize) -> Result<DeviceBlock> {
        let mut size = self.segment_size(len)?;
        for last in [false, true] {
            let mut state = lock(&self.state);
            if let Some(block) = state.reuse(len) {
                return Ok(block);
            }
            // Best fit over all the free space: what was kept whole merges first.
            state.flush(self.backend().as_ref());
            state.collect();
            if let Some(block) = self.view(&mut state, len)? {
                return Ok(block);
            }
            // The lock is not held across the resource below, which may ask this one to trim.
            drop(state);
            match self.upstream.allocate(size) {
                Ok(segment) => {
                    let mut state = lock(&self.state);
                    let id = state.arena.add_segment(segment.size());
                    state.segments.insert(id, segment);
                    state.segment_allocations += 1;
                    return (self.view(&mut state, len)?)
                        .ok_or_else(|| Error::invalid("splitting: a new segment did not fit"));
                }
                // Only a segment bigger than the request is worth a second try: for one of its
                // size, the limit and the caches above have already done what they can.
                Err(e) if !last && size > len && is_shortage(&e) => {
                    self.pressure.relieve()?;
                    self.trim()?;
                    size = len;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// A view of the best-fitting free range for `len` bytes, if one is free.
    fn view(&self, state: &mut State, len: usize) -> Result<Option<DeviceBlock>> {
        let Some(carved) = state.arena.carve(len, self.granularity) else {
            return Ok(None);
        };
        let segment = &state.segments[&carved.segment];
        match self.backend().view(segment, carved.offset, carved.len) {
            Ok(view) => {
                let at = (carved.segment, carved.offset);
                state.views.insert(view.raw_handle() as usize, at);
                state.carves += 1;
                Ok(Some(view))
            }
            Err(e) => {
                state.arena.free(carved.segment, carved.offset);
                Err(e)
            }
        }
    }
}

/// Whether the resource below ran short (the device, or a limit).
fn is_shortage(e: &Error) -> bool {
    matches!(e, Error::OutOfMemory { .. } | Error::LimitExceeded { .. })
}

fn round_up(bytes: usize, to: usize) -> Result<usize> {
    bytes
        .checked_next_multiple_of(to)
        .ok_or(Error::SizeOverflow {
            what: "splitting allocation",
        })
}

impl Trim for SplittingResource {
    /// Gives back every segment with nothing carved from it.
    fn trim(&self) -> Result<u64> {
        let unused = lock(&self.state).unused(self.backend().as_ref());
        let mut given = 0;
        for (segment, after) in unused {
            given += segment.size() as u64;
            self.upstream.deallocate(segment, after)?;
        }
        Ok(given)
    }
}

impl MemoryResource for SplittingResource {
    fn backend(&self) -> &Arc<dyn Backend> {
        self.upstream.backend()
    }

    fn allocate(&self, bytes: usize) -> Result<DeviceBlock> {
        if bytes <= self.config.split_above {
            return self.upstream.allocate(bytes);
        }
        self.carve(round_up(bytes, self.granularity)?)
    }

    fn deallocate(&self, block: DeviceBlock, after: Vec<Event>) -> Result<()> {
        if !block.is_view() {
            return self.upstream.deallocate(block, after);
        }
        let mut state = lock(&self.state);
        let handle = block.raw_handle() as usize;
        let carved = state.views.get(&handle).copied();
        // A view this resource did not carve (swapped in from elsewhere) frees nothing here.
        let Some((segment, offset)) = carved else {
            return self.backend().release_view(block);
        };
        if after.iter().all(Event::is_finished) {
            let recent = Recent {
                view: block,
                segment,
                offset,
            };
            state.keep(self.backend().as_ref(), recent);
            return Ok(());
        }
        state.views.remove(&handle);
        self.backend().release_view(block)?;
        state.pending.push((segment, offset, after));
        Ok(())
    }

    /// A block swapped out of a pool stays carved: its range is the swapper's.
    fn abandon(&self, size: usize) {
        if size <= self.config.split_above {
            self.upstream.abandon(size);
        }
    }

    fn adopt(&self, block: &DeviceBlock) -> Result<()> {
        self.upstream.adopt(block)
    }

    fn on_pressure(&self, cache: Weak<dyn Trim>) {
        self.pressure.attach(cache.clone());
        self.upstream.on_pressure(cache);
    }

    fn relieve(&self) -> Result<u64> {
        self.upstream.relieve()
    }

    fn headroom(&self) -> Option<u64> {
        self.upstream.headroom()
    }
}

impl Drop for SplittingResource {
    /// Gives every segment back: no block carved from them can be live (each holds the cache
    /// above, which holds this), and device work still pending on freed ones goes with them.
    fn drop(&mut self) {
        let backend = self.upstream.backend().clone();
        let mut state = lock(&self.state);
        state.flush(backend.as_ref());
        let mut after: HashMap<SegmentId, Vec<Event>> = HashMap::new();
        for (segment, _, events) in state.pending.drain(..) {
            after.entry(segment).or_default().extend(events);
        }
        for (id, segment) in state.segments.drain() {
            let events = after.remove(&id).unwrap_or_default();
            // Nobody to report a failed release to from a drop.
            let _ = self.upstream.deallocate(segment, events);
        }
    }
}

impl std::fmt::Debug for SplittingResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplittingResource")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}
