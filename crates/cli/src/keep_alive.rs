//! `serve --subscribe` keeps its subscriptions: it checks every `--check-subscriptions` that
//! each still exists on Preservica, subscribes again (with the handshake) when one is gone,
//! and recovers what was sent while it was missing, as `catch-up` does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use preservica_webhook_client::Client;
use preservica_webhook_core::recovery::Gap;
use preservica_webhook_core::{Secret, SubscriptionId, TriggerType};
use preservica_webhook_server::prometheus_client::metrics::counter::Counter;
use preservica_webhook_server::run_log;
use preservica_webhook_server::store::{Store, now_millis};

use crate::recovery;

/// What the check needs.
#[derive(Debug)]
pub(crate) struct KeepAlive {
    pub(crate) client: Client,
    pub(crate) url: String,
    pub(crate) triggers: Vec<TriggerType>,
    pub(crate) secret: Secret,
    pub(crate) every: Duration,
    pub(crate) store: Arc<dyn Store>,
    /// Counts re-created subscriptions (`/metrics`).
    pub(crate) recreated: Counter,
    /// The subscriptions this serve made, re-created ones included (for --unsubscribe-on-exit).
    pub(crate) made: Arc<Mutex<Vec<SubscriptionId>>>,
}

impl KeepAlive {
    /// Checks for ever; the caller aborts the task when serve stops.
    pub(crate) async fn run(self) {
        let start = now_millis();
        let mut seen: HashMap<TriggerType, i64> =
            self.triggers.iter().map(|it| (it.clone(), start)).collect();
        let mut failing = false;
        loop {
            tokio::time::sleep(self.every).await;
            let checked_at = now_millis();
            let existing = match self.client.subscriptions().await {
                Ok(existing) => {
                    failing = false;
                    existing
                }
                Err(err) => {
                    if !failing {
                        tracing::warn!(
                            "cannot check that the subscriptions still exist: {:#}; trying again in {:?}",
                            anyhow::Error::new(err),
                            self.every
                        );
                    }
                    failing = true;
                    continue;
                }
            };
            for trigger in &self.triggers {
                let present = existing.iter().any(|it| {
                    it.trigger_type.as_ref() == Some(trigger)
                        && crate::serve::same_url(&it.url, &self.url)
                });
                if present {
                    seen.insert(trigger.clone(), checked_at);
                    continue;
                }
                let since = seen.get(trigger).copied().unwrap_or(start);
                self.recreate(trigger, since, checked_at).await;
                seen.insert(trigger.clone(), checked_at);
            }
        }
    }

    /// Subscribes again for `trigger`, gone at some time between `since` and `now`, and
    /// recovers that window.
    async fn recreate(&self, trigger: &TriggerType, since: i64, now: i64) {
        tracing::warn!(
            "the {trigger} subscription for {} is gone from Preservica; subscribing again",
            self.url
        );
        match self
            .client
            .subscribe(&self.url, trigger, &self.secret)
            .await
        {
            Ok(created) => {
                self.recreated.inc();
                tracing::warn!(id = %created.id, "subscribed {trigger} again");
                self.made
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(created.id);
            }
            Err(err) => {
                tracing::error!(
                    "cannot subscribe {} to {trigger} again: {:#}; the next check tries again",
                    self.url,
                    anyhow::Error::new(err)
                );
                return;
            }
        }
        // Past the checks that bound it, for clocks that disagree, as gaps are widened.
        let margin = i64::try_from(run_log::DEFAULT_GAP_MARGIN.as_millis()).unwrap_or(i64::MAX);
        let window = Gap {
            from: since - margin,
            to: now_millis().max(now) + margin,
        };
        match recovery::recover_windows(
            &self.client,
            self.store.as_ref(),
            &[window],
            Some(&self.url),
        )
        .await
        {
            Ok(summary) => tracing::info!(
                filed = summary.filed,
                "recovered the notifications missed while the {trigger} subscription was gone"
            ),
            Err(err) => tracing::error!(
                "cannot recover what was missed while the {trigger} subscription was gone: {err:#}; run `preservica-webhook catch-up --url {}` for that time",
                self.url
            ),
        }
    }
}
