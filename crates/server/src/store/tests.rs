use bytes::Bytes;
use preservica_webhook_core::DeliveryKey;
use prometheus_client::metrics::counter::Counter;

use super::memory::MemoryStore;
use super::sqlite::SqliteStore;
use super::*;

#[path = "../../tests/support/pages.rs"]
mod pages;

fn check_id(text: &str, number: Option<u64>) {
    let id: DeliveryId = text.parse().unwrap();
    assert_eq!(id.to_string(), text);
    assert_eq!(id.as_u64(), number, "{text}");
    assert_eq!(serde_json::to_value(&id).unwrap(), text);
}

#[test]
fn delivery_ids_keep_their_text_and_numbers_are_numbers() {
    check_id("1", Some(1));
    check_id("0", Some(0));
    check_id("18446744073709551615", Some(u64::MAX));
    check_id("007", None);
    check_id("+7", None);
    check_id("01HZX3K9Q2", None);
    check_id("18446744073709551616", None);
    assert_eq!("".parse::<DeliveryId>(), Err(InvalidDeliveryId));
    assert_eq!("a b".parse::<DeliveryId>(), Err(InvalidDeliveryId));
    assert_eq!(DeliveryId::from(42), "42".parse().unwrap());
}

async fn store(store: &dyn Store, body: &str, state: DeliveryState, now: i64) -> DeliveryId {
    let body = Bytes::from(body.to_owned());
    let delivery = NewDelivery::new(DeliveryKey::of(&body), body, state);
    match store.store(delivery, now).await.unwrap() {
        Stored::New(id) => id,
        Stored::Duplicate(id) => panic!("a new body was stored as a duplicate of {id}"),
    }
}

fn ids(claim: &Claim) -> Vec<DeliveryId> {
    claim.due.iter().map(|it| it.id.clone()).collect()
}

/// A claim at `now`, asked again while the store holds something back for an outcome whose
/// recording is not over (it says so with a `next_due` right after `now`): a store may answer
/// a prune before it lets go of the leases that the same transaction's outcomes end.
async fn settled_claim(inbox: &dyn Store, now: i64, lease_until: i64) -> Claim {
    for _ in 0..200 {
        let claim = inbox.claim(now, 10, lease_until).await.unwrap();
        if !claim.due.is_empty() || claim.next_due.is_none_or(|at| at > now + 1) {
            return claim;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("the store kept holding back a delivery whose outcome was recorded");
}

/// Everything a store does, through the seam only.
async fn exercise(inbox: &dyn Store) {
    let mut all = Vec::new();
    for n in 0..4 {
        all.push(store(inbox, &format!("body {n}"), DeliveryState::Pending, 100).await);
    }
    let undecodable = store(inbox, "not json", DeliveryState::Undecodable, 100).await;
    let again = NewDelivery::new(
        DeliveryKey::of(b"body 0"),
        Bytes::from_static(b"body 0"),
        DeliveryState::Pending,
    );
    assert_eq!(
        inbox.store(again, 150).await.unwrap(),
        Stored::Duplicate(all[0].clone())
    );

    // Claims hand out due deliveries, oldest first, never undecodable ones, and lease them.
    let claim = inbox.claim(100, 2, 1_000).await.unwrap();
    assert_eq!(ids(&claim), all[..2]);
    let claim = inbox.claim(100, 10, 1_000).await.unwrap();
    assert_eq!(
        ids(&claim),
        all[2..],
        "leased deliveries were handed out again"
    );
    assert!(inbox.claim(999, 10, 2_000).await.unwrap().due.is_empty());

    inbox
        .complete(all[0].clone(), 1, Outcome::Done, 200)
        .await
        .unwrap();
    let retry = Outcome::Retry {
        at: 500,
        error: "later".into(),
    };
    inbox.complete(all[1].clone(), 1, retry, 200).await.unwrap();
    let dead = Outcome::Dead {
        error: "never".into(),
    };
    inbox.complete(all[2].clone(), 1, dead, 200).await.unwrap();
    inbox
        .complete(all[2].clone(), 2, Outcome::Done, 300)
        .await
        .unwrap();
    // Outcomes may be recorded after `complete` answers; a prune (answered once committed)
    // waits for those queued before it.
    inbox.prune(i64::MIN).await.unwrap();
    assert_eq!(
        inbox.counts().await.unwrap(),
        StateCounts {
            pending: 2,
            done: 1,
            dead: 1,
            undecodable: 1
        },
        "counts follow outcomes"
    );
    let entry = inbox.get(&all[2]).await.unwrap().unwrap();
    assert_eq!(
        (entry.state, entry.attempts, entry.last_error.as_deref()),
        (DeliveryState::Dead, 1, Some("never")),
        "only pending deliveries take outcomes"
    );

    // A retry is due at its time; a lease that ran out frees its delivery for another.
    let claim = settled_claim(inbox, 600, 2_000).await;
    assert_eq!(ids(&claim), [all[1].clone()]);
    assert_eq!(claim.due[0].attempts, 1);
    let claim = inbox.claim(1_000, 10, 3_000).await.unwrap();
    assert_eq!(
        ids(&claim),
        [all[3].clone()],
        "an expired lease kept its delivery"
    );
    // An outcome of the first attempt, arriving late, is not the second attempt's.
    inbox
        .complete(all[1].clone(), 1, Outcome::Done, 1_000)
        .await
        .unwrap();
    inbox.prune(i64::MIN).await.unwrap();
    let entry = inbox.get(&all[1]).await.unwrap().unwrap();
    assert_eq!(
        (entry.state, entry.attempts),
        (DeliveryState::Pending, 1),
        "a stale outcome was recorded"
    );
    inbox
        .complete(all[1].clone(), 2, Outcome::Done, 1_000)
        .await
        .unwrap();
    inbox
        .complete(all[3].clone(), 1, Outcome::Done, 1_000)
        .await
        .unwrap();
    inbox.prune(i64::MIN).await.unwrap();

    // The administrator's side.
    let dead: Vec<DeliveryId> = inbox
        .list(StateFilter::Only(DeliveryState::Dead))
        .await
        .unwrap()
        .into_iter()
        .map(|it| it.id)
        .collect();
    assert_eq!(dead, [all[2].clone()]);
    assert!(
        !inbox.retry(&all[0], 2_000).await.unwrap(),
        "done is not dead"
    );
    assert!(inbox.retry(&all[2], 2_000).await.unwrap());
    assert_eq!(inbox.retry_dead(2_000).await.unwrap(), 0);
    let entry = inbox.get(&all[2]).await.unwrap().unwrap();
    assert_eq!((entry.state, entry.attempts), (DeliveryState::Pending, 0));
    inbox.prune(i64::MIN).await.unwrap();
    assert_eq!(
        inbox.counts().await.unwrap(),
        StateCounts {
            pending: 1,
            done: 3,
            dead: 0,
            undecodable: 1
        },
        "counts follow a re-queue"
    );
    assert!(inbox.get(&"nope".parse().unwrap()).await.unwrap().is_none());
    let listed: Vec<DeliveryId> = inbox
        .list(StateFilter::All)
        .await
        .unwrap()
        .into_iter()
        .map(|it| it.id)
        .collect();
    assert_eq!(
        listed,
        [&all[..], std::slice::from_ref(&undecodable)].concat()
    );
    let mut out = Vec::new();
    assert_eq!(inbox.export(&mut out).await.unwrap(), 5);
    let first: serde_json::Value =
        serde_json::from_slice(out.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["id"], all[0].to_string());
    assert_eq!(first["body"], "body 0");

    // Pruning removes done deliveries only, and only old ones.
    assert_eq!(inbox.prune(200).await.unwrap(), 0);
    assert_eq!(inbox.prune(1_001).await.unwrap(), 3);
    assert_eq!(
        inbox.counts().await.unwrap(),
        StateCounts {
            pending: 1,
            done: 0,
            dead: 0,
            undecodable: 1
        }
    );
    inbox.close().await;
    let body = Bytes::from_static(b"late");
    let late = NewDelivery::new(DeliveryKey::of(&body), body, DeliveryState::Pending);
    assert!(matches!(
        inbox.store(late, 3_000).await,
        Err(InboxError::Closed)
    ));
}

#[tokio::test]
async fn sqlite_and_memory_stores_do_the_same_through_the_seam() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    let sqlite = SqliteStore::open(&path, Counter::default()).unwrap();
    exercise(&sqlite).await;
    exercise(&MemoryStore::new(Counter::default())).await;
}

fn retry(at: i64, error: &str) -> Outcome {
    Outcome::Retry {
        at,
        error: error.into(),
    }
}

fn attempt(number: u32, finished_at: i64, outcome: Outcome) -> Attempt {
    Attempt {
        number,
        finished_at,
        outcome,
    }
}

/// Every outcome a store applies is an attempt, oldest first (retry → retry → dead, and
/// retry → done); an outcome it ignores adds none; a pruned delivery's attempts go with it.
async fn keeps_each_attempt(inbox: &dyn Store) {
    let failing = store(inbox, "failing", DeliveryState::Pending, 100).await;
    let recovering = store(inbox, "recovering", DeliveryState::Pending, 100).await;
    assert_eq!(inbox.attempts(&failing).await.unwrap(), []);
    let both = [failing.clone(), recovering.clone()];
    assert_eq!(ids(&inbox.claim(100, 10, 1_000).await.unwrap()), both);
    inbox
        .complete(failing.clone(), 1, retry(200, "first"), 110)
        .await
        .unwrap();
    inbox
        .complete(recovering.clone(), 1, retry(200, "flaky"), 120)
        .await
        .unwrap();
    assert_eq!(ids(&settled_claim(inbox, 200, 1_000).await), both);
    inbox
        .complete(failing.clone(), 2, retry(300, "second\nline"), 210)
        .await
        .unwrap();
    // The first attempt's outcome again: stale, ignored.
    inbox
        .complete(recovering.clone(), 1, Outcome::Done, 215)
        .await
        .unwrap();
    inbox
        .complete(recovering.clone(), 2, Outcome::Done, 220)
        .await
        .unwrap();
    assert_eq!(
        ids(&settled_claim(inbox, 300, 1_000).await),
        std::slice::from_ref(&failing)
    );
    let dead = Outcome::Dead {
        error: "third".into(),
    };
    inbox
        .complete(failing.clone(), 3, dead.clone(), 310)
        .await
        .unwrap();
    // No longer pending: ignored.
    inbox
        .complete(failing.clone(), 3, Outcome::Done, 320)
        .await
        .unwrap();
    inbox.prune(i64::MIN).await.unwrap();

    let failed = [
        attempt(1, 110, retry(200, "first")),
        attempt(2, 210, retry(300, "second\nline")),
        attempt(3, 310, dead),
    ];
    assert_eq!(inbox.attempts(&failing).await.unwrap(), failed);
    assert_eq!(failed[2].error(), Some("third"));
    assert_eq!(
        inbox.attempts(&recovering).await.unwrap(),
        [
            attempt(1, 120, retry(200, "flaky")),
            attempt(2, 220, Outcome::Done)
        ]
    );
    assert_eq!(inbox.attempts(&"nope".parse().unwrap()).await.unwrap(), []);

    // Re-queued, a dead letter keeps its attempts and counts from 1 again.
    assert!(inbox.retry(&failing, 400).await.unwrap());
    assert_eq!(
        ids(&settled_claim(inbox, 400, 1_000).await),
        std::slice::from_ref(&failing)
    );
    inbox
        .complete(failing.clone(), 1, Outcome::Done, 410)
        .await
        .unwrap();
    inbox.prune(i64::MIN).await.unwrap();
    let history = inbox.attempts(&failing).await.unwrap();
    assert_eq!(history[..3], failed);
    assert_eq!(history[3..], [attempt(1, 410, Outcome::Done)]);

    // Pruned with its delivery.
    assert_eq!(inbox.prune(300).await.unwrap(), 1);
    assert!(inbox.get(&recovering).await.unwrap().is_none());
    assert_eq!(inbox.attempts(&recovering).await.unwrap(), []);
    assert_eq!(inbox.attempts(&failing).await.unwrap().len(), 4);
    inbox.close().await;
}

#[tokio::test]
async fn stores_keep_each_attempt_until_the_delivery_is_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    let sqlite = SqliteStore::open(&path, Counter::default()).unwrap();
    keeps_each_attempt(&sqlite).await;
    drop(sqlite);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let (kept, orphans): (i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE delivery_id NOT IN (SELECT id FROM deliveries)) \
             FROM attempts",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (kept, orphans),
        (4, 0),
        "a pruned delivery's attempts stayed"
    );
    assert_eq!(
        crate::Inbox::open(&path)
            .unwrap()
            .attempts(&DeliveryId::from(1))
            .unwrap()
            .len(),
        4,
        "another process reads the attempts"
    );
    keeps_each_attempt(&MemoryStore::new(Counter::default())).await;
}

/// Deliveries stored done or dead (as `inbox import` does) keep their state, time received
/// and count, and are never claimed.
async fn keeps_the_state_it_is_given(inbox: &dyn Store) {
    let done = store(inbox, "imported done", DeliveryState::Done, 1_000).await;
    let dead = store(inbox, "imported dead", DeliveryState::Dead, 2_000).await;
    assert!(inbox.claim(5_000, 10, 9_000).await.unwrap().due.is_empty());
    assert_eq!(
        inbox.counts().await.unwrap(),
        StateCounts {
            pending: 0,
            done: 1,
            dead: 1,
            undecodable: 0
        }
    );
    let entry = inbox.get(&dead).await.unwrap().unwrap();
    assert_eq!(
        (entry.state, entry.received_at.as_str()),
        (DeliveryState::Dead, "1970-01-01T00:00:02.000Z")
    );
    assert_eq!(
        inbox.get(&done).await.unwrap().unwrap().state,
        DeliveryState::Done
    );
    assert_eq!(inbox.retry_dead(6_000).await.unwrap(), 1);
    assert_eq!(ids(&inbox.claim(6_000, 10, 9_000).await.unwrap()), [dead]);
    inbox.close().await;
}

#[tokio::test]
async fn stores_keep_done_and_dead_deliveries_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("inbox.db"), Counter::default()).unwrap();
    keeps_the_state_it_is_given(&sqlite).await;
    keeps_the_state_it_is_given(&MemoryStore::new(Counter::default())).await;
}

async fn records_runs_by_id(store: &dyn Store) {
    assert_eq!(store.runs().await.unwrap(), []);
    let mut later = RunRecord {
        id: "b".to_owned(),
        started_at: 500,
        last_seen_at: 500,
        stopped_at: None,
    };
    let mut first = RunRecord {
        id: "a".to_owned(),
        started_at: 100,
        last_seen_at: 100,
        stopped_at: None,
    };
    store.record_run(&later).await.unwrap();
    store.record_run(&first).await.unwrap();
    first.last_seen_at = 130;
    first.stopped_at = Some(140);
    store.record_run(&first).await.unwrap();
    later.last_seen_at = 530;
    store.record_run(&later).await.unwrap();

    assert_eq!(store.runs().await.unwrap(), [first, later]);
}

#[tokio::test]
async fn stores_record_runs_and_list_them_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    let sqlite = SqliteStore::open(&path, Counter::default()).unwrap();
    records_runs_by_id(&sqlite).await;
    assert_eq!(
        crate::Inbox::open(&path).unwrap().runs().unwrap().len(),
        2,
        "another process reads the runs beside the server"
    );
    records_runs_by_id(&MemoryStore::new(Counter::default())).await;
}

/// A store that can only list: what `page` and `activity` give by default, over `list`.
#[derive(Debug)]
struct ListOnly(MemoryStore);

impl Intake for ListOnly {
    fn store(&self, delivery: NewDelivery, now: i64) -> BoxFuture<'_, Result<Stored, InboxError>> {
        self.0.store(delivery, now)
    }
}

impl WorkQueue for ListOnly {
    fn claim(
        &self,
        now: i64,
        limit: usize,
        lease_until: i64,
    ) -> BoxFuture<'_, Result<Claim, InboxError>> {
        self.0.claim(now, limit, lease_until)
    }

    fn complete(
        &self,
        id: DeliveryId,
        attempt: u32,
        outcome: Outcome,
        now: i64,
    ) -> BoxFuture<'_, Result<(), InboxError>> {
        self.0.complete(id, attempt, outcome, now)
    }

    fn prune(&self, before: i64) -> BoxFuture<'_, Result<usize, InboxError>> {
        self.0.prune(before)
    }
}

impl InboxAdmin for ListOnly {
    fn list(&self, filter: StateFilter) -> BoxFuture<'_, Result<Vec<InboxEntry>, InboxError>> {
        self.0.list(filter)
    }

    fn get<'a>(
        &'a self,
        id: &'a DeliveryId,
    ) -> BoxFuture<'a, Result<Option<InboxEntry>, InboxError>> {
        self.0.get(id)
    }

    fn retry<'a>(
        &'a self,
        id: &'a DeliveryId,
        now: i64,
    ) -> BoxFuture<'a, Result<bool, InboxError>> {
        self.0.retry(id, now)
    }

    fn retry_dead(&self, now: i64) -> BoxFuture<'_, Result<usize, InboxError>> {
        self.0.retry_dead(now)
    }

    fn counts(&self) -> BoxFuture<'_, Result<StateCounts, InboxError>> {
        self.0.counts()
    }
}

impl Store for ListOnly {}

#[tokio::test]
async fn stores_page_newest_first_after_a_cursor_with_filters_and_a_bounded_scan() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("inbox.db"), Counter::default()).unwrap();
    pages::pages_and_activity(&sqlite).await;
    sqlite.close().await;
    pages::pages_and_activity(&MemoryStore::new(Counter::default())).await;
    pages::pages_and_activity(&ListOnly(MemoryStore::new(Counter::default()))).await;
}
