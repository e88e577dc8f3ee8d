//! The process harness: builds the binary once, runs its commands with a clean environment,
//! and runs `serve` as a child whose output is collected line by line.
//!
//! No process outlives the suite: every `serve` runs in a process group of its own (so its
//! `--exec` children go with it), a [`Serve`] kills its whole group when dropped on any path
//! (error, panic, interrupt), and one-shot commands are killed when their timeout passes.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::{Instant, timeout};

/// How long a one-shot command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `serve` may take to say it is listening.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful stop may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How many lines of a child's stderr an error message quotes.
const STDERR_TAIL: usize = 15;

/// Environment variables the binary reads; cleared so the caller's shell cannot leak in.
const CLEARED_ENV: [&str; 12] = [
    "PRESERVICA_SERVER",
    "PRESERVICA_USERNAME",
    "PRESERVICA_PASSWORD",
    "PRESERVICA_TENANT",
    "PRESERVICA_2FA_TOKEN",
    "PRESERVICA_WEBHOOK_SECRET",
    "RUST_LOG",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
];

/// Builds the binary with `cargo build --locked` and returns its path.
///
/// # Errors
/// When cargo fails or the binary is not where cargo puts it.
pub(crate) fn build_binary() -> Result<PathBuf> {
    let root = crate::ci::workspace_root();
    let status = std::process::Command::new(crate::ci::cargo())
        .args(["build", "--locked", "-p", "preservica-webhook-cli"])
        .current_dir(&root)
        .status()
        .context("could not start cargo to build the binary")?;
    if !status.success() {
        bail!(
            "`cargo build --locked -p preservica-webhook-cli` failed ({status}); the suite needs the binary"
        );
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(|| root.join("target"), |dir| root.join(dir));
    let binary = target.join("debug").join(format!(
        "preservica-webhook{}",
        std::env::consts::EXE_SUFFIX
    ));
    if !binary.is_file() {
        bail!(
            "cargo built the package but {} does not exist",
            binary.display()
        );
    }
    Ok(binary)
}

/// Runs the binary's commands in a scratch directory with a fixed environment.
#[derive(Debug, Clone)]
pub(crate) struct Cli {
    binary: PathBuf,
    workdir: PathBuf,
    env: BTreeMap<String, String>,
}

/// A finished one-shot command.
#[derive(Debug)]
pub(crate) struct Output {
    /// What was run, for messages.
    pub(crate) what: String,
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Output {
    /// Fails with the command's stderr unless it exited 0.
    pub(crate) fn success(self) -> Result<Output> {
        if self.code != Some(0) {
            bail!(
                "`{}` exited with {} instead of 0; stderr: {}",
                self.what,
                describe_code(self.code),
                one_line(&self.stderr)
            );
        }
        Ok(self)
    }

    /// Fails unless it exited with one of `codes`.
    pub(crate) fn exit_code(self, codes: &[i32]) -> Result<Output> {
        if !self.code.is_some_and(|code| codes.contains(&code)) {
            bail!(
                "`{}` exited with {} instead of {}; stdout: {}; stderr: {}",
                self.what,
                describe_code(self.code),
                codes
                    .iter()
                    .map(i32::to_string)
                    .collect::<Vec<_>>()
                    .join(" or "),
                one_line(&self.stdout),
                one_line(&self.stderr)
            );
        }
        Ok(self)
    }

    /// stdout parsed as JSON.
    pub(crate) fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.stdout).with_context(|| {
            format!(
                "`{}` did not print JSON on stdout: {}",
                self.what,
                one_line(&self.stdout)
            )
        })
    }
}

fn describe_code(code: Option<i32>) -> String {
    code.map_or_else(|| "a signal".to_owned(), |code| code.to_string())
}

/// Text on one line, shortened, for error messages.
pub(crate) fn one_line(text: &str) -> String {
    let joined = text.trim().replace('\n', " | ");
    if joined.is_empty() {
        return "(empty)".to_owned();
    }
    let mut end = joined.len().min(1500);
    while !joined.is_char_boundary(end) {
        end -= 1;
    }
    joined[..end].to_owned()
}

impl Cli {
    /// A runner for `binary` working in `workdir`, with `env` on top of a cleared set.
    pub(crate) fn new(binary: PathBuf, workdir: PathBuf, env: &[(&str, &str)]) -> Cli {
        Cli {
            binary,
            workdir,
            env: env
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
        }
    }

    /// The same runner with other environment values (an empty value removes the variable).
    pub(crate) fn with_env(&self, env: &[(&str, &str)]) -> Cli {
        let mut cli = self.clone();
        for (key, value) in env {
            if value.is_empty() {
                cli.env.remove(*key);
            } else {
                cli.env.insert((*key).to_owned(), (*value).to_owned());
            }
        }
        cli
    }

    /// The same runner working in another directory.
    pub(crate) fn with_workdir(&self, workdir: &Path) -> Cli {
        let mut cli = self.clone();
        cli.workdir = workdir.to_path_buf();
        cli
    }

    fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut command = Command::new(&self.binary);
        command.args(args).current_dir(&self.workdir);
        for key in CLEARED_ENV {
            command.env_remove(key);
        }
        command
            .env("NO_PROXY", "127.0.0.1,localhost")
            .envs(&self.env)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs `preservica-webhook ARGS…` to completion (killed after a timeout).
    ///
    /// # Errors
    /// When it cannot start or runs too long; its exit code is the caller's to judge.
    pub(crate) async fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<Output> {
        let what = describe(args);
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start `{what}`"))?;
        let output = match timeout(COMMAND_TIMEOUT, child.wait_with_output()).await {
            Ok(output) => output.with_context(|| format!("`{what}` failed to run"))?,
            // The future owned the child: dropping it killed the process (kill_on_drop).
            Err(_) => bail!("`{what}` did not finish within {COMMAND_TIMEOUT:?}; it was killed"),
        };
        Ok(Output {
            what,
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// Starts `preservica-webhook serve ARGS…` and waits until it says where it listens.
    ///
    /// # Errors
    /// When it cannot start, exits, or does not print `listening on http://…` in time.
    pub(crate) async fn serve<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<Serve> {
        let mut all: Vec<OsString> = vec!["serve".into()];
        all.extend(args.iter().map(|it| it.as_ref().to_owned()));
        let what = describe(&all);
        let mut command = self.command(&all);
        // A group of its own: a crash kills the handlers it started too, and the terminal's
        // Ctrl-C reaches only the suite, which then stops every group it started.
        command
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("could not start `{what}`"))?;
        let pid = child.id().context("serve exited at once")?;
        let stdout = Lines::collect(child.stdout.take().context("stdout is piped")?);
        let stderr = Lines::collect(child.stderr.take().context("stderr is piped")?);
        let mut serve = Serve {
            what,
            child,
            pid,
            url: String::new(),
            stdout,
            stderr,
            reaped: false,
        };
        let line = serve
            .stderr
            .wait_for(LISTEN_TIMEOUT, "a `listening on http://…` line", |line| {
                line.contains("listening on http")
            })
            .await
            .map_err(|err| serve.explain(err))?;
        let url = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .context("the listening line has no URL")?;
        serve.url = url.trim_end_matches(['.', ',']).to_owned();
        Ok(serve)
    }
}

fn describe<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let mut text = "preservica-webhook".to_owned();
    for arg in args {
        text.push(' ');
        text.push_str(&arg.as_ref().to_string_lossy());
    }
    text
}

/// The lines a child wrote to one of its streams, collected as they come.
#[derive(Debug, Clone)]
pub(crate) struct Lines {
    lines: Arc<Mutex<Vec<String>>>,
    /// How many lines have come, and whether the stream has ended.
    progress: watch::Receiver<(usize, bool)>,
}

impl Lines {
    fn collect(stream: impl AsyncRead + Unpin + Send + 'static) -> Lines {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (sender, progress) = watch::channel((0, false));
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stream).lines();
            let mut count = 0;
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().expect("lines lock").push(line);
                count += 1;
                sender.send_replace((count, false));
            }
            sender.send_replace((count, true));
        });
        Lines { lines, progress }
    }

    /// The lines so far.
    pub(crate) fn snapshot(&self) -> Vec<String> {
        self.lines.lock().expect("lines lock").clone()
    }

    /// Waits for a line matching `matches` (one already there counts) and returns it.
    ///
    /// # Errors
    /// When the stream ends or `limit` passes first; the message names `what`.
    pub(crate) async fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        matches: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let found = self
            .wait_until(limit, what, |lines| {
                lines.iter().find(|line| matches(line)).cloned()
            })
            .await?;
        Ok(found)
    }

    /// Waits until `done` returns `Some` over all lines so far, re-checking at each new line.
    ///
    /// # Errors
    /// When the stream ends or `limit` passes first; the message names `what`.
    pub(crate) async fn wait_until<T>(
        &self,
        limit: Duration,
        what: &str,
        done: impl Fn(&[String]) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + limit;
        let mut progress = self.progress.clone();
        loop {
            let ended = progress.borrow_and_update().1;
            if let Some(found) = done(&self.snapshot()) {
                return Ok(found);
            }
            if ended {
                bail!("the stream ended before {what}");
            }
            match tokio::time::timeout_at(deadline, progress.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => bail!("the stream ended before {what}"),
                Err(_) => bail!("no {what} within {limit:?}"),
            }
        }
    }

    /// Waits until the stream has ended (the child closed it, normally by exiting).
    async fn wait_closed(&self, limit: Duration) -> bool {
        let mut progress = self.progress.clone();
        timeout(limit, progress.wait_for(|(_, ended)| *ended))
            .await
            .is_ok()
    }
}

/// A running `serve`.
#[derive(Debug)]
pub(crate) struct Serve {
    what: String,
    child: Child,
    pub(crate) pid: u32,
    url: String,
    stdout: Lines,
    stderr: Lines,
    reaped: bool,
}

/// How a `serve` ended.
#[derive(Debug)]
pub(crate) struct Stopped {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: Vec<String>,
    pub(crate) stderr: Vec<String>,
}

impl Serve {
    /// The webhook URL from the `listening on` line.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Its stdout lines.
    pub(crate) fn stdout(&self) -> &Lines {
        &self.stdout
    }

    /// Its stderr lines.
    pub(crate) fn stderr(&self) -> &Lines {
        &self.stderr
    }

    /// An error with the end of serve's stderr attached.
    pub(crate) fn explain(&self, err: anyhow::Error) -> anyhow::Error {
        let lines = self.stderr.snapshot();
        let tail = &lines[lines.len().saturating_sub(STDERR_TAIL)..];
        anyhow::anyhow!(
            "{err:#} (`{}` said on stderr: {})",
            self.what,
            one_line(&tail.join("\n"))
        )
    }

    /// Stops it with SIGTERM and waits for it to exit (and its output to end).
    ///
    /// # Errors
    /// When it does not exit in time (it is then killed) or cannot be signalled.
    pub(crate) async fn terminate(mut self) -> Result<Stopped> {
        signal("TERM", &self.pid.to_string())?;
        let status = match timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => status.context("waiting for serve")?,
            Err(_) => {
                let err = anyhow::anyhow!("serve did not exit within {STOP_TIMEOUT:?} of SIGTERM");
                return Err(self.explain(err));
            }
        };
        self.reaped = true;
        // Kill whatever handler it may have left in its group (there should be none).
        let _ = signal("KILL", &format!("-{}", self.pid));
        self.stdout.wait_closed(STOP_TIMEOUT).await;
        self.stderr.wait_closed(STOP_TIMEOUT).await;
        Ok(Stopped {
            status,
            stdout: self.stdout.snapshot(),
            stderr: self.stderr.snapshot(),
        })
    }

    /// Stops it with SIGTERM and requires exit code 0.
    ///
    /// # Errors
    /// As [`Serve::terminate`], and when the exit code is not 0.
    pub(crate) async fn terminate_ok(self) -> Result<Stopped> {
        let what = self.what.clone();
        let stopped = self.terminate().await?;
        if stopped.status.code() != Some(0) {
            let tail = &stopped.stderr[stopped.stderr.len().saturating_sub(STDERR_TAIL)..];
            bail!(
                "`{what}` exited with {} after SIGTERM instead of 0; its last stderr lines: {}",
                stopped.status,
                one_line(&tail.join("\n"))
            );
        }
        Ok(stopped)
    }

    /// Kills it and every process of its group with SIGKILL, as a crash or power cut would,
    /// and waits until it is gone.
    ///
    /// # Errors
    /// When it cannot be signalled or waited for.
    pub(crate) async fn crash(mut self) -> Result<Stopped> {
        // SIGKILL through the system call first: the moment matters, and starting `kill`
        // would take a millisecond or two. Then the rest of the group (its handlers), which
        // may already be empty.
        self.child.start_kill().context("could not SIGKILL serve")?;
        let _ = signal("KILL", &format!("-{}", self.pid));
        let status = timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .context("serve survived SIGKILL")?
            .context("waiting for serve")?;
        self.reaped = true;
        self.stdout.wait_closed(STOP_TIMEOUT).await;
        self.stderr.wait_closed(STOP_TIMEOUT).await;
        Ok(Stopped {
            status,
            stdout: self.stdout.snapshot(),
            stderr: self.stderr.snapshot(),
        })
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // The group id is serve's pid (process_group(0)); it stays valid while any member
        // lives, so this also reaches handlers serve started.
        let _ = signal("KILL", &format!("-{}", self.pid));
        let _ = self.child.start_kill();
    }
}

/// Sends `signal` to `target` (a pid, or `-pgid` for a whole group) with the shell's `kill`.
fn signal(signal: &str, target: &str) -> Result<()> {
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("kill -{signal} {target}")])
        .stderr(Stdio::null())
        .status()
        .context("could not run `kill`")?;
    if !status.success() {
        bail!("`kill -{signal} {target}` failed: no such process");
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (for the one receiver that must know its URL before it
/// starts: `serve --public-url`). Another program could take it before `serve` binds it;
/// on a test machine that is rare, and `serve` then fails loudly.
///
/// # Errors
/// When no port can be bound.
pub(crate) fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until no process mentions `marker` (see [`processes_mentioning`]) or `limit`
/// passes; returns those still there. A killed process takes a moment to go.
pub(crate) async fn wait_gone(marker: &Path, limit: Duration) -> Vec<(u32, String)> {
    let deadline = Instant::now() + limit;
    loop {
        let left = processes_mentioning(marker);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Processes (other than this one) whose command line mentions `marker` or that work inside
/// it: every process the suite starts works in its scratch directory.
pub(crate) fn processes_mentioning(marker: &Path) -> Vec<(u32, String)> {
    let marker_text = marker.to_string_lossy().into_owned();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|it| it.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        if cmdline.contains(&marker_text) || cwd.starts_with(marker) {
            found.push((pid, cmdline.trim().to_owned()));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runner whose "binary" is `sh`, so `serve ARGS` runs the script `serve` in the work
    /// directory (no freshly written executable: no "text file busy" races between tests).
    fn fake(dir: &Path) -> Cli {
        // Says where it listens, starts a child of its own, stops cleanly on SIGTERM.
        std::fs::write(
            dir.join("serve"),
            "trap 'echo bye; exit 0' TERM\n\
             echo \"INFO listening on http://127.0.0.1:9/hook (args: $*)\" >&2\n\
             echo ready\n\
             sleep 600 &\n\
             wait\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("fails"),
            "echo \"ran $*\"; echo oops >&2; exit 3\n",
        )
        .unwrap();
        Cli::new(PathBuf::from("sh"), dir.to_path_buf(), &[])
    }

    async fn all_gone(dir: &Path) -> bool {
        wait_gone(dir, Duration::from_secs(5)).await.is_empty()
    }

    #[tokio::test]
    async fn runs_commands_and_judges_their_exit_codes() {
        let dir = tempfile::tempdir().unwrap();
        let cli = fake(dir.path());
        let output = cli.run(&["fails", "a", "b"]).await.unwrap();
        assert_eq!(output.stdout, "ran a b\n");
        let err = output.success().unwrap_err().to_string();
        assert!(err.contains("exited with 3 instead of 0"), "{err}");
        assert!(err.contains("oops"), "{err}");
        let output = cli.run(&["fails"]).await.unwrap();
        assert!(output.exit_code(&[3]).is_ok());
    }

    #[tokio::test]
    async fn serve_reports_its_url_and_stops_with_its_children_on_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let serve = fake(dir.path()).serve(&["127.0.0.1:0"]).await.unwrap();
        assert_eq!(serve.url(), "http://127.0.0.1:9/hook");
        serve
            .stdout()
            .wait_for(Duration::from_secs(5), "ready", |line| line == "ready")
            .await
            .unwrap();
        assert!(!processes_mentioning(dir.path()).is_empty());
        let stopped = serve.terminate_ok().await.unwrap();
        assert_eq!(stopped.stdout, ["ready", "bye"]);
        assert!(all_gone(dir.path()).await);
    }

    #[tokio::test]
    async fn a_crash_or_a_drop_leaves_no_process_behind() {
        let dir = tempfile::tempdir().unwrap();
        let cli = fake(dir.path());
        let serve = cli.serve(&["127.0.0.1:0"]).await.unwrap();
        let stopped = serve.crash().await.unwrap();
        assert_eq!(stopped.status.code(), None, "killed by a signal");
        assert!(all_gone(dir.path()).await);

        let serve = cli.serve(&["127.0.0.1:0"]).await.unwrap();
        drop(serve);
        assert!(all_gone(dir.path()).await);
    }

    #[tokio::test]
    async fn waiting_for_a_line_fails_when_the_stream_ends() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("serve"), "echo 'exiting early' >&2\n").unwrap();
        let cli = Cli::new(PathBuf::from("sh"), dir.path().to_path_buf(), &[]);
        let err = cli.serve(&["127.0.0.1:0"]).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("the stream ended before"), "{text}");
        assert!(text.contains("exiting early"), "{text}");
    }
}
