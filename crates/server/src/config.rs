//! What a server is told: the listener's settings, and inside them the receiver's (path,
//! secrets, limits, inbox, retries).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use preservica_webhook_core::{Backoff, Secret};

use crate::store::Store;

/// How the ready [`Server`](crate::Server) runs: its listener and connections, and the
/// [`WebhookConfig`] of the receiver behind it.
///
/// Build one with [`ServerConfig::new`] and change the fields that matter:
///
/// ```
/// use std::time::Duration;
/// use preservica_webhook_core::Secret;
/// use preservica_webhook_server::ServerConfig;
///
/// let mut config = ServerConfig::new(vec![Secret::new("my_shared_secret").unwrap()]);
/// config.addr = "0.0.0.0:8443".parse().unwrap();
/// config.webhook.path = "/hooks/preservica".to_owned();
/// config.webhook.workers = 8;
/// config.webhook.handler_timeout = Duration::from_secs(120);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Where to listen; default `127.0.0.1:8000`.
    pub addr: SocketAddr,
    /// PEM certificate chain and key for HTTPS; `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
    /// How long a client may take to send a request's headers (and a TLS handshake); idle
    /// keep-alive connections are closed after it too; default 10 s.
    pub header_timeout: Duration,
    /// How many connections are served at once; default 1024. Further clients wait in the
    /// listen queue.
    pub max_connections: usize,
    /// The liveness path, answered `ok` by the server itself; default `Some("/healthz")`,
    /// `None` to turn it off.
    pub health_path: Option<String>,
    /// The Prometheus metrics path; default `Some("/metrics")`, `None` to turn it off. (A
    /// [`Webhook`](crate::Webhook) mounted elsewhere registers its metrics in a registry of
    /// yours: see [`Webhook::start_with_registry`](crate::Webhook::start_with_registry).)
    pub metrics_path: Option<String>,
    /// The receiver behind the listener: every other path's requests go to it.
    pub webhook: WebhookConfig,
}

/// How the receiver runs — a [`Webhook`](crate::Webhook) of your own or the one inside the
/// ready [`Server`](crate::Server): path, secrets, limits, inbox, workers, retries.
///
/// ```
/// use preservica_webhook_core::Secret;
/// use preservica_webhook_server::{InboxConfig, WebhookConfig};
///
/// let mut config = WebhookConfig::new(vec![Secret::new("my_shared_secret").unwrap()]);
/// config.path = "/hooks/preservica".to_owned();
/// config.inbox = InboxConfig::InMemory;
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WebhookConfig {
    /// The webhook path; default `/`.
    pub path: String,
    /// The shared secrets: a delivery signed with any of them is accepted, challenges are
    /// answered with the first. At least one is required.
    pub secrets: Vec<Secret>,
    /// The largest body accepted, in bytes; default 1 MiB. Larger bodies get 413.
    ///
    /// It also bounds the lingering close of the ready [`Server`](crate::Server): after an
    /// answer given before the body was read (a refusal from the head, 413, 408), what the
    /// client still sends is read and discarded — up to about this many bytes, an eighth more
    /// and 64 KiB, and for at most 1 s — before the connection is closed, so that a client
    /// that writes its whole body before reading gets the answer rather than a reset.
    pub max_body: usize,
    /// Where deliveries are stored; default `Sqlite("preservica-webhook.db")` (`InMemory`
    /// without the `sqlite` cargo feature, which has no durable store built in).
    pub inbox: InboxConfig,
    /// How many handler calls run at once; default 4. `0` runs no workers: the receiver only
    /// stores deliveries, for an inbox shared with processes that run the workers (a
    /// [`Webhook`](crate::Webhook) started elsewhere on the same store). Deliveries stored
    /// meanwhile wait in the inbox.
    pub workers: usize,
    /// How long one handler call may take before it counts as failed; default 60 s.
    pub handler_timeout: Duration,
    /// How long a claimed delivery's lease outlasts [`WebhookConfig::handler_timeout`]: the
    /// time left to record the outcome; default 60 s. In a store shared by several receivers,
    /// the deliveries a crashed receiver had claimed are handed to another once their lease
    /// (about `handler_timeout + lease_margin`) has run out, so a shorter margin takes them
    /// over sooner, and one too short for the store to record an outcome in lets a delivery
    /// run twice.
    pub lease_margin: Duration,
    /// How failed handler calls are retried.
    pub retry: RetryPolicy,
    /// How long a client may take to send a request's body; default 30 s.
    pub body_timeout: Duration,
    /// Processed deliveries older than this are pruned (at start, then hourly); default 30
    /// days, `None` keeps them for ever. Pending, dead and undecodable deliveries are never
    /// pruned. A redelivery of a pruned body is no longer known: it is stored and processed
    /// again.
    pub retention: Option<Duration>,
    /// On shutdown, how long running handler calls may take to finish; default 30 s.
    pub shutdown_grace: Duration,
    /// How often the receiver records in the inbox that it is up; default 30 s. A run's
    /// start, heartbeats and clean stop tell when no receiver was listening (`gaps`,
    /// catch-up). `None` records nothing.
    pub heartbeat: Option<Duration>,
}

/// A PEM certificate chain and private key, for HTTPS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Where deliveries are stored: one of the ready-made stores, or your own.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum InboxConfig {
    /// A SQLite database file, created if missing: durable, readable by `Inbox::open` from
    /// another process while the server runs.
    ///
    /// The server creates the file, its `-wal` and `-shm` files and its lock file
    /// `<file>.lock` readable and writable by their owner only (mode 0600 on unix), and at
    /// start warns about each existing one that other users may open, leaving its mode as it
    /// is. The lock file is removed at a clean shutdown; one left by a crash is taken over at
    /// the next start.
    #[cfg(feature = "sqlite")]
    Sqlite(PathBuf),
    /// A PostgreSQL database shared by every receiver and worker process that opens it: see
    /// [`PostgresLocation`](crate::store::PostgresLocation) for the URL. The program creates
    /// and migrates its tables itself.
    #[cfg(feature = "postgres")]
    Postgres(crate::store::PostgresLocation),
    /// Memory only: everything not yet processed is lost when the process stops. For tests
    /// and for users who choose it; never the default.
    InMemory,
    /// A store of your own (a database shared by several receivers, a message broker): see
    /// the [`store`](crate::store) module for what it must do. The server calls
    /// [`Store::close`] on it when it shuts down.
    Custom(Arc<dyn Store>),
    /// A NATS JetStream stream (cargo feature `nats`): receivers anywhere publish to it, a
    /// NATS cluster replicates it, workers anywhere take from its durable consumer. See
    /// [`store::nats`](crate::store::nats).
    #[cfg(feature = "nats")]
    Nats(Box<crate::store::nats::NatsConfig>),
}

/// How failed handler calls are retried: exponential backoff with jitter.
///
/// Attempt `n` (1-based) that fails is retried after about `base_delay * 2^(n-1)`, capped at
/// `max_delay`, with random jitter taking up to half of it off. After `max_attempts` failed
/// calls the delivery becomes a dead letter.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// How many calls in all before giving up; default 8.
    pub max_attempts: u32,
    /// The delay after the first failure; default 1 s.
    pub base_delay: Duration,
    /// The longest delay; default 5 min.
    pub max_delay: Duration,
}

impl ServerConfig {
    /// A configuration with every default and the given secrets.
    pub fn new(secrets: Vec<Secret>) -> ServerConfig {
        ServerConfig {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 8000)),
            tls: None,
            header_timeout: Duration::from_secs(10),
            max_connections: 1024,
            health_path: Some("/healthz".to_owned()),
            metrics_path: Some("/metrics".to_owned()),
            webhook: WebhookConfig::new(secrets),
        }
    }
}

impl WebhookConfig {
    /// A configuration with every default and the given secrets.
    pub fn new(secrets: Vec<Secret>) -> WebhookConfig {
        WebhookConfig {
            path: "/".to_owned(),
            secrets,
            max_body: 1024 * 1024,
            inbox: InboxConfig::default(),
            workers: 4,
            handler_timeout: Duration::from_secs(60),
            lease_margin: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            body_timeout: Duration::from_secs(30),
            retention: Some(Duration::from_secs(30 * 24 * 60 * 60)),
            shutdown_grace: Duration::from_secs(30),
            heartbeat: Some(crate::run_log::DEFAULT_HEARTBEAT),
        }
    }
}

#[cfg(feature = "sqlite")]
impl Default for InboxConfig {
    fn default() -> InboxConfig {
        InboxConfig::Sqlite(PathBuf::from("preservica-webhook.db"))
    }
}

/// Without the `sqlite` feature no durable store is built in: the default keeps deliveries in
/// memory, and a durable receiver sets [`WebhookConfig::inbox`] to a store of its own.
#[cfg(not(feature = "sqlite"))]
impl Default for InboxConfig {
    fn default() -> InboxConfig {
        InboxConfig::InMemory
    }
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(5 * 60),
        }
    }
}

impl RetryPolicy {
    /// The backoff between attempts: from `base_delay` doubling up to `max_delay`.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            base: self.base_delay,
            max: self.max_delay,
        }
    }

    /// The delay before retrying after failed attempt `attempt` (1-based), before jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.backoff().delay(attempt.saturating_sub(1))
    }

    /// The delay with jitter: uniformly between half of [`RetryPolicy::delay`] and all of it.
    pub(crate) fn jittered_delay(&self, attempt: u32) -> Duration {
        use rand::Rng as _;
        self.backoff()
            .jittered(attempt.saturating_sub(1), rand::rng().random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_stays_within_half() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        let delays: Vec<u128> = (1..=6).map(|n| policy.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy.delay(u32::MAX), Duration::from_secs(1));
        for attempt in 1..=6 {
            let jittered = policy.jittered_delay(attempt);
            assert!(jittered <= policy.delay(attempt));
            assert!(jittered >= policy.delay(attempt) / 2);
        }
    }
}
