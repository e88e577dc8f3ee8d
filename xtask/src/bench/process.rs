//! Servers under test as child processes: starting them, finding their address in the
//! `listening on http://IP:PORT/PATH` line of their stderr, reading their memory from
//! `/proc`, and killing them.
//!
//! A [`Server`] kills its process when dropped, so no child outlives the bench on any path
//! (error, panic, Ctrl-C): the child is started with `kill_on_drop`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::time::timeout;

/// How long a server may take to say it is listening.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How many lines of a server's stderr are kept for error messages.
const STDERR_TAIL: usize = 20;

/// A running server under test.
#[derive(Debug)]
pub(crate) struct Server {
    name: String,
    child: Child,
    pid: u32,
    addr: SocketAddr,
    path: String,
    tail: Arc<Mutex<VecDeque<String>>>,
}

/// A process's resident memory, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Memory {
    /// `VmRSS`: resident now.
    pub(crate) rss_kib: u64,
    /// `VmHWM`: the most it has been resident since it started.
    pub(crate) peak_kib: u64,
}

impl Server {
    /// Starts `command` (stdin and stdout to /dev/null, stderr read here) and waits for its
    /// `listening on` line.
    ///
    /// # Errors
    /// When it cannot start, exits first, or prints no such line within 30 s.
    pub(crate) async fn start(name: &str, mut command: Command) -> Result<Server> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("could not start {name}"))?;
        let pid = child.id().context("the child has no process id")?;
        let stderr = child
            .stderr
            .take()
            .context("the child's stderr is not piped")?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let mut lines = BufReader::new(stderr).lines();
        let found = timeout(LISTEN_TIMEOUT, listening_url(&mut lines, &tail)).await;
        let url = match found {
            Ok(Ok(Some(url))) => url,
            Ok(Ok(None)) => {
                let status = child.wait().await.context("could not wait for the child")?;
                bail!(
                    "{name} exited ({status}) before listening; its stderr ended with:\n{}",
                    render_tail(&tail)
                );
            }
            Ok(Err(err)) => return Err(err).context(format!("could not read {name}'s stderr")),
            Err(_) => bail!(
                "{name} printed no `listening on http://…` line within {LISTEN_TIMEOUT:?}; its stderr \
                 ended with:\n{}",
                render_tail(&tail)
            ),
        };
        let (addr, path) = parse_url(&url).with_context(|| {
            format!("{name} is listening on {url:?}, which is not http://IP:PORT/PATH")
        })?;
        // Keep reading stderr so the child never blocks on a full pipe.
        let drain = Arc::clone(&tail);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                remember(&drain, line);
            }
        });
        Ok(Server {
            name: name.to_owned(),
            child,
            pid,
            addr,
            path,
            tail,
        })
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The webhook path, starting with `/`.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// Its resident memory now and at its peak.
    ///
    /// # Errors
    /// When `/proc/PID/status` cannot be read (the process is gone).
    pub(crate) fn memory(&self) -> Result<Memory> {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).with_context(|| {
                format!(
                    "could not read the memory of {} (pid {})",
                    self.name, self.pid
                )
            })?;
        parse_memory(&status)
            .with_context(|| format!("/proc/{}/status has no VmRSS/VmHWM", self.pid))
    }

    /// Fails when the process has exited, quoting its last stderr lines.
    ///
    /// # Errors
    /// When it has exited.
    pub(crate) fn ensure_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "{} exited during the run ({status}); its stderr ended with:\n{}",
                self.name,
                render_tail(&self.tail)
            ),
            Err(err) => Err(err).with_context(|| format!("could not check on {}", self.name)),
        }
    }

    /// Its last stderr lines.
    pub(crate) fn stderr_tail(&self) -> String {
        render_tail(&self.tail)
    }

    /// Kills it and waits for it to go.
    ///
    /// # Errors
    /// When it cannot be killed.
    pub(crate) async fn stop(mut self) -> Result<()> {
        self.child
            .kill()
            .await
            .with_context(|| format!("could not kill {}", self.name))
    }
}

/// Reads lines until one says `listening on URL`; `None` when stderr ends first.
async fn listening_url(
    lines: &mut tokio::io::Lines<BufReader<ChildStderr>>,
    tail: &Mutex<VecDeque<String>>,
) -> Result<Option<String>> {
    while let Some(line) = lines.next_line().await? {
        let url = line.split_once("listening on ").map(|(_, rest)| {
            rest.chars()
                .take_while(|c| !c.is_whitespace() && *c != '\x1b')
                .collect::<String>()
        });
        remember(tail, line);
        if let Some(url) = url {
            return Ok(Some(url));
        }
    }
    Ok(None)
}

fn remember(tail: &Mutex<VecDeque<String>>, line: String) {
    let mut tail = tail
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if tail.len() == STDERR_TAIL {
        tail.pop_front();
    }
    tail.push_back(line);
}

fn render_tail(tail: &Mutex<VecDeque<String>>) -> String {
    let tail = tail
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if tail.is_empty() {
        return "  (nothing)".to_owned();
    }
    tail.iter()
        .map(|line| format!("  {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `http://IP:PORT/PATH` → the socket address and `/PATH`.
fn parse_url(url: &str) -> Option<(SocketAddr, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    Some((authority.parse().ok()?, path.to_owned()))
}

/// The `VmRSS` and `VmHWM` lines of `/proc/PID/status` (values in kB).
pub(crate) fn parse_memory(status: &str) -> Option<Memory> {
    let field = |name: &str| {
        status.lines().find_map(|line| {
            let value = line.strip_prefix(name)?.strip_prefix(':')?;
            value.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
        })
    };
    Some(Memory {
        rss_kib: field("VmRSS")?,
        peak_kib: field("VmHWM")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_urls() {
        let check = |url: &str, expected: Option<(&str, &str)>| {
            let parsed = parse_url(url);
            let expected =
                expected.map(|(addr, path)| (addr.parse().expect("addr"), path.to_owned()));
            assert_eq!(parsed, expected, "{url}");
        };
        check("http://127.0.0.1:8000/", Some(("127.0.0.1:8000", "/")));
        check(
            "http://127.0.0.1:41234/webhook",
            Some(("127.0.0.1:41234", "/webhook")),
        );
        check("http://[::1]:9/a/b", Some(("[::1]:9", "/a/b")));
        check("http://127.0.0.1:80", Some(("127.0.0.1:80", "/")));
        check("https://127.0.0.1:80/", None);
        check("http://localhost:80/", None);
    }

    #[test]
    fn reads_rss_and_peak_from_proc_status() {
        let status =
            "Name:\tserve\nVmPeak:\t  100000 kB\nVmHWM:\t    9012 kB\nVmRSS:\t    7000 kB\n";
        assert_eq!(
            parse_memory(status),
            Some(Memory {
                rss_kib: 7000,
                peak_kib: 9012
            })
        );
        assert_eq!(parse_memory("Name:\tkthread\n"), None);
    }

    #[tokio::test]
    async fn finds_the_address_and_kills_the_child() {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "echo starting >&2; echo '\x1b[32mINFO\x1b[0m listening on http://127.0.0.1:5/hook\x1b[0m' >&2; exec sleep 60",
        ]);
        let mut server = Server::start("sh", command).await.expect("starts");
        assert_eq!(server.addr(), "127.0.0.1:5".parse().expect("addr"));
        assert_eq!(server.path(), "/hook");
        server.ensure_running().expect("still running");
        let memory = server.memory().expect("in /proc");
        assert!(memory.peak_kib >= memory.rss_kib && memory.rss_kib > 0);
        let pid = server.pid;
        server.stop().await.expect("killed");
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[tokio::test]
    async fn reports_a_child_that_exits_before_listening() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo 'error: no secret given' >&2; exit 2"]);
        let err = Server::start("serve", command)
            .await
            .expect_err("never listened");
        let message = format!("{err:#}");
        assert!(message.contains("exited"), "{message}");
        assert!(message.contains("error: no secret given"), "{message}");
    }
}
