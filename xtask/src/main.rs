//! Repository automation: `cargo xtask <command>`.
//!
//! - `ci`: every gate CI runs, in order, failing fast.
//! - `e2e`: the end-to-end suite against the real binary.
//! - `bench`: throughput, latency and memory of `serve` beside a bare hyper baseline.
//! - `fuzz`: every cargo-fuzz target for a while each (not part of `ci`).
//! - `soak`: `serve` under signed load, hostile traffic, failing handlers and kills (not part
//!   of `ci`).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "xtask is a command-line tool that reports to its terminal"
)]

mod bench;
mod ci;
mod e2e;
mod fuzz;
mod soak;

use std::process::ExitCode;

use anyhow::{Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci     fmt, clippy, tests, then the end-to-end suite (what CI runs)
  e2e    the end-to-end suite: the real binary against a stand-in Preservica
  bench  throughput, latency and memory of `serve` against a bare hyper baseline
  fuzz   every cargo-fuzz target for --seconds N each (default 60), with a summary
  soak   serve under hostile traffic, handler failures and SIGKILLs for --seconds N (default 120)
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
        "e2e" => e2e::run(rest),
        "bench" => bench::run(rest),
        "fuzz" => fuzz::run(rest),
        "soak" => soak::run(rest),
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
