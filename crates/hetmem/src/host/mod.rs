//! Host memory sources: memory made as the caller says — aligned beyond a cache line, on
//! transparent or explicit huge pages, bound to a NUMA node, locked in RAM — with what the system
//! actually granted reported, and the facts of the machine ([`host_system`]) that decide it.
//!
//! A [`HostSource`] describes the memory; [`HostRegion::allocate`] makes one allocation of it;
//! [`HostBackend::with_source`](crate::backend::HostBackend::with_source) makes every block of a
//! host backend that way, so pools, buffers and the manager
//! ([`MemoryManagerBuilder::host_source`](crate::manager::MemoryManagerBuilder::host_source)) use
//! it unchanged. Where huge pages are asked for and the system has none reserved, the memory
//! falls back (explicit → transparent → base pages) and [`Granted::fallback`] says why.
//!
//! Memory hetmem did not allocate becomes a buffer's host copy, zero-copy, through
//! [`HostMemory`]: a named [`SharedSegment`] another process can open, a [`MappedFile`], or
//! [`ExternalHost`] memory of the caller's
//! ([`BufferContext::adopt_host`](crate::buffer::BufferContext::adopt_host),
//! [`MemoryManager::adopt_host`](crate::MemoryManager::adopt_host)).

mod external;
mod file;
mod memory;
#[cfg(feature = "mpi")]
mod mpi_buffers;
mod pinned;
mod region;
mod reservation;
mod shared;
mod source;
mod system;

pub use external::ExternalHost;
pub use file::{FileAccess, MappedFile};
pub use memory::HostMemory;
#[cfg(feature = "mpi")]
pub(crate) use mpi_buffers::{BroadcastSource, DeviceMemory};
pub use pinned::PinnedHost;
pub use region::HostRegion;
pub(crate) use reservation::{AddressReservation, COMMIT_GRANULE};
pub use shared::{SharedSegment, MAX_NAME};
pub use source::{Granted, HostSource, Numa, Pages, SourceStats, HUGE_PAGE};
pub use system::{anon_huge_bytes, host_system, page_nodes, HostSystem};
pub(crate) use system::{coarse_nanos, Stopwatch};
