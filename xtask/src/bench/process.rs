//! Servers under test as child processes: the testkit's harness (which finds the address in
//! the `listening on http://IP:PORT/PATH` line and kills the process group when dropped), with
//! the memory read from `/proc`.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use preservica_webhook_testkit::Serve;

/// A running server under test; its stdout goes to /dev/null.
#[derive(Debug)]
pub(crate) struct Server {
    name: String,
    serve: Serve,
    addr: SocketAddr,
    path: String,
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
    /// Starts `command` and waits for its `listening on` line (blocking the thread a moment).
    ///
    /// # Errors
    /// When it cannot start, exits first, or says nothing of the kind in time.
    pub(crate) fn start(name: &str, command: Command) -> Result<Server> {
        let serve = tokio::task::block_in_place(|| Serve::launch(command, Stdio::null()))
            .with_context(|| format!("{name} did not start listening"))?;
        let url = serve.url.clone();
        let rest = url.strip_prefix("http://").unwrap_or_default();
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let addr = authority.parse().with_context(|| {
            format!("{name} is listening on {url:?}, which is not http://IP:PORT/PATH")
        })?;
        let path = if path.is_empty() { "/" } else { path }.to_owned();
        let name = name.to_owned();
        Ok(Server {
            name,
            serve,
            addr,
            path,
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
        let pid = self.serve.pid();
        let id = i32::try_from(pid).context("a process id fits in i32")?;
        let status = procfs::process::Process::new(id)
            .and_then(|process| process.status())
            .with_context(|| format!("could not read the memory of {} (pid {pid})", self.name))?;
        match (status.vmrss, status.vmhwm) {
            (Some(rss_kib), Some(peak_kib)) => Ok(Memory { rss_kib, peak_kib }),
            _ => bail!("/proc/{pid}/status has no VmRSS/VmHWM"),
        }
    }

    /// Fails when the process has exited, quoting its last stderr lines.
    ///
    /// # Errors
    /// When it has exited.
    pub(crate) fn ensure_running(&mut self) -> Result<()> {
        if self.serve.has_exited() {
            let tail = self.stderr_tail();
            bail!(
                "{} exited during the run; its stderr ended with:\n{tail}",
                self.name
            );
        }
        Ok(())
    }

    /// Its last stderr lines.
    pub(crate) fn stderr_tail(&mut self) -> String {
        let lines = self.serve.stderr_so_far();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Kills it and waits for it to go.
    pub(crate) fn stop(mut self) {
        self.serve.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn finds_the_address_and_memory_and_reports_a_child_that_exits_early() {
        let mut command = Command::new("sh");
        let line = "echo '\x1b[32mINFO\x1b[0m listening on http://127.0.0.1:5/hook\x1b[0m' >&2";
        command.args(["-c", &format!("echo starting >&2; {line}; exec sleep 60")]);
        let mut server = Server::start("sh", command).unwrap();
        assert_eq!(server.addr(), "127.0.0.1:5".parse().unwrap());
        assert_eq!(server.path(), "/hook");
        server.ensure_running().unwrap();
        let memory = server.memory().unwrap();
        assert!(memory.peak_kib >= memory.rss_kib && memory.rss_kib > 0);
        server.stop();

        let mut command = Command::new("sh");
        command.args(["-c", "echo 'error: no secret given' >&2; exit 2"]);
        let message = format!("{:#}", Server::start("serve", command).unwrap_err());
        assert!(message.contains("error: no secret given"), "{message}");
    }
}
