//! `inbox` subcommands on an inbox that `serve` filled.

use crate::common;

use std::path::Path;

use common::{SECRET, Serve, cmd, write};
use expect_test::expect;
use predicates::prelude::*;

/// Fills `dir/inbox.db` with one done, one dead and one undecodable delivery, and returns
/// the bodies sent, in order. Checks on the way that `inbox list` works while serve runs.
fn fill(dir: &Path) -> Vec<String> {
    let mut serve = Serve::start(
        dir,
        &[
            "-v",
            "--inbox",
            "inbox.db",
            "--exec",
            r#"cat > /dev/null; test "$PRESERVICA_TRIGGER" != MOVED"#,
            "--max-attempts",
            "1",
        ],
        &[],
    );
    let bodies = [
        r#"{"subscriptionId":"aa","trigger":"FULL_TEXT_INDEXED","events":[{"event":"FullTextIndexed","entityType":"IO","entityRef":"ref-done","identifiers":[]}]}"#,
        r#"{"subscriptionId":"bb","trigger":"MOVED","events":[{"event":"Moved","entityType":"SO","entityRef":"ref-dead","identifiers":[]}]}"#,
        "not json at all",
    ];
    for (index, body) in bodies.iter().enumerate() {
        let file = write(dir, &format!("body{index}"), body);
        cmd(dir)
            .args(["send", &serve.url, "--trigger", "MOVED", "--body"])
            .arg(&file)
            .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
            .assert()
            .success();
        if index == 0 {
            serve.wait_stderr("delivery processed");
            cmd(dir)
                .args(["inbox", "list", "--inbox", "inbox.db"])
                .assert()
                .success()
                .stdout(predicate::str::contains("ref-done"));
        }
    }
    serve.wait_stderr("dead letter");
    let (code, _) = serve.terminate();
    assert_eq!(code, Some(0));
    bodies.iter().map(|it| (*it).to_owned()).collect()
}

fn inbox(dir: &Path, args: &[&str]) -> assert_cmd::assert::Assert {
    cmd(dir)
        .arg("inbox")
        .args(args)
        .args(["--inbox", "inbox.db"])
        .assert()
}

fn json(assert: &assert_cmd::assert::Assert) -> serde_json::Value {
    serde_json::from_slice(&assert.get_output().stdout).unwrap()
}

/// The command's JSON output with the values that change from run to run replaced, keys
/// in the order printed.
fn redact(assert: &assert_cmd::assert::Assert) -> String {
    let text = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            let volatile = ["\"key\": \"", "\"receivedAt\": \""]
                .iter()
                .any(|prefix| trimmed.starts_with(prefix));
            match (volatile, line.split_once(": ")) {
                (true, Some((name, value))) => {
                    let comma = if value.ends_with(',') { "," } else { "" };
                    format!("{name}: \"<redacted>\"{comma}")
                }
                _ => line.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn inbox_commands_on_a_filled_inbox() {
    let dir = tempfile::tempdir().unwrap();
    let bodies = fill(dir.path());

    let all = inbox(dir.path(), &["list", "--json"]).success();
    expect![[r#"
        [
          {
            "id": "1",
            "key": "<redacted>",
            "state": "done",
            "receivedAt": "<redacted>",
            "attempts": 1,
            "nextAttemptAt": null,
            "lastError": null,
            "trigger": "FULL_TEXT_INDEXED",
            "subscriptionId": "aa",
            "entityRefs": [
              "ref-done"
            ]
          },
          {
            "id": "2",
            "key": "<redacted>",
            "state": "dead",
            "receivedAt": "<redacted>",
            "attempts": 1,
            "nextAttemptAt": null,
            "lastError": "the command exited with exit status: 1",
            "trigger": "MOVED",
            "subscriptionId": "bb",
            "entityRefs": [
              "ref-dead"
            ]
          },
          {
            "id": "3",
            "key": "<redacted>",
            "state": "undecodable",
            "receivedAt": "<redacted>",
            "attempts": 0,
            "nextAttemptAt": null,
            "lastError": null,
            "trigger": null,
            "subscriptionId": null,
            "entityRefs": []
          }
        ]"#]]
    .assert_eq(&redact(&all));

    let table = inbox(dir.path(), &["list", "--state", "dead"]).success();
    let text = String::from_utf8(table.get_output().stdout.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("ID  STATE"), "{text}");
    assert!(lines[1].starts_with("2   dead"), "{text}");
    assert!(lines[1].contains("ref-dead"), "{text}");

    let shown = inbox(dir.path(), &["show", "2", "--json"]).success();
    let shown = json(&shown);
    assert_eq!(shown["body"], bodies[1].as_str());
    assert_eq!(shown["state"], "dead");
    // The body as received, byte for byte, after the summary; --pretty reformats it.
    let raw = inbox(dir.path(), &["show", "1"]).success();
    let raw = String::from_utf8(raw.get_output().stdout.clone()).unwrap();
    assert!(raw.ends_with(&format!("\n\n{}\n", bodies[0])), "{raw}");
    inbox(dir.path(), &["show", "1", "--pretty"])
        .success()
        .stdout(predicate::str::contains("\"entityRef\": \"ref-done\""));
    inbox(dir.path(), &["show", "3"])
        .success()
        .stdout(predicate::str::ends_with("\n\nnot json at all\n"));
    inbox(dir.path(), &["show", "99"])
        .code(1)
        .stderr(predicate::str::contains("no delivery 99 in the inbox"));

    let exported = inbox(dir.path(), &["export"]).success();
    let text = String::from_utf8(exported.get_output().stdout.clone()).unwrap();
    let exported: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let exported_bodies: Vec<&str> = exported
        .iter()
        .map(|it| it["body"].as_str().unwrap())
        .collect();
    assert_eq!(exported_bodies, bodies);

    inbox(dir.path(), &["retry", "1"])
        .code(1)
        .stderr(predicate::str::contains("delivery 1 is done, not dead"));
    inbox(dir.path(), &["retry", "2"])
        .success()
        .stdout("re-queued delivery 2\n");
    let pending = inbox(dir.path(), &["list", "--state", "pending", "--json"]).success();
    assert_eq!(json(&pending)[0]["id"], "2");
    inbox(dir.path(), &["retry", "--dead"])
        .success()
        .stdout("re-queued 0 dead deliveries\n");
}

#[test]
fn export_into_a_closed_pipe_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    // `true` exits without reading: the export writes into a closed pipe.
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{}' inbox export --inbox inbox.db | true",
            common::BIN
        ))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
}

#[test]
fn a_missing_inbox_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    inbox(dir.path(), &["list"])
        .code(2)
        .stderr(predicate::str::contains("no inbox at inbox.db"));
}

/// The export lines without the inbox's own ids.
fn without_ids(export: &[u8]) -> Vec<serde_json::Value> {
    export
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            let mut value: serde_json::Value = serde_json::from_slice(line).unwrap();
            value.as_object_mut().unwrap().remove("id");
            value
        })
        .collect()
}

#[test]
fn an_export_imports_into_a_new_inbox_once() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    let export = inbox(dir.path(), &["export"])
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(without_ids(&export).len(), 3);
    let import = |input: Vec<u8>| {
        cmd(dir.path())
            .args(["inbox", "import", "--inbox", "copy.db"])
            .write_stdin(input)
            .assert()
    };
    import(export.clone())
        .success()
        .stdout("imported 3 deliveries, 0 already in the inbox\n");
    let copied = cmd(dir.path())
        .args(["inbox", "export", "--inbox", "copy.db"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let mut expected = without_ids(&export);
    let mut got = without_ids(&copied);
    let by_key = |value: &serde_json::Value| value["key"].as_str().unwrap().to_owned();
    expected.sort_by_key(by_key);
    got.sort_by_key(by_key);
    assert_eq!(got, expected, "state, time received and body kept");

    // Again, with a line that was edited: what came before it is there, the edit is named.
    let mut edited = export.clone();
    edited.extend_from_slice(
        br#"{"key":"00","state":"done","receivedAt":"2026-01-01T00:00:00Z","body":"x"}"#,
    );
    edited.push(b'\n');
    import(edited)
        .failure()
        .stderr(predicate::str::contains("line 4 is not an export line"))
        .stderr(predicate::str::contains("not the SHA-256 of its body"))
        .stderr(predicate::str::contains(
            "the 3 lines before it are in the inbox (0 of them new)",
        ));
    import(export)
        .success()
        .stdout("imported 0 deliveries, 3 already in the inbox\n");
}
