//! Why a server or inbox operation failed.

use std::net::SocketAddr;
use std::path::PathBuf;

use preservica_webhook_core::ReceiverError;

/// Why a server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration cannot work (no secret, a bad path, a zero limit).
    #[error(transparent)]
    Config(#[from] ReceiverError),
    /// A limit in the configuration is zero.
    #[error("{0} must be at least 1")]
    ZeroLimit(&'static str),
    /// The listener could not be bound. The operating system's reason is the source; the
    /// port may be in use, below 1024 without privileges, or the address not this machine's.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("cannot load the TLS {what} from {}: {message}", path.display())]
    Tls {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        message: String,
    },
    /// The inbox could not be opened or failed.
    #[error(transparent)]
    Inbox(#[from] InboxError),
    /// Accepting connections failed.
    #[error("the listener failed")]
    Io(#[from] std::io::Error),
}

/// Why an inbox operation failed.
///
/// The error of the [`store`](crate::store) seam and of [`Inbox`](crate::Inbox). Each message
/// names the file and says what to do; the cause (the operating system's or SQLite's reason)
/// is the error's [`source`](std::error::Error::source), never repeated in its own message,
/// so a chain printed `error: cause: cause` says each thing once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboxError {
    /// The inbox file does not exist.
    #[error(
        "no inbox at {}; check the path or start the server once to create it",
        .0.display()
    )]
    NotFound(PathBuf),
    /// The inbox file could not be opened or created: a missing folder, no permission, a
    /// full disk.
    #[error(
        "cannot open the inbox {} (check that its folder exists and that this user may read and write there)",
        path.display()
    )]
    Open {
        /// The inbox file.
        path: PathBuf,
        /// The operating system's or SQLite's reason.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The inbox's lock file (`<inbox>.lock`) could not be opened, created or locked.
    #[error(
        "cannot open the inbox's lock file {} (check that this user may create files in its folder)",
        path.display()
    )]
    LockFile {
        /// The lock file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The file is not an SQLite database, or is damaged.
    #[error(
        "{} is not an inbox (check the path, or move the file aside to start a new inbox)",
        path.display()
    )]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// SQLite's reason.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The file is an SQLite database but not an inbox this version can read.
    #[error(
        "{} is not a webhook inbox (schema version {version}); check the path",
        path.display()
    )]
    NotAnInbox {
        /// The file.
        path: PathBuf,
        /// The schema version found.
        version: i64,
    },
    /// Another server holds the inbox: two servers on one inbox would process deliveries
    /// twice.
    #[error(
        "the inbox {} is in use by another server (it holds {}.lock); stop that server or give this one another inbox",
        .0.display(),
        .0.display()
    )]
    InUse(PathBuf),
    /// A shared inbox's location (a `postgres://` URL) cannot be used.
    #[error(
        "{location} is not a usable PostgreSQL inbox URL: {reason}; write it as \
         postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=require]"
    )]
    BadLocation {
        /// The location as given, its password replaced.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The database of a shared inbox could not be reached or refused this user when the
    /// store was opened.
    #[error(
        "cannot connect to the PostgreSQL inbox {location} (check that PostgreSQL runs there, \
         that it takes this user and password — in the URL or PGPASSWORD — and, with \
         sslmode=require, that its certificate is trusted: sslrootcert=PATH)"
    )]
    Connect {
        /// The location, without its password.
        location: String,
        /// The driver's reason.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The shared inbox's schema is newer than this program knows: a newer version migrated
    /// it.
    #[error(
        "the PostgreSQL inbox {location} has schema version {version}, newer than this \
         program knows; run the newer preservica-webhook that migrated it"
    )]
    UnknownSchema {
        /// The location, without its password.
        location: String,
        /// The schema version found.
        version: i64,
    },
    /// The inbox's database cannot be reached now (connection lost, no answer in time). The
    /// receiver answers 503 meanwhile; the store connects again by itself once it is back.
    #[error(
        "the inbox database cannot be reached (check that it runs and that this host can \
         connect to it); deliveries are answered 503 until it is back"
    )]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store failed on an inbox that was open: the database, the disk, the network.
    /// The message is the store's own (for SQLite, `the inbox database could not …` with
    /// SQLite's reason as its source). A store of your own makes one with
    /// [`InboxError::backend`].
    #[error(transparent)]
    Backend(Box<dyn std::error::Error + Send + Sync>),
    /// The inbox was closed (the server is shutting down).
    #[error("the inbox is closed; the server is shutting down")]
    Closed,
    /// The store does not do this (a store of your own that leaves out an optional part).
    #[error("this inbox cannot {0}; use the SQLite or in-memory inbox, or a store that does")]
    Unsupported(&'static str),
    /// A file could not be read or written (the export's output).
    #[error("input/output failed (check the path, its permissions and free space)")]
    Io(#[from] std::io::Error),
}

impl InboxError {
    /// Whether the user fixes this in the configuration: a bad path or permissions, a file
    /// that is not an inbox or is damaged, an inbox in use by another server, a database URL
    /// that cannot be used or reached. A command
    /// exits 2 for these.
    pub fn is_configuration(&self) -> bool {
        match self {
            InboxError::NotFound(_)
            | InboxError::Open { .. }
            | InboxError::LockFile { .. }
            | InboxError::Unreadable { .. }
            | InboxError::NotAnInbox { .. }
            | InboxError::InUse(_)
            | InboxError::Unsupported(_)
            | InboxError::BadLocation { .. }
            | InboxError::Connect { .. }
            | InboxError::UnknownSchema { .. } => true,
            InboxError::Unavailable(_)
            | InboxError::Backend(_)
            | InboxError::Closed
            | InboxError::Io(_) => false,
        }
    }

    /// A store's own failure, as [`InboxError::Backend`]. Its message should say what the
    /// store could not do, with the underlying reason as its source.
    pub fn backend(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> InboxError {
        InboxError::Backend(err.into())
    }
}

/// An error and its causes on one line, `error: cause: cause`, for the log.
pub(crate) struct Chain<'a>(pub(crate) &'a dyn std::error::Error);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
