//! `serve` on a free port, driven by `send` and `challenge`.

use crate::common;

use common::{SECRET, Serve, cmd, write};
use predicates::prelude::*;

const TWO_EVENTS: &str = r#"{"subscriptionId":"4583e1e6d2c72ed96a1151bc7dfd53c2","timestamp":"2026-01-24T09:15:03.001","tenant":"TEST","version":"7.7","events":[{"event":"Moved","entityType":"SO","entityRef":"0b8a2c1e-5d3f-4e6a-9b7c-1d2e3f4a5b6c","identifiers":[{"BatchId":"B-17"}]},{"event":"Moved","entityType":"IO","entityRef":"9c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f","identifiers":[]}],"trigger":"MOVED"}"#;

fn send(dir: &std::path::Path, url: &str, args: &[&str]) -> assert_cmd::assert::Assert {
    cmd(dir)
        .args(["send", url])
        .args(args)
        .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
        .assert()
}

#[test]
fn prints_each_event_as_a_json_line_for_chunked_and_length_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(dir.path(), &["--inbox", "inbox.db"], &[]);
    assert!(serve.url.starts_with("http://127.0.0.1:"), "{}", serve.url);
    assert!(serve.url.ends_with('/'), "{}", serve.url);

    for transfer in ["chunked", "length"] {
        let reference = format!("ref-{transfer}");
        send(
            dir.path(),
            &serve.url,
            &[
                "--trigger",
                "INDEXED",
                "--entity-ref",
                &reference,
                "--transfer",
                transfer,
            ],
        )
        .success()
        .stdout("200 OK\n");
        let line: serde_json::Value = serde_json::from_str(&serve.stdout_line()).unwrap();
        let keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = vec![
            "subscriptionId",
            "trigger",
            "tenant",
            "timestamp",
            "event",
            "entityType",
            "entityRef",
            "identifiers",
        ];
        expected.sort_unstable();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, expected);
        assert_eq!(line["trigger"], "FULL_TEXT_INDEXED");
        assert_eq!(line["event"], "FullTextIndexed");
        assert_eq!(line["entityType"], "IO");
        assert_eq!(line["entityRef"], reference.as_str());
        assert_eq!(line["identifiers"], serde_json::json!([]));
    }

    // Two events in one delivery: two lines, in order.
    let body = write(dir.path(), "two.json", TWO_EVENTS);
    send(
        dir.path(),
        &serve.url,
        &["--trigger", "MOVED", "--body", body.to_str().unwrap()],
    )
    .success();
    let first: serde_json::Value = serde_json::from_str(&serve.stdout_line()).unwrap();
    let second: serde_json::Value = serde_json::from_str(&serve.stdout_line()).unwrap();
    assert_eq!(first["entityRef"], "0b8a2c1e-5d3f-4e6a-9b7c-1d2e3f4a5b6c");
    assert_eq!(
        first["identifiers"],
        serde_json::json!([{"BatchId": "B-17"}])
    );
    assert_eq!(second["entityType"], "IO");

    // Tampered bodies and other secrets are refused and print nothing.
    for transfer in ["chunked", "length"] {
        send(
            dir.path(),
            &serve.url,
            &["--trigger", "MOVED", "--tamper", "--transfer", transfer],
        )
        .code(1)
        .stdout("401 Unauthorized\n");
    }
    cmd(dir.path())
        .args(["send", &serve.url, "--trigger", "MOVED"])
        .env("PRESERVICA_WEBHOOK_SECRET", "not-the-secret")
        .assert()
        .code(1);

    let (code, _) = serve.terminate();
    assert_eq!(code, Some(0), "graceful stop on SIGTERM");
    assert_eq!(
        serve.rest_of_stdout(),
        Vec::<String>::new(),
        "stdout carries events only"
    );
    let listening = serve
        .stderr_seen
        .iter()
        .filter(|line| line.contains("listening on"))
        .count();
    assert_eq!(listening, 1, "{:?}", serve.stderr_seen);
}

#[test]
fn bodies_over_max_body_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &["--in-memory", "--max-body", "1k"], &[]);
    let big = format!(
        r#"{{"trigger":"MOVED","events":[],"padding":"{}"}}"#,
        "x".repeat(2048)
    );
    let body = write(dir.path(), "big.json", &big);
    for transfer in ["chunked", "length"] {
        send(
            dir.path(),
            &serve.url,
            &[
                "--trigger",
                "MOVED",
                "--body",
                body.to_str().unwrap(),
                "--transfer",
                transfer,
            ],
        )
        .code(1)
        .stdout("413 Payload Too Large\n");
    }
    send(dir.path(), &serve.url, &["--trigger", "MOVED"]).success();
}

#[test]
fn answers_challenges_with_the_first_secret_of_a_rotation_file() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = write(dir.path(), "secrets", &format!("{SECRET}\nold-secret\n"));
    let serve = Serve::start(
        dir.path(),
        &[
            "--in-memory",
            "--secret-file",
            secrets.to_str().unwrap(),
            "--path",
            "/hook",
        ],
        &[],
    );
    assert!(serve.url.ends_with("/hook"), "{}", serve.url);
    cmd(dir.path())
        .args(["challenge", &serve.url])
        .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
        .assert()
        .success()
        .stdout(predicate::str::starts_with("ok: "));
    cmd(dir.path())
        .args(["challenge", &serve.url])
        .env("PRESERVICA_WEBHOOK_SECRET", "old-secret")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("the receiver's secret differs"));

    // Deliveries signed with the old secret are still accepted.
    cmd(dir.path())
        .args(["send", &serve.url, "--trigger", "MOVED"])
        .env("PRESERVICA_WEBHOOK_SECRET", "old-secret")
        .assert()
        .success();
    let line: serde_json::Value = serde_json::from_str(&serve.stdout_line()).unwrap();
    assert_eq!(line["trigger"], "MOVED");

    // Another path is not the webhook.
    let root = serve.url.trim_end_matches("hook");
    cmd(dir.path())
        .args(["challenge", root])
        .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("404"));
}

#[cfg(unix)]
#[test]
fn warns_when_other_users_can_read_the_secret_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secrets = write(dir.path(), "secrets", &format!("{SECRET}\n"));
    let start = |mode: u32| {
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(mode)).unwrap();
        let mut serve = Serve::start(
            dir.path(),
            &["--in-memory", "--secret-file", secrets.to_str().unwrap()],
            &[],
        );
        let (code, _) = serve.terminate();
        assert_eq!(code, Some(0));
        serve
            .stderr_seen
            .iter()
            .any(|line| line.contains("other users can read it") && line.contains("chmod 600"))
    };
    assert!(
        start(0o644),
        "a world-readable secret file must be warned about"
    );
    assert!(!start(0o600), "an owner-only secret file needs no warning");
}

#[test]
fn quiet_still_says_where_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(dir.path(), &["--in-memory", "--quiet"], &[]);
    send(dir.path(), &serve.url, &["--trigger", "MOVED"]).success();
    serve.stdout_line();
    let (code, _) = serve.terminate();
    assert_eq!(code, Some(0));
    let listening = serve
        .stderr_seen
        .iter()
        .filter(|line| line.contains("listening on"))
        .count();
    assert_eq!(listening, 1, "{:?}", serve.stderr_seen);
    assert!(
        serve.stderr_seen.iter().all(|line| !line.contains("INFO")),
        "{:?}",
        serve.stderr_seen
    );
}

#[test]
fn exec_gets_the_raw_body_on_stdin_and_the_delivery_in_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    let body = write(dir.path(), "two.json", TWO_EVENTS);
    let serve = Serve::start(
        dir.path(),
        &[
            "--in-memory",
            "--exec",
            r#"printf '%s|%s|%s|%s|%s|%s|' "$PRESERVICA_TRIGGER" "$PRESERVICA_SUBSCRIPTION_ID" "$PRESERVICA_ENTITY_REFS" "$PRESERVICA_DELIVERY_KEY" "$PRESERVICA_ATTEMPT" "${PRESERVICA_WEBHOOK_SECRET-unset}"; cat; echo"#,
        ],
        &[],
    );
    send(
        dir.path(),
        &serve.url,
        &["--trigger", "MOVED", "--body", body.to_str().unwrap()],
    )
    .success();
    let line = serve.stdout_line();
    let fields: Vec<&str> = line.splitn(7, '|').collect();
    let key = preservica_webhook_core::DeliveryKey::of(TWO_EVENTS.as_bytes()).to_hex();
    assert_eq!(
        fields,
        [
            "MOVED",
            "4583e1e6d2c72ed96a1151bc7dfd53c2",
            "0b8a2c1e-5d3f-4e6a-9b7c-1d2e3f4a5b6c 9c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f",
            key.as_str(),
            "1",
            "unset",
            TWO_EVENTS,
        ]
    );
}

#[test]
fn exec_failures_are_retried_then_kept_as_dead() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(
        dir.path(),
        &[
            "--inbox",
            "inbox.db",
            "--exec",
            r#"echo "attempt $PRESERVICA_ATTEMPT"; exit 3"#,
            "--max-attempts",
            "2",
            "--retry-delay",
            "10ms",
        ],
        &[],
    );
    send(dir.path(), &serve.url, &["--trigger", "MOVED"]).success();
    assert_eq!(serve.stdout_line(), "attempt 1");
    assert_eq!(serve.stdout_line(), "attempt 2");
    serve.wait_stderr("dead letter");
    let (code, _) = serve.terminate();
    assert_eq!(code, Some(0));

    let output = cmd(dir.path())
        .args([
            "inbox", "list", "--state", "dead", "--inbox", "inbox.db", "--json",
        ])
        .assert()
        .success();
    let entries: serde_json::Value = serde_json::from_slice(&output.get_output().stdout).unwrap();
    assert_eq!(entries[0]["attempts"], 2);
    assert_eq!(
        entries[0]["lastError"],
        "the command exited with exit status: 3"
    );
}

#[test]
fn exec_is_stopped_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(
        dir.path(),
        &[
            "--in-memory",
            "--exec",
            "echo started; sleep 30",
            "--exec-timeout",
            "200ms",
            "--max-attempts",
            "1",
        ],
        &[],
    );
    send(dir.path(), &serve.url, &["--trigger", "MOVED"]).success();
    assert_eq!(serve.stdout_line(), "started");
    let line = serve.wait_stderr("dead letter");
    assert!(line.contains("ran longer than 200ms"), "{line}");
}

#[test]
fn refuses_to_start_without_a_secret_or_with_a_bad_path() {
    let dir = tempfile::tempdir().unwrap();
    cmd(dir.path())
        .args(["serve", "127.0.0.1:0", "--in-memory"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no webhook secret"));
    cmd(dir.path())
        .args(["serve", "127.0.0.1:0", "--in-memory", "--path", "hook"])
        .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("must start with '/'"));
}

#[test]
fn thumbnails_need_credentials() {
    let dir = tempfile::tempdir().unwrap();
    cmd(dir.path())
        .args([
            "serve",
            "127.0.0.1:0",
            "--in-memory",
            "--thumbnails",
            "thumbs",
        ])
        .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "no Preservica server, username and password given",
        ))
        .stderr(predicate::str::contains("PRESERVICA_SERVER"));
}
