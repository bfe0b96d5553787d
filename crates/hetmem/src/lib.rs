//! # hetmem — memory for heterogeneous compute
//!
//! Pooled allocation of device and host memory, unified buffers that keep a host and a device copy
//! coherent, a fast transfer engine, and statistics that explain where memory and time go.
//!
//! Start from a [`MemoryManager`]: it makes [`UnifiedBuffer`]s from its pools, places them
//! ([`Placement`]), keeps them under a memory limit and reports where memory and time went
//! ([`MemoryStats`], [`MemoryManager::summary`]).
//!
//! Everything reaches hardware through one seam, the byte-level [`Backend`] trait, implemented by
//! [`HostBackend`] (always available), `OpenClBackend` (feature `opencl`) and `CudaBackend`
//! (feature `cuda`; both load their driver at run time).
//! [`backends()`] lists what this machine has.
//!
//! ```
//! use hetmem::{Backend, HostBackend};
//!
//! let backend = HostBackend::new();
//! let queue = backend.default_queue().clone();
//! let mut block = backend.allocate(1024)?;
//! backend.write(&queue, &mut block, 16, b"hello device")?;
//! let mut back = [0u8; 12];
//! backend.read(&queue, &block, 16, &mut back)?;
//! assert_eq!(&back, b"hello device");
//! backend.release(block)?;
//! # Ok::<(), hetmem::Error>(())
//! ```

pub mod backend;
pub mod buffer;
pub mod element;
pub mod error;
mod gauge;
pub mod manager;
pub mod pool;
pub mod resource;
mod sync;
mod trace;
pub mod transfer;

#[cfg(feature = "cuda")]
pub use backend::CudaBackend;
#[cfg(feature = "opencl")]
pub use backend::OpenClBackend;
pub use backend::{
    backends, probe, Backend, BackendId, BackendKind, BackendProbe, BackendUsage, Capabilities,
    DeviceBlock, DeviceInfo, Event, EventStatus, HostBackend, Queue, StagingBuffer, UserEvent,
};
pub use buffer::{BufferContext, Residency, UnifiedBuffer};
pub use element::{byte_len, Element};
pub use error::{BackendError, Error, Result};
pub use manager::{AccessPattern, AllocOptions, MemoryManager, MemoryStats, Placement};
pub use pool::{CachingAllocator, PooledBlock, SizeClasses};
pub use transfer::TransferHandle;
