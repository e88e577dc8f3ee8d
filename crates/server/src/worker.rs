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
            ));
        }
        let room = ahead.saturating_sub(ready.len());
        if claiming.is_none() && look && room > 0 {
            let now = now_millis();
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
                            let until = u64::try_from(next.saturating_sub(now_millis())).unwrap_or(0);
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
            _ = prune.tick() => prune_old(&work, settings.retention).await,
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
            complete(&work, id, attempt, Outcome::Dead { error }).await;
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
    let outcome = outcome(&work, &retry, &id, attempt, result);
    complete(&work, id, attempt, outcome).await;
}

/// Records an outcome; one that cannot be recorded leaves the delivery to run again.
async fn complete(work: &Work, id: DeliveryId, attempt: u32, outcome: Outcome) {
    let completed = work
        .store
        .complete(id, attempt, outcome, now_millis())
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
        at: now_millis().saturating_add(delay_ms),
        error: err.message().to_owned(),
    }
}

async fn prune_old(work: &Work, retention: Option<Duration>) {
    let Some(retention) = retention else {
        return;
    };
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let before = now_millis().saturating_sub(retention_ms);
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
