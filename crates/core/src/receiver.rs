//! The receiver's decisions, as data.
//!
//! A request comes in as method, URI, headers and body bytes; what to do comes back as a
//! [`Decision`]: answer a challenge with these bytes, accept this verified delivery, or refuse
//! with this status. The server crate only moves bytes around it.
//!
//! Deciding happens in two steps so a server need not read a body it will refuse:
//! [`Receiver::decide_head`] looks at the request line and headers and either answers at once
//! or asks for the body, and [`Receiver::decide_body`] verifies the body. [`Receiver::decide`]
//! does both.
//!
//! ```
//! use bytes::Bytes;
//! use http::{HeaderMap, Method, StatusCode, Uri};
//! use preservica_webhook_core::{sign, Decision, Receiver, Secret};
//!
//! let secret = Secret::new("my_shared_secret").unwrap();
//! let receiver = Receiver::new([secret.clone()]).unwrap();
//! let body = Bytes::from_static(br#"{"trigger":"MOVED","events":[]}"#);
//! let mut headers = HeaderMap::new();
//! headers.insert("preservica-signature", sign(&secret, &body).to_hex().parse().unwrap());
//!
//! let decision = receiver.decide(&Method::POST, &Uri::from_static("/"), &headers, body);
//! assert!(matches!(decision, Decision::Accept(_)));
//!
//! let forged = receiver.decide(
//!     &Method::GET,
//!     &Uri::from_static("/?challengeCode=preservica-webhook-auth%7B%7D"),
//!     &HeaderMap::new(),
//!     Bytes::new(),
//! );
//! assert_eq!(forged.reply().status, StatusCode::BAD_REQUEST);
//! ```

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri};

use crate::challenge::{CHALLENGE_PARAMETER, ChallengeError, challenge_response};
use crate::model::{DecodeError, Delivery, DeliveryKey};
use crate::signing::{SIGNATURE_HEADER, Secret, Signature, VerifyError, verify_signature};

/// Decides what to do with each request to the webhook path.
#[derive(Debug, Clone)]
pub struct Receiver {
    secrets: Vec<Secret>,
    path: String,
}

/// Why a [`Receiver`] cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiverError {
    /// No secret was given: no delivery could ever be verified.
    #[error("no webhook secret configured; a receiver needs at least one to verify deliveries")]
    NoSecret,
    /// The webhook path does not start with `/`.
    #[error("the webhook path {0:?} must start with '/'")]
    BadPath(String),
}

/// What to do with a request.
#[derive(Debug)]
#[non_exhaustive]
pub enum Decision {
    /// Answer Preservica's handshake with [`Decision::reply`].
    Challenge(ChallengeReply),
    /// An authentic delivery: store it, then answer 200.
    Accept(VerifiedDelivery),
    /// Refuse the request.
    Reject(Rejection),
}

/// The answer to an accepted challenge.
#[derive(Debug, Clone)]
pub struct ChallengeReply {
    code: String,
    body: Bytes,
}

impl ChallengeReply {
    /// The challenge code as received (percent-decoded).
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The JSON answer.
    pub fn body(&self) -> &Bytes {
        &self.body
    }
}

/// A delivery whose signature matched one of the receiver's secrets.
///
/// It keeps the exact bytes received. When an authentic body is not a valid delivery, the
/// parse error is kept beside the bytes: authentic data is never dropped.
#[derive(Debug)]
pub struct VerifiedDelivery {
    body: Bytes,
    key: DeliveryKey,
    parsed: Result<Delivery, DecodeError>,
    secret_index: usize,
}

impl VerifiedDelivery {
    /// The raw body exactly as received and verified.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The redelivery key: SHA-256 of the body.
    pub fn key(&self) -> DeliveryKey {
        self.key
    }

    /// The parsed delivery, or why the authentic body is not one.
    ///
    /// # Errors
    /// The [`DecodeError`] when the body is not valid delivery JSON.
    pub fn delivery(&self) -> Result<&Delivery, &DecodeError> {
        self.parsed.as_ref()
    }

    /// Which of the receiver's secrets signed it (its index, in the order given).
    pub fn secret_index(&self) -> usize {
        self.secret_index
    }

    /// Takes the parts apart.
    pub fn into_parts(self) -> (Bytes, DeliveryKey, Result<Delivery, DecodeError>) {
        (self.body, self.key, self.parsed)
    }
}

/// Why the protocol refuses a request. The server turns it into a response through
/// [`Rejection::reply`], so every refusal has one fixed short body.
///
/// Only the protocol's own refusals are here. What the transport alone can decide (a body over
/// the size limit, a body that does not arrive in time, a request the HTTP layer cannot read,
/// an inbox that cannot store) belongs to the server that moves the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// Not the webhook path (404).
    NotFound,
    /// A method the webhook does not take (405).
    MethodNotAllowed,
    /// A challenge code that is not answered (400).
    BadChallenge(ChallengeError),
    /// A delivery without a valid signature (401).
    Signature(VerifyError),
}

impl Rejection {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::NotFound => StatusCode::NOT_FOUND,
            Rejection::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Rejection::BadChallenge(_) => StatusCode::BAD_REQUEST,
            Rejection::Signature(_) => StatusCode::UNAUTHORIZED,
        }
    }

    /// A short stable name for metrics and logs (`bad_signature`, `oracle_code`, …).
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::NotFound => "not_found",
            Rejection::MethodNotAllowed => "method_not_allowed",
            Rejection::BadChallenge(err) => err.reason(),
            Rejection::Signature(err) => err.reason(),
        }
    }

    /// The fixed body sent with the status. It never reflects any input.
    pub fn body(&self) -> &'static str {
        match self {
            Rejection::NotFound => "not found\n",
            Rejection::MethodNotAllowed => "method not allowed\n",
            Rejection::BadChallenge(_) => "challenge refused\n",
            Rejection::Signature(VerifyError::Missing) => "signature required\n",
            Rejection::Signature(_) => "signature invalid\n",
        }
    }

    /// The response to send.
    pub fn reply(&self) -> Reply {
        Reply {
            status: self.status(),
            content_type: TEXT_PLAIN,
            body: Bytes::from_static(self.body().as_bytes()),
            allow: matches!(self, Rejection::MethodNotAllowed).then_some("GET, POST"),
        }
    }
}

/// A response, as data: status, content type, body, and an `Allow` header for 405.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Bytes,
    /// The `Allow` header's value, if one is to be sent.
    pub allow: Option<&'static str>,
}

impl Reply {
    /// The answer to a delivery once it is safely stored (or was stored before).
    pub fn accepted() -> Reply {
        Reply {
            status: StatusCode::OK,
            content_type: TEXT_PLAIN,
            body: Bytes::from_static(b"ok\n"),
            allow: None,
        }
    }
}

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
const APPLICATION_JSON: &str = "application/json";

/// The outcome of looking at a request's head.
#[derive(Debug)]
#[non_exhaustive]
pub enum Head {
    /// Answer the handshake now; the body is not needed.
    Challenge(ChallengeReply),
    /// Refuse now; the body is not needed.
    Reject(Rejection),
    /// A signed delivery: read the body (within the size limit), then call
    /// [`Receiver::decide_body`].
    ReadBody(SignedRequest),
}

/// A delivery request whose signature header parsed; its body is yet to be verified.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest {
    signature: Signature,
}

impl SignedRequest {
    /// The signature the request carries (not yet checked against a body).
    pub fn signature(&self) -> Signature {
        self.signature
    }
}

impl Decision {
    /// The response to send. For [`Decision::Accept`] it is the 200 to send once the delivery
    /// is stored.
    pub fn reply(&self) -> Reply {
        match self {
            Decision::Challenge(answer) => Reply {
                status: StatusCode::OK,
                content_type: APPLICATION_JSON,
                body: answer.body.clone(),
                allow: None,
            },
            Decision::Accept(_) => Reply::accepted(),
            Decision::Reject(rejection) => rejection.reply(),
        }
    }
}

impl Receiver {
    /// A receiver on path `/` that accepts deliveries signed with any of `secrets`.
    ///
    /// # Errors
    /// [`ReceiverError::NoSecret`] when `secrets` is empty.
    pub fn new(secrets: impl IntoIterator<Item = Secret>) -> Result<Receiver, ReceiverError> {
        let secrets: Vec<Secret> = secrets.into_iter().collect();
        if secrets.is_empty() {
            return Err(ReceiverError::NoSecret);
        }
        Ok(Receiver {
            secrets,
            path: "/".to_owned(),
        })
    }

    /// Serves the webhook on `path` instead of `/`.
    ///
    /// # Errors
    /// [`ReceiverError::BadPath`] when `path` does not start with `/`.
    pub fn with_path(mut self, path: &str) -> Result<Receiver, ReceiverError> {
        if !path.starts_with('/') {
            return Err(ReceiverError::BadPath(path.to_owned()));
        }
        self.path = path.to_owned();
        Ok(self)
    }

    /// The webhook path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The secrets, in the order given.
    pub fn secrets(&self) -> &[Secret] {
        &self.secrets
    }

    /// Whether a request is for the webhook path (so a server can route other paths itself).
    pub fn is_webhook_path(&self, uri: &Uri) -> bool {
        uri.path() == self.path
    }

    /// Decides from the request line and headers alone: answers challenges and refusals at
    /// once, and asks for the body of a delivery whose signature header parses.
    pub fn decide_head(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Head {
        if !self.is_webhook_path(uri) {
            return reject(Rejection::NotFound);
        }
        let is_get_or_post = method == Method::GET || method == Method::POST;
        if !is_get_or_post {
            return reject(Rejection::MethodNotAllowed);
        }
        if let Some(code) = challenge_code(uri.query()) {
            let answered = code.and_then(|code| {
                let body = challenge_response(&self.secrets[0], &code)?;
                Ok(ChallengeReply {
                    code,
                    body: Bytes::from(body),
                })
            });
            return match answered {
                Ok(reply) => Head::Challenge(reply),
                Err(err) => Head::Reject(Rejection::BadChallenge(err)),
            };
        }
        if method != Method::POST {
            return reject(Rejection::MethodNotAllowed);
        }
        let header = match headers.get(SIGNATURE_HEADER).map(|value| value.to_str()) {
            None => Err(VerifyError::Missing),
            Some(Err(_)) => Err(VerifyError::NotHex),
            Some(Ok(text)) => Signature::parse(text),
        };
        match header {
            Ok(signature) => Head::ReadBody(SignedRequest { signature }),
            Err(err) => Head::Reject(Rejection::Signature(err)),
        }
    }

    /// Verifies a signed delivery's complete body: accepts it (parsed, or kept raw with the
    /// parse error when authentic but not valid JSON) or refuses it with 401.
    ///
    /// # Errors
    /// [`Rejection::Signature`] when no secret signed exactly these bytes.
    pub fn decide_body(
        &self,
        request: SignedRequest,
        body: Bytes,
    ) -> Result<VerifiedDelivery, Rejection> {
        let secret_index = verify_signature(&self.secrets, &body, &request.signature)
            .map_err(Rejection::Signature)?;
        Ok(VerifiedDelivery {
            key: DeliveryKey::of(&body),
            parsed: Delivery::from_slice(&body),
            body,
            secret_index,
        })
    }

    /// Decides what to do with a complete request.
    pub fn decide(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: Bytes) -> Decision {
        match self.decide_head(method, uri, headers) {
            Head::Challenge(reply) => Decision::Challenge(reply),
            Head::Reject(rejection) => Decision::Reject(rejection),
            Head::ReadBody(request) => match self.decide_body(request, body) {
                Ok(verified) => Decision::Accept(verified),
                Err(rejection) => Decision::Reject(rejection),
            },
        }
    }
}

fn reject(rejection: Rejection) -> Head {
    Head::Reject(rejection)
}

/// Finds `challengeCode` in a query string: `None` when absent, otherwise the percent-decoded
/// value (`+` is a space) or why it cannot be answered.
fn challenge_code(query: Option<&str>) -> Option<Result<String, ChallengeError>> {
    let mut found: Option<Result<String, ChallengeError>> = None;
    for pair in query?.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if decode_component(name).as_deref() != Ok(CHALLENGE_PARAMETER) {
            continue;
        }
        if found.is_some() {
            return Some(Err(ChallengeError::Repeated));
        }
        found = Some(decode_component(value));
    }
    found
}

fn decode_component(raw: &str) -> Result<String, ChallengeError> {
    let spaced = raw.replace('+', " ");
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(&spaced).collect();
    String::from_utf8(bytes).map_err(|_| ChallengeError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::challenge::{AnswerError, check_challenge_answer};
    use crate::signing::sign;

    fn secret() -> Secret {
        Secret::new("my_shared_secret").unwrap()
    }

    fn receiver() -> Receiver {
        Receiver::new([secret()]).unwrap()
    }

    fn signed(body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "Preservica-Signature",
            sign(&secret(), body).to_hex().parse().unwrap(),
        );
        headers
    }

    fn decide(method: Method, uri: &str, headers: &HeaderMap, body: &[u8]) -> Decision {
        receiver().decide(
            &method,
            &uri.parse().unwrap(),
            headers,
            Bytes::copy_from_slice(body),
        )
    }

    fn check_status(decision: &Decision, status: StatusCode, reason: &str) {
        assert_eq!(decision.reply().status, status, "{decision:?}");
        match decision {
            Decision::Reject(rejection) => assert_eq!(rejection.reason(), reason),
            other => assert_eq!("accepted", reason, "{other:?}"),
        }
    }

    #[test]
    fn answers_challenges_on_get_and_post_with_decoded_code() {
        for method in [Method::GET, Method::POST] {
            let decision = decide(
                method,
                "/?challengeCode=a%2Bb+c%2Fd%3De",
                &HeaderMap::new(),
                b"ignored",
            );
            let Decision::Challenge(reply) = &decision else {
                panic!("expected a challenge answer, got {decision:?}");
            };
            assert_eq!(reply.code(), "a+b c/d=e");
            assert_eq!(decision.reply().content_type, "application/json");
            assert_eq!(
                check_challenge_answer(&secret(), "a+b c/d=e", reply.body()),
                Ok(())
            );
        }
    }

    #[test]
    fn challenge_answer_uses_the_first_secret() {
        let receiver = Receiver::new([secret(), Secret::new("older").unwrap()]).unwrap();
        let decision = receiver.decide(
            &Method::POST,
            &"/?challengeCode=abc".parse().unwrap(),
            &HeaderMap::new(),
            Bytes::new(),
        );
        let body = decision.reply().body;
        assert_eq!(check_challenge_answer(&secret(), "abc", &body), Ok(()));
        assert_eq!(
            check_challenge_answer(&Secret::new("older").unwrap(), "abc", &body),
            Err(AnswerError::WrongHmac)
        );
    }

    #[test]
    fn refuses_bad_challenges_with_fixed_body() {
        let cases = [
            (
                "/?challengeCode=preservica-webhook-auth%7B%7D",
                "oracle_code",
            ),
            ("/?challengeCode=preservica-webhook-auth", "oracle_code"),
            ("/?challengeCode=", "empty_code"),
            ("/?challengeCode", "empty_code"),
            ("/?challengeCode=a%0Ab", "control_character"),
            ("/?challengeCode=%FF", "not_utf8"),
            ("/?challengeCode=a&challengeCode=b", "repeated_code"),
        ];
        for (uri, reason) in cases {
            let decision = decide(Method::GET, uri, &HeaderMap::new(), b"");
            check_status(&decision, StatusCode::BAD_REQUEST, reason);
            assert_eq!(decision.reply().body.as_ref(), b"challenge refused\n");
        }
        let long = format!("/?challengeCode={}", "a".repeat(513));
        check_status(
            &decide(Method::GET, &long, &HeaderMap::new(), b""),
            StatusCode::BAD_REQUEST,
            "code_too_long",
        );
    }

    #[test]
    fn accepts_signed_deliveries_and_keeps_authentic_non_json() {
        let body = br#"{"trigger":"MOVED","events":[{"entityRef":"a"},{"entityRef":"b"}]}"#;
        let decision = decide(Method::POST, "/", &signed(body), body);
        let Decision::Accept(delivery) = decision else {
            panic!("expected acceptance, got {decision:?}");
        };
        assert_eq!(delivery.body().as_ref(), body);
        assert_eq!(delivery.key(), DeliveryKey::of(body));
        let parsed = delivery.delivery().unwrap();
        assert_eq!(parsed.entity_refs().collect::<Vec<_>>(), ["a", "b"]);

        let garbage = b"\x00not json";
        let Decision::Accept(delivery) = decide(Method::POST, "/", &signed(garbage), garbage)
        else {
            panic!("authentic non-JSON must be accepted for storage");
        };
        assert!(delivery.delivery().is_err());
        assert_eq!(delivery.body().as_ref(), garbage);
    }

    #[test]
    fn refuses_unsigned_tampered_and_misrouted_requests() {
        let body = br#"{"events":[]}"#;
        check_status(
            &decide(Method::POST, "/", &HeaderMap::new(), body),
            StatusCode::UNAUTHORIZED,
            "missing_signature",
        );
        check_status(
            &decide(Method::POST, "/", &signed(body), br#"{"events":[1]}"#),
            StatusCode::UNAUTHORIZED,
            "bad_signature",
        );
        let mut not_hex = HeaderMap::new();
        not_hex.insert("preservica-signature", "zz".parse().unwrap());
        check_status(
            &decide(Method::POST, "/", &not_hex, body),
            StatusCode::UNAUTHORIZED,
            "malformed_signature",
        );
        let mut empty = HeaderMap::new();
        empty.insert("preservica-signature", "".parse().unwrap());
        check_status(
            &decide(Method::POST, "/", &empty, body),
            StatusCode::UNAUTHORIZED,
            "missing_signature",
        );
        check_status(
            &decide(Method::POST, "/other", &signed(body), body),
            StatusCode::NOT_FOUND,
            "not_found",
        );
        let put = decide(Method::PUT, "/", &signed(body), body);
        check_status(&put, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        assert_eq!(put.reply().allow, Some("GET, POST"));
        check_status(
            &decide(Method::GET, "/", &signed(body), body),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        );
    }

    #[test]
    fn serves_a_configured_path_only() {
        let hooked = receiver().with_path("/hooks/preservica").unwrap();
        let body = b"{}";
        let decision = hooked.decide(
            &Method::POST,
            &"/hooks/preservica".parse().unwrap(),
            &signed(body),
            Bytes::from_static(body),
        );
        assert!(matches!(decision, Decision::Accept(_)));
        assert_eq!(
            receiver().with_path("hooks").unwrap_err(),
            ReceiverError::BadPath("hooks".to_owned())
        );
        assert_eq!(
            Receiver::new(Vec::new()).unwrap_err(),
            ReceiverError::NoSecret
        );
    }
}
