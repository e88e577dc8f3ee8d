//! What the workspace's tests, `cargo xtask` and the benchmarks share: a stand-in Preservica,
//! the binary as a child process, signed deliveries, a raw HTTP/1.1 client, and throwaway real
//! services started on a free loopback port with their own data folder. Not published;
//! nothing here is part of the toolkit's API.

pub mod delivery;
pub mod nats;
mod nats_jwt;
pub mod port;
pub mod postgres;
pub mod raw;
pub mod serve;
mod service;
pub mod standin;

pub use delivery::{CAPTURED, Delivery, Event, SECRET, random_hex, random_uuid, signature};
pub use serve::{PATIENCE, PidFile, Serve, alive, poll_until};
pub use standin::StandIn;
