//! The shared secret, delivery signatures and their verification.
//!
//! Preservica signs a delivery with `HMAC-SHA256(key = secret, msg = "preservica-webhook-auth" ‖ body)`
//! and sends the lowercase hex digest in the `Preservica-Signature` header. The same secret
//! answers the handshake with `HMAC-SHA256(key = secret, msg = code)`: see [`crate::challenge`].

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The bytes Preservica puts in front of a delivery body before signing it.
pub const SIGNATURE_PREFIX: &str = "preservica-webhook-auth";

/// The header that carries a delivery's signature. Header names are case-insensitive.
pub const SIGNATURE_HEADER: &str = "preservica-signature";

type HmacSha256 = Hmac<Sha256>;

/// A webhook secret shared with Preservica.
///
/// It owns the key (the UTF-8 bytes of the string it was made from) together with the HMAC
/// states already keyed with it, so signing and verifying do not redo the key schedule. Its
/// `Debug` prints `Secret(***)`; the only way to the text is [`Secret::insecure_expose`].
#[derive(Clone)]
pub struct Secret {
    text: Box<str>,
    /// Keyed HMAC state, used for challenge answers.
    keyed: HmacSha256,
    /// Keyed HMAC state with [`SIGNATURE_PREFIX`] already absorbed, used for deliveries.
    prefixed: HmacSha256,
}

/// Why a string cannot be a [`Secret`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The string was empty: anyone could forge signatures with an empty key.
    #[error("the webhook secret is empty; give the secret shared with Preservica")]
    Empty,
}

impl Secret {
    /// Makes a secret from the string shared with Preservica (its UTF-8 bytes are the key).
    ///
    /// # Errors
    /// [`SecretError::Empty`] for an empty string.
    pub fn new(text: &str) -> Result<Secret, SecretError> {
        if text.is_empty() {
            return Err(SecretError::Empty);
        }
        let keyed = HmacSha256::new_from_slice(text.as_bytes())
            .expect("HMAC-SHA256 takes keys of any length");
        let mut prefixed = keyed.clone();
        prefixed.update(SIGNATURE_PREFIX.as_bytes());
        Ok(Secret {
            text: text.into(),
            keyed,
            prefixed,
        })
    }

    /// The secret's text, for the one place that must send it: the subscribe request.
    /// Never log or display it.
    pub fn insecure_expose(&self) -> &str {
        &self.text
    }

    pub(crate) fn keyed_mac(&self) -> HmacSha256 {
        self.keyed.clone()
    }

    fn delivery_mac(&self, body: &[u8]) -> HmacSha256 {
        let mut mac = self.prefixed.clone();
        mac.update(body);
        mac
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl FromStr for Secret {
    type Err = SecretError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Secret::new(s)
    }
}

impl PartialEq for Secret {
    /// Compares the key bytes in constant time.
    fn eq(&self, other: &Secret) -> bool {
        let mut mac = HmacSha256::new_from_slice(b"secret-equality").expect("any key length");
        mac.update(&self.text.len().to_le_bytes());
        mac.update(self.text.as_bytes());
        let ours = mac.finalize().into_bytes();
        let mut mac = HmacSha256::new_from_slice(b"secret-equality").expect("any key length");
        mac.update(&other.text.len().to_le_bytes());
        mac.update(other.text.as_bytes());
        mac.verify_slice(&ours).is_ok()
    }
}

impl Eq for Secret {}

/// A delivery signature: the 32 bytes of an HMAC-SHA256, parsed once from its hex form.
///
/// `Debug` and `Display` print the lowercase hex, as Preservica sends it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature([u8; 32]);

impl Signature {
    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, as Preservica sends it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses a header value: 64 hex digits in either case, surrounding white space ignored.
    ///
    /// # Errors
    /// [`VerifyError::Missing`] for an empty value, [`VerifyError::NotHex`] or
    /// [`VerifyError::WrongLength`] for anything that is not 32 bytes of hex.
    pub fn parse(header_value: &str) -> Result<Signature, VerifyError> {
        let value = header_value.trim();
        if value.is_empty() {
            return Err(VerifyError::Missing);
        }
        if value.len() != 64 {
            let is_hex = value.bytes().all(|b| b.is_ascii_hexdigit());
            return Err(if is_hex {
                VerifyError::WrongLength {
                    digits: value.len(),
                }
            } else {
                VerifyError::NotHex
            });
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(value, &mut bytes).map_err(|_| VerifyError::NotHex)?;
        Ok(Signature(bytes))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.to_hex())
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for Signature {
    type Err = VerifyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Signature::parse(s)
    }
}

/// Why a delivery's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// No `Preservica-Signature` header, or an empty one.
    #[error("the delivery has no Preservica-Signature header")]
    Missing,
    /// The header is not hexadecimal (or not text at all).
    #[error("the Preservica-Signature header is not hexadecimal")]
    NotHex,
    /// The header is hex of the wrong length.
    #[error("the Preservica-Signature header has {digits} hex digits; an HMAC-SHA256 has 64")]
    WrongLength {
        /// How many hex digits the header had.
        digits: usize,
    },
    /// The signature is well formed but no configured secret produces it for this body.
    #[error(
        "the signature matches no configured secret: the body was altered or the secrets differ from the subscription's"
    )]
    NoMatch,
}

impl VerifyError {
    /// A short stable name for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::Missing => "missing_signature",
            VerifyError::NotHex | VerifyError::WrongLength { .. } => "malformed_signature",
            VerifyError::NoMatch => "bad_signature",
        }
    }
}

/// Signs a delivery body as Preservica does.
///
/// ```
/// use preservica_webhook_core::{sign, Secret};
///
/// let secret = Secret::new("my_shared_secret").unwrap();
/// assert_eq!(sign(&secret, b"{}").to_hex().len(), 64);
/// ```
pub fn sign(secret: &Secret, body: &[u8]) -> Signature {
    Signature(secret.delivery_mac(body).finalize().into_bytes().into())
}

/// Verifies a delivery body against the `Preservica-Signature` header value, accepting any of
/// several secrets (so a secret can be rotated without losing deliveries).
///
/// The hex may be in either case; the digest bytes are compared in constant time. Returns the
/// index in `secrets` of the secret that matched.
///
/// # Errors
/// A [`VerifyError`] that says why: the header is missing or empty, not hex, of the wrong
/// length, or matches no secret.
pub fn verify(
    secrets: &[Secret],
    body: &[u8],
    header_value: Option<&str>,
) -> Result<usize, VerifyError> {
    let signature = Signature::parse(header_value.unwrap_or(""))?;
    verify_signature(secrets, body, &signature)
}

/// Verifies a body against an already parsed [`Signature`]; see [`verify`].
///
/// # Errors
/// [`VerifyError::NoMatch`] when no secret produces the signature.
pub fn verify_signature(
    secrets: &[Secret],
    body: &[u8],
    signature: &Signature,
) -> Result<usize, VerifyError> {
    secrets
        .iter()
        .position(|secret| secret.delivery_mac(body).verify_slice(&signature.0).is_ok())
        .ok_or(VerifyError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> Secret {
        Secret::new(text).unwrap()
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", secret("hunter2")), "Secret(***)");
        assert_eq!(format!("{:?}", [secret("hunter2")]), "[Secret(***)]");
    }

    #[test]
    fn refuses_empty_secret() {
        assert_eq!(Secret::new(""), Err(SecretError::Empty));
    }

    #[test]
    fn secrets_compare_by_key() {
        assert_eq!(secret("a"), secret("a"));
        assert_ne!(secret("a"), secret("b"));
        assert_ne!(secret("a"), secret("aa"));
    }

    #[test]
    fn says_why_a_signature_header_is_refused() {
        let secrets = [secret("s")];
        let check = |header: Option<&str>, expected: VerifyError| {
            assert_eq!(
                verify(&secrets, b"body", header),
                Err(expected),
                "{header:?}"
            );
        };
        check(None, VerifyError::Missing);
        check(Some(""), VerifyError::Missing);
        check(Some("   "), VerifyError::Missing);
        check(Some("xyz"), VerifyError::NotHex);
        check(Some("abc"), VerifyError::WrongLength { digits: 3 });
        check(
            Some(&"ab".repeat(33)),
            VerifyError::WrongLength { digits: 66 },
        );
        check(Some(&"00".repeat(32)), VerifyError::NoMatch);
    }

    #[test]
    fn accepts_any_of_several_secrets_and_says_which() {
        let old = secret("old");
        let new = secret("new");
        let body = b"{\"events\":[]}";
        let signature = sign(&old, body).to_hex();
        assert_eq!(
            verify(&[new.clone(), old.clone()], body, Some(&signature)),
            Ok(1)
        );
        assert_eq!(verify(&[old, new.clone()], body, Some(&signature)), Ok(0));
        assert_eq!(
            verify(&[new], body, Some(&signature)),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn signature_renders_lowercase_hex() {
        let signature = Signature::parse(&"AB".repeat(32)).unwrap();
        assert_eq!(signature.to_string(), "ab".repeat(32));
    }
}
