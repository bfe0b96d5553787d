//! `ArrayPool<T>`: host arrays rented by element count and returned on drop.
//!
//! Arrays live in power-of-two buckets (64 to 16M elements by default, 8 arrays each). A rented
//! array's contents are whatever its last user left: every bit pattern is a valid `T`, and not
//! clearing is what makes renting cheaper than allocating.

use std::fmt;
use std::ops::{Deref, DerefMut};

use super::per_thread::{PerThread, ThreadCache, ThreadCacheLimits};
use crate::backend::{Lent, LentNode};
use crate::element::{byte_len, Element};
use crate::error::{Error, Result};
use crate::gauge::Budget;
use crate::sync::{lock, Mutex};

/// Limits of an [`ArrayPool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrayPoolConfig {
    /// Smallest bucket, in elements (a power of two).
    pub min_len: usize,
    /// Largest bucket, in elements (a power of two); longer requests are served unpooled.
    pub max_len: usize,
    /// Most arrays kept per bucket in the shared buckets. Each thread's cache keeps up to
    /// `thread_cache_arrays` more of its own, so a pool used by `t` threads keeps at most
    /// `arrays_per_bucket + t × thread_cache_arrays` arrays per bucket (`trim_fraction` brings it
    /// back to `arrays_per_bucket`).
    pub arrays_per_bucket: usize,
    /// Most arrays per bucket each thread keeps for itself, beyond the shared bucket's; 0 turns
    /// thread caches off.
    pub thread_cache_arrays: usize,
    /// Most bytes each thread keeps for itself; larger arrays go to the shared buckets.
    pub thread_cache_bytes: u64,
    /// Most bytes kept in the pool, thread caches included.
    pub max_retained_bytes: u64,
}

impl Default for ArrayPoolConfig {
    fn default() -> Self {
        ArrayPoolConfig {
            min_len: 64,
            max_len: 16 << 20,
            arrays_per_bucket: 8,
            thread_cache_arrays: 2,
            thread_cache_bytes: 16 << 20,
            max_retained_bytes: u64::MAX,
        }
    }
}

/// A snapshot of an [`ArrayPool`]'s counters.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ArrayPoolStats {
    /// Arrays handed out.
    pub rented: u64,
    /// Arrays given back (kept or dropped).
    pub returned: u64,
    /// Arrays allocated because no pooled one fitted (unpooled requests included).
    pub allocated: u64,
    /// Bytes held by pooled arrays waiting to be rented.
    pub bytes_retained: u64,
}

impl ArrayPoolStats {
    /// Fraction of rents served without allocating.
    pub fn reuse_rate(&self) -> f64 {
        if self.rented == 0 {
            0.0
        } else {
            1.0 - self.allocated as f64 / self.rented as f64
        }
    }
}

/// An array and what its rental asked for.
struct Rental<T> {
    array: Box<[T]>,
    /// Elements rented: the handle's length.
    len: usize,
    /// The bucket the array returns to; `None` past the largest bucket (never kept).
    bucket: Option<usize>,
}

/// An array in the node it is lent in, as the pool keeps it: one pointer to move.
type Node<T> = Box<LentNode<ArrayPool<T>, Rental<T>>>;

/// The arrays one bucket keeps, most recently returned last.
type Bucket<T> = Mutex<Vec<Node<T>>>;

/// One thread's cache and counters (summed by [`ArrayPool::stats`]).
struct ThreadSlot<T: Element> {
    cache: ThreadCache<Node<T>>,
    rented: u64,
    returned: u64,
    allocated: u64,
}

impl<T: Element> Default for ThreadSlot<T> {
    fn default() -> Self {
        ThreadSlot {
            cache: ThreadCache::default(),
            rented: 0,
            returned: 0,
            allocated: 0,
        }
    }
}

/// Host arrays of `T` by element count, in power-of-two buckets; rented contents are not cleared.
///
/// Like the caching allocator, each thread keeps a few arrays for itself in front of the shared
/// buckets, so renting and returning on one thread touches no shared memory.
pub struct ArrayPool<T: Element> {
    config: ArrayPoolConfig,
    min_len_log2: u32,
    buckets: Box<[Bucket<T>]>,
    threads: PerThread<ThreadSlot<T>>,
    /// Bytes in the shared buckets plus every thread cache's credit.
    retained: Budget,
}

impl<T: Element> ArrayPool<T> {
    /// A pool with the default buckets: 64 to 16M elements, 8 arrays each.
    pub fn new() -> Self {
        Self::with_config(ArrayPoolConfig::default()).expect("valid default")
    }

    /// A pool with the given limits.
    pub fn with_config(config: ArrayPoolConfig) -> Result<Self> {
        if !config.min_len.is_power_of_two()
            || !config.max_len.is_power_of_two()
            || config.max_len < config.min_len
        {
            return Err(Error::invalid(format!(
                "array pool buckets {}..={} must be powers of two in order",
                config.min_len, config.max_len
            )));
        }
        byte_len::<T>(config.max_len)?;
        let count =
            (config.max_len.trailing_zeros() - config.min_len.trailing_zeros() + 1) as usize;
        Ok(ArrayPool {
            config,
            min_len_log2: config.min_len.trailing_zeros(),
            buckets: (0..count).map(|_| Mutex::new(Vec::new())).collect(),
            threads: PerThread::new(),
            retained: Budget::new(config.max_retained_bytes),
        })
    }

    /// An array of `len` elements (capacity: its bucket's size), returned to the pool on drop.
    #[inline]
    pub fn rent(&self, len: usize) -> Result<Rented<'_, T>> {
        if len == 0 || len > self.config.max_len {
            return self.rent_unpooled(len);
        }
        let bucket = self.bucket(len);
        let local = self.threads.with(|t| {
            t.rented += 1;
            t.cache.take(bucket, |node| bytes_of(&node.item.array))
        });
        let mut node = match local {
            Some(node) => node,
            None => self.rent_past_thread_cache(bucket)?,
        };
        node.item.len = len;
        Ok(Rented(Lent::lend(self, node)))
    }

    /// Zero elements (refused), or more than the largest bucket: an array of its own.
    #[cold]
    #[inline(never)]
    fn rent_unpooled(&self, len: usize) -> Result<Rented<'_, T>> {
        if len == 0 {
            return Err(Error::ZeroLength { what: "array rent" });
        }
        byte_len::<T>(len)?;
        let array = zeroed(len)?;
        self.threads.with(|t| {
            t.rented += 1;
            t.allocated += 1;
        });
        let rental = Rental {
            array,
            len,
            bucket: None,
        };
        Ok(Rented(Lent::lend(self, LentNode::new(rental))))
    }

    /// An array of `bucket` from the shared bucket, or else a new one (the rent is counted).
    #[inline(never)]
    fn rent_past_thread_cache(&self, bucket: usize) -> Result<Node<T>> {
        let shared = lock(&self.buckets[bucket]).pop();
        if let Some(node) = shared {
            self.retained.sub(bytes_of(&node.item.array));
            return Ok(node);
        }
        let array = zeroed(self.config.min_len << bucket);
        if array.is_err() {
            self.threads.with(|t| t.rented -= 1);
        }
        let array = array?;
        self.threads.with(|t| t.allocated += 1);
        Ok(LentNode::new(Rental {
            array,
            len: 0,
            bucket: Some(bucket),
        }))
    }

    /// Empties the thread caches into the shared buckets, then drops `fraction` (0.0 to 1.0) of
    /// the arrays each bucket holds, for memory pressure. Returns the bytes freed.
    pub fn trim_fraction(&self, fraction: f64) -> u64 {
        self.flush_threads();
        let fraction = fraction.clamp(0.0, 1.0);
        let mut freed = 0;
        for bucket in self.buckets.iter() {
            let mut arrays = lock(bucket);
            let drop_count = ((arrays.len() as f64 * fraction).ceil() as usize).min(arrays.len());
            for node in arrays.drain(..drop_count) {
                freed += bytes_of(&node.item.array);
            }
        }
        self.retained.sub(freed);
        freed
    }

    /// Changes the retained-bytes limit, shrinking at once if the pool holds more.
    pub fn set_max_retained_bytes(&self, limit: u64) {
        self.retained.set_limit(limit);
        self.flush_threads();
        // Largest buckets first: they free the most per array.
        for bucket in self.buckets.iter().rev() {
            let mut arrays = lock(bucket);
            while self.retained.used() > limit {
                match arrays.pop() {
                    Some(node) => self.retained.sub(bytes_of(&node.item.array)),
                    None => break,
                }
            }
        }
    }

    /// The counters now: exact whenever no rent or return is in flight.
    pub fn stats(&self) -> ArrayPoolStats {
        let mut stats = ArrayPoolStats::default();
        let (mut credit, mut thread_bytes) = (0, 0);
        self.threads.for_each(|t| {
            stats.rented += t.rented;
            stats.returned += t.returned;
            stats.allocated += t.allocated;
            credit += t.cache.credit();
            thread_bytes += t.cache.bytes();
        });
        stats.bytes_retained = (self.retained.used() + thread_bytes).saturating_sub(credit);
        stats
    }

    fn bucket(&self, len: usize) -> usize {
        let len = len.max(self.config.min_len).next_power_of_two();
        (len.trailing_zeros() - self.min_len_log2) as usize
    }

    fn give_back(&self, node: Node<T>) {
        let limits = ThreadCacheLimits {
            items_per_class: self.config.thread_cache_arrays,
            bytes: self.config.thread_cache_bytes,
        };
        let bucket = node.item.bucket;
        let rejected = self.threads.with(|t| {
            t.returned += 1;
            let bucket = bucket?;
            let size = bytes_of(&node.item.array);
            t.cache.keep(node, bucket, size, limits, &self.retained)
        });
        if let (Some(node), Some(bucket)) = (rejected, bucket) {
            self.keep_shared(node, bucket);
        }
    }

    fn keep_shared(&self, node: Node<T>, bucket: usize) {
        let mut arrays = lock(&self.buckets[bucket]);
        let size = bytes_of(&node.item.array);
        if arrays.len() < self.config.arrays_per_bucket && self.retained.try_add(size) {
            arrays.push(node);
        }
    }

    /// Moves every thread cache's arrays into the shared buckets.
    fn flush_threads(&self) {
        let mut nodes = Vec::new();
        self.threads
            .for_each(|t| nodes.extend(t.cache.drain(&self.retained)));
        for (bucket, node) in nodes {
            self.keep_shared(node, bucket);
        }
    }
}

impl<T: Element> Default for ArrayPool<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Element> fmt::Debug for ArrayPool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrayPool")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

/// `len` zeroed elements, or `OutOfMemory` where the allocator cannot supply them (never the
/// abort or panic of `vec!`).
fn zeroed<T: Element>(len: usize) -> Result<Box<[T]>> {
    let mut array = Vec::new();
    array
        .try_reserve_exact(len)
        .map_err(|_| Error::OutOfMemory {
            backend: crate::backend::BackendKind::Host,
            requested: (len as u64).saturating_mul(std::mem::size_of::<T>() as u64),
            diagnosis: None,
        })?;
    array.resize(len, T::zeroed());
    Ok(array.into_boxed_slice())
}

fn bytes_of<T>(array: &[T]) -> u64 {
    std::mem::size_of_val(array) as u64
}

/// An array rented from an [`ArrayPool`]: derefs to `[T]` of the requested length.
///
/// One pointer, to the node that holds the array, its length and the pool's address: returned
/// in a `Result`, a handle of several words cost half a rent and return (see
/// `docs/ARCHITECTURE.md`, "Handles are one pointer").
pub struct Rented<'a, T: Element>(Lent<'a, ArrayPool<T>, Rental<T>>);

impl<T: Element> Rented<'_, T> {
    fn rental(&self) -> &Rental<T> {
        self.0.item().expect("present until drop")
    }

    /// Elements available without reallocating: the bucket size (or `len` when unpooled).
    pub fn capacity(&self) -> usize {
        self.rental().array.len()
    }
}

impl<T: Element> Deref for Rented<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        let rental = self.rental();
        &rental.array[..rental.len]
    }
}

impl<T: Element> DerefMut for Rented<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        let rental = self.0.item_mut().expect("present until drop");
        &mut rental.array[..rental.len]
    }
}

impl<T: Element> Drop for Rented<'_, T> {
    fn drop(&mut self) {
        if let Some((pool, node)) = self.0.take_back() {
            pool.give_back(node);
        }
    }
}

impl<T: Element + fmt::Debug> fmt::Debug for Rented<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rented")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bound per bucket, exactly: the shared bucket's plus this thread's cache; emptying
    /// the thread caches brings it to the shared bound (issue 18, item 11).
    #[test]
    fn arrays_kept_per_bucket_are_bounded_as_documented() {
        let pool = ArrayPool::<u8>::new();
        let config = ArrayPoolConfig::default();
        let rented: Vec<_> = (0..12).map(|_| pool.rent(64).unwrap()).collect();
        drop(rented);
        let kept = (config.arrays_per_bucket + config.thread_cache_arrays) as u64;
        assert_eq!(pool.stats().bytes_retained, kept * 64);
        pool.trim_fraction(0.0);
        assert_eq!(
            pool.stats().bytes_retained,
            config.arrays_per_bucket as u64 * 64
        );
    }

    /// A rented array is shared and sent across threads as a boxed slice would be.
    #[test]
    fn rented_arrays_are_send_and_sync() {
        fn check<X: Send + Sync>() {}
        check::<Rented<'static, f32>>();
        let pool = ArrayPool::<u32>::new();
        let mut a = pool.rent(100).unwrap();
        a.iter_mut().enumerate().for_each(|(i, x)| *x = i as u32);
        let sums: Vec<u32> = std::thread::scope(|s| {
            let a = &a;
            let halves = [
                s.spawn(|| a[..50].iter().sum()),
                s.spawn(|| a[50..].iter().sum()),
            ];
            halves.map(|h| h.join().unwrap()).to_vec()
        });
        assert_eq!(sums, vec![(0..50).sum::<u32>(), (50..100).sum::<u32>()]);
    }

    #[test]
    fn rent_rounds_to_buckets_and_reuses() {
        let pool = ArrayPool::<f32>::new();
        let mut a = pool.rent(100).unwrap();
        assert_eq!((a.len(), a.capacity()), (100, 128));
        assert!(a.iter().all(|&x| x == 0.0), "fresh arrays are zeroed");
        a[99] = 7.5;
        let ptr = a.as_ptr();
        drop(a);
        let b = pool.rent(128).unwrap();
        assert_eq!(b.as_ptr(), ptr, "same bucket, same array");
        assert_eq!(b[99], 7.5, "contents are not cleared");
        assert_eq!(pool.rent(1).unwrap().capacity(), 64);
        drop(b);
        let s = pool.stats();
        assert_eq!((s.rented, s.returned, s.allocated), (3, 3, 2));
        assert!((s.reuse_rate() - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(s.bytes_retained, (128 + 64) * 4);
    }

    #[test]
    fn bad_and_oversized_requests() {
        let pool = ArrayPool::<u64>::with_config(ArrayPoolConfig {
            max_len: 1024,
            ..Default::default()
        })
        .unwrap();
        assert!(matches!(pool.rent(0), Err(Error::ZeroLength { .. })));
        assert!(matches!(
            pool.rent(usize::MAX),
            Err(Error::SizeOverflow { .. })
        ));
        let big = pool.rent(1025).unwrap();
        assert_eq!(big.capacity(), 1025, "unpooled arrays are exact");
        drop(big);
        assert_eq!(
            pool.stats().bytes_retained,
            0,
            "unpooled arrays are not kept"
        );
        assert!(ArrayPool::<u8>::with_config(ArrayPoolConfig {
            min_len: 100,
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn bucket_bounds_shrink_and_byte_limit() {
        // The shared buckets alone: thread caches off.
        let pool = ArrayPool::<u8>::with_config(ArrayPoolConfig {
            arrays_per_bucket: 2,
            thread_cache_arrays: 0,
            ..Default::default()
        })
        .unwrap();
        let held: Vec<_> = (0..3).map(|_| pool.rent(4096).unwrap()).collect();
        drop(held);
        assert_eq!(
            pool.stats().bytes_retained,
            2 * 4096,
            "at most two per bucket"
        );
        assert_eq!(pool.trim_fraction(0.5), 4096);
        assert_eq!(pool.stats().bytes_retained, 4096);
        pool.set_max_retained_bytes(1000);
        assert_eq!(pool.stats().bytes_retained, 0);
        drop(pool.rent(4096).unwrap());
        assert_eq!(
            pool.stats().bytes_retained,
            0,
            "over the limit: dropped, not kept"
        );
        drop(pool.rent(512).unwrap());
        assert_eq!(pool.stats().bytes_retained, 512);
    }

    #[test]
    fn thread_caches_count_against_the_byte_limit() {
        let pool = ArrayPool::<u8>::with_config(ArrayPoolConfig {
            max_retained_bytes: 3 * 4096,
            ..Default::default()
        })
        .unwrap();
        let held: Vec<_> = (0..5).map(|_| pool.rent(4096).unwrap()).collect();
        drop(held);
        // Two in this thread's cache, one in the shared bucket; the limit covers both.
        assert_eq!(pool.stats().bytes_retained, 3 * 4096);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut a = pool.rent(4096).unwrap();
                a[0] = 1;
                assert_eq!(pool.stats().allocated, 5, "the shared array was reused");
            });
        });
        assert_eq!(pool.stats().bytes_retained, 3 * 4096);
        assert_eq!(
            pool.trim_fraction(1.0),
            3 * 4096,
            "trim_fraction empties every thread's cache"
        );
        let s = pool.stats();
        assert_eq!((s.rented, s.returned, s.bytes_retained), (6, 6, 0));
    }
}
