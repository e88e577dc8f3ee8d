//! `serve`, `work` and `inbox` on a PostgreSQL inbox, against a real PostgreSQL started for each
//! test: replicas killed under load, the database stopped and started, the inbox commands
//! while replicas run.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{PATIENCE, SECRET, Serve, cmd, poll_until, std_cmd};
use preservica_webhook_core::{DeliveryKey, Secret, sign};
use preservica_webhook_testkit::postgres::Postgres;

/// A distinct delivery body.
fn body(n: usize) -> String {
    format!(
        r#"{{"trigger":"MOVED","events":[{{"event":"Moved","entityType":"IO","entityRef":"ref-{n}"}}]}}"#
    )
}

fn key(body: &str) -> String {
    DeliveryKey::of(body.as_bytes()).to_string()
}

/// `host:port` of a serve URL (`http://127.0.0.1:PORT/`).
fn addr(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// One HTTP/1.1 request on a new connection; the status, or the connection's error.
fn request(addr: &str, head: &str, body: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    write!(
        stream,
        "{head}\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    answer
        .split(' ')
        .nth(1)
        .and_then(|it| it.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {answer:?}")))
}

/// A signed delivery posted to `url`.
fn post(url: &str, body: &str) -> std::io::Result<u16> {
    let signature = sign(&Secret::new(SECRET).unwrap(), body.as_bytes()).to_hex();
    request(
        &addr(url),
        &format!(
            "POST / HTTP/1.1\r\nContent-Type: application/json\r\nPreservica-Signature: {signature}"
        ),
        body,
    )
}

/// The body of `GET path` from the server at `url`.
fn get(url: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr(url)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// The handler every replica runs: after a call of 0.3 s, one line `KEY START END` (ns)
/// appended to `handled.log` in the working folder. A killed replica's command runs on and
/// records its call, whose outcome is lost.
const RECORD: &str =
    "s=$(date +%s%N); sleep 0.3; echo \"$PRESERVICA_DELIVERY_KEY $s $(date +%s%N)\" >> handled.log";

/// Every call `handled.log` records, by key: (start, end) in ns.
fn handled(dir: &Path) -> HashMap<String, Vec<(u128, u128)>> {
    let text = std::fs::read_to_string(dir.join("handled.log")).unwrap_or_default();
    let mut calls: HashMap<String, Vec<(u128, u128)>> = HashMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if let [key, start, end] = fields[..] {
            calls
                .entry(key.to_owned())
                .or_default()
                .push((start.parse().unwrap(), end.parse().unwrap()));
        }
    }
    calls
}

/// The keys `inbox export` prints, with each one's state.
fn exported(dir: &Path, url: &str) -> HashMap<String, String> {
    let output = cmd(dir)
        .args(["inbox", "export", "--inbox", url])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                value["key"].as_str().unwrap().to_owned(),
                value["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn replicas_killed_and_restarted_under_load_lose_nothing_and_never_run_a_delivery_twice_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let postgres = Postgres::start().unwrap();
    let url = postgres.url();
    let args = [
        "--inbox",
        url.as_str(),
        "--exec",
        RECORD,
        "--exec-timeout",
        "1s",
        "--lease-margin",
        "1s",
        "--retry-delay",
        "100ms",
    ];
    let start = || Serve::start(dir.path(), &args, &[]);
    let replicas: Arc<Mutex<Vec<Serve>>> = Arc::new(Mutex::new(vec![start(), start(), start()]));
    let urls = |replicas: &Mutex<Vec<Serve>>| -> Vec<String> {
        replicas
            .lock()
            .unwrap()
            .iter()
            .map(|it| it.url.clone())
            .collect()
    };

    // The load: deliveries spread over the replicas, each sent (like a load balancer retrying
    // another backend) until one answers 200.
    let answered: Arc<Mutex<Vec<String>>> = Arc::default();
    let load = {
        let replicas = Arc::clone(&replicas);
        let answered = Arc::clone(&answered);
        std::thread::spawn(move || {
            for n in 0..400 {
                let body = body(n);
                let deadline = Instant::now() + PATIENCE;
                let mut turn = n;
                loop {
                    let targets = urls(&replicas);
                    let target = &targets[turn % targets.len()];
                    match post(target, &body) {
                        Ok(200) => break,
                        Ok(503) | Err(_) => turn += 1,
                        Ok(other) => panic!("delivery {n} answered {other}"),
                    }
                    assert!(Instant::now() < deadline, "delivery {n} never answered 200");
                    std::thread::sleep(Duration::from_millis(5));
                }
                answered.lock().unwrap().push(key(&body));
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    // Meanwhile each replica in turn is killed (SIGKILL: no shutdown at all) and started again.
    let mut kills = 0;
    while !load.is_finished() {
        std::thread::sleep(Duration::from_millis(700));
        let victim = kills % 3;
        let fresh = start();
        let killed = std::mem::replace(&mut replicas.lock().unwrap()[victim], fresh);
        killed.signal("KILL");
        drop(killed);
        kills += 1;
    }
    load.join().unwrap();
    assert!(
        kills >= 3,
        "only {kills} replicas were killed during the load"
    );
    let answered: Vec<String> = answered.lock().unwrap().clone();
    assert_eq!(answered.len(), 400);

    // Every delivery answered 200 is handled at least once, those that a killed replica held
    // once their leases (about 7 s) have run out.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let calls = handled(dir.path());
        let missing = answered
            .iter()
            .filter(|key| !calls.contains_key(*key))
            .count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} deliveries never handled"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The kills caught calls running: their deliveries were taken over once the leases ran
    // out, and handled again.
    let twice = handled(dir.path())
        .values()
        .filter(|it| it.len() > 1)
        .count();
    assert!(
        twice > 0,
        "no kill caught a running call: the takeover went untested"
    );
    // And never by two workers at the same time.
    for (key, mut calls) in handled(dir.path()) {
        calls.sort();
        for pair in calls.windows(2) {
            assert!(
                pair[1].0 >= pair[0].1,
                "{key} ran twice at once: {:?} and {:?}",
                pair[0],
                pair[1]
            );
        }
    }
    let stored = exported(dir.path(), &url);
    for key in &answered {
        assert!(
            stored.contains_key(key),
            "{key} answered 200 but not in the inbox"
        );
    }
    assert_eq!(stored.len(), answered.len());
    poll_until("every delivery done", || {
        exported(dir.path(), &url)
            .values()
            .all(|state| state == "done")
    });
}

#[test]
fn with_the_database_down_deliveries_get_503_and_challenges_200_until_it_is_back_even_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut postgres = Postgres::start().unwrap();
    let url = postgres.url();
    let serve = Serve::start(dir.path(), &["--inbox", &url], &[]);
    assert_eq!(post(&serve.url, &body(1)).unwrap(), 200);
    assert!(serve.stdout_line().contains("ref-1"));

    postgres.stop().unwrap();
    for n in 2..5 {
        assert_eq!(
            post(&serve.url, &body(n)).unwrap(),
            503,
            "stored without a database"
        );
    }
    // Challenges are answered from memory meanwhile.
    cmd(dir.path())
        .args(["challenge", &serve.url])
        .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
        .assert()
        .success();

    // Back again: the same serve stores and handles deliveries without a restart.
    postgres.start_again().unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        match post(&serve.url, &body(2)).unwrap() {
            200 => break,
            503 => assert!(Instant::now() < deadline, "serve never recovered"),
            other => panic!("answered {other}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(serve.stdout_line().contains("ref-2"));
    let stored = exported(dir.path(), &url);
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(!stored.contains_key(&key(&body(3))));

    // Stopped and started again under load: every delivery answered 200 was committed.
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let load = {
        let (target, stop, accepted) =
            (serve.url.clone(), Arc::clone(&stop), Arc::clone(&accepted));
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            let mut n = 100;
            while !stop.load(Ordering::SeqCst) {
                let body = body(n);
                let status = post(&target, &body).unwrap();
                if status == 200 {
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
                answers.push((key(&body), status));
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            answers
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    postgres.stop().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    postgres.start_again().unwrap();
    std::thread::sleep(Duration::from_millis(1_000));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let answers = load.join().unwrap();
    let refused = answers.iter().filter(|(_, status)| *status == 503).count();
    assert!(
        refused > 0,
        "no delivery was refused while the database was down"
    );
    assert_eq!(answers.last().unwrap().1, 200, "not recovered under load");
    let stored = exported(dir.path(), &url);
    for (key, status) in &answers {
        assert!(matches!(status, 200 | 503), "answered {status}");
        if *status == 200 {
            assert!(
                stored.contains_key(key),
                "{key} answered 200 but not stored"
            );
        }
    }
}

/// `preservica-webhook work ARGS`, its stderr in `work.log`.
fn work(dir: &Path, args: &[&str]) -> Child {
    std_cmd(dir)
        .arg("work")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("work.log")).unwrap())
        .spawn()
        .unwrap()
}

#[test]
fn inbox_commands_and_metrics_work_on_the_shared_inbox_while_replicas_run() {
    let dir = tempfile::tempdir().unwrap();
    let postgres = Postgres::start().unwrap();
    let url = postgres.url();
    let a = Serve::start(dir.path(), &["--inbox", &url, "--no-workers"], &[]);
    let b = Serve::start(dir.path(), &["--inbox", &url, "--no-workers"], &[]);
    // The same delivery sent to both replicas at once is stored once.
    let same = body(0);
    let both: Vec<_> = [a.url.clone(), b.url.clone()]
        .into_iter()
        .map(|url| {
            let same = same.clone();
            std::thread::spawn(move || post(&url, &same).unwrap())
        })
        .collect();
    for sent in both {
        assert_eq!(sent.join().unwrap(), 200);
    }
    for n in 1..3 {
        assert_eq!(post(&a.url, &body(n)).unwrap(), 200);
    }
    let stored = exported(dir.path(), &url);
    assert_eq!(stored.len(), 3, "{stored:?}");
    assert!(stored.values().all(|state| state == "pending"));
    poll_until("the metrics to count 3 pending", || {
        get(&b.url, "/metrics").contains("preservica_webhook_inbox_depth 3")
    });

    // Workers elsewhere whose handler always fails: every delivery becomes a dead letter.
    let mut worker = work(
        dir.path(),
        &["--inbox", &url, "--exec", "exit 3", "--max-attempts", "1"],
    );
    poll_until("three dead letters", || {
        exported(dir.path(), &url)
            .values()
            .filter(|it| *it == "dead")
            .count()
            == 3
    });
    let list = cmd(dir.path())
        .args([
            "--json", "inbox", "list", "--state", "dead", "--inbox", &url,
        ])
        .output()
        .unwrap();
    assert!(list.status.success());
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["attempts"], 1);
    let id = entries[0]["id"].as_str().unwrap().to_owned();
    let show = cmd(dir.path())
        .args(["inbox", "show", &id, "--inbox", &url])
        .output()
        .unwrap();
    assert!(show.status.success());
    assert!(
        String::from_utf8_lossy(&show.stdout).contains(&same),
        "{show:?}"
    );
    poll_until("the metrics to count 3 dead letters", || {
        get(&a.url, "/metrics").contains("preservica_webhook_dead_letters 3")
    });

    // Re-queued while the workers run: they take them again (and fail again).
    worker.kill().unwrap();
    worker.wait().unwrap();
    cmd(dir.path())
        .args(["inbox", "retry", "--dead", "--inbox", &url])
        .assert()
        .success()
        .stdout("re-queued 3 dead deliveries\n");
    let pending: HashSet<String> = exported(dir.path(), &url).into_values().collect();
    assert_eq!(pending, HashSet::from(["pending".to_owned()]));
    let mut worker = work(dir.path(), &["--inbox", &url, "--exec", "true"]);
    poll_until("all three done", || {
        exported(dir.path(), &url).values().all(|it| it == "done")
    });
    worker.kill().unwrap();
    worker.wait().unwrap();

    // An export imported again finds everything there already.
    let export = cmd(dir.path())
        .args(["inbox", "export", "--inbox", &url])
        .output()
        .unwrap();
    cmd(dir.path())
        .args(["inbox", "import", "--inbox", &url])
        .write_stdin(export.stdout)
        .assert()
        .success()
        .stdout("imported 0 deliveries, 3 already in the inbox\n");
}

#[test]
fn a_bad_database_url_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &[
            "work",
            "--inbox",
            "postgres://u:hunter2@db/x?sslmode=sometimes",
        ][..],
        &[
            "serve",
            "--inbox",
            "postgres://u:hunter2@db/x?sslmode=sometimes",
        ],
        &[
            "inbox",
            "list",
            "--inbox",
            "postgres://u:hunter2@db/x?sslmode=sometimes",
        ],
    ] {
        let output = cmd(dir.path()).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("sslmode=sometimes"), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
    // A database that is not there: exit 2, saying what to check.
    let port = preservica_webhook_testkit::port::free_loopback_port().unwrap();
    let output = cmd(dir.path())
        .args([
            "inbox",
            "list",
            "--inbox",
            &format!("postgres://u:hunter2@127.0.0.1:{port}/x"),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("check that PostgreSQL runs there"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
