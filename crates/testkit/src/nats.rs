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
//!
//! [`Nats::start_with_credentials`] starts one in operator (decentralised JWT) mode and gives
//! the `.creds` file of a user whose account has JetStream, as `nsc` would set it up.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

use crate::nats_jwt::Operator;
use crate::port::free_loopback_ports;
use crate::service::{PATIENCE, Service, in_path, on_a_free_port};

/// The line the server logs once it takes connections.
const READY: &str = "Server is ready";
/// A line a cluster node logs once the cluster has a JetStream metadata leader.
const LEADER: &str = "metadata leader";

/// A running throwaway `nats-server -js` (see the [module documentation](self)).
#[derive(Debug)]
pub struct Nats {
    /// Its folder holds `store/` (JetStream's files) and `nats-server.log`.
    server: Service,
    port: u16,
    /// The HTTP monitoring port (`/jsz`).
    monitor: u16,
    /// For a cluster node: its name, its cluster port and the other nodes' cluster ports.
    cluster: Option<Node>,
    /// More `nats-server` options (authentication, TLS), given at every start.
    options: Vec<String>,
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
        on_a_free_port(|port| {
            let mut nats = Nats::new(port, monitor_beside(port)?, None)?;
            nats.options = options.iter().map(|it| (*it).to_owned()).collect();
            nats.launch(READY)?;
            Ok(nats)
        })
    }

    /// Starts a server in operator mode: it trusts a new operator, knows that operator's
    /// system account and one account with JetStream (a memory resolver preloaded with their
    /// JWTs), and takes clients that prove to be one of their users. Returns the server and
    /// the path of a `.creds` file for a user of the JetStream account, inside the server's
    /// folder (removed with it).
    ///
    /// # Errors
    /// As [`Nats::start`], or when the configuration cannot be written.
    pub fn start_with_credentials() -> anyhow::Result<(Nats, PathBuf)> {
        let operator = Operator::new("testkit")?;
        let system = operator.system_account("SYS")?;
        let account = operator.account("webhook")?;
        on_a_free_port(|port| {
            let mut nats = Nats::new(port, monitor_beside(port)?, None)?;
            let dir = nats.server.dir();
            let operator_jwt = dir.join("operator.jwt");
            std::fs::write(&operator_jwt, &operator.jwt)?;
            let config = dir.join("operator.conf");
            std::fs::write(
                &config,
                format!(
                    "operator: {operator_jwt:?}\n\
                     system_account: {system}\n\
                     resolver: MEMORY\n\
                     resolver_preload: {{\n  {system}: {system_jwt:?}\n  {account}: \
                     {account_jwt:?}\n}}\n",
                    system = system.public_key(),
                    system_jwt = system.jwt,
                    account = account.public_key(),
                    account_jwt = account.jwt,
                ),
            )?;
            let creds = dir.join("webhook.creds");
            std::fs::write(&creds, account.user_creds("webhook")?)?;
            nats.options = vec!["-c".to_owned(), config.to_string_lossy().into_owned()];
            nats.launch(READY)?;
            Ok((nats, creds))
        })
    }

    /// Writes, in the server's folder, a `.creds` file for a user of an account under another
    /// operator: a well-formed credential this server does not know. Returns its path.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn unknown_credentials(&self) -> anyhow::Result<PathBuf> {
        let stranger = Operator::new("stranger")?.account("stranger")?;
        let creds = self.server.dir().join("stranger.creds");
        std::fs::write(&creds, stranger.user_creds("stranger")?)?;
        Ok(creds)
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
        self.server.is_running()
    }

    /// Stops the server as `SIGTERM` does (its store stays on disk); clients lose their
    /// connections.
    ///
    /// # Errors
    /// When it does not stop within 30 s (it is then killed).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.server.stop(rustix::process::Signal::TERM)
    }

    /// Kills the server with `SIGKILL`, as a crash would.
    ///
    /// # Errors
    /// When waiting for it fails.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.server.kill()
    }

    /// Starts the stopped server again on the same port with the same store.
    ///
    /// # Errors
    /// When it does not start (the message holds its log).
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if self.server.is_running() {
            return Ok(());
        }
        self.launch(READY)
    }

    /// The body of a GET of `path` on the monitoring port.
    fn monitoring(&self, path: &str) -> std::io::Result<String> {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.monitor))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        // HTTP/1.0: the server closes the connection after a whole, unchunked body.
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer
            .split_once("\r\n\r\n")
            .map_or(String::new(), |(_, body)| body.to_owned()))
    }

    fn new(port: u16, monitor: u16, cluster: Option<Node>) -> anyhow::Result<Nats> {
        if in_path(&["nats-server"]).is_none() {
            bail!(
                "nats-server is not installed (not in PATH); install Debian's `nats-server` \
                 package (`apt-get install nats-server`; `.ci/run` does it when it is missing)"
            );
        }
        Ok(Nats {
            server: Service::new("nats-server")?,
            port,
            monitor,
            cluster,
            options: Vec::new(),
        })
    }

    /// Starts the server and waits until its log has `ready`.
    fn launch(&mut self, ready: &str) -> anyhow::Result<()> {
        let dir = self.server.dir();
        let mut command = Command::new("nats-server");
        command
            .current_dir(dir)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-m",
                &self.monitor.to_string(),
                "-sd",
            ])
            .arg(dir.join("store"))
            .args(&self.options);
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
        self.server.launch(command, ready)
    }
}

/// A free loopback port for the monitoring endpoint, other than the client `port`.
fn monitor_beside(port: u16) -> anyhow::Result<u16> {
    let two = free_loopback_ports(2)?;
    Ok(two
        .into_iter()
        .find(|it| *it != port)
        .expect("two different ports"))
}

impl NatsCluster {
    /// Starts three nodes on free loopback ports and waits until the cluster has elected a
    /// JetStream metadata leader.
    ///
    /// # Errors
    /// When `nats-server` is missing or a node does not start.
    pub fn start() -> anyhow::Result<NatsCluster> {
        // Another process may take a chosen port before a node binds it: try again on new ones.
        let mut last = None;
        for _ in 0..3 {
            match NatsCluster::start_once() {
                Ok(cluster) => return Ok(cluster),
                Err(err) => last = Some(err),
            }
        }
        Err(last.expect("tried at least once"))
    }

    fn start_once() -> anyhow::Result<NatsCluster> {
        let ports = free_loopback_ports(9)?;
        let (clients, rest) = ports.split_at(3);
        let (routes, monitors) = rest.split_at(3);
        let mut nodes = Vec::new();
        for (index, ((client, route), monitor)) in
            clients.iter().zip(routes).zip(monitors).enumerate()
        {
            let node = Node {
                name: format!("n{}", index + 1),
                port: *route,
                routes: routes.iter().copied().filter(|it| it != route).collect(),
            };
            nodes.push(Nats::new(*client, *monitor, Some(node))?);
        }
        // A node logs ready only once it has seen the others; start them all first.
        for node in &mut nodes {
            node.launch("Starting nats-server")?;
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let logs: Vec<String> = nodes.iter().map(|node| node.server.log_since(0)).collect();
            let ready = logs.iter().all(|log| log.contains(READY));
            if ready && logs.iter().any(|log| log.contains(LEADER)) {
                return Ok(NatsCluster { nodes });
            }
            // A node that could not bind a port logs a fatal line and exits.
            if Instant::now() >= deadline || logs.iter().any(|log| log.contains("[FTL]")) {
                return Err(anyhow!(
                    "the NATS cluster did not elect a leader within {PATIENCE:?}: {}",
                    logs.join("\n---\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Which node (an index into [`NatsCluster::nodes`]) leads the first consumer of
    /// `stream`, as the running nodes' monitoring (`/jsz`) says; `None` while none knows.
    pub fn consumer_leader(&self, stream: &str) -> Option<usize> {
        let leader = self
            .nodes
            .iter()
            .filter(|node| node.is_running())
            .find_map(|node| {
                let jsz = node.monitoring("/jsz?consumers=true").ok()?;
                let jsz: serde_json::Value = serde_json::from_str(&jsz).ok()?;
                jsz["account_details"]
                .as_array()?
                .iter()
                .filter_map(|account| account["stream_detail"].as_array())
                .flatten()
                .find(|detail| detail["name"] == stream)?["consumer_detail"][0]["cluster"]
                ["leader"]
                .as_str()
                .map(str::to_owned)
            })?;
        self.nodes.iter().position(|node| {
            node.cluster
                .as_ref()
                .is_some_and(|cluster| cluster.name == leader)
        })
    }

    /// The nodes' client URLs, comma-separated, as NATS clients take a server list.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(Nats::url).collect();
        urls.join(",")
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;

    use super::*;

    #[test]
    fn a_server_starts_stops_starts_again_and_is_removed() {
        let mut nats = Nats::start().unwrap();
        let port = nats.port();
        let dir = nats.server.dir().to_owned();
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
