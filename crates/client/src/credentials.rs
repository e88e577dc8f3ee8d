//! Where the Preservica login comes from: explicit values, the environment, or a
//! `credentials.properties` file, first found wins (the order pyPreservica users know).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use ini::{Ini, ParseOption};

/// The properties file looked for in the working directory when no file is given.
pub const DEFAULT_CREDENTIALS_FILE: &str = "credentials.properties";

/// The section of the properties file that holds the login.
const SECTION: &str = "credentials";

/// Explicit values (e.g. command-line flags); any left `None` fall through to the environment,
/// then the properties file.
///
/// Its `Debug` shows whether a password or seed is set, never its value.
#[derive(Default, Clone)]
pub struct CredentialOverrides {
    /// Host name (`eu.preservica.com`) or full base URL (`http://127.0.0.1:8080`).
    pub server: Option<String>,
    /// The user to log in as.
    pub username: Option<String>,
    /// The user's password.
    pub password: Option<String>,
    /// The tenant; learned from the login answer when absent.
    pub tenant: Option<String>,
    /// The base32 seed of the user's two-factor authenticator.
    pub two_factor_seed: Option<String>,
}

impl fmt::Debug for CredentialOverrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialOverrides")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| Redacted))
            .field("tenant", &self.tenant)
            .field(
                "two_factor_seed",
                &self.two_factor_seed.as_ref().map(|_| Redacted),
            )
            .finish()
    }
}

/// A complete login: server, username and password, with an optional tenant and two-factor
/// seed.
///
/// Its `Debug` never shows the password or the seed.
#[derive(Clone)]
pub struct Credentials {
    server: String,
    username: String,
    password: Sensitive,
    tenant: Option<String>,
    two_factor_seed: Option<Sensitive>,
}

/// The `[credentials]` section of a `credentials.properties` file, read with a real INI parser.
///
/// Values are taken literally: no quote removal and no backslash escapes, as Python's
/// `configparser` (which pyPreservica uses) reads them. Its `Debug` lists the keys only.
pub struct PropertiesFile {
    path: PathBuf,
    entries: Vec<(String, String)>,
}

/// Why no complete login could be put together.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// Required values were found nowhere; every one of them is named at once.
    #[error(
        "no Preservica {} given: looked in the environment ({}) and under [credentials] in {} ({}); give each in one of these places",
        MissingList(missing, |it| it.value),
        MissingList(missing, |it| it.env_var),
        file.display(),
        file_state,
    )]
    Missing {
        /// The values found nowhere, in the order server, username, password.
        missing: Vec<MissingValue>,
        /// The properties file looked at.
        file: PathBuf,
        /// What was found about the file, as words for the message.
        file_state: String,
    },
    /// The properties file exists (or was given) but cannot be read.
    #[error("cannot read the credentials file {} (check the path and its permissions)", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The properties file is not valid INI.
    #[error(
        "the credentials file {} is not a valid properties file (line {line}, column {column}: {reason}); fix the file",
        path.display()
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line of the problem (1-based).
        line: usize,
        /// The column of the problem (1-based).
        column: usize,
        /// What the parser expected.
        reason: String,
    },
}

/// A required login value found nowhere, and where it was looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingValue {
    /// The value (`server`, `username`, `password`).
    pub value: &'static str,
    /// The environment variable looked at.
    pub env_var: &'static str,
    /// The key looked for in the properties file.
    pub key: &'static str,
}

/// One value's places: (name, environment variable, properties key).
type Place = MissingValue;

/// Missing values' names as words: `a`, `a and b`, `a, b and c`.
struct MissingList<'a>(&'a [MissingValue], fn(&MissingValue) -> &'static str);

impl fmt::Display for MissingList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let MissingList(values, name) = self;
        for (index, value) in values.iter().enumerate() {
            let separator = match index {
                0 => "",
                _ if index + 1 == values.len() => " and ",
                _ => ", ",
            };
            write!(f, "{separator}{}", name(value))?;
        }
        Ok(())
    }
}

const SERVER: Place = Place {
    value: "server",
    env_var: "PRESERVICA_SERVER",
    key: "server",
};
const USERNAME: Place = Place {
    value: "username",
    env_var: "PRESERVICA_USERNAME",
    key: "username",
};
const PASSWORD: Place = Place {
    value: "password",
    env_var: "PRESERVICA_PASSWORD",
    key: "password",
};
const TENANT: Place = Place {
    value: "tenant",
    env_var: "PRESERVICA_TENANT",
    key: "tenant",
};
const TWO_FACTOR_SEED: Place = Place {
    value: "two-factor seed",
    env_var: "PRESERVICA_2FA_TOKEN",
    key: "twoFactorToken",
};

impl Credentials {
    /// Makes credentials from the three required values.
    pub fn new(server: &str, username: &str, password: &str) -> Credentials {
        Credentials {
            server: server.to_owned(),
            username: username.to_owned(),
            password: Sensitive(password.to_owned()),
            tenant: None,
            two_factor_seed: None,
        }
    }

    /// Sets the tenant.
    #[must_use]
    pub fn with_tenant(mut self, tenant: &str) -> Credentials {
        self.tenant = Some(tenant.to_owned());
        self
    }

    /// Sets the base32 two-factor seed.
    #[must_use]
    pub fn with_two_factor_seed(mut self, seed: &str) -> Credentials {
        self.two_factor_seed = Some(Sensitive(seed.to_owned()));
        self
    }

    /// Resolves each value from `explicit`, else the process environment (`PRESERVICA_USERNAME`,
    /// `PRESERVICA_PASSWORD`, `PRESERVICA_TENANT`, `PRESERVICA_SERVER`, `PRESERVICA_2FA_TOKEN`),
    /// else the properties file: `file`, or `./credentials.properties` when `None`.
    ///
    /// A missing default file is fine; a missing file that was given is an error. Empty values
    /// count as absent.
    ///
    /// # Errors
    /// [`CredentialsError::Missing`] when server, username or password is found nowhere (the
    /// message names all three places); [`CredentialsError::Unreadable`] or
    /// [`CredentialsError::Parse`] for a file that cannot be used.
    pub fn resolve(
        explicit: &CredentialOverrides,
        file: Option<&Path>,
    ) -> Result<Credentials, CredentialsError> {
        Credentials::resolve_with(explicit, |name| std::env::var(name).ok(), file)
    }

    /// [`Credentials::resolve`] with the environment given as a function (for tests and for
    /// programs that keep their own environment).
    ///
    /// # Errors
    /// As [`Credentials::resolve`].
    pub fn resolve_with(
        explicit: &CredentialOverrides,
        env: impl Fn(&str) -> Option<String>,
        file: Option<&Path>,
    ) -> Result<Credentials, CredentialsError> {
        let (path, properties) = match file {
            Some(path) => (path.to_owned(), Some(PropertiesFile::load(path)?)),
            None => {
                let path = PathBuf::from(DEFAULT_CREDENTIALS_FILE);
                match PropertiesFile::load(&path) {
                    Ok(properties) => (path, Some(properties)),
                    Err(CredentialsError::Unreadable { source, .. })
                        if source.kind() == io::ErrorKind::NotFound =>
                    {
                        (path, None)
                    }
                    Err(err) => return Err(err),
                }
            }
        };
        let lookup = |place: Place, given: &Option<String>| -> Option<String> {
            non_empty(given.as_deref())
                .map(str::to_owned)
                .or_else(|| non_empty(env(place.env_var).as_deref()).map(str::to_owned))
                .or_else(|| {
                    properties
                        .as_ref()
                        .and_then(|it| non_empty(it.get(place.key)))
                        .map(str::to_owned)
                })
        };
        let server = lookup(SERVER, &explicit.server);
        let username = lookup(USERNAME, &explicit.username);
        let password = lookup(PASSWORD, &explicit.password);
        let (Some(server), Some(username), Some(password)) = (&server, &username, &password) else {
            let missing = [
                (SERVER, &server),
                (USERNAME, &username),
                (PASSWORD, &password),
            ]
            .into_iter()
            .filter(|(_, found)| found.is_none())
            .map(|(place, _)| place)
            .collect::<Vec<_>>();
            let keys = MissingList(&missing, |it| it.key).to_string();
            let file_state = match &properties {
                Some(_) => format!("the file has no {keys}"),
                None => "there is no such file".to_owned(),
            };
            return Err(CredentialsError::Missing {
                missing,
                file: path,
                file_state,
            });
        };
        Ok(Credentials {
            server: server.clone(),
            username: username.clone(),
            password: Sensitive(password.clone()),
            tenant: lookup(TENANT, &explicit.tenant),
            two_factor_seed: lookup(TWO_FACTOR_SEED, &explicit.two_factor_seed).map(Sensitive),
        })
    }

    /// The server: a host name or a base URL, as given.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The user name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The tenant, when known.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// Whether a two-factor seed is set.
    pub fn has_two_factor_seed(&self) -> bool {
        self.two_factor_seed.is_some()
    }

    pub(crate) fn password(&self) -> &Sensitive {
        &self.password
    }

    pub(crate) fn two_factor_seed(&self) -> Option<&Sensitive> {
        self.two_factor_seed.as_ref()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("tenant", &self.tenant)
            .field("two_factor_seed", &self.two_factor_seed)
            .finish()
    }
}

impl PropertiesFile {
    /// Reads the `[credentials]` section of a properties file. A file without that section
    /// loads as empty.
    ///
    /// # Errors
    /// [`CredentialsError::Unreadable`] when the file cannot be read (its `source` tells a
    /// missing file apart), [`CredentialsError::Parse`] when it is not INI.
    pub fn load(path: &Path) -> Result<PropertiesFile, CredentialsError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| CredentialsError::Unreadable {
                path: path.to_owned(),
                source,
            })?;
        PropertiesFile::parse_at(path, &text)
    }

    /// Reads the `[credentials]` section from the text of a properties file, without touching
    /// the file system; [`PropertiesFile::path`] is then empty. Text without that section
    /// parses as empty.
    ///
    /// ```
    /// use preservica_webhook_client::PropertiesFile;
    ///
    /// let properties = PropertiesFile::parse("[credentials]\nusername = me\nsecret.key=s3cr3t\n")?;
    /// assert_eq!(properties.get("USERNAME"), Some("me"));
    /// assert_eq!(properties.get("secret.key"), Some("s3cr3t"));
    /// # Ok::<(), preservica_webhook_client::CredentialsError>(())
    /// ```
    ///
    /// # Errors
    /// [`CredentialsError::Parse`] when the text is not INI.
    pub fn parse(text: &str) -> Result<PropertiesFile, CredentialsError> {
        PropertiesFile::parse_at(Path::new(""), text)
    }

    fn parse_at(path: &Path, text: &str) -> Result<PropertiesFile, CredentialsError> {
        let options = ParseOption {
            enabled_quote: false,
            enabled_escape: false,
            ..ParseOption::default()
        };
        let ini = Ini::load_from_str_opt(text, options).map_err(|err| CredentialsError::Parse {
            path: path.to_owned(),
            line: err.line,
            column: err.col,
            reason: err.msg.into_owned(),
        })?;
        let entries = ini
            .section(Some(SECTION))
            .map(|section| {
                section
                    .iter()
                    .map(|(key, value)| (key.to_owned(), value.trim().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(PropertiesFile {
            path: path.to_owned(),
            entries,
        })
    }

    /// The value of `key` in the `[credentials]` section (e.g. `username`, `secret.key`).
    /// Keys match regardless of ASCII case, as Python's `configparser` matches them; the last
    /// one wins when a key repeats.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|(_, value)| value.as_str())
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Debug for PropertiesFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PropertiesFile")
            .field("path", &self.path)
            .field(
                "keys",
                &self
                    .entries
                    .iter()
                    .map(|(key, _)| key.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A string that must not be shown: its `Debug` prints `***`.
#[derive(Clone)]
pub(crate) struct Sensitive(pub(crate) String);

impl Sensitive {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|it| !it.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides() -> CredentialOverrides {
        CredentialOverrides::default()
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("credentials.properties");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn explicit_wins_over_environment_which_wins_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "[credentials]\nusername=file-user\npassword=file-pass\nserver=file.example\ntenant=FILE\ntwoFactorToken=JBSWY3DPEHPK3PXP\nsecret.key=hook-secret\n",
        );
        let env = |name: &str| match name {
            "PRESERVICA_USERNAME" => Some("env-user".to_owned()),
            "PRESERVICA_TENANT" => Some(String::new()),
            _ => None,
        };
        let explicit = CredentialOverrides {
            server: Some("flag.example".to_owned()),
            ..overrides()
        };
        let credentials = Credentials::resolve_with(&explicit, env, Some(&file)).unwrap();
        assert_eq!(credentials.server(), "flag.example");
        assert_eq!(credentials.username(), "env-user");
        assert_eq!(credentials.password().expose(), "file-pass");
        assert_eq!(credentials.tenant(), Some("FILE"));
        assert_eq!(
            credentials.two_factor_seed().unwrap().expose(),
            "JBSWY3DPEHPK3PXP"
        );
        let properties = PropertiesFile::load(&file).unwrap();
        assert_eq!(properties.get("secret.key"), Some("hook-secret"));
        assert_eq!(properties.get("nothing"), None);
    }

    #[test]
    fn values_are_read_literally_like_configparser() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "; comment\n# another\n[other]\npassword=wrong\n[credentials]\nUserName = me \npassword=\"q\\w;x:y=z\nserver: eu.preservica.com\nTWOFACTORTOKEN=JBSWY3DPEHPK3PXP\n",
        );
        let credentials = Credentials::resolve_with(&overrides(), |_| None, Some(&file)).unwrap();
        assert_eq!(credentials.username(), "me");
        assert_eq!(credentials.password().expose(), "\"q\\w;x:y=z");
        assert_eq!(credentials.server(), "eu.preservica.com");
        assert!(credentials.has_two_factor_seed());
    }

    #[test]
    fn missing_value_names_every_place_looked() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "[credentials]\nusername=u\nserver=s\n");
        let err = Credentials::resolve_with(&overrides(), |_| None, Some(&file)).unwrap_err();
        let message = err.to_string();
        let CredentialsError::Missing { missing, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(missing, &[PASSWORD]);
        assert!(
            message.starts_with("no Preservica password given"),
            "{message}"
        );
        assert!(message.contains("PRESERVICA_PASSWORD"), "{message}");
        assert!(message.contains("the file has no password"), "{message}");
        assert!(message.contains(&file.display().to_string()), "{message}");
    }

    #[test]
    fn every_missing_value_is_named_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "[credentials]\ntenant=t\n");
        let err = Credentials::resolve_with(&overrides(), |_| None, Some(&file)).unwrap_err();
        let CredentialsError::Missing { missing, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(missing, &[SERVER, USERNAME, PASSWORD]);
        let message = err.to_string();
        assert!(
            message.starts_with("no Preservica server, username and password given"),
            "{message}"
        );
        assert!(
            message.contains("PRESERVICA_SERVER, PRESERVICA_USERNAME and PRESERVICA_PASSWORD"),
            "{message}"
        );
        assert!(
            message.contains("the file has no server, username and password"),
            "{message}"
        );
        let only_server = Credentials::resolve_with(
            &overrides(),
            |_| None,
            Some(&write(
                dir.path(),
                "[credentials]\nusername=u\npassword=p\n",
            )),
        )
        .unwrap_err();
        assert!(
            only_server.to_string().starts_with(
                "no Preservica server given: looked in the environment (PRESERVICA_SERVER)"
            ),
            "{only_server}"
        );
    }

    #[test]
    fn a_given_file_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.properties");
        let err = Credentials::resolve_with(&overrides(), |_| None, Some(&missing)).unwrap_err();
        assert!(
            matches!(err, CredentialsError::Unreadable { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("nope.properties"));
    }

    #[test]
    fn environment_alone_is_enough() {
        let env = |name: &str| {
            Some(
                match name {
                    "PRESERVICA_SERVER" => "eu.preservica.com",
                    "PRESERVICA_USERNAME" => "u",
                    "PRESERVICA_PASSWORD" => "p",
                    _ => return None,
                }
                .to_owned(),
            )
        };
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "");
        let credentials = Credentials::resolve_with(&overrides(), env, Some(&file)).unwrap();
        assert_eq!(credentials.server(), "eu.preservica.com");
        assert_eq!(credentials.tenant(), None);
        assert!(!credentials.has_two_factor_seed());
    }

    #[test]
    fn unparsable_file_is_an_error_without_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "[credentials\npassword=hunter2\n");
        let err = Credentials::resolve_with(&overrides(), |_| None, Some(&file)).unwrap_err();
        assert!(matches!(err, CredentialsError::Parse { .. }), "{err:?}");
        assert!(!err.to_string().contains("hunter2"));
        assert!(!format!("{err:?}").contains("hunter2"));
    }

    #[test]
    fn debug_hides_password_and_seed() {
        let credentials = Credentials::new("s", "u", "hunter2").with_two_factor_seed("SEEDSEED");
        let overrides = CredentialOverrides {
            password: Some("hunter2".to_owned()),
            two_factor_seed: Some("SEEDSEED".to_owned()),
            ..overrides()
        };
        for text in [format!("{credentials:?}"), format!("{overrides:?}")] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains("SEEDSEED"), "{text}");
            assert!(text.contains("***"), "{text}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "[credentials]\npassword=hunter2\n");
        let properties = PropertiesFile::load(&file).unwrap();
        assert!(!format!("{properties:?}").contains("hunter2"));
    }
}
