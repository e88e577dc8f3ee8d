use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http_body_util::Full;
use preservica_webhook_core::{Secret, sign};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::store::memory::MemoryStore;
use crate::{
    Handler, HandlerError, InboxConfig, Job, ServerError, Webhook, WebhookConfig, Workers,
};

const BODY: &str = r#"{"subscriptionId":"s","trigger":"MOVED","events":[{"event":"Moved","entityType":"IO","entityRef":"7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2"}]}"#;

/// Sends each job's body to the test.
struct Record(mpsc::UnboundedSender<String>);

impl Handler for Record {
    async fn handle(&self, job: &Job) -> Result<(), HandlerError> {
        let _ = self.0.send(String::from_utf8_lossy(&job.body).into_owned());
        Ok(())
    }
}

fn config(store: Arc<MemoryStore>) -> WebhookConfig {
    let mut config = WebhookConfig::new(vec![Secret::new("my_shared_secret").unwrap()]);
    config.inbox = InboxConfig::Custom(store);
    config
}

#[tokio::test]
async fn workers_handle_what_an_intake_only_receiver_stores() {
    let store = Arc::new(MemoryStore::new(Counter::default()));
    let mut intake_config = config(Arc::clone(&store));
    intake_config.workers = 0;
    let (tx, mut handled) = mpsc::unbounded_channel();
    let intake = Webhook::start(&intake_config, Record(tx.clone()))
        .await
        .unwrap();

    let secret = Secret::new("my_shared_secret").unwrap();
    let request = Request::post("/")
        .header(
            "Preservica-Signature",
            sign(&secret, BODY.as_bytes()).to_hex(),
        )
        .body(Full::new(bytes::Bytes::from_static(BODY.as_bytes())))
        .unwrap();
    let response = tower::ServiceExt::oneshot(intake.service(), request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let early = tokio::time::timeout(Duration::from_millis(300), handled.recv()).await;
    assert!(
        early.is_err(),
        "a receiver without workers handled {early:?}"
    );

    let workers = Workers::start(&config(Arc::clone(&store)), Record(tx))
        .await
        .unwrap();
    let body = tokio::time::timeout(Duration::from_secs(5), handled.recv())
        .await
        .expect("the workers handle the stored delivery")
        .unwrap();
    assert_eq!(body, BODY);
    workers.shutdown().await;
    intake.shutdown().await;
}

#[tokio::test]
async fn workers_need_at_least_one_worker() {
    let mut config = config(Arc::new(MemoryStore::new(Counter::default())));
    config.workers = 0;
    let (tx, _handled) = mpsc::unbounded_channel();
    let err = Workers::start(&config, Record(tx)).await.unwrap_err();
    assert!(matches!(err, ServerError::ZeroLimit("workers")), "{err:?}");
}

/// The dispatcher on paused tokio time.
mod paused {
    use std::sync::Mutex;

    use bytes::Bytes;
    use preservica_webhook_core::DeliveryKey;
    use prometheus_client::metrics::counter::Counter;

    use super::super::*;
    use crate::inbox::DeliveryState;
    use crate::store::NewDelivery;
    use crate::store::memory::MemoryStore;

    /// Fails its first `failures` calls; records when (tokio time) each call came.
    #[derive(Debug)]
    struct Flaky {
        failures: usize,
        calls: Mutex<Vec<Instant>>,
    }

    impl Handler for Flaky {
        async fn handle(&self, _job: &Job) -> Result<(), HandlerError> {
            let mut calls = self.calls.lock().unwrap();
            calls.push(Instant::now());
            if calls.len() <= self.failures {
                return Err(HandlerError::new("not yet"));
            }
            Ok(())
        }
    }

    const BODY: &str = r#"{"subscriptionId":"s","trigger":"MOVED","events":[{"event":"Moved","entityType":"IO","entityRef":"r","identifiers":[]}]}"#;

    #[tokio::test(start_paused = true)]
    async fn retries_wait_out_their_backoff_on_tokio_time() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(Counter::default()));
        let body = Bytes::from_static(BODY.as_bytes());
        let delivery = NewDelivery::new(DeliveryKey::of(&body), body, DeliveryState::Pending);
        store.store(delivery, now_millis()).await.unwrap();
        let work = Arc::new(Work {
            store: Arc::clone(&store),
            metrics: Arc::new(Metrics::new()),
            wake: Arc::default(),
        });
        let handler = Arc::new(Flaky {
            failures: 2,
            calls: Mutex::default(),
        });
        let settings = WorkerSettings {
            workers: 1,
            handler_timeout: Duration::from_secs(30),
            retry: RetryPolicy {
                max_attempts: 5,
                base_delay: Duration::from_secs(600),
                max_delay: Duration::from_secs(3_600),
            },
            lease_margin: Duration::from_secs(60),
            retention: None,
            shutdown_grace: Duration::from_secs(1),
        };
        let stop = CancellationToken::new();
        let started = Instant::now();
        let workers = tokio::spawn(dispatch(
            Arc::clone(&work),
            Arc::clone(&handler),
            settings,
            stop.clone(),
        ));
        // Hours of backoff pass in no time: tokio's clock moves on whenever all tasks wait.
        while handler.calls.lock().unwrap().len() < 3 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(
                started.elapsed() < Duration::from_secs(7_200),
                "no third call"
            );
        }
        stop.cancel();
        workers.await.unwrap();
        let calls = handler.calls.lock().unwrap().clone();
        let gaps: Vec<u64> = calls
            .windows(2)
            .map(|it| (it[1] - it[0]).as_secs())
            .collect();
        // Jitter keeps each delay between half the backoff and all of it, plus at most one
        // poll interval before the dispatcher sees the retry fall due.
        assert!(
            (300..=601).contains(&gaps[0]),
            "first retry after {}s",
            gaps[0]
        );
        assert!(
            (600..=1_201).contains(&gaps[1]),
            "second retry after {}s",
            gaps[1]
        );
        let entries = store.list(crate::inbox::StateFilter::All).await.unwrap();
        assert_eq!(
            (entries[0].state, entries[0].attempts),
            (DeliveryState::Done, 3)
        );
        assert_eq!(
            handler.calls.lock().unwrap().len(),
            3,
            "no call after success"
        );
    }
}
