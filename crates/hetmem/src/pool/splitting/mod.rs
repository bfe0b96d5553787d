//! [`SplittingResource`]: blocks carved from segments and merged back when freed.

mod arena;
mod committed;
mod config;
mod expandable;
mod kept;
mod state;
mod stats;

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use arena::{Carved, SegmentId};
pub use config::SplittingConfig;
use expandable::Expandable;
use kept::Kept;
use rustc_hash::FxHashMap;
use state::State;
pub use stats::{RangeSnapshot, SegmentSnapshot, SplittingStats};

use crate::backend::{Backend, DeviceBlock, Event};
use crate::error::{Error, Result};
use crate::pool::per_thread::PerThread;
use crate::resource::{MemoryResource, Pressure, Trim};
use crate::sync::Unpoison;

/// Carves blocks from segments of the resource below and merges them back when freed — the
/// design of PyTorch's caching allocator and of RMM's arena — so that a request holds what it asks,
/// rounded to 512 bytes, instead of a size class, and freed space serves any later request that
/// fits. It is why a growing workload (a key/value cache, say) does not hold one cached block
/// of every size it went through.
///
/// **Rules.** Requests up to `split_above` (0: none) pass through to the resource below.
/// The others are rounded up to the granularity (512 bytes, or the device's alignment if
/// larger) and carved from the free range that fits best (the smallest; then the oldest
/// segment; then the lowest address), the rest split off as a free range. A freed block is kept
/// whole for a next request of exactly its length (a loop allocating one size takes it back at
/// once); any other request merges it first. A freed block merges with its free neighbours; a
/// block freed while device work may still use it (events given to `deallocate`) becomes free
/// only once that work is done. The cache over it in a manager keeps no blocks of its own
/// ([`CachingConfig::unpooled`](crate::pool::CachingConfig::unpooled)): a cache of small
/// classes in front, even of 128 KiB, held blocks between free ranges and kept them from
/// merging (a recorded key/value-cache trace held 1.56× its live peak with one, 1.39× without,
/// at the same hit rate).
///
/// **Growing.** Where the backend has virtual memory ([`Backend::commit_granularity`]: the
/// host, CUDA), there is one *expandable segment*: address space as large as the device's
/// memory, reserved once, of which only what blocks are carved from has memory behind it —
/// committed through the resource below ([`MemoryResource::commit`], so a limit charges it) in
/// the backend's granules (64 KiB on the host, 2 MiB on CUDA) as the segment grows. A request
/// that nothing free fits is carved where free space meets the uncommitted rest, so the
/// segment grows by what is missing (and a sixteenth of what it holds ahead, so that growing
/// step by step makes few commits) rather than by a new segment, and a workload whose buffers
/// grow step by step keeps near its need (PyTorch's expandable segments). Free ranges
/// keep their memory until a trim gives it back (a limit or the device running short, the
/// manager trimming idle pools), or, with [`SplittingConfig::free_committed_percent`], as soon
/// as free memory passes that share of what is carved. A trim with nothing carved gives back
/// the address space too.
///
/// Elsewhere (OpenCL) a request that nothing free fits gets a segment from the resource
/// below: under `small_request` (10 MiB) an eighth of what is held already, between
/// `segment_rounding` (2 MiB) and `small_segment` (20 MiB), so that several share it and a
/// small program's footprint stays near its need; otherwise the request rounded up to
/// `segment_rounding` — under a limit, no more ahead of the request than half of what the
/// limit leaves ([`MemoryResource::headroom`]). Segments with nothing carved go back below on
/// [`Trim::trim`], when a limit or the device runs short (the resource registers for
/// pressure), or to make room for a segment that does not fit.
///
/// Blocks are views of their segment ([`Backend::view`]): pointers into it on host memory and
/// CUDA, sub-buffers on OpenCL — kernels take them as any block.
pub struct SplittingResource {
    upstream: Arc<dyn MemoryResource>,
    config: SplittingConfig,
    /// `config.granularity`, raised to the device's alignment.
    granularity: usize,
    state: Mutex<State>,
    /// Commits in flight finished ([`State::growing`]).
    grown: Condvar,
    /// The caches above, asked to trim when a segment does not fit.
    pressure: Pressure,
    /// Freed blocks kept whole, per thread ([`kept`]).
    kept: PerThread<Kept>,
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
            grown: Condvar::new(),
            pressure: Pressure::default(),
            kept: PerThread::new(),
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
        let state = self.state.lock().unpoisoned();
        let (mut kept, mut reuses) = (0, 0);
        self.kept.for_each(|k| {
            let lens = k
                .blocks
                .iter()
                .filter_map(|b| state.views.get(&(b.raw_handle() as usize)));
            kept += lens.map(|c| c.len).sum::<usize>();
            reuses += k.reuses;
        });
        SplittingStats {
            segments: state.arena.segment_count() as u64,
            reserved_bytes: state.reserved() as u64,
            used_bytes: (state.arena.used() - kept) as u64,
            largest_free: state.largest_free() as u64,
            segment_allocations: state.segment_allocations,
            segment_releases: state.segment_releases,
            carves: state.carves,
            reuses,
            grows: state.grows,
        }
    }

    /// Merges the blocks every thread keeps whole into the arena.
    fn merge_kept(&self, state: &mut State) {
        let backend = self.backend().as_ref();
        self.kept.for_each(|k| {
            for view in k.blocks.drain(..) {
                state.merge(backend, view);
            }
        });
    }

    /// Every segment and its ranges now.
    /// Blocks kept whole for reuse are merged first, so that the picture shows free space as
    /// it can be used.
    pub fn snapshot(&self) -> Vec<SegmentSnapshot> {
        let mut state = self.state.lock().unpoisoned();
        self.merge_kept(&mut state);
        let expandable =
            (state.expandable.as_ref()).map(|e| (e.segment, e.extent(), e.committed()));
        let handles: FxHashMap<(SegmentId, usize), usize> = (state.views.iter())
            .map(|(&handle, c)| ((c.segment, c.offset), handle))
            .collect();
        (state.arena.layout().into_iter())
            .map(|(id, size, ranges)| {
                let (extent, committed) = match expandable {
                    Some((segment, extent, committed)) if segment == id => {
                        let used_end = (ranges.iter().filter(|r| r.used))
                            .map(|r| r.offset + r.len)
                            .max();
                        (extent.max(used_end.unwrap_or(0)), committed)
                    }
                    _ => (size, size),
                };
                SegmentSnapshot {
                    size: extent as u64,
                    expandable: extent != size || committed != size,
                    committed: committed as u64,
                    ranges: (ranges.into_iter())
                        .filter(|r| r.offset < extent)
                        .map(|r| RangeSnapshot {
                            offset: r.offset as u64,
                            len: (r.len.min(extent - r.offset)) as u64,
                            used: r.used,
                            buffer: None,
                            handle: handles.get(&(id, r.offset)).copied().unwrap_or(0),
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// The size of a new segment for a block of `len` bytes: at least `len`, and ahead of it no
    /// more than half of what a limit below leaves (so that growing ahead neither makes caches
    /// trim nor takes all the room the limit's other pools share).
    fn segment_size(&self, len: usize, reserved: usize) -> Result<usize> {
        let c = &self.config;
        let rounding = c.segment_rounding.max(self.granularity);
        let exact = round_up(len, rounding)?;
        // Ahead of small requests, an eighth of what is held already (rounded down), between
        // one rounding and `small_segment`: a small program's footprint stays near its need,
        // a large one's segments are few.
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

    /// Carves `len` bytes, growing the expandable segment or by a segment if nothing free
    /// fits: the usual size first; if the resource below runs short of a segment, after the
    /// caches above have trimmed (their blocks may free room here) and what is unused here has
    /// gone back, a fitting range, or a segment of exactly `len`.
    fn carve(&self, bytes: usize) -> Result<DeviceBlock> {
        let len = round_up(bytes, self.granularity)?;
        if let Some(block) = self.kept.with(|k| k.take(bytes)) {
            return Ok(block);
        }
        for last in [false, true] {
            let mut state = self.state.lock().unpoisoned();
            // Best fit over all the free space: what was kept whole merges first.
            self.merge_kept(&mut state);
            state.collect();
            self.reserve_expandable(&mut state);
            let retry = match state.arena.carve(len, self.granularity) {
                // Growing the expandable segment asked the limit below, which had every cache
                // trim first: nothing is left to try.
                Some(carved) => return self.grow(state, carved, bytes),
                None => {
                    let size = match last {
                        false => self.segment_size(len, state.reserved())?,
                        true => len,
                    };
                    // The lock is not held across the resource below, which may ask this one
                    // to trim.
                    drop(state);
                    crate::trace::span!("hetmem.pool_miss", requested = bytes, size);
                    match self.upstream.allocate(size) {
                        Ok(segment) => Some(segment),
                        // Only a segment bigger than the request is worth a second try: for
                        // one of its size, the limit and the caches above have done what they
                        // can.
                        Err(e) if !last && size > len && is_shortage(&e) => None,
                        Err(e) => return Err(e),
                    }
                }
            };
            if let Some(segment) = retry {
                let mut state = self.state.lock().unpoisoned();
                let id = state.arena.add_segment(segment.size());
                state.segments.insert(id, segment);
                state.segment_allocations += 1;
                let carved = (state.arena.carve(len, self.granularity))
                    .ok_or_else(|| Error::invalid("splitting: a new segment did not fit"))?;
                return self.view(&mut state, carved, bytes);
            }
            self.pressure.relieve()?;
            self.trim()?;
        }
        unreachable!("the last attempt returns")
    }

    /// Reserves the expandable segment the first time one is wanted, if the backend can.
    fn reserve_expandable(&self, state: &mut State) {
        if state.expandable.is_some() || state.no_expandable || !self.config.expandable {
            return;
        }
        let backend = self.backend();
        let Some(granule) = backend.commit_granularity() else {
            state.no_expandable = true;
            return;
        };
        // As much address space as the device has memory: a limit, not the reservation,
        // bounds what is committed.
        let total = usize::try_from(backend.info().total_memory).unwrap_or(usize::MAX);
        let bytes = (total - total % granule).max(granule);
        let id = state.arena.add_segment(bytes);
        match Expandable::reserve(backend.as_ref(), bytes, granule, id) {
            Ok(expandable) => state.expandable = Some(expandable),
            Err(_) => {
                state.arena.remove_segment(id);
                state.no_expandable = true;
            }
        }
    }

    /// A view of `carved`; in the expandable segment, after committing the granules under it
    /// that have no memory yet — first giving back free ones past
    /// [`SplittingConfig::free_committed_percent`], then committing
    /// without the lock (a limit below may ask the caches above to trim, which comes back
    /// here). A failed commit frees the range again.
    fn grow(
        &self,
        mut state: MutexGuard<'_, State>,
        carved: Carved,
        bytes: usize,
    ) -> Result<DeviceBlock> {
        let claims = loop {
            let State {
                expandable,
                growing,
                ..
            } = &mut *state;
            let Some(e) = expandable.as_mut().filter(|e| e.segment == carved.segment) else {
                return self.view(&mut state, carved, bytes);
            };
            // Growing ahead only where free memory is kept until a trim.
            let ahead = self.config.free_committed_percent.is_none();
            let claims = e.claim(carved.offset, carved.len, ahead);
            match (claims.is_empty(), *growing) {
                (false, _) => break claims,
                (true, 0) => return self.view(&mut state, carved, bytes),
                // Granules another carve claimed may still be being committed, or fail to be
                // (and be claimed here next time round).
                (true, _) => state = self.grown.wait(state).unpoisoned(),
            }
        };
        let used = state.arena.used();
        let State {
            arena, expandable, ..
        } = &mut *state;
        let Some(e) = expandable.as_mut() else {
            return Err(Error::invalid(
                "splitting: the expandable segment went while carving",
            ));
        };
        if let Some(percent) = self.config.free_committed_percent {
            let keep = used.saturating_add(used / 100 * percent as usize);
            let free = arena.free_ranges(e.segment);
            if let Err(err) = e.shrink(self.upstream.as_ref(), &free, keep) {
                e.settle(&claims, 0);
                arena.free(carved.segment, carved.offset);
                return Err(err);
            }
        }
        let reservation = e.reservation.clone();
        state.growing += 1;
        drop(state);
        crate::trace::span!(
            "hetmem.pool_miss",
            requested = bytes,
            commits = claims.len()
        );
        let mut committed = 0;
        let mut result = Ok(());
        for run in &claims {
            result = self.upstream.commit(&reservation, run.start, run.len());
            if result.is_err() {
                break;
            }
            committed += 1;
        }
        let mut state = self.state.lock().unpoisoned();
        state.growing -= 1;
        self.grown.notify_all();
        if let Some(e) = state.expandable.as_mut() {
            e.settle(&claims, committed);
        }
        if let Err(err) = result {
            state.arena.free(carved.segment, carved.offset);
            return Err(err);
        }
        state.grows += 1;
        self.view(&mut state, carved, bytes)
    }

    /// A view of the first `bytes` of a carved range: exactly the size asked, as every
    /// resource's blocks are (the range itself is rounded to the granularity).
    fn view(&self, state: &mut State, carved: Carved, bytes: usize) -> Result<DeviceBlock> {
        let segment = match &state.expandable {
            Some(e) if e.segment == carved.segment => e.reservation.as_ref(),
            _ => &state.segments[&carved.segment],
        };
        match self.backend().view(segment, carved.offset, bytes) {
            Ok(view) => {
                state.views.insert(view.raw_handle() as usize, carved);
                state.carves += 1;
                Ok(view)
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

/// Matched rather than `ok_or`, as in [`crate::element::byte_len`]: on the allocation path.
fn round_up(bytes: usize, to: usize) -> Result<usize> {
    match bytes.checked_next_multiple_of(to) {
        Some(rounded) => Ok(rounded),
        None => Err(Error::SizeOverflow {
            what: "splitting allocation",
        }),
    }
}

impl Trim for SplittingResource {
    /// Gives back every segment with nothing carved from it, and the memory of the
    /// expandable segment's free granules.
    fn trim(&self) -> Result<u64> {
        let unused = {
            let mut state = self.state.lock().unpoisoned();
            self.merge_kept(&mut state);
            state.unused()
        };
        let mut given = 0;
        for (segment, after) in unused {
            given += segment.size() as u64;
            self.upstream.deallocate(segment, after)?;
        }
        let mut state = self.state.lock().unpoisoned();
        let State {
            arena,
            expandable,
            growing,
            ..
        } = &mut *state;
        let Some(e) = expandable.as_mut() else {
            return Ok(given);
        };
        if arena.unused_segments().contains(&e.segment) && *growing == 0 {
            // Nothing carved: the address space goes too (reserved again when wanted).
            let e = expandable.take().expect("present");
            given += e.committed() as u64;
            arena.remove_segment(e.segment);
            e.release(self.upstream.as_ref())?;
        } else {
            let free = arena.free_ranges(e.segment);
            given += e.shrink(self.upstream.as_ref(), &free, 0)?;
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
        self.carve(bytes)
    }

    fn deallocate(&self, block: DeviceBlock, after: Vec<Event>) -> Result<()> {
        if !block.is_view() {
            return self.upstream.deallocate(block, after);
        }
        if after.iter().all(Event::is_finished) {
            // Kept whole by this thread; the oldest it kept, if too many, merges.
            if let Some(oldest) = self.kept.with(|k| k.keep(block)) {
                let mut state = self.state.lock().unpoisoned();
                state.merge(self.backend().as_ref(), oldest);
            }
            return Ok(());
        }
        let mut state = self.state.lock().unpoisoned();
        let handle = block.raw_handle() as usize;
        let carved = state.views.get(&handle).copied();
        // A view this resource did not carve (swapped in from elsewhere) frees nothing here.
        let Some(Carved {
            segment, offset, ..
        }) = carved
        else {
            return self.backend().release_view(block);
        };
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

    fn commit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<()> {
        self.upstream.commit(reservation, offset, len)
    }

    fn decommit(&self, reservation: &DeviceBlock, offset: usize, len: usize) -> Result<()> {
        self.upstream.decommit(reservation, offset, len)
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
        let mut state = self.state.lock().unpoisoned();
        self.merge_kept(&mut state);
        let mut after: HashMap<SegmentId, Vec<Event>> = HashMap::new();
        for (segment, _, events) in state.pending.drain(..) {
            after.entry(segment).or_default().extend(events);
        }
        for (id, segment) in state.segments.drain() {
            let events = after.remove(&id).unwrap_or_default();
            // Nobody to report a failed release to from a drop.
            let _ = self.upstream.deallocate(segment, events);
        }
        if let Some(e) = state.expandable.take() {
            // Its memory goes at once: the work still using it finishes first.
            for event in after.remove(&e.segment).unwrap_or_default() {
                let _ = event.wait();
            }
            let _ = e.release(self.upstream.as_ref());
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
