//! The server's expensive parts stay optional: without its default features, neither SQLite
//! nor a TLS stack nor a PostgreSQL driver is in its dependency graph, so an embedder with a
//! store and a proxy of its own compiles none of them.

const OPTIONAL: [&str; 6] = [
    "rusqlite",
    "libsqlite3-sys",
    "rustls",
    "tokio-rustls",
    "tokio-postgres",
    "deadpool-postgres",
];

/// The packages in the normal and build dependency graph of the server built with `features`.
fn server_packages(features: &[&str]) -> Vec<String> {
    let mut extra = vec!["--no-default-features"];
    extra.extend(features.iter().flat_map(|feature| ["--features", *feature]));
    preservica_webhook_tests::packages("preservica-webhook-server", &extra)
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
    check(
        &["postgres"],
        &[
            "rustls",
            "tokio-rustls",
            "tokio-postgres",
            "deadpool-postgres",
        ],
    );
}
