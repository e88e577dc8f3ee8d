//! The ready server: a listener, TLS when configured, HTTP/1.1 with limits, and a
//! [`Webhook`] behind it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::config::{ServerConfig, TlsFiles};
use crate::error::ServerError;
use crate::handler::Handler;
use crate::service::{Opened, RemoteAddr, Routes, Shared};

/// The webhook server: binds, serves until told to stop, shuts down gracefully.
///
/// See the [crate documentation](crate) for an example.
pub struct Server<H: Handler> {
    config: ServerConfig,
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    opened: Opened,
    handler: H,
}

impl<H: Handler> std::fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("path", &self.config.path)
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
        let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
        let opened = Opened::open(&config).await?;
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
            handler,
        })
    }

    /// The address the listener is bound to (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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
    /// [`ServerConfig::shutdown_grace`], and closes the inbox.
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
            handler,
        } = self;
        let shared = Arc::clone(opened.shared());
        let webhook = opened.start(handler);
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!("listening on {scheme}://{local_addr}{}", config.path);

        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(config.header_timeout)
            .keep_alive(true);
        let permits = Arc::new(Semaphore::new(config.max_connections));
        let graceful = GracefulShutdown::new();
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
            let shared = Arc::clone(&shared);
            let http = http.clone();
            let watcher = graceful.watcher();
            match &tls {
                None => {
                    tokio::spawn(async move {
                        serve(&http, watcher, TokioIo::new(stream), shared, peer).await;
                        drop(permit);
                    });
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    let handshake_timeout = config.header_timeout;
                    tokio::spawn(async move {
                        let handshake =
                            tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await;
                        match handshake {
                            Ok(Ok(stream)) => {
                                serve(&http, watcher, TokioIo::new(stream), shared, peer).await;
                            }
                            Ok(Err(err)) => {
                                tracing::debug!(%peer, error = %err, "TLS handshake failed");
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                        drop(permit);
                    });
                }
            }
        }
        drop(listener);
        tracing::info!("shutting down: finishing requests in flight");
        let bound = config.shutdown_grace.max(config.body_timeout);
        if tokio::time::timeout(bound, graceful.shutdown())
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

async fn serve<I>(
    http: &http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
    io: TokioIo<I>,
    shared: Arc<Shared>,
    peer: SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(RemoteAddr(peer));
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(shared.respond(request, Routes::All).await) }
    });
    let connection = http.serve_connection(io, service);
    if let Err(err) = watcher.watch(connection).await {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
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

fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, ServerError> {
    let certs = load_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|err| ServerError::Tls {
        what: "key",
        path: files.key.clone(),
        message: err.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|err| ServerError::Tls {
            what: "certificate",
            path: files.cert.clone(),
            message: err.to_string(),
        })?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(tls)))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    let failed = |message: String| ServerError::Tls {
        what: "certificate",
        path: path.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| failed(err.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| failed(err.to_string()))?;
    if certs.is_empty() {
        return Err(failed("no PEM certificate in the file".to_owned()));
    }
    Ok(certs)
}
