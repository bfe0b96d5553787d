//! Unified buffers over MPI (feature `mpi`, through rsmpi): point-to-point messages and
//! collectives that keep a buffer's two copies coherent, so a buffer computed on one rank's
//! device reaches another rank's kernels without a hand-written download, send, receive and
//! upload.
//!
//! **Paths.** By default MPI reads and writes the host copy: sending syncs it from the device if
//! the device holds the newest data (a buffer placed `HostPinned` stages through page-locked
//! memory), receiving writes it whole and marks the device copy stale, so the next device use
//! uploads once. The `_device` functions hand MPI the device copy itself, for a CUDA-aware MPI
//! (or the host backend, whose device memory is host memory); they wait for the device work
//! enqueued on the buffer first, and an OpenCL buffer, which is no address, is refused.
//!
//! **Checks.** Lengths that one rank can see are checked before MPI is called: a receive probes
//! the message first and answers [`Error::LengthMismatch`] (or [`Error::TypeMismatch`] when its
//! bytes are no whole number of elements), taking the message off the wire so the next receive
//! sees the next one; a collective's local buffers must agree. That every rank passes the same
//! length and element type to a collective is MPI's rule, unchecked there as in MPI;
//! [`agree`] checks it with one small all-reduce when wanted.
//!
//! Host guards are rsmpi buffers themselves (`Buffer` for [`HostRef`], `BufferMut` for
//! [`HostMut`]), for whatever else MPI offers: `process.send(&buffer.host()?)`.
//!
//! [`HostRef`]: crate::buffer::HostRef
//! [`HostMut`]: crate::buffer::HostMut

mod collectives;
mod devices;
mod messages;

pub use collectives::{agree, all_reduce, all_reduce_into, all_reduce_into_device, broadcast};
pub use devices::{local_device, local_rank};
pub use messages::{receive, receive_device, send, send_device};

use ::mpi::datatype::Equivalence;
use ::mpi::Count;

use crate::element::Element;
use crate::error::{Error, Result};

/// An element MPI can carry: plain data with an MPI datatype (`f32`, `i64`, `u8`, …).
pub trait MpiElement: Element + Equivalence {}
impl<T: Element + Equivalence> MpiElement for T {}

/// `len` elements as one MPI count, or the error saying it is too many.
fn mpi_count(what: &'static str, len: usize) -> Result<Count> {
    Count::try_from(len).map_err(|_| Error::LengthMismatch {
        what,
        expected: Count::MAX as u64,
        actual: len as u64,
    })
}
