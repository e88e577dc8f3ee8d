//! `serve --exec` with the real binary: what the command is given, what it may leave behind,
//! and how stopping treats it.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{PATIENCE, PidFile, SECRET, Serve, cmd, poll_until, write};

/// `serve`'s default `--max-body`.
const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// What `serve` puts at most in `PRESERVICA_ENTITY_REFS`.
const MAX_ENV_REFS: usize = 64 * 1024;

fn send(dir: &Path, url: &str, body: &Path) {
    cmd(dir)
        .args(["send", url, "--trigger", "MOVED", "--body"])
        .arg(body)
        .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
        .assert()
        .success()
        .stdout("200 OK\n");
}

fn send_one(dir: &Path, url: &str) {
    cmd(dir)
        .args(["send", url, "--trigger", "MOVED", "--entity-ref", "ref-1"])
        .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
        .assert()
        .success()
        .stdout("200 OK\n");
}

fn inbox_list(dir: &Path, state: &str) -> Vec<serde_json::Value> {
    let output = cmd(dir)
        .args([
            "inbox", "list", "--state", state, "--inbox", "inbox.db", "--json",
        ])
        .assert()
        .success();
    serde_json::from_slice(&output.get_output().stdout).unwrap()
}

/// A delivery of as many events as fit in `max` bytes, and its entity references in order.
fn largest_delivery(max: usize) -> (String, Vec<String>) {
    let head = r#"{"subscriptionId":"4583e1e6d2c72ed96a1151bc7dfd53c2","timestamp":"2026-01-24T09:15:03.001","tenant":"TEST","version":"7.7","trigger":"MOVED","events":["#;
    let tail = "]}";
    let mut body = head.to_owned();
    let mut refs = Vec::new();
    loop {
        let n = refs.len();
        let reference = format!("{n:08x}-5d3f-4e6a-9b7c-{n:012x}");
        let event = format!(
            r#"{}{{"event":"Moved","entityType":"IO","entityRef":"{reference}","identifiers":[]}}"#,
            if n == 0 { "" } else { "," }
        );
        if body.len() + event.len() + tail.len() > max {
            break;
        }
        body.push_str(&event);
        refs.push(reference);
    }
    body.push_str(tail);
    (body, refs)
}

#[test]
fn exec_runs_for_the_largest_delivery_with_a_bounded_reference_list() {
    let dir = tempfile::tempdir().unwrap();
    let (body, refs) = largest_delivery(DEFAULT_MAX_BODY);
    assert!(body.len() > DEFAULT_MAX_BODY - 100, "{}", body.len());
    let file = write(dir.path(), "big.json", &body);
    let mut serve = Serve::start(
        dir.path(),
        &[
            "--inbox",
            "inbox.db",
            "--exec",
            r#"printf '%s' "$PRESERVICA_ENTITY_REFS" > refs
               printf '%s %s %s' "$PRESERVICA_ATTEMPT" "${PRESERVICA_ENTITY_REFS_TRUNCATED-unset}" "${PRESERVICA_ENTITY_COUNT-unset}" > meta
               wc -c > stdin-bytes
               touch done"#,
        ],
        &[],
    );
    send(dir.path(), &serve.url, &file);
    let done = dir.path().join("done");
    poll_until("the command to finish", || done.exists());
    serve.wait_stderr("PRESERVICA_ENTITY_REFS_TRUNCATED=1");

    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    assert_eq!(read("meta"), format!("1 1 {}", refs.len()));
    assert_eq!(read("stdin-bytes").trim(), body.len().to_string());
    let passed = read("refs");
    assert!(passed.len() <= MAX_ENV_REFS, "{} bytes", passed.len());
    let passed: Vec<&str> = passed.split(' ').collect();
    assert!(
        passed.len() < refs.len() && passed[..] == refs[..passed.len()],
        "the references passed are the first ones of the delivery"
    );
    assert!(
        passed.len() * (refs[0].len() + 1) > MAX_ENV_REFS - refs[0].len() - 1,
        "as many as fit are passed, not {}",
        passed.len()
    );

    let (code, _) = serve.terminate();
    assert_eq!(code, Some(0));
    let done = inbox_list(dir.path(), "done");
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0]["attempts"], 1, "processed on the first attempt");
}

/// A command that starts two background processes and records every pid, then waits: what
/// a handler that outlives the shutdown grace looks like.
const LINGERS: &str = r#"sleep 300 </dev/null >/dev/null 2>&1 & echo $! >> pids
sleep 300 </dev/null >/dev/null 2>&1 & echo $! >> pids
echo $$ >> pids
touch started
wait"#;

fn assert_all_ended(pids: &PidFile) {
    assert_eq!(pids.pids().len(), 3, "{:?}", pids.pids());
    poll_until("the command's processes to end", || pids.alive().is_empty());
}

#[test]
fn shutdown_past_the_grace_kills_every_process_of_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let pids = PidFile(dir.path().join("pids"));
    let mut serve = Serve::start(
        dir.path(),
        &[
            "--in-memory",
            "--shutdown-grace",
            "200ms",
            "--exec",
            LINGERS,
        ],
        &[],
    );
    send_one(dir.path(), &serve.url);
    let started = dir.path().join("started");
    poll_until("the command to start", || started.exists());
    let (code, _) = serve.terminate();
    assert_eq!(code, Some(0), "{:?}", serve.stderr_seen);
    assert_all_ended(&pids);
}

#[test]
fn a_second_signal_stops_at_once_and_leaves_the_delivery_pending() {
    let dir = tempfile::tempdir().unwrap();
    let pids = PidFile(dir.path().join("pids"));
    let mut serve = Serve::start(
        dir.path(),
        &[
            "--inbox",
            "inbox.db",
            "--shutdown-grace",
            "10m",
            "--exec",
            LINGERS,
        ],
        &[],
    );
    send_one(dir.path(), &serve.url);
    let started = dir.path().join("started");
    poll_until("the command to start", || started.exists());

    serve.signal("TERM");
    let first = serve.wait_stderr("to stop at once");
    assert!(
        first.contains("1 running handler call") && first.contains("600s"),
        "{first}"
    );
    let second = Instant::now();
    serve.signal("TERM");
    let (code, rest) = serve.wait_exit(PATIENCE);
    assert!(
        second.elapsed() < Duration::from_secs(10),
        "{:?}",
        second.elapsed()
    );
    assert_eq!(code, Some(143), "128 + SIGTERM; stderr: {rest:?}");
    assert!(
        rest.iter()
            .any(|line| line.contains("1 delivery left pending")),
        "{rest:?}"
    );
    assert_all_ended(&pids);
    let pending = inbox_list(dir.path(), "pending");
    assert_eq!(pending.len(), 1, "{pending:?}");

    // The next start handles it again.
    let again = Serve::start(
        dir.path(),
        &["--inbox", "inbox.db", "--exec", "echo handled again"],
        &[],
    );
    assert_eq!(again.stdout_line(), "handled again");
}

#[test]
fn exec_stderr_lines_are_logged_with_the_delivery_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(
        dir.path(),
        &[
            "--inbox",
            "inbox.db",
            "--exec",
            r#"echo "cannot reach the archive for $PRESERVICA_ENTITY_REFS" >&2
               head -c 1000000 /dev/zero | tr '\0' x >&2
               printf '\nlast line without a newline' >&2"#,
        ],
        &[],
    );
    send_one(dir.path(), &serve.url);
    let line = serve.wait_stderr("cannot reach the archive for ref-1");
    assert!(line.contains("exec stderr"), "logged by serve: {line}");
    let last = serve.wait_stderr("last line without a newline");
    let long = serve.wait_stderr("exec stderr (line cut)");
    let mut done = Vec::new();
    poll_until("the delivery to be done", || {
        done = inbox_list(dir.path(), "done");
        !done.is_empty()
    });
    let id = format!("id={}", done[0]["id"].as_str().unwrap());
    for logged in [&line, &last, &long] {
        assert!(
            logged.contains("exec stderr") && logged.contains(&id) && logged.contains("attempt=1"),
            "{logged}"
        );
    }
    assert!(
        long.len() < 5000,
        "a long line is cut: {} bytes",
        long.len()
    );
    assert!(long.contains("cut_bytes="), "{long}");
}
