//! Size classes: how requested sizes are rounded so that released blocks can serve later requests.

use crate::error::{Error, Result};

/// A size-class policy: `per_doubling` evenly spaced classes between consecutive powers of two,
/// from `min` up to `max` bytes. Requests above `max` are not pooled.
///
/// The default, 4 classes per doubling, wastes at most 20% of a block (mean ≈ 8.5% for
/// log-uniform sizes); [`SizeClasses::power_of_two`] wastes up to 50% (mean ≈ 28%).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeClasses {
    min_log2: u32,
    max: usize,
    per_doubling_log2: u32,
}

/// Largest supported class bound: keeps every class computation far from overflow.
const MAX_BOUND: usize = 1 << 48;

impl SizeClasses {
    /// `per_doubling` classes per power of two (a power of two, 1 to 64), from `min` bytes (a
    /// power of two, at least `per_doubling`) to `max` bytes (at most 2^48).
    pub fn new(per_doubling: usize, min: usize, max: usize) -> Result<Self> {
        if !per_doubling.is_power_of_two() || per_doubling > 64 {
            return Err(Error::invalid(format!(
                "classes per doubling must be a power of two from 1 to 64, got {per_doubling}"
            )));
        }
        if !min.is_power_of_two() || min < per_doubling {
            return Err(Error::invalid(format!(
                "minimum class {min} must be a power of two and at least {per_doubling}"
            )));
        }
        if max < min || max > MAX_BOUND {
            return Err(Error::invalid(format!(
                "maximum class {max} must lie between {min} and 2^48"
            )));
        }
        Ok(SizeClasses {
            min_log2: min.trailing_zeros(),
            max,
            per_doubling_log2: per_doubling.trailing_zeros(),
        })
    }

    /// No classes: nothing is pooled (every request is served by the resource below and
    /// returned to it). What an unpooled allocator uses.
    pub fn none() -> Self {
        SizeClasses {
            min_log2: 0,
            max: 0,
            per_doubling_log2: 0,
        }
    }

    /// The classic scheme: one class per power of two, 512 B to 1 TiB.
    pub fn power_of_two() -> Self {
        Self::new(1, 512, 1 << 40).expect("valid constants")
    }

    /// These classes, pooling nothing above `max` bytes (nor below the smallest class's size).
    pub fn up_to(self, max: usize) -> Self {
        SizeClasses {
            max: self.max.min(max).max(self.min()),
            ..self
        }
    }

    /// Smallest class.
    pub fn min(&self) -> usize {
        1 << self.min_log2
    }

    /// Largest pooled request.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Classes per power of two.
    pub fn per_doubling(&self) -> usize {
        1 << self.per_doubling_log2
    }

    /// The class index serving `bytes`, or `None` if `bytes` is zero or above `max`.
    pub fn index(&self, bytes: usize) -> Option<usize> {
        self.class(bytes).map(|(index, _)| index)
    }

    /// The size in bytes of class `index`, or `None` past [`SizeClasses::count`].
    pub fn size(&self, index: usize) -> Option<usize> {
        (index < self.count()).then(|| self.size_of(index))
    }

    /// The class index serving `bytes` and its size, or `None` if `bytes` is not pooled.
    #[inline]
    pub fn class(&self, bytes: usize) -> Option<(usize, usize)> {
        if bytes == 0 || bytes > self.max {
            return None;
        }
        if bytes <= self.min() {
            return Some((0, self.min()));
        }
        // bytes lies in (2^k, 2^(k+1)]; that octave holds `n` classes spaced 2^k / n apart, so
        // its class is `bytes` rounded up to a whole number of steps: `steps` in (n, 2n].
        let k = usize::BITS - 1 - (bytes - 1).leading_zeros();
        let step_log2 = k - self.per_doubling_log2;
        let steps = ((bytes - 1) >> step_log2) + 1;
        let j = steps - (1 << self.per_doubling_log2); // 1..=n
        let index = (((k - self.min_log2) as usize) << self.per_doubling_log2) + j;
        Some((index, steps << step_log2))
    }

    /// The size of class `index`, which must be below `count()`.
    fn size_of(&self, index: usize) -> usize {
        if index == 0 {
            return self.min();
        }
        let n_log2 = self.per_doubling_log2;
        let k = self.min_log2 + ((index - 1) >> n_log2) as u32;
        let j = ((index - 1) & ((1 << n_log2) - 1)) + 1;
        (1usize << k) + (j << (k - n_log2))
    }

    /// `bytes` rounded up to its class, or `None` if it is not pooled.
    pub fn round_up(&self, bytes: usize) -> Option<usize> {
        self.class(bytes).map(|(_, size)| size)
    }

    /// Number of classes (indices `0..count()`).
    pub fn count(&self) -> usize {
        self.index(self.max).map_or(0, |i| i + 1)
    }
}

impl Default for SizeClasses {
    /// 4 classes per doubling, 512 B to 1 TiB.
    fn default() -> Self {
        Self::new(4, 512, 1 << 40).expect("valid constants")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_classes_are_quarter_octaves() {
        let c = SizeClasses::default();
        let sizes: Vec<usize> = (0..9).map(|i| c.size(i).unwrap()).collect();
        assert_eq!(sizes, [512, 640, 768, 896, 1024, 1280, 1536, 1792, 2048]);
        assert_eq!(c.round_up(1), Some(512));
        assert_eq!(c.round_up(513), Some(640));
        assert_eq!(c.round_up(1024), Some(1024));
        assert_eq!(c.round_up(1025), Some(1280));
        assert_eq!(c.round_up(0), None);
        assert_eq!(c.round_up((1 << 40) + 1), None);
        assert_eq!(c.round_up(usize::MAX), None);
    }

    #[test]
    fn power_of_two_classes_double() {
        let c = SizeClasses::power_of_two();
        assert_eq!(c.round_up(513), Some(1024));
        assert_eq!(c.round_up(1 << 20), Some(1 << 20));
        assert_eq!(c.round_up((1 << 20) + 1), Some(2 << 20));
        assert_eq!(c.count(), 32);
    }

    #[test]
    fn bad_policies_are_errors() {
        assert!(SizeClasses::new(3, 512, 4096).is_err());
        assert!(SizeClasses::new(4, 500, 4096).is_err());
        assert!(SizeClasses::new(4, 2, 4096).is_err());
        assert!(SizeClasses::new(4, 512, 256).is_err());
        assert!(SizeClasses::new(4, 512, usize::MAX).is_err());
    }

    proptest! {
        #[test]
        fn rounding_is_tight_and_monotone(bytes in 1usize..(1 << 40), per in 0u32..4) {
            let c = SizeClasses::new(1 << per, 512, 1 << 40).unwrap();
            let i = c.index(bytes).unwrap();
            let size = c.size(i).unwrap();
            prop_assert!(size >= bytes);
            // The class below is too small: rounding picks the smallest class that fits.
            if i > 0 { prop_assert!(c.size(i - 1).unwrap() < bytes); }
            // Waste bound: below 1/(n+1) of the block above the minimum class.
            if bytes > 512 {
                let n = 1usize << per;
                prop_assert!((size - bytes) * (n + 1) <= size, "{bytes} -> {size}");
            }
            prop_assert!(i < c.count());
        }
    }
}
