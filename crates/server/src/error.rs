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
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}; is another server using the port?")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("cannot load the TLS {what} from {path}: {message}")]
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
    #[error("the listener failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Why an inbox operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboxError {
    /// The inbox file does not exist.
    #[error("no inbox at {0}; check the path or start the server once to create it")]
    NotFound(PathBuf),
    /// The file is not an inbox this version can read.
    #[error("{path} is not a webhook inbox (schema version {version}); check the path")]
    NotAnInbox {
        /// The file.
        path: PathBuf,
        /// The schema version found.
        version: i64,
    },
    /// SQLite failed.
    #[error("the inbox database failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The inbox was closed (the server is shutting down).
    #[error("the inbox is closed; the server is shutting down")]
    Closed,
    /// Writing an export failed.
    #[error("cannot write the export: {0}")]
    Io(#[from] std::io::Error),
}
