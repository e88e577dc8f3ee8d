//! `inbox import`: the lines of an `inbox export` stored back into an inbox, through the same
//! intake the receiver uses, so duplicates are spotted the same way and concurrent stores are
//! committed in groups.

use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use preservica_webhook_core::DeliveryKey;
use preservica_webhook_server::store::{Intake, NewDelivery, Stored, open_store};
use preservica_webhook_server::{DeliveryState, InboxError};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};

use crate::cli::{GlobalArgs, InboxLocation};
use crate::output;

/// How many deliveries are on their way into the inbox at once: enough for the inbox to commit
/// them in large groups.
const IN_FLIGHT: usize = 512;

/// What an import did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Imported {
    /// Deliveries stored.
    pub(crate) new: usize,
    /// Deliveries the inbox had already (same key).
    pub(crate) duplicate: usize,
}

/// Imports standard input into the inbox at `inbox`.
///
/// # Errors
/// An inbox that cannot be opened (exit 2 for configuration problems such as an inbox a
/// running `serve` holds), a line that is not an export line, or a failure to store.
pub(crate) async fn run(global: &GlobalArgs, inbox: &InboxLocation) -> anyhow::Result<ExitCode> {
    let store = open_store(crate::serve::inbox_config(inbox))
        .await
        .map_err(super::open_failed)?;
    let result = import(store.as_ref(), tokio::io::stdin()).await;
    store.close().await;
    let imported = result?;
    if global.json {
        output::json(&serde_json::json!({
            "imported": imported.new,
            "alreadyThere": imported.duplicate,
        }))?;
    } else {
        output::line(&format!(
            "imported {} {}, {} already in the inbox",
            imported.new,
            if imported.new == 1 {
                "delivery"
            } else {
                "deliveries"
            },
            imported.duplicate
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Stores every export line read from `input`, up to [`IN_FLIGHT`] at a time. Blank lines are
/// skipped.
///
/// # Errors
/// The first line that is not an export line, after the lines before it are stored (so what
/// the error says is in the inbox is), or the first failure to store.
pub(crate) async fn import(
    store: &dyn Intake,
    input: impl AsyncRead + Unpin,
) -> anyhow::Result<Imported> {
    let mut lines = BufReader::new(input).lines();
    let mut in_flight = FuturesUnordered::new();
    let mut imported = Imported::default();
    let mut number = 0_usize;
    loop {
        while in_flight.len() >= IN_FLIGHT {
            if let Some(result) = in_flight.next().await {
                count(result, &mut imported)?;
            }
        }
        let Some(line) = lines
            .next_line()
            .await
            .context("could not read the export from standard input")?
        else {
            break;
        };
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line) {
            Ok((delivery, received_at)) => in_flight.push(store.store(delivery, received_at)),
            Err(why) => {
                while let Some(result) = in_flight.next().await {
                    count(result, &mut imported)?;
                }
                return Err(anyhow!(
                    "line {number} is not an export line: {why}; the {} lines before it are in \
                     the inbox ({} of them new); fix or remove the line and import again \
                     (what is there already is skipped)",
                    imported.new + imported.duplicate,
                    imported.new
                ));
            }
        }
    }
    while let Some(result) = in_flight.next().await {
        count(result, &mut imported)?;
    }
    Ok(imported)
}

fn count(result: Result<Stored, InboxError>, imported: &mut Imported) -> anyhow::Result<()> {
    match result.context("a delivery could not be stored; nothing after it was imported")? {
        Stored::New(_) => imported.new += 1,
        Stored::Duplicate(_) => imported.duplicate += 1,
    }
    Ok(())
}

/// One line of `inbox export`: `{"id","key","state","receivedAt","body"|"bodyBase64"}`.
/// The id is the exporting inbox's own and is not kept; unknown fields are ignored.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExportLine {
    key: String,
    state: String,
    received_at: String,
    body: Option<String>,
    body_base64: Option<String>,
}

/// The delivery an export line holds and when it was received (ms since the Unix epoch), or
/// why the line is not one.
fn parse_line(line: &str) -> Result<(NewDelivery, i64), String> {
    let line: ExportLine = serde_json::from_str(line).map_err(|err| err.to_string())?;
    let body = match (line.body, line.body_base64) {
        (Some(text), None) => Bytes::from(text),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map_err(|err| format!("bodyBase64 is not base64 ({err})"))?
            .into(),
        (Some(_), Some(_)) => return Err("it has both body and bodyBase64".to_owned()),
        (None, None) => return Err("it has neither body nor bodyBase64".to_owned()),
    };
    let key = DeliveryKey::of(&body);
    if !line.key.eq_ignore_ascii_case(&key.to_hex()) {
        return Err(format!(
            "its key {:?} is not the SHA-256 of its body ({}); the line was changed after export",
            line.key,
            key.to_hex()
        ));
    }
    let state: DeliveryState = line.state.parse().map_err(|err| format!("{err}"))?;
    let received_at = chrono::DateTime::parse_from_rfc3339(&line.received_at)
        .map_err(|err| {
            format!(
                "receivedAt {:?} is not an RFC 3339 time ({err})",
                line.received_at
            )
        })?
        .timestamp_millis();
    Ok((NewDelivery::new(key, body, state), received_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"trigger":"MOVED","events":[]}"#;

    fn line(key: &str, state: &str, body: &str) -> String {
        serde_json::json!({
            "id": "7",
            "key": key,
            "state": state,
            "receivedAt": "2026-11-30T10:00:00.250Z",
            "body": body,
        })
        .to_string()
    }

    #[test]
    fn reads_an_export_line() {
        let key = DeliveryKey::of(BODY.as_bytes()).to_hex();
        let (delivery, received_at) = parse_line(&line(&key, "dead", BODY)).unwrap();
        assert_eq!(delivery.body, BODY.as_bytes());
        assert_eq!(delivery.key.to_hex(), key);
        assert_eq!(delivery.state, DeliveryState::Dead);
        assert_eq!(received_at, 1_796_032_800_250);
    }

    #[test]
    fn reads_a_base64_body() {
        let body = [0xff_u8, 0, 0x80];
        let text = serde_json::json!({
            "key": DeliveryKey::of(&body).to_hex(),
            "state": "undecodable",
            "receivedAt": "2026-11-30T10:00:00Z",
            "bodyBase64": "/wCA",
            "later": "ignored",
        })
        .to_string();
        let (delivery, _) = parse_line(&text).unwrap();
        assert_eq!(&delivery.body[..], &body);
        assert_eq!(delivery.state, DeliveryState::Undecodable);
    }

    #[test]
    fn refuses_a_line_whose_body_was_changed() {
        let key = DeliveryKey::of(b"something else").to_hex();
        let why = parse_line(&line(&key, "done", BODY)).unwrap_err();
        assert!(why.contains("not the SHA-256 of its body"), "{why}");
    }

    #[test]
    fn says_what_is_wrong_with_a_bad_line() {
        let key = DeliveryKey::of(BODY.as_bytes()).to_hex();
        for (text, expected) in [
            (line(&key, "finished", BODY), "unknown delivery state"),
            (
                line(&key, "done", BODY).replace("2026-11-30T10:00:00.250Z", "yesterday"),
                "not an RFC 3339 time",
            ),
            ("{}".to_owned(), "missing field"),
            ("not json".to_owned(), "expected"),
            (
                serde_json::json!({"key": key, "state": "done", "receivedAt": "2026-11-30T10:00:00Z"})
                    .to_string(),
                "neither body nor bodyBase64",
            ),
        ] {
            let why = parse_line(&text).unwrap_err();
            assert!(why.contains(expected), "{text}: {why}");
        }
    }
}
