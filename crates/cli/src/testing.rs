//! Testing a receiver without Preservica: `send`, `challenge`, `sign`, `verify`.

use std::io::Read as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use preservica_webhook_core::{
    CHALLENGE_PARAMETER, EntityType, SIGNATURE_HEADER, Signature, TriggerType, VerifyError,
    check_challenge_answer, sign as sign_body, verify_signature,
};
use reqwest::header::CONTENT_TYPE;
use serde::Serialize;

use crate::cli::{ChallengeArgs, GlobalArgs, SendArgs, SignArgs, Transfer, VerifyArgs};
use crate::config::{config_error, load_secrets};
use crate::output;

/// Largest chunk `send --transfer chunked` writes.
const CHUNK_SIZE: usize = 8 * 1024;

/// `send`: builds (or reads) a delivery, signs it, POSTs it and prints the status.
///
/// # Errors
/// Configuration errors (secret, URL, body file), transport errors, and a non-2xx answer.
pub(crate) async fn send(global: &GlobalArgs, args: &SendArgs) -> anyhow::Result<ExitCode> {
    let secrets = load_secrets(global)?;
    let url = parse_url(&args.url)?;
    let body = match &args.body {
        Some(path) => std::fs::read(path).map_err(|err| {
            config_error(format!(
                "cannot read the body file {}: {err}",
                path.display()
            ))
        })?,
        None => {
            let entity_ref = args.entity_ref.clone().unwrap_or_else(random_uuid);
            sample_delivery(
                &args.trigger,
                &args.entity_type,
                &entity_ref,
                global.tenant.as_deref().unwrap_or("PRESERVICA"),
                SystemTime::now(),
            )
        }
    };
    let signature = sign_body(secrets.primary(), &body);
    let mut body = body;
    if args.tamper {
        // Still valid JSON, no longer what was signed.
        body.push(b' ');
    }
    tracing::debug!(%signature, bytes = body.len(), "sending delivery");

    let body = Bytes::from(body);
    let request = http_client()?
        .post(url.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature.to_hex());
    let request = match args.transfer {
        Transfer::Length => request.body(body),
        Transfer::Chunked => {
            let chunks: Vec<Result<Bytes, std::io::Error>> = (0..body.len())
                .step_by(CHUNK_SIZE)
                .map(|start| Ok(body.slice(start..body.len().min(start + CHUNK_SIZE))))
                .collect();
            request.body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
        }
    };
    let response = request
        .send()
        .await
        .map_err(|err| unreachable_receiver(err, &url, "cannot send the delivery to"))?;
    let status = response.status();
    let answer = response.text().await.unwrap_or_default();
    if global.json {
        output::json(&SendOutput {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or(""),
            body: &answer,
        })?;
    } else {
        output::line(&status.to_string())?;
    }
    if status.is_success() {
        return Ok(ExitCode::SUCCESS);
    }
    Err(anyhow!(
        "the receiver refused the delivery with {status}{}",
        snippet(&answer)
    ))
}

#[derive(Serialize)]
struct SendOutput<'a> {
    status: u16,
    reason: &'a str,
    body: &'a str,
}

/// `challenge`: performs Preservica's handshake and says whether Preservica would accept the
/// answer.
///
/// # Errors
/// Configuration errors, transport errors, and every way the answer can be wrong.
pub(crate) async fn challenge(
    global: &GlobalArgs,
    args: &ChallengeArgs,
) -> anyhow::Result<ExitCode> {
    let secrets = load_secrets(global)?;
    let mut url = parse_url(&args.url)?;
    let code = random_hex::<16>();
    url.query_pairs_mut()
        .append_pair(CHALLENGE_PARAMETER, &code);

    let response = http_client()?
        .post(url.clone())
        .send()
        .await
        .map_err(|err| unreachable_receiver(err, &url, "cannot reach"))?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|it| it.to_str().ok())
        .map(str::to_owned);
    let answer = response
        .bytes()
        .await
        .context("the connection broke while reading the answer")?;

    if status != reqwest::StatusCode::OK {
        return Err(anyhow!(
            "the receiver answered the challenge with {status}; Preservica expects 200 with \
             the challengeCode and challengeResponse as JSON{}",
            snippet(&String::from_utf8_lossy(&answer))
        ));
    }
    check_challenge_answer(secrets.primary(), &code, &answer).map_err(|err| {
        anyhow!(
            "Preservica would refuse this receiver: {err}{}",
            snippet(&String::from_utf8_lossy(&answer))
        )
    })?;
    let json_content = content_type
        .as_deref()
        .is_some_and(|it| it.trim_start().starts_with("application/json"));
    if !json_content {
        tracing::warn!(
            content_type = content_type.as_deref().unwrap_or("none"),
            "the answer is right but not sent as application/json; Preservica may not mind"
        );
    }
    if global.json {
        output::json(&serde_json::json!({
            "ok": true,
            "status": status.as_u16(),
            "challengeCode": code,
        }))?;
    } else {
        output::line(&format!(
            "ok: {} answered the challenge as Preservica expects",
            args.url
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `sign`: prints the signature of a body.
///
/// # Errors
/// Configuration errors and an unreadable body.
pub(crate) fn sign(global: &GlobalArgs, args: &SignArgs) -> anyhow::Result<ExitCode> {
    let secrets = load_secrets(global)?;
    let body = read_body(args.file.as_deref())?;
    let signature = sign_body(secrets.primary(), &body);
    if global.json {
        output::json(&serde_json::json!({ "signature": signature.to_hex() }))?;
    } else {
        output::line(&signature.to_hex())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `verify`: checks a signature against a body with every secret.
///
/// # Errors
/// Configuration errors (including a malformed signature), an unreadable body, and a
/// signature that no secret produces.
pub(crate) fn verify(global: &GlobalArgs, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let secrets = load_secrets(global)?;
    let signature = Signature::parse(&args.signature)
        .map_err(|err| config_error(format!("--signature: {err}")))?;
    let body = read_body(args.file.as_deref())?;
    match verify_signature(&secrets.all, &body, &signature) {
        Ok(index) => {
            if global.json {
                output::json(&serde_json::json!({ "ok": true, "secretIndex": index }))?;
            } else if secrets.all.len() > 1 {
                output::line(&format!(
                    "ok: the signature matches secret {} of {}",
                    index + 1,
                    secrets.all.len()
                ))?;
            } else {
                output::line("ok: the signature matches")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(VerifyError::NoMatch) => {
            let expected = sign_body(secrets.primary(), &body);
            Err(anyhow!(
                "the signature does not match: the body differs from what was signed, or the \
                 secret differs (this secret signs it as {expected})"
            ))
        }
        Err(other) => Err(other.into()),
    }
}

/// A delivery in the shape of the captured Preservica 6.10 body, fields in the same order.
pub(crate) fn sample_delivery(
    trigger: &TriggerType,
    entity_type: &EntityType,
    entity_ref: &str,
    tenant: &str,
    now: SystemTime,
) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Sample<'a> {
        subscription_id: String,
        timestamp: String,
        tenant: &'a str,
        version: &'a str,
        events: [SampleEvent<'a>; 1],
        trigger: &'a str,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct SampleEvent<'a> {
        event: String,
        entity_type: &'a str,
        entity_ref: &'a str,
        identifiers: [(); 0],
    }
    let sample = Sample {
        subscription_id: random_hex::<16>(),
        timestamp: preservica_timestamp(now),
        tenant,
        version: "7.7",
        events: [SampleEvent {
            event: event_name(trigger),
            entity_type: entity_type.as_str(),
            entity_ref,
            identifiers: [],
        }],
        trigger: trigger.as_str(),
    };
    serde_json::to_vec(&sample).expect("plain strings serialize")
}

/// The event name Preservica puts beside a trigger: `FULL_TEXT_INDEXED` → `FullTextIndexed`.
fn event_name(trigger: &TriggerType) -> String {
    trigger
        .as_str()
        .split(['_', '-', ' '])
        .filter(|word| !word.is_empty())
        .map(|word| {
            let lower = word.to_lowercase();
            let mut chars = lower.chars();
            chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

/// Preservica's timestamp format: UTC, milliseconds, no zone offset.
fn preservica_timestamp(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = i64::try_from(since.as_secs()).unwrap_or(0);
    chrono::DateTime::from_timestamp(secs, since.subsec_nanos())
        .unwrap_or_default()
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S%.3f")
        .to_string()
}

/// Lowercase hex of `N` random bytes.
fn random_hex<const N: usize>() -> String {
    rand::random::<[u8; N]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A random (version 4) UUID, like Preservica's references.
pub(crate) fn random_uuid() -> String {
    let mut bytes = rand::random::<[u8; 16]>();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A request that got no answer; when nothing listens at the address, says so and how to
/// start a receiver there.
fn unreachable_receiver(err: reqwest::Error, url: &reqwest::Url, doing: &str) -> anyhow::Error {
    let refused = std::iter::successors(Some(&err as &dyn std::error::Error), |it| it.source())
        .filter_map(|it| it.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
    let mut shown = url.clone();
    shown.set_query(None);
    if refused {
        let host = url.host_str().unwrap_or("the host");
        let port = url.port_or_known_default().unwrap_or(0);
        return anyhow!(
            "{doing} {shown}: nothing is listening on {host}:{port} (connection refused); \
             start a receiver there, e.g. `preservica-webhook serve 127.0.0.1:{port}`, or check \
             the URL"
        );
    }
    anyhow::Error::new(err).context(format!("{doing} {shown}"))
}

fn parse_url(text: &str) -> anyhow::Result<reqwest::Url> {
    let url = reqwest::Url::parse(text).map_err(|err| {
        config_error(format!(
            "{text:?} is not a URL ({err}); write e.g. http://127.0.0.1:8000/"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(config_error(format!(
            "{text:?} is not an http or https URL"
        )));
    }
    Ok(url)
}

/// An HTTP client as Preservica would behave: no redirects followed, bounded time.
fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("preservica-webhook/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()
        .context("cannot build the HTTP client")
}

fn read_body(file: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    match file {
        Some(path) => std::fs::read(path)
            .map_err(|err| config_error(format!("cannot read {}: {err}", path.display()))),
        None => {
            let mut body = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut body)
                .context("cannot read the body from stdin")?;
            Ok(body)
        }
    }
}

/// `: <first 200 characters of the answer>` or nothing for an empty answer.
fn snippet(answer: &str) -> String {
    let answer = answer.trim();
    if answer.is_empty() {
        return String::new();
    }
    let short: String = answer.chars().take(200).collect();
    let more = if short.len() < answer.len() {
        "…"
    } else {
        ""
    };
    format!(": {}{more}", short.replace(['\r', '\n'], " "))
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use preservica_webhook_core::Delivery;

    use super::*;

    #[test]
    fn sample_delivery_has_the_captured_shape() {
        let body = sample_delivery(
            &TriggerType::FullTextIndexed,
            &EntityType::Asset,
            "7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2",
            "BRAMA",
            UNIX_EPOCH + Duration::from_millis(1_697_021_562_469),
        );
        let text = String::from_utf8(body.clone()).unwrap();
        let id_start = text.find("\"subscriptionId\":\"").unwrap() + 18;
        let redacted = format!("{}<id>{}", &text[..id_start], &text[id_start + 32..]);
        expect![[r#"{"subscriptionId":"<id>","timestamp":"2023-10-11T10:52:42.469","tenant":"BRAMA","version":"7.7","events":[{"event":"FullTextIndexed","entityType":"IO","entityRef":"7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2","identifiers":[]}],"trigger":"FULL_TEXT_INDEXED"}"#]]
            .assert_eq(&redacted);
        let delivery = Delivery::from_slice(&body).unwrap();
        assert_eq!(delivery.trigger, Some(TriggerType::FullTextIndexed));
    }

    #[test]
    fn names_events_after_triggers() {
        let check = |trigger: TriggerType, expected: &str| {
            assert_eq!(event_name(&trigger), expected);
        };
        check(TriggerType::Moved, "Moved");
        check(TriggerType::FullTextIndexed, "FullTextIndexed");
        check(
            TriggerType::ChangedSecurityDescriptor,
            "ChangedSecurityDescriptor",
        );
        check(TriggerType::parse("NEW_THING"), "NewThing");
    }

    #[test]
    fn random_uuids_are_version_4() {
        let uuid = random_uuid();
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4");
        assert_ne!(uuid, random_uuid());
    }
}
