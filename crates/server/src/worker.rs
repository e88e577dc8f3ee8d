//! Processing: claims due deliveries from the inbox and calls the handler on a bounded pool,
//! retrying failures with backoff until they succeed or become dead letters. [`Workers`] runs
//! them without a receiver, for an inbox that receivers elsewhere fill.

use std::any::Any;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use preservica_webhook_core::Delivery;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{RetryPolicy, WebhookConfig};
use crate::error::{Chain, InboxError, ServerError};
use crate::handler::{Handler, HandlerError, Job};
use crate::inbox::now_millis;
use crate::metrics::Metrics;
use crate::store::{self, BoxFuture, Claim, Claimed, DeliveryId, Outcome, Store};

/// How often the inbox is polled when nothing wakes the workers (deliveries re-queued by
/// another process are picked up within this).
const POLL: Duration = Duration::from_secs(1);
/// How many deliveries per worker are claimed ahead of the workers.
const CLAIM_AHEAD: usize = 2;
/// How often processed deliveries past their retention are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);

/// The workers alone, without a receiver: a process that handles what receivers elsewhere
/// store in an inbox they share (a database several processes open), so that taking deliveries
/// in and handling them scale apart. Receivers that only store are configured with
/// [`WebhookConfig::workers`] set to 0.
///
/// The store, workers, handler timeout, lease margin, retries, retention and shutdown grace
/// come from a [`WebhookConfig`]; its path, secrets and body limits are the receiver's and
/// are not used. An inbox only one process can open (the SQLite file) gains nothing from it:
/// its workers run in the server that holds it.
///
/// ```no_run
/// # use preservica_webhook_server::{Handler, InboxConfig, WebhookConfig, Workers};
/// # async fn run(shared: InboxConfig, handler: impl Handler) -> Result<(), Box<dyn std::error::Error>> {
/// let mut config = WebhookConfig::new(Vec::new());
/// config.inbox = shared;
/// let workers = Workers::start(&config, handler).await?;
/// preservica_webhook_server::shutdown_signal().await;
/// workers.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Workers {
    store: Arc<dyn Store>,
    task: Option<JoinHandle<()>>,
    stop: CancellationToken,
}

impl Workers {
    /// Opens the inbox and starts the workers that call `handler`.
    ///
    /// # Errors
    /// [`ServerError::ZeroLimit`] for zero workers or attempts, [`ServerError::Inbox`] when
    /// the inbox cannot be opened.
    pub async fn start<H: Handler>(
        config: &WebhookConfig,
        handler: H,
    ) -> Result<Workers, ServerError> {
        if config.workers == 0 {
            return Err(ServerError::ZeroLimit("workers"));
        }
        if config.retry.max_attempts == 0 {
            return Err(ServerError::ZeroLimit("retry.max_attempts"));
        }
        let metrics = Arc::new(Metrics::new());
        let store = store::open(config.inbox.clone(), metrics.inbox_commits.clone()).await?;
        let work = Arc::new(Work {
            store: Arc::clone(&store),
            metrics,
            wake: Arc::new(tokio::sync::Notify::new()),
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(dispatch(
            work,
            Arc::new(handler),
            WorkerSettings::from(config),
            stop.clone(),
        ));
        Ok(Workers {
            store,
            task: Some(task),
            stop,
        })
    }

    /// Stops claiming, lets running handler calls finish within
    /// [`WebhookConfig::shutdown_grace`], and closes the inbox.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.store.close().await;
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

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
    /// How long a lease outlasts the handler timeout: time to record the outcome. A call is
    /// cut at the timeout, so a lease ends only when its worker is gone.
    pub(crate) lease_margin: Duration,
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

impl From<&WebhookConfig> for WorkerSettings {
    fn from(config: &WebhookConfig) -> WorkerSettings {
        WorkerSettings {
            workers: config.workers,
            handler_timeout: config.handler_timeout,
            lease_margin: config.lease_margin,
            retry: config.retry.clone(),
            retention: config.retention,
            shutdown_grace: config.shutdown_grace,
        }
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
    // Each with the end of its lease.
    let mut ready: VecDeque<(Claimed, i64)> = VecDeque::new();
    let ahead = settings.workers.saturating_mul(CLAIM_AHEAD).max(1);
    let mut claiming: Option<BoxFuture<'_, Result<Claim, InboxError>>> = None;
    // Whether something may have become due since the last claim came back short.
    let mut look = true;
    // How many the claim in flight asked for.
    let mut asked = 0;
    let millis = |duration: Duration| i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
    let lease_ms = millis(
        settings
            .handler_timeout
            .saturating_add(settings.lease_margin),
    );
    // A buffered delivery starts only while its lease still covers a whole call and half the
    // margin to record the outcome; one that waited longer is left to run out and be claimed
    // again, so that no other receiver can take it over while it runs here.
    let start_within = millis(
        settings
            .handler_timeout
            .saturating_add(settings.lease_margin / 2),
    );
    let mut lease_until = 0;
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut wait = POLL;
    loop {
        while running.len() < settings.workers {
            let Some((claimed, until)) = ready.pop_front() else {
                break;
            };
            look = true;
            if clock.now_ms().saturating_add(start_within) > until {
                tracing::debug!(id = %claimed.id, "a claimed delivery waited past its lease's start; leaving it to be claimed again");
                continue;
            }
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
            lease_until = now.saturating_add(lease_ms);
            claiming = Some(work.store.claim(now, room, lease_until));
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
                        ready.extend(claim.due.into_iter().map(|it| (it, lease_until)));
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
mod tests;
