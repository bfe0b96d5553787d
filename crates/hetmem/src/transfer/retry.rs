//! [`RetryPolicy`]: how often and how patiently a transient failure is retried.

use std::time::Duration;

/// Exponential backoff with jitter, for errors that `Error::is_retryable()` calls transient.
/// Permanent errors are never retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: never retry).
    pub max_attempts: u32,
    /// Wait before the first retry.
    pub base_delay: Duration,
    /// Factor each further wait grows by.
    pub multiplier: f64,
    /// Longest wait.
    pub max_delay: Duration,
    /// Fraction of each wait drawn at random (0: none, 0.5: between 50% and 100%), so that
    /// threads failing together do not retry together.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// Three attempts, 1 ms then 2 ms (±25%), at most 100 ms.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            multiplier: 2.0,
            max_delay: Duration::from_millis(100),
            jitter: 0.25,
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn never() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The wait after failed attempt `attempt` (1 for the first).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let full = self.base_delay.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        let capped = full.min(self.max_delay.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        Duration::from_secs_f64(capped * (1.0 - jitter * fastrand::f64()))
    }

    pub(crate) fn validate(&self) -> crate::Result<()> {
        let finite = self.multiplier.is_finite() && self.jitter.is_finite();
        if self.max_attempts == 0
            || !finite
            || self.multiplier < 1.0
            || !(0.0..=1.0).contains(&self.jitter)
        {
            return Err(crate::Error::invalid(format!(
                "retry policy needs max_attempts ≥ 1, multiplier ≥ 1 and jitter in 0..=1: {self:?}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_are_capped() {
        let p = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        assert_eq!(p.delay(1), Duration::from_millis(1));
        assert_eq!(p.delay(3), Duration::from_millis(4));
        assert_eq!(p.delay(40), Duration::from_millis(100));
        let j = RetryPolicy::default();
        let d = j.delay(2);
        assert!(
            d <= Duration::from_millis(2) && d >= Duration::from_micros(1500),
            "{d:?}"
        );
        assert!(RetryPolicy {
            max_attempts: 0,
            ..j
        }
        .validate()
        .is_err());
        assert!(RetryPolicy { jitter: 2.0, ..j }.validate().is_err());
        assert!(j.validate().is_ok());
    }
}
