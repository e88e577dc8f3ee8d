//! Processing: claims due deliveries from the inbox and calls the handler on a bounded pool,
//! retrying failures with backoff until they succeed or become dead letters.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use preservica_webhook_core::Delivery;
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::RetryPolicy;
use crate::handler::{Handler, HandlerError, Job};
use crate::inbox::now_millis;
use crate::service::Shared;
use crate::store::{Claimed, Outcome};

/// How often the inbox is polled when nothing wakes the workers (deliveries re-queued by
/// another process are picked up within this).
const POLL: Duration = Duration::from_secs(1);
/// How often processed deliveries past their retention are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);

/// What the workers need to know.
#[derive(Debug, Clone)]
pub(crate) struct WorkerSettings {
    pub(crate) workers: usize,
    pub(crate) handler_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) retention: Duration,
    pub(crate) shutdown_grace: Duration,
}

type Joined = Result<(Id, Result<(), HandlerError>), JoinError>;

/// Runs until `stop` is cancelled, then lets running calls finish within the grace period.
pub(crate) async fn dispatch<H: Handler>(
    shared: Arc<Shared>,
    handler: Arc<H>,
    settings: WorkerSettings,
    stop: CancellationToken,
) {
    let mut running: JoinSet<Result<(), HandlerError>> = JoinSet::new();
    let mut jobs: HashMap<Id, (i64, u32)> = HashMap::new();
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut wait = POLL;
        let free = settings.workers.saturating_sub(running.len());
        if free > 0 {
            let now = now_millis();
            let skip = jobs.values().map(|(id, _)| *id).collect();
            if let Ok(claim) = shared.store.claim(now, free, skip).await {
                for claimed in claim.due {
                    start(
                        &shared,
                        &handler,
                        &settings,
                        &mut running,
                        &mut jobs,
                        claimed,
                    )
                    .await;
                }
                if let Some(next) = claim.next_due {
                    let until = u64::try_from(next.saturating_sub(now)).unwrap_or(0);
                    wait = wait.min(Duration::from_millis(until));
                }
            }
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            Some(joined) = running.join_next_with_id(), if !running.is_empty() => {
                record(&shared, &settings.retry, &mut jobs, joined).await;
            }
            () = shared.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
            _ = prune.tick() => prune_old(&shared, settings.retention).await,
        }
    }
    let deadline = Instant::now() + settings.shutdown_grace;
    while !running.is_empty() {
        match tokio::time::timeout_at(deadline, running.join_next_with_id()).await {
            Ok(Some(joined)) => record(&shared, &settings.retry, &mut jobs, joined).await,
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

async fn start<H: Handler>(
    shared: &Shared,
    handler: &Arc<H>,
    settings: &WorkerSettings,
    running: &mut JoinSet<Result<(), HandlerError>>,
    jobs: &mut HashMap<Id, (i64, u32)>,
    claimed: Claimed,
) {
    let attempt = claimed.attempts.saturating_add(1);
    let delivery = match Delivery::from_slice(&claimed.body) {
        Ok(delivery) => delivery,
        Err(err) => {
            let error = format!("the stored body is not a valid delivery: {err}");
            shared.metrics.dead_lettered.inc();
            let _ = shared
                .store
                .finish(claimed.id, attempt, Outcome::Dead { error })
                .await;
            return;
        }
    };
    let job = Job {
        id: claimed.id,
        key: claimed.key,
        body: claimed.body,
        delivery,
        attempt,
    };
    let handler = Arc::clone(handler);
    let timeout = settings.handler_timeout;
    let task = running.spawn(async move {
        match tokio::time::timeout(timeout, handler.handle(&job)).await {
            Ok(result) => result,
            Err(_) => Err(HandlerError::new(format!(
                "the handler did not finish within {} ms",
                timeout.as_millis()
            ))),
        }
    });
    jobs.insert(task.id(), (claimed.id, attempt));
}

async fn record(
    shared: &Shared,
    retry: &RetryPolicy,
    jobs: &mut HashMap<Id, (i64, u32)>,
    joined: Joined,
) {
    let (task, result) = match joined {
        Ok((task, result)) => (task, result),
        Err(err) if err.is_panic() => {
            let task = err.id();
            let message = panic_message(err.into_panic());
            (
                task,
                Err(HandlerError::new(format!(
                    "the handler panicked: {message}"
                ))),
            )
        }
        Err(err) => {
            jobs.remove(&err.id());
            return;
        }
    };
    let Some((id, attempt)) = jobs.remove(&task) else {
        return;
    };
    let outcome = match result {
        Ok(()) => {
            shared.metrics.handler_successes.inc();
            tracing::debug!(id, attempt, "delivery processed");
            Outcome::Done
        }
        Err(err) => {
            shared.metrics.handler_failures.inc();
            let give_up = err.is_permanent() || attempt >= retry.max_attempts;
            if give_up {
                shared.metrics.dead_lettered.inc();
                tracing::warn!(
                    id,
                    attempt,
                    error = err.message(),
                    "delivery is a dead letter"
                );
                Outcome::Dead {
                    error: err.message().to_owned(),
                }
            } else {
                shared.metrics.handler_retries.inc();
                let delay = retry.jittered_delay(attempt);
                let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                tracing::info!(
                    id,
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
        }
    };
    let _ = shared.store.finish(id, attempt, outcome).await;
}

async fn prune_old(shared: &Shared, retention: Duration) {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let before = now_millis().saturating_sub(retention_ms);
    if let Ok(pruned) = shared.store.prune(before).await
        && pruned > 0
    {
        tracing::info!(pruned, "pruned processed deliveries past their retention");
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
