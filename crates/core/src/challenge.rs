//! The handshake Preservica performs when a subscription is created.
//!
//! Preservica sends the subscription URL a request with a `challengeCode` query parameter; the
//! receiver proves it holds the secret by answering
//! `{"challengeCode": code, "challengeResponse": hex(HMAC-SHA256(secret, code))}`.
//!
//! # The signing oracle
//! A delivery signature is `HMAC(secret, "preservica-webhook-auth" ‖ body)`, so a receiver that
//! answers any code hands out a valid signature for any body to whoever sends
//! `challengeCode=preservica-webhook-auth<body>`. [`challenge_response`] refuses such codes,
//! which makes the two message spaces disjoint. It also refuses empty and over-long codes and
//! codes with control characters, which Preservica's random codes never are.

use hmac::Mac;
use serde::{Deserialize, Serialize};

use crate::signing::{SIGNATURE_PREFIX, Secret};

/// The longest challenge code answered, in bytes. Preservica's codes are 32 hex digits.
pub const MAX_CHALLENGE_CODE_LEN: usize = 512;

/// The query parameter that carries the challenge code.
pub const CHALLENGE_PARAMETER: &str = "challengeCode";

/// Why a challenge code is not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChallengeError {
    /// The code begins with the delivery-signature prefix: answering would sign a forged body.
    #[error(
        "challenge code begins with the delivery-signature prefix; answering it would forge a signature"
    )]
    Oracle,
    /// The code is longer than [`MAX_CHALLENGE_CODE_LEN`] bytes.
    #[error("challenge code is {len} bytes long; at most {MAX_CHALLENGE_CODE_LEN} are answered")]
    TooLong {
        /// The code's length in bytes.
        len: usize,
    },
    /// The code contains a control character.
    #[error("challenge code contains a control character")]
    ControlCharacter,
    /// The code is empty.
    #[error("challenge code is empty")]
    Empty,
    /// The query value is not valid percent-encoded UTF-8.
    #[error("challenge code is not valid percent-encoded UTF-8")]
    NotUtf8,
    /// The query names `challengeCode` more than once.
    #[error("the query names challengeCode more than once")]
    Repeated,
}

impl ChallengeError {
    /// A short stable name for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            ChallengeError::Oracle => "oracle_code",
            ChallengeError::TooLong { .. } => "code_too_long",
            ChallengeError::ControlCharacter => "control_character",
            ChallengeError::Empty => "empty_code",
            ChallengeError::NotUtf8 => "not_utf8",
            ChallengeError::Repeated => "repeated_code",
        }
    }
}

/// The JSON a receiver answers a challenge with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeAnswer {
    /// The code exactly as received (percent-decoded).
    #[serde(rename = "challengeCode")]
    pub challenge_code: String,
    /// Lowercase hex of `HMAC-SHA256(secret, code)`.
    #[serde(rename = "challengeResponse")]
    pub challenge_response: String,
}

/// Checks that a code may be answered; see the module documentation for what is refused.
///
/// # Errors
/// A [`ChallengeError`] saying why the code is refused.
pub fn check_challenge_code(code: &str) -> Result<(), ChallengeError> {
    if code.is_empty() {
        return Err(ChallengeError::Empty);
    }
    if code.len() > MAX_CHALLENGE_CODE_LEN {
        return Err(ChallengeError::TooLong { len: code.len() });
    }
    if code.starts_with(SIGNATURE_PREFIX) {
        return Err(ChallengeError::Oracle);
    }
    if code.chars().any(char::is_control) {
        return Err(ChallengeError::ControlCharacter);
    }
    Ok(())
}

/// Lowercase hex of `HMAC-SHA256(secret, code)`, without any check on the code: the signing
/// oracle itself.
///
/// Receivers must not use it. Given `code = "preservica-webhook-auth" ‖ body` it returns a valid
/// delivery signature for `body`, so a receiver that answers challenges with it signs whatever
/// a stranger asks for (`SECURITY.md` tells the whole story). A receiver answers through
/// [`challenge_response`], which refuses such codes. This is for the sending side only:
/// computing what Preservica expects back when testing a receiver, and test tools.
pub fn insecure_challenge_hmac(secret: &Secret, code: &str) -> String {
    let mut mac = secret.keyed_mac();
    mac.update(code.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The answer to a challenge: the JSON bytes to send with `Content-Type: application/json`.
///
/// ```
/// use preservica_webhook_core::{challenge_response, Secret};
///
/// let secret = Secret::new("my_shared_secret").unwrap();
/// let body = challenge_response(&secret, "c306c99ca3a736124fa711bec53c737d").unwrap();
/// assert!(body.starts_with(br#"{"challengeCode":"c306c99ca3a736124fa711bec53c737d","#));
/// assert!(challenge_response(&secret, "preservica-webhook-auth{}").is_err());
/// ```
///
/// # Errors
/// A [`ChallengeError`] for codes that must not be answered.
pub fn challenge_response(secret: &Secret, code: &str) -> Result<Vec<u8>, ChallengeError> {
    check_challenge_code(code)?;
    let answer = ChallengeAnswer {
        challenge_code: code.to_owned(),
        challenge_response: insecure_challenge_hmac(secret, code),
    };
    Ok(serde_json::to_vec(&answer).expect("a struct of two strings serializes"))
}

/// What is wrong with a receiver's answer to a challenge, as Preservica would judge it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    /// The answer is not the expected JSON object.
    #[error("the answer is not JSON with challengeCode and challengeResponse strings ({detail})")]
    NotJson {
        /// What the JSON parser said.
        detail: String,
    },
    /// The answer does not echo the code that was sent.
    #[error("the answer echoes challengeCode {echoed:?}, not the code that was sent")]
    CodeNotEchoed {
        /// The code the receiver sent back.
        echoed: String,
    },
    /// The HMAC is wrong: the receiver holds a different secret (or computes it differently).
    #[error(
        "the challengeResponse is not HMAC-SHA256(secret, code): the receiver's secret differs from this one"
    )]
    WrongHmac,
}

/// Checks a receiver's answer the way Preservica does: the code echoed and the HMAC right.
/// The hex of the HMAC is compared case-insensitively.
///
/// # Errors
/// An [`AnswerError`] that says precisely what is wrong.
pub fn check_challenge_answer(
    secret: &Secret,
    code: &str,
    answer: &[u8],
) -> Result<(), AnswerError> {
    let parsed: ChallengeAnswer =
        serde_json::from_slice(answer).map_err(|err| AnswerError::NotJson {
            detail: err.to_string(),
        })?;
    if parsed.challenge_code != code {
        return Err(AnswerError::CodeNotEchoed {
            echoed: parsed.challenge_code,
        });
    }
    let mut given = [0u8; 32];
    let decoded = hex::decode_to_slice(parsed.challenge_response.trim(), &mut given);
    let mut mac = secret.keyed_mac();
    mac.update(code.as_bytes());
    match decoded {
        Ok(()) if mac.verify_slice(&given).is_ok() => Ok(()),
        _ => Err(AnswerError::WrongHmac),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("my_shared_secret").unwrap()
    }

    #[test]
    fn refuses_oracle_challenge_code() {
        assert_eq!(
            challenge_response(&secret(), "preservica-webhook-auth{\"events\":[]}"),
            Err(ChallengeError::Oracle)
        );
        assert_eq!(
            challenge_response(&secret(), "preservica-webhook-auth"),
            Err(ChallengeError::Oracle)
        );
    }

    #[test]
    fn refuses_odd_codes() {
        let check = |code: &str, expected: ChallengeError| {
            assert_eq!(
                challenge_response(&secret(), code),
                Err(expected),
                "{code:?}"
            );
        };
        check("", ChallengeError::Empty);
        check(&"a".repeat(513), ChallengeError::TooLong { len: 513 });
        check("abc\ndef", ChallengeError::ControlCharacter);
        check("abc\u{7f}", ChallengeError::ControlCharacter);
        check("abc\u{85}", ChallengeError::ControlCharacter);
        assert!(challenge_response(&secret(), &"a".repeat(512)).is_ok());
    }

    #[test]
    fn answer_is_serialized_not_interpolated() {
        let code = "a\"b\\c";
        let body = challenge_response(&secret(), code).unwrap();
        let parsed: ChallengeAnswer = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed.challenge_code, code);
        assert_eq!(check_challenge_answer(&secret(), code, &body), Ok(()));
    }

    #[test]
    fn checks_answers_as_preservica_would() {
        let code = "c306c99ca3a736124fa711bec53c737d";
        let good = challenge_response(&secret(), code).unwrap();
        assert_eq!(check_challenge_answer(&secret(), code, &good), Ok(()));
        let upper = String::from_utf8(good.clone())
            .unwrap()
            .to_uppercase()
            .replace("CHALLENGECODE", "challengeCode");
        let upper = upper
            .replace("CHALLENGERESPONSE", "challengeResponse")
            .replace(&code.to_uppercase(), code);
        assert_eq!(
            check_challenge_answer(&secret(), code, upper.as_bytes()),
            Ok(())
        );

        let other = Secret::new("other").unwrap();
        assert_eq!(
            check_challenge_answer(&other, code, &good),
            Err(AnswerError::WrongHmac)
        );
        assert_eq!(
            check_challenge_answer(&secret(), "different", &good),
            Err(AnswerError::CodeNotEchoed {
                echoed: code.to_owned()
            })
        );
        assert!(matches!(
            check_challenge_answer(&secret(), code, b"ok"),
            Err(AnswerError::NotJson { .. })
        ));
    }
}
