//! Every refusal the service answers with: the core's protocol [`Rejection`]s and the ones only
//! the transport can decide. Their responses are made here and nowhere else, each with a fixed
//! short body that reflects nothing of the request.

use bytes::Bytes;
use http::StatusCode;
use preservica_webhook_core::{Rejection, Reply};

/// Why the service refuses a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The core's receiver refused it (404, 405, 400, 401).
    Protocol(Rejection),
    /// A body over the size limit (413), found while reading.
    TooLarge,
    /// A body that did not arrive in time (408).
    Timeout,
    /// A request the HTTP layer could not read (400).
    Malformed,
    /// An authentic delivery that could not be stored (503): the inbox has failed or closed.
    /// Preservica gets no 200, so nothing is acknowledged that was not kept.
    Unavailable,
}

impl Refusal {
    /// The HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Refusal::Protocol(rejection) => rejection.status(),
            Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Timeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::Malformed => StatusCode::BAD_REQUEST,
            Refusal::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short stable name for metrics and logs (`bad_signature`, `too_large`, …).
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Refusal::Protocol(rejection) => rejection.reason(),
            Refusal::TooLarge => "too_large",
            Refusal::Timeout => "timeout",
            Refusal::Malformed => "malformed",
            Refusal::Unavailable => "inbox_unavailable",
        }
    }

    /// The fixed body sent with the status. It never reflects any input.
    pub(crate) fn body(&self) -> &'static str {
        match self {
            Refusal::Protocol(rejection) => rejection.body(),
            Refusal::TooLarge => "body too large\n",
            Refusal::Timeout => "request timeout\n",
            Refusal::Malformed => "bad request\n",
            Refusal::Unavailable => "inbox unavailable\n",
        }
    }

    /// Whether the connection is closed after the answer: the request's bytes cannot be
    /// trusted to end where the next request starts.
    pub(crate) fn closes_connection(&self) -> bool {
        matches!(
            self,
            Refusal::TooLarge | Refusal::Timeout | Refusal::Malformed
        )
    }

    /// The response to send.
    pub(crate) fn reply(&self) -> Reply {
        match self {
            Refusal::Protocol(rejection) => rejection.reply(),
            _ => Reply {
                status: self.status(),
                content_type: TEXT_PLAIN,
                body: Bytes::from_static(self.body().as_bytes()),
                allow: None,
            },
        }
    }
}

impl From<Rejection> for Refusal {
    fn from(rejection: Rejection) -> Refusal {
        Refusal::Protocol(rejection)
    }
}

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

#[cfg(test)]
mod tests {
    use preservica_webhook_core::{ChallengeError, VerifyError};

    use super::*;

    /// The bodies refusals may carry, and the longest one.
    const REFUSAL_BODIES: [&str; 9] = [
        "not found\n",
        "method not allowed\n",
        "challenge refused\n",
        "signature required\n",
        "signature invalid\n",
        "body too large\n",
        "request timeout\n",
        "bad request\n",
        "inbox unavailable\n",
    ];
    const MAX_REFUSAL_BODY: usize = 24;

    #[test]
    fn every_refusal_has_a_fixed_short_body() {
        let refusals = [
            Refusal::Protocol(Rejection::NotFound),
            Refusal::Protocol(Rejection::MethodNotAllowed),
            Refusal::Protocol(Rejection::BadChallenge(ChallengeError::TooLong {
                len: 100_000,
            })),
            Refusal::Protocol(Rejection::Signature(VerifyError::WrongLength {
                digits: 123_456,
            })),
            Refusal::TooLarge,
            Refusal::Timeout,
            Refusal::Malformed,
            Refusal::Unavailable,
        ];
        for refusal in refusals {
            let reply = refusal.reply();
            let body = std::str::from_utf8(&reply.body).unwrap();
            assert!(REFUSAL_BODIES.contains(&body), "{refusal:?}: {body:?}");
            assert!(body.len() <= MAX_REFUSAL_BODY);
            assert!(!body.contains("123456") && !body.contains("100000"));
            assert_eq!(body, refusal.body());
            assert_eq!(reply.status, refusal.status());
            assert_eq!(reply.content_type, "text/plain; charset=utf-8");
            assert_eq!(
                reply.allow.is_some(),
                refusal == Refusal::Protocol(Rejection::MethodNotAllowed)
            );
        }
    }

    #[test]
    fn transport_refusals_keep_their_statuses_reasons_and_bodies() {
        let check = |refusal: Refusal, status: u16, reason: &str, body: &str, closes: bool| {
            assert_eq!(refusal.status().as_u16(), status, "{refusal:?}");
            assert_eq!(refusal.reason(), reason, "{refusal:?}");
            assert_eq!(
                refusal.reply().body.as_ref(),
                body.as_bytes(),
                "{refusal:?}"
            );
            assert_eq!(refusal.closes_connection(), closes, "{refusal:?}");
        };
        check(
            Refusal::TooLarge,
            413,
            "too_large",
            "body too large\n",
            true,
        );
        check(Refusal::Timeout, 408, "timeout", "request timeout\n", true);
        check(Refusal::Malformed, 400, "malformed", "bad request\n", true);
        check(
            Refusal::Unavailable,
            503,
            "inbox_unavailable",
            "inbox unavailable\n",
            false,
        );
        check(
            Refusal::Protocol(Rejection::Signature(VerifyError::NoMatch)),
            401,
            "bad_signature",
            "signature invalid\n",
            false,
        );
    }
}
