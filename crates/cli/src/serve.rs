//! `serve`: the receiver, its handlers, and the one-command subscription set-up.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use preservica_webhook_client::{Client, ThumbnailSize};
use preservica_webhook_core::{
    EntityRef, EntityType, Secret, Subscription, SubscriptionId, TriggerType,
};
use preservica_webhook_server::{
    DeliveryId, Handler, HandlerError, Inbox, InboxConfig, Job, Server, ServerConfig, ServerError,
    TlsFiles, WebhookConfig, Workers,
};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::process::ChildStderr;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{GlobalArgs, HandlerArgs, InboxLocation, Retention, ServeArgs, WorkArgs};
use crate::config::{SECRET_ENV, config_error, load_secrets, warn_about_secret_files};
use crate::keep_alive::KeepAlive;
use crate::manage::{client, download_thumbnail};
use crate::output;
use preservica_webhook_server::prometheus_client::metrics::counter::Counter;

/// How much longer than `--exec-timeout` the server waits before abandoning a handler call,
/// so the command's own timeout (which kills its process group) fires first.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(5);
/// The most bytes of entity references put in `PRESERVICA_ENTITY_REFS`, cut at a whole
/// reference. Linux refuses to start a command with any one environment string over 128 KiB
/// (`MAX_ARG_STRLEN`), which the references of a delivery under the body cap can exceed; the
/// full list is always in the body on stdin.
const MAX_ENV_REFS: usize = 64 * 1024;
/// The most bytes of the trigger or subscription id put in the environment; real values are
/// a few dozen bytes, and a longer one is passed empty (it is in the body).
const MAX_ENV_VALUE: usize = 1024;
/// The longest line of a command's stderr logged whole; the rest of a longer line is left out,
/// so a command writing without newlines cannot make serve hold its output in memory.
const MAX_STDERR_LINE: usize = 4096;
/// How long, once a command and its process group have ended, its stderr may take to close
/// (a process that left the group may still hold it).
const STDERR_DRAIN: Duration = Duration::from_secs(1);

/// `serve`.
///
/// # Errors
/// Configuration errors (exit 2), a failure to listen or subscribe, and a server that stops
/// with an error.
pub(crate) async fn serve(global: &GlobalArgs, mut args: ServeArgs) -> anyhow::Result<ExitCode> {
    let secrets = load_secrets(global)?;
    warn_about_secret_files(global);
    let needs_client =
        args.handling.thumbnails.is_some() || !args.subscribe.is_empty() || args.catch_up;
    let client = needs_client.then(|| client(global)).transpose()?;
    if let Some(url) = &args.public_url {
        let parsed = reqwest::Url::parse(url)
            .map_err(|err| config_error(format!("--public-url {url:?} is not a URL: {err}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(config_error(format!(
                "--public-url {url:?} is not an http or https URL"
            )));
        }
        if parsed.path() != args.path {
            tracing::warn!(
                "the path of --public-url ({}) is not the webhook path --path ({}); that only \
                 works behind a proxy that rewrites it",
                parsed.path(),
                args.path
            );
        }
    }
    let (handler, calls) = cli_handler(&args.handling, client.clone())?;
    let mut config = ServerConfig::new(secrets.all.clone());
    config.addr = args.addr;
    config.webhook.path = args.path.clone();
    config.webhook.max_body = args.max_body;
    config.tls = args
        .tls_cert
        .clone()
        .zip(args.tls_key.clone())
        .map(|(cert, key)| TlsFiles { cert, key });
    args.inbox = args.nats.or_inbox(&args.inbox)?;
    config.webhook.inbox = if args.in_memory {
        InboxConfig::InMemory
    } else {
        inbox_config(&args.inbox)
    };
    apply_handling(&args.handling, &mut config.webhook);
    if args.no_workers {
        config.webhook.workers = 0;
        if let Some(path) = args.inbox.sqlite_file() {
            tracing::warn!(
                "--no-workers on the SQLite inbox {}: deliveries are stored and wait there \
                 until a serve without --no-workers runs on it (a SQLite file cannot be shared \
                 with `preservica-webhook work`)",
                path.display()
            );
        }
    }
    crate::nats::fit_lease(&mut config.webhook);
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };

    // Signals are caught from here on, so a stop during subscribing still cleans up.
    let mut signals = Signals::new()?;
    let mut server = Server::bind(config, handler).await.map_err(server_error)?;
    let store = server.store();
    let hooks = || crate::admin::Hooks {
        client: client
            .clone()
            .or_else(|| crate::manage::client(global).ok()),
        webhook_url: format!("{scheme}://{}{}", server.local_addr(), args.path),
        secret: secrets.primary().clone(),
        store: Arc::clone(&store),
        public_url: args.public_url.clone(),
    };
    let admin = crate::admin::bind(&args.admin, backend_name(&args), Arc::clone(&store), hooks);
    let admin = admin.await?;
    let recreated = Counter::default();
    server
        .registry_mut()
        .sub_registry_with_prefix("preservica_webhook")
        .register(
            "subscriptions_recreated",
            "Subscriptions found gone from Preservica and subscribed again by serve --subscribe",
            recreated.clone(),
        );
    let listening = format!(
        "listening on {scheme}://{}{}",
        server.local_addr(),
        args.path
    );
    if !tracing::enabled!(target: "preservica_webhook_server", tracing::Level::INFO) {
        // The server logs the same line at info; say it here when that log is filtered out.
        output::note(&listening);
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut running = tokio::spawn(server.run_until(async move {
        let _ = stopped.await;
    }));

    let mut made = Vec::new();
    let mut outcome: anyhow::Result<()> = Ok(());
    if let (Some(client), Some(url)) = (&client, &args.public_url) {
        outcome = subscribe_all(client, url, &args.subscribe, secrets.primary(), &mut made).await;
    }
    let made = Arc::new(Mutex::new(made));
    let mut background = tokio::task::JoinSet::new();
    if let Some(admin) = admin {
        background.spawn(admin.run());
    }
    if let (true, Some(client), Some(url)) = (outcome.is_ok(), &client, &args.public_url)
        && !args.check_subscriptions.is_zero()
    {
        background.spawn(
            KeepAlive {
                client: client.clone(),
                url: url.clone(),
                triggers: args.subscribe.clone(),
                secret: secrets.primary().clone(),
                every: args.check_subscriptions,
                store: Arc::clone(&store),
                recreated,
                made: Arc::clone(&made),
            }
            .run(),
        );
    }
    if let (true, Some(client)) = (args.catch_up && outcome.is_ok(), &client) {
        let (client, store, url) = (client.clone(), Arc::clone(&store), args.public_url.clone());
        background.spawn(async move {
            crate::recovery::catch_up_latest_gap(&client, store.as_ref(), url.as_deref()).await;
        });
    }
    let inbox = (!args.in_memory).then_some(&args.inbox);
    if outcome.is_ok() {
        tokio::select! {
            signal = signals.next() => {
                let waiting = plural(calls.calls(), "running handler call", "running handler calls");
                tracing::info!(
                    "stopping ({}): waiting up to {:?} (--shutdown-grace) for the requests in \
                     flight and the {waiting} to finish; signal again (Ctrl-C or SIGTERM) to \
                     stop at once, {}",
                    signal.name(),
                    args.handling.shutdown_grace,
                    what_is_lost(inbox),
                );
            }
            ended = &mut running => {
                outcome = match ended {
                    Ok(Ok(())) => Err(anyhow!("the server stopped unexpectedly")),
                    Ok(Err(err)) => Err(anyhow::Error::new(err).context("the server failed")),
                    Err(err) => Err(anyhow::Error::new(err).context("the server failed")),
                };
            }
        }
    }
    let wait_for_server = !running.is_finished() || outcome.is_ok();
    let stopping = async {
        background.abort_all();
        if let (true, Some(client)) = (args.unsubscribe_on_exit, &client) {
            let made = made.lock().unwrap_or_else(PoisonError::into_inner).clone();
            for id in &made {
                match client.unsubscribe(id).await {
                    Ok(()) => output::note(&format!("unsubscribed {id}")),
                    Err(err) if err.is_not_found() => {
                        output::note(&format!("unsubscribed {id} (it was already gone)"));
                    }
                    Err(err) => {
                        output::note(&format!(
                            "error: could not unsubscribe {id}: {:#}",
                            anyhow::Error::new(err)
                        ));
                    }
                }
            }
        }
        let _ = stop.send(());
        if wait_for_server {
            match running.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return Err(anyhow::Error::new(err).context("the server failed")),
                Err(err) if err.is_cancelled() => {}
                Err(err) => return Err(anyhow::Error::new(err).context("the server failed")),
            }
        }
        Ok(())
    };
    tokio::select! {
        stopped = stopping => stopped?,
        signal = signals.next() => return Ok(force_stop(signal, &calls, inbox)),
    }
    outcome.map(|()| ExitCode::SUCCESS)
}

/// The inbox backend's name, as the admin dashboard shows it.
fn backend_name(args: &ServeArgs) -> &'static str {
    match (&args.inbox, args.in_memory) {
        (_, true) => "memory",
        (InboxLocation::File(_), false) => "sqlite",
        (InboxLocation::Postgres(_), false) => "postgres",
        (InboxLocation::Nats(_), false) => "nats",
    }
}

/// `work`: the workers alone, on an inbox that `serve --no-workers` processes fill.
///
/// # Errors
/// Configuration errors (exit 2): an inbox that cannot be shared or opened.
pub(crate) async fn work(global: &GlobalArgs, args: WorkArgs) -> anyhow::Result<ExitCode> {
    let inbox = match (args.nats.location()?, &args.inbox) {
        (Some(nats), _) => InboxLocation::Nats(nats),
        (None, Some(inbox)) => inbox.clone(),
        (None, None) => {
            return Err(config_error(
                "give the shared inbox: --inbox postgres://… or --nats URL",
            ));
        }
    };
    if let Some(path) = inbox.sqlite_file() {
        return Err(config_error(format!(
            "`work` cannot use the SQLite inbox {}: a SQLite file is opened by one process at \
             a time, the serve that receives into it, and that serve runs its workers itself; \
             run `preservica-webhook serve --inbox {}` without --no-workers, or give serve and \
             work an inbox they can share",
            path.display(),
            path.display()
        )));
    }
    warn_about_secret_files(global);
    let client = args
        .handling
        .thumbnails
        .is_some()
        .then(|| client(global))
        .transpose()?;
    let (handler, calls) = cli_handler(&args.handling, client)?;
    let mut config = WebhookConfig::new(Vec::new());
    config.inbox = inbox_config(&inbox);
    apply_handling(&args.handling, &mut config);
    crate::nats::fit_lease(&mut config);
    let mut signals = Signals::new()?;
    let workers = Workers::start(&config, handler)
        .await
        .map_err(server_error)?;
    tracing::info!(
        workers = config.workers,
        "handling the deliveries of the shared inbox"
    );
    let signal = signals.next().await;
    tracing::info!(
        "stopping ({}): waiting up to {:?} (--shutdown-grace) for the {} to finish; signal \
         again (Ctrl-C or SIGTERM) to stop at once, {}",
        signal.name(),
        args.handling.shutdown_grace,
        plural(
            calls.calls(),
            "running handler call",
            "running handler calls"
        ),
        what_is_lost(Some(&inbox)),
    );
    tokio::select! {
        () = workers.shutdown() => {}
        signal = signals.next() => return Ok(force_stop(signal, &calls, Some(&inbox))),
    }
    Ok(ExitCode::SUCCESS)
}

/// The store `--inbox` names.
pub(crate) fn inbox_config(location: &InboxLocation) -> InboxConfig {
    match location {
        InboxLocation::File(path) => InboxConfig::Sqlite(path.clone()),
        InboxLocation::Postgres(location) => InboxConfig::Postgres(location.clone()),
        InboxLocation::Nats(nats) => nats.config(),
    }
}

/// The handler the flags ask for (printing, `--exec`, `--thumbnails`), and the count of its
/// running calls.
fn cli_handler(
    args: &HandlerArgs,
    client: Option<Client>,
) -> anyhow::Result<(CliHandler, Arc<Running>)> {
    if let Some(dir) = &args.thumbnails {
        std::fs::create_dir_all(dir).map_err(|err| {
            config_error(format!(
                "cannot create the thumbnail directory {}: {err}",
                dir.display()
            ))
        })?;
    }
    let calls = Arc::new(Running::default());
    let handler = CliHandler {
        print: args.exec.is_none() && args.thumbnails.is_none(),
        running: Arc::clone(&calls),
        exec: args.exec.clone().map(|command| Exec {
            command,
            timeout: args.exec_timeout,
            running: Arc::clone(&calls),
        }),
        thumbnails: args
            .thumbnails
            .clone()
            .zip(client)
            .map(|(dir, client)| Thumbnails {
                client,
                dir,
                size: ThumbnailSize::Large,
            }),
    };
    Ok((handler, calls))
}

/// Sets the workers, timeouts, retries, lease and retention from the flags.
fn apply_handling(args: &HandlerArgs, config: &mut WebhookConfig) {
    config.workers = args.workers as usize;
    config.handler_timeout = args.exec_timeout + TIMEOUT_MARGIN;
    config.lease_margin = args.lease_margin;
    config.shutdown_grace = args.shutdown_grace;
    config.retry.max_attempts = args.max_attempts;
    config.retry.base_delay = args.retry_delay;
    config.retry.max_delay = config.retry.max_delay.max(args.retry_delay);
    config.retention = match args.retention {
        Retention::For(duration) => Some(duration),
        Retention::Forever => None,
    };
}

/// What stopping at once does to the deliveries whose calls it cuts short.
fn what_is_lost(inbox: Option<&InboxLocation>) -> &'static str {
    match inbox {
        None => "losing their deliveries (--in-memory)",
        Some(InboxLocation::File(_)) => "leaving their deliveries pending for the next start",
        Some(InboxLocation::Postgres(_)) => {
            "leaving their deliveries to be handled again, here or by another process, once \
             their leases have run out"
        }
        Some(InboxLocation::Nats(_)) => {
            "leaving their messages unacknowledged in the stream, for a worker to take once \
             their lease ends"
        }
    }
}

/// The second signal: kills the running commands and says what is left for the next start.
/// Returning drops the runtime and with it every handler call still running.
fn force_stop(signal: StopSignal, calls: &Running, inbox: Option<&InboxLocation>) -> ExitCode {
    let cut = plural(
        calls.calls(),
        "running handler call",
        "running handler calls",
    );
    let killed = calls.kill_all();
    let left = match inbox {
        Some(InboxLocation::File(path)) => match Inbox::open(path).and_then(|inbox| inbox.counts())
        {
            Ok(counts) => format!(
                "{} left pending in {}, to be handled again at the next start",
                plural(
                    usize::try_from(counts.pending).unwrap_or(usize::MAX),
                    "delivery",
                    "deliveries"
                ),
                path.display()
            ),
            Err(err) => format!(
                "cannot count the deliveries left pending in {} ({:#}); they are handled \
                 again at the next start (see `preservica-webhook inbox list --state pending`)",
                path.display(),
                anyhow::Error::new(err)
            ),
        },
        Some(InboxLocation::Postgres(location)) => format!(
            "their deliveries stay pending in {location}, to be handled again by any process \
             on it once their leases have run out"
        ),
        Some(InboxLocation::Nats(nats)) => format!(
            "their messages stay unacknowledged in the stream at {} and are handled again \
             once their lease ends",
            nats.servers()
        ),
        None => "the inbox was in memory (--in-memory): their deliveries and any still \
                 waiting are lost"
            .to_owned(),
    };
    tracing::warn!(
        "stopped at once on a second signal ({}): {cut} cut short, {} killed; {left}",
        signal.name(),
        plural(killed, "command", "commands"),
    );
    signal.exit_code()
}

/// `1 delivery`, `2 deliveries`.
fn plural(count: usize, one: &str, many: &str) -> String {
    if count == 1 {
        format!("1 {one}")
    } else {
        format!("{count} {many}")
    }
}

/// SIGINT and SIGTERM, each listened for from the start, so a second signal is never missed.
#[derive(Debug)]
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

/// Which signal asked to stop.
#[derive(Debug, Clone, Copy)]
enum StopSignal {
    Interrupt,
    Terminate,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        let listen = |kind: SignalKind, name: &str| {
            signal(kind)
                .with_context(|| format!("cannot listen for {name}, needed to stop cleanly"))
        };
        Ok(Signals {
            interrupt: listen(SignalKind::interrupt(), "SIGINT")?,
            terminate: listen(SignalKind::terminate(), "SIGTERM")?,
        })
    }

    /// The next SIGINT or SIGTERM.
    async fn next(&mut self) -> StopSignal {
        tokio::select! {
            Some(()) = self.interrupt.recv() => StopSignal::Interrupt,
            Some(()) = self.terminate.recv() => StopSignal::Terminate,
        }
    }
}

impl StopSignal {
    fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }

    /// 128 + the signal's number, as a shell reports a process that signal ended.
    fn exit_code(self) -> ExitCode {
        match self {
            StopSignal::Interrupt => ExitCode::from(130),
            StopSignal::Terminate => ExitCode::from(143),
        }
    }
}

/// Errors the user fixes in the configuration become configuration errors (exit 2): every
/// problem found before anything runs (a bad TLS file, an unusable inbox, a busy port).
fn server_error(err: ServerError) -> anyhow::Error {
    match err {
        ServerError::Config(_) | ServerError::ZeroLimit(_) | ServerError::Tls { .. } => {
            config_error(format!("the receiver cannot start: {err}"))
        }
        ServerError::Bind { addr, source } => config_error(format!(
            "the receiver cannot start: cannot listen on {addr}: {source}; {}",
            bind_hint(addr, source.kind())
        )),
        ServerError::Inbox(inbox) if inbox.is_configuration() => config_error(format!(
            "the receiver cannot start: {:#}",
            anyhow::Error::new(inbox)
        )),
        other => anyhow::Error::new(other).context("the receiver cannot start"),
    }
}

/// What to do about an address that cannot be bound, for the reason the system gave.
fn bind_hint(addr: std::net::SocketAddr, kind: std::io::ErrorKind) -> String {
    use std::io::ErrorKind;
    match kind {
        ErrorKind::AddrInUse => format!(
            "another program is using port {}; stop it or choose another port",
            addr.port()
        ),
        ErrorKind::PermissionDenied if addr.port() < 1024 => format!(
            "ports below 1024 need privileges; use a port of 1024 or more (e.g. {}:8000) \
             behind a proxy, or give the binary CAP_NET_BIND_SERVICE",
            addr.ip()
        ),
        ErrorKind::AddrNotAvailable => format!(
            "{} is not an address of this machine; use 127.0.0.1 (this machine only) or \
             0.0.0.0 (every interface)",
            addr.ip()
        ),
        _ => "check the address and that this user may listen on it".to_owned(),
    }
}

/// Subscribes `url` to each trigger, replacing any existing subscription of the same URL and
/// trigger, and records the ids made.
async fn subscribe_all(
    client: &Client,
    url: &str,
    triggers: &[TriggerType],
    secret: &Secret,
    made: &mut Vec<SubscriptionId>,
) -> anyhow::Result<()> {
    let existing = client
        .subscriptions()
        .await
        .context("cannot list the existing subscriptions")?;
    let mut seen: Vec<&TriggerType> = Vec::new();
    for trigger in triggers {
        if seen.contains(&trigger) {
            continue;
        }
        seen.push(trigger);
        let old: Vec<&Subscription> = existing
            .iter()
            .filter(|it| it.trigger_type.as_ref() == Some(trigger) && same_url(&it.url, url))
            .collect();
        // Subscribe first, then remove the old one: at worst an event arrives twice, never
        // not at all; and if subscribing fails, the old subscription stays.
        let created = client
            .subscribe(url, trigger, secret)
            .await
            .with_context(|| format!("cannot subscribe {url} to {trigger}"))?;
        made.push(created.id.clone());
        let mut replaced = Vec::new();
        for previous in old {
            match client.unsubscribe(&previous.id).await {
                Ok(()) => replaced.push(previous.id.to_string()),
                Err(err) if err.is_not_found() => replaced.push(previous.id.to_string()),
                Err(err) => {
                    return Err(anyhow::Error::new(err).context(format!(
                        "subscribed {trigger} as {}, but cannot remove the older subscription {} \
                         (Preservica would deliver every event twice); remove it with \
                         `preservica-webhook unsubscribe {}`",
                        created.id, previous.id, previous.id
                    )));
                }
            }
        }
        if replaced.is_empty() {
            output::note(&format!("subscribed {trigger} as {}", created.id));
        } else {
            output::note(&format!(
                "replaced subscription {}: subscribed {trigger} as {}",
                replaced.join(", "),
                created.id
            ));
        }
    }
    Ok(())
}

/// URLs are the same when they parse to the same URL (case of the host, default port), or
/// are the same text.
pub(crate) fn same_url(a: &str, b: &str) -> bool {
    match (reqwest::Url::parse(a), reqwest::Url::parse(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// What `serve` does with each verified delivery.
#[derive(Debug)]
struct CliHandler {
    /// Print each event as a JSON line (the default).
    print: bool,
    running: Arc<Running>,
    exec: Option<Exec>,
    thumbnails: Option<Thumbnails>,
}

impl Handler for CliHandler {
    async fn handle(&self, job: &Job) -> Result<(), HandlerError> {
        let _call = self.running.call();
        if let Some(thumbnails) = &self.thumbnails {
            thumbnails.handle(job).await?;
        }
        if let Some(exec) = &self.exec {
            exec.handle(job).await?;
        }
        if self.print {
            print_events(job)?;
        }
        Ok(())
    }
}

/// One event as the default handler prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EventLine<'a> {
    subscription_id: Option<&'a str>,
    trigger: Option<&'a str>,
    tenant: Option<&'a str>,
    timestamp: Option<&'a str>,
    event: Option<&'a str>,
    entity_type: Option<&'a str>,
    entity_ref: Option<&'a str>,
    identifiers: &'a [serde_json::Value],
    /// Only on deliveries catch-up filed for missed notifications.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    recovered: bool,
}

/// The delivery's events as JSON lines, written to stdout at once.
fn event_lines(job: &Job) -> Result<Vec<u8>, serde_json::Error> {
    let delivery = &job.delivery;
    let mut lines = Vec::new();
    for event in &delivery.events {
        let line = EventLine {
            subscription_id: delivery
                .subscription_id
                .as_ref()
                .map(SubscriptionId::as_str),
            trigger: delivery.trigger.as_ref().map(TriggerType::as_str),
            tenant: delivery.tenant.as_deref(),
            timestamp: delivery.timestamp_raw.as_deref(),
            event: event.event.as_deref(),
            entity_type: event.entity_type.as_ref().map(EntityType::as_str),
            entity_ref: event.entity_ref.as_deref(),
            identifiers: &event.identifiers,
            recovered: delivery.is_recovered(),
        };
        serde_json::to_writer(&mut lines, &line)?;
        lines.push(b'\n');
    }
    Ok(lines)
}

fn print_events(job: &Job) -> Result<(), HandlerError> {
    let lines = event_lines(job)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&lines)?;
    out.flush()?;
    Ok(())
}

/// `--exec`: a shell command per delivery.
#[derive(Debug)]
struct Exec {
    command: String,
    timeout: Duration,
    running: Arc<Running>,
}

impl Exec {
    async fn handle(&self, job: &Job) -> Result<(), HandlerError> {
        let delivery = &job.delivery;
        let refs = EnvRefs::new(delivery.entity_refs(), MAX_ENV_REFS);
        if refs.is_cut() {
            tracing::info!(
                id = %job.id,
                attempt = job.attempt,
                passed = refs.passed,
                total = refs.total,
                "the entity references do not all fit in PRESERVICA_ENTITY_REFS; the command \
                 gets the first ones there, PRESERVICA_ENTITY_REFS_TRUNCATED=1, and all of them \
                 in the body on stdin"
            );
        }
        let trigger = env_value(
            job,
            "PRESERVICA_TRIGGER",
            delivery.trigger.as_ref().map_or("", TriggerType::as_str),
        );
        let subscription = env_value(
            job,
            "PRESERVICA_SUBSCRIPTION_ID",
            delivery
                .subscription_id
                .as_ref()
                .map_or("", SubscriptionId::as_str),
        );
        let mut command = tokio::process::Command::new("sh");
        command
            .arg("-c")
            .arg(&self.command)
            .env("PRESERVICA_TRIGGER", trigger)
            .env("PRESERVICA_SUBSCRIPTION_ID", subscription)
            .env("PRESERVICA_ENTITY_REFS", &refs.joined)
            .env(
                "PRESERVICA_ENTITY_REFS_TRUNCATED",
                if refs.is_cut() { "1" } else { "0" },
            )
            .env("PRESERVICA_ENTITY_COUNT", refs.total.to_string())
            .env("PRESERVICA_DELIVERY_KEY", job.key.to_hex())
            .env("PRESERVICA_ATTEMPT", job.attempt.to_string())
            .env(
                "PRESERVICA_RECOVERED",
                if delivery.is_recovered() { "1" } else { "0" },
            )
            // The command has no use for the webhook secret; keep it out of its reach.
            .env_remove(SECRET_ENV)
            .stdin(Stdio::piped())
            // Logged line by line with the delivery's id, see `log_stderr`.
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|err| HandlerError::new(format!("cannot start sh: {err}")))?;
        // Declared after the child, so dropped before it: the group is killed while the
        // shell, its leader, is not yet reaped and its id cannot be reused.
        let group = child.id().map(|pid| self.running.group(pid));
        let stdin = child.stdin.take();
        let body = job.body.clone();
        let feed = tokio::spawn(async move {
            if let Some(mut stdin) = stdin {
                // A command that does not read its input closes the pipe: not an error.
                let _ = stdin.write_all(&body).await;
                let _ = stdin.shutdown().await;
            }
        });
        // Read all along, so a command that writes much never waits for the pipe.
        let stderr = child.stderr.take().map(|stderr| {
            AbortOnDrop(tokio::spawn(log_stderr(
                stderr,
                job.id.clone(),
                job.attempt,
            )))
        });
        let waited = tokio::time::timeout(self.timeout, child.wait()).await;
        feed.abort();
        // Whatever the command started and left running ends with it.
        drop(group);
        if let Some(mut stderr) = stderr {
            // Its last lines are logged before the outcome of the call.
            let _ = tokio::time::timeout(STDERR_DRAIN, &mut stderr.0).await;
        }
        match waited {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(HandlerError::new(format!(
                "the command exited with {status}"
            ))),
            Ok(Err(err)) => Err(HandlerError::new(format!(
                "waiting for the command failed: {err}"
            ))),
            Err(_) => {
                let _ = child.kill().await;
                Err(HandlerError::new(format!(
                    "the command ran longer than {:?} and was stopped",
                    self.timeout
                )))
            }
        }
    }
}

/// A task that ends with the call that spawned it.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Logs each line of a command's stderr with the delivery's inbox id and the attempt, so the
/// lines of concurrent calls can be told apart; lines are cut at [`MAX_STDERR_LINE`] bytes
/// and read as UTF-8, invalid bytes replaced.
async fn log_stderr(stderr: ChildStderr, id: DeliveryId, attempt: u32) {
    let mut reader = tokio::io::BufReader::new(stderr);
    let mut line = Vec::new();
    let mut cut = 0;
    loop {
        let (used, ended) = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(chunk) => {
                let newline = chunk.iter().position(|byte| *byte == b'\n');
                let part = &chunk[..newline.unwrap_or(chunk.len())];
                let keep = part.len().min(MAX_STDERR_LINE.saturating_sub(line.len()));
                line.extend_from_slice(&part[..keep]);
                cut += part.len() - keep;
                (newline.map_or(chunk.len(), |at| at + 1), newline.is_some())
            }
        };
        reader.consume(used);
        if ended {
            log_stderr_line(&id, attempt, &line, cut);
            line.clear();
            cut = 0;
        }
    }
    if !line.is_empty() || cut > 0 {
        log_stderr_line(&id, attempt, &line, cut);
    }
}

fn log_stderr_line(id: &DeliveryId, attempt: u32, line: &[u8], cut: usize) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = String::from_utf8_lossy(line);
    if cut == 0 {
        tracing::info!(%id, attempt, line = ?line, "exec stderr");
    } else {
        tracing::info!(%id, attempt, line = ?line, cut_bytes = cut, "exec stderr (line cut)");
    }
}

/// The handler calls running now and the process groups of their commands: shared by the
/// handler and `serve`, so a forced stop can say what it cuts short and kill the commands.
#[derive(Debug, Default)]
struct Running(Mutex<Calls>);

#[derive(Debug, Default)]
struct Calls {
    calls: usize,
    groups: HashSet<u32>,
}

/// One handler call, counted while it lives.
#[derive(Debug)]
struct Call(Arc<Running>);

/// A command's process group (its shell's id), killed when the call that started it ends in
/// any way: the command exits, it times out, or the call is dropped because the shutdown
/// grace ran out.
#[derive(Debug)]
struct Group {
    pgid: u32,
    running: Arc<Running>,
}

impl Running {
    fn lock(&self) -> std::sync::MutexGuard<'_, Calls> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn call(self: &Arc<Self>) -> Call {
        self.lock().calls += 1;
        Call(Arc::clone(self))
    }

    fn group(self: &Arc<Self>, pgid: u32) -> Group {
        self.lock().groups.insert(pgid);
        Group {
            pgid,
            running: Arc::clone(self),
        }
    }

    fn calls(&self) -> usize {
        self.lock().calls
    }

    /// Kills every running command's group now; their `Group`s then have nothing left to do.
    /// Returns how many there were.
    fn kill_all(&self) -> usize {
        let groups = std::mem::take(&mut self.lock().groups);
        for pgid in &groups {
            kill_group(*pgid);
        }
        groups.len()
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let mut calls = self.0.lock();
        calls.calls = calls.calls.saturating_sub(1);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let ours = self.running.lock().groups.remove(&self.pgid);
        if ours {
            kill_group(self.pgid);
        }
    }
}

/// Kills a process group with SIGKILL: the shell and whatever it started. Synchronous, so it
/// can run in a destructor.
fn kill_group(pgid: u32) {
    // Never 0 or 1: those would address our own group or every process we may signal.
    let Some(pid) = i32::try_from(pgid)
        .ok()
        .filter(|pid| *pid > 1)
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    match rustix::process::kill_process_group(pid, rustix::process::Signal::KILL) {
        // Gone already: the command and everything it started have ended.
        Ok(()) | Err(rustix::io::Errno::SRCH) => {}
        Err(err) => tracing::warn!(
            "cannot stop the processes of an --exec command (process group {pgid}): {err}; \
             stop them with `kill -KILL -- -{pgid}`"
        ),
    }
}

/// The entity references as the command's environment gets them.
#[derive(Debug, PartialEq, Eq)]
struct EnvRefs {
    /// The first references, separated by spaces.
    joined: String,
    /// How many of them are in `joined`.
    passed: usize,
    /// How many the delivery has.
    total: usize,
}

impl EnvRefs {
    /// As many whole references as fit in `limit` bytes; the list stops before the first that
    /// does not fit or cannot be an environment value (a NUL byte), so it is always a prefix.
    fn new<'a>(refs: impl Iterator<Item = &'a str>, limit: usize) -> EnvRefs {
        let mut joined = String::new();
        let mut passed = 0;
        let mut total = 0;
        let mut full = false;
        for reference in refs {
            total += 1;
            if full {
                continue;
            }
            let separator = usize::from(!joined.is_empty());
            let fits = joined.len() + separator + reference.len() <= limit;
            if !fits || reference.contains('\0') {
                full = true;
                continue;
            }
            if separator == 1 {
                joined.push(' ');
            }
            joined.push_str(reference);
            passed += 1;
        }
        EnvRefs {
            joined,
            passed,
            total,
        }
    }

    /// Whether some references were left out.
    fn is_cut(&self) -> bool {
        self.passed < self.total
    }
}

/// `value`, or empty (and a log line) when it is too long or cannot be an environment value.
fn env_value<'a>(job: &Job, name: &str, value: &'a str) -> &'a str {
    if value.len() <= MAX_ENV_VALUE && !value.contains('\0') {
        return value;
    }
    tracing::warn!(
        id = %job.id,
        attempt = job.attempt,
        bytes = value.len(),
        "{name} is passed empty: the value is longer than {MAX_ENV_VALUE} bytes or holds a NUL \
         byte; the command finds it in the body on stdin"
    );
    ""
}

/// `--thumbnails`: each asset event's thumbnail into a directory.
#[derive(Debug)]
struct Thumbnails {
    client: Client,
    dir: PathBuf,
    size: ThumbnailSize,
}

impl Thumbnails {
    async fn handle(&self, job: &Job) -> Result<(), HandlerError> {
        for event in &job.delivery.events {
            let Some(reference) = event.entity_ref.as_deref() else {
                continue;
            };
            if event.entity_type != Some(EntityType::Asset) {
                tracing::debug!(reference, "not an asset: no thumbnail fetched");
                continue;
            }
            let checked = match EntityRef::new(reference) {
                Ok(checked) => checked,
                Err(reason) => {
                    tracing::warn!("skipping a thumbnail: {reason}");
                    continue;
                }
            };
            match download_thumbnail(&self.client, &checked, self.size, &self.dir).await {
                Ok(Some((path, thumbnail))) => {
                    tracing::info!(reference, path = %path.display(), bytes = thumbnail.bytes, "thumbnail saved");
                }
                Ok(None) => tracing::warn!(reference, "the asset has no thumbnail"),
                Err(err) => {
                    let not_found = err.chain().any(|cause| {
                        cause
                            .downcast_ref::<preservica_webhook_client::Error>()
                            .is_some_and(preservica_webhook_client::Error::is_not_found)
                    });
                    if not_found {
                        tracing::warn!(reference, "the asset is gone: {err:#}");
                        continue;
                    }
                    return Err(HandlerError::new(format!(
                        "thumbnail of {reference}: {err:#}"
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use preservica_webhook_core::{Delivery, DeliveryKey};

    use super::*;

    fn job(body: &str) -> Job {
        Job {
            id: DeliveryId::from(1),
            key: DeliveryKey::of(body.as_bytes()),
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
            delivery: Delivery::from_slice(body.as_bytes()).unwrap(),
            attempt: 1,
        }
    }

    #[test]
    fn prints_one_line_per_event_with_the_fixed_keys() {
        let lines = event_lines(&job(
            r#"{"subscriptionId":"4583e1e6d2c72ed96a1151bc7dfd53c2","timestamp":"2026-01-24T09:15:03.001","tenant":"TEST","version":"7.7","events":[{"event":"Moved","entityType":"SO","entityRef":"0b8a","identifiers":[{"BatchId":"B-17"}],"extra":1},{"event":"Moved","entityType":"IO","entityRef":"9c1d","identifiers":[]}],"trigger":"MOVED"}"#,
        ))
        .unwrap();
        expect![[r#"
            {"subscriptionId":"4583e1e6d2c72ed96a1151bc7dfd53c2","trigger":"MOVED","tenant":"TEST","timestamp":"2026-01-24T09:15:03.001","event":"Moved","entityType":"SO","entityRef":"0b8a","identifiers":[{"BatchId":"B-17"}]}
            {"subscriptionId":"4583e1e6d2c72ed96a1151bc7dfd53c2","trigger":"MOVED","tenant":"TEST","timestamp":"2026-01-24T09:15:03.001","event":"Moved","entityType":"IO","entityRef":"9c1d","identifiers":[]}
        "#]]
        .assert_eq(&String::from_utf8(lines).unwrap());
    }

    #[test]
    fn missing_fields_print_as_null() {
        let lines = event_lines(&job(r#"{"events":[{}]}"#)).unwrap();
        expect![[r#"
            {"subscriptionId":null,"trigger":null,"tenant":null,"timestamp":null,"event":null,"entityType":null,"entityRef":null,"identifiers":[]}
        "#]]
        .assert_eq(&String::from_utf8(lines).unwrap());
    }

    #[test]
    fn passes_whole_references_up_to_the_bound_and_says_when_it_cut() {
        let check = |refs: &[&str], limit: usize, joined: &str, passed: usize| {
            let got = EnvRefs::new(refs.iter().copied(), limit);
            assert_eq!(
                got,
                EnvRefs {
                    joined: joined.to_owned(),
                    passed,
                    total: refs.len(),
                },
                "{refs:?} within {limit}"
            );
            assert_eq!(got.is_cut(), passed < refs.len());
        };
        check(&[], 10, "", 0);
        check(&["abc", "de"], 6, "abc de", 2);
        check(&["abc", "de"], 5, "abc", 1);
        check(&["abc", "de", "f"], 3, "abc", 1);
        check(&["abcd", "e"], 3, "", 0);
        // Once one is left out, so is every later one: the list stays a prefix.
        check(&["abc", "defgh", "i"], 5, "abc", 1);
        check(&["a", "b\0c", "d"], 10, "a", 1);
    }

    #[test]
    fn compares_urls_as_urls() {
        assert!(same_url(
            "https://Hooks.example.org:443/x",
            "https://hooks.example.org/x"
        ));
        assert!(!same_url(
            "https://hooks.example.org/x",
            "https://hooks.example.org/y"
        ));
        assert!(same_url("not a url", "not a url"));
    }
}
