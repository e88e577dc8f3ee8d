//! `inbox`: look into the receiver's durable inbox, re-queue dead deliveries, export.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::anyhow;
use preservica_webhook_server::store::{Attempt, InboxAdmin, Outcome, now_millis, open_store};
use preservica_webhook_server::{
    DeliveryId, DeliveryState, Inbox, InboxConfig, InboxEntry, InboxError, StateFilter,
};

use crate::cli::{GlobalArgs, InboxArgs, InboxCommand, InboxLocation, StateArg};
use crate::config::config_error;
use crate::output;

mod import;

/// `inbox …`, through the storage seam's admin operations, so every backend the command can
/// open answers the same way.
///
/// # Errors
/// A missing or foreign inbox file (exit 2), database errors, and unknown or non-dead ids.
pub(crate) async fn run(global: &GlobalArgs, args: &InboxArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        InboxCommand::List { state } => list(global, open(args).await?.as_ref(), *state).await,
        InboxCommand::Show { id, pretty } => {
            show(global, open(args).await?.as_ref(), id, *pretty).await
        }
        InboxCommand::Retry { id, dead } => {
            retry(global, open(args).await?.as_ref(), id.as_ref(), *dead).await
        }
        InboxCommand::Export => export(open(args).await?.as_ref()).await,
        // Writes through the receiver's own intake, and may create the inbox.
        InboxCommand::Import => import::run(global, &location(args)?).await,
    }
}

async fn export(inbox: &dyn InboxAdmin) -> anyhow::Result<ExitCode> {
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let count = inbox.export(&mut out).await?;
    out.flush()?;
    tracing::debug!(count, "exported");
    Ok(ExitCode::SUCCESS)
}

/// The inbox `--inbox` or `--nats` names.
fn location(args: &InboxArgs) -> anyhow::Result<InboxLocation> {
    args.nats.or_inbox(&args.inbox)
}

/// Opens the inbox `--inbox` or `--nats` names.
async fn open(args: &InboxArgs) -> anyhow::Result<Arc<dyn InboxAdmin>> {
    open_admin(&location(args)?).await
}

/// Opens an inbox for reading and re-queueing, beside servers that may run on it: a SQLite
/// file beside the serve that holds it, or a shared database or stream (a database's tables
/// are created if missing).
pub(crate) async fn open_admin(location: &InboxLocation) -> anyhow::Result<Arc<dyn InboxAdmin>> {
    match location {
        InboxLocation::File(path) => Ok(Arc::new(Inbox::open(path).map_err(open_failed)?)),
        InboxLocation::Postgres(location) => {
            let store = open_store(InboxConfig::Postgres(location.clone()))
                .await
                .map_err(open_failed)?;
            Ok(store)
        }
        InboxLocation::Nats(nats) => {
            let store = open_store(nats.config()).await.map_err(open_failed)?;
            Ok(store)
        }
    }
}

/// An inbox that could not be opened: a configuration error (exit 2) when the inbox named is
/// the problem (missing, foreign, held by a running serve), any other error as it is.
pub(crate) fn open_failed(err: InboxError) -> anyhow::Error {
    if err.is_configuration() {
        config_error(format!("{:#}", anyhow::Error::new(err)))
    } else {
        anyhow::Error::new(err)
    }
}

fn filter(state: StateArg) -> StateFilter {
    match state {
        StateArg::All => StateFilter::All,
        StateArg::Pending => StateFilter::Only(DeliveryState::Pending),
        StateArg::Done => StateFilter::Only(DeliveryState::Done),
        StateArg::Dead => StateFilter::Only(DeliveryState::Dead),
        StateArg::Undecodable => StateFilter::Only(DeliveryState::Undecodable),
    }
}

async fn list(
    global: &GlobalArgs,
    inbox: &dyn InboxAdmin,
    state: StateArg,
) -> anyhow::Result<ExitCode> {
    let entries = inbox.list(filter(state)).await?;
    if global.json {
        output::json(&entries)?;
    } else if entries.is_empty() {
        output::note("no deliveries");
    } else {
        output::text(&entry_table(&entries))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The entries as a table: id, state, received, attempts, trigger, entities, last error.
pub(crate) fn entry_table(entries: &[InboxEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|it| {
            vec![
                it.id.to_string(),
                it.state.to_string(),
                it.received_at.clone(),
                it.attempts.to_string(),
                it.trigger.clone().unwrap_or_else(|| "-".to_owned()),
                if it.entity_refs.is_empty() {
                    "-".to_owned()
                } else {
                    it.entity_refs.join(" ")
                },
                it.last_error
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), one_line),
            ]
        })
        .collect();
    output::table(
        &[
            "ID",
            "STATE",
            "RECEIVED",
            "ATTEMPTS",
            "TRIGGER",
            "ENTITIES",
            "LAST ERROR",
        ],
        &rows,
    )
}

fn one_line(text: &str) -> String {
    let flat = text.replace(['\r', '\n'], " ");
    if flat.chars().count() > 80 {
        format!("{}…", flat.chars().take(79).collect::<String>())
    } else {
        flat
    }
}

async fn show(
    global: &GlobalArgs,
    inbox: &dyn InboxAdmin,
    id: &DeliveryId,
    pretty: bool,
) -> anyhow::Result<ExitCode> {
    let entry = inbox.get(id).await?.ok_or_else(|| {
        anyhow!("no delivery {id} in the inbox; see `preservica-webhook inbox list`")
    })?;
    let attempts = attempts_of(inbox, id).await?;
    let body_text = std::str::from_utf8(&entry.body).ok();
    if global.json {
        let mut value = serde_json::to_value(&entry)?;
        if let Some(object) = value.as_object_mut() {
            match body_text {
                Some(text) => object.insert("body".into(), text.into()),
                None => object.insert("bodyHex".into(), hex_lower(&entry.body).into()),
            };
            if let Some(attempts) = &attempts {
                object.insert("attemptHistory".into(), attempts_json(attempts));
            }
        }
        output::json(&value)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = entry_table(std::slice::from_ref(&entry));
    if let Some(next) = &entry.next_attempt_at {
        text.push_str(&format!("next attempt: {next}\n"));
    }
    text.push_str(&format!("key: {}\n", entry.key));
    if let Some(error) = &entry.last_error {
        text.push_str(&format!("last error: {error}\n"));
    }
    match &attempts {
        None => text.push_str("attempts: this inbox keeps no attempt history\n"),
        Some(attempts) if attempts.is_empty() => {}
        Some(attempts) => {
            text.push_str("\nattempts:\n");
            text.push_str(&attempt_table(attempts));
        }
    }
    text.push('\n');
    let mut out = text.into_bytes();
    if pretty {
        out.extend_from_slice(pretty_body(&entry.body, body_text).as_bytes());
    } else {
        // The bytes as received, so what is shown is what was signed.
        out.extend_from_slice(&entry.body);
    }
    out.push(b'\n');
    output::bytes(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// A delivery's finished attempts, oldest first; `None` when the inbox keeps none.
async fn attempts_of(
    inbox: &dyn InboxAdmin,
    id: &DeliveryId,
) -> anyhow::Result<Option<Vec<Attempt>>> {
    match inbox.attempts(id).await {
        Ok(attempts) => Ok(Some(attempts)),
        Err(InboxError::Unsupported(_)) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// The attempts as a table: number, when it finished, outcome, when a retry is due, error
/// (on one line, whole).
fn attempt_table(attempts: &[Attempt]) -> String {
    let rows: Vec<Vec<String>> = attempts
        .iter()
        .map(|it| {
            vec![
                it.number.to_string(),
                rfc3339(it.finished_at),
                it.outcome.as_str().to_owned(),
                retry_at(&it.outcome).map_or_else(|| "-".to_owned(), rfc3339),
                it.error()
                    .map_or_else(|| "-".to_owned(), |error| error.replace(['\r', '\n'], " ")),
            ]
        })
        .collect();
    output::table(
        &["ATTEMPT", "FINISHED", "OUTCOME", "NEXT DUE", "ERROR"],
        &rows,
    )
}

/// The attempts for `--json`: `number`, `finishedAt`, `outcome`, `nextDue` and `error`.
fn attempts_json(attempts: &[Attempt]) -> serde_json::Value {
    attempts
        .iter()
        .map(|it| {
            serde_json::json!({
                "number": it.number,
                "finishedAt": rfc3339(it.finished_at),
                "outcome": it.outcome.as_str(),
                "nextDue": retry_at(&it.outcome).map(rfc3339),
                "error": it.error(),
            })
        })
        .collect()
}

fn retry_at(outcome: &Outcome) -> Option<i64> {
    match outcome {
        Outcome::Retry { at, .. } => Some(*at),
        _ => None,
    }
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC, as the entries show their times.
fn rfc3339(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis).map_or_else(
        || millis.to_string(),
        |at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

/// A JSON body reformatted for reading; other text as it is; other bytes as hex.
fn pretty_body(body: &[u8], text: Option<&str>) -> String {
    match text {
        Some(text) => serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|it| serde_json::to_string_pretty(&it).ok())
            .unwrap_or_else(|| text.to_owned()),
        None => format!(
            "(body of {} bytes is not UTF-8; hex:)\n{}",
            body.len(),
            hex_lower(body)
        ),
    }
}

async fn retry(
    global: &GlobalArgs,
    inbox: &dyn InboxAdmin,
    id: Option<&DeliveryId>,
    dead: bool,
) -> anyhow::Result<ExitCode> {
    if dead {
        let count = inbox.retry_dead(now_millis()).await?;
        if global.json {
            output::json(&serde_json::json!({ "requeued": count }))?;
        } else {
            output::line(&format!(
                "re-queued {count} dead {}",
                if count == 1 { "delivery" } else { "deliveries" }
            ))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(id) = id else {
        return Err(config_error("give a delivery id or --dead"));
    };
    if inbox.retry(id, now_millis()).await? {
        if global.json {
            output::json(&serde_json::json!({ "requeued": 1, "id": id }))?;
        } else {
            output::line(&format!("re-queued delivery {id}"))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    match inbox.get(id).await? {
        None => Err(anyhow!(
            "no delivery {id} in the inbox; see `preservica-webhook inbox list`"
        )),
        Some(entry) => Err(anyhow!(
            "delivery {id} is {}, not dead; only dead deliveries are re-queued",
            entry.state
        )),
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
