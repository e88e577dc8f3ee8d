//! Unit tests of the client against a mock server, where a fixed clock is needed.

use serde_json::json;
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::*;
use crate::transport::may_resend;

/// RFC 6238's SHA-1 test seed ("12345678901234567890") in base32; at unix time 59 its
/// six-digit code is 287082.
const SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

#[tokio::test]
async fn completes_two_factor_login_with_the_code_for_the_current_time() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/accesstoken/login"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "success": false, "message": "needs.2fa", "continuationToken": "cont-42"
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/accesstoken/complete-2fa"))
        .and(body_string_contains("twoFactorToken=287082"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "success": true, "token": "tok-2fa", "refresh-token": "r", "validFor": 15
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/user/details"))
        .and(header(TOKEN_HEADER, "tok-2fa"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"roles": []})))
        .expect(1)
        .mount(&server)
        .await;
    let client = Client::builder()
        .server(&server.uri())
        .username("alice")
        .password("pw")
        .tenant("BRAMA")
        .two_factor_seed(SEED)
        .unix_time(|| 59)
        .build()
        .unwrap();

    client.user_details().await.unwrap();

    let requests = server.received_requests().await.unwrap();
    let complete = requests
        .iter()
        .find(|it| it.url.path() == "/api/accesstoken/complete-2fa")
        .unwrap();
    let mut fields: Vec<(String, String)> = url::form_urlencoded::parse(&complete.body)
        .into_owned()
        .collect();
    fields.sort();
    let expected = [
        ("continuationToken", "cont-42"),
        ("tenant", "BRAMA"),
        ("twoFactorToken", "287082"),
        ("username", "alice"),
    ]
    .map(|(key, value)| (key.to_owned(), value.to_owned()));
    assert_eq!(fields, expected);
}

#[test]
fn endpoints_encode_each_segment() {
    let client = Client::builder()
        .server("https://host.example/prefix")
        .username("u")
        .password("p")
        .build()
        .unwrap();
    let url = client
        .inner
        .transport
        .endpoint(&["api", "entity", "information-objects", "a/b c"]);
    assert_eq!(
        url.as_str(),
        "https://host.example/prefix/api/entity/information-objects/a%2Fb%20c"
    );
}

#[test]
fn message_prefers_json_message_then_text_then_reason() {
    let check = |body: &str, expected: &str| {
        assert_eq!(
            message_of(StatusCode::BAD_REQUEST, body.as_bytes()),
            expected,
            "{body}"
        );
    };
    check(r#"{"message":"no such trigger"}"#, "no such trigger");
    check(r#"{"error":"Bad Request","status":400}"#, "Bad Request");
    check("\n  plain text answer\nsecond line", "plain text answer");
    check("", "Bad Request");
}

#[test]
fn handshake_hint_only_for_statuses_that_suggest_it() {
    for code in [400, 409, 422, 500, 502] {
        assert!(
            handshake_hint(StatusCode::from_u16(code).unwrap()).is_some(),
            "{code}"
        );
    }
    for code in [401, 403, 404, 429, 503] {
        assert!(
            handshake_hint(StatusCode::from_u16(code).unwrap()).is_none(),
            "{code}"
        );
    }
}

#[tokio::test]
async fn only_a_connection_never_made_lets_a_post_be_resent() {
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(super::tls_config().unwrap())
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let refused = http
        .post(format!("http://{closed}/"))
        .send()
        .await
        .unwrap_err();
    assert!(may_resend(Repeat::ConnectOnly, &refused), "{refused:?}");
    assert!(may_resend(Repeat::Safe, &refused));

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    let timed_out = http.post(server.uri()).send().await.unwrap_err();
    assert!(timed_out.is_timeout(), "{timed_out:?}");
    assert!(!may_resend(Repeat::ConnectOnly, &timed_out));
    assert!(may_resend(Repeat::Safe, &timed_out));
}

#[test]
fn futures_and_errors_can_cross_threads() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<Error>();
    let client = Client::builder()
        .server("eu.preservica.com")
        .username("u")
        .password("p")
        .build()
        .unwrap();
    let secret = Secret::new("s").unwrap();
    let id = SubscriptionId::new("a");
    let mut out = Vec::new();
    assert_send(&client.subscribe("https://h", &TriggerType::Moved, &secret));
    assert_send(&client.subscriptions());
    assert_send(&client.unsubscribe(&id));
    assert_send(&client.unsubscribe_all());
    assert_send(&client.user_details());
    assert_send(&client.asset(&entity_ref("r")));
    assert_send(&client.thumbnail(
        &EntityType::Asset,
        &entity_ref("r"),
        ThumbnailSize::Small,
        &mut out,
    ));
    assert_send(&client.thumbnail_to_file(
        &EntityType::Asset,
        &entity_ref("r"),
        ThumbnailSize::Small,
        Path::new("t.png"),
    ));
}

/// A reference the tests know to be valid.
fn entity_ref(text: &str) -> preservica_webhook_core::EntityRef {
    text.parse().unwrap()
}
