//! The client's one error type.

use std::fmt;

use reqwest::StatusCode;

use crate::credentials::CredentialsError;

/// The roles of which Preservica's webhook API needs one.
pub const WEBHOOK_ROLES: [&str; 3] = [
    "ROLE_SDB_MANAGER_USER",
    "ROLE_SDB_CONFIG_MANAGER_USER",
    "ROLE_SDB_ADMIN_USER",
];

/// What went wrong talking to Preservica.
///
/// No variant ever carries a password, token or two-factor seed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request did not get an answer (connection refused, DNS, TLS, timeout, broken body).
    #[error("could not {operation}: no answer from Preservica")]
    Transport {
        /// What the client was doing.
        operation: &'static str,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// Preservica answered with an unexpected status.
    #[error("could not {operation}: Preservica answered {status}: {message}{}", hint.map(|it| format!("; {it}")).unwrap_or_default())]
    Status {
        /// What the client was doing.
        operation: &'static str,
        /// The HTTP status.
        status: StatusCode,
        /// Preservica's message (its JSON `message`, else the start of the body).
        message: String,
        /// The start of the body as received (at most 4 KiB).
        body: String,
        /// What the status probably means, when the client can tell.
        hint: Option<&'static str>,
    },
    /// The login was refused (wrong username, password or tenant).
    #[error(
        "Preservica refused the login ({status}): {message}; check the username, password and tenant"
    )]
    Authentication {
        /// The HTTP status.
        status: StatusCode,
        /// Preservica's message.
        message: String,
    },
    /// A request was refused with 401 even after logging in again.
    #[error(
        "could not {operation}: Preservica refused the access token even right after a new login; check that the user may use the API"
    )]
    Unauthorized {
        /// What the client was doing.
        operation: &'static str,
    },
    /// Two-factor authentication is on, but no seed was given.
    #[error(
        "two-factor authentication is on for this user but no seed was given; set PRESERVICA_2FA_TOKEN, `twoFactorToken` in credentials.properties, or the builder's two_factor_seed to the base32 seed of the user's authenticator"
    )]
    TwoFactorSeedMissing,
    /// Two-factor authentication is on but not yet set up for the user.
    #[error(
        "two-factor authentication is switched on for this user but not set up; finish the setup in Preservica's web interface first"
    )]
    TwoFactorNotSetUp,
    /// Preservica refused the two-factor code.
    #[error(
        "Preservica refused the two-factor code ({status}): {message}; check the seed and that this computer's clock is right"
    )]
    TwoFactorRejected {
        /// The HTTP status.
        status: StatusCode,
        /// Preservica's message.
        message: String,
    },
    /// The thing asked for does not exist.
    #[error("{what} was not found on Preservica")]
    NotFound {
        /// What was looked for (`asset 7fde…`, `subscription 4583…`).
        what: String,
    },
    /// Preservica refused the call for lack of permission (403).
    #[error("could not {operation}: Preservica refused permission (403): {message}; {}", RolesAdvice(roles.as_deref()))]
    Permission {
        /// What the client was doing.
        operation: &'static str,
        /// Preservica's message.
        message: String,
        /// The user's roles from `/api/user/details`; `None` when they could not be looked up.
        roles: Option<Vec<String>>,
    },
    /// An answer could not be understood.
    #[error("could not read Preservica's answer to {what}: {detail}")]
    Decode {
        /// Which answer.
        what: &'static str,
        /// What did not fit.
        detail: String,
    },
    /// Writing a thumbnail failed.
    #[error("could not write the thumbnail to {target}")]
    Write {
        /// Where it was going.
        target: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The login could not be put together.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// A builder setting is missing or invalid.
    #[error("invalid client configuration: {0}")]
    Configuration(String),
}

impl Error {
    /// True when the thing asked for does not exist (404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// True for errors the user fixes in configuration: credentials, builder settings, a
    /// refused login, a missing or unset two-factor seed. A command-line program exits 2.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            Error::Credentials(_)
                | Error::Configuration(_)
                | Error::Authentication { .. }
                | Error::TwoFactorSeedMissing
                | Error::TwoFactorNotSetUp
        )
    }

    /// The HTTP status Preservica answered, when the error came from one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Status { status, .. }
            | Error::Authentication { status, .. }
            | Error::TwoFactorRejected { status, .. } => Some(*status),
            Error::Unauthorized { .. } => Some(StatusCode::UNAUTHORIZED),
            Error::NotFound { .. } => Some(StatusCode::NOT_FOUND),
            Error::Permission { .. } => Some(StatusCode::FORBIDDEN),
            Error::Transport { source, .. } => source.status(),
            _ => None,
        }
    }
}

/// Renders which roles the user has and which one is needed.
struct RolesAdvice<'a>(Option<&'a [String]>);

impl fmt::Display for RolesAdvice<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let needed = "the webhook API needs ROLE_SDB_MANAGER_USER or ROLE_SDB_CONFIG_MANAGER_USER (or ROLE_SDB_ADMIN_USER)";
        match self.0 {
            None => write!(f, "{needed}; the user's roles could not be looked up"),
            Some([]) => write!(f, "the user has no roles; {needed}; ask an administrator"),
            Some(roles) => {
                let has_one = roles
                    .iter()
                    .any(|role| WEBHOOK_ROLES.contains(&role.as_str()));
                write!(f, "the user has {}; ", roles.join(", "))?;
                if has_one {
                    write!(
                        f,
                        "{needed}, which the user has, so the server's permission settings (ConfigManager on 8.1+) refuse it; ask an administrator"
                    )
                } else {
                    write!(f, "{needed}; ask an administrator to grant one")
                }
            }
        }
    }
}
