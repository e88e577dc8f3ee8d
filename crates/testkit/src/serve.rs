//! The binary as a child process: a clean environment, `serve` with its output read line by
//! line, stopped gently or with SIGKILL, and nothing left running when a test fails.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustix::process::{Pid, Signal, kill_process, kill_process_group};

/// How long a test waits for a line or a state before failing.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Environment variables that would let the user's own configuration leak into a test.
const CONFIG_ENV: [&str; 12] = [
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

/// A command for `binary`, run in `dir` with none of the user's configuration.
pub fn command(binary: &Path, dir: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .current_dir(dir)
        .env("NO_PROXY", "127.0.0.1,localhost");
    for name in CONFIG_ENV {
        command.env_remove(name);
    }
    command
}

/// A running `serve`, killed with its process group when dropped (even when the test fails).
#[derive(Debug)]
pub struct Serve {
    child: Child,
    /// The webhook URL from its `listening on` line.
    pub url: String,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    /// Every stderr line seen so far.
    pub stderr_seen: Vec<String>,
    /// Whether it was waited for: its pid (and group id) may belong to another process now.
    reaped: bool,
    /// The command it was started with, for [`Serve::restart`].
    again: Command,
}

fn forward_lines(pipe: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Serve {
    /// Starts `command` (a `serve`, or anything that says `listening on http://…` on stderr)
    /// in a process group of its own, and waits for that line.
    ///
    /// # Panics
    /// When it cannot start, or exits or stays silent for [`PATIENCE`] first.
    pub fn spawn(command: Command) -> Serve {
        Serve::launch(command, Stdio::piped()).unwrap_or_else(|err| panic!("{err:#}"))
    }

    /// [`Serve::spawn`] with stdout going to `stdout` (stdout lines are read only when it is
    /// [`Stdio::piped`]), and failures returned.
    ///
    /// # Errors
    /// When it cannot start, or exits or stays silent for [`PATIENCE`] first; the message
    /// quotes its stderr.
    pub fn launch(mut command: Command, stdout: Stdio) -> anyhow::Result<Serve> {
        use std::os::unix::process::CommandExt as _;
        command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped());
        let again = copy(&command);
        let mut child = command.spawn().context("could not start the program")?;
        let stdout = match child.stdout.take() {
            Some(pipe) => forward_lines(pipe),
            None => channel().1,
        };
        let stderr = forward_lines(child.stderr.take().expect("piped"));
        let mut serve = Serve {
            child,
            url: String::new(),
            stdout,
            stderr,
            stderr_seen: Vec::new(),
            reaped: false,
            again,
        };
        let line = serve.next_stderr("listening on http")?;
        let start = line.find("listening on ").unwrap_or_default() + "listening on ".len();
        let mut words = line[start..].split(|c: char| c.is_whitespace() || c == '\x1b');
        serve.url = words
            .next()
            .unwrap_or_default()
            .trim_end_matches([',', '.'])
            .to_owned();
        Ok(serve)
    }

    /// The process id (also its process group's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line; panics after [`PATIENCE`].
    pub fn stdout_line(&self) -> String {
        self.stdout
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|err| panic!("no stdout line from serve: {err}"))
    }

    /// A stdout line that came by now, without waiting.
    pub fn stdout_ready(&self) -> Option<String> {
        self.stdout.try_recv().ok()
    }

    /// The remaining stdout lines, once the process ended.
    pub fn rest_of_stdout(&self) -> Vec<String> {
        self.stdout.iter().collect()
    }

    /// Waits for a stderr line containing `needle` (one seen before counts) and returns it;
    /// panics after [`PATIENCE`] with what it said.
    pub fn wait_stderr(&mut self, needle: &str) -> String {
        self.next_stderr(needle)
            .unwrap_or_else(|err| panic!("{err:#}"))
    }

    fn next_stderr(&mut self, needle: &str) -> anyhow::Result<String> {
        if let Some(line) = self.stderr_seen.iter().find(|line| line.contains(needle)) {
            return Ok(line.clone());
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.stderr_seen.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Err(err) => anyhow::bail!(
                    "no stderr line with {needle:?} ({err}); seen:\n{}",
                    self.stderr_seen.join("\n")
                ),
            }
        }
    }

    /// Every stderr line so far, without waiting.
    pub fn stderr_so_far(&mut self) -> &[String] {
        self.stderr_seen.extend(self.stderr.try_iter());
        &self.stderr_seen
    }

    /// Whether the process has ended.
    pub fn has_exited(&mut self) -> bool {
        self.reaped = self.reaped || !matches!(self.child.try_wait(), Ok(None));
        self.reaped
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`) to the process, without waiting.
    ///
    /// # Panics
    /// On an unknown name or when the process is gone.
    pub fn signal(&self, name: &str) {
        let signal = match name {
            "TERM" => Signal::TERM,
            "INT" => Signal::INT,
            "KILL" => Signal::KILL,
            "HUP" => Signal::HUP,
            other => panic!("no signal {other} in the harness"),
        };
        kill_process(pid(self.pid()), signal).expect("the process runs");
    }

    /// Sends SIGTERM, waits for the exit, and returns the exit code with the rest of stderr.
    pub fn terminate(&mut self) -> (Option<i32>, Vec<String>) {
        self.signal("TERM");
        self.wait_exit(PATIENCE)
    }

    /// Kills it and its whole process group with SIGKILL, as a crash or power cut would, and
    /// waits until it is gone.
    pub fn kill(&mut self) {
        if self.reaped {
            return;
        }
        let _ = self.child.kill();
        let _ = kill_process_group(pid(self.pid()), Signal::KILL);
        let _ = self.child.wait();
        self.reaped = true;
    }

    /// Kills it with SIGKILL if it still runs and starts the same command again (stdout
    /// piped), as a supervisor would after a crash.
    ///
    /// # Panics
    /// As [`Serve::spawn`].
    pub fn restart(&mut self) {
        self.kill();
        *self = Serve::spawn(copy(&self.again));
    }

    /// Waits at most `within` for the exit and returns the exit code with the rest of stderr;
    /// panics (and the drop kills it) when it still runs then.
    pub fn wait_exit(&mut self, within: Duration) -> (Option<i32>, Vec<String>) {
        let deadline = Instant::now() + within;
        let exit = loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                self.reaped = true;
                break exit;
            }
            if Instant::now() >= deadline {
                self.stderr_seen.extend(self.stderr.try_iter());
                panic!(
                    "serve still runs {within:?} later; stderr:\n{}",
                    self.stderr_seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Until the pipe closes; a process that escaped with serve's stderr cannot hold the
        // test up for longer than PATIENCE.
        let mut rest = Vec::new();
        while let Ok(line) = self.stderr.recv_timeout(PATIENCE) {
            rest.push(line);
        }
        self.stderr_seen.extend(rest.iter().cloned());
        (exit.code(), rest)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The same program, arguments, environment and folder (`Command` is not `Clone`).
fn copy(command: &Command) -> Command {
    let mut copy = Command::new(command.get_program());
    copy.args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => copy.env(name, value),
            None => copy.env_remove(name),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        copy.current_dir(dir);
    }
    copy
}

fn pid(id: u32) -> Pid {
    Pid::from_raw(i32::try_from(id).expect("a pid fits")).expect("not pid 0")
}

/// Waits until `ready` holds, checking every 20 ms; panics with `what` after [`PATIENCE`].
pub fn poll_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !ready() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` runs (a zombie, dead but not yet reaped, does not).
pub fn alive(pid: u32) -> bool {
    let process = i32::try_from(pid).ok().map(procfs::process::Process::new);
    let stat = process.and_then(|it| it.ok()?.stat().ok());
    stat.is_some_and(|it| !matches!(it.state, 'Z' | 'X'))
}

/// The process ids a test command appends to a file, one a line; those still alive are
/// killed when dropped, so a failing test leaves nothing running.
#[derive(Debug)]
pub struct PidFile(pub PathBuf);

impl PidFile {
    /// The ids written so far.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }

    /// The ids still alive.
    pub fn alive(&self) -> Vec<u32> {
        self.pids().into_iter().filter(|pid| alive(*pid)).collect()
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        for id in self.alive() {
            let _ = kill_process(pid(id), Signal::KILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sh` standing in for the binary: says where it listens, starts a child of its own,
    /// stops cleanly on SIGTERM.
    fn fake(dir: &Path) -> Command {
        let mut command = command(Path::new("sh"), dir);
        command.args([
            "-c",
            "trap 'echo bye; exit 0' TERM; echo \"$$\" > pids; \
             echo 'INFO listening on http://127.0.0.1:9/hook, ready' >&2; echo ready; \
             sleep 600 >/dev/null 2>&1 & echo \"$!\" >> pids; wait",
        ]);
        command
    }

    #[test]
    fn reads_the_url_and_lines_stops_on_sigterm_and_starts_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut serve = Serve::spawn(fake(dir.path()));
        assert_eq!(serve.url, "http://127.0.0.1:9/hook");
        assert_eq!(serve.stdout_line(), "ready");
        let (code, _) = serve.terminate();
        assert_eq!(code, Some(0));
        assert_eq!(serve.rest_of_stdout(), ["bye"]);
        serve.restart();
        assert_eq!(serve.stdout_line(), "ready");
        assert_eq!(serve.url, "http://127.0.0.1:9/hook");
    }

    #[test]
    fn a_zombie_or_a_reaped_process_is_not_alive() {
        let mut running = Command::new("sleep").arg("60").spawn().unwrap();
        let was_alive = alive(running.id());
        running.kill().unwrap();
        running.wait().unwrap();
        assert!(was_alive);
        assert!(!alive(running.id()));
        // Not waited for, so it stays a zombie until the wait below.
        let mut ended = Command::new("true").spawn().unwrap();
        poll_until("the ended child to count as dead", || !alive(ended.id()));
        ended.wait().unwrap();
    }

    #[test]
    fn a_kill_or_a_drop_leaves_no_process_of_the_group_behind() {
        for crash in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let mut serve = Serve::spawn(fake(dir.path()));
            let pids = PidFile(dir.path().join("pids"));
            poll_until("both pids", || pids.pids().len() == 2);
            if crash {
                serve.kill();
            } else {
                drop(serve);
            }
            poll_until("the group gone", || pids.alive().is_empty());
        }
    }
}
