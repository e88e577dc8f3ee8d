//! The receiver as a service: reads a request around the core's [`Receiver`] decisions,
//! stores verified deliveries, answers. Used by [`Server`](crate::Server) and mountable in any
//! hyper or tower application as a [`WebhookService`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut as _, Bytes, BytesMut};
use http::header::{ALLOW, CONNECTION, CONTENT_TYPE, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Body;
use preservica_webhook_core::{Decision, Head, Receiver, Rejection, Reply, SignedRequest};
use prometheus_client::registry::Registry;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::access_log::RequestLine;
use crate::config::WebhookConfig;
use crate::error::{Chain, ServerError};
use crate::handler::Handler;
use crate::inbox::{self, DeliveryState};
use crate::metrics::{self, Metrics};
use crate::refusal::Refusal;
use crate::run_log;
use crate::store::{self, NewDelivery, Store, Stored};
use crate::worker::{Work, WorkerSettings, dispatch};

/// The receiver with its inbox and workers, for mounting in an application of your own.
///
/// [`Webhook::start`] opens the inbox and starts the workers; [`Webhook::service`] gives the
/// request side as a [`WebhookService`] (a `tower::Service` and a `hyper` service) with the
/// same verification, inbox and limits as the ready [`Server`](crate::Server) — except the
/// connection-level ones (header timeout, connection cap, TLS), which belong to your server.
/// The service answers on [`WebhookConfig::path`]: set it to the path the service sees.
///
/// ```no_run
/// use preservica_webhook_core::Secret;
/// use preservica_webhook_server::{Handler, HandlerError, Job, Webhook, WebhookConfig};
///
/// struct Print;
/// impl Handler for Print {
///     async fn handle(&self, job: &Job) -> Result<(), HandlerError> {
///         tracing::info!(id = %job.id, "delivery");
///         Ok(())
///     }
/// }
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut config = WebhookConfig::new(vec![Secret::new("my_shared_secret")?]);
/// config.path = "/hooks/preservica".to_owned();
/// let webhook = Webhook::start(&config, Print).await?;
/// let service = webhook.service();
/// // Mount `service` in your router, e.g. axum's `route_service("/hooks/preservica", service)`.
/// # drop(service);
/// webhook.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Webhook {
    shared: Arc<Shared>,
    workers: Option<JoinHandle<()>>,
    run_log: Option<JoinHandle<()>>,
    stop: CancellationToken,
}

/// The request side of a [`Webhook`]: verifies, stores, answers.
///
/// It knows the webhook path alone: health and metrics are the ready
/// [`Server`](crate::Server)'s, and every other path is answered 404 as the protocol says.
///
/// It implements `tower::Service<http::Request<B>>` for any body `B` and
/// `hyper::service::Service<http::Request<hyper::body::Incoming>>`, never fails (every
/// problem is an HTTP answer) and is cheap to clone. Each request is logged on one line
/// (`request`, at debug level under the target `preservica_webhook_server::request`: see the
/// [crate documentation](crate)); insert a [`RemoteAddr`] into the request for the line to
/// say where it came from.
#[derive(Debug, Clone)]
pub struct WebhookService {
    shared: Arc<Shared>,
}

/// The address a request came from, carried as a request extension so that the request log
/// names who sent it (`remote=…`): who sent a forged delivery, who probes the webhook.
///
/// The ready [`Server`](crate::Server) inserts it into every request. An application that
/// mounts a [`WebhookService`] inserts the same before calling the service, from whatever its
/// server knows about the connection (axum's `ConnectInfo<SocketAddr>`, for instance):
///
/// ```
/// use preservica_webhook_server::RemoteAddr;
///
/// let mut request = http::Request::new(String::new());
/// let peer = "192.0.2.7:51234".parse().unwrap();
/// request.extensions_mut().insert(RemoteAddr(peer));
/// ```
///
/// Without it the request line has no `remote` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RemoteAddr(pub SocketAddr);

/// The response body the service sends.
pub type ResponseBody = Full<Bytes>;

/// State shared by every request and the workers.
#[derive(Debug)]
pub(crate) struct Shared {
    receiver: Receiver,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) metrics: Arc<Metrics>,
    /// Rung when a new delivery is stored, so an idle worker looks at once.
    pub(crate) wake: Arc<Notify>,
    max_body: usize,
    body_timeout: Duration,
}

impl Webhook {
    /// Opens the inbox and starts the workers that call `handler`.
    ///
    /// # Errors
    /// [`ServerError::Config`] without a secret or with a path not starting with `/`,
    /// [`ServerError::ZeroLimit`] for a zero limit, [`ServerError::Inbox`] when the inbox
    /// cannot be opened.
    pub async fn start<H: Handler>(
        config: &WebhookConfig,
        handler: H,
    ) -> Result<Webhook, ServerError> {
        let opened = Opened::open(config).await?;
        Ok(opened.start(handler))
    }

    /// Like [`Webhook::start`], and registers the receiver's metrics in `registry`, so an
    /// application serves them beside its own: every name starts `preservica_webhook_`
    /// (after the registry's own prefix, if it has one). The inbox gauges
    /// (`inbox_depth`, `dead_letters`) are read from the inbox by
    /// [`Webhook::refresh_metrics`]: call it before encoding the registry.
    ///
    /// ```no_run
    /// # use preservica_webhook_server::{Handler, Webhook, WebhookConfig};
    /// # async fn run(config: WebhookConfig, handler: impl Handler) -> Result<(), Box<dyn std::error::Error>> {
    /// use preservica_webhook_server::prometheus_client::registry::Registry;
    ///
    /// let mut registry = Registry::default();
    /// let webhook = Webhook::start_with_registry(&config, handler, &mut registry).await?;
    /// // At each scrape:
    /// webhook.refresh_metrics().await;
    /// let mut text = String::new();
    /// preservica_webhook_server::prometheus_client::encoding::text::encode(&mut text, &registry)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Webhook::start`].
    pub async fn start_with_registry<H: Handler>(
        config: &WebhookConfig,
        handler: H,
        registry: &mut Registry,
    ) -> Result<Webhook, ServerError> {
        let opened = Opened::open(config).await?;
        opened.shared.metrics.register(registry);
        Ok(opened.start(handler))
    }

    /// The request side, to mount in an application.
    pub fn service(&self) -> WebhookService {
        WebhookService {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The Prometheus text exposition of the receiver's metrics alone, to serve where you
    /// like. To serve them beside your own, see [`Webhook::start_with_registry`].
    pub async fn metrics_text(&self) -> String {
        self.shared.render_metrics().await
    }

    /// Reads the inbox gauges (`inbox_depth`, `dead_letters`) from the inbox, so that the
    /// registry given to [`Webhook::start_with_registry`] shows them current. The counters need
    /// no refreshing; when the inbox cannot count, the gauges keep their last values.
    pub async fn refresh_metrics(&self) {
        self.shared.refresh_gauges().await;
    }

    /// Stops the workers (running handler calls may finish within
    /// [`WebhookConfig::shutdown_grace`]) and closes the inbox. Requests still arriving at a
    /// service afterwards are answered 503.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(workers) = self.workers.take() {
            let _ = workers.await;
        }
        if let Some(run_log) = self.run_log.take() {
            let _ = run_log.await;
        }
        self.shared.store.close().await;
        tracing::info!("inbox closed");
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A validated configuration with its inbox open, not yet processing.
#[derive(Debug)]
pub(crate) struct Opened {
    shared: Arc<Shared>,
    settings: WorkerSettings,
    heartbeat: Option<Duration>,
}

impl Opened {
    pub(crate) async fn open(config: &WebhookConfig) -> Result<Opened, ServerError> {
        let receiver = Receiver::new(config.secrets.iter().cloned())?.with_path(&config.path)?;
        if config.max_body == 0 {
            return Err(ServerError::ZeroLimit("max_body"));
        }
        if config.retry.max_attempts == 0 {
            return Err(ServerError::ZeroLimit("retry.max_attempts"));
        }
        let inbox = config.inbox.clone();
        let metrics = Metrics::new();
        let commits = metrics.inbox_commits.clone();
        let store = store::open(inbox, commits).await?;
        let shared = Arc::new(Shared {
            receiver,
            store,
            metrics: Arc::new(metrics),
            wake: Arc::new(Notify::new()),
            max_body: config.max_body,
            body_timeout: config.body_timeout,
        });
        Ok(Opened {
            shared,
            settings: WorkerSettings::from(config),
            heartbeat: config.heartbeat,
        })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Starts the workers, unless the configuration asks for none.
    pub(crate) fn start<H: Handler>(self, handler: H) -> Webhook {
        let stop = CancellationToken::new();
        let work = Arc::new(Work {
            store: Arc::clone(&self.shared.store),
            metrics: Arc::clone(&self.shared.metrics),
            wake: Arc::clone(&self.shared.wake),
        });
        let workers = (self.settings.workers > 0).then(|| {
            tokio::spawn(dispatch(
                work,
                Arc::new(handler),
                self.settings,
                stop.clone(),
            ))
        });
        if workers.is_none() {
            tracing::info!("no workers: deliveries are stored for workers elsewhere to handle");
        }
        let run_log = self
            .heartbeat
            .map(|every| run_log::spawn(Arc::clone(&self.shared.store), every, stop.clone()));
        Webhook {
            shared: self.shared,
            workers,
            run_log,
            stop,
        }
    }
}

impl Shared {
    /// Answers one request to the webhook, logging it and recording its latency.
    pub(crate) async fn respond<B>(&self, request: Request<B>) -> Response<ResponseBody>
    where
        B: Body,
        B::Data: Buf,
    {
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        // Answers decided from the head leave any body unread, and hyper then closes the
        // connection: say so, so a client does not send its next request into a closed socket.
        let body_left_unread = !body.is_end_stream();
        let (reply, outcome, close) =
            match self
                .receiver
                .decide_head(&parts.method, &parts.uri, &parts.headers)
            {
                Head::Challenge(answer) => {
                    self.metrics.challenges_answered.inc();
                    (
                        Decision::Challenge(answer).reply(),
                        "challenge_answered",
                        body_left_unread,
                    )
                }
                Head::Reject(rejection) => {
                    if matches!(rejection, Rejection::BadChallenge(_)) {
                        self.metrics.challenges_refused.inc();
                    }
                    let (reply, outcome, close) = self.refuse(&Refusal::Protocol(rejection));
                    (reply, outcome, close || body_left_unread)
                }
                Head::ReadBody(signed) => self.delivery(signed, body).await,
                _ => self.refuse(&Refusal::Malformed),
            };
        let latency = started.elapsed();
        self.metrics.observe_latency(latency.as_secs_f64());
        RequestLine {
            method: &parts.method,
            path: parts.uri.path(),
            status: reply.status,
            outcome,
            remote: parts.extensions.get::<RemoteAddr>().map(|it| it.0),
            latency,
        }
        .webhook();
        into_response(reply, close)
    }

    fn refuse(&self, refusal: &Refusal) -> (Reply, &'static str, bool) {
        self.metrics.rejected(refusal.reason());
        (
            refusal.reply(),
            refusal.reason(),
            refusal.closes_connection(),
        )
    }

    async fn delivery<B>(&self, signed: SignedRequest, body: B) -> (Reply, &'static str, bool)
    where
        B: Body,
        B::Data: Buf,
    {
        let read = tokio::time::timeout(self.body_timeout, read_body(body, self.max_body)).await;
        let bytes = match read {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(refusal)) => return self.refuse(&refusal),
            Err(_) => return self.refuse(&Refusal::Timeout),
        };
        let verified = match self.receiver.decide_body(signed, bytes) {
            Ok(verified) => verified,
            Err(rejection) => return self.refuse(&Refusal::Protocol(rejection)),
        };
        let signature = Some(signed.signature());
        let (body, key, parsed) = verified.into_parts();
        let state = match parsed {
            Ok(_) => DeliveryState::Pending,
            Err(_) => DeliveryState::Undecodable,
        };
        tracing::debug!(
            key = %key,
            body = %String::from_utf8_lossy(&body),
            "verified delivery"
        );
        let delivery = NewDelivery {
            key,
            body,
            state,
            signature,
        };
        self.store_delivery(delivery).await
    }

    async fn store_delivery(&self, delivery: NewDelivery) -> (Reply, &'static str, bool) {
        let state = delivery.state;
        match self.store.store(delivery, inbox::now_millis()).await {
            Ok(Stored::New(_)) if state == DeliveryState::Undecodable => {
                self.metrics.accepted.inc();
                self.metrics.undecodable.inc();
                (Reply::accepted(), "undecodable", false)
            }
            Ok(Stored::New(_)) => {
                self.metrics.accepted.inc();
                self.wake.notify_one();
                (Reply::accepted(), "accepted", false)
            }
            Ok(Stored::Duplicate(_)) => {
                self.metrics.duplicates.inc();
                (Reply::accepted(), "duplicate", false)
            }
            Err(err) => {
                tracing::error!(error = %Chain(&err), "the inbox could not store a delivery");
                self.refuse(&Refusal::Unavailable)
            }
        }
    }

    /// Sets the inbox gauges from the store's counts, when it can count.
    pub(crate) async fn refresh_gauges(&self) {
        if let Ok(counts) = self.store.counts().await {
            self.metrics.set_counts(counts);
        }
    }

    /// Registers the receiver's metrics in `registry`.
    pub(crate) fn register_metrics(&self, registry: &mut Registry) {
        self.metrics.register(registry);
        self.store.register_metrics(registry);
    }

    /// The receiver's metrics alone, in a registry of their own, as OpenMetrics text.
    async fn render_metrics(&self) -> String {
        self.refresh_gauges().await;
        let mut registry = Registry::default();
        self.register_metrics(&mut registry);
        metrics::encode_text(&registry)
    }
}

/// Reads a body up to `limit` bytes, refusing it as soon as it is larger.
async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, Refusal>
where
    B: Body,
    B::Data: Buf,
{
    let declared = body.size_hint();
    let declared_too_large = usize::try_from(declared.lower()).map_or(true, |n| n > limit);
    if declared_too_large {
        return Err(Refusal::TooLarge);
    }
    let mut body = pin!(body);
    let mut first: Option<Bytes> = None;
    let mut more: Option<BytesMut> = None;
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Refusal::Malformed)?;
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        let size = data.remaining();
        len += size;
        if len > limit {
            return Err(Refusal::TooLarge);
        }
        match (&first, &mut more) {
            (None, _) => first = Some(data.copy_to_bytes(size)),
            (Some(_), Some(buffer)) => buffer.put(data),
            (Some(start), None) => {
                let expected = declared
                    .upper()
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or(len.saturating_mul(2))
                    .clamp(len, limit);
                let mut buffer = BytesMut::with_capacity(expected);
                buffer.extend_from_slice(start);
                buffer.put(data);
                more = Some(buffer);
            }
        }
    }
    Ok(match (first, more) {
        (_, Some(buffer)) => buffer.freeze(),
        (Some(only), None) => only,
        (None, None) => Bytes::new(),
    })
}

/// The HTTP response for `reply`, saying `Connection: close` when `close`.
pub(crate) fn into_response(reply: Reply, close: bool) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(reply.body));
    *response.status_mut() = reply.status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    if let Some(allow) = reply.allow {
        headers.insert(ALLOW, HeaderValue::from_static(allow));
    }
    if close {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

impl WebhookService {
    /// Sets the inbox gauges from the store's counts, before the metrics are encoded.
    pub(crate) async fn refresh_gauges(&self) {
        self.shared.refresh_gauges().await;
    }
}

impl<B> tower_service::Service<Request<B>> for WebhookService
where
    B: Body + Send + 'static,
    B::Data: Buf + Send,
    B::Error: Send,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move { Ok(shared.respond(request).await) })
    }
}

impl hyper::service::Service<Request<hyper::body::Incoming>> for WebhookService {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn call(&self, request: Request<hyper::body::Incoming>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move { Ok(shared.respond(request).await) })
    }
}
