//! A throwaway NATS server with JetStream: `nats-server -js` on a free loopback port with its
//! own store folder, stopped and removed when dropped; or three of them as one JetStream
//! cluster, for streams with three replicas.
//!
//! The program is Debian's `nats-server` (found in `PATH`); without it [`Nats::start`] fails
//! with a message saying to install it.
//!
//! ```no_run
//! let mut nats = preservica_webhook_testkit::nats::Nats::start()?;
//! let url = nats.url(); // nats://127.0.0.1:PORT
//! nats.stop()?; // an outage: clients lose their connections
//! nats.start_again()?; // the same store on the same port
//! # anyhow::Ok(())
//! ```

use std::fs::File;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

use crate::port::free_loopback_port;

/// How long a server may take to start or stop.
const PATIENCE: Duration = Duration::from_secs(30);
/// The line the server logs once it takes connections.
const READY: &str = "Server is ready";
/// A line a cluster node logs once the cluster has a JetStream metadata leader.
const LEADER: &str = "metadata leader";

/// A running throwaway `nats-server -js` (see the [module documentation](self)).
#[derive(Debug)]
pub struct Nats {
    /// Holds `store/` (JetStream's files) and `nats.log`.
    dir: tempfile::TempDir,
    port: u16,
    /// For a cluster node: its name, its cluster port and the other nodes' cluster ports.
    cluster: Option<Node>,
    /// More `nats-server` options (authentication, TLS), given at every start.
    options: Vec<String>,
    server: Option<Child>,
}

/// Three [`Nats`] servers forming one JetStream cluster on loopback.
#[derive(Debug)]
pub struct NatsCluster {
    /// The nodes; each can be stopped and started again on its own.
    pub nodes: Vec<Nats>,
}

#[derive(Debug, Clone)]
struct Node {
    name: String,
    port: u16,
    routes: Vec<u16>,
}

impl Nats {
    /// Starts a server with JetStream on a free loopback port with a new store folder.
    ///
    /// # Errors
    /// When `nats-server` is not installed (the message says to install Debian's
    /// `nats-server`), or it does not start (the message holds its log).
    pub fn start() -> anyhow::Result<Nats> {
        Nats::start_with(&[])
    }

    /// [`Nats::start`] with more `nats-server` options, such as `--auth TOKEN`,
    /// `--user U --pass P` or `--tls --tlscert FILE --tlskey FILE`.
    ///
    /// # Errors
    /// As [`Nats::start`].
    pub fn start_with(options: &[&str]) -> anyhow::Result<Nats> {
        let mut last = None;
        // The port was free a moment ago; another process may take it first: try a few.
        for _ in 0..5 {
            let mut nats = Nats::new(free_loopback_port()?, None)?;
            nats.options = options.iter().map(|it| (*it).to_owned()).collect();
            match nats.launch(READY) {
                Ok(()) => return Ok(nats),
                Err(err) => last = Some(err),
            }
        }
        Err(last.expect("tried at least once"))
    }

    /// The server's client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port, the same after [`Nats::start_again`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server runs.
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// Stops the server as `SIGTERM` does (its store stays on disk); clients lose their
    /// connections.
    ///
    /// # Errors
    /// When it does not stop within 30 s (it is then killed).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut server) = self.server.take() else {
            return Ok(());
        };
        signal(&server, rustix::process::Signal::TERM);
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if server.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = server.kill();
        let _ = server.wait();
        bail!("nats-server did not stop within {PATIENCE:?} and was killed")
    }

    /// Kills the server with `SIGKILL`, as a crash would.
    ///
    /// # Errors
    /// When waiting for it fails.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            server.wait()?;
        }
        Ok(())
    }

    /// Starts the stopped server again on the same port with the same store.
    ///
    /// # Errors
    /// When it does not start (the message holds its log).
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if self.server.is_some() {
            return Ok(());
        }
        self.launch(READY)
    }

    fn new(port: u16, cluster: Option<Node>) -> anyhow::Result<Nats> {
        which()?;
        let dir = tempfile::Builder::new()
            .prefix("testkit-nats-")
            .tempdir()
            .context("cannot create a folder for the NATS store")?;
        Ok(Nats {
            dir,
            port,
            cluster,
            options: Vec::new(),
            server: None,
        })
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    /// Starts the server and waits until its log has `ready`.
    fn launch(&mut self, ready: &str) -> anyhow::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let from = log.metadata()?.len();
        let mut command = Command::new("nats-server");
        command
            .current_dir(self.dir.path())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.path().join("store"))
            .args(&self.options)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(node) = &self.cluster {
            let routes: Vec<String> = node
                .routes
                .iter()
                .map(|port| format!("nats://127.0.0.1:{port}"))
                .collect();
            command
                .args(["-n", &node.name, "--cluster_name", "testkit"])
                .args(["--cluster", &format!("nats://127.0.0.1:{}", node.port)])
                .args(["--routes", &routes.join(",")]);
        }
        let mut server = command
            .spawn()
            .context("cannot start nats-server (is Debian's `nats-server` package installed?)")?;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let logged = self.log_since(from);
            if logged.contains(ready) {
                self.server = Some(server);
                return Ok(());
            }
            if let Some(status) = server.try_wait()? {
                bail!("nats-server exited with {status}: {logged}");
            }
            if Instant::now() >= deadline {
                let _ = server.kill();
                let _ = server.wait();
                bail!("nats-server did not start within {PATIENCE:?}: {logged}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_since(&self, from: u64) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(self.log_path()) {
            let _ = file.read_to_string(&mut text);
        }
        let from = usize::try_from(from).unwrap_or(usize::MAX).min(text.len());
        text.get(from..).unwrap_or_default().to_owned()
    }
}

impl NatsCluster {
    /// Starts three nodes on free loopback ports and waits until the cluster has elected a
    /// JetStream metadata leader.
    ///
    /// # Errors
    /// When `nats-server` is missing or a node does not start.
    pub fn start() -> anyhow::Result<NatsCluster> {
        let clients = [
            free_loopback_port()?,
            free_loopback_port()?,
            free_loopback_port()?,
        ];
        let routes = [
            free_loopback_port()?,
            free_loopback_port()?,
            free_loopback_port()?,
        ];
        let mut nodes = Vec::new();
        for (index, (client, route)) in clients.iter().zip(routes).enumerate() {
            let node = Node {
                name: format!("n{}", index + 1),
                port: route,
                routes: routes.iter().copied().filter(|it| *it != route).collect(),
            };
            nodes.push(Nats::new(*client, Some(node))?);
        }
        // A node logs ready only once it has seen the others; start them all first.
        for node in &mut nodes {
            node.launch("Starting nats-server")?;
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let logs: Vec<String> = nodes.iter().map(|node| node.log_since(0)).collect();
            let ready = logs.iter().all(|log| log.contains(READY));
            if ready && logs.iter().any(|log| log.contains(LEADER)) {
                return Ok(NatsCluster { nodes });
            }
            if Instant::now() >= deadline {
                return Err(anyhow!(
                    "the NATS cluster did not elect a leader within {PATIENCE:?}: {}",
                    logs.join("\n---\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The nodes' client URLs, comma-separated, as NATS clients take a server list.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(Nats::url).collect();
        urls.join(",")
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

fn signal(server: &Child, signal: rustix::process::Signal) {
    let pid = i32::try_from(server.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Fails with what to install when `nats-server` is not in `PATH`.
fn which() -> anyhow::Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| dir.join("nats-server").is_file()) {
        return Ok(());
    }
    bail!(
        "nats-server is not installed (not in PATH); install Debian's `nats-server` package \
         (`apt-get install nats-server`; `.ci/run` does it when it is missing)"
    )
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;

    use super::*;

    #[test]
    fn a_server_starts_stops_starts_again_and_is_removed() {
        let mut nats = Nats::start().unwrap();
        let port = nats.port();
        let dir = nats.dir.path().to_owned();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert_eq!(nats.url(), format!("nats://127.0.0.1:{port}"));
        nats.stop().unwrap();
        assert!(!nats.is_running());
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        nats.start_again().unwrap();
        assert_eq!(nats.port(), port);
        assert!(dir.join("store").is_dir());
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
        drop(nats);
        assert!(!dir.exists());
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }

    #[test]
    fn a_cluster_elects_a_leader_and_survives_a_node_restart() {
        let mut cluster = NatsCluster::start().unwrap();
        assert_eq!(cluster.urls().split(',').count(), 3);
        cluster.nodes[0].kill().unwrap();
        assert!(!cluster.nodes[0].is_running());
        cluster.nodes[0].start_again().unwrap();
        for node in &cluster.nodes {
            assert!(TcpStream::connect(("127.0.0.1", node.port())).is_ok());
        }
    }
}
