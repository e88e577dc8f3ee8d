//! A throwaway PostgreSQL: its own cluster in a temporary folder, listening on a free loopback
//! port, stopped and removed when dropped.
//!
//! The programs come from Debian's `postgresql` package (`initdb` and `postgres`, found in
//! `PATH` or `/usr/lib/postgresql/*/bin`); without them [`Postgres::start`] fails with a
//! message saying to install it. PostgreSQL refuses to run as root, so a root test process
//! runs them as the unprivileged user `nobody`, which then owns the cluster's folder; any other
//! user runs them as itself.
//!
//! The cluster trusts every local connection (no password) and syncs nothing to disk: it is
//! for tests, whose data may vanish with the machine.
//!
//! ```no_run
//! let mut postgres = preservica_webhook_testkit::postgres::Postgres::start()?;
//! let url = postgres.url(); // postgres://postgres@127.0.0.1:PORT/postgres
//! postgres.stop()?; // an outage: clients lose their connections
//! postgres.start_again()?; // the same cluster on the same port
//! # anyhow::Ok(())
//! ```

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, anyhow, bail};

use crate::service::{Service, in_path, on_a_free_port};

/// The line the server logs once it takes connections.
const READY: &str = "database system is ready to accept connections";
/// The superuser `initdb` creates.
const SUPERUSER: &str = "postgres";

/// A running throwaway PostgreSQL cluster (see the [module documentation](self)).
#[derive(Debug)]
pub struct Postgres {
    /// Its folder holds `data/` (the cluster), `socket/` (its Unix socket) and `postgres.log`.
    server: Service,
    bin: PathBuf,
    port: u16,
    /// Who runs the programs when this process is root: `nobody`'s user and group ids.
    run_as: Option<(u32, u32)>,
    /// Whether the server takes TLS connections only ([`Postgres::start_with_tls`]).
    tls: bool,
    /// Whether commits wait for the disk ([`Postgres::start_durable`]); tests run without.
    durable: bool,
}

impl Postgres {
    /// Creates a cluster in a new temporary folder and starts it on a free loopback port.
    ///
    /// # Errors
    /// When PostgreSQL is not installed (the message says to install Debian's `postgresql`),
    /// or `initdb` or the server fails (the message holds its output).
    pub fn start() -> anyhow::Result<Postgres> {
        Postgres::start_as(None, false)
    }

    /// Like [`Postgres::start`], with TLS: the server presents the PEM certificate chain `cert`
    /// with its key `key` and refuses connections without TLS.
    ///
    /// # Errors
    /// As [`Postgres::start`], and when the files cannot be copied into the cluster.
    pub fn start_with_tls(cert: &Path, key: &Path) -> anyhow::Result<Postgres> {
        Postgres::start_as(Some((cert, key)), false)
    }

    /// Like [`Postgres::start`], with every commit synced to disk as a production server
    /// does (`fsync` and full page writes on), for measuring.
    ///
    /// # Errors
    /// As [`Postgres::start`].
    pub fn start_durable() -> anyhow::Result<Postgres> {
        Postgres::start_as(None, true)
    }

    /// A new cluster, with TLS when `tls` holds a certificate and its key, syncing every
    /// commit when `durable`.
    fn start_as(tls: Option<(&Path, &Path)>, durable: bool) -> anyhow::Result<Postgres> {
        let bin = find_binaries()?;
        let run_as = if rustix::process::geteuid().is_root() {
            Some(nobody()?)
        } else {
            None
        };
        let server = Service::new("postgres")?;
        let dir = server.dir();
        std::fs::create_dir(dir.join("socket"))?;
        if let Some((uid, gid)) = run_as {
            for path in [dir.to_owned(), dir.join("socket")] {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).with_context(|| {
                    format!("cannot give {} to the user nobody", path.display())
                })?;
            }
        }
        let mut postgres = Postgres {
            server,
            bin,
            port: 0,
            run_as,
            tls: tls.is_some(),
            durable,
        };
        postgres.initdb()?;
        if let Some((cert, key)) = tls {
            postgres.install_tls(cert, key)?;
        }
        on_a_free_port(|port| {
            postgres.port = port;
            postgres.launch()
        })?;
        Ok(postgres)
    }

    /// The URL of the `postgres` database as the superuser `postgres`, over TCP on loopback.
    pub fn url(&self) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{SUPERUSER}", self.port)
    }

    /// The port the cluster listens on, the same after [`Postgres::start_again`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server runs (between [`Postgres::stop`] and [`Postgres::start_again`] it
    /// does not).
    pub fn is_running(&self) -> bool {
        self.server.is_running()
    }

    /// Stops the server as an administrator's fast shutdown does: open transactions are rolled
    /// back, every client is disconnected, the cluster stays on disk.
    ///
    /// # Errors
    /// When the server does not stop within 30 s (it is then killed).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.server.stop(rustix::process::Signal::INT)
    }

    /// Starts the stopped cluster again, on the same port.
    ///
    /// # Errors
    /// When it does not start (the message holds its log), for instance because another
    /// process took the port meanwhile.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if self.server.is_running() {
            return Ok(());
        }
        self.launch()
    }

    fn data(&self) -> PathBuf {
        self.server.dir().join("data")
    }

    /// A command for one of the cluster's programs, run as the right user.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command
            .current_dir(self.server.dir())
            .env_remove("PGDATA")
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            // std drops the supplementary groups too when a root process changes the user.
            command.uid(uid).gid(gid);
        }
        command
    }

    fn initdb(&self) -> anyhow::Result<()> {
        let output = self
            .command("initdb")
            .arg("--pgdata")
            .arg(self.data())
            .args([
                "--username",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .context("cannot run initdb")?;
        if !output.status.success() {
            bail!(
                "initdb failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Copies the certificate and key into the cluster (the key readable by the server's user
    /// alone, as PostgreSQL demands) and lets only TLS connections in.
    fn install_tls(&self, cert: &Path, key: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let data = self.data();
        for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
            let to = data.join(name);
            std::fs::copy(from, &to)
                .with_context(|| format!("cannot copy {} into the cluster", from.display()))?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))?;
            if let Some((uid, gid)) = self.run_as {
                std::os::unix::fs::chown(&to, Some(uid), Some(gid))?;
            }
        }
        std::fs::write(
            data.join("pg_hba.conf"),
            "hostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n",
        )
        .context("cannot write pg_hba.conf")?;
        Ok(())
    }

    /// Starts the server on `self.port` and waits until it takes connections.
    fn launch(&mut self) -> anyhow::Result<()> {
        let mut command = self.command("postgres");
        command
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(self.server.dir().join("socket"))
            .args(if self.tls { &["-c", "ssl=on"][..] } else { &[] })
            .args(if self.durable {
                &[][..]
            } else {
                &["-c", "fsync=off", "-c", "full_page_writes=off"][..]
            })
            .args(["-c", "max_connections=300", "-c", "shared_buffers=32MB"]);
        self.server.launch(command, READY)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // An immediate shutdown: nothing is kept, so nothing needs writing.
        let _ = self.server.stop(rustix::process::Signal::QUIT);
    }
}

/// The folder holding `initdb` and `postgres`: the first in `PATH` that has both, else the
/// newest `/usr/lib/postgresql/VERSION/bin`.
fn find_binaries() -> anyhow::Result<PathBuf> {
    let programs = ["initdb", "postgres"];
    if let Some(dir) = in_path(&programs) {
        return Ok(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            let has_both = programs.iter().all(|it| bin.join(it).is_file());
            has_both.then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        anyhow!(
            "PostgreSQL is not installed: no initdb and postgres in PATH or in \
             /usr/lib/postgresql/*/bin; install Debian's `postgresql` package \
             (`apt-get install postgresql`; `.ci/run` does it when they are missing)"
        )
    })
}

/// The user and group ids of `nobody`, from `/etc/passwd`.
fn nobody() -> anyhow::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("cannot read /etc/passwd")?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields.as_slice() {
                ["nobody", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
                _ => None,
            }
        })
        .ok_or_else(|| {
            anyhow!(
                "PostgreSQL refuses to run as root, and there is no user `nobody` in /etc/passwd \
                 to run it as; run the tests as an unprivileged user"
            )
        })
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;

    use super::*;

    #[test]
    fn a_cluster_starts_stops_starts_again_and_is_removed() {
        let mut postgres = Postgres::start().unwrap();
        let port = postgres.port();
        let dir = postgres.server.dir().to_owned();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert_eq!(
            postgres.url(),
            format!("postgres://postgres@127.0.0.1:{port}/postgres")
        );
        postgres.stop().unwrap();
        assert!(!postgres.is_running());
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        postgres.start_again().unwrap();
        assert_eq!(postgres.port(), port);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
        drop(postgres);
        assert!(!dir.exists());
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
