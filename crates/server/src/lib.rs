//! The Preservica webhook receiver: the web server Preservica calls.
//!
//! It answers Preservica's handshake (refusing the codes that would make it a signing
//! oracle), verifies every delivery's signature over the exact bytes received, stores each
//! verified delivery durably in an inbox *before* answering 200, and then hands it to your
//! [`Handler`] on a pool of workers — at least once, with retries, backoff and dead letters.
//! Every accept/refuse decision is the core crate's [`Receiver`](preservica_webhook_core::Receiver);
//! this crate moves the bytes around it.
//!
//! A minimal server:
//!
//! ```no_run
//! use preservica_webhook_core::Secret;
//! use preservica_webhook_server::{Handler, HandlerError, Job, Server, ServerConfig};
//!
//! struct Print;
//!
//! impl Handler for Print {
//!     async fn handle(&self, job: &Job) -> Result<(), HandlerError> {
//!         tracing::info!(trigger = ?job.delivery.trigger, refs = ?job.delivery.entity_refs().collect::<Vec<_>>());
//!         Ok(())
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let config = ServerConfig::new(vec![Secret::new("my_shared_secret")?]);
//!     Server::bind(config, Print).await?.run().await?;
//!     Ok(())
//! }
//! ```
//!
//! What it does, in order, for a request to the webhook path:
//!
//! - a `challengeCode` query parameter (GET or POST) is answered with the HMAC, or refused;
//! - a POST needs a `Preservica-Signature` header; its body (chunked or with
//!   `Content-Length`) is read within [`WebhookConfig::max_body`] (413 as soon as it is larger,
//!   without reading the rest) and [`WebhookConfig::body_timeout`] (408);
//! - an answer given before the body is read (a refusal from the head, 413, 408) reaches
//!   clients that write their whole body before reading: the server drains what they still
//!   send, bounded by [`WebhookConfig::max_body`] and one second, before closing;
//! - a body that matches none of the secrets gets 401; an authentic one is committed to the
//!   inbox (for SQLite: WAL mode with `synchronous=FULL`; concurrent deliveries share one
//!   transaction and one disk sync) and only then answered 200;
//! - the same body again is answered 200 and not processed again; an authentic body that is
//!   not JSON is kept as `undecodable` and never handed to the handler.
//!
//! Running it for years:
//!
//! - Handling is *at least once*: a delivery whose handler call was cut short (a crash, a
//!   shutdown past [`WebhookConfig::shutdown_grace`]) is handled again at the next start, so make
//!   the handler idempotent. A handler timeout drops the handler's future at its next `.await`;
//!   put blocking work in `tokio::task::spawn_blocking`.
//! - One server per SQLite inbox: a server holds `<inbox>.lock` and a second one refuses to
//!   start. A PostgreSQL inbox is shared: any number of servers and [`Workers`] on it, a
//!   delivery leased to one worker at a time.
//! - Dead letters stay until re-queued ([`Inbox::retry`], [`Inbox::retry_dead`], which reset
//!   the attempt count); processed deliveries are pruned after [`WebhookConfig::retention`].
//! - Idle keep-alive connections are closed after [`ServerConfig::header_timeout`].
//!
//! Each request is logged on one `request` line with its method, path, status, outcome,
//! latency and remote address ([`RemoteAddr`]), at debug level, under a target that says which
//! kind it is, so your application chooses what it shows:
//!
//! - `preservica_webhook_server::request` — requests to the webhook path (deliveries,
//!   challenges, refusals);
//! - `preservica_webhook_server::probe` — requests to `/healthz` and `/metrics`, which a
//!   scraper sends every few seconds.
//!
//! With `tracing-subscriber`'s `EnvFilter`, for instance,
//! `info,preservica_webhook_server::request=debug` shows the webhook's request lines and hides
//! the probes'; the `preservica-webhook` command does that by default and shows both with `-v`.
//!
//! The same listener serves `/healthz` and `/metrics` (Prometheus). [`Inbox`] opens the
//! database from another process to list, show, re-queue and export deliveries. To mount the
//! receiver in an application of your own, use [`Webhook`] and its [`WebhookService`];
//! [`Webhook::start_with_registry`] registers its metrics in your own
//! [`prometheus_client`] registry (the crate keeps no registry of its own). The configuration
//! nests the same way: a [`ServerConfig`] holds the listener's settings and, in its `webhook`
//! field, the receiver's [`WebhookConfig`], which is all a [`Webhook`] of your own takes.
//!
//! Where deliveries are kept is a seam of its own, the [`store`] module: the receiver stores
//! through [`store::Intake`], the workers claim leased work and complete it through
//! [`store::WorkQueue`], and the inbox's administration goes through [`store::InboxAdmin`].
//! [`InboxConfig::Sqlite`] and [`InboxConfig::InMemory`] are the two stores this crate always
//! has; `InboxConfig::Postgres` (cargo feature `postgres`) is a database shared by several
//! receivers and worker processes, and `InboxConfig::Nats` (cargo feature `nats`) a NATS
//! JetStream stream shared by any number of receivers and workers; [`InboxConfig::Custom`]
//! runs the server on a store of your own.
//!
//! Cargo features: `tls` (default) gives the ready [`Server`] HTTPS with rustls and ring; without
//! it the crate has no TLS dependency and a configuration with [`TlsFiles`] is refused at start
//! (run behind a proxy that terminates HTTPS, or mount [`WebhookService`] in a server of your own).
//! `sqlite` (default) gives the SQLite inbox (`InboxConfig::Sqlite` and `Inbox`); without it
//! SQLite is not compiled in, and the receiver runs on [`InboxConfig::InMemory`] (then the
//! default) or a store of your own ([`InboxConfig::Custom`]). `postgres` (off by default) gives
//! the PostgreSQL inbox (`InboxConfig::Postgres`, `PostgresLocation`), with TLS to the database
//! through rustls and ring.

mod access_log;
#[cfg(feature = "admin")]
pub mod admin;
mod config;
mod error;
mod handler;
mod inbox;
mod metrics;
mod refusal;
pub mod run_log;
mod server;
mod service;
pub mod store;
mod tls;
mod worker;

pub use crate::config::{InboxConfig, RetryPolicy, ServerConfig, TlsFiles, WebhookConfig};
pub use crate::error::{InboxError, ServerError};
pub use crate::handler::{Handler, HandlerError, Job};
#[cfg(feature = "sqlite")]
pub use crate::inbox::Inbox;
pub use crate::inbox::{DeliveryState, InboxEntry, StateCounts, StateFilter, UnknownState};
pub use crate::server::{Server, shutdown_signal};
pub use crate::service::{RemoteAddr, ResponseBody, Webhook, WebhookService};
#[cfg(feature = "postgres")]
pub use crate::store::PostgresLocation;
pub use crate::store::{DeliveryId, RunRecord};
pub use crate::worker::Workers;
/// The metrics library whose `Registry` [`Webhook::start_with_registry`] takes, re-exported so
/// an application registers in the same version.
pub use prometheus_client;
