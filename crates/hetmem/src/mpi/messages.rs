//! Point-to-point: a buffer sent to one rank and received from one, on the host copy or (for
//! a CUDA-aware MPI) the device copy.

use std::ops::{Deref, DerefMut};

use ::mpi::datatype::Equivalence;
use ::mpi::point_to_point::{Destination, Message, Source, Status};
use ::mpi::topology::Process;
use ::mpi::Tag;

use super::{mpi_count, MpiElement};
use crate::buffer::{BufferStorage, UnifiedBuffer};
use crate::error::{Error, Result};
use crate::host::DeviceMemory;

/// Sends `buffer` to `to` with `tag`, from its host copy (synced from the device first if the
/// device holds the newest data). Blocks as `MPI_Send` does.
pub fn send<T, S>(buffer: &UnifiedBuffer<T, S>, to: &Process<'_>, tag: Tag) -> Result<()>
where
    T: MpiElement,
    S: Deref<Target = BufferStorage>,
{
    mpi_count(
        "send: an MPI message holds at most i32::MAX elements",
        buffer.len(),
    )?;
    let host = buffer.host()?;
    to.send_with_tag(&host[..], tag);
    Ok(())
}

/// Sends `buffer` from its device copy (uploaded first if the host holds the newest data),
/// handing MPI the device memory: for a CUDA-aware MPI on CUDA, or the host backend.
/// [`Error::Unsupported`] on OpenCL, whose buffers are no addresses.
pub fn send_device<T, S>(buffer: &UnifiedBuffer<T, S>, to: &Process<'_>, tag: Tag) -> Result<()>
where
    T: MpiElement,
    S: Deref<Target = BufferStorage>,
{
    mpi_count(
        "send: an MPI message holds at most i32::MAX elements",
        buffer.len(),
    )?;
    let device = buffer.device()?;
    to.send_with_tag(&DeviceMemory::<T>::reading(&device)?, tag);
    Ok(())
}

/// Receives the next message from `from` with `tag` into `buffer`'s host copy, which becomes
/// the newest (the device copy is uploaded again on its next use). A message of another length
/// is taken off the wire and answered with [`Error::LengthMismatch`], one whose bytes are no
/// whole number of `T` with [`Error::TypeMismatch`]; the buffer keeps its contents.
pub fn receive<T, S>(buffer: &mut UnifiedBuffer<T, S>, from: &Process<'_>, tag: Tag) -> Result<()>
where
    T: MpiElement,
    S: DerefMut<Target = BufferStorage>,
{
    let (message, status) = from.matched_probe_with_tag(tag);
    let host = check::<T>(&status, buffer.len()).and_then(|()| buffer.host_discard());
    match host {
        Ok(mut host) => {
            message.matched_receive_into(&mut host[..]);
            Ok(())
        }
        Err(e) => Err(discard(message, &status, e)),
    }
}

/// [`receive`] into the device copy, which becomes the newest: for a CUDA-aware MPI on CUDA,
/// or the host backend; [`Error::Unsupported`] on OpenCL. If the host copy was newer, the
/// device copy is brought up to date first, so that a refused message leaves the buffer's
/// contents as they were.
pub fn receive_device<T, S>(
    buffer: &mut UnifiedBuffer<T, S>,
    from: &Process<'_>,
    tag: Tag,
) -> Result<()>
where
    T: MpiElement,
    S: DerefMut<Target = BufferStorage>,
{
    let len = buffer.len();
    let mut device = buffer.device_mut()?;
    let mut memory = DeviceMemory::<T>::writing(&mut device)?;
    let (message, status) = from.matched_probe_with_tag(tag);
    if let Err(e) = check::<T>(&status, len) {
        return Err(discard(message, &status, e));
    }
    message.matched_receive_into(&mut memory);
    Ok(())
}

/// Takes a refused message off the wire, so the next receive sees the next one; `error`.
fn discard(message: Message, status: &Status, error: Error) -> Error {
    let mut bytes = vec![0u8; message_bytes(status)];
    message.matched_receive_into(&mut bytes[..]);
    error
}

/// The message's length in bytes.
fn message_bytes(status: &Status) -> usize {
    usize::try_from(status.count(u8::equivalent_datatype())).unwrap_or(0)
}

/// Whether the message `status` describes is `len` elements of `T`.
fn check<T: MpiElement>(status: &Status, len: usize) -> Result<()> {
    let bytes = message_bytes(status);
    let size = std::mem::size_of::<T>().max(1);
    if bytes % size != 0 {
        return Err(Error::TypeMismatch {
            what: "receive",
            expected: std::any::type_name::<T>(),
            found: format!("a message of {bytes} bytes, no whole number of them"),
        });
    }
    if bytes / size != len {
        return Err(Error::LengthMismatch {
            what: "receive: the message's elements against the buffer's",
            expected: len as u64,
            actual: (bytes / size) as u64,
        });
    }
    Ok(())
}
