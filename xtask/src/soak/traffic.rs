//! The soak's traffic, over raw TCP so that every byte (and every misbehaviour) is under
//! control: the steady signed load, and each kind of hostile request.
//!
//! Every request opens a connection of its own to whichever `serve` is running at that moment
//! (the address changes at each restart; `None` while it is down). A request that finds no
//! server is not counted as sent. Every wait is bounded: a request gives up once its kind's
//! limit plus slack has passed, and that counts as a violation.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use preservica_webhook_core::signing::{SIGNATURE_HEADER, Secret, sign};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, sleep, timeout};

use crate::bench::load::delivery_body;

/// Which `serve` runs (a number that grows at each restart) and where it listens; `None`
/// while it is down.
pub(crate) type Target = watch::Receiver<Option<(u64, SocketAddr)>>;

/// serve's header read timeout (its default; `serve` has no flag for it).
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// serve's body read timeout (its default; `serve` has no flag for it).
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// What a request may wait beyond the timeout that applies to it before it is a violation.
pub(crate) const SLACK: Duration = Duration::from_secs(5);
/// The `--max-body` serve runs with.
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// The size of the oversized bodies: sixteen times the limit.
const OVERSIZED: usize = 16 * MAX_BODY;
/// How long the signed load waits for an answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause between two bytes of a trickling connection.
const DRIP: Duration = Duration::from_millis(300);
/// How long a lane waits before trying again when no server could be reached.
const DOWN_PAUSE: Duration = Duration::from_millis(20);
/// The path serve listens on.
pub(crate) const PATH: &str = "/";

/// The kinds of hostile request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Hostile {
    /// A body that is not the one signed (or signed with another secret).
    Tampered,
    /// No signature header.
    Unsigned,
    /// A challenge code that starts with `preservica-webhook-auth`.
    Oracle,
    /// A validly signed body past `--max-body`, with Content-Length.
    OversizedLength,
    /// A validly signed body past `--max-body`, chunked.
    OversizedChunked,
    /// Headers sent one byte at a time.
    HeaderTrickle,
    /// A validly signed body sent one byte at a time.
    BodyTrickle,
    /// Bytes that are not HTTP/1.1, or are in ways parsers get wrong.
    Malformed,
    /// A connection that never sends anything.
    Idle,
}

impl Hostile {
    /// Every kind, in report order.
    pub(crate) const ALL: [Hostile; 9] = [
        Hostile::Tampered,
        Hostile::Unsigned,
        Hostile::Oracle,
        Hostile::OversizedLength,
        Hostile::OversizedChunked,
        Hostile::HeaderTrickle,
        Hostile::BodyTrickle,
        Hostile::Malformed,
        Hostile::Idle,
    ];

    /// The name in the report.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Hostile::Tampered => "tampered",
            Hostile::Unsigned => "unsigned",
            Hostile::Oracle => "oracle challenge",
            Hostile::OversizedLength => "oversized (length)",
            Hostile::OversizedChunked => "oversized (chunked)",
            Hostile::HeaderTrickle => "header trickle",
            Hostile::BodyTrickle => "body trickle",
            Hostile::Malformed => "malformed HTTP",
            Hostile::Idle => "idle connection",
        }
    }

    /// The timeout of serve's that bounds how long this kind may be kept waiting: the
    /// header timeout, or the body timeout for the kinds whose headers arrive at once.
    pub(crate) fn timeout(self) -> Duration {
        match self {
            Hostile::BodyTrickle | Hostile::OversizedChunked | Hostile::OversizedLength => {
                BODY_TIMEOUT
            }
            _ => HEADER_TIMEOUT,
        }
    }
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A response with this status.
    Status(u16),
    /// The server closed or reset the connection without a response.
    CutOff,
    /// Nothing within the limit plus slack.
    Stuck,
}

/// What happened to the hostile requests of one kind.
#[derive(Debug, Clone, Default)]
pub(crate) struct KindTally {
    /// Requests (or connections) made while a server was up.
    pub(crate) sent: u64,
    /// Answered with a status that is not 2xx.
    pub(crate) refused_status: u64,
    /// Closed or reset by the server without an answer.
    pub(crate) cut_off: u64,
    /// Ended by a kill of the server (not counted as refused, nor in `longest`).
    pub(crate) killed: u64,
    /// Answered 2xx: a failure.
    pub(crate) accepted: u64,
    /// Still waiting after the timeout plus slack: a failure.
    pub(crate) stuck: u64,
    /// The longest wait until answered or cut off by the same server instance.
    pub(crate) longest: Duration,
}

/// Everything the traffic saw, shared by its tasks.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Signed deliveries sent while a server was up (re-sends included).
    pub(crate) sent: u64,
    /// Of those, re-sends of a body already answered 200.
    pub(crate) resent: u64,
    /// Keys of the bodies answered 200.
    pub(crate) answered_200: BTreeSet<String>,
    /// Signed deliveries answered with another status, by status.
    pub(crate) other_status: BTreeMap<u16, u64>,
    /// Signed deliveries whose connection failed or that got no answer (mostly kills).
    pub(crate) unanswered: u64,
    /// Hostile requests by kind.
    pub(crate) hostile: BTreeMap<Hostile, KindTally>,
    /// Keys of every hostile body sent.
    pub(crate) hostile_keys: BTreeSet<String>,
    /// The first few hostile requests that were accepted or stuck, described.
    pub(crate) violations: Vec<String>,
}

/// The tally, shared.
pub(crate) type Shared = Arc<Mutex<Tally>>;

fn lock(tally: &Shared) -> std::sync::MutexGuard<'_, Tally> {
    tally
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The inbox key of a body: lowercase hex SHA-256.
pub(crate) fn key(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// A request with a Content-Length body.
fn length_request(path: &str, signature: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut request = head(path, signature);
    request.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    request.extend_from_slice(body);
    request
}

/// A request with a chunked body, in chunks of `chunk` bytes.
fn chunked_request(path: &str, signature: Option<&str>, body: &[u8], chunk: usize) -> Vec<u8> {
    let mut request = head(path, signature);
    request.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
    for piece in body.chunks(chunk.max(1)) {
        request.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        request.extend_from_slice(piece);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}

/// The request line and common headers, without the blank line.
fn head(path: &str, signature: Option<&str>) -> Vec<u8> {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: soak\r\ncontent-type: application/json\r\nconnection: close\r\n"
    );
    if let Some(signature) = signature {
        head.push_str(&format!("{SIGNATURE_HEADER}: {signature}\r\n"));
    }
    head.into_bytes()
}

/// Connects to the running server; `None` when there is none or it cannot be reached.
/// Returns the server's generation with the stream.
async fn connect(target: &Target) -> Option<(u64, TcpStream)> {
    let (generation, addr) = (*target.borrow())?;
    let stream = timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    // Connecting to a port nobody listens on any more (the server was just killed) can pick
    // that very port as the source port and connect the socket to itself: not a server.
    if stream.local_addr().ok() == stream.peer_addr().ok() {
        return None;
    }
    let _ = stream.set_nodelay(true);
    Some((generation, stream))
}

/// Whether the server that took a connection in `generation` has been killed since.
fn killed_since(target: &Target, generation: u64) -> bool {
    target.borrow().is_none_or(|(now, _)| now != generation)
}

/// Reads until a status line or the end of the stream; `CutOff` when the stream ends (or is
/// reset) before a status line.
async fn read_status(reader: &mut (impl tokio::io::AsyncRead + Unpin)) -> Answer {
    let mut seen = Vec::new();
    let mut buf = [0_u8; 2048];
    loop {
        if let Some(status) = parse_status(&seen) {
            return Answer::Status(status);
        }
        if seen.len() > 64 * 1024 {
            return Answer::CutOff;
        }
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return Answer::CutOff,
            Ok(read) => seen.extend_from_slice(&buf[..read]),
        }
    }
}

/// The status of `HTTP/1.x NNN …` once the first line is complete.
pub(crate) fn parse_status(seen: &[u8]) -> Option<u16> {
    let end = seen.windows(2).position(|pair| pair == b"\r\n")?;
    let line = std::str::from_utf8(&seen[..end]).ok()?;
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Writes `bytes` (ignoring a write the server refused by closing) and reads the answer,
/// giving up at `limit`.
async fn exchange(mut stream: TcpStream, bytes: &[u8], limit: Duration) -> Answer {
    let result = timeout(limit, async {
        // A server that answers 413 early closes while the rest is still being written: the
        // answer may still be readable.
        let _ = stream.write_all(bytes).await;
        read_status(&mut stream).await
    })
    .await;
    result.unwrap_or(Answer::Stuck)
}

/// Writes `head` at once, then one byte of `drip` every [`DRIP`] until the server answers or
/// closes, or `limit` passes.
async fn trickle(stream: TcpStream, head: &[u8], drip: &[u8], limit: Duration) -> Answer {
    let (mut reader, mut writer) = stream.into_split();
    let dripping = async {
        if writer.write_all(head).await.is_ok() {
            for byte in drip.iter().cycle() {
                sleep(DRIP).await;
                if writer.write_all(&[*byte]).await.is_err() {
                    break;
                }
            }
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        answer = timeout(limit, read_status(&mut reader)) => answer.unwrap_or(Answer::Stuck),
        () = dripping => Answer::Stuck,
    }
}

/// A delivery body for the signed load or a hostile request, unique to (`lane`, `sequence`).
fn body(nonce: u32, lane: usize, sequence: u64) -> Bytes {
    delivery_body(nonce, lane, sequence, 1)
}

/// A validly shaped delivery padded with spaces to `size` bytes.
fn padded_body(nonce: u32, lane: usize, sequence: u64, size: usize) -> Vec<u8> {
    let mut padded = body(nonce, lane, sequence).to_vec();
    padded.resize(size.max(padded.len()), b' ');
    padded
}

/// One lane of the signed load: `per_second` deliveries a second, alternately chunked and
/// with Content-Length, every 20th a re-send of the previous body, until `until`.
pub(crate) async fn signed_load(
    target: Target,
    secret: Secret,
    nonce: u32,
    lane: usize,
    per_second: u32,
    until: Instant,
    tally: Shared,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / per_second.max(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sequence = 0_u64;
    let mut previous: Option<(Bytes, String)> = None;
    loop {
        ticks.tick().await;
        if Instant::now() >= until {
            return;
        }
        let resend = (sequence + 1).is_multiple_of(20) && previous.is_some();
        let (payload, payload_key) = match (&previous, resend) {
            (Some(previous), true) => previous.clone(),
            _ => {
                let payload = body(nonce, lane, sequence);
                let payload_key = key(&payload);
                (payload, payload_key)
            }
        };
        sequence += 1;
        let Some((_, stream)) = connect(&target).await else {
            continue;
        };
        let signature = sign(&secret, &payload).to_hex();
        let request = if sequence.is_multiple_of(2) {
            length_request(PATH, Some(&signature), &payload)
        } else {
            chunked_request(PATH, Some(&signature), &payload, 97)
        };
        let answer = exchange(stream, &request, ANSWER_TIMEOUT).await;
        let mut tally = lock(&tally);
        tally.sent += 1;
        if resend {
            tally.resent += 1;
        }
        match answer {
            Answer::Status(200) => {
                tally.answered_200.insert(payload_key.clone());
                previous = Some((payload, payload_key));
            }
            Answer::Status(status) => *tally.other_status.entry(status).or_default() += 1,
            Answer::CutOff | Answer::Stuck => tally.unanswered += 1,
        }
    }
}

/// The bytes of malformed request number `variant`.
fn malformed(variant: u64) -> Vec<u8> {
    match variant % 8 {
        0 => b"GARBAGE\r\n\r\n".to_vec(),
        1 => b"POST / HTTP/1.1\r\nhost: s\r\ncontent-length: abc\r\n\r\n".to_vec(),
        2 => b"POST / HTTP/1.1\r\nhost: s\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
            .to_vec(),
        3 => b"POST / HTTP/1.1\r\nhost: s\r\ncontent-length: 5\r\ncontent-length: 7\r\n\r\nhello!!"
            .to_vec(),
        4 => {
            let mut big = b"POST / HTTP/1.1\r\nhost: s\r\nx-big: ".to_vec();
            big.resize(big.len() + 200 * 1024, b'a');
            big.extend_from_slice(b"\r\n\r\n");
            big
        }
        5 => (0..=255_u8).cycle().take(4096).collect(),
        6 => b"POST / HTTP/9.9\r\nhost: s\r\n\r\n".to_vec(),
        _ => b"POST / HTTP/1.1\r\nhost: s\r\ncontent-length: 18446744073709551616\r\n\r\n{}"
            .to_vec(),
    }
}

/// One lane of hostile requests of `kind`, one after another (with `pause` between them) until
/// `until`. Trickles and idle connections that could not finish by `until` are not started.
#[allow(
    clippy::too_many_arguments,
    reason = "one lane's whole configuration, passed once when it is spawned"
)]
pub(crate) async fn hostile(
    kind: Hostile,
    target: Target,
    secret: Secret,
    nonce: u32,
    lane: usize,
    pause: Duration,
    until: Instant,
    tally: Shared,
) {
    let other = Secret::new("not-the-soak-secret").expect("not empty");
    let limit = kind.timeout() + SLACK;
    let mut sequence = 0_u64;
    loop {
        let now = Instant::now();
        let long_lived = matches!(
            kind,
            Hostile::HeaderTrickle | Hostile::BodyTrickle | Hostile::Idle
        );
        if now >= until || (long_lived && now + limit >= until) {
            return;
        }
        sequence += 1;
        let Some((generation, stream)) = connect(&target).await else {
            sleep(pause.max(DOWN_PAUSE)).await;
            continue;
        };
        let started = Instant::now();
        let ends = (stream.local_addr().ok(), stream.peer_addr().ok());
        let (answer, body_key) = match kind {
            Hostile::Tampered => {
                let payload = body(nonce, lane, sequence);
                let signer = if sequence.is_multiple_of(2) {
                    &secret
                } else {
                    &other
                };
                let signature = sign(signer, &payload).to_hex();
                // Same length, one character of the entity reference changed.
                let mut tampered = payload.to_vec();
                if let Some(last) = tampered.iter().rposition(u8::is_ascii_hexdigit) {
                    tampered[last] = if tampered[last] == b'f' { b'e' } else { b'f' };
                }
                let request = length_request(PATH, Some(&signature), &tampered);
                (
                    exchange(stream, &request, limit).await,
                    Some(key(&tampered)),
                )
            }
            Hostile::Unsigned => {
                let payload = body(nonce, lane, sequence);
                let request = chunked_request(PATH, None, &payload, 64);
                (exchange(stream, &request, limit).await, Some(key(&payload)))
            }
            Hostile::Oracle => {
                // The forged body an attacker wants a signature for.
                let forged = body(nonce, lane, sequence);
                let code: String = url::form_urlencoded::byte_serialize(
                    &[b"preservica-webhook-auth".as_slice(), &forged].concat(),
                )
                .collect();
                let path = format!("{PATH}?challengeCode={code}");
                let request = length_request(&path, None, &forged);
                (exchange(stream, &request, limit).await, Some(key(&forged)))
            }
            Hostile::OversizedLength => {
                let payload = padded_body(nonce, lane, sequence, OVERSIZED);
                let signature = sign(&secret, &payload).to_hex();
                let request = length_request(PATH, Some(&signature), &payload);
                (exchange(stream, &request, limit).await, Some(key(&payload)))
            }
            Hostile::OversizedChunked => {
                let payload = padded_body(nonce, lane, sequence, OVERSIZED);
                let signature = sign(&secret, &payload).to_hex();
                let request = chunked_request(PATH, Some(&signature), &payload, 8 * 1024);
                (exchange(stream, &request, limit).await, Some(key(&payload)))
            }
            Hostile::HeaderTrickle => {
                let start = format!("POST {PATH} HTTP/1.1\r\nhost: soak\r\n");
                let answer = trickle(stream, start.as_bytes(), b"x-slow: a\r\n", limit).await;
                (answer, None)
            }
            Hostile::BodyTrickle => {
                let payload = padded_body(nonce, lane, sequence, 4096);
                let signature = sign(&secret, &payload).to_hex();
                let mut start = head(PATH, Some(&signature));
                start.extend_from_slice(
                    format!("content-length: {}\r\n\r\n", payload.len()).as_bytes(),
                );
                let answer = trickle(stream, &start, &payload, limit).await;
                (answer, Some(key(&payload)))
            }
            Hostile::Malformed => (exchange(stream, &malformed(sequence), limit).await, None),
            Hostile::Idle => {
                let mut stream = stream;
                let mut answer = timeout(limit, read_status(&mut stream))
                    .await
                    .unwrap_or(Answer::Stuck);
                // A handshake that completed just as the server was killed leaves this end
                // open with nobody at the other: a silent client never learns. Probe it: the
                // dead end answers with a reset.
                if answer == Answer::Stuck && killed_since(&target, generation) {
                    let _ = stream.write_all(b"\r\n").await;
                    answer = timeout(Duration::from_secs(2), read_status(&mut stream))
                        .await
                        .unwrap_or(Answer::Stuck);
                }
                (answer, None)
            }
        };
        let waited = started.elapsed();
        let killed = killed_since(&target, generation);
        {
            let mut tally = lock(&tally);
            if let Some(body_key) = body_key {
                tally.hostile_keys.insert(body_key);
            }
            let entry = tally.hostile.entry(kind).or_default();
            entry.sent += 1;
            if !killed {
                entry.longest = entry.longest.max(waited);
            }
            let violation = match answer {
                Answer::Status(status) if (200..300).contains(&status) => {
                    entry.accepted += 1;
                    Some(format!("{} #{sequence} was answered {status}", kind.name()))
                }
                Answer::Status(_) => {
                    entry.refused_status += 1;
                    None
                }
                Answer::CutOff if killed => {
                    entry.killed += 1;
                    None
                }
                Answer::CutOff => {
                    entry.cut_off += 1;
                    None
                }
                Answer::Stuck => {
                    entry.stuck += 1;
                    let now = *target.borrow();
                    Some(format!(
                        "{} #{sequence} (lane {lane}) was neither answered nor cut off within \
                         {limit:?} (from {:?} to {:?}, server #{generation} when it connected, \
                         now {now:?})",
                        kind.name(),
                        ends.0,
                        ends.1
                    ))
                }
            };
            if let Some(violation) = violation
                && tally.violations.len() < 20
            {
                tally.violations.push(violation);
            }
        }
        sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        assert_eq!(
            parse_status(b"HTTP/1.1 413 Payload Too Large\r\n"),
            Some(413)
        );
        assert_eq!(parse_status(b"HTTP/1.0 200 OK\r\nx: y"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.1 200 OK"), None, "line not complete");
        assert_eq!(parse_status(b"SSH-2.0 200\r\n"), None);
    }

    #[test]
    fn frames_chunked_bodies() {
        let request = chunked_request("/", None, b"hello world", 5);
        let text = String::from_utf8(request).expect("ASCII");
        assert!(
            text.ends_with("\r\n\r\n5\r\nhello\r\n5\r\n worl\r\n1\r\nd\r\n0\r\n\r\n"),
            "{text}"
        );
        assert!(!text.contains(SIGNATURE_HEADER));
    }

    #[test]
    fn pads_bodies_to_size_and_keys_them_by_sha256() {
        assert_eq!(padded_body(1, 2, 3, 5000).len(), 5000);
        assert_eq!(
            key(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
