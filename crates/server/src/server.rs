//! The ready server: a listener, TLS when configured, HTTP/1.1 with limits, its own
//! `/healthz` and `/metrics`, and a [`Webhook`](crate::Webhook) behind it for every other
//! path.
//!
//! An answer given before a request's body is read (a refusal from the head, 413, 408) ends
//! its connection with a *lingering close*, as nginx does: the server sends the answer and
//! its end of the stream, then reads and discards what the client still sends — until the
//! client closes, for at most `LINGER_TIME`, and at most about `WebhookConfig::max_body`
//! bytes — and only then closes. Closing at once would make the kernel reset the connection
//! while the client is still writing, and a client that writes its whole body before reading
//! (many Java and Python clients do) would then see the reset instead of the answer.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONNECTION;
use http::{Request, Response, StatusCode};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper::service::{Service as _, service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use preservica_webhook_core::Reply;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::access_log::RequestLine;
use crate::config::ServerConfig;
use crate::error::ServerError;
use crate::handler::Handler;
use crate::metrics;
use crate::service::{Opened, RemoteAddr, ResponseBody, WebhookService, into_response};
use crate::store::Store;
use crate::tls::Tls;

/// How long a connection answered before its body was read is drained before it is closed
/// (see the module documentation).
const LINGER_TIME: Duration = Duration::from_secs(1);

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The webhook server: binds, serves until told to stop, shuts down gracefully.
///
/// See the [crate documentation](crate) for an example.
pub struct Server<H: Handler> {
    config: ServerConfig,
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: Option<Tls>,
    opened: Opened,
    /// The server's own registry, with the webhook's metrics in it, served at the metrics path.
    registry: Registry,
    handler: H,
}

impl<H: Handler> std::fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("path", &self.config.webhook.path)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl<H: Handler> Server<H> {
    /// Opens the inbox (deliveries a crash left in flight are pending again, so they are
    /// processed again) and binds the listener. Processing starts with [`Server::run`].
    ///
    /// # Errors
    /// [`ServerError::Config`] without a secret or with a bad path, [`ServerError::ZeroLimit`]
    /// for a zero limit, [`ServerError::Tls`] when the certificate or key cannot be loaded,
    /// [`ServerError::Inbox`] when the inbox cannot be opened, [`ServerError::Bind`] when the
    /// address cannot be bound.
    pub async fn bind(config: ServerConfig, handler: H) -> Result<Server<H>, ServerError> {
        let tls = config.tls.as_ref().map(Tls::load).transpose()?;
        if config.max_connections == 0 {
            return Err(ServerError::ZeroLimit("max_connections"));
        }
        let opened = Opened::open(&config.webhook).await?;
        let mut registry = Registry::default();
        opened.shared().register_metrics(&mut registry);
        let listener =
            TcpListener::bind(config.addr)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.addr,
                    source,
                })?;
        let local_addr = listener.local_addr()?;
        Ok(Server {
            config,
            listener,
            local_addr,
            tls,
            opened,
            registry,
            handler,
        })
    }

    /// The address the listener is bound to (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's inbox, for work beside the receiver on the same store (such as filing
    /// recovered deliveries) while the server runs.
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.opened.shared().store)
    }

    /// The registry served at the metrics path, to add metrics of your own before the server
    /// runs.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    ///
    /// # Errors
    /// See [`Server::run_until`].
    pub async fn run(self) -> Result<(), ServerError> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully: stops accepting,
    /// finishes the requests in flight, lets running handler calls finish within
    /// [`WebhookConfig::shutdown_grace`](crate::WebhookConfig::shutdown_grace), and closes
    /// the inbox.
    ///
    /// # Errors
    /// None at present: failures to accept a connection are logged and serving goes on. The
    /// `Result` leaves room for fatal listener errors.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let Server {
            config,
            listener,
            local_addr,
            tls,
            opened,
            registry,
            handler,
        } = self;
        let webhook = opened.start(handler);
        let routes = Arc::new(Routes {
            health_path: config.health_path.clone(),
            metrics_path: config.metrics_path.clone(),
            registry,
            webhook: webhook.service(),
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(
            "listening on {scheme}://{local_addr}{}",
            config.webhook.path
        );

        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(config.header_timeout)
            .keep_alive(true);
        let limits = ConnectionLimits {
            handshake_timeout: config.header_timeout,
            drain_bytes: drain_bytes(config.webhook.max_body),
        };
        let permits = Arc::new(Semaphore::new(config.max_connections));
        // Every connection task holds a clone of `open`; `all_closed` ends once all are gone.
        let (open, mut all_closed) = mpsc::channel::<Infallible>(1);
        let stop = CancellationToken::new();
        let mut shutdown = pin!(shutdown);
        loop {
            let permit = tokio::select! {
                () = &mut shutdown => break,
                permit = Arc::clone(&permits).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!(error = %err, "accepting a connection failed");
                        // Out of file descriptors and the like: give the system a moment.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let connection = Connection {
                http: http.clone(),
                routes: Arc::clone(&routes),
                peer,
                stop: stop.clone(),
                limits,
            };
            let tls = tls.clone();
            let open = open.clone();
            tokio::spawn(async move {
                match tls {
                    None => connection.serve(stream).await,
                    Some(tls) => connection.serve_tls(&tls, stream).await,
                }
                drop((permit, open));
            });
        }
        drop(listener);
        tracing::info!("shutting down: finishing requests in flight");
        stop.cancel();
        drop(open);
        let bound = config
            .webhook
            .shutdown_grace
            .max(config.webhook.body_timeout);
        if tokio::time::timeout(bound, all_closed.recv())
            .await
            .is_err()
        {
            tracing::warn!("requests still in flight after {bound:?} were cut off");
        }
        tracing::info!("shutting down: letting running handler calls finish");
        webhook.shutdown().await;
        Ok(())
    }
}

/// The per-connection bounds that come from the configuration.
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    /// How long a TLS handshake may take.
    handshake_timeout: Duration,
    /// How many bytes a lingering close reads and discards at most.
    drain_bytes: usize,
}

/// What the ready server answers: health and metrics itself, every other path the webhook.
struct Routes {
    health_path: Option<String>,
    metrics_path: Option<String>,
    registry: Registry,
    webhook: WebhookService,
}

/// A path the server answers itself.
#[derive(Debug, Clone, Copy)]
enum Probe {
    Health,
    Metrics,
}

/// One accepted connection and what serving it needs.
struct Connection {
    http: http1::Builder,
    routes: Arc<Routes>,
    peer: SocketAddr,
    /// Cancelled when the server shuts down: finish the request in flight, then close.
    stop: CancellationToken,
    limits: ConnectionLimits,
}

/// How draining a connection ended, short of an error or the time bound.
enum Drained {
    /// The client closed its side: everything it sent was read.
    ClientClosed,
    /// The client sent more than the byte bound.
    ByteBound,
}

impl Connection {
    async fn serve_tls(self, tls: &Tls, stream: tokio::net::TcpStream) {
        let peer = self.peer;
        let handshake =
            tokio::time::timeout(self.limits.handshake_timeout, tls.accept(stream)).await;
        match handshake {
            Ok(Ok(stream)) => self.serve(stream).await,
            Ok(Err(err)) => tracing::debug!(%peer, error = %err, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        }
    }

    /// Serves HTTP/1.1 requests until the connection ends, then closes it: at once after a
    /// normal end, with a lingering close after an answer given before its body was read.
    async fn serve<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            http,
            routes,
            peer,
            stop,
            limits,
        } = self;
        // Set when an answer says `Connection: close`: the service says so exactly when it
        // answered without reading the whole body.
        let said_close = Arc::new(AtomicBool::new(false));
        let service = {
            let said_close = Arc::clone(&said_close);
            service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(RemoteAddr(peer));
                let routes = Arc::clone(&routes);
                let said_close = Arc::clone(&said_close);
                // Boxed, so the future is `Unpin`, as `poll_without_shutdown` needs.
                Box::pin(async move {
                    let response = routes.respond(request).await;
                    let closes = response
                        .headers()
                        .get(CONNECTION)
                        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"close"));
                    if closes {
                        said_close.store(true, Ordering::Relaxed);
                    }
                    Ok::<_, Infallible>(response)
                })
            })
        };
        let mut connection = http.serve_connection(TokioIo::new(io), service);
        let mut stopping = pin!(stop.cancelled());
        let mut stop_seen = false;
        // Without shutdown, so the socket comes back to be closed here.
        let ended = poll_fn(|cx| {
            if !stop_seen && stopping.as_mut().poll(cx).is_ready() {
                stop_seen = true;
                Pin::new(&mut connection).graceful_shutdown();
            }
            connection.poll_without_shutdown(cx)
        })
        .await;
        let linger = match ended {
            Ok(()) => said_close.load(Ordering::Relaxed),
            // A client that sent no complete head in time was answered nothing: just close.
            Err(err) if err.is_timeout() => {
                tracing::debug!(%peer, "closing a connection that sent no request head in time");
                false
            }
            // hyper may have answered a malformed request (400, 431) with its body unread.
            Err(err) => {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
                true
            }
        };
        let parts = connection.into_parts();
        let already_read = parts.read_buf.len();
        let mut io = parts.io.into_inner();
        if linger {
            linger_close(&mut io, already_read, limits.drain_bytes, peer).await;
        } else {
            // What hyper would have done: flush, send close_notify (TLS) and FIN.
            let _ = tokio::time::timeout(LINGER_TIME, io.shutdown()).await;
        }
    }
}

impl Routes {
    /// Answers one request: a health or metrics request here, logged as a probe; any
    /// other by the webhook service.
    async fn respond(&self, request: Request<Incoming>) -> Response<ResponseBody> {
        let path = request.uri().path();
        let probe = if self.health_path.as_deref() == Some(path) {
            Probe::Health
        } else if self.metrics_path.as_deref() == Some(path) {
            Probe::Metrics
        } else {
            let Ok(response) = self.webhook.call(request).await;
            return response;
        };
        let started = Instant::now();
        // An unread body would make hyper close the connection: say so in the answer.
        let body_left_unread = !request.body().is_end_stream();
        let (body, content_type, outcome) = match probe {
            Probe::Health => (Bytes::from_static(b"ok\n"), TEXT_PLAIN, "health"),
            Probe::Metrics => {
                self.webhook.refresh_gauges().await;
                let text = metrics::encode_text(&self.registry);
                (Bytes::from(text), OPENMETRICS, "metrics")
            }
        };
        let reply = Reply {
            status: StatusCode::OK,
            content_type,
            body,
            allow: None,
        };
        RequestLine {
            method: request.method(),
            path,
            status: reply.status,
            outcome,
            remote: request.extensions().get::<RemoteAddr>().map(|it| it.0),
            latency: started.elapsed(),
        }
        .probe();
        into_response(reply, body_left_unread)
    }
}

/// The most a lingering close reads: the body cap, an eighth more for chunk framing (enough
/// for chunks of 64 bytes and more), and 64 KiB for what a client may send after the body.
fn drain_bytes(max_body: usize) -> usize {
    max_body
        .saturating_add(max_body / 8)
        .saturating_add(64 * 1024)
}

/// Sends the end of the stream, then reads and discards what the client still sends until it
/// closes, [`LINGER_TIME`] has passed or `limit` bytes (counting `already_read`) have been
/// read; the caller then drops the socket. A client that has written its whole request
/// before reading thus finds the answer instead of a reset.
async fn linger_close<I>(io: &mut I, already_read: usize, limit: usize, peer: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let drain = async {
        io.shutdown().await?;
        let mut left = limit.saturating_sub(already_read);
        let mut scratch = [0u8; 8192];
        while left > 0 {
            let n = io.read(&mut scratch).await?;
            if n == 0 {
                return Ok(Drained::ClientClosed);
            }
            left = left.saturating_sub(n);
        }
        Ok::<_, std::io::Error>(Drained::ByteBound)
    };
    match tokio::time::timeout(LINGER_TIME, drain).await {
        Ok(Ok(Drained::ClientClosed)) => {}
        Ok(Ok(Drained::ByteBound)) => tracing::debug!(
            %peer,
            "cut off a connection that sent more than {limit} bytes after its answer"
        ),
        Ok(Err(err)) => {
            tracing::debug!(%peer, error = %err, "connection failed while draining it");
        }
        Err(_) => tracing::debug!(
            %peer,
            "cut off a connection still sending {LINGER_TIME:?} after its answer"
        ),
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("interrupted"),
        () = terminate => tracing::info!("terminated"),
    }
}
