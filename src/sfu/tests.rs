//! Two str0m clients and the SFU on a virtual network and clock: real ICE, DTLS and SRTP,
//! no sockets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::media::{Direction as MediaDirection, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use super::*;

struct Client {
    addr: SocketAddr,
    rtc: Rtc,
    out: Vec<Datagram>,
    received: Vec<Vec<u8>>,
    connected: bool,
    timeout: Instant,
}

impl Client {
    fn new(addr: &str, now: Instant) -> Client {
        let addr: SocketAddr = addr.parse().unwrap();
        let mut rtc = Rtc::new(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Client {
            addr,
            rtc,
            out: Vec::new(),
            received: Vec::new(),
            connected: false,
            timeout: now,
        }
    }

    /// Offers one m-line of `kind` in `direction` and applies the SFU's answer.
    fn negotiate(
        &mut self,
        sfu: &mut Sfu,
        participant: u64,
        kind: MediaKind,
        direction: MediaDirection,
        now: Instant,
    ) -> Mid {
        let mut change = self.rtc.sdp_api();
        let mid = change.add_media(kind, direction, None, None, None);
        let (offer, pending) = change.apply().unwrap();
        let sfu_direction = if direction == MediaDirection::SendOnly {
            Direction::Publish
        } else {
            Direction::Subscribe
        };
        let answer = sfu
            .accept_offer(participant, sfu_direction, &offer.to_sdp_string(), now)
            .unwrap();
        self.rtc
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        self.drain();
        mid
    }

    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(t) => {
                    self.timeout = t;
                    break;
                }
                Output::Transmit(t) => self.out.push(Datagram {
                    destination: t.destination,
                    contents: t.contents.to_vec(),
                }),
                Output::Event(Event::MediaData(data)) => self.received.push(data.data.to_vec()),
                Output::Event(Event::IceConnectionStateChange(IceConnectionState::Connected))
                | Output::Event(Event::Connected) => self.connected = true,
                Output::Event(_) => {}
            }
        }
    }

    fn receive(&mut self, now: Instant, from: SocketAddr, contents: &[u8]) {
        let receive = Receive::new(Protocol::Udp, from, self.addr, contents).unwrap();
        self.rtc.handle_input(Input::Receive(now, receive)).unwrap();
        self.drain();
    }

    fn tick(&mut self, now: Instant) {
        if now >= self.timeout {
            self.rtc.handle_input(Input::Timeout(now)).unwrap();
            self.drain();
        }
    }
}

const SFU_ADDR: &str = "10.0.0.1:50000";

/// Moves every pending datagram to its destination once.
fn deliver(sfu: &mut Sfu, clients: &mut [&mut Client], now: Instant) {
    let sfu_addr: SocketAddr = SFU_ADDR.parse().unwrap();
    for client in clients.iter_mut() {
        let from = client.addr;
        for d in std::mem::take(&mut client.out) {
            assert_eq!(d.destination, sfu_addr, "clients talk to the SFU only");
            sfu.handle_datagram(now, from, &d.contents);
        }
    }
    for d in sfu.take_datagrams() {
        if let Some(client) = clients.iter_mut().find(|c| c.addr == d.destination) {
            client.receive(now, sfu_addr, &d.contents);
        }
    }
}

fn step(sfu: &mut Sfu, clients: &mut [&mut Client], now: Instant) {
    for c in clients.iter_mut() {
        c.tick(now);
    }
    sfu.handle_timeout(now);
    for _ in 0..4 {
        deliver(sfu, clients, now);
    }
}

#[test]
fn audio_from_a_publisher_reaches_a_subscriber_through_the_sfu() {
    let start = Instant::now();
    let mut now = start;
    let mut sfu = Sfu::new(SFU_ADDR.parse().unwrap());
    let mut alice = Client::new("10.0.0.2:4000", now);
    let mut bob = Client::new("10.0.0.3:4000", now);
    // Bob's subscribe connection may come before any track exists (wire contract A.8).
    bob.negotiate(&mut sfu, 2, MediaKind::Audio, MediaDirection::RecvOnly, now);
    let mid = alice.negotiate(&mut sfu, 1, MediaKind::Audio, MediaDirection::SendOnly, now);
    assert_eq!(sfu.peer_count(), 2);

    // ICE and DTLS on the virtual network.
    while !(alice.connected && bob.connected) {
        now += Duration::from_millis(10);
        assert!(now - start < Duration::from_secs(10), "no connection");
        step(&mut sfu, &mut [&mut alice, &mut bob], now);
    }

    // 50 Opus frames at 20 ms, as a microphone would.
    let pt = {
        let writer = alice.rtc.writer(mid).unwrap();
        writer
            .payload_params()
            .find(|p| p.spec().codec == str0m::format::Codec::Opus)
            .unwrap()
            .pt()
    };
    for n in 0..50u32 {
        now += Duration::from_millis(20);
        let frame = vec![n as u8; 80];
        alice
            .rtc
            .writer(mid)
            .unwrap()
            .write(pt, now, MediaTime::from_90khz(n as u64 * 960), frame)
            .unwrap();
        alice.drain();
        step(&mut sfu, &mut [&mut alice, &mut bob], now);
    }
    for _ in 0..20 {
        now += Duration::from_millis(20);
        step(&mut sfu, &mut [&mut alice, &mut bob], now);
    }
    assert!(
        bob.received.len() >= 45,
        "bob got {} of 50 frames",
        bob.received.len()
    );
    assert!(bob.received.iter().all(|f| f.len() == 80));
    assert!(
        alice.received.is_empty(),
        "nothing is echoed to the publisher"
    );
}

#[test]
fn strangers_and_garbage_are_dropped_and_bad_offers_refused() {
    let now = Instant::now();
    let mut sfu = Sfu::new(SFU_ADDR.parse().unwrap());
    sfu.handle_datagram(now, "10.9.9.9:1".parse().unwrap(), b"garbage");
    sfu.handle_datagram(now, "10.9.9.9:1".parse().unwrap(), &[0u8; 1500]);
    assert!(sfu.take_datagrams().is_empty());
    assert!(matches!(
        sfu.accept_offer(1, Direction::Publish, "not sdp", now),
        Err(SfuError::BadSdp(_))
    ));
    let many = format!("v=0\n{}", "m=audio 9 UDP/TLS/RTP/SAVPF 111\n".repeat(200));
    assert!(matches!(
        sfu.accept_offer(1, Direction::Publish, &many, now),
        Err(SfuError::TooManyMedia)
    ));
    assert_eq!(
        sfu.peer_count(),
        0,
        "a refused offer leaves no connection behind"
    );
}
