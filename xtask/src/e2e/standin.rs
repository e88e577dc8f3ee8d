//! The stand-in Preservica: a wiremock server that answers the management API with state kept
//! between calls, performs the subscription handshake, and delivers signed events.
//!
//! What it answers (protocol.md sections 1, 5 and 6):
//! - `POST /api/accesstoken/login` (form `username`, `password`, `tenant` checked) and
//!   `POST /api/accesstoken/refresh` (a refresh token works once);
//! - `GET /api/user/details` with the roles a subscription manager has;
//! - `POST|GET /api/webhook/subscriptions`, `DELETE /api/webhook/subscriptions/{id}`; a create
//!   first performs Preservica's handshake against the URL and only stores the subscription
//!   when the receiver's answer is right;
//! - `GET /api/entity/information-objects/{ref}` (XML) and `GET /api/content/thumbnail` (a
//!   small PNG) for the thumbnail flow.
//!
//! Every management call needs a token the stand-in handed out; every request it receives is
//! kept in its state so scenarios can assert on what the binary did.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::stream;
use preservica_webhook_core::{DeliveryKey, Secret, check_challenge_answer, sign};
use rand::Rng;
use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The account the stand-in accepts.
pub(crate) const USERNAME: &str = "e2e-archivist";
/// The password of [`USERNAME`].
pub(crate) const PASSWORD: &str = "e2e-password-not-secret";
/// The tenant of [`USERNAME`].
pub(crate) const TENANT: &str = "E2ETENANT";

/// The header every management call carries.
const TOKEN_HEADER: &str = "Preservica-Access-Token";

/// How long the stand-in waits for a receiver's answer to the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A 4×4 RGB PNG, the thumbnail of every asset.
pub(crate) const THUMBNAIL_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x04, 0x08, 0x02, 0x00, 0x00, 0x00, 0x26, 0x93, 0x09,
    0x29, 0x00, 0x00, 0x00, 0x32, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x0d, 0xc7, 0x31, 0x01, 0x00,
    0x30, 0x08, 0x03, 0x41, 0x44, 0x20, 0x22, 0x22, 0x98, 0x51, 0x12, 0x25, 0x9d, 0x23, 0xec, 0x65,
    0x95, 0xdb, 0xae, 0x68, 0xd1, 0x4b, 0x9b, 0x7e, 0xc5, 0x88, 0x59, 0xc6, 0xcc, 0xc5, 0xc2, 0x8b,
    0x8d, 0x2f, 0x11, 0x59, 0x62, 0xf2, 0x3e, 0x28, 0xfa, 0x16, 0xd1, 0x99, 0xc3, 0x66, 0xc2, 0x00,
    0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// A subscription the stand-in holds (with its secret, which the API never returns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredSubscription {
    pub(crate) id: String,
    pub(crate) url: String,
    pub(crate) trigger: String,
    pub(crate) secret: String,
    pub(crate) include_identifiers: bool,
}

impl StoredSubscription {
    /// The subscription as the API shows it: no secret.
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "url": self.url,
            "triggerType": self.trigger,
            "includeIdentifiers": self.include_identifiers,
        })
    }
}

/// One handshake the stand-in performed, and how it ended.
#[derive(Debug, Clone)]
pub(crate) struct Handshake {
    pub(crate) url: String,
    /// `Ok` when the receiver's answer was right, otherwise what was wrong with it.
    pub(crate) outcome: Result<(), String>,
}

/// How a delivery's body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transfer {
    /// `Transfer-Encoding: chunked`, as Preservica sends.
    Chunked,
    /// `Content-Length`, as a proxy may turn it into.
    Length,
}

/// One event to put in a delivery.
#[derive(Debug, Clone)]
pub(crate) struct EventSpec {
    /// `IO` (asset), `SO` (folder) or `CO`.
    pub(crate) entity_type: &'static str,
    pub(crate) entity_ref: String,
}

impl EventSpec {
    /// An asset event with a fresh reference.
    pub(crate) fn asset() -> EventSpec {
        EventSpec {
            entity_type: "IO",
            entity_ref: random_uuid(),
        }
    }

    /// A folder event with a fresh reference.
    pub(crate) fn folder() -> EventSpec {
        EventSpec {
            entity_type: "SO",
            entity_ref: random_uuid(),
        }
    }
}

/// A delivery body, its key, and the references it carries.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryBody {
    pub(crate) bytes: Vec<u8>,
    pub(crate) key: String,
    pub(crate) refs: Vec<String>,
}

/// What the stand-in has seen and holds.
#[derive(Debug, Default)]
struct State {
    tokens: HashSet<String>,
    refresh_tokens: HashSet<String>,
    logins: usize,
    failed_logins: usize,
    subscriptions: Vec<StoredSubscription>,
    handshakes: Vec<Handshake>,
    thumbnail_requests: Vec<String>,
    entity_requests: Vec<String>,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    // A panic in a responder poisons the lock; the state itself stays consistent (every
    // update is a single push or removal), so keep going and let the scenario report.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The running stand-in.
#[derive(Debug)]
pub(crate) struct StandIn {
    server: MockServer,
    state: Shared,
    http: reqwest::Client,
}

impl StandIn {
    /// Starts the stand-in on a free 127.0.0.1 port.
    pub(crate) async fn start() -> Result<StandIn> {
        let server = MockServer::builder().start().await;
        let state = Shared::default();
        let mounts = [
            Mock::given(method("POST"))
                .and(path("/api/accesstoken/login"))
                .respond_with(Login(state.clone())),
            Mock::given(method("POST"))
                .and(path("/api/accesstoken/refresh"))
                .respond_with(Refresh(state.clone())),
            Mock::given(method("GET"))
                .and(path("/api/user/details"))
                .respond_with(UserDetails(state.clone())),
            Mock::given(method("POST"))
                .and(path("/api/webhook/subscriptions"))
                .respond_with(CreateSubscription(state.clone())),
            Mock::given(method("GET"))
                .and(path("/api/webhook/subscriptions"))
                .respond_with(ListSubscriptions(state.clone())),
            Mock::given(method("DELETE"))
                .and(path_regex(r"^/api/webhook/subscriptions/[^/]+$"))
                .respond_with(DeleteSubscription(state.clone())),
            Mock::given(method("GET"))
                .and(path_regex(
                    r"^/api/entity/(information-objects|structural-objects|content-objects)/[^/]+$",
                ))
                .respond_with(Entity(state.clone())),
            Mock::given(method("GET"))
                .and(path("/api/content/thumbnail"))
                .respond_with(Thumbnail(state.clone())),
            Mock::given(method("GET"))
                .and(path("/api/entity/versiondetails/version"))
                .respond_with(ResponseTemplate::new(200).set_body_raw(
                    "<VersionDetails><CurrentVersion>7.7.0</CurrentVersion></VersionDetails>",
                    "application/xml",
                )),
        ];
        for mock in mounts {
            mock.mount(&server).await;
        }
        Ok(StandIn {
            server,
            state,
            http: http_client()?,
        })
    }

    /// The base URL, for `PRESERVICA_SERVER`.
    pub(crate) fn uri(&self) -> String {
        self.server.uri()
    }

    /// The subscriptions it holds now.
    pub(crate) fn subscriptions(&self) -> Vec<StoredSubscription> {
        lock(&self.state).subscriptions.clone()
    }

    /// The subscription with this id, if held.
    pub(crate) fn subscription(&self, id: &str) -> Option<StoredSubscription> {
        self.subscriptions().into_iter().find(|it| it.id == id)
    }

    /// Every handshake performed so far, oldest first.
    pub(crate) fn handshakes(&self) -> Vec<Handshake> {
        lock(&self.state).handshakes.clone()
    }

    /// The `id` query values of every thumbnail request, oldest first.
    pub(crate) fn thumbnail_requests(&self) -> Vec<String> {
        lock(&self.state).thumbnail_requests.clone()
    }

    /// How many logins succeeded and failed.
    pub(crate) fn logins(&self) -> (usize, usize) {
        let state = lock(&self.state);
        (state.logins, state.failed_logins)
    }

    /// Stores a subscription directly, without a handshake: what an earlier run of a receiver
    /// (or another tool) left behind. Returns its id.
    pub(crate) fn insert_subscription(&self, url: &str, trigger: &str, secret: &str) -> String {
        let subscription = StoredSubscription {
            id: random_hex(),
            url: url.to_owned(),
            trigger: trigger.to_owned(),
            secret: secret.to_owned(),
            include_identifiers: true,
        };
        let id = subscription.id.clone();
        lock(&self.state).subscriptions.push(subscription);
        id
    }

    /// Delivers events to one subscriber as Preservica does: the body in the captured shape,
    /// signed with the subscription's secret. Returns the body and the receiver's status.
    ///
    /// # Errors
    /// When the subscription is unknown or the request fails at the transport level.
    pub(crate) async fn deliver(
        &self,
        subscription_id: &str,
        events: &[EventSpec],
        transfer: Transfer,
    ) -> Result<(DeliveryBody, u16)> {
        let Some(subscription) = self.subscription(subscription_id) else {
            bail!("the stand-in holds no subscription {subscription_id}");
        };
        let body = delivery_body(subscription_id, &subscription.trigger, events);
        let secret = Secret::new(&subscription.secret).context("stored secret")?;
        let signature = sign(&secret, &body.bytes).to_hex();
        let status = post_delivery(
            &self.http,
            &subscription.url,
            &body.bytes,
            Some(&signature),
            transfer,
        )
        .await?;
        Ok((body, status))
    }
}

/// The HTTP client the suite speaks with: no proxy (everything is on 127.0.0.1), HTTP/1.1.
///
/// # Errors
/// When the client cannot be built.
pub(crate) fn http_client() -> Result<reqwest::Client> {
    // reqwest is built without a bundled crypto provider; this client only speaks plain HTTP,
    // but building one still needs a provider installed. A second install fails harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .timeout(Duration::from_secs(30))
        .build()
        .context("could not build the HTTP client")
}

/// Like [`http_client`], but every request on a connection of its own.
///
/// # Errors
/// When the client cannot be built.
pub(crate) fn http_client_without_reuse() -> Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .context("could not build the HTTP client")
}

/// A delivery body in the captured shape (protocol.md section 4), one event per spec.
pub(crate) fn delivery_body(
    subscription_id: &str,
    trigger: &str,
    events: &[EventSpec],
) -> DeliveryBody {
    let event_name = match trigger {
        "FULL_TEXT_INDEXED" => "FullTextIndexed",
        "MOVED" => "Moved",
        "CHANGED_SECURITY_DESCRIPTOR" => "ChangedSecurityDescriptor",
        "INGEST_FAILED" => "IngestFailed",
        _ => "Unknown",
    };
    let events: Vec<Value> = events
        .iter()
        .map(|event| {
            json!({
                "event": event_name,
                "entityType": event.entity_type,
                "entityRef": event.entity_ref,
                "identifiers": [],
            })
        })
        .collect();
    let refs = events
        .iter()
        .map(|event| event["entityRef"].as_str().unwrap_or_default().to_owned())
        .collect();
    let body = json!({
        "subscriptionId": subscription_id,
        "timestamp": "2026-01-24T09:15:03.469",
        "tenant": TENANT,
        "version": "7.7",
        "events": events,
        "trigger": trigger,
    });
    let bytes = serde_json::to_vec(&body).expect("JSON values serialize");
    DeliveryBody {
        key: DeliveryKey::of(&bytes).to_hex(),
        bytes,
        refs,
    }
}

/// POSTs a delivery body, with the signature header when given; returns the status.
///
/// Chunked bodies go out in three pieces, so the receiver really reassembles chunks.
///
/// # Errors
/// When the request fails at the transport level (refused, reset, timed out).
pub(crate) async fn post_delivery(
    http: &reqwest::Client,
    url: &str,
    body: &[u8],
    signature: Option<&str>,
    transfer: Transfer,
) -> Result<u16> {
    let mut request = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(signature) = signature {
        request = request.header("Preservica-Signature", signature);
    }
    let request = match transfer {
        Transfer::Length => request.body(body.to_vec()),
        Transfer::Chunked => {
            let third = body.len().div_ceil(3).max(1);
            let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
                body.chunks(third).map(|it| Ok(it.to_vec())).collect();
            request.body(reqwest::Body::wrap_stream(stream::iter(pieces)))
        }
    };
    let response = request
        .send()
        .await
        .with_context(|| format!("POST {url} failed"))?;
    let status = response.status().as_u16();
    // Read the answer so the connection can be reused.
    let _ = response.bytes().await;
    Ok(status)
}

/// 32 random lowercase hex digits, like Preservica's ids and challenge codes.
pub(crate) fn random_hex() -> String {
    format!("{:032x}", rand::rng().random::<u128>())
}

/// A random version-4-shaped UUID, like Preservica's entity references.
pub(crate) fn random_uuid() -> String {
    let hex = random_hex();
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// Performs Preservica's handshake against `url`: a POST with a random `challengeCode`, the
/// answer checked with the core's [`check_challenge_answer`].
///
/// wiremock calls [`Respond::respond`] synchronously, on the single thread of the
/// current-thread runtime that runs its server, while holding the server's state lock. So
/// the handshake cannot be awaited there, and `block_on` on that thread would panic (a
/// runtime inside a runtime) or, through its handle, deadlock (the only worker would be the
/// one blocked). It runs instead on a scoped thread of its own, with a current-thread
/// runtime of its own and a client built there (a reqwest client must not outlive the
/// runtime it was used on). The stand-in is stalled meanwhile, as a subscribe call on the
/// real Preservica waits for its handshake; the receiver does not call back into the
/// stand-in to answer, and the timeout bounds the stall.
fn handshake(url: &str, secret: &Secret) -> Result<(), String> {
    let code = random_hex();
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|err| format!("no runtime for the handshake: {err}"))?;
                runtime.block_on(async {
                    let http = http_client().map_err(|err| format!("{err:#}"))?;
                    let response = http
                        .post(url)
                        .query(&[("challengeCode", code.as_str())])
                        .timeout(HANDSHAKE_TIMEOUT)
                        .send()
                        .await
                        .map_err(|err| format!("could not reach {url}: {err}"))?;
                    let status = response.status();
                    let body = response
                        .bytes()
                        .await
                        .map_err(|err| format!("could not read the answer: {err}"))?;
                    if !status.is_success() {
                        return Err(format!("the receiver answered {status}"));
                    }
                    check_challenge_answer(secret, &code, &body).map_err(|err| err.to_string())
                })
            })
            .join()
            .unwrap_or_else(|_| Err("the handshake thread panicked".to_owned()))
    })
}

fn json_response(status: u16, body: &Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(body)
}

fn error(status: u16, message: &str) -> ResponseTemplate {
    json_response(status, &json!({"success": false, "message": message}))
}

fn form(request: &Request) -> Vec<(String, String)> {
    url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect()
}

fn form_value<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Whether the request carries a token the stand-in handed out.
fn authorized(state: &Shared, request: &Request) -> bool {
    let Some(token) = request
        .headers
        .get(TOKEN_HEADER)
        .and_then(|it| it.to_str().ok())
    else {
        return false;
    };
    lock(state).tokens.contains(token)
}

fn unauthorized() -> ResponseTemplate {
    error(
        401,
        "authentication required: missing or expired access token",
    )
}

/// A fresh token pair, remembered, as the login answer shows it.
fn issue_tokens(state: &mut State) -> Value {
    let token = random_hex();
    let refresh = random_hex();
    state.tokens.insert(token.clone());
    state.refresh_tokens.insert(refresh.clone());
    json!({
        "success": true,
        "user": USERNAME,
        "token": token,
        "refresh-token": refresh,
        "validFor": 15,
        "tenant": TENANT,
    })
}

struct Login(Shared);

impl Respond for Login {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let form = form(request);
        let right = form_value(&form, "username") == Some(USERNAME)
            && form_value(&form, "password") == Some(PASSWORD)
            && form_value(&form, "tenant").is_none_or(|tenant| tenant == TENANT);
        let mut state = lock(&self.0);
        if !right {
            state.failed_logins += 1;
            return error(401, "Invalid credentials");
        }
        state.logins += 1;
        json_response(200, &issue_tokens(&mut state))
    }
}

struct Refresh(Shared);

impl Respond for Refresh {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let form = form(request);
        let mut state = lock(&self.0);
        let known = form_value(&form, "refreshToken")
            .is_some_and(|token| state.refresh_tokens.remove(token));
        if !known {
            return error(401, "Invalid refresh token");
        }
        json_response(200, &issue_tokens(&mut state))
    }
}

struct UserDetails(Shared);

impl Respond for UserDetails {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if !authorized(&self.0, request) {
            return unauthorized();
        }
        json_response(
            200,
            &json!({
                "userName": USERNAME,
                "fullName": "End-to-end Archivist",
                "email": "archivist@example.invalid",
                "tenant": TENANT,
                "roles": ["ROLE_SDB_MANAGER_USER", "ROLE_SDB_ACCESS_USER"],
            }),
        )
    }
}

struct CreateSubscription(Shared);

impl Respond for CreateSubscription {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if !authorized(&self.0, request) {
            return unauthorized();
        }
        let Ok(body) = request.body_json::<Value>() else {
            return error(400, "the request body is not JSON");
        };
        let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
        let (Some(url), Some(trigger), Some(secret)) =
            (text("url"), text("triggerType"), text("secret"))
        else {
            return error(400, "url, triggerType and secret are required");
        };
        let include_identifiers = match body.get("includeIdentifiers") {
            Some(Value::Bool(it)) => *it,
            Some(Value::String(it)) => it.eq_ignore_ascii_case("true"),
            _ => false,
        };
        const TRIGGERS: [&str; 5] = [
            "MOVED",
            "FULL_TEXT_INDEXED",
            "CHANGED_SECURITY_DESCRIPTOR",
            "INGEST_FAILED",
            "CHANGE_ASSET_VISIBILITY",
        ];
        if !TRIGGERS.contains(&trigger.as_str()) {
            return error(400, &format!("unknown triggerType {trigger}"));
        }
        let Ok(key) = Secret::new(&secret) else {
            return error(400, "the secret is empty");
        };
        let outcome = handshake(&url, &key);
        let mut state = lock(&self.0);
        state.handshakes.push(Handshake {
            url: url.clone(),
            outcome: outcome.clone(),
        });
        if let Err(reason) = outcome {
            return error(
                422,
                &format!(
                    "the endpoint {url} could not be verified: the handshake failed ({reason})"
                ),
            );
        }
        let subscription = StoredSubscription {
            id: random_hex(),
            url,
            trigger,
            secret,
            include_identifiers,
        };
        let answer = subscription.to_json();
        state.subscriptions.push(subscription);
        json_response(200, &answer)
    }
}

struct ListSubscriptions(Shared);

impl Respond for ListSubscriptions {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if !authorized(&self.0, request) {
            return unauthorized();
        }
        let list: Vec<Value> = lock(&self.0)
            .subscriptions
            .iter()
            .map(StoredSubscription::to_json)
            .collect();
        json_response(200, &Value::Array(list))
    }
}

struct DeleteSubscription(Shared);

impl Respond for DeleteSubscription {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if !authorized(&self.0, request) {
            return unauthorized();
        }
        let id = request.url.path().rsplit('/').next().unwrap_or_default();
        let mut state = lock(&self.0);
        let before = state.subscriptions.len();
        state.subscriptions.retain(|it| it.id != id);
        if state.subscriptions.len() == before {
            return error(404, &format!("no subscription {id}"));
        }
        ResponseTemplate::new(204)
    }
}

struct Entity(Shared);

impl Respond for Entity {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if !authorized(&self.0, request) {
            return unauthorized();
        }
        let mut parts = request.url.path().rsplit('/');
        let reference = parts.next().unwrap_or_default().to_owned();
        let (element, kind) = match parts.next() {
            Some("structural-objects") => ("StructuralObject", "folder"),
            Some("content-objects") => ("ContentObject", "content object"),
            _ => ("InformationObject", "asset"),
        };
        lock(&self.0).entity_requests.push(reference.clone());
        let xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<EntityResponse xmlns="http://preservica.com/EntityAPI/v7.7" xmlns:xip="http://preservica.com/XIP/v7.7">
  <xip:{element}>
    <xip:Ref>{reference}</xip:Ref>
    <xip:Title>E2E {kind} {reference}</xip:Title>
    <xip:Description>An {kind} of the end-to-end suite</xip:Description>
    <xip:SecurityTag>open</xip:SecurityTag>
    <xip:Parent>00000000-0000-4000-a000-000000000000</xip:Parent>
  </xip:{element}>
  <AdditionalInformation/>
</EntityResponse>
"#
        );
        ResponseTemplate::new(200).set_body_raw(xml, "application/xml;charset=UTF-8")
    }
}

struct Thumbnail(Shared);

impl Respond for Thumbnail {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if !authorized(&self.0, request) {
            return unauthorized();
        }
        let id = request
            .url
            .query_pairs()
            .find(|(name, _)| name == "id")
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default();
        lock(&self.0).thumbnail_requests.push(id.clone());
        // Assets have a thumbnail; anything else has none (404, as Preservica answers).
        if !id.starts_with("sdb:IO|") {
            return error(404, "no thumbnail");
        }
        ResponseTemplate::new(200).set_body_raw(THUMBNAIL_PNG, "image/png")
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use preservica_webhook_core::{Decision, Receiver};
    use tokio::sync::mpsc;

    use super::*;

    /// A receiver on 127.0.0.1:0 made of the core's decisions and nothing else; the bodies
    /// it accepts come out of the channel.
    async fn tiny_receiver(secret: &str) -> (String, mpsc::UnboundedReceiver<Bytes>) {
        let receiver = Arc::new(Receiver::new([Secret::new(secret).unwrap()]).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let (sender, accepted) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let receiver = receiver.clone();
                let sender = sender.clone();
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let receiver = receiver.clone();
                    let sender = sender.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await?.to_bytes();
                        let decision =
                            receiver.decide(&parts.method, &parts.uri, &parts.headers, body);
                        let reply = decision.reply();
                        if let Decision::Accept(verified) = decision {
                            let _ = sender.send(verified.body().clone());
                        }
                        let response = hyper::Response::builder()
                            .status(reply.status)
                            .header("content-type", reply.content_type)
                            .body(Full::new(reply.body))
                            .expect("valid response");
                        Ok::<_, hyper::Error>(response)
                    }
                });
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (url, accepted)
    }

    async fn login(http: &reqwest::Client, base: &str, password: &str) -> reqwest::Response {
        http.post(format!("{base}/api/accesstoken/login"))
            .form(&[
                ("username", USERNAME),
                ("password", password),
                ("tenant", TENANT),
            ])
            .send()
            .await
            .unwrap()
    }

    async fn token(http: &reqwest::Client, base: &str) -> String {
        let answer: Value = login(http, base, PASSWORD).await.json().await.unwrap();
        answer["token"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn subscribes_only_receivers_that_answer_the_handshake_and_delivers_to_them() {
        let standin = StandIn::start().await.unwrap();
        let base = standin.uri();
        let http = http_client().unwrap();
        let (good_url, mut accepted) = tiny_receiver("right").await;
        let (bad_url, _) = tiny_receiver("wrong").await;
        let token = token(&http, &base).await;
        let subscriptions = format!("{base}/api/webhook/subscriptions");
        let create = |url: &str| {
            http.post(&subscriptions)
                .header(TOKEN_HEADER, &token)
                .json(&json!({"url": url, "triggerType": "FULL_TEXT_INDEXED", "secret": "right", "includeIdentifiers": "true"}))
                .send()
        };

        let created = create(&good_url).await.unwrap();
        assert_eq!(created.status(), 200);
        let created: Value = created.json().await.unwrap();
        let id = created["id"].as_str().unwrap().to_owned();
        assert_eq!(id.len(), 32);
        assert_eq!(created["includeIdentifiers"], true);
        assert!(created.get("secret").is_none());

        let refused = create(&bad_url).await.unwrap();
        assert_eq!(refused.status(), 422);
        let message = refused.text().await.unwrap();
        assert!(message.contains("the handshake failed"), "{message}");
        let outcomes: Vec<bool> = standin
            .handshakes()
            .iter()
            .map(|it| it.outcome.is_ok())
            .collect();
        assert_eq!(outcomes, [true, false]);

        let listed: Value = http
            .get(&subscriptions)
            .header(TOKEN_HEADER, &token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(listed, json!([created]));

        for transfer in [Transfer::Chunked, Transfer::Length] {
            let events = [EventSpec::asset(), EventSpec::folder()];
            let (body, status) = standin.deliver(&id, &events, transfer).await.unwrap();
            assert_eq!(status, 200);
            assert_eq!(accepted.recv().await.unwrap(), body.bytes);
            let delivery = preservica_webhook_core::Delivery::from_slice(&body.bytes).unwrap();
            assert_eq!(delivery.events.len(), 2);
            assert_eq!(delivery.subscription_id.unwrap().as_str(), id);
        }

        let delete = || {
            http.delete(format!("{subscriptions}/{id}"))
                .header(TOKEN_HEADER, &token)
                .send()
        };
        assert_eq!(delete().await.unwrap().status(), 204);
        assert_eq!(delete().await.unwrap().status(), 404);
        assert!(standin.subscriptions().is_empty());
    }

    #[tokio::test]
    async fn checks_credentials_tokens_and_single_use_refresh_tokens() {
        let standin = StandIn::start().await.unwrap();
        let base = standin.uri();
        let http = http_client().unwrap();

        let failed = login(&http, &base, "wrong").await;
        assert_eq!(failed.status(), 401);
        let failed: Value = failed.json().await.unwrap();
        assert!(failed["message"].is_string());
        assert_eq!(standin.logins(), (0, 1));

        let details = format!("{base}/api/user/details");
        assert_eq!(http.get(&details).send().await.unwrap().status(), 401);
        let answer: Value = login(&http, &base, PASSWORD).await.json().await.unwrap();
        assert_eq!(answer["success"], true);
        assert_eq!(answer["validFor"], 15);
        let token = answer["token"].as_str().unwrap();
        let user: Value = http
            .get(&details)
            .header(TOKEN_HEADER, token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(user["roles"].to_string().contains("ROLE_SDB_MANAGER_USER"));

        let refresh = || {
            http.post(format!("{base}/api/accesstoken/refresh"))
                .header(TOKEN_HEADER, token)
                .form(&[("refreshToken", answer["refresh-token"].as_str().unwrap())])
                .send()
        };
        assert_eq!(refresh().await.unwrap().status(), 200);
        assert_eq!(refresh().await.unwrap().status(), 401);
    }

    #[tokio::test]
    async fn serves_entities_and_asset_thumbnails_only() {
        let standin = StandIn::start().await.unwrap();
        let base = standin.uri();
        let http = http_client().unwrap();
        let token = token(&http, &base).await;
        let get = |path: String| {
            http.get(format!("{base}{path}"))
                .header(TOKEN_HEADER, &token)
                .send()
        };

        let xml = get("/api/entity/information-objects/abc".to_owned())
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(xml.contains("<xip:Ref>abc</xip:Ref>"), "{xml}");

        let image = get("/api/content/thumbnail?id=sdb:IO%7Cabc&size=large".to_owned())
            .await
            .unwrap();
        assert_eq!(image.status(), 200);
        assert_eq!(image.headers()["content-type"], "image/png");
        assert_eq!(image.bytes().await.unwrap(), THUMBNAIL_PNG);
        let folder = get("/api/content/thumbnail?id=sdb:SO%7Cdef".to_owned())
            .await
            .unwrap();
        assert_eq!(folder.status(), 404);
        assert_eq!(standin.thumbnail_requests(), ["sdb:IO|abc", "sdb:SO|def"]);
    }

    #[test]
    fn the_thumbnail_is_a_4_by_4_png() {
        assert_eq!(&THUMBNAIL_PNG[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&THUMBNAIL_PNG[12..16], b"IHDR");
        assert_eq!(&THUMBNAIL_PNG[16..24], &[0, 0, 0, 4, 0, 0, 0, 4]);
        assert_eq!(&THUMBNAIL_PNG[THUMBNAIL_PNG.len() - 8..][..4], b"IEND");
    }

    #[test]
    fn delivery_bodies_have_the_captured_shape_and_are_keyed_by_their_bytes() {
        let body = delivery_body("sub", "FULL_TEXT_INDEXED", &[EventSpec::asset()]);
        let value: Value = serde_json::from_slice(&body.bytes).unwrap();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "events",
                "subscriptionId",
                "tenant",
                "timestamp",
                "trigger",
                "version"
            ]
        );
        assert_eq!(value["events"][0]["event"], "FullTextIndexed");
        assert_eq!(value["events"][0]["entityRef"], body.refs[0].as_str());
        assert_eq!(body.key, DeliveryKey::of(&body.bytes).to_hex());
    }
}
