//! The NATS JetStream store against a real `nats-server -js` (started by each test on a free
//! loopback port): intake with message-id deduplication and the signature kept, the workers'
//! ack / nak / dead letter, leases that outlive a vanished worker, an outage, a long idle pull,
//! and a three-node cluster with three replicas.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use preservica_webhook_core::{DeliveryKey, sign, verify};
use preservica_webhook_server::store::nats::{NatsAuth, NatsConfig};
use preservica_webhook_server::store::{
    Attempt, DeliveryId, NewDelivery, Outcome, Page, PageQuery, Store, Stored, now_millis,
    open_store,
};
use preservica_webhook_server::{DeliveryState, InboxConfig, RunRecord, ServerConfig, StateFilter};
use preservica_webhook_testkit::nats::{Nats, NatsCluster};

use common::*;

/// Short leases, pulls and heartbeats, so that redelivery and idle pulls take seconds.
fn fast(servers: Vec<String>) -> NatsConfig {
    let mut config = NatsConfig::new(servers);
    config.ack_wait = Some(Duration::from_secs(2));
    config.claim_wait = Duration::from_millis(200);
    config.pull_expires = Duration::from_secs(1);
    config.heartbeat = Duration::from_millis(400);
    config.request_timeout = Duration::from_secs(2);
    config
}

async fn open(config: &NatsConfig) -> Arc<dyn Store> {
    open_store(InboxConfig::Nats(Box::new(config.clone())))
        .await
        .unwrap()
}

fn delivery(body: &[u8]) -> NewDelivery {
    let mut delivery = NewDelivery::new(
        DeliveryKey::of(body),
        Bytes::copy_from_slice(body),
        DeliveryState::Pending,
    );
    delivery.signature = Some(sign(&secret(), body));
    delivery
}

/// The JetStream context a consumer of the stream would have.
async fn jetstream(url: &str) -> jetstream::Context {
    jetstream::new(async_nats::connect(url).await.unwrap())
}

/// Waits until `ready` (failing after 15 s).
async fn poll_async<F: std::future::Future<Output = bool>>(
    what: &str,
    mut ready: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !ready().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Claims until `count` deliveries came (failing after `within`).
async fn claim_n(
    store: &dyn Store,
    count: usize,
    within: Duration,
) -> Vec<preservica_webhook_server::store::Claimed> {
    let deadline = tokio::time::Instant::now() + within;
    let mut claimed = Vec::new();
    while claimed.len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {count} deliveries claimed within {within:?}",
            claimed.len()
        );
        if let Ok(claim) = store.claim(0, count - claimed.len(), 0).await {
            claimed.extend(claim.due);
        }
    }
    claimed
}

#[tokio::test]
async fn publishes_the_raw_body_once_with_its_key_and_signature() {
    let nats = Nats::start().unwrap();
    let config = fast(vec![nats.url()]);
    let store = open(&config).await;
    let body = body(1);

    let first = store.store(delivery(&body), 0).await.unwrap();
    let again = store.store(delivery(&body), 0).await.unwrap();
    let Stored::New(id) = first else {
        panic!("first store is new: {first:?}")
    };
    assert_eq!(again, Stored::Duplicate(id.clone()));

    let js = jetstream(&nats.url()).await;
    let stream = js.get_stream("PRESERVICA_WEBHOOK").await.unwrap();
    let info = stream.get_info().await.unwrap();
    assert_eq!(info.state.messages, 1);
    assert_eq!(info.config.max_age, Duration::from_secs(30 * 24 * 3600));
    assert_eq!(info.config.storage, jetstream::stream::StorageType::File);
    assert!(info.config.duplicate_window <= info.config.max_age);
    let message = stream.get_raw_message(id.as_u64().unwrap()).await.unwrap();
    assert_eq!(message.subject.as_str(), "preservica.webhook.MOVED");
    assert_eq!(&message.payload[..], &body[..]);
    let header = |name: &str| message.headers.get(name).unwrap().as_str().to_owned();
    assert_eq!(header("Nats-Msg-Id"), DeliveryKey::of(&body).to_hex());
    // Any consumer can verify the message again with the shared secret.
    let signature = header("Preservica-Signature");
    verify(&[secret()], &message.payload, Some(&signature)).unwrap();
}

#[tokio::test]
async fn handled_deliveries_are_acked_retried_after_their_delay_or_dead_lettered() {
    let nats = Nats::start().unwrap();
    let config = fast(vec![nats.url()]);
    let store = open(&config).await;
    for n in 0..3 {
        store.store(delivery(&body(n)), 0).await.unwrap();
    }
    let claimed = claim_n(store.as_ref(), 3, Duration::from_secs(10)).await;
    assert!(claimed.iter().all(|it| it.attempts == 0));
    let [done, retried, dead] = <[_; 3]>::try_from(claimed).unwrap();
    store
        .complete(done.id.clone(), 1, Outcome::Done, 0)
        .await
        .unwrap();
    let retry = Outcome::Retry {
        at: 300,
        error: "try later".into(),
    };
    store
        .complete(retried.id.clone(), 1, retry, 0)
        .await
        .unwrap();
    let failed = Outcome::Dead {
        error: "exit status 3\nsecond line".into(),
    };
    store.complete(dead.id.clone(), 1, failed, 0).await.unwrap();

    // The retried one comes back, as its second attempt; nothing else does.
    let again = claim_n(store.as_ref(), 1, Duration::from_secs(10)).await;
    assert_eq!(again[0].id, retried.id);
    assert_eq!(again[0].attempts, 1);
    store
        .complete(retried.id.clone(), 2, Outcome::Done, 0)
        .await
        .unwrap();
    let nothing = store.claim(0, 10, 0).await.unwrap();
    assert!(nothing.due.is_empty(), "{:?}", nothing.due);

    // The dead one is in the dead-letter stream, signature and error kept.
    let js = jetstream(&nats.url()).await;
    let dead_stream = js.get_stream("PRESERVICA_WEBHOOK_DEAD").await.unwrap();
    assert_eq!(dead_stream.get_info().await.unwrap().state.messages, 1);
    let letter = dead_stream.get_raw_message(1).await.unwrap();
    assert_eq!(letter.payload, dead.body);
    assert_eq!(letter.subject.as_str(), "preservica.webhook-dead.MOVED");
    let signature = letter.headers.get("Preservica-Signature").unwrap().as_str();
    verify(&[secret()], &letter.payload, Some(signature)).unwrap();

    let entries = store.list(StateFilter::All).await.unwrap();
    let states: Vec<(String, DeliveryState)> = entries
        .iter()
        .map(|it| (it.id.to_string(), it.state))
        .collect();
    assert_eq!(
        states,
        [
            (done.id.to_string(), DeliveryState::Done),
            (retried.id.to_string(), DeliveryState::Done),
            (dead.id.to_string(), DeliveryState::Dead),
        ]
    );
    let shown = store.get(&dead.id).await.unwrap().unwrap();
    assert_eq!(
        shown.last_error.as_deref(),
        Some("exit status 3 second line")
    );
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.pending, counts.dead), (0, 1));

    // Re-queued, it runs again from its first attempt and the dead copy is gone.
    assert_eq!(store.retry_dead(0).await.unwrap(), 1);
    assert_eq!(dead_stream.get_info().await.unwrap().state.messages, 0);
    let requeued = claim_n(store.as_ref(), 1, Duration::from_secs(10)).await;
    assert_eq!(requeued[0].body, dead.body);
    assert_eq!(requeued[0].attempts, 0);
    assert_eq!(store.retry_dead(0).await.unwrap(), 0);
}

#[tokio::test]
async fn a_vanished_workers_delivery_is_handed_out_again_after_its_lease() {
    let nats = Nats::start().unwrap();
    let config = fast(vec![nats.url()]);
    let receiver = open(&config).await;
    receiver.store(delivery(&body(7)), 0).await.unwrap();

    let crashed = open(&config).await;
    let first = claim_n(crashed.as_ref(), 1, Duration::from_secs(10)).await;
    drop(crashed);

    let survivor = open(&config).await;
    let again = claim_n(survivor.as_ref(), 1, Duration::from_secs(15)).await;
    assert_eq!(again[0].id, first[0].id);
    assert_eq!(again[0].attempts, 1, "the lost attempt counts");
    survivor
        .complete(again[0].id.clone(), 2, Outcome::Done, 0)
        .await
        .unwrap();
    // An outcome from the lost attempt changes nothing.
    survivor
        .complete(first[0].id.clone(), 1, Outcome::Done, 0)
        .await
        .unwrap();
}

#[tokio::test]
async fn workers_give_a_consumer_an_inbox_command_created_their_lease() {
    let nats = Nats::start().unwrap();
    let workers = fast(vec![nats.url()]);
    let mut command = workers.clone();
    command.ack_wait = None;
    let lease = || async {
        let js = jetstream(&nats.url()).await;
        let stream = js.get_stream(&workers.stream).await.unwrap();
        let mut consumer: jetstream::consumer::PullConsumer =
            stream.get_consumer(&workers.consumer).await.unwrap();
        consumer.info().await.unwrap().config.ack_wait
    };
    // `inbox list` before any worker ran: the consumer gets the default lease.
    let receiver = open(&command).await;
    assert_eq!(lease().await, Duration::from_secs(120));
    receiver.store(delivery(&body(8)), 0).await.unwrap();

    // Workers start: their lease from now on, kept by a later command.
    let crashed = open(&workers).await;
    assert_eq!(lease().await, Duration::from_secs(2));
    drop(open(&command).await);
    assert_eq!(lease().await, Duration::from_secs(2));

    // A worker's vanished claim comes back within seconds, not two minutes.
    let first = claim_n(crashed.as_ref(), 1, Duration::from_secs(10)).await;
    drop(crashed);
    let survivor = open(&workers).await;
    let again = claim_n(survivor.as_ref(), 1, Duration::from_secs(15)).await;
    assert_eq!(again[0].id, first[0].id);
}

#[tokio::test]
async fn an_outage_fails_the_store_and_the_store_recovers_without_reopening() {
    let mut nats = Nats::start().unwrap();
    let config = fast(vec![nats.url()]);
    let store = open(&config).await;
    store.store(delivery(&body(1)), 0).await.unwrap();

    nats.stop().unwrap();
    let refused = store.store(delivery(&body(2)), 0).await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(store.claim(0, 1, 0).await.is_ok_and(|it| it.due.len() <= 1));

    nats.start_again().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(stored) = store.store(delivery(&body(2)), 0).await {
            assert!(matches!(stored, Stored::New(_)), "{stored:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no recovery");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Both are there, and the workers get them.
    let claimed = claim_n(store.as_ref(), 2, Duration::from_secs(15)).await;
    let mut bodies: Vec<Bytes> = claimed.into_iter().map(|it| it.body).collect();
    bodies.sort();
    let mut expected = vec![Bytes::from(body(1)), Bytes::from(body(2))];
    expected.sort();
    assert_eq!(bodies, expected);
}

#[tokio::test]
async fn a_delivery_after_a_long_idle_pull_is_still_handed_out() {
    let nats = Nats::start().unwrap();
    let config = fast(vec![nats.url()]);
    let store = open(&config).await;
    // Several pull requests expire (1 s each, heartbeats every 0.4 s) with nothing to deliver.
    let idle = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < idle {
        if let Ok(claim) = store.claim(0, 4, 0).await {
            assert!(claim.due.is_empty());
        }
    }
    store.store(delivery(&body(9)), 0).await.unwrap();
    let claimed = claim_n(store.as_ref(), 1, Duration::from_secs(5)).await;
    assert_eq!(&claimed[0].body[..], &body(9)[..]);
}

#[tokio::test]
async fn a_receiver_publishes_and_its_workers_handle_with_stream_metrics() {
    let nats = Nats::start().unwrap();
    let mut config = ServerConfig::new(vec![secret()]);
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.webhook.inbox = InboxConfig::Nats(Box::new(fast(vec![nats.url()])));
    let (handler, mut calls) = Scripted::ok();
    let server = Running::start(config, handler).await;
    let client = client();
    assert_eq!(
        deliver(&client, &server.url("/"), &secret(), BODY).await,
        200
    );
    assert_eq!(
        deliver(&client, &server.url("/"), &secret(), BODY).await,
        200
    );
    let call = next_call(&mut calls).await;
    assert_eq!(call.body, BODY);
    assert!(call.ok);

    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "preservica_webhook_nats_stream_messages 1",
        "preservica_webhook_nats_consumer_pending",
        "preservica_webhook_nats_consumer_redelivered",
        "preservica_webhook_nats_dead_letters 0",
        "preservica_webhook_deliveries_duplicate_total 1",
    ] {
        assert!(metrics.contains(name), "{name} in {metrics}");
    }
    // Handled once: the duplicate is not handled again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(calls.try_recv().is_err());
    server.stop().await;
}

#[tokio::test]
async fn a_three_replica_stream_survives_a_node_crash() {
    let mut cluster = NatsCluster::start().unwrap();
    let urls: Vec<String> = cluster.urls().split(',').map(str::to_owned).collect();
    let mut config = fast(urls);
    config.replicas = 3;
    config.request_timeout = Duration::from_secs(3);
    // The cluster may take a moment to place a new replicated stream.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let store = loop {
        match open_store(InboxConfig::Nats(Box::new(config.clone()))).await {
            Ok(store) => break store,
            Err(err) => {
                assert!(tokio::time::Instant::now() < deadline, "{err:#?}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    store.store(delivery(&body(1)), 0).await.unwrap();

    cluster.nodes[0].kill().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if store.store(delivery(&body(2)), 0).await.is_ok() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no failover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.nodes[0].start_again().unwrap();

    let js = jetstream(&cluster.nodes[1].url()).await;
    let info = js
        .get_stream("PRESERVICA_WEBHOOK")
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(info.config.num_replicas, 3);
    assert_eq!(info.state.messages, 2);
    let claimed = claim_n(store.as_ref(), 2, Duration::from_secs(20)).await;
    assert_eq!(claimed.len(), 2);
}

#[tokio::test]
async fn undecodable_bodies_are_kept_never_handled_and_imports_take_pending_only() {
    let nats = Nats::start().unwrap();
    let store = open(&fast(vec![nats.url()])).await;
    let mut odd = delivery(b"not json");
    odd.state = DeliveryState::Undecodable;
    let Stored::New(id) = store.store(odd, 0).await.unwrap() else {
        panic!("stored anew")
    };
    let claim = store.claim(0, 4, 0).await.unwrap();
    assert!(claim.due.is_empty(), "{:?}", claim.due);
    let entry = store.get(&id).await.unwrap().unwrap();
    assert_eq!(entry.state, DeliveryState::Undecodable);
    assert_eq!(&entry.body[..], b"not json");

    let mut done = delivery(&body(1));
    done.state = DeliveryState::Done;
    let refused = store.store(done, 0).await.unwrap_err();
    assert!(
        refused.to_string().contains("pending deliveries only"),
        "{refused}"
    );
}

/// Opens a store on `config`, stores one delivery and reads it back.
async fn stores_and_lists(config: &NatsConfig) {
    let store = open(config).await;
    assert!(matches!(
        store
            .store(delivery(b"{\"trigger\":\"MOVED\"}"), 1_000)
            .await
            .unwrap(),
        Stored::New(_)
    ));
    assert_eq!(store.list(StateFilter::All).await.unwrap().len(), 1);
    store.close().await;
}

/// The error opening a store on `config` gives, which must not show `secret`.
async fn refused(config: &NatsConfig, secret: &str) -> String {
    let err = open_store(InboxConfig::Nats(Box::new(config.clone())))
        .await
        .unwrap_err();
    let text = format!("{err:#} {err:?}");
    assert!(!text.contains(secret), "the secret is shown: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticates_with_a_token_or_a_user_and_password() {
    let nats = Nats::start_with(&["--auth", "t0ken-not-shown"]).unwrap();
    let mut config = fast(vec![nats.url()]);
    config.auth = NatsAuth::Token("t0ken-not-shown".to_owned());
    stores_and_lists(&config).await;
    config.auth = NatsAuth::Token("wrong-t0ken".to_owned());
    let text = refused(&config, "wrong-t0ken").await;
    assert!(text.contains("check the URL"), "{text}");

    let nats = Nats::start_with(&["--user", "webhook", "--pass", "pa55-not-shown"]).unwrap();
    let mut config = fast(vec![nats.url()]);
    config.auth = NatsAuth::UserPassword("webhook".to_owned(), "pa55-not-shown".to_owned());
    stores_and_lists(&config).await;
    config.auth = NatsAuth::UserPassword("webhook".to_owned(), "wrong-pa55".to_owned());
    refused(&config, "wrong-pa55").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticates_with_a_credentials_file_against_a_server_in_operator_mode() {
    let (nats, creds) = Nats::start_with_credentials().unwrap();
    let seed = seed_of(&creds);
    let mut config = fast(vec![nats.url()]);
    config.auth = NatsAuth::CredentialsFile(creds.clone());
    stores_and_lists(&config).await;

    // The server knows only its operator's users: no credentials, or a user of an account
    // under another operator, is refused; the error does not show the seed.
    config.auth = NatsAuth::None;
    let text = refused(&config, &seed).await;
    assert!(text.contains("check the URL"), "{text}");
    let stranger = nats.unknown_credentials().unwrap();
    config.auth = NatsAuth::CredentialsFile(stranger.clone());
    let text = refused(&config, &seed_of(&stranger)).await;
    assert!(text.contains("check the URL"), "{text}");

    // A file that is not there is named.
    let missing = creds.with_file_name("missing.creds");
    config.auth = NatsAuth::CredentialsFile(missing.clone());
    let text = refused(&config, &seed).await;
    assert!(text.contains(&missing.display().to_string()), "{text}");
}

/// The NKey seed in a `.creds` file (the line after its `BEGIN USER NKEY SEED` line).
fn seed_of(creds: &std::path::Path) -> String {
    let text = std::fs::read_to_string(creds).unwrap();
    let mut lines = text.lines();
    lines.find(|line| line.contains("BEGIN USER NKEY SEED"));
    let seed = lines.next().unwrap().to_owned();
    assert!(seed.starts_with("SU"), "{seed}");
    seed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_over_tls_trusting_the_ca_given_and_refuses_an_unknown_certificate() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let (cert, key) = (data.join("cert.pem"), data.join("key.pem"));
    let nats = Nats::start_with(&[
        "--tls",
        "--tlscert",
        cert.to_str().unwrap(),
        "--tlskey",
        key.to_str().unwrap(),
    ])
    .unwrap();
    let mut config = fast(vec![format!("tls://127.0.0.1:{}", nats.port())]);
    config.tls_ca = Some(cert);
    stores_and_lists(&config).await;

    config.tls_ca = None;
    refused(&config, "-----BEGIN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_record_their_runs_in_a_stream_that_keeps_each_runs_latest() {
    let nats = Nats::start().unwrap();
    let config = fast(vec![nats.url()]);
    let (a, b) = (open(&config).await, open(&config).await);
    let mut first = RunRecord {
        id: "0123456789abcdef".to_owned(),
        started_at: 1_000,
        last_seen_at: 1_000,
        stopped_at: None,
    };
    let second = RunRecord {
        id: "fedcba9876543210".to_owned(),
        started_at: 2_000,
        last_seen_at: 2_500,
        stopped_at: None,
    };
    a.record_run(&first).await.unwrap();
    b.record_run(&second).await.unwrap();
    for beat in 1..=3 {
        first.last_seen_at = 1_000 + beat * 30_000;
        a.record_run(&first).await.unwrap();
    }
    first.stopped_at = Some(first.last_seen_at);
    a.record_run(&first).await.unwrap();

    assert_eq!(b.runs().await.unwrap(), [first, second]);
    let stream = jetstream(&nats.url())
        .await
        .get_stream("PRESERVICA_WEBHOOK_RUNS")
        .await
        .unwrap();
    assert_eq!(
        stream.cached_info().state.messages,
        2,
        "one record per run is kept"
    );
}

fn retry(at: i64, error: &str) -> Outcome {
    Outcome::Retry {
        at,
        error: error.into(),
    }
}

/// The claimed delivery with `id` among `claimed`.
fn find(
    claimed: &[preservica_webhook_server::store::Claimed],
    id: &preservica_webhook_server::DeliveryId,
) -> u32 {
    claimed
        .iter()
        .find(|it| it.id == *id)
        .unwrap_or_else(|| panic!("{id} was not claimed: {claimed:?}"))
        .attempts
}

#[tokio::test]
async fn every_applied_outcome_is_recorded_in_the_attempts_stream() {
    let nats = Nats::start().unwrap();
    let config = fast(vec![nats.url()]);
    let store = open(&config).await;
    let Stored::New(failing) = store.store(delivery(&body(1)), 0).await.unwrap() else {
        panic!("not new")
    };
    let Stored::New(recovering) = store.store(delivery(&body(2)), 0).await.unwrap() else {
        panic!("not new")
    };
    assert_eq!(store.attempts(&failing).await.unwrap(), []);
    let claimed = claim_n(store.as_ref(), 2, Duration::from_secs(10)).await;
    assert_eq!(
        (find(&claimed, &failing), find(&claimed, &recovering)),
        (0, 0)
    );
    store
        .complete(failing.clone(), 1, retry(1_100, "first"), 1_000)
        .await
        .unwrap();
    store
        .complete(recovering.clone(), 1, retry(1_120, "flaky"), 1_020)
        .await
        .unwrap();
    let claimed = claim_n(store.as_ref(), 2, Duration::from_secs(10)).await;
    assert_eq!(
        (find(&claimed, &failing), find(&claimed, &recovering)),
        (1, 1)
    );
    store
        .complete(failing.clone(), 2, retry(1_300, "second"), 1_200)
        .await
        .unwrap();
    // The first attempt's outcome again: not the attempt running now, ignored.
    store
        .complete(recovering.clone(), 1, Outcome::Done, 1_210)
        .await
        .unwrap();
    store
        .complete(recovering.clone(), 2, Outcome::Done, 1_220)
        .await
        .unwrap();
    let claimed = claim_n(store.as_ref(), 1, Duration::from_secs(10)).await;
    assert_eq!(find(&claimed, &failing), 2);
    let dead = Outcome::Dead {
        error: "third\nline".into(),
    };
    store
        .complete(failing.clone(), 3, dead.clone(), 1_400)
        .await
        .unwrap();
    // No longer held by this worker: ignored.
    store
        .complete(failing.clone(), 3, Outcome::Done, 1_410)
        .await
        .unwrap();

    // Read by another store, as the dashboard or `inbox show` would; the dead letter is
    // shown by its original's id, with the original's attempts.
    let other = open(&config).await;
    let shown = other.get(&failing).await.unwrap().unwrap();
    assert_eq!(shown.state, DeliveryState::Dead);
    let attempt = |number, finished_at, outcome| Attempt {
        number,
        finished_at,
        outcome,
    };
    assert_eq!(
        other.attempts(&failing).await.unwrap(),
        [
            attempt(1, 1_000, retry(1_100, "first")),
            attempt(2, 1_200, retry(1_300, "second")),
            attempt(3, 1_400, dead),
        ]
    );
    assert_eq!(
        other.attempts(&recovering).await.unwrap(),
        [
            attempt(1, 1_020, retry(1_120, "flaky")),
            attempt(2, 1_220, Outcome::Done),
        ]
    );
    assert_eq!(other.attempts(&"nope".parse().unwrap()).await.unwrap(), []);

    // A stream of its own, kept like the deliveries' stream.
    let js = jetstream(&nats.url()).await;
    let info = js
        .get_stream("PRESERVICA_WEBHOOK_ATTEMPTS")
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(info.state.messages, 5);
    assert_eq!(info.config.storage, jetstream::stream::StorageType::File);
    assert_eq!(info.config.max_age, config.max_age);
    assert_eq!(info.config.num_replicas, 1);
    assert_eq!(
        info.config.subjects,
        ["preservica.webhook-attempts.>".to_owned()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_read_newest_first_by_state_time_and_entity_with_the_last_hours_arrivals() {
    let nats = Nats::start().unwrap();
    let store = open(&fast(vec![nats.url()])).await;
    let started = now_millis();
    let mut ids = Vec::new();
    for n in 0..12 {
        match store.store(delivery(&body(n)), 0).await.unwrap() {
            Stored::New(id) => ids.push(id),
            Stored::Duplicate(id) => panic!("delivery {n} stored as a duplicate of {id}"),
        }
    }
    // 0–3 done, 4–5 dead, 6–11 pending (claimed, then left to run out).
    let mut claimed = claim_n(store.as_ref(), 6, Duration::from_secs(10)).await;
    claimed.sort_by_key(|it| it.id.as_u64());
    for (n, it) in claimed.iter().enumerate() {
        let outcome = if n < 4 {
            Outcome::Done
        } else {
            Outcome::Dead {
                error: format!("failed {n}"),
            }
        };
        store.complete(it.id.clone(), 1, outcome, 0).await.unwrap();
    }
    poll_async("the ack floor past the dead letters", || async {
        let counts = store.counts().await.unwrap();
        counts.dead == 2 && counts.pending == 6
    })
    .await;
    let newest_first = |range: std::ops::Range<usize>| -> Vec<DeliveryId> {
        ids[range].iter().rev().cloned().collect()
    };
    let shown =
        |page: &Page| -> Vec<DeliveryId> { page.entries.iter().map(|it| it.id.clone()).collect() };

    // Every delivery, five a page, each page continuing after the last one shown.
    let mut query = PageQuery::newest(5);
    let mut all = Vec::new();
    loop {
        let page = store.page(&query).await.unwrap();
        assert!(page.entries.len() <= 5);
        all.extend(shown(&page));
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    assert_eq!(all, newest_first(0..12));

    for (state, expected) in [
        (DeliveryState::Done, newest_first(0..4)),
        (DeliveryState::Dead, newest_first(4..6)),
        (DeliveryState::Pending, newest_first(6..12)),
    ] {
        let mut query = PageQuery::newest(20);
        query.state = StateFilter::Only(state);
        let page = store.page(&query).await.unwrap();
        assert_eq!(shown(&page), expected, "{state:?}");
        assert!(page.entries.iter().all(|it| it.state == state));
        assert!(page.next.is_none());
    }
    let mut query = PageQuery::newest(1);
    query.state = StateFilter::Only(DeliveryState::Dead);
    let first = store.page(&query).await.unwrap();
    assert_eq!(shown(&first), newest_first(5..6));
    query.after = first.next;
    assert_eq!(
        shown(&store.page(&query).await.unwrap()),
        newest_first(4..5)
    );

    // An entity filter, a bounded scan going on after the last delivery it read, and a time
    // range.
    let mut query = PageQuery::newest(5);
    query.entity = Some("REF-2".to_owned());
    query.max_scanned = 4;
    let mut found = Vec::new();
    let mut calls = 0;
    loop {
        calls += 1;
        let page = store.page(&query).await.unwrap();
        found.extend(shown(&page));
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    assert_eq!(found, vec![ids[2].clone()]);
    assert_eq!(
        calls, 4,
        "12 deliveries read 4 at a time, each call stopping at the bound, then the end"
    );
    let mut query = PageQuery::newest(20);
    query.received_from = Some(now_millis() + 3_600_000);
    assert!(store.page(&query).await.unwrap().entries.is_empty());
    query.received_from = Some(started - 1_000);
    query.received_before = Some(now_millis() + 1_000);
    assert_eq!(store.page(&query).await.unwrap().entries.len(), 12);
    query.received_before = Some(started - 1_000);
    assert!(store.page(&query).await.unwrap().entries.is_empty());

    let now = now_millis();
    let activity = store.activity(now).await.unwrap();
    assert_eq!(activity.per_minute.iter().sum::<u32>(), 12);
    let last = activity.last_received_at.unwrap();
    let oldest = activity.oldest_pending_at.unwrap();
    assert!(
        started <= oldest && oldest <= last && last <= now,
        "{activity:?}"
    );
    let sixth = store.get(&ids[6]).await.unwrap().unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(&sixth.received_at)
            .unwrap()
            .timestamp_millis(),
        oldest
    );
}
