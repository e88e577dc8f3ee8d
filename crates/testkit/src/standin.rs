//! A stand-in Preservica on wiremock, with state kept between calls.
//!
//! What it answers (protocol.md sections 1, 5 and 6):
//! - `POST /api/accesstoken/login` (form `username`, `password`, `tenant` checked), with a
//!   two-factor step through `complete-2fa` once [`StandIn::require_two_factor`] was called,
//!   and `POST /api/accesstoken/refresh` (a refresh token works once);
//! - `GET /api/user/details` with the roles of a subscription manager;
//! - `POST|GET /api/webhook/subscriptions`, `DELETE /api/webhook/subscriptions/{id}`; a create
//!   first performs Preservica's handshake against the URL and stores the subscription only
//!   when the receiver's answer is right;
//! - `GET /api/entity/{kind}/{ref}` and `GET /api/content/thumbnail` for the entities and
//!   thumbnails a test added;
//! - `GET /api/entity/events` (the event log, filtered by `from` and `to`) and
//!   `GET /api/entity/entities/updated-since` for the events a test recorded
//!   ([`StandIn::record_event`]), paged by `start` and `max` with `Next` links, and
//!   `GET /api/processmonitor/monitors` for the failed ingests it recorded; anything else is a
//!   404 with a JSON message.
//!
//! Every management call needs a token it handed out; [`StandIn::expire_tokens`] makes them
//! all stale, [`StandIn::fail`] injects failures.

use std::collections::{HashMap, HashSet};
use std::io::{Read as _, Write as _};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use preservica_webhook_core::{Secret, check_challenge_answer};
use serde_json::{Value, json};
use totp_rs::{Algorithm, TOTP};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::delivery::{Delivery, Event, random_hex, signature};

/// The account the stand-in accepts.
pub const USERNAME: &str = "archivist";
/// The password of [`USERNAME`].
pub const PASSWORD: &str = "pa55-not-secret";
/// The tenant of [`USERNAME`].
pub const TENANT: &str = "TEST";
/// The header every management call carries.
pub const TOKEN_HEADER: &str = "Preservica-Access-Token";
/// How long the stand-in waits for a receiver's answer to the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the stand-in has seen and holds.
#[derive(Debug, Default)]
struct State {
    tokens: HashSet<String>,
    refresh_tokens: HashSet<String>,
    continuations: HashSet<String>,
    two_factor: Option<TOTP>,
    logins: usize,
    failed_logins: usize,
    created: u128,
    /// Subscriptions as the API shows them, with the secret each was made with.
    subscriptions: Vec<(Value, String)>,
    handshakes: Vec<Result<(), String>>,
    entities: HashMap<String, String>,
    thumbnails: HashMap<String, (Vec<u8>, String)>,
    /// The event log: type, entity type, entity reference, RFC 3339 date.
    events: Vec<(String, String, String, String)>,
    /// The process monitors, as the API shows them.
    monitors: Vec<Value>,
    /// Its own base URL, for the `Next` links of paged answers.
    base: String,
}

type Shared = Arc<Mutex<State>>;
type Answer = fn(&Shared, &Request) -> ResponseTemplate;

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    // A panic in a responder poisons the lock; every update is a single step, so go on.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The running stand-in.
#[derive(Debug)]
pub struct StandIn {
    server: MockServer,
    state: Shared,
}

impl StandIn {
    /// Starts it on a free 127.0.0.1 port.
    pub async fn start() -> StandIn {
        let server = MockServer::start().await;
        let state = Shared::default();
        lock(&state).base = server.uri();
        // Each route: method, path, whether it needs a token the stand-in handed out, answer.
        let routes: [(&str, &str, bool, Answer); 12] = [
            ("POST", "^/api/accesstoken/login$", false, login),
            (
                "POST",
                "^/api/accesstoken/complete-2fa$",
                false,
                complete_two_factor,
            ),
            ("POST", "^/api/accesstoken/refresh$", false, refresh),
            ("GET", "^/api/user/details$", true, user_details),
            (
                "POST",
                "^/api/webhook/subscriptions$",
                true,
                create_subscription,
            ),
            (
                "GET",
                "^/api/webhook/subscriptions$",
                true,
                list_subscriptions,
            ),
            (
                "DELETE",
                "^/api/webhook/subscriptions/[^/]+$",
                true,
                delete_subscription,
            ),
            ("GET", "^/api/entity/events$", true, event_log),
            ("GET", "^/api/processmonitor/monitors$", true, monitors),
            (
                "GET",
                "^/api/entity/entities/updated-since$",
                true,
                updated_since,
            ),
            ("GET", "^/api/entity/[a-z-]+/[^/]+$", true, entity),
            ("GET", "^/api/content/thumbnail$", true, thumbnail),
        ];
        for (verb, pattern, needs_token, answer) in routes {
            let s = state.clone();
            let respond = move |request: &Request| {
                if needs_token && !authorized(&s, request) {
                    return error(
                        401,
                        "authentication required: missing or expired access token",
                    );
                }
                answer(&s, request)
            };
            let mock = Mock::given(method(verb)).and(path_regex(pattern));
            mock.respond_with(respond).mount(&server).await;
        }
        Mock::given(wiremock::matchers::any())
            .respond_with(error(404, "not found"))
            .with_priority(10)
            .mount(&server)
            .await;
        StandIn { server, state }
    }

    /// The base URL, for `PRESERVICA_SERVER`.
    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// The environment that points the binary at the stand-in, with [`crate::SECRET`] as the
    /// webhook secret.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("PRESERVICA_SERVER", self.uri()),
            ("PRESERVICA_USERNAME", USERNAME.to_owned()),
            ("PRESERVICA_PASSWORD", PASSWORD.to_owned()),
            ("PRESERVICA_TENANT", TENANT.to_owned()),
            ("PRESERVICA_WEBHOOK_SECRET", crate::SECRET.to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    /// From now on a login needs a second step with a TOTP code of this base32 seed.
    ///
    /// # Panics
    /// When the seed is not base32.
    pub fn require_two_factor(&self, seed: &str) {
        let bytes = totp_rs::Secret::Encoded(seed.to_owned())
            .to_bytes()
            .expect("a base32 seed");
        lock(&self.state).two_factor = Some(TOTP::new_unchecked(Algorithm::SHA1, 6, 1, 30, bytes));
    }

    /// Makes every access token handed out so far stale, as their 15 minutes passing would.
    pub fn expire_tokens(&self) {
        lock(&self.state).tokens.clear();
    }

    /// How many logins succeeded and failed.
    pub fn logins(&self) -> (usize, usize) {
        let state = lock(&self.state);
        (state.logins, state.failed_logins)
    }

    /// Answers the next `times` requests of `verb` to `path` with `status` and a JSON message,
    /// ahead of the usual answer.
    pub async fn fail(&self, verb: &str, path: &str, status: u16, times: u64) {
        Mock::given(method(verb))
            .and(wiremock::matchers::path(path))
            .respond_with(error(status, "injected failure"))
            .up_to_n_times(times)
            .with_priority(1)
            .mount(&self.server)
            .await;
    }

    /// Every request received so far, oldest first.
    pub async fn requests(&self) -> Vec<Request> {
        self.server.received_requests().await.unwrap_or_default()
    }

    /// Holds a subscription as the API shows it (`id` and any other fields kept verbatim),
    /// without a handshake: what an earlier receiver or another tool left behind.
    pub fn insert_subscription(&self, subscription: Value) {
        let secret = crate::SECRET.to_owned();
        lock(&self.state).subscriptions.push((subscription, secret));
    }

    /// The subscriptions it holds, as the API shows them.
    pub fn subscriptions(&self) -> Vec<Value> {
        let state = lock(&self.state);
        state
            .subscriptions
            .iter()
            .map(|(it, _)| it.clone())
            .collect()
    }

    /// The ids of the subscriptions it holds.
    pub fn ids(&self) -> Vec<String> {
        let subscriptions = self.subscriptions();
        subscriptions
            .iter()
            .filter_map(|it| it["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// Removes a subscription, as an administrator deleting it in Preservica would; `false`
    /// when there is none with that id.
    pub fn drop_subscription(&self, id: &str) -> bool {
        let mut state = lock(&self.state);
        let before = state.subscriptions.len();
        state.subscriptions.retain(|(it, _)| it["id"] != id);
        state.subscriptions.len() < before
    }

    /// Records an event in the event log (`Ingest`, `Moved`, …) on an entity (`IO`, `SO`, …)
    /// at `date` (RFC 3339).
    pub fn record_event(&self, event_type: &str, entity_type: &str, reference: &str, date: &str) {
        lock(&self.state).events.push((
            event_type.to_owned(),
            entity_type.to_owned(),
            reference.to_owned(),
            date.to_owned(),
        ));
    }

    /// Records a failed ingest among the process monitors, ended at `date` (RFC 3339).
    pub fn record_failed_ingest(&self, id: &str, name: &str, date: &str) {
        lock(&self.state).monitors.push(json!({
            "mappedId": id, "name": name, "status": "Failed", "category": "Ingest",
            "subcategory": "OPEX", "started": date, "completed": date,
            "filesPending": 0, "size": 1, "filesProcessed": 0, "warnings": 0, "errors": 1,
            "canRetry": true,
        }));
    }

    /// Every handshake performed so far: `Ok` when the receiver's answer was right.
    pub fn handshakes(&self) -> Vec<Result<(), String>> {
        lock(&self.state).handshakes.clone()
    }

    /// Adds an entity (`IO`, `SO` or `CO`) that `GET /api/entity/…/{reference}` then shows.
    pub fn add_entity(&self, kind: &str, reference: &str, title: &str, parent: &str) {
        let element = match kind {
            "SO" => "StructuralObject",
            "CO" => "ContentObject",
            _ => "InformationObject",
        };
        let xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<EntityResponse xmlns="http://preservica.com/EntityAPI/v7.7" xmlns:xip="http://preservica.com/XIP/v7.7">
    <xip:{element}>
        <xip:Ref>{reference}</xip:Ref>
        <xip:Title>{title}</xip:Title>
        <xip:Description>Scanned typescript, 4 pages</xip:Description>
        <xip:SecurityTag>open</xip:SecurityTag>
        <xip:Parent>{parent}</xip:Parent>
    </xip:{element}>
</EntityResponse>"#
        );
        lock(&self.state).entities.insert(reference.to_owned(), xml);
    }

    /// Gives the asset `reference` a thumbnail; assets without one answer 404.
    pub fn add_thumbnail(&self, reference: &str, image: &[u8], content_type: &str) {
        let thumbnail = (image.to_vec(), content_type.to_owned());
        let id = format!("sdb:IO|{reference}");
        lock(&self.state).thumbnails.insert(id, thumbnail);
    }

    /// Delivers events to a held subscription as Preservica does: a body in the captured
    /// shape, signed with the subscription's secret, sent as one chunked POST. Returns the
    /// delivery and the receiver's status.
    ///
    /// # Panics
    /// When it holds no subscription `id` or the receiver cannot be reached.
    pub async fn deliver(&self, id: &str, events: &[Event]) -> (Delivery, u16) {
        let (subscription, secret) = {
            let state = lock(&self.state);
            let found = state.subscriptions.iter().find(|(it, _)| it["id"] == id);
            found.cloned().expect("a subscription the stand-in holds")
        };
        let trigger = subscription["triggerType"].as_str().unwrap_or_default();
        let delivery = Delivery::new(id, trigger, events);
        let url: url::Url = subscription["url"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .unwrap();
        let addr = url.socket_addrs(|| None).unwrap()[0];
        let head = signature(&secret, &delivery.bytes);
        let request = crate::raw::chunked_request(url.path(), &head, &delivery.bytes, 64);
        let status = crate::raw::raw(addr, &request).await.status;
        (delivery, status)
    }
}

fn json_response(status: u16, body: &Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(body)
}

fn error(status: u16, message: &str) -> ResponseTemplate {
    json_response(status, &json!({"success": false, "message": message}))
}

fn form(request: &Request) -> HashMap<String, String> {
    url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect()
}

/// Whether the request carries a token the stand-in handed out.
fn authorized(state: &Shared, request: &Request) -> bool {
    let token = request.headers.get(TOKEN_HEADER);
    let token = token.and_then(|it| it.to_str().ok()).unwrap_or_default();
    lock(state).tokens.contains(token)
}

/// A fresh token pair, remembered, as the login answer shows it.
fn issue_tokens(state: &mut State) -> ResponseTemplate {
    let (token, refresh) = (random_hex(), random_hex());
    state.tokens.insert(token.clone());
    state.refresh_tokens.insert(refresh.clone());
    state.logins += 1;
    json_response(
        200,
        &json!({
            "success": true, "user": USERNAME, "token": token, "refresh-token": refresh,
            "validFor": 15, "tenant": TENANT,
        }),
    )
}

fn login(state: &Shared, request: &Request) -> ResponseTemplate {
    let form = form(request);
    let field = |name: &str| form.get(name).map(String::as_str);
    let right = field("username") == Some(USERNAME)
        && field("password") == Some(PASSWORD)
        && field("tenant").is_none_or(|tenant| tenant == TENANT);
    let mut state = lock(state);
    if !right {
        state.failed_logins += 1;
        return error(401, "Invalid credentials");
    }
    if state.two_factor.is_none() {
        return issue_tokens(&mut state);
    }
    let continuation = random_hex();
    state.continuations.insert(continuation.clone());
    json_response(
        401,
        &json!({"success": false, "message": "needs.2fa", "continuationToken": continuation}),
    )
}

fn complete_two_factor(state: &Shared, request: &Request) -> ResponseTemplate {
    let form = form(request);
    let mut state = lock(state);
    let continued = form
        .get("continuationToken")
        .is_some_and(|it| state.continuations.remove(it));
    let code = form.get("twoFactorToken").cloned().unwrap_or_default();
    let valid = state
        .two_factor
        .as_ref()
        .is_some_and(|totp| totp.check_current(&code).unwrap_or(false));
    if !(continued && valid) {
        state.failed_logins += 1;
        return error(401, "invalid.2fa.token");
    }
    issue_tokens(&mut state)
}

fn refresh(state: &Shared, request: &Request) -> ResponseTemplate {
    let form = form(request);
    let mut state = lock(state);
    let known = form
        .get("refreshToken")
        .is_some_and(|token| state.refresh_tokens.remove(token));
    if !known {
        return error(401, "Invalid refresh token");
    }
    issue_tokens(&mut state)
}

fn user_details(_: &Shared, _: &Request) -> ResponseTemplate {
    json_response(
        200,
        &json!({
            "userName": USERNAME, "fullName": "Test Archivist", "tenant": TENANT,
            "roles": ["ROLE_SDB_MANAGER_USER", "ROLE_SDB_ACCESS_USER"],
        }),
    )
}

fn create_subscription(state: &Shared, request: &Request) -> ResponseTemplate {
    let Ok(body) = request.body_json::<Value>() else {
        return error(400, "the request body is not JSON");
    };
    let text = |name: &str| body[name].as_str().map(str::to_owned);
    let (Some(url), Some(trigger), Some(secret)) =
        (text("url"), text("triggerType"), text("secret"))
    else {
        return error(400, "url, triggerType and secret are required");
    };
    let Ok(key) = Secret::new(&secret) else {
        return error(400, "the secret is empty");
    };
    // Preservica performs the handshake inside the create call; the stand-in stalls
    // meanwhile, as the real one does (the receiver never calls back into it).
    let outcome = handshake(&url, &key);
    let mut state = lock(state);
    state.handshakes.push(outcome.clone());
    if let Err(reason) = outcome {
        let message = format!("webhook endpoint did not answer the challenge: {reason}");
        return error(400, &message);
    }
    state.created += 1;
    let created = json!({
        "id": format!("{:032x}", state.created),
        "url": url,
        "triggerType": trigger,
        "includeIdentifiers": body["includeIdentifiers"] == true || body["includeIdentifiers"] == "true",
    });
    state.subscriptions.push((created.clone(), secret));
    json_response(200, &created)
}

fn list_subscriptions(state: &Shared, _: &Request) -> ResponseTemplate {
    let state = lock(state);
    let list = state.subscriptions.iter().map(|(it, _)| it.clone());
    json_response(200, &Value::Array(list.collect()))
}

fn delete_subscription(state: &Shared, request: &Request) -> ResponseTemplate {
    let id = request.url.path().rsplit('/').next().unwrap_or_default();
    let mut state = lock(state);
    let before = state.subscriptions.len();
    state.subscriptions.retain(|(it, _)| it["id"] != id);
    if state.subscriptions.len() == before {
        return error(404, &format!("no subscription {id}"));
    }
    ResponseTemplate::new(204)
}

/// The recorded events whose date is within the request's `from`..=`to` (when given).
fn events_in<'a>(
    state: &'a State,
    request: &Request,
    from: &str,
    to: &str,
) -> impl Iterator<Item = &'a (String, String, String, String)> {
    let pairs: HashMap<String, String> = request.url.query_pairs().into_owned().collect();
    let (from, to) = (pairs.get(from).cloned(), pairs.get(to).cloned());
    // RFC 3339 in UTC with milliseconds compares as text.
    state.events.iter().filter(move |(.., date)| {
        from.as_ref().is_none_or(|from| date >= from) && to.as_ref().is_none_or(|to| date <= to)
    })
}

/// The part of `items` the request's `start` and `max` ask for (Preservica's default page is
/// 25), and the `Next` element pointing at the rest, when there is more.
fn page(base: &str, request: &Request, items: Vec<String>) -> (String, String) {
    let number = |name: &str, default: usize| {
        request
            .url
            .query_pairs()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(default)
    };
    let (start, max) = (number("start", 0), number("max", 25).max(1));
    let total = items.len();
    let shown: String = items.into_iter().skip(start).take(max).collect();
    let mut paging = String::new();
    if start + max < total {
        // The request's own URL names the host as the client's Host header did; the stand-in
        // links to its real address, as Preservica links to its own.
        let mut next = url::Url::parse(base)
            .and_then(|base| base.join(request.url.path()))
            .unwrap_or_else(|_| request.url.clone());
        let kept: Vec<(String, String)> = request
            .url
            .query_pairs()
            .into_owned()
            .filter(|(key, _)| key != "start")
            .collect();
        next.query_pairs_mut()
            .clear()
            .extend_pairs(kept)
            .append_pair("start", &(start + max).to_string());
        paging = format!("<Next>{}</Next>", next.as_str().replace('&', "&amp;"));
    }
    paging.push_str(&format!("<TotalResults>{total}</TotalResults>"));
    (shown, paging)
}

fn event_log(state: &Shared, request: &Request) -> ResponseTemplate {
    let state = lock(state);
    let actions: Vec<String> = events_in(&state, request, "from", "to")
        .map(|(kind, _, reference, date)| {
            format!(
                "<xip:EventAction commandType=\"c\"><xip:Event type=\"{kind}\"><xip:Ref>event-{reference}</xip:Ref><xip:Date>{date}</xip:Date></xip:Event><xip:Date>{date}</xip:Date><xip:Entity>{reference}</xip:Entity></xip:EventAction>"
            )
        })
        .collect();
    let (actions, paging) = page(&state.base, request, actions);
    let xml = format!(
        "<EventActionsResponse xmlns=\"http://preservica.com/EntityAPI/v7.7\" xmlns:xip=\"http://preservica.com/XIP/v7.7\"><EventActions>{actions}</EventActions><Paging>{paging}</Paging></EventActionsResponse>"
    );
    ResponseTemplate::new(200).set_body_raw(xml, "application/xml")
}

fn updated_since(state: &Shared, request: &Request) -> ResponseTemplate {
    let state = lock(state);
    let entities: Vec<String> = events_in(&state, request, "date", "endDate")
        .map(|(_, kind, reference, _)| format!("<Entity ref=\"{reference}\" type=\"{kind}\"/>"))
        .collect();
    let (entities, paging) = page(&state.base, request, entities);
    let xml = format!(
        "<EntitiesResponse xmlns=\"http://preservica.com/EntityAPI/v6.0\"><Entities>{entities}</Entities><Paging>{paging}</Paging></EntitiesResponse>"
    );
    ResponseTemplate::new(200).set_body_raw(xml, "application/xml")
}

fn monitors(state: &Shared, request: &Request) -> ResponseTemplate {
    let pairs: HashMap<String, String> = request.url.query_pairs().into_owned().collect();
    let state = lock(state);
    let monitors: Vec<&Value> = state
        .monitors
        .iter()
        .filter(|it| {
            ["status", "category"].iter().all(|key| {
                pairs
                    .get(*key)
                    .is_none_or(|wanted| it[*key] == wanted.as_str())
            })
        })
        .collect();
    json_response(
        200,
        &json!({
            "success": true,
            "version": 1,
            "value": {"paging": {"totalResults": monitors.len()}, "monitors": monitors},
        }),
    )
}

fn entity(state: &Shared, request: &Request) -> ResponseTemplate {
    let reference = request.url.path().rsplit('/').next().unwrap_or_default();
    match lock(state).entities.get(reference) {
        Some(xml) => ResponseTemplate::new(200).set_body_raw(xml.clone(), "application/xml"),
        None => error(404, &format!("entity {reference} not found")),
    }
}

fn thumbnail(state: &Shared, request: &Request) -> ResponseTemplate {
    let pairs = request.url.query_pairs();
    let id = pairs.into_iter().find(|(name, _)| name == "id");
    let id = id.map(|(_, value)| value.into_owned()).unwrap_or_default();
    match lock(state).thumbnails.get(&id) {
        Some((image, kind)) => ResponseTemplate::new(200).set_body_raw(image.clone(), kind),
        None => error(404, "no thumbnail"),
    }
}

/// Performs Preservica's handshake against `url` (plain HTTP): a POST with a random
/// `challengeCode`, the answer checked with the core's [`check_challenge_answer`].
///
/// Blocking IO on purpose: wiremock answers synchronously, on a thread of its own.
fn handshake(url: &str, secret: &Secret) -> Result<(), String> {
    let url: url::Url = url.parse().map_err(|err| format!("bad URL {url}: {err}"))?;
    let addr = url.socket_addrs(|| None).map_err(|err| err.to_string())?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr[0], HANDSHAKE_TIMEOUT)
        .map_err(|err| format!("could not reach {url}: {err}"))?;
    let _ = stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    let code = random_hex();
    let request = format!(
        "POST {}?challengeCode={code} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        url.path(),
        addr[0]
    );
    let mut answer = Vec::new();
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.read_to_end(&mut answer))
        .map_err(|err| format!("no answer from {url}: {err}"))?;
    let response = crate::raw::parse_response(&answer).ok_or("not an HTTP response")?;
    if response.status != 200 {
        return Err(format!("the receiver answered {}", response.status));
    }
    check_challenge_answer(secret, &code, &response.body).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::{RawResponse, raw};

    /// A form POST (or a GET when `form` is `None`) to the stand-in, with `token` if given.
    async fn call(standin: &StandIn, path: &str, form: Option<&str>, token: &str) -> RawResponse {
        let addr = standin.server.address();
        let (verb, body) = form.map_or(("GET", ""), |it| ("POST", it));
        let request = format!(
            "{verb} {path} HTTP/1.1\r\nHost: x\r\n{TOKEN_HEADER}: {token}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        raw(*addr, request.as_bytes()).await
    }

    fn field(response: &RawResponse, name: &str) -> String {
        let value: Value = serde_json::from_slice(&response.body).unwrap();
        value[name].as_str().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn logs_in_with_two_factor_expires_tokens_refreshes_once_and_injects_failures() {
        let standin = StandIn::start().await;
        let login = "/api/accesstoken/login";
        let form = format!("username={USERNAME}&password={PASSWORD}&tenant={TENANT}");
        let wrong = call(&standin, login, Some("username=archivist&password=no"), "").await;
        assert_eq!(wrong.status, 401);

        let seed = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        standin.require_two_factor(seed);
        let asked = call(&standin, login, Some(&form), "").await;
        assert_eq!(
            (asked.status, field(&asked, "message")),
            (401, "needs.2fa".to_owned())
        );
        let bytes = totp_rs::Secret::Encoded(seed.to_owned())
            .to_bytes()
            .unwrap();
        let code = TOTP::new_unchecked(Algorithm::SHA1, 6, 1, 30, bytes).generate_current();
        let continuation = field(&asked, "continuationToken");
        let second =
            format!("username={USERNAME}&continuationToken={continuation}&twoFactorToken=");
        let complete = "/api/accesstoken/complete-2fa";
        let bad = call(&standin, complete, Some(&format!("{second}000000x")), "").await;
        assert_eq!(bad.status, 401);
        let asked = call(&standin, login, Some(&form), "").await;
        let continuation = field(&asked, "continuationToken");
        let second =
            format!("username={USERNAME}&continuationToken={continuation}&twoFactorToken=");
        let good = call(
            &standin,
            complete,
            Some(&format!("{second}{}", code.unwrap())),
            "",
        )
        .await;
        assert_eq!(good.status, 200);
        assert_eq!(standin.logins(), (1, 2));

        let token = field(&good, "token");
        let list = "/api/webhook/subscriptions";
        assert_eq!(call(&standin, list, None, &token).await.body, b"[]");
        standin.expire_tokens();
        assert_eq!(call(&standin, list, None, &token).await.status, 401);
        let refresh = format!("refreshToken={}", field(&good, "refresh-token"));
        let renewed = call(&standin, "/api/accesstoken/refresh", Some(&refresh), "").await;
        assert_eq!(renewed.status, 200);
        let again = call(&standin, "/api/accesstoken/refresh", Some(&refresh), "").await;
        assert_eq!(again.status, 401);

        let token = field(&renewed, "token");
        standin.fail("GET", list, 503, 1).await;
        assert_eq!(call(&standin, list, None, &token).await.status, 503);
        assert_eq!(call(&standin, list, None, &token).await.status, 200);
        let thumbnail = "/api/content/thumbnail?id=sdb:IO%7Cabc";
        assert_eq!(call(&standin, thumbnail, None, &token).await.status, 404);
        standin.add_thumbnail("abc", b"png", "image/png");
        assert_eq!(call(&standin, thumbnail, None, &token).await.body, b"png");
    }
}
