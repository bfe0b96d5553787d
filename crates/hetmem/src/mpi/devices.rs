//! Which device a rank uses: ranks on one node share its devices round-robin.

use std::sync::Arc;

use ::mpi::topology::Communicator;

use crate::backend::{Backend, BackendKind};
use crate::error::{Error, Result};

/// This rank's index among the ranks of `comm` on the same node (`MPI_Comm_split_type` with
/// `MPI_COMM_TYPE_SHARED`).
pub fn local_rank<C: Communicator>(comm: &C) -> usize {
    comm.split_shared(0).rank() as usize
}

/// The device of `kind` this rank should use: the node's devices of that kind dealt out
/// round-robin by [`local_rank`], so that 4 ranks on a node with 2 GPUs use each twice and one
/// program runs unchanged on 1 or N ranks. [`Error::BackendUnavailable`] when the node has none.
pub fn local_device<C: Communicator>(comm: &C, kind: BackendKind) -> Result<Arc<dyn Backend>> {
    let mut devices = crate::backend::devices(kind)?;
    if devices.is_empty() {
        return Err(Error::BackendUnavailable {
            backend: kind,
            reason: "no device of this kind on this node".to_owned(),
        });
    }
    let index = local_rank(comm) % devices.len();
    Ok(devices.swap_remove(index))
}
