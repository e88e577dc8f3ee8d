//! Sending requests to Preservica: where an endpoint is, when a failed request is sent again,
//! and how much of an answer is read. It knows nothing of logins or tokens; the modules above
//! it (`auth`, `client`) do.

use std::time::SystemTime;

use futures_util::StreamExt;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::Value;
use url::Url;

use crate::error::Error;
use crate::retry::{self, RetryPolicy};

/// The header every management API call carries the access token in.
pub(crate) const TOKEN_HEADER: &str = "Preservica-Access-Token";

/// The largest JSON or XML answer read (a login answer, a subscription list, an entity): a
/// server that sends more is refused instead of filling memory.
const MAX_ANSWER_BODY: usize = 16 * 1024 * 1024;

/// Whether a request may be sent again after a failure.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repeat {
    /// Repeating does no harm (GET, DELETE, login): retry transport errors and 502/503/504.
    Safe,
    /// Retry only when the request provably never left (the connection was not made).
    ConnectOnly,
}

/// The HTTP client, the server's base URL and the retry policy: everything a request needs
/// before it is authenticated.
pub(crate) struct Transport {
    http: reqwest::Client,
    base: Url,
    retry: RetryPolicy,
}

impl Transport {
    pub(crate) fn new(http: reqwest::Client, base: Url, retry: RetryPolicy) -> Transport {
        Transport { http, base, retry }
    }

    /// The HTTP client, to build requests with.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The server's base URL.
    pub(crate) fn base(&self) -> &Url {
        &self.base
    }

    /// The retry policy.
    pub(crate) fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The base URL with `segments` appended, each percent-encoded as one path segment.
    pub(crate) fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("the base URL was checked to take paths")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// Sends a request, retrying as `repeat` and the retry policy allow.
    pub(crate) async fn send(
        &self,
        operation: &'static str,
        repeat: Repeat,
        request: impl Fn() -> RequestBuilder,
    ) -> Result<Response, Error> {
        let mut retry = 0;
        loop {
            let can_retry = retry < self.retry.max_retries;
            let wait = match request().send().await {
                Ok(response) => {
                    let transient = retry::is_transient(response.status());
                    if !(can_retry && transient && repeat == Repeat::Safe) {
                        return Ok(response);
                    }
                    match retry::retry_after(response.headers(), SystemTime::now()) {
                        Some(wait) if wait > RetryPolicy::MAX_RETRY_AFTER => return Ok(response),
                        Some(wait) => wait,
                        None => self.retry.jittered_delay(retry, &mut rand::rng()),
                    }
                }
                Err(source) => {
                    if !(can_retry && may_resend(repeat, &source)) {
                        return Err(Error::Transport { operation, source });
                    }
                    self.retry.jittered_delay(retry, &mut rand::rng())
                }
            };
            tracing::debug!(operation, retry, ?wait, "retrying");
            tokio::time::sleep(wait).await;
            retry += 1;
        }
    }
}

/// Whether a request that failed without an answer may be sent again: a safe one after any
/// transport failure, any other only when the connection was never made.
pub(crate) fn may_resend(repeat: Repeat, error: &reqwest::Error) -> bool {
    let never_sent = error.is_connect();
    match repeat {
        Repeat::Safe => never_sent || error.is_timeout() || error.is_request(),
        Repeat::ConnectOnly => never_sent,
    }
}

/// The message of a refused answer: its JSON `message` (or `error`), else the start of the
/// body, else the status's reason.
pub(crate) fn message_of(status: StatusCode, body: &[u8]) -> String {
    if let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) {
        let message = ["message", "error", "errorMessage", "detail"]
            .iter()
            .find_map(|key| fields.get(*key).and_then(Value::as_str));
        if let Some(message) = message {
            return message.to_owned();
        }
    }
    let text = String::from_utf8_lossy(body);
    let line = text.lines().map(str::trim).find(|it| !it.is_empty());
    match line {
        Some(line) => line.chars().take(300).collect(),
        None => status.canonical_reason().unwrap_or("no message").to_owned(),
    }
}

/// Reads a whole answer of at most [`MAX_ANSWER_BODY`] bytes.
pub(crate) async fn read_body(
    operation: &'static str,
    what: &'static str,
    response: Response,
) -> Result<Vec<u8>, Error> {
    let too_large = || Error::Decode {
        what,
        detail: format!(
            "the answer is larger than {} MiB, more than any answer Preservica sends",
            MAX_ANSWER_BODY / (1024 * 1024)
        ),
    };
    let announced = response.content_length().unwrap_or(0);
    if usize::try_from(announced)
        .ok()
        .is_none_or(|len| len > MAX_ANSWER_BODY)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| Error::Transport { operation, source })?;
        if chunk.len() > MAX_ANSWER_BODY - body.len() {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `text` with every occurrence of `secret` replaced by `***`.
pub(crate) fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    text.replace(secret, "***")
}
