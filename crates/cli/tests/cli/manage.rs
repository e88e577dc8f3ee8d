//! Commands that talk to Preservica, against the testkit's stand-in, which performs the
//! handshake like Preservica does: subscribe, subscriptions, unsubscribe, asset, thumbnail,
//! and serve's --subscribe and --thumbnails.

use std::path::Path;
use std::process::Output;

use crate::common;
use common::{Serve, run_beside};
use expect_test::expect;
use preservica_webhook_testkit::{Event, StandIn};
use serde_json::{Value, json};

const ASSET: &str = "7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2";
const FOLDER: &str = "2b1c4f7e-9d3a-4d2e-8f61-0c5a7b9e1d20";
const NO_THUMBNAIL: &str = "11111111-2222-4333-8444-555555555555";
const IMAGE: &[u8] = b"\xff\xd8\xff\xe0 not really a jpeg";

/// The stand-in holding `existing` subscriptions, the asset and its thumbnail.
async fn preservica(existing: Vec<Value>) -> StandIn {
    let preservica = StandIn::start().await;
    for subscription in existing {
        preservica.insert_subscription(subscription);
    }
    preservica.add_entity("IO", ASSET, "Minutes of the board, 1923", FOLDER);
    preservica.add_thumbnail(ASSET, IMAGE, "image/jpeg");
    preservica
}

/// The id the stand-in gives the `n`th subscription it creates.
fn created(n: u128) -> String {
    format!("{n:032x}")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn existing(id: &str, url: &str, trigger: &str) -> Value {
    json!({"id": id, "url": url, "triggerType": trigger, "includeIdentifiers": true, "createdBy": "admin"})
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribe_performs_the_handshake_and_prints_the_id_or_json() {
    let preservica = preservica(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &["--in-memory"], &[]);

    let output = run_beside(
        dir.path(),
        preservica.env(),
        &["subscribe", "--url", &serve.url, "--trigger", "indexed"],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), format!("{}\n", created(1)));

    let output = run_beside(
        dir.path(),
        preservica.env(),
        &[
            "subscribe",
            "--url",
            &serve.url,
            "--trigger",
            "moved",
            "--json",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let shown = stdout(&output).replace(&serve.url, "<url>");
    expect![[r#"
        {
          "id": "00000000000000000000000000000002",
          "url": "<url>",
          "triggerType": "MOVED",
          "includeIdentifiers": true
        }
    "#]]
    .assert_eq(&shown);

    // A receiver holding another secret fails the handshake: Preservica's answer is shown.
    let mut env = preservica.env();
    env.retain(|(name, _)| name != "PRESERVICA_WEBHOOK_SECRET");
    env.push(("PRESERVICA_WEBHOOK_SECRET".into(), "another".into()));
    let output = run_beside(
        dir.path(),
        env,
        &["subscribe", "--url", &serve.url, "--trigger", "MOVED"],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("webhook endpoint did not answer the challenge"),
        "{}",
        stderr(&output)
    );
    assert_eq!(preservica.ids().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_as_a_table_or_json() {
    let preservica = preservica(vec![
        existing("4583e1e6d2c72ed96a1151bc7dfd53c2", "https://hooks.example.org/dev", "FULL_TEXT_INDEXED"),
        json!({"id": "b", "url": "https://x/", "triggerType": "SOMETHING_NEW", "includeIdentifiers": "false"}),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let output = run_beside(dir.path(), preservica.env(), &["subscriptions"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    expect![[r#"
        ID                                TRIGGER            URL                            IDENTIFIERS
        4583e1e6d2c72ed96a1151bc7dfd53c2  FULL_TEXT_INDEXED  https://hooks.example.org/dev  yes
        b                                 SOMETHING_NEW      https://x/                     no
    "#]]
    .assert_eq(&stdout(&output));

    let output = run_beside(dir.path(), preservica.env(), &["list", "--json"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    expect![[r#"
        [
          {
            "id": "4583e1e6d2c72ed96a1151bc7dfd53c2",
            "url": "https://hooks.example.org/dev",
            "triggerType": "FULL_TEXT_INDEXED",
            "includeIdentifiers": true,
            "createdBy": "admin"
          },
          {
            "id": "b",
            "url": "https://x/",
            "triggerType": "SOMETHING_NEW",
            "includeIdentifiers": false
          }
        ]
    "#]]
    .assert_eq(&stdout(&output));
}

#[tokio::test(flavor = "multi_thread")]
async fn unsubscribe_by_id_and_all() {
    let preservica = preservica(vec![
        existing("a1", "https://x/1", "MOVED"),
        existing("a2", "https://x/2", "MOVED"),
        existing("a3", "https://x/3", "MOVED"),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let output = run_beside(dir.path(), preservica.env(), &["unsubscribe", "a1"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "unsubscribed a1\n");

    let output = run_beside(dir.path(), preservica.env(), &["unsubscribe", "a2", "nope"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), "unsubscribed a2\n");
    assert!(
        stderr(&output).contains("could not unsubscribe nope"),
        "{}",
        stderr(&output)
    );

    let output = run_beside(
        dir.path(),
        preservica.env(),
        &["unsubscribe", "--all", "--yes", "--json"],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let value: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value, json!({"removed": ["a3"], "failed": []}));
    assert!(preservica.ids().is_empty());

    let output = run_beside(dir.path(), preservica.env(), &["unsubscribe", "zzz"]).await;
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.starts_with("error: could not unsubscribe zzz: "),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_credentials_exit_2_naming_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_beside(dir.path(), Vec::new(), &["subscriptions"]).await;
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("no Preservica server, username and password given"),
        "{message}"
    );
    assert!(message.contains("PRESERVICA_SERVER"), "{message}");
    assert!(message.contains("credentials.properties"), "{message}");

    let output = run_beside(
        dir.path(),
        Vec::new(),
        &["--credentials", "missing.properties", "list"],
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("missing.properties"),
        "{}",
        stderr(&output)
    );

    let preservica = preservica(Vec::new()).await;
    let mut env = preservica.env();
    env.retain(|(name, _)| name != "PRESERVICA_WEBHOOK_SECRET");
    let output = run_beside(
        dir.path(),
        env,
        &["subscribe", "--url", "https://x/", "--trigger", "MOVED"],
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("no webhook secret"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn asset_as_text_or_json() {
    let preservica = preservica(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let output = run_beside(dir.path(), preservica.env(), &["asset", ASSET]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    expect![[r#"
        reference     7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2
        type          IO
        title         Minutes of the board, 1923
        description   Scanned typescript, 4 pages
        security tag  open
        parent        2b1c4f7e-9d3a-4d2e-8f61-0c5a7b9e1d20
    "#]]
    .assert_eq(&stdout(&output));

    let output = run_beside(dir.path(), preservica.env(), &["asset", ASSET, "--json"]).await;
    expect![[r#"
        {
          "reference": "7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2",
          "entityType": "IO",
          "title": "Minutes of the board, 1923",
          "description": "Scanned typescript, 4 pages",
          "securityTag": "open",
          "parent": "2b1c4f7e-9d3a-4d2e-8f61-0c5a7b9e1d20"
        }
    "#]]
    .assert_eq(&stdout(&output));

    let output = run_beside(dir.path(), preservica.env(), &["asset", NO_THUMBNAIL]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("not found"), "{}", stderr(&output));
}

#[tokio::test(flavor = "multi_thread")]
async fn thumbnail_to_a_named_file_the_default_name_or_stdout() {
    let preservica = preservica(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();

    let output = run_beside(dir.path(), preservica.env(), &["thumbnail", ASSET]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let default = format!("{ASSET}.jpg");
    assert_eq!(
        stdout(&output).trim(),
        Path::new(".").join(&default).display().to_string()
    );
    assert_eq!(std::fs::read(dir.path().join(&default)).unwrap(), IMAGE);

    let output = run_beside(
        dir.path(),
        preservica.env(),
        &["thumbnail", ASSET, "--size", "small", "-o", "small.img"],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(std::fs::read(dir.path().join("small.img")).unwrap(), IMAGE);
    let sizes: Vec<String> = preservica
        .requests()
        .await
        .iter()
        .filter(|it| it.url.path() == "/api/content/thumbnail")
        .map(|it| {
            it.url
                .query_pairs()
                .find(|(k, _)| k == "size")
                .unwrap()
                .1
                .into_owned()
        })
        .collect();
    assert_eq!(sizes, ["large", "small"]);

    let output = run_beside(
        dir.path(),
        preservica.env(),
        &["thumbnail", ASSET, "-o", "-"],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(output.stdout, IMAGE);

    let output = run_beside(dir.path(), preservica.env(), &["thumbnail", NO_THUMBNAIL]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains(&format!("asset {NO_THUMBNAIL} has no thumbnail")));
    assert!(!dir.path().join(format!("{NO_THUMBNAIL}.jpg")).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_subscribes_once_listening_replaces_duplicates_delivers_and_cleans_up() {
    let port = preservica_webhook_testkit::port::free_loopback_port().unwrap();
    let public = format!("http://127.0.0.1:{port}/");
    let preservica = preservica(vec![
        existing("old-moved", &public, "MOVED"),
        existing("elsewhere", "https://other.example.org/", "MOVED"),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let env = preservica.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let addr = format!("127.0.0.1:{port}");
    let args = [
        "--in-memory",
        "--subscribe",
        "INDEXED",
        "--subscribe",
        "moved",
        "--public-url",
        &public,
        "--unsubscribe-on-exit",
    ];
    let mut serve = tokio::task::block_in_place(|| Serve::start_at(dir.path(), &addr, &args, &env));
    let (indexed, moved) = tokio::task::block_in_place(|| {
        let indexed = serve.wait_stderr("subscribed FULL_TEXT_INDEXED as ");
        (indexed, serve.wait_stderr("subscribed MOVED as "))
    });
    // The harness saw `listening on` first: serve subscribes only once it answers.
    assert!(
        serve.stderr_seen[0].contains("listening on"),
        "{:?}",
        serve.stderr_seen
    );
    assert!(
        indexed.ends_with(&format!("subscribed FULL_TEXT_INDEXED as {}", created(1))),
        "{indexed}"
    );
    let replaced = format!(
        "replaced subscription old-moved: subscribed MOVED as {}",
        created(2)
    );
    assert!(moved.ends_with(&replaced), "{moved}");
    assert_eq!(
        preservica.ids(),
        ["elsewhere".to_owned(), created(1), created(2)]
    );

    // The subscription works: what the stand-in delivers through it is printed.
    let asset = Event::asset();
    let (_, status) = preservica
        .deliver(&created(1), std::slice::from_ref(&asset))
        .await;
    assert_eq!(status, 200);
    let line = tokio::task::block_in_place(|| serve.stdout_line());
    assert!(line.contains(&asset.entity_ref), "{line}");

    let (code, rest) = tokio::task::block_in_place(|| serve.terminate());
    assert_eq!(code, Some(0), "{rest:?}");
    let mut removed: Vec<&str> = rest
        .iter()
        .filter(|it| it.starts_with("unsubscribed "))
        .map(String::as_str)
        .collect();
    removed.sort_unstable();
    let expected = [1, 2].map(|n| format!("unsubscribed {}", created(n)));
    assert_eq!(removed, expected);
    assert_eq!(preservica.ids(), ["elsewhere"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_thumbnails_saves_asset_thumbnails_and_skips_folders() {
    let preservica = preservica(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let env = preservica.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut serve = tokio::task::block_in_place(|| {
        Serve::start(
            dir.path(),
            &["--in-memory", "-v", "--thumbnails", "thumbs"],
            &env,
        )
    });
    for (reference, kind) in [(FOLDER, "SO"), (NO_THUMBNAIL, "IO"), (ASSET, "IO")] {
        let output = run_beside(
            dir.path(),
            preservica.env(),
            &[
                "send",
                &serve.url,
                "--trigger",
                "INDEXED",
                "--entity-ref",
                reference,
                "--entity-type",
                kind,
            ],
        )
        .await;
        assert!(output.status.success(), "{}", stderr(&output));
    }
    tokio::task::block_in_place(|| {
        serve.wait_stderr("not an asset");
        serve.wait_stderr("the asset has no thumbnail");
        serve.wait_stderr("thumbnail saved");
    });
    let mut files: Vec<String> = std::fs::read_dir(dir.path().join("thumbs"))
        .unwrap()
        .map(|it| it.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort_unstable();
    assert_eq!(files, [format!("{ASSET}.jpg")]);
    assert_eq!(
        std::fs::read(dir.path().join("thumbs").join(&files[0])).unwrap(),
        IMAGE
    );
    assert!(
        serve.stdout_ready().is_none(),
        "--thumbnails replaces the printing handler"
    );
}
