//! What a new user meets first: the forms of the listening address, the errors of a
//! configuration that cannot work (each said once, exit 2), help that shows the defaults, the
//! log format, retention, and what `serve` leaves behind.

use crate::common;

use std::path::Path;

use common::{SECRET, Serve, cmd, write};
use predicates::prelude::*;

/// The command's stderr as text.
fn stderr(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stderr).into_owned()
}

/// Asserts `needle` occurs exactly once in `text`: a cause is never repeated in an error chain.
fn said_once(text: &str, needle: &str) {
    assert_eq!(
        text.matches(needle).count(),
        1,
        "{needle:?} once in: {text}"
    );
}

fn serve_once(dir: &Path, args: &[&str]) -> assert_cmd::assert::Assert {
    cmd(dir)
        .arg("serve")
        .args(args)
        .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
        .assert()
}

#[test]
fn listens_on_the_address_forms_users_type() {
    let dir = tempfile::tempdir().unwrap();
    for addr in ["0", ":0", "localhost:0", "127.0.0.1:0", "[::1]:0"] {
        let mut serve = Serve::start_at(dir.path(), addr, &["--in-memory"], &[]);
        let expected = if addr.starts_with('[') {
            "http://[::1]:"
        } else {
            "http://127.0.0.1:"
        };
        assert!(serve.url.starts_with(expected), "{addr}: {}", serve.url);
        let (code, _) = serve.terminate();
        assert_eq!(code, Some(0), "{addr}");
    }
}

#[test]
fn an_address_that_is_not_one_says_the_form_with_examples() {
    let dir = tempfile::tempdir().unwrap();
    let refused = serve_once(dir.path(), &["localhost:http", "--in-memory"]).code(2);
    let message = stderr(&refused);
    assert!(message.contains("\"localhost:http\""), "{message}");
    assert!(
        message.contains("write IP:PORT, e.g. 127.0.0.1:8000"),
        "{message}"
    );
    assert!(message.contains("8000"), "{message}");
}

#[test]
fn a_busy_port_is_a_configuration_error_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let refused = serve_once(dir.path(), &[&addr, "--in-memory"]).code(2);
    let message = stderr(&refused);
    assert_eq!(message.lines().count(), 1, "{message}");
    said_once(&message, "ddress already in use");
    assert!(
        message.contains(&format!("cannot listen on {addr}")),
        "{message}"
    );
    assert!(
        message.contains("another program is using port"),
        "{message}"
    );
}

/// Port 80 as an unprivileged user: the hint is about privileges, not another server. Run as
/// `nobody` when the tests run as root (as CI does).
#[test]
fn a_privileged_port_says_it_needs_privileges() {
    let root = std::fs::metadata("/proc/self")
        .map(|it| std::os::unix::fs::MetadataExt::uid(&it) == 0)
        .unwrap_or(false);
    let dir = tempfile::tempdir().unwrap();
    let output = if root {
        // A copy of the binary that `nobody` may run, in a folder it may enter.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.path().join("preservica-webhook");
        std::fs::copy(common::BIN, &bin).unwrap();
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&bin)
            .args(["serve", "127.0.0.1:80", "--in-memory"])
            .current_dir(dir.path())
            .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    } else {
        common::std_cmd(dir.path())
            .args(["serve", "127.0.0.1:80", "--in-memory"])
            .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
            .output()
            .unwrap()
    };
    let message = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{message}");
    said_once(&message, "ermission denied");
    assert!(
        message.contains("ports below 1024 need privileges"),
        "{message}"
    );
    assert!(!message.contains("another program"), "{message}");
}

#[test]
fn an_inbox_in_a_missing_folder_names_the_path_and_the_reason_once() {
    let dir = tempfile::tempdir().unwrap();
    let refused = serve_once(
        dir.path(),
        &["127.0.0.1:0", "--inbox", "no/such/dir/inbox.db"],
    )
    .code(2);
    let message = stderr(&refused);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains("no/such/dir/inbox.db"), "{message}");
    said_once(&message, "No such file or directory");
}

#[test]
fn a_file_that_is_not_an_inbox_is_refused_naming_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "inbox.db",
        &"not a database at all\n".repeat(200),
    );
    // Private, as an inbox is, so the one line is the error (not the warning about modes).
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let refused = serve_once(dir.path(), &["127.0.0.1:0", "--inbox", "inbox.db"]).code(2);
    let message = stderr(&refused);
    assert_eq!(message.lines().count(), 1, "{message}");
    said_once(&message, "not a database");
    assert!(message.contains("inbox.db"), "{message}");
}

#[test]
fn an_unreadable_tls_file_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let refused = serve_once(
        dir.path(),
        &[
            "127.0.0.1:0",
            "--in-memory",
            "--tls-cert",
            "missing-cert.pem",
            "--tls-key",
            "missing-key.pem",
        ],
    )
    .code(2);
    let message = stderr(&refused);
    assert!(message.contains("missing-cert.pem"), "{message}");
}

#[test]
fn every_missing_login_value_is_named_at_once_with_where_it_can_come_from() {
    let dir = tempfile::tempdir().unwrap();
    let refused = cmd(dir.path()).arg("subscriptions").assert().code(2);
    let message = stderr(&refused);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.contains("no Preservica server, username and password given"),
        "{message}"
    );
    for place in [
        "--server HOST or PRESERVICA_SERVER",
        "--username NAME or PRESERVICA_USERNAME",
        "PRESERVICA_PASSWORD (the password is never a flag)",
        "credentials.properties (there is no such file)",
    ] {
        assert!(message.contains(place), "{place:?} in {message}");
    }
    assert!(!message.contains("explicitly"), "{message}");

    // With some values given, only the rest are asked for.
    let refused = cmd(dir.path())
        .args(["--server", "eu.preservica.com", "subscriptions"])
        .env("PRESERVICA_USERNAME", "archivist")
        .assert()
        .code(2);
    let message = stderr(&refused);
    assert!(
        message.contains("no Preservica password given"),
        "{message}"
    );
    assert!(!message.contains("--server"), "{message}");
}

#[test]
fn send_to_a_port_with_nothing_listening_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/");
    for command in ["send", "challenge"] {
        let mut run = cmd(dir.path());
        run.args([command, &url])
            .env("PRESERVICA_WEBHOOK_SECRET", SECRET);
        if command == "send" {
            run.args(["--trigger", "MOVED"]);
        }
        let refused = run.assert().code(1);
        let message = stderr(&refused);
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(
            message.contains(&format!("nothing is listening on 127.0.0.1:{port}")),
            "{message}"
        );
        assert!(
            message.contains(&format!("preservica-webhook serve 127.0.0.1:{port}")),
            "{message}"
        );
    }
}

#[test]
fn serve_help_shows_the_defaults_and_the_other_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let help = cmd(dir.path()).args(["serve", "--help"]).assert().success();
    let text = String::from_utf8(help.get_output().stdout.clone()).unwrap();
    for shown in [
        "[default: 4]",
        "[default: 8]",
        "[default: 1s]",
        "[default: 1M]",
        "[default: 30d]",
        "[default: 60s]",
        "/healthz",
        "/metrics",
    ] {
        assert!(text.contains(shown), "{shown:?} in serve --help:\n{text}");
    }
}

#[test]
fn logs_as_json_lines_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(dir.path(), &["--in-memory", "--log-format", "json"], &[]);
    let line = serve.wait_stderr("listening on");
    let record: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(record["level"], "INFO", "{line}");
    let message = record["message"].as_str().unwrap();
    let url = message.strip_prefix("listening on ").unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    serve.url = url.to_owned();
    cmd(dir.path())
        .args(["send", &serve.url, "--trigger", "MOVED"])
        .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
        .assert()
        .success();
    let request = serve.wait_stderr("\"request\"");
    let record: serde_json::Value = serde_json::from_str(&request).unwrap();
    assert_eq!(record["status"], 200, "{request}");
    assert_eq!(record["outcome"], "accepted", "{request}");
    serve.terminate();
}

/// The outcomes of the `request` lines `serve ARGS` logs for a health check, a metrics scrape
/// and a delivery, in that order.
fn request_outcomes(args: &[&str]) -> Vec<String> {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let mut serve_args = vec!["--in-memory", "--log-format", "json"];
    serve_args.extend_from_slice(args);
    let mut serve = Serve::start(dir.path(), &serve_args, &[]);
    let line = serve.wait_stderr("listening on");
    let record: serde_json::Value = serde_json::from_str(&line).unwrap();
    let url = record["message"].as_str().unwrap();
    let url = url.strip_prefix("listening on ").unwrap().to_owned();
    let addr = url.strip_prefix("http://").unwrap().trim_end_matches('/');
    for path in ["/healthz", "/metrics"] {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    cmd(dir.path())
        .args(["send", &url, "--trigger", "MOVED"])
        .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
        .assert()
        .success();
    serve.wait_stderr("\"accepted\"");
    serve.terminate();
    serve
        .stderr_seen
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|record| record["message"] == "request")
        .map(|record| record["outcome"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn shows_webhook_request_lines_by_default_and_health_and_metrics_with_verbose() {
    assert_eq!(request_outcomes(&[]), ["accepted"]);
    assert_eq!(request_outcomes(&["-v"]), ["health", "metrics", "accepted"]);
}

#[test]
fn retention_keeps_or_prunes_processed_deliveries_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = ["--inbox", "inbox.db"];
    let mut serve = Serve::start(dir.path(), &["-v", "--inbox", "inbox.db"], &[]);
    cmd(dir.path())
        .args(["send", &serve.url, "--trigger", "MOVED"])
        .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
        .assert()
        .success();
    serve.wait_stderr("delivery processed");
    assert_eq!(serve.terminate().0, Some(0));
    let stored = || {
        let listed = cmd(dir.path())
            .args(["inbox", "list", "--json"])
            .args(inbox)
            .assert()
            .success();
        let entries: serde_json::Value =
            serde_json::from_slice(&listed.get_output().stdout).unwrap();
        entries.as_array().unwrap().len()
    };
    assert_eq!(stored(), 1);
    std::thread::sleep(std::time::Duration::from_millis(1100));

    // Pruning runs at start: `never` keeps the processed delivery, 1s prunes it.
    let mut serve = Serve::start(
        dir.path(),
        &["--inbox", "inbox.db", "--retention", "never"],
        &[],
    );
    assert_eq!(serve.terminate().0, Some(0));
    assert!(
        !serve.stderr_seen.iter().any(|line| line.contains("pruned")),
        "{:?}",
        serve.stderr_seen
    );
    assert_eq!(stored(), 1);
    let mut serve = Serve::start(
        dir.path(),
        &["--inbox", "inbox.db", "--retention", "1s"],
        &[],
    );
    serve.wait_stderr("pruned processed deliveries");
    assert_eq!(serve.terminate().0, Some(0));
    assert_eq!(stored(), 0);

    serve_once(dir.path(), &["127.0.0.1:0", "--retention", "0s"])
        .code(2)
        .stderr(predicate::str::contains("or never"));
}

#[test]
fn a_clean_exit_leaves_only_the_inbox_and_git_ignores_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(dir.path(), &[], &[]);
    cmd(dir.path())
        .args(["send", &serve.url, "--trigger", "MOVED"])
        .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
        .assert()
        .success();
    assert_eq!(serve.terminate().0, Some(0));
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert!(
        left.iter()
            .all(|name| name.starts_with("preservica-webhook.db")),
        "{left:?}"
    );
    assert!(
        !left.iter().any(|name| name.ends_with(".lock")),
        "the lock file is removed on a clean exit: {left:?}"
    );
    // What a run can leave (a killed one leaves the lock and log files too) is ignored by git.
    let ignore =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.gitignore")).unwrap();
    for pattern in ["*.db", "*.db-wal", "*.db-shm", "*.db.lock"] {
        assert!(
            ignore.lines().any(|line| line == pattern),
            "{pattern} in .gitignore"
        );
    }
}

#[test]
fn a_reference_that_is_not_one_is_a_usage_error_before_any_login() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["asset", "thumbnail"] {
        let refused = cmd(dir.path())
            .args([command, "../etc/passwd"])
            .assert()
            .code(2);
        let message = stderr(&refused);
        assert!(
            message.contains("\"../etc/passwd\" is not an entity reference"),
            "{message}"
        );
        // Refused while parsing the command line: no credentials were looked for.
        assert!(!message.contains("PRESERVICA_SERVER"), "{message}");
    }
}
