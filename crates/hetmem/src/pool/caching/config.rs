//! [`CachingConfig`]: the limits of a caching allocator.

use crate::pool::SizeClasses;

/// Limits of a [`CachingAllocator`](super::CachingAllocator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachingConfig {
    /// How request sizes are rounded into classes; requests above `classes.max()` bypass the cache.
    pub classes: SizeClasses,
    /// Most bytes kept cached; beyond it the least recently released blocks go back to the device.
    pub max_cached_bytes: u64,
    /// Most cached blocks per size class in the shared bins.
    pub max_blocks_per_class: usize,
    /// Most blocks per size class each thread keeps for itself; 0 turns thread caches off.
    pub thread_cache_blocks: usize,
    /// Most bytes each thread keeps for itself; larger blocks always go to the shared bins.
    /// Thread caches count against `max_cached_bytes`.
    pub thread_cache_bytes: u64,
}

impl CachingConfig {
    /// Caches nothing: every allocation goes to the resource below and every block back to it
    /// (RMM's plain resource, PyTorch's `PYTORCH_NO_CUDA_MEMORY_CACHING`), with the counters
    /// of a caching allocator.
    pub fn unpooled() -> Self {
        CachingConfig {
            classes: SizeClasses::none(),
            max_cached_bytes: 0,
            max_blocks_per_class: 0,
            thread_cache_blocks: 0,
            thread_cache_bytes: 0,
        }
    }
}

impl Default for CachingConfig {
    fn default() -> Self {
        CachingConfig {
            classes: SizeClasses::default(),
            max_cached_bytes: 2 << 30,
            max_blocks_per_class: 64,
            thread_cache_blocks: 2,
            thread_cache_bytes: 64 << 20,
        }
    }
}
