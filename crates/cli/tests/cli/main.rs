//! The binary's integration tests, in one test binary (one link instead of one per file).
//!
//! - `common`: the names the modules share (most of them from the testkit crate).
//! - `e2e`: whole-binary flows: SIGKILL and restart, `--exec` retries over many deliveries.
//! - the other modules: one command or concern each.

mod admin;
mod admin_browser;
mod catch_up;
mod command;
mod common;
mod e2e;
mod exec;
mod inbox;
mod manage;
mod nats;
mod offline;
mod postgres;
mod receiver_check;
mod serve;
mod work;
