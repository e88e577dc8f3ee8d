//! The server's expensive parts stay optional: without its default features, neither SQLite
//! nor a TLS stack is in its dependency graph, so an embedder with a store and a proxy of its
//! own compiles neither.

use std::path::Path;
use std::process::Command;

const OPTIONAL: [&str; 4] = ["rusqlite", "libsqlite3-sys", "rustls", "tokio-rustls"];

/// The packages in the normal and build dependency graph of the server built with `features`.
fn server_packages(features: &[&str]) -> Vec<String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "tree",
            "--package",
            "preservica-webhook-server",
            "--edges",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "--offline",
            "--no-default-features",
        ])
        .args(features.iter().flat_map(|feature| ["--features", feature]))
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

fn optional_in(packages: &[String]) -> Vec<&'static str> {
    OPTIONAL
        .into_iter()
        .filter(|name| packages.iter().any(|package| package == name))
        .collect()
}

#[test]
fn server_without_default_features_has_no_sqlite_or_tls() {
    let check = |features: &[&str], expected: &[&str]| {
        let packages = server_packages(features);
        assert!(
            packages.iter().any(|it| it == "hyper"),
            "cargo tree printed an unexpected graph: {packages:?}"
        );
        assert_eq!(optional_in(&packages), expected, "features {features:?}");
    };
    check(&[], &[]);
    check(&["sqlite"], &["rusqlite", "libsqlite3-sys"]);
    check(&["tls"], &["rustls", "tokio-rustls"]);
}
