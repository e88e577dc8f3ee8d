//! `gaps` and `catch-up` against a stand-in Preservica that recorded events while the receiver
//! was down: exactly the missed notifications are filed, once, and handled as recovered.

use crate::common;

use std::process::Output;

use common::*;
use serde_json::{Value, json};

fn now_text() -> String {
    chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn catch_up_files_exactly_the_missed_notifications_once() {
    let port = preservica_webhook_testkit::port::free_loopback_port().unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    let addr = format!("127.0.0.1:{port}");
    let preservica = preservica_webhook_testkit::StandIn::start().await;
    for (id, trigger, to) in [
        ("s1", "FULL_TEXT_INDEXED", url.as_str()),
        ("s2", "MOVED", url.as_str()),
        ("s3", "INGEST_FAILED", url.as_str()),
        (
            "s4",
            "CHANGED_SECURITY_DESCRIPTOR",
            "https://elsewhere.example/",
        ),
    ] {
        preservica.insert_subscription(json!({
            "id": id, "url": to, "triggerType": trigger, "includeIdentifiers": true
        }));
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let inbox = dir.join("inbox.db");
    let inbox = inbox.to_str().unwrap();

    // Up: the ingest of a1 arrives as a notification. Then the receiver stops.
    let mut serve =
        tokio::task::block_in_place(|| Serve::start_at(dir, &addr, &["--inbox", inbox], &[]));
    let sent = cmd(dir)
        .args(["send", &url, "--trigger", "INDEXED", "--entity-ref", "a1"])
        .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(sent.status.success(), "{sent:?}");
    tokio::task::block_in_place(|| serve.stdout_line());
    let (code, _) = tokio::task::block_in_place(|| serve.terminate());
    assert_eq!(code, Some(0));

    // Down: Preservica records ingests, a move, an edit, downloads (enough for a second page
    // of the event log) and a failed ingest, and nobody is notified.
    let now = now_text();
    preservica.record_event("Ingest", "IO", "a1", &now);
    preservica.record_event("Ingest", "IO", "a2", &now);
    preservica.record_event("Moved", "IO", "a3", &now);
    preservica.record_event("Modified", "IO", "a4", &now);
    preservica.record_event("Ingest", "SO", "f5", &now);
    for n in 0..100 {
        preservica.record_event("Download", "IO", &format!("d{n}"), &now);
    }
    preservica.record_failed_ingest("m1", "package.zip", &now);

    let gaps = json_of(&run_beside(dir, vec![], &["gaps", "--inbox", inbox, "--json"]).await);
    assert_eq!(gaps.as_array().unwrap().len(), 1, "{gaps}");

    let catch_up = [
        "catch-up", "--gaps", "--inbox", inbox, "--url", &url, "--json",
    ];
    let first = json_of(&run_beside(dir, preservica.env(), &catch_up).await);
    assert_eq!(first["filed"], 4, "{first}");
    assert_eq!(first["received"], 1, "a1 was received: {first}");
    assert_eq!(
        first["unmatched"],
        json!({"Download": 100, "Modified": 1}),
        "{first}"
    );
    let pages: Vec<Vec<(String, String)>> = preservica
        .requests()
        .await
        .into_iter()
        .filter(|it| it.url.path() == "/api/entity/events")
        .map(|it| it.url.query_pairs().into_owned().collect())
        .collect();
    assert_eq!(pages.len(), 2, "both pages read: {pages:?}");
    assert!(
        pages[0].iter().any(|(name, _)| name == "from")
            && pages[0].iter().any(|(name, _)| name == "to"),
        "the window is asked for: {pages:?}"
    );

    let again = json_of(&run_beside(dir, preservica.env(), &catch_up).await);
    assert_eq!(again["filed"], 0, "{again}");
    assert_eq!(again["filedBefore"], 4, "{again}");

    // Up again: the recovered deliveries go through the handler, marked.
    let handled = dir.join("handled.txt");
    let exec = format!(
        r#"printf '%s %s %s\n' "$PRESERVICA_RECOVERED" "$PRESERVICA_TRIGGER" "$PRESERVICA_ENTITY_REFS" >> '{}'"#,
        handled.display()
    );
    let mut serve = tokio::task::block_in_place(|| {
        Serve::start_at(dir, &addr, &["--inbox", inbox, "--exec", &exec], &[])
    });
    tokio::task::block_in_place(|| {
        poll_until("the recovered deliveries are handled", || {
            std::fs::read_to_string(&handled).is_ok_and(|it| it.lines().count() == 4)
        });
        serve.terminate();
    });
    let mut lines: Vec<String> = std::fs::read_to_string(&handled)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "1 FULL_TEXT_INDEXED a2",
            "1 FULL_TEXT_INDEXED f5",
            "1 INGEST_FAILED m1",
            "1 MOVED a3",
        ]
    );
    let export = run_beside(dir, vec![], &["inbox", "export", "--inbox", inbox]).await;
    assert!(export.status.success());
    let bodies: Vec<Value> = String::from_utf8(export.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let line: Value = serde_json::from_str(line).unwrap();
            serde_json::from_str(line["body"].as_str().unwrap()).unwrap()
        })
        .collect();
    let body = bodies
        .iter()
        .find(|it| it["events"][0]["entityRef"] == "f5")
        .unwrap_or_else(|| panic!("no delivery for f5 in {bodies:?}"));
    assert_eq!(body["recovered"], true);
    assert_eq!(body["events"][0]["entityType"], "SO", "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn catch_up_needs_a_window_and_gaps_need_an_inbox() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_beside(dir.path(), vec![], &["catch-up"]).await;
    assert_eq!(output.status.code(), Some(2));
    let output = run_beside(dir.path(), vec![], &["gaps", "--inbox", "missing.db"]).await;
    assert_eq!(output.status.code(), Some(2));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("no inbox at missing.db"), "{message}");
    let output = run_beside(dir.path(), vec![], &["catch-up", "--since", "yesterday"]).await;
    assert_eq!(output.status.code(), Some(2));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("is not a time"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_subscription_is_recreated_and_its_window_recovered() {
    let port = preservica_webhook_testkit::port::free_loopback_port().unwrap();
    let public = format!("http://127.0.0.1:{port}/");
    let preservica = preservica_webhook_testkit::StandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = preservica.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let addr = format!("127.0.0.1:{port}");
    let args = [
        "--in-memory",
        "--subscribe",
        "INDEXED",
        "--public-url",
        &public,
        "--check-subscriptions",
        "300ms",
    ];
    let mut serve = tokio::task::block_in_place(|| Serve::start_at(dir.path(), &addr, &args, &env));
    tokio::task::block_in_place(|| serve.wait_stderr("subscribed FULL_TEXT_INDEXED as "));
    let first = preservica.ids();
    assert_eq!(first.len(), 1);

    // An administrator deletes it; an ingest happens before serve notices.
    assert!(preservica.drop_subscription(&first[0]));
    preservica.record_event("Ingest", "IO", "a7", &now_text());
    preservica.record_event("Moved", "IO", "a8", &now_text());

    let line = tokio::task::block_in_place(|| serve.stdout_line());
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["entityRef"], "a7", "{line}");
    assert_eq!(event["trigger"], "FULL_TEXT_INDEXED");
    assert_eq!(event["recovered"], true, "{line}");
    let again = preservica.ids();
    assert_eq!(again.len(), 1, "subscribed again: {again:?}");
    assert_ne!(again, first);
    assert!(
        preservica.handshakes().iter().all(Result::is_ok),
        "the new subscription passed the handshake"
    );
    let metrics = preservica_webhook_testkit::raw::raw(
        addr.parse().unwrap(),
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let metrics = String::from_utf8_lossy(&metrics.body);
    assert!(
        metrics.contains("preservica_webhook_subscriptions_recreated_total 1"),
        "{metrics}"
    );
    let (code, _) = tokio::task::block_in_place(|| serve.terminate());
    assert_eq!(code, Some(0));
    assert!(
        serve.rest_of_stdout().is_empty(),
        "the move, for a trigger nobody subscribed to, is not recovered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_catch_up_recovers_the_latest_gap_at_start() {
    let port = preservica_webhook_testkit::port::free_loopback_port().unwrap();
    let public = format!("http://127.0.0.1:{port}/");
    let addr = format!("127.0.0.1:{port}");
    let preservica = preservica_webhook_testkit::StandIn::start().await;
    preservica.insert_subscription(json!({
        "id": "s1", "url": public, "triggerType": "FULL_TEXT_INDEXED", "includeIdentifiers": true
    }));
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox.db");
    let inbox = inbox.to_str().unwrap();
    let mut serve = tokio::task::block_in_place(|| {
        Serve::start_at(dir.path(), &addr, &["--inbox", inbox], &[])
    });
    let (code, _) = tokio::task::block_in_place(|| serve.terminate());
    assert_eq!(code, Some(0));

    preservica.record_event("Ingest", "SO", "f9", &now_text());

    let env = preservica.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let args = ["--inbox", inbox, "--catch-up"];
    let mut serve = tokio::task::block_in_place(|| Serve::start_at(dir.path(), &addr, &args, &env));
    let line = tokio::task::block_in_place(|| serve.stdout_line());
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (
            &event["entityRef"],
            &event["entityType"],
            &event["recovered"]
        ),
        (&json!("f9"), &json!("SO"), &json!(true)),
        "{line}"
    );
    tokio::task::block_in_place(|| serve.terminate());
}

#[tokio::test(flavor = "multi_thread")]
async fn gaps_are_known_on_a_nats_stream_too() {
    let nats = preservica_webhook_testkit::nats::Nats::start().unwrap();
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let mut serve =
        tokio::task::block_in_place(|| Serve::start(dir.path(), &["--nats", &url], &[]));
    let (code, _) = tokio::task::block_in_place(|| serve.terminate());
    assert_eq!(code, Some(0));

    let gaps = json_of(&run_beside(dir.path(), vec![], &["gaps", "--nats", &url, "--json"]).await);
    let gaps = gaps.as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert!(gaps[0]["seconds"].as_i64().unwrap() >= 240, "{gaps:?}");
}
