//! Every known-answer vector in `tests/data/preservica-webhook-vectors.json`, driven through the
//! public API: challenge answers, refused oracle codes, and delivery signatures.

use preservica_webhook_core::bytes::Bytes;
use preservica_webhook_core::http::{HeaderMap, Method, StatusCode, Uri};
use preservica_webhook_core::{
    ChallengeAnswer, ChallengeError, Decision, Receiver, Secret, challenge_response,
    insecure_challenge_hmac, sign, verify,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    challenge: Vec<ChallengeVector>,
    challenge_refused: Vec<RefusedVector>,
    events: Vec<EventVector>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChallengeVector {
    secret: String,
    challenge_code: String,
    challenge_response: String,
    query: Option<String>,
}

#[derive(Deserialize)]
struct RefusedVector {
    secret: String,
    #[serde(rename = "challengeCode")]
    challenge_code: String,
    forged_body: String,
    #[serde(rename = "signature_it_would_leak")]
    leaked_signature: String,
}

#[derive(Deserialize)]
struct EventVector {
    name: String,
    secret: String,
    body: String,
    signature: String,
    valid: bool,
}

fn vectors() -> Vectors {
    let text = include_str!("data/preservica-webhook-vectors.json");
    serde_json::from_str(text).expect("the vectors file parses")
}

fn secret(text: &str) -> Secret {
    Secret::new(text).expect("vector secrets are not empty")
}

fn percent_encode(code: &str) -> String {
    code.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn challenge_through_receiver(secret: &Secret, query: &str) -> Decision {
    let receiver = Receiver::new([secret.clone()]).unwrap();
    let uri: Uri = format!("/?{query}").parse().unwrap();
    receiver.decide(&Method::POST, &uri, &HeaderMap::new(), Bytes::new())
}

#[test]
fn challenge_vectors_answer_with_the_expected_hmac() {
    let vectors = vectors();
    assert!(!vectors.challenge.is_empty());
    for vector in vectors.challenge {
        let secret = secret(&vector.secret);
        assert_eq!(
            insecure_challenge_hmac(&secret, &vector.challenge_code),
            vector.challenge_response,
            "code {:?}",
            vector.challenge_code
        );
        let body = challenge_response(&secret, &vector.challenge_code).unwrap();
        let answer: ChallengeAnswer = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer.challenge_code, vector.challenge_code);
        assert_eq!(answer.challenge_response, vector.challenge_response);

        let query = vector
            .query
            .clone()
            .unwrap_or_else(|| format!("challengeCode={}", percent_encode(&vector.challenge_code)));
        let decision = challenge_through_receiver(&secret, &query);
        let Decision::Challenge(reply) = decision else {
            panic!("query {query:?} was not answered: {decision:?}");
        };
        assert_eq!(reply.code(), vector.challenge_code, "query {query:?}");
        assert_eq!(reply.body().as_ref(), body.as_slice());
    }
}

#[test]
fn refused_challenge_vectors_would_leak_a_signature_and_are_refused() {
    let vectors = vectors();
    assert!(!vectors.challenge_refused.is_empty());
    for vector in vectors.challenge_refused {
        let secret = secret(&vector.secret);
        // The danger is real: the plain HMAC of the code is the forged body's signature.
        assert_eq!(
            insecure_challenge_hmac(&secret, &vector.challenge_code),
            vector.leaked_signature
        );
        assert_eq!(
            sign(&secret, vector.forged_body.as_bytes()).to_hex(),
            vector.leaked_signature
        );
        assert_eq!(
            challenge_response(&secret, &vector.challenge_code),
            Err(ChallengeError::Oracle)
        );
        let query = format!("challengeCode={}", percent_encode(&vector.challenge_code));
        let decision = challenge_through_receiver(&secret, &query);
        assert_eq!(decision.reply().status, StatusCode::BAD_REQUEST);
        let reply_body = decision.reply().body;
        let leaked = vector.leaked_signature.as_bytes();
        assert!(
            !reply_body
                .windows(leaked.len())
                .any(|window| window == leaked),
            "the refusal must not contain the signature"
        );
    }
}

#[test]
fn event_vectors_verify_exactly_when_valid() {
    let vectors = vectors();
    assert!(vectors.events.iter().any(|v| v.valid) && vectors.events.iter().any(|v| !v.valid));
    for vector in vectors.events {
        let secret = secret(&vector.secret);
        let outcome = verify(
            std::slice::from_ref(&secret),
            vector.body.as_bytes(),
            Some(&vector.signature),
        );
        assert_eq!(
            outcome.is_ok(),
            vector.valid,
            "{}: {outcome:?}",
            vector.name
        );
        if vector.valid {
            assert_eq!(
                sign(&secret, vector.body.as_bytes()).to_hex(),
                vector.signature.to_ascii_lowercase(),
                "{}",
                vector.name
            );
        }

        let receiver = Receiver::new([secret]).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("Preservica-Signature", vector.signature.parse().unwrap());
        let decision = receiver.decide(
            &Method::POST,
            &Uri::from_static("/"),
            &headers,
            Bytes::from(vector.body.clone()),
        );
        let accepted = matches!(decision, Decision::Accept(_));
        assert_eq!(accepted, vector.valid, "{}: {decision:?}", vector.name);
        if !vector.valid {
            assert_eq!(
                decision.reply().status,
                StatusCode::UNAUTHORIZED,
                "{}",
                vector.name
            );
        }
    }
}
