//! Real sockets on 127.0.0.1:0: transfer encodings, limits, timeouts, retries, restarts,
//! shutdown, metrics and TLS.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use preservica_webhook_core::check_challenge_answer;
use preservica_webhook_server::{
    DeliveryState, Handler, HandlerError, Inbox, Job, StateFilter, TlsFiles,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use common::*;

#[tokio::test]
async fn accepts_chunked_and_content_length_deliveries_on_one_kept_alive_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (handler, mut calls) = Scripted::ok();
    let server = Running::start(config(&dir), handler).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let sig = signature(&secret(), BODY);
    stream
        .write_all(&chunked_request("/", &sig, BODY, 7))
        .await
        .unwrap();
    let first = read_response(&mut stream).await.unwrap();
    assert_eq!((first.status, first.body.as_slice()), (200, &b"ok\n"[..]));

    let other = body(2);
    let sig = signature(&secret(), &other);
    stream
        .write_all(&length_request("/", &sig, &other))
        .await
        .unwrap();
    let second = read_response(&mut stream).await.unwrap();
    assert_eq!(second.status, 200);

    let mut seen = BTreeSet::new();
    seen.insert(next_call(&mut calls).await.body);
    seen.insert(next_call(&mut calls).await.body);
    assert_eq!(seen, BTreeSet::from([BODY.to_vec(), other]));
    server.stop().await;
}

#[tokio::test]
async fn answers_challenges_over_http_with_reqwest() {
    let dir = tempfile::tempdir().unwrap();
    let (handler, _calls) = Scripted::ok();
    let server = Running::start(config(&dir), handler).await;
    let client = client();
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let response = client
            .request(method, server.url("/?challengeCode=abc%20def%26x"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = response.bytes().await.unwrap();
        assert_eq!(
            check_challenge_answer(&secret(), "abc def&x", &body),
            Ok(())
        );
    }
    let oracle = client
        .get(server.url("/?challengeCode=preservica-webhook-auth"))
        .send()
        .await
        .unwrap();
    assert_eq!(oracle.status(), 400);
    server.stop().await;
}

#[tokio::test]
async fn refuses_an_oversized_content_length_body_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir);
    config.webhook.max_body = 1024;
    let (handler, _calls) = Scripted::ok();
    let server = Running::start(config, handler).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nPreservica-Signature: {}\r\n\
         Content-Length: 100000000\r\n\r\n",
        signature(&secret(), b"x")
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b'x'; 4096]).await.unwrap();
    // 100 MB announced, 4 KiB sent: the answer comes without the rest.
    let response = read_response(&mut stream).await.unwrap();
    assert_eq!(response.status, 413);
    assert_eq!(response.body, b"body too large\n");
    assert!(
        response
            .head
            .to_ascii_lowercase()
            .contains("connection: close")
    );
    assert!(is_closed(&mut stream).await);
    server.stop().await;
}

#[tokio::test]
async fn refuses_an_oversized_chunked_body_as_soon_as_it_passes_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir);
    config.webhook.max_body = 1024;
    let (handler, _calls) = Scripted::ok();
    let server = Running::start(config, handler).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut request = chunked_request("/", &signature(&secret(), b"x"), &[b' '; 1500], 500);
    // Keep the body open: no final chunk, so only the cap can end the request.
    request.truncate(request.len() - b"0\r\n\r\n".len());
    stream.write_all(&request).await.unwrap();
    let response = read_response(&mut stream).await.unwrap();
    assert_eq!(response.status, 413);
    assert!(is_closed(&mut stream).await);

    // The server keeps serving others.
    let (status, _) = post_challenge(server.addr).await;
    assert_eq!(status, 200);
    server.stop().await;
}

async fn post_challenge(addr: std::net::SocketAddr) -> (u16, Vec<u8>) {
    let response = raw(
        addr,
        b"GET /?challengeCode=hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    (response.status, response.body)
}

#[tokio::test]
async fn cuts_off_a_header_trickling_client_while_serving_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir);
    config.header_timeout = Duration::from_millis(400);
    let (handler, _calls) = Scripted::ok();
    let server = Running::start(config, handler).await;

    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        let _ = writer.write_all(b"POST / HTTP/1.1\r\n").await;
        for _ in 0..200 {
            if writer.write_all(b"X-Slow: a\r\n").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });
    // While the trickler holds its connection, others are served.
    for _ in 0..3 {
        assert_eq!(post_challenge(server.addr).await.0, 200);
    }
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(4), reader.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the trickling client was not cut off");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(350),
        "cut off too early: {elapsed:?}"
    );
    trickle.abort();
    server.stop().await;
}

#[tokio::test]
async fn answers_408_to_a_body_that_does_not_arrive_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir);
    config.webhook.body_timeout = Duration::from_millis(300);
    let (handler, _calls) = Scripted::ok();
    let server = Running::start(config, handler).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = length_request("/", &signature(&secret(), BODY), BODY);
    stream
        .write_all(&request[..request.len() - 10])
        .await
        .unwrap();
    let response = read_response(&mut stream).await.unwrap();
    assert_eq!(response.status, 408);
    assert!(is_closed(&mut stream).await);
    server.stop().await;
}

#[tokio::test]
async fn holds_further_connections_back_at_the_connection_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir);
    config.max_connections = 1;
    let (handler, _calls) = Scripted::ok();
    let server = Running::start(config, handler).await;
    let first = TcpStream::connect(server.addr).await.unwrap();
    // Let the server take the first connection before the second arrives.
    let mut probe = TcpStream::connect(server.addr).await.unwrap();
    drop(first);
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut probe).await.unwrap().status, 200);

    let mut held = TcpStream::connect(server.addr).await.unwrap();
    held.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(300), read_response(&mut held)).await;
    assert!(
        waited.is_err(),
        "a second connection was served at a cap of one"
    );
    drop(probe);
    let response = tokio::time::timeout(Duration::from_secs(5), read_response(&mut held))
        .await
        .expect("served once the first connection closed")
        .unwrap();
    assert_eq!(response.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn calls_a_handler_failing_twice_then_succeeding_three_times() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir);
    config.webhook.retry.max_attempts = 5;
    let (handler, mut calls) = Scripted::new(|job| {
        if job.attempt < 3 {
            Err(HandlerError::new(format!("try {} failed", job.attempt)))
        } else {
            Ok(())
        }
    });
    let count = handler.counter();
    let server = Running::start(config, handler).await;
    assert_eq!(
        deliver(&client(), &server.url("/"), &secret(), BODY).await,
        200
    );
    let attempts: Vec<(u32, bool)> = [
        next_call(&mut calls).await,
        next_call(&mut calls).await,
        next_call(&mut calls).await,
    ]
    .iter()
    .map(|call| (call.attempt, call.ok))
    .collect();
    assert_eq!(attempts, [(1, false), (2, false), (3, true)]);
    server.stop().await;
    assert_eq!(count.load(Ordering::SeqCst), 3);
    let entry = Inbox::open(&db_path(&dir))
        .unwrap()
        .list(StateFilter::All)
        .unwrap()
        .remove(0);
    assert_eq!((entry.state, entry.attempts), (DeliveryState::Done, 3));
    assert_eq!(entry.last_error.as_deref(), Some("try 2 failed"));
}

#[tokio::test]
async fn makes_a_dead_letter_of_an_always_failing_delivery_and_retries_it_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let healed = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&healed);
    let (handler, mut calls) = Scripted::new(move |job| {
        if flag.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(HandlerError::new(format!("boom {}", job.attempt)))
        }
    });
    let server = Running::start(config(&dir), handler).await;
    assert_eq!(
        deliver(&client(), &server.url("/"), &secret(), BODY).await,
        200
    );
    for attempt in 1..=3 {
        let call = next_call(&mut calls).await;
        assert_eq!((call.attempt, call.ok), (attempt, false));
    }
    // The inbox is usable from elsewhere while the server runs.
    let inbox = Inbox::open(&db_path(&dir)).unwrap();
    let dead = eventually("the dead letter", || async {
        let dead = inbox.list(StateFilter::Only(DeliveryState::Dead)).unwrap();
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead[0].last_error.as_deref(), Some("boom 3"));
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(inbox.counts().unwrap().dead, 1);

    healed.store(true, Ordering::SeqCst);
    assert!(inbox.retry(&dead[0].id).unwrap());
    assert!(
        !inbox.retry(&dead[0].id).unwrap(),
        "only dead letters are re-queued"
    );
    let call = next_call(&mut calls).await;
    assert_eq!((call.attempt, call.ok), (1, true));
    server.stop().await;
    let entry = inbox.get(&dead[0].id).unwrap().unwrap();
    assert_eq!(entry.state, DeliveryState::Done);
}

/// Panics on the first call, outlives the timeout on the second, succeeds on the third.
struct Unruly {
    attempts: mpsc::UnboundedSender<u32>,
}

impl Handler for Unruly {
    async fn handle(&self, job: &Job) -> Result<(), HandlerError> {
        let _ = self.attempts.send(job.attempt);
        match job.attempt {
            1 => panic!("handler bug"),
            2 => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[tokio::test]
async fn retries_handler_panics_and_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir);
    config.webhook.retry.max_attempts = 5;
    config.webhook.handler_timeout = Duration::from_millis(200);
    let (attempts, mut seen) = mpsc::unbounded_channel();
    let server = Running::start(config, Unruly { attempts }).await;
    assert_eq!(
        deliver(&client(), &server.url("/"), &secret(), BODY).await,
        200
    );
    for expected in 1..=3 {
        let attempt = tokio::time::timeout(Duration::from_secs(10), seen.recv()).await;
        assert_eq!(attempt.unwrap(), Some(expected));
    }
    server.stop().await;
    let entry = Inbox::open(&db_path(&dir))
        .unwrap()
        .list(StateFilter::All)
        .unwrap()
        .remove(0);
    assert_eq!((entry.state, entry.attempts), (DeliveryState::Done, 3));
    assert!(
        entry
            .last_error
            .as_deref()
            .unwrap()
            .contains("did not finish"),
        "{:?}",
        entry.last_error
    );
}

#[test]
fn loses_nothing_answered_ok_when_killed_with_deliveries_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let bodies: Vec<Vec<u8>> = (0..24).map(body).collect();

    // First life: a handler that never finishes, killed without shutdown.
    let first = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (handler, _calls) = Scripted::ok();
    let (handler, mut started) = handler.slow(Duration::from_secs(3600));
    let server = first.block_on(Running::start(config(&dir), handler));
    let url = server.url("/");
    let accepted = first.block_on(async {
        let client = client();
        let sends = bodies.iter().map(|body| {
            let client = client.clone();
            let url = url.clone();
            async move { (deliver(&client, &url, &secret(), body).await, body.clone()) }
        });
        let results = futures_util::future::join_all(sends).await;
        // At least one delivery is in the handler when the process dies.
        started.recv().await.unwrap();
        results
            .into_iter()
            .filter(|(status, _)| *status == 200)
            .map(|(_, body)| body)
            .collect::<BTreeSet<_>>()
    });
    assert_eq!(accepted.len(), bodies.len());
    drop(server);
    first.shutdown_background();

    // Second life on the same inbox file: everything answered 200 is handled.
    let second = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    second.block_on(async {
        let (handler, mut calls) = Scripted::ok();
        let server = Running::start(config(&dir), handler).await;
        let mut handled = BTreeSet::new();
        while handled.len() < accepted.len() {
            handled.insert(next_call(&mut calls).await.body);
        }
        assert_eq!(handled, accepted);
        server.stop().await;
    });
    let counts = Inbox::open(&db_path(&dir)).unwrap().counts().unwrap();
    assert_eq!(counts.done, 24);
    assert_eq!(counts.pending, 0);
}

#[tokio::test]
async fn shuts_down_gracefully_letting_a_slow_handler_finish() {
    let dir = tempfile::tempdir().unwrap();
    let (handler, mut calls) = Scripted::ok();
    let (handler, mut started) = handler.slow(Duration::from_millis(300));
    let server = Running::start(config(&dir), handler).await;
    let addr = server.addr;
    assert_eq!(
        deliver(&client(), &server.url("/"), &secret(), BODY).await,
        200
    );
    started.recv().await.unwrap();
    server.stop().await;
    // The call finished during shutdown and its outcome was recorded.
    assert!(calls.try_recv().unwrap().ok);
    let entry = Inbox::open(&db_path(&dir))
        .unwrap()
        .list(StateFilter::All)
        .unwrap()
        .remove(0);
    assert_eq!(entry.state, DeliveryState::Done);
    assert!(TcpStream::connect(addr).await.is_err(), "still listening");
}

#[tokio::test]
async fn leaves_a_delivery_pending_when_its_handler_outlasts_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir);
    config.webhook.shutdown_grace = Duration::from_millis(100);
    let (handler, _calls) = Scripted::ok();
    let (handler, mut started) = handler.slow(Duration::from_secs(3600));
    let server = Running::start(config, handler).await;
    assert_eq!(
        deliver(&client(), &server.url("/"), &secret(), BODY).await,
        200
    );
    started.recv().await.unwrap();
    let stopping = Instant::now();
    server.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(5));
    let entry = Inbox::open(&db_path(&dir))
        .unwrap()
        .list(StateFilter::All)
        .unwrap()
        .remove(0);
    assert_eq!((entry.state, entry.attempts), (DeliveryState::Pending, 0));
}

#[tokio::test]
async fn serves_health_and_metrics_that_move_with_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir);
    config.webhook.retry.max_attempts = 1;
    let (handler, mut calls) = Scripted::new(|job| {
        if job.body.as_ref() == BODY {
            Ok(())
        } else {
            Err(HandlerError::permanent("not for us"))
        }
    });
    let server = Running::start(config, handler).await;
    let client = client();
    let health = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let url = server.url("/");
    assert_eq!(deliver(&client, &url, &secret(), BODY).await, 200);
    assert_eq!(deliver(&client, &url, &secret(), BODY).await, 200);
    assert_eq!(deliver(&client, &url, &secret(), &body(1)).await, 200);
    let stranger = preservica_webhook_core::Secret::new("stranger").unwrap();
    assert_eq!(deliver(&client, &url, &stranger, BODY).await, 401);
    assert_eq!(post_challenge(server.addr).await.0, 200);
    next_call(&mut calls).await;
    next_call(&mut calls).await;

    // Handler outcomes are recorded just after the calls return.
    let metrics = eventually("the dead letter in the metrics", || async {
        let text = client
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let settled = text.contains("preservica_webhook_dead_letters 1")
            && text.contains("preservica_webhook_inbox_depth 0");
        settled.then_some(text)
    })
    .await;
    for line in [
        "preservica_webhook_deliveries_accepted_total 2",
        "preservica_webhook_deliveries_duplicate_total 1",
        r#"preservica_webhook_requests_rejected_total{reason="bad_signature"} 1"#,
        "preservica_webhook_challenges_answered_total 1",
        "preservica_webhook_handler_successes_total 1",
        "preservica_webhook_handler_failures_total 1",
        "preservica_webhook_handler_retries_total 0",
        "preservica_webhook_deliveries_dead_lettered_total 1",
        "preservica_webhook_inbox_depth 0",
        "preservica_webhook_request_duration_seconds_count",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    server.stop().await;
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn serves_https_with_a_pem_certificate_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let (handler, mut calls) = Scripted::ok();
    let (server, connector) = https_server(&dir, handler).await;

    let mut stream = connect_tls(&connector, &server).await;
    stream
        .write_all(&length_request("/", &signature(&secret(), BODY), BODY))
        .await
        .unwrap();
    let mut response = Vec::new();
    let mut chunk = [0u8; 1024];
    while !response.ends_with(b"ok\n") {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "closed early: {}",
            String::from_utf8_lossy(&response)
        );
        response.extend_from_slice(&chunk[..n]);
    }
    assert!(response.starts_with(b"HTTP/1.1 200"));
    assert_eq!(next_call(&mut calls).await.body, BODY);
    server.stop().await;
}

/// A server on HTTPS with the committed test certificate, and a client connector trusting it.
#[cfg(feature = "tls")]
async fn https_server<H: Handler>(
    dir: &tempfile::TempDir,
    handler: H,
) -> (Running, tokio_rustls::TlsConnector) {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut config = config(dir);
    config.tls = Some(TlsFiles {
        cert: data.join("cert.pem"),
        key: data.join("key.pem"),
    });
    let server = Running::start(config, handler).await;
    (server, tls_connector(&data.join("cert.pem")))
}

/// A TLS connection to `server` as `localhost`.
#[cfg(feature = "tls")]
async fn connect_tls(
    connector: &tokio_rustls::TlsConnector,
    server: &Running,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

#[cfg(feature = "tls")]
/// A TLS client trusting the certificate in `cert`.
fn tls_connector(cert: &std::path::Path) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(tls))
}

#[tokio::test]
async fn prunes_processed_deliveries_past_retention_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (handler, mut calls) = Scripted::new(|job| {
        if job.body.as_ref() == BODY {
            Ok(())
        } else {
            Err(HandlerError::permanent("rejected"))
        }
    });
    let server = Running::start(config(&dir), handler).await;
    let client = client();
    let url = server.url("/");
    assert_eq!(deliver(&client, &url, &secret(), BODY).await, 200);
    assert_eq!(deliver(&client, &url, &secret(), &body(1)).await, 200);
    assert_eq!(deliver(&client, &url, &secret(), b"not json").await, 200);
    next_call(&mut calls).await;
    next_call(&mut calls).await;
    server.stop().await;
    let inbox = Inbox::open(&db_path(&dir)).unwrap();
    assert_eq!(inbox.counts().unwrap().done, 1);

    // A server with a zero retention prunes the processed delivery when it starts.
    let mut config = config(&dir);
    config.webhook.retention = Some(Duration::ZERO);
    let (handler, _calls) = Scripted::ok();
    let server = Running::start(config, handler).await;
    let counts = eventually("the prune", || async {
        let counts = inbox.counts().unwrap();
        (counts.done == 0).then_some(counts)
    })
    .await;
    assert_eq!((counts.dead, counts.undecodable, counts.pending), (1, 1, 0));
    server.stop().await;
}

#[tokio::test]
async fn refuses_a_second_server_on_an_inbox_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let (handler, _calls) = Scripted::ok();
    let server = Running::start(config(&dir), handler).await;
    let (handler, _calls) = Scripted::ok();
    let err = preservica_webhook_server::Server::bind(config(&dir), handler)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("in use by another server"),
        "{err}"
    );
    server.stop().await;
    // Once the first has stopped, the inbox is free again.
    let (handler, _calls) = Scripted::ok();
    Running::start(config(&dir), handler).await.stop().await;
}

#[tokio::test]
async fn processes_deliveries_with_the_in_memory_inbox_without_touching_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir);
    config.webhook.inbox = preservica_webhook_server::InboxConfig::InMemory;
    let (handler, mut calls) = Scripted::new(|job| {
        if job.attempt == 1 {
            Err(HandlerError::new("once more"))
        } else {
            Ok(())
        }
    });
    let server = Running::start(config, handler).await;
    let client = client();
    let url = server.url("/");
    assert_eq!(deliver(&client, &url, &secret(), BODY).await, 200);
    assert_eq!(deliver(&client, &url, &secret(), BODY).await, 200);
    let attempts = [next_call(&mut calls).await, next_call(&mut calls).await]
        .map(|call| (call.attempt, call.ok));
    assert_eq!(attempts, [(1, false), (2, true)]);
    server.stop().await;
    assert!(!db_path(&dir).exists());
}

#[tokio::test]
async fn says_connection_close_when_it_answers_without_reading_a_body() {
    let dir = tempfile::tempdir().unwrap();
    let (handler, _calls) = Scripted::ok();
    let server = Running::start(config(&dir), handler).await;
    let closes = |response: &RawResponse| {
        response
            .head
            .to_ascii_lowercase()
            .contains("connection: close")
    };

    // No body to leave unread: the connection stays open for the next request.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /?challengeCode=abc HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answered = read_response(&mut stream).await.unwrap();
    assert_eq!(answered.status, 200);
    assert!(!closes(&answered), "{}", answered.head);

    // An unsigned delivery is refused from its head; its body is never read, so the
    // connection closes and the answer says so.
    stream
        .write_all(&length_request("/", "", BODY))
        .await
        .unwrap();
    let refused = read_response(&mut stream).await.unwrap();
    assert_eq!(refused.status, 401);
    assert!(closes(&refused), "{}", refused.head);

    // A challenge that comes with a body is answered from its head too.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(&chunked_request("/?challengeCode=abc", "", BODY, 5))
        .await
        .unwrap();
    let challenged = read_response(&mut stream).await.unwrap();
    assert_eq!(challenged.status, 200);
    assert!(closes(&challenged), "{}", challenged.head);
    server.stop().await;
}

/// Fresh connections tried per case of the early-answer tests.
const TRIES: usize = 50;

/// Writes `writes` (a head, then the body) before reading anything, as many Java and Python
/// clients do, then reads the answer. The body follows the head a moment later, as from a
/// client that sends its headers before producing the body. `None` when a write or the read
/// failed: the client saw a reset where an answer should have been.
async fn write_everything_then_read<S>(stream: &mut S, writes: &[Vec<u8>]) -> Option<u16>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (head, body) = writes.split_first()?;
    stream.write_all(head).await.ok()?;
    stream.flush().await.ok()?;
    tokio::time::sleep(Duration::from_millis(1)).await;
    for write in body {
        stream.write_all(write).await.ok()?;
    }
    stream.flush().await.ok()?;
    Some(read_response(stream).await?.status)
}

/// How many of [`TRIES`] fresh connections that write all of `writes` before reading get
/// `status` back.
async fn answered_after_writing_everything(
    addr: std::net::SocketAddr,
    writes: &[Vec<u8>],
    status: u16,
) -> usize {
    let mut answered = 0;
    for _ in 0..TRIES {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        if write_everything_then_read(&mut stream, writes).await == Some(status) {
            answered += 1;
        }
    }
    answered
}

#[tokio::test]
async fn answers_401_to_clients_that_write_a_large_unsigned_body_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let (handler, _calls) = Scripted::ok();
    let server = Running::start(config(&dir), handler).await;
    let writes = chunked_writes("POST", "/", None, &[b' '; 256 * 1024], 512);
    let answered = answered_after_writing_everything(server.addr, &writes, 401).await;
    assert_eq!(
        answered, TRIES,
        "{answered} of {TRIES} clients read their 401"
    );
    server.stop().await;
}

#[tokio::test]
async fn answers_401_to_clients_that_write_a_small_unsigned_body_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let (handler, _calls) = Scripted::ok();
    let server = Running::start(config(&dir), handler).await;
    let writes = chunked_writes("POST", "/", None, &[b' '; 300], 512);
    let answered = answered_after_writing_everything(server.addr, &writes, 401).await;
    assert_eq!(
        answered, TRIES,
        "{answered} of {TRIES} clients read their 401"
    );
    server.stop().await;
}

#[tokio::test]
async fn answers_every_early_refusal_to_clients_that_write_their_body_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir);
    config.webhook.max_body = 64 * 1024;
    let (handler, _calls) = Scripted::ok();
    let server = Running::start(config, handler).await;
    let signed = signature(&secret(), b"x");
    let cases = [
        ("POST", "/elsewhere", None, 96 * 1024, 404),
        ("PUT", "/", None, 96 * 1024, 405),
        (
            "POST",
            "/?challengeCode=preservica-webhook-auth",
            None,
            96 * 1024,
            400,
        ),
        // Over the cap: refused once 64 KiB are read, the other 96 KiB drained.
        ("POST", "/", Some(signed.as_str()), 160 * 1024, 413),
    ];
    let mut answered = Vec::new();
    for (method, target, signature, size, status) in cases {
        let writes = chunked_writes(method, target, signature, &vec![b' '; size], 512);
        let count = answered_after_writing_everything(server.addr, &writes, status).await;
        answered.push((method, target, status, count));
    }
    let expected: Vec<_> = cases
        .iter()
        .map(|(method, target, _, _, status)| (*method, *target, *status, TRIES))
        .collect();
    assert_eq!(
        answered, expected,
        "(method, target, status, clients answered)"
    );
    server.stop().await;
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn answers_401_over_https_to_clients_that_write_their_body_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let (handler, _calls) = Scripted::ok();
    let (server, connector) = https_server(&dir, handler).await;
    let writes = chunked_writes("POST", "/", None, &[b' '; 256 * 1024], 512);
    let mut answered = 0;
    for _ in 0..TRIES {
        let mut stream = connect_tls(&connector, &server).await;
        if write_everything_then_read(&mut stream, &writes).await == Some(401) {
            answered += 1;
        }
    }
    assert_eq!(
        answered, TRIES,
        "{answered} of {TRIES} clients read their 401"
    );
    server.stop().await;
}

/// Keeps writing small chunks until a write fails; returns how long that took.
async fn write_until_cut_off(mut writer: tokio::net::tcp::OwnedWriteHalf) -> Duration {
    let started = Instant::now();
    let chunk = b"10\r\n0123456789abcdef\r\n";
    while writer.write_all(chunk).await.is_ok() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn disconnects_a_client_that_keeps_sending_after_an_early_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (handler, _calls) = Scripted::ok();
    let server = Running::start(config(&dir), handler).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let writes = chunked_writes("POST", "/", None, b"", 512);
    writer.write_all(&writes[0]).await.unwrap();
    let sending = tokio::spawn(write_until_cut_off(writer));
    let mut answer = Vec::new();
    // The answer, then the end of the stream, come at once; the draining goes on.
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no end of the answer's stream within 5 s");
    assert!(
        answer.starts_with(b"HTTP/1.1 401"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let cut_off = tokio::time::timeout(Duration::from_secs(10), sending).await;
    assert!(
        cut_off.is_ok(),
        "a client sending a trickle of body was still connected after 10 s"
    );
    server.stop().await;
}

#[tokio::test]
async fn disconnects_a_client_that_floods_body_after_an_early_answer() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir);
    config.webhook.max_body = 1024;
    let (handler, _calls) = Scripted::ok();
    let server = Running::start(config, handler).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let writes = chunked_writes("POST", "/", None, b"", 512);
    stream.write_all(&writes[0]).await.unwrap();
    let flood = vec![b'x'; 64 * 1024];
    let mut written = 0usize;
    let flooding = tokio::time::timeout(Duration::from_secs(10), async {
        while stream.write_all(&flood).await.is_ok() {
            written += flood.len();
        }
    })
    .await;
    assert!(
        flooding.is_ok(),
        "a flooding client was still connected after 10 s"
    );
    // The drain stops near the body cap; what else got through sat in socket buffers.
    assert!(
        written < 32 * 1024 * 1024,
        "{written} bytes accepted after the answer at a body cap of 1 KiB"
    );
    server.stop().await;
}

#[tokio::test]
async fn refuses_to_bind_with_a_connection_cap_of_zero_before_opening_the_inbox() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir);
    config.max_connections = 0;
    let (handler, _calls) = Scripted::ok();
    let Err(err) = preservica_webhook_server::Server::bind(config, handler).await else {
        panic!("a server bound with a connection cap of zero");
    };
    assert!(
        matches!(
            err,
            preservica_webhook_server::ServerError::ZeroLimit("max_connections")
        ),
        "{err:?}"
    );
    assert!(!db_path(&dir).exists(), "the inbox was opened");
}
