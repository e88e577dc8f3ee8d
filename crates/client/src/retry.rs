//! When and how long to wait before sending a request again.

use std::time::{Duration, SystemTime};

use preservica_webhook_core::Backoff;
use rand::Rng;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// How often and how patiently a failed request is sent again.
///
/// GET and DELETE are retried on 502, 503, 504 and on transport errors; POST only when the
/// connection was never made. The wait doubles from `base_delay` up to `max_delay`, with
/// jitter; a `Retry-After` header from the server is obeyed instead when it asks for no more
/// than [`RetryPolicy::MAX_RETRY_AFTER`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 switches retrying off).
    pub max_retries: u32,
    /// The wait before the first retry.
    pub base_delay: Duration,
    /// The longest wait between two attempts (without `Retry-After`).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 3 retries, 500 ms doubling to at most 10 s (pyPreservica also retries 3 times).
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The longest `Retry-After` the client waits for; a server asking for more gets the error
    /// passed back instead.
    pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

    /// No retries at all.
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// The backoff between attempts: from `base_delay` doubling up to `max_delay`.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            base: self.base_delay,
            max: self.max_delay,
        }
    }

    /// The wait before retry number `retry` (0-based): exponential, capped, with "equal
    /// jitter" (between half and all of the exponential delay), drawn from `rng`.
    pub(crate) fn jittered_delay(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        self.backoff().jittered(retry, rng.random::<f64>())
    }
}

/// Whether a status is worth another try for a request that may be repeated.
pub(crate) fn is_transient(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

/// The wait a `Retry-After` header asks for: delay-seconds or an HTTP date (relative to `now`).
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let policy = RetryPolicy {
            max_retries: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (retry, full) in [
            (0, 100),
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1000),
            (20, 1000),
        ] {
            for _ in 0..50 {
                let delay = policy.jittered_delay(retry, &mut rng);
                let full = Duration::from_millis(full);
                assert!(delay >= full / 2 && delay <= full, "{retry}: {delay:?}");
            }
        }
    }

    #[test]
    fn reads_retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let check = |value: &str, expected: Option<Duration>| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
            assert_eq!(retry_after(&headers, now), expected, "{value}");
        };
        check("3", Some(Duration::from_secs(3)));
        check(
            "Sun, 06 Nov 1994 08:49:47 GMT",
            Some(Duration::from_secs(10)),
        );
        check("Sun, 06 Nov 1994 08:49:27 GMT", Some(Duration::ZERO));
        check("soon", None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn only_gateway_statuses_are_transient() {
        for code in [502, 503, 504] {
            assert!(is_transient(StatusCode::from_u16(code).unwrap()));
        }
        for code in [200, 400, 401, 403, 404, 429, 500] {
            assert!(!is_transient(StatusCode::from_u16(code).unwrap()));
        }
    }
}
