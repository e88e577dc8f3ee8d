//! The receiver's decisions, driven in process through the tower service (no socket).

mod common;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use preservica_webhook_core::{Secret, check_challenge_answer};
use preservica_webhook_server::{
    DeliveryState, Inbox, InboxConfig, StateFilter, Webhook, WebhookService,
};
use tower::ServiceExt as _;

use common::*;

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Bytes,
}

async fn send(service: &WebhookService, request: Request<Full<Bytes>>) -> Answer {
    let response = service.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|it| it.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        content_type,
        body,
    }
}

fn post(uri: &str, signature: Option<&str>, body: &[u8]) -> Request<Full<Bytes>> {
    let mut request = Request::builder().method(Method::POST).uri(uri);
    if let Some(signature) = signature {
        request = request.header("preservica-signature", signature);
    }
    request
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap()
}

fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(uri)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn webhook(dir: &tempfile::TempDir) -> (Webhook, tokio::sync::mpsc::UnboundedReceiver<Call>) {
    let (handler, calls) = Scripted::ok();
    (
        Webhook::start(&config(dir).webhook, handler).await.unwrap(),
        calls,
    )
}

#[tokio::test]
async fn answers_challenges_on_get_and_post_with_percent_encoded_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (webhook, _calls) = webhook(&dir).await;
    let service = webhook.service();
    for request in [
        get("/?challengeCode=a%2Bb+c%2Fd%3De"),
        post("/?challengeCode=a%2Bb+c%2Fd%3De", None, b"ignored"),
    ] {
        let answer = send(&service, request).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.content_type, "application/json");
        assert_eq!(
            check_challenge_answer(&secret(), "a+b c/d=e", &answer.body),
            Ok(())
        );
    }
    webhook.shutdown().await;
}

#[tokio::test]
async fn refuses_the_signing_oracle_challenge_code() {
    let dir = tempfile::tempdir().unwrap();
    let (webhook, _calls) = webhook(&dir).await;
    let answer = send(
        &webhook.service(),
        get("/?challengeCode=preservica-webhook-auth%7B%22trigger%22%3A%22MOVED%22%7D"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body.as_ref(), b"challenge refused\n");
    let metrics = webhook.metrics_text().await;
    assert!(
        metrics.contains("preservica_webhook_challenges_refused_total 1"),
        "{metrics}"
    );
    webhook.shutdown().await;
}

#[tokio::test]
async fn accepts_signed_deliveries_in_either_hex_case_and_hands_them_over() {
    let dir = tempfile::tempdir().unwrap();
    let (webhook, mut calls) = webhook(&dir).await;
    let service = webhook.service();
    let lower = signature(&secret(), BODY);
    let answer = send(&service, post("/", Some(&lower), BODY)).await;
    assert_eq!(
        (answer.status, answer.body.as_ref()),
        (StatusCode::OK, &b"ok\n"[..])
    );

    let other = body(1);
    let upper = signature(&secret(), &other).to_uppercase();
    let answer = send(&service, post("/", Some(&upper), &other)).await;
    assert_eq!(answer.status, StatusCode::OK);

    let mut seen = vec![
        next_call(&mut calls).await.body,
        next_call(&mut calls).await.body,
    ];
    seen.sort();
    let mut expected = vec![BODY.to_vec(), other];
    expected.sort();
    assert_eq!(seen, expected);
    webhook.shutdown().await;
}

#[tokio::test]
async fn refuses_tampered_bodies_and_bad_signatures_without_storing() {
    let dir = tempfile::tempdir().unwrap();
    let (webhook, _calls) = webhook(&dir).await;
    let service = webhook.service();
    let good = signature(&secret(), BODY);
    let mut tampered = BODY.to_vec();
    tampered[10] ^= 1;
    let cases: [(Option<&str>, &[u8], &[u8]); 5] = [
        (Some(&good), &tampered, b"signature invalid\n"),
        (None, BODY, b"signature required\n"),
        (Some(""), BODY, b"signature required\n"),
        (Some("not-hex-at-all"), BODY, b"signature invalid\n"),
        (Some("abcd"), BODY, b"signature invalid\n"),
    ];
    for (signature, body, expected) in cases {
        let answer = send(&service, post("/", signature, body)).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{signature:?}");
        assert_eq!(answer.body.as_ref(), expected, "{signature:?}");
    }
    let inbox = Inbox::open(&db_path(&dir)).unwrap();
    assert!(inbox.list(StateFilter::All).unwrap().is_empty());
    let metrics = webhook.metrics_text().await;
    for line in [
        r#"preservica_webhook_requests_rejected_total{reason="bad_signature"} 1"#,
        r#"preservica_webhook_requests_rejected_total{reason="missing_signature"} 2"#,
        r#"preservica_webhook_requests_rejected_total{reason="malformed_signature"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    webhook.shutdown().await;
}

#[tokio::test]
async fn accepts_deliveries_signed_with_either_rotated_secret() {
    let dir = tempfile::tempdir().unwrap();
    let old = Secret::new("the_old_secret").unwrap();
    let mut config = config(&dir);
    config.webhook.secrets = vec![secret(), old.clone()];
    let (handler, _calls) = Scripted::ok();
    let webhook = Webhook::start(&config.webhook, handler).await.unwrap();
    let service = webhook.service();
    for (n, key) in [secret(), old].iter().enumerate() {
        let body = body(n);
        let answer = send(&service, post("/", Some(&signature(key, &body)), &body)).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let stranger = Secret::new("someone_else").unwrap();
    let answer = send(&service, post("/", Some(&signature(&stranger, BODY)), BODY)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    webhook.shutdown().await;
}

#[tokio::test]
async fn registers_its_metrics_in_an_applications_registry() {
    use preservica_webhook_server::prometheus_client::encoding::text::encode;
    use preservica_webhook_server::prometheus_client::metrics::counter::Counter;
    use preservica_webhook_server::prometheus_client::registry::Registry;

    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::with_prefix("app");
    let own = Counter::<u64>::default();
    registry.register("orders", "The application's own counter", own.clone());
    let (handler, mut calls) = Scripted::ok();
    let webhook = Webhook::start_with_registry(&config(&dir).webhook, handler, &mut registry)
        .await
        .unwrap();
    let service = webhook.service();
    let answer = send(&service, post("/", Some(&signature(&secret(), BODY)), BODY)).await;
    assert_eq!(answer.status, StatusCode::OK);
    next_call(&mut calls).await;
    let unsigned = send(&service, post("/", None, BODY)).await;
    assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED);
    own.inc();
    // Counts are published after each commit, off the write path: the handled delivery's
    // outcome shows once its commit is done.
    let mut text = String::new();
    for _ in 0..200 {
        webhook.refresh_metrics().await;
        text.clear();
        encode(&mut text, &registry).unwrap();
        if text.contains("app_preservica_webhook_inbox_depth 0") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    for line in [
        "app_orders_total 1",
        "app_preservica_webhook_deliveries_accepted_total 1",
        "app_preservica_webhook_handler_successes_total 1",
        "app_preservica_webhook_inbox_depth 0",
        "app_preservica_webhook_requests_rejected_total{reason=",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    // The webhook's own exposition still has its metrics alone, unprefixed by the application.
    let alone = webhook.metrics_text().await;
    assert!(
        alone.contains("\npreservica_webhook_deliveries_accepted_total 1"),
        "{alone}"
    );
    assert!(!alone.contains("app_"), "{alone}");
    webhook.shutdown().await;
}

#[tokio::test]
async fn answers_redeliveries_ok_and_processes_them_once() {
    let dir = tempfile::tempdir().unwrap();
    let (handler, mut calls) = Scripted::ok();
    let count = handler.counter();
    let webhook = Webhook::start(&config(&dir).webhook, handler)
        .await
        .unwrap();
    let service = webhook.service();
    let sig = signature(&secret(), BODY);
    for _ in 0..3 {
        let answer = send(&service, post("/", Some(&sig), BODY)).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let call = next_call(&mut calls).await;
    assert_eq!(call.body, BODY);
    let metrics = webhook.metrics_text().await;
    assert!(
        metrics.contains("preservica_webhook_deliveries_accepted_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("preservica_webhook_deliveries_duplicate_total 2"),
        "{metrics}"
    );
    webhook.shutdown().await;
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
    let inbox = Inbox::open(&db_path(&dir)).unwrap();
    let entries = inbox.list(StateFilter::All).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].state, DeliveryState::Done);
}

#[tokio::test]
async fn stores_authentic_non_json_as_undecodable_and_never_hands_it_over() {
    let dir = tempfile::tempdir().unwrap();
    let (handler, mut calls) = Scripted::ok();
    let count = handler.counter();
    let webhook = Webhook::start(&config(&dir).webhook, handler)
        .await
        .unwrap();
    let service = webhook.service();
    let garbage: &[u8] = b"\xff\x00 not json";
    let answer = send(
        &service,
        post("/", Some(&signature(&secret(), garbage)), garbage),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = send(&service, post("/", Some(&signature(&secret(), BODY)), BODY)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(next_call(&mut calls).await.body, BODY);
    webhook.shutdown().await;
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);

    let inbox = Inbox::open(&db_path(&dir)).unwrap();
    let undecodable = inbox
        .list(StateFilter::Only(DeliveryState::Undecodable))
        .unwrap();
    assert_eq!(undecodable.len(), 1);
    assert_eq!(undecodable[0].body.as_ref(), garbage);
    let mut export = Vec::new();
    assert_eq!(inbox.export(&mut export).unwrap(), 2);
    let lines: Vec<serde_json::Value> = export
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).unwrap())
        .collect();
    assert_eq!(lines[0]["state"], "undecodable");
    assert_eq!(lines[0]["bodyBase64"], "/wAgbm90IGpzb24=");
    assert_eq!(lines[1]["body"], std::str::from_utf8(BODY).unwrap());
    assert_eq!(lines[1]["state"], "done");
}

#[tokio::test]
async fn refuses_bodies_over_the_cap_and_other_paths_and_methods() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir);
    config.webhook.max_body = 64;
    config.webhook.inbox = InboxConfig::InMemory;
    let (handler, _calls) = Scripted::ok();
    let webhook = Webhook::start(&config.webhook, handler).await.unwrap();
    let service = webhook.service();
    let big = vec![b' '; 65];
    let answer = send(&service, post("/", Some(&signature(&secret(), &big)), &big)).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    let answer = send(
        &service,
        post("/elsewhere", Some(&signature(&secret(), BODY)), BODY),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let put = Request::builder()
        .method(Method::PUT)
        .uri("/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = service.clone().oneshot(put).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "GET, POST");
    // Health and metrics are the ready server's: the service knows the webhook path alone.
    for path in ["/healthz", "/metrics"] {
        assert_eq!(
            send(&service, get(path)).await.status,
            StatusCode::NOT_FOUND
        );
    }
    webhook.shutdown().await;
}

#[tokio::test]
async fn refuses_to_start_without_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir);
    config.webhook.secrets.clear();
    let (handler, _calls) = Scripted::ok();
    let err = Webhook::start(&config.webhook, handler).await.unwrap_err();
    assert!(err.to_string().contains("no webhook secret"), "{err}");
}

#[tokio::test]
async fn mounts_as_a_hyper_service_in_a_server_of_ones_own() {
    use hyper::server::conn::http1;
    use hyper_util::rt::TokioIo;

    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir);
    config.webhook.path = "/hooks/preservica".to_owned();
    let (handler, mut calls) = Scripted::ok();
    let webhook = Webhook::start(&config.webhook, handler).await.unwrap();
    let service = webhook.service();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await
            .unwrap();
    });
    let sig = signature(&secret(), BODY);
    let response = raw(addr, &length_request("/hooks/preservica", &sig, BODY)).await;
    assert_eq!(response.status, 200);
    assert_eq!(next_call(&mut calls).await.body, BODY);
    app.abort();
    webhook.shutdown().await;
}

#[tokio::test]
async fn answers_503_once_the_inbox_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (webhook, _calls) = webhook(&dir).await;
    let service = webhook.service();
    webhook.shutdown().await;
    let answer = send(&service, post("/", Some(&signature(&secret(), BODY)), BODY)).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body.as_ref(), b"inbox unavailable\n");
}
