//! The core crate stays sans-IO: no async runtime, HTTP stack or client in its dependency graph.

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
    let packages = preservica_webhook_tests::packages("preservica-webhook-core", &[]);
    let tree = packages.join("\n");
    assert!(
        packages.iter().any(|it| it == "preservica-webhook-core")
            && packages.iter().any(|it| it == "hmac"),
        "cargo tree printed an unexpected graph:\n{tree}"
    );
    let found: Vec<&&str> = FORBIDDEN
        .iter()
        .filter(|name| packages.iter().any(|it| it == *name))
        .collect();
    assert!(
        found.is_empty(),
        "preservica-webhook-core must stay sans-IO but depends on {found:?}:\n{tree}"
    );
}
