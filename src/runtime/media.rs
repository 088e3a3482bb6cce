//! The media driver of one shard: its UDP socket (`OPENCHAT_RTC_UDP_PORT + shard index`,
//! SO_REUSEPORT set), bound on the main thread so a taken port stops the start with a clear
//! message, then read by the shard that owns it. Datagrams go to the shard's SFU (in its voice
//! rooms) and what it answers is sent from the same socket, so the media of a room never leaves
//! its core. One timer per shard runs the SFU's timeouts; with no call on the shard it wakes
//! once a second and does nothing.
//!
//! The socket is bound to every address of the host, and a participant's candidates may be
//! several of them (or an `OPENCHAT_RTC_PUBLIC_IP` that is not the route back to the client).
//! `IP_PKTINFO` makes the kernel say, for each datagram, the local address it was sent to: the
//! SFU gives str0m that candidate, and the answers go out from that same address (`IP_PKTINFO`
//! on send), not from whichever one the kernel's route to the client would pick. Without it a
//! client that sent to 127.0.0.1 got its answers from the interface address (or the other way
//! round) and never paired.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;
use nix::sys::socket::{setsockopt, sockopt};
use socket2::{Domain, Protocol, Socket, Type};

use super::service::Service;
use super::shard::Shard;

/// Kernel receive and send buffer asked for each media socket (bursts of a busy room fit).
pub const UDP_BUFFER_BYTES: usize = 8 * 1024 * 1024;
/// Largest datagram read; bigger ones are truncated and then refused by the SFU.
pub const MAX_DATAGRAM_BYTES: usize = 2048;
/// The longest the timer sleeps with calls on the shard (bounds how late a paced packet or a
/// retransmission goes out when no datagram wakes the shard first).
pub const MAX_TIMER_SLEEP: Duration = Duration::from_millis(10);
/// How often the receive loop checks for due timeouts between datagrams.
const TIMEOUT_CHECK_INTERVAL: Duration = Duration::from_millis(2);
/// How often an idle shard's timer looks for work.
pub const IDLE_TIMER_SLEEP: Duration = Duration::from_secs(1);

// The batched send and receive below stay on raw `libc` (the socket option and the interface
// list use `nix`). nix 0.27's `sendmmsg` gives every datagram of a batch the same control
// messages, while each answer here carries its own `IP_PKTINFO` source. Its `recvmmsg` reuses
// preallocated headers without restoring `msg_controllen` and `msg_namelen`, which the kernel
// overwrites with what it wrote: a slot's control room shrinks to its last datagram's, safe only
// while every datagram carries the same control messages, and fresh headers per call would
// allocate on every read of the media path. The code here rebuilds its headers in place.

/// Datagrams handed to the kernel per `sendmmsg` call.
const SEND_BATCH: usize = 64;
/// Datagrams taken from the kernel per `recvmmsg` call.
const RECV_BATCH: usize = 32;
/// Room for one `IP_PKTINFO` control message (`CMSG_SPACE(sizeof(in_pktinfo))` is 32 bytes on
/// Linux), in `u64`s so the buffer is aligned for `cmsghdr`.
const CONTROL_WORDS: usize = 8;

/// The `IP_PKTINFO` control message that makes the kernel send from `source`.
fn pktinfo_control(source: Ipv4Addr) -> ([u64; CONTROL_WORDS], usize) {
    let mut control = [0u64; CONTROL_WORDS];
    // SAFETY: CMSG_* only compute sizes and offsets; the buffer is large enough for one
    // cmsghdr with an in_pktinfo (checked by the assertion) and aligned for cmsghdr.
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<libc::in_pktinfo>() as u32) as usize;
        assert!(space <= std::mem::size_of_val(&control));
        let header = control.as_mut_ptr() as *mut libc::cmsghdr;
        (*header).cmsg_level = libc::IPPROTO_IP;
        (*header).cmsg_type = libc::IP_PKTINFO;
        (*header).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::in_pktinfo>() as u32) as _;
        let info = libc::in_pktinfo {
            ipi_ifindex: 0,
            ipi_spec_dst: libc::in_addr {
                s_addr: u32::from_ne_bytes(source.octets()),
            },
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        std::ptr::write_unaligned(libc::CMSG_DATA(header) as *mut libc::in_pktinfo, info);
        (control, space)
    }
}

/// Sends `datagrams` from `socket` with as few system calls as `sendmmsg` allows. The socket
/// is non-blocking: what the kernel refuses (a full send buffer) is dropped, as UDP may, and
/// counted in the result (datagrams not sent).
pub fn send_batch(socket: &UdpSocket, datagrams: &[crate::sfu::Datagram]) -> u64 {
    let mut dropped = 0u64;
    for chunk in datagrams.chunks(SEND_BATCH) {
        let mut addrs: Vec<libc::sockaddr_in> = Vec::with_capacity(chunk.len());
        let mut iovecs: Vec<libc::iovec> = Vec::with_capacity(chunk.len());
        let mut controls: Vec<([u64; CONTROL_WORDS], usize)> = Vec::with_capacity(chunk.len());
        for d in chunk {
            let SocketAddr::V4(v4) = d.destination else {
                // The media socket is IPv4; such a destination cannot come from it.
                dropped += 1;
                continue;
            };
            addrs.push(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            });
            iovecs.push(libc::iovec {
                iov_base: d.contents.as_ptr() as *mut libc::c_void,
                iov_len: d.contents.len(),
            });
            controls.push(match d.source {
                Some(std::net::IpAddr::V4(ip)) if !ip.is_unspecified() => pktinfo_control(ip),
                _ => ([0; CONTROL_WORDS], 0),
            });
        }
        let mut headers: Vec<libc::mmsghdr> = addrs
            .iter_mut()
            .zip(iovecs.iter_mut())
            .zip(controls.iter_mut())
            .map(|((addr, iov), (control, control_len))| {
                // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
                let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
                header.msg_hdr.msg_name = addr as *mut libc::sockaddr_in as *mut libc::c_void;
                header.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                header.msg_hdr.msg_iov = iov as *mut libc::iovec;
                header.msg_hdr.msg_iovlen = 1;
                if *control_len > 0 {
                    header.msg_hdr.msg_control = control.as_mut_ptr() as *mut libc::c_void;
                    header.msg_hdr.msg_controllen = *control_len as _;
                }
                header
            })
            .collect();
        let mut sent = 0;
        while sent < headers.len() {
            // SAFETY: `headers[sent..]` point at live addresses and buffers of `chunk`.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    headers[sent..].as_mut_ptr(),
                    (headers.len() - sent) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                // Full buffer or a refused destination: drop the first and go on.
                dropped += 1;
                sent += 1;
            } else {
                sent += n as usize;
            }
        }
    }
    dropped
}

/// Binds a UDP socket on all IPv4 interfaces at `port` (0: any free port) with SO_REUSEPORT,
/// non-blocking, with large buffers. Returns the descriptor and the bound address.
pub fn bind(port: u16) -> std::io::Result<(RawFd, SocketAddr)> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    // Best effort: the kernel caps these at its configured maximum.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(UDP_BUFFER_BYTES);
    setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).into())?;
    let local = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("not an IP socket"))?;
    Ok((socket.into_raw_fd(), local))
}

/// Reusable buffers for `recvmmsg`: datagrams with their source and, from `IP_PKTINFO`, the
/// local address each was sent to.
struct Received {
    buffers: Vec<Vec<u8>>,
    names: Vec<libc::sockaddr_in>,
    controls: Vec<[u64; CONTROL_WORDS]>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    /// Per datagram read: its length, source and destination.
    got: Vec<(usize, SocketAddr, Option<SocketAddr>)>,
}

impl Received {
    fn new() -> Received {
        Received {
            buffers: (0..RECV_BATCH)
                .map(|_| vec![0u8; MAX_DATAGRAM_BYTES])
                .collect(),
            // SAFETY: all-zero sockaddr_in and mmsghdr are valid values.
            names: vec![unsafe { std::mem::zeroed() }; RECV_BATCH],
            controls: vec![[0u64; CONTROL_WORDS]; RECV_BATCH],
            iovecs: Vec::with_capacity(RECV_BATCH),
            headers: Vec::with_capacity(RECV_BATCH),
            got: Vec::with_capacity(RECV_BATCH),
        }
    }

    /// Reads what the non-blocking socket `fd` (bound at `port`) has queued, up to
    /// [`RECV_BATCH`] datagrams; none when nothing is.
    fn read(&mut self, fd: RawFd, port: u16) -> std::io::Result<()> {
        self.got.clear();
        self.iovecs.clear();
        self.headers.clear();
        for buffer in &mut self.buffers {
            self.iovecs.push(libc::iovec {
                iov_base: buffer.as_mut_ptr() as *mut libc::c_void,
                iov_len: buffer.len(),
            });
        }
        for ((name, control), iov) in self
            .names
            .iter_mut()
            .zip(self.controls.iter_mut())
            .zip(self.iovecs.iter_mut())
        {
            // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
            let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
            header.msg_hdr.msg_name = name as *mut libc::sockaddr_in as *mut libc::c_void;
            header.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            header.msg_hdr.msg_iov = iov as *mut libc::iovec;
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            header.msg_hdr.msg_controllen = std::mem::size_of_val(control) as _;
            self.headers.push(header);
        }
        // SAFETY: every header points at live buffers of `self`, sized as declared.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                self.headers.len() as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(()),
                _ => Err(e),
            };
        }
        for (header, name) in self.headers[..n as usize].iter().zip(&self.names) {
            if i32::from(name.sin_family) != libc::AF_INET {
                continue;
            }
            let from = SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(name.sin_addr.s_addr)),
                u16::from_be(name.sin_port),
            ));
            let len = (header.msg_len as usize).min(MAX_DATAGRAM_BYTES);
            self.got
                .push((len, from, destination(&header.msg_hdr, port)));
        }
        Ok(())
    }

    /// The datagrams of the last read: contents, source, destination.
    fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr, Option<SocketAddr>)> {
        self.got
            .iter()
            .zip(&self.buffers)
            .map(|((len, from, to), buffer)| (&buffer[..*len], *from, *to))
    }
}

/// The local address a received datagram was sent to, from its `IP_PKTINFO` control message.
fn destination(header: &libc::msghdr, port: u16) -> Option<SocketAddr> {
    // SAFETY: the kernel filled `msg_control` with `msg_controllen` bytes of control messages;
    // CMSG_FIRSTHDR/NXTHDR stay inside them and each data part is read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::IPPROTO_IP && (*cmsg).cmsg_type == libc::IP_PKTINFO {
                let info =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::in_pktinfo);
                let ip = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                return Some(SocketAddr::V4(SocketAddrV4::new(ip, port)));
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
    }
    None
}

/// The IPv4 addresses of the host's interfaces that are up, loopback and link-local left out,
/// in the kernel's order (empty if they cannot be read). Read once at start; an address that
/// appears later is not advertised until a restart.
pub fn host_ipv4_addresses() -> Vec<Ipv4Addr> {
    let Ok(interfaces) = getifaddrs() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for interface in interfaces {
        if !interface.flags.contains(InterfaceFlags::IFF_UP) {
            continue;
        }
        let Some(addr) = interface.address.as_ref().and_then(|a| a.as_sockaddr_in()) else {
            continue;
        };
        let ip = Ipv4Addr::from(addr.ip());
        if !ip.is_loopback() && !ip.is_link_local() && !ip.is_unspecified() && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// Starts the shard's media: the SFU, its timer and the receive loop on `fd`.
pub fn start<S: Service>(shard: Rc<Shard<S>>, fd: RawFd, port: u16) {
    // SAFETY: `fd` is the UDP socket `bind` made for exactly this shard.
    let send = unsafe { UdpSocket::from_raw_fd(fd) };
    let recv_fd = match send.try_clone() {
        Ok(clone) => clone.into_raw_fd(),
        Err(e) => {
            tracing::error!(shard = shard.id, error = %e, "media socket could not be shared");
            return;
        }
    };
    // SAFETY: a fresh duplicate of the same socket, owned by glommio from here on.
    let recv = unsafe { glommio::net::UdpSocket::from_raw_fd(recv_fd) };
    shard.voice.start_media(crate::sfu::Sfu::new(port), send);

    let timer = shard.clone();
    glommio::spawn_local(async move {
        loop {
            let now = Instant::now();
            let sleep = match timer.voice.next_timeout() {
                Some(at) => at.saturating_duration_since(now).min(MAX_TIMER_SLEEP),
                None => IDLE_TIMER_SLEEP,
            };
            glommio::timer::sleep(sleep).await;
            if timer.is_stopping() {
                break;
            }
            timer.dispatch(timer.voice.expire());
            if timer
                .voice
                .next_timeout()
                .is_some_and(|at| at <= Instant::now())
            {
                timer.dispatch(timer.voice.timeout());
            }
        }
    })
    .detach();

    // The receive loop is a task of its own: when the shard's main future ends at shutdown,
    // the executor drops it with the socket.
    glommio::spawn_local(async move {
        let mut received = Received::new();
        let mut peek = [0u8; 1];
        let mut checked = Instant::now();
        loop {
            // Wait (in glommio's reactor) until a datagram is there, without taking it; then
            // take what is queued with its destination address.
            if let Err(e) = recv.peek_from(&mut peek).await {
                tracing::debug!(shard = shard.id, error = %e, "media receive failed");
                continue;
            }
            loop {
                if let Err(e) = received.read(recv.as_raw_fd(), port) {
                    tracing::debug!(shard = shard.id, error = %e, "media receive failed");
                    break;
                }
                for (contents, from, to) in received.datagrams() {
                    shard.dispatch(shard.voice.on_datagram(from, to, contents));
                    // Under load the timer task may lag: run due timeouts from here too.
                    let now = Instant::now();
                    if now.duration_since(checked) >= TIMEOUT_CHECK_INTERVAL {
                        checked = now;
                        if shard.voice.next_timeout().is_some_and(|at| at <= now) {
                            shard.dispatch(shard.voice.timeout());
                        }
                    }
                }
                if received.got.len() < RECV_BATCH {
                    break;
                }
                glommio::yield_if_needed().await;
            }
        }
    })
    .detach();
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::getsockopt;
    use std::os::fd::OwnedFd;

    /// A media socket as `bind` makes it, owned so the test closes it.
    fn media_socket() -> (OwnedFd, SocketAddr) {
        let (fd, local) = bind(0).unwrap();
        // SAFETY: `bind` hands over a fresh descriptor nobody else owns.
        (unsafe { OwnedFd::from_raw_fd(fd) }, local)
    }

    #[test]
    fn bind_asks_for_the_destination_of_each_datagram() {
        let (fd, local) = media_socket();
        assert_ne!(local.port(), 0);
        assert!(getsockopt(&fd, sockopt::Ipv4PacketInfo).unwrap());
    }

    #[test]
    fn a_batch_read_gives_source_and_destination() {
        let (fd, local) = media_socket();
        let port = local.port();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..3u8 {
            peer.send_to(&[i; 5], ("127.0.0.1", port)).unwrap();
        }
        let mut received = Received::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut got = Vec::new();
        while got.len() < 3 && Instant::now() < deadline {
            received.read(fd.as_raw_fd(), port).unwrap();
            got.extend(received.datagrams().map(|(c, f, t)| (c.to_vec(), f, t)));
            std::thread::sleep(Duration::from_millis(1));
        }
        let to = SocketAddr::from(([127, 0, 0, 1], port));
        let expected: Vec<_> = (0..3u8)
            .map(|i| (vec![i; 5], peer.local_addr().unwrap(), Some(to)))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn a_batch_send_delivers_every_datagram_with_or_without_a_source() {
        // More than one `sendmmsg` batch, every other datagram with an IP_PKTINFO source (a
        // malformed control message would make the kernel refuse it, counted as dropped).
        let (fd, local) = media_socket();
        let socket = UdpSocket::from(fd);
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let datagrams: Vec<crate::sfu::Datagram> = (0..70u8)
            .map(|i| crate::sfu::Datagram {
                destination: peer.local_addr().unwrap(),
                source: (i % 2 == 0).then_some(Ipv4Addr::LOCALHOST.into()),
                contents: vec![i; 3],
            })
            .collect();
        assert_eq!(send_batch(&socket, &datagrams), 0);
        let mut buf = [0u8; 16];
        for i in 0..70u8 {
            let (n, from) = peer.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i; 3]);
            assert_eq!(from, SocketAddr::from(([127, 0, 0, 1], local.port())));
        }
    }

    #[test]
    fn host_addresses_leave_out_loopback_and_link_local() {
        let ips = host_ipv4_addresses();
        assert!(
            ips.iter()
                .all(|ip| !ip.is_loopback() && !ip.is_link_local())
        );
        let unique: std::collections::HashSet<_> = ips.iter().collect();
        assert_eq!(unique.len(), ips.len());
    }
}
