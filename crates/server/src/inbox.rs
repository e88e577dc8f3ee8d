//! The durable inbox: every verified delivery, its state and its processing history.
//!
//! A server writes to its store through the [`store`](crate::store) seam; for the SQLite
//! inbox, [`Inbox`] opens the same file from anywhere else — another process included — to
//! list, show, re-queue and export deliveries while the server runs. SQLite's write-ahead log
//! lets both read and write at once; writes wait for each other through a busy timeout.

use std::fmt;
#[cfg(feature = "sqlite")]
use std::io::Write;
#[cfg(feature = "sqlite")]
use std::path::{Path, PathBuf};
use std::str::FromStr;
#[cfg(feature = "sqlite")]
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[cfg(feature = "sqlite")]
use base64::Engine as _;
use bytes::Bytes;
use preservica_webhook_core::Delivery;
#[cfg(feature = "sqlite")]
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, Row, params};

#[cfg(feature = "sqlite")]
use crate::error::InboxError;
#[cfg(feature = "sqlite")]
use crate::store::sqlite::{Failure, delivery_id, rowid};
#[cfg_attr(
    not(feature = "sqlite"),
    allow(unused_imports, reason = "the SQLite `Inbox` uses them")
)]
use crate::store::{Attempt, BoxFuture, DeliveryId, InboxAdmin, Outcome, RunRecord};

/// What became of a stored delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Waiting for the handler (first call or a retry).
    Pending,
    /// The handler succeeded.
    Done,
    /// The handler failed every attempt (or failed permanently): a dead letter.
    Dead,
    /// Authentic but not a valid delivery: kept, never handed to the handler.
    Undecodable,
}

/// Which deliveries to list.
#[derive(Debug, Clone, Copy)]
pub enum StateFilter {
    /// Every delivery.
    All,
    /// Deliveries in one state.
    Only(DeliveryState),
}

impl StateFilter {
    /// Whether a delivery in `state` is one the filter lets through.
    pub fn admits(self, state: DeliveryState) -> bool {
        match self {
            StateFilter::All => true,
            StateFilter::Only(wanted) => state == wanted,
        }
    }
}

/// A stored delivery as [`Inbox::list`] and [`Inbox::get`] show it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InboxEntry {
    /// The delivery's id in its store.
    pub id: DeliveryId,
    /// The redelivery key (SHA-256 of the body), lowercase hex.
    pub key: String,
    /// Its state.
    pub state: DeliveryState,
    /// When it was received, RFC 3339 UTC.
    pub received_at: String,
    /// How many handler calls have finished (successfully or not).
    pub attempts: u32,
    /// When a pending delivery is next due, RFC 3339 UTC.
    pub next_attempt_at: Option<String>,
    /// The last handler error.
    pub last_error: Option<String>,
    /// The delivery's trigger, when the body parses.
    pub trigger: Option<String>,
    /// The delivery's subscription id, when the body parses.
    pub subscription_id: Option<String>,
    /// The events' entity references, when the body parses.
    pub entity_refs: Vec<String>,
    /// The raw body.
    #[serde(skip)]
    pub body: Bytes,
}

/// How many deliveries are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StateCounts {
    /// Waiting for the handler.
    pub pending: u64,
    /// Processed.
    pub done: u64,
    /// Dead letters.
    pub dead: u64,
    /// Authentic but not valid deliveries.
    pub undecodable: u64,
}

#[cfg(feature = "sqlite")]
/// The durable inbox, opened by path; usable from another process while a server runs on it.
///
/// ```no_run
/// use preservica_webhook_server::{DeliveryState, Inbox, StateFilter};
///
/// let inbox = Inbox::open("preservica-webhook.db".as_ref())?;
/// for entry in inbox.list(StateFilter::Only(DeliveryState::Dead))? {
///     println!("{} {} {:?}", entry.id, entry.received_at, entry.last_error);
/// }
/// let requeued = inbox.retry_dead()?;
/// # Ok::<(), preservica_webhook_server::InboxError>(())
/// ```
///
/// It is the SQLite inbox's [`InboxAdmin`] too; through that trait its calls run on the
/// calling thread, waiting for the database like the methods here.
#[derive(Debug)]
pub struct Inbox {
    conn: Mutex<Connection>,
}

/// Why a state name did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown delivery state {0:?}; use pending, done, dead or undecodable")]
pub struct UnknownState(String);

impl DeliveryState {
    /// The state's name: `pending`, `done`, `dead` or `undecodable`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Done => "done",
            DeliveryState::Dead => "dead",
            DeliveryState::Undecodable => "undecodable",
        }
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(DeliveryState::Pending),
            "done" => Ok(DeliveryState::Done),
            "dead" => Ok(DeliveryState::Dead),
            "undecodable" => Ok(DeliveryState::Undecodable),
            other => Err(UnknownState(other.to_owned())),
        }
    }
}

impl serde::Serialize for DeliveryState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(feature = "sqlite")]
pub(crate) const COLUMNS: &str =
    "id, key, state, received_at, attempts, next_attempt_at, last_error, body";

#[cfg(feature = "sqlite")]
impl Inbox {
    /// Opens an existing inbox file.
    ///
    /// Logs a warning for the inbox and each of its `-wal`, `-shm` and `.lock` files that
    /// users other than its owner may open (it holds every delivery received), with the
    /// `chmod 600` that fixes it; it does not change the files' permissions itself.
    ///
    /// # Errors
    /// [`InboxError::NotFound`] when the file does not exist, [`InboxError::Unreadable`] when
    /// it is not an SQLite database or is damaged, [`InboxError::NotAnInbox`] when it is
    /// another database, [`InboxError::Open`] when SQLite cannot open it (permissions).
    pub fn open(path: &Path) -> Result<Inbox, InboxError> {
        if !path.is_file() {
            return Err(InboxError::NotFound(path.to_owned()));
        }
        warn_if_shared(path);
        Inbox::open_quietly(path)
    }

    /// [`Inbox::open`] without the permission warnings (a server's own store, which warned
    /// when it started).
    pub(crate) fn open_quietly(path: &Path) -> Result<Inbox, InboxError> {
        let at = |err| sqlite_failed(path, err);
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(at)?;
        configure(&conn).map_err(at)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(at)?;
        if version != SCHEMA_VERSION {
            return Err(InboxError::NotAnInbox {
                path: path.to_owned(),
                version,
            });
        }
        Ok(Inbox {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The deliveries in a state (or all), oldest first.
    ///
    /// # Errors
    /// [`InboxError::Backend`] when the database cannot be read.
    pub fn list(&self, filter: StateFilter) -> Result<Vec<InboxEntry>, InboxError> {
        let conn = self.conn();
        let entries = match filter {
            StateFilter::All => {
                let sql = format!("SELECT {COLUMNS} FROM deliveries ORDER BY id");
                conn.prepare(&sql).and_then(|mut stmt| {
                    stmt.query_map([], entry_from_row)?
                        .collect::<Result<Vec<_>, _>>()
                })
            }
            StateFilter::Only(state) => {
                let sql = format!("SELECT {COLUMNS} FROM deliveries WHERE state = ?1 ORDER BY id");
                conn.prepare(&sql).and_then(|mut stmt| {
                    stmt.query_map([state.as_str()], entry_from_row)?
                        .collect::<Result<Vec<_>, _>>()
                })
            }
        };
        Ok(entries.map_err(|err| Failure::new("list deliveries", err))?)
    }

    /// One delivery by id.
    ///
    /// # Errors
    /// [`InboxError::Backend`] when the database cannot be read.
    pub fn get(&self, id: &DeliveryId) -> Result<Option<InboxEntry>, InboxError> {
        let Some(id) = rowid(id) else {
            return Ok(None);
        };
        let sql = format!("SELECT {COLUMNS} FROM deliveries WHERE id = ?1");
        let entry = self
            .conn()
            .query_row(&sql, [id], entry_from_row)
            .optional()
            .map_err(|err| Failure::new("read a delivery", err))?;
        Ok(entry)
    }

    /// Re-queues a dead letter: it becomes pending, due now, with its attempts reset.
    /// Returns `false` when there is no dead delivery with that id.
    ///
    /// # Errors
    /// [`InboxError::Backend`] when the database cannot be written.
    pub fn retry(&self, id: &DeliveryId) -> Result<bool, InboxError> {
        self.retry_at(id, now_millis())
    }

    pub(crate) fn retry_at(&self, id: &DeliveryId, now: i64) -> Result<bool, InboxError> {
        let Some(id) = rowid(id) else {
            return Ok(false);
        };
        let changed = self
            .conn()
            .execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?1, \
                 updated_at = ?1 WHERE id = ?2 AND state = 'dead'",
                params![now, id],
            )
            .map_err(|err| Failure::new("re-queue a delivery", err))?;
        Ok(changed == 1)
    }

    /// Re-queues every dead letter; returns how many.
    ///
    /// # Errors
    /// [`InboxError::Backend`] when the database cannot be written.
    pub fn retry_dead(&self) -> Result<usize, InboxError> {
        self.retry_dead_at(now_millis())
    }

    pub(crate) fn retry_dead_at(&self, now: i64) -> Result<usize, InboxError> {
        let changed = self
            .conn()
            .execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?1, \
                 updated_at = ?1 WHERE state = 'dead'",
                [now],
            )
            .map_err(|err| Failure::new("re-queue dead deliveries", err))?;
        Ok(changed)
    }

    /// Writes every stored delivery, oldest first, one JSON object per line (see
    /// [`write_export_line`](crate::store::write_export_line)):
    /// `{"id","key","state","receivedAt","body"}` with the raw body as a JSON string, or
    /// `"bodyBase64"` instead of `"body"` when it is not UTF-8. Returns how many.
    ///
    /// # Errors
    /// [`InboxError::Backend`] when the database cannot be read, [`InboxError::Io`] when `out`
    /// cannot be written.
    pub fn export(&self, out: &mut dyn Write) -> Result<usize, InboxError> {
        let failed = |err| Failure::new("export deliveries", err);
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT id, key, state, received_at, body FROM deliveries ORDER BY id")
            .map_err(failed)?;
        let mut rows = stmt.query([]).map_err(failed)?;
        let mut count = 0;
        while let Some(row) = rows.next().map_err(failed)? {
            let line = export_line(row).map_err(failed)?;
            serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
            count += 1;
        }
        out.flush()?;
        Ok(count)
    }

    /// How many deliveries are in each state.
    ///
    /// # Errors
    /// [`InboxError::Backend`] when the database cannot be read.
    pub fn counts(&self) -> Result<StateCounts, InboxError> {
        Ok(counts(&self.conn()).map_err(|err| Failure::new("count deliveries", err))?)
    }

    /// Every receiver run recorded in the inbox, oldest start first; none in an inbox no
    /// server of this version has run on.
    ///
    /// # Errors
    /// [`InboxError::Backend`] when the database cannot be read.
    pub fn runs(&self) -> Result<Vec<RunRecord>, InboxError> {
        let conn = self.conn();
        let exists: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs')",
                [],
                |row| row.get(0),
            )
            .map_err(|err| Failure::new("list runs", err))?;
        if !exists {
            return Ok(Vec::new());
        }
        let runs = conn
            .prepare(
                "SELECT id, started_at, last_seen_at, stopped_at FROM runs ORDER BY started_at, id",
            )
            .and_then(|mut stmt| {
                stmt.query_map([], |row| {
                    Ok(RunRecord {
                        id: row.get(0)?,
                        started_at: row.get(1)?,
                        last_seen_at: row.get(2)?,
                        stopped_at: row.get(3)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()
            })
            .map_err(|err| Failure::new("list runs", err))?;
        Ok(runs)
    }

    /// Every finished handler attempt of a delivery, oldest first; none for a delivery
    /// never handled, not there, or in an inbox no server of this version has run on.
    ///
    /// # Errors
    /// [`InboxError::Backend`] when the database cannot be read.
    pub fn attempts(&self, id: &DeliveryId) -> Result<Vec<Attempt>, InboxError> {
        let Some(id) = rowid(id) else {
            return Ok(Vec::new());
        };
        let failed = |err| Failure::new("list a delivery's attempts", err);
        let conn = self.conn();
        let exists: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'attempts')",
                [],
                |row| row.get(0),
            )
            .map_err(failed)?;
        if !exists {
            return Ok(Vec::new());
        }
        let mut stmt = conn
            .prepare(
                "SELECT number, finished_at, outcome, retry_at, error FROM attempts \
                 WHERE delivery_id = ?1 ORDER BY rowid",
            )
            .map_err(failed)?;
        let rows = stmt
            .query_map([id], |row| {
                let number: i64 = row.get(0)?;
                let finished_at: i64 = row.get(1)?;
                let outcome: String = row.get(2)?;
                let retry_at: Option<i64> = row.get(3)?;
                let error: Option<String> = row.get(4)?;
                Ok((number, finished_at, outcome, retry_at, error))
            })
            .map_err(failed)?;
        let mut attempts = Vec::new();
        for row in rows {
            let (number, finished_at, outcome, retry_at, error) = row.map_err(failed)?;
            // A row this version cannot read (an outcome it does not know) is left out.
            let Some(outcome) = Outcome::from_parts(&outcome, retry_at, error) else {
                continue;
            };
            attempts.push(Attempt {
                number: u32::try_from(number).unwrap_or(u32::MAX),
                finished_at,
                outcome,
            });
        }
        Ok(attempts)
    }

    /// Records a receiver's run: inserts it, or updates its heartbeat and stop by id.
    pub(crate) fn record_run(&self, run: &RunRecord) -> Result<(), InboxError> {
        self.conn()
            .execute(
                "INSERT INTO runs (id, started_at, last_seen_at, stopped_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (id) DO UPDATE SET last_seen_at = excluded.last_seen_at, \
                 stopped_at = excluded.stopped_at",
                params![run.id, run.started_at, run.last_seen_at, run.stopped_at],
            )
            .map_err(|err| Failure::new("record the receiver's run", err))?;
        Ok(())
    }
}

#[cfg(feature = "sqlite")]
impl InboxAdmin for Inbox {
    fn list(&self, filter: StateFilter) -> BoxFuture<'_, Result<Vec<InboxEntry>, InboxError>> {
        Box::pin(std::future::ready(Inbox::list(self, filter)))
    }

    fn get<'a>(
        &'a self,
        id: &'a DeliveryId,
    ) -> BoxFuture<'a, Result<Option<InboxEntry>, InboxError>> {
        Box::pin(async move { Inbox::get(self, id) })
    }

    fn retry<'a>(
        &'a self,
        id: &'a DeliveryId,
        now: i64,
    ) -> BoxFuture<'a, Result<bool, InboxError>> {
        Box::pin(async move { self.retry_at(id, now) })
    }

    fn retry_dead(&self, now: i64) -> BoxFuture<'_, Result<usize, InboxError>> {
        Box::pin(async move { self.retry_dead_at(now) })
    }

    fn export<'a>(
        &'a self,
        out: &'a mut (dyn Write + Send),
    ) -> BoxFuture<'a, Result<usize, InboxError>> {
        Box::pin(async move { Inbox::export(self, out) })
    }

    fn counts(&self) -> BoxFuture<'_, Result<StateCounts, InboxError>> {
        Box::pin(async move { Inbox::counts(self) })
    }

    fn runs(&self) -> BoxFuture<'_, Result<Vec<RunRecord>, InboxError>> {
        Box::pin(async move { Inbox::runs(self) })
    }

    fn attempts<'a>(
        &'a self,
        id: &'a DeliveryId,
    ) -> BoxFuture<'a, Result<Vec<Attempt>, InboxError>> {
        Box::pin(async move { Inbox::attempts(self, id) })
    }
}

#[cfg(feature = "sqlite")]
/// One export line from a row of `id, key, state, received_at, body`.
fn export_line(row: &Row<'_>) -> rusqlite::Result<serde_json::Map<String, serde_json::Value>> {
    let id: i64 = row.get(0)?;
    let key: Vec<u8> = row.get(1)?;
    let state: String = row.get(2)?;
    let received_at: i64 = row.get(3)?;
    let body: Vec<u8> = row.get(4)?;
    let mut line = serde_json::Map::new();
    line.insert("id".into(), delivery_id(id).to_string().into());
    line.insert("key".into(), hex_lower(&key).into());
    line.insert("state".into(), state.into());
    line.insert("receivedAt".into(), rfc3339(received_at).into());
    match String::from_utf8(body) {
        Ok(text) => line.insert("body".into(), text.into()),
        Err(err) => line.insert(
            "bodyBase64".into(),
            base64::engine::general_purpose::STANDARD
                .encode(err.as_bytes())
                .into(),
        ),
    };
    Ok(line)
}

#[cfg(feature = "sqlite")]
pub(crate) const SCHEMA_VERSION: i64 = 1;

#[cfg(feature = "sqlite")]
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key BLOB NOT NULL UNIQUE,
    state TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    last_error TEXT,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_by_state ON deliveries (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_by_update ON deliveries (state, updated_at);
PRAGMA user_version = 1;
";

#[cfg(feature = "sqlite")]
/// When receivers ran (see [`RunRecord`]); added beside the deliveries by every server that
/// opens the inbox, so an older inbox gains it without a new schema version.
const RUNS_TABLE: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    started_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    stopped_at INTEGER
);
";

#[cfg(feature = "sqlite")]
/// Every finished handler attempt (see [`Attempt`](crate::store::Attempt)), by delivery in
/// the order recorded; added beside the deliveries as the runs are, written in the same
/// transaction as the outcome, and removed with its delivery when that is pruned.
const ATTEMPTS_TABLE: &str = "
CREATE TABLE IF NOT EXISTS attempts (
    delivery_id INTEGER NOT NULL,
    number INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    retry_at INTEGER,
    error TEXT
);
CREATE INDEX IF NOT EXISTS attempts_by_delivery ON attempts (delivery_id);
";

#[cfg(feature = "sqlite")]
/// Creates the inbox file a server writes to, readable and writable by its owner only, when
/// it is missing, and warns about the inbox's files that other users may open. Runs before
/// SQLite opens the file: SQLite creates the `-wal` and `-shm` files with the permissions of
/// the database file, so those are private too.
///
/// The file is only ever created here, never opened: closing a descriptor of a database file
/// drops every POSIX lock the process holds on it, SQLite's included, and another connection
/// of this process may be using the inbox.
pub(crate) fn create_private(path: &Path) -> Result<(), InboxError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => warn_if_shared(path),
        Err(err) => {
            return Err(InboxError::Open {
                path: path.to_owned(),
                source: Box::new(err),
            });
        }
    }
    Ok(())
}

#[cfg(feature = "sqlite")]
/// Opens (creating if needed) the inbox a server writes to; [`create_private`] first.
pub(crate) fn open_for_server(path: &Path) -> Result<Connection, InboxError> {
    let at = |err| sqlite_failed(path, err);
    let conn = Connection::open(path).map_err(at)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(at)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "the inbox could not switch to write-ahead logging");
    }
    configure(&conn).map_err(at)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(at)?;
    match version {
        0 => conn.execute_batch(SCHEMA).map_err(at)?,
        SCHEMA_VERSION => {}
        other => {
            return Err(InboxError::NotAnInbox {
                path: path.to_owned(),
                version: other,
            });
        }
    }
    conn.execute_batch(RUNS_TABLE).map_err(at)?;
    conn.execute_batch(ATTEMPTS_TABLE).map_err(at)?;
    Ok(conn)
}

#[cfg(feature = "sqlite")]
/// The error for SQLite failing while it opens or sets up the inbox at `path`.
pub(crate) fn sqlite_failed(path: &Path, err: rusqlite::Error) -> InboxError {
    let unreadable = matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    );
    let path = path.to_owned();
    let source = Box::new(SqliteCause(err));
    if unreadable {
        InboxError::Unreadable { path, source }
    } else {
        InboxError::Open { path, source }
    }
}

#[cfg(feature = "sqlite")]
/// SQLite's reason, said once. A SQLite failure's message already says what its result
/// code says (`file is not a database` and `Error code 26: file is not a database`), so the
/// code is not given as a further cause.
#[derive(Debug)]
pub(crate) struct SqliteCause(pub(crate) rusqlite::Error);

#[cfg(feature = "sqlite")]
impl fmt::Display for SqliteCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(feature = "sqlite")]
impl std::error::Error for SqliteCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            rusqlite::Error::SqliteFailure(..) => None,
            other => other.source(),
        }
    }
}

#[cfg(feature = "sqlite")]
/// `path` with `suffix` added to its file name: `inbox.db` and `-wal` make `inbox.db-wal`.
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(feature = "sqlite")]
/// Warns about the inbox and each of its `-wal`, `-shm` and `.lock` files that exist and that
/// users other than the owner may open.
fn warn_if_shared(path: &Path) {
    warn_if_open_to_others(path);
    for suffix in ["-wal", "-shm", ".lock"] {
        warn_if_open_to_others(&with_suffix(path, suffix));
    }
}

/// Warns when `file` exists and its permissions let users other than its owner open it: the
/// inbox holds every delivery received, and its lock file, opened by another user, could
/// keep the server from starting.
#[cfg(all(unix, feature = "sqlite"))]
fn warn_if_open_to_others(file: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = std::fs::metadata(file) else {
        return;
    };
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "the inbox file {} can be opened by other users; restrict it with `chmod 600 {}`",
            file.display(),
            file.display()
        );
    }
}

/// Permissions are left to the platform's defaults off unix.
#[cfg(all(not(unix), feature = "sqlite"))]
fn warn_if_open_to_others(_file: &Path) {}

#[cfg(feature = "sqlite")]
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch("PRAGMA synchronous = FULL;")
}

#[cfg(feature = "sqlite")]
pub(crate) fn counts(conn: &Connection) -> rusqlite::Result<StateCounts> {
    let mut stmt = conn.prepare_cached("SELECT state, COUNT(*) FROM deliveries GROUP BY state")?;
    let mut rows = stmt.query([])?;
    let mut counts = StateCounts::default();
    while let Some(row) = rows.next()? {
        let state: String = row.get(0)?;
        let count: i64 = row.get(1)?;
        counts.add(state.parse().ok(), count);
    }
    Ok(counts)
}

impl StateCounts {
    /// Adds `count` (negative: removes) deliveries in `state`; an unknown state counts in none.
    pub(crate) fn add(&mut self, state: Option<DeliveryState>, count: i64) {
        let total = match state {
            Some(DeliveryState::Pending) => &mut self.pending,
            Some(DeliveryState::Done) => &mut self.done,
            Some(DeliveryState::Dead) => &mut self.dead,
            Some(DeliveryState::Undecodable) => &mut self.undecodable,
            None => return,
        };
        *total = total.saturating_add_signed(count);
    }
}

#[cfg(feature = "sqlite")]
pub(crate) fn entry_from_row(row: &Row<'_>) -> rusqlite::Result<InboxEntry> {
    let key: Vec<u8> = row.get(1)?;
    let state: String = row.get(2)?;
    let body: Vec<u8> = row.get(7)?;
    let state = state.parse().map_err(|err: UnknownState| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(err))
    })?;
    let attempts: i64 = row.get(4)?;
    let next_attempt_at: Option<i64> = row.get(5)?;
    Ok(entry(
        delivery_id(row.get(0)?),
        &key,
        state,
        row.get(3)?,
        u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_at,
        row.get(6)?,
        Bytes::from(body),
    ))
}

#[allow(clippy::too_many_arguments, reason = "one argument per stored column")]
pub(crate) fn entry(
    id: DeliveryId,
    key: &[u8],
    state: DeliveryState,
    received_at: i64,
    attempts: u32,
    next_attempt_at: Option<i64>,
    last_error: Option<String>,
    body: Bytes,
) -> InboxEntry {
    let parsed = Delivery::from_slice(&body).ok();
    InboxEntry {
        id,
        key: hex_lower(key),
        state,
        received_at: rfc3339(received_at),
        attempts,
        next_attempt_at: next_attempt_at.map(rfc3339),
        last_error,
        trigger: parsed
            .as_ref()
            .and_then(|it| it.trigger.as_ref())
            .map(|it| it.as_str().to_owned()),
        subscription_id: parsed
            .as_ref()
            .and_then(|it| it.subscription_id.as_ref())
            .map(|it| it.as_str().to_owned()),
        entity_refs: parsed
            .as_ref()
            .map(|it| it.entity_refs().map(str::to_owned).collect())
            .unwrap_or_default(),
        body,
    }
}

/// Milliseconds since the Unix epoch, now: the `now` the store traits take.
pub fn now_millis() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC.
pub(crate) fn rfc3339(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn hex_lower(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_open_a_missing_inbox_saying_where_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nowhere.db");
        let err = Inbox::open(&path).unwrap_err();
        assert!(matches!(err, InboxError::NotFound(_)));
        assert!(err.to_string().contains("nowhere.db"), "{err}");
        assert!(!path.exists(), "opening must not create the file");
    }

    #[test]
    fn refuses_a_database_that_is_not_an_inbox() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); PRAGMA user_version = 7;")
            .unwrap();
        let err = Inbox::open(&path).unwrap_err();
        assert!(
            matches!(err, InboxError::NotAnInbox { version: 7, .. }),
            "{err}"
        );
    }

    #[test]
    fn lists_entries_with_their_delivery_fields_and_re_queues_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.db");
        let conn = open_for_server(&path).unwrap();
        let body = br#"{"subscriptionId":"abc","trigger":"MOVED","events":[{"entityRef":"r1"},{"entityRef":"r2"}]}"#;
        conn.execute(
            "INSERT INTO deliveries (key, state, received_at, updated_at, attempts, last_error, body) \
             VALUES (?1, 'dead', 1700000000123, 1700000000123, 8, 'gone', ?2), \
                    (?3, 'dead', 1700000000124, 1700000000124, 8, NULL, ?4)",
            params![&[1u8; 32][..], &body[..], &[2u8; 32][..], &b"{}"[..]],
        )
        .unwrap();
        let inbox = Inbox::open(&path).unwrap();
        let entry = inbox.get(&DeliveryId::from(1)).unwrap().unwrap();
        assert_eq!(entry.key, "01".repeat(32));
        assert_eq!(entry.received_at, "2023-11-14T22:13:20.123Z");
        assert_eq!(entry.trigger.as_deref(), Some("MOVED"));
        assert_eq!(entry.subscription_id.as_deref(), Some("abc"));
        assert_eq!(entry.entity_refs, ["r1", "r2"]);
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(json["state"], "dead");
        assert_eq!(json["lastError"], "gone");
        assert!(json.get("body").is_none());
        assert!(inbox.get(&DeliveryId::from(3)).unwrap().is_none());

        assert_eq!(inbox.retry_dead().unwrap(), 2);
        let pending = inbox
            .list(StateFilter::Only(DeliveryState::Pending))
            .unwrap();
        let ids: Vec<String> = pending.iter().map(|it| it.id.to_string()).collect();
        assert_eq!(ids, ["1", "2"]);
        assert_eq!(pending[0].attempts, 0);
        assert!(pending[0].next_attempt_at.is_some());
        assert_eq!(inbox.retry_dead().unwrap(), 0);
    }

    #[test]
    fn parses_and_prints_state_names() {
        for state in [
            DeliveryState::Pending,
            DeliveryState::Done,
            DeliveryState::Dead,
            DeliveryState::Undecodable,
        ] {
            assert_eq!(state.to_string().parse::<DeliveryState>(), Ok(state));
        }
        assert!("lost".parse::<DeliveryState>().is_err());
    }
}
