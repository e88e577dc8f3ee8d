//! The command tree: every command, flag, default, help text and example.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use preservica_webhook_core::{EntityRef, EntityType, KNOWN_TRIGGERS, TriggerType};
use preservica_webhook_server::{DeliveryId, PostgresLocation};

/// The default inbox file of `serve` and `inbox`.
pub(crate) const DEFAULT_INBOX: &str = "preservica-webhook.db";

/// The default credentials file.
pub(crate) const DEFAULT_CREDENTIALS: &str = "credentials.properties";

/// Where an inbox is, as `--inbox` gives it.
#[derive(Debug, Clone)]
pub(crate) enum InboxLocation {
    /// A SQLite file: anything that is not a URL.
    File(PathBuf),
    /// A PostgreSQL database shared by several processes: a `postgres://` or `postgresql://`
    /// URL, completed from the libpq environment variables.
    Postgres(PostgresLocation),
    /// A NATS JetStream stream (`--nats`).
    Nats(crate::nats::NatsLocation),
}

impl InboxLocation {
    /// The SQLite file, which only one process at a time may open; `None` for an inbox
    /// several processes share.
    pub(crate) fn sqlite_file(&self) -> Option<&Path> {
        match self {
            InboxLocation::File(path) => Some(path),
            InboxLocation::Postgres(_) | InboxLocation::Nats(_) => None,
        }
    }
}

/// Two locations are the same when they name the same file or the same database (shown
/// without passwords).
impl PartialEq for InboxLocation {
    fn eq(&self, other: &InboxLocation) -> bool {
        match (self, other) {
            (InboxLocation::File(a), InboxLocation::File(b)) => a == b,
            (InboxLocation::Postgres(a), InboxLocation::Postgres(b)) => {
                a.to_string() == b.to_string()
            }
            _ => false,
        }
    }
}

const ABOUT: &str =
    "Manage Preservica webhook subscriptions, run a durable receiver, test a receiver";

const LONG_ABOUT: &str = "\
Manage Preservica webhook subscriptions, run a durable receiver, test a receiver.

Credentials for Preservica (subscribe, subscriptions, unsubscribe, asset, thumbnail, serve
--subscribe/--thumbnails) come from the flags, then the environment (PRESERVICA_SERVER,
PRESERVICA_USERNAME, PRESERVICA_PASSWORD, PRESERVICA_TENANT, PRESERVICA_2FA_TOKEN), then the
[credentials] section of ./credentials.properties (or --credentials PATH). The password is
never a flag.

The webhook secret shared with Preservica comes from --secret-file FILE, else the environment
variable PRESERVICA_WEBHOOK_SECRET, else `secret.key` in the credentials file. A secret file
holds one secret per line: the first signs and answers, all are accepted (for rotation).";

const EXAMPLES: &str = "\
Examples:
  # Receive deliveries on port 8000 and print each event as a JSON line
  PRESERVICA_WEBHOOK_SECRET=my_shared_secret preservica-webhook serve 0.0.0.0:8000

  # Check a receiver answers Preservica's handshake, then send it a signed test delivery
  preservica-webhook challenge http://127.0.0.1:8000/
  preservica-webhook send http://127.0.0.1:8000/ --trigger INDEXED

  # Listen, subscribe, and remove the subscription again on Ctrl-C
  preservica-webhook serve 0.0.0.0:8000 --subscribe INDEXED \\
      --public-url https://hooks.example.org/ --unsubscribe-on-exit

  # Manage subscriptions
  preservica-webhook subscribe --url https://hooks.example.org/ --trigger MOVED
  preservica-webhook subscriptions --json

Exit status: 0 ok, 1 the operation failed, 2 usage or configuration error (130/143: serve
stopped by a second signal).";

/// The `preservica-webhook` command line.
#[derive(Debug, Parser)]
#[command(
    name = "preservica-webhook",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXAMPLES,
    propagate_version = true,
    max_term_width = 100
)]
pub(crate) struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub(crate) struct GlobalArgs {
    /// Credentials file (INI, the `credentials` section).
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        help = "Credentials file, INI with a [credentials] section (username, password, tenant, \
                server, secret.key) [default: ./credentials.properties]"
    )]
    pub(crate) credentials: Option<PathBuf>,

    /// Preservica server: a host name (eu.preservica.com, https implied) or a base URL
    /// [env: PRESERVICA_SERVER]
    #[arg(long, global = true, value_name = "HOST|URL")]
    pub(crate) server: Option<String>,

    /// Preservica user name [env: PRESERVICA_USERNAME]
    #[arg(long, global = true, value_name = "NAME")]
    pub(crate) username: Option<String>,

    /// Preservica tenant [env: PRESERVICA_TENANT]
    #[arg(long, global = true, value_name = "TENANT")]
    pub(crate) tenant: Option<String>,

    /// File of webhook secrets, one a line: the first signs and answers, all are accepted
    /// [else env PRESERVICA_WEBHOOK_SECRET, else secret.key in the credentials file]
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) secret_file: Option<PathBuf>,

    /// Print data as JSON instead of text
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// Log more to stderr (-v debug, -vv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = ArgAction::Count, conflicts_with = "quiet")]
    pub(crate) verbose: u8,

    /// Log only errors to stderr
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,

    /// How log lines are written to stderr: text for people, json (one object a line) for
    /// log shippers
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// One readable line per event
    Text,
    /// One JSON object per line
    Json,
}

/// `--inbox`: a URL of a shared inbox, or else a path to a SQLite file.
pub(crate) fn parse_inbox(text: &str) -> Result<InboxLocation, String> {
    if text.is_empty() {
        return Err("give a path to a SQLite file or a postgres:// URL".to_owned());
    }
    if PostgresLocation::is_url(text) {
        return text
            .parse()
            .map(InboxLocation::Postgres)
            .map_err(|err| err.to_string());
    }
    if let Some((scheme, _)) = text.split_once("://") {
        let is_scheme = !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if is_scheme && matches!(scheme, "nats" | "tls") {
            return Err(format!("give a NATS server with --nats {text}"));
        }
        if is_scheme {
            return Err(format!(
                "no inbox is built in for {scheme}:// URLs; give a path to a SQLite file or a \
                 postgres:// URL"
            ));
        }
    }
    Ok(InboxLocation::File(PathBuf::from(text)))
}

/// `--inbox`'s parser: [`parse_inbox`], with an error that does not repeat the value given,
/// which may hold a database password.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InboxParser;

impl clap::builder::TypedValueParser for InboxParser {
    type Value = InboxLocation;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<InboxLocation, clap::Error> {
        let name = arg.map_or_else(|| "--inbox".to_owned(), |arg| arg.to_string());
        let refuse = |reason: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value for '{name}': {reason}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| refuse("the location is not valid UTF-8".to_owned()))?;
        parse_inbox(text).map_err(refuse)
    }
}

/// How long processed deliveries are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retention {
    /// Pruned once older than this.
    For(Duration),
    /// Never pruned.
    Forever,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Subscribe a URL to a trigger; prints the new subscription's id
    #[command(after_help = "\
Examples:
  preservica-webhook subscribe --url https://hooks.example.org/ --trigger INDEXED
  preservica-webhook subscribe --url https://hooks.example.org/ --trigger moved --json

Preservica calls the URL during the subscribe call (the handshake): the receiver must be up and
hold the same secret. Run `preservica-webhook challenge URL` first to check it.")]
    Subscribe(SubscribeArgs),

    /// List the subscriptions (a table, or a JSON array with --json)
    #[command(
        visible_alias = "list",
        after_help = "Examples:\n  preservica-webhook subscriptions\n  preservica-webhook list --json"
    )]
    Subscriptions,

    /// Remove subscriptions by id, or all of them
    #[command(after_help = "\
Examples:
  preservica-webhook unsubscribe 4583e1e6d2c72ed96a1151bc7dfd53c2
  preservica-webhook unsubscribe --all --yes")]
    Unsubscribe(UnsubscribeArgs),

    /// Show an asset (information object): title, description, security tag, parent
    #[command(after_help = "\
Examples:
  preservica-webhook asset 7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2
  preservica-webhook asset 7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2 --json")]
    Asset(AssetArgs),

    /// Download an asset's thumbnail
    #[command(after_help = "\
Examples:
  preservica-webhook thumbnail 7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2            # REF.jpg here
  preservica-webhook thumbnail 7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2 --size small -o small.jpg
  preservica-webhook thumbnail 7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2 -o - > thumb.jpg")]
    Thumbnail(ThumbnailArgs),

    /// Run the receiver: answer the handshake, verify, store and process deliveries
    #[command(after_help = "\
Examples:
  # Print every event as a JSON line (the default handler)
  preservica-webhook serve 0.0.0.0:8000
  # Run a command per delivery, the raw body on stdin
  preservica-webhook serve --exec 'jq .events >> events.log'
  # Download the thumbnail of every asset event
  preservica-webhook serve --thumbnails ./thumbs
  # One-command set-up behind a public URL, cleaned up on exit
  preservica-webhook serve 0.0.0.0:8000 --subscribe INDEXED --subscribe MOVED \\
      --public-url https://hooks.example.org/ --unsubscribe-on-exit

--exec and --thumbnails replace the printing handler; together, the thumbnails are fetched
first, then the command runs.

Once listening, serve writes `listening on http://IP:PORT/PATH` to stderr. Deliveries are stored
in the inbox before they are acknowledged and processed at least once; failed processing is
retried with backoff, then kept as dead (see `inbox`). SIGINT/SIGTERM stop it gracefully:
requests in flight and running handler calls get --shutdown-grace to finish; a second signal
stops at once, killing the running commands (their deliveries stay pending for the next start)
and exiting 130 (SIGINT) or 143 (SIGTERM).

Besides the webhook path, the same listener answers GET /healthz (`ok`, for load balancers and
probes) and GET /metrics (Prometheus/OpenMetrics: deliveries accepted, refused by reason,
duplicates, handler results, inbox depth, dead letters, latency).")]
    Serve(ServeArgs),

    /// Handle the deliveries a shared inbox holds, without a receiver (workers only)
    #[command(after_help = "\
Examples:
  # Receivers that only store, and workers beside them, on one shared inbox
  INBOX=postgres://webhook@db.example.org/webhook
  preservica-webhook serve 0.0.0.0:8000 --inbox \"$INBOX\" --no-workers
  preservica-webhook work --inbox \"$INBOX\" --exec ./handle-event.sh

The handlers are serve's: each event printed as a JSON line on stdout, or --exec, --thumbnails,
with the same retries and dead letters. A delivery is handled by one worker at a time; one whose
worker stopped (a crash, a killed host) is handled again once its lease has run out. The SQLite
file, which one process at a time may open, cannot be shared: its workers run inside serve.
SIGINT/SIGTERM stop it gracefully: running handler calls get --shutdown-grace to finish.")]
    Work(WorkArgs),

    /// Look into the receiver's inbox (works while serve runs on it)
    #[command(after_help = "\
Examples:
  preservica-webhook inbox list --state dead
  preservica-webhook inbox show 42 --json
  preservica-webhook inbox retry --dead
  preservica-webhook inbox export > deliveries.jsonl")]
    Inbox(InboxArgs),

    /// List the windows in which no receiver was up (from the runs the inbox records)
    #[command(after_help = "\
Examples:
  preservica-webhook gaps
  preservica-webhook gaps --inbox /var/lib/preservica-webhook/inbox.db --json

Every serve records its start, a heartbeat every 30 s and its clean stop in the inbox. A gap is a
time no run covered (a run that crashed ends a heartbeat after its last), from the first recorded
run on, widened by --margin on both sides. `catch-up --gaps` recovers what was missed in them.")]
    Gaps(GapsArgs),

    /// File what was missed while no receiver was up, from Preservica's own records
    #[command(after_help = "\
Examples:
  # After an outage: every gap the inbox knows of (stop serve on a SQLite inbox first)
  preservica-webhook catch-up --gaps
  # A window of your choosing
  preservica-webhook catch-up --since 2026-12-01T08:00:00Z --until 2026-12-01T12:00:00Z

For each window it reads Preservica's event log (an Ingest event stands for FULL_TEXT_INDEXED, a
Moved event for MOVED) and, for INGEST_FAILED, the failed ingest monitors; for every event whose
trigger a subscription listens for and whose notification the inbox does not hold, it files a
recovered delivery: the shape of a real one, with \"recovered\": true, not signed by Preservica.
Handlers see the mark (PRESERVICA_RECOVERED=1 for --exec). Running it again files nothing twice.
Event types with no known trigger (a security change among them) are counted, not recovered.")]
    CatchUp(CatchUpArgs),

    /// Send a receiver a signed delivery in Preservica's shape; prints the status
    #[command(after_help = "\
Examples:
  preservica-webhook send http://127.0.0.1:8000/ --trigger INDEXED
  preservica-webhook send http://127.0.0.1:8000/ --trigger MOVED --entity-type SO --transfer length
  preservica-webhook send https://hooks.example.org/ --trigger INDEXED --body captured.json

Exit status 0 when the receiver answers 2xx, 1 otherwise.")]
    Send(SendArgs),

    /// Perform Preservica's handshake against a receiver and check its answer
    #[command(after_help = "\
Examples:
  preservica-webhook challenge http://127.0.0.1:8000/
  PRESERVICA_WEBHOOK_SECRET=my_shared_secret preservica-webhook challenge https://hooks.example.org/

Exit status 0 only if Preservica would accept the answer; otherwise 1 and what is wrong.")]
    Challenge(ChallengeArgs),

    /// Print the Preservica-Signature of a body (from FILE or stdin)
    #[command(after_help = "\
Examples:
  preservica-webhook sign delivery.json
  printf '{}' | preservica-webhook sign")]
    Sign(SignArgs),

    /// Check a Preservica-Signature against a body (from FILE or stdin)
    #[command(after_help = "\
Examples:
  preservica-webhook verify --signature 5c2f…e1 delivery.json

Exit status 0 when one of the secrets produces the signature, 1 otherwise.")]
    Verify(VerifyArgs),

    /// Print a shell completion script
    #[command(after_help = "\
Examples:
  preservica-webhook completions bash > /etc/bash_completion.d/preservica-webhook
  preservica-webhook completions zsh > ~/.zfunc/_preservica-webhook")]
    Completions(CompletionsArgs),
}

/// `subscribe`.
#[derive(Debug, Args)]
pub(crate) struct SubscribeArgs {
    /// Where Preservica is to send deliveries (a public https URL, usually)
    #[arg(long, value_name = "URL")]
    pub(crate) url: String,
    /// What to listen for: MOVED, INDEXED (FULL_TEXT_INDEXED), SECURITY_CHANGED
    /// (CHANGED_SECURITY_DESCRIPTOR), INGEST_FAILED, CHANGE_ASSET_VISIBILITY; any case
    #[arg(long, value_name = "TRIGGER", value_parser = known_trigger)]
    pub(crate) trigger: TriggerType,
}

/// `unsubscribe`.
#[derive(Debug, Args)]
pub(crate) struct UnsubscribeArgs {
    /// Ids of the subscriptions to remove
    #[arg(
        value_name = "ID",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub(crate) ids: Vec<String>,
    /// Remove every subscription of the user
    #[arg(long)]
    pub(crate) all: bool,
    /// Do not ask for confirmation of --all
    #[arg(long, short, requires = "all")]
    pub(crate) yes: bool,
}

/// `asset`.
#[derive(Debug, Args)]
pub(crate) struct AssetArgs {
    /// The asset's reference (a UUID)
    #[arg(value_name = "REF")]
    pub(crate) reference: EntityRef,
}

/// Thumbnail sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Size {
    /// 64 px
    Small,
    /// 150 px
    Medium,
    /// 400 px
    Large,
}

/// `thumbnail`.
#[derive(Debug, Args)]
pub(crate) struct ThumbnailArgs {
    /// The asset's reference (a UUID)
    #[arg(value_name = "REF")]
    pub(crate) reference: EntityRef,
    /// Image size
    #[arg(long, value_enum, default_value_t = Size::Large)]
    pub(crate) size: Size,
    /// Where to write the image; `-` for stdout [default: REF.EXT, EXT from the image type]
    #[arg(short, long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
}

/// `serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[arg(
        value_name = "ADDR",
        default_value = "127.0.0.1:8000",
        value_parser = parse_listen_addr,
        help = "Address to listen on: IP:PORT (0.0.0.0:8000 for every interface, [::]:8000 for \
                IPv6), localhost:PORT, or PORT alone for 127.0.0.1:PORT; port 0 picks a free port"
    )]
    pub(crate) addr: SocketAddr,
    /// The inbox: a SQLite file, created if missing, or a postgres:// URL of a database that
    /// several serve and work processes share (tables created and migrated by the program;
    /// PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE fill in what it leaves out)
    #[arg(
        long,
        value_name = "PATH|URL",
        default_value = DEFAULT_INBOX,
        value_parser = InboxParser,
        conflicts_with = "in_memory"
    )]
    pub(crate) inbox: InboxLocation,
    /// Keep the inbox in memory: deliveries not yet processed are lost on exit
    #[arg(long, conflicts_with = "nats")]
    pub(crate) in_memory: bool,
    /// A NATS JetStream inbox instead of the SQLite file.
    #[command(flatten)]
    pub(crate) nats: crate::nats::NatsArgs,
    /// Only take deliveries in: store them and answer, run no workers. For an inbox shared
    /// with `preservica-webhook work` processes, which handle them
    #[arg(long, conflicts_with_all = ["exec", "thumbnails", "in_memory"])]
    pub(crate) no_workers: bool,
    /// The webhook path (the path part of the subscription URL)
    #[arg(long, value_name = "PATH", default_value = "/")]
    pub(crate) path: String,
    /// Largest body accepted (bytes, or with a suffix: 512k, 2M, 1MiB); larger ones get 413
    #[arg(long, value_name = "SIZE", default_value = "1M", value_parser = parse_size)]
    pub(crate) max_body: usize,
    /// TLS certificate chain (PEM); with --tls-key, serve https
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Once listening, subscribe --public-url to TRIGGER (repeatable); an existing
    /// subscription of the same URL and trigger is replaced
    #[arg(long, value_name = "TRIGGER", value_parser = known_trigger, requires = "public_url")]
    pub(crate) subscribe: Vec<TriggerType>,
    /// The URL Preservica reaches this receiver at (for --subscribe)
    #[arg(long, value_name = "URL", requires = "subscribe")]
    pub(crate) public_url: Option<String>,
    /// Remove the subscriptions made by --subscribe when stopping
    #[arg(long, requires = "subscribe")]
    pub(crate) unsubscribe_on_exit: bool,
    /// How often to check that the --subscribe subscriptions still exist on Preservica; one
    /// that is gone is subscribed again (with the handshake) and what was missed since the
    /// last check is recovered as `catch-up` does; `0s` never checks
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration, requires = "subscribe")]
    pub(crate) check_subscriptions: Duration,
    /// At start, recover the notifications missed since the last receiver on this inbox
    /// stopped, as `catch-up --gaps` does for the latest gap (needs credentials)
    #[arg(long)]
    pub(crate) catch_up: bool,
    /// The admin dashboard.
    #[command(flatten)]
    pub(crate) admin: Box<crate::admin::AdminArgs>,
    /// How deliveries are handled.
    #[command(flatten)]
    pub(crate) handling: HandlerArgs,
}

/// How stored deliveries are handled: by `serve`'s workers or by `work`.
#[derive(Debug, Args)]
pub(crate) struct HandlerArgs {
    /// How many deliveries are processed at once
    #[arg(long, value_name = "N", default_value = "4", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) workers: u32,
    /// Run CMD through `sh -c` once per delivery, the raw body on stdin (always the whole
    /// delivery); exit 0 = done, anything else = retry later. Environment: PRESERVICA_TRIGGER,
    /// PRESERVICA_SUBSCRIPTION_ID, PRESERVICA_ENTITY_REFS (space-separated, at most 64 KiB:
    /// a longer list is cut at a whole reference, PRESERVICA_ENTITY_REFS_TRUNCATED is then 1,
    /// else 0; read the body for all of them), PRESERVICA_ENTITY_COUNT (how many the delivery
    /// has), PRESERVICA_DELIVERY_KEY (hex SHA-256 of the body), PRESERVICA_ATTEMPT (1-based),
    /// PRESERVICA_RECOVERED (1 for a delivery `catch-up` filed for a missed notification, else 0).
    /// Its stderr lines go to serve's log with the delivery's inbox id; processes it leaves
    /// running are killed when it exits
    #[arg(long, value_name = "CMD")]
    pub(crate) exec: Option<String>,
    /// Longest a handler call may run before it is stopped and retried
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub(crate) exec_timeout: Duration,
    /// On SIGINT or SIGTERM, how long the requests in flight and the running handler calls may
    /// take to finish; calls still running then are stopped, their commands killed, and their
    /// deliveries stay pending for the next start. A second signal stops at once the same way
    /// and exits with 130 after SIGINT, 143 after SIGTERM
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub(crate) shutdown_grace: Duration,
    /// Download the thumbnail of every asset (IO) event into DIR as REF.EXT (needs
    /// credentials); folder events are skipped
    #[arg(long, value_name = "DIR")]
    pub(crate) thumbnails: Option<PathBuf>,
    /// Handler attempts before a delivery is kept as dead
    #[arg(long, value_name = "N", default_value = "8", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_attempts: u32,
    /// Backoff before the first retry, doubling after each up to 5m (e.g. 100ms, 1s, 2m)
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub(crate) retry_delay: Duration,
    /// How long processed (done) deliveries stay in the inbox, or `never` to keep them;
    /// pending, dead and undecodable ones are always kept. A redelivery of a pruned body
    /// is stored and processed again
    #[arg(long, value_name = "DURATION|never", default_value = "30d", value_parser = parse_retention)]
    pub(crate) retention: Retention,
    /// How long a claimed delivery stays leased after --exec-timeout (and 5s more) has run
    /// out, for its outcome to be recorded. With an inbox shared by several processes, the
    /// deliveries a crashed one had claimed are handled by another once their lease is over
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub(crate) lease_margin: Duration,
}

/// `work`.
#[derive(Debug, Args)]
pub(crate) struct WorkArgs {
    /// The inbox that `serve --no-workers` processes store deliveries in, shared by every
    /// process that opens it: a postgres:// URL (for a NATS JetStream stream, give --nats URL
    /// instead)
    #[arg(long, value_name = "URL", value_parser = InboxParser, required_unless_present = "nats")]
    pub(crate) inbox: Option<InboxLocation>,
    /// The NATS JetStream stream that `serve --nats` receivers publish to.
    #[command(flatten)]
    pub(crate) nats: crate::nats::NatsArgs,
    /// How deliveries are handled.
    #[command(flatten)]
    pub(crate) handling: HandlerArgs,
}

/// `inbox`.
#[derive(Debug, Args)]
pub(crate) struct InboxArgs {
    /// The inbox serve writes to: a SQLite file or a postgres:// URL
    #[arg(long, global = true, value_name = "PATH|URL", default_value = DEFAULT_INBOX, value_parser = InboxParser)]
    pub(crate) inbox: InboxLocation,
    /// A NATS JetStream inbox instead of the SQLite file.
    #[command(flatten)]
    pub(crate) nats: crate::nats::NatsArgs,
    /// What to do with it.
    #[command(subcommand)]
    pub(crate) command: InboxCommand,
}

/// Delivery states to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StateArg {
    /// Waiting to be processed (or retried)
    Pending,
    /// Processed
    Done,
    /// Failed every attempt, or failed permanently
    Dead,
    /// Authentic but not a delivery (kept, never processed)
    Undecodable,
    /// Everything
    All,
}

/// `inbox` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum InboxCommand {
    /// List stored deliveries, oldest first
    List {
        /// Which deliveries
        #[arg(long, value_enum, default_value_t = StateArg::All)]
        state: StateArg,
    },
    /// Show one delivery: its state, then its body exactly as received
    Show {
        /// The delivery's id (from `inbox list`)
        #[arg(value_name = "ID")]
        id: DeliveryId,
        /// Reformat a JSON body for reading (and show a non-UTF-8 body as hex) instead of
        /// printing the bytes as received
        #[arg(long)]
        pretty: bool,
    },
    /// Queue a dead delivery for processing again
    Retry {
        /// The delivery's id
        #[arg(
            value_name = "ID",
            required_unless_present = "dead",
            conflicts_with = "dead"
        )]
        id: Option<DeliveryId>,
        /// Every dead delivery
        #[arg(long)]
        dead: bool,
    },
    /// Print every stored delivery, oldest first, as one JSON object a line: id, key, state,
    /// receivedAt, and body (the raw body as a string; bodyBase64 instead when not UTF-8)
    Export,
    /// Store the deliveries of an export read from standard input (one JSON object a line, as
    /// `inbox export` prints them), keeping each one's state and time received; deliveries the
    /// inbox has already are skipped, so an import can be run again. Creates the inbox when it
    /// does not exist; stop `serve` on an inbox file first. Attempt counts and errors are not
    /// in an export: imported deliveries start with none
    Import,
}

/// `gaps`.
#[derive(Debug, Args)]
pub(crate) struct GapsArgs {
    /// The inbox the receivers record their runs in
    #[arg(long, value_name = "PATH|URL", default_value = DEFAULT_INBOX, value_parser = InboxParser)]
    pub(crate) inbox: InboxLocation,
    /// The NATS JetStream stream the receivers record their runs beside.
    #[command(flatten)]
    pub(crate) nats: crate::nats::NatsArgs,
    /// How much wider than the silence each gap is taken, on both sides: for clocks that
    /// disagree and events recorded a little off their moment
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub(crate) margin: Duration,
}

/// `catch-up`.
#[derive(Debug, Args)]
pub(crate) struct CatchUpArgs {
    /// The inbox to file recovered deliveries in
    #[arg(long, value_name = "PATH|URL", default_value = DEFAULT_INBOX, value_parser = InboxParser)]
    pub(crate) inbox: InboxLocation,
    /// The NATS JetStream stream to file recovered deliveries in.
    #[command(flatten)]
    pub(crate) nats: crate::nats::NatsArgs,
    /// Recover from this time on (RFC 3339, or a UTC date-time such as 2026-12-01T08:00)
    #[arg(long, value_name = "TIME", value_parser = parse_time, required_unless_present = "gaps", conflicts_with = "gaps")]
    pub(crate) since: Option<chrono::DateTime<chrono::Utc>>,
    /// Recover every gap in the runs the inbox recorded (see `gaps`)
    #[arg(long)]
    pub(crate) gaps: bool,
    /// Recover up to this time [default: now]
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub(crate) until: Option<chrono::DateTime<chrono::Utc>>,
    /// Only recover for the subscriptions that send to this URL [default: every subscription]
    #[arg(long, value_name = "URL")]
    pub(crate) url: Option<String>,
    /// With --gaps: how much wider than the silence each gap is taken, on both sides
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub(crate) margin: Duration,
}

/// A time given on the command line: RFC 3339, or a date-time without offset (UTC).
pub(crate) fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let text = text.trim();
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&chrono::Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Ok(naive.and_utc());
        }
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc());
    }
    Err(format!(
        "{text:?} is not a time; give RFC 3339 such as 2026-12-01T08:00:00Z, or a UTC date-time such as 2026-12-01T08:00"
    ))
}

/// How `send` transfers the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Transfer {
    /// Transfer-Encoding: chunked, as Preservica sends
    Chunked,
    /// Content-Length, as proxies may rewrite it
    Length,
}

/// `send`.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// The receiver's URL
    #[arg(value_name = "URL")]
    pub(crate) url: String,
    /// The trigger the delivery is for (wire or documentation name)
    #[arg(long, value_name = "TRIGGER", value_parser = any_trigger)]
    pub(crate) trigger: TriggerType,
    /// The event's entity reference [default: a random UUID]
    #[arg(long, value_name = "REF")]
    pub(crate) entity_ref: Option<String>,
    /// The event's entity type: IO (asset), SO (folder), CO (content object)
    #[arg(long, value_name = "TYPE", default_value = "IO", value_parser = entity_type)]
    pub(crate) entity_type: EntityType,
    /// Send this file's bytes as the body instead of a built delivery
    #[arg(long, value_name = "FILE")]
    pub(crate) body: Option<PathBuf>,
    /// How to transfer the body
    #[arg(long, value_enum, default_value_t = Transfer::Chunked)]
    pub(crate) transfer: Transfer,
    /// Alter the body after signing, to check the receiver refuses it
    #[arg(long)]
    pub(crate) tamper: bool,
}

/// `challenge`.
#[derive(Debug, Args)]
pub(crate) struct ChallengeArgs {
    /// The receiver's URL (the subscription URL)
    #[arg(value_name = "URL")]
    pub(crate) url: String,
}

/// `sign`.
#[derive(Debug, Args)]
pub(crate) struct SignArgs {
    /// The body [default: stdin]
    #[arg(value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
}

/// `verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The Preservica-Signature header value (64 hex digits)
    #[arg(long, value_name = "HEX")]
    pub(crate) signature: String,
    /// The body [default: stdin]
    #[arg(value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
}

/// `completions`.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

/// A trigger this version knows, by wire or documentation name.
fn known_trigger(input: &str) -> Result<TriggerType, String> {
    let trigger = TriggerType::parse(input);
    if trigger.is_known() {
        return Ok(trigger);
    }
    let names: Vec<String> = KNOWN_TRIGGERS
        .iter()
        .map(|it| match it.documentation_name() {
            doc if doc != it.as_str() => format!("{} ({doc})", it.as_str()),
            _ => it.as_str().to_owned(),
        })
        .collect();
    Err(format!("unknown trigger; use one of {}", names.join(", ")))
}

/// Any trigger: known names are normalised, others are sent as given.
fn any_trigger(input: &str) -> Result<TriggerType, String> {
    if input.trim().is_empty() {
        return Err("the trigger is empty".to_owned());
    }
    Ok(TriggerType::parse(input))
}

fn entity_type(input: &str) -> Result<EntityType, String> {
    match EntityType::parse(input) {
        EntityType::Unknown(_) => Err("use IO (asset), SO (folder) or CO (content object)".into()),
        known => Ok(known),
    }
}

/// Parses a listening address: `IP:PORT`, `[IPv6]:PORT`, `localhost:PORT`, `:PORT` or `PORT`
/// (the last three on 127.0.0.1).
pub(crate) fn parse_listen_addr(input: &str) -> Result<SocketAddr, String> {
    let text = input.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let port_text = text
        .strip_prefix(':')
        .or_else(|| text.strip_prefix("localhost:"))
        .unwrap_or(text);
    match port_text.parse::<u16>() {
        Ok(port) => Ok(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port))),
        Err(_) => Err(format!(
            "{input:?} is not an address to listen on; write IP:PORT, e.g. 127.0.0.1:8000 \
             (this machine only), 0.0.0.0:8000 (every interface), [::]:8000, or just the port, 8000"
        )),
    }
}

/// Parses a retention: a duration (`30d`, `12h`) or `never`.
fn parse_retention(input: &str) -> Result<Retention, String> {
    if input.trim().eq_ignore_ascii_case("never") {
        return Ok(Retention::Forever);
    }
    let duration = parse_duration(input).map_err(|err| format!("{err}, or never"))?;
    if duration.is_zero() {
        return Err(format!(
            "{input:?} would prune deliveries as soon as they are processed; give a duration \
             such as 7d, or never"
        ));
    }
    Ok(Retention::For(duration))
}

/// Parses `100ms`, `5s`, `2m`, `1h`, `30d`, or a plain number of seconds.
pub(crate) fn parse_duration(input: &str) -> Result<Duration, String> {
    let text = input.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{input:?} is not a duration; write e.g. 100ms, 5s, 2m, 1h or 30d"))?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" | "sec" | "secs" => 1.0,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?}; use ms, s, m, h or d"
            ));
        }
    };
    Duration::try_from_secs_f64(value * scale).map_err(|err| format!("{input:?}: {err}"))
}

/// Parses `1048576`, `512k`, `2M`, `1MiB`, `64KB` (k and M are binary: 1024 and 1024²).
pub(crate) fn parse_size(input: &str) -> Result<usize, String> {
    let text = input.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: usize = number
        .parse()
        .map_err(|_| format!("{input:?} is not a size; write e.g. 1048576, 512k or 2M"))?;
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?}; use k, M or G")),
    };
    value
        .checked_mul(scale)
        .filter(|it| *it > 0)
        .ok_or_else(|| format!("{input:?} is not a usable size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_tree_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_durations() {
        let check = |input: &str, expected: Option<Duration>| {
            assert_eq!(parse_duration(input).ok(), expected, "{input:?}");
        };
        check("100ms", Some(Duration::from_millis(100)));
        check("5s", Some(Duration::from_secs(5)));
        check("5", Some(Duration::from_secs(5)));
        check("2m", Some(Duration::from_secs(120)));
        check("1h", Some(Duration::from_secs(3600)));
        check("30d", Some(Duration::from_secs(30 * 86_400)));
        check("1.5s", Some(Duration::from_millis(1500)));
        check("5x", None);
        check("ms", None);
    }

    #[test]
    fn parses_listening_addresses() {
        let check = |input: &str, expected: Option<&str>| {
            let parsed = parse_listen_addr(input).ok().map(|it| it.to_string());
            assert_eq!(parsed.as_deref(), expected, "{input:?}");
        };
        check("127.0.0.1:8000", Some("127.0.0.1:8000"));
        check("0.0.0.0:8000", Some("0.0.0.0:8000"));
        check("[::]:8000", Some("[::]:8000"));
        check("8000", Some("127.0.0.1:8000"));
        check(":8000", Some("127.0.0.1:8000"));
        check("localhost:8000", Some("127.0.0.1:8000"));
        check(" 8000 ", Some("127.0.0.1:8000"));
        check("localhost", None);
        check("example.org:8000", None);
        check("70000", None);
        check("", None);
        let err = parse_listen_addr("localhost").unwrap_err();
        assert!(err.contains("e.g. 127.0.0.1:8000"), "{err}");
    }

    #[test]
    fn parses_retention() {
        assert_eq!(parse_retention("never"), Ok(Retention::Forever));
        assert_eq!(parse_retention("NEVER"), Ok(Retention::Forever));
        assert_eq!(
            parse_retention("30d"),
            Ok(Retention::For(Duration::from_secs(30 * 86_400)))
        );
        assert_eq!(
            parse_retention("12h"),
            Ok(Retention::For(Duration::from_secs(12 * 3600)))
        );
        assert!(parse_retention("0").is_err());
        assert!(parse_retention("soon").unwrap_err().contains("or never"));
    }

    /// The defaults `serve --help` shows are the server's own defaults.
    #[test]
    fn serve_defaults_are_the_servers() {
        let cli = Cli::parse_from(["preservica-webhook", "serve"]);
        let Command::Serve(args) = cli.command else {
            panic!("not serve");
        };
        let server = preservica_webhook_server::ServerConfig::new(Vec::new());
        assert_eq!(args.addr, server.addr);
        assert_eq!(args.path, server.webhook.path);
        assert_eq!(args.max_body, server.webhook.max_body);
        assert_eq!(args.handling.workers as usize, server.webhook.workers);
        assert_eq!(
            args.handling.max_attempts,
            server.webhook.retry.max_attempts
        );
        assert_eq!(args.handling.retry_delay, server.webhook.retry.base_delay);
        assert_eq!(args.handling.lease_margin, server.webhook.lease_margin);
        assert_eq!(
            args.handling.retention,
            Retention::For(server.webhook.retention.unwrap())
        );
        assert_eq!(
            Some(args.inbox.clone()),
            match server.webhook.inbox {
                preservica_webhook_server::InboxConfig::Sqlite(path) =>
                    Some(InboxLocation::File(path)),
                _ => None,
            }
        );
    }

    #[test]
    fn parses_sizes() {
        let check = |input: &str, expected: Option<usize>| {
            assert_eq!(parse_size(input).ok(), expected, "{input:?}");
        };
        check("1048576", Some(1 << 20));
        check("512k", Some(512 << 10));
        check("2M", Some(2 << 20));
        check("1MiB", Some(1 << 20));
        check("0", None);
        check("12q", None);
    }
}
