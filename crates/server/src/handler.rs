//! The user's processing: the [`Handler`] trait, the [`Job`] it gets, the [`HandlerError`] it
//! returns.

use std::fmt;
use std::future::Future;

use bytes::Bytes;
use preservica_webhook_core::{Delivery, DeliveryKey};

use crate::store::DeliveryId;

/// The user's processing, called at least once per verified, decodable delivery.
///
/// Calls happen after the delivery is stored and acknowledged, on a pool of workers
/// ([`WebhookConfig::workers`](crate::WebhookConfig::workers) at once). A call that returns an
/// error, panics or runs past the handler timeout is retried with backoff; a delivery can
/// therefore be handled more than once (for example when the process stops mid-call), so
/// make the work idempotent.
///
/// ```
/// use preservica_webhook_server::{Handler, HandlerError, Job};
///
/// struct LogRefs;
///
/// impl Handler for LogRefs {
///     async fn handle(&self, job: &Job) -> Result<(), HandlerError> {
///         for entity in job.delivery.entity_refs() {
///             tracing::info!(entity, attempt = job.attempt, "entity changed");
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Processes one delivery. `Ok` marks it done; an error is retried unless
    /// [`HandlerError::permanent`].
    fn handle(&self, job: &Job) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// A stored delivery handed to the handler.
#[derive(Debug, Clone)]
pub struct Job {
    /// The delivery's id in the inbox (`inbox show <id>`).
    pub id: DeliveryId,
    /// The redelivery key (SHA-256 of the body).
    pub key: DeliveryKey,
    /// The raw body, exactly as received and verified.
    pub body: Bytes,
    /// The parsed delivery.
    pub delivery: Delivery,
    /// Which call this is: 1 on the first.
    pub attempt: u32,
}

/// Why a handler call failed: retried with backoff, unless permanent (a dead letter at once).
///
/// Any error converts into one, so `?` works in a handler. It deliberately does not implement
/// `std::error::Error` (that would clash with the blanket conversion).
#[derive(Debug)]
pub struct HandlerError {
    message: String,
    permanent: bool,
}

impl HandlerError {
    /// A failure worth retrying.
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            permanent: false,
        }
    }

    /// A failure that retrying cannot fix: the delivery becomes a dead letter at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            permanent: true,
        }
    }

    /// The message, as stored in the inbox.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether retrying is pointless.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(err: E) -> Self {
        let mut message = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        HandlerError::new(message)
    }
}
