//! Workspace-wide checks; the tests live in `tests/`. This library holds what they share.

use std::path::Path;
use std::process::Command;

/// The packages in the normal and build dependency graph of `package`, as `cargo tree` prints
/// them, with `extra` arguments (features) added.
///
/// # Panics
/// When cargo cannot be run or `cargo tree` fails: the check cannot be made then.
pub fn packages(package: &str, extra: &[&str]) -> Vec<String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "tree",
            "--package",
            package,
            "--edges",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "--offline",
        ])
        .args(extra)
        .current_dir(workspace)
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}
