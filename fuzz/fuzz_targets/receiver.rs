//! The receiver's decision on a whole request, with the method, URI, headers and body all taken
//! from the input. The input is framed like an HTTP/1.1 request head, so the seeds are readable
//! and the fuzzer mutates one part at a time:
//!
//! ```text
//! METHOD SP URI LF
//! NAME ":" VALUE LF      (any number)
//! LF
//! BODY
//! ```
//!
//! A `Preservica-Signature` header whose value is `SIGN` becomes the real signature of the body
//! under the receiver's second secret, so the fuzzer also reaches what lies behind a valid
//! signature (JSON parsing of authentic bodies).
//!
//! Beyond "does not panic", every decision is checked against what the protocol promises: a
//! challenge answer holds the echoed code and its HMAC and nothing else, an accepted delivery
//! really is signed, and a refusal carries one of the fixed short bodies.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use preservica_webhook_core::bytes::Bytes;
use preservica_webhook_core::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use preservica_webhook_core::{
    ChallengeAnswer, Decision, Delivery, DeliveryKey, Head, MAX_CHALLENGE_CODE_LEN, Receiver,
    SIGNATURE_HEADER, SIGNATURE_PREFIX, Secret, Signature, check_challenge_answer,
    insecure_challenge_hmac, sign,
};

static SECRETS: LazyLock<[Secret; 2]> = LazyLock::new(|| {
    [
        Secret::new("my_shared_secret").expect("not empty"),
        Secret::new("another_secret").expect("not empty"),
    ]
});

static RECEIVER: LazyLock<Receiver> =
    LazyLock::new(|| Receiver::new(SECRETS.iter().cloned()).expect("two secrets"));

/// Every body a refusal may carry.
const REFUSAL_BODIES: [&str; 8] = [
    "not found\n",
    "method not allowed\n",
    "challenge refused\n",
    "signature required\n",
    "signature invalid\n",
    "body too large\n",
    "request timeout\n",
    "bad request\n",
];

struct Request {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

fuzz_target!(|data: &[u8]| {
    let Some(request) = parse(data) else {
        return;
    };
    let decision = RECEIVER.decide(
        &request.method,
        &request.uri,
        &request.headers,
        request.body.clone(),
    );
    check(&request, &decision);

    // Deciding in two steps must come to the same answer as deciding at once.
    let two_step = match RECEIVER.decide_head(&request.method, &request.uri, &request.headers) {
        Head::Challenge(reply) => Decision::Challenge(reply),
        Head::Reject(rejection) => Decision::Reject(rejection),
        Head::ReadBody(signed) => match RECEIVER.decide_body(signed, request.body.clone()) {
            Ok(verified) => Decision::Accept(verified),
            Err(rejection) => Decision::Reject(rejection),
        },
        _ => return,
    };
    assert_eq!(two_step.reply(), decision.reply());
});

fn check(request: &Request, decision: &Decision) {
    let reply = decision.reply();
    match decision {
        Decision::Challenge(answer) => {
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(reply.content_type, "application/json");
            let code = answer.code();
            assert!(!code.is_empty() && code.len() <= MAX_CHALLENGE_CODE_LEN);
            assert!(!code.starts_with(SIGNATURE_PREFIX), "oracle code answered");
            assert!(!code.chars().any(char::is_control));
            // The answer is exactly the code and its HMAC, serialized: nothing else reflected.
            let expected = serde_json::to_vec(&ChallengeAnswer {
                challenge_code: code.to_owned(),
                challenge_response: insecure_challenge_hmac(&SECRETS[0], code),
            })
            .expect("two strings serialize");
            assert_eq!(reply.body.as_ref(), expected.as_slice());
            assert_eq!(
                check_challenge_answer(&SECRETS[0], code, &reply.body),
                Ok(())
            );
        }
        Decision::Accept(verified) => {
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(verified.body(), &request.body);
            assert_eq!(verified.key(), DeliveryKey::of(&request.body));
            let header = request
                .headers
                .get(SIGNATURE_HEADER)
                .and_then(|value| value.to_str().ok())
                .expect("an accepted delivery has a signature header");
            let signature = Signature::parse(header).expect("the accepted header parses");
            let secret = &SECRETS[verified.secret_index()];
            assert_eq!(sign(secret, &request.body), signature, "accepted a forgery");
            assert_eq!(
                verified.delivery().is_ok(),
                Delivery::from_slice(&request.body).is_ok()
            );
        }
        Decision::Reject(rejection) => {
            assert!(REFUSAL_BODIES.contains(&rejection.body()));
            assert_eq!(reply.body.as_ref(), rejection.body().as_bytes());
            assert_eq!(reply.status, rejection.status());
            assert!(reply.status.is_client_error());
        }
        _ => {}
    }
}

/// Splits the framed input into a request; `None` when a part is not valid HTTP.
fn parse(data: &[u8]) -> Option<Request> {
    let (head, body) = match find(data, b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let request_line = lines.next()?;
    let space = request_line.iter().position(|&b| b == b' ')?;
    let method = Method::from_bytes(&request_line[..space]).ok()?;
    let uri = Uri::try_from(&request_line[space + 1..]).ok()?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let colon = line.iter().position(|&b| b == b':')?;
        let name = HeaderName::from_bytes(&line[..colon]).ok()?;
        let raw_value = line[colon + 1..].trim_ascii();
        let value = if name == SIGNATURE_HEADER && raw_value == b"SIGN" {
            HeaderValue::from_str(&sign(&SECRETS[1], body).to_hex()).ok()?
        } else {
            HeaderValue::from_bytes(raw_value).ok()?
        };
        headers.append(name, value);
    }
    Some(Request {
        method,
        uri,
        headers,
        body: Bytes::copy_from_slice(body),
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
