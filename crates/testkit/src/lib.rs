//! What the workspace's tests, `cargo xtask e2e` and the benchmarks share: throwaway real
//! services started on a free loopback port with their own data folder, harnesses for the
//! binary, and signed deliveries. Not published; nothing here is part of the toolkit's API.

pub mod nats;
pub mod port;
pub mod postgres;
