//! Shared helpers: a mock Preservica and a client pointed at it.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the helpers"
)]

use std::collections::HashMap;
use std::time::Duration;

use preservica_webhook_client::{Client, ClientBuilder, RetryPolicy};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

pub(crate) const USERNAME: &str = "alice@example.org";
pub(crate) const PASSWORD: &str = "pa55-w0rd-never-shown";
pub(crate) const TENANT: &str = "BRAMA";
pub(crate) const LOGIN: &str = "/api/accesstoken/login";
pub(crate) const REFRESH: &str = "/api/accesstoken/refresh";
pub(crate) const COMPLETE_2FA: &str = "/api/accesstoken/complete-2fa";
pub(crate) const SUBSCRIPTIONS: &str = "/api/webhook/subscriptions";
pub(crate) const USER_DETAILS: &str = "/api/user/details";

/// A retry policy fast enough for tests.
pub(crate) fn fast_retry(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    }
}

/// A builder for a client of `server`, with a tenant and fast retries.
pub(crate) fn builder(server: &MockServer) -> ClientBuilder {
    Client::builder()
        .server(&server.uri())
        .username(USERNAME)
        .password(PASSWORD)
        .tenant(TENANT)
        .timeout(Duration::from_secs(10))
        .retry(fast_retry(3))
}

pub(crate) fn client(server: &MockServer) -> Client {
    builder(server).build().unwrap()
}

/// A successful login answer.
pub(crate) fn login_answer(token: &str, valid_for_minutes: u64) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "success": true,
        "user": USERNAME,
        "token": token,
        "refresh-token": format!("refresh-{token}"),
        "validFor": valid_for_minutes,
        "tenant": TENANT,
    }))
}

/// Mounts a login that always answers with `token`, valid for 15 minutes.
pub(crate) async fn mount_login(server: &MockServer, token: &str) {
    Mock::given(method("POST"))
        .and(path(LOGIN))
        .respond_with(login_answer(token, 15))
        .mount(server)
        .await;
}

/// Mounts a login that answers `first` (valid for `valid_for` minutes) once, and `then` on
/// every later login: a session whose token is later renewed.
pub(crate) async fn mount_first_login_then(
    server: &MockServer,
    first: &str,
    valid_for: u64,
    then: &str,
) {
    Mock::given(method("POST"))
        .and(path(LOGIN))
        .respond_with(login_answer(first, valid_for))
        .up_to_n_times(1)
        .mount(server)
        .await;
    mount_login(server, then).await;
}

/// The requests the server received on `path`.
pub(crate) async fn requests_to(server: &MockServer, wanted: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|request| request.url.path() == wanted)
        .collect()
}

/// The form fields of a urlencoded request body.
pub(crate) fn form(request: &Request) -> HashMap<String, String> {
    url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect()
}

/// The value of a header, as text.
pub(crate) fn header_value<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request.headers.get(name).and_then(|it| it.to_str().ok())
}
