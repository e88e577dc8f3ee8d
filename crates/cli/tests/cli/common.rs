//! What the modules share: the binary, clean commands for it, and `serve` as a child process.
//! Most of it lives in the testkit crate; the names stay so that a test file moves in with
//! only its `mod common;` changed to `use crate::common;`.

#![allow(dead_code, reason = "each module uses a different part of the helpers")]
#![allow(unreachable_pub, reason = "helpers of a test binary")]
#![allow(
    unused_imports,
    reason = "the names every module may use, re-exported once"
)]

use std::path::{Path, PathBuf};

pub use preservica_webhook_testkit::{CAPTURED, PATIENCE, PidFile, SECRET, alive, poll_until};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_preservica-webhook");

/// A command for the binary, run in `dir` with none of the user's configuration.
pub fn cmd(dir: &Path) -> assert_cmd::Command {
    assert_cmd::Command::from_std(std_cmd(dir))
}

/// The same, as a `std::process::Command` for long-running children.
pub fn std_cmd(dir: &Path) -> std::process::Command {
    preservica_webhook_testkit::serve::command(Path::new(BIN), dir)
}

/// Runs the binary in `dir` to its end, with the shared secret: exit code, stdout, stderr.
pub fn run(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let output = cmd(dir)
        .args(args)
        .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs the binary in `dir` with `env` off the async runtime, so a stand-in on the same
/// runtime keeps answering.
pub async fn run_beside(
    dir: &Path,
    env: Vec<(String, String)>,
    args: &[&str],
) -> std::process::Output {
    let dir = dir.to_owned();
    let args: Vec<String> = args.iter().map(|it| (*it).to_owned()).collect();
    tokio::task::spawn_blocking(move || cmd(&dir).args(&args).envs(env).output().unwrap())
        .await
        .unwrap()
}

/// Writes a file under `dir` and returns its path.
pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// A running `serve` of the binary under test (the testkit's harness, which it derefs to).
#[derive(Debug)]
pub struct Serve(pub preservica_webhook_testkit::Serve);

impl Serve {
    /// Starts `serve 127.0.0.1:0 ARGS` in `dir` with the shared secret, and waits for its
    /// `listening on` line.
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Serve {
        Serve::start_at(dir, "127.0.0.1:0", args, env)
    }

    /// [`Serve::start`] on a given address.
    pub fn start_at(dir: &Path, addr: &str, args: &[&str], env: &[(&str, &str)]) -> Serve {
        let mut command = std_cmd(dir);
        command
            .args(["serve", addr])
            .args(args)
            .env("PRESERVICA_WEBHOOK_SECRET", SECRET)
            .envs(env.iter().copied());
        Serve(preservica_webhook_testkit::Serve::spawn(command))
    }
}

impl std::ops::Deref for Serve {
    type Target = preservica_webhook_testkit::Serve;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Serve {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}
