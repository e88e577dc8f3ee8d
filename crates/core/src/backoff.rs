//! How long to wait before trying again: exponential backoff with "equal jitter", as pure
//! arithmetic. The caller draws the randomness and passes it in, so the same numbers come out
//! for the same inputs and tests need no random source.
//!
//! ```
//! use std::time::Duration;
//! use preservica_webhook_core::Backoff;
//!
//! let backoff = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(1) };
//! assert_eq!(backoff.delay(0), Duration::from_millis(100));
//! assert_eq!(backoff.delay(3), Duration::from_millis(800));
//! assert_eq!(backoff.delay(4), Duration::from_secs(1));
//! // Equal jitter: half of the delay, plus up to the other half.
//! assert_eq!(backoff.jittered(3, 0.0), Duration::from_millis(400));
//! assert_eq!(backoff.jittered(3, 0.5), Duration::from_millis(600));
//! ```

use std::time::Duration;

/// Exponential backoff: the wait doubles from `base` after each retry, up to `max`.
///
/// The users of this type count their attempts their own way (the client counts retries, the
/// server's workers count failed calls); both ask it for the wait before retry number `retry`,
/// counted from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait before the first retry.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Backoff {
    /// The wait before retry number `retry` (0 is the first): `base · 2^retry`, at most `max`.
    pub fn delay(&self, retry: u32) -> Duration {
        2u32.checked_pow(retry)
            .and_then(|factor| self.base.checked_mul(factor))
            .map_or(self.max, |delay| delay.min(self.max))
    }

    /// [`Backoff::delay`] with equal jitter: half of it plus `unit` times the other half, so
    /// the wait lies between half of the delay and all of it.
    ///
    /// `unit` is the caller's random draw, uniform in `[0, 1]`; values outside are clamped and
    /// NaN counts as 0, so any `f64` gives a wait within the bounds.
    pub fn jittered(&self, retry: u32, unit: f64) -> Duration {
        let full = self.delay(retry);
        let half = full / 2;
        let unit = if unit.is_nan() {
            0.0
        } else {
            unit.clamp(0.0, 1.0)
        };
        let spread = (full - half).as_nanos();
        // A float's precision is plenty for a share of a wait; `as` saturates, and `min` keeps
        // rounding from reaching past the spread.
        let extra = ((spread as f64 * unit) as u128).min(spread);
        half + nanos(extra)
    }
}

/// A duration of `nanos` nanoseconds (at most the spread of a `Duration`, so it fits).
fn nanos(nanos: u128) -> Duration {
    const PER_SECOND: u128 = 1_000_000_000;
    let seconds = u64::try_from(nanos / PER_SECOND).unwrap_or(u64::MAX);
    let rest = u32::try_from(nanos % PER_SECOND).unwrap_or(0);
    Duration::new(seconds, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(base_ms: u64, max_ms: u64) -> Backoff {
        Backoff {
            base: Duration::from_millis(base_ms),
            max: Duration::from_millis(max_ms),
        }
    }

    #[test]
    fn delay_doubles_up_to_the_cap() {
        let backoff = policy(100, 1000);
        let delays: Vec<u128> = (0..=5).map(|n| backoff.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        for retry in [31, 32, 64, u32::MAX] {
            assert_eq!(backoff.delay(retry), Duration::from_secs(1), "{retry}");
        }
        let huge = Backoff {
            base: Duration::from_secs(u64::MAX / 2),
            max: Duration::MAX,
        };
        assert_eq!(huge.delay(1), Duration::from_secs(u64::MAX - 1));
        assert_eq!(huge.delay(2), Duration::MAX);
        assert_eq!(policy(0, 1000).delay(10), Duration::ZERO);
    }

    #[test]
    fn jitter_takes_half_plus_a_share_of_the_other_half() {
        let backoff = policy(100, 1000);
        let check = |retry: u32, unit: f64, expected_ms: u64| {
            assert_eq!(
                backoff.jittered(retry, unit),
                Duration::from_millis(expected_ms),
                "{retry} {unit}"
            );
        };
        check(0, 0.0, 50);
        check(0, 1.0, 100);
        check(2, 0.5, 300);
        check(9, 0.25, 625);
        check(3, -3.0, 400);
        check(3, 7.0, 800);
        check(3, f64::NAN, 400);
        check(3, f64::INFINITY, 800);
        for retry in 0..40 {
            for step in 0..=20 {
                let unit = f64::from(step) / 20.0;
                let wait = backoff.jittered(retry, unit);
                let full = backoff.delay(retry);
                assert!(wait >= full / 2 && wait <= full, "{retry} {unit}: {wait:?}");
            }
        }
        let widest = Backoff {
            base: Duration::MAX,
            max: Duration::MAX,
        };
        assert_eq!(widest.jittered(0, 1.0), Duration::MAX);
        assert!(widest.jittered(0, 0.0) >= Duration::MAX / 2);
    }
}
