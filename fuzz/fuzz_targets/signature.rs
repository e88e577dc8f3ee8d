//! Signature-header parsing and verification. The input's first line is the
//! `Preservica-Signature` header value, the rest is the body.
//!
//! `Signature::parse` must accept exactly 64 hex digits (either case, surrounding white space
//! ignored) and `verify` must accept exactly the bodies signed with one of the secrets.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use preservica_webhook_core::{Secret, Signature, VerifyError, sign, verify};

static SECRETS: LazyLock<[Secret; 2]> = LazyLock::new(|| {
    [
        Secret::new("my_shared_secret").expect("not empty"),
        Secret::new("another_secret").expect("not empty"),
    ]
});

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    let trimmed = header.trim();
    let well_formed = trimmed.len() == 64 && trimmed.bytes().all(|b| b.is_ascii_hexdigit());
    let parsed = Signature::parse(header);
    match &parsed {
        Ok(signature) => {
            assert!(well_formed, "{header:?} parsed");
            assert_eq!(signature.to_hex(), trimmed.to_ascii_lowercase());
            assert_eq!(
                Signature::parse(&signature.to_string()).as_ref(),
                Ok(signature)
            );
        }
        Err(VerifyError::Missing) => assert!(trimmed.is_empty()),
        Err(_) => assert!(!well_formed, "{header:?} refused"),
    }

    let verdict = verify(&SECRETS[..], body, Some(header));
    match parsed {
        Ok(signature) => {
            let signer = SECRETS
                .iter()
                .position(|secret| sign(secret, body) == signature);
            assert_eq!(verdict, signer.ok_or(VerifyError::NoMatch));
        }
        Err(err) => assert_eq!(verdict, Err(err)),
    }
});
