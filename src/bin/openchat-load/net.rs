//! Sockets and process limits: connecting from several loopback source addresses when one
//! address would run out of ephemeral ports, raising the descriptor limit, reading a process's
//! resident memory.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

/// Share of an address's ephemeral ports one run may use (the rest stays for TIME_WAIT leftovers
/// of earlier runs and for everything else on the machine).
const PORT_BUDGET_PERCENT: usize = 80;

/// Opens TCP connections to the server, spreading them over the planned source addresses.
pub struct Connector {
    pub target: SocketAddr,
    sources: Vec<IpAddr>,
    next: AtomicUsize,
}

impl Connector {
    pub fn new(target: SocketAddr, sources: Vec<IpAddr>) -> Connector {
        Connector {
            target,
            sources,
            next: AtomicUsize::new(0),
        }
    }

    /// Plans the sources for `planned` connections: loopback targets get 127.0.0.1..=127.0.0.N
    /// with N from `forced` or from the ephemeral port range; others let the kernel choose.
    pub fn planned(target: SocketAddr, planned: usize, forced: Option<usize>) -> Connector {
        let count = match forced {
            Some(n) => n,
            None => source_ips_needed(planned, ephemeral_ports()),
        };
        let sources = match target.ip() {
            IpAddr::V4(ip) if ip.is_loopback() && (count > 1 || forced.is_some()) => (1..=count)
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8)))
                .collect(),
            _ => Vec::new(),
        };
        Connector::new(target, sources)
    }

    pub fn sources(&self) -> &[IpAddr] {
        &self.sources
    }

    /// A connected, non-blocking, `TCP_NODELAY` stream.
    pub async fn connect(&self) -> io::Result<TcpStream> {
        let socket = Socket::new(
            Domain::for_address(self.target),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_nonblocking(true)?;
        socket.set_nodelay(true)?;
        if !self.sources.is_empty() {
            let source = self.sources[self.next.fetch_add(1, Relaxed) % self.sources.len()];
            bind_address_no_port(&socket)?;
            socket.bind(&SocketAddr::new(source, 0).into())?;
        }
        let socket = TcpSocket::from_std_stream(socket.into());
        socket.connect(self.target).await
    }
}

/// `IP_BIND_ADDRESS_NO_PORT`: with a source address bound, pick the port at `connect` (per
/// destination) instead of at `bind` (unique per address), so each source address really
/// offers the whole ephemeral range. A raw `setsockopt`: nix 0.27 has no typed option for it.
fn bind_address_no_port(socket: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, and a pointer to a c_int that outlives the call with
    // its exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Ports in `/proc/sys/net/ipv4/ip_local_port_range` (Linux's default when unreadable).
pub fn ephemeral_ports() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| parse_port_range(&text))
        .unwrap_or(60999 - 32768 + 1)
}

fn parse_port_range(text: &str) -> Option<usize> {
    let mut it = text.split_whitespace().map(|p| p.parse::<usize>().ok());
    let (low, high) = (it.next()??, it.next()??);
    (high >= low).then(|| high - low + 1)
}

/// Source addresses needed so that no address uses more than its budget of ports.
pub fn source_ips_needed(planned: usize, ports: usize) -> usize {
    let budget = (ports * PORT_BUDGET_PERCENT / 100).max(1);
    planned.div_ceil(budget).clamp(1, 254)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns (before, after).
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (before, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if before < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok((before, before.max(hard)))
}

/// `VmRSS` of a process in KiB.
pub fn vm_rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss(&status).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no VmRSS in /proc/{pid}/status"),
        )
    })
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(value),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_range_and_source_count() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some(28232));
        assert_eq!(parse_port_range("1024 1023"), None);
        assert_eq!(parse_port_range("x"), None);
        // 10,000 sockets fit in one address of the default range; 50,000 need three.
        assert_eq!(source_ips_needed(10_000, 28232), 1);
        assert_eq!(source_ips_needed(22_585, 28232), 1);
        assert_eq!(source_ips_needed(22_586, 28232), 2);
        assert_eq!(source_ips_needed(50_000, 28232), 3);
        // a narrow range (e.g. a tuned machine) spreads earlier
        assert_eq!(source_ips_needed(10_000, 1000), 13);
        assert_eq!(source_ips_needed(10_000_000, 1000), 254);
    }

    #[test]
    fn planned_sources_only_for_loopback() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let c = Connector::planned(lo, 10, Some(3));
        assert_eq!(
            c.sources(),
            &[
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "127.0.0.2".parse().unwrap(),
                "127.0.0.3".parse().unwrap()
            ]
        );
        assert!(Connector::planned(lo, 10, None).sources().is_empty());
        let remote: SocketAddr = "192.0.2.1:8080".parse().unwrap();
        assert!(
            Connector::planned(remote, 1_000_000, None)
                .sources()
                .is_empty()
        );
    }

    #[test]
    fn rss_parsing() {
        let status = "Name:\topenchatd\nVmPeak:\t  200000 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(12345));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert!(vm_rss_kib(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn nofile_limit_is_raised_to_hard() {
        let (before, after) = raise_nofile_limit().unwrap();
        assert!(after >= before);
    }

    #[tokio::test]
    async fn connects_from_a_chosen_loopback_source() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let connector = Connector::planned(target, 1, Some(2));
        let a = connector.connect().await.unwrap();
        let b = connector.connect().await.unwrap();
        assert_eq!(a.local_addr().unwrap().ip().to_string(), "127.0.0.1");
        assert_eq!(b.local_addr().unwrap().ip().to_string(), "127.0.0.2");
        assert!(a.nodelay().unwrap());
    }
}
