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
    /// Longest wait (at most [`RetryPolicy::MAX_DELAY`]).
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
    /// The longest wait a policy may ask for between attempts: longer is a configuration
    /// mistake, refused when the policy is validated.
    pub const MAX_DELAY: Duration = Duration::from_secs(3600);

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
        // A policy that skipped validation still never panics here: out of range saturates.
        Duration::try_from_secs_f64(capped * (1.0 - jitter * fastrand::f64()))
            .unwrap_or(self.max_delay)
    }

    /// Checks the policy; the transfer engine refuses an invalid one at construction.
    pub(crate) fn validate(&self) -> crate::Result<()> {
        let finite = self.multiplier.is_finite() && self.jitter.is_finite();
        if self.max_attempts == 0
            || !finite
            || self.multiplier < 1.0
            || !(0.0..=1.0).contains(&self.jitter)
            || self.max_delay > Self::MAX_DELAY
            || self.base_delay > self.max_delay
        {
            return Err(crate::Error::invalid(format!(
                "retry policy needs max_attempts ≥ 1, multiplier ≥ 1, jitter in 0..=1 and \
                 base_delay ≤ max_delay ≤ {:?}: {self:?}",
                Self::MAX_DELAY
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extreme_delays_are_refused_and_never_panic() {
        let extreme = RetryPolicy {
            max_delay: Duration::MAX,
            base_delay: Duration::MAX,
            multiplier: 1e300,
            ..RetryPolicy::default()
        };
        assert!(extreme.validate().is_err());
        // Even unvalidated, a delay saturates instead of panicking.
        assert!(extreme.delay(1000) > RetryPolicy::MAX_DELAY);
        let backwards = RetryPolicy {
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        assert!(backwards.validate().is_err());
        assert!(RetryPolicy::default().validate().is_ok());
    }

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
