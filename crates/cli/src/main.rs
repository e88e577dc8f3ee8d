//! `preservica-webhook`: manage Preservica webhook subscriptions, run a durable receiver, and
//! test a receiver without Preservica.
//!
//! A thin layer over the client and server crates. Exit codes:
//!
//! - 0: the operation succeeded (also when stdout was closed early, as by `| head`);
//! - 1: the operation failed (a receiver refused, Preservica answered an error, …);
//! - 2: usage or configuration error (a bad flag, missing credentials or secret);
//! - 130 / 143: `serve` stopped at once by a second SIGINT / SIGTERM during its shutdown.
//!
//! Errors are printed to stderr on one line, the whole chain of causes included.

mod admin;
mod cli;
mod config;
mod inbox;
mod keep_alive;
mod manage;
mod nats;
mod output;
mod recovery;
mod serve;
mod testing;

use std::io::{self, IsTerminal as _, Write};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};
use crate::config::ConfigError;

/// mimalloc instead of glibc's allocator: a request allocates many small buffers across
/// threads, and glibc's `malloc` and `free` took about a tenth of `serve`'s CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = init_logging(&cli.global);
    // reqwest is built without a default TLS provider; every HTTPS call uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let result = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(err) => Err(anyhow::Error::new(err).context("cannot start the async runtime")),
    };
    // The last log lines are out before the error line, in the order they were logged.
    drop(logs);
    match result {
        Ok(code) => code,
        Err(err) => report(&err),
    }
}

/// Runs one command; `Ok` carries the exit code of commands that print their own verdict.
async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let global = &cli.global;
    match cli.command {
        Command::Subscribe(args) => manage::subscribe(global, &args).await,
        Command::Subscriptions => manage::subscriptions(global).await,
        Command::Unsubscribe(args) => manage::unsubscribe(global, &args).await,
        Command::Asset(args) => manage::asset(global, &args).await,
        Command::Thumbnail(args) => manage::thumbnail(global, &args).await,
        Command::Serve(args) => serve::serve(global, args).await,
        Command::Work(args) => serve::work(global, args).await,
        Command::Inbox(args) => inbox::run(global, &args).await,
        Command::Gaps(args) => recovery::gaps(global, &args).await,
        Command::CatchUp(args) => recovery::catch_up(global, &args).await,
        Command::Send(args) => testing::send(global, &args).await,
        Command::Challenge(args) => testing::challenge(global, &args).await,
        Command::Sign(args) => testing::sign(global, &args),
        Command::Verify(args) => testing::verify(global, &args),
        Command::Completions(args) => {
            // Generated into memory first: clap_complete panics when its writer fails, and
            // a closed pipe must end the command quietly.
            let mut script = Vec::new();
            clap_complete::generate(
                args.shell,
                &mut Cli::command(),
                "preservica-webhook",
                &mut script,
            );
            let mut out = io::stdout().lock();
            out.write_all(&script)?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Prints the error chain on one line and picks the exit code.
fn report(err: &anyhow::Error) -> ExitCode {
    let broken_pipe = err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return ExitCode::SUCCESS;
    }
    let mut stderr = io::stderr().lock();
    let _ = writeln!(stderr, "error: {err:#}");
    if is_configuration(err) {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}

/// Whether the user fixes this error in the command line or the configuration (exit 2).
fn is_configuration(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.is::<ConfigError>()
            || cause.is::<preservica_webhook_client::CredentialsError>()
            || cause
                .downcast_ref::<preservica_webhook_client::Error>()
                .is_some_and(preservica_webhook_client::Error::is_configuration)
    })
}

/// The server's target for the request line of each webhook request.
const REQUEST_LINES: &str = "preservica_webhook_server::request";

/// Log lines waiting for the writer thread at most.
const LOG_QUEUE: usize = 16 * 1024;

/// Bytes of log lines gathered into one write to stderr.
const LOG_BUFFER: usize = 64 * 1024;

/// Logs go to stderr: info by default, debug with -v, trace with -vv, errors only with
/// --quiet; RUST_LOG overrides.
///
/// A thread of their own writes them, as many lines at once as have queued up, so a request
/// never waits on a slow terminal or pipe and a busy receiver makes one write per burst, not
/// one per line. Nothing is dropped: a full queue ([`LOG_QUEUE`] lines) makes loggers wait. The
/// returned guard writes what is queued when it is dropped.
fn init_logging(global: &cli::GlobalArgs) -> WorkerGuard {
    let level = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let default = match level {
        // Dependencies stay at warn unless asked for trace.
        // A target matches by prefix: this binary (`preservica_webhook`) and the
        // preservica_webhook_* crates. The server logs its per-request lines at debug, under
        // targets of their own: by default `serve` shows the webhook's and keeps the health
        // and metrics probes' (`…::probe`) for -v.
        "info" => format!("warn,preservica_webhook=info,{REQUEST_LINES}=debug"),
        "debug" => "warn,preservica_webhook=debug".to_owned(),
        other => other.to_owned(),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE)
        .thread_name("log-writer")
        .finish(io::BufWriter::with_capacity(LOG_BUFFER, io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    match global.log_format {
        cli::LogFormat::Text => builder.with_ansi(io::stderr().is_terminal()).init(),
        // One object a line, the fields at the top level, for log shippers.
        cli::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    guard
}
