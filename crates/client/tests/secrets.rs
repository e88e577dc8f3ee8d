//! No password, token, two-factor seed or webhook secret in any log line or error, even with
//! tracing at trace level and a Preservica that echoes every request back in its refusals.
//!
//! This file is its own test binary because it installs the process-wide tracing subscriber
//! (which also takes in the `log` records of the HTTP stack).

mod common;

use std::io::Write;
use std::sync::Mutex;

use common::*;
use preservica_webhook_client::{
    Client, CredentialOverrides, Credentials, EntityType, Error, PropertiesFile, Secret,
    SubscriptionId, ThumbnailSize, TriggerType,
};
use serde_json::json;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const TOKEN: &str = "access-7c1e-token-never-shown";
const REFRESH_TOKEN: &str = "refresh-2b9d-token-never-shown";
const CONTINUATION: &str = "continuation-5a8f-never-shown";
/// RFC 6238's SHA-1 test seed in base32.
const SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const WEBHOOK_SECRET: &str = "hook-secret-3e7a-never-shown";

/// Everything that must never be shown.
const NEEDLES: [&str; 6] = [
    PASSWORD,
    TOKEN,
    REFRESH_TOKEN,
    CONTINUATION,
    SEED,
    WEBHOOK_SECRET,
];

/// Every formatted tracing event of the process.
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Trace level for everything but the mock server, which logs the requests it receives.
fn capture_logs() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace,wiremock=off"))
        .with_ansi(false)
        .with_writer(|| Capture)
        .try_init()
        .expect("the only subscriber of this test binary");
}

/// Echoes the whole request (method, URL, headers, body) back with `status`.
fn echo(status: u16) -> impl Fn(&Request) -> ResponseTemplate {
    move |request: &Request| {
        let headers: Vec<String> = request
            .headers
            .iter()
            .map(|(name, value)| format!("{name}: {}", String::from_utf8_lossy(value.as_bytes())))
            .collect();
        let echoed = format!(
            "refused {} {} headers [{}] body {}",
            request.method,
            request.url,
            headers.join("; "),
            String::from_utf8_lossy(&request.body)
        );
        ResponseTemplate::new(status).set_body_json(json!({ "message": echoed, "echo": echoed }))
    }
}

/// Echoes the request as plain text, the way a proxy's error page might.
fn echo_text(status: u16) -> impl Fn(&Request) -> ResponseTemplate {
    move |request: &Request| {
        let headers: Vec<String> = request
            .headers
            .iter()
            .map(|(name, value)| format!("{name}: {}", String::from_utf8_lossy(value.as_bytes())))
            .collect();
        ResponseTemplate::new(status).set_body_string(format!(
            "{} {}\n{}\n\n{}",
            request.method,
            request.url,
            headers.join("\n"),
            String::from_utf8_lossy(&request.body)
        ))
    }
}

/// A Preservica with two-factor logins whose tokens run out at once, and which refuses
/// everything else by echoing the request.
async fn echoing_preservica() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(LOGIN))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "success": false, "message": "needs.2fa", "continuationToken": CONTINUATION
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(COMPLETE_2FA))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "success": true, "token": TOKEN, "refresh-token": REFRESH_TOKEN, "validFor": 0
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(REFRESH))
        .respond_with(echo(401))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(SUBSCRIPTIONS))
        .respond_with(echo(400))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(SUBSCRIPTIONS))
        .respond_with(echo(403))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path_regex("^/api/webhook/subscriptions/"))
        .respond_with(echo_text(409))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(USER_DETAILS))
        .respond_with(echo(500))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/api/entity/information-objects/"))
        .respond_with(echo_text(500))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/api/entity/structural-objects/"))
        .respond_with(echo(401))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/content/thumbnail"))
        .respond_with(echo(503))
        .mount(&server)
        .await;
    server
}

/// Every way an error is shown: `Display`, `Debug` and the chain of sources.
fn renderings(error: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut shown = vec![error.to_string(), format!("{error:?}")];
    let mut source = error.source();
    while let Some(cause) = source {
        shown.push(cause.to_string());
        source = cause.source();
    }
    shown
}

fn assert_clean(what: &str, text: &str) {
    for needle in NEEDLES {
        assert!(!text.contains(needle), "{what} shows {needle:?}:\n{text}");
    }
}

#[tokio::test]
async fn no_secret_reaches_a_log_line_or_an_error() {
    capture_logs();
    let server = echoing_preservica().await;
    let client = builder(&server)
        .two_factor_seed(SEED)
        .retry(fast_retry(2))
        .build()
        .unwrap();
    let secret = Secret::new(WEBHOOK_SECRET).unwrap();
    let mut errors: Vec<(&str, Error)> = Vec::new();

    let subscribe = client
        .subscribe("http://127.0.0.1:9/hook", &TriggerType::Moved, &secret)
        .await;
    errors.push(("subscribe", subscribe.unwrap_err()));
    errors.push(("list", client.subscriptions().await.unwrap_err()));
    let unsubscribe = client.unsubscribe(&SubscriptionId::new("4583e1e6")).await;
    errors.push(("unsubscribe", unsubscribe.unwrap_err()));
    errors.push(("user details", client.user_details().await.unwrap_err()));
    errors.push((
        "asset",
        client.asset(&entity_ref("7fdea7e0")).await.unwrap_err(),
    ));
    errors.push((
        "folder",
        client.folder(&entity_ref("2b1c4f7e")).await.unwrap_err(),
    ));
    let mut sink = Vec::new();
    let thumbnail = client
        .thumbnail(
            &EntityType::Asset,
            &entity_ref("7fdea7e0"),
            ThumbnailSize::Small,
            &mut sink,
        )
        .await;
    errors.push(("thumbnail", thumbnail.unwrap_err()));

    // A login refused with a message that quotes the password back.
    let refusing = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(LOGIN))
        .respond_with(echo(401))
        .mount(&refusing)
        .await;
    let refused = builder(&refusing).build().unwrap().subscriptions().await;
    errors.push(("refused login", refused.unwrap_err()));
    let refused_text = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(LOGIN))
        .respond_with(echo_text(500))
        .mount(&refused_text)
        .await;
    let refused = builder(&refused_text)
        .retry(fast_retry(0))
        .build()
        .unwrap()
        .user_details()
        .await;
    errors.push(("login answered 500", refused.unwrap_err()));

    // A server setting that carries the password.
    let with_password = Client::builder()
        .server(&format!("https://alice:{PASSWORD}@eu.preservica.com"))
        .username(USERNAME)
        .password(PASSWORD)
        .build();
    errors.push(("server with password", with_password.unwrap_err()));

    // The secrets were in play: sent, and echoed back in the refusals.
    let requests = server.received_requests().await.unwrap();
    let sent = |needle: &str| {
        requests.iter().any(|request| {
            String::from_utf8_lossy(&request.body).contains(needle)
                || request
                    .headers
                    .values()
                    .any(|value| value.as_bytes() == needle.as_bytes())
        })
    };
    for needle in [TOKEN, REFRESH_TOKEN, CONTINUATION, WEBHOOK_SECRET] {
        assert!(sent(needle), "{needle} was never sent, so never echoed");
    }
    let logins = requests_to(&refusing, LOGIN).await;
    assert_eq!(form(&logins[0])["password"], PASSWORD);

    for (what, error) in &errors {
        for shown in renderings(error) {
            assert_clean(what, &shown);
        }
    }
    let statuses: Vec<Option<u16>> = errors
        .iter()
        .map(|(_, error)| error.status().map(|it| it.as_u16()))
        .collect();
    assert_eq!(
        statuses,
        [
            Some(400),
            Some(403),
            Some(409),
            Some(500),
            Some(500),
            Some(401),
            Some(503),
            Some(401),
            Some(500),
            None
        ],
        "{errors:#?}"
    );
    // The refusals kept what the server said around the secrets.
    let Error::Status { message, body, .. } = &errors[0].1 else {
        panic!("{:?}", errors[0].1);
    };
    assert!(message.starts_with("refused POST"), "{message}");
    assert!(body.contains("***"), "{body}");

    // Debug output of everything that holds a secret.
    let credentials =
        Credentials::new("eu.preservica.com", USERNAME, PASSWORD).with_two_factor_seed(SEED);
    let overrides = CredentialOverrides {
        password: Some(PASSWORD.to_owned()),
        two_factor_seed: Some(SEED.to_owned()),
        ..CredentialOverrides::default()
    };
    let properties = PropertiesFile::parse(&format!(
        "[credentials]\npassword={PASSWORD}\ntwoFactorToken={SEED}\nsecret.key={WEBHOOK_SECRET}\n"
    ))
    .unwrap();
    assert_eq!(properties.get("secret.key"), Some(WEBHOOK_SECRET));
    let broken = PropertiesFile::parse(&format!("[credentials\npassword={PASSWORD}\n"));
    for (what, shown) in [
        ("client", format!("{client:?}")),
        (
            "builder",
            format!("{:?}", builder(&server).two_factor_seed(SEED)),
        ),
        ("credentials", format!("{credentials:?}")),
        ("overrides", format!("{overrides:?}")),
        ("properties", format!("{properties:?}")),
        ("secret", format!("{secret:?}")),
        ("broken properties", format!("{broken:?}")),
    ] {
        assert_clean(what, &shown);
    }

    let log = String::from_utf8(LOG.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("logged in with two-factor authentication"),
        "the client's own events are captured:\n{log}"
    );
    assert!(
        log.contains("token refresh failed"),
        "the refresh refusal was logged:\n{log}"
    );
    assert!(log.contains("TRACE"), "trace level is on:\n{log}");
    assert_clean("the log", &log);
}

/// A reference the tests know to be valid.
fn entity_ref(text: &str) -> preservica_webhook_client::EntityRef {
    text.parse().unwrap()
}
