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
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboxError {
    /// The inbox file does not exist.
    #[error(
        "no inbox at {}; check the path or start the server once to create it",
        .0.display()
    )]
    NotFound(PathBuf),
    /// The file is not an inbox this version can read.
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
    /// SQLite failed.
    #[error("the inbox database failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The inbox was closed (the server is shutting down).
    #[error("the inbox is closed; the server is shutting down")]
    Closed,
    /// A file could not be read or written (the export's output, the inbox's lock file).
    #[error("input/output failed: {0}; check the path, its permissions and free space")]
    Io(#[from] std::io::Error),
}
