//! The load generator: keep-alive HTTP/1.1 connections POSTing signed deliveries.
//!
//! Each connection is its own `TcpStream`, written and read with the testkit's raw HTTP/1.1
//! client; with several receivers, connection `i` goes to receiver `i mod n`, as a load
//! balancer in front of replicas spreads its connections. It sends one request at a time (a closed loop): a delivery in the captured
//! Preservica shape, with an `entityRef` no other request of the run uses (the receiver
//! deduplicates identical bodies), signed with the core's [`sign`], framed with
//! `Transfer-Encoding: chunked` as Preservica does. Every answer is read to its end and its
//! status checked. Requests that start during the warm-up are sent and checked but not
//! measured; requests are sent until the measuring window closes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use preservica_webhook_core::signing::{Secret, sign};
use preservica_webhook_testkit::raw::{chunked_request, read_response, send};
use preservica_webhook_testkit::{Delivery, Event};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// How long one request may take before the connection counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What to send, where, and for how long.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The receivers' socket addresses (at least one); the connections are spread over them.
    pub(crate) addrs: Vec<SocketAddr>,
    /// The webhook path, starting with `/`.
    pub(crate) path: String,
    /// How many connections send at once.
    pub(crate) connections: usize,
    /// How long requests are sent before measuring starts.
    pub(crate) warmup: Duration,
    /// How long requests are measured.
    pub(crate) measure: Duration,
    /// How many events each delivery carries.
    pub(crate) events_per_delivery: usize,
    /// The secret deliveries are signed with.
    pub(crate) secret: Secret,
    /// Makes this run's entity references differ from any other run's.
    pub(crate) nonce: u32,
}

impl Plan {
    /// The receiver connection `connection` sends to: round-robin over [`Plan::addrs`].
    fn addr(&self, connection: usize) -> SocketAddr {
        self.addrs[connection % self.addrs.len()]
    }
}

/// What a load run measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outcome {
    /// Requests that started inside the measuring window and were answered 200.
    pub(crate) measured: u64,
    /// All requests answered, warm-up included, whatever their status.
    pub(crate) answered: u64,
    /// Answers other than 200, by status code, warm-up included.
    pub(crate) unexpected_status: BTreeMap<u16, u64>,
    /// Connections that failed (refused, reset, timed out).
    pub(crate) transport_errors: u64,
    /// The first failure, for the report.
    pub(crate) first_error: Option<String>,
    /// Latency of each measured request, in microseconds, sorted.
    pub(crate) latencies_us: Vec<u32>,
    /// The length of the measuring window.
    pub(crate) window: Duration,
}

impl Outcome {
    /// Measured requests per second.
    pub(crate) fn requests_per_second(&self) -> f64 {
        let seconds = self.window.as_secs_f64();
        if seconds == 0.0 {
            return 0.0;
        }
        self.measured as f64 / seconds
    }

    /// The latency at quantile `q` (0..=1), in milliseconds; `None` when nothing was measured.
    pub(crate) fn latency_ms(&self, q: f64) -> Option<f64> {
        let last = self.latencies_us.len().checked_sub(1)?;
        // Nearest rank: the smallest value with at least q of the samples at or below it.
        let rank = ((q * self.latencies_us.len() as f64).ceil() as usize).saturating_sub(1);
        Some(f64::from(self.latencies_us[rank.min(last)]) / 1000.0)
    }

    /// Answers other than 200, warm-up included.
    pub(crate) fn non_200(&self) -> u64 {
        self.unexpected_status.values().sum()
    }

    /// Whether every request was answered 200 and no connection failed.
    pub(crate) fn is_clean(&self) -> bool {
        self.non_200() == 0 && self.transport_errors == 0
    }

    fn merge(&mut self, other: Outcome) {
        self.measured += other.measured;
        self.answered += other.answered;
        for (status, count) in other.unexpected_status {
            *self.unexpected_status.entry(status).or_default() += count;
        }
        self.transport_errors += other.transport_errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies_us.extend(other.latencies_us);
    }
}

/// Runs the plan: opens every connection, sends for warm-up plus measuring time, and returns
/// what was measured. Failures are counted in the outcome, not returned as errors.
pub(crate) async fn run(plan: Plan) -> Outcome {
    let plan = Arc::new(plan);
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let until = measure_from + plan.measure;
    let tasks: Vec<_> = (0..plan.connections)
        .map(|connection| {
            let plan = Arc::clone(&plan);
            tokio::spawn(async move {
                let mut outcome = Outcome::default();
                if let Err(err) =
                    drive_connection(&plan, connection, measure_from, until, &mut outcome).await
                {
                    outcome.transport_errors += 1;
                    outcome.first_error = Some(format!("connection {connection}: {err:#}"));
                }
                outcome
            })
        })
        .collect();
    let mut total = Outcome {
        window: plan.measure,
        ..Outcome::default()
    };
    for task in tasks {
        match task.await {
            Ok(outcome) => total.merge(outcome),
            Err(err) => {
                total.transport_errors += 1;
                total
                    .first_error
                    .get_or_insert_with(|| format!("a connection task failed: {err}"));
            }
        }
    }
    total.latencies_us.sort_unstable();
    total
}

/// One connection's closed loop: send, read the answer, check it, repeat until `until`.
async fn drive_connection(
    plan: &Plan,
    connection: usize,
    measure_from: Instant,
    until: Instant,
    outcome: &mut Outcome,
) -> Result<()> {
    let addr = plan.addr(connection);
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("could not connect to {addr}"))?;
    stream
        .set_nodelay(true)
        .context("could not set TCP_NODELAY")?;
    let mut sequence = 0_u64;
    loop {
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        let measured = now >= measure_from;
        let body = delivery_body(plan.nonce, connection, sequence, plan.events_per_delivery);
        sequence += 1;
        let signature = sign(&plan.secret, &body).to_hex();
        // One chunk and the terminating one, as a streaming sender frames a body it holds.
        let request = chunked_request(&plan.path, &signature, &body, body.len());
        let sent = Instant::now();
        let status = timeout(REQUEST_TIMEOUT, async {
            stream
                .write_all(&request)
                .await
                .context("the request could not be sent")?;
            let response = read_response(&mut stream).await;
            response
                .map(|it| it.status)
                .context("the connection closed before a whole answer")
        })
        .await
        .with_context(|| format!("no answer within {REQUEST_TIMEOUT:?}"))??;
        let latency = sent.elapsed();
        outcome.answered += 1;
        if status != 200 {
            *outcome.unexpected_status.entry(status).or_default() += 1;
            outcome
                .first_error
                .get_or_insert_with(|| format!("connection {connection}: answered {status}"));
            continue;
        }
        if measured {
            outcome.measured += 1;
            let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
            outcome.latencies_us.push(micros);
        }
    }
}

/// GETs `path` over a connection of its own; returns the status and the body as text.
///
/// # Errors
/// When the server cannot be reached or does not answer within the request timeout.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let answer = timeout(REQUEST_TIMEOUT, send(addr, request.as_bytes()))
        .await
        .with_context(|| format!("no answer to GET {path} within {REQUEST_TIMEOUT:?}"))?
        .with_context(|| format!("GET {path} failed"))?;
    Ok((
        answer.status,
        String::from_utf8_lossy(&answer.body).into_owned(),
    ))
}

/// A delivery body in the captured shape (the testkit's), with `events` events whose entity
/// references are unique to (`nonce`, `connection`, `sequence`, event index).
pub(crate) fn delivery_body(nonce: u32, connection: usize, sequence: u64, events: usize) -> Bytes {
    let events: Vec<Event> = (0..events)
        .map(|index| Event::numbered(nonce, connection, index, sequence))
        .collect();
    Bytes::from(
        Delivery::new(
            "9495ddbf7d4a0b9f030a3411c87f967d",
            "FULL_TEXT_INDEXED",
            &events,
        )
        .bytes,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use preservica_webhook_core::http::{HeaderMap, Method as CoreMethod};
    use preservica_webhook_core::signing::SIGNATURE_HEADER;
    use preservica_webhook_core::{Decision, Delivery, Receiver};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    fn secret() -> Secret {
        Secret::new("bench-secret").expect("not empty")
    }

    #[test]
    fn deliveries_verify_and_parse_with_distinct_entity_refs() {
        let receiver = Receiver::new([secret()]).expect("one secret");
        let mut refs = HashSet::new();
        for (connection, sequence, events) in [(0, 0, 1), (0, 1, 1), (1, 0, 1), (63, 7, 10)] {
            let body = delivery_body(0xabcd, connection, sequence, events);
            let mut headers = HeaderMap::new();
            headers.insert(
                SIGNATURE_HEADER,
                sign(&secret(), &body).to_hex().parse().expect("hex"),
            );
            let Decision::Accept(verified) = receiver.decide(
                &CoreMethod::POST,
                &"/".parse().expect("uri"),
                &headers,
                body,
            ) else {
                panic!("the receiver refused delivery {connection}/{sequence}");
            };
            let delivery: &Delivery = verified.delivery().expect("captured shape");
            assert_eq!(delivery.events.len(), events);
            for entity_ref in delivery.entity_refs() {
                assert_eq!(entity_ref.len(), 36, "UUID-shaped: {entity_ref}");
                assert!(refs.insert(entity_ref.to_owned()), "repeated {entity_ref}");
            }
        }
        assert_eq!(refs.len(), 13);
    }

    #[test]
    fn latency_quantiles_use_nearest_rank() {
        let outcome = Outcome {
            latencies_us: (1..=100).map(|ms| ms * 1000).collect(),
            measured: 100,
            window: Duration::from_secs(2),
            ..Outcome::default()
        };
        assert_eq!(outcome.latency_ms(0.5), Some(50.0));
        assert_eq!(outcome.latency_ms(0.99), Some(99.0));
        assert_eq!(outcome.latency_ms(1.0), Some(100.0));
        assert_eq!(outcome.requests_per_second(), 50.0);
        assert_eq!(Outcome::default().latency_ms(0.5), None);
    }

    /// Reads one request head from a raw socket and answers it, closing the connection.
    async fn capture_head(listener: TcpListener) -> String {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut seen = Vec::new();
        let mut buf = [0_u8; 4096];
        // The chunked body ends with the zero-length chunk.
        while !seen.ends_with(b"0\r\n\r\n") {
            let read = socket.read(&mut buf).await.expect("read");
            assert!(read > 0, "the client closed before the body ended");
            seen.extend_from_slice(&buf[..read]);
        }
        socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        String::from_utf8(seen).expect("ASCII head and JSON body")
    }

    #[test]
    fn spreads_connections_round_robin_over_the_addresses() {
        let addrs: Vec<SocketAddr> = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
            .map(|it| it.parse().expect("address"))
            .to_vec();
        let plan = |addrs: &[SocketAddr]| Plan {
            addrs: addrs.to_vec(),
            path: "/".to_owned(),
            connections: 7,
            warmup: Duration::ZERO,
            measure: Duration::ZERO,
            events_per_delivery: 1,
            secret: secret(),
            nonce: 0,
        };
        let ports = |plan: &Plan| -> Vec<u16> { (0..7).map(|it| plan.addr(it).port()).collect() };
        assert_eq!(ports(&plan(&addrs)), [1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(ports(&plan(&addrs[..1])), [1; 7]);
    }

    #[tokio::test]
    async fn sends_signed_chunked_deliveries_over_keep_alive_to_each_address() {
        let mut addrs = Vec::new();
        let mut captured = Vec::new();
        for _ in 0..2 {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            addrs.push(listener.local_addr().expect("addr"));
            captured.push(tokio::spawn(capture_head(listener)));
        }
        let outcome = run(Plan {
            addrs,
            path: "/hook".to_owned(),
            connections: 2,
            warmup: Duration::ZERO,
            measure: Duration::from_secs(5),
            events_per_delivery: 1,
            secret: secret(),
            nonce: 1,
        })
        .await;
        for (connection, captured) in captured.into_iter().enumerate() {
            // A listener no connection reached would wait for ever.
            let request = timeout(Duration::from_secs(10), captured)
                .await
                .expect("a connection reached each listener")
                .expect("capture task");
            let lower = request.to_ascii_lowercase();
            assert!(lower.starts_with("post /hook http/1.1\r\n"), "{request}");
            assert!(
                lower.contains("transfer-encoding: chunked\r\n"),
                "{request}"
            );
            assert!(!lower.contains("content-length"), "{request}");
            assert!(lower.contains("preservica-signature: "), "{request}");
            // Listener `i` took connection `i`'s first delivery.
            let first = delivery_body(1, connection, 0, 1);
            let first = std::str::from_utf8(&first).expect("JSON");
            assert!(request.contains(first), "{connection}: {request}");
        }
        // Each server closed its connection after one answer: that request counted, and the
        // next one found the connection gone, which the run reports as a failure.
        assert_eq!(outcome.answered, 2);
        assert_eq!(outcome.measured, 2);
        assert_eq!(outcome.transport_errors, 2);
        assert!(!outcome.is_clean());
    }
}
