//! Freed blocks kept whole by the thread that freed them, for its next request of the same
//! length: a loop allocating one size takes no lock, walks no tree and (on OpenCL) makes no
//! sub-buffer. Any request that has to carve merges every thread's kept blocks first, so that
//! best fit sees all the free space; trims and snapshots do too.

use crate::backend::DeviceBlock;

/// Most blocks one thread keeps whole.
const PER_THREAD: usize = 4;

/// One thread's kept blocks (views still registered with the allocator), newest last.
#[derive(Default)]
pub(super) struct Kept {
    pub(super) blocks: Vec<DeviceBlock>,
    /// Requests served from `blocks`.
    pub(super) reuses: u64,
}

impl Kept {
    /// The newest kept block of exactly `bytes`.
    pub(super) fn take(&mut self, bytes: usize) -> Option<DeviceBlock> {
        let at = self.blocks.iter().rposition(|b| b.size() == bytes)?;
        self.reuses += 1;
        Some(self.blocks.remove(at))
    }

    /// Keeps `block`; the oldest kept one, if that makes too many, to be merged.
    pub(super) fn keep(&mut self, block: DeviceBlock) -> Option<DeviceBlock> {
        let evicted = (self.blocks.len() == PER_THREAD).then(|| self.blocks.remove(0));
        self.blocks.push(block);
        evicted
    }
}
