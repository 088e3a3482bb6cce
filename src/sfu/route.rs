//! Routing, the SFU's endpoint: which connection a datagram from the shard's one UDP socket
//! belongs to. A datagram from a known client address goes to its connection; one from an
//! address not known yet must be a STUN binding request naming a connection's ICE ufrag, and
//! its address is then learned (ICE-lite: the client checks from each of its candidates, and
//! a NAT may rebind). The local address each datagram was sent to is kept per client address,
//! so that answers go out from the candidate the client used.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use str0m::Input;
use str0m::net::{Protocol, Receive};

use super::conn::Conn;
use super::{Direction, ParticipantId, Sfu};

/// Local candidates a connection advertises at most (the configured public address, or the
/// address the client reached plus the host's interface addresses for a loopback client).
pub const MAX_LOCAL_CANDIDATES: usize = 4;
/// Client addresses routed to one connection at most.
pub const MAX_ADDRESSES_PER_CONNECTION: usize = 8;

impl Sfu {
    /// Stops routing to a connection that is gone.
    pub(super) fn forget_conn(&mut self, conn: &Conn) {
        self.by_ufrag.remove(&conn.ufrag);
        for addr in &conn.addrs {
            self.by_addr.remove(addr);
        }
    }

    /// Which connection a datagram from `source` belongs to: a known address, or a STUN binding
    /// request naming a connection's ufrag.
    fn route(&self, source: SocketAddr, contents: &[u8]) -> Option<(ParticipantId, Direction)> {
        if let Some(found) = self.by_addr.get(&source) {
            return Some(*found);
        }
        let stun = str0m::ice::StunMessage::parse(contents).ok()?;
        if !stun.is_binding_request() {
            return None;
        }
        let (local, _remote) = stun.split_username()?;
        self.by_ufrag.get(local).copied()
    }

    /// A datagram from the network, when the local address it was sent to is not known (see
    /// [`Sfu::handle_datagram_to`]).
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) {
        self.handle_datagram_to(now, source, None, contents);
    }

    /// A datagram from the network, from `source` to `destination` (the local address it was
    /// sent to, as the kernel says: `IP_PKTINFO`). str0m is told the candidate the client
    /// used, and the answers go out from that address. Datagrams no connection accepts are
    /// dropped.
    pub fn handle_datagram_to(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: Option<SocketAddr>,
        contents: &[u8],
    ) {
        let Some((participant, direction)) = self.route(source, contents) else {
            self.counters.dropped += 1;
            return;
        };
        let Some(conn) = self
            .members
            .get_mut(&participant)
            .and_then(|m| m.conn(direction))
        else {
            return;
        };
        let candidate = conn.candidate_for(source, destination);
        let Ok(receive) = Receive::new(Protocol::Udp, source, candidate, contents) else {
            self.counters.dropped += 1;
            return;
        };
        let input = Input::Receive(now, receive);
        if !conn.rtc.accepts(&input) {
            self.counters.dropped += 1;
            return;
        }
        self.counters.received += 1;
        if conn.rtc.handle_input(input).is_err() {
            conn.rtc.disconnect();
        }
        if let Some(local) = destination {
            conn.note_arrival(source, local.ip());
        }
        if !conn.addrs.contains(&source) {
            // A STUN check naming this connection from a new address (another candidate of
            // the client, or a NAT rebinding): route that address here too.
            if conn.addrs.len() >= MAX_ADDRESSES_PER_CONNECTION {
                let oldest = conn.addrs.remove(0);
                self.by_addr.remove(&oldest);
            }
            conn.addrs.push(source);
            self.by_addr.insert(source, (participant, direction));
        }
        self.drain(participant, direction, now);
    }
}

impl Conn {
    /// Which of its candidates a datagram from `source` to the local address `destination` was
    /// meant for: that address when it is one of them (the kernel said where the datagram
    /// arrived). Otherwise (not known, or an address behind a NAT that advertises another)
    /// the candidate of the same kind as the sender (loopback or not), else the first.
    fn candidate_for(&self, source: SocketAddr, destination: Option<SocketAddr>) -> SocketAddr {
        if let Some(local) = destination
            && self.candidates.contains(&local)
        {
            return local;
        }
        let loopback = source.ip().is_loopback();
        self.candidates
            .iter()
            .find(|c| c.ip().is_loopback() == loopback)
            .unwrap_or(&self.candidates[0])
            .to_owned()
    }

    /// `source` sent to the local address `local`.
    fn note_arrival(&mut self, source: SocketAddr, local: IpAddr) {
        match self.arrived_at.iter_mut().find(|(s, _)| *s == source) {
            Some((_, seen)) => *seen = local,
            None => {
                if self.arrived_at.len() >= MAX_ADDRESSES_PER_CONNECTION {
                    self.arrived_at.remove(0);
                }
                self.arrived_at.push((source, local));
            }
        }
    }

    /// The local address to answer `destination` from, if it was heard.
    pub(super) fn source_for(&self, destination: SocketAddr) -> Option<IpAddr> {
        self.arrived_at
            .iter()
            .find(|(s, _)| *s == destination)
            .map(|(_, local)| *local)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use str0m::media::MediaKind;

    use crate::sfu::peer::{Line, Peer};
    use crate::sfu::testnet::{ALL, CAPS};
    use crate::sfu::{Direction, Sfu};

    /// A client on the host's interface address that pairs with the loopback candidate (or any
    /// candidate other than the one the kernel's route back would pick): str0m is told the
    /// candidate the datagram was really sent to, and every answer names that address as its
    /// source, so the client sees it come from where it sent.
    #[test]
    fn answers_go_out_from_the_address_the_client_sent_to() {
        let mut sfu = Sfu::new(50000);
        let loopback: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let interface: SocketAddr = "192.0.2.2:50000".parse().unwrap();
        sfu.add_participant(1, 1, CAPS, ALL, &[loopback.ip(), interface.ip()]);
        let mut now = Instant::now();
        let client: SocketAddr = "192.0.2.2:4000".parse().unwrap();
        let mut peer = Peer::new(client, now);
        let (offer, _) = peer
            .offer(&[Line::send(MediaKind::Audio, "s", "mic")])
            .unwrap();
        let answer = sfu
            .accept_offer(1, Direction::Publish, &offer, now)
            .unwrap();
        peer.accept_answer(&answer).unwrap();
        let mut answered_from = Vec::new();
        for _ in 0..400 {
            now += Duration::from_millis(10);
            peer.handle_timeout(now);
            for d in peer.take_datagrams() {
                // Only the loopback candidate is reachable from this client.
                if d.destination == loopback {
                    sfu.handle_datagram_to(now, client, Some(loopback), &d.contents);
                }
            }
            if sfu.next_timeout().is_some_and(|t| t <= now) {
                sfu.handle_timeout(now);
            }
            for d in sfu.take_datagrams() {
                assert_eq!(d.destination, client);
                if !answered_from.contains(&d.source) {
                    answered_from.push(d.source);
                }
                if let Some(ip) = d.source {
                    peer.handle_datagram(now, SocketAddr::new(ip, 50000), &d.contents);
                }
            }
            if peer.connected {
                break;
            }
        }
        assert!(
            peer.connected,
            "the client paired with the loopback candidate"
        );
        assert_eq!(answered_from, [Some(loopback.ip())], "{answered_from:?}");
        // Without the destination the SFU falls back to the candidate of the sender's kind, and
        // leaves the source to the kernel.
        let mut sfu = Sfu::new(50000);
        sfu.add_participant(1, 1, CAPS, ALL, &[loopback.ip(), interface.ip()]);
        let mut peer = Peer::new(client, now);
        let (offer, _) = peer
            .offer(&[Line::send(MediaKind::Audio, "s", "mic")])
            .unwrap();
        let answer = sfu
            .accept_offer(1, Direction::Publish, &offer, now)
            .unwrap();
        peer.accept_answer(&answer).unwrap();
        for _ in 0..20 {
            now += Duration::from_millis(10);
            peer.handle_timeout(now);
            for d in peer.take_datagrams() {
                sfu.handle_datagram(now, client, &d.contents);
            }
            sfu.handle_timeout(now);
            assert!(sfu.take_datagrams().iter().all(|d| d.source.is_none()));
        }
    }
}
