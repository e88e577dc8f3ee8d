//! Helpers shared by the binary's tests.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the helpers"
)]
#![allow(
    unreachable_pub,
    reason = "the module is included in several test binaries"
)]

use std::path::{Path, PathBuf};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_preservica-webhook");

/// The secret the tests share between sender and receiver.
pub const SECRET: &str = "my_shared_secret";

/// Environment variables that would let the user's own configuration leak into a test.
const CONFIG_ENV: [&str; 7] = [
    "PRESERVICA_SERVER",
    "PRESERVICA_USERNAME",
    "PRESERVICA_PASSWORD",
    "PRESERVICA_TENANT",
    "PRESERVICA_2FA_TOKEN",
    "PRESERVICA_WEBHOOK_SECRET",
    "RUST_LOG",
];

/// A command for the binary, run in `dir` with none of the user's configuration.
pub fn cmd(dir: &Path) -> assert_cmd::Command {
    let mut command = assert_cmd::Command::new(BIN);
    command.current_dir(dir);
    for name in CONFIG_ENV {
        command.env_remove(name);
    }
    command
}

/// The same, as a `std::process::Command` for long-running children.
pub fn std_cmd(dir: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(BIN);
    command.current_dir(dir);
    for name in CONFIG_ENV {
        command.env_remove(name);
    }
    command
}

/// Writes a file under `dir` and returns its path.
pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// The captured Preservica 6.10 delivery body.
pub const CAPTURED: &str = r#"{"subscriptionId":"9495ddbf7d4a0b9f030a3411c87f967d","timestamp":"2023-10-11T10:52:42.469","tenant":"BRAMA","version":"6.10","events":[{"event":"FullTextIndexed","entityType":"IO","entityRef":"7fdea7e0-1e72-4fb1-aadb-d7f9ee6ed8c2","identifiers":[]}],"trigger":"FULL_TEXT_INDEXED"}"#;

/// A running `serve`, killed when dropped (even when the test fails).
pub struct Serve {
    child: std::process::Child,
    /// The webhook URL from its `listening on` line.
    pub url: String,
    stdout: std::sync::mpsc::Receiver<String>,
    stderr: std::sync::mpsc::Receiver<String>,
    /// Every stderr line seen so far.
    pub stderr_seen: Vec<String>,
}

/// How long a test waits for a line from `serve` before failing.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);

fn forward_lines(pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let (tx, rx) = std::sync::mpsc::channel();
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
    /// Starts `serve 127.0.0.1:0 ARGS` in `dir` with the shared secret, and waits for its
    /// `listening on` line.
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Serve {
        Serve::start_at(dir, "127.0.0.1:0", args, env)
    }

    /// [`Serve::start`] on a given address.
    pub fn start_at(dir: &Path, addr: &str, args: &[&str], env: &[(&str, &str)]) -> Serve {
        use std::process::Stdio;
        let mut command = std_cmd(dir);
        command
            .args(["serve", addr])
            .args(args)
            .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stdout = forward_lines(child.stdout.take().unwrap());
        let stderr = forward_lines(child.stderr.take().unwrap());
        let mut serve = Serve {
            child,
            url: String::new(),
            stdout,
            stderr,
            stderr_seen: Vec::new(),
        };
        let line = serve.wait_stderr("listening on ");
        let start = line.find("http").unwrap();
        serve.url = line[start..].trim().to_owned();
        serve
    }

    /// The next stdout line; panics after [`PATIENCE`].
    pub fn stdout_line(&self) -> String {
        self.stdout
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|err| panic!("no stdout line from serve: {err}"))
    }

    /// Whether stdout has produced a line by now, without waiting.
    pub fn stdout_ready(&self) -> Option<String> {
        self.stdout.try_recv().ok()
    }

    /// Waits for a stderr line containing `needle` and returns it; panics after [`PATIENCE`].
    pub fn wait_stderr(&mut self, needle: &str) -> String {
        if let Some(line) = self.stderr_seen.iter().find(|line| line.contains(needle)) {
            return line.clone();
        }
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.stderr_seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(err) => panic!(
                    "no stderr line with {needle:?} ({err}); seen:\n{}",
                    self.stderr_seen.join("\n")
                ),
            }
        }
    }

    /// Sends SIGTERM, waits for the exit, and returns the exit code with the rest of stderr.
    pub fn terminate(&mut self) -> (Option<i32>, Vec<String>) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        let rest: Vec<String> = self.stderr.iter().collect();
        self.stderr_seen.extend(rest.iter().cloned());
        (exit.code(), rest)
    }

    /// The remaining stdout lines after the process ended.
    pub fn rest_of_stdout(&self) -> Vec<String> {
        self.stdout.iter().collect()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `ready` holds, checking every few milliseconds; panics with `what` after
/// [`PATIENCE`].
pub fn poll_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether process `pid` runs (a zombie, dead but not yet reaped, does not).
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `PID (COMM) STATE …`; COMM may hold spaces and parentheses, the state follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X"))
}

/// The process ids a test command appends to a file, one a line; those still alive are
/// killed when dropped, so a failing test leaves nothing running.
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
        for pid in self.alive() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

impl Serve {
    /// The process id of `serve`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `INT`) without waiting for the exit.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits at most `within` for the exit and returns the exit code with the rest of stderr;
    /// panics (and the drop kills serve) when it is still running then.
    pub fn wait_exit(&mut self, within: std::time::Duration) -> (Option<i32>, Vec<String>) {
        let deadline = std::time::Instant::now() + within;
        let exit = loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                break exit;
            }
            if std::time::Instant::now() >= deadline {
                let rest: Vec<String> = self.stderr.try_iter().collect();
                self.stderr_seen.extend(rest);
                panic!(
                    "serve still runs {within:?} later; stderr:\n{}",
                    self.stderr_seen.join("\n")
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
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
