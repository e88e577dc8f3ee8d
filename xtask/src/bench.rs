//! `cargo xtask bench`: how fast `serve` takes deliveries, side by side with the fastest thing
//! the same machine can do; the runs, the options and how to read the numbers are in
//! `docs/bench.md`.
//!
//! One after another, each server (or, for a run with replicas, each of its processes) is
//! started as a child process on `127.0.0.1:0`, loaded by the generator for a warm-up plus the
//! measured time, its backlog drained (read from its `/metrics`), and killed. It prints a
//! table and `serve`'s own counters and writes them as JSON to `target/bench/report.json`. It
//! fails only when a server answered something other than 200, a connection failed, or a
//! server could not run. Everything is a release build: the binary is built with
//! `cargo build --release --locked -p preservica-webhook-cli`, and this xtask rebuilds itself
//! in release (with the `bench` feature) first.
//!
//! - `load`: the load generator.
//! - `baseline`: the bare hyper server (`xtask bench baseline-server ADDR`).
//! - `process`: servers as child processes, their address and their memory.
//! - `report`: the table and the JSON.

mod baseline;
pub(crate) mod load;
pub(crate) mod process;
mod report;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use preservica_webhook_core::Secret;

use self::load::Plan;
use self::process::Server;
use self::report::{Report, Run};

/// The secret the generator signs with and `serve` verifies with.
const SECRET: &str = "bench-secret-7f3c2a";

/// The runs, in the order they happen; each one's `--help` line says what runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// bare hyper, 200 after reading the body
    Baseline,
    /// serve --in-memory
    InMemory,
    /// serve --inbox FILE, stdout to /dev/null
    Durable,
    /// serve --inbox FILE already holding --prefill deliveries
    DurableFull,
    /// serve --inbox FILE, 10 events per delivery
    #[value(name = "durable-10")]
    Durable10,
    /// serve --inbox postgres://… (a local PostgreSQL, fsync on)
    Postgres,
    /// 3 × serve --inbox postgres://… on one local PostgreSQL (fsync on), RSS summed
    #[value(name = "postgres-3")]
    Postgres3,
    /// serve --nats nats://… (one local nats-server)
    Nats,
}

impl Kind {
    fn value(self) -> clap::builder::PossibleValue {
        self.to_possible_value().expect("no run is hidden")
    }

    fn name(self) -> String {
        self.value().get_name().to_owned()
    }

    fn server(self) -> String {
        self.value()
            .get_help()
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    fn events_per_delivery(self) -> usize {
        if self == Kind::Durable10 { 10 } else { 1 }
    }

    /// How many processes serve the run, sharing its store; the load is spread over them.
    fn replicas(self) -> usize {
        if self == Kind::Postgres3 { 3 } else { 1 }
    }
}

/// What the command line asked for.
#[derive(Debug, clap::Parser)]
#[command(about = "how fast `serve` takes deliveries")]
struct Options {
    /// Seconds measured per run.
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    seconds: f64,
    /// Seconds of load before the measuring starts.
    #[arg(long, default_value_t = 1.0, value_parser = seconds)]
    warmup: f64,
    /// Keep-alive connections sending at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    connections: u16,
    /// Only this run (again for more); they run in their usual order.
    #[arg(long, value_name = "RUN", value_enum)]
    only: Vec<Kind>,
    /// Extra arguments for every `serve` run, to compare configurations.
    #[arg(long = "serve-arg", value_name = "ARG", allow_hyphen_values = true)]
    serve_args: Vec<String>,
    /// A `preservica-webhook` binary to measure instead of building this workspace's.
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// Processed deliveries in the inbox before the `durable-full` run (without: no such run).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    prefill: Option<u64>,
}

/// A finite, non-negative number of seconds.
fn seconds(text: &str) -> Result<f64, String> {
    let value = text.parse::<f64>().ok();
    let value = value.filter(|it| it.is_finite() && *it >= 0.0);
    value.ok_or_else(|| format!("{text:?} is not a number of seconds"))
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let args = std::iter::once("cargo xtask bench").chain(args.iter().map(String::as_str));
        let options = match <Options as clap::Parser>::try_parse_from(args) {
            Ok(options) => options,
            // `--help`: printed to stdout, and the program ends successfully.
            Err(err) if !err.use_stderr() => err.exit(),
            // clap's message already holds the cause; as a source it would be printed twice.
            Err(err) => bail!("{}", err.to_string().trim_end()),
        };
        if options.seconds == 0.0 {
            bail!("--seconds must be above 0");
        }
        if options.prefill.is_none() && options.only.contains(&Kind::DurableFull) {
            bail!("--only durable-full needs --prefill N, the deliveries already in its inbox");
        }
        Ok(options)
    }

    fn kinds(&self) -> Vec<Kind> {
        Kind::value_variants()
            .iter()
            .copied()
            .filter(|kind| match kind {
                // With --prefill, wherever `durable` runs, so the two can be compared.
                Kind::DurableFull => {
                    self.prefill.is_some()
                        && (self.only.is_empty()
                            || self.only.contains(&Kind::Durable)
                            || self.only.contains(&Kind::DurableFull))
                }
                _ => self.only.is_empty() || self.only.contains(kind),
            })
            .collect()
    }
}

/// Runs the benchmark (or, as `bench baseline-server ADDR`, the baseline server).
///
/// # Errors
/// On bad arguments, a failed build, a server that cannot start or dies, a non-200 answer or
/// a failed connection.
pub(crate) fn run(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("baseline-server") {
        return baseline::run(&args[1..]);
    }
    let options = Options::parse(args)?;
    if cfg!(debug_assertions) {
        return crate::rebuild_with_bench(args);
    }
    let kinds = options.kinds();
    let binary = match &options.binary {
        _ if kinds.iter().all(|kind| *kind == Kind::Baseline) => None,
        Some(path) => Some(
            std::path::absolute(path)
                .with_context(|| format!("--binary {}: no such path", path.display()))?,
        ),
        None => Some(build_release(
            "preservica-webhook-cli",
            "preservica-webhook",
        )?),
    };
    let myself = std::env::current_exe().context("could not find this program's path")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("could not start the tokio runtime")?;
    let report = runtime.block_on(async {
        tokio::select! {
            report = run_all(&options, &kinds, &myself, binary.as_deref()) => report,
            () = interrupted() => bail!("interrupted; every server started was killed"),
        }
    })?;
    drop(runtime);

    println!();
    print!("{}", report::table(&report.runs));
    println!();
    print!("{}", report::inside_lines(&report.runs));
    let path = write_json(&report)?;
    println!("\nwritten to {}", path.display());

    let failed: Vec<&Run> = report.runs.iter().filter(|run| !run.is_clean()).collect();
    if let Some(run) = failed.first() {
        bail!(
            "{} run(s) had failures; {}: {} non-200 answers, {} failed connections; first: {}",
            failed.len(),
            run.name,
            run.non_200,
            run.transport_errors,
            run.first_error.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

/// Runs every selected server in turn and assembles the report.
async fn run_all(
    options: &Options,
    kinds: &[Kind],
    myself: &Path,
    binary: Option<&Path>,
) -> Result<Report> {
    let mut machine = report::machine();
    eprintln!(
        "xtask bench: {} CPUs ({}), {} MiB, load average {:.2}",
        machine.cpus, machine.cpu_model, machine.memory_mib, machine.load_before
    );
    if machine.load_before > machine.cpus as f64 / 2.0 {
        eprintln!(
            "xtask bench: the machine is busy (load {:.2} on {} CPUs): numbers will be noisy; \
             re-run when `uptime` shows a low load",
            machine.load_before, machine.cpus
        );
    }
    let secret = Secret::new(SECRET).context("the bench secret is not empty")?;
    let nonce: u32 = rand::random();
    let mut runs = Vec::new();
    for kind in kinds {
        let scratch = tempfile::Builder::new()
            .prefix("preservica-bench-")
            .tempdir()
            .context("could not make a scratch directory")?;
        if let (Kind::DurableFull, Some(count), Some(binary)) = (kind, options.prefill, binary) {
            prefill(binary, scratch.path(), count, !nonce).await?;
        }
        // The database or broker a shared-store run uses, stopped when the run ends.
        let service = SharedStore::start(*kind)?;
        eprintln!(
            "xtask bench: {}: {} connections, {}s warm-up + {}s",
            kind.name(),
            options.connections,
            options.warmup,
            options.seconds
        );
        let mut servers = Vec::new();
        for replica in 1..=kind.replicas() {
            let command = match (kind, binary) {
                (Kind::Baseline, _) => {
                    let mut command = Command::new(myself);
                    command.args(["bench", "baseline-server", "127.0.0.1:0"]);
                    command
                }
                (_, None) => bail!("the serve runs need the binary"),
                (kind, Some(binary)) => {
                    let mut command = serve_command(*kind, binary, scratch.path());
                    if let Some(args) = service.as_ref().map(SharedStore::serve_args) {
                        command.args(args);
                    }
                    command.args(&options.serve_args);
                    command
                }
            };
            let name = match kind.replicas() {
                1 => kind.name(),
                _ => format!("{} replica {replica}", kind.name()),
            };
            servers.push(Server::start(&name, command)?);
        }
        // Right after start-up, before any request.
        let idle = memory(&servers)?;
        let load_started = std::time::Instant::now();
        let outcome = load::run(Plan {
            addrs: servers.iter().map(Server::addr).collect(),
            path: servers[0].path().to_owned(),
            connections: usize::from(options.connections),
            warmup: Duration::from_secs_f64(options.warmup),
            measure: Duration::from_secs_f64(options.seconds),
            events_per_delivery: kind.events_per_delivery(),
            secret: secret.clone(),
            nonce,
        })
        .await;
        for server in &mut servers {
            server.ensure_running()?;
        }
        let end = memory(&servers)?;
        let (serve_metrics, processing) = if *kind == Kind::Baseline {
            (None, None)
        } else {
            drain(&servers, load_started).await
        };
        if !outcome.is_clean() {
            eprintln!(
                "xtask bench: {}: {} non-200 answers, {} failed connections",
                kind.name(),
                outcome.non_200(),
                outcome.transport_errors,
            );
            for (index, server) in servers.iter_mut().enumerate() {
                eprintln!(
                    "process {} of {}: its stderr ended with:\n{}",
                    index + 1,
                    kind.replicas(),
                    server.stderr_tail()
                );
            }
        }
        for server in servers {
            server.stop();
        }
        drop(service);
        let mut server = kind.server();
        if *kind != Kind::Baseline {
            for arg in &options.serve_args {
                server.push(' ');
                server.push_str(arg);
            }
        }
        let run = Run {
            name: kind.name(),
            server,
            events_per_delivery: kind.events_per_delivery(),
            requests: outcome.measured,
            requests_per_second: outcome.requests_per_second(),
            p50_ms: outcome.latency_ms(0.5),
            p99_ms: outcome.latency_ms(0.99),
            max_ms: outcome.latency_ms(1.0),
            idle_rss_kib: idle.rss_kib,
            peak_rss_kib: end.peak_kib,
            ratio_to_baseline: None,
            ratio_to_durable: None,
            non_200: outcome.non_200(),
            transport_errors: outcome.transport_errors,
            first_error: outcome.first_error.clone(),
            serve_metrics,
            processing,
        };
        eprintln!(
            "xtask bench: {}: {:.0} requests/s, p99 {:.2} ms, peak RSS {} KiB, processed {}",
            run.name,
            run.requests_per_second,
            run.p99_ms.unwrap_or(f64::NAN),
            run.peak_rss_kib,
            run.processing.map_or_else(
                || "-".to_owned(),
                |it| format!("{:.0}/s over {:.1} s", it.per_second, it.seconds)
            )
        );
        runs.push(run);
    }
    machine.load_after = report::load_average();
    report::set_ratios(&mut runs);
    Ok(Report {
        machine,
        command: std::iter::once("cargo xtask bench".to_owned())
            .chain(std::env::args().skip(2))
            .collect::<Vec<_>>()
            .join(" "),
        connections: usize::from(options.connections),
        seconds: options.seconds,
        warmup_seconds: options.warmup,
        runs,
    })
}

/// How long a run waits after its load for `serve`'s backlog to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often `/metrics` is read while it drains.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// Reads `serve`'s `/metrics` until its backlog is empty or [`DRAIN_TIMEOUT`] has passed;
/// returns the last counters read and the processing rate since `load_started`. With replicas,
/// the backlog is read from the first (it is the shared store's) and their counters are added
/// up once it is empty.
async fn drain(
    servers: &[Server],
    load_started: std::time::Instant,
) -> (Option<report::ServeMetrics>, Option<report::Processing>) {
    let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
    let Some((first, others)) = servers.split_first() else {
        return (None, None);
    };
    loop {
        let Some(mut read) = scrape_metrics(first).await else {
            return (None, None);
        };
        let drained = read.backlog == 0;
        if drained || std::time::Instant::now() >= deadline {
            let seconds = load_started.elapsed().as_secs_f64();
            for other in others {
                let Some(more) = scrape_metrics(other).await else {
                    return (None, None);
                };
                read.add_counters(more);
            }
            let processing = report::Processing {
                seconds,
                per_second: read.handled as f64 / seconds,
                drained,
            };
            return (Some(read), Some(processing));
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// The servers' resident memory added up: now, and the sum of each one's own peak.
fn memory(servers: &[Server]) -> Result<process::Memory> {
    servers.iter().try_fold(
        process::Memory {
            rss_kib: 0,
            peak_kib: 0,
        },
        |sum, server| {
            let memory = server.memory()?;
            Ok(process::Memory {
                rss_kib: sum.rss_kib + memory.rss_kib,
                peak_kib: sum.peak_kib + memory.peak_kib,
            })
        },
    )
}

/// `serve`'s counters from its `/metrics`; `None` (with a note) when they cannot be read.
async fn scrape_metrics(server: &Server) -> Option<report::ServeMetrics> {
    let why = match load::get(server.addr(), "/metrics").await {
        Ok((200, text)) => match report::parse_metrics(&text) {
            Some(metrics) => return Some(metrics),
            None => "it has no deliveries counter".to_owned(),
        },
        Ok((status, _)) => format!("answered {status}"),
        Err(err) => format!("{err:#}"),
    };
    eprintln!("xtask bench: could not read serve's /metrics ({why}); going on without");
    None
}

/// `serve` on a free loopback port, configured for `kind`.
fn serve_command(kind: Kind, binary: &Path, scratch: &Path) -> Command {
    // The default configuration is what is measured, whatever the caller's shell says.
    let mut command = preservica_webhook_testkit::serve::command(binary, scratch);
    command
        .args(["serve", "127.0.0.1:0"])
        .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
        .env("NO_COLOR", "1");
    match kind {
        Kind::InMemory => {
            command.arg("--in-memory");
        }
        Kind::Baseline | Kind::Durable | Kind::DurableFull | Kind::Durable10 => {
            command.arg("--inbox").arg(scratch.join("inbox.db"));
        }
        // Their store's location comes from the service the run started.
        Kind::Postgres | Kind::Postgres3 | Kind::Nats => {}
    }
    command
}

/// The throwaway service a shared-store run measures against.
enum SharedStore {
    Postgres(preservica_webhook_testkit::postgres::Postgres),
    Nats(preservica_webhook_testkit::nats::Nats),
}

impl SharedStore {
    fn start(kind: Kind) -> Result<Option<SharedStore>> {
        Ok(match kind {
            Kind::Postgres | Kind::Postgres3 => Some(SharedStore::Postgres(
                preservica_webhook_testkit::postgres::Postgres::start_durable()
                    .context("the postgres run needs PostgreSQL (Debian's postgresql)")?,
            )),
            Kind::Nats => Some(SharedStore::Nats(
                preservica_webhook_testkit::nats::Nats::start()
                    .context("the nats run needs nats-server (Debian's nats-server)")?,
            )),
            _ => None,
        })
    }

    fn serve_args(&self) -> Vec<String> {
        match self {
            SharedStore::Postgres(postgres) => vec!["--inbox".to_owned(), postgres.url()],
            SharedStore::Nats(nats) => vec!["--nats".to_owned(), nats.url()],
        }
    }
}

/// Fills `scratch/inbox.db` with `count` processed deliveries, unique to `nonce`, through
/// `inbox import` (export lines written to a file first, then read by the binary).
async fn prefill(binary: &Path, scratch: &Path, count: u64, nonce: u32) -> Result<()> {
    let lines = scratch.join("prefill.jsonl");
    let started = std::time::Instant::now();
    let file = lines.clone();
    tokio::task::spawn_blocking(move || write_prefill(&file, count, nonce))
        .await
        .context("the prefill writer stopped")??;
    let written = started.elapsed();
    let started = std::time::Instant::now();
    let input = std::fs::File::open(&lines)
        .with_context(|| format!("could not read {}", lines.display()))?;
    let output = tokio::process::Command::new(binary)
        .args(["inbox", "import", "--inbox", "inbox.db"])
        .current_dir(scratch)
        .env_remove("RUST_LOG")
        .stdin(input)
        .output()
        .await
        .context("could not run `inbox import`")?;
    if !output.status.success() {
        bail!(
            "`inbox import` of the prefill failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let imported = started.elapsed().as_secs_f64();
    eprintln!(
        "xtask bench: durable-full: {count} deliveries written in {:.1} s, imported in {imported:.1} s ({:.0}/s)",
        written.as_secs_f64(),
        count as f64 / imported
    );
    std::fs::remove_file(&lines).with_context(|| format!("could not remove {}", lines.display()))
}

/// Writes `count` export lines of processed deliveries, received now.
fn write_prefill(path: &Path, count: u64, nonce: u32) -> Result<()> {
    use std::io::Write as _;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?;
    let received_at = chrono::DateTime::from_timestamp_millis(
        i64::try_from(now.as_millis()).context("the clock is past the year 292 million")?,
    )
    .context("the clock is out of chrono's range")?
    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let file = std::fs::File::create(path)
        .with_context(|| format!("could not create {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for sequence in 0..count {
        let body = load::delivery_body(nonce, 0, sequence, 1);
        let text = std::str::from_utf8(&body).context("delivery bodies are text")?;
        let line = serde_json::json!({
            "key": preservica_webhook_core::DeliveryKey::of(&body).to_hex(),
            "state": "done",
            "receivedAt": received_at,
            "body": text,
        });
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()
        .with_context(|| format!("could not write {}", path.display()))
}

/// Builds `package` with `cargo build --release --locked` and returns the path of its `bin`.
pub(crate) fn build_release(package: &str, bin: &str) -> Result<PathBuf> {
    eprintln!("xtask bench: cargo build --release --locked -p {package}");
    let output = crate::cargo_command(&["build", "--release", "--locked", "-p", package])
        .args(["--message-format", "json-render-diagnostics"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .context("could not start cargo")?;
    if !output.status.success() {
        bail!(
            "`cargo build --release --locked -p {package}` failed ({}); the bench needs it",
            output.status
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    executable(&stdout, bin)
        .with_context(|| format!("cargo built {package} but reported no `{bin}` executable"))
}

/// The `executable` of the `bin` target named `bin` in cargo's JSON messages.
fn executable(messages: &str, bin: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter(|message| message["target"]["name"] == bin)
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn interrupted() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match terminate.as_mut() {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminated => {}
    }
}

/// Writes the report to `target/bench/report.json` and returns its path.
fn write_json(report: &Report) -> Result<PathBuf> {
    let dir = crate::target_dir().join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    let path = dir.join("report.json");
    let json = serde_json::to_string_pretty(report).context("could not serialise the report")?;
    std::fs::write(&path, json + "\n")
        .with_context(|| format!("could not write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn options_default_to_64_connections_for_10_seconds_after_1() {
        let options = Options::parse(&[]).expect("no arguments");
        assert_eq!(
            (options.connections, options.seconds, options.warmup),
            (64, 10.0, 1.0)
        );
        assert!(
            !options.kinds().contains(&Kind::DurableFull),
            "needs --prefill"
        );
        assert_eq!(options.kinds().len(), Kind::value_variants().len() - 1);
    }

    #[test]
    fn options_select_runs_in_their_usual_order() {
        let options = Options::parse(&args(
            "--only durable --only baseline --seconds 2.5 --connections 8 --serve-arg --quiet",
        ))
        .expect("valid");
        assert_eq!(options.kinds(), [Kind::Baseline, Kind::Durable]);
        assert_eq!((options.connections, options.seconds), (8, 2.5));
        assert_eq!(options.serve_args, ["--quiet"]);
        let options = Options::parse(&args("--only durable --prefill 10")).expect("valid");
        assert_eq!(options.kinds(), [Kind::Durable, Kind::DurableFull]);
        let options = Options::parse(&args("--only baseline --prefill 10")).expect("valid");
        assert_eq!(options.kinds(), [Kind::Baseline]);
        let options = Options::parse(&args("--only postgres-3 --only postgres")).expect("valid");
        assert_eq!(options.kinds(), [Kind::Postgres, Kind::Postgres3]);
        let replicas: Vec<usize> = options.kinds().into_iter().map(Kind::replicas).collect();
        assert_eq!(replicas, [1, 3]);
        // Each run's name and description come from its variant.
        assert_eq!(Kind::Durable10.name(), "durable-10");
        assert_eq!(Kind::InMemory.name(), "in-memory");
        assert_eq!(
            Kind::Durable10.server(),
            "serve --inbox FILE, 10 events per delivery"
        );
    }

    #[test]
    fn options_refuse_bad_values() {
        for bad in [
            "--seconds 0",
            "--seconds x",
            "--connections 0",
            "--only fastest",
            "--warmup -1",
            "--seconds",
            "--verbose",
            "--serve-arg",
            "--prefill 0",
            "--only durable-full",
        ] {
            assert!(Options::parse(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn finds_the_executable_in_cargo_messages() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"serde"},"executable":null}
{"reason":"compiler-artifact","target":{"name":"preservica-webhook"},"executable":"/t/release/preservica-webhook"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            executable(messages, "preservica-webhook"),
            Some(PathBuf::from("/t/release/preservica-webhook"))
        );
        assert_eq!(executable(messages, "xtask"), None);
    }
}
