//! [`Shell`]: a dropped buffer kept whole for a buffer like it — its shared part (observer,
//! metric cells, copies with their blocks still in them) and the token owning the copies — so
//! that making that buffer takes neither a new part nor a block from a pool.

use std::sync::Arc;

use super::shared_part::{CopiesOwner, SharedPart};
use super::Side;
use crate::transfer::Strategy;

/// What a buffer made of a shell is: the storage settings a shell keeps (a shell is always of
/// pooled memory, never of pinned host memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Length in bytes.
    pub(crate) len: usize,
    /// One allocation the host shares, or two copies.
    pub(crate) shared: bool,
    /// The strategy of its large syncs, when not the engine's own.
    pub(crate) strategy: Option<Strategy>,
}

/// A dropped buffer's part and copies, to be made into a new buffer of the same [`Shape`]
/// ([`BufferStorage::from_shell`](super::BufferStorage::from_shell)).
pub(crate) struct Shell {
    pub(crate) part: Arc<SharedPart>,
    pub(super) owner: CopiesOwner,
    pub(crate) shape: Shape,
    /// Bytes of the host and the device block it holds (0: none).
    pub(crate) held: [usize; 2],
}

impl Shell {
    /// Whether it holds a block for `side` big enough for its length: a buffer whose memory
    /// is taken on `side` when it is made can be made of it without taking any.
    pub(crate) fn holds(&self, side: Side) -> bool {
        let side = if self.shape.shared {
            Side::Device
        } else {
            side
        };
        self.held[side as usize] >= self.shape.len
    }
}
