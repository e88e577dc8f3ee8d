//! `cargo xtask soak`: `serve` under a steady signed load mixed with hostile traffic, while its
//! handler fails at random and it is killed with SIGKILL and restarted on the same inbox.
//!
//! ```text
//! cargo xtask soak                # 120 s
//! cargo xtask soak --seconds 30
//! ```
//!
//! The release binary (`cargo build --release --locked -p preservica-webhook-cli`) runs as
//! `serve 127.0.0.1:0 --inbox TMP/inbox.db --max-body 64KiB --exec 'sh TMP/handler.sh'`, with
//! a short `--exec-timeout` and `--retry-delay` and a generous `--max-attempts`. The handler
//! script appends `$PRESERVICA_DELIVERY_KEY` to a witness file when it succeeds; otherwise it
//! exits non-zero or sleeps past the exec timeout, at random.
//!
//! For N seconds, on loopback only:
//! - the signed load: four lanes of ten deliveries a second, chunked and Content-Length, some
//!   re-sent after their 200 (as a sender that retries would);
//! - hostile traffic (see [`traffic::Hostile`]): tampered and unsigned deliveries, oracle
//!   challenge codes, oversized bodies (chunked and Content-Length), header- and
//!   body-trickling connections, 300 idle connections, malformed HTTP;
//! - `serve` killed with SIGKILL (its process group) first after 40 s, so that trickling and
//!   idle connections meet serve's own timeouts, then every 3 to 12 s, and restarted at once
//!   on the same inbox. (serve runs each handler in a process group of its own, so a handler
//!   running at the moment of a kill finishes on its own; the hanging ones sleep 3 s.)
//!
//! Then a final kill and restart, and a drain: `inbox list` until nothing is pending (or 90 s
//! pass). The checks, all printed: every body answered 200 is in `inbox export` exactly once and
//! is done (and in the witness file) or pending/dead with a reason; no hostile body is in the
//! inbox or the witness file; nothing the handler processed is missing from the inbox; no
//! hostile request was answered 2xx or kept waiting past serve's timeouts plus slack; serve's
//! peak RSS stayed under 200 MiB.
//!
//! Every child is in a process group that is killed on every exit path (the group of the
//! e2e harness's [`Serve`]); Ctrl-C ends the run the same way.

mod traffic;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use preservica_webhook_core::signing::Secret;
use rand::Rng as _;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};

use self::traffic::{Hostile, Shared, Tally};
use crate::e2e::harness::{Cli, Serve};

/// The secret deliveries are signed with.
const SECRET: &str = "soak-secret-4b1d9e";
/// The most resident memory serve may reach.
const RSS_LIMIT_KIB: u64 = 200 * 1024;
/// How long the inbox may take to drain after the run.
const DRAIN_LIMIT: Duration = Duration::from_secs(90);
/// How many connections stay open doing nothing.
const IDLE_CONNECTIONS: usize = 300;
/// Signed-load lanes and each lane's rate.
const LOAD_LANES: usize = 4;
const LOAD_PER_SECOND: u32 = 10;
/// Concurrent lanes of each trickling kind.
const TRICKLE_LANES: usize = 4;
/// When the first kill comes: late enough that trickling and idle connections meet serve's
/// own timeouts (header 10 s, body 30 s) before a kill cuts them.
const FIRST_KILL: Duration = Duration::from_secs(40);
/// The shortest and longest time between two later kills.
const KILL_EVERY: (Duration, Duration) = (Duration::from_secs(3), Duration::from_secs(12));

/// Runs the soak.
///
/// # Errors
/// On bad arguments, a failed build, a serve that cannot (re)start, or any failed check.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let seconds = parse_seconds(args)?;
    let binary = crate::bench::build_release("preservica-webhook-cli", "preservica-webhook")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("could not start the tokio runtime")?;
    runtime.block_on(async {
        tokio::select! {
            result = soak(&binary, Duration::from_secs(seconds)) => result,
            () = crate::bench::interrupted() => {
                bail!("interrupted; every process the soak started has been killed")
            }
        }
    })
}

fn parse_seconds(args: &[String]) -> Result<u64> {
    let mut seconds = 120;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let text = args.next().context("--seconds needs a value")?;
                seconds = text
                    .parse::<u64>()
                    .ok()
                    .filter(|secs| (1..=86_400).contains(secs))
                    .with_context(|| {
                        format!("--seconds {text:?} is not a whole number of seconds (1 to 86400)")
                    })?;
            }
            other => bail!("unknown argument {other:?}; usage: cargo xtask soak [--seconds N]"),
        }
    }
    Ok(seconds)
}

/// The handler: reads the body, then fails (exit 3, 15 %), hangs past the exec timeout (4 %)
/// or records the key in `witness` and succeeds.
fn handler_script(witness: &Path) -> String {
    format!(
        "cat > /dev/null\n\
         n=$(od -An -N1 -tu1 /dev/urandom | tr -d ' ')\n\
         n=$((n % 100))\n\
         if [ \"$n\" -lt 15 ]; then echo 'failing on purpose' >&2; exit 3; fi\n\
         if [ \"$n\" -lt 19 ]; then exec sleep 3 </dev/null >/dev/null 2>&1; fi\n\
         echo \"$PRESERVICA_DELIVERY_KEY\" >> '{}'\n",
        witness.display()
    )
}

/// The peak resident memory of serve's process, in KiB, from `/proc` (`VmHWM`).
fn peak_kib(serve: &Serve) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", serve.pid)).ok()?;
    crate::bench::process::parse_memory(&status).map(|memory| memory.peak_kib)
}

/// `http://IP:PORT/PATH` → the address.
fn addr_of(serve: &Serve) -> Result<SocketAddr> {
    let url = serve.url();
    url.strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .and_then(|authority| authority.parse().ok())
        .with_context(|| format!("serve listens on {url:?}, which is not http://IP:PORT/PATH"))
}

/// What the run measured outside the traffic.
#[derive(Debug, Default)]
struct Run {
    kills: u64,
    peak_rss_kib: u64,
}

async fn soak(binary: &Path, length: Duration) -> Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("preservica-soak-")
        .tempdir()
        .context("could not make a scratch directory")?;
    let dir = scratch.path();
    let inbox = dir.join("inbox.db");
    let witness = dir.join("witness");
    let script = dir.join("handler.sh");
    std::fs::write(&script, handler_script(&witness)).context("could not write the handler")?;
    std::fs::write(&witness, "").context("could not create the witness file")?;
    let cli = Cli::new(
        binary.to_path_buf(),
        dir.to_path_buf(),
        &[("PRESERVICA_WEBHOOK_SECRET", SECRET), ("NO_COLOR", "1")],
    );
    let inbox_arg = inbox.display().to_string();
    let exec = format!("sh '{}'", script.display());
    let max_body = format!("{}", traffic::MAX_BODY);
    let serve_args: Vec<&str> = vec![
        "127.0.0.1:0",
        "--inbox",
        &inbox_arg,
        "--max-body",
        &max_body,
        "--exec",
        &exec,
        "--exec-timeout",
        "500ms",
        "--retry-delay",
        "50ms",
        "--max-attempts",
        "40",
        "--workers",
        "8",
        "--quiet",
    ];
    eprintln!(
        "xtask soak: {}s against `preservica-webhook serve {}` (header timeout {:?}, body timeout \
         {:?}: serve's defaults, it has no flags for them)",
        length.as_secs(),
        serve_args.join(" "),
        traffic::HEADER_TIMEOUT,
        traffic::BODY_TIMEOUT
    );

    let secret = Secret::new(SECRET).context("the soak secret is not empty")?;
    let nonce: u32 = rand::random();
    let tally: Shared = Arc::new(Mutex::new(Tally::default()));
    let mut serve = cli.serve(&serve_args).await?;
    let (address, target) = watch::channel(Some((0, addr_of(&serve)?)));
    let started = Instant::now();
    let until = started + length;

    let mut tasks = JoinSet::new();
    for lane in 0..LOAD_LANES {
        tasks.spawn(traffic::signed_load(
            target.clone(),
            secret.clone(),
            nonce,
            lane,
            LOAD_PER_SECOND,
            until,
            Arc::clone(&tally),
        ));
    }
    let mut lane = LOAD_LANES;
    for kind in Hostile::ALL {
        let (lanes, pause) = match kind {
            Hostile::HeaderTrickle | Hostile::BodyTrickle => (TRICKLE_LANES, Duration::ZERO),
            Hostile::Idle => (IDLE_CONNECTIONS, Duration::ZERO),
            Hostile::OversizedLength | Hostile::OversizedChunked => (1, Duration::from_millis(200)),
            _ => (2, Duration::from_millis(200)),
        };
        for _ in 0..lanes {
            tasks.spawn(traffic::hostile(
                kind,
                target.clone(),
                secret.clone(),
                nonce,
                lane,
                pause,
                until,
                Arc::clone(&tally),
            ));
            lane += 1;
        }
    }

    // Kill and restart at random moments, sampling memory meanwhile.
    let mut run = Run::default();
    loop {
        let wait = if run.kills == 0 {
            FIRST_KILL
        } else {
            rand::rng().random_range(KILL_EVERY.0..=KILL_EVERY.1)
        };
        let kill_at = (Instant::now() + wait).min(until);
        while Instant::now() < kill_at {
            run.peak_rss_kib = run.peak_rss_kib.max(peak_kib(&serve).unwrap_or(0));
            sleep(Duration::from_millis(250)).await;
        }
        if Instant::now() >= until {
            break;
        }
        serve = restart(&cli, &serve_args, serve, &address, &mut run).await?;
        let elapsed = started.elapsed().as_secs();
        eprintln!(
            "xtask soak: {elapsed:>4}s: SIGKILL #{} and restarted",
            run.kills
        );
    }

    // The traffic stops by itself at `until`; whatever is still running is bounded by its
    // kind's limit.
    let stragglers = Instant::now() + Duration::from_secs(60);
    while !tasks.is_empty() {
        match tokio::time::timeout_at(stragglers, tasks.join_next()).await {
            Ok(Some(joined)) => joined.context("a traffic task failed")?,
            Ok(None) => break,
            Err(_) => bail!("traffic tasks still running 60 s after the end"),
        }
    }
    run.peak_rss_kib = run.peak_rss_kib.max(peak_kib(&serve).unwrap_or(0));

    eprintln!("xtask soak: final SIGKILL and restart, then draining the inbox");
    serve = restart(&cli, &serve_args, serve, &address, &mut run).await?;
    let drained = drain(&cli, &inbox_arg, &serve).await?;
    run.peak_rss_kib = run.peak_rss_kib.max(peak_kib(&serve).unwrap_or(0));
    serve.terminate_ok().await?;
    let left = crate::e2e::harness::wait_gone(dir, Duration::from_secs(10)).await;

    let entries = cli
        .run(&[
            "inbox", "list", "--state", "all", "--json", "--inbox", &inbox_arg,
        ])
        .await?
        .success()?
        .json()?;
    let export = cli
        .run(&["inbox", "export", "--inbox", &inbox_arg])
        .await?
        .success()?;
    let witnessed = std::fs::read_to_string(&witness).context("could not read the witness file")?;
    let tally = std::mem::take(
        &mut *tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let verdict = judge(&tally, &entries, &export.stdout, &witnessed)?;
    print!("{}", report(&tally, &run, &verdict, drained, length));

    let mut failures = verdict.failures.clone();
    failures.extend(tally.violations.iter().cloned());
    if run.peak_rss_kib > RSS_LIMIT_KIB {
        failures.push(format!(
            "serve's peak RSS was {} KiB, above the {RSS_LIMIT_KIB} KiB limit",
            run.peak_rss_kib
        ));
    }
    if !left.is_empty() {
        failures.push(format!("processes left behind: {left:?}"));
    }
    if tally.answered_200.is_empty() {
        failures.push("no delivery was answered 200".to_owned());
    }
    // A run longer than the first kill's moment has that kill and the final one at least.
    if length > FIRST_KILL && run.kills < 2 {
        failures.push(format!("only {} kill(s) during the run", run.kills));
    }
    if let Some(first) = failures.first() {
        bail!("{} check(s) failed; first: {first}", failures.len());
    }
    println!("soak: all checks passed");
    Ok(())
}

/// Kills serve's whole group with SIGKILL and starts it again on the same inbox, pointing the
/// traffic at the new address.
async fn restart(
    cli: &Cli,
    args: &[&str],
    serve: Serve,
    address: &watch::Sender<Option<(u64, SocketAddr)>>,
    run: &mut Run,
) -> Result<Serve> {
    run.peak_rss_kib = run.peak_rss_kib.max(peak_kib(&serve).unwrap_or(0));
    address.send_replace(None);
    serve.crash().await?;
    run.kills += 1;
    let pause = rand::rng().random_range(0..300);
    sleep(Duration::from_millis(pause)).await;
    let serve = cli
        .serve(args)
        .await
        .with_context(|| format!("serve did not come back after kill #{}", run.kills))?;
    address.send_replace(Some((run.kills, addr_of(&serve)?)));
    Ok(serve)
}

/// Polls `inbox list` until nothing is pending or [`DRAIN_LIMIT`] passes; returns whether it
/// drained.
async fn drain(cli: &Cli, inbox: &str, serve: &Serve) -> Result<bool> {
    let deadline = Instant::now() + DRAIN_LIMIT;
    loop {
        let pending = cli
            .run(&[
                "inbox", "list", "--state", "pending", "--json", "--inbox", inbox,
            ])
            .await?
            .success()?
            .json()?;
        let left = pending.as_array().map_or(0, Vec::len);
        if left == 0 {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            eprintln!("xtask soak: {left} deliveries still pending after {DRAIN_LIMIT:?}");
            return Ok(false);
        }
        if serve
            .stderr()
            .snapshot()
            .iter()
            .any(|line| line.contains("panicked"))
        {
            bail!(
                "serve panicked while draining: {}",
                serve.stderr().snapshot().join(" | ")
            );
        }
        sleep(Duration::from_millis(500)).await;
    }
}

/// The outcome of the checks on the inbox and the witness file.
#[derive(Debug, Default)]
struct Verdict {
    stored: usize,
    states: BTreeMap<String, usize>,
    answered_done: usize,
    answered_pending: usize,
    answered_dead: usize,
    witnessed: usize,
    failures: Vec<String>,
}

impl Verdict {
    fn fail(&mut self, failure: String) {
        if self.failures.len() < 20 {
            self.failures.push(failure);
        }
    }
}

/// Checks the inbox (`inbox list --state all --json`, `inbox export`) and the witness file
/// against what the traffic saw.
fn judge(
    tally: &Tally,
    entries: &serde_json::Value,
    export: &str,
    witness: &str,
) -> Result<Verdict> {
    let mut verdict = Verdict::default();
    let entries = entries
        .as_array()
        .context("`inbox list --json` did not print an array")?;
    let mut listed: BTreeMap<String, (String, String)> = BTreeMap::new();
    for entry in entries {
        let key = entry["key"].as_str().context("an inbox entry has no key")?;
        let state = entry["state"].as_str().unwrap_or("?").to_owned();
        let reason = entry["lastError"].as_str().unwrap_or("").to_owned();
        *verdict.states.entry(state.clone()).or_default() += 1;
        if listed.insert(key.to_owned(), (state, reason)).is_some() {
            verdict.fail(format!("key {key} is listed twice in the inbox"));
        }
    }
    // Each line is `{"id", "key", "state", "receivedAt", "body"}`; the key that counts is the
    // SHA-256 of the body itself.
    let mut exported: BTreeMap<String, usize> = BTreeMap::new();
    for line in export.lines().filter(|line| !line.is_empty()) {
        let record: serde_json::Value =
            serde_json::from_str(line).context("`inbox export` printed a line that is not JSON")?;
        let Some(body) = record["body"].as_str() else {
            verdict.fail(format!("an exported delivery has no text body: {line}"));
            continue;
        };
        let key = traffic::key(body.as_bytes());
        if record["key"].as_str() != Some(key.as_str()) {
            verdict.fail(format!("an exported body does not hash to its key: {line}"));
        }
        *exported.entry(key).or_default() += 1;
    }
    verdict.stored = exported.values().sum();
    let listed_keys: BTreeSet<&String> = listed.keys().collect();
    let exported_keys: BTreeSet<&String> = exported.keys().collect();
    if listed_keys != exported_keys {
        verdict.fail(format!(
            "`inbox export` and `inbox list` disagree: {} keys exported, {} listed",
            exported_keys.len(),
            listed_keys.len()
        ));
    }
    let witnessed: BTreeSet<&str> = witness.lines().filter(|line| !line.is_empty()).collect();
    verdict.witnessed = witnessed.len();

    for key in &tally.answered_200 {
        match exported.get(key) {
            Some(1) => {}
            Some(count) => verdict.fail(format!("answered 200 but stored {count} times: {key}")),
            None => verdict.fail(format!("answered 200 but not in the inbox: {key}")),
        }
        match listed
            .get(key)
            .map(|(state, reason)| (state.as_str(), reason))
        {
            Some(("done", _)) => {
                verdict.answered_done += 1;
                if !witnessed.contains(key.as_str()) {
                    verdict.fail(format!("done but the handler never succeeded on it: {key}"));
                }
            }
            Some(("pending", reason)) if !reason.is_empty() => verdict.answered_pending += 1,
            Some(("dead", reason)) if !reason.is_empty() => verdict.answered_dead += 1,
            Some((state, _)) => verdict.fail(format!(
                "answered 200, {state} in the inbox without a reason: {key}"
            )),
            None => {}
        }
    }
    for key in &tally.hostile_keys {
        if exported.contains_key(key) {
            verdict.fail(format!("a hostile body was stored: {key}"));
        }
        if witnessed.contains(key.as_str()) {
            verdict.fail(format!("a hostile body was processed: {key}"));
        }
    }
    for key in &witnessed {
        if !exported.contains_key(*key) {
            verdict.fail(format!("processed but not in the inbox: {key}"));
        }
    }
    Ok(verdict)
}

/// The figures, as printed.
fn report(tally: &Tally, run: &Run, verdict: &Verdict, drained: bool, length: Duration) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nsoak: {}s, serve killed with SIGKILL and restarted {} times",
        length.as_secs(),
        run.kills
    );
    let _ = writeln!(
        out,
        "  deliveries sent         {} ({} re-sends of a body already answered 200)",
        tally.sent, tally.resent
    );
    let _ = writeln!(
        out,
        "  answered 200            {} distinct bodies",
        tally.answered_200.len()
    );
    let others: Vec<String> = tally
        .other_status
        .iter()
        .map(|(status, count)| format!("{status}: {count}"))
        .collect();
    let _ = writeln!(
        out,
        "  not answered 200        {} cut by kills or down, other statuses: {}",
        tally.unanswered,
        if others.is_empty() {
            "none".to_owned()
        } else {
            others.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "  inbox                   {} stored ({}), {}",
        verdict.stored,
        verdict
            .states
            .iter()
            .map(|(state, count)| format!("{state} {count}"))
            .collect::<Vec<_>>()
            .join(", "),
        if drained { "drained" } else { "NOT drained" }
    );
    let _ = writeln!(
        out,
        "  answered 200 → inbox    {} done, {} pending with a reason, {} dead with a reason",
        verdict.answered_done, verdict.answered_pending, verdict.answered_dead
    );
    let _ = writeln!(
        out,
        "  handler successes       {} distinct keys in the witness file",
        verdict.witnessed
    );
    let _ = writeln!(
        out,
        "  peak RSS                {:.1} MiB (limit {} MiB)",
        run.peak_rss_kib as f64 / 1024.0,
        RSS_LIMIT_KIB / 1024
    );
    let _ = writeln!(
        out,
        "  hostile requests        sent  refused(status)  cut off  by a kill  accepted  stuck  longest wait (limit)"
    );
    let mut total = 0;
    let mut refused = 0;
    for kind in Hostile::ALL {
        let entry = tally.hostile.get(&kind).cloned().unwrap_or_default();
        total += entry.sent;
        refused += entry.refused_status + entry.cut_off;
        let _ = writeln!(
            out,
            "    {:<21} {:>5}  {:>15}  {:>7}  {:>9}  {:>8}  {:>5}  {:>6.2}s ({}s)",
            kind.name(),
            entry.sent,
            entry.refused_status,
            entry.cut_off,
            entry.killed,
            entry.accepted,
            entry.stuck,
            entry.longest.as_secs_f64(),
            (kind.timeout() + traffic::SLACK).as_secs()
        );
    }
    let _ = writeln!(
        out,
        "    {:<21} {total:>5}  refused or cut off: {refused}",
        "all"
    );
    let _ = writeln!(
        out,
        "  failed checks           {}",
        verdict.failures.len() + tally.violations.len()
    );
    for failure in verdict.failures.iter().chain(&tally.violations) {
        let _ = writeln!(out, "    {failure}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn seconds_default_to_120_and_refuse_nonsense() {
        assert_eq!(parse_seconds(&[]).expect("no arguments"), 120);
        assert_eq!(parse_seconds(&args("--seconds 30")).expect("valid"), 30);
        for bad in ["--seconds 0", "--seconds x", "--seconds", "--verbose"] {
            assert!(parse_seconds(&args(bad)).is_err(), "{bad}");
        }
    }

    fn body_and_key(text: &str) -> (String, String) {
        (text.to_owned(), traffic::key(text.as_bytes()))
    }

    #[test]
    fn judges_the_inbox_against_the_traffic() {
        let (done_body, done) = body_and_key("{\"a\":1}");
        let (dead_body, dead) = body_and_key("{\"a\":2}");
        let (_, hostile) = body_and_key("{\"evil\":1}");
        let mut tally = Tally::default();
        tally.answered_200.insert(done.clone());
        tally.answered_200.insert(dead.clone());
        tally.hostile_keys.insert(hostile.clone());
        let entries = serde_json::json!([
            {"key": done, "state": "done", "lastError": null},
            {"key": dead, "state": "dead", "lastError": "exit status 3"},
        ]);
        let line = |body: &str| {
            serde_json::json!({"id": "1", "key": traffic::key(body.as_bytes()), "body": body})
                .to_string()
        };
        let export = format!("{}\n{}\n", line(&done_body), line(&dead_body));
        let verdict = judge(&tally, &entries, &export, &format!("{done}\n")).expect("valid");
        assert_eq!(verdict.failures, Vec::<String>::new());
        assert_eq!((verdict.answered_done, verdict.answered_dead), (1, 1));

        // A hostile body processed, a done entry the handler never saw, a duplicate.
        let entries = serde_json::json!([
            {"key": done, "state": "done"},
            {"key": dead, "state": "pending", "lastError": null},
        ]);
        let export = format!(
            "{}\n{}\n{}\n",
            line(&done_body),
            line(&dead_body),
            line(&dead_body)
        );
        let verdict = judge(&tally, &entries, &export, &format!("{hostile}\n")).expect("valid");
        let text = verdict.failures.join("\n");
        assert!(text.contains("stored 2 times"), "{text}");
        assert!(text.contains("never succeeded"), "{text}");
        assert!(text.contains("without a reason"), "{text}");
        assert!(text.contains("hostile body was processed"), "{text}");
        assert!(text.contains("processed but not in the inbox"), "{text}");
    }
}
