//! The one line logged for each request: what was asked, what was answered, for whom.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, StatusCode};

/// What a request line says.
#[derive(Debug)]
pub(crate) struct RequestLine<'a> {
    pub(crate) method: &'a Method,
    pub(crate) path: &'a str,
    pub(crate) status: StatusCode,
    /// What became of the request: `accepted`, `duplicate`, a refusal's reason, `health`, ….
    pub(crate) outcome: &'static str,
    pub(crate) remote: Option<SocketAddr>,
    pub(crate) latency: Duration,
}

// One call site per level and target: a tracing event's are fixed where it is written.
macro_rules! request_line {
    ($line:expr, $level:expr) => {
        tracing::event!(
            $level,
            method = %$line.method,
            path = $line.path,
            status = $line.status.as_u16(),
            outcome = $line.outcome,
            remote = $line.remote.map(tracing::field::display),
            latency_us = u64::try_from($line.latency.as_micros()).unwrap_or(u64::MAX),
            "request"
        )
    };
}

impl RequestLine<'_> {
    /// Logs a request to the webhook path, at info level.
    pub(crate) fn webhook(&self) {
        request_line!(self, tracing::Level::INFO);
    }

    /// Logs a health or metrics request (a scraper's, every few seconds), at debug level.
    pub(crate) fn probe(&self) {
        request_line!(self, tracing::Level::DEBUG);
    }
}
