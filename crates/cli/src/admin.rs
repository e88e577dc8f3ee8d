//! `serve --admin`: the flags of the admin dashboard and how serve starts it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use preservica_webhook_server::admin::{Admin, AdminConfig, AdminError, AdminToken};
use preservica_webhook_server::store::Store;

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

/// Binds the dashboard when `--admin` is given, showing `backend` as the inbox backend.
///
/// # Errors
/// Configuration errors (exit 2): an unreadable or empty token file, a non-loopback address
/// without a token, an address that cannot be listened on.
pub(crate) async fn bind(
    args: &AdminArgs,
    backend: &str,
    store: Arc<dyn Store>,
) -> anyhow::Result<Option<Admin>> {
    let Some(addr) = args.admin else {
        return Ok(None);
    };
    let mut config = AdminConfig::new(addr, backend);
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
