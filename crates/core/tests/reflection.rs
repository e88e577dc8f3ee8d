//! The receiver reflects nothing it was sent: a handshake answer holds the echoed code and its
//! HMAC and nothing else, and every refusal carries one fixed short body, whatever the request
//! said around it.

use preservica_webhook_core::bytes::Bytes;
use preservica_webhook_core::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use preservica_webhook_core::{
    ChallengeError, Decision, Receiver, Rejection, Secret, VerifyError, insecure_challenge_hmac,
    sign,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Written into every part of a request except the challenge code; no reply may contain it.
const MARKER: &str = "R3FL3CT3D";

/// The bodies refusals may carry, and the longest one.
const REFUSAL_BODIES: [&str; 5] = [
    "not found\n",
    "method not allowed\n",
    "challenge refused\n",
    "signature required\n",
    "signature invalid\n",
];
const MAX_REFUSAL_BODY: usize = 24;

fn secret() -> Secret {
    Secret::new("my_shared_secret").unwrap()
}

fn receiver() -> Receiver {
    Receiver::new([secret(), Secret::new("another_secret").unwrap()]).unwrap()
}

fn uri(text: &str) -> Uri {
    text.parse().unwrap()
}

/// Headers that carry the marker in names and values.
fn marked_headers(extra: &[(String, Vec<u8>)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-marker", HeaderValue::from_static(MARKER));
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    for (name, value) in extra {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    headers
}

/// Checks a challenge answer: a JSON object of exactly the two fields, the code as decoded and
/// the HMAC under the first secret, byte for byte what serializing those two gives.
fn check_answer(decision: &Decision, code: &str) {
    let Decision::Challenge(answer) = decision else {
        panic!("expected a challenge answer for {code:?}, got {decision:?}");
    };
    assert_eq!(answer.code(), code);
    let reply = decision.reply();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type, "application/json");
    assert_eq!(reply.allow, None);
    let fields: Map<String, Value> = serde_json::from_slice(&reply.body).unwrap();
    let hmac = insecure_challenge_hmac(&secret(), code);
    let mut expected = Map::new();
    expected.insert("challengeCode".to_owned(), Value::from(code));
    expected.insert("challengeResponse".to_owned(), Value::from(hmac.as_str()));
    assert_eq!(fields, expected);
    let exact = serde_json::to_vec(&expected).unwrap();
    assert_eq!(reply.body.len(), exact.len(), "no padding or extra bytes");
}

/// Checks a refusal: one of the fixed bodies, short, plain text, nothing of the request in it.
fn check_refusal(decision: &Decision) {
    let Decision::Reject(rejection) = decision else {
        panic!("expected a refusal, got {decision:?}");
    };
    let reply = decision.reply();
    let body = std::str::from_utf8(&reply.body).unwrap();
    assert!(REFUSAL_BODIES.contains(&body), "{body:?}");
    assert!(body.len() <= MAX_REFUSAL_BODY, "{body:?}");
    assert_eq!(body, rejection.body());
    assert!(!body.contains(MARKER));
    assert_eq!(reply.content_type, "text/plain; charset=utf-8");
    assert!(reply.status.is_client_error());
}

#[test]
fn handshake_answer_ignores_everything_but_the_code() {
    let body = format!(r#"{{"{MARKER}":"{MARKER}"}}"#);
    let mut headers = marked_headers(&[]);
    headers.insert(
        "preservica-signature",
        sign(&secret(), body.as_bytes()).to_hex().parse().unwrap(),
    );
    for (target, code) in [
        (
            "/?challengeCode=c306c99ca3a736124fa711bec53c737d",
            "c306c99ca3a736124fa711bec53c737d",
        ),
        (
            &format!("/?{MARKER}={MARKER}&challengeCode=abc&x={MARKER}"),
            "abc",
        ),
        ("/?challengeCode=a%2Bb+c%2Fd%3De", "a+b c/d=e"),
        ("/?challengeCode=%22%7D%2C%22x%22%3A%22", "\"},\"x\":\""),
        ("/?challengeCode=%3Cscript%3E", "<script>"),
    ] {
        for method in [Method::GET, Method::POST] {
            let decision =
                receiver().decide(&method, &uri(target), &headers, Bytes::from(body.clone()));
            check_answer(&decision, code);
            assert!(
                !String::from_utf8_lossy(&decision.reply().body).contains(MARKER),
                "{target}"
            );
        }
    }
}

#[test]
fn every_refusal_has_a_fixed_short_body() {
    let rejections = [
        Rejection::NotFound,
        Rejection::MethodNotAllowed,
        Rejection::BadChallenge(ChallengeError::Oracle),
        Rejection::BadChallenge(ChallengeError::TooLong { len: 100_000 }),
        Rejection::BadChallenge(ChallengeError::ControlCharacter),
        Rejection::BadChallenge(ChallengeError::Empty),
        Rejection::BadChallenge(ChallengeError::NotUtf8),
        Rejection::BadChallenge(ChallengeError::Repeated),
        Rejection::Signature(VerifyError::Missing),
        Rejection::Signature(VerifyError::NotHex),
        Rejection::Signature(VerifyError::WrongLength { digits: 123_456 }),
        Rejection::Signature(VerifyError::NoMatch),
    ];
    for rejection in rejections {
        let reply = rejection.reply();
        let body = std::str::from_utf8(&reply.body).unwrap();
        assert!(REFUSAL_BODIES.contains(&body), "{rejection:?}: {body:?}");
        assert!(body.len() <= MAX_REFUSAL_BODY);
        assert!(!body.contains("123456") && !body.contains("100000"));
        assert_eq!(
            reply.allow.is_some(),
            rejection == Rejection::MethodNotAllowed
        );
    }
}

#[test]
fn oracle_and_odd_codes_get_the_same_refusal() {
    let forged = format!("preservica-webhook-auth%7B%22{MARKER}%22%3A1%7D");
    for target in [
        format!("/?challengeCode={forged}"),
        format!("/?challengeCode={}", "a".repeat(513)),
        format!("/?challengeCode={MARKER}%0A"),
        format!("/?challengeCode={MARKER}%FF"),
        format!("/?challengeCode={MARKER}&challengeCode={MARKER}"),
        "/?challengeCode=".to_owned(),
    ] {
        let decision = receiver().decide(
            &Method::GET,
            &uri(&target),
            &marked_headers(&[]),
            Bytes::new(),
        );
        check_refusal(&decision);
        assert_eq!(decision.reply().status, StatusCode::BAD_REQUEST);
        assert_eq!(decision.reply().body.as_ref(), b"challenge refused\n");
    }
}

/// Header names and raw values.
type Headers = Vec<(String, Vec<u8>)>;

/// A query string, headers and a body.
fn request_parts() -> impl Strategy<Value = (String, Headers, Vec<u8>)> {
    (
        prop::sample::select(vec!["", "x=1", "a=b&c=d", "challengeCode", "challenge=1"])
            .prop_map(str::to_owned),
        prop::collection::vec(
            (
                prop::sample::select(vec![
                    "preservica-signature",
                    "x-other",
                    "content-length",
                    "transfer-encoding",
                ])
                .prop_map(str::to_owned),
                prop::collection::vec(any::<u8>(), 0..80),
            ),
            0..4,
        ),
        prop::collection::vec(any::<u8>(), 0..512),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn challenge_answers_reflect_only_the_code(
        code in "\\PC{1,64}",
        (query, headers, mut body) in request_parts(),
        method in prop::sample::select(vec![Method::GET, Method::POST]),
    ) {
        prop_assume!(!code.contains(MARKER) && !code.starts_with("preservica-webhook-auth"));
        prop_assume!(query != "challengeCode");
        body.extend_from_slice(MARKER.as_bytes());
        let encoded: String = code.bytes().map(|b| format!("%{b:02X}")).collect();
        let separator = if query.is_empty() { "" } else { "&" };
        let target = format!("/?{query}{separator}{MARKER}=1&challengeCode={encoded}");
        let decision = receiver().decide(
            &method,
            &uri(&target),
            &marked_headers(&headers),
            Bytes::from(body),
        );
        check_answer(&decision, &code);
        prop_assert!(!String::from_utf8_lossy(&decision.reply().body).contains(MARKER));
    }

    #[test]
    fn refusals_never_reflect_the_request(
        method in prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "R3FL3CT3D"]),
        path in prop::sample::select(vec!["/", "/R3FL3CT3D", "/hook"]),
        (query, headers, mut body) in request_parts(),
        signature in prop::option::of("[0-9a-fA-FR3FL]{0,70}"),
    ) {
        body.extend_from_slice(MARKER.as_bytes());
        let mut headers = marked_headers(&headers);
        if let Some(signature) = signature {
            headers.insert("preservica-signature", HeaderValue::from_str(&signature).unwrap());
        }
        let target = format!("{path}?{query}&{MARKER}={MARKER}");
        let decision = receiver().decide(
            &Method::from_bytes(method.as_bytes()).unwrap(),
            &uri(&target),
            &headers,
            Bytes::from(body),
        );
        match &decision {
            Decision::Reject(_) => check_refusal(&decision),
            Decision::Challenge(_) => prop_assert!(false, "no challenge code was sent: {decision:?}"),
            // An authentic delivery can only be one whose random signature matched: impossible
            // in practice, and its reply is the fixed "ok\n".
            _ => prop_assert_eq!(decision.reply().body, Bytes::from_static(b"ok\n")),
        }
    }
}
