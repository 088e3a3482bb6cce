//! Attacks on what the server relays from one client to others, against the real server: the
//! frames it passes on (typing, media state) must carry the identity the server knows, not the
//! one the sender wrote, and a sender in a loop must not make the server fan out more than a
//! per-socket rate; media must reach a client on the address it actually used. Relaying keeps
//! nothing in storage, so these run on the embedded default only.

mod support;

use std::time::{Duration, Instant};

use simd_json::json;
use support::api::Client;
use support::call::{Caller, ticket_for, voice_channel};
use support::json::{JsonPath, encode};
use support::server::{Engine, TestServer, start_community};
use support::ws::{QUIET, Ws, headers_query};

const TICKET_SECRET: &str = "0123456789abcdef0123456789abcdef-relay";

/// A community server with the default server `home` and the given extra variables.
fn server_with(extra: &[(&str, &str)]) -> TestServer {
    let mut vars = vec![
        ("OPENCHAT_DEFAULT_SERVER_ID", "home"),
        ("OPENCHAT_RTC_TICKET_SECRET", TICKET_SECRET),
    ];
    vars.extend_from_slice(extra);
    start_community(Engine::Sqlite, &vars)
}

/// The sum over shards of a per-shard counter in `/metrics`.
fn metric_sum(server: &TestServer, name: &str) -> u64 {
    Client::anonymous(server.addr)
        .get("/metrics")
        .text()
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A realtime socket of `client` on `home`, subscribed to `channel` (its snapshot taken).
fn subscribed(server: &TestServer, client: &Client, channel: &str) -> Ws {
    let mut ws = Ws::connect(
        server.addr,
        &headers_query("home", client.uid(), client.device()),
    )
    .live();
    ws.subscribe(channel);
    ws.expect("chat.presence.snapshot");
    ws
}

/// Takes every frame of `kind` that arrives until none has come for [`QUIET`]: how many, and
/// when the last one was taken.
fn count_until_quiet(ws: &mut Ws, kind: &str) -> (usize, Instant) {
    let mut count = 0;
    let mut last = Instant::now();
    while ws.wait_for(kind, QUIET, |_| true).is_some() {
        count += 1;
        last = Instant::now();
    }
    (count, last)
}

/// Most updates a token bucket of `per_second` (burst as large) lets through between `from`
/// and `to`.
fn bucket_bound(per_second: u32, from: Instant, to: Instant) -> usize {
    let refilled = (to - from).as_secs_f64() * f64::from(per_second);
    per_second as usize + refilled.ceil() as usize + 1
}

#[test]
fn a_forged_identity_in_rtc_media_state_is_not_relayed() {
    let server = server_with(&[]);
    let alice = Client::user(server.addr);
    let bob = Client::user(server.addr);
    let voice = voice_channel(&alice, "home");
    let mut a = Caller::join(server.addr, &ticket_for(&alice, &voice));
    let mut b = Caller::join(server.addr, &ticket_for(&bob, &voice));
    a.ws.expect("rtc.participant.joined");

    // Alice writes bob's participant id, uid and device, and fields of her own making.
    a.ws.send(
        "rtc.media.state",
        json!({
            "participant_id": b.participant_id.clone(),
            "user_uid": bob.uid(),
            "device_id": bob.device(),
            "member": {"user_uid": bob.uid(), "device_id": bob.device()},
            "client_id": "c0_1",
            "role": "owner",
            "stream_id": "alice-stream",
            "track_id": "alice-mic",
            "stream_kind": "audio_microphone",
            "action": "start",
            "mic_muted": false,
            "deafened": false,
        }),
    );
    let state = b.ws.expect("rtc.media.state");
    assert_eq!(
        state.str_at("payload.participant_id"),
        a.participant_id,
        "{}",
        encode(&state)
    );
    assert_eq!(state.str_at("payload.user_uid"), alice.uid());
    assert_eq!(state.str_at("payload.device_id"), alice.device());
    assert_eq!(
        state.keys_at("payload"),
        support::json::key_set(&[
            "participant_id",
            "user_uid",
            "device_id",
            "stream_id",
            "track_id",
            "stream_kind",
            "action",
            "mic_muted",
            "deafened",
        ]),
        "only the contract's fields: {}",
        encode(&state)
    );
    assert_eq!(state.str_at("payload.track_id"), "alice-mic");
    // Alice does not hear her own state back.
    a.ws.assert_none("rtc.media.state", QUIET);

    // Values outside the contract are not relayed, and the call goes on (no rtc.error).
    for bad in [
        json!({"action": "explode"}),
        json!({"stream_kind": "video_hologram", "action": "start"}),
        json!({"mic_muted": "yes"}),
        json!({"track_id": "x".repeat(10_000)}),
        json!({"stream_id": "a b"}),
        json!("stop"),
    ] {
        a.ws.send("rtc.media.state", bad);
    }
    b.ws.assert_none("rtc.media.state", QUIET);
    a.ws.assert_none("rtc.error", Duration::from_millis(50));
    a.ws.send("rtc.media.state", json!({"mic_muted": true}));
    let muted = b.ws.expect("rtc.media.state");
    assert!(muted.bool_at("payload.mic_muted"));
    assert_eq!(muted.str_at("payload.user_uid"), alice.uid());
}

#[test]
fn a_forged_member_in_a_typing_update_is_not_relayed() {
    let server = server_with(&[]);
    let alice = Client::user(server.addr);
    let bob = Client::user(server.addr);
    let channel = alice.first_text_channel("home");
    let mut a = subscribed(&server, &alice, &channel);
    let mut b = subscribed(&server, &bob, &channel);
    a.expect("chat.presence.joined");

    a.send(
        "chat.typing.update",
        json!({
            "channel_id": channel.clone(),
            "is_typing": true,
            "member": {"client_id": "c9_9", "user_uid": bob.uid(), "device_id": bob.device()},
            "user_uid": bob.uid(),
            "device_id": bob.device(),
            "client_id": "c9_9",
        }),
    );
    let typing = b.expect("chat.typing.updated");
    assert_eq!(typing.str_at("payload.member.user_uid"), alice.uid());
    assert_eq!(typing.str_at("payload.member.device_id"), alice.device());
    assert_ne!(typing.str_at("payload.member.client_id"), "c9_9");
    assert_eq!(
        typing.keys_at("payload"),
        support::json::key_set(&["channel_id", "member", "is_typing"])
    );
    assert_eq!(
        typing.keys_at("payload.member"),
        support::json::key_set(&["client_id", "user_uid", "device_id"])
    );
}

#[test]
fn a_burst_of_typing_frames_reaches_the_others_as_at_most_the_rate() {
    let server = server_with(&[]);
    let alice = Client::user(server.addr);
    let bob = Client::user(server.addr);
    let channel = alice.first_text_channel("home");
    let mut a = subscribed(&server, &alice, &channel);
    let mut b = subscribed(&server, &bob, &channel);
    a.expect("chat.presence.joined");

    // 1,000 changes (start, stop, start, …): each one is news, so each would be relayed.
    let started = Instant::now();
    for i in 0..1000 {
        a.send(
            "chat.typing.update",
            json!({"channel_id": channel.clone(), "is_typing": i % 2 == 0}),
        );
    }
    let (relayed, last) = count_until_quiet(&mut b, "chat.typing.updated");
    let limit = openchatd::realtime::TYPING_UPDATES_PER_SECOND;
    let bound = bucket_bound(limit, started, last);
    assert!(relayed >= 1, "typing is still relayed");
    assert!(
        relayed <= bound,
        "{relayed} typing updates relayed, at most {bound} allowed"
    );
    assert!(!b.is_closed(), "the receiver was not flooded off");
    assert!(metric_sum(&server, "openchat_relay_updates_dropped_total") > 0);

    // Once the flood is over, the sender's budget comes back.
    std::thread::sleep(Duration::from_millis(1100));
    a.send(
        "chat.typing.update",
        json!({"channel_id": channel.clone(), "is_typing": relayed % 2 == 0}),
    );
    let again = b.expect("chat.typing.updated");
    assert_eq!(again.str_at("payload.member.user_uid"), alice.uid());
}

#[test]
fn a_burst_of_media_state_frames_reaches_the_others_as_at_most_the_rate() {
    let server = server_with(&[]);
    let alice = Client::user(server.addr);
    let bob = Client::user(server.addr);
    let voice = voice_channel(&alice, "home");
    let mut a = Caller::join(server.addr, &ticket_for(&alice, &voice));
    let mut b = Caller::join(server.addr, &ticket_for(&bob, &voice));
    a.ws.expect("rtc.participant.joined");

    let started = Instant::now();
    for i in 0..1000 {
        a.ws.send("rtc.media.state", json!({"mic_muted": i % 2 == 0}));
    }
    let (relayed, last) = count_until_quiet(&mut b.ws, "rtc.media.state");
    let limit = openchatd::rtc::room::MEDIA_STATE_UPDATES_PER_SECOND;
    let bound = bucket_bound(limit, started, last);
    assert!(relayed >= 1, "media state is still relayed");
    assert!(
        relayed <= bound,
        "{relayed} media-state updates relayed, at most {bound} allowed"
    );
    // Dropped quietly: the flooder's call is not put in an error state.
    a.ws.assert_none("rtc.error", Duration::from_millis(50));
    assert!(!a.ws.is_closed() && !b.ws.is_closed());
    assert!(metric_sum(&server, "openchat_relay_updates_dropped_total") > 0);
}

/// One publish connection of a voice participant whose UDP socket is bound to `ip`: what the
/// server must answer from the address the peer sent to, whatever its own route back says.
struct Publisher {
    ws: Ws,
    peer: openchatd::sfu::peer::Peer,
    socket: std::net::UdpSocket,
}

impl Publisher {
    fn join(server: &TestServer, ticket: &str, ip: std::net::IpAddr) -> Publisher {
        let mut ws = Ws::connect_to(server.addr, "/v1/rtc/signaling");
        ws.send_text(&encode(
            &json!({"type": "rtc.join", "request_id": "j", "payload": {"ticket": ticket}}),
        ));
        ws.expect("rtc.joined");
        let socket = std::net::UdpSocket::bind((ip, 0)).expect("bind the peer's socket");
        socket.set_nonblocking(true).unwrap();
        let addr = socket.local_addr().unwrap();
        Publisher {
            ws,
            peer: openchatd::sfu::peer::Peer::new(addr, Instant::now()),
            socket,
        }
    }

    /// Offers one audio line and applies the answer and the server's candidate, which comes
    /// back.
    fn negotiate(&mut self) -> std::net::SocketAddr {
        use openchatd::sfu::peer::Line;
        let (sdp, _) = self
            .peer
            .offer(&[Line::send(
                str0m::media::MediaKind::Audio,
                "pub-stream",
                "pub-mic",
            )])
            .expect("an offer");
        self.ws.send(
            "rtc.offer.publish",
            json!({"type": "offer", "sdp": sdp, "direction": "publish"}),
        );
        let answer = self.ws.expect("rtc.answer.publish");
        self.peer
            .accept_answer(answer.str_at("payload.sdp"))
            .expect("the answer applies");
        let candidate = self.ws.expect("rtc.ice.candidate");
        let parsed = str0m::Candidate::from_sdp_string(
            candidate
                .str_at("payload.candidate")
                .trim_start_matches("a="),
        )
        .expect("the server's candidate parses");
        let server_addr = parsed.addr();
        self.peer.rtc.add_remote_candidate(parsed);
        server_addr
    }

    /// Moves datagrams until the connection is up or `within` has passed; whether it came up,
    /// and the addresses the server's datagrams came from.
    fn connect(&mut self, within: Duration) -> (bool, Vec<std::net::SocketAddr>) {
        let end = Instant::now() + within;
        let mut sources = Vec::new();
        let mut buf = [0u8; 2048];
        while !self.peer.connected && Instant::now() < end {
            while let Ok((n, from)) = self.socket.recv_from(&mut buf) {
                if !sources.contains(&from) {
                    sources.push(from);
                }
                self.peer.handle_datagram(Instant::now(), from, &buf[..n]);
            }
            self.peer.handle_timeout(Instant::now());
            for d in self.peer.take_datagrams() {
                let _ = self.socket.send_to(&d.contents, d.destination);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        (self.peer.connected, sources)
    }
}

/// A participant whose socket is on `peer_ip` connects to a server that advertises
/// `public_ip` (an address of this host the peer can reach, but not the one the kernel would
/// answer it from).
fn connects_through(public_ip: &str, peer_ip: std::net::IpAddr) {
    let server = server_with(&[("OPENCHAT_RTC_PUBLIC_IP", public_ip)]);
    let alice = Client::user(server.addr);
    let voice = voice_channel(&alice, "home");
    let mut a = Publisher::join(&server, &ticket_for(&alice, &voice), peer_ip);
    let candidate = a.negotiate();
    assert_eq!(
        candidate.ip().to_string(),
        public_ip,
        "the advertised address"
    );
    let (connected, sources) = a.connect(Duration::from_secs(10));
    assert!(
        connected,
        "the peer on {peer_ip} never connected to {candidate}; the server answered from {sources:?}"
    );
    assert!(
        sources.iter().all(|s| *s == candidate),
        "every datagram came from the candidate the peer used ({candidate}): {sources:?}"
    );
}

#[test]
fn a_peer_on_another_loopback_address_than_the_advertised_one_connects() {
    // 127.0.0.2 is this host's (all of 127/8 is), but the kernel answers 127.0.0.1 from
    // 127.0.0.1 unless told otherwise.
    connects_through("127.0.0.2", "127.0.0.1".parse().unwrap());
}

#[test]
fn a_peer_on_the_hosts_interface_address_connects_to_a_loopback_candidate() {
    let Some(host) = openchatd::runtime::media::host_ipv4_addresses()
        .first()
        .copied()
    else {
        eprintln!("no non-loopback interface on this host: the loopback variant covers it");
        return;
    };
    connects_through("127.0.0.1", std::net::IpAddr::V4(host));
}
