//! `gaps` and `catch-up`: the windows no receiver was up, and deliveries filed for the
//! notifications Preservica sent then, recovered from Preservica's own records.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures_util::{StreamExt as _, TryStreamExt as _};
use preservica_webhook_client::{Client, EventAction, EventsQuery, MonitorsQuery};
use preservica_webhook_core::recovery::{
    self, Gap, Received, RecordedEvent, RecoveredDelivery, Recovery,
};
use preservica_webhook_core::{EntityType, TriggerType};
use preservica_webhook_server::run_log;
use preservica_webhook_server::store::{InboxAdmin, NewDelivery, Store, Stored, now_millis};
use preservica_webhook_server::{DeliveryState, StateFilter};
use serde::Serialize;

use crate::cli::{CatchUpArgs, GapsArgs, GlobalArgs};
use crate::config::config_error;
use crate::output;

/// The gaps in an inbox's recorded runs, up to `now`, read with the server's default
/// heartbeat.
pub(crate) async fn gaps_in(
    inbox: &dyn InboxAdmin,
    margin: Duration,
    now: i64,
) -> anyhow::Result<Vec<Gap>> {
    let runs = inbox
        .runs()
        .await
        .context("cannot read when receivers ran")?;
    Ok(run_log::gaps(
        &runs,
        now,
        run_log::DEFAULT_HEARTBEAT,
        margin,
    ))
}

/// A gap as printed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GapLine {
    from: String,
    to: String,
    seconds: i64,
}

fn gap_line(gap: &Gap) -> GapLine {
    GapLine {
        from: rfc3339(gap.from),
        to: rfc3339(gap.to),
        seconds: (gap.to - gap.from) / 1000,
    }
}

fn rfc3339(millis: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(millis).map_or_else(
        || millis.to_string(),
        |it| it.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// `gaps`: the windows in which no receiver on the inbox was up.
///
/// # Errors
/// An inbox that cannot be opened or does not record runs.
pub(crate) async fn gaps(global: &GlobalArgs, args: &GapsArgs) -> anyhow::Result<ExitCode> {
    let location = args.nats.or_inbox(&args.inbox)?;
    let inbox = crate::inbox::open_admin(&location).await?;
    let found = gaps_in(inbox.as_ref(), args.margin, now_millis()).await?;
    let lines: Vec<GapLine> = found.iter().map(gap_line).collect();
    if global.json {
        output::json(&lines)?;
    } else if lines.is_empty() {
        output::note("no gaps: a receiver was up all the time since the first one started");
    } else {
        let rows: Vec<Vec<String>> = lines
            .iter()
            .map(|it| vec![it.from.clone(), it.to.clone(), format_seconds(it.seconds)])
            .collect();
        output::text(&output::table(&["FROM", "TO", "LENGTH"], &rows))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn format_seconds(seconds: i64) -> String {
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if hours > 0 {
        format!("{hours}h{minutes:02}m")
    } else if minutes > 0 {
        format!("{minutes}m{seconds:02}s")
    } else {
        format!("{seconds}s")
    }
}

/// What one catch-up did, in all its windows.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Summary {
    /// The windows read.
    windows: Vec<GapLine>,
    /// Recovered deliveries filed now.
    pub(crate) filed: usize,
    /// Recovered deliveries an earlier catch-up filed already.
    pub(crate) filed_before: usize,
    /// Events whose notification was received.
    received: usize,
    /// Events whose trigger no subscription listens for.
    not_subscribed: usize,
    /// Event types no trigger is known for, with how many of each.
    unmatched: std::collections::BTreeMap<String, usize>,
}

/// `catch-up`: reads Preservica's records for each window and files what was missed.
///
/// # Errors
/// Neither `--since` nor `--gaps`, an inbox that cannot be opened, Preservica refusing or
/// failing, or a failure to store.
pub(crate) async fn catch_up(global: &GlobalArgs, args: &CatchUpArgs) -> anyhow::Result<ExitCode> {
    let now = now_millis();
    let until = args.until.map_or(now, |it| it.timestamp_millis());
    let store =
        preservica_webhook_server::store::open_store(crate::serve::inbox_config(&args.inbox))
            .await
            .map_err(crate::inbox::open_failed)?;
    let windows = match args.since {
        Some(since) => vec![Gap {
            from: since.timestamp_millis(),
            to: until,
        }],
        None => gaps_in(store.as_ref(), args.margin, now)
            .await?
            .into_iter()
            .filter(|gap| gap.from < until)
            .map(|gap| Gap {
                from: gap.from,
                to: gap.to.min(until),
            })
            .collect(),
    };
    if windows.iter().any(|it| it.from >= it.to) {
        store.close().await;
        return Err(config_error("--since must be before --until"));
    }
    let client = crate::manage::client(global)?;
    let result = recover_windows(&client, store.as_ref(), &windows, args.url.as_deref()).await;
    store.close().await;
    let summary = result?;
    report(global, &summary)?;
    Ok(ExitCode::SUCCESS)
}

fn report(global: &GlobalArgs, summary: &Summary) -> anyhow::Result<()> {
    if global.json {
        output::json(summary)?;
        return Ok(());
    }
    if summary.windows.is_empty() {
        output::line("no gaps to catch up on")?;
        return Ok(());
    }
    for window in &summary.windows {
        output::line(&format!("read {} to {}", window.from, window.to))?;
    }
    output::line(&format!(
        "filed {} recovered {}; {} filed by an earlier catch-up, {} received as notifications, {} for triggers nobody subscribed to",
        summary.filed,
        if summary.filed == 1 {
            "delivery"
        } else {
            "deliveries"
        },
        summary.filed_before,
        summary.received,
        summary.not_subscribed,
    ))?;
    if !summary.unmatched.is_empty() {
        let kinds: Vec<String> = summary
            .unmatched
            .iter()
            .map(|(kind, count)| format!("{kind} ×{count}"))
            .collect();
        output::line(&format!(
            "not recovered, no trigger is known for these event types: {}",
            kinds.join(", ")
        ))?;
    }
    Ok(())
}

/// Reads each window's records and files a recovered delivery for every subscribed event
/// whose notification the inbox does not hold.
///
/// # Errors
/// Preservica refusing or failing, or a failure to read or write the inbox.
pub(crate) async fn recover_windows(
    client: &Client,
    store: &dyn Store,
    windows: &[Gap],
    url: Option<&str>,
) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    if windows.is_empty() {
        return Ok(summary);
    }
    let subscribed = subscribed_triggers(client, url).await?;
    let tenant = client.tenant().await;
    let entries = store
        .list(StateFilter::All)
        .await
        .context("cannot read the inbox")?;
    for window in windows {
        summary.windows.push(gap_line(window));
        let received: Received = entries
            .iter()
            .filter(|entry| received_at(&entry.received_at) >= window.from)
            // Filed by an earlier catch-up: filed again, they come back as duplicates.
            .filter(|entry| {
                !preservica_webhook_core::Delivery::from_slice(&entry.body)
                    .is_ok_and(|it| it.is_recovered())
            })
            .filter_map(|entry| Some((TriggerType::parse(entry.trigger.as_deref()?), entry)))
            .flat_map(|(trigger, entry)| {
                entry
                    .entity_refs
                    .iter()
                    .map(move |entity| (trigger.clone(), entity.clone()))
            })
            .collect();
        let events = recorded_events(client, window).await?;
        let Recovery {
            mut deliveries,
            already_received,
            not_subscribed,
            unmatched,
        } = recovery::recover(&events, &subscribed, &received, tenant.as_deref());
        summary.received += already_received;
        summary.not_subscribed += not_subscribed;
        for (kind, count) in unmatched {
            *summary.unmatched.entry(kind).or_default() += count;
        }
        if subscribed.contains(&TriggerType::IngestFailed) {
            deliveries.extend(failed_ingests(client, window, tenant.as_deref(), &received).await?);
        }
        for delivery in deliveries {
            match file(store, delivery).await? {
                Stored::New(_) => summary.filed += 1,
                Stored::Duplicate(_) => summary.filed_before += 1,
            }
        }
    }
    Ok(summary)
}

/// `serve --catch-up`: recovers the latest gap in the inbox's runs, the one that ended as
/// this receiver started; says what it did in the log.
pub(crate) async fn catch_up_latest_gap(client: &Client, store: &dyn Store, url: Option<&str>) {
    let found = match gaps_in(store, run_log::DEFAULT_GAP_MARGIN, now_millis()).await {
        Ok(found) => found,
        Err(err) => {
            tracing::error!("cannot catch up: {err:#}");
            return;
        }
    };
    let Some(latest) = found.last() else {
        tracing::info!(
            "nothing to catch up on: no gap since the first receiver on this inbox started"
        );
        return;
    };
    match recover_windows(client, store, std::slice::from_ref(latest), url).await {
        Ok(summary) => tracing::info!(
            from = %rfc3339(latest.from),
            to = %rfc3339(latest.to),
            filed = summary.filed,
            filed_before = summary.filed_before,
            "caught up on the latest gap"
        ),
        Err(err) => tracing::error!(
            "cannot catch up on the gap from {} to {}: {err:#}; run `preservica-webhook catch-up --gaps` once Preservica answers",
            rfc3339(latest.from),
            rfc3339(latest.to)
        ),
    }
}

fn received_at(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text).map_or(i64::MAX, |it| it.timestamp_millis())
}

/// The triggers of the subscriptions on Preservica (those sending to `url`, when given).
async fn subscribed_triggers(
    client: &Client,
    url: Option<&str>,
) -> anyhow::Result<Vec<TriggerType>> {
    let subscriptions = client
        .subscriptions()
        .await
        .context("cannot list the subscriptions, whose triggers say what to recover")?;
    let mut triggers: Vec<TriggerType> = subscriptions
        .into_iter()
        .filter(|it| url.is_none_or(|url| it.url == url))
        .filter_map(|it| it.trigger_type)
        .collect();
    triggers.dedup();
    if triggers.is_empty() {
        tracing::warn!(
            "no subscription{} on Preservica: nothing is recovered, as no notification would have been sent",
            url.map(|url| format!(" sends to {url}"))
                .unwrap_or_default()
        );
    }
    Ok(triggers)
}

/// The window's events, each with the entity it touched: the event log's actions, and for an
/// event listed without its entity, that event's own actions. Entity types come from
/// `updated-since` over the same window, when Preservica lists the entity there.
async fn recorded_events(client: &Client, window: &Gap) -> anyhow::Result<Vec<RecordedEvent>> {
    let (from, to) = (utc(window.from), utc(window.to));
    let query = EventsQuery::new().from(from).to(to);
    let listed: Vec<EventAction> = client
        .events(&query)
        .try_collect()
        .await
        .context("cannot read Preservica's event log")?;
    let mut actions = Vec::new();
    for action in listed {
        match (&action.entity, &action.event_ref) {
            (None, Some(event_ref)) => {
                let mut of_event = client.event_actions(event_ref);
                while let Some(one) = of_event.next().await {
                    let mut one = one.context("cannot read an event's actions")?;
                    if one.event_type.is_empty() {
                        one.event_type.clone_from(&action.event_type);
                    }
                    actions.push(one);
                }
            }
            _ => actions.push(action),
        }
    }
    let mut kinds: HashMap<String, EntityType> = HashMap::new();
    let mut updated = client.updated_since(from, Some(to));
    while let Some(entity) = updated.next().await {
        match entity {
            Ok(entity) => {
                kinds.insert(entity.reference.as_str().to_owned(), entity.entity_type);
            }
            Err(err) => {
                tracing::warn!(
                    "cannot list the entities updated in the window, so recovered deliveries may lack their entity type: {err:#}"
                );
                break;
            }
        }
    }
    Ok(actions
        .into_iter()
        .filter(|it| it.date.is_none_or(|date| date >= from && date <= to))
        .filter_map(|it| {
            let entity_ref = it.entity?.as_str().to_owned();
            Some(RecordedEvent {
                entity_type: kinds.get(&entity_ref).cloned(),
                event_type: it.event_type,
                event_ref: it.event_ref,
                date: it
                    .date
                    .map(|date| date.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                entity_ref,
            })
        })
        .collect())
}

/// Failed ingests that started or ended in the window, from the process monitors.
async fn failed_ingests(
    client: &Client,
    window: &Gap,
    tenant: Option<&str>,
    received: &Received,
) -> anyhow::Result<Vec<RecoveredDelivery>> {
    let monitors: Vec<_> = client
        .monitors(&MonitorsQuery::new().status("Failed").category("Ingest"))
        .try_collect()
        .await
        .context("cannot list Preservica's failed ingests")?;
    Ok(monitors
        .into_iter()
        .filter(|monitor| {
            let when = monitor.completed.as_deref().or(monitor.started.as_deref());
            when.and_then(|it| DateTime::parse_from_rfc3339(it).ok())
                .is_some_and(|it| (window.from..=window.to).contains(&it.timestamp_millis()))
        })
        .filter(|monitor| !received.contains(&(TriggerType::IngestFailed, monitor.id.clone())))
        .map(|monitor| {
            recovery::recover_failed_ingest(
                &monitor.id,
                monitor.name.as_deref(),
                monitor.completed.as_deref().or(monitor.started.as_deref()),
                tenant,
            )
        })
        .collect())
}

async fn file(store: &dyn Store, delivery: RecoveredDelivery) -> anyhow::Result<Stored> {
    let new = NewDelivery::new(delivery.key, delivery.body.into(), DeliveryState::Pending);
    store
        .store(new, now_millis())
        .await
        .context("cannot store a recovered delivery")
}

fn utc(millis: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(millis).unwrap_or(DateTime::<Utc>::MIN_UTC)
}
