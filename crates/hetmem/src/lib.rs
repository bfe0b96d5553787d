//! # hetmem — memory for heterogeneous compute
//!
//! Pooled allocation of device and host memory, unified buffers that keep a host and a device copy
//! coherent, a fast transfer engine, and statistics that explain where memory and time go.
//!
//! Start from a [`MemoryManager`]: it makes [`UnifiedBuffer`]s from its pools, places them
//! ([`Placement`], [`AllocOptions`]), keeps them under a memory limit and reports where memory
//! and time went ([`MemoryManager::stats`], [`MemoryManager::summary`]). Those, [`Error`] and
//! [`backends()`] are the crate root; everything else is one module down:
//!
//! | module | what |
//! | --- | --- |
//! | [`backend`] | the byte-level [`Backend`](backend::Backend) seam: host, OpenCL, CUDA |
//! | [`resource`] | memory resources that compose: plain, limiting, statistics, failure callback, tracking |
//! | [`pool`] | the caching allocator (a resource), host array pool, object pool |
//! | [`buffer`] | unified buffers, their contexts and guards |
//! | [`transfer`] | the transfer engine, scheduler and plans |
//! | [`manager`] | the manager's options, placement table, statistics and advice |
//!
//! Everything reaches hardware through [`backend::Backend`], implemented by
//! [`HostBackend`](backend::HostBackend) (always available), `OpenClBackend` (feature `opencl`)
//! and `CudaBackend` (feature `cuda`; both load their driver at run time).
//! [`backends()`] lists what this machine has.
//!
//! ```
//! use hetmem::backend::{Backend, HostBackend};
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
pub mod host;
pub mod manager;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod pool;
pub mod record;
pub mod resource;
mod sync;
mod trace;
pub mod transfer;

pub use backend::backends;
pub use buffer::UnifiedBuffer;
pub use error::{Error, Result};
pub use manager::{AllocOptions, MemoryManager, Placement};
