//! Commands that talk to Preservica, against a stand-in that performs the handshake like
//! Preservica does: subscribe, subscriptions, unsubscribe, asset, thumbnail, and serve's
//! --subscribe and --thumbnails.

mod common;

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};

use common::{SECRET, Serve, cmd};
use expect_test::expect;
use preservica_webhook_core::{Secret, check_challenge_answer};
use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const ASSET: &str = "7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2";
const FOLDER: &str = "2b1c4f7e-9d3a-4d2e-8f61-0c5a7b9e1d20";
const NO_THUMBNAIL: &str = "11111111-2222-4333-8444-555555555555";
const IMAGE: &[u8] = b"\xff\xd8\xff\xe0 not really a jpeg";

const ENTITY_XML: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<EntityResponse xmlns="http://preservica.com/EntityAPI/v7.7" xmlns:xip="http://preservica.com/XIP/v7.7">
    <xip:InformationObject>
        <xip:Ref>7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2</xip:Ref>
        <xip:Title>Minutes of the board, 1923</xip:Title>
        <xip:Description>Scanned typescript, 4 pages</xip:Description>
        <xip:SecurityTag>open</xip:SecurityTag>
        <xip:Parent>2b1c4f7e-9d3a-4d2e-8f61-0c5a7b9e1d20</xip:Parent>
    </xip:InformationObject>
</EntityResponse>"#;

/// The subscriptions the stand-in holds.
type Store = Arc<Mutex<Vec<Value>>>;

/// A stand-in Preservica on 127.0.0.1 with the subscriptions it holds.
struct Preservica {
    server: MockServer,
    store: Store,
}

/// Performs the handshake against the receiver, as Preservica does inside the subscribe
/// call, and stores the subscription only if the answer is right.
struct Subscribe(Store);

impl Respond for Subscribe {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let url = body["url"].as_str().unwrap();
        let secret = Secret::new(body["secret"].as_str().unwrap()).unwrap();
        let code = format!("{:032x}", rand_code());
        match handshake(url, &code) {
            Ok(answer) if check_challenge_answer(&secret, &code, &answer).is_ok() => {
                let mut store = self.0.lock().unwrap();
                let created = json!({
                    "id": format!("{:032x}", 0xabc000 + store.len() as u128 + 1),
                    "url": url,
                    "triggerType": body["triggerType"],
                    "includeIdentifiers": true,
                });
                store.push(created.clone());
                ResponseTemplate::new(200).set_body_json(created)
            }
            _ => ResponseTemplate::new(400)
                .set_body_json(json!({"message": "webhook endpoint did not answer the challenge"})),
        }
    }
}

fn rand_code() -> u128 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// POSTs `?challengeCode=code` to a plain-HTTP URL and returns the answer's body.
fn handshake(url: &str, code: &str) -> Result<Vec<u8>, String> {
    let parsed = reqwest::Url::parse(url).map_err(|err| err.to_string())?;
    let addr = format!("{}:{}", parsed.host_str().unwrap(), parsed.port().unwrap());
    let mut stream = std::net::TcpStream::connect(addr).map_err(|err| err.to_string())?;
    let request = format!(
        "POST {}?challengeCode={code} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        parsed.path()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|err| err.to_string())?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|err| err.to_string())?;
    let text = String::from_utf8(answer).map_err(|err| err.to_string())?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no head")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.to_owned());
    }
    Ok(body.as_bytes().to_vec())
}

struct List(Store);

impl Respond for List {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(Value::Array(self.0.lock().unwrap().clone()))
    }
}

struct Delete(Store);

impl Respond for Delete {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let id = request.url.path().rsplit('/').next().unwrap();
        let mut store = self.0.lock().unwrap();
        let before = store.len();
        store.retain(|it| it["id"] != id);
        if store.len() < before {
            ResponseTemplate::new(204)
        } else {
            ResponseTemplate::new(404).set_body_json(json!({"message": "not found"}))
        }
    }
}

impl Preservica {
    async fn start(existing: Vec<Value>) -> Preservica {
        let server = MockServer::start().await;
        let store: Store = Arc::new(Mutex::new(existing));
        Mock::given(method("POST"))
            .and(path("/api/accesstoken/login"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "success": true, "user": "alice", "token": "token-1",
                "refresh-token": "refresh-1", "validFor": 15, "tenant": "TEST",
            })))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/api/webhook/subscriptions"))
            .respond_with(Subscribe(Arc::clone(&store)))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/webhook/subscriptions"))
            .respond_with(List(Arc::clone(&store)))
            .mount(&server)
            .await;
        Mock::given(method("DELETE"))
            .and(path_regex("^/api/webhook/subscriptions/[^/]+$"))
            .respond_with(Delete(Arc::clone(&store)))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(format!("/api/entity/information-objects/{ASSET}")))
            .respond_with(ResponseTemplate::new(200).set_body_raw(ENTITY_XML, "application/xml"))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/content/thumbnail"))
            .and(query_param("id", format!("sdb:IO|{ASSET}")))
            .respond_with(ResponseTemplate::new(200).set_body_raw(IMAGE, "image/jpeg"))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(404).set_body_json(json!({"message": "not found"})))
            .mount(&server)
            .await;
        Preservica { server, store }
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("PRESERVICA_SERVER".into(), self.server.uri()),
            ("PRESERVICA_USERNAME".into(), "alice".into()),
            ("PRESERVICA_PASSWORD".into(), "pa55".into()),
            ("PRESERVICA_TENANT".into(), "TEST".into()),
            ("PRESERVICA_WEBHOOK_SECRET".into(), SECRET.into()),
        ]
    }

    fn ids(&self) -> Vec<String> {
        let store = self.store.lock().unwrap();
        store
            .iter()
            .map(|it| it["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// Runs the binary in `dir` off the async runtime, so the stand-in keeps answering.
async fn run(dir: &Path, env: Vec<(String, String)>, args: &[&str]) -> Output {
    let dir = dir.to_owned();
    let args: Vec<String> = args.iter().map(|it| (*it).to_owned()).collect();
    tokio::task::spawn_blocking(move || cmd(&dir).args(&args).envs(env).output().unwrap())
        .await
        .unwrap()
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
    let preservica = Preservica::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &["--in-memory"], &[]);

    let output = run(
        dir.path(),
        preservica.env(),
        &["subscribe", "--url", &serve.url, "--trigger", "indexed"],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "00000000000000000000000000abc001\n");

    let output = run(
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
          "id": "00000000000000000000000000abc002",
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
    let output = run(
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
    let preservica = Preservica::start(vec![
        existing("4583e1e6d2c72ed96a1151bc7dfd53c2", "https://hooks.example.org/dev", "FULL_TEXT_INDEXED"),
        json!({"id": "b", "url": "https://x/", "triggerType": "SOMETHING_NEW", "includeIdentifiers": "false"}),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let output = run(dir.path(), preservica.env(), &["subscriptions"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    expect![[r#"
        ID                                TRIGGER            URL                            IDENTIFIERS
        4583e1e6d2c72ed96a1151bc7dfd53c2  FULL_TEXT_INDEXED  https://hooks.example.org/dev  yes
        b                                 SOMETHING_NEW      https://x/                     no
    "#]]
    .assert_eq(&stdout(&output));

    let output = run(dir.path(), preservica.env(), &["list", "--json"]).await;
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
    let preservica = Preservica::start(vec![
        existing("a1", "https://x/1", "MOVED"),
        existing("a2", "https://x/2", "MOVED"),
        existing("a3", "https://x/3", "MOVED"),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let output = run(dir.path(), preservica.env(), &["unsubscribe", "a1"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "unsubscribed a1\n");

    let output = run(dir.path(), preservica.env(), &["unsubscribe", "a2", "nope"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), "unsubscribed a2\n");
    assert!(
        stderr(&output).contains("could not unsubscribe nope"),
        "{}",
        stderr(&output)
    );

    let output = run(
        dir.path(),
        preservica.env(),
        &["unsubscribe", "--all", "--yes", "--json"],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let value: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value, json!({"removed": ["a3"], "failed": []}));
    assert!(preservica.ids().is_empty());

    let output = run(dir.path(), preservica.env(), &["unsubscribe", "zzz"]).await;
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
    let output = run(dir.path(), Vec::new(), &["subscriptions"]).await;
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("no Preservica server, username and password given"),
        "{message}"
    );
    assert!(message.contains("PRESERVICA_SERVER"), "{message}");
    assert!(message.contains("credentials.properties"), "{message}");

    let output = run(
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

    let preservica = Preservica::start(Vec::new()).await;
    let mut env = preservica.env();
    env.retain(|(name, _)| name != "PRESERVICA_WEBHOOK_SECRET");
    let output = run(
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
    let preservica = Preservica::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let output = run(dir.path(), preservica.env(), &["asset", ASSET]).await;
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

    let output = run(dir.path(), preservica.env(), &["asset", ASSET, "--json"]).await;
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

    let output = run(dir.path(), preservica.env(), &["asset", NO_THUMBNAIL]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("not found"), "{}", stderr(&output));
}

#[tokio::test(flavor = "multi_thread")]
async fn thumbnail_to_a_named_file_the_default_name_or_stdout() {
    let preservica = Preservica::start(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();

    let output = run(dir.path(), preservica.env(), &["thumbnail", ASSET]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let default = format!("{ASSET}.jpg");
    assert_eq!(
        stdout(&output).trim(),
        Path::new(".").join(&default).display().to_string()
    );
    assert_eq!(std::fs::read(dir.path().join(&default)).unwrap(), IMAGE);

    let output = run(
        dir.path(),
        preservica.env(),
        &["thumbnail", ASSET, "--size", "small", "-o", "small.img"],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(std::fs::read(dir.path().join("small.img")).unwrap(), IMAGE);
    let sizes: Vec<String> = preservica
        .server
        .received_requests()
        .await
        .unwrap()
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

    let output = run(
        dir.path(),
        preservica.env(),
        &["thumbnail", ASSET, "-o", "-"],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(output.stdout, IMAGE);

    let output = run(dir.path(), preservica.env(), &["thumbnail", NO_THUMBNAIL]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains(&format!("asset {NO_THUMBNAIL} has no thumbnail")));
    assert!(!dir.path().join(format!("{NO_THUMBNAIL}.jpg")).exists());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_subscribes_once_listening_replaces_duplicates_and_cleans_up() {
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}/");
    let preservica = Preservica::start(vec![
        existing("old-moved", &public, "MOVED"),
        existing("elsewhere", "https://other.example.org/", "MOVED"),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let env = preservica.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let addr = format!("127.0.0.1:{port}");
    let mut serve = tokio::task::block_in_place(|| {
        Serve::start_at(
            dir.path(),
            &addr,
            &[
                "--in-memory",
                "--subscribe",
                "INDEXED",
                "--subscribe",
                "moved",
                "--public-url",
                &public,
                "--unsubscribe-on-exit",
            ],
            &env,
        )
    });
    let indexed =
        tokio::task::block_in_place(|| serve.wait_stderr("subscribed FULL_TEXT_INDEXED as "));
    assert!(
        indexed.ends_with("subscribed FULL_TEXT_INDEXED as 00000000000000000000000000abc003"),
        "{indexed}"
    );
    let moved = tokio::task::block_in_place(|| serve.wait_stderr("subscribed MOVED as "));
    assert!(
        moved.ends_with(
            "replaced subscription old-moved: subscribed MOVED as 00000000000000000000000000abc004"
        ),
        "{moved}"
    );
    assert_eq!(
        preservica.ids(),
        [
            "elsewhere",
            "00000000000000000000000000abc003",
            "00000000000000000000000000abc004"
        ]
    );

    let (code, rest) = tokio::task::block_in_place(|| serve.terminate());
    assert_eq!(code, Some(0), "{rest:?}");
    let mut removed: Vec<&str> = rest
        .iter()
        .filter(|it| it.starts_with("unsubscribed "))
        .map(String::as_str)
        .collect();
    removed.sort_unstable();
    assert_eq!(
        removed,
        [
            "unsubscribed 00000000000000000000000000abc003",
            "unsubscribed 00000000000000000000000000abc004"
        ]
    );
    assert_eq!(preservica.ids(), ["elsewhere"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_thumbnails_saves_asset_thumbnails_and_skips_folders() {
    let preservica = Preservica::start(Vec::new()).await;
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
        let output = run(
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
