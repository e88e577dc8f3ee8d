//! `cargo xtask e2e`: the end-to-end suite.
//!
//! It builds the `preservica-webhook` binary, starts a stand-in Preservica (wiremock, in this
//! process) and runs the ten scenarios of the suite against real processes and real sockets,
//! one line per scenario with its time, stopping at the first failure. No process it started
//! survives it, whatever way it ends.
//!
//! ```text
//! cargo xtask e2e                 # every scenario
//! cargo xtask e2e 3 7             # only these (the ones they build on run as needed)
//! cargo xtask e2e --seed 42       # replay the random choices of an earlier run
//! cargo xtask e2e --binary PATH   # run a binary built elsewhere instead of building one
//! ```
//!
//! - `standin`: the stand-in Preservica (management API, handshake, signed deliveries).
//! - `harness`: building the binary, running its commands, `serve` as a child process.
//! - `scenarios`: the scenarios themselves.

pub(crate) mod harness;
mod scenarios;
mod standin;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// What the command line asked for.
#[derive(Debug, Default)]
struct Options {
    /// Scenario numbers to run; empty for all.
    only: Vec<usize>,
    /// The seed of the random choices (kill moments, event mixes).
    seed: Option<u64>,
    /// A binary to run instead of building one.
    binary: Option<PathBuf>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut options = Options::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--seed" => {
                    let value = args.next().context("--seed needs a number")?;
                    options.seed = Some(
                        value
                            .parse()
                            .with_context(|| format!("--seed {value:?} is not a number"))?,
                    );
                }
                "--binary" => {
                    let value = args.next().context("--binary needs a path")?;
                    options.binary = Some(PathBuf::from(value));
                }
                number if number.parse::<usize>().is_ok() => {
                    let number: usize = number.parse()?;
                    if !(1..=scenarios::COUNT).contains(&number) {
                        bail!(
                            "there is no scenario {number}; they are numbered 1 to {}",
                            scenarios::COUNT
                        );
                    }
                    options.only.push(number);
                }
                other => bail!(
                    "unknown argument {other:?}; usage: cargo xtask e2e [--seed N] [--binary PATH] [SCENARIO...]"
                ),
            }
        }
        Ok(options)
    }
}

/// Builds the binary and runs the suite; fails on the first failing scenario.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let options = Options::parse(args)?;
    let binary = match options.binary {
        Some(binary) => std::path::absolute(&binary)
            .with_context(|| format!("--binary {}", binary.display()))?,
        None => {
            eprintln!(
                "xtask e2e: building the binary (cargo build --locked -p preservica-webhook-cli)"
            );
            harness::build_binary()?
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("could not start the tokio runtime")?;
    let seed = options.seed.unwrap_or_else(rand::random);
    let only = options.only;
    runtime.block_on(async move {
        // Ctrl-C or SIGTERM ends the suite through the same path as a failure, so every
        // process it started is killed on the way out.
        let interrupted = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("could not listen for SIGTERM")?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            anyhow::Ok(())
        };
        tokio::select! {
            result = scenarios::run(&binary, seed, &only) => result,
            signalled = interrupted => {
                signalled?;
                bail!("interrupted; every process the suite started has been stopped")
            }
        }
    })
}
