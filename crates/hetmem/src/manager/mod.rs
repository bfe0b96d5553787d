//! The façade users start from: [`MemoryManager`] makes [`UnifiedBuffer`]s from its pools,
//! places them by one decision table ([`decide`]), keeps them under a memory limit, and explains
//! where memory and time went ([`MemoryStats`], [`MemoryManager::summary`],
//! [`MemoryManager::outstanding`], [`MemoryManager::recommendations`]).
//!
//! ```
//! use hetmem::manager::{AllocOptions, MemoryManager, Placement};
//!
//! let manager = MemoryManager::host();
//! let mut weights = manager.alloc_with::<f32>(1024, AllocOptions::new().label("weights"))?;
//! weights.host_mut()?.fill(0.5);
//! assert_eq!(weights.to_vec()?[1023], 0.5);
//! let stats = manager.stats();
//! assert_eq!((stats.live_buffers(), stats.bytes_current), (1, 4096));
//! drop(weights);
//! assert_eq!(manager.stats().bytes_current, 0);
//! # Ok::<(), hetmem::Error>(())
//! ```
//!
//! [`UnifiedBuffer`]: crate::UnifiedBuffer

mod builder;
mod maintainer;
mod memory_manager;
#[cfg(feature = "metrics")]
mod metrics;
mod options;
mod parking;
mod placement;
mod recommend;
mod registry;
mod snapshot;
mod stats;

pub use builder::MemoryManagerBuilder;
pub use maintainer::Maintainer;
pub use memory_manager::MemoryManager;
pub use options::{AccessPattern, AllocMode, AllocOptions, Placement};
pub use parking::{ParkedStats, PARKED_PER_THREAD};
pub use placement::{decide, Decision, LARGE_SEQUENTIAL};
pub use recommend::{
    recommend, Advice, Recommendation, MANY_TRANSFERS, ROUND_TRIPS, SMALL_TRANSFER,
};
pub use registry::{Outstanding, Tracking, Usage};
pub use snapshot::{BufferSnapshot, MemorySnapshot};
pub use stats::{bytes, MemoryStats, StatsDelta, StatsScope};
