//! The inbox's files on disk: who may open them, what a clean exit leaves behind, and what a
//! user reads when the inbox cannot be opened.

mod common;

use std::error::Error;
use std::path::{Path, PathBuf};

use preservica_webhook_server::{Inbox, InboxError, Server, ServerError, Webhook};

use common::*;

fn log_text() -> String {
    String::from_utf8(captured().lock().unwrap().clone()).unwrap()
}

/// `inbox` with `suffix` added to its file name (`-wal`, `-shm`, `.lock`).
fn sibling(inbox: &Path, suffix: &str) -> PathBuf {
    let mut name = inbox.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Starts a server on `dir`'s inbox, has one delivery stored and handled, runs `while_running`
/// and stops the server cleanly.
async fn serve_one_delivery(dir: &tempfile::TempDir, n: usize, while_running: impl FnOnce()) {
    let (handler, mut calls) = Scripted::ok();
    let server = Running::start(config(dir), handler).await;
    assert_eq!(
        deliver(&client(), &server.url("/"), &secret(), &body(n)).await,
        200
    );
    next_call(&mut calls).await;
    while_running();
    server.stop().await;
}

#[cfg(unix)]
#[tokio::test]
async fn creates_the_inbox_and_its_files_readable_by_their_owner_only() {
    let _ = captured();
    let dir = tempfile::tempdir().unwrap();
    let db = db_path(&dir);
    // A file created the ordinary way shows the umask this test runs under (usually 022, so
    // 0644): what the inbox's files would get without asking for 0600.
    let probe = dir.path().join("probe");
    std::fs::write(&probe, b"").unwrap();
    let ordinary = mode(&probe);
    serve_one_delivery(&dir, 1, || {
        let suffixes = ["", "-wal", "-shm", ".lock"];
        let modes: Vec<String> = suffixes
            .iter()
            .map(|suffix| format!("inbox.db{suffix} {:o}", mode(&sibling(&db, suffix))))
            .collect();
        let private: Vec<String> = suffixes
            .iter()
            .map(|suffix| format!("inbox.db{suffix} 600"))
            .collect();
        assert_eq!(
            modes, private,
            "a file created without asking for a mode gets {ordinary:o} here"
        );
    })
    .await;
    let warned = log_text()
        .lines()
        .any(|line| line.contains(&*db.to_string_lossy()) && line.contains("chmod 600"));
    assert!(!warned, "a fresh inbox was warned about");
}

#[cfg(unix)]
#[tokio::test]
async fn warns_about_an_inbox_other_users_can_open_and_leaves_its_mode_alone() {
    use std::os::unix::fs::PermissionsExt as _;
    let _ = captured();
    let dir = tempfile::tempdir().unwrap();
    let db = db_path(&dir);
    serve_one_delivery(&dir, 1, || {}).await;
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();

    serve_one_delivery(&dir, 2, || {}).await;
    let expected = format!(
        "the inbox file {} can be opened by other users; restrict it with `chmod 600 {}`",
        db.display(),
        db.display()
    );
    let log = log_text();
    assert!(
        log.lines()
            .any(|line| line.contains(" WARN ") && line.contains(&expected)),
        "no warning {expected:?} in:\n{log}"
    );
    assert_eq!(mode(&db), 0o644, "the inbox's mode was changed");
    let counts = Inbox::open(&db).unwrap().counts().unwrap();
    assert_eq!(counts.done, 2, "the inbox kept working");
}

#[tokio::test]
async fn a_clean_shutdown_leaves_no_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    let lock = sibling(&db_path(&dir), ".lock");
    serve_one_delivery(&dir, 1, || {
        assert!(lock.exists(), "no lock file while serving")
    })
    .await;
    assert!(!lock.exists(), "{} left after a clean exit", lock.display());

    let (handler, _calls) = Scripted::ok();
    let webhook = Webhook::start(&config(&dir).webhook, handler)
        .await
        .unwrap();
    assert!(lock.exists(), "no lock file while the webhook runs");
    webhook.shutdown().await;
    assert!(!lock.exists(), "{} left after shutdown", lock.display());
}

/// The error and its causes on one line, as `anyhow` prints them with `{:#}`.
fn chain(err: &(dyn Error + 'static)) -> String {
    std::iter::successors(Some(err), |err| (*err).source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// The inbox error inside a server's.
fn inbox_error(err: &ServerError) -> &InboxError {
    match err {
        ServerError::Inbox(inbox) => inbox,
        other => panic!("not an inbox error: {other}"),
    }
}

/// The error rendered as a chain names `path`, says `cause` exactly once, and is one the
/// user fixes in the configuration.
fn check(err: &InboxError, path: &Path, cause: &str) {
    let line = chain(err);
    assert!(
        line.contains(&*path.to_string_lossy()),
        "no path in {line:?}"
    );
    assert_eq!(
        line.matches(cause).count(),
        1,
        "{cause:?} not once in {line:?}"
    );
    assert!(
        err.is_configuration(),
        "{line:?} is not a configuration error"
    );
}

/// A failed start, through the server and through the embeddable webhook.
async fn start_errors(dir: &tempfile::TempDir, db: &Path) -> [ServerError; 2] {
    let mut config = config(dir);
    config.webhook.inbox = preservica_webhook_server::InboxConfig::Sqlite(db.to_owned());
    let (handler, _calls) = Scripted::ok();
    let Err(bound) = Server::bind(config.clone(), handler).await else {
        panic!("a server started on {}", db.display());
    };
    let (handler, _calls) = Scripted::ok();
    let Err(started) = Webhook::start(&config.webhook, handler).await else {
        panic!("a webhook started on {}", db.display());
    };
    [bound, started]
}

#[tokio::test]
async fn an_inbox_in_a_missing_folder_names_the_path_and_the_reason_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("no-such-folder").join("inbox.db");
    let reason = std::fs::File::open(&db).unwrap_err().to_string();
    for err in start_errors(&dir, &db).await {
        let err = inbox_error(&err);
        check(err, &db, &reason);
        assert!(
            chain(err).starts_with(&format!("cannot open the inbox {}", db.display())),
            "{}",
            chain(err)
        );
    }
    // Looking into an inbox that is not there says so, without the folder's reason.
    let err = Inbox::open(&db).unwrap_err();
    check(&err, &db, "no inbox at");
}

#[tokio::test]
async fn a_file_that_is_not_a_database_names_the_path_and_the_reason_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("notes.db");
    std::fs::write(&db, "these are notes, not an inbox\n".repeat(200)).unwrap();
    let reason = "file is not a database";
    let err = Inbox::open(&db).unwrap_err();
    check(&err, &db, reason);
    for err in start_errors(&dir, &db).await {
        let err = inbox_error(&err);
        check(err, &db, reason);
        assert!(chain(err).contains("move the file aside"), "{}", chain(err));
    }
    assert!(
        !sibling(&db, ".lock").exists(),
        "a failed start left its lock file"
    );
}

#[tokio::test]
async fn an_inbox_in_use_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let (handler, _calls) = Scripted::ok();
    let server = Running::start(config(&dir), handler).await;
    let [bound, started] = start_errors(&dir, &db_path(&dir)).await;
    for err in [&bound, &started] {
        let err = inbox_error(err);
        assert!(matches!(err, InboxError::InUse(_)), "{err}");
        assert!(err.is_configuration());
    }
    server.stop().await;
}
