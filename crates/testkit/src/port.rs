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

/// `count` different loopback ports that were free a moment ago. Each is held until all are
/// chosen, so none is handed out twice (the system may give a just-released port again); the
/// caveat of [`free_loopback_port`] holds for each.
///
/// # Errors
/// When no port can be bound on 127.0.0.1.
pub fn free_loopback_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let held = (0..count)
        .map(|_| TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))))
        .collect::<std::io::Result<Vec<_>>>()?;
    held.iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect()
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

    #[test]
    fn ports_chosen_together_are_all_different() {
        let mut ports = free_loopback_ports(16).unwrap();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 16);
    }
}
