//! TCP listeners, one per shard, all bound to the same address with SO_REUSEPORT so the kernel
//! spreads new connections across shards. They are bound on the main thread before any shard
//! starts: a port-0 address then resolves to one concrete port that every shard shares, and a
//! bind error stops the start instead of killing a shard later.

use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, RawFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Connections queued in the kernel per listener before the shard accepts them. The kernel caps
/// it at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Binds `count` listening sockets to `addr` (port 0 picks one free port for all of them) and
/// returns their raw descriptors with the address actually bound.
pub fn bind_reuseport(addr: SocketAddr, count: usize) -> std::io::Result<(Vec<RawFd>, SocketAddr)> {
    let first = bind_one(addr)?;
    let bound = first
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("listener has no IP address"))?;
    let mut fds = vec![first.into_raw_fd()];
    for _ in 1..count {
        fds.push(bind_one(bound)?.into_raw_fd());
    }
    Ok((fds, bound))
}

fn bind_one(addr: SocketAddr) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // `[::]` should also take IPv4, as most operators expect from a wildcard address.
        socket.set_only_v6(false)?;
    }
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    #[test]
    fn port_zero_resolves_to_one_shared_port() {
        let (fds, addr) = bind_reuseport("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_eq!(fds.len(), 3);
        assert_ne!(addr.port(), 0);
        for fd in fds {
            let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
            assert_eq!(listener.local_addr().unwrap(), addr);
        }
    }

    #[test]
    fn a_port_held_without_reuseport_is_an_error() {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = bind_reuseport(holder.local_addr().unwrap(), 1).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    }
}
