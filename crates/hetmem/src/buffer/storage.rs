//! [`BufferStorage`]: the memory behind a buffer and all its views, and the protocol that keeps
//! its two copies coherent.
//!
//! Every state change is computed by [`transition`] and carried out here. Each side keeps the set
//! of byte ranges where it is stale; a transfer moves only those ranges (see [`RangeSet::plan`]).
//! At most one side is stale at a time: before a side becomes newer anywhere it is made valid
//! everywhere, so the six states of the table describe every buffer.
//!
//! # Locking
//! Operations through `&self` (guards for reading, `read`, `sync`, prefetches) only ever make a
//! stale side valid; nothing through `&self` changes a valid side. They serialise on `tracker`,
//! and write a side's slot only while that side is stale — when no guard on it can exist, since
//! guards are handed out only for valid sides and a side becomes stale only through `&mut`. So a
//! thread holding a read guard on one side may take a guard on the other without deadlock, and
//! concurrent readers needing one sync perform it once. Operations through `&mut self` use
//! `get_mut` and take no lock at all.
//!
//! # Transfers in flight
//! `sync` and the prefetches hand their transfer to the context's background thread and return
//! ([`BufferStorage::acquire_async`]). The thread works on a copy of the tracker and on the
//! slots, lent to it (a lease of the [`SharedPart`]'s copies): it write-locks the side it makes valid — a
//! stale side, which no guard holds — and read-locks the other, so guards on the valid side
//! stay usable meanwhile. Every other operation that needs the side in flight, and every
//! operation through `&mut self`, first *settles* the transfer: waits for it and takes in the
//! tracker it produced, or nothing if it failed (the side stays stale, the valid side valid,
//! and the next use transfers again).
//!
//! # Device work of the user
//! Once a device guard has been handed out (`exposed`), a device block leaves the buffer
//! (drop, `compact`, `resize`) with a marker of the buffer's queue recorded on it, so its pool
//! hands it out again only after every kernel the user enqueued on it has finished.

use crate::sync::Unpoison;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use super::coherence::{transition, CoherenceEvent, CoherenceState, Effect, Side, Transition};
use super::context::ContextShared;
use super::effects::Core;
use super::lent_device::LentDevice;
use super::metrics::BufferMetrics;
use super::range_set::RangeSet;
use super::shared_part::{CopiesOwner, SharedPart};
use super::shell::{Shape, Shell};
use super::tracker::{
    allocated, allocated_mut, host_bytes, host_bytes_mut, side_bit, Slots, Tracker,
};
use super::Residency;
use crate::backend::{Held, SlotRead};
use crate::error::Result;
use crate::pool::PooledBlock;
use crate::transfer::{Direction, Strategy, TransferHandle};

/// How a shared-residency buffer comes into being: its one allocation, zeroed.
const SHARED_INIT: Transition = Transition {
    state: CoherenceState::Synchronized,
    effects: &[Effect::Allocate(Side::Device), Effect::Zero(Side::Device)],
};

/// The memory of one buffer, shared by the buffer and its views. Opaque: reach it through
/// [`UnifiedBuffer`](super::UnifiedBuffer).
pub struct BufferStorage {
    pub(super) core: Core,
    /// The right to the two copies in `core.part`, which a transfer in flight borrows.
    pub(super) owner: CopiesOwner,
    pub(super) tracker: Mutex<Tracker>,
    /// Which sides are valid, mirrored from `tracker` for the guards' lock-free fast path.
    pub(super) valid: AtomicU8,
    /// A device guard was handed out: the user's device work may use the device block.
    exposed: AtomicBool,
}

/// A buffer's own storage, held inline in the buffer (not boxed): a buffer's one heap allocation
/// is its shared part (copies, metric cells, record). Opaque, like [`BufferStorage`], which it
/// derefs to.
pub struct OwnedStorage(BufferStorage);

impl OwnedStorage {
    pub(crate) fn new(storage: BufferStorage) -> Self {
        OwnedStorage(storage)
    }
}

impl std::ops::Deref for OwnedStorage {
    type Target = BufferStorage;

    fn deref(&self) -> &BufferStorage {
        &self.0
    }
}

impl std::ops::DerefMut for OwnedStorage {
    fn deref_mut(&mut self) -> &mut BufferStorage {
        &mut self.0
    }
}

impl BufferStorage {
    /// `part`: the buffer's shared part — with the observer, a memory manager's record or
    /// nobody ([`SharedPart::unobserved`]) — and the owner of its copies.
    pub(crate) fn new(
        ctx: Arc<ContextShared>,
        len: usize,
        shared: bool,
        strategy: Option<Strategy>,
        pooled: bool,
        (part, owner): (Arc<SharedPart>, CopiesOwner),
    ) -> Self {
        BufferStorage {
            core: Core {
                ctx,
                len,
                shared,
                strategy,
                pooled,
                pinned: false,
                zero_fill: true,
                part,
            },
            owner,
            tracker: Mutex::new(Tracker::new()),
            valid: AtomicU8::new(0),
            exposed: AtomicBool::new(false),
        }
    }

    /// A buffer made of a parked `shell`: its part and blocks kept, its cells as new, its
    /// contents uninitialised (zeros on first use, as for any new buffer).
    pub(crate) fn from_shell(ctx: Arc<ContextShared>, shell: Shell) -> Self {
        shell.part.reset();
        let Shape {
            len,
            shared,
            strategy,
        } = shell.shape;
        BufferStorage::new(ctx, len, shared, strategy, true, (shell.part, shell.owner))
    }

    /// Waits for a transfer in flight and takes it in, so that the validity mirror is exact
    /// for the decisions an operation through `&mut self` makes.
    pub(super) fn settle(&mut self) {
        self.parts_mut();
    }

    /// [`BufferStorage::settle`] with the tracker already locked.
    pub(super) fn settle_locked(&self, tracker: &mut Tracker) {
        tracker.settle(&self.valid);
    }

    /// Exclusive access to what `&mut self` operations change, once any transfer in flight is
    /// done. The slots thaw: the operation may change the copies or their validity.
    pub(super) fn parts_mut(&mut self) -> (&Core, &mut Tracker, &mut Slots, &AtomicU8) {
        let tracker = self.tracker.get_mut().unpoisoned();
        tracker.settle(&self.valid);
        let slots = (self.core.part)
            .copies_mut(&mut self.owner)
            .expect("a transfer gives the copies back before it is settled");
        slots.host.thaw();
        slots.device.thaw();
        (&self.core, tracker, slots, &self.valid)
    }

    /// The buffer's shared part: its metric cells and observer.
    pub(crate) fn part(&self) -> &Arc<SharedPart> {
        &self.core.part
    }

    /// The two copies (read-locked or frozen slots).
    #[inline]
    pub(super) fn slots(&self) -> &Slots {
        self.core.part.copies(&self.owner)
    }

    /// Takes the memory of `side` (of the one allocation, when shared) from its pool now, so that
    /// running out of memory shows at creation rather than at first use. The buffer stays
    /// uninitialised; first use fills it with zeros unless `zero_fill` is off, in which case its
    /// contents are whatever the memory held.
    pub(crate) fn reserve(&mut self, side: Side, zero_fill: bool) -> Result<()> {
        self.core.zero_fill = zero_fill;
        let (core, _, slots, _) = self.parts_mut();
        let side = if core.shared { Side::Device } else { side };
        let slot = match side {
            Side::Host => slots.host.get_mut(),
            Side::Device => slots.device.get_mut(),
        };
        core.allocate_into(side, slot)
    }

    /// Whether the first use fills the buffer with zeros (see [`BufferStorage::reserve`]).
    pub(crate) fn set_zero_fill(&mut self, zero_fill: bool) {
        self.core.zero_fill = zero_fill;
    }

    /// Makes `block` — adopted host memory holding the buffer's contents — the host copy: the
    /// buffer starts valid on the host only.
    pub(crate) fn adopt_host(&mut self, block: PooledBlock) {
        let (core, tracker, slots, valid) = self.parts_mut();
        core.place(Side::Host, slots.host.get_mut(), block);
        tracker.set_state(CoherenceState::HostOnly, valid);
    }

    /// Makes `block` — device memory made outside hetmem, holding the buffer's contents — the
    /// device copy: the buffer starts valid on the device only.
    pub(crate) fn adopt_device(&mut self, block: PooledBlock) {
        let (core, tracker, slots, valid) = self.parts_mut();
        core.place(Side::Device, slots.device.get_mut(), block);
        tracker.set_state(CoherenceState::DeviceOnly, valid);
    }

    /// Makes the host copy page-locked memory from the engine's pinned pool
    /// (`Placement::HostPinned`), from the next host allocation on.
    pub(crate) fn pin_host(&mut self) {
        self.core.pinned = true;
    }

    pub(crate) fn residency(&self) -> Residency {
        if self.core.shared {
            Residency::Shared
        } else {
            Residency::Mirrored
        }
    }

    /// The state, with a transfer in flight taken in if it has finished.
    pub(crate) fn state(&self) -> CoherenceState {
        let mut tracker = self.tracker.lock().unpoisoned();
        tracker.settle_if_finished(&self.valid);
        tracker.state
    }

    /// Marks the device block as reachable by the user's device work (a device guard exists).
    pub(crate) fn expose(&self) {
        self.exposed.store(true, Ordering::Release);
    }

    #[inline]
    pub(crate) fn is_valid(&self, side: Side) -> bool {
        self.valid.load(Ordering::Acquire) & side_bit(side) != 0
    }

    pub(crate) fn ctx(&self) -> &ContextShared {
        &self.core.ctx
    }

    pub(crate) fn metrics(&self) -> BufferMetrics {
        let m = &self.core.part;
        BufferMetrics {
            host_to_device: m.transfers.get(Direction::HostToDevice),
            device_to_host: m.transfers.get(Direction::DeviceToHost),
            device_to_device: m.transfers.get(Direction::DeviceToDevice),
            last_access: m.last_access(),
            state: self.state(),
            residency: self.residency(),
            bytes: self.core.len,
        }
    }

    /// Before the host touches a shared allocation of a device whose blocks are not host memory
    /// (SVM, managed memory), waits for the work enqueued on the buffer's queue — the user's
    /// kernels, once a device guard was handed out (hetmem's own device work there is waited
    /// for when it is enqueued).
    #[inline]
    pub(super) fn await_device_work(&self) -> Result<()> {
        let shared_device_memory = self.core.shared && !self.core.ctx.host_addressable;
        if shared_device_memory && self.exposed.load(Ordering::Acquire) {
            let backend = self.core.ctx.device_backend();
            backend.enqueue_marker(&self.core.ctx.queue)?.wait()?;
        }
        Ok(())
    }

    /// Makes `side` valid for reading, transferring its stale ranges if needed.
    #[inline]
    pub(crate) fn acquire(&self, side: Side) -> Result<()> {
        self.core.part.touch();
        if side == Side::Host {
            self.await_device_work()?;
        }
        if self.is_valid(side) {
            return Ok(());
        }
        self.make_valid(side)
    }

    /// [`BufferStorage::acquire`] of a side that is not valid (kept apart so that the check
    /// before it inlines into guards).
    #[inline(never)]
    fn make_valid(&self, side: Side) -> Result<()> {
        self.core.ctx.check_open("making a buffer side valid")?;
        let mut tracker = self.tracker.lock().unpoisoned();
        tracker.settle(&self.valid);
        if tracker.state.is_valid(side) {
            return Ok(()); // another thread, or the transfer in flight, did it
        }
        let (side, t) = self.making_valid(&tracker, side)?;
        let (mut target, source) = self.slots().for_making_valid(side);
        self.core.perform(
            &mut tracker,
            &self.valid,
            side,
            t,
            &mut target,
            &source,
            &(0..0),
        )
    }

    /// The side to make valid for reading `side` (the one allocation, when shared) and the
    /// transition that does it.
    pub(super) fn making_valid(&self, tracker: &Tracker, side: Side) -> Result<(Side, Transition)> {
        if self.core.shared {
            Ok((Side::Device, SHARED_INIT))
        } else {
            Ok((side, transition(tracker.state, CoherenceEvent::Read(side))?))
        }
    }

    /// Makes `side` valid and newest over `range`, which the caller will modify; with `discard`
    /// the caller overwrites all of `range` without reading it, so it is not transferred.
    pub(crate) fn acquire_mut(
        &mut self,
        side: Side,
        range: Range<usize>,
        discard: bool,
    ) -> Result<()> {
        if range.is_empty() {
            self.core.part.touch();
            return Ok(());
        }
        self.acquire_mut_in(side, range, discard).map(drop)
    }

    /// [`BufferStorage::acquire_mut`] of the host side, then the bytes of `range` there: one
    /// exclusive borrow of the parts for both (each costs an atomic check that no transfer
    /// still holds the slots).
    pub(crate) fn host_range_mut(
        &mut self,
        range: Range<usize>,
        discard: bool,
    ) -> Result<&mut [u8]> {
        if range.is_empty() {
            self.core.part.touch();
            return Ok(&mut []);
        }
        let (core, slots) = self.acquire_mut_in(Side::Host, range.clone(), discard)?;
        Ok(&mut host_slot_mut(core, slots)?[range])
    }

    /// [`BufferStorage::acquire_mut`] of a non-empty `range`, handing back the parts it
    /// borrowed.
    fn acquire_mut_in(
        &mut self,
        side: Side,
        range: Range<usize>,
        discard: bool,
    ) -> Result<(&Core, &mut Slots)> {
        self.core.part.touch();
        if side == Side::Host {
            self.await_device_work()?;
        }
        let (core, tracker, slots, valid) = self.parts_mut();
        let exclude = if discard { range.clone() } else { 0..0 };
        if core.shared {
            if tracker.state == CoherenceState::Uninitialized {
                core.ctx.check_open("allocating a buffer")?;
                let slot = slots.device.get_mut();
                let none = None;
                core.perform(
                    tracker,
                    valid,
                    Side::Device,
                    SHARED_INIT,
                    slot,
                    &none,
                    &exclude,
                )?;
            }
            return Ok((core, slots));
        }
        let whole = range == (0..core.len);
        let event = if discard && whole {
            CoherenceEvent::Discard(side)
        } else {
            CoherenceEvent::Write(side)
        };
        let t = transition(tracker.state, event)?;
        if !t.effects.is_empty() {
            core.ctx.check_open("making a buffer side valid")?;
        }
        {
            let host = slots.host.get_mut();
            let device = slots.device.get_mut();
            let (target, source) = match side {
                Side::Host => (host, &*device),
                Side::Device => (device, &*host),
            };
            core.perform(tracker, valid, side, t, target, source, &exclude)?;
        }
        if t.state.is_allocated(side.other()) {
            tracker.stale_mut(side.other()).insert(range);
        }
        Ok((core, slots))
    }

    /// The host-side bytes (the whole block), held. Call it while the host copy is valid: it
    /// stays so, and its block in place, for as long as `&self` is borrowed, so the slot is
    /// frozen — later guards take neither its lock nor the backend's word for the bytes —
    /// until the next operation through `&mut self` thaws it. (A shared allocation, once
    /// made, is written through `&self` by nothing either.)
    #[inline]
    pub(crate) fn host_bytes(&self) -> Result<Held<SlotRead<'_, Option<PooledBlock>>>> {
        let side = if self.core.shared {
            Side::Device
        } else {
            Side::Host
        };
        let backend = self.core.backend(side);
        let slot = match side {
            Side::Host => &self.slots().host,
            Side::Device => &self.slots().device,
        };
        slot.freeze(|slot| host_bytes(backend, allocated(slot)))
    }

    /// The host-side bytes (the whole block), for writing. Call [`BufferStorage::acquire_mut`]
    /// first.
    pub(crate) fn host_bytes_mut(&mut self) -> Result<&mut [u8]> {
        let (core, _, slots, _) = self.parts_mut();
        host_slot_mut(core, slots)
    }

    pub(crate) fn device_slot(&self) -> SlotRead<'_, Option<PooledBlock>> {
        self.slots().device.read()
    }

    /// The device block, lent to a device guard (see [`LentDevice`]).
    pub(crate) fn lend_device(&mut self) -> LentDevice<'_> {
        let (core, tracker, slots, valid) = self.parts_mut();
        let Slots { host, device } = slots;
        let device = device.get_mut();
        let block = allocated(device);
        let lent = (block.raw_handle() as usize, block.size());
        LentDevice {
            core,
            tracker,
            host: host.get_mut(),
            device,
            valid,
            lent,
        }
    }

    /// Gives `side` a block big enough for the buffer, without changing the state (as
    /// `reserve` does): an operation can then fill it before committing.
    pub(super) fn ensure_block(&mut self, side: Side) -> Result<()> {
        let (core, _, slots, _) = self.parts_mut();
        let slot = match side {
            Side::Host => slots.host.get_mut(),
            Side::Device => slots.device.get_mut(),
        };
        if slot.as_ref().is_none_or(|b| b.capacity() < core.len) {
            core.allocate_into(side, slot)?;
        }
        Ok(())
    }

    /// The device holds the only valid copy (`DeviceOnly` or `DeviceDirty`).
    pub(super) fn newest_only_on_device(&self) -> bool {
        self.is_valid(Side::Device) && !self.is_valid(Side::Host)
    }

    /// Starts making both sides valid ([`BufferStorage::acquire_async`] of the stale side).
    pub(crate) fn sync(&self) -> Result<TransferHandle> {
        match self.state() {
            CoherenceState::HostOnly | CoherenceState::HostDirty => {
                self.acquire_async(Side::Device)
            }
            CoherenceState::DeviceOnly | CoherenceState::DeviceDirty => {
                self.acquire_async(Side::Host)
            }
            CoherenceState::Uninitialized | CoherenceState::Synchronized => {
                Ok(TransferHandle::finished())
            }
        }
    }

    /// Drops the device copy, downloading what the host lacks first.
    pub(crate) fn compact(&mut self) -> Result<()> {
        if self.core.shared {
            return Ok(());
        }
        let exposed = *self.exposed.get_mut();
        let (core, tracker, slots, valid) = self.parts_mut();
        let t = transition(tracker.state, CoherenceEvent::Compact)?;
        let host = slots.host.get_mut();
        let device = slots.device.get_mut();
        if t.effects.contains(&Effect::Download) {
            core.ctx.check_open("downloading before compaction")?;
            let read = transition(tracker.state, CoherenceEvent::Read(Side::Host))?;
            core.perform(tracker, valid, Side::Host, read, host, device, &(0..0))?;
        }
        core.retire(device.take(), exposed);
        tracker.stale_host.clear();
        tracker.stale_device.clear();
        tracker.set_state(t.state, valid);
        Ok(())
    }

    /// Declares `side` stale (a kernel the buffer did not see wrote the other side).
    pub(crate) fn invalidate(&mut self, side: Side) -> Result<()> {
        if self.core.shared {
            return Ok(());
        }
        let (core, tracker, _, valid) = self.parts_mut();
        let t = transition(tracker.state, CoherenceEvent::Invalidate(side))?;
        if t.state.is_allocated(side) && !t.state.is_valid(side) {
            *tracker.stale_mut(side) = RangeSet::full(core.len);
        }
        tracker.set_state(t.state, valid);
        Ok(())
    }

    /// Changes the length to `new_len` bytes, keeping the prefix; new bytes read as zeros.
    pub(crate) fn resize(&mut self, new_len: usize) -> Result<()> {
        let exposed = *self.exposed.get_mut();
        let (core, tracker, slots, valid) = self.parts_mut();
        let t = transition(tracker.state, CoherenceEvent::Resize)?;
        if !t.effects.is_empty() {
            core.ctx.check_open("resizing a buffer")?;
        }
        // Reallocations first: if one fails, nothing has been released and the old length
        // still describes every copy.
        let reallocations = t
            .effects
            .iter()
            .filter(|e| matches!(e, Effect::Reallocate(_)));
        let releases = t.effects.iter().filter(|e| matches!(e, Effect::Release(_)));
        for &effect in reallocations.chain(releases) {
            let (Effect::Release(side) | Effect::Reallocate(side)) = effect else {
                unreachable!("{effect:?} is not an effect of resizing")
            };
            let slot = match (side, core.shared) {
                (Side::Host, true) => continue, // one allocation: the device slot holds it
                (Side::Host, false) => slots.host.get_mut(),
                (Side::Device, _) => slots.device.get_mut(),
            };
            match effect {
                Effect::Release(_) => core.retire(slot.take(), exposed && side == Side::Device),
                _ => core.reallocate(side, slot, new_len)?,
            }
        }
        if tracker.state == CoherenceState::Uninitialized {
            // Blocks reserved at creation have the old length: give them back.
            core.retire(slots.host.get_mut().take(), false);
            core.retire(slots.device.get_mut().take(), false);
        }
        tracker.stale_host.clear();
        tracker.stale_device.clear();
        tracker.set_state(t.state, valid);
        self.core.part.observer.resized(self.core.len, new_len);
        self.core.len = new_len;
        Ok(())
    }
}

impl Drop for BufferStorage {
    /// Waits for a transfer in flight; then, where no device work of the user's can use the
    /// blocks, offers the buffer whole to its observer to park (a manager keeps it for the
    /// next buffer like it); otherwise lets the device block go with the user's pending work
    /// recorded on it.
    fn drop(&mut self) {
        let exposed = *self.exposed.get_mut();
        if !exposed && self.park() {
            return;
        }
        let (core, _, slots, _) = self.parts_mut();
        let device = slots.device.get_mut().take();
        core.retire(device, exposed);
        let part = &self.core.part;
        part.observer.retired(part);
    }
}

impl BufferStorage {
    /// Offers this buffer, going, to its observer as a [`Shell`] — settled, and only where its
    /// blocks are of its context's pools (not adopted, pinned or unpooled memory): a shell is
    /// made again into a pooled buffer. Whether the observer kept it.
    fn park(&mut self) -> bool {
        if !self.core.part.observer.parks() {
            return false;
        }
        let held = {
            let (core, _, slots, _) = self.parts_mut();
            let (host, device) = (slots.host.get_mut(), slots.device.get_mut());
            let pools = (core.pooled && !core.pinned)
                && (!core.shared || core.ctx.host_addressable)
                && host.as_ref().is_none_or(|b| core.pool(Side::Host).owns(b))
                && device
                    .as_ref()
                    .is_none_or(|b| core.pool(Side::Device).owns(b));
            if !pools {
                return false;
            }
            [host, device].map(|slot| slot.as_ref().map_or(0, PooledBlock::capacity))
        };
        let core = &self.core;
        let shell = Shell {
            part: core.part.clone(),
            owner: std::mem::replace(&mut self.owner, CopiesOwner::none()),
            shape: Shape {
                len: core.len,
                shared: core.shared,
                strategy: core.strategy,
            },
            held,
        };
        let part = &self.core.part;
        match part.observer.park(shell, part) {
            None => true,
            Some(shell) => {
                self.owner = shell.owner;
                false
            }
        }
    }
}

/// The bytes of the slot holding the host side (the device slot's one allocation, when shared).
fn host_slot_mut<'a>(core: &Core, slots: &'a mut Slots) -> Result<&'a mut [u8]> {
    let (slot, backend) = if core.shared {
        (slots.device.get_mut(), core.backend(Side::Device))
    } else {
        (slots.host.get_mut(), core.backend(Side::Host))
    };
    host_bytes_mut(backend, allocated_mut(slot))
}
