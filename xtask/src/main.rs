//! Repository automation: `cargo xtask <command>`.
//!
//! - `ci`: every gate CI runs, in order, failing fast.
//! - `e2e`: the whole-binary flows of the CLI's tests alone.
//! - `fuzz`: every cargo-fuzz target for a while each (not part of `ci`).
//! - `bench`: throughput, latency and memory of `serve` beside a bare hyper baseline (behind
//!   the `bench` feature, which `cargo xtask bench` turns on by itself).
//!
//! Without features xtask depends on anyhow alone, so `cargo xtask` compiles it in seconds.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "xtask is a command-line tool that reports to its terminal"
)]

#[cfg(feature = "bench")]
mod bench;
mod ci;
mod fuzz;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci     fmt, clippy, the server without optional features, tests, docs (what CI runs)
  e2e    the whole-binary flows: SIGKILL and restart, serve --subscribe, --exec retries, thumbnails
  bench  throughput, latency and memory of `serve` against a bare hyper baseline
  fuzz   every cargo-fuzz target for --seconds N each (default 60)
";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprint!("{USAGE}");
        bail!("no command given");
    };
    let rest = &args[1..];
    match command.as_str() {
        "ci" => ci::run(rest),
        "e2e" => ci::e2e(rest),
        "fuzz" => fuzz::run(rest),
        #[cfg(feature = "bench")]
        "bench" => bench::run(rest),
        #[cfg(not(feature = "bench"))]
        "bench" => rebuild_with_bench(rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("{USAGE}");
            bail!("unknown command {other:?}")
        }
    }
}

/// Builds this xtask in release with the `bench` feature and replaces this process with it:
/// the bench measures optimised code, and its dependencies stay out of every other command.
pub(crate) fn rebuild_with_bench(args: &[String]) -> Result<()> {
    use std::os::unix::process::CommandExt as _;

    let build = [
        "build",
        "--release",
        "--locked",
        "-p",
        "xtask",
        "--features",
        "bench",
    ];
    stage("bench", &build, &[])?;
    let release = target_dir().join("release").join("xtask");
    let err = Command::new(&release).arg("bench").args(args).exec();
    Err(err).with_context(|| format!("could not run {}", release.display()))
}

/// The cargo that runs this xtask, so every step uses the same toolchain.
pub(crate) fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// The workspace root (the parent of this crate's folder).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one folder below the workspace root")
        .to_path_buf()
}

/// Cargo's target folder: `CARGO_TARGET_DIR` (relative to the workspace root) or `target`.
pub(crate) fn target_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), PathBuf::from);
    workspace_root().join(dir)
}

/// A cargo command in the workspace root without what `cargo run` put in this process's
/// environment for xtask itself (its `CARGO_PKG_*`, `CARGO_MANIFEST_*`, …). ring's build
/// script watches `CARGO_PKG_NAME` and `CARGO_MANIFEST_DIR`: with xtask's values a child
/// cargo rebuilds ring and everything above it (the CLI too), and a plain `cargo test`
/// afterwards rebuilds them again.
pub(crate) fn cargo_command(args: &[&str]) -> Command {
    let mut command = Command::new(cargo());
    command.args(args).current_dir(workspace_root());
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo_run = name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || matches!(
                &*name,
                "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE" | "OUT_DIR"
            );
        if set_by_cargo_run {
            command.env_remove(&*name);
        }
    }
    command
}

/// Runs `cargo ARGS` as the stage `name`: a line when it starts (so a slow first build is
/// never silent), cargo's own output as it comes, and a line with its time when it ends.
///
/// # Errors
/// When cargo cannot start or the stage fails.
pub(crate) fn stage(name: &str, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let started = Instant::now();
    eprintln!("xtask: {name}: cargo {}", args.join(" "));
    let status = cargo_command(args)
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("could not start cargo for the {name} stage"))?;
    if !status.success() {
        bail!("the {name} stage failed ({status}); fix it and run the command again");
    }
    eprintln!("xtask: {name}: ok in {:.1?}", started.elapsed());
    Ok(())
}
