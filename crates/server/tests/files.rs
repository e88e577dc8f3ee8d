//! The inbox's files on disk: what a user reads when the inbox cannot be opened.

mod common;

use std::error::Error;
use std::path::Path;

use preservica_webhook_server::{Inbox, InboxError, Server, ServerError, Webhook};

use common::*;

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
    config.inbox = preservica_webhook_server::InboxConfig::Sqlite(db.to_owned());
    let (handler, _calls) = Scripted::ok();
    let Err(bound) = Server::bind(config.clone(), handler).await else {
        panic!("a server started on {}", db.display());
    };
    let (handler, _calls) = Scripted::ok();
    let Err(started) = Webhook::start(&config, handler).await else {
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
