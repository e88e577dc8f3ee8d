//! The one line logged for each request: what was asked, what was answered, for whom.
//!
//! Both kinds are logged at debug level, each under a target of its own, so the application
//! decides which it shows (see the crate documentation): [`REQUEST_TARGET`] for webhook
//! requests, [`PROBE_TARGET`] for health and metrics requests.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, StatusCode};

/// The target of a webhook request's line.
pub(crate) const REQUEST_TARGET: &str = "preservica_webhook_server::request";

/// The target of a health or metrics request's line.
pub(crate) const PROBE_TARGET: &str = "preservica_webhook_server::probe";

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

// One call site per target: a tracing event's target and level are fixed where it is written.
macro_rules! request_line {
    ($line:expr, $target:expr) => {
        tracing::event!(
            target: $target,
            tracing::Level::DEBUG,
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
    /// Logs a request to the webhook path, under [`REQUEST_TARGET`].
    pub(crate) fn webhook(&self) {
        request_line!(self, REQUEST_TARGET);
    }

    /// Logs a health or metrics request (a scraper's, every few seconds), under
    /// [`PROBE_TARGET`].
    pub(crate) fn probe(&self) {
        request_line!(self, PROBE_TARGET);
    }
}
