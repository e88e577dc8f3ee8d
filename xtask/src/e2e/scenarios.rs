//! The scenarios: what a user does with the binary, checked end to end.
//!
//! They share one suite: the stand-in, a runner for the binary's commands, and the main
//! receiver (a `serve` on a temporary inbox) that scenarios 1 to 5 build on. Running a
//! subset starts what it builds on as needed, so `cargo xtask e2e 5` works alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures_util::{StreamExt, stream};
use preservica_webhook_core::{Secret, insecure_challenge_hmac, sign};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::harness::{self, Cli, Serve, one_line};
use super::standin::{
    self, DeliveryBody, EventSpec, PASSWORD, StandIn, TENANT, THUMBNAIL_PNG, Transfer, USERNAME,
    delivery_body, post_delivery,
};

/// How many scenarios there are.
pub(crate) const COUNT: usize = 10;

/// The scenarios' names, in order.
const NAMES: [&str; COUNT] = [
    "challenge passes against a fresh receiver",
    "subscribe: handshake reaches the receiver, list shows it, wrong secret refused",
    "100 events delivered: each printed once, all done in the inbox",
    "tampered and unsigned deliveries refused and kept nowhere; oracle code refused",
    "redelivery answered 200 and processed once",
    "--exec failing once per delivery: every delivery done after exactly two calls",
    "SIGKILL during concurrent deliveries; restart on the same inbox loses and repeats none",
    "serve --subscribe --public-url --unsubscribe-on-exit",
    "--thumbnails: an image for an asset event, none for a folder event",
    "unsubscribe --all --yes empties the list",
];

/// The webhook secret the suite shares with its receivers.
const SECRET: &str = "e2e-webhook-secret-7d1c";
/// The secret of a receiver that was set up wrongly.
const WRONG_SECRET: &str = "e2e-some-other-secret";
/// The wire name of the trigger the suite subscribes to.
const INDEXED: &str = "FULL_TEXT_INDEXED";
/// The keys of each line the default handler prints, exactly.
const EVENT_LINE_KEYS: [&str; 8] = [
    "subscriptionId",
    "trigger",
    "tenant",
    "timestamp",
    "event",
    "entityType",
    "entityRef",
    "identifiers",
];
/// How long processing of a batch of deliveries may take.
const PROCESSING_TIMEOUT: Duration = Duration::from_secs(60);
/// How many deliveries scenario 7 sends in each round.
const CRASH_DELIVERIES: usize = 150;
/// How many of them are in flight at once.
const CRASH_CONCURRENCY: usize = 8;
/// How many crash rounds scenario 7 runs (each with its own random kill moment).
const CRASH_ROUNDS: usize = 6;

/// Runs the selected scenarios (all when `only` is empty) in order, fails on the first
/// failure, and checks that no process the suite started is left.
pub(crate) async fn run(binary: &Path, seed: u64, only: &[usize]) -> Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("preservica-webhook-e2e-")
        .tempdir()
        .context("could not create a scratch directory")?;
    let standin = StandIn::start().await?;
    println!(
        "e2e: seed {seed} (replay: cargo xtask e2e --seed {seed}); stand-in Preservica at {}",
        standin.uri()
    );
    let mut selected: Vec<usize> = if only.is_empty() {
        (1..=COUNT).collect()
    } else {
        only.to_vec()
    };
    selected.sort_unstable();
    selected.dedup();

    let mut suite = Suite::new(binary, scratch.path(), standin, seed)?;
    let mut passed = 0;
    let mut failure = None;
    for number in selected {
        let name = NAMES[number - 1];
        let started = Instant::now();
        let result = suite.scenario(number).await;
        let took = started.elapsed().as_secs_f64();
        match result {
            Ok(note) => {
                passed += 1;
                println!("e2e {number:>2}. {name} ... ok ({took:.1}s){note}");
            }
            Err(err) => {
                println!("e2e {number:>2}. {name} ... FAILED ({took:.1}s)");
                failure = Some(err.context(format!("scenario {number} ({name}) failed")));
                break;
            }
        }
    }
    // Stop the main receiver gracefully (a failure here is a failure of the suite), then drop
    // everything: any receiver still running is killed with its group.
    let finished = if failure.is_none() {
        suite.stop_main().await
    } else {
        Ok(())
    };
    drop(suite);
    let leftovers = harness::wait_gone(scratch.path(), Duration::from_secs(5)).await;
    let failed = usize::from(failure.is_some() || finished.is_err() || !leftovers.is_empty());
    println!("e2e: {passed} passed, {failed} failed");
    if let Some(err) = failure {
        return Err(err);
    }
    finished.context("stopping the main receiver at the end of the suite")?;
    if !leftovers.is_empty() {
        for (pid, _) in &leftovers {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        bail!("processes the suite started outlived it (now killed): {leftovers:?}");
    }
    Ok(())
}

/// What the scenarios share.
#[derive(Debug)]
struct Suite {
    cli: Cli,
    standin: StandIn,
    scratch: PathBuf,
    http: reqwest::Client,
    /// A client that opens a connection per request, for the requests a receiver refuses.
    ///
    /// A receiver may answer 401 from the headers alone, before the body has arrived; it
    /// must then close the connection. If it does so without saying `Connection: close`, a
    /// pooling client that already sent the whole body takes the connection for reusable
    /// and its next request fails ("connection closed before message completed"). That is
    /// not what these scenarios test, so refused requests do not share connections.
    http_once: reqwest::Client,
    rng: StdRng,
    main: Option<MainReceiver>,
}

/// The receiver scenarios 1 to 5 build on.
#[derive(Debug)]
struct MainReceiver {
    serve: Serve,
    inbox: PathBuf,
    /// Its subscription at the stand-in, once scenario 2 made it.
    subscription: Option<String>,
    /// Every entity reference of a delivery it accepted: each must be printed exactly once.
    accepted_refs: Vec<String>,
}

/// One entry of `inbox list --json`.
#[derive(Debug, Clone)]
struct InboxEntry {
    key: String,
    state: String,
    raw: Value,
}

impl Suite {
    fn new(binary: &Path, scratch: &Path, standin: StandIn, seed: u64) -> Result<Suite> {
        let workdir = scratch.join("work");
        std::fs::create_dir_all(&workdir)?;
        let server = standin.uri();
        let cli = Cli::new(
            binary.to_path_buf(),
            workdir,
            &[
                ("PRESERVICA_SERVER", &server),
                ("PRESERVICA_USERNAME", USERNAME),
                ("PRESERVICA_PASSWORD", PASSWORD),
                ("PRESERVICA_TENANT", TENANT),
                ("PRESERVICA_WEBHOOK_SECRET", SECRET),
            ],
        );
        Ok(Suite {
            cli,
            standin,
            scratch: scratch.to_path_buf(),
            http: standin::http_client()?,
            http_once: standin::http_client_without_reuse()?,
            rng: StdRng::seed_from_u64(seed),
            main: None,
        })
    }

    async fn scenario(&mut self, number: usize) -> Result<String> {
        match number {
            1 => self.challenge_passes().await,
            2 => self.subscribe_through_the_stand_in().await,
            3 => self.hundred_events_each_printed_once().await,
            4 => self.forgeries_refused().await,
            5 => self.redelivery_processed_once().await,
            6 => self.exec_retries_until_success().await,
            7 => self.crash_loses_and_repeats_nothing().await,
            8 => self.serve_subscribes_and_unsubscribes().await,
            9 => self.thumbnails_for_assets_only().await,
            10 => self.unsubscribe_all().await,
            other => bail!("no scenario {other}"),
        }
    }

    // ---------------------------------------------------------------------------------
    // The main receiver.

    async fn main(&mut self) -> Result<&mut MainReceiver> {
        if self.main.is_none() {
            let inbox = self.scratch.join("main-inbox.db");
            let serve = self
                .cli
                .serve(&[
                    "127.0.0.1:0".as_ref(),
                    "--inbox".as_ref(),
                    inbox.as_os_str(),
                    "--workers".as_ref(),
                    "1".as_ref(),
                    "--retry-delay".as_ref(),
                    "100ms".as_ref(),
                ])
                .await?;
            self.main = Some(MainReceiver {
                serve,
                inbox,
                subscription: None,
                accepted_refs: Vec::new(),
            });
        }
        Ok(self.main.as_mut().expect("started above"))
    }

    async fn main_url(&mut self) -> Result<String> {
        Ok(self.main().await?.serve.url().to_owned())
    }

    /// The main receiver's subscription, made with `subscribe` if there is none yet.
    async fn main_subscription(&mut self) -> Result<String> {
        if let Some(id) = self.main().await?.subscription.clone() {
            return Ok(id);
        }
        let url = self.main_url().await?;
        let id = self.subscribe(&url).await?;
        self.main().await?.subscription = Some(id.clone());
        Ok(id)
    }

    /// Stops the main receiver with SIGTERM (exit 0 required) and checks its whole stdout:
    /// only event lines, and every accepted event exactly once.
    async fn stop_main(&mut self) -> Result<()> {
        let Some(main) = self.main.take() else {
            return Ok(());
        };
        let stopped = main.serve.terminate_ok().await?;
        let counts = event_counts(&stopped.stdout)?;
        for reference in &main.accepted_refs {
            let seen = counts.get(reference.as_str()).copied().unwrap_or(0);
            ensure!(
                seen == 1,
                "over the main receiver's whole run, event {reference} was printed {seen} times, not once"
            );
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------
    // Helpers.

    /// `subscribe --url URL --trigger INDEXED`, checked against the stand-in; the new id.
    async fn subscribe(&self, url: &str) -> Result<String> {
        let output = self
            .cli
            .run(&["subscribe", "--url", url, "--trigger", "INDEXED"])
            .await?
            .success()?;
        let id = output
            .stdout
            .lines()
            .map(str::trim)
            .rfind(|line| !line.is_empty())
            .with_context(|| format!("`{}` printed no subscription id", output.what))?
            .to_owned();
        let Some(stored) = self.standin.subscription(&id) else {
            bail!(
                "`subscribe` printed {id:?}, but the stand-in holds no such subscription (it holds {:?})",
                ids(&self.standin)
            );
        };
        ensure!(
            same_url(&stored.url, url),
            "the subscription was made for {:?}, not {url:?}",
            stored.url
        );
        ensure!(
            stored.trigger == INDEXED,
            "`--trigger INDEXED` subscribed to {:?}, not {INDEXED}",
            stored.trigger
        );
        ensure!(
            stored.secret == SECRET,
            "the subscription was made with a secret other than PRESERVICA_WEBHOOK_SECRET"
        );
        Ok(id)
    }

    /// Every entry of an inbox (`inbox list --state all --json`).
    async fn inbox_entries(&self, inbox: &Path) -> Result<Vec<InboxEntry>> {
        let output = self
            .cli
            .run(&[
                "inbox".as_ref(),
                "list".as_ref(),
                "--inbox".as_ref(),
                inbox.as_os_str(),
                "--state".as_ref(),
                "all".as_ref(),
                "--json".as_ref(),
            ])
            .await?
            .success()?;
        let Value::Array(items) = output.json()? else {
            bail!("`{}` did not print a JSON array", output.what);
        };
        items
            .into_iter()
            .map(|raw| {
                let text = |name: &str| {
                    raw.get(name)
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .with_context(|| format!("an inbox entry has no string {name:?}: {raw}"))
                };
                Ok(InboxEntry {
                    key: text("key")?.to_ascii_lowercase(),
                    state: text("state")?,
                    raw: raw.clone(),
                })
            })
            .collect()
    }

    /// Waits until every key is in the inbox in state `done`; returns the entries by key.
    ///
    /// The inbox belongs to another process and says nothing when it changes, so this polls
    /// it through `inbox list` (which must work while `serve` runs) until a deadline.
    async fn wait_done(
        &self,
        inbox: &Path,
        keys: &[String],
    ) -> Result<HashMap<String, InboxEntry>> {
        let deadline = Instant::now() + PROCESSING_TIMEOUT;
        loop {
            let entries = self.inbox_entries(inbox).await?;
            let by_key: HashMap<String, InboxEntry> = entries
                .into_iter()
                .map(|entry| (entry.key.clone(), entry))
                .collect();
            let pending: Vec<String> = keys
                .iter()
                .filter(|key| by_key.get(*key).is_none_or(|entry| entry.state != "done"))
                .map(|key| match by_key.get(key) {
                    Some(entry) => format!("{key} ({})", entry.state),
                    None => format!("{key} (not in the inbox)"),
                })
                .collect();
            if pending.is_empty() {
                return Ok(by_key);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} of {} deliveries are not done in the inbox after {PROCESSING_TIMEOUT:?}: {}",
                    pending.len(),
                    keys.len(),
                    pending
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Signs and POSTs a body to `url` with the suite's secret; the status.
    async fn post_signed(&self, url: &str, body: &DeliveryBody, transfer: Transfer) -> Result<u16> {
        let secret = Secret::new(SECRET)?;
        let signature = sign(&secret, &body.bytes).to_hex();
        post_delivery(&self.http, url, &body.bytes, Some(&signature), transfer).await
    }

    /// A directory of its own under the scratch directory.
    fn dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.scratch.join(name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
        Ok(dir)
    }

    // ---------------------------------------------------------------------------------
    // 1.

    async fn challenge_passes(&mut self) -> Result<String> {
        let url = self.main_url().await?;
        self.cli.run(&["challenge", &url]).await?.success()?;
        Ok(format!(" [receiver at {url}]"))
    }

    // ---------------------------------------------------------------------------------
    // 2.

    async fn subscribe_through_the_stand_in(&mut self) -> Result<String> {
        let url = self.main_url().await?;
        let handshakes_before = self.standin.handshakes().len();
        let id = self.main_subscription().await?;
        let handshakes = self.standin.handshakes();
        let ours: Vec<_> = handshakes[handshakes_before..]
            .iter()
            .filter(|it| same_url(&it.url, &url))
            .collect();
        ensure!(
            ours.iter().any(|it| it.outcome.is_ok()),
            "the stand-in's handshake with the receiver did not succeed: {ours:?}"
        );

        let listed = self
            .cli
            .run(&["subscriptions", "--json"])
            .await?
            .success()?
            .json()?;
        let entry = listed
            .as_array()
            .context("`subscriptions --json` did not print an array")?
            .iter()
            .find(|it| it.get("id").and_then(Value::as_str) == Some(id.as_str()))
            .with_context(|| format!("`subscriptions --json` does not show {id}: {listed}"))?;
        ensure!(
            entry.get("triggerType").and_then(Value::as_str) == Some(INDEXED)
                && entry
                    .get("url")
                    .and_then(Value::as_str)
                    .is_some_and(|it| same_url(it, &url)),
            "`subscriptions --json` shows {entry}, expected url {url} and triggerType {INDEXED}"
        );

        // A receiver holding another secret: Preservica's handshake must fail, and so must
        // `challenge`, which performs the same check.
        let wrong_cli = self
            .cli
            .with_env(&[("PRESERVICA_WEBHOOK_SECRET", WRONG_SECRET)]);
        let wrong = wrong_cli.serve(&["127.0.0.1:0", "--in-memory"]).await?;
        let wrong_url = wrong.url().to_owned();
        self.cli
            .run(&["challenge", &wrong_url])
            .await?
            .exit_code(&[1])
            .context("`challenge` must fail against a receiver with another secret")?;
        let refused = self
            .cli
            .run(&["subscribe", "--url", &wrong_url, "--trigger", "INDEXED"])
            .await?
            .exit_code(&[1])
            .context("subscribing a receiver with another secret must fail")?;
        let said = format!("{}\n{}", refused.stdout, refused.stderr).to_lowercase();
        ensure!(
            said.contains("handshake") || said.contains("verif"),
            "the failed subscribe does not say the handshake failed: {}",
            one_line(&refused.stderr)
        );
        ensure!(
            self.standin
                .subscriptions()
                .iter()
                .all(|it| !same_url(&it.url, &wrong_url)),
            "the stand-in stored a subscription for the receiver with the wrong secret"
        );
        wrong.terminate_ok().await?;

        // The stand-in really checks the login form.
        let (_, failed_before) = self.standin.logins();
        self.cli
            .with_env(&[("PRESERVICA_PASSWORD", "not-the-password")])
            .run(&["subscriptions", "--json"])
            .await?
            .exit_code(&[1, 2])
            .context(
                "a wrong password must fail (a refused login may count as a configuration error)",
            )?;
        ensure!(
            self.standin.logins().1 > failed_before,
            "a wrong password did not reach the stand-in's login"
        );
        Ok(format!(" [subscription {id}]"))
    }

    // ---------------------------------------------------------------------------------
    // 3.

    async fn hundred_events_each_printed_once(&mut self) -> Result<String> {
        let subscription = self.main_subscription().await?;
        // Deliveries of 1 to 5 events (a cycle of 5 sizes against 2 transfers, so every size
        // goes both ways), 100 events in all.
        let mut plan: Vec<(Vec<EventSpec>, Transfer)> = Vec::new();
        let mut total = 0;
        let mut index = 0;
        while total < 100 {
            let size = (index % 5 + 1).min(100 - total);
            let events = (0..size).map(|_| EventSpec::asset()).collect();
            let transfer = if index % 2 == 0 {
                Transfer::Chunked
            } else {
                Transfer::Length
            };
            plan.push((events, transfer));
            total += size;
            index += 1;
        }
        let deliveries = plan.len();
        let standin = &self.standin;
        let subscription_ref = subscription.as_str();
        let results: Vec<Result<(DeliveryBody, u16)>> = stream::iter(plan)
            .map(|(events, transfer)| async move {
                standin.deliver(subscription_ref, &events, transfer).await
            })
            .buffer_unordered(4)
            .collect()
            .await;
        let mut bodies = Vec::new();
        for result in results {
            let (body, status) = result?;
            ensure!(
                status == 200,
                "a signed delivery was answered {status}, not 200"
            );
            bodies.push(body);
        }
        let refs: Vec<String> = bodies.iter().flat_map(|it| it.refs.clone()).collect();
        let main = self.main.as_mut().expect("subscribed above");
        main.accepted_refs.extend(refs.iter().cloned());

        let wanted: HashSet<&str> = refs.iter().map(String::as_str).collect();
        main.serve
            .stdout()
            .wait_until(
                PROCESSING_TIMEOUT,
                "a line for each of the 100 events",
                |lines| {
                    let seen: HashSet<&str> = lines.iter().filter_map(|it| line_ref(it)).collect();
                    wanted.is_subset(&seen).then_some(())
                },
            )
            .await
            .map_err(|err| main.serve.explain(err))?;
        let lines = main.serve.stdout().snapshot();
        let counts = event_counts(&lines)?;
        for reference in &refs {
            let seen = counts.get(reference.as_str()).copied().unwrap_or(0);
            ensure!(
                seen == 1,
                "event {reference} was printed {seen} times, not once"
            );
        }
        for line in &lines {
            let event: Value = serde_json::from_str(line)?;
            if !event["entityRef"]
                .as_str()
                .is_some_and(|it| wanted.contains(it))
            {
                continue;
            }
            let expected = [
                ("subscriptionId", subscription.as_str()),
                ("trigger", INDEXED),
                ("tenant", TENANT),
                ("timestamp", "2026-01-24T09:15:03.469"),
                ("event", "FullTextIndexed"),
                ("entityType", "IO"),
            ];
            for (key, value) in expected {
                ensure!(
                    event[key].as_str() == Some(value),
                    "an event line has {key} {}, expected {value:?}: {line}",
                    event[key]
                );
            }
            ensure!(
                event["identifiers"] == Value::Array(Vec::new()),
                "an event line has identifiers {}, expected []",
                event["identifiers"]
            );
        }

        let inbox = main.inbox.clone();
        let keys: Vec<String> = bodies.iter().map(|it| it.key.clone()).collect();
        self.wait_done(&inbox, &keys).await?;
        Ok(format!(" [100 events in {deliveries} deliveries]"))
    }

    // ---------------------------------------------------------------------------------
    // 4.

    async fn forgeries_refused(&mut self) -> Result<String> {
        let url = self.main_url().await?;
        let secret = Secret::new(SECRET)?;
        let subscription = "9495ddbf7d4a0b9f030a3411c87f967d";
        let mut forbidden_refs = Vec::new();
        let mut forbidden_keys = Vec::new();

        // Signed over one body, sent with another: both transfers.
        for transfer in [Transfer::Chunked, Transfer::Length] {
            let signed = delivery_body(subscription, INDEXED, &[EventSpec::asset()]);
            let signature = sign(&secret, &signed.bytes).to_hex();
            let forged_ref = standin::random_uuid();
            let tampered = String::from_utf8(signed.bytes.clone())?
                .replace(&signed.refs[0], &forged_ref)
                .into_bytes();
            let status =
                post_delivery(&self.http_once, &url, &tampered, Some(&signature), transfer).await?;
            ensure!(
                status == 401,
                "a tampered delivery ({transfer:?}) was answered {status}, not 401"
            );
            forbidden_refs.extend([signed.refs[0].clone(), forged_ref]);
            forbidden_keys.push(preservica_webhook_core::DeliveryKey::of(&tampered).to_hex());
        }
        // No signature at all.
        let unsigned = delivery_body(subscription, INDEXED, &[EventSpec::asset()]);
        let status = post_delivery(
            &self.http_once,
            &url,
            &unsigned.bytes,
            None,
            Transfer::Chunked,
        )
        .await?;
        ensure!(
            status == 401,
            "an unsigned delivery was answered {status}, not 401"
        );
        forbidden_refs.extend(unsigned.refs.clone());
        forbidden_keys.push(unsigned.key.clone());

        // The signing oracle: a challenge code that is the signature prefix followed by a
        // forged body. Answering it would hand out that body's signature.
        let forged = delivery_body(subscription, INDEXED, &[EventSpec::asset()]);
        let code = format!(
            "preservica-webhook-auth{}",
            String::from_utf8(forged.bytes.clone())?
        );
        let leaked = [
            insecure_challenge_hmac(&secret, &code),
            sign(&secret, &forged.bytes).to_hex(),
        ];
        for method in [reqwest::Method::POST, reqwest::Method::GET] {
            let response = self
                .http_once
                .request(method.clone(), &url)
                .query(&[("challengeCode", code.as_str())])
                .send()
                .await
                .context("sending the oracle challenge")?;
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            ensure!(
                status.is_client_error(),
                "the oracle challenge code ({method}) was answered {status}, not refused with 400"
            );
            ensure!(
                leaked.iter().all(|it| !body.contains(it.as_str())),
                "the refusal of the oracle code ({method}) leaks a signature: {body}"
            );
        }
        forbidden_refs.extend(forged.refs.clone());

        // A good delivery after them: once it is printed, the refused ones had their chance.
        let sentinel = delivery_body(subscription, INDEXED, &[EventSpec::asset()]);
        let status = self.post_signed(&url, &sentinel, Transfer::Chunked).await?;
        ensure!(
            status == 200,
            "a signed delivery was answered {status}, not 200"
        );
        let main = self.main.as_mut().expect("started above");
        main.accepted_refs.extend(sentinel.refs.clone());
        let sentinel_ref = sentinel.refs[0].clone();
        main.serve
            .stdout()
            .wait_for(
                PROCESSING_TIMEOUT,
                "the line of the good delivery",
                |line| line_ref(line) == Some(sentinel_ref.as_str()),
            )
            .await
            .map_err(|err| main.serve.explain(err))?;
        let inbox = main.inbox.clone();
        let stdout = main.serve.stdout().snapshot().join("\n");

        let entries = self.inbox_entries(&inbox).await?;
        let export = self
            .cli
            .run(&[
                "inbox".as_ref(),
                "export".as_ref(),
                "--inbox".as_ref(),
                inbox.as_os_str(),
            ])
            .await?
            .success()?;
        ensure!(
            export.stdout.contains(&sentinel_ref),
            "`inbox export` does not show the good delivery"
        );
        for reference in &forbidden_refs {
            ensure!(
                !stdout.contains(reference.as_str()),
                "a refused delivery's event {reference} was printed"
            );
            ensure!(
                !export.stdout.contains(reference.as_str()),
                "a refused delivery's event {reference} is in `inbox export`"
            );
            ensure!(
                entries
                    .iter()
                    .all(|it| !it.raw.to_string().contains(reference.as_str())),
                "a refused delivery's event {reference} is in `inbox list`"
            );
        }
        for key in &forbidden_keys {
            ensure!(
                entries.iter().all(|it| &it.key != key),
                "a refused delivery ({key}) is in the inbox"
            );
        }
        Ok(String::new())
    }

    // ---------------------------------------------------------------------------------
    // 5.

    async fn redelivery_processed_once(&mut self) -> Result<String> {
        let url = self.main_url().await?;
        let subscription = "4583e1e6d2c72ed96a1151bc7dfd53c2";
        let body = delivery_body(subscription, INDEXED, &[EventSpec::asset()]);
        let reference = body.refs[0].clone();
        let status = self.post_signed(&url, &body, Transfer::Chunked).await?;
        ensure!(
            status == 200,
            "the first delivery was answered {status}, not 200"
        );
        self.main
            .as_mut()
            .expect("started above")
            .accepted_refs
            .push(reference.clone());
        {
            let main = self.main.as_ref().expect("started above");
            main.serve
                .stdout()
                .wait_for(PROCESSING_TIMEOUT, "the delivery's line", |line| {
                    line_ref(line) == Some(reference.as_str())
                })
                .await
                .map_err(|err| main.serve.explain(err))?;
        }
        // Preservica (or a proxy) sends the same bytes again, either way.
        for transfer in [Transfer::Length, Transfer::Chunked] {
            let status = self.post_signed(&url, &body, transfer).await?;
            ensure!(
                status == 200,
                "a redelivery ({transfer:?}) was answered {status}, not 200"
            );
        }
        // A new delivery after the redeliveries: the single worker takes the inbox in order,
        // so once it is printed a processed redelivery would have been printed too.
        let sentinel = delivery_body(subscription, INDEXED, &[EventSpec::asset()]);
        let status = self.post_signed(&url, &sentinel, Transfer::Chunked).await?;
        ensure!(status == 200, "a delivery was answered {status}, not 200");
        let main = self.main.as_mut().expect("started above");
        main.accepted_refs.extend(sentinel.refs.clone());
        main.serve
            .stdout()
            .wait_for(
                PROCESSING_TIMEOUT,
                "the line of the next delivery",
                |line| line_ref(line) == sentinel.refs.first().map(String::as_str),
            )
            .await
            .map_err(|err| main.serve.explain(err))?;
        let counts = event_counts(&main.serve.stdout().snapshot())?;
        let seen = counts.get(reference.as_str()).copied().unwrap_or(0);
        ensure!(
            seen == 1,
            "a redelivered event was printed {seen} times, not once"
        );
        let inbox = main.inbox.clone();
        self.wait_done(&inbox, std::slice::from_ref(&body.key))
            .await?;
        let stored = self
            .inbox_entries(&inbox)
            .await?
            .iter()
            .filter(|it| it.key == body.key)
            .count();
        ensure!(
            stored == 1,
            "the inbox holds {stored} entries for one redelivered body, not 1"
        );
        // The main receiver's work is over: stop it and check its whole output once more.
        self.stop_main().await?;
        Ok(String::new())
    }

    // ---------------------------------------------------------------------------------
    // 6.

    async fn exec_retries_until_success(&mut self) -> Result<String> {
        let dir = self.dir("exec")?;
        let calls = dir.join("calls.log");
        let script = dir.join("handler.sh");
        // Fails the first call for each delivery (a marker file per key), succeeds after;
        // keeps what it was given for the checks below.
        std::fs::write(
            &script,
            format!(
                r#"set -eu
dir='{dir}'
key="$PRESERVICA_DELIVERY_KEY"
printf '%s\t%s\t%s\t%s\t%s\n' "$key" "$PRESERVICA_ATTEMPT" "$PRESERVICA_TRIGGER" "$PRESERVICA_SUBSCRIPTION_ID" "$PRESERVICA_ENTITY_REFS" >> "$dir/calls.log"
cat > "$dir/body-$key.$$"
if [ -e "$dir/seen-$key" ]; then exit 0; fi
: > "$dir/seen-$key"
echo "failing the first call for $key on purpose" >&2
exit 3
"#,
                dir = dir.display()
            ),
        )?;
        let secrets = dir.join("secrets.txt");
        std::fs::write(&secrets, format!("{SECRET}\n"))?;
        let inbox = dir.join("inbox.db");
        let exec = format!("sh '{}'", script.display());
        // The secret from --secret-file only.
        let serve = self
            .cli
            .with_env(&[("PRESERVICA_WEBHOOK_SECRET", "")])
            .serve(&[
                "127.0.0.1:0".as_ref(),
                "--inbox".as_ref(),
                inbox.as_os_str(),
                "--secret-file".as_ref(),
                secrets.as_os_str(),
                "--exec".as_ref(),
                exec.as_ref(),
                "--retry-delay".as_ref(),
                "100ms".as_ref(),
                "--workers".as_ref(),
                "2".as_ref(),
            ])
            .await?;
        let url = serve.url().to_owned();
        let subscription = standin::random_hex();
        let mut bodies = Vec::new();
        for index in 0..12 {
            let events: Vec<EventSpec> = (0..index % 3 + 1).map(|_| EventSpec::asset()).collect();
            let body = delivery_body(&subscription, INDEXED, &events);
            let transfer = if index % 2 == 0 {
                Transfer::Chunked
            } else {
                Transfer::Length
            };
            let status = self.post_signed(&url, &body, transfer).await?;
            ensure!(status == 200, "a delivery was answered {status}, not 200");
            bodies.push(body);
        }
        let keys: Vec<String> = bodies.iter().map(|it| it.key.clone()).collect();
        self.wait_done(&inbox, &keys)
            .await
            .map_err(|err| serve.explain(err))?;
        // A graceful stop lets any handler still running finish: the log is complete then.
        serve.terminate_ok().await?;

        let log = std::fs::read_to_string(&calls).context("the handler never ran")?;
        let mut by_key: BTreeMap<&str, Vec<Vec<&str>>> = BTreeMap::new();
        for line in log.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            by_key.entry(fields[0]).or_default().push(fields);
        }
        for body in &bodies {
            let calls = by_key.remove(body.key.as_str()).unwrap_or_default();
            ensure!(
                calls.len() == 2,
                "delivery {} was handed to --exec {} times, not twice",
                body.key,
                calls.len()
            );
            let attempts: Vec<&str> = calls.iter().map(|it| it[1]).collect();
            ensure!(
                attempts == ["1", "2"],
                "PRESERVICA_ATTEMPT was {attempts:?} over the two calls, not [\"1\", \"2\"]"
            );
            let refs = body.refs.join(" ");
            for call in &calls {
                ensure!(
                    call[2] == INDEXED && call[3] == subscription && call[4] == refs,
                    "--exec got PRESERVICA_TRIGGER={:?} PRESERVICA_SUBSCRIPTION_ID={:?} PRESERVICA_ENTITY_REFS={:?}; expected {INDEXED:?} {subscription:?} {refs:?}",
                    call[2],
                    call[3],
                    call[4]
                );
            }
            let mut stdin_copies = 0;
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(&format!("body-{}.", body.key)) {
                    stdin_copies += 1;
                    ensure!(
                        std::fs::read(entry.path())? == body.bytes,
                        "--exec did not get the raw body on stdin"
                    );
                }
            }
            ensure!(
                stdin_copies == 2,
                "--exec read {stdin_copies} bodies, not 2"
            );
        }
        ensure!(
            by_key.is_empty(),
            "--exec was called for deliveries never sent: {:?}",
            by_key.keys().collect::<Vec<_>>()
        );
        Ok(format!(" [{} deliveries, 24 calls]", bodies.len()))
    }

    // ---------------------------------------------------------------------------------
    // 7.

    async fn crash_loses_and_repeats_nothing(&mut self) -> Result<String> {
        let mut notes = Vec::new();
        for round in 1..=CRASH_ROUNDS {
            let note = self
                .crash_round(round)
                .await
                .with_context(|| format!("crash round {round}"))?;
            notes.push(note);
        }
        Ok(format!(
            " [{CRASH_DELIVERIES} deliveries per round; {}]",
            notes.join("; ")
        ))
    }

    /// One crash: deliveries sent concurrently, serve killed with SIGKILL once a random
    /// number of them has been answered, restarted on the same inbox.
    ///
    /// What at-least-once allows, and so what is checked, with the handler appending the
    /// delivery key to a witness file and succeeding:
    /// - acknowledged means stored: every delivery answered 200 before the kill is in the
    ///   inbox as the crash left it;
    /// - the handler runs only on stored deliveries, once per run until one succeeds: before
    ///   the crash no key was handled twice, and none that is not in the inbox was handled;
    /// - done means handled: a delivery marked done at the crash was handled before it;
    /// - after the restart everything is handled and done; a delivery marked done at the
    ///   crash is never handled again, one not marked done is handled exactly once more (the
    ///   receiver cannot know whether the handler finished before the crash, so a delivery
    ///   handled just before the kill and not yet marked done is handled twice: allowed).
    async fn crash_round(&mut self, round: usize) -> Result<String> {
        let dir = self.dir(&format!("crash-{round}"))?;
        let inbox = dir.join("inbox.db");
        let witness = dir.join("witness.log");
        let exec = format!(
            "printf '%s\\n' \"$PRESERVICA_DELIVERY_KEY\" >> '{}'",
            witness.display()
        );
        let workdir = self.dir(&format!("crash-{round}/work"))?;
        let cli = self.cli.with_workdir(&workdir);
        let args: Vec<std::ffi::OsString> = vec![
            "127.0.0.1:0".into(),
            "--inbox".into(),
            inbox.clone().into(),
            "--exec".into(),
            exec.into(),
            "--retry-delay".into(),
            "100ms".into(),
            "--workers".into(),
            "4".into(),
        ];
        let serve = cli.serve(&args).await?;
        let url = serve.url().to_owned();

        let subscription = standin::random_hex();
        let bodies: Vec<DeliveryBody> = (0..CRASH_DELIVERIES)
            .map(|index| {
                let events: Vec<EventSpec> =
                    (0..index % 2 + 1).map(|_| EventSpec::asset()).collect();
                delivery_body(&subscription, INDEXED, &events)
            })
            .collect();
        let kill_after = self
            .rng
            .random_range(CRASH_DELIVERIES / 10..CRASH_DELIVERIES * 3 / 4);
        // Mostly at once after an answer (where acknowledging before the commit would
        // show), sometimes up to 20 ms later.
        let jitter = match self.rng.random_range(0..4) {
            0 => Duration::from_micros(self.rng.random_range(0..20_000)),
            _ => Duration::ZERO,
        };

        // Send concurrently; once `kill_after` answers came back (and a random jitter more),
        // kill serve's whole process group while the other requests are in flight.
        let answered = Arc::new(AtomicUsize::new(0));
        let (progress, mut watch) = tokio::sync::watch::channel(0usize);
        let http = &self.http;
        let sender = stream::iter(bodies.iter().enumerate())
            .map(|(index, body)| {
                let url = url.clone();
                let answered = answered.clone();
                let progress = progress.clone();
                async move {
                    let secret = Secret::new(SECRET).expect("non-empty");
                    let signature = sign(&secret, &body.bytes).to_hex();
                    let transfer = if index % 3 == 0 {
                        Transfer::Length
                    } else {
                        Transfer::Chunked
                    };
                    let result =
                        post_delivery(http, &url, &body.bytes, Some(&signature), transfer).await;
                    let count = answered.fetch_add(1, Ordering::SeqCst) + 1;
                    progress.send_replace(count);
                    (index, result)
                }
            })
            .buffer_unordered(CRASH_CONCURRENCY)
            .collect::<Vec<_>>();
        let killer = async {
            let _ = watch.wait_for(|count| *count >= kill_after).await;
            if !jitter.is_zero() {
                tokio::time::sleep(jitter).await;
            }
            serve.crash().await
        };
        let (results, crashed) = tokio::join!(sender, killer);
        crashed?;

        let mut acked = HashSet::new();
        for (index, result) in results {
            match result {
                Ok(200) => {
                    acked.insert(index);
                }
                Ok(status) => bail!("a signed delivery was answered {status}, not 200"),
                // No answer (the kill came first): it is sent again after the restart.
                Err(_) => {}
            }
        }
        // Handlers killed with serve are gone; wait for any that outlived it (a receiver may
        // put them in groups of their own) so the witness file is final.
        wait_gone(&workdir).await?;

        // The inbox and the witness as the crash left them.
        let at_crash: HashMap<String, InboxEntry> = self
            .inbox_entries(&inbox)
            .await
            .context("reading the inbox the crash left")?
            .into_iter()
            .map(|entry| (entry.key.clone(), entry))
            .collect();
        let handled_at_crash = count_lines(&witness)?;
        for index in &acked {
            let key = &bodies[*index].key;
            ensure!(
                at_crash.contains_key(key),
                "delivery {key} was answered 200 but is not in the inbox after the crash"
            );
        }
        for (key, times) in &handled_at_crash {
            ensure!(
                *times == 1,
                "delivery {key} was handled {times} times before the crash, by one run that never failed"
            );
            ensure!(
                at_crash.contains_key(key),
                "delivery {key} was handled but is not in the inbox"
            );
        }
        let done_at_crash: HashSet<&String> = at_crash
            .values()
            .filter(|entry| entry.state == "done")
            .map(|entry| &entry.key)
            .collect();
        for key in &done_at_crash {
            ensure!(
                handled_at_crash.contains_key(*key),
                "delivery {key} was marked done without being handled"
            );
        }

        // Restart on the same inbox and send everything again, as a sender unsure of what
        // arrived would: what got no answer must be taken now, and what was stored must be
        // recognised (a delivery done before the crash must not be handled again).
        let serve = cli.serve(&args).await?;
        let url = serve.url().to_owned();
        let statuses: Vec<Result<u16>> = stream::iter(&bodies)
            .map(|body| self.post_signed(&url, body, Transfer::Chunked))
            .buffer_unordered(CRASH_CONCURRENCY)
            .collect()
            .await;
        for status in statuses {
            let status = status?;
            ensure!(
                status == 200,
                "after the restart a delivery was answered {status}, not 200"
            );
        }
        let keys: Vec<String> = bodies.iter().map(|it| it.key.clone()).collect();
        self.wait_done(&inbox, &keys)
            .await
            .map_err(|err| serve.explain(err))?;
        serve.terminate_ok().await?;
        wait_gone(&workdir).await?;

        let handled = count_lines(&witness)?;
        let mut twice = 0;
        for key in &keys {
            let before = handled_at_crash.get(key).copied().unwrap_or(0);
            let after = handled.get(key).copied().unwrap_or(0) - before;
            if done_at_crash.contains(key) {
                ensure!(
                    after == 0,
                    "delivery {key} was marked done before the crash and handled again {after} times after the restart"
                );
            } else {
                ensure!(
                    after == 1,
                    "delivery {key}, not done at the crash, was handled {after} times after the restart, not once"
                );
                if before == 1 {
                    twice += 1;
                }
            }
        }
        ensure!(
            handled.keys().all(|key| keys.contains(key)),
            "the handler saw keys of no delivery sent"
        );
        Ok(format!(
            "killed after answer {kill_after}: {} acknowledged, {} done, {twice} handled twice",
            acked.len(),
            done_at_crash.len()
        ))
    }

    // ---------------------------------------------------------------------------------
    // 8.

    async fn serve_subscribes_and_unsubscribes(&mut self) -> Result<String> {
        let dir = self.dir("subscribe")?;
        let port = harness::free_port()?;
        let public = format!("http://127.0.0.1:{port}/");
        let address = format!("127.0.0.1:{port}");
        let inbox = dir.join("inbox.db");
        let args: Vec<std::ffi::OsString> = vec![
            address.into(),
            "--inbox".into(),
            inbox.into(),
            "--subscribe".into(),
            "INDEXED".into(),
            "--public-url".into(),
            public.clone().into(),
            "--unsubscribe-on-exit".into(),
        ];

        let serve = self.cli.serve(&args).await?;
        let line = serve
            .stderr()
            .wait_for(
                Duration::from_secs(30),
                "a `subscribed TRIGGER as ID` line",
                |line| line.contains("subscribed ") && line.contains(" as "),
            )
            .await
            .map_err(|err| serve.explain(err))?;
        let id = last_word(&line);
        let stderr = serve.stderr().snapshot();
        let listening = stderr.iter().position(|it| it.contains("listening on"));
        let subscribed = stderr.iter().position(|it| *it == line);
        ensure!(
            listening < subscribed,
            "serve subscribed before it was listening: {stderr:?}"
        );
        let Some(stored) = self.standin.subscription(&id) else {
            bail!(
                "serve said {line:?}, but the stand-in holds no subscription {id} ({:?})",
                ids(&self.standin)
            );
        };
        ensure!(
            same_url(&stored.url, &public) && stored.trigger == INDEXED,
            "serve subscribed {:?} to {:?}, expected {public} to {INDEXED}",
            stored.url,
            stored.trigger
        );
        // The subscription works: a delivery from the stand-in is printed.
        let asset = EventSpec::asset();
        let (_, status) = self
            .standin
            .deliver(&id, std::slice::from_ref(&asset), Transfer::Chunked)
            .await?;
        ensure!(status == 200, "a delivery was answered {status}, not 200");
        serve
            .stdout()
            .wait_for(PROCESSING_TIMEOUT, "the delivery's line", |line| {
                line_ref(line) == Some(asset.entity_ref.as_str())
            })
            .await
            .map_err(|err| serve.explain(err))?;
        let stopped = serve.terminate_ok().await?;
        ensure!(
            stopped
                .stderr
                .iter()
                .any(|it| it.contains("unsubscribed") && it.contains(&id)),
            "serve did not say `unsubscribed {id}` on exit"
        );
        ensure!(
            self.standin.subscription(&id).is_none(),
            "the subscription {id} is still there after SIGTERM with --unsubscribe-on-exit"
        );

        // Run again over a subscription left behind for the same URL and trigger: it is
        // replaced, not duplicated (a duplicate would deliver every event twice).
        let stale = self.standin.insert_subscription(&public, INDEXED, SECRET);
        let serve = self.cli.serve(&args).await?;
        let line = serve
            .stderr()
            .wait_for(
                Duration::from_secs(30),
                "a `replaced subscription OLD: subscribed TRIGGER as ID` line",
                |line| line.contains("subscribed ") && line.contains(" as "),
            )
            .await
            .map_err(|err| serve.explain(err))?;
        ensure!(
            line.contains("replaced") && line.contains(&stale),
            "serve did not say it replaced the subscription {stale} left behind: {line:?}"
        );
        let new_id = last_word(&line);
        let same: Vec<String> = self
            .standin
            .subscriptions()
            .into_iter()
            .filter(|it| same_url(&it.url, &public) && it.trigger == INDEXED)
            .map(|it| it.id)
            .collect();
        ensure!(
            same == [new_id.clone()],
            "after the replacement the stand-in holds {same:?} for {public}, expected only {new_id}"
        );
        serve.terminate_ok().await?;
        ensure!(
            self.standin.subscription(&new_id).is_none(),
            "the subscription {new_id} is still there after SIGTERM with --unsubscribe-on-exit"
        );
        Ok(format!(
            " [subscription {id}, then {new_id} replacing {stale}]"
        ))
    }

    // ---------------------------------------------------------------------------------
    // 9.

    async fn thumbnails_for_assets_only(&mut self) -> Result<String> {
        let dir = self.dir("thumbnails")?;
        let images = dir.join("images");
        std::fs::create_dir_all(&images)?;
        let inbox = dir.join("inbox.db");
        let serve = self
            .cli
            .serve(&[
                "127.0.0.1:0".as_ref(),
                "--inbox".as_ref(),
                inbox.as_os_str(),
                "--thumbnails".as_ref(),
                images.as_os_str(),
                "--retry-delay".as_ref(),
                "100ms".as_ref(),
            ])
            .await?;
        let url = serve.url().to_owned();
        let subscription = standin::random_hex();
        let asset = EventSpec::asset();
        let folder = EventSpec::folder();
        let (asset2, folder2) = (EventSpec::asset(), EventSpec::folder());
        let deliveries = [
            (vec![asset.clone()], Transfer::Chunked),
            (vec![folder.clone()], Transfer::Length),
            (vec![folder2.clone(), asset2.clone()], Transfer::Chunked),
        ];
        let mut keys = Vec::new();
        for (events, transfer) in deliveries {
            let body = delivery_body(&subscription, INDEXED, &events);
            let status = self.post_signed(&url, &body, transfer).await?;
            ensure!(status == 200, "a delivery was answered {status}, not 200");
            keys.push(body.key);
        }
        self.wait_done(&inbox, &keys)
            .await
            .map_err(|err| serve.explain(err))?;
        serve.terminate_ok().await?;

        for event in [&asset, &asset2] {
            let file = images.join(format!("{}.png", event.entity_ref));
            let bytes = std::fs::read(&file).with_context(|| {
                format!(
                    "no thumbnail {} for the asset event (the folder holds {:?})",
                    file.display(),
                    names_in(&images)
                )
            })?;
            ensure!(
                bytes == THUMBNAIL_PNG,
                "{} is not the image the stand-in served",
                file.display()
            );
        }
        let names = names_in(&images);
        ensure!(
            names.len() == 2,
            "the thumbnail folder holds {names:?}, expected the two asset images only"
        );
        let requests = self.standin.thumbnail_requests();
        for event in [&folder, &folder2] {
            ensure!(
                requests
                    .iter()
                    .all(|it| !it.contains(event.entity_ref.as_str())),
                "a thumbnail was requested for the folder event {}",
                event.entity_ref
            );
        }
        Ok(String::new())
    }

    // ---------------------------------------------------------------------------------
    // 10.

    async fn unsubscribe_all(&mut self) -> Result<String> {
        // Whatever earlier scenarios left, plus two more so there is always something to remove.
        for name in ["a", "b"] {
            self.standin.insert_subscription(
                &format!("http://127.0.0.1:9/left-behind-{name}"),
                INDEXED,
                SECRET,
            );
        }
        let before = ids(&self.standin);
        let output = self
            .cli
            .run(&["unsubscribe", "--all", "--yes"])
            .await?
            .success()?;
        let said = format!("{}\n{}", output.stdout, output.stderr);
        for id in &before {
            ensure!(
                said.contains(id.as_str()),
                "`unsubscribe --all --yes` did not report the removal of {id}: {}",
                one_line(&said)
            );
        }
        let listed = self
            .cli
            .run(&["subscriptions", "--json"])
            .await?
            .success()?
            .json()?;
        ensure!(
            listed == Value::Array(Vec::new()),
            "`subscriptions --json` after `unsubscribe --all --yes` shows {listed}"
        );
        ensure!(
            self.standin.subscriptions().is_empty(),
            "the stand-in still holds {:?}",
            ids(&self.standin)
        );
        Ok(format!(" [{} removed]", before.len()))
    }
}

/// The entity reference of a default-handler line, if it is one.
fn line_ref(line: &str) -> Option<&str> {
    // Cheap and exact enough to find a reference; lines are fully parsed in `event_counts`.
    let start = line.find("\"entityRef\":\"")? + "\"entityRef\":\"".len();
    let rest = &line[start..];
    Some(&rest[..rest.find('"')?])
}

/// How many times each entity reference was printed; fails on any line that is not an event
/// line with exactly the documented keys (stdout carries nothing else).
fn event_counts(lines: &[String]) -> Result<HashMap<String, usize>> {
    let mut counts = HashMap::new();
    for line in lines {
        let value: Value = serde_json::from_str(line)
            .with_context(|| format!("serve printed a line that is not JSON: {line:?}"))?;
        let Value::Object(fields) = &value else {
            bail!("serve printed a line that is not a JSON object: {line:?}");
        };
        let mut keys: Vec<&str> = fields.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut expected = EVENT_LINE_KEYS.to_vec();
        expected.sort_unstable();
        ensure!(
            keys == expected,
            "an event line has the keys {keys:?}, expected exactly {EVENT_LINE_KEYS:?}"
        );
        let reference = fields["entityRef"]
            .as_str()
            .with_context(|| format!("an event line has no entityRef string: {line}"))?;
        *counts.entry(reference.to_owned()).or_insert(0) += 1;
    }
    Ok(counts)
}

/// How many lines of the file hold each key (an absent file holds none).
fn count_lines(path: &Path) -> Result<HashMap<String, usize>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    let mut counts = HashMap::new();
    for line in text.lines().filter(|it| !it.is_empty()) {
        *counts.entry(line.trim().to_owned()).or_insert(0) += 1;
    }
    Ok(counts)
}

/// Waits until no process works in `dir` any more (handlers that outlived their receiver).
///
/// # Errors
/// When some are still there after a while; they are killed then.
async fn wait_gone(dir: &Path) -> Result<()> {
    let left = harness::wait_gone(dir, Duration::from_secs(10)).await;
    if left.is_empty() {
        return Ok(());
    }
    for (pid, _) in &left {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    bail!("processes outlived their receiver by 10 s: {left:?}");
}

fn ids(standin: &StandIn) -> Vec<String> {
    standin
        .subscriptions()
        .into_iter()
        .map(|it| it.id)
        .collect()
}

fn same_url(left: &str, right: &str) -> bool {
    left.trim_end_matches('/') == right.trim_end_matches('/')
}

fn last_word(line: &str) -> String {
    line.split_whitespace()
        .last()
        .unwrap_or_default()
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|it| it.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
