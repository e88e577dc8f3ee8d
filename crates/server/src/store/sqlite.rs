//! The SQLite store ([`InboxConfig::Sqlite`](crate::InboxConfig::Sqlite)): one writer thread
//! that owns the database and commits queued writes in groups (one transaction and one disk
//! sync per batch).
//!
//! Requests and workers talk to it through a channel; each command carries a oneshot for its
//! answer. Writes are answered once the batch holding them is committed. Claims do not queue
//! behind the writes: they read on a connection of their own (WAL lets it read beside the
//! writer), see [`Leases`] for why that hands out only committed deliveries, never one twice
//! while leased, and sees every outcome queued before it. Leases live in memory: one server
//! holds the inbox (its lock file), so a crash ends every lease with the process. The administrator's reads and re-queues use a
//! connection of their own, as [`Inbox`] does from another process, off the writer's path.
//!
//! The counts per state (the metrics' inbox gauges) are kept by the writer as it changes
//! rows, published after each commit, and read without a round trip, so a `/metrics` scrape
//! never waits behind a commit. They are counted in full once at open, and again in the first
//! transaction after another connection (an `inbox retry`, here or from another process)
//! changed the file, which SQLite's `data_version` tells.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use preservica_webhook_core::DeliveryKey;
use prometheus_client::metrics::counter::Counter;
use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

use crate::error::InboxError;
use crate::inbox::{self, DeliveryState, Inbox, InboxEntry, SqliteCause, StateCounts, StateFilter};
use crate::store::{
    Activity, Attempt, BoxFuture, Claim, Claimed, DeliveryId, InboxAdmin, Intake, NewDelivery,
    Outcome, Page, PageQuery, RunRecord, Store, Stored, WorkQueue, scan_chunks,
};

/// The most commands applied in one transaction.
const MAX_BATCH: usize = 256;
/// How many commands may wait for the writer before senders wait too.
const QUEUE: usize = 4096;

/// A handle on the writer thread.
#[derive(Debug)]
pub(crate) struct SqliteStore {
    tx: mpsc::Sender<Command>,
    /// The counts as of the last commit, kept by the writer.
    counts: Arc<Mutex<StateCounts>>,
    /// The claims' own connection, which only reads.
    reader: Arc<Mutex<Connection>>,
    /// Shared with the writer, which ends leases once their outcome is committed.
    leases: Arc<Mutex<Leases>>,
    /// The writer thread, joined at [`Store::close`].
    thread: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
}

/// What failed in the database, shared by every command of the batch it failed.
#[derive(Debug, Clone)]
pub(crate) struct Failure(Arc<(&'static str, SqliteCause)>);

/// What an insert did, by rowid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inserted {
    New(i64),
    Duplicate(i64),
}

type Reply<T> = oneshot::Sender<Result<T, InboxError>>;

#[derive(Debug)]
enum Command {
    Insert {
        delivery: NewDelivery,
        now: i64,
        reply: Reply<Stored>,
    },
    Finish {
        id: i64,
        attempt: u32,
        outcome: Outcome,
        now: i64,
        reply: Reply<usize>,
    },
    Prune {
        before: i64,
        reply: Reply<usize>,
    },
    /// A transaction with nothing in it, in which the writer sees what other connections
    /// changed (and counts again).
    Refresh,
    Close,
}

impl SqliteStore {
    /// Opens (creating if needed) the inbox file and starts its writer thread, which counts
    /// its commits in `commits`.
    pub(crate) fn open(path: &Path, commits: Counter) -> Result<SqliteStore, InboxError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let backend = SqliteBackend::open(path)?;
        let counts = Arc::clone(&backend.counts);
        let leases = Arc::clone(&backend.leases);
        let reader = open_reader(path)?;
        let thread = spawn(backend, rx, commits)?;
        Ok(SqliteStore {
            tx,
            counts,
            reader: Arc::new(Mutex::new(reader)),
            leases,
            thread: Mutex::new(Some(thread)),
            path: path.to_owned(),
        })
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, InboxError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| InboxError::Closed)?;
        answer.await.map_err(|_| InboxError::Closed)?
    }

    /// Runs `apply` on an administrator's connection of its own, off the async threads.
    fn admin<T: Send + 'static>(
        &self,
        apply: impl FnOnce(&Inbox) -> Result<T, InboxError> + Send + 'static,
    ) -> BoxFuture<'_, Result<T, InboxError>> {
        let path = self.path.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || apply(&Inbox::open_quietly(&path)?))
                .await
                .map_err(|err| InboxError::backend(std::io::Error::other(err)))?
        })
    }
}

impl SqliteStore {
    /// Runs `apply` on the reading connection (the claims' own), off the async threads.
    fn read<T: Send + 'static>(
        &self,
        what: &'static str,
        apply: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> impl Future<Output = Result<T, InboxError>> + Send + 'static {
        let reader = Arc::clone(&self.reader);
        async move {
            tokio::task::spawn_blocking(move || {
                let conn = reader.lock().unwrap_or_else(PoisonError::into_inner);
                apply(&conn).map_err(|err| Failure::new(what, err).into())
            })
            .await
            .map_err(|err| InboxError::backend(std::io::Error::other(err)))?
        }
    }
}

impl Intake for SqliteStore {
    fn store(&self, delivery: NewDelivery, now: i64) -> BoxFuture<'_, Result<Stored, InboxError>> {
        Box::pin(self.ask(move |reply| Command::Insert {
            delivery,
            now,
            reply,
        }))
    }
}

impl WorkQueue for SqliteStore {
    fn claim(
        &self,
        now: i64,
        limit: usize,
        lease_until: i64,
    ) -> BoxFuture<'_, Result<Claim, InboxError>> {
        let reader = Arc::clone(&self.reader);
        let leases = Arc::clone(&self.leases);
        let closed = self.tx.is_closed();
        Box::pin(async move {
            if closed {
                return Err(InboxError::Closed);
            }
            tokio::task::spawn_blocking(move || {
                let conn = reader.lock().unwrap_or_else(PoisonError::into_inner);
                let mut leases = leases.lock().unwrap_or_else(PoisonError::into_inner);
                claim(&conn, &mut leases, now, limit, lease_until)
                    .map_err(|err| Failure::new("claim deliveries", err).into())
            })
            .await
            .map_err(|err| InboxError::backend(std::io::Error::other(err)))?
        })
    }

    /// Queues the outcome without waiting for its commit. Commands are applied in the order
    /// they are queued, so any claim queued after this one sees the outcome; if the commit
    /// fails the delivery stays pending and runs again (at least once).
    fn complete(
        &self,
        id: DeliveryId,
        attempt: u32,
        outcome: Outcome,
        now: i64,
    ) -> BoxFuture<'_, Result<(), InboxError>> {
        Box::pin(async move {
            let Some(id) = rowid(&id) else {
                return Ok(());
            };
            self.leases
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .finishing(id, &outcome);
            let (reply, _unread) = oneshot::channel();
            let sent = self
                .tx
                .send(Command::Finish {
                    id,
                    attempt,
                    outcome,
                    now,
                    reply,
                })
                .await;
            if sent.is_err() {
                self.leases
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .end(id);
                return Err(InboxError::Closed);
            }
            Ok(())
        })
    }

    fn prune(&self, before: i64) -> BoxFuture<'_, Result<usize, InboxError>> {
        Box::pin(self.ask(move |reply| Command::Prune { before, reply }))
    }
}

impl InboxAdmin for SqliteStore {
    fn list(&self, filter: StateFilter) -> BoxFuture<'_, Result<Vec<InboxEntry>, InboxError>> {
        self.admin(move |inbox| inbox.list(filter))
    }

    /// On the reading connection, never through the writer, a chunk of rows at a time (each
    /// holds the connection for its own rows only), with the state and time filters in SQL.
    fn page<'a>(&'a self, query: &'a PageQuery) -> BoxFuture<'a, Result<Page, InboxError>> {
        let range = (query.state, query.received_from, query.received_before);
        Box::pin(scan_chunks(query, move |before, wanted| {
            self.read("read a page of deliveries", move |conn| {
                page_chunk(conn, range, before, wanted)
            })
        }))
    }

    /// On the reading connection, from the indexes by state and time received.
    fn activity(&self, now: i64) -> BoxFuture<'_, Result<Activity, InboxError>> {
        Box::pin(self.read("read when deliveries arrived", move |conn| {
            activity(conn, now)
        }))
    }

    fn get<'a>(
        &'a self,
        id: &'a DeliveryId,
    ) -> BoxFuture<'a, Result<Option<InboxEntry>, InboxError>> {
        let id = id.clone();
        self.admin(move |inbox| inbox.get(&id))
    }

    fn retry<'a>(
        &'a self,
        id: &'a DeliveryId,
        now: i64,
    ) -> BoxFuture<'a, Result<bool, InboxError>> {
        let id = id.clone();
        Box::pin(async move {
            let retried = self.admin(move |inbox| inbox.retry_at(&id, now)).await?;
            self.refresh().await;
            Ok(retried)
        })
    }

    fn retry_dead(&self, now: i64) -> BoxFuture<'_, Result<usize, InboxError>> {
        Box::pin(async move {
            let retried = self.admin(move |inbox| inbox.retry_dead_at(now)).await?;
            self.refresh().await;
            Ok(retried)
        })
    }

    /// Streams the deliveries from the database on the calling thread (`out` is borrowed).
    fn export<'a>(
        &'a self,
        out: &'a mut (dyn Write + Send),
    ) -> BoxFuture<'a, Result<usize, InboxError>> {
        Box::pin(async move { Inbox::open_quietly(&self.path)?.export(out) })
    }

    /// The writer's counts as of its last commit: no round trip, no scan.
    fn counts(&self) -> BoxFuture<'_, Result<StateCounts, InboxError>> {
        let counts = *self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        Box::pin(std::future::ready(Ok(counts)))
    }

    fn runs(&self) -> BoxFuture<'_, Result<Vec<RunRecord>, InboxError>> {
        self.admin(|inbox| inbox.runs())
    }

    fn attempts<'a>(
        &'a self,
        id: &'a DeliveryId,
    ) -> BoxFuture<'a, Result<Vec<Attempt>, InboxError>> {
        let id = id.clone();
        self.admin(move |inbox| inbox.attempts(&id))
    }
}

impl Store for SqliteStore {
    /// On the administrator's connection: a heartbeat every half minute does not need the
    /// writer's queue.
    fn record_run<'a>(&'a self, run: &'a RunRecord) -> BoxFuture<'a, Result<(), InboxError>> {
        let run = run.clone();
        self.admin(move |inbox| inbox.record_run(&run))
    }

    /// Asks the writer to finish its queue and close the database, and waits for it.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.tx.send(Command::Close).await;
            let thread = self
                .thread
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(thread) = thread {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
        })
    }
}

impl SqliteStore {
    /// Has the writer look at what another connection changed, so the counts follow a
    /// re-queue at once rather than at the next write.
    async fn refresh(&self) {
        let _ = self.tx.send(Command::Refresh).await;
    }
}

/// The rowid a [`DeliveryId`] of this store stands for; `None` for an id it never gave.
pub(crate) fn rowid(id: &DeliveryId) -> Option<i64> {
    id.as_u64().and_then(|n| i64::try_from(n).ok())
}

/// The [`DeliveryId`] of a rowid (always positive).
pub(crate) fn delivery_id(rowid: i64) -> DeliveryId {
    DeliveryId::from(u64::try_from(rowid).unwrap_or(0))
}

impl Failure {
    pub(crate) fn new(what: &'static str, err: rusqlite::Error) -> Failure {
        Failure(Arc::new((what, SqliteCause(err))))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the inbox database could not {}", self.0.0)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0.1)
    }
}

impl From<Failure> for InboxError {
    fn from(failure: Failure) -> InboxError {
        InboxError::backend(failure)
    }
}

fn spawn(
    backend: SqliteBackend,
    rx: mpsc::Receiver<Command>,
    commits: Counter,
) -> Result<JoinHandle<()>, InboxError> {
    Ok(std::thread::Builder::new()
        .name("webhook-inbox".to_owned())
        .spawn(move || run(backend, rx, &commits))?)
}

/// A write applied in the current transaction, answered after the commit.
#[derive(Debug)]
enum Written {
    Insert(Reply<Stored>, Result<Inserted, Failure>),
    Count(Reply<usize>, Result<usize, Failure>),
}

fn run(mut backend: SqliteBackend, mut rx: mpsc::Receiver<Command>, commits: &Counter) {
    let mut batch: Vec<Command> = Vec::with_capacity(MAX_BATCH);
    let mut written: Vec<Written> = Vec::with_capacity(MAX_BATCH);
    let mut closing = false;
    while !closing {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        closing = apply(&mut backend, &mut batch, &mut written, commits);
    }
    tracing::debug!("inbox closed");
}

/// Applies a batch of commands in one transaction and answers them; true when one asked to
/// close.
fn apply(
    backend: &mut SqliteBackend,
    batch: &mut Vec<Command>,
    written: &mut Vec<Written>,
    commits: &Counter,
) -> bool {
    let mut closing = false;
    let has_writes = batch.iter().any(Command::is_write);
    let began = if has_writes {
        backend
            .begin()
            .map_err(|err| log(&Failure::new("begin a transaction", err)))
    } else {
        Ok(())
    };
    // The counts as this transaction leaves them, published once it is committed.
    let mut counts = *backend
        .counts
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if began.is_ok()
        && let Err(err) = backend.recount_if_changed(&mut counts)
    {
        log(&Failure::new("count deliveries", err));
    }
    // Deliveries whose outcome is in this transaction: their leases end once it is over.
    let mut finished: Vec<i64> = Vec::new();
    for command in batch.drain(..) {
        match command {
            Command::Insert {
                delivery,
                now,
                reply,
            } => {
                let result = began.clone().and_then(|()| {
                    backend
                        .insert(&delivery.key, &delivery.body, delivery.state, now)
                        .map_err(|err| Failure::new("store a delivery", err))
                });
                if let Ok(Inserted::New(_)) = result {
                    shift(&mut counts, delivery.state, 1);
                }
                written.push(Written::Insert(reply, result));
            }
            Command::Finish {
                id,
                attempt,
                outcome,
                now,
                reply,
            } => {
                let result = began.clone().and_then(|()| {
                    backend
                        .finish(id, attempt, &outcome, now)
                        .map_err(|err| Failure::new("record a handler outcome", err))
                });
                finished.push(id);
                if let Ok(1) = result {
                    shift(&mut counts, DeliveryState::Pending, -1);
                    shift(&mut counts, outcome_state(&outcome), 1);
                }
                // Nobody waits for this answer: say it here.
                if let Err(failure) = &result {
                    log(failure);
                }
                written.push(Written::Count(reply, result));
            }
            Command::Prune { before, reply } => {
                let result = began.clone().and_then(|()| {
                    backend
                        .prune(before)
                        .map_err(|err| Failure::new("prune", err))
                });
                if let Ok(pruned) = result {
                    shift(
                        &mut counts,
                        DeliveryState::Done,
                        -i64::try_from(pruned).unwrap_or(i64::MAX),
                    );
                }
                written.push(Written::Count(reply, result));
            }
            Command::Close => closing = true,
            Command::Refresh => {}
        }
    }
    let committed = match (has_writes, began) {
        (false, _) => Ok(()),
        (true, Err(failure)) => Err(failure),
        (true, Ok(())) => match backend.commit() {
            Ok(()) => {
                commits.inc();
                *backend
                    .counts
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = counts;
                Ok(())
            }
            Err(err) => {
                backend.rollback();
                Err(log(&Failure::new("commit", err)))
            }
        },
    };
    for write in written.drain(..) {
        match write {
            Written::Insert(reply, result) => {
                let result = result.and_then(|inserted| {
                    committed.clone()?;
                    Ok(match inserted {
                        Inserted::New(id) => Stored::New(delivery_id(id)),
                        Inserted::Duplicate(id) => Stored::Duplicate(delivery_id(id)),
                    })
                });
                let _ = reply.send(result.map_err(InboxError::from));
            }
            Written::Count(reply, result) => {
                let result = result.and_then(|count| committed.clone().map(|()| count));
                let _ = reply.send(result.map_err(InboxError::from));
            }
        }
    }
    // After the answers, as a claim may hold the lock for its query. Committed, the
    // outcomes are there for every claim from now on; failed, their deliveries are pending
    // as before and run again (at least once).
    if !finished.is_empty() {
        let mut leases = backend
            .leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for id in finished {
            leases.end(id);
        }
    }
    if has_writes && committed.is_ok() {
        backend.restart_log_if_due();
    }
    closing
}

/// Logs a failure that concerns the whole batch (or a command nobody waits for); each
/// caller waiting for an answer is told too, and logs what it meant to do.
fn log(failure: &Failure) -> Failure {
    tracing::error!(error = %failure, cause = %failure.0.1, "the inbox failed");
    failure.clone()
}

impl Command {
    fn is_write(&self) -> bool {
        matches!(
            self,
            Command::Insert { .. }
                | Command::Finish { .. }
                | Command::Prune { .. }
                | Command::Refresh
        )
    }
}

struct SqliteBackend {
    conn: Connection,
    /// Shared with the store's claims; ended here once an outcome is committed.
    leases: Arc<Mutex<Leases>>,
    /// The counts per state as of the last commit, shared with the store's handle.
    counts: Arc<Mutex<StateCounts>>,
    /// SQLite's `data_version` when the counts were last taken in full: it changes when
    /// another connection commits.
    data_version: i64,
    /// The checkpoint thread, which says when the log can start again; dropped with the
    /// backend, which stops it.
    checkpoints: Checkpointer,
    /// Held while the server runs, so a second server cannot process the same inbox. Declared
    /// last, so it is removed and released after both connections are closed.
    _lock: InboxLock,
}

impl SqliteBackend {
    fn open(path: &Path) -> Result<SqliteBackend, InboxError> {
        SqliteBackend::open_with_log_limit(path, RESTART_LOG_ABOVE)
    }

    /// Opens the inbox with a log that starts again once it is longer than `restart_above`
    /// frames.
    fn open_with_log_limit(path: &Path, restart_above: i64) -> Result<SqliteBackend, InboxError> {
        inbox::create_private(path)?;
        let lock = InboxLock::take(path)?;
        let conn = inbox::open_for_server(path)?;
        let at = |err| inbox::sqlite_failed(path, err);
        conn.execute_batch(PAGE_INDEXES).map_err(at)?;
        // What an earlier run, an import or the index build just now left in the log is copied
        // into the database before the first delivery, not by the checkpoint thread under load
        // (on a full inbox that copy stalled commits for most of a second). An `inbox` command
        // reading at this moment can make it wait, for the connection's busy timeout at the
        // most, and then end partial; the checkpoint thread finishes it later.
        if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
            tracing::debug!(error = %err, "the inbox's log was not checkpointed at start");
        }
        // Counted before the cache grows, so a full inbox's scan does not stay in memory.
        let data_version = data_version(&conn).map_err(at)?;
        let counts = inbox::counts(&conn).map_err(at)?;
        // Checkpoints run on their own connection and thread, so no commit (and no answer
        // waiting for it) ever pays for copying the log back into the database. A page cache
        // of up to 32 MiB (filled only as pages are used) keeps the key index of about half a
        // million deliveries in memory, so an insert into a full inbox rarely reads the disk.
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = -32768;")
            .map_err(at)?;
        let checkpoints = Checkpointer::start(path, restart_above)?;
        Ok(SqliteBackend {
            conn,
            leases: Arc::default(),
            counts: Arc::new(Mutex::new(counts)),
            data_version,
            checkpoints,
            _lock: lock,
        })
    }
}

/// How long (in frames of a page each) the log grows under load before the writer lets it
/// start again: 64 MiB of 4 KiB pages. Each start costs the writer a checkpoint of its own
/// (measured at 2–12 ms on an empty inbox, up to about 120 ms on one holding a million
/// deliveries), so it should not come too often; while the log stays within the length it
/// has reached before, its file is written over, not extended.
const RESTART_LOG_ABOVE: i64 = 16_384;

/// How often the checkpoint thread copies committed log pages into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// A thread that checkpoints the write-ahead log (PASSIVE: it never blocks the writer) until
/// dropped.
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Set by the thread after a pass over a log longer than its limit, taken by the writer
    /// (see [`SqliteBackend::restart_log_if_due`]).
    caught_up: Arc<AtomicBool>,
}

/// What `PRAGMA wal_checkpoint` reports: whether it was kept from finishing, the frames in
/// the log, and how many of them are now copied into the database.
fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<(bool, i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
    })
}

impl Checkpointer {
    /// Starts the thread, which flags each pass over a log longer than `restart_above`
    /// frames.
    fn start(path: &Path, restart_above: i64) -> Result<Checkpointer, InboxError> {
        let at = |err| inbox::sqlite_failed(path, err);
        let conn = Connection::open(path).map_err(at)?;
        conn.busy_timeout(Duration::from_secs(1)).map_err(at)?;
        conn.execute_batch("PRAGMA synchronous = FULL;")
            .map_err(at)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let caught_up = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&caught_up);
        let thread = std::thread::Builder::new()
            .name("webhook-inbox-checkpoint".to_owned())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    match passive_checkpoint(&conn) {
                        // Copied up to what the writer committed during the pass.
                        Ok((_, log, copied)) if log > restart_above && copied > 0 => {
                            flag.store(true, Ordering::Release);
                        }
                        Ok(_) => {}
                        Err(err) => {
                            tracing::warn!(error = %err, "the inbox could not checkpoint its log");
                        }
                    }
                }
            })?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
            caught_up,
        })
    }

    /// Whether the thread has caught up on a long log since the last call.
    fn take_caught_up(&self) -> bool {
        self.caught_up.swap(false, Ordering::AcqRel)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How long to wait for a server that is still exiting to release the inbox.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// The inbox's lock file (`<inbox>.lock`), locked while a server runs on the inbox.
///
/// Dropping it removes the file while still holding it, then releases it, so a clean exit
/// leaves nothing behind. The operating system releases the lock when the process ends,
/// however it ends; a file left by a crash is taken by the next start.
#[derive(Debug)]
struct InboxLock {
    file: File,
    path: PathBuf,
}

impl InboxLock {
    /// Takes the lock, waiting briefly for a server that is still exiting.
    fn take(inbox: &Path) -> Result<InboxLock, InboxError> {
        let path = inbox::with_suffix(inbox, ".lock");
        let deadline = Instant::now() + LOCK_WAIT;
        match acquire(&path, deadline, open_lock_file) {
            Ok(Some(file)) => Ok(InboxLock { file, path }),
            Ok(None) => Err(InboxError::InUse(inbox.to_owned())),
            Err(source) => Err(InboxError::LockFile { path, source }),
        }
    }
}

impl Drop for InboxLock {
    fn drop(&mut self) {
        // Off unix an open file cannot be removed from under another process's handle, so
        // the file stays there.
        let ours = cfg!(unix) && names(&self.path, &self.file).unwrap_or(false);
        if !ours {
            return;
        }
        if let Err(err) = std::fs::remove_file(&self.path) {
            tracing::debug!(error = %err, path = %self.path.display(), "the inbox's lock file stays");
        }
        // Closing the file, next, releases the lock.
    }
}

/// Locks the file at `path` (opened, or created, with `open`); `None` when another process
/// still holds it at `deadline`.
///
/// A server removes the file before it releases it, so the lock this one then gets may be on
/// a file the path no longer names, while a third server has created a new file and holds
/// that. Such a lock guards nothing: the path is checked to still name the locked file, and
/// opened again when it does not.
fn acquire(
    path: &Path,
    deadline: Instant,
    mut open: impl FnMut(&Path) -> std::io::Result<File>,
) -> std::io::Result<Option<File>> {
    loop {
        let file = open(path)?;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(err)) => return Err(err),
            }
        }
        if names(path, &file)? {
            return Ok(Some(file));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
    }
}

/// Opens the lock file, creating it readable and writable by its owner only.
fn open_lock_file(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Whether `path` names `file` (the same device and inode); false when nothing is there.
#[cfg(unix)]
fn names(path: &Path, file: &File) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt as _;
    let held = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(named) => Ok(named.dev() == held.dev() && named.ino() == held.ino()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err),
    }
}

/// Off unix the lock file is never removed, so the path always names the file opened.
#[cfg(not(unix))]
fn names(_path: &Path, _file: &File) -> std::io::Result<bool> {
    Ok(true)
}

impl SqliteBackend {
    fn begin(&mut self) -> rusqlite::Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")
    }

    fn commit(&mut self) -> rusqlite::Result<()> {
        self.conn.execute_batch("COMMIT")
    }

    /// Lets the next commit write the log from its start again, once the checkpoint thread
    /// has copied most of a long log.
    ///
    /// The checkpoint thread copies the log into the database, but while commits keep
    /// arriving one always lands during its copy, so the log is never wholly copied and SQLite
    /// never starts it again: it would grow for as long as the load lasts, and every commit
    /// would extend the file (new blocks to allocate and zero, a new size to sync). Run here,
    /// between two transactions of the only writer and right after the thread's pass, a
    /// checkpoint has only the last few commits left to copy, and nothing new can arrive
    /// during it; once it has copied all, the next commit writes over the log's first frames.
    /// The answers of the transaction just committed are already sent.
    fn restart_log_if_due(&mut self) {
        if !self.checkpoints.take_caught_up() {
            return;
        }
        match passive_checkpoint(&self.conn) {
            Ok((busy, log, copied)) => {
                tracing::trace!(busy, log, copied, "the writer checkpointed the inbox's log");
            }
            Err(err) => tracing::debug!(error = %err, "the writer could not checkpoint the log"),
        }
    }

    fn rollback(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    fn insert(
        &mut self,
        key: &DeliveryKey,
        body: &Bytes,
        state: DeliveryState,
        now: i64,
    ) -> rusqlite::Result<Inserted> {
        let next = (state == DeliveryState::Pending).then_some(now);
        let mut insert = self.conn.prepare_cached(
            "INSERT INTO deliveries (key, state, received_at, updated_at, next_attempt_at, body) \
             VALUES (?1, ?2, ?3, ?3, ?4, ?5) ON CONFLICT (key) DO NOTHING",
        )?;
        let inserted = insert.execute(params![
            &key.as_bytes()[..],
            state.as_str(),
            now,
            next,
            &body[..]
        ])?;
        if inserted == 1 {
            return Ok(Inserted::New(self.conn.last_insert_rowid()));
        }
        let mut find = self
            .conn
            .prepare_cached("SELECT id FROM deliveries WHERE key = ?1")?;
        let id = find.query_row([&key.as_bytes()[..]], |row| row.get(0))?;
        Ok(Inserted::Duplicate(id))
    }

    fn finish(
        &mut self,
        id: i64,
        attempt: u32,
        outcome: &Outcome,
        now: i64,
    ) -> rusqlite::Result<usize> {
        let (state, next, error) = match outcome {
            Outcome::Done => (DeliveryState::Done, None, None),
            Outcome::Retry { at, error } => {
                (DeliveryState::Pending, Some(*at), Some(error.as_str()))
            }
            Outcome::Dead { error } => (DeliveryState::Dead, None, Some(error.as_str())),
        };
        let mut stmt = self.conn.prepare_cached(
            "UPDATE deliveries SET state = ?2, attempts = ?3, next_attempt_at = ?4, \
             last_error = COALESCE(?5, last_error), updated_at = ?6 \
             WHERE id = ?1 AND state = 'pending' AND attempts = ?3 - 1",
        )?;
        let changed = stmt.execute(params![id, state.as_str(), attempt, next, error, now])?;
        drop(stmt);
        if changed == 1 {
            self.record_attempt(id, attempt, outcome, now)?;
        }
        Ok(changed)
    }

    /// Adds an applied outcome to the delivery's attempts, in the outcome's transaction.
    fn record_attempt(
        &self,
        id: i64,
        attempt: u32,
        outcome: &Outcome,
        now: i64,
    ) -> rusqlite::Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO attempts (delivery_id, number, finished_at, outcome, retry_at, error) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        stmt.execute(params![
            id,
            attempt,
            now,
            outcome.as_str(),
            outcome.retry_at(),
            outcome.error()
        ])?;
        Ok(())
    }

    fn prune(&mut self, before: i64) -> rusqlite::Result<usize> {
        let mut attempts = self.conn.prepare_cached(
            "DELETE FROM attempts WHERE delivery_id IN \
             (SELECT id FROM deliveries WHERE state = 'done' AND updated_at < ?1)",
        )?;
        attempts.execute([before])?;
        let mut stmt = self
            .conn
            .prepare_cached("DELETE FROM deliveries WHERE state = 'done' AND updated_at < ?1")?;
        stmt.execute([before])
    }

    /// Counts every state again when another connection has committed since the last full
    /// count; called inside the writer's transaction, which nothing else can commit beside.
    fn recount_if_changed(&mut self, counts: &mut StateCounts) -> rusqlite::Result<()> {
        let version = data_version(&self.conn)?;
        if version != self.data_version {
            *counts = inbox::counts(&self.conn)?;
            self.data_version = version;
        }
        Ok(())
    }
}

fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA data_version", [], |row| row.get(0))
}

/// The state an outcome leaves a pending delivery in.
fn outcome_state(outcome: &Outcome) -> DeliveryState {
    match outcome {
        Outcome::Done => DeliveryState::Done,
        Outcome::Retry { .. } => DeliveryState::Pending,
        Outcome::Dead { .. } => DeliveryState::Dead,
    }
}

/// Moves `by` deliveries into (or, negative, out of) `state` in `counts`.
fn shift(counts: &mut StateCounts, state: DeliveryState, by: i64) {
    counts.add(Some(state), by);
}

/// The leases of claimed deliveries, by rowid, shared by the claims (on their own reading
/// connection) and the writer.
///
/// Why a claim that reads beside the writer is still right:
///
/// - it never hands out an uncommitted delivery: its connection sees committed rows only;
/// - it never hands out a delivery twice while leased: every claim takes this lock before
///   its query and leases what it hands out before letting go, so claims are serialised on
///   one map, and a leased row is skipped;
/// - it sees every outcome queued before it: a delivery's lease is not ended when its outcome
///   is queued but after the writer's transaction holding it is over (committed or not). A
///   claim that finds the lease still there skips the delivery; one that finds it gone took
///   the lock after the writer ended it, hence after the commit, and its query (a read
///   transaction started then) sees the outcome. A failed commit leaves the delivery
///   pending, claimable again: at least once.
#[derive(Debug, Default)]
struct Leases(HashMap<i64, Lease>);

#[derive(Debug, Clone, Copy)]
enum Lease {
    /// Handed out, until this deadline (ms since the Unix epoch).
    Held(i64),
    /// Its outcome is queued; it ends when the writer's transaction does. A retry is due
    /// again at this time.
    Finishing(Option<i64>),
}

impl Leases {
    /// Marks a delivery's outcome as queued: its lease outlives its deadline until the
    /// writer ends it. A delivery not leased (its lease ran out) is left alone.
    fn finishing(&mut self, id: i64, outcome: &Outcome) {
        if let Some(lease) = self.0.get_mut(&id) {
            let retry_at = match outcome {
                Outcome::Retry { at, .. } => Some(*at),
                Outcome::Done | Outcome::Dead { .. } => None,
            };
            *lease = Lease::Finishing(retry_at);
        }
    }

    fn end(&mut self, id: i64) {
        self.0.remove(&id);
    }

    /// When the claims should look again for what the leases hold back: the first deadline,
    /// or (soon after `now` at the earliest) a retry waiting for its commit.
    fn next_due(&self, now: i64) -> Option<i64> {
        self.0
            .values()
            .filter_map(|lease| match *lease {
                Lease::Held(until) => Some(until),
                Lease::Finishing(retry_at) => retry_at.map(|at| at.max(now.saturating_add(1))),
            })
            .min()
    }
}

/// The indexes the dashboard reads by: newest first within a state, and by time received
/// within a state. Created when a server opens the inbox, so an older inbox gains them.
const PAGE_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS deliveries_by_state_id ON deliveries (state, id);
CREATE INDEX IF NOT EXISTS deliveries_by_state_received ON deliveries (state, received_at);
";

/// Every state a row may be in, for reading the index by state and time in every state.
const ALL_STATES: &str = "('pending', 'done', 'dead', 'undecodable')";

/// Up to `limit` rows in the state and time range `(state, from, before)` with ids below
/// `below` (any when `None`), newest first.
fn page_chunk(
    conn: &Connection,
    (state, from, before): (StateFilter, Option<i64>, Option<i64>),
    below: Option<i64>,
    limit: usize,
) -> rusqlite::Result<Vec<InboxEntry>> {
    let mut sql = format!("SELECT {} FROM deliveries WHERE 1 = 1", inbox::COLUMNS);
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut condition = |sql: &mut String, column: &str, value: rusqlite::types::Value| {
        args.push(value);
        sql.push_str(&format!(" AND {column} ?{}", args.len()));
    };
    if let Some(below) = below {
        condition(&mut sql, "id <", below.into());
    }
    if let StateFilter::Only(state) = state {
        condition(&mut sql, "state =", state.as_str().to_owned().into());
    }
    // `+received_at`: the time is checked on each row met newest first by id, rather than
    // the index by time giving every row in the range to be sorted for each chunk.
    if let Some(from) = from {
        condition(&mut sql, "+received_at >=", from.into());
    }
    if let Some(before) = before {
        condition(&mut sql, "+received_at <", before.into());
    }
    args.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", args.len()));
    let mut stmt = conn.prepare_cached(&sql)?;
    stmt.query_map(rusqlite::params_from_iter(args), inbox::entry_from_row)?
        .collect()
}

/// When deliveries arrived, as of `now`, from the index by state and time received.
fn activity(conn: &Connection, now: i64) -> rusqlite::Result<Activity> {
    let mut activity = Activity::default();
    let newest_per_state = ["pending", "done", "dead", "undecodable"]
        .map(|state| {
            format!("SELECT MAX(received_at) AS at FROM deliveries WHERE state = '{state}'")
        })
        .join(" UNION ALL ");
    activity.last_received_at = conn
        .prepare_cached(&format!("SELECT MAX(at) FROM ({newest_per_state})"))?
        .query_row([], |row| row.get(0))?;
    activity.oldest_pending_at = conn
        .prepare_cached("SELECT MIN(received_at) FROM deliveries WHERE state = 'pending'")?
        .query_row([], |row| row.get(0))?;
    let mut per_minute = conn.prepare_cached(&format!(
        "SELECT (?1 - received_at) / 60000, COUNT(*) FROM deliveries \
         WHERE state IN {ALL_STATES} AND received_at > ?1 - 3600000 AND received_at <= ?1 \
         GROUP BY 1"
    ))?;
    let mut rows = per_minute.query([now])?;
    while let Some(row) = rows.next()? {
        let count: i64 = row.get(1)?;
        activity.add_minute(row.get(0)?, u32::try_from(count).unwrap_or(u32::MAX));
    }
    Ok(activity)
}

/// The claims' connection: the inbox file again, only read.
fn open_reader(path: &Path) -> Result<Connection, InboxError> {
    let at = |err| inbox::sqlite_failed(path, err);
    let conn = Connection::open(path).map_err(at)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(at)?;
    conn.execute_batch("PRAGMA query_only = ON; PRAGMA cache_size = -8192;")
        .map_err(at)?;
    Ok(conn)
}

/// Up to `limit` due pending deliveries that `leases` does not hold, each now leased until
/// `lease_until`. See [`Leases`] for why this may read beside the writer.
fn claim(
    conn: &Connection,
    leases: &mut Leases,
    now: i64,
    limit: usize,
    lease_until: i64,
) -> rusqlite::Result<Claim> {
    leases
        .0
        .retain(|_, lease| !matches!(lease, Lease::Held(until) if *until <= now));
    let mut claim = Claim::default();
    let wanted = i64::try_from(limit + leases.0.len()).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(
        "SELECT id, key, body, attempts FROM deliveries \
         WHERE state = 'pending' AND next_attempt_at <= ?1 \
         ORDER BY next_attempt_at, id LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![now, wanted])?;
    while let Some(row) = rows.next()? {
        if claim.due.len() == limit {
            break;
        }
        let id: i64 = row.get(0)?;
        if leases.0.contains_key(&id) {
            continue;
        }
        let key: Vec<u8> = row.get(1)?;
        let body: Vec<u8> = row.get(2)?;
        let attempts: i64 = row.get(3)?;
        let Ok(key) = <[u8; 32]>::try_from(key.as_slice()) else {
            continue;
        };
        claim.due.push(Claimed {
            id: delivery_id(id),
            key: DeliveryKey::from_bytes(key),
            body: Bytes::from(body),
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        });
    }
    drop(rows);
    for claimed in &claim.due {
        if let Some(id) = rowid(&claimed.id) {
            leases.0.insert(id, Lease::Held(lease_until));
        }
    }
    let mut next = conn.prepare_cached(
        "SELECT MIN(next_attempt_at) FROM deliveries \
         WHERE state = 'pending' AND next_attempt_at > ?1",
    )?;
    let next_due: Option<i64> = next.query_row([now], |row| row.get(0))?;
    claim.next_due = match (next_due, leases.next_due(now)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(claim)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert_command(
        body: &'static [u8],
    ) -> (Command, oneshot::Receiver<Result<Stored, InboxError>>) {
        let (reply, answer) = oneshot::channel();
        let command = Command::Insert {
            delivery: NewDelivery::new(
                DeliveryKey::of(body),
                Bytes::from_static(body),
                DeliveryState::Pending,
            ),
            now: 1_000,
            reply,
        };
        (command, answer)
    }

    #[test]
    fn commits_queued_inserts_in_one_transaction_and_spots_duplicates_within_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.db");
        let commits = Counter::default();
        let backend = SqliteBackend::open(&path).unwrap();
        let (tx, rx) = mpsc::channel(QUEUE);
        let bodies: Vec<&'static [u8]> = (0..100)
            .map(|n| &*Box::leak(format!("{{\"n\":{n}}}").into_bytes().into_boxed_slice()))
            .collect();
        let mut answers = Vec::new();
        for body in bodies.iter().chain([&bodies[0]]) {
            let (command, answer) = insert_command(body);
            tx.try_send(command).unwrap();
            answers.push(answer);
        }
        drop(tx);
        run(backend, rx, &commits);
        assert_eq!(commits.get(), 1);
        let results: Vec<Stored> = answers
            .into_iter()
            .map(|mut answer| answer.try_recv().unwrap().unwrap())
            .collect();
        assert!(results[..100].iter().all(|it| matches!(it, Stored::New(_))));
        assert_eq!(results[100], Stored::Duplicate(DeliveryId::from(1)));
        let inbox = Inbox::open(&path).unwrap();
        assert_eq!(inbox.counts().unwrap().pending, 100);
    }

    #[tokio::test]
    async fn claims_leave_out_deliveries_whose_insert_is_not_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.db");
        let store = SqliteStore::open(&path, Counter::default()).unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let body = b"{\"n\":1}";
        other
            .execute(
                "INSERT INTO deliveries (key, state, received_at, updated_at, next_attempt_at, body) \
                 VALUES (?1, 'pending', 1000, 1000, 1000, ?2)",
                params![&DeliveryKey::of(body).as_bytes()[..], &body[..]],
            )
            .unwrap();
        let claim = store.claim(1_000, 10, 2_000).await.unwrap();
        assert!(
            claim.due.is_empty(),
            "an uncommitted delivery was handed out"
        );
        other.execute_batch("COMMIT").unwrap();
        let claim = store.claim(1_000, 10, 2_000).await.unwrap();
        assert_eq!(claim.due.len(), 1);
        store.close().await;
    }

    #[test]
    fn a_lease_whose_outcome_is_queued_lasts_until_the_writer_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.db");
        let mut backend = SqliteBackend::open(&path).unwrap();
        let body = Bytes::from_static(b"{}");
        backend
            .insert(&DeliveryKey::of(&body), &body, DeliveryState::Pending, 100)
            .unwrap();
        let conn = open_reader(&path).unwrap();
        let mut leases = Leases::default();
        let claimed = claim(&conn, &mut leases, 100, 10, 200).unwrap();
        assert_eq!(claimed.due.len(), 1);
        assert!(
            claim(&conn, &mut leases, 150, 10, 300)
                .unwrap()
                .due
                .is_empty()
        );
        // Its outcome is queued (not committed yet): past the deadline it is still held.
        leases.finishing(1, &Outcome::Done);
        assert!(
            claim(&conn, &mut leases, 500, 10, 600)
                .unwrap()
                .due
                .is_empty()
        );
        // The commit failed: the writer ends the lease and the delivery runs again.
        leases.end(1);
        assert_eq!(
            claim(&conn, &mut leases, 500, 10, 600).unwrap().due.len(),
            1
        );
    }

    #[test]
    fn the_writer_leaves_checkpoints_to_its_own_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.db");
        let mut sqlite = SqliteBackend::open(&path).unwrap();
        let autocheckpoint: i64 = sqlite
            .conn
            .query_row("PRAGMA wal_autocheckpoint", [], |row| row.get(0))
            .unwrap();
        assert_eq!(autocheckpoint, 0);
        let before = std::fs::metadata(&path).unwrap().len();
        sqlite.begin().unwrap();
        for n in 0..200 {
            let body = Bytes::from(vec![b'x'; 1000 + n]);
            sqlite
                .insert(&DeliveryKey::of(&body), &body, DeliveryState::Pending, 100)
                .unwrap();
        }
        sqlite.commit().unwrap();
        // The commit lands in the log; the database file grows once a checkpoint copies it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&path).unwrap().len() <= before {
            assert!(Instant::now() < deadline, "the log was never checkpointed");
            std::thread::yield_now();
        }
        drop(sqlite);
    }

    #[test]
    fn the_log_starts_again_while_commits_keep_arriving() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.db");
        let wal = inbox::with_suffix(&path, "-wal");
        // A limit of 64 frames (256 KiB) instead of 64 MiB, so a short test passes it often.
        let backend = SqliteBackend::open_with_log_limit(&path, 64).unwrap();
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = std::thread::spawn(move || run(backend, rx, &Counter::default()));
        // Commits one after another, never a pause between them, for two seconds: twenty
        // passes of the checkpoint thread. Each body of 4 KiB takes a frame of its own at the
        // least, so a log that never started again would be longer than all of them.
        let until = Instant::now() + Duration::from_secs(2);
        let (mut written, mut largest) = (0_u64, 0_u64);
        let mut n = 0_u64;
        while Instant::now() < until {
            let answers: Vec<_> = (0..16)
                .map(|_| {
                    n += 1;
                    let mut body = format!("{{\"n\":{n},\"pad\":\"").into_bytes();
                    body.resize(4096, b'x');
                    let (reply, answer) = oneshot::channel();
                    let delivery =
                        NewDelivery::new(DeliveryKey::of(&body), body.into(), DeliveryState::Done);
                    tx.blocking_send(Command::Insert {
                        delivery,
                        now: 1_000,
                        reply,
                    })
                    .unwrap();
                    answer
                })
                .collect();
            for answer in answers {
                assert!(matches!(
                    answer.blocking_recv().unwrap(),
                    Ok(Stored::New(_))
                ));
                written += 4096;
            }
            largest = largest.max(std::fs::metadata(&wal).unwrap().len());
        }
        drop(tx);
        writer.join().unwrap();
        assert!(
            largest < written / 2,
            "the log reached {largest} bytes for {written} bytes of bodies"
        );
    }

    /// Opens the lock file as [`open_lock_file`] does; the first time, `meanwhile` runs just
    /// after, as another server's exit (and start) could.
    #[cfg(unix)]
    fn opener(
        mut meanwhile: impl FnMut(&Path),
    ) -> (
        impl FnMut(&Path) -> std::io::Result<File>,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let opened = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = opened.clone();
        let open = move |path: &Path| {
            let file = open_lock_file(path)?;
            if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                meanwhile(path);
            }
            Ok(file)
        };
        (open, opened)
    }

    #[cfg(unix)]
    #[test]
    fn takes_the_new_lock_file_when_the_one_it_opened_was_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.db.lock");
        // The holder exits cleanly between this server's open and its lock.
        let (open, opened) = opener(|path| std::fs::remove_file(path).unwrap());
        let deadline = Instant::now() + Duration::from_secs(1);
        let file = acquire(&path, deadline, open).unwrap().expect("the lock");
        assert_eq!(opened.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(
            names(&path, &file).unwrap(),
            "locked a file the path no longer names"
        );
        let other = open_lock_file(&path).unwrap();
        assert!(
            matches!(other.try_lock(), Err(TryLockError::WouldBlock)),
            "the lock file at the path is not locked"
        );
    }

    #[cfg(unix)]
    #[test]
    fn waits_for_the_server_holding_the_file_that_replaced_the_one_it_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.db.lock");
        // The holder exits cleanly and a third server creates a new file and locks it, all
        // between this server's open and its lock.
        let third = std::sync::Arc::new(Mutex::new(None));
        let held = third.clone();
        let (open, opened) = opener(move |path| {
            std::fs::remove_file(path).unwrap();
            let file = open_lock_file(path).unwrap();
            file.try_lock().unwrap();
            *held.lock().unwrap() = Some(file);
        });
        let deadline = Instant::now() + Duration::from_millis(200);
        let taken = acquire(&path, deadline, open).unwrap();
        assert!(
            taken.is_none(),
            "ran beside the server holding the new file"
        );
        assert_eq!(opened.load(std::sync::atomic::Ordering::SeqCst), 2);
        drop(third);
    }

    #[test]
    fn dropping_the_lock_removes_its_file_and_frees_the_inbox() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("inbox.db");
        let lock_path = inbox::with_suffix(&inbox, ".lock");
        let lock = InboxLock::take(&inbox).unwrap();
        assert!(matches!(InboxLock::take(&inbox), Err(InboxError::InUse(_))));
        drop(lock);
        assert_eq!(lock_path.exists(), !cfg!(unix));
        drop(InboxLock::take(&inbox).unwrap());
    }
}
