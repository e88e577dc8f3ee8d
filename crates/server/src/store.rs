//! The server's side of the inbox: one writer thread that owns the database and commits
//! queued writes in groups (one transaction and one disk sync per batch).
//!
//! Requests and workers talk to it through a channel; each command carries a oneshot for its
//! answer. Writes are answered once the batch holding them is committed; claims are answered
//! at once, in queue order, and never hand out a delivery stored in the uncommitted batch.
//! The in-memory store applies the same batches with the same code, one command at a time
//! under a lock in the caller's task, so both modes behave alike without a thread hand-off
//! per request.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use preservica_webhook_core::DeliveryKey;
use prometheus_client::metrics::counter::Counter;
use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

use crate::config::InboxConfig;
use crate::error::InboxError;
use crate::inbox::{self, DeliveryState, StateCounts};

/// The most commands applied in one transaction.
const MAX_BATCH: usize = 256;
/// How many commands may wait for the writer before senders wait too.
const QUEUE: usize = 4096;

/// A handle on the writer thread (or the in-memory store); cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    inner: Inner,
}

#[derive(Debug, Clone)]
enum Inner {
    /// The database's writer thread.
    Thread(mpsc::Sender<Command>),
    /// The in-memory store, applied by the caller under a lock: it never waits for a disk,
    /// and handing each command to another thread cost more than applying it.
    Memory(Arc<Mutex<Memory>>),
}

#[derive(Debug)]
struct Memory {
    backend: MemoryBackend,
    batch: Vec<Command>,
    written: Vec<Written>,
    commits: Counter,
    closed: bool,
}

/// The writer thread, to join when closing (none for the in-memory store).
#[derive(Debug)]
pub(crate) struct StoreThread(Option<JoinHandle<()>>);

/// The store could not do what was asked (the error is logged where it happened).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unavailable;

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// Stored now, with this id.
    New(i64),
    /// The same body was stored before, with this id.
    Duplicate(i64),
}

/// A pending delivery handed out for processing.
#[derive(Debug)]
pub(crate) struct Claimed {
    pub(crate) id: i64,
    pub(crate) key: DeliveryKey,
    pub(crate) body: Bytes,
    pub(crate) attempts: u32,
}

/// Due deliveries, and when the next one not yet due is due.
#[derive(Debug, Default)]
pub(crate) struct Claim {
    pub(crate) due: Vec<Claimed>,
    pub(crate) next_due: Option<i64>,
}

/// How a handler call ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    Done,
    Retry { at: i64, error: String },
    Dead { error: String },
}

type Reply<T> = oneshot::Sender<Result<T, Unavailable>>;

#[derive(Debug)]
enum Command {
    Insert {
        key: DeliveryKey,
        body: Bytes,
        state: DeliveryState,
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
    Claim {
        now: i64,
        limit: usize,
        skip: Vec<i64>,
        reply: Reply<Claim>,
    },
    Counts {
        reply: Reply<StateCounts>,
    },
    Close,
}

impl Store {
    /// Opens the inbox and starts its writer thread.
    /// Opens the inbox and starts its writer thread, which counts its commits in `commits`.
    pub(crate) fn open(
        config: &InboxConfig,
        commits: Counter,
    ) -> Result<(Store, StoreThread), InboxError> {
        match config {
            InboxConfig::Sqlite(path) => {
                let (tx, rx) = mpsc::channel(QUEUE);
                let backend = SqliteBackend::open(path)?;
                let thread = spawn(backend, rx, commits)?;
                Ok((
                    Store {
                        inner: Inner::Thread(tx),
                    },
                    StoreThread(Some(thread)),
                ))
            }
            InboxConfig::InMemory => {
                let memory = Memory {
                    backend: MemoryBackend::default(),
                    batch: Vec::with_capacity(1),
                    written: Vec::with_capacity(1),
                    commits,
                    closed: false,
                };
                Ok((
                    Store {
                        inner: Inner::Memory(Arc::new(Mutex::new(memory))),
                    },
                    StoreThread(None),
                ))
            }
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, Unavailable> {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply)).await?;
        answer.await.map_err(|_| Unavailable)?
    }

    async fn send(&self, command: Command) -> Result<(), Unavailable> {
        match &self.inner {
            Inner::Thread(tx) => tx.send(command).await.map_err(|_| Unavailable),
            Inner::Memory(memory) => {
                let mut memory = memory.lock().unwrap_or_else(PoisonError::into_inner);
                if memory.closed {
                    return Err(Unavailable);
                }
                let Memory {
                    backend,
                    batch,
                    written,
                    commits,
                    closed,
                } = &mut *memory;
                batch.push(command);
                *closed = apply(backend, batch, written, commits);
                Ok(())
            }
        }
    }

    /// Stores a verified delivery; answers once it is committed.
    pub(crate) async fn insert(
        &self,
        key: DeliveryKey,
        body: Bytes,
        state: DeliveryState,
    ) -> Result<Stored, Unavailable> {
        let now = inbox::now_millis();
        self.ask(|reply| Command::Insert {
            key,
            body,
            state,
            now,
            reply,
        })
        .await
    }

    /// Queues how a handler call ended without waiting for its commit. Commands are applied
    /// in the order they are queued, so any claim queued after this one sees the outcome; if
    /// the commit fails the delivery stays pending and runs again (at least once).
    pub(crate) async fn finish_queued(
        &self,
        id: i64,
        attempt: u32,
        outcome: Outcome,
    ) -> Result<(), Unavailable> {
        let now = inbox::now_millis();
        let (reply, _unread) = oneshot::channel();
        self.send(Command::Finish {
            id,
            attempt,
            outcome,
            now,
            reply,
        })
        .await
    }

    /// Deletes processed deliveries last updated before `before`.
    pub(crate) async fn prune(&self, before: i64) -> Result<usize, Unavailable> {
        self.ask(|reply| Command::Prune { before, reply }).await
    }

    /// Up to `limit` pending deliveries due at `now`, leaving out `skip` (already running).
    pub(crate) async fn claim(
        &self,
        now: i64,
        limit: usize,
        skip: Vec<i64>,
    ) -> Result<Claim, Unavailable> {
        self.ask(|reply| Command::Claim {
            now,
            limit,
            skip,
            reply,
        })
        .await
    }

    /// How many deliveries are in each state.
    pub(crate) async fn counts(&self) -> Result<StateCounts, Unavailable> {
        self.ask(|reply| Command::Counts { reply }).await
    }

    /// Asks the writer to finish its queue and close the database.
    pub(crate) async fn close(&self) {
        let _ = self.send(Command::Close).await;
    }
}

impl StoreThread {
    /// Waits for the writer thread to finish (after [`Store::close`] or the last handle is
    /// dropped).
    pub(crate) async fn join(self) {
        if let Some(thread) = self.0 {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

fn spawn(
    backend: impl Backend,
    rx: mpsc::Receiver<Command>,
    commits: Counter,
) -> Result<JoinHandle<()>, InboxError> {
    Ok(std::thread::Builder::new()
        .name("webhook-inbox".to_owned())
        .spawn(move || run(backend, rx, &commits))?)
}

/// What the writer thread needs from a database.
trait Backend: Send + 'static {
    fn begin(&mut self) -> rusqlite::Result<()>;
    fn commit(&mut self) -> rusqlite::Result<()>;
    fn rollback(&mut self);
    fn insert(
        &mut self,
        key: &DeliveryKey,
        body: &Bytes,
        state: DeliveryState,
        now: i64,
    ) -> rusqlite::Result<Stored>;
    fn finish(
        &mut self,
        id: i64,
        attempt: u32,
        outcome: &Outcome,
        now: i64,
    ) -> rusqlite::Result<usize>;
    fn prune(&mut self, before: i64) -> rusqlite::Result<usize>;
    /// Up to `limit` due pending deliveries with ids below `below` (those stored in the open
    /// transaction have higher ids, and are not handed out before they are committed).
    fn claim(
        &mut self,
        now: i64,
        limit: usize,
        skip: &[i64],
        below: i64,
    ) -> rusqlite::Result<Claim>;
    fn counts(&mut self) -> rusqlite::Result<StateCounts>;
}

/// A write applied in the current transaction, answered after the commit.
#[derive(Debug)]
enum Written {
    Insert(Reply<Stored>, Result<Stored, Unavailable>),
    Count(Reply<usize>, Result<usize, Unavailable>),
}

fn run(mut backend: impl Backend, mut rx: mpsc::Receiver<Command>, commits: &Counter) {
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
    backend: &mut impl Backend,
    batch: &mut Vec<Command>,
    written: &mut Vec<Written>,
    commits: &Counter,
) -> bool {
    let mut closing = false;
    let has_writes = batch.iter().any(Command::is_write);
    let began = if has_writes {
        backend.begin().map_err(|err| log_failure("begin", &err))
    } else {
        Ok(())
    };
    let mut reads: Vec<Reply<StateCounts>> = Vec::new();
    // The first id stored in this transaction: claims answered before the commit (so the
    // workers never wait for a disk sync) leave out everything from it on.
    let mut uncommitted_from = i64::MAX;
    for command in batch.drain(..) {
        match command {
            Command::Insert {
                key,
                body,
                state,
                now,
                reply,
            } => {
                let result = began.and_then(|()| {
                    backend
                        .insert(&key, &body, state, now)
                        .map_err(|err| log_failure("store a delivery", &err))
                });
                if let Ok(Stored::New(id)) = result {
                    uncommitted_from = uncommitted_from.min(id);
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
                let result = began.and_then(|()| {
                    backend
                        .finish(id, attempt, &outcome, now)
                        .map_err(|err| log_failure("record a handler outcome", &err))
                });
                written.push(Written::Count(reply, result));
            }
            Command::Prune { before, reply } => {
                let result = began.and_then(|()| {
                    backend
                        .prune(before)
                        .map_err(|err| log_failure("prune", &err))
                });
                written.push(Written::Count(reply, result));
            }
            Command::Claim {
                now,
                limit,
                skip,
                reply,
            } => {
                // Sees the outcomes queued before it (applied above, in this transaction);
                // if the commit then fails, those deliveries are pending again and are
                // claimed later: at least once.
                let result = backend
                    .claim(now, limit, &skip, uncommitted_from)
                    .map_err(|err| log_failure("claim deliveries", &err));
                let _ = reply.send(result);
            }
            Command::Close => closing = true,
            Command::Counts { reply } => reads.push(reply),
        }
    }
    let committed = match (has_writes, began) {
        (false, _) => true,
        (true, Err(Unavailable)) => false,
        (true, Ok(())) => match backend.commit() {
            Ok(()) => {
                commits.inc();
                true
            }
            Err(err) => {
                log_failure("commit", &err);
                backend.rollback();
                false
            }
        },
    };
    for write in written.drain(..) {
        match write {
            Written::Insert(reply, result) => {
                let _ =
                    reply.send(result.and_then(|it| committed.then_some(it).ok_or(Unavailable)));
            }
            Written::Count(reply, result) => {
                let _ =
                    reply.send(result.and_then(|it| committed.then_some(it).ok_or(Unavailable)));
            }
        }
    }
    for reply in reads {
        let result = backend
            .counts()
            .map_err(|err| log_failure("count deliveries", &err));
        let _ = reply.send(result);
    }
    closing
}

impl Command {
    fn is_write(&self) -> bool {
        matches!(
            self,
            Command::Insert { .. } | Command::Finish { .. } | Command::Prune { .. }
        )
    }
}

fn log_failure(what: &str, err: &rusqlite::Error) -> Unavailable {
    tracing::error!(error = %err, "the inbox could not {what}");
    Unavailable
}

struct SqliteBackend {
    conn: Connection,
    /// Dropped with the backend, which stops the checkpoint thread.
    _checkpoints: Checkpointer,
    /// Held while the server runs, so a second server cannot process the same inbox. Declared
    /// last, so it is removed and released after both connections are closed.
    _lock: InboxLock,
}

impl SqliteBackend {
    fn open(path: &Path) -> Result<SqliteBackend, InboxError> {
        inbox::create_private(path)?;
        let lock = InboxLock::take(path)?;
        let conn = inbox::open_for_server(path)?;
        // Checkpoints run on their own connection and thread, so no commit (and no answer
        // waiting for it) ever pays for copying the log back into the database; a bigger page
        // cache keeps the indexes' upper pages in memory.
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = -8192;")
            .map_err(|err| inbox::sqlite_failed(path, err))?;
        let checkpoints = Checkpointer::start(path)?;
        Ok(SqliteBackend {
            conn,
            _checkpoints: checkpoints,
            _lock: lock,
        })
    }
}

/// How often the checkpoint thread copies committed log pages into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// A thread that checkpoints the write-ahead log (PASSIVE: it never blocks the writer) until
/// dropped.
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Checkpointer, InboxError> {
        let at = |err| inbox::sqlite_failed(path, err);
        let conn = Connection::open(path).map_err(at)?;
        conn.busy_timeout(Duration::from_secs(1)).map_err(at)?;
        conn.execute_batch("PRAGMA synchronous = FULL;")
            .map_err(at)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("webhook-inbox-checkpoint".to_owned())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    let checkpoint =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    if let Err(err) = checkpoint {
                        tracing::warn!(error = %err, "the inbox could not checkpoint its log");
                    }
                }
            })?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
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

impl Backend for SqliteBackend {
    fn begin(&mut self) -> rusqlite::Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")
    }

    fn commit(&mut self) -> rusqlite::Result<()> {
        self.conn.execute_batch("COMMIT")
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
    ) -> rusqlite::Result<Stored> {
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
            return Ok(Stored::New(self.conn.last_insert_rowid()));
        }
        let mut find = self
            .conn
            .prepare_cached("SELECT id FROM deliveries WHERE key = ?1")?;
        let id = find.query_row([&key.as_bytes()[..]], |row| row.get(0))?;
        Ok(Stored::Duplicate(id))
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
             WHERE id = ?1 AND state = 'pending'",
        )?;
        stmt.execute(params![id, state.as_str(), attempt, next, error, now])
    }

    fn prune(&mut self, before: i64) -> rusqlite::Result<usize> {
        let mut stmt = self
            .conn
            .prepare_cached("DELETE FROM deliveries WHERE state = 'done' AND updated_at < ?1")?;
        stmt.execute([before])
    }

    fn claim(
        &mut self,
        now: i64,
        limit: usize,
        skip: &[i64],
        below: i64,
    ) -> rusqlite::Result<Claim> {
        let mut claim = Claim::default();
        let wanted = i64::try_from(limit + skip.len()).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, key, body, attempts FROM deliveries \
             WHERE state = 'pending' AND next_attempt_at <= ?1 AND id < ?3 \
             ORDER BY next_attempt_at, id LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![now, wanted, below])?;
        while let Some(row) = rows.next()? {
            if claim.due.len() == limit {
                break;
            }
            let id: i64 = row.get(0)?;
            if skip.contains(&id) {
                continue;
            }
            let key: Vec<u8> = row.get(1)?;
            let body: Vec<u8> = row.get(2)?;
            let attempts: i64 = row.get(3)?;
            let Ok(key) = <[u8; 32]>::try_from(key.as_slice()) else {
                continue;
            };
            claim.due.push(Claimed {
                id,
                key: key_from_bytes(key),
                body: Bytes::from(body),
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            });
        }
        drop(rows);
        let mut next = self.conn.prepare_cached(
            "SELECT MIN(next_attempt_at) FROM deliveries \
             WHERE state = 'pending' AND next_attempt_at > ?1",
        )?;
        claim.next_due = next.query_row([now], |row| row.get(0))?;
        Ok(claim)
    }

    fn counts(&mut self) -> rusqlite::Result<StateCounts> {
        inbox::counts(&self.conn)
    }
}

/// The delivery key from stored digest bytes.
fn key_from_bytes(bytes: [u8; 32]) -> DeliveryKey {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(64);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    DeliveryKey::from_hex(&text).unwrap_or_else(|_| DeliveryKey::of(&[]))
}

#[derive(Debug)]
struct MemoryRow {
    key: DeliveryKey,
    body: Bytes,
    state: DeliveryState,
    attempts: u32,
    next_attempt_at: Option<i64>,
    updated_at: i64,
}

#[derive(Debug, Default)]
struct MemoryBackend {
    rows: BTreeMap<i64, MemoryRow>,
    keys: HashMap<DeliveryKey, i64>,
    /// Pending rows by `(next_attempt_at, id)`, so a claim reads only what it hands out.
    pending: BTreeSet<(i64, i64)>,
    last_id: i64,
}

impl Backend for MemoryBackend {
    fn begin(&mut self) -> rusqlite::Result<()> {
        Ok(())
    }

    fn commit(&mut self) -> rusqlite::Result<()> {
        Ok(())
    }

    fn rollback(&mut self) {}

    fn insert(
        &mut self,
        key: &DeliveryKey,
        body: &Bytes,
        state: DeliveryState,
        now: i64,
    ) -> rusqlite::Result<Stored> {
        if let Some(id) = self.keys.get(key) {
            return Ok(Stored::Duplicate(*id));
        }
        self.last_id += 1;
        let id = self.last_id;
        self.keys.insert(*key, id);
        let next_attempt_at = (state == DeliveryState::Pending).then_some(now);
        if let Some(at) = next_attempt_at {
            self.pending.insert((at, id));
        }
        self.rows.insert(
            id,
            MemoryRow {
                key: *key,
                // A copy: the request's bytes are a slice of the connection's read buffer,
                // which a stored slice would keep alive whole.
                body: Bytes::copy_from_slice(body),
                state,
                attempts: 0,
                next_attempt_at,
                updated_at: now,
            },
        );
        Ok(Stored::New(id))
    }

    fn finish(
        &mut self,
        id: i64,
        attempt: u32,
        outcome: &Outcome,
        now: i64,
    ) -> rusqlite::Result<usize> {
        let Some(row) = self.rows.get_mut(&id) else {
            return Ok(0);
        };
        if row.state != DeliveryState::Pending {
            return Ok(0);
        }
        if let Some(at) = row.next_attempt_at {
            self.pending.remove(&(at, id));
        }
        row.attempts = attempt;
        row.updated_at = now;
        (row.state, row.next_attempt_at) = match outcome {
            Outcome::Done => (DeliveryState::Done, None),
            Outcome::Retry { at, .. } => (DeliveryState::Pending, Some(*at)),
            Outcome::Dead { .. } => (DeliveryState::Dead, None),
        };
        if let Some(at) = row.next_attempt_at {
            self.pending.insert((at, id));
        }
        Ok(1)
    }

    fn prune(&mut self, before: i64) -> rusqlite::Result<usize> {
        let old: Vec<i64> = self
            .rows
            .iter()
            .filter(|(_, row)| row.state == DeliveryState::Done && row.updated_at < before)
            .map(|(id, _)| *id)
            .collect();
        for id in &old {
            if let Some(row) = self.rows.remove(id) {
                self.keys.remove(&row.key);
            }
        }
        Ok(old.len())
    }

    fn claim(
        &mut self,
        now: i64,
        limit: usize,
        skip: &[i64],
        below: i64,
    ) -> rusqlite::Result<Claim> {
        let mut claim = Claim::default();
        let later = now.saturating_add(1);
        for &(_, id) in self.pending.range(..(later, i64::MIN)) {
            if claim.due.len() == limit {
                break;
            }
            if id >= below || skip.contains(&id) {
                continue;
            }
            if let Some(row) = self.rows.get(&id) {
                claim.due.push(Claimed {
                    id,
                    key: row.key,
                    body: row.body.clone(),
                    attempts: row.attempts,
                });
            }
        }
        claim.next_due = self
            .pending
            .range((later, i64::MIN)..)
            .next()
            .map(|&(at, _)| at);
        Ok(claim)
    }

    fn counts(&mut self) -> rusqlite::Result<StateCounts> {
        let mut counts = StateCounts::default();
        for row in self.rows.values() {
            counts.add(Some(row.state), 1);
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbox::Inbox;

    /// Counts commits, to see how writes are grouped.
    struct Counting<B> {
        inner: B,
        commits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl<B: Backend> Backend for Counting<B> {
        fn begin(&mut self) -> rusqlite::Result<()> {
            self.inner.begin()
        }
        fn commit(&mut self) -> rusqlite::Result<()> {
            self.commits
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.commit()
        }
        fn rollback(&mut self) {
            self.inner.rollback();
        }
        fn insert(
            &mut self,
            key: &DeliveryKey,
            body: &Bytes,
            state: DeliveryState,
            now: i64,
        ) -> rusqlite::Result<Stored> {
            self.inner.insert(key, body, state, now)
        }
        fn finish(
            &mut self,
            id: i64,
            attempt: u32,
            outcome: &Outcome,
            now: i64,
        ) -> rusqlite::Result<usize> {
            self.inner.finish(id, attempt, outcome, now)
        }
        fn prune(&mut self, before: i64) -> rusqlite::Result<usize> {
            self.inner.prune(before)
        }
        fn claim(
            &mut self,
            now: i64,
            limit: usize,
            skip: &[i64],
            below: i64,
        ) -> rusqlite::Result<Claim> {
            self.inner.claim(now, limit, skip, below)
        }
        fn counts(&mut self) -> rusqlite::Result<StateCounts> {
            self.inner.counts()
        }
    }

    fn insert_command(
        body: &'static [u8],
    ) -> (Command, oneshot::Receiver<Result<Stored, Unavailable>>) {
        let (reply, answer) = oneshot::channel();
        let command = Command::Insert {
            key: DeliveryKey::of(body),
            body: Bytes::from_static(body),
            state: DeliveryState::Pending,
            now: 1_000,
            reply,
        };
        (command, answer)
    }

    #[test]
    fn commits_queued_inserts_in_one_transaction_and_spots_duplicates_within_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.db");
        let commits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let backend = Counting {
            inner: SqliteBackend::open(&path).unwrap(),
            commits: commits.clone(),
        };
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
        run(backend, rx, &Counter::default());
        assert_eq!(commits.load(std::sync::atomic::Ordering::SeqCst), 1);
        let results: Vec<Stored> = answers
            .into_iter()
            .map(|mut answer| answer.try_recv().unwrap().unwrap())
            .collect();
        assert!(results[..100].iter().all(|it| matches!(it, Stored::New(_))));
        assert_eq!(results[100], Stored::Duplicate(1));
        let inbox = Inbox::open(&path).unwrap();
        assert_eq!(inbox.counts().unwrap().pending, 100);
    }

    #[test]
    fn claims_answered_before_the_commit_leave_out_deliveries_stored_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.db");
        let (tx, rx) = mpsc::channel(QUEUE);
        let (first, stored_first) = insert_command(b"{\"n\":1}");
        tx.try_send(first).unwrap();
        let (reply, first_claim) = oneshot::channel();
        tx.try_send(Command::Claim {
            now: 1_000,
            limit: 10,
            skip: Vec::new(),
            reply,
        })
        .unwrap();
        drop(tx);
        run(SqliteBackend::open(&path).unwrap(), rx, &Counter::default());
        let Ok(Ok(Stored::New(id))) = stored_first.blocking_recv() else {
            panic!("the delivery was not stored");
        };
        let claim = first_claim.blocking_recv().unwrap().unwrap();
        assert!(
            claim.due.is_empty(),
            "an uncommitted delivery was handed out"
        );

        let mut backend = SqliteBackend::open(&path).unwrap();
        let claim = backend.claim(1_000, 10, &[], i64::MAX).unwrap();
        assert_eq!(claim.due.iter().map(|it| it.id).collect::<Vec<_>>(), [id]);
    }

    fn exercise(backend: &mut dyn Backend) {
        let mut ids = Vec::new();
        for (n, state) in [
            DeliveryState::Pending,
            DeliveryState::Pending,
            DeliveryState::Pending,
            DeliveryState::Pending,
            DeliveryState::Undecodable,
        ]
        .into_iter()
        .enumerate()
        {
            let body = Bytes::from(format!("body {n}"));
            let Stored::New(id) = backend
                .insert(&DeliveryKey::of(&body), &body, state, 100)
                .unwrap()
            else {
                panic!("new body stored as a duplicate");
            };
            ids.push(id);
        }
        // Claims: due, oldest first, leaving out running ones; never undecodable.
        let claim = backend.claim(100, 10, &[ids[1]], i64::MAX).unwrap();
        let claimed: Vec<i64> = claim.due.iter().map(|it| it.id).collect();
        assert_eq!(claimed, [ids[0], ids[2], ids[3]]);
        assert_eq!(claim.next_due, None);
        let claim = backend.claim(100, 10, &[], ids[2]).unwrap();
        let claimed: Vec<i64> = claim.due.iter().map(|it| it.id).collect();
        assert_eq!(
            claimed,
            [ids[0], ids[1]],
            "ids from `below` on are left out"
        );

        backend.finish(ids[0], 1, &Outcome::Done, 200).unwrap();
        let retry = Outcome::Retry {
            at: 500,
            error: "later".into(),
        };
        backend.finish(ids[1], 1, &retry, 200).unwrap();
        let dead = Outcome::Dead {
            error: "never".into(),
        };
        backend.finish(ids[2], 3, &dead, 200).unwrap();
        assert_eq!(
            backend.finish(ids[2], 4, &Outcome::Done, 300).unwrap(),
            0,
            "only pending deliveries take outcomes"
        );
        let claim = backend.claim(300, 10, &[], i64::MAX).unwrap();
        assert_eq!(
            claim.due.iter().map(|it| it.id).collect::<Vec<_>>(),
            [ids[3]]
        );
        assert_eq!(claim.next_due, Some(500));
        let claim = backend.claim(500, 10, &[], i64::MAX).unwrap();
        let due: Vec<(i64, u32)> = claim.due.iter().map(|it| (it.id, it.attempts)).collect();
        assert_eq!(due, [(ids[3], 0), (ids[1], 1)]);

        // Pruning removes processed deliveries only, and only old ones.
        assert_eq!(backend.prune(200).unwrap(), 0);
        assert_eq!(backend.prune(201).unwrap(), 1);
        let counts = backend.counts().unwrap();
        assert_eq!(
            counts,
            StateCounts {
                pending: 2,
                done: 0,
                dead: 1,
                undecodable: 1
            }
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

    #[test]
    fn sqlite_and_memory_stores_claim_finish_and_prune_alike() {
        let dir = tempfile::tempdir().unwrap();
        let mut sqlite = SqliteBackend::open(&dir.path().join("inbox.db")).unwrap();
        exercise(&mut sqlite);
        exercise(&mut MemoryBackend::default());
    }
}
