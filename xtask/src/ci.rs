//! `cargo xtask ci`: the gates, in order, stopping at the first failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// Runs fmt, clippy, the server without its optional features, the test suite, the docs
/// build and then the end-to-end suite.
pub(crate) fn run(args: &[String]) -> Result<()> {
    if let Some(extra) = args.first() {
        bail!("`cargo xtask ci` takes no arguments (got {extra:?})");
    }
    let root = workspace_root();
    let steps: [Step<'_>; 5] = [
        ("fmt", &["fmt", "--all", "--check"], &[]),
        (
            "clippy",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ],
            &[],
        ),
        (
            "features",
            &[
                "check",
                "--package",
                "preservica-webhook-server",
                "--no-default-features",
                "--locked",
            ],
            &[],
        ),
        ("test", &["test", "--workspace", "--locked"], &[]),
        (
            "doc",
            &["doc", "--workspace", "--no-deps", "--locked"],
            &[("RUSTDOCFLAGS", "-Dwarnings")],
        ),
    ];
    for (name, cargo_args, env) in steps {
        let started = Instant::now();
        eprintln!("xtask ci: {name}: cargo {}", cargo_args.join(" "));
        let status = Command::new(cargo())
            .args(cargo_args)
            .envs(env.iter().copied())
            .current_dir(&root)
            .status()
            .with_context(|| format!("could not start cargo for the {name} step"))?;
        if !status.success() {
            bail!("the {name} step failed ({status}); fix it and run `cargo xtask ci` again");
        }
        eprintln!("xtask ci: {name}: ok in {:.1?}", started.elapsed());
    }
    crate::e2e::run(&[])
}

/// A gate: its name, cargo's arguments, and extra environment.
type Step<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);

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
