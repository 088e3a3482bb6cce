//! The SFU's test network: str0m client peers and the SFU on a virtual network and clock, with
//! real ICE, DTLS and SRTP and no sockets. The tests of each part of the SFU (next to the code
//! they test) drive it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::media::{MediaKind, Mid};

use super::peer::{Line, Peer, Received, media_time};
use super::*;

const SFU_ADDR: &str = "10.0.0.1:50000";
pub(super) const CAPS: Caps = Caps { audio: 4, video: 4 };
pub(super) const ALL: Permit = Permit {
    audio: true,
    camera: true,
    screen: true,
};

pub(super) struct Client {
    pub(super) participant: ParticipantId,
    pub(super) direction: Direction,
    pub(super) peer: Peer,
}

/// The SFU, its clients and a virtual clock.
pub(super) struct Net {
    pub(super) sfu: Sfu,
    pub(super) clients: Vec<Client>,
    pub(super) now: Instant,
    pub(super) start: Instant,
    /// Drops datagrams from clients to the SFU when it answers true (counting them).
    pub(super) drop_upstream: Option<Box<dyn FnMut(usize) -> bool>>,
    pub(super) upstream_count: usize,
    pub(super) events: Vec<Event>,
    /// Clients offer H264 as their only video codec.
    pub(super) h264: bool,
}

impl Net {
    pub(super) fn new(sfu: Sfu) -> Net {
        let now = Instant::now();
        Net {
            sfu,
            clients: Vec::new(),
            now,
            start: now,
            drop_upstream: None,
            upstream_count: 0,
            events: Vec::new(),
            h264: false,
        }
    }

    pub(super) fn join(&mut self, participant: ParticipantId, caps: Caps, permit: Permit) {
        self.sfu
            .add_participant(1, participant, caps, permit, &[sfu_addr().ip()]);
        self.collect();
    }

    /// Opens (or renegotiates) a connection with `lines` added; the new mids come back.
    pub(super) fn negotiate(
        &mut self,
        participant: ParticipantId,
        direction: Direction,
        lines: &[Line],
    ) -> Result<Vec<Mid>, SfuError> {
        let index = match self
            .clients
            .iter()
            .position(|c| c.participant == participant && c.direction == direction)
        {
            Some(i) => i,
            None => {
                let port = 4000 + self.clients.len() as u16;
                let addr: SocketAddr = format!("10.0.0.{}:{port}", participant + 1)
                    .parse()
                    .unwrap();
                let config = if self.h264 {
                    str0m::Rtc::builder()
                        .clear_codecs()
                        .enable_opus(true, false)
                        .enable_h264(true)
                } else {
                    str0m::Rtc::builder()
                };
                self.clients.push(Client {
                    participant,
                    direction,
                    peer: Peer::with_config(addr, self.now, config),
                });
                self.clients.len() - 1
            }
        };
        let (offer, mids) = self.clients[index].peer.offer(lines).expect("an offer");
        let answer = self
            .sfu
            .accept_offer(participant, direction, &offer, self.now)?;
        self.clients[index].peer.accept_answer(&answer).unwrap();
        self.collect();
        Ok(mids)
    }

    pub(super) fn client(&mut self, participant: ParticipantId, direction: Direction) -> &mut Peer {
        &mut self
            .clients
            .iter_mut()
            .find(|c| c.participant == participant && c.direction == direction)
            .expect("a client")
            .peer
    }

    pub(super) fn collect(&mut self) {
        self.events.extend(self.sfu.take_events());
    }

    /// Moves every pending datagram once.
    pub(super) fn deliver(&mut self) {
        let sfu_addr: SocketAddr = SFU_ADDR.parse().unwrap();
        for i in 0..self.clients.len() {
            let from = self.clients[i].peer.addr;
            for d in self.clients[i].peer.take_datagrams() {
                assert_eq!(d.destination, sfu_addr, "clients talk to the SFU only");
                self.upstream_count += 1;
                let n = self.upstream_count;
                if let Some(drop) = self.drop_upstream.as_mut()
                    && drop(n)
                {
                    continue;
                }
                self.sfu.handle_datagram(self.now, from, &d.contents);
            }
        }
        for d in self.sfu.take_datagrams() {
            if let Some(c) = self
                .clients
                .iter_mut()
                .find(|c| c.peer.addr == d.destination)
            {
                c.peer.handle_datagram(self.now, sfu_addr, &d.contents);
            }
        }
        self.collect();
    }

    /// Advances the clock by `ms`, running every timeout and moving datagrams.
    pub(super) fn step(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        for c in &mut self.clients {
            c.peer.handle_timeout(self.now);
        }
        if self.sfu.next_timeout().is_some_and(|t| t <= self.now) {
            self.sfu.handle_timeout(self.now);
        }
        for _ in 0..4 {
            self.deliver();
        }
    }

    pub(super) fn connect_all(&mut self) {
        while !self.clients.iter().all(|c| c.peer.connected) {
            assert!(
                self.now - self.start < Duration::from_secs(10),
                "no connection"
            );
            self.step(10);
        }
        // DTLS finishes after ICE: let SRTP keys settle.
        for _ in 0..30 {
            self.step(10);
        }
    }

    pub(super) fn announced(&self, to: ParticipantId) -> Vec<&TrackInfo> {
        let mut now = Vec::new();
        for e in &self.events {
            match e {
                Event::Announce { to: t, track } if *t == to => now.push(track),
                Event::Withdraw { to: t, track } if *t == to => now.retain(|x| *x != track),
                _ => {}
            }
        }
        now
    }

    /// The frames of `burst` on the publisher's `mid`.
    pub(super) fn publish(&mut self, publisher: ParticipantId, mid: Mid, burst: Burst) {
        let Burst {
            kind,
            count,
            size,
            interval,
            rids,
            audio_level,
        } = burst;
        let per_frame = match kind {
            MediaKind::Audio => 960,
            MediaKind::Video => 3000,
        };
        for n in 0..count {
            self.now += Duration::from_millis(interval);
            let now = self.now;
            let peer = self.client(publisher, Direction::Publish);
            // Every tenth video frame is a keyframe (first byte even).
            let first = if n % 10 == 0 { 0u8 } else { 1u8 };
            for (i, rid) in rids
                .iter()
                .map(Some)
                .chain(rids.is_empty().then_some(None))
                .enumerate()
            {
                let mut frame = vec![first; size / (i + 1)];
                frame[1..].fill(n as u8);
                peer.write(
                    mid,
                    now,
                    media_time(kind, n, per_frame),
                    &frame,
                    rid.copied(),
                    audio_level,
                );
            }
            self.step(0);
        }
        for _ in 0..20 {
            self.step(20);
        }
    }

    pub(super) fn received(&mut self, participant: ParticipantId) -> &Vec<Received> {
        &self.client(participant, Direction::Subscribe).received
    }
}

/// Frames a publisher sends: `count` frames of `size` bytes, one every `interval` ms.
pub(super) struct Burst {
    kind: MediaKind,
    count: u64,
    size: usize,
    interval: u64,
    /// Simulcast layers (each gets the frame, smaller by the layer's position).
    rids: &'static [&'static str],
    audio_level: Option<i8>,
}

impl Burst {
    /// Opus frames every 20 ms, loud enough to count as speech.
    pub(super) fn audio(count: u64, size: usize) -> Burst {
        Burst {
            kind: MediaKind::Audio,
            count,
            size,
            interval: 20,
            rids: &[],
            audio_level: Some(-30),
        }
    }

    /// Video frames at 30 per second; every tenth is a keyframe.
    pub(super) fn video(count: u64, size: usize) -> Burst {
        Burst {
            kind: MediaKind::Video,
            count,
            size,
            interval: 33,
            rids: &[],
            audio_level: None,
        }
    }

    pub(super) fn layers(self, rids: &'static [&'static str]) -> Burst {
        Burst { rids, ..self }
    }
}

pub(super) fn sfu_addr() -> SocketAddr {
    SFU_ADDR.parse().unwrap()
}

pub(super) fn sfu() -> Sfu {
    Sfu::new(sfu_addr().port())
}

/// A STUN binding request with only a USERNAME attribute.
pub(super) fn stun_binding(username: &str) -> Vec<u8> {
    let mut attr = vec![0x00, 0x06];
    attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attr.extend_from_slice(username.as_bytes());
    while attr.len() % 4 != 0 {
        attr.push(0);
    }
    let mut msg = vec![0x00, 0x01];
    msg.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    msg.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    msg.extend_from_slice(&[7u8; 12]);
    msg.extend_from_slice(&attr);
    msg
}
