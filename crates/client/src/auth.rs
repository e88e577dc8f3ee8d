//! Logging in and keeping one access token for all callers.
//!
//! The token lives behind an async mutex. A caller that finds it missing or about to run out
//! renews it while holding the lock, so concurrent callers wait for that one renewal instead of
//! logging in themselves. Each new token gets a generation number: a caller whose request was
//! refused with 401 asks for a renewal of the generation it used, and only the first such caller
//! logs in again; the others find a newer generation and take it.
//!
//! A login refused for its credentials is not repeated for the callers that waited for it:
//! they get the same refusal, so twenty concurrent calls with a wrong password make one failed
//! login, not twenty (servers lock accounts after repeated failures).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use serde::Deserialize;
use tokio::sync::{Mutex, MutexGuard};
use totp_rs::{Algorithm, TOTP};

use crate::credentials::Sensitive;
use crate::error::Error;
use crate::transport::{self, Repeat, TOKEN_HEADER, Transport};

/// How long a token lives when the login answer does not say (Preservica's usual 15 minutes).
const DEFAULT_VALID_FOR: Duration = Duration::from_secs(15 * 60);

/// Who logs in, and the one access token shared by all clones of a client.
pub(crate) struct Auth {
    username: String,
    password: Sensitive,
    totp: Option<TOTP>,
    state: Mutex<AuthState>,
    /// Finished login attempts; read before waiting for `state`, so a caller can tell that an
    /// attempt ended while it waited.
    login_attempts: AtomicU64,
    unix_time: fn() -> u64,
}

/// Removes the password and the tokens held now from text a server sent back. It holds the
/// token lock, so the tokens cannot change while it is in use.
pub(crate) struct Redactor<'a> {
    password: &'a str,
    state: MutexGuard<'a, AuthState>,
}

impl Redactor<'_> {
    /// `text` with the password and the access and refresh tokens replaced by `***`.
    pub(crate) fn redact(&self, text: &str) -> String {
        self.state
            .tokens()
            .into_iter()
            .flatten()
            .fold(transport::redact(text, self.password), |text, token| {
                transport::redact(&text, token)
            })
    }
}

/// The token state.
#[derive(Default)]
struct AuthState {
    session: Option<Session>,
    generation: u64,
    tenant: Option<String>,
    /// Why the last login attempt was refused, when it was refused for its credentials.
    refusal: Option<Refusal>,
}

/// A login refusal, kept to hand to the callers that waited for that attempt.
#[derive(Clone)]
enum Refusal {
    Credentials { status: StatusCode, message: String },
    SeedMissing,
    NotSetUp,
    CodeRejected { status: StatusCode, message: String },
}

impl Refusal {
    fn of(error: &Error) -> Option<Refusal> {
        Some(match error {
            Error::Authentication { status, message } => Refusal::Credentials {
                status: *status,
                message: message.clone(),
            },
            Error::TwoFactorSeedMissing => Refusal::SeedMissing,
            Error::TwoFactorNotSetUp => Refusal::NotSetUp,
            Error::TwoFactorRejected { status, message } => Refusal::CodeRejected {
                status: *status,
                message: message.clone(),
            },
            _ => return None,
        })
    }

    fn to_error(&self) -> Error {
        match self.clone() {
            Refusal::Credentials { status, message } => Error::Authentication { status, message },
            Refusal::SeedMissing => Error::TwoFactorSeedMissing,
            Refusal::NotSetUp => Error::TwoFactorNotSetUp,
            Refusal::CodeRejected { status, message } => {
                Error::TwoFactorRejected { status, message }
            }
        }
    }
}

impl AuthState {
    /// The access and refresh tokens held now, to keep them out of errors.
    fn tokens(&self) -> [Option<&str>; 2] {
        let session = self.session.as_ref();
        [
            session.map(|it| it.token.as_str()),
            session.and_then(|it| it.refresh_token.as_deref()),
        ]
    }
}

/// One access token, with what is needed to renew it.
struct Session {
    token: String,
    refresh_token: Option<String>,
    obtained: Instant,
    valid_for: Duration,
}

impl Session {
    /// Whether the token is close enough to its end to renew it before use: within a fifth of
    /// its lifetime, at most a minute.
    fn needs_renewal(&self, now: Instant) -> bool {
        let margin = (self.valid_for / 5).min(Duration::from_secs(60));
        now.saturating_duration_since(self.obtained) + margin >= self.valid_for
    }
}

/// An access token handed to one request, with the generation it belongs to.
pub(crate) struct Token {
    pub(crate) value: String,
    pub(crate) generation: u64,
}

/// The JSON of the login, refresh and complete-2fa answers. Not `Debug`: it holds tokens.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LoginAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default, rename = "refresh-token")]
    refresh_token: Option<String>,
    #[serde(default)]
    valid_for: Option<f64>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    continuation_token: Option<String>,
}

/// Makes the TOTP generator for a base32 seed (RFC 6238: SHA-1, 6 digits, 30 s).
///
/// Spaces, dashes and `=` padding are ignored and case does not matter, as authenticator apps
/// show seeds in groups.
pub(crate) fn totp(seed: &str) -> Result<TOTP, Error> {
    let cleaned: String = seed
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '='))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let bytes = totp_rs::Secret::Encoded(cleaned)
        .to_bytes()
        .ok()
        .filter(|it| !it.is_empty())
        .ok_or_else(|| {
            Error::Configuration(
                "the two-factor seed is not valid base32; give the seed as Preservica showed it when two-factor authentication was set up".to_owned(),
            )
        })?;
    Ok(TOTP::new_unchecked(Algorithm::SHA1, 6, 1, 30, bytes))
}

impl Auth {
    /// Logs in as `username` with `password` (and `totp` codes when Preservica asks), into
    /// `tenant` when given; `unix_time` is the clock the two-factor codes are made with.
    pub(crate) fn new(
        username: String,
        password: Sensitive,
        totp: Option<TOTP>,
        tenant: Option<String>,
        unix_time: fn() -> u64,
    ) -> Auth {
        Auth {
            username,
            password,
            totp,
            state: Mutex::new(AuthState {
                tenant,
                ..AuthState::default()
            }),
            login_attempts: AtomicU64::new(0),
            unix_time,
        }
    }

    /// The user name.
    pub(crate) fn username(&self) -> &str {
        &self.username
    }

    /// Whether a two-factor seed is configured.
    pub(crate) fn has_two_factor(&self) -> bool {
        self.totp.is_some()
    }

    /// The tenant: as configured, or as learned from the last login.
    pub(crate) async fn tenant(&self) -> Option<String> {
        self.state.lock().await.tenant.clone()
    }

    /// A redactor for the secrets held now (waits for a login in progress).
    pub(crate) async fn redactor(&self) -> Redactor<'_> {
        Redactor {
            password: self.password.expose(),
            state: self.state.lock().await,
        }
    }

    /// The current token, logging in or renewing first when needed.
    pub(crate) async fn token(&self, transport: &Transport) -> Result<Token, Error> {
        let attempts_seen = self.login_attempts.load(Ordering::SeqCst);
        let mut state = self.state.lock().await;
        let fresh = state
            .session
            .as_ref()
            .is_some_and(|session| !session.needs_renewal(Instant::now()));
        if !fresh {
            self.refused_while_waiting(&state, attempts_seen)?;
            self.renew(transport, &mut state).await?;
        }
        Ok(current(&state))
    }

    /// After a 401 with the token of `generation`: one new login for all callers that saw it.
    pub(crate) async fn renew_after_unauthorized(
        &self,
        transport: &Transport,
        generation: u64,
    ) -> Result<Token, Error> {
        let attempts_seen = self.login_attempts.load(Ordering::SeqCst);
        let mut state = self.state.lock().await;
        let already_renewed = state.session.is_some() && state.generation != generation;
        if !already_renewed {
            self.refused_while_waiting(&state, attempts_seen)?;
            tracing::debug!("access token refused; logging in again");
            state.session = None;
            self.login(transport, &mut state).await?;
        }
        Ok(current(&state))
    }

    /// The refusal of a login attempt that ended while this caller waited for the lock.
    fn refused_while_waiting(&self, state: &AuthState, attempts_seen: u64) -> Result<(), Error> {
        let attempt_ended = self.login_attempts.load(Ordering::SeqCst) != attempts_seen;
        match &state.refusal {
            Some(refusal) if attempt_ended => Err(refusal.to_error()),
            _ => Ok(()),
        }
    }

    /// Renews with the refresh token when there is one, else (or when that fails) logs in.
    async fn renew(&self, transport: &Transport, state: &mut AuthState) -> Result<(), Error> {
        let Some(old) = state.session.take() else {
            return self.login(transport, state).await;
        };
        let Some(refresh_token) = old.refresh_token else {
            return self.login(transport, state).await;
        };
        match self
            .refresh(transport, state, &old.token, &refresh_token)
            .await
        {
            Ok(()) => Ok(()),
            Err(err) => {
                tracing::debug!(error = %err, "token refresh failed; logging in again");
                self.login(transport, state).await
            }
        }
    }

    async fn refresh(
        &self,
        transport: &Transport,
        state: &mut AuthState,
        token: &str,
        refresh_token: &str,
    ) -> Result<(), Error> {
        const OPERATION: &str = "refresh the access token";
        let (status, answer) = self
            .post_login_form(
                transport,
                OPERATION,
                "refresh",
                Repeat::Safe,
                Some(token),
                &[("refreshToken", refresh_token)],
            )
            .await?;
        match answer.token {
            Some(_) if status.is_success() => {
                self.start_session(state, answer);
                tracing::debug!("access token refreshed");
                Ok(())
            }
            _ => Err(Error::Authentication {
                status,
                message: self.redact_with(
                    answer.message.as_deref().unwrap_or("no token"),
                    &[token, refresh_token],
                ),
            }),
        }
    }

    /// Logs in, recording how the attempt ended for the callers waiting for it.
    async fn login(&self, transport: &Transport, state: &mut AuthState) -> Result<(), Error> {
        let result = self.login_once(transport, state).await;
        state.refusal = result.as_ref().err().and_then(Refusal::of);
        self.login_attempts.fetch_add(1, Ordering::SeqCst);
        result
    }

    async fn login_once(&self, transport: &Transport, state: &mut AuthState) -> Result<(), Error> {
        const OPERATION: &str = "log in";
        let mut form = vec![
            ("username", self.username.as_str()),
            ("password", self.password.expose()),
        ];
        let tenant = state.tenant.clone();
        match tenant.as_deref() {
            Some(tenant) => form.push(("tenant", tenant)),
            None => form.push(("includeUserDetails", "true")),
        }
        let (status, answer) = self
            .post_login_form(transport, OPERATION, "login", Repeat::Safe, None, &form)
            .await?;
        if status.is_success() && answer.token.is_some() {
            self.start_session(state, answer);
            tracing::debug!(user = %self.username, "logged in");
            return Ok(());
        }
        match answer.message.as_deref() {
            Some("needs.2fa") => self.complete_two_factor(transport, state, answer).await,
            Some("needs.2fa.setup") => Err(Error::TwoFactorNotSetUp),
            message if status.is_client_error() => Err(Error::Authentication {
                status,
                message: self.redact(message.unwrap_or("no message")),
            }),
            message => Err(Error::Status {
                operation: OPERATION,
                status,
                message: self.redact(message.unwrap_or("no token in the answer")),
                body: String::new(),
                hint: None,
            }),
        }
    }

    async fn complete_two_factor(
        &self,
        transport: &Transport,
        state: &mut AuthState,
        challenge: LoginAnswer,
    ) -> Result<(), Error> {
        const OPERATION: &str = "complete the two-factor login";
        let Some(totp) = &self.totp else {
            return Err(Error::TwoFactorSeedMissing);
        };
        let continuation = challenge.continuation_token.ok_or(Error::Decode {
            what: "the login",
            detail: "Preservica asked for two-factor authentication without a continuationToken"
                .to_owned(),
        })?;
        if state.tenant.is_none() {
            state.tenant = challenge.tenant;
        }
        let code = totp.generate((self.unix_time)());
        let mut form = vec![
            ("username", self.username.as_str()),
            ("continuationToken", continuation.as_str()),
            ("twoFactorToken", code.as_str()),
        ];
        let tenant = state.tenant.clone();
        if let Some(tenant) = tenant.as_deref() {
            form.push(("tenant", tenant));
        }
        let (status, answer) = self
            .post_login_form(
                transport,
                OPERATION,
                "complete-2fa",
                Repeat::ConnectOnly,
                None,
                &form,
            )
            .await?;
        if status.is_success() && answer.token.is_some() {
            self.start_session(state, answer);
            tracing::debug!(user = %self.username, "logged in with two-factor authentication");
            return Ok(());
        }
        Err(Error::TwoFactorRejected {
            status,
            message: self.redact_with(
                answer
                    .message
                    .as_deref()
                    .unwrap_or("no token in the answer"),
                &[continuation.as_str()],
            ),
        })
    }

    /// POSTs a form to `/api/accesstoken/{action}` (with the access token when given) and reads
    /// the login-shaped answer with its status.
    async fn post_login_form(
        &self,
        transport: &Transport,
        operation: &'static str,
        action: &str,
        repeat: Repeat,
        token: Option<&str>,
        form: &[(&str, &str)],
    ) -> Result<(reqwest::StatusCode, LoginAnswer), Error> {
        let url = transport.endpoint(&["api", "accesstoken", action]);
        let response = transport
            .send(operation, repeat, || {
                let request = transport
                    .http()
                    .post(url.clone())
                    .header(ACCEPT, "application/json")
                    .form(form);
                match token {
                    Some(token) => request.header(TOKEN_HEADER, token),
                    None => request,
                }
            })
            .await?;
        let status = response.status();
        let answer = self.read_login_answer(operation, response).await?;
        Ok((status, answer))
    }

    /// Reads a login-shaped answer; a body that is not JSON reads as empty (the status decides).
    async fn read_login_answer(
        &self,
        operation: &'static str,
        response: reqwest::Response,
    ) -> Result<LoginAnswer, Error> {
        let status = response.status();
        let body = transport::read_body(operation, "the login", response).await?;
        match serde_json::from_slice::<LoginAnswer>(&body) {
            Ok(answer) => Ok(answer),
            Err(err) if status.is_success() => Err(Error::Decode {
                what: "the login",
                detail: format!("not the expected JSON ({err})"),
            }),
            Err(_) => Ok(LoginAnswer {
                message: Some(self.redact(&transport::message_of(status, &body))),
                ..LoginAnswer::default()
            }),
        }
    }

    /// Removes the password from text that came back from the server.
    fn redact(&self, text: &str) -> String {
        transport::redact(text, self.password.expose())
    }

    /// Removes the password and each of `also` (tokens the answer may echo) from `text`.
    fn redact_with(&self, text: &str, also: &[&str]) -> String {
        also.iter().fold(self.redact(text), |text, secret| {
            transport::redact(&text, secret)
        })
    }

    fn start_session(&self, state: &mut AuthState, answer: LoginAnswer) {
        if state.tenant.is_none() {
            state.tenant = answer.tenant;
        }
        let valid_for = answer
            .valid_for
            .filter(|minutes| minutes.is_finite() && *minutes >= 0.0)
            .map_or(DEFAULT_VALID_FOR, |minutes| {
                Duration::from_secs_f64(minutes.min(1e6) * 60.0)
            });
        state.generation += 1;
        state.session = Some(Session {
            token: answer.token.unwrap_or_default(),
            refresh_token: answer.refresh_token,
            obtained: Instant::now(),
            valid_for,
        });
    }
}

fn current(state: &AuthState) -> Token {
    Token {
        value: state
            .session
            .as_ref()
            .map(|it| it.token.clone())
            .unwrap_or_default(),
        generation: state.generation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totp_matches_rfc_6238_vectors_in_six_digits() {
        // RFC 6238 appendix B, SHA-1 seed "12345678901234567890", last six digits.
        let totp = totp("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
        assert_eq!(totp.generate(59), "287082");
        assert_eq!(totp.generate(1_111_111_109), "081804");
        assert_eq!(totp.generate(1_234_567_890), "005924");
        let spaced = super::totp("gezd gnbv gy3t qojq gezd gnbv gy3t qojq").unwrap();
        assert_eq!(spaced.generate(59), "287082");
    }

    #[test]
    fn refuses_seeds_that_are_not_base32() {
        for seed in ["not base32!", "", "1111"] {
            let err = totp(seed).unwrap_err();
            assert!(err.is_configuration(), "{seed}: {err:?}");
            assert!(!err.to_string().contains(seed) || seed.is_empty());
        }
    }

    #[test]
    fn renews_within_a_fifth_of_the_lifetime_at_most_a_minute() {
        let start = Instant::now();
        let session = |minutes: u64| Session {
            token: String::new(),
            refresh_token: None,
            obtained: start,
            valid_for: Duration::from_secs(minutes * 60),
        };
        let fifteen = session(15);
        assert!(!fifteen.needs_renewal(start));
        assert!(!fifteen.needs_renewal(start + Duration::from_secs(13 * 60 + 59)));
        assert!(fifteen.needs_renewal(start + Duration::from_secs(14 * 60)));
        let two = session(2);
        assert!(!two.needs_renewal(start + Duration::from_secs(95)));
        assert!(two.needs_renewal(start + Duration::from_secs(96)));
        assert!(session(0).needs_renewal(start));
    }
}
