//! Property tests: signing round-trips, any single-byte change breaks verification, the
//! receiver and the payload parser never panic on arbitrary input, and a backoff's wait stays
//! within its bounds for any attempt and any random draw.

use preservica_webhook_core::bytes::Bytes;
use preservica_webhook_core::http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use std::time::Duration;

use preservica_webhook_core::{
    Backoff, Decision, Delivery, Receiver, Secret, VerifyError, sign, verify,
};
use proptest::prelude::*;

fn secret_text() -> impl Strategy<Value = String> {
    ".{1,64}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn backoff_waits_between_half_and_all_of_a_capped_doubling(
        base in any::<u64>(),
        max in any::<u64>(),
        retry in any::<u32>(),
        unit in any::<f64>(),
    ) {
        let backoff = Backoff { base: Duration::from_nanos(base), max: Duration::from_nanos(max) };
        let full = backoff.delay(retry);
        prop_assert!(full <= backoff.max);
        prop_assert!(full >= backoff.base.min(backoff.max));
        prop_assert!(backoff.delay(retry.saturating_add(1)) >= full);
        let wait = backoff.jittered(retry, unit);
        prop_assert!(wait >= full / 2 && wait <= full, "{wait:?} of {full:?}");
    }

    #[test]
    fn sign_then_verify_holds(key in secret_text(), body in prop::collection::vec(any::<u8>(), 0..4096)) {
        let secret = Secret::new(&key).unwrap();
        let signature = sign(&secret, &body).to_hex();
        prop_assert_eq!(verify(&[secret], &body, Some(&signature)), Ok(0));
    }

    #[test]
    fn flipping_any_body_byte_breaks_verification(
        key in secret_text(),
        body in prop::collection::vec(any::<u8>(), 1..2048),
        index in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let secret = Secret::new(&key).unwrap();
        let signature = sign(&secret, &body).to_hex();
        let mut tampered = body.clone();
        let at = index.index(tampered.len());
        tampered[at] ^= flip;
        prop_assert_eq!(verify(&[secret], &tampered, Some(&signature)), Err(VerifyError::NoMatch));
    }

    #[test]
    fn flipping_any_signature_byte_breaks_verification(
        key in secret_text(),
        body in prop::collection::vec(any::<u8>(), 0..2048),
        index in 0usize..32,
        flip in 1u8..=255,
    ) {
        let secret = Secret::new(&key).unwrap();
        let mut bytes = *sign(&secret, &body).as_bytes();
        bytes[index] ^= flip;
        let tampered = hex::encode(bytes);
        prop_assert_eq!(verify(&[secret], &body, Some(&tampered)), Err(VerifyError::NoMatch));
    }

    #[test]
    fn receiver_never_panics(
        method in prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "X-CUSTOM"]),
        path in "(/|/[a-z%0-9]{0,8}|/hook)",
        query in prop::option::of(".{0,80}"),
        headers in prop::collection::vec((
            prop::sample::select(vec!["preservica-signature", "content-type", "x-other", "Preservica-Signature"]),
            prop::collection::vec(any::<u8>(), 0..80),
        ), 0..4),
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let receiver = Receiver::new([Secret::new("my_shared_secret").unwrap()]).unwrap();
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let target = match &query {
            Some(query) => format!("{path}?{}", query.replace(|c: char| !c.is_ascii_graphic(), "%20")),
            None => path.clone(),
        };
        let Ok(uri) = target.parse::<Uri>() else { return Ok(()); };
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
            }
        }
        let decision = receiver.decide(&method, &uri, &map, Bytes::from(body));
        let reply = decision.reply();
        prop_assert!(reply.status.is_success() || reply.status.is_client_error());
        if let Decision::Reject(rejection) = &decision {
            prop_assert_eq!(reply.body.as_ref(), rejection.body().as_bytes());
        }
    }

    #[test]
    fn delivery_parsing_never_panics(body in prop::collection::vec(any::<u8>(), 0..1024)) {
        let _ = Delivery::from_slice(&body);
    }

    #[test]
    fn delivery_parsing_never_panics_on_json_shaped_input(body in r#"\{("[a-zA-Z]{1,12}":(null|true|[0-9.e-]{1,8}|"[^"\\]{0,12}"|\[\]|\{\}),?){0,6}\}"#) {
        if let Ok(delivery) = Delivery::from_slice(body.as_bytes()) {
            let _ = delivery.timestamp();
            let _ = delivery.entity_refs().count();
        }
    }
}
