//! The client: configuration, sending with retries and token renewal, and the operations.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::{StreamExt, TryStreamExt};
use preservica_webhook_core::{
    EntityRef, EntityType, NewSubscription, Secret, Subscription, SubscriptionId, TriggerType,
};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{RequestBuilder, Response, StatusCode};
use rustls_platform_verifier::BuilderVerifierExt as _;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use url::Url;

use crate::auth::{self, Auth};
use crate::credentials::{Credentials, Sensitive};
use crate::entity::{self, Entity};
use crate::error::Error;
use crate::retry::RetryPolicy;
use crate::thumbnail::{Thumbnail, ThumbnailSize};
use crate::transport::{Repeat, TOKEN_HEADER, Transport, message_of, read_body, redact};

/// How many subscriptions [`Client::unsubscribe_all`] deletes at once.
const UNSUBSCRIBE_CONCURRENCY: usize = 4;

/// How much of an error body is kept.
const MAX_ERROR_BODY: usize = 4096;

/// An async client for the parts of Preservica's REST API a webhook user needs.
///
/// Cheap to clone; clones share the connection pool and the access token. Its `Debug` shows
/// the server and user, never the password, seed or tokens.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

/// Settings for a [`Client`]; made by [`Client::builder`].
pub struct ClientBuilder {
    server: Option<String>,
    username: Option<String>,
    password: Option<Sensitive>,
    tenant: Option<String>,
    two_factor_seed: Option<Sensitive>,
    timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
    user_agent: String,
    unix_time: fn() -> u64,
}

/// The outcome of [`Client::unsubscribe_all`]: every subscription is either removed or failed.
#[derive(Debug)]
pub struct UnsubscribeAll {
    /// Subscriptions that are gone (including any that vanished before their turn).
    pub removed: Vec<SubscriptionId>,
    /// Subscriptions that could not be removed, each with why.
    pub failed: Vec<(SubscriptionId, Error)>,
}

/// What `/api/user/details` says about the logged-in user.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UserDetails {
    /// The user's roles (`ROLE_SDB_MANAGER_USER`, …).
    #[serde(default)]
    pub roles: Vec<String>,
    /// The user name, when the answer carries it.
    #[serde(default, alias = "userName", alias = "username")]
    pub user: Option<String>,
    /// The tenant, when the answer carries it.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl UserDetails {
    /// Whether the user has one of the roles the webhook API needs.
    pub fn can_manage_webhooks(&self) -> bool {
        self.roles
            .iter()
            .any(|role| crate::error::WEBHOOK_ROLES.contains(&role.as_str()))
    }
}

/// The state shared by clones of a [`Client`]: how requests are sent, and who they are sent
/// as.
pub(crate) struct Inner {
    pub(crate) transport: Transport,
    auth: Auth,
}

impl Client {
    /// Starts configuring a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            server: None,
            username: None,
            password: None,
            tenant: None,
            two_factor_seed: None,
            timeout: Duration::from_secs(62),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            user_agent: concat!("preservica-webhook-client/", env!("CARGO_PKG_VERSION")).to_owned(),
            unix_time: system_unix_time,
        }
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &Url {
        self.inner.transport.base()
    }

    /// The tenant: as configured, or as learned from the last login.
    pub async fn tenant(&self) -> Option<String> {
        self.inner.auth.tenant().await
    }

    /// Subscribes `url` to `trigger` events, signed with `secret`; deliveries carry the
    /// entities' identifiers.
    ///
    /// Preservica checks the receiver (the challenge handshake) during this call, so the
    /// receiver must be up and reachable from Preservica first. Sent once, unless the
    /// connection could not even be made.
    ///
    /// # Errors
    /// [`Error::Status`] with Preservica's status and message when it refuses (with a hint
    /// when the status suggests the handshake failed), [`Error::Permission`] on 403 naming the
    /// user's roles, and the transport and login errors of every call.
    pub async fn subscribe(
        &self,
        url: &str,
        trigger: &TriggerType,
        secret: &Secret,
    ) -> Result<Subscription, Error> {
        const OPERATION: &str = "subscribe";
        let body = serde_json::to_vec(&NewSubscription {
            url,
            trigger_type: trigger,
            secret,
            include_identifiers: true,
        })
        .map_err(|err| Error::Configuration(format!("cannot encode the subscription: {err}")))?;
        let endpoint = self
            .inner
            .transport
            .endpoint(&["api", "webhook", "subscriptions"]);
        let response = self
            .inner
            .call(OPERATION, Repeat::ConnectOnly, |http| {
                http.post(endpoint.clone())
                    .header(ACCEPT, "application/json")
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
            .await?;
        let status = response.status();
        if status.is_success() {
            return read_json(OPERATION, "the new subscription", response).await;
        }
        let error = self.webhook_failure(OPERATION, response).await;
        Err(match error {
            Error::Status {
                operation,
                status,
                message,
                body,
                hint: _,
            } => Error::Status {
                operation,
                status,
                message: redact(&message, secret.insecure_expose()),
                body: redact(&body, secret.insecure_expose()),
                hint: handshake_hint(status),
            },
            Error::Permission {
                operation,
                message,
                roles,
            } => Error::Permission {
                operation,
                message: redact(&message, secret.insecure_expose()),
                roles,
            },
            other => other,
        })
    }

    /// Lists the subscriptions. Unknown fields and trigger types are kept, not refused.
    ///
    /// # Errors
    /// [`Error::Permission`] on 403, [`Error::Status`] for other refusals, [`Error::Decode`]
    /// when the answer is not a list of subscriptions.
    pub async fn subscriptions(&self) -> Result<Vec<Subscription>, Error> {
        const OPERATION: &str = "list the subscriptions";
        let endpoint = self
            .inner
            .transport
            .endpoint(&["api", "webhook", "subscriptions"]);
        let response = self
            .inner
            .call(OPERATION, Repeat::Safe, |http| {
                http.get(endpoint.clone())
                    .header(ACCEPT, "application/json")
            })
            .await?;
        if !response.status().is_success() {
            return Err(self.webhook_failure(OPERATION, response).await);
        }
        read_json(OPERATION, "the subscription list", response).await
    }

    /// Removes one subscription.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such subscription, [`Error::Permission`] on 403,
    /// [`Error::Status`] for other refusals.
    pub async fn unsubscribe(&self, id: &SubscriptionId) -> Result<(), Error> {
        const OPERATION: &str = "unsubscribe";
        let endpoint =
            self.inner
                .transport
                .endpoint(&["api", "webhook", "subscriptions", id.as_str()]);
        let response = self
            .inner
            .call(OPERATION, Repeat::Safe, |http| {
                http.delete(endpoint.clone())
            })
            .await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if status == StatusCode::NOT_FOUND {
            return Err(Error::NotFound {
                what: format!("subscription {id}"),
            });
        }
        Err(self.webhook_failure(OPERATION, response).await)
    }

    /// Lists the subscriptions, then removes them all, four at a time. A subscription that is
    /// already gone (404) counts as removed.
    ///
    /// # Errors
    /// Only when the list cannot be read; each failed removal is reported in
    /// [`UnsubscribeAll::failed`] with its own error.
    pub async fn unsubscribe_all(&self) -> Result<UnsubscribeAll, Error> {
        let subscriptions = self.subscriptions().await?;
        let outcomes: Vec<(SubscriptionId, Result<(), Error>)> =
            futures_util::stream::iter(subscriptions)
                .map(|subscription| async move {
                    let outcome = self.unsubscribe(&subscription.id).await;
                    (subscription.id, outcome)
                })
                .buffer_unordered(UNSUBSCRIBE_CONCURRENCY)
                .collect()
                .await;
        let mut result = UnsubscribeAll {
            removed: Vec::new(),
            failed: Vec::new(),
        };
        for (id, outcome) in outcomes {
            match outcome {
                Ok(()) => result.removed.push(id),
                Err(err) if err.is_not_found() => result.removed.push(id),
                Err(err) => result.failed.push((id, err)),
            }
        }
        result.removed.sort();
        result.failed.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(result)
    }

    /// Who the client is logged in as, with the user's roles.
    ///
    /// # Errors
    /// [`Error::Status`] when refused, [`Error::Decode`] for an unexpected answer.
    pub async fn user_details(&self) -> Result<UserDetails, Error> {
        const OPERATION: &str = "read the user's details";
        let endpoint = self.inner.transport.endpoint(&["api", "user", "details"]);
        let response = self
            .inner
            .call(OPERATION, Repeat::Safe, |http| {
                http.get(endpoint.clone())
                    .header(ACCEPT, "application/json")
            })
            .await?;
        if !response.status().is_success() {
            return Err(self.inner.failure(OPERATION, response).await);
        }
        read_json(OPERATION, "the user details", response).await
    }

    /// Reads an asset (information object).
    ///
    /// # Errors
    /// As [`Client::entity`].
    pub async fn asset(&self, reference: &EntityRef) -> Result<Entity, Error> {
        self.entity(&EntityType::Asset, reference).await
    }

    /// Reads a folder (structural object).
    ///
    /// # Errors
    /// As [`Client::entity`].
    pub async fn folder(&self, reference: &EntityRef) -> Result<Entity, Error> {
        self.entity(&EntityType::Folder, reference).await
    }

    /// Reads an entity of the given kind (asset, folder or content object).
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such entity, [`Error::Configuration`] for an
    /// entity type the entity API does not serve, [`Error::Decode`] when
    /// the XML holds no entity, [`Error::Status`] for other refusals.
    pub async fn entity(&self, kind: &EntityType, reference: &EntityRef) -> Result<Entity, Error> {
        const OPERATION: &str = "read the entity";
        let collection = entity::collection(kind)?;
        let endpoint =
            self.inner
                .transport
                .endpoint(&["api", "entity", collection, reference.as_str()]);
        let response = self
            .inner
            .call(OPERATION, Repeat::Safe, |http| {
                http.get(endpoint.clone()).header(ACCEPT, "application/xml")
            })
            .await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Err(Error::NotFound {
                what: format!("{} {reference}", entity::noun(kind)),
            });
        }
        if !status.is_success() {
            return Err(self.inner.failure(OPERATION, response).await);
        }
        let body = read_body(OPERATION, "the entity", response).await?;
        Entity::from_xml(&String::from_utf8_lossy(&body))
    }

    /// Streams an entity's thumbnail to `out`, chunk by chunk, and flushes it. `Ok(None)` when
    /// the entity has no thumbnail (404); nothing is written then.
    ///
    /// # Errors
    /// [`Error::Write`] when `out` fails, [`Error::Transport`] when the download breaks off
    /// (part of the image may have been written), [`Error::Status`] for refusals.
    pub async fn thumbnail<W: AsyncWrite + Unpin>(
        &self,
        kind: &EntityType,
        reference: &EntityRef,
        size: ThumbnailSize,
        out: &mut W,
    ) -> Result<Option<Thumbnail>, Error> {
        let Some(response) = self.thumbnail_response(kind, reference, size).await? else {
            return Ok(None);
        };
        let target = "the writer";
        copy_body(response, out, target).await.map(Some)
    }

    /// Streams an entity's thumbnail into a temporary file beside `path`, then renames it to
    /// `path`. `Ok(None)`, and no file, when the entity has no thumbnail (404).
    ///
    /// # Errors
    /// As [`Client::thumbnail`]; on any error the temporary file is removed.
    pub async fn thumbnail_to_file(
        &self,
        kind: &EntityType,
        reference: &EntityRef,
        size: ThumbnailSize,
        path: &Path,
    ) -> Result<Option<Thumbnail>, Error> {
        let Some(response) = self.thumbnail_response(kind, reference, size).await? else {
            return Ok(None);
        };
        let target = path.display().to_string();
        let temporary = temporary_beside(path);
        let write_error = |source| Error::Write {
            target: target.clone(),
            source,
        };
        let mut file = tokio::fs::File::create(&temporary)
            .await
            .map_err(write_error)?;
        let written = async {
            let thumbnail = copy_body(response, &mut file, &target).await?;
            file.sync_all().await.map_err(write_error)?;
            drop(file);
            tokio::fs::rename(&temporary, path)
                .await
                .map_err(write_error)?;
            Ok(thumbnail)
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&temporary).await;
        }
        written.map(Some)
    }

    async fn thumbnail_response(
        &self,
        kind: &EntityType,
        reference: &EntityRef,
        size: ThumbnailSize,
    ) -> Result<Option<Response>, Error> {
        const OPERATION: &str = "download the thumbnail";
        let endpoint = self
            .inner
            .transport
            .endpoint(&["api", "content", "thumbnail"]);
        let id = format!("sdb:{}|{reference}", kind.as_str());
        let response = self
            .inner
            .call(OPERATION, Repeat::Safe, |http| {
                http.get(endpoint.clone())
                    .query(&[("id", id.as_str()), ("size", size.as_str())])
            })
            .await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(self.inner.failure(OPERATION, response).await);
        }
        Ok(Some(response))
    }

    /// Turns a refused webhook API call into an error; a 403 looks up the user's roles.
    async fn webhook_failure(&self, operation: &'static str, response: Response) -> Error {
        let error = self.inner.failure(operation, response).await;
        let Error::Status {
            status: StatusCode::FORBIDDEN,
            message,
            ..
        } = error
        else {
            return error;
        };
        let roles = match self.user_details().await {
            Ok(details) => Some(details.roles),
            Err(err) => {
                tracing::debug!(error = %err, "could not look up the user's roles");
                None
            }
        };
        Error::Permission {
            operation,
            message,
            roles,
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.inner.transport.base().as_str())
            .field("username", &self.inner.auth.username())
            .field("two_factor", &self.inner.auth.has_two_factor())
            .field("retry", self.inner.transport.retry())
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// The server: a host name (`eu.preservica.com`, reached over https) or a full base URL
    /// (`http://127.0.0.1:8080`, `https://host/prefix`).
    #[must_use]
    pub fn server(mut self, server: &str) -> ClientBuilder {
        self.server = Some(server.to_owned());
        self
    }

    /// Takes server, username, password, tenant and two-factor seed from resolved
    /// credentials; later calls to the single setters override them.
    #[must_use]
    pub fn credentials(mut self, credentials: Credentials) -> ClientBuilder {
        self.server = Some(credentials.server().to_owned());
        self.username = Some(credentials.username().to_owned());
        self.password = Some(credentials.password().clone());
        self.tenant = credentials.tenant().map(str::to_owned);
        self.two_factor_seed = credentials.two_factor_seed().cloned();
        self
    }

    /// The user to log in as.
    #[must_use]
    pub fn username(mut self, username: &str) -> ClientBuilder {
        self.username = Some(username.to_owned());
        self
    }

    /// The user's password.
    #[must_use]
    pub fn password(mut self, password: &str) -> ClientBuilder {
        self.password = Some(Sensitive(password.to_owned()));
        self
    }

    /// The tenant; when not set it is learned from the login answer.
    #[must_use]
    pub fn tenant(mut self, tenant: &str) -> ClientBuilder {
        self.tenant = Some(tenant.to_owned());
        self
    }

    /// The base32 seed of the user's two-factor authenticator, for users with 2FA switched on.
    #[must_use]
    pub fn two_factor_seed(mut self, seed: &str) -> ClientBuilder {
        self.two_factor_seed = Some(Sensitive(seed.to_owned()));
        self
    }

    /// The limit for a whole request, answer body included (default 62 s, as pyPreservica).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.timeout = timeout;
        self
    }

    /// The limit for making a connection (default 10 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// How failed requests are retried (default [`RetryPolicy::default`]).
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> ClientBuilder {
        self.retry = retry;
        self
    }

    /// The `User-Agent` header (default `preservica-webhook-client/<version>`).
    #[must_use]
    pub fn user_agent(mut self, user_agent: &str) -> ClientBuilder {
        self.user_agent = user_agent.to_owned();
        self
    }

    /// Sets the clock the two-factor code is computed from (tests use a fixed time).
    #[cfg(test)]
    pub(crate) fn unix_time(mut self, unix_time: fn() -> u64) -> ClientBuilder {
        self.unix_time = unix_time;
        self
    }

    /// Builds the client. Nothing is sent yet: the first call logs in.
    ///
    /// # Errors
    /// [`Error::Configuration`] when server, username or password is missing, the server is
    /// not a host or URL, the two-factor seed is not base32, or the HTTP client cannot be made.
    pub fn build(self) -> Result<Client, Error> {
        let missing = |what: &str| {
            Error::Configuration(format!(
                "no {what} given; set it on the builder or through credentials"
            ))
        };
        let server = self.server.ok_or_else(|| missing("server"))?;
        let base = base_url(&server)?;
        let username = self
            .username
            .filter(|it| !it.is_empty())
            .ok_or_else(|| missing("username"))?;
        let password = self.password.ok_or_else(|| missing("password"))?;
        let totp = self
            .two_factor_seed
            .as_ref()
            .map(|seed| auth::totp(seed.expose()))
            .transpose()?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config()?)
            .redirect(reqwest::redirect::Policy::custom(same_host_redirects))
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .user_agent(self.user_agent)
            .build()
            .map_err(|err| Error::Configuration(format!("cannot make the HTTP client: {err}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                transport: Transport::new(http, base, self.retry),
                auth: Auth::new(username, password, totp, self.tenant, self.unix_time),
            }),
        })
    }
}

/// The TLS settings of every connection the client makes: ring as the crypto provider, given to
/// this configuration alone rather than installed for the whole process (an application keeps
/// its own choice of provider), and otherwise what reqwest would choose itself: the platform's
/// certificate verifier, TLS 1.2 and 1.3, SNI, and ALPN offering HTTP/2 and HTTP/1.1.
///
/// # Errors
/// [`Error::Configuration`] when the platform verifier cannot be set up.
pub(crate) fn tls_config() -> Result<rustls::ClientConfig, Error> {
    let unusable = |err: rustls::Error| Error::Configuration(format!("cannot set up TLS: {err}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(unusable)?
        .with_platform_verifier()
        .map_err(unusable)?
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("tenant", &self.tenant)
            .field("two_factor_seed", &self.two_factor_seed)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retry", &self.retry)
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

impl Inner {
    /// Sends an authenticated request: with the current token, and after a 401 once more with
    /// a renewed one (one renewal for all callers that saw the same token refused).
    pub(crate) async fn call(
        &self,
        operation: &'static str,
        repeat: Repeat,
        request: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, Error> {
        let mut token = self.auth.token(&self.transport).await?;
        let mut renewed = false;
        loop {
            let response = self
                .transport
                .send(operation, repeat, || {
                    request(self.transport.http()).header(TOKEN_HEADER, token.value.as_str())
                })
                .await?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            if renewed {
                return Err(Error::Unauthorized { operation });
            }
            token = self
                .auth
                .renew_after_unauthorized(&self.transport, token.generation)
                .await?;
            renewed = true;
        }
    }

    /// Reads at most [`MAX_ERROR_BODY`] bytes of a refused answer into an [`Error::Status`],
    /// with the password and the access and refresh tokens removed: a server that echoes the
    /// request must not put them into an error that gets logged.
    pub(crate) async fn failure(&self, operation: &'static str, response: Response) -> Error {
        // Read a little past the limit so a secret that straddles it is still seen whole.
        const READ: usize = MAX_ERROR_BODY + 1024;
        let status = response.status();
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while body.len() < READ {
            match stream.next().await {
                Some(Ok(chunk)) => body.extend_from_slice(&chunk),
                Some(Err(_)) | None => break,
            }
        }
        body.truncate(READ);
        let redactor = self.auth.redactor().await;
        let mut text = redactor.redact(&String::from_utf8_lossy(&body));
        truncate_at_char(&mut text, MAX_ERROR_BODY);
        // The message is decoded from JSON, where a secret may have been escaped: redact again.
        let message = redactor.redact(&message_of(status, text.as_bytes()));
        Error::Status {
            operation,
            status,
            message,
            body: text,
            hint: None,
        }
    }
}

/// Follows at most five redirects, and only on the same host (an upgrade from http to https
/// included): the access token travels in a header reqwest does not strip, so a redirect to
/// another host would hand it over. A refused redirect comes back as the 3xx answer.
fn same_host_redirects(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    let Some(first) = attempt.previous().first() else {
        return attempt.stop();
    };
    let next = attempt.url();
    let same_port = next.port_or_known_default() == first.port_or_known_default();
    let upgrade = first.scheme() == "http" && next.scheme() == "https";
    let allowed = next.host_str() == first.host_str()
        && (next.scheme() == first.scheme() && same_port || upgrade);
    if attempt.previous().len() > 5 || !allowed {
        return attempt.stop();
    }
    attempt.follow()
}

/// What a refused subscribe probably means.
fn handshake_hint(status: StatusCode) -> Option<&'static str> {
    let suggests_handshake = match status.as_u16() {
        400 | 409 | 412 | 417 | 422 | 424 | 500 | 502 | 504 => true,
        code => (400..500).contains(&code) && !matches!(code, 401 | 403 | 404 | 405 | 413 | 429),
    };
    suggests_handshake.then_some(
        "Preservica may have been unable to verify the receiver: it must be reachable from Preservica and answer the challenge with the same secret",
    )
}

async fn read_json<T: serde::de::DeserializeOwned>(
    operation: &'static str,
    what: &'static str,
    response: Response,
) -> Result<T, Error> {
    let body = read_body(operation, what, response).await?;
    serde_json::from_slice(&body).map_err(|err| Error::Decode {
        what,
        detail: err.to_string(),
    })
}

/// Copies a response body to `out` chunk by chunk.
async fn copy_body<W: AsyncWrite + Unpin>(
    response: Response,
    out: &mut W,
    target: &str,
) -> Result<Thumbnail, Error> {
    const OPERATION: &str = "download the thumbnail";
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|it| it.to_str().ok())
        .map(str::to_owned);
    let write_error = |source| Error::Write {
        target: target.to_owned(),
        source,
    };
    let mut stream = response.bytes_stream().map_err(|source| Error::Transport {
        operation: OPERATION,
        source,
    });
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        out.write_all(&chunk).await.map_err(write_error)?;
        bytes += chunk.len() as u64;
    }
    out.flush().await.map_err(write_error)?;
    Ok(Thumbnail {
        content_type,
        bytes,
    })
}

/// A hidden temporary name in the same directory as `path`, so the rename stays on one disk.
fn temporary_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|it| it.to_string_lossy().into_owned())
        .unwrap_or_else(|| "thumbnail".to_owned());
    let suffix: u64 = rand::random();
    path.with_file_name(format!(".{name}.{suffix:016x}.part"))
}

/// Parses the server setting: a host becomes `https://host/`, a URL is taken as it is.
fn base_url(server: &str) -> Result<Url, Error> {
    let server = server.trim();
    let text = if server.contains("://") {
        server.to_owned()
    } else {
        format!("https://{server}")
    };
    let shown = without_userinfo(server);
    let invalid = |why: String| {
        Error::Configuration(format!(
            "the server {shown:?} is not a host name or base URL ({why}); give e.g. eu.preservica.com or https://eu.preservica.com"
        ))
    };
    let url = Url::parse(&text).map_err(|err| invalid(err.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() || url.host().is_none() {
        return Err(invalid("not an http or https URL with a host".to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "it carries a user or password; give those separately".to_owned(),
        ));
    }
    Ok(url)
}

/// The server setting as it may be shown: a user and password before an `@` in the authority
/// (`https://user:pass@host`) become `***`, so a refused setting does not print the password.
fn without_userinfo(server: &str) -> String {
    let (scheme, rest) = match server.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, server),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return server.to_owned();
    };
    let host_and_path = &rest[at + 1..];
    match scheme {
        Some(scheme) => format!("{scheme}://***@{host_and_path}"),
        None => format!("***@{host_and_path}"),
    }
}

/// Cuts `text` to at most `max` bytes, on a character boundary.
fn truncate_at_char(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
}

fn system_unix_time() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |it| it.as_secs())
}

#[cfg(test)]
mod tests;
