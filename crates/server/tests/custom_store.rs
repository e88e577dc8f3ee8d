//! A store of the user's own, written against the public seam only, under a real server:
//! what a backend outside this crate (a shared database, a broker) has to do, and that the
//! receiver and workers need nothing else.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use preservica_webhook_core::DeliveryKey;
use preservica_webhook_server::store::{
    BoxFuture, Claim, Claimed, DeliveryId, InboxAdmin, Intake, NewDelivery, Outcome, Store, Stored,
    StoredDelivery, WorkQueue,
};
use preservica_webhook_server::{
    DeliveryState, HandlerError, InboxConfig, InboxEntry, InboxError, StateCounts, StateFilter,
};

use common::*;

/// Deliveries in a vector, with ids of its own kind (`d-1`, `d-2`, …), recording what it was
/// asked.
#[derive(Debug, Default)]
struct VecStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    rows: Vec<Row>,
    /// Every `store` call's answer.
    stored: Vec<Stored>,
    /// Every claim's `(now, lease_until)`.
    leases: Vec<(i64, i64)>,
    /// Every outcome, with its delivery and attempt.
    outcomes: Vec<(DeliveryId, u32, Outcome)>,
    /// Whether `store` fails, as a database out of reach would.
    unreachable: bool,
    closed: bool,
}

/// The store's own error: what it could not do, with the cause as its source.
#[derive(Debug, thiserror::Error)]
#[error("the shared inbox database is out of reach")]
struct Unreachable(#[source] std::io::Error);

#[derive(Debug)]
struct Row {
    id: DeliveryId,
    key: DeliveryKey,
    body: Bytes,
    state: DeliveryState,
    received_at: i64,
    attempts: u32,
    due: i64,
    leased_until: i64,
    last_error: Option<String>,
}

impl Row {
    fn entry(&self) -> InboxEntry {
        InboxEntry::from(StoredDelivery {
            id: self.id.clone(),
            key: self.key,
            body: self.body.clone(),
            state: self.state,
            received_at: self.received_at,
            attempts: self.attempts,
            next_attempt_at: (self.state == DeliveryState::Pending).then_some(self.due),
            last_error: self.last_error.clone(),
        })
    }
}

impl VecStore {
    fn with<T: Send + 'static>(
        &self,
        apply: impl FnOnce(&mut State) -> Result<T, InboxError>,
    ) -> BoxFuture<'_, Result<T, InboxError>> {
        let mut state = self.state.lock().unwrap();
        let result = if state.closed {
            Err(InboxError::Closed)
        } else {
            apply(&mut state)
        };
        Box::pin(async move { result })
    }

    fn snapshot<T>(&self, read: impl FnOnce(&State) -> T) -> T {
        read(&self.state.lock().unwrap())
    }
}

impl Intake for VecStore {
    fn store(&self, delivery: NewDelivery, now: i64) -> BoxFuture<'_, Result<Stored, InboxError>> {
        self.with(move |state| {
            if state.unreachable {
                let cause = std::io::Error::other("connection refused");
                return Err(InboxError::backend(Unreachable(cause)));
            }
            let stored = match state.rows.iter().find(|row| row.key == delivery.key) {
                Some(row) => Stored::Duplicate(row.id.clone()),
                None => {
                    let id: DeliveryId = format!("d-{}", state.rows.len() + 1).parse().unwrap();
                    state.rows.push(Row {
                        id: id.clone(),
                        key: delivery.key,
                        body: Bytes::copy_from_slice(&delivery.body),
                        state: delivery.state,
                        received_at: now,
                        attempts: 0,
                        due: now,
                        leased_until: i64::MIN,
                        last_error: None,
                    });
                    Stored::New(id)
                }
            };
            state.stored.push(stored.clone());
            Ok(stored)
        })
    }
}

impl WorkQueue for VecStore {
    fn claim(
        &self,
        now: i64,
        limit: usize,
        lease_until: i64,
    ) -> BoxFuture<'_, Result<Claim, InboxError>> {
        self.with(move |state| {
            state.leases.push((now, lease_until));
            let mut claim = Claim::default();
            for row in &mut state.rows {
                let due = row.state == DeliveryState::Pending
                    && row.due <= now
                    && row.leased_until <= now;
                if due && claim.due.len() < limit {
                    row.leased_until = lease_until;
                    claim.due.push(Claimed {
                        id: row.id.clone(),
                        key: row.key,
                        body: row.body.clone(),
                        attempts: row.attempts,
                    });
                } else if row.state == DeliveryState::Pending && row.due > now {
                    claim.next_due = Some(claim.next_due.map_or(row.due, |it| it.min(row.due)));
                }
            }
            Ok(claim)
        })
    }

    fn complete(
        &self,
        id: DeliveryId,
        attempt: u32,
        outcome: Outcome,
        _now: i64,
    ) -> BoxFuture<'_, Result<(), InboxError>> {
        self.with(move |state| {
            state.outcomes.push((id.clone(), attempt, outcome.clone()));
            let Some(row) = state.rows.iter_mut().find(|row| row.id == id) else {
                return Ok(());
            };
            row.attempts = attempt;
            row.leased_until = i64::MIN;
            match outcome {
                Outcome::Done => row.state = DeliveryState::Done,
                Outcome::Retry { at, error } => (row.due, row.last_error) = (at, Some(error)),
                Outcome::Dead { error } => {
                    (row.state, row.last_error) = (DeliveryState::Dead, Some(error));
                }
            }
            Ok(())
        })
    }
}

impl InboxAdmin for VecStore {
    fn list(&self, filter: StateFilter) -> BoxFuture<'_, Result<Vec<InboxEntry>, InboxError>> {
        self.with(move |state| {
            let listed = state.rows.iter().filter(|row| match filter {
                StateFilter::All => true,
                StateFilter::Only(wanted) => row.state == wanted,
            });
            Ok(listed.map(Row::entry).collect())
        })
    }

    fn get<'a>(
        &'a self,
        id: &'a DeliveryId,
    ) -> BoxFuture<'a, Result<Option<InboxEntry>, InboxError>> {
        self.with(move |state| Ok(state.rows.iter().find(|row| row.id == *id).map(Row::entry)))
    }

    fn retry<'a>(
        &'a self,
        id: &'a DeliveryId,
        now: i64,
    ) -> BoxFuture<'a, Result<bool, InboxError>> {
        self.with(move |state| {
            let Some(row) = state
                .rows
                .iter_mut()
                .find(|row| row.id == *id && row.state == DeliveryState::Dead)
            else {
                return Ok(false);
            };
            (row.state, row.attempts, row.due) = (DeliveryState::Pending, 0, now);
            Ok(true)
        })
    }

    fn retry_dead(&self, _now: i64) -> BoxFuture<'_, Result<usize, InboxError>> {
        Box::pin(async { Ok(0) })
    }

    fn counts(&self) -> BoxFuture<'_, Result<StateCounts, InboxError>> {
        self.with(|state| {
            let mut counts = StateCounts::default();
            for row in &state.rows {
                match row.state {
                    DeliveryState::Pending => counts.pending += 1,
                    DeliveryState::Done => counts.done += 1,
                    DeliveryState::Dead => counts.dead += 1,
                    DeliveryState::Undecodable => counts.undecodable += 1,
                }
            }
            Ok(counts)
        })
    }
}

impl Store for VecStore {
    fn close(&self) -> BoxFuture<'_, ()> {
        self.state.lock().unwrap().closed = true;
        Box::pin(async {})
    }
}

#[tokio::test]
async fn a_server_runs_on_a_store_of_its_users_own() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(VecStore::default());
    let mut config = config(&dir);
    config.webhook.inbox = InboxConfig::Custom(store.clone());
    config.webhook.handler_timeout = Duration::from_secs(5);
    let failing = body(2);
    let down = Arc::new(AtomicBool::new(true));
    let archive = down.clone();
    let (handler, mut calls) = Scripted::new(move |job| {
        if job.body[..] == failing[..] && archive.load(Ordering::SeqCst) {
            Err(HandlerError::new("the archive is down"))
        } else {
            Ok(())
        }
    });
    let server = Running::start(config, handler).await;
    let client = client();
    let url = server.url("/");

    // Stored, then handled and completed.
    assert_eq!(deliver(&client, &url, &secret(), &body(1)).await, 200);
    let call = next_call(&mut calls).await;
    assert_eq!(
        (call.id.to_string().as_str(), call.attempt, call.ok),
        ("d-1", 1, true)
    );
    // A redelivery is answered 200, reported a duplicate by the store, and not handled again.
    assert_eq!(deliver(&client, &url, &secret(), &body(1)).await, 200);
    // A failing handler: retried with backoff, then a dead letter.
    assert_eq!(deliver(&client, &url, &secret(), &body(2)).await, 200);
    for attempt in 1..=3 {
        let call = next_call(&mut calls).await;
        assert_eq!(
            (call.id.to_string().as_str(), call.attempt, call.ok),
            ("d-2", attempt, false)
        );
    }
    let outcomes = eventually("the dead letter to be recorded", || async {
        let outcomes = store.snapshot(|state| state.outcomes.clone());
        (outcomes.len() == 4).then_some(outcomes)
    })
    .await;
    let d1: DeliveryId = "d-1".parse().unwrap();
    let d2: DeliveryId = "d-2".parse().unwrap();
    assert_eq!(outcomes[0], (d1.clone(), 1, Outcome::Done));
    assert!(
        matches!(&outcomes[1], (id, 1, Outcome::Retry { error, .. }) if *id == d2 && error == "the archive is down"),
        "{outcomes:?}"
    );
    assert!(
        matches!(&outcomes[2], (id, 2, Outcome::Retry { .. }) if *id == d2),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes[3],
        (
            d2.clone(),
            3,
            Outcome::Dead {
                error: "the archive is down".into()
            }
        )
    );
    assert_eq!(
        store.snapshot(|state| state.stored.clone()),
        [
            Stored::New(d1.clone()),
            Stored::Duplicate(d1),
            Stored::New(d2.clone())
        ]
    );
    // Every claim leased its deliveries for at least the handler timeout.
    let leases = store.snapshot(|state| state.leases.clone());
    assert!(!leases.is_empty());
    assert!(
        leases.iter().all(|(now, until)| until - now >= 5_000),
        "{leases:?}"
    );
    // The administrator's view, as `inbox list --state dead` and `inbox show d-2` give it.
    let dead = store
        .list(StateFilter::Only(DeliveryState::Dead))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    let json = serde_json::to_value(&dead[0]).unwrap();
    assert_eq!(json["id"], "d-2");
    assert_eq!(json["state"], "dead");
    assert_eq!(json["attempts"], 3);
    assert_eq!(json["lastError"], "the archive is down");
    assert_eq!(json["trigger"], "MOVED");
    assert_eq!(json["entityRefs"], serde_json::json!(["ref-2"]));
    let shown = store.get(&d2).await.unwrap().unwrap();
    assert_eq!(shown.body, body(2));
    // A store that keeps no history of attempts says so.
    assert!(
        matches!(store.attempts(&d2).await, Err(InboxError::Unsupported(_))),
        "the seam's default keeps no attempts"
    );
    let mut export = Vec::new();
    assert_eq!(store.export(&mut export).await.unwrap(), 2);
    let first: serde_json::Value =
        serde_json::from_slice(export.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(
        (&first["id"], &first["state"]),
        (&"d-1".into(), &"done".into())
    );
    // The metrics count what the store counts.
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("preservica_webhook_dead_letters 1"),
        "{metrics}"
    );

    // Re-queued through the seam, it runs again, as the `inbox retry` command would make it.
    down.store(false, Ordering::SeqCst);
    assert!(store.retry(&d2, 0).await.unwrap());
    let call = next_call(&mut calls).await;
    assert_eq!((call.id, call.attempt, call.ok), (d2, 1, true));

    server.stop().await;
    assert!(
        store.snapshot(|state| state.closed),
        "the server did not close its store"
    );
    assert!(calls.try_recv().is_err(), "a delivery was handled twice");
}

#[tokio::test]
async fn a_store_that_fails_gets_preservica_to_send_again_and_its_cause_logged() {
    let log = captured();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(VecStore::default());
    store.state.lock().unwrap().unreachable = true;
    let mut config = config(&dir);
    config.webhook.inbox = InboxConfig::Custom(store.clone());
    let (handler, mut calls) = Scripted::ok();
    let server = Running::start(config, handler).await;
    let client = client();

    // 503: not stored, so Preservica delivers it again later.
    assert_eq!(
        deliver(&client, &server.url("/"), &secret(), &body(1)).await,
        503
    );
    let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|line| line.contains("the inbox could not store a delivery"))
        .unwrap_or_else(|| panic!("no log line for the failure: {text}"));
    assert!(
        line.contains("the shared inbox database is out of reach: connection refused"),
        "{line}"
    );
    // Once the store is back, the redelivery is stored and handled.
    store.state.lock().unwrap().unreachable = false;
    assert_eq!(
        deliver(&client, &server.url("/"), &secret(), &body(1)).await,
        200
    );
    assert!(next_call(&mut calls).await.ok);
    server.stop().await;
}

/// The dashboard's delivery page over a store that keeps no attempt history: the count and
/// last error, and a note that each attempt is not kept.
#[cfg(feature = "admin")]
#[tokio::test]
async fn the_delivery_page_says_a_store_keeps_no_attempt_history() {
    use preservica_webhook_server::admin::{Admin, AdminConfig};

    let store = Arc::new(VecStore::default());
    let body = Bytes::from(body(1));
    let delivery = NewDelivery::new(DeliveryKey::of(&body), body, DeliveryState::Pending);
    let Stored::New(id) = store.store(delivery, 1_000).await.unwrap() else {
        panic!("not new")
    };
    let config = AdminConfig::new("127.0.0.1:0".parse().unwrap(), "custom");
    let admin = Admin::bind(config, store).await.unwrap();
    let addr = admin.local_addr();
    let running = tokio::spawn(admin.run());
    let page = client()
        .get(format!("http://{addr}/deliveries/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(
        page.contains("<th>Handler attempts</th><td>0</td>"),
        "{page}"
    );
    assert!(page.contains("keeps no attempt history"), "{page}");
    assert!(!page.contains(r#"<table id="attempts">"#), "{page}");
    running.abort();
}
