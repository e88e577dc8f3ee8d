//! What the throwaway servers ([`postgres`](crate::postgres), [`nats`](crate::nats)) share: a
//! program run as a child process in a temporary folder of its own, its stderr appended to a
//! log there, ready once that log shows a given line; stopped with a signal (and killed when
//! it does not go in time), and killed when dropped, before its folder is removed.

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rustix::process::Signal;

use crate::port::free_loopback_port;

/// How long a server may take to start or stop.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

/// A server program in its own temporary folder, running or stopped.
#[derive(Debug)]
pub(crate) struct Service {
    /// The program's name, for messages and the names of the folder and the log.
    name: &'static str,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Service {
    /// A new temporary folder for the program `name`, which does not run yet.
    pub(crate) fn new(name: &'static str) -> anyhow::Result<Service> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("testkit-{name}-"))
            .tempdir()
            .with_context(|| format!("cannot create a folder for {name}"))?;
        Ok(Service {
            name,
            dir,
            child: None,
        })
    }

    /// The folder, removed when the service is dropped.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn log_path(&self) -> PathBuf {
        self.dir().join(format!("{}.log", self.name))
    }

    /// Spawns `command` with its stderr appended to the log and waits until what it logs has
    /// `ready`.
    pub(crate) fn launch(&mut self, mut command: Command, ready: &str) -> anyhow::Result<()> {
        let name = self.name;
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let from = log.metadata()?.len();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let logged = self.log_since(from);
            if logged.contains(ready) {
                self.child = Some(child);
                return Ok(());
            }
            if let Some(status) = child.try_wait()? {
                bail!("{name} exited with {status}: {logged}");
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{name} did not start within {PATIENCE:?}: {logged}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the program has logged from byte `from` of the log on.
    pub(crate) fn log_since(&self, from: u64) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(self.log_path()) {
            let _ = file.read_to_string(&mut text);
        }
        let from = usize::try_from(from).unwrap_or(usize::MAX).min(text.len());
        text.get(from..).unwrap_or_default().to_owned()
    }

    /// Sends `signal` and waits for the program to exit.
    ///
    /// # Errors
    /// When it does not exit within [`PATIENCE`] (it is then killed).
    pub(crate) fn stop(&mut self, signal: Signal) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = i32::try_from(child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, signal);
        }
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "{} did not stop within {PATIENCE:?} and was killed",
            self.name
        )
    }

    /// Kills the program with `SIGKILL`, as a crash would.
    ///
    /// # Errors
    /// When waiting for it fails.
    pub(crate) fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Runs `start` on a free loopback port. The port was free a moment ago; another process may
/// take it first, so a failure is tried again on a new port, five times in all.
pub(crate) fn on_a_free_port<T>(
    mut start: impl FnMut(u16) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut last = None;
    for _ in 0..5 {
        match start(free_loopback_port()?) {
            Ok(started) => return Ok(started),
            Err(err) => last = Some(err),
        }
    }
    Err(last.expect("tried at least once"))
}

/// The first folder in `PATH` holding every one of `programs`.
pub(crate) fn in_path(programs: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).find(|dir| programs.iter().all(|it| dir.join(it).is_file()))
}
