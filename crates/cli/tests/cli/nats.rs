//! `serve --nats`, `work --nats` and `inbox … --nats` against a real `nats-server -js` that
//! each test starts on a free loopback port: deliveries published and handled, receivers and
//! workers apart, an outage answered 503 and recovered from without a restart, dead letters
//! re-queued, a credentials file for a server in operator mode.

use crate::common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::{Serve, poll_until, run, std_cmd, write};
use preservica_webhook_core::DeliveryKey;
use preservica_webhook_testkit::nats::{Nats, NatsCluster};

/// `inbox list --json --nats URL`: each delivery's state.
fn states(dir: &Path, url: &str) -> Vec<String> {
    let (code, out, err) = run(dir, &["--json", "inbox", "list", "--nats", url]);
    assert_eq!(code, Some(0), "{err}");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    entries
        .iter()
        .map(|it| it["state"].as_str().unwrap().to_owned())
        .collect()
}

/// The lines of a file the handler appends to (none when it does not exist yet).
fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A handler that records each delivery's key, once per call.
const RECORD_KEY: &str = r#"cat > /dev/null; echo "$PRESERVICA_DELIVERY_KEY" >> keys.txt"#;

/// A `work` process, killed when dropped.
struct Work(Child);

impl Work {
    fn start(dir: &Path, args: &[&str]) -> Work {
        let child = std_cmd(dir)
            .arg("work")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Work(child)
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_publishes_to_the_stream_and_its_workers_run_the_handler() {
    let nats = Nats::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = nats.url();
    let mut serve = Serve::start(dir.path(), &["--nats", &url, "--exec", RECORD_KEY], &[]);
    let body = write(dir.path(), "body.json", common::CAPTURED);
    let body = body.to_str().unwrap();
    for _ in 0..2 {
        let (code, out, err) = run(
            dir.path(),
            &["send", &serve.url, "--trigger", "MOVED", "--body", body],
        );
        assert_eq!(code, Some(0), "{out}{err}");
    }
    let (code, out, err) = run(dir.path(), &["send", &serve.url, "--trigger", "MOVED"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let keys = dir.path().join("keys.txt");
    poll_until("two deliveries handled", || lines(&keys).len() >= 2);
    let handled = lines(&keys);
    let captured_key = DeliveryKey::of(common::CAPTURED.as_bytes()).to_hex();
    assert!(handled.contains(&captured_key), "{handled:?}");
    poll_until("both acknowledged", || {
        states(dir.path(), &url) == ["done", "done"]
    });

    let (code, out, err) = run(dir.path(), &["inbox", "export", "--nats", &url]);
    assert_eq!(code, Some(0), "{err}");
    let exported: Vec<serde_json::Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(exported.len(), 2);
    assert_eq!(exported[0]["body"], common::CAPTURED);
    assert_eq!(exported[0]["key"], captured_key);
    let (code, out, err) = run(dir.path(), &["inbox", "show", "1", "--nats", &url]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(common::CAPTURED), "{out}");

    assert_eq!(serve.terminate().0, Some(0));
    // Handled once each, the duplicate not at all.
    assert_eq!(lines(&keys).len(), 2, "{:?}", lines(&keys));
}

#[test]
fn receivers_only_publish_and_a_separate_worker_handles_each_delivery_once() {
    let nats = Nats::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = nats.url();
    let receivers = [
        Serve::start(dir.path(), &["--nats", &url, "--no-workers"], &[]),
        Serve::start(dir.path(), &["--nats", &url, "--no-workers"], &[]),
    ];
    let body = write(dir.path(), "body.json", common::CAPTURED);
    let body = body.to_str().unwrap();
    // The same delivery to both receivers at once, and one of its own to each.
    std::thread::scope(|scope| {
        let sends: Vec<_> = receivers
            .iter()
            .map(|receiver| {
                let (dir, url) = (dir.path(), receiver.url.clone());
                scope.spawn(move || run(dir, &["send", &url, "--trigger", "MOVED", "--body", body]))
            })
            .collect();
        for send in sends {
            let (code, out, err) = send.join().unwrap();
            assert_eq!(code, Some(0), "{out}{err}");
        }
    });
    for receiver in &receivers {
        let (code, out, err) = run(dir.path(), &["send", &receiver.url, "--trigger", "MOVED"]);
        assert_eq!(code, Some(0), "{out}{err}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !dir.path().join("keys.txt").exists(),
        "receivers ran no handler"
    );
    assert_eq!(states(dir.path(), &url), ["pending", "pending", "pending"]);

    let _work = Work::start(dir.path(), &["--nats", &url, "--exec", RECORD_KEY]);
    let keys = dir.path().join("keys.txt");
    poll_until("three deliveries handled", || lines(&keys).len() >= 3);
    poll_until("all acknowledged", || {
        states(dir.path(), &url) == ["done", "done", "done"]
    });
    let mut handled = lines(&keys);
    handled.sort();
    handled.dedup();
    assert_eq!(
        handled.len(),
        3,
        "each delivery handled once: {:?}",
        lines(&keys)
    );
}

#[test]
fn a_credentials_file_authenticates_serve_and_the_inbox_commands() {
    let (nats, creds) = Nats::start_with_credentials().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = nats.url();
    let creds = creds.to_str().unwrap();

    // Without the file the server refuses the connection, and the error says so.
    let (code, out, err) = run(dir.path(), &["inbox", "list", "--nats", &url]);
    assert_ne!(code, Some(0), "{out}");
    assert!(err.contains("authorization violation"), "{err}");
    let missing = dir.path().join("missing.creds");
    let missing = missing.to_str().unwrap();
    let (code, _, err) = run(
        dir.path(),
        &["inbox", "list", "--nats", &url, "--nats-creds", missing],
    );
    assert_ne!(code, Some(0));
    assert!(
        err.contains("missing.creds"),
        "the error names the file: {err}"
    );

    let serve = Serve::start(
        dir.path(),
        &["--nats", &url, "--nats-creds", creds, "--exec", RECORD_KEY],
        &[],
    );
    let (code, out, err) = run(dir.path(), &["send", &serve.url, "--trigger", "MOVED"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let keys = dir.path().join("keys.txt");
    poll_until("the delivery handled", || !lines(&keys).is_empty());
    let (code, out, err) = run(
        dir.path(),
        &[
            "--json",
            "inbox",
            "list",
            "--nats",
            &url,
            "--nats-creds",
            creds,
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(entries.len(), 1, "{out}");
}

#[test]
fn nats_down_answers_503_and_challenges_then_recovers_without_a_restart() {
    let mut nats = Nats::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = nats.url();
    let serve = Serve::start(dir.path(), &["--nats", &url, "--exec", RECORD_KEY], &[]);
    nats.stop().unwrap();

    let (code, out, err) = run(dir.path(), &["send", &serve.url, "--trigger", "MOVED"]);
    assert_ne!(
        code,
        Some(0),
        "a delivery is refused while NATS is down: {out}{err}"
    );
    assert!(format!("{out}{err}").contains("503"), "{out}{err}");
    let (code, out, err) = run(dir.path(), &["challenge", &serve.url]);
    assert_eq!(code, Some(0), "challenges need no NATS: {out}{err}");

    nats.start_again().unwrap();
    poll_until("deliveries accepted again", || {
        run(dir.path(), &["send", &serve.url, "--trigger", "MOVED"]).0 == Some(0)
    });
    let keys = dir.path().join("keys.txt");
    poll_until("the delivery handled", || !lines(&keys).is_empty());
    // The refused delivery was not published behind its 503.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lines(&keys).len(), 1, "{:?}", lines(&keys));
}

#[test]
fn a_delivery_that_keeps_failing_is_dead_lettered_and_retry_dead_brings_it_back() {
    let nats = Nats::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = nats.url();
    // Fails until the file `fixed` exists.
    let handler = format!("test -f fixed && {{ {RECORD_KEY}; }}");
    let serve = Serve::start(
        dir.path(),
        &[
            "--nats",
            &url,
            "--exec",
            &handler,
            "--max-attempts",
            "2",
            "--retry-delay",
            "100ms",
        ],
        &[],
    );
    let (code, out, err) = run(dir.path(), &["send", &serve.url, "--trigger", "MOVED"]);
    assert_eq!(code, Some(0), "{out}{err}");
    poll_until("a dead letter", || states(dir.path(), &url) == ["dead"]);
    let (code, out, err) = run(
        dir.path(),
        &["--json", "inbox", "list", "--state", "dead", "--nats", &url],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("exit"), "the handler's error is kept: {out}");

    std::fs::write(dir.path().join("fixed"), "").unwrap();
    let (code, out, err) = run(dir.path(), &["inbox", "retry", "--dead", "--nats", &url]);
    assert_eq!(code, Some(0), "{out}{err}");
    let keys = dir.path().join("keys.txt");
    poll_until("the re-queued delivery handled", || lines(&keys).len() == 1);
    let (code, out, _) = run(
        dir.path(),
        &["--json", "inbox", "list", "--state", "dead", "--nats", &url],
    );
    assert_eq!(code, Some(0));
    assert_eq!(out.trim(), "[]");
}

#[test]
fn replicas_on_a_three_node_cluster_lose_no_accepted_delivery_through_crashes() {
    let mut cluster = NatsCluster::start().unwrap();
    let urls = cluster.urls();
    let dir = tempfile::tempdir().unwrap();
    let nats = ["--nats", &urls, "--nats-replicas", "3"];
    // The stream with three replicas, once the new cluster can place it.
    poll_until("the replicated stream", || {
        let mut args = vec!["inbox", "list"];
        args.extend_from_slice(&nats);
        run(dir.path(), &args).0 == Some(0)
    });
    let mut args = nats.to_vec();
    // Short leases: a receiver killed while its worker holds a message hands it on within
    // seconds, not the default two minutes. (The `inbox list` above created the consumer
    // with the default; the receivers' workers give it theirs.)
    args.extend_from_slice(&[
        "--exec",
        RECORD_KEY,
        "--exec-timeout",
        "2s",
        "--lease-margin",
        "1s",
    ]);
    let mut replicas: Vec<Serve> = (0..3)
        .map(|_| Serve::start(dir.path(), &args, &[]))
        .collect();

    // Under load, a receiver is SIGKILLed (dropping the harness kills it) and comes back,
    // and the NATS node leading the workers' consumer is killed: messages it was handing
    // out reach no worker, and the other two nodes elect new leaders. It comes back during
    // the load.
    let (receiver_down, node_down, node_up) = (10, 10, 20);
    let mut node = None;
    let mut accepted = Vec::new();
    for n in 0..30 {
        if n == receiver_down {
            replicas[1] = Serve::start(dir.path(), &args, &[]);
        }
        if n == node_down {
            poll_until("the consumer's leader", || {
                node = cluster.consumer_leader("PRESERVICA_WEBHOOK");
                node.is_some()
            });
            cluster.nodes[node.expect("polled")].kill().unwrap();
        }
        if n == node_up {
            let leader = node.expect("killed before");
            cluster.nodes[leader].start_again().unwrap();
        }
        let body = format!(
            r#"{{"trigger":"MOVED","events":[{{"entityType":"IO","entityRef":"ref-{n}"}}]}}"#
        );
        let file = write(dir.path(), &format!("body-{n}.json"), &body);
        // A sender that tries again after a refusal (a 503 while the cluster elects a new
        // stream leader), on the next replica.
        for attempt in 0..40 {
            let url = &replicas[(n + attempt) % 3].url;
            let sent = run(
                dir.path(),
                &[
                    "send",
                    url,
                    "--trigger",
                    "MOVED",
                    "--body",
                    file.to_str().unwrap(),
                ],
            );
            if sent.0 == Some(0) {
                accepted.push(DeliveryKey::of(body.as_bytes()).to_hex());
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let scene = format!(
        "receiver killed at delivery {receiver_down}, node {node:?} (the consumer's leader) \
         down from {node_down} to {node_up}"
    );
    assert_eq!(
        accepted.len(),
        30,
        "every delivery is accepted within 10 s of tries ({scene})"
    );

    let keys = dir.path().join("keys.txt");
    // A delivery a killed receiver's worker held, or that the killed node was handing out,
    // comes back once its lease (3 s) ends, and a pull that sat on the killed node is started
    // again after two missed heartbeats (10 s): allow for both, one after the other.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let handled = lines(&keys);
        let missing: Vec<&String> = accepted
            .iter()
            .filter(|key| !handled.contains(key))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "accepted but never handled: {missing:?} ({scene})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut export = vec!["inbox", "export"];
    export.extend_from_slice(&nats);
    let (code, out, err) = run(dir.path(), &export);
    assert_eq!(code, Some(0), "{err}");
    let stored: Vec<String> = out
        .lines()
        .map(|line| {
            let entry: serde_json::Value = serde_json::from_str(line).unwrap();
            entry["key"].as_str().unwrap().to_owned()
        })
        .collect();
    for key in &accepted {
        assert_eq!(
            stored.iter().filter(|it| *it == key).count(),
            1,
            "{key} once in the stream"
        );
    }
}
