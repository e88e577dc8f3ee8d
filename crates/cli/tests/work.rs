//! `work` (workers only) and `serve --no-workers` (intake only), on the stores one process
//! holds: what they refuse and what they do.

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_preservica-webhook");
const SECRET: &str = "my_shared_secret";

/// The binary in `dir`, with none of the user's configuration.
fn command(dir: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(BIN);
    command.current_dir(dir);
    for name in [
        "PRESERVICA_SERVER",
        "PRESERVICA_USERNAME",
        "PRESERVICA_PASSWORD",
        "PRESERVICA_TENANT",
        "PRESERVICA_2FA_TOKEN",
        "PRESERVICA_WEBHOOK_SECRET",
        "RUST_LOG",
    ] {
        command.env_remove(name);
    }
    command
}

/// Runs the binary to its end: exit code, stdout, stderr.
fn run(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let output = command(dir)
        .args(args)
        .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A `serve` child, killed when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
    let mut child = command(dir.path())
        .args([
            "serve",
            "127.0.0.1:0",
            "--no-workers",
            "--inbox",
            "events.db",
        ])
        .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let serve = Serve(child);
    let mut lines = std::io::BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let url = loop {
        let line = lines.next().expect("serve ended before listening").unwrap();
        if let Some(at) = line.find("listening on http") {
            break line[at + "listening on ".len()..].trim().to_owned();
        }
        seen.push(line);
    };
    assert!(
        seen.iter()
            .any(|line| line.contains("--no-workers on the SQLite inbox events.db")),
        "{seen:?}"
    );
    for trigger in ["MOVED", "INDEXED"] {
        let (code, out, err) = run(dir.path(), &["send", &url, "--trigger", trigger]);
        assert_eq!(code, Some(0), "{out}{err}");
    }
    // Longer than the workers' first claim would take, had they run.
    std::thread::sleep(Duration::from_millis(500));
    let pid = serve.0.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    let printed: Vec<String> = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .collect();
    assert!(started.elapsed() < Duration::from_secs(20));
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
