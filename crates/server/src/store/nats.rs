//! The NATS JetStream store ([`InboxConfig::Nats`](crate::InboxConfig::Nats), cargo feature
//! `nats`): verified deliveries are published to a JetStream stream, which a NATS cluster
//! replicates; workers anywhere take them from one durable pull consumer.
//!
//! - **Intake.** The raw body is published to `<subject prefix>.<TRIGGER>` (default
//!   `preservica.webhook.MOVED` and so on) with the header `Nats-Msg-Id` set to the delivery
//!   key (SHA-256 of the body, hex) and the original `Preservica-Signature`, so any consumer
//!   can verify it again. [`Intake::store`] resolves once JetStream acknowledged the publish;
//!   an acknowledgement that says *duplicate* (the stream's duplicate window already has that
//!   id, from any receiver) is a [`Stored::Duplicate`]. Publishes from concurrent requests are
//!   all in flight at once. An authentic body that is not a delivery goes to
//!   `<subject prefix>.undecodable` and is never handled.
//! - **Work.** One durable pull consumer (explicit ack) shared by every worker process. A claim
//!   takes the messages the consumer delivered (waiting up to
//!   [`NatsConfig::claim_wait`] for the first) and restarts each one's ack timer, which is the
//!   lease ([`NatsConfig::ack_wait`]). Done → ack; retry → nak with the backoff delay; dead →
//!   the message is published to the dead-letter stream (`<stream>_DEAD`, subjects
//!   `<subject prefix>-dead.<TRIGGER>`), that publish acknowledged, then the original is
//!   terminated. A worker that vanishes leaves its messages unacknowledged: JetStream hands
//!   them to another worker once their ack wait runs out.
//! - **Attempts.** Each outcome is recorded, as it is applied (the publish runs beside the
//!   ack, nak or dead-lettering), in a stream of its own (`<stream>_ATTEMPTS`, one message
//!   per finished attempt on `<subject prefix>-attempts.<the delivery's sequence>`), read
//!   back through a consumer filtered on that subject. A record whose publish fails is only
//!   logged: the outcome stands, and the history lacks that attempt. The other way round,
//!   an outcome that fails beside a stored record (a dead copy not stored) runs again, and
//!   the history shows that attempt before the next.
//! - **Administration.** Ids are stream sequence numbers. A message is *dead* while its copy is
//!   in the dead-letter stream, *pending* while it is above the consumer's acknowledgement
//!   floor, *done* below it. Re-queuing a dead letter publishes its body again (under a new
//!   message id, so the duplicate window does not swallow it) and removes the dead copy.
//!
//! The pull consumer keeps idle heartbeats on, so a pull request that the server lets expire
//! without a word (nats-server before 2.9.16) is noticed and the pull started again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::message::{AckKind, StreamMessage};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context};
use async_nats::{HeaderMap, ServerAddr};
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::future::FutureExt as _;
use preservica_webhook_core::{Delivery, DeliveryKey};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::error::InboxError;
use crate::inbox::{DeliveryState, InboxEntry, StateCounts, StateFilter};
use crate::store::page::CHUNK;
use crate::store::{
    ACTIVITY_MINUTES, Activity, Attempt, BoxFuture, Claim, Claimed, DeliveryId, InboxAdmin, Intake,
    NewDelivery, Outcome, Page, PageQuery, RunRecord, Store, Stored, StoredDelivery, WorkQueue,
    scan_chunks,
};

/// The header that carries Preservica's signature of the body, kept from the request.
pub const SIGNATURE_HEADER: &str = "Preservica-Signature";
/// The header JetStream deduplicates on.
const MSG_ID: &str = "Nats-Msg-Id";
/// Dead-letter headers: the handler's last error, the attempts made, the original sequence.
const ERROR_HEADER: &str = "Preservica-Webhook-Error";
const ATTEMPTS_HEADER: &str = "Preservica-Webhook-Attempts";
const SEQUENCE_HEADER: &str = "Preservica-Webhook-Sequence";
/// The subject token of authentic bodies that are not deliveries.
const UNDECODABLE: &str = "undecodable";
/// The lease of a consumer created without one (see [`NatsConfig::ack_wait`]).
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(120);

/// Where and how the NATS store keeps deliveries. [`NatsConfig::new`] gives the defaults;
/// set what differs.
///
/// ```
/// use preservica_webhook_server::store::nats::NatsConfig;
///
/// let mut nats = NatsConfig::new(vec!["nats://nats-1:4222".into(), "nats://nats-2:4222".into()]);
/// nats.replicas = 3;
/// let inbox = preservica_webhook_server::InboxConfig::Nats(Box::new(nats));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NatsConfig {
    /// The servers to connect to (`nats://host:4222`, `tls://host:4222`); the client fails over
    /// between them and learns the rest of the cluster from them.
    pub servers: Vec<String>,
    /// How the connection authenticates; default none.
    pub auth: NatsAuth,
    /// A PEM file of CA certificates to trust for the servers' TLS certificates (TLS is then
    /// required).
    pub tls_ca: Option<PathBuf>,
    /// A PEM client certificate and its key, for servers that verify clients (TLS is then
    /// required).
    pub tls_client: Option<(PathBuf, PathBuf)>,
    /// The stream; default `PRESERVICA_WEBHOOK`. Its dead-letter stream is `<stream>_DEAD`.
    pub stream: String,
    /// The subjects' prefix; default `preservica.webhook`: deliveries are published to
    /// `<prefix>.<TRIGGER>`, dead letters to `<prefix>-dead.<TRIGGER>`.
    pub subject_prefix: String,
    /// The durable consumer every worker shares; default `preservica-webhook-workers`.
    pub consumer: String,
    /// The stream's replicas, for a cluster (1, 3 or 5); default 1.
    pub replicas: usize,
    /// How long the stream keeps messages; default 30 days. At least the duplicate window.
    pub max_age: Duration,
    /// How long a delivery's id is remembered, so that the same body again is a duplicate;
    /// default 1 day.
    pub duplicate_window: Duration,
    /// How long a claimed message is leased to a worker before JetStream hands it to another
    /// (the consumer's ack wait); make it longer than the handler timeout. `Some` — what a
    /// process that runs workers gives — sets it, changing an existing consumer's; `None`,
    /// the default (the `inbox` commands, a receiver without workers), leaves an existing
    /// consumer's as it is and creates a missing one with [`DEFAULT_ACK_WAIT`].
    ///
    /// A message JetStream handed out when its node crashed reaches no worker, and is handed
    /// out again only once this lease ends.
    pub ack_wait: Option<Duration>,
    /// How long one publish (and its acknowledgement) or JetStream request may take before the
    /// receiver answers 503; default 5 s.
    pub request_timeout: Duration,
    /// How many messages one pull asks for; default 32.
    pub batch: usize,
    /// How long a claim waits for a first message; default 1 s.
    pub claim_wait: Duration,
    /// How long a pull request lasts before the next is sent; default 30 s.
    pub pull_expires: Duration,
    /// The idle heartbeat the server sends while a pull request waits; default 5 s. Two missed
    /// ones end the pull, which is started again.
    pub heartbeat: Duration,
}

/// How a NATS connection authenticates.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum NatsAuth {
    /// No credentials.
    #[default]
    None,
    /// A token.
    Token(String),
    /// A user and password.
    UserPassword(String, String),
    /// A credentials file (a JWT and its NKey seed), as `nsc` writes it.
    CredentialsFile(PathBuf),
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::Token(_) => f.write_str("Token(***)"),
            NatsAuth::UserPassword(user, _) => write!(f, "UserPassword({user:?}, ***)"),
            NatsAuth::CredentialsFile(path) => write!(f, "CredentialsFile({path:?})"),
        }
    }
}

impl NatsConfig {
    /// The defaults, on these servers.
    pub fn new(servers: Vec<String>) -> NatsConfig {
        NatsConfig {
            servers,
            auth: NatsAuth::None,
            tls_ca: None,
            tls_client: None,
            stream: "PRESERVICA_WEBHOOK".to_owned(),
            subject_prefix: "preservica.webhook".to_owned(),
            consumer: "preservica-webhook-workers".to_owned(),
            replicas: 1,
            max_age: Duration::from_secs(30 * 24 * 60 * 60),
            duplicate_window: Duration::from_secs(24 * 60 * 60),
            ack_wait: None,
            request_timeout: Duration::from_secs(5),
            batch: 32,
            claim_wait: Duration::from_secs(1),
            pull_expires: Duration::from_secs(30),
            heartbeat: Duration::from_secs(5),
        }
    }

    /// The dead-letter stream's name, `<stream>_DEAD`.
    pub fn dead_stream(&self) -> String {
        format!("{}_DEAD", self.stream)
    }

    fn dead_prefix(&self) -> String {
        format!("{}-dead", self.subject_prefix)
    }

    /// The stream of the receivers' run records (the latest record of each run is kept):
    /// `<stream>_RUNS`, on subjects `<prefix>-runs.<run id>`.
    pub fn runs_stream(&self) -> String {
        format!("{}_RUNS", self.stream)
    }

    fn runs_prefix(&self) -> String {
        format!("{}-runs", self.subject_prefix)
    }

    /// The stream of the deliveries' handler attempts: `<stream>_ATTEMPTS`, one message per
    /// finished attempt on `<prefix>-attempts.<the delivery's stream sequence>`.
    pub fn attempts_stream(&self) -> String {
        format!("{}_ATTEMPTS", self.stream)
    }

    fn attempts_subject(&self, sequence: u64) -> String {
        format!("{}-attempts.{sequence}", self.subject_prefix)
    }
}

/// The NATS JetStream store (see the [module documentation](self)).
pub(crate) struct NatsStore {
    config: NatsConfig,
    js: Context,
    consumer: PullConsumer,
    /// The consumer's message stream, started by the first claim and again after an error.
    messages: tokio::sync::Mutex<Option<pull::Stream>>,
    /// Claimed messages by stream sequence, to acknowledge when their outcome comes.
    leased: Mutex<HashMap<u64, jetstream::Message>>,
    gauges: Gauges,
}

/// What `/metrics` shows of the stream, refreshed with the inbox counts.
#[derive(Debug, Default)]
struct Gauges {
    stream_messages: Gauge,
    consumer_pending: Gauge,
    consumer_ack_pending: Gauge,
    redelivered: Gauge,
    dead_letters: Gauge,
}

/// A dead letter as the dead-letter stream has it.
#[derive(Debug)]
struct Dead {
    sequence: u64,
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
    error: Option<String>,
    attempts: u32,
}

/// Stream sequences from `first` to `last`, both included.
#[derive(Debug, Clone, Copy)]
struct Range {
    first: u64,
    last: u64,
}

impl Range {
    fn new(first: u64, last: u64) -> Range {
        Range { first, last }
    }

    fn contains(self, sequence: u64) -> bool {
        self.first <= sequence && sequence <= self.last
    }
}

/// What a read of the stream takes: whole messages, their headers only, or the whole
/// messages on one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reading {
    Whole,
    Headers,
    Subject(String),
}

impl std::fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStore")
            .field("servers", &self.config.servers)
            .field("stream", &self.config.stream)
            .field("consumer", &self.config.consumer)
            .finish_non_exhaustive()
    }
}

fn backend(what: &str, err: impl std::fmt::Display) -> InboxError {
    InboxError::backend(format!("NATS JetStream could not {what}: {err}"))
}

impl NatsStore {
    /// Connects, then creates or checks the stream, the dead-letter stream and the consumer.
    pub(crate) async fn open(config: NatsConfig) -> Result<NatsStore, InboxError> {
        let servers = config
            .servers
            .iter()
            .map(|it| it.parse::<ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| {
                InboxError::backend(format!(
                    "a NATS server address in {:?} is not a URL (nats://host:4222): {err}",
                    config.servers
                ))
            })?;
        let mut options = async_nats::ConnectOptions::new()
            .name("preservica-webhook")
            .connection_timeout(config.request_timeout)
            // Reconnect for ever: an outage is answered 503 until the servers are back.
            .max_reconnects(None);
        options = match &config.auth {
            NatsAuth::None => options,
            NatsAuth::Token(token) => options.token(token.clone()),
            NatsAuth::UserPassword(user, password) => {
                options.user_and_password(user.clone(), password.clone())
            }
            NatsAuth::CredentialsFile(path) => {
                options.credentials_file(path).await.map_err(|err| {
                    InboxError::backend(format!(
                        "cannot read the NATS credentials file {}: {err}",
                        path.display()
                    ))
                })?
            }
        };
        if let Some(ca) = &config.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &config.tls_client {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        let client = options.connect(servers).await.map_err(|err| {
            InboxError::backend(format!(
                "cannot connect to NATS at {} (check the URL, that the server runs, and the \
                 credentials): {err}",
                config.servers.join(",")
            ))
        })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .build(client);
        let main = ensure_stream(
            &js,
            &config,
            config.stream.clone(),
            format!("{}.>", config.subject_prefix),
        )
        .await?;
        ensure_stream(
            &js,
            &config,
            config.dead_stream(),
            format!("{}.>", config.dead_prefix()),
        )
        .await?;
        ensure_stream(
            &js,
            &config,
            config.attempts_stream(),
            format!("{}-attempts.>", config.subject_prefix),
        )
        .await?;
        ensure_stream_as(
            &js,
            stream::Config {
                name: config.runs_stream(),
                subjects: vec![format!("{}.>", config.runs_prefix())],
                retention: RetentionPolicy::Limits,
                storage: StorageType::File,
                num_replicas: config.replicas.max(1),
                max_age: config.max_age,
                max_messages_per_subject: 1,
                // Set, so that the server's own default does not read as a changed setting.
                duplicate_window: Duration::from_secs(120).min(config.max_age),
                ..Default::default()
            },
        )
        .await?;
        let wanted = pull::Config {
            durable_name: Some(config.consumer.clone()),
            description: Some("preservica-webhook workers".to_owned()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: config.ack_wait.unwrap_or(DEFAULT_ACK_WAIT),
            filter_subject: format!("{}.>", config.subject_prefix),
            max_ack_pending: 10_000,
            ..Default::default()
        };
        let mut consumer =
            during_elections(&format!("create the consumer {}", config.consumer), || {
                main.get_or_create_consumer(&config.consumer, wanted.clone())
            })
            .await?;
        let have = consumer.cached_info().config.clone();
        if let Some(lease) = config.ack_wait.filter(|lease| *lease != have.ack_wait) {
            // Created before with another lease (by an `inbox` command, or workers with
            // another handler timeout): the workers starting now need theirs.
            let changed = consumer::Config {
                ack_wait: lease,
                ..have.clone()
            };
            let what = format!("change the lease of the consumer {}", config.consumer);
            during_elections(&what, || main.create_consumer(changed.clone())).await?;
            consumer = during_elections(&what, || main.get_consumer(&config.consumer)).await?;
            tracing::info!(
                consumer = %config.consumer,
                was_s = have.ack_wait.as_secs_f64(),
                now_s = lease.as_secs_f64(),
                "the consumer's lease (ack wait) now fits these workers' handler timeout"
            );
        }
        Ok(NatsStore {
            config,
            js,
            consumer,
            messages: tokio::sync::Mutex::new(None),
            leased: Mutex::new(HashMap::new()),
            gauges: Gauges::default(),
        })
    }

    fn subject(&self, delivery: &NewDelivery) -> String {
        if delivery.state == DeliveryState::Undecodable {
            return format!("{}.{UNDECODABLE}", self.config.subject_prefix);
        }
        let trigger = Delivery::from_slice(&delivery.body)
            .ok()
            .and_then(|it| it.trigger)
            .map_or_else(|| "UNKNOWN".to_owned(), |it| subject_token(it.as_str()));
        format!("{}.{trigger}", self.config.subject_prefix)
    }

    async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<jetstream::publish::PublishAck, InboxError> {
        // While disconnected the client would buffer the message and send it after
        // reconnecting, long after the answer: fail now instead, as the answer says.
        self.connected("store a message")?;
        let publish = async {
            self.js
                .publish_with_headers(subject, headers, payload)
                .await?
                .await
        };
        match tokio::time::timeout(self.config.request_timeout, publish).await {
            Ok(Ok(ack)) => Ok(ack),
            Ok(Err(err)) => Err(backend("store a message", err)),
            Err(_) => Err(backend(
                "store a message",
                format!(
                    "no acknowledgement within {:?}",
                    self.config.request_timeout
                ),
            )),
        }
    }

    /// Fails at once while the client is reconnecting, instead of after a request timeout.
    fn connected(&self, what: &str) -> Result<(), InboxError> {
        if self.js.client().connection_state() == async_nats::connection::State::Connected {
            return Ok(());
        }
        Err(backend(
            what,
            "not connected to a NATS server (reconnecting)",
        ))
    }

    /// The stream, with its state as of now.
    async fn main_stream(&self) -> Result<stream::Stream, InboxError> {
        self.connected("read the stream")?;
        self.js
            .get_stream(&self.config.stream)
            .await
            .map_err(|err| backend(&format!("open the stream {}", self.config.stream), err))
    }

    /// The dead-letter stream, with its state as of now.
    async fn dead_stream(&self) -> Result<stream::Stream, InboxError> {
        self.connected("read the dead-letter stream")?;
        let name = self.config.dead_stream();
        self.js
            .get_stream(&name)
            .await
            .map_err(|err| backend(&format!("open the stream {name}"), err))
    }

    /// Every message of a stream, oldest first (see [`NatsStore::read_range`]).
    async fn read_all(&self, stream: &stream::Stream) -> Result<Vec<StreamMessage>, InboxError> {
        let state = &stream.cached_info().state;
        if state.messages == 0 {
            return Ok(Vec::new());
        }
        let range = Range::new(state.first_sequence, state.last_sequence);
        self.read_range(stream, range, Reading::Whole).await
    }

    /// The messages of a stream with sequences in `range`, oldest first, read through an
    /// ordered consumer of its own (many messages per round trip, not one request per
    /// message); with [`Reading::Headers`], without their bodies. It stops after the range's
    /// last sequence, or when none comes within the request timeout (the last ones were
    /// removed meanwhile).
    async fn read_range(
        &self,
        stream: &stream::Stream,
        range: Range,
        reading: Reading,
    ) -> Result<Vec<StreamMessage>, InboxError> {
        let mut messages = Vec::new();
        if range.first > range.last {
            return Ok(messages);
        }
        let start = DeliverPolicy::ByStartSequence {
            start_sequence: range.first,
        };
        let mut arriving = self.reader(stream, start, reading).await?;
        while let Ok(next) =
            tokio::time::timeout(self.config.request_timeout, arriving.next()).await
        {
            let Some(message) = next else { break };
            let message = message.map_err(|err| backend("read the stream", err))?;
            let Ok(info) = message.info() else { continue };
            let (sequence, time) = (info.stream_sequence, info.published);
            if sequence > range.last {
                break;
            }
            messages.push(StreamMessage {
                subject: message.subject.clone(),
                sequence,
                headers: message.headers.clone().unwrap_or_default(),
                payload: message.payload.clone(),
                time,
            });
            if sequence == range.last {
                break;
            }
        }
        Ok(messages)
    }

    /// The first message of `stream` from `start` on: its sequence and when it was published
    /// (ms since the Unix epoch); `None` when there is none.
    async fn first_from(
        &self,
        stream: &stream::Stream,
        start: DeliverPolicy,
    ) -> Result<Option<(u64, i64)>, InboxError> {
        let mut arriving = self.reader(stream, start, Reading::Headers).await?;
        match tokio::time::timeout(self.config.request_timeout, arriving.next()).await {
            Ok(Some(Ok(message))) => Ok(message
                .info()
                .ok()
                .map(|info| (info.stream_sequence, millis(info.published)))),
            Ok(Some(Err(err))) => Err(backend("read the stream", err)),
            Ok(None) | Err(_) => Ok(None),
        }
    }

    /// The sequence of the first message of `stream` published at or after `at` (ms since the
    /// Unix epoch); `None` when there is none.
    async fn first_since(
        &self,
        stream: &stream::Stream,
        at: i64,
    ) -> Result<Option<u64>, InboxError> {
        let nanos = i128::from(at).saturating_mul(1_000_000);
        let Ok(start_time) = time::OffsetDateTime::from_unix_timestamp_nanos(nanos) else {
            return Ok(None);
        };
        let first = self
            .first_from(stream, DeliverPolicy::ByStartTime { start_time })
            .await?;
        Ok(first.map(|(sequence, _)| sequence))
    }

    /// An ordered consumer's messages from `start` on.
    async fn reader(
        &self,
        stream: &stream::Stream,
        start: DeliverPolicy,
        reading: Reading,
    ) -> Result<pull::Ordered, InboxError> {
        let reader = during_elections("start reading the stream", || {
            stream.create_consumer(pull::OrderedConfig {
                deliver_policy: start,
                headers_only: reading == Reading::Headers,
                filter_subject: match &reading {
                    Reading::Subject(subject) => subject.clone(),
                    _ => String::new(),
                },
                ..Default::default()
            })
        })
        .await?;
        reader
            .messages()
            .await
            .map_err(|err| backend("start reading the stream", err))
    }

    /// The dead letters, by the sequence of the message they are a copy of.
    async fn dead_letters(&self) -> Result<HashMap<u64, Dead>, InboxError> {
        let dead = self.dead_stream().await?;
        let mut letters = HashMap::new();
        for message in self.read_all(&dead).await? {
            let header = |name: &str| {
                message
                    .headers
                    .get(name)
                    .map(|value| value.as_str().to_owned())
            };
            let Some(original) = header(SEQUENCE_HEADER).and_then(|it| it.parse::<u64>().ok())
            else {
                continue;
            };
            letters.insert(
                original,
                Dead {
                    sequence: message.sequence,
                    subject: message.subject.to_string(),
                    error: header(ERROR_HEADER),
                    attempts: header(ATTEMPTS_HEADER)
                        .and_then(|it| it.parse().ok())
                        .unwrap_or(0),
                    headers: message.headers.clone(),
                    payload: message.payload.clone(),
                },
            );
        }
        Ok(letters)
    }

    /// The sequence at and below which every message is acknowledged.
    async fn ack_floor(&self) -> Result<u64, InboxError> {
        let info = self
            .consumer
            .get_info()
            .await
            .map_err(|err| backend("read the consumer's state", err))?;
        Ok(info.ack_floor.stream_sequence)
    }

    fn entry(&self, message: &StreamMessage, floor: u64, dead: &HashMap<u64, Dead>) -> InboxEntry {
        let undecodable =
            message.subject.as_str() == format!("{}.{UNDECODABLE}", self.config.subject_prefix);
        let letter = dead.get(&message.sequence);
        let state = match letter {
            _ if undecodable => DeliveryState::Undecodable,
            Some(_) => DeliveryState::Dead,
            None if message.sequence > floor => DeliveryState::Pending,
            None => DeliveryState::Done,
        };
        let received_at = millis(message.time);
        InboxEntry::from(StoredDelivery {
            id: DeliveryId::from(message.sequence),
            key: DeliveryKey::of(&message.payload),
            body: message.payload.clone(),
            state,
            received_at,
            attempts: letter.map_or(0, |it| it.attempts),
            next_attempt_at: None,
            last_error: letter.and_then(|it| it.error.clone()),
        })
    }

    /// Publishes a dead letter's body to the stream again and removes the dead copy.
    async fn requeue(&self, original: u64, letter: &Dead) -> Result<(), InboxError> {
        let trigger = letter
            .subject
            .rsplit('.')
            .next()
            .unwrap_or("UNKNOWN")
            .to_owned();
        let mut headers = HeaderMap::new();
        let key = DeliveryKey::of(&letter.payload);
        // A new id: the duplicate window still remembers the original's.
        headers.insert(
            MSG_ID,
            format!("{}:retry:{}", key.to_hex(), letter.sequence).as_str(),
        );
        if let Some(signature) = letter.headers.get(SIGNATURE_HEADER) {
            headers.insert(SIGNATURE_HEADER, signature.as_str());
        }
        self.publish(
            format!("{}.{trigger}", self.config.subject_prefix),
            headers,
            letter.payload.clone(),
        )
        .await?;
        self.dead_stream()
            .await?
            .delete_message(letter.sequence)
            .await
            .map_err(|err| backend("remove a re-queued dead letter", err))?;
        tracing::info!(id = original, "dead letter re-queued");
        Ok(())
    }

    /// Takes what the consumer delivered: waits up to `claim_wait` for a first message, then
    /// takes what is there without waiting, up to `limit`.
    async fn take(&self, limit: usize) -> Result<Vec<jetstream::Message>, InboxError> {
        let mut guard = self.messages.lock().await;
        if guard.is_none() {
            let started = self
                .consumer
                .stream()
                .max_messages_per_batch(self.config.batch.max(1))
                .expires(self.config.pull_expires)
                .heartbeat(self.config.heartbeat)
                .messages()
                .await
                .map_err(|err| backend("start pulling messages", err))?;
            *guard = Some(started);
        }
        let messages = guard.as_mut().expect("started above");
        let mut taken = Vec::new();
        let Ok(mut next) = tokio::time::timeout(self.config.claim_wait, messages.next()).await
        else {
            return Ok(taken);
        };
        loop {
            match next {
                Some(Ok(message)) => taken.push(message),
                Some(Err(err)) => {
                    // A missed heartbeat, a lost connection: pull anew at the next claim.
                    *guard = None;
                    if taken.is_empty() {
                        return Err(backend("pull messages", err));
                    }
                    tracing::warn!(error = %err, "pulling messages failed; pulling anew");
                    return Ok(taken);
                }
                None => {
                    *guard = None;
                    return Ok(taken);
                }
            }
            if taken.len() >= limit {
                return Ok(taken);
            }
            let Some(more) = messages.next().now_or_never() else {
                return Ok(taken);
            };
            next = more;
        }
    }

    async fn settle(&self, message: &jetstream::Message, kind: AckKind) -> Result<(), InboxError> {
        message
            .ack_with(kind)
            .await
            .map_err(|err| backend("acknowledge a message", err))
    }
}

/// How many times a stream or consumer request is tried while a cluster may be electing.
const STREAM_ATTEMPTS: u32 = 4;

/// Runs `request` until it succeeds, up to [`STREAM_ATTEMPTS`] times half a second apart: a
/// cluster electing a leader (a node just restarted) answers nothing for a moment. The last
/// failure is the store's error, saying it could not `what`.
async fn during_elections<T, E, F>(
    what: &str,
    mut request: impl FnMut() -> F,
) -> Result<T, InboxError>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut attempt = 1;
    loop {
        match request().await {
            Ok(done) => return Ok(done),
            Err(err) if attempt < STREAM_ATTEMPTS => {
                tracing::debug!(attempt, error = %err, "could not {what}; asking again");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => return Err(backend(what, err)),
        }
    }
}

async fn ensure_stream(
    js: &Context,
    config: &NatsConfig,
    name: String,
    subjects: String,
) -> Result<stream::Stream, InboxError> {
    ensure_stream_as(
        js,
        stream::Config {
            name,
            subjects: vec![subjects],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            num_replicas: config.replicas.max(1),
            max_age: config.max_age,
            duplicate_window: config.duplicate_window.min(config.max_age),
            ..Default::default()
        },
    )
    .await
}

/// Creates the stream `wanted` describes, or opens it when it exists (warning when its
/// settings differ).
async fn ensure_stream_as(
    js: &Context,
    wanted: stream::Config,
) -> Result<stream::Stream, InboxError> {
    let name = wanted.name.clone();
    let mut stream = during_elections(&format!("create or open the stream {name}"), || {
        js.get_or_create_stream(wanted.clone())
    })
    .await?;
    let info = stream
        .info()
        .await
        .map_err(|err| backend(&format!("read the stream {name}"), err))?;
    let have = &info.config;
    if have.subjects != wanted.subjects
        || have.num_replicas != wanted.num_replicas
        || have.max_age != wanted.max_age
        || have.duplicate_window != wanted.duplicate_window
    {
        tracing::warn!(
            stream = %name,
            subjects = ?have.subjects,
            replicas = have.num_replicas,
            max_age_s = have.max_age.as_secs(),
            duplicate_window_s = have.duplicate_window.as_secs(),
            "the stream exists with other settings than configured; it is used as it is"
        );
    }
    Ok(stream)
}

/// A subject token for a trigger: letters, digits, `_` and `-` kept, anything else `_`.
fn subject_token(trigger: &str) -> String {
    let token: String = trigger
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if token.is_empty() {
        "UNKNOWN".to_owned()
    } else {
        token
    }
}

/// An attempt from its record in the attempts stream; `None` for one that does not read.
fn attempt_from_record(payload: &[u8]) -> Option<Attempt> {
    let record: serde_json::Value = serde_json::from_slice(payload).ok()?;
    Some(Attempt {
        number: u32::try_from(record["number"].as_u64()?).ok()?,
        finished_at: record["finishedAt"].as_i64()?,
        outcome: Outcome::from_parts(
            record["outcome"].as_str()?,
            record["retryAt"].as_i64(),
            record["error"].as_str().map(str::to_owned),
        )?,
    })
}

/// A moment in ms since the Unix epoch.
fn millis(time: time::OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// A header value on one line: NATS headers cannot hold line breaks.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

impl Intake for NatsStore {
    fn store(&self, delivery: NewDelivery, _now: i64) -> BoxFuture<'_, Result<Stored, InboxError>> {
        Box::pin(async move {
            if !matches!(
                delivery.state,
                DeliveryState::Pending | DeliveryState::Undecodable
            ) {
                return Err(InboxError::backend(format!(
                    "the NATS stream takes pending deliveries only, not a {} one: import only \
                     the pending lines of an export (jq -c 'select(.state == \"pending\")')",
                    delivery.state.as_str()
                )));
            }
            let mut headers = HeaderMap::new();
            headers.insert(MSG_ID, delivery.key.to_hex().as_str());
            if let Some(signature) = &delivery.signature {
                headers.insert(SIGNATURE_HEADER, signature.to_hex().as_str());
            }
            let subject = self.subject(&delivery);
            let ack = self.publish(subject, headers, delivery.body).await?;
            let id = DeliveryId::from(ack.sequence);
            Ok(if ack.duplicate {
                Stored::Duplicate(id)
            } else {
                Stored::New(id)
            })
        })
    }
}

impl WorkQueue for NatsStore {
    fn claim(
        &self,
        _now: i64,
        limit: usize,
        _lease_until: i64,
    ) -> BoxFuture<'_, Result<Claim, InboxError>> {
        Box::pin(async move {
            let undecodable = format!("{}.{UNDECODABLE}", self.config.subject_prefix);
            let mut claim = Claim::default();
            for message in self.take(limit.max(1)).await? {
                let info = match message.info() {
                    Ok(info) => (info.stream_sequence, info.delivered),
                    Err(err) => {
                        tracing::warn!(error = %err, "a message without JetStream metadata; skipped");
                        continue;
                    }
                };
                let (sequence, delivered) = info;
                if message.subject.as_str() == undecodable {
                    // Kept in the stream, never handled.
                    self.settle(&message, AckKind::Ack).await?;
                    continue;
                }
                // The lease starts now: the message may have waited in the pull's buffer.
                self.settle(&message, AckKind::Progress).await?;
                claim.due.push(Claimed {
                    id: DeliveryId::from(sequence),
                    key: DeliveryKey::of(&message.payload),
                    body: message.payload.clone(),
                    attempts: u32::try_from(delivered.saturating_sub(1)).unwrap_or(0),
                });
                self.leased
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(sequence, message);
            }
            Ok(claim)
        })
    }

    fn complete(
        &self,
        id: DeliveryId,
        attempt: u32,
        outcome: Outcome,
        now: i64,
    ) -> BoxFuture<'_, Result<(), InboxError>> {
        Box::pin(async move {
            let Some(sequence) = id.as_u64() else {
                return Ok(());
            };
            let message = {
                let mut leased = self.leased.lock().unwrap_or_else(PoisonError::into_inner);
                // Only the outcome of the delivery this process holds now: an older one's
                // lease ran out and the message was delivered again.
                let current = leased
                    .get(&sequence)
                    .and_then(|it| it.info().ok())
                    .map(|it| it.delivered);
                if current != Some(i64::from(attempt)) {
                    return Ok(());
                }
                leased.remove(&sequence)
            };
            let Some(message) = message else {
                return Ok(());
            };
            let attempt = Attempt {
                number: attempt,
                finished_at: now,
                outcome,
            };
            // The record goes out beside the outcome, not after it.
            let (settled, recorded) = tokio::join!(
                self.settle_outcome(&message, sequence, &attempt),
                self.record_attempt(sequence, &attempt)
            );
            if let Err(err) = recorded {
                tracing::warn!(
                    id = sequence,
                    error = %crate::error::Chain(&err),
                    "NATS: a handler attempt was not recorded; the delivery's history lacks it"
                );
            }
            settled
        })
    }
}

impl NatsStore {
    /// Publishes a finished attempt to the attempts stream, on the delivery's own subject.
    /// Its message id is the delivery's and the attempt's number, so a record sent twice is
    /// kept once.
    async fn record_attempt(&self, sequence: u64, attempt: &Attempt) -> Result<(), InboxError> {
        let record = serde_json::json!({
            "number": attempt.number,
            "finishedAt": attempt.finished_at,
            "outcome": attempt.outcome.as_str(),
            "retryAt": attempt.outcome.retry_at(),
            "error": attempt.error(),
        });
        let mut headers = HeaderMap::new();
        headers.insert(
            MSG_ID,
            format!("attempt:{sequence}:{}", attempt.number).as_str(),
        );
        self.publish(
            self.config.attempts_subject(sequence),
            headers,
            record.to_string().into(),
        )
        .await?;
        Ok(())
    }

    /// The attempts recorded for the message at `sequence`, oldest first: the records on its
    /// subject up to the last one there when asked.
    async fn read_attempts(&self, sequence: u64) -> Result<Vec<Attempt>, InboxError> {
        self.connected("list a delivery's attempts")?;
        let name = self.config.attempts_stream();
        let stream = self
            .js
            .get_stream(&name)
            .await
            .map_err(|err| backend(&format!("open the stream {name}"), err))?;
        let subject = self.config.attempts_subject(sequence);
        let last = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => message.sequence,
            Err(err) if err.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                return Ok(Vec::new());
            }
            Err(err) => return Err(backend("read a delivery's attempts", err)),
        };
        let records = self
            .read_range(&stream, Range::new(1, last), Reading::Subject(subject))
            .await?;
        let attempts = records
            .iter()
            .filter_map(|record| attempt_from_record(&record.payload))
            .collect();
        Ok(attempts)
    }

    /// Applies an outcome to a claimed message: ack, nak with the delay, or the dead letter
    /// stored and the original terminated.
    async fn settle_outcome(
        &self,
        message: &jetstream::Message,
        sequence: u64,
        attempt: &Attempt,
    ) -> Result<(), InboxError> {
        match &attempt.outcome {
            Outcome::Done => self.settle(message, AckKind::Ack).await,
            Outcome::Retry { at, .. } => {
                let delay = u64::try_from(at.saturating_sub(attempt.finished_at)).unwrap_or(0);
                self.settle(message, AckKind::Nak(Some(Duration::from_millis(delay))))
                    .await
            }
            Outcome::Dead { error } => {
                let trigger = message
                    .subject
                    .as_str()
                    .rsplit('.')
                    .next()
                    .unwrap_or("UNKNOWN")
                    .to_owned();
                let mut headers = HeaderMap::new();
                let key = DeliveryKey::of(&message.payload);
                // Unique per stream message: a second dead-lettering of the same message
                // (after a crash before the term) is a duplicate.
                headers.insert(MSG_ID, format!("{}:{sequence}", key.to_hex()).as_str());
                if let Some(signature) = message
                    .headers
                    .as_ref()
                    .and_then(|it| it.get(SIGNATURE_HEADER))
                {
                    headers.insert(SIGNATURE_HEADER, signature.as_str());
                }
                headers.insert(ERROR_HEADER, one_line(error).as_str());
                headers.insert(ATTEMPTS_HEADER, attempt.number.to_string().as_str());
                headers.insert(SEQUENCE_HEADER, sequence.to_string().as_str());
                // Not terminated unless the dead copy is stored: the message then runs
                // again once its lease ends, and is dead-lettered again.
                self.publish(
                    format!("{}.{trigger}", self.config.dead_prefix()),
                    headers,
                    message.payload.clone(),
                )
                .await?;
                self.settle(message, AckKind::Term).await
            }
        }
    }
}

impl NatsStore {
    /// The run records in the runs stream, oldest start first; a record that does not read
    /// is skipped.
    async fn read_runs(&self) -> Result<Vec<RunRecord>, InboxError> {
        self.connected("list when receivers ran")?;
        let name = self.config.runs_stream();
        let stream = self
            .js
            .get_stream(&name)
            .await
            .map_err(|err| backend(&format!("open the stream {name}"), err))?;
        let mut runs: Vec<RunRecord> = self
            .read_all(&stream)
            .await?
            .iter()
            .filter_map(|message| {
                let record: serde_json::Value = serde_json::from_slice(&message.payload).ok()?;
                Some(RunRecord {
                    id: record["id"].as_str()?.to_owned(),
                    started_at: record["startedAt"].as_i64()?,
                    last_seen_at: record["lastSeenAt"].as_i64()?,
                    stopped_at: record["stoppedAt"].as_i64(),
                })
            })
            .collect();
        runs.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        Ok(runs)
    }
}

impl InboxAdmin for NatsStore {
    fn runs(&self) -> BoxFuture<'_, Result<Vec<RunRecord>, InboxError>> {
        Box::pin(self.read_runs())
    }

    /// The records on the delivery's subject of the attempts stream. A dead letter is shown
    /// by the sequence of the message it is a copy of, so its attempts are the original's.
    fn attempts<'a>(
        &'a self,
        id: &'a DeliveryId,
    ) -> BoxFuture<'a, Result<Vec<Attempt>, InboxError>> {
        Box::pin(async move {
            let Some(sequence) = id.as_u64() else {
                return Ok(Vec::new());
            };
            self.read_attempts(sequence).await
        })
    }

    fn list(&self, filter: StateFilter) -> BoxFuture<'_, Result<Vec<InboxEntry>, InboxError>> {
        Box::pin(async move {
            let floor = self.ack_floor().await?;
            let dead = self.dead_letters().await?;
            let main = self.main_stream().await?;
            let entries = self
                .read_all(&main)
                .await?
                .iter()
                .map(|message| self.entry(message, floor, &dead))
                .filter(|entry| filter.admits(entry.state))
                .collect();
            Ok(entries)
        })
    }

    /// Reads newest first in windows of sequences: the pending deliveries from above the
    /// consumer's ack floor, the done ones from at and below it, the dead ones by the
    /// originals of the dead-letter stream's copies; a time range narrows the sequences by
    /// when the messages were published. Only a trigger, entity or text filter reads more
    /// than the page, as far as [`PageQuery::max_scanned`].
    fn page<'a>(&'a self, query: &'a PageQuery) -> BoxFuture<'a, Result<Page, InboxError>> {
        Box::pin(async move {
            let main = self.main_stream().await?;
            let state = main.cached_info().state.clone();
            if state.messages == 0 {
                return Ok(Page::default());
            }
            let floor = self.ack_floor().await?;
            let dead = self.dead_letters().await?;
            let mut range = Range::new(state.first_sequence, state.last_sequence);
            match query.state {
                StateFilter::Only(DeliveryState::Pending) => {
                    range.first = range.first.max(floor.saturating_add(1));
                }
                StateFilter::Only(DeliveryState::Done) => range.last = range.last.min(floor),
                _ => {}
            }
            if let Some(from) = query.received_from {
                match self.first_since(&main, from).await? {
                    Some(sequence) => range.first = range.first.max(sequence),
                    None => return Ok(Page::default()),
                }
            }
            if let Some(before) = query.received_before
                && let Some(sequence) = self.first_since(&main, before).await?
            {
                range.last = range.last.min(sequence.saturating_sub(1));
            }
            let dead_only = matches!(query.state, StateFilter::Only(DeliveryState::Dead));
            let mut originals: Vec<u64> = dead
                .keys()
                .copied()
                .filter(|it| range.contains(*it))
                .collect();
            originals.sort_unstable();
            let (main, dead, originals) = (&main, &dead, &originals);
            let chunk = u64::try_from(CHUNK).unwrap_or(u64::MAX);
            scan_chunks(query, move |below, wanted| async move {
                let mut top = below
                    .and_then(|it| u64::try_from(it).ok())
                    .map_or(range.last, |it| it.saturating_sub(1).min(range.last));
                let mut rows = Vec::new();
                if dead_only {
                    let newer = originals.partition_point(|it| *it <= top);
                    for sequence in originals[..newer].iter().rev().take(wanted) {
                        match main.get_raw_message(*sequence).await {
                            Ok(message) => rows.push(self.entry(&message, floor, dead)),
                            Err(err)
                                if err.kind() == stream::RawMessageErrorKind::NoMessageFound => {}
                            Err(err) => return Err(backend("read a message", err)),
                        }
                    }
                    return Ok(rows);
                }
                while rows.len() < wanted && top >= range.first && top > 0 {
                    let window = Range::new(top.saturating_sub(chunk - 1).max(range.first), top);
                    let messages = self.read_range(main, window, Reading::Whole).await?;
                    rows.extend(
                        messages
                            .iter()
                            .rev()
                            .map(|message| self.entry(message, floor, dead))
                            .filter(|entry| query.state.admits(entry.state)),
                    );
                    top = window.first.saturating_sub(1);
                }
                rows.truncate(wanted);
                Ok(rows)
            })
            .await
        })
    }

    /// The newest from the stream's state, the oldest pending from the first message above
    /// the consumer's ack floor, and the last hour's arrivals from the publish times of its
    /// messages, read without their bodies.
    fn activity(&self, now: i64) -> BoxFuture<'_, Result<Activity, InboxError>> {
        Box::pin(async move {
            let main = self.main_stream().await?;
            let state = main.cached_info().state.clone();
            if state.messages == 0 {
                return Ok(Activity::default());
            }
            let minutes = i64::try_from(ACTIVITY_MINUTES).unwrap_or(i64::MAX);
            let hour_ago = now.saturating_sub(minutes.saturating_mul(60_000));
            let recent = match self.first_since(&main, hour_ago).await? {
                Some(first) => {
                    let range = Range::new(first, state.last_sequence);
                    self.read_range(&main, range, Reading::Headers).await?
                }
                None => Vec::new(),
            };
            let arrivals = recent
                .iter()
                .map(|message| (millis(message.time), DeliveryState::Done));
            let mut activity = Activity::of(now, arrivals);
            activity.last_received_at = Some(millis(state.last_timestamp));
            let floor = self.ack_floor().await?;
            activity.oldest_pending_at = if floor < state.last_sequence {
                let start = DeliverPolicy::ByStartSequence {
                    start_sequence: floor.saturating_add(1).max(state.first_sequence),
                };
                self.first_from(&main, start).await?.map(|(_, at)| at)
            } else {
                None
            };
            Ok(activity)
        })
    }

    fn get<'a>(
        &'a self,
        id: &'a DeliveryId,
    ) -> BoxFuture<'a, Result<Option<InboxEntry>, InboxError>> {
        Box::pin(async move {
            let Some(sequence) = id.as_u64() else {
                return Ok(None);
            };
            let main = self.main_stream().await?;
            let message = match main.get_raw_message(sequence).await {
                Ok(message) => message,
                Err(err) if err.kind() == stream::RawMessageErrorKind::NoMessageFound => {
                    return Ok(None);
                }
                Err(err) => return Err(backend("read a message", err)),
            };
            let floor = self.ack_floor().await?;
            let dead = self.dead_letters().await?;
            Ok(Some(self.entry(&message, floor, &dead)))
        })
    }

    fn retry<'a>(
        &'a self,
        id: &'a DeliveryId,
        _now: i64,
    ) -> BoxFuture<'a, Result<bool, InboxError>> {
        Box::pin(async move {
            let Some(sequence) = id.as_u64() else {
                return Ok(false);
            };
            let dead = self.dead_letters().await?;
            let Some(letter) = dead.get(&sequence) else {
                return Ok(false);
            };
            self.requeue(sequence, letter).await?;
            Ok(true)
        })
    }

    fn retry_dead(&self, _now: i64) -> BoxFuture<'_, Result<usize, InboxError>> {
        Box::pin(async move {
            let dead = self.dead_letters().await?;
            let mut letters: Vec<(&u64, &Dead)> = dead.iter().collect();
            letters.sort_by_key(|(original, _)| **original);
            for (original, letter) in &letters {
                self.requeue(**original, letter).await?;
            }
            Ok(letters.len())
        })
    }

    fn counts(&self) -> BoxFuture<'_, Result<StateCounts, InboxError>> {
        Box::pin(async move {
            let main = self.main_stream().await?.cached_info().clone();
            let dead = self.dead_stream().await?.cached_info().clone();
            let consumer = self
                .consumer
                .get_info()
                .await
                .map_err(|err| backend("read the consumer's state", err))?;
            let ack_pending = u64::try_from(consumer.num_ack_pending).unwrap_or(u64::MAX);
            let pending = consumer.num_pending.saturating_add(ack_pending);
            let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
            self.gauges.stream_messages.set(gauge(main.state.messages));
            self.gauges
                .consumer_pending
                .set(gauge(consumer.num_pending));
            self.gauges.consumer_ack_pending.set(gauge(ack_pending));
            self.gauges.redelivered.set(gauge(
                u64::try_from(consumer.num_redelivered).unwrap_or(u64::MAX),
            ));
            self.gauges.dead_letters.set(gauge(dead.state.messages));
            Ok(StateCounts {
                pending,
                done: main
                    .state
                    .messages
                    .saturating_sub(pending)
                    .saturating_sub(dead.state.messages),
                dead: dead.state.messages,
                undecodable: 0,
            })
        })
    }
}

impl Store for NatsStore {
    /// Publishes the run's record to its own subject of the runs stream, which keeps the
    /// latest record of each run.
    fn record_run<'a>(&'a self, run: &'a RunRecord) -> BoxFuture<'a, Result<(), InboxError>> {
        Box::pin(async move {
            self.connected("record the receiver's run")?;
            let record = serde_json::json!({
                "id": run.id,
                "startedAt": run.started_at,
                "lastSeenAt": run.last_seen_at,
                "stoppedAt": run.stopped_at,
            });
            let subject = format!("{}.{}", self.config.runs_prefix(), subject_token(&run.id));
            let publish = async {
                self.js
                    .publish(subject, record.to_string().into())
                    .await?
                    .await
            };
            match tokio::time::timeout(self.config.request_timeout, publish).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(err)) => Err(backend("record the receiver's run", err)),
                Err(_) => Err(backend(
                    "record the receiver's run",
                    "no acknowledgement within the request timeout",
                )),
            }
        })
    }

    fn register_metrics(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("preservica_webhook_nats");
        let gauges = [
            (
                "stream_messages",
                "Messages in the JetStream stream (every state, within its max age)",
                &self.gauges.stream_messages,
            ),
            (
                "consumer_pending",
                "Stream messages not yet delivered to a worker",
                &self.gauges.consumer_pending,
            ),
            (
                "consumer_ack_pending",
                "Messages delivered to a worker and not yet acknowledged",
                &self.gauges.consumer_ack_pending,
            ),
            (
                "consumer_redelivered",
                "Unacknowledged messages delivered more than once",
                &self.gauges.redelivered,
            ),
            (
                "dead_letters",
                "Messages in the dead-letter stream",
                &self.gauges.dead_letters,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // The workers have stopped: what they claimed and did not complete goes back to
            // the consumer now, for another worker, rather than at the end of its lease.
            let left: Vec<jetstream::Message> = self
                .leased
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .drain()
                .map(|(_, message)| message)
                .collect();
            for message in &left {
                if let Err(err) = message.ack_with(AckKind::Nak(None)).await {
                    tracing::debug!(error = %err, "NATS: an unfinished message could not be handed back");
                }
            }
            // So do the messages pulled and not yet claimed.
            if let Some(mut pulled) = self.messages.lock().await.take() {
                while let Some(Some(Ok(message))) = pulled.next().now_or_never() {
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                }
            }
            if let Err(err) = self.js.client().flush().await {
                tracing::warn!(error = %err, "NATS: pending acknowledgements could not be flushed");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_become_subject_tokens() {
        let check = |trigger: &str, expected: &str| assert_eq!(subject_token(trigger), expected);
        check("MOVED", "MOVED");
        check("FULL_TEXT_INDEXED", "FULL_TEXT_INDEXED");
        check("new.kind *>", "new_kind___");
        check("", "UNKNOWN");
    }

    #[test]
    fn header_values_stay_on_one_line() {
        assert_eq!(
            one_line("exit 3\nstderr: boom\r\n"),
            "exit 3 stderr: boom  "
        );
    }

    #[test]
    fn the_defaults_keep_the_duplicate_window_within_the_age_limit() {
        let config = NatsConfig::new(vec!["nats://127.0.0.1:4222".into()]);
        assert!(config.duplicate_window <= config.max_age);
        assert_eq!(config.dead_stream(), "PRESERVICA_WEBHOOK_DEAD");
        assert_eq!(config.dead_prefix(), "preservica.webhook-dead");
        let auth = NatsAuth::UserPassword("ops".into(), "hunter2".into());
        assert_eq!(format!("{auth:?}"), r#"UserPassword("ops", ***)"#);
    }
}
