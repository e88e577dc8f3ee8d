//! `cargo xtask fuzz`: every cargo-fuzz target in `fuzz/`, one after another, for a while.
//!
//! ```text
//! cargo xtask fuzz                         # every target for 60 s
//! cargo xtask fuzz --seconds 10 receiver   # one target for 10 s
//! ```
//!
//! Each target starts from its checked-in corpus, `fuzz/corpus/<target>` (seeds made from the
//! protocol test vectors and the client's fixtures); what libFuzzer finds goes to
//! `fuzz/target/corpus/<target>`, so the checked-in seeds stay as they are. libFuzzer's own
//! output is shown as it runs. A crash stops the loop; libFuzzer names the input it saved
//! (`fuzz/artifacts/<target>/crash-…`): turn it into a regression test. The toolchain is
//! stable, so cargo-fuzz runs with `RUSTC_BOOTSTRAP=1` for its nightly-only flags; it is
//! installed with `cargo install cargo-fuzz --locked` when missing.

use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::{cargo, stage, workspace_root};

/// The targets, in the order they run.
const TARGETS: [&str; 5] = [
    "receiver",
    "delivery",
    "signature",
    "properties",
    "entity_xml",
];

/// Runs the targets named in `args` (all by default) for `--seconds` each.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let mut seconds = 60_u32;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--seconds" {
            let text = args.next().context("--seconds needs a value")?;
            seconds = text.parse().ok().filter(|it| *it > 0).with_context(|| {
                format!("--seconds {text:?} is not a whole number of seconds above 0")
            })?;
        } else if TARGETS.contains(&arg.as_str()) {
            targets.push(arg.as_str());
        } else {
            bail!(
                "unknown argument {arg:?}; the targets are {}",
                TARGETS.join(", ")
            );
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    let fuzz = workspace_root().join("fuzz");
    let installed = Command::new(cargo())
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !installed {
        stage("fuzz", &["install", "cargo-fuzz", "--locked"], &[])?;
    }
    for target in targets {
        let found = fuzz.join("target").join("corpus").join(target);
        std::fs::create_dir_all(&found)
            .with_context(|| format!("could not create {}", found.display()))?;
        let seeds = fuzz.join("corpus").join(target);
        let (found, seeds) = (found.to_string_lossy(), seeds.to_string_lossy());
        let time = format!("-max_total_time={seconds}");
        let args = [
            "fuzz",
            "run",
            "--debug-assertions",
            target,
            &found,
            &seeds,
            "--",
            &time,
        ];
        stage_in(&fuzz, target, &args)
            .with_context(|| format!("{target} failed; fix the input libFuzzer saved above"))?;
    }
    Ok(())
}

/// `cargo ARGS` in the fuzz workspace, allowed the nightly flags cargo-fuzz passes.
fn stage_in(dir: &std::path::Path, name: &str, args: &[&str]) -> Result<()> {
    eprintln!("xtask fuzz: {name}: cargo {}", args.join(" "));
    let status = Command::new(cargo())
        .args(args)
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(dir)
        .status()
        .context("could not start cargo")?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
