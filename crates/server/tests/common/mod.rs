//! Helpers shared by the server tests: signed requests, scripted handlers, servers on port 0;
//! the raw HTTP/1.1 client comes from the testkit crate.

#![allow(dead_code, reason = "each test binary uses a different part")]
#![allow(unreachable_pub, reason = "test helpers")]
#![allow(
    unused_imports,
    reason = "each test binary uses a different part of the re-exports"
)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use preservica_webhook_core::{Secret, sign};
use preservica_webhook_server::{
    DeliveryId, Handler, HandlerError, InboxConfig, Job, RetryPolicy, Server, ServerConfig,
    ServerError,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use preservica_webhook_testkit::SECRET;
pub use preservica_webhook_testkit::raw::{
    RawResponse, chunked_request, chunked_writes, is_closed, length_request, raw, read_response,
};

pub const BODY: &[u8] = preservica_webhook_testkit::CAPTURED.as_bytes();

pub fn secret() -> Secret {
    Secret::new(SECRET).unwrap()
}

/// The signature header value for `body` under `secret`.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    sign(secret, body).to_hex()
}

/// A distinct valid delivery body.
pub fn body(n: usize) -> Vec<u8> {
    format!(r#"{{"trigger":"MOVED","events":[{{"entityType":"IO","entityRef":"ref-{n}"}}]}}"#)
        .into_bytes()
}

/// One handler call, reported after it returns.
#[derive(Debug, Clone)]
pub struct Call {
    pub id: DeliveryId,
    pub attempt: u32,
    pub body: Vec<u8>,
    pub ok: bool,
}

type Script = dyn Fn(&Job) -> Result<(), HandlerError> + Send + Sync;

/// A handler whose behaviour is a closure; every call is reported on a channel.
pub struct Scripted {
    script: Arc<Script>,
    calls: mpsc::UnboundedSender<Call>,
    started: Option<mpsc::UnboundedSender<DeliveryId>>,
    delay: Option<Duration>,
    count: Arc<AtomicU32>,
}

impl Scripted {
    pub fn new(
        script: impl Fn(&Job) -> Result<(), HandlerError> + Send + Sync + 'static,
    ) -> (Scripted, mpsc::UnboundedReceiver<Call>) {
        let (calls, rx) = mpsc::unbounded_channel();
        (
            Scripted {
                script: Arc::new(script),
                calls,
                started: None,
                delay: None,
                count: Arc::new(AtomicU32::new(0)),
            },
            rx,
        )
    }

    /// Always succeeds.
    pub fn ok() -> (Scripted, mpsc::UnboundedReceiver<Call>) {
        Scripted::new(|_| Ok(()))
    }

    /// Reports each call's start, then takes `delay` before answering.
    pub fn slow(mut self, delay: Duration) -> (Scripted, mpsc::UnboundedReceiver<DeliveryId>) {
        let (started, rx) = mpsc::unbounded_channel();
        self.started = Some(started);
        self.delay = Some(delay);
        (self, rx)
    }

    pub fn counter(&self) -> Arc<AtomicU32> {
        Arc::clone(&self.count)
    }
}

impl Handler for Scripted {
    async fn handle(&self, job: &Job) -> Result<(), HandlerError> {
        self.count.fetch_add(1, Ordering::SeqCst);
        if let Some(started) = &self.started {
            let _ = started.send(job.id.clone());
        }
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        let result = (self.script)(job);
        let _ = self.calls.send(Call {
            id: job.id.clone(),
            attempt: job.attempt,
            body: job.body.to_vec(),
            ok: result.is_ok(),
        });
        result
    }
}

/// A test configuration: port 0, a SQLite inbox in `dir`, fast retries.
pub fn config(dir: &tempfile::TempDir) -> ServerConfig {
    let mut config = ServerConfig::new(vec![secret()]);
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.webhook.inbox = InboxConfig::Sqlite(db_path(dir));
    config.webhook.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
    };
    config.webhook.shutdown_grace = Duration::from_secs(5);
    config
}

pub fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("inbox.db")
}

/// A server running in the background until [`Running::stop`].
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Running {
    pub async fn start<H: Handler>(config: ServerConfig, handler: H) -> Running {
        let server = Server::bind(config, handler).await.unwrap();
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));
        Running {
            addr,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Shuts down gracefully and waits until the server has stopped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
    }
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// POSTs a delivery signed with `secret`; returns the status.
pub async fn deliver(client: &reqwest::Client, url: &str, secret: &Secret, body: &[u8]) -> u16 {
    client
        .post(url)
        .header("Preservica-Signature", signature(secret, body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Waits for the next reported handler call (failing the test after 10 s).
pub async fn next_call(calls: &mut mpsc::UnboundedReceiver<Call>) -> Call {
    tokio::time::timeout(Duration::from_secs(10), calls.recv())
        .await
        .expect("a handler call within 10 s")
        .expect("the handler is alive")
}

/// Polls `check` until it returns `Some` (failing the test after 10 s): for state another
/// task records just after the event a test can await.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::task::yield_now().await;
    }
}

/// Every formatted tracing line of this test binary, down to trace level; the first call
/// installs the capturing subscriber.
pub fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        // Global, so events from the inbox's own thread and every runtime thread are caught.
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .try_init()
            .expect("the only subscriber of this test binary");
        log
    })
}

/// A writer appending to the shared buffer.
pub struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
