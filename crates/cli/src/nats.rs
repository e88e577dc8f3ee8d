//! `--nats`: the NATS JetStream inbox of `serve`, `work` and `inbox`, and how the connection
//! authenticates.

use std::path::PathBuf;

use clap::Args;
use preservica_webhook_server::store::nats::{NatsAuth, NatsConfig};
use preservica_webhook_server::{InboxConfig, WebhookConfig};

use crate::cli::InboxLocation;
use crate::config::config_error;

/// The default stream.
pub(crate) const DEFAULT_STREAM: &str = "PRESERVICA_WEBHOOK";

/// The NATS flags, shared by `serve`, `work` and `inbox`.
#[derive(Debug, Clone, Args)]
pub(crate) struct NatsArgs {
    /// Keep deliveries in a NATS JetStream stream instead of a SQLite file: the server's URL
    /// (nats://host:4222, tls://host:4222); several, comma-separated or repeated, for a
    /// cluster. Receivers and workers anywhere share it
    #[arg(
        long,
        global = true,
        value_name = "URL",
        value_delimiter = ',',
        conflicts_with = "inbox"
    )]
    pub(crate) nats: Vec<String>,
    /// The JetStream stream (created if missing); dead letters go to NAME_DEAD
    #[arg(long, global = true, value_name = "NAME", default_value = DEFAULT_STREAM, requires = "nats")]
    pub(crate) nats_stream: String,
    /// Replicas of the stream when it is created, in a NATS cluster (1, 3 or 5)
    #[arg(long, global = true, value_name = "N", default_value = "1", requires = "nats",
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub(crate) nats_replicas: u8,
    /// A NATS credentials file (JWT and NKey seed, as `nsc` writes it)
    #[arg(long, global = true, value_name = "FILE", requires = "nats",
          conflicts_with_all = ["nats_token", "nats_user"])]
    pub(crate) nats_creds: Option<PathBuf>,
    /// A NATS token (prefer the environment variable over the command line)
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "PRESERVICA_NATS_TOKEN",
        hide_env_values = true,
        requires = "nats",
        conflicts_with = "nats_user"
    )]
    pub(crate) nats_token: Option<String>,
    /// A NATS user; its password comes from --nats-password or PRESERVICA_NATS_PASSWORD
    #[arg(long, global = true, value_name = "USER", requires_all = ["nats", "nats_password"])]
    pub(crate) nats_user: Option<String>,
    /// The NATS user's password
    #[arg(
        long,
        global = true,
        value_name = "PASSWORD",
        env = "PRESERVICA_NATS_PASSWORD",
        hide_env_values = true,
        requires = "nats_user"
    )]
    pub(crate) nats_password: Option<String>,
    /// CA certificates (PEM) to trust for the NATS servers' TLS certificates
    #[arg(long, global = true, value_name = "PEM", requires = "nats")]
    pub(crate) nats_tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for NATS servers that verify clients; with --nats-tls-key
    #[arg(long, global = true, value_name = "PEM", requires_all = ["nats", "nats_tls_key"])]
    pub(crate) nats_tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM)
    #[arg(long, global = true, value_name = "PEM", requires = "nats_tls_cert")]
    pub(crate) nats_tls_key: Option<PathBuf>,
}

/// A NATS inbox as the flags give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NatsLocation {
    servers: Vec<String>,
    stream: String,
    replicas: u8,
    creds: Option<PathBuf>,
    token: Option<String>,
    user: Option<(String, String)>,
    tls_ca: Option<PathBuf>,
    tls_client: Option<(PathBuf, PathBuf)>,
}

impl NatsArgs {
    /// The inbox to use: the NATS stream when `--nats` is given, else `inbox`.
    ///
    /// # Errors
    /// As [`NatsArgs::location`].
    pub(crate) fn or_inbox(&self, inbox: &InboxLocation) -> anyhow::Result<InboxLocation> {
        Ok(match self.location()? {
            Some(nats) => InboxLocation::Nats(nats),
            None => inbox.clone(),
        })
    }

    /// The NATS inbox, when `--nats` is given.
    ///
    /// # Errors
    /// A configuration error (exit 2) for an empty server URL.
    pub(crate) fn location(&self) -> anyhow::Result<Option<NatsLocation>> {
        if self.nats.is_empty() {
            return Ok(None);
        }
        let servers: Vec<String> = self.nats.iter().map(|it| it.trim().to_owned()).collect();
        if servers.iter().any(String::is_empty) {
            return Err(config_error(
                "--nats has an empty server URL; give nats://host:4222 (comma-separated for several)",
            ));
        }
        Ok(Some(NatsLocation {
            servers,
            stream: self.nats_stream.clone(),
            replicas: self.nats_replicas,
            creds: self.nats_creds.clone(),
            token: self.nats_token.clone(),
            user: self.nats_user.clone().zip(self.nats_password.clone()),
            tls_ca: self.nats_tls_ca.clone(),
            tls_client: self.nats_tls_cert.clone().zip(self.nats_tls_key.clone()),
        }))
    }
}

impl NatsLocation {
    /// The servers, comma-separated, for messages.
    pub(crate) fn servers(&self) -> String {
        self.servers.join(",")
    }

    /// The store's configuration.
    pub(crate) fn config(&self) -> InboxConfig {
        let mut config = NatsConfig::new(self.servers.clone());
        config.stream = self.stream.clone();
        config.replicas = usize::from(self.replicas);
        config.auth = match (&self.creds, &self.token, &self.user) {
            (Some(path), _, _) => NatsAuth::CredentialsFile(path.clone()),
            (None, Some(token), _) => NatsAuth::Token(token.clone()),
            (None, None, Some((user, password))) => {
                NatsAuth::UserPassword(user.clone(), password.clone())
            }
            (None, None, None) => NatsAuth::None,
        };
        config.tls_ca = self.tls_ca.clone();
        config.tls_client = self.tls_client.clone();
        InboxConfig::Nats(Box::new(config))
    }
}

/// Leases a NATS message to a worker as long as a handler call and its margin: the
/// consumer's ack wait is the lease. Only for a process that runs workers (a receiver
/// without workers leaves the consumer as the workers set it).
pub(crate) fn fit_lease(config: &mut WebhookConfig) {
    let lease = config.handler_timeout.saturating_add(config.lease_margin);
    if let InboxConfig::Nats(nats) = &mut config.inbox
        && config.workers > 0
    {
        nats.ack_wait = Some(lease);
    }
}
