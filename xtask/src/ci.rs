//! `cargo xtask ci`: the gates, in order, stopping at the first failure; `cargo xtask e2e`.
//!
//! Every stage uses the dev profile and the same feature selection (`--all-features` over the
//! workspace), so clippy, the tests and the docs build each dependency once between them and a
//! second run rebuilds nothing. The tests run through cargo-nextest (one process per test, all
//! of a binary's tests in parallel) and the doc tests through `cargo test --doc`, which
//! nextest does not run. The whole-binary flows are ordinary tests of the CLI, so there is no
//! separate build of the binary.

use anyhow::{Result, bail};

use crate::stage;

/// The nextest filter of the whole-binary flows.
const E2E: &str = "package(preservica-webhook-cli) & test(/^(e2e|manage)::/)";

/// Runs every gate.
pub(crate) fn run(args: &[String]) -> Result<()> {
    if let Some(extra) = args.first() {
        bail!("`cargo xtask ci` takes no arguments (got {extra:?})");
    }
    eprintln!("xtask: ci: fmt, clippy, features, test, doctest, doc");
    stage("fmt", &["fmt", "--all", "--check"], &[])?;
    let clippy = [
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--locked",
    ];
    stage(
        "clippy",
        &[&clippy[..], &["--", "-D", "warnings"]].concat(),
        &[],
    )?;
    let server = ["-p", "preservica-webhook-server", "--no-default-features"];
    stage(
        "features",
        &[&["check", "--locked"], &server[..]].concat(),
        &[],
    )?;
    let tests = ["--workspace", "--all-features", "--locked"];
    stage("test", &[&["nextest", "run"], &tests[..]].concat(), &[])?;
    stage("doctest", &[&["test", "--doc"], &tests[..]].concat(), &[])?;
    let doc = [
        "doc",
        "--workspace",
        "--all-features",
        "--no-deps",
        "--locked",
    ];
    stage("doc", &doc, &[("RUSTDOCFLAGS", "-Dwarnings")])
}

/// Runs the whole-binary flows alone (nextest arguments may follow, such as `--no-capture`).
pub(crate) fn e2e(args: &[String]) -> Result<()> {
    let mut nextest = vec![
        "nextest",
        "run",
        "--workspace",
        "--all-features",
        "--locked",
    ];
    nextest.extend(["-E", E2E]);
    nextest.extend(args.iter().map(String::as_str));
    stage("e2e", &nextest, &[])
}
