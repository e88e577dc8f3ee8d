//! Commands that need no network: help, exit codes, secrets, sign, verify, completions.

use crate::common;

use common::{CAPTURED, SECRET, cmd, write};
use expect_test::expect;
use predicates::prelude::*;

/// Known answer from the protocol vectors: the captured 6.10 body signed with `SECRET`.
const CAPTURED_SIGNATURE: &str = "9164ce2a553feae08e0f6064a84a8311c6672b550ba7db82c138876854ab74cf";

#[test]
fn top_level_help_lists_every_command_and_the_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let output = cmd(dir.path()).arg("--help").assert().success();
    let help = String::from_utf8(output.get_output().stdout.clone()).unwrap();
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| !line.is_empty())
        .map(|line| line.split_whitespace().next().unwrap())
        .collect();
    expect![[r#"
        subscribe
        subscriptions
        unsubscribe
        asset
        thumbnail
        serve
        work
        inbox
        gaps
        catch-up
        send
        challenge
        sign
        verify
        completions
        help"#]]
    .assert_eq(&commands.join("\n"));
    assert!(
        help.contains("Exit status: 0 ok, 1 the operation failed, 2 usage or configuration error")
    );
    assert!(help.contains("PRESERVICA_WEBHOOK_SECRET"));
}

#[test]
fn every_command_has_help_with_examples() {
    let dir = tempfile::tempdir().unwrap();
    let commands: &[&[&str]] = &[
        &["subscribe"],
        &["subscriptions"],
        &["list"],
        &["unsubscribe"],
        &["asset"],
        &["thumbnail"],
        &["serve"],
        &["inbox"],
        &["send"],
        &["challenge"],
        &["sign"],
        &["verify"],
        &["completions"],
    ];
    for command in commands {
        cmd(dir.path())
            .args(*command)
            .arg("--help")
            .assert()
            .success()
            .stdout(predicate::str::contains("Examples:"))
            .stdout(predicate::str::contains("--json"));
    }
}

#[test]
fn serve_help_documents_every_option() {
    let dir = tempfile::tempdir().unwrap();
    let output = cmd(dir.path()).args(["serve", "--help"]).assert().success();
    let help = String::from_utf8(output.get_output().stdout.clone()).unwrap();
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for flag in [
        "--inbox",
        "--in-memory",
        "--path",
        "--max-body",
        "--tls-cert",
        "--tls-key",
        "--workers",
        "--secret-file",
        "--exec",
        "--exec-timeout",
        "--thumbnails",
        "--max-attempts",
        "--retry-delay",
        "--subscribe",
        "--public-url",
        "--unsubscribe-on-exit",
        "[default: 127.0.0.1:8000]",
        "[default: preservica-webhook.db]",
    ] {
        assert!(help.contains(flag), "serve --help lacks {flag}:\n{help}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let check = |args: &[&str], says: &str| {
        cmd(dir.path())
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(says));
    };
    check(&["frobnicate"], "unrecognized subcommand");
    check(
        &["subscribe", "--url", "https://x/", "--trigger", "INDEXD"],
        "unknown trigger; use one of MOVED, FULL_TEXT_INDEXED (INDEXED)",
    );
    check(
        &["serve", "not-an-address"],
        "write IP:PORT, e.g. 127.0.0.1:8000",
    );
    check(&["serve", "--subscribe", "MOVED"], "--public-url");
    check(&["unsubscribe"], "<ID>");
    check(
        &[
            "send",
            "http://127.0.0.1:9/",
            "--trigger",
            "MOVED",
            "--entity-type",
            "XX",
        ],
        "IO (asset)",
    );
    check(
        &[
            "send",
            "http://127.0.0.1:9/",
            "--trigger",
            "MOVED",
            "--transfer",
            "carrier-pigeon",
        ],
        "chunked",
    );
    check(&["serve", "--retry-delay", "soon"], "not a duration");
    check(
        &["--password", "x", "subscriptions"],
        "unexpected argument '--password'",
    );
}

#[test]
fn missing_secret_exits_2_naming_every_place_looked() {
    let dir = tempfile::tempdir().unwrap();
    cmd(dir.path())
        .arg("sign")
        .write_stdin("{}")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no webhook secret"))
        .stderr(predicate::str::contains("--secret-file"))
        .stderr(predicate::str::contains("PRESERVICA_WEBHOOK_SECRET"))
        .stderr(predicate::str::contains(
            "credentials.properties (file not found)",
        ));
}

#[test]
fn unreadable_secret_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    cmd(dir.path())
        .args(["sign", "--secret-file", "nope.txt"])
        .write_stdin("{}")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "cannot read the secret file nope.txt",
        ));
}

#[test]
fn sign_matches_the_known_answer_from_env_file_and_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let body = write(dir.path(), "body.json", CAPTURED);
    cmd(dir.path())
        .arg("sign")
        .arg(&body)
        .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
        .assert()
        .success()
        .stdout(format!("{CAPTURED_SIGNATURE}\n"));

    let secrets = write(dir.path(), "secrets", &format!("{SECRET}\nold-secret\n"));
    cmd(dir.path())
        .args(["sign", "--secret-file"])
        .arg(&secrets)
        .write_stdin(CAPTURED)
        .assert()
        .success()
        .stdout(format!("{CAPTURED_SIGNATURE}\n"));

    write(
        dir.path(),
        "credentials.properties",
        &format!("[credentials]\nusername=u\nsecret.key={SECRET}\n"),
    );
    cmd(dir.path())
        .args(["sign", "--json"])
        .write_stdin(CAPTURED)
        .assert()
        .success()
        .stdout(format!(
            "{{\n  \"signature\": \"{CAPTURED_SIGNATURE}\"\n}}\n"
        ));
}

#[test]
fn verify_accepts_the_right_signature_and_refuses_a_tampered_body() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = write(dir.path(), "secrets", &format!("new-secret\n{SECRET}\n"));
    cmd(dir.path())
        .args(["verify", "--signature", CAPTURED_SIGNATURE, "--secret-file"])
        .arg(&secrets)
        .write_stdin(CAPTURED)
        .assert()
        .success()
        .stdout("ok: the signature matches secret 2 of 2\n");

    cmd(dir.path())
        .args(["verify", "--signature", CAPTURED_SIGNATURE, "--secret-file"])
        .arg(&secrets)
        .write_stdin(format!("{CAPTURED} "))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("the signature does not match"));

    cmd(dir.path())
        .args(["verify", "--signature", "abc", "--secret-file"])
        .arg(&secrets)
        .write_stdin(CAPTURED)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("has 3 hex digits"));
}

#[test]
fn completions_are_generated_for_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        cmd(dir.path())
            .args(["completions", shell])
            .assert()
            .success()
            .stdout(predicate::str::contains("unsubscribe"));
    }
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // `true` exits without reading: the command writes into a closed pipe.
    for command in ["completions bash", "--help"] {
        let output = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -o pipefail; '{}' {command} | true",
                common::BIN
            ))
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "{command}: {output:?}");
        assert_eq!(String::from_utf8_lossy(&output.stderr), "", "{command}");
    }
}

#[test]
fn version_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    cmd(dir.path())
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::starts_with("preservica-webhook "));
}
