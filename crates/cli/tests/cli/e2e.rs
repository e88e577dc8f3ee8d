//! Whole-binary flows no other test covers: `serve` killed with SIGKILL under concurrent
//! deliveries and restarted on the same inbox, and `--exec` retried over many deliveries.
//! `cargo xtask e2e` runs this module alone.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::{StreamExt as _, stream};
use preservica_webhook_testkit::raw::{chunked_request, length_request, send};
use preservica_webhook_testkit::{Delivery, PATIENCE, poll_until, random_hex};
use rand::Rng as _;

use crate::common::{SECRET, Serve, cmd};

/// How many deliveries each crash round sends, and how many are in flight at once.
const DELIVERIES: usize = 150;
const CONCURRENCY: usize = 8;

/// The inbox's entries by key, with their state (`inbox list --state all --json`).
fn inbox_states(dir: &Path) -> HashMap<String, String> {
    let args = [
        "inbox", "list", "--inbox", "inbox.db", "--state", "all", "--json",
    ];
    let output = cmd(dir).args(args).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    let state = |it: &serde_json::Value, name: &str| it[name].as_str().unwrap().to_owned();
    let pairs = entries
        .iter()
        .map(|it| (state(it, "key").to_lowercase(), state(it, "state")));
    pairs.collect()
}

/// Waits until every delivery is `done` in the inbox.
fn wait_done(dir: &Path, deliveries: &[Delivery]) {
    poll_until("every delivery done in the inbox", || {
        let states = inbox_states(dir);
        let done = |it: &Delivery| states.get(&it.key).is_some_and(|state| state == "done");
        deliveries.iter().all(done)
    });
}

/// How many lines of the file hold each key (an absent file holds none).
fn count_lines(path: &Path) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        *counts.entry(line.to_owned()).or_default() += 1;
    }
    counts
}

/// Whether a process other than this one works in `dir` (a handler outliving its receiver).
fn processes_in(dir: &Path) -> bool {
    let me = std::process::id().to_string();
    let entries = std::fs::read_dir("/proc").unwrap().flatten();
    entries
        .filter(|it| {
            it.file_name()
                .to_str()
                .is_some_and(|name| name.parse::<u32>().is_ok())
        })
        .filter(|it| it.file_name() != me.as_str())
        .any(|it| std::fs::read_link(it.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(dir)))
}

/// POSTs a signed delivery on a connection of its own; `None` when no answer came (the
/// receiver died first).
async fn post(addr: SocketAddr, delivery: &Delivery, chunked: bool) -> Option<u16> {
    let signature = delivery.signature(SECRET);
    let request = if chunked {
        chunked_request("/", &signature, &delivery.bytes, 100)
    } else {
        length_request("/", &signature, &delivery.bytes)
    };
    let answer = tokio::time::timeout(PATIENCE, send(addr, &request)).await;
    answer.ok()?.ok().map(|it| it.status)
}

fn addr_of(serve: &Serve) -> SocketAddr {
    let host = serve.url.trim_start_matches("http://");
    host.split('/').next().unwrap().parse().unwrap()
}

/// What at-least-once allows, with a handler that appends the delivery key to a witness
/// file: every delivery answered 200 is in the inbox after the kill; before the kill none
/// was handled twice, none that is not stored, and each marked done was handled; after the
/// restart and a full resend, each is handled and done, those done at the kill never again,
/// the others exactly once more.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_concurrent_deliveries_then_a_restart_loses_and_repeats_nothing() {
    for round in 0..6 {
        crash_round(round).await;
    }
}

async fn crash_round(round: usize) {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let witness = dir.join("witness.log");
    let exec = format!(
        "printf '%s\\n' \"$PRESERVICA_DELIVERY_KEY\" >> '{}'",
        witness.display()
    );
    let args = [
        "--inbox",
        "inbox.db",
        "--exec",
        &exec,
        "--retry-delay",
        "100ms",
        "--workers",
        "4",
    ];
    let mut serve = tokio::task::block_in_place(|| Serve::start(dir, &args, &[]));
    let addr = addr_of(&serve);
    let subscription = random_hex();
    let deliveries: Vec<Delivery> = (0..DELIVERIES)
        .map(|index| Delivery::assets(&subscription, index % 2 + 1))
        .collect();
    let kill_after = rand::rng().random_range(DELIVERIES / 10..DELIVERIES * 3 / 4);

    // Send concurrently; once `kill_after` answers came back, kill serve's process group
    // while the other requests are in flight.
    let answered = AtomicUsize::new(0);
    let (progress, mut watch) = tokio::sync::watch::channel(0);
    let sender = stream::iter(deliveries.iter().enumerate())
        .map(|(index, delivery)| {
            let (answered, progress) = (&answered, &progress);
            async move {
                let status = post(addr, delivery, index % 3 != 0).await;
                progress.send_replace(answered.fetch_add(1, Ordering::SeqCst) + 1);
                (index, status)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>();
    let killer = async {
        let _ = watch.wait_for(|count| *count >= kill_after).await;
        serve.kill();
    };
    let (results, ()) = tokio::join!(sender, killer);
    let acked: Vec<usize> = results
        .into_iter()
        .filter_map(|(index, status)| {
            assert!(
                matches!(status, None | Some(200)),
                "round {round}: answered {status:?}"
            );
            status.map(|_| index)
        })
        .collect();
    poll_until("handlers that outlived serve to end", || !processes_in(dir));

    let at_kill = inbox_states(dir);
    let handled_at_kill = count_lines(&witness);
    for index in &acked {
        let key = &deliveries[*index].key;
        assert!(
            at_kill.contains_key(key),
            "round {round}: {key} answered 200, not stored"
        );
    }
    for (key, times) in &handled_at_kill {
        assert_eq!(
            *times, 1,
            "round {round}: {key} handled {times} times before the kill"
        );
        assert!(
            at_kill.contains_key(key),
            "round {round}: {key} handled but not stored"
        );
    }
    let done_at_kill: HashSet<&String> = at_kill
        .iter()
        .filter(|(_, state)| *state == "done")
        .map(|(key, _)| key)
        .collect();
    for key in &done_at_kill {
        assert!(
            handled_at_kill.contains_key(*key),
            "round {round}: {key} done, never handled"
        );
    }

    // Restart on the same inbox and send everything again, as a sender unsure of what
    // arrived would.
    tokio::task::block_in_place(|| serve.restart());
    let addr = addr_of(&serve);
    let statuses: Vec<Option<u16>> = stream::iter(&deliveries)
        .map(|delivery| post(addr, delivery, true))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|it| *it == Some(200)),
        "round {round}: {statuses:?}"
    );
    tokio::task::block_in_place(|| {
        wait_done(dir, &deliveries);
        assert_eq!(serve.terminate().0, Some(0));
    });

    let handled = count_lines(&witness);
    for delivery in &deliveries {
        let key = &delivery.key;
        let before = handled_at_kill.get(key).copied().unwrap_or(0);
        let after = handled.get(key).copied().unwrap_or(0) - before;
        let expected = usize::from(!done_at_kill.contains(key));
        assert_eq!(
            after, expected,
            "round {round}: {key} handled {after} times after restart"
        );
    }
    assert_eq!(
        handled.len(),
        deliveries.len(),
        "round {round}: keys of no delivery handled"
    );
}

/// A handler that fails the first call for each delivery: every delivery ends done after
/// exactly two calls, with attempts 1 and 2, the delivery's environment and its raw body on
/// stdin each time; one delivery that always fails ends as a dead letter.
#[tokio::test(flavor = "multi_thread")]
async fn exec_failing_once_per_delivery_leaves_every_delivery_done_after_two_calls() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let script = r#"key="$PRESERVICA_DELIVERY_KEY"
printf '%s\t%s\t%s\t%s\n' "$key" "$PRESERVICA_ATTEMPT" "$PRESERVICA_SUBSCRIPTION_ID" "$PRESERVICA_ENTITY_REFS" >> calls.log
cat > "body-$key.$PRESERVICA_ATTEMPT"
case "$PRESERVICA_ENTITY_REFS" in *always_fails*) exit 4;; esac
if [ -e "seen-$key" ]; then exit 0; fi
: > "seen-$key"; exit 3
"#;
    std::fs::write(dir.join("handler.sh"), script).unwrap();
    std::fs::write(dir.join("secrets.txt"), format!("{SECRET}\n")).unwrap();
    let args = [
        "--inbox",
        "inbox.db",
        "--secret-file",
        "secrets.txt",
        "--exec",
        "sh handler.sh",
        "--retry-delay",
        "100ms",
        "--max-attempts",
        "3",
        "--workers",
        "2",
    ];
    // The secret from --secret-file only.
    let mut command = crate::common::std_cmd(dir);
    command.args(["serve", "127.0.0.1:0"]).args(args);
    let mut serve = Serve(preservica_webhook_testkit::Serve::spawn(command));
    let subscription = random_hex();
    let deliveries: Vec<Delivery> = (0..12)
        .map(|index| Delivery::assets(&subscription, index % 3 + 1))
        .collect();
    let dead = preservica_webhook_testkit::Event {
        entity_type: "IO",
        entity_ref: "always_fails".to_owned(),
    };
    let dead = Delivery::new(&subscription, "FULL_TEXT_INDEXED", &[dead]);
    let addr = addr_of(&serve);
    for (index, delivery) in deliveries.iter().chain([&dead]).enumerate() {
        assert_eq!(post(addr, delivery, index % 2 == 0).await, Some(200));
    }
    tokio::task::block_in_place(|| {
        wait_done(dir, &deliveries);
        serve.wait_stderr("dead letter");
        assert_eq!(serve.terminate().0, Some(0));
    });

    let log = std::fs::read_to_string(dir.join("calls.log")).unwrap();
    let mut calls: HashMap<&str, Vec<Vec<&str>>> = HashMap::new();
    for line in log.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        calls.entry(fields[0]).or_default().push(fields);
    }
    for delivery in &deliveries {
        let calls = calls.remove(delivery.key.as_str()).unwrap_or_default();
        let attempts: Vec<&str> = calls.iter().map(|it| it[1]).collect();
        assert_eq!(attempts, ["1", "2"], "{}", delivery.key);
        let refs = delivery.refs.join(" ");
        assert!(
            calls
                .iter()
                .all(|it| it[2] == subscription && it[3] == refs),
            "{calls:?}"
        );
        for attempt in ["1", "2"] {
            let body = std::fs::read(dir.join(format!("body-{}.{attempt}", delivery.key)));
            assert_eq!(body.unwrap(), delivery.bytes);
        }
    }
    let dead_calls = calls.remove(dead.key.as_str()).unwrap_or_default();
    assert_eq!(
        dead_calls.len(),
        3,
        "the always-failing delivery ran for every attempt"
    );
    assert!(
        calls.is_empty(),
        "--exec ran for deliveries never sent: {calls:?}"
    );
    assert_eq!(inbox_states(dir)[&dead.key], "dead");
}
