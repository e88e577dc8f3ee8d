//! `send` and `challenge` against stand-in receivers that answer in every wrong way.

use crate::common;

use std::process::Output;

use common::{SECRET, cmd};
use preservica_webhook_core::{
    Delivery, Secret, TriggerType, challenge_response, insecure_challenge_hmac, verify,
};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Runs the binary off the async runtime so the mock server keeps answering.
async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        cmd(dir.path())
            .args(&args)
            .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|it| (*it).to_owned()).collect()
}

fn secret() -> Secret {
    Secret::new(SECRET).unwrap()
}

fn code_of(request: &Request) -> String {
    request
        .url
        .query_pairs()
        .find(|(name, _)| name == "challengeCode")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

/// Verifies deliveries as a correct receiver would.
struct Verifying;

impl Respond for Verifying {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let header = request
            .headers
            .get("preservica-signature")
            .and_then(|it| it.to_str().ok());
        match verify(&[secret()], &request.body, header) {
            Ok(_) => ResponseTemplate::new(200),
            Err(_) => ResponseTemplate::new(401).set_body_string("bad signature"),
        }
    }
}

async fn receiver(responder: impl Respond + 'static) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(responder)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn send_delivers_a_signed_body_chunked_by_default() {
    let server = receiver(Verifying).await;
    let output = run(args(&[
        "send",
        &server.uri(),
        "--trigger",
        "indexed",
        "--entity-ref",
        "7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2",
    ]))
    .await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "200 OK\n");

    let requests = server.received_requests().await.unwrap();
    let request = &requests[0];
    assert_eq!(request.headers.get("transfer-encoding").unwrap(), "chunked");
    assert!(request.headers.get("content-length").is_none());
    assert_eq!(
        request.headers.get("content-type").unwrap(),
        "application/json"
    );
    let delivery = Delivery::from_slice(&request.body).unwrap();
    assert_eq!(delivery.trigger, Some(TriggerType::FullTextIndexed));
    assert_eq!(
        delivery.entity_refs().collect::<Vec<_>>(),
        ["7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2"]
    );
    assert_eq!(delivery.events[0].event.as_deref(), Some("FullTextIndexed"));
}

#[tokio::test]
async fn send_with_length_sets_content_length() {
    let server = receiver(Verifying).await;
    let output = run(args(&[
        "send",
        &server.uri(),
        "--trigger",
        "MOVED",
        "--entity-type",
        "SO",
        "--transfer",
        "length",
    ]))
    .await;
    assert!(output.status.success(), "{output:?}");
    let requests = server.received_requests().await.unwrap();
    let request = &requests[0];
    assert!(request.headers.get("transfer-encoding").is_none());
    assert_eq!(
        request
            .headers
            .get("content-length")
            .unwrap()
            .to_str()
            .unwrap(),
        request.body.len().to_string()
    );
    let delivery = Delivery::from_slice(&request.body).unwrap();
    assert_eq!(
        delivery.events[0].entity_type.as_ref().unwrap().as_str(),
        "SO"
    );
}

#[tokio::test]
async fn send_tampered_body_is_refused_and_exits_1() {
    let server = receiver(Verifying).await;
    let output = run(args(&[
        "send",
        &server.uri(),
        "--trigger",
        "MOVED",
        "--tamper",
    ]))
    .await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "401 Unauthorized\n"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the receiver refused the delivery with 401 Unauthorized: bad signature"),
        "{stderr}"
    );
}

#[tokio::test]
async fn send_json_reports_status_and_answer() {
    let server = receiver(Verifying).await;
    let output = run(args(&[
        "send",
        &server.uri(),
        "--trigger",
        "MOVED",
        "--json",
    ]))
    .await;
    assert!(output.status.success(), "{output:?}");
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"status": 200, "reason": "OK", "body": ""})
    );
}

#[tokio::test]
async fn send_to_nothing_exits_1() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    let output = run(args(&["send", &url, "--trigger", "MOVED"])).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot send the delivery to"));
}

/// Answers challenges, right or wrong in one way.
#[derive(Clone, Copy)]
enum Answer {
    Right,
    OtherSecret,
    WrongCode,
    NotJson,
    Status(u16),
}

impl Respond for Answer {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let code = code_of(request);
        match self {
            Answer::Right => ResponseTemplate::new(200).set_body_raw(
                challenge_response(&secret(), &code).unwrap(),
                "application/json",
            ),
            Answer::OtherSecret => ResponseTemplate::new(200).set_body_raw(
                challenge_response(&Secret::new("other").unwrap(), &code).unwrap(),
                "application/json",
            ),
            Answer::WrongCode => ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "challengeCode": "something-else",
                "challengeResponse": insecure_challenge_hmac(&secret(), &code),
            })),
            Answer::NotJson => ResponseTemplate::new(200)
                .set_body_string(insecure_challenge_hmac(&secret(), &code)),
            Answer::Status(status) => ResponseTemplate::new(*status).set_body_string("nope"),
        }
    }
}

#[tokio::test]
async fn challenge_says_precisely_what_is_wrong() {
    let cases = [
        (Answer::Right, 0, "ok: "),
        (
            Answer::OtherSecret,
            1,
            "the challengeResponse is not HMAC-SHA256(secret, code): the receiver's secret differs",
        ),
        (
            Answer::WrongCode,
            1,
            "the answer echoes challengeCode \"something-else\", not the code that was sent",
        ),
        (
            Answer::NotJson,
            1,
            "the answer is not JSON with challengeCode and challengeResponse strings",
        ),
        (
            Answer::Status(404),
            1,
            "the receiver answered the challenge with 404 Not Found; Preservica expects 200",
        ),
    ];
    for (answer, code, says) in cases {
        let server = receiver(answer).await;
        let output = run(args(&["challenge", &format!("{}/hook?x=1", server.uri())])).await;
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(code), "{all}");
        assert!(all.contains(says), "expected {says:?} in {all}");

        let requests = server.received_requests().await.unwrap();
        let request = &requests[0];
        assert_eq!(request.url.path(), "/hook");
        assert_eq!(
            request.url.query_pairs().count(),
            2,
            "the URL's own query is kept"
        );
        assert_eq!(
            code_of(request).len(),
            32,
            "a random 32-hex code, as Preservica's"
        );
    }
}

#[tokio::test]
async fn challenge_codes_are_fresh_each_time() {
    let server = receiver(Answer::Right).await;
    for _ in 0..2 {
        let output = run(args(&["challenge", &server.uri()])).await;
        assert!(output.status.success(), "{output:?}");
    }
    let requests = server.received_requests().await.unwrap();
    assert_ne!(code_of(&requests[0]), code_of(&requests[1]));
}

#[tokio::test]
async fn bad_urls_are_usage_errors() {
    for url in ["not a url", "ftp://127.0.0.1/"] {
        let output = run(args(&["challenge", url])).await;
        assert_eq!(output.status.code(), Some(2), "{output:?}");
    }
}
