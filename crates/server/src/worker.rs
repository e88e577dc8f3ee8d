//! Processing: claims due deliveries from the inbox and calls the handler on a bounded pool,
//! retrying failures with backoff until they succeed or become dead letters.

use std::any::Any;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use preservica_webhook_core::Delivery;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::RetryPolicy;
use crate::error::{Chain, InboxError};
use crate::handler::{Handler, HandlerError, Job};
use crate::inbox::now_millis;
use crate::metrics::Metrics;
use crate::store::{BoxFuture, Claim, Claimed, DeliveryId, Outcome, Store};

/// How often the inbox is polled when nothing wakes the workers (deliveries re-queued by
/// another process are picked up within this).
const POLL: Duration = Duration::from_secs(1);
/// How many deliveries per worker are claimed ahead of the workers.
const CLAIM_AHEAD: usize = 2;
/// How often processed deliveries past their retention are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);
/// How long a claimed delivery's lease outlasts the handler timeout: time to record the
/// outcome. A call is cut at the timeout, so a lease ends only when its worker is gone.
const LEASE_MARGIN: Duration = Duration::from_secs(60);

/// What the workers share with the request side: the store, the metrics, and the wake-up
/// rung when a delivery is stored. The request side builds it; the workers never reach back.
#[derive(Debug)]
pub(crate) struct Work {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) wake: Arc<tokio::sync::Notify>,
}

/// What the workers need to know.
#[derive(Debug, Clone)]
pub(crate) struct WorkerSettings {
    pub(crate) workers: usize,
    pub(crate) handler_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) retention: Option<Duration>,
    pub(crate) shutdown_grace: Duration,
}

/// The workers' time, in ms since the Unix epoch: the wall clock when they started plus tokio's
/// time since. Lease deadlines, retry times and outcomes follow tokio's clock, which never
/// steps back when the system clock is set, and which tests pause and advance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    start_ms: i64,
    start: Instant,
}

impl Clock {
    pub(crate) fn start() -> Clock {
        Clock {
            start_ms: now_millis(),
            start: Instant::now(),
        }
    }

    pub(crate) fn now_ms(self) -> i64 {
        let elapsed = i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.start_ms.saturating_add(elapsed)
    }
}

/// Runs until `stop` is cancelled, then lets running calls finish within the grace period.
pub(crate) async fn dispatch<H: Handler>(
    work: Arc<Work>,
    handler: Arc<H>,
    settings: WorkerSettings,
    stop: CancellationToken,
) {
    // Each task calls the handler and queues the outcome itself without waiting for its
    // commit (a later claim is applied after it), so outcomes of concurrent calls share inbox
    // commits and neither this loop nor a worker slot waits for a disk sync.
    //
    // Claims run ahead of the workers: up to `ahead` leased deliveries wait in `ready`, and
    // one claim at a time is in flight beside the running calls, so a freed worker starts at
    // once instead of after a round trip to the store, and one claim fetches many. A buffered
    // delivery is leased like a running one; if the server stops first it stays pending and
    // runs at the next start (or, in a shared store, once its lease ends).
    let clock = Clock::start();
    let mut running: JoinSet<()> = JoinSet::new();
    let mut ready: VecDeque<Claimed> = VecDeque::new();
    let ahead = settings.workers.saturating_mul(CLAIM_AHEAD).max(1);
    let mut claiming: Option<BoxFuture<'_, Result<Claim, InboxError>>> = None;
    // Whether something may have become due since the last claim came back short.
    let mut look = true;
    // How many the claim in flight asked for.
    let mut asked = 0;
    let lease = settings.handler_timeout.saturating_add(LEASE_MARGIN);
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut wait = POLL;
    loop {
        while running.len() < settings.workers {
            let Some(claimed) = ready.pop_front() else {
                break;
            };
            look = true;
            running.spawn(process(
                Arc::clone(&work),
                Arc::clone(&handler),
                settings.handler_timeout,
                settings.retry.clone(),
                claimed,
                clock,
            ));
        }
        let room = ahead.saturating_sub(ready.len());
        if claiming.is_none() && look && room > 0 {
            let now = clock.now_ms();
            claiming = Some(work.store.claim(now, room, now.saturating_add(lease_ms)));
            (asked, look) = (room, false);
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            claimed = async { claiming.as_mut().expect("guarded").await }, if claiming.is_some() => {
                claiming = None;
                wait = POLL;
                match claimed {
                    Ok(claim) => {
                        // A full claim may have left more behind: ask again at once.
                        look = claim.due.len() >= asked;
                        ready.extend(claim.due);
                        if let Some(next) = claim.next_due {
                            let until = u64::try_from(next.saturating_sub(clock.now_ms())).unwrap_or(0);
                            wait = wait.min(Duration::from_millis(until));
                        }
                    }
                    Err(err) => {
                        tracing::error!(error = %Chain(&err), "the inbox could not hand out deliveries");
                    }
                }
            }
            Some(_) = running.join_next(), if !running.is_empty() => look = true,
            () = work.wake.notified() => look = true,
            () = tokio::time::sleep(wait), if claiming.is_none() => {
                look = true;
                wait = POLL;
            }
            _ = prune.tick() => prune_old(&work, settings.retention, clock).await,
        }
        // Every call that has ended frees its slot now.
        while running.try_join_next().is_some() {}
    }
    drop(claiming);
    let deadline = Instant::now() + settings.shutdown_grace;
    while !running.is_empty() {
        match tokio::time::timeout_at(deadline, running.join_next()).await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                tracing::warn!(
                    running = running.len(),
                    "handler calls still running after the shutdown grace period were stopped; \
                     their deliveries stay pending and run again at the next start"
                );
                running.abort_all();
                break;
            }
        }
    }
}

/// Calls the handler for one delivery and records the outcome.
async fn process<H: Handler>(
    work: Arc<Work>,
    handler: Arc<H>,
    timeout: Duration,
    retry: RetryPolicy,
    claimed: Claimed,
    clock: Clock,
) {
    let attempt = claimed.attempts.saturating_add(1);
    let id = claimed.id;
    let delivery = match Delivery::from_slice(&claimed.body) {
        Ok(delivery) => delivery,
        Err(err) => {
            let detail =
                std::error::Error::source(&err).map_or_else(String::new, |it| format!(": {it}"));
            let error = format!("the stored body is not a valid delivery{detail}");
            work.metrics.dead_lettered.inc();
            complete(&work, id, attempt, Outcome::Dead { error }, clock).await;
            return;
        }
    };
    let job = Job {
        id: id.clone(),
        key: claimed.key,
        body: claimed.body,
        delivery,
        attempt,
    };
    let call = AssertUnwindSafe(handler.handle(&job)).catch_unwind();
    let result = match tokio::time::timeout(timeout, call).await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => Err(HandlerError::new(format!(
            "the handler panicked: {}",
            panic_message(panic)
        ))),
        Err(_) => Err(HandlerError::new(format!(
            "the handler did not finish within {} ms",
            timeout.as_millis()
        ))),
    };
    let outcome = outcome(&work, &retry, &id, attempt, result, clock);
    complete(&work, id, attempt, outcome, clock).await;
}

/// Records an outcome; one that cannot be recorded leaves the delivery to run again.
async fn complete(work: &Work, id: DeliveryId, attempt: u32, outcome: Outcome, clock: Clock) {
    let completed = work
        .store
        .complete(id, attempt, outcome, clock.now_ms())
        .await;
    if let Err(err) = completed {
        tracing::error!(error = %Chain(&err), "the inbox could not record a handler outcome");
    }
}

/// Counts and logs a call's result and decides what becomes of the delivery.
fn outcome(
    work: &Work,
    retry: &RetryPolicy,
    id: &DeliveryId,
    attempt: u32,
    result: Result<(), HandlerError>,
    clock: Clock,
) -> Outcome {
    let err = match result {
        Ok(()) => {
            work.metrics.handler_successes.inc();
            tracing::debug!(%id, attempt, "delivery processed");
            return Outcome::Done;
        }
        Err(err) => err,
    };
    work.metrics.handler_failures.inc();
    let give_up = err.is_permanent() || attempt >= retry.max_attempts;
    if give_up {
        work.metrics.dead_lettered.inc();
        tracing::warn!(
            %id,
            attempt,
            error = err.message(),
            "delivery is a dead letter"
        );
        return Outcome::Dead {
            error: err.message().to_owned(),
        };
    }
    work.metrics.handler_retries.inc();
    let delay = retry.jittered_delay(attempt);
    let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
    tracing::info!(
        %id,
        attempt,
        retry_in_ms = delay_ms,
        error = err.message(),
        "handler failed; will retry"
    );
    Outcome::Retry {
        at: clock.now_ms().saturating_add(delay_ms),
        error: err.message().to_owned(),
    }
}

async fn prune_old(work: &Work, retention: Option<Duration>, clock: Clock) {
    let Some(retention) = retention else {
        return;
    };
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let before = clock.now_ms().saturating_sub(retention_ms);
    match work.store.prune(before).await {
        Ok(0) => {}
        Ok(pruned) => tracing::info!(pruned, "pruned processed deliveries past their retention"),
        Err(err) => tracing::error!(error = %Chain(&err), "the inbox could not prune"),
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        return (*text).to_owned();
    }
    if let Some(text) = payload.downcast_ref::<String>() {
        return text.clone();
    }
    "a non-text panic payload".to_owned()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;
    use preservica_webhook_core::DeliveryKey;
    use prometheus_client::metrics::counter::Counter;

    use super::*;
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
