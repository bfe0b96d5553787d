//! Collectives over unified buffers: all-reduce and broadcast on the host copies (or, for a
//! CUDA-aware MPI, the device copies), and [`agree`] to check what MPI itself does not.

use std::ops::{Deref, DerefMut};

use ::mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use ::mpi::topology::{Communicator, Process};

use super::{mpi_count, MpiElement};
use crate::buffer::{BufferStorage, UnifiedBuffer};
use crate::error::{Error, Result};
use crate::host::{BroadcastSource, DeviceMemory};

/// Combines every rank's `send` with `op` into every rank's `recv` (`MPI_Allreduce`), host copy
/// to host copy: `send` is synced to the host if the device holds its newest data, `recv`'s
/// host copy becomes the newest. The two must have the same length
/// ([`Error::LengthMismatch`]); across ranks, as in MPI, they must too ([`agree`] checks).
pub fn all_reduce_into<C, T, S, R>(
    comm: &C,
    send: &UnifiedBuffer<T, S>,
    recv: &mut UnifiedBuffer<T, R>,
    op: SystemOperation,
) -> Result<()>
where
    C: Communicator,
    T: MpiElement,
    S: Deref<Target = BufferStorage>,
    R: DerefMut<Target = BufferStorage>,
{
    same_length(send.len(), recv.len())?;
    let from = send.host()?;
    let mut to = recv.host_discard()?;
    comm.all_reduce_into(&from[..], &mut to[..], op);
    Ok(())
}

/// [`all_reduce_into`] device copy to device copy, for a CUDA-aware MPI on CUDA or the host
/// backend ([`Error::Unsupported`] on OpenCL): both are brought up to date on the device first
/// and `recv`'s device copy becomes the newest.
pub fn all_reduce_into_device<C, T, S, R>(
    comm: &C,
    send: &UnifiedBuffer<T, S>,
    recv: &mut UnifiedBuffer<T, R>,
    op: SystemOperation,
) -> Result<()>
where
    C: Communicator,
    T: MpiElement,
    S: Deref<Target = BufferStorage>,
    R: DerefMut<Target = BufferStorage>,
{
    same_length(send.len(), recv.len())?;
    let from = send.device()?;
    let from = DeviceMemory::<T>::reading(&from)?;
    let mut to = recv.device_mut()?;
    let mut to = DeviceMemory::<T>::writing(&mut to)?;
    comm.all_reduce_into(&from, &mut to, op);
    Ok(())
}

/// Combines every rank's `buffer` with `op` in place: the reduced values replace each rank's
/// host copy, which becomes the newest. MPI needs the values sent apart from where the result
/// goes, so they are copied once (use [`all_reduce_into`] with a second buffer to avoid it).
pub fn all_reduce<C, T, S>(
    comm: &C,
    buffer: &mut UnifiedBuffer<T, S>,
    op: SystemOperation,
) -> Result<()>
where
    C: Communicator,
    T: MpiElement,
    S: DerefMut<Target = BufferStorage>,
{
    mpi_count(
        "all-reduce: an MPI message holds at most i32::MAX elements",
        buffer.len(),
    )?;
    let values = buffer.to_vec()?;
    let mut to = buffer.host_discard()?;
    comm.all_reduce_into(&values[..], &mut to[..], op);
    Ok(())
}

/// Gives every rank `root`'s `buffer` (`MPI_Bcast`): the root sends its host copy (synced from
/// the device if need be; both of its copies stay valid), the others' host copies are
/// overwritten and become the newest.
pub fn broadcast<T, S>(root: &Process<'_>, buffer: &mut UnifiedBuffer<T, S>) -> Result<()>
where
    T: MpiElement,
    S: DerefMut<Target = BufferStorage>,
{
    mpi_count(
        "broadcast: an MPI message holds at most i32::MAX elements",
        buffer.len(),
    )?;
    if root.is_self() {
        let host = buffer.host()?;
        root.broadcast_into(&mut BroadcastSource(&host[..]));
    } else {
        let mut host = buffer.host_discard()?;
        root.broadcast_into(&mut host[..]);
    }
    Ok(())
}

/// Checks that every rank of `comm` holds a buffer of the same length and element type as
/// this rank's `buffer` — what a collective needs and MPI does not check — with one all-reduce
/// of four integers. Every rank gets the same answer: [`Error::LengthMismatch`] or
/// [`Error::TypeMismatch`] naming this rank's view of it.
pub fn agree<C, T, S>(comm: &C, buffer: &UnifiedBuffer<T, S>) -> Result<()>
where
    C: Communicator,
    T: MpiElement,
    S: Deref<Target = BufferStorage>,
{
    let len = buffer.len() as i64;
    let kind = type_code::<T>();
    // Maxima of x and -x give the maximum and the minimum in one reduction.
    let mine = [len, -len, kind, -kind];
    let mut all = [0i64; 4];
    comm.all_reduce_into(&mine[..], &mut all[..], SystemOperation::max());
    let (longest, shortest) = (all[0], -all[1]);
    if longest != shortest {
        return Err(Error::LengthMismatch {
            what: "collective: the ranks' buffers (this rank's against another's)",
            expected: len as u64,
            actual: if longest != len { longest } else { shortest } as u64,
        });
    }
    if all[2] != -all[3] {
        return Err(Error::TypeMismatch {
            what: "collective",
            expected: std::any::type_name::<T>(),
            found: "another element type on another rank".to_owned(),
        });
    }
    Ok(())
}

fn same_length(send: usize, recv: usize) -> Result<()> {
    mpi_count(
        "all-reduce: an MPI message holds at most i32::MAX elements",
        send,
    )?;
    if send != recv {
        return Err(Error::LengthMismatch {
            what: "all-reduce: the receiving buffer against the sending one",
            expected: send as u64,
            actual: recv as u64,
        });
    }
    Ok(())
}

/// The element type as a number every rank of one program computes alike (FNV-1a of its name,
/// kept positive so that its negation fits).
fn type_code<T>() -> i64 {
    let hash = (std::any::type_name::<T>().bytes()).fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (hash >> 2) as i64
}
