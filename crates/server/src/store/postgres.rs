//! The PostgreSQL store ([`InboxConfig::Postgres`](crate::InboxConfig::Postgres)): one table
//! that every receiver and worker process opening the same database shares, so that any of
//! them can stop, crash or be redeployed while the others take deliveries in and handle them.
//!
//! - **Intake** commits concurrent deliveries in groups: a task collects what arrives while the
//!   previous groups are being committed (up to [`MAX_BATCH`] a group, [`INTAKE_TRANSACTIONS`]
//!   groups at once) and stores each group with one `INSERT … SELECT FROM unnest(…) ORDER BY
//!   key ON CONFLICT (key) DO NOTHING`, committed with the server's durability, before any of
//!   them is answered. The unique key deduplicates redeliveries across every replica for as
//!   long as a delivery is kept; taking each group's keys in one order keeps two groups that
//!   share keys (one redelivery reaching two replicas) from deadlocking.
//! - **Claims** take due deliveries with `FOR UPDATE SKIP LOCKED`, so concurrent claimers never
//!   get the same row, and lease each: the claim counts the attempt as started and makes the
//!   delivery due again when the lease ends (`next_attempt_at = lease_until`). A crashed
//!   worker's deliveries are thus claimed again once their lease runs out (at least once). An
//!   outcome is applied only while the attempt count is still the one its claim set, so the
//!   outcome of a worker whose lease ran out while another took the delivery over is ignored.
//! - **Schema** migrations are numbered and applied by the program when it opens the store, one
//!   process at a time (a transaction-scoped advisory lock), recorded in
//!   `preservica_webhook_schema`.
//! - **Connection loss**: every call is bounded by [`CALL_TIMEOUT`] and fails with
//!   [`InboxError::Unavailable`] while the database cannot be reached (the receiver answers
//!   503); the pool opens new connections as soon as it is back, without a restart.
//!
//! Times are the callers' `now` (ms since the Unix epoch), as everywhere on the seam: the
//! replicas' clocks should agree (NTP) to well within the lease margin.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use preservica_webhook_core::DeliveryKey;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::config::{Host, SslMode};

use crate::error::InboxError;
use crate::inbox::{DeliveryState, InboxEntry, StateCounts, StateFilter, now_millis};
use crate::store::{
    Activity, Attempt, BoxFuture, Claim, Claimed, DeliveryId, InboxAdmin, Intake, NewDelivery,
    Outcome, Page, PageQuery, RunRecord, Store, Stored, StoredDelivery, WorkQueue, scan_chunks,
};

/// The most deliveries stored in one transaction.
pub(crate) const MAX_BATCH: usize = 256;
/// How many intake transactions run at once; further deliveries gather into the next group.
pub(crate) const INTAKE_TRANSACTIONS: usize = 4;
/// The longest any one store call waits for the database.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How many deliveries may wait for the intake task before senders wait too.
const QUEUE: usize = 4096;
/// How many connections one process keeps at most.
const POOL_SIZE: usize = 10;
/// How long the counts are reused, so frequent scrapes do not each count the table.
const COUNTS_FRESH: Duration = Duration::from_secs(1);
/// Rows read per round trip by an export.
const EXPORT_PAGE: i64 = 1000;
/// The advisory lock key that serialises migrations (any fixed number unique to this program).
const MIGRATION_LOCK: i64 = 0x5052_5357_4842_4b31;

/// The migrations, in order: migration `n` (1-based) brings the schema to version `n`.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE preservica_webhook_deliveries (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key BYTEA NOT NULL UNIQUE,
    state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'dead', 'undecodable')),
    received_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    lease_until BIGINT,
    last_error TEXT,
    body BYTEA NOT NULL
);
CREATE INDEX preservica_webhook_due ON preservica_webhook_deliveries (next_attempt_at, id)
    WHERE state = 'pending';
CREATE INDEX preservica_webhook_done ON preservica_webhook_deliveries (updated_at)
    WHERE state = 'done';
CREATE INDEX preservica_webhook_by_state ON preservica_webhook_deliveries (state, id);
",
    "
CREATE TABLE preservica_webhook_runs (
    id TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    stopped_at BIGINT
);
",
    "
CREATE TABLE preservica_webhook_attempts (
    delivery_id BIGINT NOT NULL
        REFERENCES preservica_webhook_deliveries (id) ON DELETE CASCADE,
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    number INTEGER NOT NULL,
    finished_at BIGINT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('done', 'retry', 'dead')),
    retry_at BIGINT,
    error TEXT,
    PRIMARY KEY (delivery_id, seq)
);
",
    // The dashboard's health panel: the newest and oldest received in each state, and the
    // last hour's arrivals, read from the index alone.
    "
CREATE INDEX preservica_webhook_by_state_received
    ON preservica_webhook_deliveries (state, received_at);
",
];

/// Where a PostgreSQL inbox is: a `postgres://` or `postgresql://` URL, completed from the
/// libpq environment variables.
///
/// ```
/// use preservica_webhook_server::store::PostgresLocation;
///
/// let location: PostgresLocation = "postgres://webhook:s3cret@db.example.org/archive?sslmode=require"
///     .parse()
///     .unwrap();
/// // The password is never shown.
/// assert_eq!(location.to_string(), "postgres://webhook@db.example.org:5432/archive?sslmode=require");
/// ```
///
/// What the URL leaves out comes from `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`,
/// `PGDATABASE`, `PGSSLMODE` and `PGSSLROOTCERT`, then from libpq's defaults (host
/// `localhost`, port 5432, the user `USER` names, the database named as the user).
///
/// TLS is used when `sslmode` is `require`, `verify-ca` or `verify-full`, and the server's
/// certificate is then always verified (unlike libpq's `require`): against the certificates in
/// `sslrootcert` (a PEM file) when given, else the platform's trusted roots; its name must match
/// the host. `disable`, `allow` and `prefer` (and no `sslmode`) connect without TLS.
#[derive(Clone)]
pub struct PostgresLocation(Arc<Location>);

/// What a [`PostgresLocation`] holds, shared by its clones.
struct Location {
    config: tokio_postgres::Config,
    /// TLS asked for (`sslmode` require or stricter).
    tls: bool,
    root_cert: Option<PathBuf>,
    /// The URL without its password, as shown.
    shown: String,
}

impl PostgresLocation {
    /// Whether a text is meant as a PostgreSQL URL (`postgres://` or `postgresql://`).
    pub fn is_url(text: &str) -> bool {
        text.starts_with("postgres://") || text.starts_with("postgresql://")
    }

    /// Parses `url`, taking what it leaves out from `env` (the libpq variables).
    fn parse_with(
        url: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<PostgresLocation, InboxError> {
        let bad = |reason: String| InboxError::BadLocation {
            location: redact(url),
            reason,
        };
        if !PostgresLocation::is_url(url) {
            return Err(bad(
                "it does not start with postgres:// or postgresql://".into()
            ));
        }
        // Options libpq knows and the driver does not are taken out here.
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        let mut sslmode = None;
        let mut root_cert = None;
        for pair in query.split('&').filter(|it| !it.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "sslmode" => sslmode = Some(value.to_owned()),
                "sslrootcert" => root_cert = Some(PathBuf::from(value)),
                _ => kept.push(pair),
            }
        }
        // The driver gives a host without a port 5432: PGPORT goes into the URL first.
        let env_port = env("PGPORT")
            .map(|port| {
                port.parse::<u16>()
                    .map_err(|_| bad(format!("PGPORT={port:?} is not a port number")))
            })
            .transpose()?;
        let base = match env_port {
            Some(port) => with_port(base, port),
            None => base.to_owned(),
        };
        let rebuilt = if kept.is_empty() {
            base
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config =
            tokio_postgres::Config::from_str(&rebuilt).map_err(|err| bad(format!("{err}")))?;
        if config.get_hosts().is_empty() {
            let host = env("PGHOST").unwrap_or_else(|| "localhost".to_owned());
            for one in host.split(',') {
                config.host(one);
            }
        }
        if config.get_ports().is_empty()
            && let Some(port) = env_port
        {
            config.port(port);
        }
        if config.get_user().is_none() {
            let Some(user) = env("PGUSER").or_else(|| env("USER")) else {
                return Err(bad(
                    "it names no user; give one (postgres://USER@HOST/DATABASE) or set PGUSER"
                        .into(),
                ));
            };
            config.user(user);
        }
        if config.get_password().is_none()
            && let Some(password) = env("PGPASSWORD")
        {
            config.password(password);
        }
        if config.get_dbname().is_none()
            && let Some(dbname) = env("PGDATABASE")
        {
            config.dbname(dbname);
        }
        let sslmode = sslmode.or_else(|| env("PGSSLMODE"));
        let tls = match sslmode.as_deref() {
            None | Some("disable" | "allow" | "prefer") => false,
            Some("require" | "verify-ca" | "verify-full") => true,
            Some(other) => {
                return Err(bad(format!(
                    "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, \
                     verify-full"
                )));
            }
        };
        config.ssl_mode(if tls {
            SslMode::Require
        } else {
            SslMode::Disable
        });
        let root_cert = root_cert.or_else(|| env("PGSSLROOTCERT").map(PathBuf::from));
        if config.get_application_name().is_none() {
            config.application_name("preservica-webhook");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CALL_TIMEOUT);
        }
        let shown = show(&config, url, tls);
        Ok(PostgresLocation(Arc::new(Location {
            config,
            tls,
            root_cert,
            shown,
        })))
    }
}

impl FromStr for PostgresLocation {
    type Err = InboxError;

    /// Parses a `postgres://` URL, completed from the process's libpq environment variables.
    ///
    /// # Errors
    /// [`InboxError::BadLocation`] when it is not a URL this store can use.
    fn from_str(url: &str) -> Result<PostgresLocation, InboxError> {
        PostgresLocation::parse_with(url, |name| std::env::var(name).ok())
    }
}

impl fmt::Display for PostgresLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.shown)
    }
}

impl fmt::Debug for PostgresLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PostgresLocation")
            .field(&self.0.shown)
            .finish()
    }
}

/// The location as shown: scheme, user, hosts and ports, database, TLS; never a password.
fn show(config: &tokio_postgres::Config, url: &str, tls: bool) -> String {
    let scheme = if url.starts_with("postgresql://") {
        "postgresql"
    } else {
        "postgres"
    };
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(n, host)| {
            let port = ports.get(n).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}:{port}", path.display()).replace('/', "%2F"),
            }
        })
        .collect();
    let user = config.get_user().unwrap_or_default();
    let db = config.get_dbname().unwrap_or(user);
    let tls = if tls { "?sslmode=require" } else { "" };
    format!("{scheme}://{user}@{}/{db}{tls}", hosts.join(","))
}

/// `base` (a URL without its query) with `port` given to each host that has none.
fn with_port(base: &str, port: u16) -> String {
    let Some((scheme, rest)) = base.split_once("://") else {
        return base.to_owned();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
        None => (String::new(), authority),
    };
    let hosts: Vec<String> = hosts
        .split(',')
        .map(|host| {
            let has_port = match host.strip_prefix('[') {
                Some(bracketed) => bracketed.contains("]:"),
                None => host.contains(':'),
            };
            if host.is_empty() || has_port {
                host.to_owned()
            } else {
                format!("{host}:{port}")
            }
        })
        .collect();
    format!("{scheme}://{userinfo}{}{path}", hosts.join(","))
}

/// `url` with any password in it replaced, for an error about a URL that did not parse.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{hosts}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail: Vec<String> = tail
        .split('&')
        .map(|part| match part.split_once("password=") {
            Some((before, _)) if before.is_empty() || before.ends_with('?') => {
                format!("{before}password=***")
            }
            _ => part.to_owned(),
        })
        .collect();
    format!("{scheme}://{authority}{}", tail.join("&"))
}

/// The store: a connection pool, and the task that commits deliveries in groups.
pub(crate) struct PostgresStore {
    pool: Pool,
    location: String,
    /// Taken at [`Store::close`].
    intake: Mutex<Option<mpsc::Sender<Arriving>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    counts: Mutex<Option<(Instant, StateCounts)>>,
}

/// A delivery waiting for its group's commit.
struct Arriving {
    delivery: NewDelivery,
    now: i64,
    reply: oneshot::Sender<Result<Stored, InboxError>>,
}

/// What failed, with the driver's reason as its source.
#[derive(Debug)]
struct Failure {
    what: &'static str,
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// A call the database did not answer in time.
#[derive(Debug, thiserror::Error)]
#[error("no answer within {} s", CALL_TIMEOUT.as_secs())]
struct NoAnswer;

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the PostgreSQL inbox could not {}", self.what)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl PostgresStore {
    /// Connects, applies the migrations this version has and the database lacks, and starts the
    /// intake task, which counts its commits in `commits`.
    pub(crate) async fn open(
        location: &PostgresLocation,
        commits: Counter,
    ) -> Result<PostgresStore, InboxError> {
        let shown = location.to_string();
        let connect = |source: Box<dyn std::error::Error + Send + Sync>| InboxError::Connect {
            location: shown.clone(),
            source,
        };
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let location = &location.0;
        let manager = if location.tls {
            let tls = tls_connector(location.root_cert.as_deref()).map_err(connect)?;
            Manager::from_config(location.config.clone(), tls, manager_config)
        } else {
            Manager::from_config(
                location.config.clone(),
                tokio_postgres::NoTls,
                manager_config,
            )
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CALL_TIMEOUT))
            .create_timeout(Some(CALL_TIMEOUT))
            .recycle_timeout(Some(CALL_TIMEOUT))
            .build()
            .map_err(|err| connect(Box::new(err)))?;
        let mut client = pool.get().await.map_err(|err| connect(Box::new(err)))?;
        match tokio::time::timeout(CALL_TIMEOUT, migrate(&mut client)).await {
            Ok(Ok(())) => {}
            Ok(Err(Migrated::Newer(version))) => {
                return Err(InboxError::UnknownSchema {
                    location: shown,
                    version,
                });
            }
            Ok(Err(Migrated::Failed(err))) => {
                return Err(connect(Box::new(Failure {
                    what: "create or migrate its tables (the user needs the right to create \
                           tables in the database the first time)",
                    source: Box::new(err),
                })));
            }
            Err(_) => return Err(connect(Box::new(NoAnswer))),
        }
        drop(client);
        let (intake, arriving) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run_intake(pool.clone(), arriving, commits));
        tracing::info!(inbox = %shown, "PostgreSQL inbox open");
        Ok(PostgresStore {
            pool,
            location: shown,
            intake: Mutex::new(Some(intake)),
            task: Mutex::new(Some(task)),
            counts: Mutex::new(None),
        })
    }

    /// Runs `call` on a pooled connection within [`CALL_TIMEOUT`].
    async fn with_client<T, F>(&self, what: &'static str, call: F) -> Result<T, InboxError>
    where
        F: AsyncFnOnce(&deadpool_postgres::Client) -> Result<T, tokio_postgres::Error>,
    {
        with_client(&self.pool, what, call).await
    }

    /// Re-queues the dead letter `id`, or every dead letter: pending, due at `now`, attempts
    /// reset. Returns how many.
    async fn requeue(&self, id: Option<i64>, now: i64) -> Result<usize, InboxError> {
        let what = if id.is_some() {
            "re-queue a delivery"
        } else {
            "re-queue dead deliveries"
        };
        let changed = self
            .with_client(what, async |client| {
                client
                    .execute(
                        "UPDATE preservica_webhook_deliveries \
                         SET state = 'pending', attempts = 0, next_attempt_at = $1, \
                             lease_until = NULL, updated_at = $1 \
                         WHERE state = 'dead' AND ($2::int8 IS NULL OR id = $2)",
                        &[&now, &id],
                    )
                    .await
            })
            .await?;
        Ok(usize::try_from(changed).unwrap_or(usize::MAX))
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("location", &self.location)
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

/// Runs `call` on a connection from `pool` within [`CALL_TIMEOUT`], the wait for the
/// connection included.
async fn with_client<T, F>(pool: &Pool, what: &'static str, call: F) -> Result<T, InboxError>
where
    F: AsyncFnOnce(&deadpool_postgres::Client) -> Result<T, tokio_postgres::Error>,
{
    let attempt = async {
        let client = pool.get().await.map_err(|err| unavailable(what, err))?;
        call(&client).await.map_err(|err| failed(what, err))
    };
    match tokio::time::timeout(CALL_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(unavailable(what, NoAnswer)),
    }
}

/// The database could not be reached.
fn unavailable(
    what: &'static str,
    err: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> InboxError {
    InboxError::Unavailable(Box::new(Failure {
        what,
        source: err.into(),
    }))
}

/// A failed statement: unavailable when the connection is the cause, else the store's error.
fn failed(what: &'static str, err: tokio_postgres::Error) -> InboxError {
    let lost = err.is_closed()
        || err.code().is_none_or(|code| {
            let code = code.code();
            code.starts_with("08") || code.starts_with("57P") || code.starts_with("53")
        });
    if lost {
        unavailable(what, err)
    } else {
        InboxError::backend(Failure {
            what,
            source: Box::new(err),
        })
    }
}

/// The TLS settings for the database's connections: ring, given to these connections alone
/// (no process-wide provider), and the roots in `root_cert` or else the platform's verifier.
fn tls_connector(
    root_cert: Option<&Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, Box<dyn std::error::Error + Send + Sync>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    use rustls_platform_verifier::BuilderVerifierExt as _;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?;
    let config = match root_cert {
        Some(path) => {
            let unreadable =
                |err: rustls_pki_types::pem::Error| -> Box<dyn std::error::Error + Send + Sync> {
                    format!(
                        "cannot read the root certificates in {} (sslrootcert): {err}",
                        path.display()
                    )
                    .into()
                };
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(unreadable)? {
                roots.add(cert.map_err(unreadable)?)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder.with_platform_verifier()?.with_no_client_auth(),
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Why the schema could not be brought up to date.
enum Migrated {
    /// The database's schema is newer than this program's.
    Newer(i64),
    Failed(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for Migrated {
    fn from(err: tokio_postgres::Error) -> Migrated {
        Migrated::Failed(err)
    }
}

/// Applies the missing migrations in one transaction, holding the migration lock.
async fn migrate(client: &mut deadpool_postgres::Client) -> Result<(), Migrated> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS preservica_webhook_schema (
            version BIGINT PRIMARY KEY,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let row = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM preservica_webhook_schema",
            &[],
        )
        .await?;
    let version: i64 = row.get(0);
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if version > known {
        return Err(Migrated::Newer(version));
    }
    for (n, migration) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        let to = i64::try_from(n + 1).unwrap_or(i64::MAX);
        tx.batch_execute(migration).await?;
        tx.execute(
            "INSERT INTO preservica_webhook_schema (version) VALUES ($1)",
            &[&to],
        )
        .await?;
        tracing::info!(version = to, "PostgreSQL inbox schema migrated");
    }
    tx.commit().await?;
    Ok(())
}

/// Collects arriving deliveries into groups and commits each group on a task of its own,
/// [`INTAKE_TRANSACTIONS`] at a time; ends once every sender is gone and the groups are in.
async fn run_intake(pool: Pool, mut arriving: mpsc::Receiver<Arriving>, commits: Counter) {
    let permits = Arc::new(Semaphore::new(INTAKE_TRANSACTIONS));
    while let Some(first) = arriving.recv().await {
        // Waiting for a free transaction lets the next group gather.
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let mut group = vec![first];
        while group.len() < MAX_BATCH {
            match arriving.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        let commits = commits.clone();
        tokio::spawn(async move {
            store_group(&pool, group, &commits).await;
            drop(permit);
        });
    }
    // Every group in flight holds a permit: wait until they are all back.
    let _ = permits
        .acquire_many(u32::try_from(INTAKE_TRANSACTIONS).unwrap_or(u32::MAX))
        .await;
}

/// Stores one group and answers each delivery once the group's insert is committed.
async fn store_group(pool: &Pool, group: Vec<Arriving>, commits: &Counter) {
    // One row per key: a key twice in the group is stored once, both answered with its id.
    let mut first_of: HashMap<DeliveryKey, usize> = HashMap::with_capacity(group.len());
    let mut unique: Vec<&Arriving> = Vec::with_capacity(group.len());
    for arriving in &group {
        first_of.entry(arriving.delivery.key).or_insert_with(|| {
            unique.push(arriving);
            unique.len() - 1
        });
    }
    let result = with_client(pool, "store deliveries", async |client| {
        insert_group(client, &unique).await
    })
    .await;
    if result.is_ok() {
        commits.inc();
    }
    let answers: Result<HashMap<DeliveryKey, (i64, bool)>, Arc<InboxError>> =
        result.map_err(|err| {
            tracing::debug!(error = %crate::error::Chain(&err), "a group of deliveries was not stored");
            Arc::new(err)
        });
    let mut answered_new: HashMap<DeliveryKey, bool> = HashMap::new();
    for arriving in group {
        let answer = match &answers {
            Ok(ids) => match ids.get(&arriving.delivery.key) {
                Some(&(id, new)) => {
                    // Only the first delivery of a key in the group is the new one.
                    let first = answered_new.insert(arriving.delivery.key, true).is_none();
                    if new && first {
                        Ok(Stored::New(delivery_id(id)))
                    } else {
                        Ok(Stored::Duplicate(delivery_id(id)))
                    }
                }
                None => Err(unavailable(
                    "store a delivery",
                    "the delivery was neither stored nor found",
                )),
            },
            Err(err) => Err(copy_error(err)),
        };
        let _ = arriving.reply.send(answer);
    }
}

/// Another error saying the same, for every delivery of a group that failed.
fn copy_error(err: &InboxError) -> InboxError {
    use crate::error::Chain;
    match err {
        InboxError::Unavailable(source) => {
            InboxError::Unavailable(Chain(&**source).to_string().into())
        }
        other => InboxError::backend(Chain(other).to_string()),
    }
}

/// Inserts the group (autocommit: the statement is its own transaction, durable once it
/// returns) and finds the ids of the keys stored before. Returns each key's id and whether it
/// is new.
///
/// The rows go in in key order. A key another transaction has inserted but not committed
/// makes the insert wait for that transaction, so two groups sharing keys in opposite orders
/// (the same redeliveries reaching two replicas, or two groups of one store) would each wait
/// for the other, and PostgreSQL would abort one as a deadlock. In one order, the one that
/// waits holds no key the other still needs.
async fn insert_group(
    client: &deadpool_postgres::Client,
    unique: &[&Arriving],
) -> Result<HashMap<DeliveryKey, (i64, bool)>, tokio_postgres::Error> {
    let insert = client
        .prepare_cached(
            "INSERT INTO preservica_webhook_deliveries \
                 (key, state, received_at, updated_at, next_attempt_at, body) \
             SELECT k, s, r, r, n, b \
             FROM unnest($1::bytea[], $2::text[], $3::int8[], $4::int8[], $5::bytea[]) \
                 AS t(k, s, r, n, b) \
             ORDER BY k \
             ON CONFLICT (key) DO NOTHING RETURNING id, key",
        )
        .await?;
    let find = client
        .prepare_cached("SELECT id, key FROM preservica_webhook_deliveries WHERE key = ANY($1)")
        .await?;
    let keys: Vec<&[u8]> = unique
        .iter()
        .map(|it| &it.delivery.key.as_bytes()[..])
        .collect();
    let states: Vec<&str> = unique.iter().map(|it| it.delivery.state.as_str()).collect();
    let received: Vec<i64> = unique.iter().map(|it| it.now).collect();
    let next: Vec<Option<i64>> = unique
        .iter()
        .map(|it| (it.delivery.state == DeliveryState::Pending).then_some(it.now))
        .collect();
    let bodies: Vec<&[u8]> = unique.iter().map(|it| &it.delivery.body[..]).collect();
    let mut ids = HashMap::with_capacity(unique.len());
    for row in client
        .query(&insert, &[&keys, &states, &received, &next, &bodies])
        .await?
    {
        if let Some(key) = key_of(&row, 1) {
            ids.insert(key, (row.get::<_, i64>(0), true));
        }
    }
    if ids.len() < unique.len() {
        let before: Vec<&[u8]> = keys
            .iter()
            .copied()
            .filter(|key| {
                <[u8; 32]>::try_from(*key)
                    .map(|key| !ids.contains_key(&DeliveryKey::from_bytes(key)))
                    .unwrap_or(false)
            })
            .collect();
        for row in client.query(&find, &[&before]).await? {
            if let Some(key) = key_of(&row, 1) {
                ids.entry(key).or_insert((row.get::<_, i64>(0), false));
            }
        }
    }
    Ok(ids)
}

fn key_of(row: &tokio_postgres::Row, column: usize) -> Option<DeliveryKey> {
    let bytes: &[u8] = row.get(column);
    <[u8; 32]>::try_from(bytes)
        .ok()
        .map(DeliveryKey::from_bytes)
}

/// The [`DeliveryId`] of a row id (always positive).
fn delivery_id(id: i64) -> DeliveryId {
    DeliveryId::from(u64::try_from(id).unwrap_or(0))
}

/// The row id a [`DeliveryId`] of this store stands for; `None` for an id it never gave.
fn row_id(id: &DeliveryId) -> Option<i64> {
    id.as_u64().and_then(|n| i64::try_from(n).ok())
}

impl Intake for PostgresStore {
    fn store(&self, delivery: NewDelivery, now: i64) -> BoxFuture<'_, Result<Stored, InboxError>> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            let intake = self
                .intake
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .ok_or(InboxError::Closed)?;
            intake
                .send(Arriving {
                    delivery,
                    now,
                    reply,
                })
                .await
                .map_err(|_| InboxError::Closed)?;
            answer.await.map_err(|_| InboxError::Closed)?
        })
    }
}

impl WorkQueue for PostgresStore {
    fn claim(
        &self,
        now: i64,
        limit: usize,
        lease_until: i64,
    ) -> BoxFuture<'_, Result<Claim, InboxError>> {
        Box::pin(self.with_client("claim deliveries", async move |client| {
            let claim = client
                .prepare_cached(
                    "WITH due AS ( \
                         SELECT id, next_attempt_at FROM preservica_webhook_deliveries \
                         WHERE state = 'pending' AND next_attempt_at <= $1 \
                         ORDER BY next_attempt_at, id LIMIT $2 \
                         FOR UPDATE SKIP LOCKED) \
                     UPDATE preservica_webhook_deliveries AS d \
                     SET attempts = d.attempts + 1, lease_until = $3, next_attempt_at = $3 \
                     FROM due WHERE d.id = due.id \
                     RETURNING d.id, d.key, d.body, d.attempts - 1, due.next_attempt_at",
                )
                .await?;
            let next = client
                .prepare_cached(
                    "SELECT MIN(next_attempt_at) FROM preservica_webhook_deliveries \
                     WHERE state = 'pending' AND next_attempt_at > $1",
                )
                .await?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = client.query(&claim, &[&now, &limit, &lease_until]).await?;
            let mut due: Vec<(i64, Claimed)> = rows
                .iter()
                .filter_map(|row| {
                    let key = key_of(row, 1)?;
                    let body: Vec<u8> = row.get(2);
                    let attempts: i32 = row.get(3);
                    Some((
                        row.get::<_, i64>(4),
                        Claimed {
                            id: delivery_id(row.get(0)),
                            key,
                            body: Bytes::from(body),
                            attempts: u32::try_from(attempts).unwrap_or(0),
                        },
                    ))
                })
                .collect();
            due.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
            let next_due: Option<i64> = client.query_one(&next, &[&now]).await?.get(0);
            Ok(Claim {
                due: due.into_iter().map(|(_, claimed)| claimed).collect(),
                next_due,
            })
        }))
    }

    fn complete(
        &self,
        id: DeliveryId,
        attempt: u32,
        outcome: Outcome,
        now: i64,
    ) -> BoxFuture<'_, Result<(), InboxError>> {
        Box::pin(async move {
            let Some(id) = row_id(&id) else {
                return Ok(());
            };
            let (state, next, error) = match &outcome {
                Outcome::Done => (DeliveryState::Done, None, None),
                Outcome::Retry { at, error } => {
                    (DeliveryState::Pending, Some(*at), Some(error.as_str()))
                }
                Outcome::Dead { error } => (DeliveryState::Dead, None, Some(error.as_str())),
            };
            let attempt = i32::try_from(attempt).unwrap_or(i32::MAX);
            // The attempt is recorded by the same statement, for the row the update matched.
            let changed = self
                .with_client("record a handler outcome", async |client| {
                    let finish = client
                        .prepare_cached(
                            "WITH finished AS ( \
                                 UPDATE preservica_webhook_deliveries \
                                 SET state = $2, next_attempt_at = $3, lease_until = NULL, \
                                     last_error = COALESCE($4, last_error), updated_at = $5 \
                                 WHERE id = $1 AND state = 'pending' AND attempts = $6 \
                                     AND lease_until IS NOT NULL \
                                 RETURNING id) \
                             INSERT INTO preservica_webhook_attempts \
                                 (delivery_id, number, finished_at, outcome, retry_at, error) \
                             SELECT id, $6, $5, $7, $3, $4 FROM finished",
                        )
                        .await?;
                    client
                        .execute(
                            &finish,
                            &[
                                &id,
                                &state.as_str(),
                                &next,
                                &error,
                                &now,
                                &attempt,
                                &outcome.as_str(),
                            ],
                        )
                        .await
                })
                .await?;
            if changed == 0 {
                tracing::debug!(
                    id,
                    attempt,
                    "an outcome was ignored: another worker took the delivery over, or it was \
                     re-queued meanwhile"
                );
            }
            Ok(())
        })
    }

    fn prune(&self, before: i64) -> BoxFuture<'_, Result<usize, InboxError>> {
        Box::pin(async move {
            let pruned = self
                .with_client("prune", async |client| {
                    client
                        .execute(
                            "DELETE FROM preservica_webhook_deliveries \
                             WHERE state = 'done' AND updated_at < $1",
                            &[&before],
                        )
                        .await
                })
                .await?;
            Ok(usize::try_from(pruned).unwrap_or(usize::MAX))
        })
    }
}

/// The columns of a listed delivery; the attempt running under a live lease is not counted
/// as finished.
const ENTRY: &str = "id, key, state, received_at, \
    attempts - CASE WHEN lease_until > $1 THEN 1 ELSE 0 END, next_attempt_at, last_error, body";

fn entry_from_row(row: &tokio_postgres::Row) -> Option<InboxEntry> {
    let state: &str = row.get(2);
    let attempts: i32 = row.get(4);
    let body: Vec<u8> = row.get(7);
    Some(InboxEntry::from(StoredDelivery {
        id: delivery_id(row.get(0)),
        key: key_of(row, 1)?,
        body: Bytes::from(body),
        state: state.parse().ok()?,
        received_at: row.get(3),
        attempts: u32::try_from(attempts).unwrap_or(0),
        next_attempt_at: row.get(5),
        last_error: row.get(6),
    }))
}

/// Up to `limit` rows in the query's state and time range with ids below `below` (any when
/// `None`), newest first.
async fn page_chunk(
    client: &deadpool_postgres::Client,
    query: &PageQuery,
    below: Option<i64>,
    limit: usize,
) -> Result<Vec<InboxEntry>, tokio_postgres::Error> {
    let now = now_millis();
    let state = match query.state {
        StateFilter::All => None,
        StateFilter::Only(state) => Some(state.as_str()),
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut sql = format!("SELECT {ENTRY} FROM preservica_webhook_deliveries WHERE TRUE");
    let mut args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&now];
    let conditions: [(&str, Option<&(dyn tokio_postgres::types::ToSql + Sync)>); 4] = [
        ("id <", below.as_ref().map(|it| it as _)),
        ("state =", state.as_ref().map(|it| it as _)),
        (
            "received_at >=",
            query.received_from.as_ref().map(|it| it as _),
        ),
        (
            "received_at <",
            query.received_before.as_ref().map(|it| it as _),
        ),
    ];
    for (column, value) in conditions {
        if let Some(value) = value {
            args.push(value);
            sql.push_str(&format!(" AND {column} ${}", args.len()));
        }
    }
    args.push(&limit);
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
    let rows = client.query(&sql, &args).await?;
    Ok(rows.iter().filter_map(entry_from_row).collect())
}

/// When deliveries arrived, as of `now`, from the index by state and time received.
async fn activity(
    client: &deadpool_postgres::Client,
    now: i64,
) -> Result<Activity, tokio_postgres::Error> {
    let mut activity = Activity::default();
    let newest_per_state = ["pending", "done", "dead", "undecodable"]
        .map(|state| {
            format!(
                "(SELECT MAX(received_at) AS at FROM preservica_webhook_deliveries \
                 WHERE state = '{state}')"
            )
        })
        .join(" UNION ALL ");
    let row = client
        .query_one(
            &format!(
                "SELECT (SELECT MAX(at) FROM ({newest_per_state}) AS newest), \
                 (SELECT MIN(received_at) FROM preservica_webhook_deliveries \
                  WHERE state = 'pending')"
            ),
            &[],
        )
        .await?;
    activity.last_received_at = row.get(0);
    activity.oldest_pending_at = row.get(1);
    let rows = client
        .query(
            "SELECT ($1 - received_at) / 60000, COUNT(*) FROM preservica_webhook_deliveries \
             WHERE state IN ('pending', 'done', 'dead', 'undecodable') \
             AND received_at > $1 - 3600000 AND received_at <= $1 GROUP BY 1",
            &[&now],
        )
        .await?;
    for row in rows {
        let count: i64 = row.get(1);
        activity.add_minute(row.get(0), u32::try_from(count).unwrap_or(u32::MAX));
    }
    Ok(activity)
}

impl InboxAdmin for PostgresStore {
    fn list(&self, filter: StateFilter) -> BoxFuture<'_, Result<Vec<InboxEntry>, InboxError>> {
        Box::pin(self.with_client("list deliveries", async move |client| {
            let now = now_millis();
            let rows = match filter {
                StateFilter::All => {
                    let sql =
                        format!("SELECT {ENTRY} FROM preservica_webhook_deliveries ORDER BY id");
                    client.query(&sql, &[&now]).await?
                }
                StateFilter::Only(state) => {
                    let sql = format!(
                        "SELECT {ENTRY} FROM preservica_webhook_deliveries \
                         WHERE state = $2 ORDER BY id"
                    );
                    client.query(&sql, &[&now, &state.as_str()]).await?
                }
            };
            Ok(rows.iter().filter_map(entry_from_row).collect())
        }))
    }

    /// Newest first by id (`id < cursor ORDER BY id DESC LIMIT n`), a chunk of rows per round
    /// trip, with the state and time filters in SQL.
    fn page<'a>(&'a self, query: &'a PageQuery) -> BoxFuture<'a, Result<Page, InboxError>> {
        Box::pin(scan_chunks(query, move |below, wanted| {
            self.with_client("read a page of deliveries", async move |client| {
                page_chunk(client, query, below, wanted).await
            })
        }))
    }

    /// From the index by state and time received.
    fn activity(&self, now: i64) -> BoxFuture<'_, Result<Activity, InboxError>> {
        Box::pin(
            self.with_client("read when deliveries arrived", async move |client| {
                activity(client, now).await
            }),
        )
    }

    fn get<'a>(
        &'a self,
        id: &'a DeliveryId,
    ) -> BoxFuture<'a, Result<Option<InboxEntry>, InboxError>> {
        Box::pin(async move {
            let Some(id) = row_id(id) else {
                return Ok(None);
            };
            self.with_client("read a delivery", async |client| {
                let sql =
                    format!("SELECT {ENTRY} FROM preservica_webhook_deliveries WHERE id = $2");
                let row = client.query_opt(&sql, &[&now_millis(), &id]).await?;
                Ok(row.as_ref().and_then(entry_from_row))
            })
            .await
        })
    }

    fn retry<'a>(
        &'a self,
        id: &'a DeliveryId,
        now: i64,
    ) -> BoxFuture<'a, Result<bool, InboxError>> {
        Box::pin(async move {
            let Some(id) = row_id(id) else {
                return Ok(false);
            };
            Ok(self.requeue(Some(id), now).await? == 1)
        })
    }

    fn retry_dead(&self, now: i64) -> BoxFuture<'_, Result<usize, InboxError>> {
        Box::pin(self.requeue(None, now))
    }

    /// Reads the deliveries a page at a time (by id), writing each page before reading the
    /// next, so an export of a large inbox holds one page in memory.
    fn export<'a>(
        &'a self,
        out: &'a mut (dyn Write + Send),
    ) -> BoxFuture<'a, Result<usize, InboxError>> {
        Box::pin(async move {
            let mut after = 0_i64;
            let mut count = 0;
            loop {
                let page = self
                    .with_client("export deliveries", async |client| {
                        let sql = format!(
                            "SELECT {ENTRY} FROM preservica_webhook_deliveries \
                             WHERE id > $2 ORDER BY id LIMIT $3"
                        );
                        client
                            .query(&sql, &[&now_millis(), &after, &EXPORT_PAGE])
                            .await
                    })
                    .await?;
                let Some(last) = page.last() else {
                    break;
                };
                after = last.get(0);
                for entry in page.iter().filter_map(entry_from_row) {
                    crate::store::write_export_line(&entry, out)?;
                    count += 1;
                }
            }
            out.flush()?;
            Ok(count)
        })
    }

    /// Counted by the database, at most once a second (later calls within it get the same).
    fn runs(&self) -> BoxFuture<'_, Result<Vec<RunRecord>, InboxError>> {
        Box::pin(async move {
            let rows = self
                .with_client("list when receivers ran", async |client| {
                    client
                        .query(
                            "SELECT id, started_at, last_seen_at, stopped_at \
                             FROM preservica_webhook_runs ORDER BY started_at, id",
                            &[],
                        )
                        .await
                })
                .await?;
            Ok(rows
                .iter()
                .map(|row| RunRecord {
                    id: row.get(0),
                    started_at: row.get(1),
                    last_seen_at: row.get(2),
                    stopped_at: row.get(3),
                })
                .collect())
        })
    }

    fn attempts<'a>(
        &'a self,
        id: &'a DeliveryId,
    ) -> BoxFuture<'a, Result<Vec<Attempt>, InboxError>> {
        Box::pin(async move {
            let Some(id) = row_id(id) else {
                return Ok(Vec::new());
            };
            let rows = self
                .with_client("list a delivery's attempts", async |client| {
                    let attempts = client
                        .prepare_cached(
                            "SELECT number, finished_at, outcome, retry_at, error \
                             FROM preservica_webhook_attempts WHERE delivery_id = $1 \
                             ORDER BY seq",
                        )
                        .await?;
                    client.query(&attempts, &[&id]).await
                })
                .await?;
            Ok(rows
                .iter()
                .filter_map(|row| {
                    let number: i32 = row.get(0);
                    let outcome: &str = row.get(2);
                    Some(Attempt {
                        number: u32::try_from(number).unwrap_or(0),
                        finished_at: row.get(1),
                        outcome: Outcome::from_parts(outcome, row.get(3), row.get(4))?,
                    })
                })
                .collect())
        })
    }

    fn counts(&self) -> BoxFuture<'_, Result<StateCounts, InboxError>> {
        Box::pin(async move {
            let cached = *self.counts.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, counts)) = cached
                && at.elapsed() < COUNTS_FRESH
            {
                return Ok(counts);
            }
            let counts = self
                .with_client("count deliveries", async |client| {
                    let rows = client
                        .query(
                            "SELECT state, COUNT(*) FROM preservica_webhook_deliveries \
                             GROUP BY state",
                            &[],
                        )
                        .await?;
                    let mut counts = StateCounts::default();
                    for row in rows {
                        let state: &str = row.get(0);
                        counts.add(state.parse().ok(), row.get(1));
                    }
                    Ok(counts)
                })
                .await?;
            *self.counts.lock().unwrap_or_else(PoisonError::into_inner) =
                Some((Instant::now(), counts));
            Ok(counts)
        })
    }
}

impl Store for PostgresStore {
    fn record_run<'a>(&'a self, run: &'a RunRecord) -> BoxFuture<'a, Result<(), InboxError>> {
        Box::pin(async move {
            self.with_client("record the receiver's run", async |client| {
                client
                    .execute(
                        "INSERT INTO preservica_webhook_runs (id, started_at, last_seen_at, stopped_at) \
                         VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (id) DO UPDATE SET last_seen_at = EXCLUDED.last_seen_at, \
                             stopped_at = EXCLUDED.stopped_at",
                        &[&run.id, &run.started_at, &run.last_seen_at, &run.stopped_at],
                    )
                    .await
            })
            .await?;
            Ok(())
        })
    }

    /// Lets the deliveries already handed to the intake task be committed and answered, then
    /// closes the pool's connections.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Without its sender the task ends once the calls still sending are in and their
            // groups committed.
            drop(
                self.intake
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take(),
            );
            let task = self
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(task) = task
                && tokio::time::timeout(CALL_TIMEOUT.saturating_mul(2), task)
                    .await
                    .is_err()
            {
                tracing::warn!("the PostgreSQL inbox's last deliveries were not committed in time");
            }
            self.pool.close();
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn shows_a_location_without_its_password() {
        let check = |url: &str, vars: &[(&str, &str)], shown: &str| {
            let location = PostgresLocation::parse_with(url, env(vars)).unwrap();
            assert_eq!(location.to_string(), shown, "{url}");
            assert_eq!(
                format!("{location:?}"),
                format!("PostgresLocation({shown:?})")
            );
        };
        check(
            "postgres://u:secret@db:6543/inbox",
            &[],
            "postgres://u@db:6543/inbox",
        );
        check(
            "postgresql://u@db/inbox?password=secret&sslmode=require",
            &[],
            "postgresql://u@db:5432/inbox?sslmode=require",
        );
        check(
            "postgres:///inbox",
            &[
                ("PGHOST", "pg.example"),
                ("PGPORT", "7000"),
                ("PGUSER", "w"),
                ("PGPASSWORD", "secret"),
            ],
            "postgres://w@pg.example:7000/inbox",
        );
        check(
            "postgres://",
            &[
                ("PGUSER", "w"),
                ("PGDATABASE", "d"),
                ("PGSSLMODE", "verify-full"),
            ],
            "postgres://w@localhost:5432/d?sslmode=require",
        );
    }

    #[test]
    fn takes_the_password_and_tls_settings_from_the_environment_when_the_url_has_none() {
        let location = PostgresLocation::parse_with(
            "postgres://u@db/inbox",
            env(&[
                ("PGPASSWORD", "from-env"),
                ("PGSSLROOTCERT", "/ca.pem"),
                ("PGSSLMODE", "require"),
            ]),
        )
        .unwrap();
        assert_eq!(location.0.config.get_password(), Some(&b"from-env"[..]));
        assert!(location.0.tls);
        assert_eq!(location.0.root_cert.as_deref(), Some(Path::new("/ca.pem")));
        let url_wins = PostgresLocation::parse_with(
            "postgres://u:from-url@db/inbox?sslmode=disable",
            env(&[("PGPASSWORD", "from-env"), ("PGSSLMODE", "require")]),
        )
        .unwrap();
        assert_eq!(url_wins.0.config.get_password(), Some(&b"from-url"[..]));
        assert!(!url_wins.0.tls);
    }

    #[test]
    fn refuses_what_is_not_a_usable_url_without_showing_its_password() {
        let check = |url: &str, vars: &[(&str, &str)], says: &str| {
            let err = PostgresLocation::parse_with(url, env(vars)).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, InboxError::BadLocation { .. }), "{text}");
            assert!(text.contains(says), "{text}");
            assert!(!text.contains("secret"), "{text}");
            assert!(err.is_configuration());
        };
        check("mysql://u:secret@db/x", &[("PGUSER", "u")], "postgres://");
        check(
            "postgres://u:secret@db/x?sslmode=sometimes",
            &[],
            "sslmode=sometimes",
        );
        check("postgres://u:secret@db/x?bogus=1", &[], "bogus");
        check("postgres://db/x", &[], "PGUSER");
        check("postgres://u:secret@db/x", &[("PGPORT", "many")], "PGPORT");
    }

    #[test]
    fn gives_pgport_to_the_hosts_the_url_names_without_a_port() {
        let check = |url: &str, shown: &str| {
            let location = PostgresLocation::parse_with(url, env(&[("PGPORT", "7000")])).unwrap();
            assert_eq!(location.to_string(), shown, "{url}");
        };
        check("postgres://u@db/x", "postgres://u@db:7000/x");
        check("postgres://u:p@a:6000,b/x", "postgres://u@a:6000,b:7000/x");
        check("postgres://u@[::1]/x", "postgres://u@::1:7000/x");
    }
}
