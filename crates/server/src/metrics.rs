//! Prometheus metrics: what came in, what was refused, what the handler did.
//!
//! The counters live here; whoever serves them owns the registry they are registered in (the
//! ready server its own, an embedder theirs), so the crate has no registry of its own.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::inbox::StateCounts;

type Reason = [(&'static str, &'static str); 1];

/// The receiver's metrics, registered under the `preservica_webhook_` prefix.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) accepted: Counter,
    pub(crate) duplicates: Counter,
    pub(crate) undecodable: Counter,
    rejected: Family<Reason, Counter>,
    pub(crate) challenges_answered: Counter,
    pub(crate) challenges_refused: Counter,
    pub(crate) handler_successes: Counter,
    pub(crate) handler_failures: Counter,
    pub(crate) handler_retries: Counter,
    pub(crate) dead_lettered: Counter,
    pub(crate) inbox_commits: Counter,
    inbox_depth: Gauge,
    dead_letters: Gauge,
    request_seconds: Histogram,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        Metrics {
            accepted: Counter::default(),
            duplicates: Counter::default(),
            undecodable: Counter::default(),
            rejected: Family::default(),
            challenges_answered: Counter::default(),
            challenges_refused: Counter::default(),
            handler_successes: Counter::default(),
            handler_failures: Counter::default(),
            handler_retries: Counter::default(),
            dead_lettered: Counter::default(),
            inbox_commits: Counter::default(),
            inbox_depth: Gauge::default(),
            dead_letters: Gauge::default(),
            request_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 16)),
        }
    }

    /// Registers every metric in `registry`, under the `preservica_webhook` prefix (added to
    /// the registry's own prefix, if it has one).
    pub(crate) fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("preservica_webhook");
        let metrics = self;
        let counters = [
            (
                "deliveries_accepted",
                "Verified deliveries stored in the inbox for the first time",
                &metrics.accepted,
            ),
            (
                "deliveries_duplicate",
                "Verified deliveries already in the inbox (answered 200, not processed again)",
                &metrics.duplicates,
            ),
            (
                "deliveries_undecodable",
                "Authentic deliveries that are not valid JSON (stored, not processed)",
                &metrics.undecodable,
            ),
            (
                "challenges_answered",
                "Handshake challenges answered",
                &metrics.challenges_answered,
            ),
            (
                "challenges_refused",
                "Handshake challenges refused (oracle, empty, too long, malformed codes)",
                &metrics.challenges_refused,
            ),
            (
                "handler_successes",
                "Handler calls that succeeded",
                &metrics.handler_successes,
            ),
            (
                "handler_failures",
                "Handler calls that failed (error, panic or timeout)",
                &metrics.handler_failures,
            ),
            (
                "handler_retries",
                "Failed handler calls scheduled for another attempt",
                &metrics.handler_retries,
            ),
            (
                "deliveries_dead_lettered",
                "Deliveries that became dead letters",
                &metrics.dead_lettered,
            ),
            (
                "inbox_commits",
                "Inbox transactions committed, each one disk sync (deliveries share them)",
                &metrics.inbox_commits,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "requests_rejected",
            "Requests refused, by reason",
            metrics.rejected.clone(),
        );
        registry.register(
            "inbox_depth",
            "Deliveries waiting for the handler",
            metrics.inbox_depth.clone(),
        );
        registry.register(
            "dead_letters",
            "Dead letters in the inbox",
            metrics.dead_letters.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to response, in seconds",
            metrics.request_seconds.clone(),
        );
    }

    /// Counts a refused request.
    pub(crate) fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&[("reason", reason)]).inc();
    }

    /// Records how long a request took.
    pub(crate) fn observe_latency(&self, seconds: f64) {
        self.request_seconds.observe(seconds);
    }

    /// Sets the inbox gauges from what the store counts.
    pub(crate) fn set_counts(&self, counts: StateCounts) {
        self.inbox_depth
            .set(i64::try_from(counts.pending).unwrap_or(i64::MAX));
        self.dead_letters
            .set(i64::try_from(counts.dead).unwrap_or(i64::MAX));
    }
}

/// The OpenMetrics text exposition of `registry`.
pub(crate) fn encode_text(registry: &Registry) -> String {
    let mut text = String::with_capacity(4096);
    // Writing to a String cannot fail.
    let _ = encode(&mut text, registry);
    text
}
