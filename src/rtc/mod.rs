//! Voice and video pieces that need no runtime (sans-IO): join tickets ([`ticket`]), ephemeral
//! TURN credentials ([`turn`]), voice rooms and their signaling frames ([`room`]), and which
//! addresses a participant's media candidates carry ([`media_ips`]). The SFU itself is
//! `crate::sfu`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

pub mod room;
pub mod ticket;
pub mod turn;

/// The IPs a participant's media candidates carry (each with the port of the shard that owns
/// its room):
/// - `OPENCHAT_RTC_PUBLIC_IP` when it is set (behind NAT, the address clients can reach);
/// - else the address its signaling connection reached, since a client that reached the server
///   there can send UDP there too (the media sockets are IPv4: an IPv4-mapped address becomes
///   its IPv4 form, any other IPv6 address loopback);
/// - and when that is a loopback address, also the host's interface addresses (`host`):
///   Chromium, and so the desktop client, never pairs with a loopback candidate, so a client on
///   the server's own machine reaches the media at an interface address.
pub fn media_ips(
    public_ip: Option<IpAddr>,
    local: Option<SocketAddr>,
    host: &[Ipv4Addr],
) -> Vec<IpAddr> {
    if let Some(ip) = public_ip {
        return vec![ip];
    }
    let reached = match local.map(|a| a.ip()) {
        Some(IpAddr::V4(ip)) if !ip.is_unspecified() => ip,
        Some(IpAddr::V6(ip)) => ip.to_ipv4_mapped().unwrap_or(Ipv4Addr::LOCALHOST),
        _ => Ipv4Addr::LOCALHOST,
    };
    let mut ips = vec![IpAddr::V4(reached)];
    if reached.is_loopback() {
        ips.extend(
            host.iter()
                .filter(|ip| **ip != reached)
                .map(|ip| IpAddr::V4(*ip)),
        );
    }
    ips.truncate(crate::sfu::MAX_LOCAL_CANDIDATES);
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(10, 1, 0, 7)];

    fn at(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 8080))
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|ip| ip.parse().unwrap()).collect()
    }

    #[test]
    fn the_public_ip_is_the_only_candidate_when_set() {
        let public = Some("203.0.113.9".parse().unwrap());
        assert_eq!(
            media_ips(public, at("127.0.0.1"), &HOST),
            ips(&["203.0.113.9"])
        );
        assert_eq!(
            media_ips(public, at("192.0.2.2"), &HOST),
            ips(&["203.0.113.9"])
        );
    }

    #[test]
    fn a_client_gets_the_address_it_reached() {
        assert_eq!(media_ips(None, at("192.0.2.2"), &HOST), ips(&["192.0.2.2"]));
        assert_eq!(
            media_ips(None, at("::ffff:10.1.0.7"), &HOST),
            ips(&["10.1.0.7"])
        );
    }

    #[test]
    fn a_loopback_client_also_gets_the_interface_addresses() {
        assert_eq!(
            media_ips(None, at("127.0.0.1"), &HOST),
            ips(&["127.0.0.1", "192.0.2.2", "10.1.0.7"])
        );
        // IPv6 loopback: the media sockets are IPv4.
        assert_eq!(
            media_ips(None, at("::1"), &HOST),
            ips(&["127.0.0.1", "192.0.2.2", "10.1.0.7"])
        );
        assert_eq!(media_ips(None, None, &[]), ips(&["127.0.0.1"]));
        let many: Vec<Ipv4Addr> = (1..=9).map(|n| Ipv4Addr::new(10, 0, 0, n)).collect();
        assert_eq!(
            media_ips(None, at("127.0.0.1"), &many).len(),
            crate::sfu::MAX_LOCAL_CANDIDATES
        );
    }
}
