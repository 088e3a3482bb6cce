//! str0m client peers and the SFU on a virtual network and clock: real ICE, DTLS and SRTP, no
//! sockets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::media::{Direction as MediaDirection, MediaKind, Mid};

use super::peer::{Line, Peer, media_time};
use super::*;

const SFU_ADDR: &str = "10.0.0.1:50000";
const CAPS: Caps = Caps { audio: 4, video: 4 };
const ALL: Permit = Permit {
    audio: true,
    camera: true,
    screen: true,
};

struct Client {
    participant: ParticipantId,
    direction: Direction,
    peer: Peer,
}

/// The SFU, its clients and a virtual clock.
struct Net {
    sfu: Sfu,
    clients: Vec<Client>,
    now: Instant,
    start: Instant,
    /// Drops datagrams from clients to the SFU when it answers true (counting them).
    drop_upstream: Option<Box<dyn FnMut(usize) -> bool>>,
    upstream_count: usize,
    events: Vec<Event>,
    /// Clients offer H264 as their only video codec.
    h264: bool,
}

impl Net {
    fn new(sfu: Sfu) -> Net {
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

    fn join(&mut self, participant: ParticipantId, caps: Caps, permit: Permit) {
        self.sfu
            .add_participant(1, participant, caps, permit, &[sfu_addr().ip()]);
        self.collect();
    }

    /// Opens (or renegotiates) a connection with `lines` added; the new mids come back.
    fn negotiate(
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

    fn client(&mut self, participant: ParticipantId, direction: Direction) -> &mut Peer {
        &mut self
            .clients
            .iter_mut()
            .find(|c| c.participant == participant && c.direction == direction)
            .expect("a client")
            .peer
    }

    fn collect(&mut self) {
        self.events.extend(self.sfu.take_events());
    }

    /// Moves every pending datagram once.
    fn deliver(&mut self) {
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
    fn step(&mut self, ms: u64) {
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

    fn connect_all(&mut self) {
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

    fn announced(&self, to: ParticipantId) -> Vec<&TrackInfo> {
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
    fn publish(&mut self, publisher: ParticipantId, mid: Mid, burst: Burst) {
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

    fn received(&mut self, participant: ParticipantId) -> &Vec<super::peer::Received> {
        &self.client(participant, Direction::Subscribe).received
    }
}

/// Frames a publisher sends: `count` frames of `size` bytes, one every `interval` ms.
struct Burst {
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
    fn audio(count: u64, size: usize) -> Burst {
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
    fn video(count: u64, size: usize) -> Burst {
        Burst {
            kind: MediaKind::Video,
            count,
            size,
            interval: 33,
            rids: &[],
            audio_level: None,
        }
    }

    fn layers(self, rids: &'static [&'static str]) -> Burst {
        Burst { rids, ..self }
    }
}

fn sfu_addr() -> SocketAddr {
    SFU_ADDR.parse().unwrap()
}

fn sfu() -> Sfu {
    Sfu::new(sfu_addr().port())
}

#[test]
fn audio_reaches_a_subscriber_with_the_announced_ids_and_nothing_echoes() {
    let mut net = Net::new(sfu());
    net.join(1, CAPS, ALL);
    net.join(2, CAPS, ALL);
    // Bob's subscribe connection comes before any track exists (wire contract A.8).
    let slots = net
        .negotiate(
            2,
            Direction::Subscribe,
            &[
                Line::receive(MediaKind::Audio),
                Line::receive(MediaKind::Video),
            ],
        )
        .unwrap();
    let mic = net
        .negotiate(
            1,
            Direction::Publish,
            &[Line::send(MediaKind::Audio, "alice-stream", "alice-mic")],
        )
        .unwrap()[0];
    let announced = net.announced(2);
    assert_eq!(announced.len(), 1, "bob is told about alice's microphone");
    assert_eq!(announced[0].track_id, "alice-mic");
    assert_eq!(announced[0].stream_id, "alice-stream");
    assert_eq!(announced[0].stream_kind, StreamKind::Microphone);
    assert!(
        net.announced(1).is_empty(),
        "alice is not told about her own track"
    );

    // Bob re-offers (rtc.subscribe.refresh): the answer carries the announced ids.
    let (stream, track) = {
        let (offer, _) = net
            .client(2, Direction::Subscribe)
            .offer(&[Line::receive(MediaKind::Audio)])
            .unwrap();
        let answer = net
            .sfu
            .accept_offer(2, Direction::Subscribe, &offer, net.now)
            .unwrap();
        net.client(2, Direction::Subscribe)
            .accept_answer(&answer)
            .unwrap();
        net.client(2, Direction::Subscribe)
            .answered_msid(slots[0])
            .expect("an msid on the audio slot")
    };
    assert_eq!(
        (stream.as_str(), track.as_str()),
        ("alice-stream", "alice-mic")
    );

    net.connect_all();
    net.publish(1, mic, Burst::audio(50, 80));
    let got = net.received(2);
    assert!(got.len() >= 45, "bob got {} of 50 frames", got.len());
    assert!(got.iter().all(|f| f.mid == slots[0] && f.data.len() == 80));
    assert!(net.sfu.counters().forwarded >= 45);
    assert!(
        net.clients
            .iter()
            .filter(|c| c.participant == 1)
            .all(|c| c.peer.received.is_empty()),
        "nothing is echoed to the publisher"
    );
    // The audio level made alice speak, and silence ends it.
    assert!(net.events.contains(&Event::Speaking {
        room: 1,
        participant: 1,
        speaking: true
    }));
    for _ in 0..50 {
        net.step(20);
    }
    assert!(net.events.contains(&Event::Speaking {
        room: 1,
        participant: 1,
        speaking: false
    }));
}

/// Chromium sends REMB (the estimate that picks simulcast layers) only when transport-cc is
/// not negotiated; publish connections keep it for the publisher's own congestion control.
#[test]
fn subscribe_answers_leave_out_transport_cc_so_browsers_send_remb() {
    const TWCC_URI: &str = "transport-wide-cc";
    let mut net = Net::new(sfu());
    net.join(1, CAPS, ALL);
    net.negotiate(
        1,
        Direction::Subscribe,
        &[
            Line::receive(MediaKind::Audio),
            Line::receive(MediaKind::Video),
        ],
    )
    .unwrap();
    net.negotiate(
        1,
        Direction::Publish,
        &[Line::send(MediaKind::Video, "s", "cam")],
    )
    .unwrap();
    let subscribe = net.client(1, Direction::Subscribe).answer.clone();
    assert!(!subscribe.contains("transport-cc"), "{subscribe}");
    assert!(!subscribe.contains(TWCC_URI), "{subscribe}");
    assert!(subscribe.contains("goog-remb"), "{subscribe}");
    let publish = net.client(1, Direction::Publish).answer.clone();
    assert!(publish.contains("transport-cc"), "{publish}");
    assert!(publish.contains(TWCC_URI), "{publish}");
}

#[test]
fn renegotiation_adds_camera_and_screen_and_removal_withdraws() {
    let mut net = Net::new(sfu());
    net.join(1, CAPS, ALL);
    net.join(2, CAPS, ALL);
    net.negotiate(2, Direction::Subscribe, &[Line::receive(MediaKind::Audio)])
        .unwrap();
    net.negotiate(
        1,
        Direction::Publish,
        &[Line::send(MediaKind::Audio, "s", "mic")],
    )
    .unwrap();
    // The same publish connection renegotiates twice: camera, then screen share.
    let camera = net
        .negotiate(
            1,
            Direction::Publish,
            &[Line::send(MediaKind::Video, "s", "cam")],
        )
        .unwrap()[0];
    net.sfu.hint_stream_kind(1, "screen", StreamKind::Screen);
    net.negotiate(
        1,
        Direction::Publish,
        &[Line::send(MediaKind::Video, "s2", "screen")],
    )
    .unwrap();
    let kinds: Vec<(String, StreamKind)> = net
        .announced(2)
        .iter()
        .map(|t| (t.track_id.clone(), t.stream_kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("mic".to_owned(), StreamKind::Microphone),
            ("cam".to_owned(), StreamKind::Camera),
            ("screen".to_owned(), StreamKind::Screen)
        ]
    );
    // Bob adds two video slots: camera and screen both flow.
    let videos = net
        .negotiate(
            2,
            Direction::Subscribe,
            &[
                Line::receive(MediaKind::Video),
                Line::receive(MediaKind::Video),
            ],
        )
        .unwrap();
    net.connect_all();
    net.publish(1, camera, Burst::video(20, 1000));
    let got = net.received(2).clone();
    assert!(got.len() >= 18, "camera frames: {}", got.len());
    assert!(got.iter().all(|f| videos.contains(&f.mid)));

    // The camera stops (m-line inactive): it is withdrawn from bob.
    {
        let peer = net.client(1, Direction::Publish);
        let mut change = peer.rtc.sdp_api();
        change.set_direction(camera, MediaDirection::Inactive);
        let (offer, pending) = change.apply().unwrap();
        let answer = net
            .sfu
            .accept_offer(1, Direction::Publish, &offer.to_sdp_string(), net.now)
            .unwrap();
        net.client(1, Direction::Publish)
            .rtc
            .sdp_api()
            .accept_answer(
                pending,
                str0m::change::SdpAnswer::from_sdp_string(&answer).unwrap(),
            )
            .unwrap();
        net.collect();
    }
    let left: Vec<String> = net
        .announced(2)
        .iter()
        .map(|t| t.track_id.clone())
        .collect();
    assert_eq!(left, ["mic", "screen"]);
    assert!(net.events.iter().any(|e| matches!(e,
        Event::Withdraw { to: 2, track } if track.track_id == "cam")));
}

#[test]
fn h264_video_is_forwarded_from_the_first_keyframe() {
    let mut net = Net::new(sfu());
    net.h264 = true;
    net.join(1, CAPS, ALL);
    net.join(2, CAPS, ALL);
    let slot = net
        .negotiate(2, Direction::Subscribe, &[Line::receive(MediaKind::Video)])
        .unwrap()[0];
    let camera = net
        .negotiate(
            1,
            Direction::Publish,
            &[Line::send(MediaKind::Video, "s", "cam")],
        )
        .unwrap()[0];
    assert!(net.client(2, Direction::Subscribe).answer.contains("H264"));
    net.connect_all();
    // Annex B access units: an IDR slice every tenth frame, non-IDR slices otherwise. The
    // first frames are not IDR, so the subscriber waits for the keyframe it asked for.
    for n in 0..25u64 {
        net.now += Duration::from_millis(33);
        let now = net.now;
        let nal = if n % 10 == 5 { 0x65 } else { 0x41 };
        let mut frame = vec![0, 0, 0, 1, nal];
        frame.extend(std::iter::repeat_n(n as u8 | 0x10, 1500));
        net.client(1, Direction::Publish).write(
            camera,
            now,
            media_time(MediaKind::Video, n, 3000),
            &frame,
            None,
            None,
        );
        net.step(0);
    }
    for _ in 0..20 {
        net.step(20);
    }
    let got = net.received(2).clone();
    assert!(got.iter().all(|f| f.mid == slot));
    assert!(
        got.first().is_some_and(|f| f.keyframe),
        "the first frame is the IDR"
    );
    assert!(got.len() >= 18, "frames 5..25 arrive: {}", got.len());
    assert!(net.client(1, Direction::Publish).keyframe_requests >= 1);
}

#[test]
fn receive_caps_limit_what_a_subscriber_gets_and_a_leaver_frees_its_place() {
    let mut net = Net::new(sfu());
    let one_audio = Caps { audio: 1, video: 0 };
    net.join(3, one_audio, ALL);
    net.join(1, CAPS, ALL);
    net.join(2, CAPS, ALL);
    net.negotiate(
        1,
        Direction::Publish,
        &[Line::send(MediaKind::Audio, "a", "a-mic")],
    )
    .unwrap();
    net.negotiate(
        2,
        Direction::Publish,
        &[Line::send(MediaKind::Audio, "b", "b-mic")],
    )
    .unwrap();
    net.negotiate(
        2,
        Direction::Publish,
        &[Line::send(MediaKind::Video, "b", "b-cam")],
    )
    .unwrap();
    let ids = |net: &Net, p| -> Vec<String> {
        net.announced(p)
            .iter()
            .map(|t| t.track_id.clone())
            .collect()
    };
    assert_eq!(ids(&net, 3), ["a-mic"], "one audio track, no video");
    assert_eq!(net.sfu.receiving(3).len(), 1);
    assert_eq!(ids(&net, 1), ["b-mic", "b-cam"]);

    net.sfu.remove_participant(1);
    net.collect();
    assert_eq!(
        ids(&net, 3),
        ["b-mic"],
        "the freed place goes to the next track"
    );
    assert_eq!(ids(&net, 2), Vec::<String>::new());
    assert!(net.events.iter().any(|e| matches!(e,
        Event::Withdraw { to: 2, track } if track.track_id == "a-mic")));
    assert_eq!(net.sfu.participant_count(), 2);
    assert_eq!(net.sfu.connection_count(), 1);
}

#[test]
fn lost_packets_are_recovered_by_nack_and_keyframe_requests_reach_the_publisher() {
    let mut net = Net::new(sfu());
    net.join(1, CAPS, ALL);
    net.join(2, CAPS, ALL);
    let slot = net
        .negotiate(2, Direction::Subscribe, &[Line::receive(MediaKind::Video)])
        .unwrap()[0];
    let camera = net
        .negotiate(
            1,
            Direction::Publish,
            &[Line::send(MediaKind::Video, "s", "cam")],
        )
        .unwrap()[0];
    net.connect_all();
    // Interframes first: they are held back from the new subscriber, and the publisher is
    // asked for a keyframe.
    for n in 0..3 {
        net.now += Duration::from_millis(33);
        let now = net.now;
        net.client(1, Direction::Publish).write(
            camera,
            now,
            media_time(MediaKind::Video, n, 3000),
            &[1u8; 500],
            None,
            None,
        );
        net.step(0);
    }
    for _ in 0..5 {
        net.step(20);
    }
    assert!(net.received(2).is_empty());
    assert!(net.client(1, Direction::Publish).keyframe_requests >= 1);

    // One in twenty datagrams from clients is lost; frames span three packets each, so
    // without retransmission about one frame in seven would be broken.
    net.drop_upstream = Some(Box::new(|n| n % 20 == 0));
    net.publish(1, camera, Burst::video(40, 3000));
    net.drop_upstream = None;
    for _ in 0..20 {
        net.step(20);
    }
    let forwarded = net.sfu.counters().forwarded;
    assert!(
        forwarded >= 39,
        "the SFU's NACKs recover the lost packets: {forwarded} of 40 frames complete"
    );
    let got = net.received(2).len();
    assert!(got >= 36, "the subscriber got {got} of 40");

    // A subscriber's PLI goes to the publisher (once the throttle allows).
    let before = net.client(1, Direction::Publish).keyframe_requests;
    for _ in 0..30 {
        net.step(20);
    }
    net.client(2, Direction::Subscribe).request_keyframe(slot);
    for _ in 0..5 {
        net.step(20);
    }
    assert!(net.client(1, Direction::Publish).keyframe_requests > before);
}

#[test]
fn simulcast_layer_follows_the_subscriber_estimate_switching_on_a_keyframe() {
    let mut net = Net::new(sfu());
    net.join(1, CAPS, ALL);
    net.join(2, CAPS, ALL);
    net.negotiate(2, Direction::Subscribe, &[Line::receive(MediaKind::Video)])
        .unwrap();
    let mut line = Line::send(MediaKind::Video, "s", "cam");
    line.rids = vec!["h", "l"];
    let camera = net.negotiate(1, Direction::Publish, &[line]).unwrap()[0];
    net.connect_all();
    // h frames are 1200 bytes, l frames 600 (about 290 and 145 kbit/s at 30 fps).
    net.publish(1, camera, Burst::video(60, 1200).layers(&["h", "l"]));
    let sizes =
        |net: &mut Net| -> Vec<usize> { net.received(2).iter().map(|f| f.data.len()).collect() };
    let first = sizes(&mut net);
    assert!(first.len() >= 40, "frames: {}", first.len());
    assert!(
        first.iter().rev().take(20).all(|s| *s == 1200),
        "without an estimate the best layer is sent"
    );
    let seen = first.len();

    net.sfu.set_estimate(2, 200_000);
    net.publish(1, camera, Burst::video(60, 1200).layers(&["h", "l"]));
    let after: Vec<usize> = sizes(&mut net)[seen..].to_vec();
    assert!(after.iter().rev().take(20).all(|s| *s == 600), "{after:?}");
    // The switch happened at a keyframe: no l frame before the first l keyframe.
    let frames = &net.received(2)[seen..];
    let first_low = frames.iter().position(|f| f.data.len() == 600).unwrap();
    assert!(frames[first_low].keyframe);
}

#[test]
fn strangers_garbage_bad_offers_and_unpermitted_media_are_refused() {
    let mut net = Net::new(sfu());
    let now = net.now;
    net.sfu
        .handle_datagram(now, "10.9.9.9:1".parse().unwrap(), b"garbage");
    net.sfu
        .handle_datagram(now, "10.9.9.9:1".parse().unwrap(), &[0u8; 1500]);
    assert!(net.sfu.take_datagrams().is_empty());
    assert_eq!(net.sfu.counters().dropped, 2);
    let (offer, _) = Peer::new("10.0.0.9:9".parse().unwrap(), now)
        .offer(&[Line::receive(MediaKind::Audio)])
        .unwrap();
    assert_eq!(
        net.sfu.accept_offer(1, Direction::Subscribe, &offer, now),
        Err(SfuError::UnknownParticipant)
    );
    net.join(1, CAPS, ALL);
    assert!(matches!(
        net.sfu.accept_offer(1, Direction::Publish, "not sdp", now),
        Err(SfuError::BadSdp(_))
    ));
    let many = format!("v=0\n{}", "m=audio 9 UDP/TLS/RTP/SAVPF 111\n".repeat(200));
    assert_eq!(
        net.sfu.accept_offer(1, Direction::Publish, &many, now),
        Err(SfuError::TooManyMedia)
    );
    assert_eq!(
        net.sfu.connection_count(),
        0,
        "a refused offer leaves nothing behind"
    );

    // A listen-only participant may not publish audio.
    let listen_only = Permit {
        audio: false,
        camera: false,
        screen: false,
    };
    net.join(2, CAPS, listen_only);
    let err = net
        .negotiate(
            2,
            Direction::Publish,
            &[Line::send(MediaKind::Audio, "s", "m")],
        )
        .unwrap_err();
    assert_eq!(err.code(), "rtc_permission_denied");
    // It may still receive.
    net.negotiate(2, Direction::Subscribe, &[Line::receive(MediaKind::Audio)])
        .unwrap();
    // A STUN binding request naming no connection of ours is dropped.
    let dropped = net.sfu.counters().dropped;
    net.sfu.handle_datagram(
        now,
        "10.9.9.9:2".parse().unwrap(),
        &stun_binding("nobody:else"),
    );
    assert_eq!(net.sfu.counters().dropped, dropped + 1);
    assert!(net.sfu.take_datagrams().is_empty());
    assert_eq!(net.sfu.connection_count(), 1);
    net.sfu.remove_participant(2);
    net.sfu.remove_participant(1);
    assert_eq!(net.sfu.participant_count(), 0);
    assert!(
        net.sfu.next_timeout().is_none(),
        "an empty SFU has no timers"
    );
}

/// A STUN binding request with only a USERNAME attribute.
fn stun_binding(username: &str) -> Vec<u8> {
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
