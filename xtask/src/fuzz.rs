//! `cargo xtask fuzz`: every cargo-fuzz target in `fuzz/`, one after another, for a fixed time.
//!
//! ```text
//! cargo xtask fuzz                         # every target for 60 s
//! cargo xtask fuzz --seconds 10            # every target for 10 s
//! cargo xtask fuzz --seconds 300 receiver  # one target
//! ```
//!
//! It needs nothing but what `cargo install cargo-fuzz` gives, and installs cargo-fuzz with
//! `cargo install cargo-fuzz --locked` when `cargo fuzz` is missing. The toolchain is stable:
//! the sanitizer and coverage flags cargo-fuzz passes are nightly-only, so every cargo-fuzz
//! call runs with `RUSTC_BOOTSTRAP=1`. The targets are built once, in release with debug
//! assertions (so integer overflow panics instead of wrapping) and AddressSanitizer.
//!
//! Before the runs, seeds are written into each target's corpus (`fuzz/corpus/<target>`, which
//! git ignores) from the protocol test vectors (`crates/core/tests/data`) and the client's
//! fixtures (`crates/client/tests/data`). Each run's libFuzzer output goes to
//! `fuzz/logs/<target>.log`; the executions, speed, corpus growth and peak memory are read from
//! libFuzzer's final statistics and printed as a table. Any crash fails the command, naming the
//! input libFuzzer saved (`fuzz/artifacts/<target>/crash-…`); rerun it with
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>`.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::ci::{cargo, workspace_root};

/// The targets, in the order they run.
const TARGETS: [&str; 5] = [
    "receiver",
    "delivery",
    "signature",
    "properties",
    "entity_xml",
];

/// The longest one input may take before libFuzzer reports it as a hang.
const INPUT_TIMEOUT_SECONDS: u32 = 10;

/// What the command line asked for.
#[derive(Debug)]
struct Options {
    seconds: u32,
    targets: Vec<&'static str>,
}

/// What one target's run produced.
#[derive(Debug, Default)]
struct Outcome {
    executions: Option<u64>,
    per_second: Option<u64>,
    new_units: Option<u64>,
    peak_rss_mb: Option<u64>,
    coverage: Option<u64>,
    corpus: usize,
    /// The saved input and the first lines of the failure, when the run crashed.
    crash: Option<Crash>,
}

#[derive(Debug)]
struct Crash {
    artifact: Option<String>,
    summary: String,
}

/// Runs the fuzz targets.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let options = Options::parse(args)?;
    let root = workspace_root();
    let fuzz_dir = root.join("fuzz");
    ensure_cargo_fuzz()?;
    for target in &options.targets {
        let written = write_seeds(&root, target)?;
        eprintln!("xtask fuzz: {target}: {written} seeds in fuzz/corpus/{target}");
    }

    let started = Instant::now();
    eprintln!("xtask fuzz: building the targets (release, debug assertions, AddressSanitizer)");
    let status = cargo_fuzz(&fuzz_dir)
        .args(["build", "--debug-assertions"])
        .status()
        .context("cannot run `cargo fuzz build`")?;
    if !status.success() {
        bail!("`cargo fuzz build` failed ({status})");
    }
    eprintln!(
        "xtask fuzz: built in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let logs = fuzz_dir.join("logs");
    fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let mut outcomes = Vec::new();
    for target in &options.targets {
        let outcome = run_target(&fuzz_dir, &logs, target, options.seconds)?;
        outcomes.push((*target, outcome));
    }

    print!("{}", table(&outcomes, options.seconds));
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|(_, outcome)| outcome.crash.is_some())
        .map(|(target, _)| *target)
        .collect();
    if !crashed.is_empty() {
        bail!(
            "{} crashed; turn each saved input into a regression test and fix it",
            crashed.join(", ")
        );
    }
    Ok(())
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut options = Options {
            seconds: 60,
            targets: Vec::new(),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--seconds" => {
                    let text = args.next().context("--seconds needs a value")?;
                    options.seconds = text
                        .parse()
                        .ok()
                        .filter(|seconds| *seconds > 0)
                        .with_context(|| {
                            format!("--seconds {text:?} is not a whole number of seconds above 0")
                        })?;
                }
                name => {
                    let target = TARGETS
                        .into_iter()
                        .find(|target| *target == name)
                        .with_context(|| {
                            format!(
                                "unknown fuzz target {name:?}; the targets are {}",
                                TARGETS.join(", ")
                            )
                        })?;
                    options.targets.push(target);
                }
            }
        }
        if options.targets.is_empty() {
            options.targets = TARGETS.to_vec();
        }
        Ok(options)
    }
}

/// A `cargo fuzz` command for the project's fuzz folder, allowed the nightly flags it passes.
fn cargo_fuzz(fuzz_dir: &Path) -> Command {
    let mut command = Command::new(cargo());
    command
        .arg("fuzz")
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(fuzz_dir);
    command
}

/// Installs cargo-fuzz when `cargo fuzz` is not there.
fn ensure_cargo_fuzz() -> Result<()> {
    let found = Command::new(cargo())
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if found {
        return Ok(());
    }
    eprintln!(
        "xtask fuzz: `cargo fuzz` is missing; installing it: cargo install cargo-fuzz --locked"
    );
    let status = Command::new(cargo())
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .context("cannot run `cargo install cargo-fuzz --locked`")?;
    if !status.success() {
        bail!(
            "`cargo install cargo-fuzz --locked` failed ({status}); install it by hand and retry"
        );
    }
    Ok(())
}

/// Runs one target for `seconds`, its output into `logs/<target>.log`, and reads the result.
fn run_target(fuzz_dir: &Path, logs: &Path, target: &str, seconds: u32) -> Result<Outcome> {
    let log_path = logs.join(format!("{target}.log"));
    let log =
        File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    let corpus = fuzz_dir.join("corpus").join(target);
    eprintln!("xtask fuzz: {target}: running for {seconds} s (output in fuzz/logs/{target}.log)");
    let status = cargo_fuzz(fuzz_dir)
        .args(["run", "--debug-assertions", target])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
        .arg("-print_final_stats=1")
        .stdout(log.try_clone().context("cannot share the log file")?)
        .stderr(log)
        .status()
        .with_context(|| format!("cannot run `cargo fuzz run {target}`"))?;
    let text = fs::read_to_string(&log_path)
        .with_context(|| format!("cannot read {}", log_path.display()))?;
    let mut outcome = parse_log(&text);
    outcome.corpus = fs::read_dir(&corpus).map_or(0, |entries| entries.count());
    if !status.success() {
        outcome.crash = Some(Crash {
            artifact: artifact_of(&text),
            summary: failure_summary(&text),
        });
    }
    match &outcome.crash {
        None => eprintln!(
            "xtask fuzz: {target}: {} executions, no crash",
            show(outcome.executions)
        ),
        Some(crash) => eprintln!(
            "xtask fuzz: {target}: CRASH, input saved as {}\n{}",
            crash.artifact.as_deref().unwrap_or("(no input saved)"),
            crash.summary
        ),
    }
    Ok(outcome)
}

/// Reads libFuzzer's final statistics (`-print_final_stats=1`) and its last status line.
fn parse_log(text: &str) -> Outcome {
    let mut outcome = Outcome::default();
    for line in text.lines() {
        let stat = |name: &str| {
            line.strip_prefix(name)
                .and_then(|rest| rest.trim().parse::<u64>().ok())
        };
        if let Some(value) = stat("stat::number_of_executed_units:") {
            outcome.executions = Some(value);
        } else if let Some(value) = stat("stat::average_exec_per_sec:") {
            outcome.per_second = Some(value);
        } else if let Some(value) = stat("stat::new_units_added:") {
            outcome.new_units = Some(value);
        } else if let Some(value) = stat("stat::peak_rss_mb:") {
            outcome.peak_rss_mb = Some(value);
        }
        // `#1234567\tDONE   cov: 812 ft: 2301 corp: 310/40Kb …` (or the last pulse line).
        if let Some(rest) = line.strip_prefix('#') {
            let mut words = rest.split_whitespace();
            let count = words.next().and_then(|it| it.parse::<u64>().ok());
            let words: Vec<&str> = words.collect();
            if let Some(at) = words.iter().position(|word| *word == "cov:") {
                outcome.coverage = words.get(at + 1).and_then(|it| it.parse().ok());
            }
            if words.first() == Some(&"DONE") && outcome.executions.is_none() {
                outcome.executions = count;
            }
        }
    }
    outcome
}

/// The file libFuzzer saved the failing input to.
fn artifact_of(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.split_once("Test unit written to "))
        .map(|(_, path)| path.trim().to_owned())
}

/// The lines that say what failed: a panic message, or libFuzzer's and the sanitizer's error.
fn failure_summary(text: &str) -> String {
    let interesting: Vec<&str> = text
        .lines()
        .filter(|line| {
            line.contains("panicked at")
                || line.contains("==ERROR")
                || line.contains("SUMMARY:")
                || line.starts_with("error")
        })
        .take(6)
        .collect();
    if interesting.is_empty() {
        return text.lines().rev().take(10).collect::<Vec<_>>().join("\n");
    }
    let mut summary = interesting.join("\n");
    // The line after "panicked at" holds the message.
    if let Some(at) = text.lines().position(|line| line.contains("panicked at"))
        && let Some(message) = text.lines().nth(at + 1)
    {
        let _ = write!(summary, "\n{message}");
    }
    summary
}

fn show(value: Option<u64>) -> String {
    value.map_or_else(|| "?".to_owned(), |it| it.to_string())
}

/// The summary table.
fn table(outcomes: &[(&str, Outcome)], seconds: u32) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nfuzzing, {seconds} s per target:");
    let _ = writeln!(
        out,
        "{:<12} {:>12} {:>9} {:>7} {:>7} {:>6} {:>9}  result",
        "target", "executions", "exec/s", "cov", "corpus", "new", "peak RSS"
    );
    for (target, outcome) in outcomes {
        let result = match &outcome.crash {
            None => "ok".to_owned(),
            Some(crash) => format!(
                "CRASH {}",
                crash.artifact.as_deref().unwrap_or("(no input saved)")
            ),
        };
        let _ = writeln!(
            out,
            "{:<12} {:>12} {:>9} {:>7} {:>7} {:>6} {:>9}  {result}",
            target,
            show(outcome.executions),
            show(outcome.per_second),
            show(outcome.coverage),
            outcome.corpus,
            show(outcome.new_units),
            outcome
                .peak_rss_mb
                .map_or_else(|| "?".to_owned(), |mb| format!("{mb} MB")),
        );
    }
    let total: u64 = outcomes
        .iter()
        .filter_map(|(_, outcome)| outcome.executions)
        .sum();
    let _ = writeln!(out, "total executions: {total}");
    out
}

/// Writes the seeds of `target` into its corpus folder; returns how many.
fn write_seeds(root: &Path, target: &str) -> Result<usize> {
    let seeds = seeds_for(root, target)?;
    let dir = root.join("fuzz").join("corpus").join(target);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, bytes) in &seeds {
        let path = dir.join(format!("seed-{name}"));
        fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(seeds.len())
}

type Seeds = Vec<(String, Vec<u8>)>;

/// The seeds for one target, from the test vectors and fixtures.
fn seeds_for(root: &Path, target: &str) -> Result<Seeds> {
    let vectors = read_vectors(root)?;
    let mut seeds = Seeds::new();
    let mut add = |name: String, bytes: Vec<u8>| seeds.push((name, bytes));
    match target {
        "receiver" => {
            for (index, code, query) in challenge_codes(&vectors) {
                let query = query.unwrap_or_else(|| format!("challengeCode={}", encode(&code)));
                add(
                    format!("challenge-get-{index}"),
                    format!("GET /?{query}\n\n").into_bytes(),
                );
                add(
                    format!("challenge-post-{index}"),
                    format!("POST /?{query}\ncontent-type: text/plain\n\nignored").into_bytes(),
                );
            }
            for (name, _, body, signature) in events(&vectors) {
                let mut request = format!(
                    "POST /\ncontent-type: application/json\ntransfer-encoding: chunked\npreservica-signature: {signature}\n\n"
                )
                .into_bytes();
                request.extend_from_slice(body.as_bytes());
                add(format!("event-{name}"), request);
                let mut resigned = b"POST /\nPreservica-Signature: SIGN\n\n".to_vec();
                resigned.extend_from_slice(body.as_bytes());
                add(format!("event-{name}-resigned"), resigned);
            }
            for (name, request) in [
                ("put", "PUT /\n\n"),
                (
                    "other-path",
                    "POST /other\npreservica-signature: SIGN\n\n{}",
                ),
                ("unsigned", "POST /\n\n{\"events\":[]}"),
                ("repeated-code", "GET /?challengeCode=a&challengeCode=b\n\n"),
                ("control-code", "GET /?challengeCode=a%0Ab\n\n"),
                ("not-utf8-code", "GET /?challengeCode=%FF\n\n"),
            ] {
                add(format!("hand-{name}"), request.as_bytes().to_vec());
            }
        }
        "delivery" => {
            for (name, _, body, _) in events(&vectors) {
                add(format!("event-{name}"), body.into_bytes());
            }
            for (index, body) in forged_bodies(&vectors) {
                add(format!("forged-{index}"), body.into_bytes());
            }
        }
        "signature" => {
            for (name, _, body, signature) in events(&vectors) {
                add(
                    format!("event-{name}"),
                    format!("{signature}\n{body}").into_bytes(),
                );
            }
        }
        "properties" => {
            for (name, text) in PROPERTIES_SEEDS {
                add(name.to_owned(), text.as_bytes().to_vec());
            }
        }
        "entity_xml" => {
            let data = root.join("crates/client/tests/data");
            let mut files: Vec<PathBuf> = fs::read_dir(&data)
                .with_context(|| format!("cannot read {}", data.display()))?
                .filter_map(|entry| entry.ok().map(|it| it.path()))
                .filter(|path| path.extension().is_some_and(|ext| ext == "xml"))
                .collect();
            files.sort();
            for path in files {
                let bytes =
                    fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
                let name = path.file_name().map_or_else(
                    || "fixture".to_owned(),
                    |it| it.to_string_lossy().into_owned(),
                );
                add(name, bytes);
            }
            add(
                "folder-v6.2".to_owned(),
                br#"<EntityResponse xmlns="http://preservica.com/EntityAPI/v6.2" xmlns:x="http://preservica.com/XIP/v6.2"><x:StructuralObject><x:Ref>f1</x:Ref><x:Title>Folder</x:Title><x:SecurityTag>closed</x:SecurityTag></x:StructuralObject><AdditionalInformation><Parent>p</Parent></AdditionalInformation></EntityResponse>"#.to_vec(),
            );
        }
        other => bail!("no seeds for the target {other:?}"),
    }
    Ok(seeds)
}

/// `credentials.properties` files as pyPreservica users write them.
const PROPERTIES_SEEDS: [(&str, &str); 4] = [
    (
        "plain",
        "[credentials]\nusername=alice@example.org\npassword=pa55word\ntenant=BRAMA\nserver=eu.preservica.com\n",
    ),
    (
        "two-factor-and-secret",
        "[credentials]\nusername = me\npassword = \"q\\w;x:y=z\nserver: eu.preservica.com\ntwoFactorToken=JBSWY3DPEHPK3PXP\nsecret.key=hook-secret\n",
    ),
    (
        "comments-and-sections",
        "; comment\n# another\n[other]\npassword=wrong\n[credentials]\nUserName = me \nTWOFACTORTOKEN=JBSWY3DPEHPK3PXP\n",
    ),
    ("broken-section", "[credentials\npassword=hunter2\n"),
];

fn read_vectors(root: &Path) -> Result<Value> {
    let path = root.join("crates/core/tests/data/preservica-webhook-vectors.json");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

fn entries<'a>(vectors: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    vectors
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn text<'a>(entry: &'a Value, key: &str) -> Option<&'a str> {
    entry.get(key).and_then(Value::as_str)
}

/// Every challenge code of the vectors, answered and refused, with its query when given.
fn challenge_codes(vectors: &Value) -> Vec<(usize, String, Option<String>)> {
    entries(vectors, "challenge")
        .chain(entries(vectors, "challenge_refused"))
        .enumerate()
        .filter_map(|(index, entry)| {
            let code = text(entry, "challengeCode")?;
            Some((
                index,
                code.to_owned(),
                text(entry, "query").map(str::to_owned),
            ))
        })
        .collect()
}

/// Every event vector: name, secret, body, signature header.
fn events(vectors: &Value) -> Vec<(String, String, String, String)> {
    entries(vectors, "events")
        .filter_map(|entry| {
            Some((
                text(entry, "name")?.to_owned(),
                text(entry, "secret")?.to_owned(),
                text(entry, "body")?.to_owned(),
                text(entry, "signature").unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

fn forged_bodies(vectors: &Value) -> Vec<(usize, String)> {
    entries(vectors, "challenge_refused")
        .enumerate()
        .filter_map(|(index, entry)| Some((index, text(entry, "forged_body")?.to_owned())))
        .collect()
}

/// Percent-encodes everything but unreserved characters, as a query value.
fn encode(code: &str) -> String {
    code.bytes()
        .map(|byte| match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_statistics() {
        let log = "\
#65536\tpulse  cov: 700 ft: 1900 corp: 200/20Kb exec/s: 21845 rss: 60Mb
#1234567\tDONE   cov: 812 ft: 2301 corp: 310/40Kb lim: 4096 exec/s: 20576 rss: 71Mb
Done 1234567 runs in 61 second(s)
stat::number_of_executed_units: 1234567
stat::average_exec_per_sec:     20238
stat::new_units_added:          118
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              71
";
        let outcome = parse_log(log);
        assert_eq!(outcome.executions, Some(1_234_567));
        assert_eq!(outcome.per_second, Some(20_238));
        assert_eq!(outcome.new_units, Some(118));
        assert_eq!(outcome.peak_rss_mb, Some(71));
        assert_eq!(outcome.coverage, Some(812));
    }

    #[test]
    fn falls_back_to_the_done_line_and_finds_the_crash_input() {
        let log = "\
#4096\tDONE   cov: 12 ft: 30 corp: 3/1Kb exec/s: 0 rss: 30Mb
thread '<unnamed>' panicked at src/lib.rs:1:1:
attempt to add with overflow
==123== ERROR: libFuzzer: deadly signal
artifact_prefix='/w/fuzz/artifacts/receiver/'; Test unit written to /w/fuzz/artifacts/receiver/crash-abc
";
        let outcome = parse_log(log);
        assert_eq!(outcome.executions, Some(4096));
        assert_eq!(
            artifact_of(log).as_deref(),
            Some("/w/fuzz/artifacts/receiver/crash-abc")
        );
        let summary = failure_summary(log);
        assert!(
            summary.contains("attempt to add with overflow"),
            "{summary}"
        );
    }

    #[test]
    fn seeds_come_from_the_vectors_and_fixtures() {
        let root = workspace_root();
        for target in TARGETS {
            let seeds = seeds_for(&root, target).unwrap();
            assert!(seeds.len() >= 2, "{target}: {}", seeds.len());
        }
        let receiver = seeds_for(&root, "receiver").unwrap();
        let captured = receiver
            .iter()
            .find(|(name, _)| name == "event-captured-6.10-delivery")
            .unwrap();
        assert!(captured.1.starts_with(b"POST /\n"));
        assert!(
            receiver
                .iter()
                .any(|(_, bytes)| bytes.starts_with(b"GET /?challengeCode=preservica-webhook-auth"))
        );
    }

    #[test]
    fn takes_seconds_and_target_names() {
        let args = |list: &[&str]| list.iter().map(|it| (*it).to_owned()).collect::<Vec<_>>();
        let options = Options::parse(&args(&[])).unwrap();
        assert_eq!(
            (options.seconds, options.targets.len()),
            (60, TARGETS.len())
        );
        let options = Options::parse(&args(&["--seconds", "5", "signature"])).unwrap();
        assert_eq!((options.seconds, options.targets), (5, vec!["signature"]));
        assert!(Options::parse(&args(&["--seconds", "0"])).is_err());
        assert!(Options::parse(&args(&["nope"])).is_err());
    }
}
