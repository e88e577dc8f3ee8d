//! This receiver's run, recorded in the inbox: at start, at every heartbeat and at a clean
//! stop (see [`RunRecord`]). The windows between runs are when nobody listened; `gaps` and
//! catch-up read them.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use preservica_webhook_core::recovery::{self, Gap, GapRules, Run};

use crate::error::{Chain, InboxError};
use crate::inbox::now_millis;
use crate::store::{RunRecord, Store};

/// How often a receiver records its heartbeat unless configured otherwise
/// ([`WebhookConfig::heartbeat`](crate::WebhookConfig::heartbeat)).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);

/// How far each gap is widened on both sides unless asked otherwise: for clocks that disagree
/// and events recorded a little off their moment.
pub const DEFAULT_GAP_MARGIN: Duration = Duration::from_secs(120);

/// The windows no recorded run covered up to `now` (ms since the Unix epoch), read with the
/// receivers' `heartbeat` and widened by `margin` (see [`recovery::gaps`]).
pub fn gaps(runs: &[RunRecord], now: i64, heartbeat: Duration, margin: Duration) -> Vec<Gap> {
    let millis = |duration: Duration| i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
    let runs: Vec<Run> = runs
        .iter()
        .map(|run| Run {
            started_at: run.started_at,
            last_seen_at: run.last_seen_at,
            stopped_at: run.stopped_at,
        })
        .collect();
    let rules = GapRules {
        heartbeat: millis(heartbeat),
        margin: millis(margin),
    };
    recovery::gaps(&runs, now, rules)
}

/// Records the run until `stop` is cancelled, then its stop.
pub(crate) fn spawn(
    store: Arc<dyn Store>,
    every: Duration,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let started_at = now_millis();
        let mut run = RunRecord {
            id: format!("{:016x}", rand::rng().random::<u64>()),
            started_at,
            last_seen_at: started_at,
            stopped_at: None,
        };
        let mut failing = false;
        loop {
            match store.record_run(&run).await {
                Ok(()) => failing = false,
                Err(InboxError::Unsupported(_)) => {
                    tracing::info!(
                        "this inbox does not record when receivers run, so `gaps` cannot tell when this one was down"
                    );
                    return;
                }
                // Once per outage, not at every heartbeat.
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!(
                        "could not record this receiver's heartbeat: {}; a gap may be reported for this time",
                        Chain(&err)
                    );
                }
                Err(_) => {}
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(every) => {}
            }
            run.last_seen_at = now_millis();
        }
        let now = now_millis();
        run.last_seen_at = now;
        run.stopped_at = Some(now);
        if let Err(err) = store.record_run(&run).await {
            tracing::warn!(
                "could not record this receiver's stop: {}; its run will read as ending at its last heartbeat",
                Chain(&err)
            );
        }
    })
}
