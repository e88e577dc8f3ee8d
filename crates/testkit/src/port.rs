//! Free loopback ports for services a test starts itself.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// A loopback port that was free a moment ago: bound, read back and released. Another process
/// could take it before the caller binds it, so a service started on it should be checked for
/// a bind failure and started again on a new port.
///
/// # Errors
/// When no port can be bound on 127.0.0.1.
pub fn free_loopback_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_can_be_bound_again() {
        let port = free_loopback_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }
}
