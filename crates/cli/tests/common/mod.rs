//! Helpers shared by the binary's tests.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the helpers"
)]
#![allow(
    unreachable_pub,
    reason = "the module is included in several test binaries"
)]

use std::path::{Path, PathBuf};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_preservica-webhook");

/// The secret the tests share between sender and receiver.
pub const SECRET: &str = "my_shared_secret";

/// Environment variables that would let the user's own configuration leak into a test.
const CONFIG_ENV: [&str; 7] = [
    "PRESERVICA_SERVER",
    "PRESERVICA_USERNAME",
    "PRESERVICA_PASSWORD",
    "PRESERVICA_TENANT",
    "PRESERVICA_2FA_TOKEN",
    "PRESERVICA_WEBHOOK_SECRET",
    "RUST_LOG",
];

/// A command for the binary, run in `dir` with none of the user's configuration.
pub fn cmd(dir: &Path) -> assert_cmd::Command {
    let mut command = assert_cmd::Command::new(BIN);
    command.current_dir(dir);
    for name in CONFIG_ENV {
        command.env_remove(name);
    }
    command
}

/// The same, as a `std::process::Command` for long-running children.
pub fn std_cmd(dir: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(BIN);
    command.current_dir(dir);
    for name in CONFIG_ENV {
        command.env_remove(name);
    }
    command
}

/// Writes a file under `dir` and returns its path.
pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// The captured Preservica 6.10 delivery body.
pub const CAPTURED: &str = r#"{"subscriptionId":"9495ddbf7d4a0b9f030a3411c87f967d","timestamp":"2023-10-11T10:52:42.469","tenant":"BRAMA","version":"6.10","events":[{"event":"FullTextIndexed","entityType":"IO","entityRef":"7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2","identifiers":[]}],"trigger":"FULL_TEXT_INDEXED"}"#;
