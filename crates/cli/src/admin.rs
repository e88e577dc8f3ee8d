//! `serve --admin`: the flags of the admin dashboard and how serve starts it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use preservica_webhook_client::Client;
use preservica_webhook_core::{EntityType, SIGNATURE_HEADER, Secret, Subscription, TriggerType};
use preservica_webhook_server::admin::{Admin, AdminConfig, AdminError, AdminToken, Preservica};
use preservica_webhook_server::store::{BoxFuture, Store};

use crate::cli::parse_listen_addr;
use crate::config::config_error;

/// The admin dashboard's flags.
#[derive(Debug, Clone, Args)]
pub(crate) struct AdminArgs {
    /// Serve the admin dashboard (deliveries, dead letters and retry, health, gaps, export) on
    /// its own address, apart from the webhook: IP:PORT or PORT alone for 127.0.0.1:PORT. A
    /// non-loopback address needs --admin-token-file
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_addr)]
    pub(crate) admin: Option<SocketAddr>,
    /// A file holding the token the dashboard asks for (as `Authorization: Bearer TOKEN` or
    /// in its sign-in form); required for a non-loopback --admin address
    #[arg(long, value_name = "FILE", requires = "admin")]
    pub(crate) admin_token_file: Option<PathBuf>,
}

/// What the dashboard's subscriptions page and catch-up buttons need: the Preservica client
/// (when credentials are configured), this receiver's webhook URL, the secret that signs test
/// deliveries, the store and the public URL catch-up narrows the subscriptions to.
#[derive(Debug)]
pub(crate) struct Hooks {
    /// The client, if any.
    pub(crate) client: Option<Client>,
    /// The store recovered deliveries are filed in.
    pub(crate) store: Arc<dyn Store>,
    /// `--public-url`, if given.
    pub(crate) public_url: Option<String>,
    /// The receiver's own webhook URL.
    pub(crate) webhook_url: String,
    /// The secret deliveries are signed with.
    pub(crate) secret: Secret,
}

impl Hooks {
    fn client(&self) -> Result<&Client, String> {
        self.client.as_ref().ok_or_else(|| {
            "no Preservica credentials are configured for serve (see `preservica-webhook --help`)"
                .to_owned()
        })
    }
}

impl Preservica for Hooks {
    fn list(&self) -> BoxFuture<'_, Result<Vec<Subscription>, String>> {
        Box::pin(async move {
            self.client()?
                .subscriptions()
                .await
                .map_err(|err| format!("{:#}", anyhow::Error::new(err)))
        })
    }

    fn catch_up(&self, from: i64, to: i64) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            let client = self.client()?;
            let window = preservica_webhook_core::recovery::Gap { from, to };
            let summary = crate::recovery::recover_windows(
                client,
                self.store.as_ref(),
                &[window],
                self.public_url.as_deref(),
            )
            .await
            .map_err(|err| format!("{err:#}"))?;
            tracing::info!(from, to, filed = summary.filed, "admin: caught up on a gap");
            Ok(format!(
                "filed {} recovered deliveries ({} filed before)",
                summary.filed, summary.filed_before
            ))
        })
    }

    fn send_test(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            let body = crate::testing::sample_delivery(
                &TriggerType::Moved,
                &EntityType::parse("IO"),
                &crate::testing::random_uuid(),
                "PRESERVICA",
                std::time::SystemTime::now(),
            );
            let signature = preservica_webhook_core::sign(&self.secret, &body);
            let answer = reqwest::Client::new()
                .post(&self.webhook_url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, signature.to_hex())
                .body(body)
                .send()
                .await
                .map_err(|err| format!("cannot reach {}: {err}", self.webhook_url))?;
            let status = answer.status();
            if status.is_success() {
                Ok(format!(
                    "{} answered {status}: a MOVED test delivery was stored",
                    self.webhook_url
                ))
            } else {
                Err(format!("{} answered {status}", self.webhook_url))
            }
        })
    }
}

/// Binds the dashboard when `--admin` is given, showing `backend` as the inbox backend.
///
/// # Errors
/// Configuration errors (exit 2): an unreadable or empty token file, a non-loopback address
/// without a token, an address that cannot be listened on.
pub(crate) async fn bind(
    args: &AdminArgs,
    backend: &str,
    store: Arc<dyn Store>,
    hooks: impl FnOnce() -> Hooks,
) -> anyhow::Result<Option<Admin>> {
    let Some(addr) = args.admin else {
        return Ok(None);
    };
    let mut config = AdminConfig::new(addr, backend);
    config.preservica = Some(Arc::new(hooks()));
    if let Some(path) = &args.admin_token_file {
        let text = std::fs::read_to_string(path).map_err(|err| {
            config_error(format!(
                "cannot read the admin token file {}: {err}",
                path.display()
            ))
        })?;
        config.token = Some(AdminToken::new(&text).map_err(|err| {
            config_error(format!("--admin-token-file {}: {err}", path.display()))
        })?);
    }
    match Admin::bind(config, store).await {
        Ok(admin) => Ok(Some(admin)),
        Err(err @ AdminError::Bind { .. }) => Err(config_error(format!(
            "{err}; pick another port with --admin"
        ))),
        Err(err) => Err(config_error(err.to_string())),
    }
}
