//! Repository rules a newcomer relies on.

use std::path::Path;

/// `cargo xtask` must show cargo's progress while it builds xtask: on a cold machine that
/// build takes minutes, and a quiet alias made `cargo xtask ci` look stuck.
#[test]
fn the_xtask_alias_shows_its_build() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let config = std::fs::read_to_string(workspace.join(".cargo/config.toml")).unwrap();
    let alias = config
        .lines()
        .find(|line| line.trim_start().starts_with("xtask"))
        .expect("an xtask alias in .cargo/config.toml");
    assert!(alias.contains("--package xtask"), "{alias}");
    let quiet = alias
        .split(|c: char| c == '"' || c.is_whitespace())
        .any(|word| word == "--quiet" || word == "-q");
    assert!(!quiet, "the alias hides the build: {alias}");
}

/// `cargo xtask` builds xtask before anything else; without features it needs anyhow alone,
/// so that build takes seconds and `cargo xtask ci` speaks from its first second. The bench's
/// dependencies sit behind its `bench` feature.
#[test]
fn xtask_without_features_depends_on_anyhow_alone() {
    let mut packages = preservica_webhook_tests::packages("xtask", &[]);
    packages.sort();
    packages.dedup();
    assert_eq!(packages, ["anyhow", "xtask"]);
}
