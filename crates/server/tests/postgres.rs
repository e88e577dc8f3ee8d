//! The PostgreSQL store against a real PostgreSQL started for each test: deduplication across
//! stores on one database, leases, concurrent claims, migrations, connection loss, TLS.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use preservica_webhook_core::DeliveryKey;
use preservica_webhook_server::store::{
    Attempt, NewDelivery, Outcome, PageQuery, Store, Stored, open_store,
};
use preservica_webhook_server::{
    DeliveryId, DeliveryState, InboxConfig, InboxEntry, InboxError, PostgresLocation, RunRecord,
    StateFilter,
};
use preservica_webhook_testkit::postgres::Postgres;

#[path = "support/pages.rs"]
mod pages;

fn inbox(url: &str) -> InboxConfig {
    InboxConfig::Postgres(url.parse::<PostgresLocation>().unwrap())
}

async fn open(url: &str) -> Arc<dyn Store> {
    open_store(inbox(url)).await.unwrap()
}

fn delivery(n: usize) -> NewDelivery {
    let body = Bytes::from(format!(
        r#"{{"trigger":"MOVED","events":[{{"entityRef":"ref-{n}"}}]}}"#
    ));
    NewDelivery::new(DeliveryKey::of(&body), body, DeliveryState::Pending)
}

/// A plain client on the test database, to look at what the store wrote.
async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_database_keep_a_delivery_sent_to_both_once() {
    let postgres = Postgres::start().unwrap();
    let (a, b) = (open(&postgres.url()).await, open(&postgres.url()).await);
    // The same deliveries sent to both stores at once, and others to one of them.
    let mut sends = Vec::new();
    for n in 0..100 {
        sends.push(tokio::spawn({
            let a = Arc::clone(&a);
            async move { a.store(delivery(n), 1_000).await }
        }));
        sends.push(tokio::spawn({
            let b = Arc::clone(&b);
            async move { b.store(delivery(n % 50), 1_000).await }
        }));
    }
    let mut new = HashSet::new();
    let mut ids_of_key = std::collections::HashMap::new();
    for (n, send) in sends.into_iter().enumerate() {
        let stored = send.await.unwrap().unwrap();
        let key = if n % 2 == 0 { n / 2 } else { (n / 2) % 50 };
        let id = match stored {
            Stored::New(id) => {
                assert!(new.insert(id.clone()), "{id:?} stored new twice");
                id
            }
            Stored::Duplicate(id) => id,
        };
        let first = ids_of_key.entry(key).or_insert_with(|| id.clone());
        assert_eq!(*first, id, "delivery {key} has two ids");
    }
    assert_eq!(new.len(), 100);
    assert_eq!(a.counts().await.unwrap().pending, 100);
    assert_eq!(b.list(StateFilter::All).await.unwrap().len(), 100);
    a.close().await;
    b.close().await;
}

/// Two replicas given the same burst of redeliveries in opposite orders: each group of
/// inserts would wait on the other's uncommitted keys unless both take them in one order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_deliveries_in_opposite_orders_to_two_stores_are_each_stored_once() {
    let postgres = Postgres::start().unwrap();
    let (a, b) = (open(&postgres.url()).await, open(&postgres.url()).await);
    let (rounds, per_round) = (5, 200);
    for round in 0..rounds {
        let numbers: Vec<usize> = (round * per_round..(round + 1) * per_round).collect();
        let mut sends = Vec::new();
        for (forward, backward) in numbers.iter().zip(numbers.iter().rev()) {
            for (store, n) in [(&a, *forward), (&b, *backward)] {
                let store = Arc::clone(store);
                sends.push(tokio::spawn(async move {
                    (n, store.store(delivery(n), 1_000).await)
                }));
            }
        }
        let mut new = HashSet::new();
        for send in sends {
            let (n, stored) = send.await.unwrap();
            match stored.unwrap_or_else(|err| panic!("delivery {n} was refused: {err}")) {
                Stored::New(_) => assert!(new.insert(n), "delivery {n} stored new twice"),
                Stored::Duplicate(_) => {}
            }
        }
        assert_eq!(new.len(), per_round, "round {round}");
    }
    let stored = u64::try_from(rounds * per_round).unwrap();
    assert_eq!(a.counts().await.unwrap().pending, stored);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_ran_out_is_taken_over_and_the_late_outcome_is_ignored() {
    let postgres = Postgres::start().unwrap();
    let (a, b) = (open(&postgres.url()).await, open(&postgres.url()).await);
    let Stored::New(id) = a.store(delivery(1), 1_000).await.unwrap() else {
        panic!("not new");
    };
    let first = a.claim(1_000, 10, 1_100).await.unwrap();
    assert_eq!(first.due.len(), 1);
    assert_eq!(first.due[0].attempts, 0);
    // Leased: nobody else gets it before the lease ends, and the claim says when that is.
    let during = b.claim(1_050, 10, 1_150).await.unwrap();
    assert!(during.due.is_empty());
    assert_eq!(during.next_due, Some(1_100));
    // The first worker vanished: once the lease is over another takes the delivery over.
    let taken = b.claim(1_200, 10, 1_300).await.unwrap();
    assert_eq!(taken.due.len(), 1);
    assert_eq!(taken.due[0].id, id);
    assert_eq!(taken.due[0].attempts, 1, "the lost attempt counts");
    // The first worker's outcome arrives late: ignored, the delivery stays with the second.
    a.complete(id.clone(), 1, Outcome::Done, 1_210)
        .await
        .unwrap();
    let entry = b.get(&id).await.unwrap().unwrap();
    assert_eq!(entry.state, DeliveryState::Pending);
    b.complete(
        id.clone(),
        2,
        Outcome::Retry {
            at: 5_000,
            error: "busy".into(),
        },
        1_220,
    )
    .await
    .unwrap();
    let entry = a.get(&id).await.unwrap().unwrap();
    assert_eq!(entry.state, DeliveryState::Pending);
    assert_eq!(entry.attempts, 2);
    assert_eq!(entry.last_error.as_deref(), Some("busy"));
    assert!(a.claim(4_999, 10, 9_000).await.unwrap().due.is_empty());
    let again = a.claim(5_000, 10, 9_000).await.unwrap();
    assert_eq!(again.due[0].attempts, 2);
    a.complete(id.clone(), 3, Outcome::Done, 5_010)
        .await
        .unwrap();
    assert_eq!(
        b.get(&id).await.unwrap().unwrap().state,
        DeliveryState::Done
    );
    assert!(b.claim(100_000, 10, 200_000).await.unwrap().due.is_empty());
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_never_get_the_same_delivery() {
    let postgres = Postgres::start().unwrap();
    let stores = [
        open(&postgres.url()).await,
        open(&postgres.url()).await,
        open(&postgres.url()).await,
    ];
    let stored =
        futures_util::future::join_all((0..300).map(|n| stores[n % 3].store(delivery(n), 1_000)))
            .await;
    assert!(stored.iter().all(|it| matches!(it, Ok(Stored::New(_)))));
    let mut claimers = Vec::new();
    for n in 0..9 {
        let store = Arc::clone(&stores[n % 3]);
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claim = store.claim(2_000, 7, 1_000_000).await.unwrap();
                if claim.due.is_empty() {
                    return mine;
                }
                mine.extend(claim.due.into_iter().map(|it| it.id));
            }
        }));
    }
    let mut seen = HashSet::new();
    for claimer in claimers {
        for id in claimer.await.unwrap() {
            assert!(seen.insert(id.clone()), "{id:?} handed out twice");
        }
    }
    assert_eq!(seen.len(), 300);
    for store in stores {
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_when_stores_open_together_and_a_newer_schema_is_refused() {
    let postgres = Postgres::start().unwrap();
    let url = postgres.url();
    let opened = futures_util::future::join_all((0..4).map(|_| open_store(inbox(&url)))).await;
    for store in opened {
        store.unwrap().close().await;
    }
    let client = sql(&url).await;
    let versions: Vec<i64> = client
        .query("SELECT version FROM preservica_webhook_schema", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    // Opening again changes nothing and keeps what is stored.
    let store = open(&url).await;
    store.store(delivery(1), 1_000).await.unwrap();
    store.close().await;
    let store = open(&url).await;
    assert_eq!(store.counts().await.unwrap().pending, 1);
    store.close().await;
    client
        .execute(
            "INSERT INTO preservica_webhook_schema (version) VALUES (99)",
            &[],
        )
        .await
        .unwrap();
    let err = open_store(inbox(&url)).await.unwrap_err();
    assert!(
        matches!(err, InboxError::UnknownSchema { version: 99, .. }),
        "{err}"
    );
    assert!(err.is_configuration());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_while_the_database_is_down_and_work_again_once_it_is_back() {
    let mut postgres = Postgres::start().unwrap();
    let store = open(&postgres.url()).await;
    store.store(delivery(1), 1_000).await.unwrap();
    postgres.stop().unwrap();
    let err = store.store(delivery(2), 1_000).await.unwrap_err();
    assert!(matches!(err, InboxError::Unavailable(_)), "{err}");
    assert!(matches!(
        store.claim(1_000, 10, 2_000).await,
        Err(InboxError::Unavailable(_))
    ));
    assert!(store.counts().await.is_err());
    postgres.start_again().unwrap();
    // The same store, without reopening: new connections replace the lost ones.
    let deadline = Instant::now() + Duration::from_secs(20);
    let stored = loop {
        match store.store(delivery(2), 1_000).await {
            Ok(stored) => break stored,
            Err(err) => assert!(Instant::now() < deadline, "never recovered: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(matches!(stored, Stored::New(_)));
    // Counts are reused for a second; past it they are counted again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(store.counts().await.unwrap().pending, 2);
    assert_eq!(store.claim(1_000, 10, 2_000).await.unwrap().due.len(), 2);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_database_that_is_not_there_says_how_to_fix_it() {
    let mut postgres = Postgres::start().unwrap();
    let url = format!(
        "postgres://someone:hunter2@127.0.0.1:{}/postgres",
        postgres.port()
    );
    postgres.stop().unwrap();
    let err = open_store(inbox(&url)).await.unwrap_err();
    let text = format!("{err}");
    assert!(matches!(err, InboxError::Connect { .. }), "{text}");
    assert!(text.contains("check that PostgreSQL runs there"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!format!("{err:?}").contains("hunter2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_over_tls_when_the_url_asks_and_verifies_the_server() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let cert = data.join("cert.pem");
    let postgres = Postgres::start_with_tls(&cert, &data.join("key.pem")).unwrap();
    let url = postgres.url();
    // The server takes TLS connections only, so a store that works uses TLS.
    let trusted = format!("{url}?sslmode=require&sslrootcert={}", cert.display());
    let store = open(&trusted).await;
    assert!(matches!(
        store.store(delivery(1), 1_000).await.unwrap(),
        Stored::New(_)
    ));
    store.close().await;
    let plain = open_store(inbox(&url)).await.unwrap_err();
    assert!(matches!(plain, InboxError::Connect { .. }), "{plain}");
    // A certificate no trusted root vouches for is refused.
    let unverified = open_store(inbox(&format!("{url}?sslmode=require")))
        .await
        .unwrap_err();
    assert!(
        matches!(unverified, InboxError::Connect { .. }),
        "{unverified}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_re_queued_and_exported() {
    let postgres = Postgres::start().unwrap();
    let store = open(&postgres.url()).await;
    // Real times: a listing tells a running lease by the clock.
    let now = preservica_webhook_server::store::now_millis();
    for n in 0..3 {
        store
            .store(delivery(n), now + i64::try_from(n).unwrap())
            .await
            .unwrap();
    }
    let claim = store.claim(now + 10, 10, now + 60_000).await.unwrap();
    let ids: Vec<_> = claim.due.iter().map(|it| it.id.clone()).collect();
    assert_eq!(ids.len(), 3);
    // Leased and running: the attempt is not counted as finished yet.
    let running = store.get(&ids[0]).await.unwrap().unwrap();
    assert_eq!(running.attempts, 0);
    for id in &ids[..2] {
        let dead = Outcome::Dead {
            error: "gone".into(),
        };
        store.complete(id.clone(), 1, dead, now + 20).await.unwrap();
    }
    let dead = store
        .list(StateFilter::Only(DeliveryState::Dead))
        .await
        .unwrap();
    let dead_ids: Vec<_> = dead.iter().map(|it| it.id.clone()).collect();
    assert_eq!(dead_ids, ids[..2]);
    assert_eq!(dead[0].attempts, 1);
    assert_eq!(dead[0].last_error.as_deref(), Some("gone"));
    assert!(store.retry(&ids[0], now + 30).await.unwrap());
    assert!(
        !store.retry(&ids[0], now + 30).await.unwrap(),
        "not dead any more"
    );
    assert!(
        !store.retry(&ids[2], now + 30).await.unwrap(),
        "pending, not dead"
    );
    assert!(
        !store
            .retry(&"no-such-id".parse().unwrap(), now + 30)
            .await
            .unwrap()
    );
    assert_eq!(store.retry_dead(now + 40).await.unwrap(), 1);
    let requeued = store.get(&ids[1]).await.unwrap().unwrap();
    assert_eq!(
        (requeued.state, requeued.attempts),
        (DeliveryState::Pending, 0)
    );
    let mut out = Vec::new();
    assert_eq!(store.export(&mut out).await.unwrap(), 3);
    let lines: Vec<serde_json::Value> = out
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["id"], ids[0].to_string());
    assert_eq!(
        lines[0]["body"],
        std::str::from_utf8(&delivery(0).body).unwrap()
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_record_their_runs_in_the_shared_database() {
    let postgres = Postgres::start().unwrap();
    let (a, b) = (open(&postgres.url()).await, open(&postgres.url()).await);
    let mut first = RunRecord {
        id: "replica-a".to_owned(),
        started_at: 1_000,
        last_seen_at: 1_000,
        stopped_at: None,
    };
    let second = RunRecord {
        id: "replica-b".to_owned(),
        started_at: 2_000,
        last_seen_at: 2_500,
        stopped_at: None,
    };
    a.record_run(&first).await.unwrap();
    b.record_run(&second).await.unwrap();
    first.last_seen_at = 3_000;
    first.stopped_at = Some(3_000);
    a.record_run(&first).await.unwrap();

    assert_eq!(b.runs().await.unwrap(), [first, second]);
}

fn attempt(number: u32, finished_at: i64, outcome: Outcome) -> Attempt {
    Attempt {
        number,
        finished_at,
        outcome,
    }
}

fn retry(at: i64, error: &str) -> Outcome {
    Outcome::Retry {
        at,
        error: error.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_applied_outcome_is_an_attempt_and_a_pruned_delivery_takes_its_attempts() {
    let postgres = Postgres::start().unwrap();
    let (a, b) = (open(&postgres.url()).await, open(&postgres.url()).await);
    let Stored::New(failing) = a.store(delivery(1), 1_000).await.unwrap() else {
        panic!("not new");
    };
    let Stored::New(recovering) = a.store(delivery(2), 1_000).await.unwrap() else {
        panic!("not new");
    };
    assert_eq!(a.claim(1_000, 10, 1_100).await.unwrap().due.len(), 2);
    a.complete(failing.clone(), 1, retry(1_200, "first"), 1_010)
        .await
        .unwrap();
    a.complete(recovering.clone(), 1, retry(1_200, "flaky"), 1_020)
        .await
        .unwrap();
    assert_eq!(b.claim(1_200, 10, 1_300).await.unwrap().due.len(), 2);
    b.complete(failing.clone(), 2, retry(1_400, "second"), 1_210)
        .await
        .unwrap();
    // The first attempt's outcome once more, late: ignored, and no attempt.
    a.complete(recovering.clone(), 1, Outcome::Done, 1_215)
        .await
        .unwrap();
    b.complete(recovering.clone(), 2, Outcome::Done, 1_220)
        .await
        .unwrap();
    assert_eq!(a.claim(1_400, 10, 1_500).await.unwrap().due.len(), 1);
    let dead = Outcome::Dead {
        error: "third".into(),
    };
    a.complete(failing.clone(), 3, dead.clone(), 1_410)
        .await
        .unwrap();
    // Dead now, not pending: ignored.
    a.complete(failing.clone(), 3, Outcome::Done, 1_420)
        .await
        .unwrap();

    assert_eq!(
        b.attempts(&failing).await.unwrap(),
        [
            attempt(1, 1_010, retry(1_200, "first")),
            attempt(2, 1_210, retry(1_400, "second")),
            attempt(3, 1_410, dead),
        ]
    );
    assert_eq!(
        b.attempts(&recovering).await.unwrap(),
        [
            attempt(1, 1_020, retry(1_200, "flaky")),
            attempt(2, 1_220, Outcome::Done),
        ]
    );
    assert_eq!(b.attempts(&"nope".parse().unwrap()).await.unwrap(), []);

    // Pruned, the done delivery takes its attempts along (the foreign key cascades).
    assert_eq!(a.prune(1_221).await.unwrap(), 1);
    assert_eq!(b.attempts(&recovering).await.unwrap(), []);
    assert_eq!(b.attempts(&failing).await.unwrap().len(), 3);
    let kept: Vec<i64> = sql(&postgres.url())
        .await
        .query(
            "SELECT delivery_id FROM preservica_webhook_attempts ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let failing_row = i64::try_from(failing.as_u64().unwrap()).unwrap();
    assert_eq!(kept, [failing_row; 3]);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_read_newest_first_by_cursor_with_filters_and_a_bounded_scan() {
    let postgres = Postgres::start().unwrap();
    let store = open(&postgres.url()).await;
    pages::pages_and_activity(&*store).await;
    // The index the health panel reads by is there (migration 4).
    let client = sql(&postgres.url()).await;
    let row = client
        .query_one(
            "SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'preservica_webhook_by_state_received'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    store.close().await;
}
