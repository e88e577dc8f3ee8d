//! An async client for the parts of the Preservica REST API a webhook user needs: logging in
//! (with two-factor authentication), creating, listing and removing webhook subscriptions,
//! reading the entities events are about, downloading their thumbnails, and reading
//! Preservica's own records of what happened (the event log, the entities updated since a
//! time, the process monitors) to find notifications a receiver missed.
//!
//! # Example
//!
//! ```no_run
//! use preservica_webhook_client::{Client, CredentialOverrides, Credentials};
//! use preservica_webhook_core::{Secret, TriggerType};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Explicit values, else PRESERVICA_* environment variables, else ./credentials.properties.
//! let credentials = Credentials::resolve(&CredentialOverrides::default(), None)?;
//! let client = Client::builder().credentials(credentials).build()?;
//!
//! // Preservica calls the receiver (the challenge handshake) before this returns.
//! let secret = Secret::new("my shared secret")?;
//! let created = client
//!     .subscribe("https://hooks.example.org/preservica", &TriggerType::FullTextIndexed, &secret)
//!     .await?;
//! println!("subscribed as {}", created.id);
//!
//! for subscription in client.subscriptions().await? {
//!     println!("{} {} {:?}", subscription.id, subscription.url, subscription.trigger_type);
//! }
//!
//! client.unsubscribe(&created.id).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Behaviour
//!
//! - **Credentials** resolve as pyPreservica users have them ([`Credentials::resolve`]). The
//!   password, two-factor seed and access tokens never appear in `Debug` output, logs or
//!   errors.
//! - **Login**: the first call logs in; the token is shared by all clones and concurrent calls,
//!   renewed with the refresh token before it runs out (a new login when that fails), and after
//!   a 401 renewed once for all waiting callers before the request is sent again, once.
//! - **Two-factor authentication**: when Preservica asks, the current TOTP code is computed from
//!   the seed (SHA-1, 6 digits, 30 s) and sent.
//! - **Retries** ([`RetryPolicy`]): GET and DELETE on 502, 503, 504 and transport errors, with
//!   exponential backoff, jitter and `Retry-After`; a subscribe POST only when the connection
//!   was never made. Every request has a timeout.
//! - **Errors** are one enum, [`Error`], that keeps Preservica's status and message; a 403 from
//!   the webhook API names the user's roles and the one needed.
//!
//! # What is still guessed
//!
//! Preservica documents little of its error answers. The client reads a JSON `message` (or
//! `error`) field when there is one and otherwise keeps the start of the body; the statuses a
//! failed handshake produces, the exact fields of `/api/user/details` besides `roles`, and the
//! status of the two-factor answers besides 401 are not known and are read defensively.

pub use preservica_webhook_core as core;

mod auth;
mod client;
mod credentials;
mod entity;
mod error;
mod records;
mod retry;
mod thumbnail;
mod transport;

pub use crate::client::{Client, ClientBuilder, UnsubscribeAll, UserDetails};
pub use crate::credentials::{
    CredentialOverrides, Credentials, CredentialsError, DEFAULT_CREDENTIALS_FILE, MissingValue,
    PropertiesFile,
};
pub use crate::entity::Entity;
pub use crate::error::{Error, WEBHOOK_ROLES};
pub use crate::records::{EventAction, EventsQuery, Monitor, MonitorsQuery, UpdatedEntity};
pub use crate::retry::RetryPolicy;
pub use crate::thumbnail::{ParseThumbnailSizeError, Thumbnail, ThumbnailSize};
pub use preservica_webhook_core::{
    EntityRef, EntityType, Secret, Subscription, SubscriptionId, TriggerType,
};
