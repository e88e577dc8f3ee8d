//! Finding and filling the windows in which no receiver was up.
//!
//! Nothing says Preservica sends a notification again when the receiver did not take it, so a
//! notification sent while every receiver was down is lost. Receivers record when they run
//! ([`Run`]); [`gaps`] turns those records into the windows nobody was listening, and
//! [`recover`] turns the events Preservica recorded in such a window into *recovered
//! deliveries*: bodies shaped like real notifications, marked `"recovered": true`, not signed.
//!
//! Which event-log types stand for which trigger ([`trigger_for_event`]):
//!
//! | event type | trigger | known |
//! |---|---|---|
//! | `Ingest` | `FULL_TEXT_INDEXED` | the webhook fires once the ingested entity is indexed |
//! | `Moved` | `MOVED` | from Preservica's schema examples |
//! | anything else | none | kept visible in [`Recovery::unmatched`], never dropped silently |
//!
//! What `CHANGED_SECURITY_DESCRIPTOR` corresponds to in the event log is not known, and failed
//! ingests leave no entity event: they are read from the process monitors instead
//! ([`recover_failed_ingest`]).

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value, json};

use crate::model::DeliveryKey;
use crate::wire::{EntityType, TriggerType};

/// One receiver's run as recorded in the inbox (all times in ms since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// When the run started.
    pub started_at: i64,
    /// Its last heartbeat (or its start, before the first).
    pub last_seen_at: i64,
    /// When it stopped cleanly; `None` while it runs or when it crashed.
    pub stopped_at: Option<i64>,
}

/// A window of time in which no receiver was up (ms since the Unix epoch, `from < to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Gap {
    /// The window's start: the last moment a receiver was known to be up, less the margin.
    pub from: i64,
    /// The window's end: when a receiver was up again, plus the margin.
    pub to: i64,
}

/// How runs are read into gaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GapRules {
    /// How often a running receiver records a heartbeat (ms).
    pub heartbeat: i64,
    /// How far each gap is widened on both sides (ms), for clocks that disagree and events
    /// recorded a little before or after the moment they happened.
    pub margin: i64,
}

impl GapRules {
    /// A run whose last heartbeat is older than this (three heartbeats) without a stop record
    /// ended at that heartbeat.
    fn silence(&self) -> i64 {
        self.heartbeat.saturating_mul(3)
    }
}

/// The windows in which no run covered the time, between the first run's start and `now`.
///
/// A run covers its start to its stop; a run without a stop covers up to `now` while its last
/// heartbeat is recent, else up to one heartbeat after its last (it crashed, or its host went
/// away). Time before the first recorded run is not a gap: nothing was listening yet. Each gap
/// is widened by the margin on both sides, and gaps that then overlap are merged.
pub fn gaps(runs: &[Run], now: i64, rules: GapRules) -> Vec<Gap> {
    let mut covered: Vec<(i64, i64)> = runs
        .iter()
        .map(|run| {
            let end = match run.stopped_at {
                Some(stopped) => stopped,
                None if now - run.last_seen_at <= rules.silence() => now,
                None => run.last_seen_at.saturating_add(rules.heartbeat),
            };
            (run.started_at, end.max(run.started_at))
        })
        .collect();
    covered.sort_unstable();
    let mut found: Vec<Gap> = Vec::new();
    let mut reached: Option<i64> = None;
    for (start, end) in covered {
        if let Some(until) = reached
            && start > until
        {
            push_merged(&mut found, until, start, rules.margin);
        }
        reached = Some(reached.map_or(end, |until| until.max(end)));
    }
    if let Some(until) = reached
        && until < now
    {
        push_merged(&mut found, until, now, rules.margin);
    }
    found
}

fn push_merged(found: &mut Vec<Gap>, from: i64, to: i64, margin: i64) {
    let gap = Gap {
        from: from.saturating_sub(margin),
        to: to.saturating_add(margin),
    };
    match found.last_mut() {
        Some(last) if gap.from <= last.to => last.to = last.to.max(gap.to),
        _ => found.push(gap),
    }
}

/// The trigger an event-log type stands for, when one is known.
pub fn trigger_for_event(event_type: &str) -> Option<TriggerType> {
    match event_type {
        "Ingest" => Some(TriggerType::FullTextIndexed),
        "Moved" => Some(TriggerType::Moved),
        _ => None,
    }
}

/// The event name a notification of `trigger` carries in `events[].event`.
fn event_name(trigger: &TriggerType) -> &'static str {
    match trigger {
        TriggerType::FullTextIndexed => "FullTextIndexed",
        TriggerType::Moved => "Moved",
        TriggerType::ChangedSecurityDescriptor => "ChangedSecurityDescriptor",
        TriggerType::IngestFailed => "IngestFailed",
        TriggerType::ChangeAssetVisibility => "ChangeAssetVisibility",
        TriggerType::Unknown(_) => "Unknown",
    }
}

/// An event as Preservica's event log recorded it, reduced to what recovery needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The event-log type (`Ingest`, `Moved`, …).
    pub event_type: String,
    /// The event's reference.
    pub event_ref: Option<String>,
    /// When it happened, as RFC 3339 text in UTC.
    pub date: Option<String>,
    /// The entity it happened to.
    pub entity_ref: String,
    /// The entity's kind, when known.
    pub entity_type: Option<EntityType>,
}

/// A delivery filed for a notification that was missed: its body and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredDelivery {
    /// The trigger the notification would have carried.
    pub trigger: TriggerType,
    /// The entity it is about.
    pub entity_ref: String,
    /// The body, shaped like a real notification, with `"recovered": true`.
    pub body: Vec<u8>,
    /// SHA-256 of the body. The body holds only what the record holds, so the same record
    /// always gives the same key: recovering twice files nothing twice.
    pub key: DeliveryKey,
}

/// What [`recover`] made of a window's events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The deliveries to file.
    pub deliveries: Vec<RecoveredDelivery>,
    /// Events of a known type whose notification was received after all.
    pub already_received: usize,
    /// Events whose trigger no subscription listens for.
    pub not_subscribed: usize,
    /// Event types no trigger is known for, with how many of each were seen.
    pub unmatched: BTreeMap<String, usize>,
}

/// What the inbox already holds, to tell a missed notification from one received: every
/// (trigger, entity reference) pair among stored deliveries.
pub type Received = HashSet<(TriggerType, String)>;

/// Turns recorded events into recovered deliveries: one per (trigger, entity, event) whose
/// trigger is subscribed to and whose notification is not already in the inbox.
pub fn recover(
    events: &[RecordedEvent],
    subscribed: &[TriggerType],
    received: &Received,
    tenant: Option<&str>,
) -> Recovery {
    let mut recovery = Recovery::default();
    let mut filed: HashSet<DeliveryKey> = HashSet::new();
    for event in events {
        let Some(trigger) = trigger_for_event(&event.event_type) else {
            *recovery
                .unmatched
                .entry(if event.event_type.is_empty() {
                    "(no type)".to_owned()
                } else {
                    event.event_type.clone()
                })
                .or_default() += 1;
            continue;
        };
        if !subscribed.contains(&trigger) {
            recovery.not_subscribed += 1;
            continue;
        }
        if received.contains(&(trigger.clone(), event.entity_ref.clone())) {
            recovery.already_received += 1;
            continue;
        }
        let mut source = Map::new();
        source.insert("eventType".into(), event.event_type.clone().into());
        if let Some(event_ref) = &event.event_ref {
            source.insert("eventRef".into(), event_ref.clone().into());
        }
        let delivery = recovered_delivery(
            &trigger,
            &event.entity_ref,
            event.entity_type.as_ref(),
            event.date.as_deref(),
            tenant,
            source,
        );
        if filed.insert(delivery.key) {
            recovery.deliveries.push(delivery);
        }
    }
    recovery
}

/// A recovered `INGEST_FAILED` delivery for a failed ingest read from the process monitors.
/// The monitor's id stands where an entity reference would: a failed ingest may have made
/// no entity.
pub fn recover_failed_ingest(
    monitor_id: &str,
    name: Option<&str>,
    date: Option<&str>,
    tenant: Option<&str>,
) -> RecoveredDelivery {
    let mut source = Map::new();
    source.insert("monitorId".into(), monitor_id.into());
    if let Some(name) = name {
        source.insert("monitorName".into(), name.into());
    }
    recovered_delivery(
        &TriggerType::IngestFailed,
        monitor_id,
        None,
        date,
        tenant,
        source,
    )
}

fn recovered_delivery(
    trigger: &TriggerType,
    entity_ref: &str,
    entity_type: Option<&EntityType>,
    date: Option<&str>,
    tenant: Option<&str>,
    source: Map<String, Value>,
) -> RecoveredDelivery {
    let mut event = Map::new();
    event.insert("event".into(), event_name(trigger).into());
    if let Some(kind) = entity_type {
        event.insert("entityType".into(), kind.as_str().into());
    }
    event.insert("entityRef".into(), entity_ref.into());
    event.insert("identifiers".into(), Value::Array(Vec::new()));
    let body = json!({
        "timestamp": date,
        "tenant": tenant,
        "events": [event],
        "trigger": trigger.as_str(),
        "recovered": true,
        "recoveredFrom": source,
    });
    let body = serde_json::to_vec(&body).expect("a JSON value always serializes");
    RecoveredDelivery {
        trigger: trigger.clone(),
        entity_ref: entity_ref.to_owned(),
        key: DeliveryKey::of(&body),
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Delivery;

    const RULES: GapRules = GapRules {
        heartbeat: 30_000,
        margin: 60_000,
    };

    fn run(started_at: i64, last_seen_at: i64, stopped_at: Option<i64>) -> Run {
        Run {
            started_at,
            last_seen_at,
            stopped_at,
        }
    }

    #[test]
    fn a_receiver_running_now_leaves_no_gap() {
        assert_eq!(gaps(&[run(0, 990_000, None)], 1_000_000, RULES), []);
        assert_eq!(gaps(&[], 1_000_000, RULES), []);
    }

    #[test]
    fn a_stop_and_a_later_start_leave_a_widened_gap() {
        let runs = [run(0, 100_000, Some(100_000)), run(500_000, 990_000, None)];
        assert_eq!(
            gaps(&runs, 1_000_000, RULES),
            [Gap {
                from: 40_000,
                to: 560_000
            }]
        );
    }

    #[test]
    fn a_crashed_run_ends_a_heartbeat_after_its_last() {
        let runs = [run(0, 100_000, None), run(800_000, 990_000, None)];
        assert_eq!(
            gaps(&runs, 1_000_000, RULES),
            [Gap {
                from: 70_000,
                to: 860_000
            }]
        );
    }

    #[test]
    fn nothing_running_now_leaves_a_gap_up_to_now() {
        let runs = [run(0, 100_000, Some(100_000))];
        assert_eq!(
            gaps(&runs, 1_000_000, RULES),
            [Gap {
                from: 40_000,
                to: 1_060_000
            }]
        );
    }

    #[test]
    fn overlapping_replicas_cover_each_other() {
        let runs = [
            run(0, 500_000, Some(500_000)),
            run(400_000, 990_000, None),
            run(100_000, 200_000, None),
        ];
        assert_eq!(gaps(&runs, 1_000_000, RULES), []);
    }

    #[test]
    fn gaps_closer_than_the_margins_merge() {
        let runs = [
            run(0, 100_000, Some(100_000)),
            run(200_000, 210_000, Some(210_000)),
            run(300_000, 990_000, None),
        ];
        assert_eq!(
            gaps(&runs, 1_000_000, RULES),
            [Gap {
                from: 40_000,
                to: 360_000
            }]
        );
    }

    fn recorded(kind: &str, entity: &str, event_ref: &str) -> RecordedEvent {
        RecordedEvent {
            event_type: kind.to_owned(),
            event_ref: Some(event_ref.to_owned()),
            date: Some("2026-12-01T09:10:00.000Z".to_owned()),
            entity_ref: entity.to_owned(),
            entity_type: Some(EntityType::Asset),
        }
    }

    #[test]
    fn recovers_subscribed_missed_events_once_and_keeps_unknown_types_visible() {
        let events = [
            recorded("Ingest", "a1", "e1"),
            recorded("Ingest", "a1", "e1"),
            recorded("Ingest", "a2", "e2"),
            recorded("Moved", "a3", "e3"),
            recorded("Modified", "a4", "e4"),
            recorded("", "a5", "e5"),
        ];
        let received: Received = [(TriggerType::FullTextIndexed, "a2".to_owned())].into();

        let recovery = recover(
            &events,
            &[TriggerType::FullTextIndexed],
            &received,
            Some("BRAMA"),
        );

        assert_eq!(recovery.deliveries.len(), 1);
        assert_eq!(recovery.deliveries[0].entity_ref, "a1");
        assert_eq!(recovery.already_received, 1);
        assert_eq!(recovery.not_subscribed, 1);
        assert_eq!(
            recovery.unmatched,
            BTreeMap::from([("(no type)".to_owned(), 1), ("Modified".to_owned(), 1)])
        );
    }

    #[test]
    fn a_recovered_body_reads_as_a_delivery_marked_recovered_with_a_stable_key() {
        let events = [recorded("Moved", "a3", "e3")];
        let first = recover(&events, &[TriggerType::Moved], &Received::new(), None);
        let again = recover(&events, &[TriggerType::Moved], &Received::new(), None);
        assert_eq!(first, again, "the same record gives the same body and key");

        let filed = &first.deliveries[0];
        assert_eq!(filed.key, DeliveryKey::of(&filed.body));
        let delivery = Delivery::from_slice(&filed.body).unwrap();
        assert_eq!(delivery.trigger, Some(TriggerType::Moved));
        assert_eq!(delivery.events[0].event.as_deref(), Some("Moved"));
        assert_eq!(delivery.events[0].entity_type, Some(EntityType::Asset));
        assert_eq!(delivery.entity_refs().collect::<Vec<_>>(), ["a3"]);
        assert_eq!(delivery.extra["recovered"], Value::Bool(true));
        assert_eq!(delivery.extra["recoveredFrom"]["eventRef"], "e3");
    }

    #[test]
    fn failed_ingests_recover_keyed_by_their_monitor() {
        let one = recover_failed_ingest("m1", Some("pkg.zip"), None, None);
        let other = recover_failed_ingest("m2", Some("pkg.zip"), None, None);
        assert_ne!(one.key, other.key);
        let delivery = Delivery::from_slice(&one.body).unwrap();
        assert_eq!(delivery.trigger, Some(TriggerType::IngestFailed));
        assert_eq!(delivery.extra["recoveredFrom"]["monitorName"], "pkg.zip");
    }
}
