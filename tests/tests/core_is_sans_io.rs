//! The core crate stays sans-IO: no async runtime, HTTP stack or client in its dependency graph.

use std::path::Path;
use std::process::Command;

const FORBIDDEN: [&str; 6] = [
    "tokio",
    "hyper",
    "reqwest",
    "mio",
    "hyper-util",
    "async-std",
];

#[test]
fn core_does_not_depend_on_io_crates() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "tree",
            "--package",
            "preservica-webhook-core",
            "--edges",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "--offline",
        ])
        .current_dir(workspace)
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).unwrap();
    let packages: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(
        packages.contains(&"preservica-webhook-core") && packages.contains(&"hmac"),
        "cargo tree printed an unexpected graph:\n{tree}"
    );
    let found: Vec<&&str> = FORBIDDEN
        .iter()
        .filter(|name| packages.contains(name))
        .collect();
    assert!(
        found.is_empty(),
        "preservica-webhook-core must stay sans-IO but depends on {found:?}:\n{tree}"
    );
}
