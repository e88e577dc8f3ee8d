//! `work` (workers only) and `serve --no-workers` (intake only), on the stores one process
//! holds: what they refuse and what they do.

use crate::common;

use std::time::{Duration, Instant};

use common::{Serve, run};

#[test]
fn work_refuses_a_sqlite_inbox_and_says_what_to_run_instead() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(dir.path(), &["work", "--inbox", "events.db"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("`work` cannot use the SQLite inbox events.db")
            && stderr.contains("opened by one process at a time")
            && stderr.contains("serve --inbox events.db` without --no-workers"),
        "{stderr}"
    );
    assert!(!dir.path().join("events.db").exists());
}

#[test]
fn an_inbox_url_of_an_unknown_kind_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["work", "--inbox", "mongodb://db/inbox"][..],
        &["serve", "--inbox", "mongodb://db/inbox"],
        &["inbox", "list", "--inbox", "mongodb://db/inbox"],
    ] {
        let (code, _, stderr) = run(dir.path(), args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("no inbox is built in for mongodb:// URLs"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn no_workers_leaves_out_the_handler_flags() {
    let dir = tempfile::tempdir().unwrap();
    for flag in [
        &["--exec", "true"][..],
        &["--thumbnails", "thumbs"],
        &["--in-memory"],
    ] {
        let mut args = vec!["serve", "--no-workers"];
        args.extend_from_slice(flag);
        let (code, _, stderr) = run(dir.path(), &args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("cannot be used with"), "{args:?}: {stderr}");
    }
}

#[test]
fn serve_without_workers_stores_deliveries_and_leaves_them_pending() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(dir.path(), &["--no-workers", "--inbox", "events.db"], &[]);
    serve.wait_stderr("--no-workers on the SQLite inbox events.db");
    for trigger in ["MOVED", "INDEXED"] {
        let (code, out, err) = run(dir.path(), &["send", &serve.url, "--trigger", trigger]);
        assert_eq!(code, Some(0), "{out}{err}");
    }
    // Longer than the workers' first claim would take, had they run.
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let (code, _) = serve.terminate();
    assert_eq!(code, Some(0));
    assert!(started.elapsed() < Duration::from_secs(20));
    let printed = serve.rest_of_stdout();
    assert!(printed.is_empty(), "serve --no-workers handled {printed:?}");
    drop(serve);

    let (code, out, err) = run(
        dir.path(),
        &["--json", "inbox", "list", "--inbox", "events.db"],
    );
    assert_eq!(code, Some(0), "{err}");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let states: Vec<&str> = entries
        .iter()
        .map(|it| it["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["pending", "pending"], "{out}");
}
