//! What a device can do, said once: the checked layer reads [`Capabilities`] and never asks a
//! device for something it does not declare, so no primitive answers "cannot" on its own.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a backend can do beyond the required minimum: the one description of a device. The
/// checked layer serves host access, mapped access and peer copies from it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, schemars::JsonSchema))]
pub struct Capabilities {
    /// Device memory is host memory: a buffer can use one shared allocation and never transfer.
    pub unified_memory: bool,
    /// The devices this backend's blocks copy to directly, without staging through host
    /// memory: every backend with the same domain. `None` where the driver has no such copy.
    pub peer_domain: Option<PeerDomain>,
    /// Staged transfers, copies and fills run asynchronously with respect to the caller.
    pub async_copies: bool,
    /// Work on different queues runs at the same time, so a large transfer split over queues
    /// goes faster: OpenCL and CUDA streams; not wgpu, whose queues all feed the device's one.
    pub concurrent_queues: bool,
    /// Staging buffers are page-locked memory the device can reach by DMA.
    pub pinned_staging: bool,
    /// Blocks are ordinary host memory, readable through
    /// [`Backend::host_bytes`](super::Backend::host_bytes): a unified buffer can keep one
    /// allocation for both sides, and two such backends copy between each other with `memcpy`.
    pub host_addressable: bool,
    /// Blocks can be mapped into host memory and read or written in place
    /// ([`Backend::write_mapped`](super::Backend::write_mapped)); host-addressable blocks always
    /// can.
    pub mapped_access: bool,
    /// A block is read fastest through a mapping: the mapping is the device's memory itself,
    /// while a direct read goes through an intermediate buffer — wgpu on CPU and integrated
    /// adapters (a device copy into a read-back buffer, then a copy out; mapped reads measured
    /// 2.3× faster at 256 MiB and 16× at 4 KiB on llvmpipe). The transfer engine's `Auto`
    /// reads through mappings there (blocks that do not map are read directly).
    pub mapped_reads: bool,
    /// Besides its ordinary blocks, the device allocates blocks that the host addresses too
    /// ([`Backend::allocate_shared`](super::Backend::allocate_shared)): OpenCL fine-grained
    /// SVM, CUDA managed memory. `Placement::Shared` keeps such a buffer as one copy. (Where
    /// every block is host memory, `host_addressable` says so instead.)
    pub shared_allocations: bool,
}

impl Capabilities {
    /// Whether blocks of a backend with these capabilities copy straight into blocks of one
    /// with `other`'s: one driver peer domain, or host memory on both sides.
    pub fn copies_directly_to(&self, other: &Capabilities) -> bool {
        let same_domain = self.peer_domain.is_some() && self.peer_domain == other.peer_domain;
        same_domain || (self.host_addressable && other.host_addressable)
    }
}

/// A set of devices whose driver copies between them directly (all CUDA devices of the process:
/// `cuMemcpyPeerAsync` works between any two contexts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, schemars::JsonSchema))]
pub struct PeerDomain(u64);

impl PeerDomain {
    /// A fresh domain, never returned before in this process.
    pub fn unique() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        PeerDomain(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_copies_need_one_domain_or_host_memory_on_both_sides() {
        let domain = PeerDomain::unique();
        let peer = Capabilities {
            peer_domain: Some(domain),
            ..Capabilities::default()
        };
        let host = Capabilities {
            host_addressable: true,
            ..Capabilities::default()
        };
        let other_domain = Capabilities {
            peer_domain: Some(PeerDomain::unique()),
            ..Capabilities::default()
        };
        assert!(peer.copies_directly_to(&peer));
        assert!(host.copies_directly_to(&host));
        assert!(!peer.copies_directly_to(&other_domain));
        assert!(!peer.copies_directly_to(&host));
        assert!(!host.copies_directly_to(&peer));
        let none = Capabilities::default();
        assert!(
            !none.copies_directly_to(&none),
            "no domain is not one domain"
        );
    }
}
