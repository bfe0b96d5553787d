//! The checked layer's reservations ([`Backend::reserve`](super::Backend::reserve)): requests
//! checked against the commit granularity and the reservation's bounds, committed bytes counted
//! in the backend's usage, for every device alike.

use super::checked::check_block;
use super::raw::{reservation_block, RawBackend};
use super::DeviceBlock;
use crate::error::{Error, Result};

/// The granularity, or `Unsupported` for a device without virtual memory.
fn granularity<R: RawBackend>(raw: &R, operation: &'static str) -> Result<usize> {
    raw.commit_granularity().ok_or(Error::Unsupported {
        backend: raw.kind(),
        what: operation,
    })
}

pub(super) fn reserve<R: RawBackend>(raw: &R, bytes: usize) -> Result<DeviceBlock> {
    let granularity = granularity(raw, "reserve")?;
    if bytes == 0 {
        return Err(Error::ZeroLength {
            what: "reservation",
        });
    }
    if bytes % granularity != 0 {
        return Err(Error::invalid(format!(
            "a reservation is a multiple of the commit granularity ({granularity} bytes), got \
             {bytes}"
        )));
    }
    let counters = raw.usage_counters();
    // A live block whose bytes count as they are committed.
    counters.try_allocate(0);
    let handle = raw
        .reserve(bytes)
        .inspect_err(|_| counters.undo_allocate(0))?;
    // SAFETY: the backend reserved exactly that address space, handed out once here.
    Ok(unsafe { reservation_block(raw.id(), handle, bytes) })
}

/// Checks a commit or decommit: the backend's reservation, a granular range inside it.
fn check<R: RawBackend>(
    raw: &R,
    what: &'static str,
    reservation: &DeviceBlock,
    offset: usize,
    len: usize,
) -> Result<()> {
    let granularity = granularity(raw, what)?;
    check_block(raw.id(), what, reservation, offset, len)?;
    if !reservation.is_reservation() {
        return Err(Error::invalid(format!(
            "{what}: the block is not a reservation (Backend::reserve)"
        )));
    }
    if len == 0 {
        return Err(Error::ZeroLength { what });
    }
    if offset % granularity != 0 || len % granularity != 0 {
        return Err(Error::invalid(format!(
            "{what}: offset {offset} and length {len} must be multiples of the commit \
             granularity ({granularity} bytes)"
        )));
    }
    Ok(())
}

pub(super) fn commit<R: RawBackend>(
    raw: &R,
    reservation: &DeviceBlock,
    offset: usize,
    len: usize,
) -> Result<()> {
    check(raw, "commit", reservation, offset, len)?;
    let counters = raw.usage_counters();
    // Charged in full first (a device of fixed size refuses past it); what was committed
    // already is credited back after.
    if !counters.try_commit(len) {
        return Err(Error::OutOfMemory {
            backend: raw.kind(),
            requested: len as u64,
            diagnosis: None,
        });
    }
    // SAFETY: the reservation is this backend's (checked).
    match unsafe { raw.commit(reservation, offset, len) } {
        Ok(new) => {
            counters.decommitted(len - new);
            Ok(())
        }
        Err(e) => {
            counters.decommitted(len);
            Err(e)
        }
    }
}

pub(super) fn decommit<R: RawBackend>(
    raw: &R,
    reservation: &DeviceBlock,
    offset: usize,
    len: usize,
) -> Result<()> {
    check(raw, "decommit", reservation, offset, len)?;
    // SAFETY: the reservation is this backend's (checked).
    let was = unsafe { raw.decommit(reservation, offset, len) }?;
    raw.usage_counters().decommitted(was);
    Ok(())
}

/// Frees a reservation (the caller checked it is this backend's).
pub(super) fn release<R: RawBackend>(raw: &R, reservation: DeviceBlock) -> Result<()> {
    // SAFETY: the block is this backend's reservation.
    let committed = unsafe { raw.release_reservation(reservation) }?;
    raw.usage_counters().released(committed);
    Ok(())
}
