//! The admin dashboard: a separate listener with server-rendered pages over a [`Store`].
//!
//! It shows the deliveries (newest first, paged by a cursor, filtered by state, trigger,
//! entity reference, time received and text in the body), one delivery (its raw body,
//! escaped, its parsed events and every finished handler attempt), the dead letters with retry one and retry all, a health
//! panel, the gaps in the recorded runs and an export as JSON lines; given [`Preservica`],
//! also Preservica's subscriptions with a button that sends this receiver a signed test
//! delivery, and a catch-up button for each gap. Pages need no JavaScript and load nothing
//! from elsewhere.
//!
//! Safety: it listens on its own address, never through the webhook's; a non-loopback address
//! needs a token ([`AdminConfig::token`]), which every request then carries as
//! `Authorization: Bearer <token>` or through the session cookie a login form sets. Every
//! state-changing action is a POST whose `Origin` must be the listener's own and whose form
//! carries the session's CSRF token; anything else is refused 403. On loopback, a request
//! whose `Host` is not the listener's address or `localhost` is refused too, so a web page
//! whose DNS name was rebound to 127.0.0.1 cannot read the dashboard. Every answer sends a
//! `Content-Security-Policy` that allows no script at all, `X-Frame-Options: DENY`,
//! `X-Content-Type-Options: nosniff` and `Referrer-Policy: same-origin` (not `no-referrer`:
//! under it browsers send `Origin: null` with a form, and the Origin check could not pass;
//! `same-origin` still tells no other site anything). The store holds no
//! secret or signature, so no page can show one.
//!
//! ```no_run
//! # async fn run(store: std::sync::Arc<dyn preservica_webhook_server::store::Store>) -> Result<(), preservica_webhook_server::admin::AdminError> {
//! use preservica_webhook_server::admin::{Admin, AdminConfig};
//!
//! let config = AdminConfig::new("127.0.0.1:8001".parse().unwrap(), "sqlite");
//! let admin = Admin::bind(config, store).await?;
//! admin.run().await;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE, COOKIE, LOCATION, ORIGIN,
    SET_COOKIE, WWW_AUTHENTICATE,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use maud::{DOCTYPE, Markup, html};
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use preservica_webhook_core::{Delivery, Subscription};
use tokio::net::TcpListener;

use crate::InboxError;
use crate::inbox::{DeliveryState, InboxEntry, StateFilter, now_millis};
use crate::store::{BoxFuture, DeliveryId, PageQuery, Store};

/// How many deliveries one page of the list shows.
const PAGE: usize = 50;
/// The largest form body read.
const MAX_FORM: usize = 16 * 1024;
/// How many sessions are kept; past that the oldest half is forgotten.
const MAX_SESSIONS: usize = 4096;
/// The session cookie's name.
const SESSION_COOKIE: &str = "pw_admin_session";
/// No script, no frame, nothing from elsewhere: the stylesheet and forms to itself only.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";
/// The dashboard's stylesheet, served as `/style.css`.
const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}\
header{background:#23395b;color:#fff;padding:.6em 1.2em;display:flex;gap:1.4em;align-items:baseline}\
header a{color:#fff;text-decoration:none}header strong{font-size:1.1em}\
main{padding:1em 1.2em;max-width:1200px}table{border-collapse:collapse;width:100%;background:#fff}\
th,td{border-bottom:1px solid #dde1e6;padding:.35em .5em;text-align:left;vertical-align:top}\
th{background:#eef1f4}code,pre{font:13px ui-monospace,monospace}\
pre{background:#fff;border:1px solid #dde1e6;padding:.7em;overflow:auto;white-space:pre-wrap;word-break:break-all}\
.state{padding:.1em .45em;border-radius:.3em;font-size:.9em}.pending{background:#fff1c2}\
.done{background:#d4f0d9}.dead{background:#f8d3d0}.undecodable{background:#e3e3e3}\
form.inline{display:inline}button{cursor:pointer}.panel{display:flex;gap:1em;flex-wrap:wrap}\
.card{background:#fff;border:1px solid #dde1e6;padding:.6em 1em;min-width:10em}\
.card b{display:block;font-size:1.4em}svg rect{fill:#3b6ea5}.muted{color:#66707a}\
nav.filters{margin-bottom:1em}nav.filters input,nav.filters select{margin-right:.6em}";

/// The admin listener's settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AdminConfig {
    /// Where to listen; a loopback address unless [`AdminConfig::token`] is set.
    pub addr: SocketAddr,
    /// The token every request must carry; required on a non-loopback address.
    pub token: Option<AdminToken>,
    /// The inbox backend's name, as the health panel shows it (`sqlite`, `postgres`, …).
    pub backend: String,
    /// How often the receivers record a heartbeat, to read their runs into gaps.
    pub heartbeat: Duration,
    /// How far each gap is widened on both sides, as `gaps --margin` does.
    pub gap_margin: Duration,
    /// What the subscriptions page and the catch-up buttons ask of Preservica; without it
    /// the page says there is nothing to show and gaps have no button.
    pub preservica: Option<Arc<dyn Preservica>>,
}

/// What the dashboard asks of the application, which holds the Preservica client, the
/// webhook secret and catch-up (the dashboard holds none of them).
pub trait Preservica: Send + Sync + fmt::Debug {
    /// The subscriptions on Preservica.
    ///
    /// # Errors
    /// Why they cannot be listed (no credentials, Preservica unreachable), for the page.
    fn list(&self) -> BoxFuture<'_, Result<Vec<Subscription>, String>>;

    /// Sends this receiver a signed test delivery; returns what happened, for the page.
    ///
    /// # Errors
    /// Why it could not be sent or was refused, for the page.
    fn send_test(&self) -> BoxFuture<'_, Result<String, String>>;

    /// Recovers what Preservica's records say was missed from `from` to `to` (ms since the
    /// Unix epoch), as `catch-up` does; returns what was filed, for the page.
    ///
    /// # Errors
    /// Why it could not, for the page.
    fn catch_up(&self, from: i64, to: i64) -> BoxFuture<'_, Result<String, String>>;
}

/// The admin token: compared in constant time, never printed.
#[derive(Clone)]
pub struct AdminToken(String);

/// Why the admin listener cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// A non-loopback address without a token.
    #[error(
        "the admin listener {0} is not a loopback address; give a token (--admin-token-file) \
         or listen on 127.0.0.1"
    )]
    NeedsToken(SocketAddr),
    /// An empty token.
    #[error("the admin token is empty; put a long random text in the token file")]
    EmptyToken,
    /// The address cannot be listened on.
    #[error("cannot listen on {addr} for the admin dashboard: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A bound admin listener; [`Admin::run`] serves it.
#[derive(Debug)]
pub struct Admin {
    listener: TcpListener,
    app: Arc<App>,
}

/// What every request shares.
struct App {
    store: Arc<dyn Store>,
    token: Option<AdminToken>,
    backend: String,
    heartbeat: Duration,
    gap_margin: Duration,
    preservica: Option<Arc<dyn Preservica>>,
    /// On a loopback listener, the `Host` values it answers (its own address and
    /// `localhost`), so a page on another site that a DNS name rebound to loopback cannot
    /// read it; `None` on any other address, which needs the token instead.
    hosts: Option<Vec<String>>,
    sessions: Mutex<HashMap<String, Session>>,
}

#[derive(Debug, Clone)]
struct Session {
    csrf: String,
    logged_in: bool,
    created: u64,
}

/// What a request carries that the pages need.
struct Visit {
    session_id: String,
    session: Session,
    new_session: bool,
}

impl AdminConfig {
    /// Settings for `addr`, without a token, showing `backend` as the inbox backend.
    pub fn new(addr: SocketAddr, backend: impl Into<String>) -> AdminConfig {
        AdminConfig {
            addr,
            token: None,
            backend: backend.into(),
            heartbeat: crate::run_log::DEFAULT_HEARTBEAT,
            gap_margin: crate::run_log::DEFAULT_GAP_MARGIN,
            preservica: None,
        }
    }
}

impl AdminToken {
    /// A token from its text (surrounding whitespace, such as a file's final newline, removed).
    ///
    /// # Errors
    /// [`AdminError::EmptyToken`] for an empty text.
    pub fn new(text: &str) -> Result<AdminToken, AdminError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(AdminError::EmptyToken);
        }
        Ok(AdminToken(text.to_owned()))
    }

    fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("backend", &self.backend)
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// Binds the admin listener over `store`.
    ///
    /// # Errors
    /// [`AdminError::NeedsToken`] for a non-loopback address without a token,
    /// [`AdminError::Bind`] when the address cannot be listened on.
    pub async fn bind(config: AdminConfig, store: Arc<dyn Store>) -> Result<Admin, AdminError> {
        if config.token.is_none() && !config.addr.ip().is_loopback() {
            return Err(AdminError::NeedsToken(config.addr));
        }
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|source| AdminError::Bind {
                addr: config.addr,
                source,
            })?;
        let local = listener.local_addr().map_err(|source| AdminError::Bind {
            addr: config.addr,
            source,
        })?;
        let hosts = local
            .ip()
            .is_loopback()
            .then(|| vec![local.to_string(), format!("localhost:{}", local.port())]);
        Ok(Admin {
            listener,
            app: Arc::new(App {
                store,
                token: config.token,
                backend: config.backend,
                heartbeat: config.heartbeat,
                gap_margin: config.gap_margin,
                preservica: config.preservica,
                hosts,
                sessions: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves the dashboard until the future is dropped.
    pub async fn run(self) {
        tracing::info!("admin dashboard on http://{}/", self.local_addr());
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10));
        loop {
            let (stream, _) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accepting an admin connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let app = Arc::clone(&self.app);
            let http = http.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let app = Arc::clone(&app);
                    async move { Ok::<_, Infallible>(app.respond(request).await) }
                });
                if let Err(err) = http.serve_connection(TokioIo::new(stream), service).await {
                    tracing::debug!(error = %err, "admin connection ended with an error");
                }
            });
        }
    }
}

type Answer = Response<Full<Bytes>>;

impl App {
    async fn respond(&self, request: Request<Incoming>) -> Answer {
        let mut answer = self.route(request).await;
        let headers = answer.headers_mut();
        for (name, value) in [
            ("content-security-policy", CSP),
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "same-origin"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        headers
            .entry(CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
        answer
    }

    async fn route(&self, request: Request<Incoming>) -> Answer {
        let path = request.uri().path().to_owned();
        if request.method() == Method::GET && path == "/style.css" {
            let mut answer = plain(StatusCode::OK, STYLE);
            set_type(&mut answer, "text/css; charset=utf-8");
            answer
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
            return answer;
        }
        if !self.right_host(&request) {
            return forbidden(
                "refused: this dashboard answers only to its own address (open it as \
                 http://127.0.0.1:PORT/ or http://localhost:PORT/)",
            );
        }
        let visit = self.visit(&request);
        let authorized = self.authorized(&request, &visit.session);
        let mut answer = if path == "/login" {
            self.login(request, &visit).await
        } else if !authorized {
            let mut answer = page(
                StatusCode::UNAUTHORIZED,
                "Sign in",
                login_form(&visit.session.csrf, None),
            );
            answer
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            answer
        } else if request.method() == Method::POST {
            self.action(request, &visit).await
        } else if request.method() == Method::GET {
            let query = request.uri().query().unwrap_or("").to_owned();
            self.view(&path, &query, &visit).await
        } else {
            plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        };
        if visit.new_session {
            let cookie = format!(
                "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
                visit.session_id
            );
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                answer.headers_mut().append(SET_COOKIE, value);
            }
        }
        answer
    }

    /// The request's session, or a new one.
    fn visit(&self, request: &Request<Incoming>) -> Visit {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(id) = session_cookie(request)
            && let Some(session) = sessions.get(id)
        {
            return Visit {
                session_id: id.to_owned(),
                session: session.clone(),
                new_session: false,
            };
        }
        if sessions.len() >= MAX_SESSIONS {
            let mut created: Vec<u64> = sessions.values().map(|it| it.created).collect();
            created.sort_unstable();
            let cut = created[created.len() / 2];
            sessions.retain(|_, it| it.created > cut);
        }
        let counter = sessions.values().map(|it| it.created).max().unwrap_or(0) + 1;
        let session = Session {
            csrf: random_hex(),
            logged_in: false,
            created: counter,
        };
        let id = random_hex();
        sessions.insert(id.clone(), session.clone());
        Visit {
            session_id: id,
            session,
            new_session: true,
        }
    }

    fn authorized(&self, request: &Request<Incoming>, session: &Session) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let bearer = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .is_some_and(|given| token.matches(given.trim()));
        bearer || session.logged_in
    }

    /// Whether the request names this dashboard in its `Host` (always true off loopback).
    fn right_host(&self, request: &Request<Incoming>) -> bool {
        let Some(hosts) = &self.hosts else {
            return true;
        };
        host(request).is_some_and(|host| hosts.iter().any(|it| it == host))
    }

    /// Whether a POST comes from this dashboard's own pages: its `Origin` is the address the
    /// browser opened, which the `Host` says (checked against the listener's own on loopback).
    fn same_origin(&self, request: &Request<Incoming>) -> bool {
        let Some(host) = host(request) else {
            return false;
        };
        let origin = request
            .headers()
            .get(ORIGIN)
            .and_then(|value| value.to_str().ok());
        origin.is_some_and(|origin| {
            origin.strip_prefix("http://") == Some(host)
                || (self.hosts.is_none() && origin.strip_prefix("https://") == Some(host))
        })
    }

    async fn read_form(
        &self,
        request: Request<Incoming>,
        visit: &Visit,
    ) -> Result<HashMap<String, String>, Answer> {
        if !self.same_origin(&request) {
            return Err(forbidden(
                "refused: this form did not come from the dashboard's own origin",
            ));
        }
        let Ok(body) = Limited::new(request.into_body(), MAX_FORM).collect().await else {
            return Err(plain(
                StatusCode::BAD_REQUEST,
                "form body too large or cut off\n",
            ));
        };
        let form: HashMap<String, String> = form_urlencoded::parse(&body.to_bytes())
            .into_owned()
            .collect();
        let token_ok = form
            .get("csrf")
            .is_some_and(|given| !visit.new_session && *given == visit.session.csrf);
        if !token_ok {
            return Err(forbidden(
                "refused: the form's session token is missing or stale; reload the page and try \
                 again",
            ));
        }
        Ok(form)
    }

    async fn login(&self, request: Request<Incoming>, visit: &Visit) -> Answer {
        if request.method() == Method::GET {
            return page(
                StatusCode::OK,
                "Sign in",
                login_form(&visit.session.csrf, None),
            );
        }
        if request.method() != Method::POST {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        }
        let form = match self.read_form(request, visit).await {
            Ok(form) => form,
            Err(answer) => return answer,
        };
        let Some(token) = &self.token else {
            return see_other("/");
        };
        if !form
            .get("token")
            .is_some_and(|given| token.matches(given.trim()))
        {
            return page(
                StatusCode::UNAUTHORIZED,
                "Sign in",
                login_form(
                    &visit.session.csrf,
                    Some("That token is not the admin token."),
                ),
            );
        }
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(session) = sessions.get_mut(&visit.session_id) {
            session.logged_in = true;
        }
        see_other("/")
    }

    async fn action(&self, request: Request<Incoming>, visit: &Visit) -> Answer {
        let path = request.uri().path().to_owned();
        let form = match self.read_form(request, visit).await {
            Ok(form) => form,
            Err(answer) => return answer,
        };
        let now = now_millis();
        if path == "/subscriptions/test" {
            return self.send_test().await;
        }
        if path == "/gaps/catch-up" {
            return self.catch_up(&form).await;
        }
        if path == "/dead/retry" {
            return match self.store.retry_dead(now).await {
                Ok(n) => {
                    tracing::info!("admin: re-queued {n} dead letters");
                    see_other("/dead")
                }
                Err(err) => store_failed(&err),
            };
        }
        let Some(id) = path
            .strip_prefix("/deliveries/")
            .and_then(|rest| rest.strip_suffix("/retry"))
            .and_then(parse_id)
        else {
            return not_found();
        };
        match self.store.retry(&id, now).await {
            Ok(true) => {
                tracing::info!("admin: re-queued dead letter {id}");
                see_other(&delivery_href(&id))
            }
            Ok(false) => page(
                StatusCode::CONFLICT,
                "Not a dead letter",
                html! { p { "Delivery " code { (id) } " is not a dead letter (any more); nothing changed. " a href=(delivery_href(&id)) { "Back to it" } } },
            ),
            Err(err) => store_failed(&err),
        }
    }

    async fn view(&self, path: &str, query: &str, visit: &Visit) -> Answer {
        let csrf = &visit.session.csrf;
        let result = match path {
            "/" | "/deliveries" => self.deliveries(query).await,
            "/dead" => self.dead(query, csrf).await,
            "/health" => self.health().await,
            "/gaps" => self.gaps(csrf).await,
            "/subscriptions" => Ok(Some(("Subscriptions", self.subscriptions(csrf).await))),
            "/export.jsonl" => return self.export().await,
            _ => match path.strip_prefix("/deliveries/").and_then(parse_id) {
                Some(id) => self.delivery(&id, csrf).await,
                None => return not_found(),
            },
        };
        match result {
            // The health panel reloads itself, to be read at a glance.
            Ok(Some((title, body))) => {
                let refresh = (path == "/health").then_some(30);
                page_refreshed(StatusCode::OK, title, body, refresh)
            }
            Ok(None) => not_found(),
            Err(err) => store_failed(&err),
        }
    }

    async fn deliveries(&self, query: &str) -> Result<Option<(&'static str, Markup)>, InboxError> {
        let params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .filter(|(_, value)| !value.trim().is_empty())
            .collect();
        let state = params
            .get("state")
            .and_then(|it| it.parse::<DeliveryState>().ok());
        let mut page_query = PageQuery::newest(PAGE);
        page_query.state = state.map_or(StateFilter::All, StateFilter::Only);
        page_query.trigger = params.get("trigger").map(|it| it.trim().to_owned());
        page_query.entity = params.get("entity").map(|it| it.trim().to_owned());
        page_query.text = params.get("q").map(|it| it.trim().to_owned());
        page_query.received_from = params.get("since").and_then(|it| moment(it));
        page_query.received_before = params.get("until").and_then(|it| moment(it));
        page_query.after = params.get("after").and_then(|cursor| parse_id(cursor));
        let page = self.store.page(&page_query).await?;
        let shown = &page.entries[..];
        let next = page.next.as_ref().map(|cursor| {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for key in ["state", "trigger", "entity", "q", "since", "until"] {
                if let Some(value) = params.get(key) {
                    query.append_pair(key, value);
                }
            }
            query.append_pair("after", &cursor.as_str());
            format!("/?{}", query.finish())
        });
        let stopped_short = next.is_some() && shown.len() < PAGE;
        let value = |key: &str| params.get(key).cloned().unwrap_or_default();
        let body = html! {
            h1 { "Deliveries" }
            nav.filters {
                form method="get" action="/" {
                    label { "State " select name="state" {
                        option value="" { "any" }
                        @for it in ["pending", "done", "dead", "undecodable"] {
                            option value=(it) selected[value("state") == it] { (it) }
                        }
                    } }
                    " "
                    label { "Trigger " input name="trigger" value=(value("trigger")) placeholder="MOVED"; }
                    label { "Entity reference " input name="entity" value=(value("entity")) placeholder="part of a ref"; }
                    label { "Body contains " input name="q" value=(value("q")) placeholder="any text"; }
                    label { "Received from " input type="datetime-local" name="since" value=(value("since")); }
                    label { "until " input type="datetime-local" name="until" value=(value("until")); }
                    button type="submit" { "Filter" }
                }
            }
            p.muted { (shown.len()) " matching on this page, newest first; times are UTC." }
            (entry_table(shown))
            @if stopped_short {
                p.muted { "The search stopped after " (page_query.max_scanned) " deliveries; older ones may match too." }
            }
            @if let Some(next) = next {
                p { a href=(next) rel="next" { "Older deliveries →" } }
            }
        };
        Ok(Some(("Deliveries", body)))
    }

    async fn delivery(
        &self,
        id: &DeliveryId,
        csrf: &str,
    ) -> Result<Option<(&'static str, Markup)>, InboxError> {
        let Some(entry) = self.store.get(id).await? else {
            return Ok(None);
        };
        let attempts = self.attempts(id).await?;
        let parsed = Delivery::from_slice(&entry.body);
        let raw = String::from_utf8_lossy(&entry.body);
        let pretty = serde_json::from_slice::<serde_json::Value>(&entry.body)
            .ok()
            .and_then(|value| serde_json::to_string_pretty(&value).ok());
        let body = html! {
            h1 { "Delivery " code { (entry.id) } " " (state_badge(entry.state)) }
            table {
                tr { th { "Received" } td { (entry.received_at) } }
                tr { th { "State" } td { (entry.state) } }
                tr { th { "Handler attempts" } td { (entry.attempts) } }
                tr { th { "Next attempt" } td { (entry.next_attempt_at.as_deref().unwrap_or("—")) } }
                tr { th { "Last error" } td { @if let Some(error) = &entry.last_error { pre { (error) } } @else { "—" } } }
                tr { th { "Trigger" } td { (entry.trigger.as_deref().unwrap_or("—")) } }
                tr { th { "Subscription" } td { (entry.subscription_id.as_deref().unwrap_or("—")) } }
                tr { th { "Redelivery key" } td { code { (entry.key) } } }
            }
            @if entry.state == DeliveryState::Dead {
                form method="post" action=(format!("{}/retry", delivery_href(&entry.id))) {
                    input type="hidden" name="csrf" value=(csrf);
                    p { button type="submit" id="retry" { "Retry this dead letter" } }
                }
            }
            (attempts)
            h2 { "Events" }
            @match &parsed {
                Ok(delivery) => {
                    table {
                        tr { th { "Event" } th { "Entity type" } th { "Entity reference" } th { "Identifiers" } }
                        @for event in &delivery.events {
                            tr {
                                td { (event.event.as_deref().unwrap_or("—")) }
                                td { @if let Some(kind) = &event.entity_type { (kind) } @else { "—" } }
                                td { code { (event.entity_ref.as_deref().unwrap_or("—")) } }
                                td { @for identifier in &event.identifiers { code { (identifier) } " " } }
                            }
                        }
                    }
                }
                Err(err) => p { "The body is not a delivery: " (err) }
            }
            h2 { "Body as received" }
            @if std::str::from_utf8(&entry.body).is_err() {
                p.muted { "Not UTF-8: invalid bytes are shown as �; the export keeps them (base64)." }
            }
            pre id="raw" { (raw) }
            @if let Some(pretty) = pretty {
                h2 { "Body, formatted" }
                pre { (pretty) }
            }
        };
        Ok(Some(("Delivery", body)))
    }

    /// The delivery page's table of finished attempts, oldest first, or a note when the
    /// store keeps none.
    async fn attempts(&self, id: &DeliveryId) -> Result<Markup, InboxError> {
        let attempts = match self.store.attempts(id).await {
            Ok(attempts) => attempts,
            Err(InboxError::Unsupported(_)) => {
                return Ok(html! {
                    h2 { "Attempts" }
                    p.muted { "This store keeps no attempt history: only the count and the last error above." }
                });
            }
            Err(err) => return Err(err),
        };
        Ok(html! {
            h2 { "Attempts" }
            @if attempts.is_empty() {
                p.muted { "No handler attempt has finished yet." }
            } @else {
                table id="attempts" {
                    tr { th { "Attempt" } th { "Finished" } th { "Outcome" } th { "Next due" } th { "Error" } }
                    @for attempt in &attempts {
                        tr {
                            td { (attempt.number) }
                            td { (crate::inbox::rfc3339(attempt.finished_at)) }
                            td { (attempt.outcome.as_str()) }
                            td { @if let Some(at) = attempt.outcome.retry_at() { (crate::inbox::rfc3339(at)) } @else { "—" } }
                            td { @if let Some(error) = attempt.error() { pre { (error) } } @else { "—" } }
                        }
                    }
                }
            }
        })
    }

    async fn dead(
        &self,
        query: &str,
        csrf: &str,
    ) -> Result<Option<(&'static str, Markup)>, InboxError> {
        let mut page_query = PageQuery::newest(PAGE);
        page_query.state = StateFilter::Only(DeliveryState::Dead);
        page_query.after = form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "after")
            .and_then(|(_, cursor)| parse_id(&cursor));
        let page = self.store.page(&page_query).await?;
        let entries = &page.entries;
        let dead = self.store.counts().await?.dead;
        let body = html! {
            h1 { "Dead letters" }
            @if entries.is_empty() && page_query.after.is_none() {
                p { "No dead letters." }
            } @else {
                form method="post" action="/dead/retry" {
                    input type="hidden" name="csrf" value=(csrf);
                    p { button type="submit" id="retry-all" { "Retry all " (dead) } }
                }
                table {
                    tr { th { "Id" } th { "Received" } th { "Trigger" } th { "Attempts" } th { "Last error" } th {} }
                    @for entry in entries {
                        tr {
                            td { a href=(delivery_href(&entry.id)) { (entry.id) } }
                            td { (entry.received_at) }
                            td { (entry.trigger.as_deref().unwrap_or("—")) }
                            td { (entry.attempts) }
                            td { (entry.last_error.as_deref().unwrap_or("—")) }
                            td {
                                form.inline method="post" action=(format!("{}/retry", delivery_href(&entry.id))) {
                                    input type="hidden" name="csrf" value=(csrf);
                                    button type="submit" { "Retry" }
                                }
                            }
                        }
                    }
                }
                @if let Some(next) = &page.next {
                    p { a href=(format!("/dead?after={}", utf8_percent_encode(&next.as_str(), NON_ALPHANUMERIC))) rel="next" { "Older dead letters →" } }
                }
            }
        };
        Ok(Some(("Dead letters", body)))
    }

    async fn health(&self) -> Result<Option<(&'static str, Markup)>, InboxError> {
        let counts = self.store.counts().await?;
        let now = now_millis();
        let activity = self.store.activity(now).await?;
        let (last, oldest_pending) = (activity.last_received_at, activity.oldest_pending_at);
        let body = html! {
            h1 { "Health" }
            div.panel {
                div.card { "Last delivery" b { (last.map_or("none yet".to_owned(), |at| ago(now - at))) } }
                div.card { "Backlog (pending)" b { (counts.pending) } }
                div.card { "Oldest pending" b { (oldest_pending.map_or("—".to_owned(), |at| ago(now - at))) } }
                div.card { "Dead letters" b { a href="/dead" { (counts.dead) } } }
                div.card { "Done" b { (counts.done) } }
                div.card { "Undecodable" b { (counts.undecodable) } }
                div.card { "Inbox backend" b { (self.backend) } }
                div.card { "Version" b { (env!("CARGO_PKG_VERSION")) } }
            }
            h2 { "Deliveries per minute, last hour" }
            (chart(&activity.per_minute))
        };
        Ok(Some(("Health", body)))
    }

    async fn catch_up(&self, form: &HashMap<String, String>) -> Answer {
        let Some(preservica) = &self.preservica else {
            return not_found();
        };
        let window = |key: &str| form.get(key).and_then(|it| it.parse::<i64>().ok());
        let (Some(from), Some(to)) = (window("from"), window("to")) else {
            return plain(
                StatusCode::BAD_REQUEST,
                "give the window as from and to (ms)\n",
            );
        };
        let (status, outcome) = match preservica.catch_up(from, to).await {
            Ok(outcome) => (StatusCode::OK, outcome),
            Err(why) => (StatusCode::BAD_GATEWAY, why),
        };
        page(
            status,
            "Catch-up",
            html! {
                h1 { "Catch-up from " (rfc3339(from)) " to " (rfc3339(to)) }
                p id="outcome" { (outcome) }
                p { a href="/" { "See the deliveries" } " · " a href="/gaps" { "Back to the gaps" } }
            },
        )
    }

    async fn gaps(&self, csrf: &str) -> Result<Option<(&'static str, Markup)>, InboxError> {
        let runs = match self.store.runs().await {
            Ok(runs) => runs,
            Err(InboxError::Unsupported(_)) => {
                return Ok(Some((
                    "Gaps",
                    html! { h1 { "Gaps" } p { "This inbox does not record when receivers ran, so gaps cannot be told." } },
                )));
            }
            Err(err) => return Err(err),
        };
        let gaps = crate::run_log::gaps(&runs, now_millis(), self.heartbeat, self.gap_margin);
        let body = html! {
            h1 { "Gaps" }
            p.muted { "Windows in which no receiver was running on this inbox (widened by " (length(i64::try_from(self.gap_margin.as_millis()).unwrap_or(i64::MAX))) " on both sides), from " (runs.len()) " recorded runs. Notifications Preservica sent then may be missing: catch up recovers them from Preservica's records." }
            @if gaps.is_empty() {
                p { "No gaps." }
            } @else {
                table {
                    tr { th { "From" } th { "To" } th { "Length" } th {} }
                    @for gap in &gaps {
                        tr {
                            td { (rfc3339(gap.from)) }
                            td { (rfc3339(gap.to)) }
                            td { (length(gap.to - gap.from)) }
                            td {
                                @if self.preservica.is_some() {
                                    form.inline method="post" action="/gaps/catch-up" {
                                        input type="hidden" name="csrf" value=(csrf);
                                        input type="hidden" name="from" value=(gap.from);
                                        input type="hidden" name="to" value=(gap.to);
                                        button type="submit" { "Catch up" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        };
        Ok(Some(("Gaps", body)))
    }

    async fn subscriptions(&self, csrf: &str) -> Markup {
        let Some(hooks) = &self.preservica else {
            return html! { h1 { "Subscriptions" } p { "This dashboard was started without access to Preservica's subscriptions." } };
        };
        let listed = hooks.list().await;
        html! {
            h1 { "Subscriptions" }
            form method="post" action="/subscriptions/test" {
                input type="hidden" name="csrf" value=(csrf);
                p { button type="submit" id="send-test" { "Send this receiver a signed test delivery" } }
            }
            @match listed {
                Ok(subscriptions) if subscriptions.is_empty() => p { "Preservica has no subscriptions for this user." },
                Ok(subscriptions) => table id="subscriptions" {
                    tr { th { "Id" } th { "URL" } th { "Trigger" } th { "Identifiers" } }
                    @for subscription in &subscriptions {
                        tr {
                            td { code { (subscription.id) } }
                            td { (subscription.url) }
                            td { @if let Some(trigger) = &subscription.trigger_type { (trigger) } @else { "—" } }
                            td { @if subscription.include_identifiers { "included" } @else { "—" } }
                        }
                    }
                },
                Err(why) => p { "Cannot list the subscriptions: " (why) },
            }
        }
    }

    async fn send_test(&self) -> Answer {
        let Some(hooks) = &self.preservica else {
            return not_found();
        };
        let (status, outcome) = match hooks.send_test().await {
            Ok(outcome) => (StatusCode::OK, outcome),
            Err(why) => (StatusCode::BAD_GATEWAY, why),
        };
        page(
            status,
            "Test delivery",
            html! { h1 { "Test delivery" } p id="outcome" { (outcome) } p { a href="/" { "See it in the deliveries" } } },
        )
    }

    async fn export(&self) -> Answer {
        let mut out = Vec::new();
        if let Err(err) = self.store.export(&mut out).await {
            return store_failed(&err);
        }
        let mut answer = Response::new(Full::new(Bytes::from(out)));
        set_type(&mut answer, "application/x-ndjson");
        answer.headers_mut().insert(
            CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"preservica-webhook-export.jsonl\""),
        );
        answer
    }
}

fn entry_table(entries: &[InboxEntry]) -> Markup {
    html! {
        table id="deliveries" {
            tr { th { "Id" } th { "Received" } th { "State" } th { "Trigger" } th { "Entities" } th { "Attempts" } th { "Next attempt" } }
            @for entry in entries {
                tr {
                    td { a href=(delivery_href(&entry.id)) { (entry.id) } }
                    td { (entry.received_at) }
                    td { (state_badge(entry.state)) }
                    td { (entry.trigger.as_deref().unwrap_or("—")) }
                    td { @for entity in &entry.entity_refs { code { (entity) } br; } }
                    td { (entry.attempts) }
                    td { (entry.next_attempt_at.as_deref().unwrap_or("—")) }
                }
            }
        }
    }
}

fn state_badge(state: DeliveryState) -> Markup {
    html! { span class=(format!("state {state}")) { (state) } }
}

/// A bar chart of 60 counts, drawn as SVG.
fn chart(counts: &[u32; 60]) -> Markup {
    let top = counts.iter().copied().max().unwrap_or(0).max(1);
    let (width, height) = (600u32, 120u32);
    html! {
        svg id="rate" xmlns="http://www.w3.org/2000/svg" width=(width) height=(height + 20) viewBox=(format!("0 0 {width} {}", height + 20)) role="img" {
            title { "Deliveries per minute over the last hour; at most " (top) " a minute" }
            @for (i, count) in counts.iter().enumerate() {
                @let bar = count * height / top;
                rect x=(i * 10 + 1) y=(height - bar) width="8" height=(bar) {
                    title { (count) " deliveries, " (59 - i) " minutes ago" }
                }
            }
            text x="0" y=(height + 15) font-size="11" { "60 min ago" }
            text x=(width - 24) y=(height + 15) font-size="11" { "now" }
            text x=(width / 2 - 30) y=(height + 15) font-size="11" { "max " (top) "/min" }
        }
    }
}

fn page(status: StatusCode, title: &str, body: Markup) -> Answer {
    page_refreshed(status, title, body, None)
}

/// A page that the browser reloads every `refresh` seconds, when given.
fn page_refreshed(status: StatusCode, title: &str, body: Markup, refresh: Option<u32>) -> Answer {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(seconds) = refresh { meta http-equiv="refresh" content=(seconds); }
                title { (title) " · preservica-webhook" }
                link rel="stylesheet" href="/style.css";
            }
            body {
                header {
                    strong { "preservica-webhook" }
                    a href="/" { "Deliveries" }
                    a href="/dead" { "Dead letters" }
                    a href="/health" { "Health" }
                    a href="/gaps" { "Gaps" }
                    a href="/subscriptions" { "Subscriptions" }
                    a href="/export.jsonl" { "Export" }
                }
                main { (body) }
            }
        }
    };
    let mut answer = Response::new(Full::new(Bytes::from(markup.into_string())));
    *answer.status_mut() = status;
    set_type(&mut answer, "text/html; charset=utf-8");
    answer
}

fn login_form(csrf: &str, problem: Option<&str>) -> Markup {
    html! {
        h1 { "Sign in" }
        @if let Some(problem) = problem { p { strong { (problem) } } }
        form method="post" action="/login" {
            input type="hidden" name="csrf" value=(csrf);
            label { "Admin token " input type="password" name="token" autocomplete="current-password"; }
            " "
            button type="submit" { "Sign in" }
        }
        p.muted { "The token is in the file given to serve with --admin-token-file." }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *answer.status_mut() = status;
    set_type(&mut answer, "text/plain; charset=utf-8");
    answer
}

fn forbidden(why: &'static str) -> Answer {
    page(
        StatusCode::FORBIDDEN,
        "Refused",
        html! { h1 { "Refused" } p { (why) } },
    )
}

fn not_found() -> Answer {
    page(
        StatusCode::NOT_FOUND,
        "Not found",
        html! { h1 { "Not found" } p { "No such page or delivery. " a href="/" { "All deliveries" } } },
    )
}

fn store_failed(err: &InboxError) -> Answer {
    tracing::warn!(error = %err, "admin dashboard: the inbox failed");
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Inbox unavailable",
        html! { h1 { "The inbox cannot be read just now" } p { "The error is in the receiver's log; reload to try again." } },
    )
}

fn see_other(location: &str) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::new()));
    *answer.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::from_str(location) {
        answer.headers_mut().insert(LOCATION, value);
    }
    answer
}

fn set_type(answer: &mut Answer, content_type: &'static str) {
    answer
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
}

fn host(request: &Request<Incoming>) -> Option<&str> {
    request
        .headers()
        .get(http::header::HOST)
        .and_then(|value| value.to_str().ok())
}

fn session_cookie(request: &Request<Incoming>) -> Option<&str> {
    request
        .headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
}

fn delivery_href(id: &DeliveryId) -> String {
    format!(
        "/deliveries/{}",
        utf8_percent_encode(&id.as_str(), NON_ALPHANUMERIC)
    )
}

fn parse_id(segment: &str) -> Option<DeliveryId> {
    let decoded = percent_decode_str(segment).decode_utf8().ok()?;
    decoded.parse().ok()
}

fn random_hex() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn millis(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|at| at.timestamp_millis())
}

/// A moment a filter gives: RFC 3339, or a date and time (as a browser's `datetime-local`
/// sends it) or a date alone, both in UTC.
fn moment(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Some(at) = millis(text) {
        return Some(at);
    }
    ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|format| chrono::NaiveDateTime::parse_from_str(text, format).ok())
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|date| date.and_hms_opt(0, 0, 0))
        })
        .map(|at| at.and_utc().timestamp_millis())
}

fn rfc3339(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis).map_or_else(
        || millis.to_string(),
        |at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// How long ago, roughly: `42 s ago`, `5 min ago`.
fn ago(ms: i64) -> String {
    format!("{} ago", length(ms))
}

/// A length of time, roughly: `42 s`, `5 min`, `3 h 10 min`, `2 d 4 h`.
fn length(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(ids: &[u64]) -> Vec<InboxEntry> {
        ids.iter()
            .map(|id| {
                crate::inbox::entry(
                    DeliveryId::from(*id),
                    &[0; 32],
                    DeliveryState::Done,
                    0,
                    1,
                    None,
                    None,
                    Bytes::new(),
                )
            })
            .collect()
    }

    #[test]
    fn a_cursor_continues_after_the_last_id_shown_even_when_it_is_gone() {
        let newest_first = entries(&[9, 7, 5, 3]);
        let check = |cursor: &str, start: usize| {
            assert_eq!(
                crate::store::page::after_cursor(&newest_first, &cursor.parse().unwrap()),
                start,
                "{cursor}"
            );
        };
        check("9", 1);
        check("5", 3);
        check("3", 4);
        check("8", 1);
        check("6", 2);
        check("1", 4);
        check("not-a-number", 0);
    }

    #[test]
    fn filter_moments_are_read_as_utc() {
        let check = |text: &str, expected: Option<&str>| {
            let expected = expected.map(|it| millis(it).unwrap());
            assert_eq!(moment(text), expected, "{text}");
        };
        check("2026-12-02T14:35:09.934Z", Some("2026-12-02T14:35:09.934Z"));
        check("2026-12-02T16:35:09+02:00", Some("2026-12-02T14:35:09Z"));
        check("2026-12-02T14:35", Some("2026-12-02T14:35:00Z"));
        check(" 2026-12-02 14:35 ", Some("2026-12-02T14:35:00Z"));
        check("2026-12-02", Some("2026-12-02T00:00:00Z"));
        check("yesterday", None);
    }

    #[test]
    fn lengths_are_rounded_to_their_largest_units() {
        for (ms, text) in [
            (-5, "0 s"),
            (59_999, "59 s"),
            (60_000, "1 min"),
            (3_660_000, "1 h 1 min"),
            (90_000_000, "1 d 1 h"),
        ] {
            assert_eq!(length(ms), text);
        }
    }

    #[test]
    fn the_chart_draws_a_bar_per_minute_scaled_to_the_busiest() {
        let mut counts = [0u32; 60];
        counts[59] = 4;
        counts[0] = 2;
        let svg = chart(&counts).into_string();
        assert_eq!(svg.matches("<rect").count(), 60);
        assert!(
            svg.contains(r#"<rect x="591" y="0" width="8" height="120">"#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"<rect x="1" y="60" width="8" height="60">"#),
            "{svg}"
        );
        assert!(svg.contains("max 4/min"), "{svg}");
    }

    #[test]
    fn the_token_matches_itself_alone() {
        let token = AdminToken::new(" s3cret\n").unwrap();
        assert!(token.matches("s3cret"));
        assert!(!token.matches("s3cre"));
        assert!(!token.matches("s3cret "));
        assert_eq!(format!("{token:?}"), "AdminToken(***)");
        assert!(matches!(
            AdminToken::new(" \n"),
            Err(AdminError::EmptyToken)
        ));
    }
}
