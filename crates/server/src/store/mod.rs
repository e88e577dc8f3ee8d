//! The storage seam: where verified deliveries are kept, how workers take them, how an
//! administrator looks into them.
//!
//! Three traits, one per user of the inbox:
//!
//! - [`Intake`] — the receiver's side: store a verified delivery, or say it is a duplicate,
//!   and answer only once the delivery is durable (the 200 Preservica gets means "stored");
//! - [`WorkQueue`] — the workers' side: claim due deliveries under a *lease* (a deadline after
//!   which a delivery whose worker vanished may be handed to another), then complete each with
//!   an [`Outcome`];
//! - [`InboxAdmin`] — the operator's side: list (all, or a [`Page`] at a time), show,
//!   re-queue one or every dead letter, export, count, and when deliveries arrived.
//!
//! [`Store`] is all three together; a server holds its store as an `Arc<dyn Store>`. The
//! crate has two: the SQLite file ([`InboxConfig::Sqlite`], one writer thread that commits
//! queued writes in groups) and memory only ([`InboxConfig::InMemory`]); with cargo features,
//! a PostgreSQL database shared by several receivers (`InboxConfig::Postgres`, feature
//! `postgres`) and a NATS JetStream stream (the `nats` module, `InboxConfig::Nats`, feature
//! `nats`). Your own — another database, a message broker — is passed as
//! [`InboxConfig::Custom`].
//!
//! # Shape of the methods
//!
//! Every method returns a [`BoxFuture`] that is `Send`, so a store can be held as
//! `Arc<dyn Store>` and chosen at run time from configuration, and the server's types stay
//! free of a store type parameter. (A trait method returning `impl Future` cannot be called
//! through `dyn`.) The box costs one small allocation per call, beside a request's others and
//! far below the disk sync each stored delivery waits for.
//!
//! Time is passed in, as `now` in milliseconds since the Unix epoch, so an implementation
//! never reads the clock and tests drive it by hand. Errors are [`InboxError`]s; a backend's
//! own failure goes in [`InboxError::Backend`] (see [`InboxError::backend`]).
//!
//! # Implementing a store
//!
//! A store keeps, for each delivery, its [`DeliveryKey`] (unique: a second store of the same
//! key is a [`Stored::Duplicate`]), its body, its [`DeliveryState`], the number of finished
//! attempts, when it is next due, and its last error. A pending delivery is due from its
//! due time on, unless a lease on it is still running. A store may keep each finished
//! [`Attempt`] too, recorded as [`WorkQueue::complete`] applies its outcome and given by
//! [`InboxAdmin::attempts`] (the dashboard's delivery page); the default says it keeps none.
//!
//! ```
//! use std::sync::Mutex;
//!
//! use preservica_webhook_server::store::{
//!     BoxFuture, Claim, Claimed, DeliveryId, InboxAdmin, Intake, NewDelivery, Outcome, Store,
//!     Stored, WorkQueue,
//! };
//! use preservica_webhook_server::{DeliveryState, InboxEntry, InboxError, StateCounts, StateFilter};
//!
//! /// Deliveries in a vector: (delivery, attempts, due at, leased until, last error).
//! #[derive(Debug, Default)]
//! struct VecStore(Mutex<Vec<(NewDelivery, u32, i64, i64, Option<String>)>>);
//!
//! fn id(index: usize) -> DeliveryId {
//!     DeliveryId::from(index as u64 + 1)
//! }
//!
//! impl Intake for VecStore {
//!     fn store(&self, delivery: NewDelivery, now: i64) -> BoxFuture<'_, Result<Stored, InboxError>> {
//!         let mut rows = self.0.lock().unwrap();
//!         let stored = match rows.iter().position(|row| row.0.key == delivery.key) {
//!             Some(index) => Stored::Duplicate(id(index)),
//!             None => {
//!                 rows.push((delivery, 0, now, i64::MIN, None));
//!                 Stored::New(id(rows.len() - 1))
//!             }
//!         };
//!         Box::pin(async move { Ok(stored) })
//!     }
//! }
//!
//! impl WorkQueue for VecStore {
//!     fn claim(&self, now: i64, limit: usize, lease_until: i64) -> BoxFuture<'_, Result<Claim, InboxError>> {
//!         let mut rows = self.0.lock().unwrap();
//!         let mut claim = Claim::default();
//!         for (index, row) in rows.iter_mut().enumerate() {
//!             let due = row.0.state == DeliveryState::Pending && row.2 <= now && row.3 <= now;
//!             if due && claim.due.len() < limit {
//!                 row.3 = lease_until;
//!                 let (key, body, attempts) = (row.0.key, row.0.body.clone(), row.1);
//!                 claim.due.push(Claimed { id: id(index), key, body, attempts });
//!             }
//!         }
//!         Box::pin(async move { Ok(claim) })
//!     }
//!
//!     fn complete(&self, id: DeliveryId, attempt: u32, outcome: Outcome, _now: i64) -> BoxFuture<'_, Result<(), InboxError>> {
//!         let mut rows = self.0.lock().unwrap();
//!         let index = id.as_u64().and_then(|n| usize::try_from(n).ok()).and_then(|n| n.checked_sub(1));
//!         if let Some(row) = index.and_then(|index| rows.get_mut(index)) {
//!             (row.1, row.3) = (attempt, i64::MIN);
//!             match outcome {
//!                 Outcome::Done => row.0.state = DeliveryState::Done,
//!                 Outcome::Retry { at, error } => (row.2, row.4) = (at, Some(error)),
//!                 Outcome::Dead { error } => (row.0.state, row.4) = (DeliveryState::Dead, Some(error)),
//!             }
//!         }
//!         Box::pin(async { Ok(()) })
//!     }
//! }
//!
//! impl InboxAdmin for VecStore {
//!     // A real store lists its entries, each `InboxEntry::from(StoredDelivery { .. })`;
//!     // this one keeps the example short.
//!     fn list(&self, _filter: StateFilter) -> BoxFuture<'_, Result<Vec<InboxEntry>, InboxError>> {
//!         Box::pin(async { Ok(Vec::new()) })
//!     }
//!     fn get<'a>(&'a self, _id: &'a DeliveryId) -> BoxFuture<'a, Result<Option<InboxEntry>, InboxError>> {
//!         Box::pin(async { Ok(None) })
//!     }
//!     fn retry<'a>(&'a self, _id: &'a DeliveryId, _now: i64) -> BoxFuture<'a, Result<bool, InboxError>> {
//!         Box::pin(async { Ok(false) })
//!     }
//!     fn retry_dead(&self, _now: i64) -> BoxFuture<'_, Result<usize, InboxError>> {
//!         Box::pin(async { Ok(0) })
//!     }
//!     fn counts(&self) -> BoxFuture<'_, Result<StateCounts, InboxError>> {
//!         Box::pin(async { Ok(StateCounts::default()) })
//!     }
//! }
//!
//! impl Store for VecStore {}
//!
//! // Run a server on it:
//! let mut config = preservica_webhook_server::ServerConfig::new(Vec::new());
//! config.webhook.inbox = preservica_webhook_server::InboxConfig::Custom(std::sync::Arc::new(VecStore::default()));
//! ```

pub(crate) mod memory;
#[cfg(feature = "nats")]
pub mod nats;
pub(crate) mod page;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

use std::fmt;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use preservica_webhook_core::{DeliveryKey, Signature};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use crate::config::InboxConfig;
use crate::error::InboxError;
pub use crate::inbox::now_millis;
use crate::inbox::{DeliveryState, InboxEntry, StateCounts, StateFilter};
pub use page::{ACTIVITY_MINUTES, Activity, DEFAULT_MAX_SCANNED, Page, PageQuery};
pub(crate) use page::{Scan, scan_chunks, scan_listed};
#[cfg(feature = "postgres")]
pub use postgres::PostgresLocation;

/// The future every store method returns: `Send`, so a store can be held as `Arc<dyn Store>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A stored delivery's id: opaque, given by the store, shown by `inbox list` and taken by
/// `inbox show` and `inbox retry`.
///
/// Any non-empty text without whitespace; a decimal number (as the SQLite inbox's ids are)
/// is kept without an allocation. Two ids are equal when their text is.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId(Repr);

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Repr {
    Number(u64),
    Text(Box<str>),
}

/// Why a text is not a [`DeliveryId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a delivery id is a non-empty text without whitespace, as `inbox list` shows it")]
pub struct InvalidDeliveryId;

/// A verified delivery to store, as the receiver hands it to [`Intake::store`].
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// The redelivery key (SHA-256 of the body): a store keeps one delivery per key.
    pub key: DeliveryKey,
    /// The body exactly as received and verified. It may be a slice of a larger buffer: a
    /// store that keeps it in memory copies it (`Bytes::copy_from_slice`).
    pub body: Bytes,
    /// [`DeliveryState::Pending`] (to be handled, due at once) or
    /// [`DeliveryState::Undecodable`] (authentic but not a delivery: kept, never claimed) from
    /// the receiver; `inbox import` stores done and dead deliveries too. A store keeps the
    /// state it is given: only a pending delivery is ever claimed.
    pub state: DeliveryState,
    /// The `Preservica-Signature` the receiver verified the body with, for a store that passes
    /// it on (the NATS store keeps it as a message header); `None` from `inbox import`.
    pub signature: Option<Signature>,
}

/// What [`Intake::store`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Stored now, with this id.
    New(DeliveryId),
    /// A delivery with the same key was stored before, with this id; nothing changed.
    Duplicate(DeliveryId),
}

/// A delivery handed to a worker by [`WorkQueue::claim`].
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Its id, to [`WorkQueue::complete`] it with.
    pub id: DeliveryId,
    /// Its redelivery key.
    pub key: DeliveryKey,
    /// Its body, exactly as stored.
    pub body: Bytes,
    /// How many attempts have finished before this one.
    pub attempts: u32,
}

/// What one [`WorkQueue::claim`] handed out, and when to ask again.
#[derive(Debug, Clone, Default)]
pub struct Claim {
    /// Due deliveries, now leased to the caller; oldest due first.
    pub due: Vec<Claimed>,
    /// When the next pending delivery not handed out falls due (ms since the Unix epoch), if
    /// the store knows; the workers ask again then, or at their next poll.
    pub next_due: Option<i64>,
}

/// A delivery as a store keeps it, with its processing state: turned into the
/// [`InboxEntry`] that [`InboxAdmin::list`] and [`InboxAdmin::get`] give (and `inbox list`
/// prints) with `InboxEntry::from`, which also reads the trigger and entities from the body.
#[derive(Debug, Clone)]
pub struct StoredDelivery {
    /// Its id.
    pub id: DeliveryId,
    /// Its redelivery key.
    pub key: DeliveryKey,
    /// Its body, exactly as received.
    pub body: Bytes,
    /// Its state.
    pub state: DeliveryState,
    /// When it was received (ms since the Unix epoch).
    pub received_at: i64,
    /// How many attempts have finished.
    pub attempts: u32,
    /// When a pending delivery is next due (ms since the Unix epoch).
    pub next_attempt_at: Option<i64>,
    /// The last handler error.
    pub last_error: Option<String>,
}

/// How a handler call ended, for [`WorkQueue::complete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The handler succeeded: the delivery is done.
    Done,
    /// It failed and is retried: pending again, due at `at` (ms since the Unix epoch).
    Retry {
        /// When it is next due.
        at: i64,
        /// The handler's error, kept as the last error.
        error: String,
    },
    /// It failed for good: a dead letter, until re-queued.
    Dead {
        /// The handler's error, kept as the last error.
        error: String,
    },
}

impl Outcome {
    /// The outcome's name: `done`, `retry` or `dead`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Retry { .. } => "retry",
            Outcome::Dead { .. } => "dead",
        }
    }

    /// The outcome a store recorded by name (see [`Outcome::as_str`]), with the time a retry
    /// is due again and the error; `None` for a name it does not know or a retry without
    /// its time.
    #[cfg_attr(
        not(any(feature = "sqlite", feature = "postgres", feature = "nats")),
        allow(dead_code, reason = "the stores that keep attempts by name use it")
    )]
    pub(crate) fn from_parts(
        name: &str,
        retry_at: Option<i64>,
        error: Option<String>,
    ) -> Option<Outcome> {
        let error = error.unwrap_or_default();
        match name {
            "done" => Some(Outcome::Done),
            "retry" => Some(Outcome::Retry {
                at: retry_at?,
                error,
            }),
            "dead" => Some(Outcome::Dead { error }),
            _ => None,
        }
    }

    /// The handler's error, for a retry or a dead letter.
    pub fn error(&self) -> Option<&str> {
        match self {
            Outcome::Done => None,
            Outcome::Retry { error, .. } | Outcome::Dead { error } => Some(error),
        }
    }

    /// When a retry is due again.
    #[cfg_attr(
        not(any(feature = "sqlite", feature = "postgres", feature = "nats")),
        allow(dead_code, reason = "the stores that keep attempts by name use it")
    )]
    pub(crate) fn retry_at(&self) -> Option<i64> {
        match self {
            Outcome::Retry { at, .. } => Some(*at),
            Outcome::Done | Outcome::Dead { .. } => None,
        }
    }
}

/// The receiver's side of a store.
pub trait Intake: Send + Sync {
    /// Stores a verified delivery at `now`, or reports the delivery stored before under the
    /// same key.
    ///
    /// The future resolves only once the delivery is durable, as durable as the store gets:
    /// the receiver answers Preservica 200 on it, and Preservica does not send it again.
    ///
    /// # Errors
    /// Any failure to store it; the receiver answers 503 and Preservica retries later.
    fn store(&self, delivery: NewDelivery, now: i64) -> BoxFuture<'_, Result<Stored, InboxError>>;
}

/// The workers' side of a store.
///
/// A claimed delivery is leased to the claimer until `lease_until`: no claim hands it out
/// again before then, unless it is completed with [`Outcome::Retry`]. A store shared by
/// several receivers thus hands a crashed worker's delivery to another once its lease runs
/// out. Handling is at least once: a delivery whose outcome is lost runs again.
pub trait WorkQueue: Send + Sync {
    /// Up to `limit` pending deliveries due at `now` and not under a running lease, oldest due
    /// first, each now leased until `lease_until`.
    ///
    /// # Errors
    /// Any failure to read or lease them; the workers try again at their next poll.
    fn claim(
        &self,
        now: i64,
        limit: usize,
        lease_until: i64,
    ) -> BoxFuture<'_, Result<Claim, InboxError>>;

    /// Records how attempt `attempt` (1-based; the delivery's attempt count becomes it) of a
    /// claimed delivery ended, at `now`, and ends its lease. A delivery that is no longer
    /// pending (re-queued or removed meanwhile) is left as it is.
    ///
    /// The future may resolve before the outcome is durable, once every later claim sees it:
    /// an outcome lost in a crash leaves the delivery pending, so it runs again.
    ///
    /// `attempt` also tells claims of one delivery apart: a store shared by several receivers
    /// can ignore an outcome whose `attempt` is not one more than the delivery's count, which
    /// comes from a worker whose lease ran out while another took the delivery over.
    ///
    /// A store that keeps the attempt history ([`InboxAdmin::attempts`]) records the attempt
    /// here, with the outcome it applies and as durably: an ignored outcome adds no attempt.
    ///
    /// # Errors
    /// Any failure to record it; the delivery then runs again once its lease ends.
    fn complete(
        &self,
        id: DeliveryId,
        attempt: u32,
        outcome: Outcome,
        now: i64,
    ) -> BoxFuture<'_, Result<(), InboxError>>;

    /// Removes done deliveries last changed before `before` (ms since the Unix epoch); returns
    /// how many. Pending, dead and undecodable deliveries are never pruned. The default keeps
    /// everything.
    ///
    /// # Errors
    /// Any failure to remove them; the workers try again at the next prune.
    fn prune(&self, before: i64) -> BoxFuture<'_, Result<usize, InboxError>> {
        let _ = before;
        Box::pin(async { Ok(0) })
    }
}

/// The operator's side of a store: what the `inbox` commands do.
pub trait InboxAdmin: Send + Sync {
    /// The deliveries in a state (or all), oldest first.
    ///
    /// # Errors
    /// Any failure to read them.
    fn list(&self, filter: StateFilter) -> BoxFuture<'_, Result<Vec<InboxEntry>, InboxError>>;

    /// One page of deliveries, newest first, after the query's cursor and filtered by it, with
    /// the cursor to go on from (see [`Page::next`]); what the dashboard shows.
    ///
    /// A call reads at most [`PageQuery::max_scanned`] deliveries in the query's state and time
    /// range. The default lists every delivery in the state and pages through them in memory;
    /// the SQLite and PostgreSQL stores read newest first by id in bounded chunks instead, with
    /// the state and time filters in the database, and the NATS store in windows of stream
    /// sequences.
    ///
    /// # Errors
    /// Any failure to read them.
    fn page<'a>(&'a self, query: &'a PageQuery) -> BoxFuture<'a, Result<Page, InboxError>> {
        Box::pin(async move {
            let mut entries = self.list(query.state).await?;
            entries.reverse();
            Ok(scan_listed(query, entries))
        })
    }

    /// When deliveries arrived, as of `now`: the newest, the oldest pending, and how many a
    /// minute over the last hour (the dashboard's health panel). The default lists every
    /// delivery; the SQLite and PostgreSQL stores ask their indexes, the NATS store reads the
    /// last hour's messages without their bodies.
    ///
    /// # Errors
    /// Any failure to read them.
    fn activity(&self, now: i64) -> BoxFuture<'_, Result<Activity, InboxError>> {
        Box::pin(async move {
            let entries = self.list(StateFilter::All).await?;
            Ok(Activity::of(
                now,
                entries.iter().filter_map(|entry| {
                    let at = chrono::DateTime::parse_from_rfc3339(&entry.received_at).ok()?;
                    Some((at.timestamp_millis(), entry.state))
                }),
            ))
        })
    }

    /// One delivery by id; `None` when there is none.
    ///
    /// # Errors
    /// Any failure to read it.
    fn get<'a>(
        &'a self,
        id: &'a DeliveryId,
    ) -> BoxFuture<'a, Result<Option<InboxEntry>, InboxError>>;

    /// Re-queues a dead letter at `now`: pending, due at once, its attempts reset. `false` when
    /// there is no dead delivery with that id.
    ///
    /// # Errors
    /// Any failure to change it.
    fn retry<'a>(&'a self, id: &'a DeliveryId, now: i64)
    -> BoxFuture<'a, Result<bool, InboxError>>;

    /// Re-queues every dead letter at `now`; returns how many.
    ///
    /// # Errors
    /// Any failure to change them.
    fn retry_dead(&self, now: i64) -> BoxFuture<'_, Result<usize, InboxError>>;

    /// Writes every stored delivery, oldest first, one JSON object per line (see
    /// [`write_export_line`]); returns how many. The default lists them all first; a store
    /// with many deliveries streams them instead.
    ///
    /// # Errors
    /// Any failure to read them; [`InboxError::Io`] when `out` cannot be written.
    fn export<'a>(
        &'a self,
        out: &'a mut (dyn Write + Send),
    ) -> BoxFuture<'a, Result<usize, InboxError>> {
        Box::pin(async move {
            let entries = self.list(StateFilter::All).await?;
            for entry in &entries {
                write_export_line(entry, out)?;
            }
            out.flush()?;
            Ok(entries.len())
        })
    }

    /// Every recorded receiver run (see [`Store::record_run`]), oldest start first. The
    /// default refuses with [`InboxError::Unsupported`].
    ///
    /// # Errors
    /// Any failure to read them.
    fn runs(&self) -> BoxFuture<'_, Result<Vec<RunRecord>, InboxError>> {
        Box::pin(std::future::ready(Err(InboxError::Unsupported(
            "list when receivers ran",
        ))))
    }

    /// Every finished handler attempt of a delivery (see [`Attempt`]), oldest first; none
    /// for a delivery never handled or not there. A re-queued dead letter keeps the attempts
    /// it had, and its count starts again from 1. The default refuses with
    /// [`InboxError::Unsupported`]: the dashboard then says the store keeps no attempt
    /// history.
    ///
    /// # Errors
    /// Any failure to read them.
    fn attempts<'a>(
        &'a self,
        id: &'a DeliveryId,
    ) -> BoxFuture<'a, Result<Vec<Attempt>, InboxError>> {
        let _ = id;
        Box::pin(std::future::ready(Err(InboxError::Unsupported(
            "list a delivery's handler attempts",
        ))))
    }

    /// How many deliveries are in each state (the metrics' inbox gauges).
    ///
    /// # Errors
    /// Any failure to count them.
    fn counts(&self) -> BoxFuture<'_, Result<StateCounts, InboxError>>;
}

/// One receiver's run, as a store records it: when it started, its last heartbeat, and when
/// it stopped cleanly (ms since the Unix epoch). `gaps` and catch-up read the runs to find
/// when no receiver was up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// The run's own id (random, unique per process start).
    pub id: String,
    /// When it started.
    pub started_at: i64,
    /// Its last heartbeat (its start before the first).
    pub last_seen_at: i64,
    /// When it stopped cleanly; `None` while it runs, or when it crashed.
    pub stopped_at: Option<i64>,
}

/// One finished handler attempt of a delivery, as [`InboxAdmin::attempts`] gives it: a store
/// that keeps them records one in [`WorkQueue::complete`] for each outcome it applies (not for
/// a stale one it ignores).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The attempt's number (1-based), the `attempt` given to [`WorkQueue::complete`].
    pub number: u32,
    /// When it finished (ms since the Unix epoch), the `now` given to
    /// [`WorkQueue::complete`].
    pub finished_at: i64,
    /// How it ended: done, retried (with when it is due again) or dead, with the handler's
    /// error.
    pub outcome: Outcome,
}

impl Attempt {
    /// The handler's error, when the attempt failed.
    pub fn error(&self) -> Option<&str> {
        self.outcome.error()
    }
}

/// A whole store: what a server runs on.
pub trait Store: Intake + WorkQueue + InboxAdmin + fmt::Debug {
    /// Registers metrics of the store's own (beside the receiver's inbox gauges, which come
    /// from [`InboxAdmin::counts`]) in `registry`; a store refreshes them when it counts.
    /// The default has none.
    fn register_metrics(&self, registry: &mut Registry) {
        let _ = registry;
    }

    /// Records (inserts, or updates by id) a receiver's run; the server calls it at start,
    /// at every heartbeat and at a clean stop. The default refuses with
    /// [`InboxError::Unsupported`]: the server then runs without recording, and `gaps`
    /// cannot tell when it was down.
    ///
    /// # Errors
    /// Any failure to record it; the server logs it and goes on.
    fn record_run<'a>(&'a self, run: &'a RunRecord) -> BoxFuture<'a, Result<(), InboxError>> {
        let _ = run;
        Box::pin(std::future::ready(Err(InboxError::Unsupported(
            "record when receivers run",
        ))))
    }

    /// Finishes what is queued and lets go of the store's resources; called once when the
    /// server shuts down, after the workers stopped. Calls after it may fail with
    /// [`InboxError::Closed`]. The default does nothing.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Writes one export line for `entry`: `{"id","key","state","receivedAt","body"}` with the raw
/// body as a JSON string, or `"bodyBase64"` instead of `"body"` when it is not UTF-8.
///
/// # Errors
/// [`InboxError::Io`] when `out` cannot be written.
pub fn write_export_line(entry: &InboxEntry, out: &mut dyn Write) -> Result<(), InboxError> {
    use base64::Engine as _;
    let mut line = serde_json::Map::new();
    line.insert("id".into(), entry.id.as_str().into());
    line.insert("key".into(), entry.key.clone().into());
    line.insert("state".into(), entry.state.as_str().into());
    line.insert("receivedAt".into(), entry.received_at.clone().into());
    match std::str::from_utf8(&entry.body) {
        Ok(text) => line.insert("body".into(), text.into()),
        Err(_) => line.insert(
            "bodyBase64".into(),
            base64::engine::general_purpose::STANDARD
                .encode(&entry.body)
                .into(),
        ),
    };
    serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Opens the store `inbox` configures, as a server would, for a program that writes to an
/// inbox without serving (such as `inbox import`). Call [`Store::close`] when done, so queued
/// writes are finished.
///
/// The SQLite store creates the file if needed and holds it (its lock file) until the store is
/// dropped: no server can run on that inbox meanwhile. The PostgreSQL store connects and
/// brings the database's tables up to date, beside any servers running on it.
///
/// # Errors
/// When the store cannot be opened; [`InboxError::InUse`] for an SQLite inbox a running server
/// holds, [`InboxError::Connect`] for a database that cannot be reached.
pub async fn open_store(inbox: InboxConfig) -> Result<Arc<dyn Store>, InboxError> {
    open(inbox, Counter::default()).await
}

/// Opens the configured store, counting the SQLite store's commits (or the memory store's
/// writes) in `commits`. The SQLite store, which creates files and starts threads, is opened
/// on a blocking thread.
pub(crate) async fn open(
    inbox: InboxConfig,
    commits: Counter,
) -> Result<Arc<dyn Store>, InboxError> {
    Ok(match inbox {
        #[cfg(feature = "sqlite")]
        InboxConfig::Sqlite(path) => {
            let opened =
                tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(&path, commits))
                    .await
                    .map_err(|err| InboxError::Io(std::io::Error::other(err)))??;
            Arc::new(opened)
        }
        #[cfg(feature = "postgres")]
        InboxConfig::Postgres(location) => {
            Arc::new(postgres::PostgresStore::open(&location, commits).await?)
        }
        InboxConfig::InMemory => Arc::new(memory::MemoryStore::new(commits)),
        #[cfg(feature = "nats")]
        InboxConfig::Nats(config) => Arc::new(nats::NatsStore::open(*config).await?),
        InboxConfig::Custom(store) => store,
    })
}

impl DeliveryId {
    /// The id as text, as `inbox list` shows it.
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        match &self.0 {
            Repr::Number(n) => std::borrow::Cow::Owned(n.to_string()),
            Repr::Text(text) => std::borrow::Cow::Borrowed(text),
        }
    }

    /// The id as a number, when it is one (a decimal without leading zeros).
    pub fn as_u64(&self) -> Option<u64> {
        match self.0 {
            Repr::Number(n) => Some(n),
            Repr::Text(_) => None,
        }
    }
}

impl From<u64> for DeliveryId {
    fn from(n: u64) -> DeliveryId {
        DeliveryId(Repr::Number(n))
    }
}

impl FromStr for DeliveryId {
    type Err = InvalidDeliveryId;

    fn from_str(s: &str) -> Result<DeliveryId, InvalidDeliveryId> {
        if s.is_empty() || s.chars().any(char::is_whitespace) {
            return Err(InvalidDeliveryId);
        }
        let canonical = s == "0" || !s.starts_with('0');
        match s.parse::<u64>() {
            Ok(n) if canonical && s.bytes().all(|b| b.is_ascii_digit()) => Ok(DeliveryId::from(n)),
            _ => Ok(DeliveryId(Repr::Text(s.into()))),
        }
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Number(n) => n.fmt(f),
            Repr::Text(text) => f.write_str(text),
        }
    }
}

impl fmt::Debug for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeliveryId({self})")
    }
}

impl serde::Serialize for DeliveryId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeliveryId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<DeliveryId, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl From<StoredDelivery> for InboxEntry {
    fn from(stored: StoredDelivery) -> InboxEntry {
        crate::inbox::entry(
            stored.id,
            &stored.key.as_bytes()[..],
            stored.state,
            stored.received_at,
            stored.attempts,
            stored.next_attempt_at,
            stored.last_error,
            stored.body,
        )
    }
}

impl NewDelivery {
    /// A delivery to store.
    pub fn new(key: DeliveryKey, body: Bytes, state: DeliveryState) -> NewDelivery {
        NewDelivery {
            key,
            body,
            state,
            signature: None,
        }
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests;
