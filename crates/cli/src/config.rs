//! Configuration the user gives: the webhook secret and the credentials file.

use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use preservica_webhook_client::{CredentialsError, PropertiesFile};
use preservica_webhook_core::Secret;

use crate::cli::{DEFAULT_CREDENTIALS, GlobalArgs};

/// The environment variable holding the webhook secret.
pub(crate) const SECRET_ENV: &str = "PRESERVICA_WEBHOOK_SECRET";

/// The key of the webhook secret in the credentials file's `[credentials]` section.
pub(crate) const SECRET_KEY: &str = "secret.key";

/// An error the user fixes on the command line or in the configuration: the program exits 2.
#[derive(Debug)]
pub(crate) struct ConfigError(pub(crate) String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// A configuration error as an `anyhow::Error`.
pub(crate) fn config_error(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(ConfigError(message.into()))
}

/// The webhook secrets: the first signs and answers, all are accepted.
#[derive(Debug)]
pub(crate) struct Secrets {
    /// At least one.
    pub(crate) all: Vec<Secret>,
}

impl Secrets {
    /// The secret that signs deliveries and answers challenges.
    pub(crate) fn primary(&self) -> &Secret {
        &self.all[0]
    }
}

/// Where the credentials file is: `--credentials`, else `./credentials.properties`.
pub(crate) fn credentials_path(global: &GlobalArgs) -> PathBuf {
    global
        .credentials
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CREDENTIALS))
}

/// Loads the webhook secrets: `--secret-file`, else `PRESERVICA_WEBHOOK_SECRET`, else
/// `secret.key` in the credentials file.
///
/// # Errors
/// A [`ConfigError`] naming every place looked at when there is no secret, or saying what is
/// wrong with the one found.
pub(crate) fn load_secrets(global: &GlobalArgs) -> anyhow::Result<Secrets> {
    load_secrets_with(global, |name| std::env::var(name).ok())
}

fn load_secrets_with(
    global: &GlobalArgs,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Secrets> {
    if let Some(path) = &global.secret_file {
        let text = std::fs::read_to_string(path).map_err(|err| {
            config_error(format!(
                "cannot read the secret file {}: {err}",
                path.display()
            ))
        })?;
        let all = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(Secret::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| config_error(format!("{}: {err}", path.display())))?;
        if all.is_empty() {
            return Err(config_error(format!(
                "the secret file {} holds no secret; put the secret shared with Preservica on its first line",
                path.display()
            )));
        }
        return Ok(Secrets { all });
    }
    if let Some(text) = env(SECRET_ENV).filter(|it| !it.is_empty()) {
        let secret = Secret::new(text.trim_end_matches(['\r', '\n']))
            .map_err(|err| config_error(format!("{SECRET_ENV}: {err}")))?;
        return Ok(Secrets { all: vec![secret] });
    }
    let path = credentials_path(global);
    let file = read_credentials_file(&path, global.credentials.is_some())?;
    if let Some(text) = file
        .as_ref()
        .and_then(|it| it.get(SECRET_KEY))
        .filter(|it| !it.is_empty())
    {
        let secret = Secret::new(text)
            .map_err(|err| config_error(format!("{SECRET_KEY} in {}: {err}", path.display())))?;
        return Ok(Secrets { all: vec![secret] });
    }
    let file_note = if file.is_some() {
        "no secret.key"
    } else {
        "file not found"
    };
    Err(config_error(format!(
        "no webhook secret: looked for --secret-file FILE (not given), the environment variable \
         {SECRET_ENV} (not set or empty) and {SECRET_KEY} in the [credentials] section of {} ({file_note}); \
         give the secret shared with Preservica in one of them",
        path.display()
    )))
}

/// The files holding secrets for this run (`--secret-file` and the credentials file, where they
/// exist) that users other than the owner can read.
pub(crate) fn secret_files_readable_by_others(global: &GlobalArgs) -> Vec<PathBuf> {
    let credentials = credentials_path(global);
    global
        .secret_file
        .iter()
        .chain(std::iter::once(&credentials))
        .filter(|path| readable_by_others(path))
        .cloned()
        .collect()
}

/// Warns, through the log, about every file holding secrets that other users can read.
pub(crate) fn warn_about_secret_files(global: &GlobalArgs) {
    for path in secret_files_readable_by_others(global) {
        tracing::warn!(
            "{} holds secrets and other users can read it; restrict it with `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
}

#[cfg(unix)]
fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|meta| meta.permissions().mode() & 0o044 != 0)
}

#[cfg(not(unix))]
fn readable_by_others(_path: &Path) -> bool {
    false
}

/// Reads the credentials file with the client's INI reader; `Ok(None)` when it does not exist
/// and was not asked for.
///
/// # Errors
/// When an explicitly given file is missing, or the file cannot be read or parsed.
pub(crate) fn read_credentials_file(
    path: &Path,
    explicit: bool,
) -> anyhow::Result<Option<PropertiesFile>> {
    match PropertiesFile::load(path) {
        Ok(file) => Ok(Some(file)),
        Err(CredentialsError::Unreadable { source, .. })
            if source.kind() == ErrorKind::NotFound && !explicit =>
        {
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    fn global(args: &[&str]) -> GlobalArgs {
        let mut argv = vec!["preservica-webhook"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["sign"]);
        Cli::parse_from(argv).global
    }

    fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Vec<Secret>, String> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        load_secrets_with(&global(args), |name| env.get(name).cloned())
            .map(|it| it.all)
            .map_err(|err| format!("{err:#}"))
    }

    #[test]
    fn secret_file_wins_and_holds_several_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets");
        std::fs::write(&path, "new\r\n\nold\n").unwrap();
        let secrets = load(
            &["--secret-file", path.to_str().unwrap()],
            &[(SECRET_ENV, "env")],
        )
        .unwrap();
        assert_eq!(
            secrets,
            vec![Secret::new("new").unwrap(), Secret::new("old").unwrap()]
        );
    }

    #[test]
    fn environment_comes_before_the_credentials_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.properties");
        std::fs::write(&path, "[credentials]\nsecret.key=from-file\n").unwrap();
        let creds = ["--credentials", path.to_str().unwrap()];
        assert_eq!(
            load(&creds, &[(SECRET_ENV, "from-env")]).unwrap(),
            vec![Secret::new("from-env").unwrap()]
        );
        assert_eq!(
            load(&creds, &[]).unwrap(),
            vec![Secret::new("from-file").unwrap()]
        );
    }

    #[test]
    fn missing_secret_names_every_place_looked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.properties");
        std::fs::write(&path, "[credentials]\nusername=u\n[other]\nsecret.key=no\n").unwrap();
        let err = load(&["--credentials", path.to_str().unwrap()], &[]).unwrap_err();
        assert!(err.contains("--secret-file"), "{err}");
        assert!(err.contains(SECRET_ENV), "{err}");
        assert!(err.contains("secret.key"), "{err}");
        assert!(err.contains(path.to_str().unwrap()), "{err}");
        assert!(err.contains("no secret.key"), "{err}");
    }

    #[test]
    fn an_empty_environment_variable_counts_as_unset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.properties");
        std::fs::write(&path, "[credentials]\nsecret.key = from-file\n").unwrap();
        let creds = ["--credentials", path.to_str().unwrap()];
        assert_eq!(
            load(&creds, &[(SECRET_ENV, "")]).unwrap(),
            vec![Secret::new("from-file").unwrap()]
        );
    }

    #[test]
    fn a_missing_explicit_credentials_file_is_an_error() {
        let err = load(
            &["--credentials", "/nonexistent/credentials.properties"],
            &[],
        )
        .unwrap_err();
        assert!(err.contains("/nonexistent/credentials.properties"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn finds_secret_files_other_users_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        let credentials = dir.path().join("credentials.properties");
        std::fs::write(&secrets, "s\n").unwrap();
        std::fs::write(&credentials, "[credentials]\n").unwrap();
        let set_mode = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let args = global(&[
            "--secret-file",
            secrets.to_str().unwrap(),
            "--credentials",
            credentials.to_str().unwrap(),
        ]);
        set_mode(&secrets, 0o600);
        set_mode(&credentials, 0o600);
        assert!(secret_files_readable_by_others(&args).is_empty());
        set_mode(&secrets, 0o640);
        set_mode(&credentials, 0o604);
        assert_eq!(
            secret_files_readable_by_others(&args),
            vec![secrets.clone(), credentials.clone()]
        );
        set_mode(&secrets, 0o700);
        assert_eq!(secret_files_readable_by_others(&args), vec![credentials]);
    }

    #[test]
    fn empty_secret_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets");
        std::fs::write(&path, "\n  \n").unwrap();
        let err = load(&["--secret-file", path.to_str().unwrap()], &[]).unwrap_err();
        assert!(err.contains("holds no secret"), "{err}");
    }
}
