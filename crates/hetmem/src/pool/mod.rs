//! Pooled allocation above a backend: size classes, a caching device allocator, a splitting
//! allocator for large blocks, a host array pool and an object pool.

mod array_pool;
mod caching;
mod object_pool;
mod per_thread;
mod pinned;
mod size_classes;
mod splitting;

pub use array_pool::{ArrayPool, ArrayPoolConfig, ArrayPoolStats, Rented};
pub use caching::{
    CachingAllocator, CachingConfig, CachingStats, Headroom, MaintenancePolicy, MaintenanceReport,
    OomDiagnosis, PooledBlock,
};
pub use object_pool::{ObjectPool, ObjectPoolBuilder, ObjectPoolStats, Pooled};
pub use pinned::{PinnedBuffer, PinnedConfig, PinnedPool, PinnedStats};
pub use size_classes::SizeClasses;
pub use splitting::{
    RangeSnapshot, SegmentSnapshot, SplittingConfig, SplittingResource, SplittingStats,
};
