//! Where a copy reads and writes, named rather than positional.

/// `len` bytes from `src_offset` in the source to `dst_offset` in the destination: one region
/// of a copy between two memory objects (Vulkan's `VkBufferCopy`, wgpu-hal's `BufferCopy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CopyRegion {
    /// Where the bytes start in the source.
    pub src_offset: usize,
    /// Where they go in the destination.
    pub dst_offset: usize,
    /// How many bytes.
    pub len: usize,
}

impl CopyRegion {
    /// The first `len` bytes of the source to the start of the destination.
    pub fn prefix(len: usize) -> Self {
        CopyRegion {
            src_offset: 0,
            dst_offset: 0,
            len,
        }
    }
}
