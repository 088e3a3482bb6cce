//! Voice, video and screen share end to end (wire contract A.8): independent str0m peers get
//! join tickets over HTTP, join over the signaling WebSocket, negotiate publish and subscribe
//! connections with the server's SFU and exchange real DTLS-SRTP media over UDP on loopback.
//! The server runs two shards; media goes to the shard that owns the channel. Voice keeps no
//! state in storage beyond used tickets, so these run on the embedded default only.

mod support;

use std::time::Duration;

use openchatd::sfu::peer::{Line, media_time};
use simd_json::json;
use str0m::media::MediaKind;
use support::api::Client;
use support::call::{Caller, expect_track, pump, pump_until, ticket_for, voice_channel};
use support::json::{JsonPath, encode, key_set};
use support::server::{Engine, TestServer, start_community};
use support::ws::QUIET;

const TICKET_SECRET: &str = "0123456789abcdef0123456789abcdef-voice";

/// The fields of `rtc.track.published` / `rtc.track.unpublished`.
const TRACK_KEYS: &[&str] = &[
    "participant_id",
    "user_uid",
    "device_id",
    "track_id",
    "stream_id",
    "media_kind",
    "stream_kind",
];

/// A server with the default server `home`, a first user and the seeded voice channel.
fn voice_server() -> (TestServer, Client, String) {
    let server = start_community(
        Engine::Sqlite,
        &[
            ("OPENCHAT_DEFAULT_SERVER_ID", "home"),
            ("OPENCHAT_RTC_TICKET_SECRET", TICKET_SECRET),
        ],
    );
    let alice = Client::user(server.addr);
    let voice = voice_channel(&alice, "home");
    (server, alice, voice)
}

#[test]
fn three_peers_talk_through_the_sfu_with_audio_video_and_screen_share() {
    let (server, alice, voice) = voice_server();
    let bob = Client::user(server.addr);
    let carol = Client::user(server.addr);

    let mut a = Caller::join(server.addr, &ticket_for(&alice, &voice));
    let mut b = Caller::join(server.addr, &ticket_for(&bob, &voice));
    let mut c = Caller::join(server.addr, &ticket_for(&carol, &voice));

    // Subscribers offer before any track exists: one audio and one video slot each.
    let b_slots = b.negotiate(
        "subscribe",
        &[
            Line::receive(MediaKind::Audio),
            Line::receive(MediaKind::Video),
        ],
    );
    let c_slots = c.negotiate(
        "subscribe",
        &[
            Line::receive(MediaKind::Audio),
            Line::receive(MediaKind::Video),
        ],
    );
    // Alice publishes her microphone.
    let mic = a.negotiate(
        "publish",
        &[Line::send(MediaKind::Audio, "alice-stream", "alice-mic")],
    )[0];

    // Everyone else hears of the track, with the ids they will see in their SDP, then a
    // refresh; alice does not hear of her own track.
    for (ws, _) in [(&mut b.ws, "bob"), (&mut c.ws, "carol")] {
        let published = expect_track(ws, "rtc.track.published", "alice-mic");
        assert_eq!(
            published.keys_at("payload"),
            key_set(TRACK_KEYS),
            "{}",
            encode(&published)
        );
        assert_eq!(published.str_at("payload.participant_id"), a.participant_id);
        assert_eq!(published.str_at("payload.user_uid"), alice.uid());
        assert_eq!(published.str_at("payload.device_id"), alice.device());
        assert_eq!(published.str_at("payload.stream_id"), "alice-stream");
        assert_eq!(published.str_at("payload.media_kind"), "audio");
        assert_eq!(published.str_at("payload.stream_kind"), "audio_microphone");
        ws.expect("rtc.subscribe.refresh");
    }
    a.ws.assert_none("rtc.track.published", QUIET);

    // Bob re-offers on refresh: his answer labels the audio slot with alice's ids.
    b.negotiate("subscribe", &[Line::receive(MediaKind::Audio)]);
    assert_eq!(
        b.subscribe.peer.answered_msid(b_slots[0]),
        Some(("alice-stream".to_owned(), "alice-mic".to_owned()))
    );

    // ICE and DTLS over real UDP.
    pump_until(
        &mut [&mut a, &mut b, &mut c],
        Duration::from_secs(10),
        "every peer connection to connect",
        |all| {
            all[0].publish.peer.connected && all.iter().skip(1).all(|p| p.subscribe.peer.connected)
        },
    );
    pump(&mut [&mut a, &mut b, &mut c], Duration::from_millis(300));

    // 50 Opus frames at 20 ms, as a microphone sends them.
    let start = std::time::Instant::now();
    for n in 0..50u64 {
        let frame = vec![(n % 250) as u8 + 1; 60];
        a.publish.peer.write(
            mic,
            std::time::Instant::now(),
            media_time(MediaKind::Audio, n, 960),
            &frame,
            None,
            Some(-20),
        );
        pump(&mut [&mut a, &mut b, &mut c], Duration::from_millis(20));
    }
    pump(&mut [&mut a, &mut b, &mut c], Duration::from_millis(300));
    for (who, p, slot) in [("bob", &b, b_slots[0]), ("carol", &c, c_slots[0])] {
        let heard: Vec<_> = p
            .subscribe
            .peer
            .received
            .iter()
            .filter(|f| f.mid == slot)
            .collect();
        assert!(
            heard.len() >= 45,
            "{who} heard {} of 50 frames in {:?}",
            heard.len(),
            start.elapsed()
        );
        assert!(heard.iter().all(|f| f.data.len() == 60));
    }
    assert!(a.subscribe.peer.received.is_empty(), "nothing echoes back");
    // The operator sees it in /metrics: three participants, frames forwarded.
    let metrics = Client::anonymous(server.addr).get("/metrics").text();
    let sum = |name: &str| metric_sum(&metrics, name);
    assert_eq!(sum("openchat_voice_participants"), 3, "{metrics}");
    assert!(sum("openchat_media_frames_forwarded_total") >= 90);
    assert_eq!(
        sum("openchat_media_connections"),
        3,
        "alice publishes, bob and carol receive"
    );
    // The audio level marked alice as speaking.
    let speaking = b.ws.expect_where("rtc.participant.speaking", |f| {
        f.bool_at("payload.speaking")
    });
    assert_eq!(speaking.str_at("payload.participant_id"), a.participant_id);

    // Camera and screen share: the client names the screen's kind in rtc.media.state, then
    // renegotiates the same publish connection twice.
    a.ws.send(
        "rtc.media.state",
        json!({"stream_id": "alice-screen", "track_id": "alice-screen-0", "stream_kind": "video_screen", "action": "start", "mic_muted": false, "deafened": false}),
    );
    let camera = a.negotiate(
        "publish",
        &[Line::send(MediaKind::Video, "alice-camera", "alice-cam-0")],
    )[0];
    let screen = a.negotiate(
        "publish",
        &[Line::send(
            MediaKind::Video,
            "alice-screen",
            "alice-screen-0",
        )],
    )[0];
    let cam_frame = expect_track(&mut b.ws, "rtc.track.published", "alice-cam-0");
    assert_eq!(cam_frame.str_at("payload.stream_kind"), "video_camera");
    assert_eq!(cam_frame.str_at("payload.media_kind"), "video");
    let screen_frame = expect_track(&mut b.ws, "rtc.track.published", "alice-screen-0");
    assert_eq!(screen_frame.str_at("payload.stream_kind"), "video_screen");
    // The relayed media state names alice.
    let state = b.ws.expect("rtc.media.state");
    assert_eq!(state.str_at("payload.participant_id"), a.participant_id);
    // Bob adds a second video slot: camera and screen each get one.
    let more = b.negotiate("subscribe", &[Line::receive(MediaKind::Video)]);
    let video_slots = [b_slots[1], more[0]];
    let labels: Vec<_> = video_slots
        .iter()
        .map(|m| b.subscribe.peer.answered_msid(*m).unwrap().1)
        .collect();
    assert!(labels.contains(&"alice-cam-0".to_owned()), "{labels:?}");
    assert!(labels.contains(&"alice-screen-0".to_owned()), "{labels:?}");
    pump(&mut [&mut a, &mut b, &mut c], Duration::from_millis(300));

    // 20 frames on each video track; the first is a keyframe (first byte even).
    for n in 0..20u64 {
        let first = if n % 10 == 0 { 0u8 } else { 1u8 };
        let now = std::time::Instant::now();
        let time = media_time(MediaKind::Video, n, 3000);
        a.publish
            .peer
            .write(camera, now, time, &[first; 1800], None, None);
        a.publish
            .peer
            .write(screen, now, time, &[first; 900], None, None);
        pump(&mut [&mut a, &mut b, &mut c], Duration::from_millis(33));
    }
    pump(&mut [&mut a, &mut b, &mut c], Duration::from_millis(300));
    let video: Vec<_> = b
        .subscribe
        .peer
        .received
        .iter()
        .filter(|f| video_slots.contains(&f.mid))
        .collect();
    let cams = video.iter().filter(|f| f.data.len() == 1800).count();
    let screens = video.iter().filter(|f| f.data.len() == 900).count();
    assert!(
        cams >= 16 && screens >= 16,
        "camera {cams}, screen {screens} of 20"
    );

    // Alice leaves: the others see her go and her three tracks withdrawn.
    a.ws.send("rtc.leave", json!({}));
    let left = b.ws.expect("rtc.participant.left");
    assert_eq!(
        left.str_at("payload.participant.participant_id"),
        a.participant_id
    );
    for track in ["alice-mic", "alice-cam-0", "alice-screen-0"] {
        expect_track(&mut c.ws, "rtc.track.unpublished", track);
    }
    // The others close their sockets: nothing is left behind on any shard.
    b.ws.close();
    c.ws.close();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let metrics = Client::anonymous(server.addr).get("/metrics").text();
        let (participants, connections) = (
            metric_sum(&metrics, "openchat_voice_participants"),
            metric_sum(&metrics, "openchat_media_connections"),
        );
        if participants == 0 && connections == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: {participants} participants, {connections} connections"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The sum over shards of a per-shard series of `/metrics`.
fn metric_sum(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn bad_signaling_and_bad_media_are_refused_without_harm() {
    let (server, alice, voice) = voice_server();
    let mut a = Caller::join(server.addr, &ticket_for(&alice, &voice));

    // Malformed SDP and an offer with hundreds of m-lines: rtc_negotiation_failed, echoing
    // the offer's request_id, then the close (any rtc.error ends the client's call); the
    // participant leaves with the socket, and a fresh ticket joins again.
    let many = format!(
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n{}",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n".repeat(300)
    );
    for (kind, sdp) in [
        ("rtc.offer.publish", "v=0 nonsense".to_owned()),
        ("rtc.offer.subscribe", many),
    ] {
        let frame = json!({"type": kind, "request_id": "offer_bad_1", "payload": {"type": "offer", "sdp": sdp, "direction": "publish"}});
        a.ws.send_text(&support::json::encode(&frame));
        let error = a.ws.expect("rtc.error");
        assert_eq!(error.str_at("payload.code"), "rtc_negotiation_failed");
        assert_eq!(error.str_at("request_id"), "offer_bad_1");
        assert_eq!(error.str_at("payload.request_id"), "offer_bad_1");
        assert!(
            a.ws.closed_within(Duration::from_secs(2)),
            "{kind}: closed after the error"
        );
        a = Caller::join(server.addr, &ticket_for(&alice, &voice));
    }
    // Garbage and a stranger's STUN at the media ports change nothing; the call still works.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mid = a.negotiate("publish", &[Line::send(MediaKind::Audio, "s", "m")])[0];
    let server_media = a.publish.peer.answer.lines().find_map(|l| {
        l.strip_prefix("a=candidate:").and_then(|c| {
            let f: Vec<&str> = c.split(' ').collect();
            format!("{}:{}", f.get(4)?, f.get(5)?)
                .parse::<std::net::SocketAddr>()
                .ok()
        })
    });
    let server_media = server_media.expect("the answer carries the server's candidate");
    udp.send_to(b"garbage", server_media).unwrap();
    udp.send_to(&[0u8; 1500], server_media).unwrap();
    // Candidates that do not parse are ignored, not fatal.
    a.ws.send(
        "rtc.ice.candidate",
        json!({"candidate": "candidate:nonsense", "sdp_mid": "0", "sdp_mline_index": 0, "direction": "publish"}),
    );
    pump_until(
        &mut [&mut a],
        Duration::from_secs(10),
        "the publish connection",
        |all| all[0].publish.peer.connected,
    );
    assert!(a.publish.peer.rtc.writer(mid).is_some());
    a.ws.assert_none("rtc.error", QUIET);

    // An oversized frame closes the socket, and the participant leaves with it.
    a.ws.send_text(&format!(
        "{{\"type\":\"rtc.media.state\",\"payload\":\"{}\"}}",
        "x".repeat(70 * 1024)
    ));
    assert!(a.ws.closed_within(Duration::from_secs(2)));
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while metric_sum(
        &Client::anonymous(server.addr).get("/metrics").text(),
        "openchat_voice_participants",
    ) > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the participant was left behind"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_listen_only_ticket_cannot_publish() {
    let (server, alice, voice) = voice_server();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // A ticket as a timed-out member gets it: listen only.
    let claims = openchatd::rtc::ticket::Claims {
        server_id: "home".into(),
        channel_id: voice.clone(),
        user_uid: alice.uid().into(),
        device_id: alice.device().into(),
        permissions: openchatd::rtc::ticket::Permissions::LISTEN_ONLY,
        exp: now + 60,
        jti: "jt_listen_only".into(),
    };
    // Alice must be a member for the ticket's server; her first request makes her one.
    let _ = ticket_for(&alice, &voice);
    // A ticket issued before the server started (used ids do not survive a restart) is
    // refused as expired, so the client asks for a new one.
    let before_start = openchatd::rtc::ticket::Claims {
        exp: now + 20,
        jti: "jt_before_start".into(),
        ..claims.clone()
    };
    let mut early = support::ws::Ws::connect_to(server.addr, "/v1/rtc/signaling");
    early.send(
        "rtc.join",
        json!({"ticket": openchatd::rtc::ticket::sign(TICKET_SECRET.as_bytes(), &before_start)}),
    );
    let refused = early.expect("rtc.error");
    assert_eq!(refused.str_at("payload.code"), "rtc_ticket_expired");
    assert!(refused.bool_at("payload.retryable"));
    assert_eq!(
        refused.str_at("request_id"),
        "req_1",
        "the rtc.join's request_id"
    );
    assert!(
        early.closed_within(Duration::from_secs(2)),
        "after the error, the close"
    );
    let ticket = openchatd::rtc::ticket::sign(TICKET_SECRET.as_bytes(), &claims);
    let mut a = Caller::join(server.addr, &ticket);
    let (sdp, _) = a
        .publish
        .peer
        .offer(&[Line::send(MediaKind::Audio, "s", "m")])
        .unwrap();
    a.ws.send_text(&support::json::encode(&json!({
        "type": "rtc.offer.publish",
        "request_id": "offer_mic_1",
        "payload": {"type": "offer", "sdp": sdp, "direction": "publish"}
    })));
    // The client's terminal code for media it may not send, about that offer, then the close.
    let error = a.ws.expect("rtc.error");
    assert_eq!(error.str_at("payload.code"), "rtc_media_denied");
    assert!(!error.bool_at("payload.retryable"));
    assert_eq!(error.str_at("request_id"), "offer_mic_1");
    assert!(a.ws.closed_within(Duration::from_secs(2)));
    // Receiving is still allowed, as a listen-only participant does it.
    let mut a = Caller::join(
        server.addr,
        &openchatd::rtc::ticket::sign(
            TICKET_SECRET.as_bytes(),
            &openchatd::rtc::ticket::Claims {
                jti: "jt_listen_only_2".into(),
                ..claims
            },
        ),
    );
    a.negotiate("subscribe", &[Line::receive(MediaKind::Audio)]);
}

#[test]
fn a_participant_whose_signaling_drops_keeps_its_place_and_comes_back() {
    let (server, alice, voice) = voice_server();
    let bob = Client::user(server.addr);
    let a = Caller::join(server.addr, &ticket_for(&alice, &voice));
    let mut b = Caller::join(server.addr, &ticket_for(&bob, &voice));
    let alice_id = a.participant_id.clone();

    // A network failure (a TCP reset, no close frame): alice stays in the call.
    a.ws.reset();
    b.ws.assert_none("rtc.participant.left", Duration::from_millis(800));

    // She joins again on a new socket with a new ticket: the same participant, and bob is told
    // nothing (no leave, no second join).
    let mut again = Caller::join(server.addr, &ticket_for(&alice, &voice));
    assert_eq!(again.participant_id, alice_id);
    b.ws.assert_none("rtc.participant.joined", QUIET);
    b.ws.assert_none("rtc.participant.left", QUIET);
    // Her new socket works: her media state reaches bob with her participant id.
    again.ws.send(
        "rtc.media.state",
        json!({"stream_id": "s", "track_id": "m", "stream_kind": "audio_microphone", "action": "start", "mic_muted": true, "deafened": false}),
    );
    let state = b.ws.expect("rtc.media.state");
    assert_eq!(state.str_at("payload.participant_id"), alice_id);

    // A clean close is a leave, at once.
    again.ws.close();
    let left = b.ws.expect("rtc.participant.left");
    assert_eq!(left.str_at("payload.participant.participant_id"), alice_id);
}

/// `n` Opus frames from `from` on `mic`, at 20 ms, pumping everyone.
fn speak(callers: &mut [&mut Caller], mic: str0m::media::Mid, n: u64) {
    for i in 0..n {
        let frame = vec![(i % 250) as u8 + 1; 60];
        callers[0].publish.peer.write(
            mic,
            std::time::Instant::now(),
            media_time(MediaKind::Audio, i, 960),
            &frame,
            None,
            Some(-20),
        );
        pump(callers, Duration::from_millis(20));
    }
    pump(callers, Duration::from_millis(300));
}

/// A moderator's immediate action on a fresh report of `target` by `reporter`.
fn act_on(
    moderator: &Client,
    reporter: &Client,
    target: &Client,
    action: simd_json::OwnedValue,
) -> (std::time::Instant, Duration) {
    let base = "/v1/servers/home/moderation/cases";
    let case = reporter.expect(
        201,
        reporter.post(
            base,
            &json!({"target_uid": target.uid(), "reason_code": "abuse"}),
        ),
    );
    let path = format!("{base}/{}/actions/immediate", case.str_at("case_id"));
    let sent = std::time::Instant::now();
    let reply = moderator.post(&path, &action);
    let answered = sent.elapsed();
    assert_eq!(reply.status, 201, "{}", reply.text());
    (sent, answered)
}

/// A server with the default server `home`, owned by `uid_owner_of_home`, and its owner.
fn moderated_voice_server() -> (TestServer, Client) {
    let server = start_community(
        Engine::Sqlite,
        &[
            ("OPENCHAT_DEFAULT_SERVER_ID", "home"),
            ("OPENCHAT_RTC_TICKET_SECRET", TICKET_SECRET),
            ("OPENCHAT_DEFAULT_SERVER_OWNER_UID", "uid_owner_of_home"),
        ],
    );
    let owner = Client::with_uid(server.addr, "uid_owner_of_home");
    (server, owner)
}

/// Alice publishing to bob in a call of `home` whose owner is `uid_owner_of_home`.
fn a_call_with_a_speaker(
    server: &TestServer,
) -> (Client, Client, Caller, Caller, str0m::media::Mid) {
    let (alice, bob) = (Client::user(server.addr), Client::user(server.addr));
    let voice = voice_channel(&alice, "home");
    let mut a = Caller::join(server.addr, &ticket_for(&alice, &voice));
    let mut b = Caller::join(server.addr, &ticket_for(&bob, &voice));
    b.negotiate("subscribe", &[Line::receive(MediaKind::Audio)]);
    let mic = a.negotiate("publish", &[Line::send(MediaKind::Audio, "s", "alice-mic")])[0];
    expect_track(&mut b.ws, "rtc.track.published", "alice-mic");
    b.negotiate("subscribe", &[Line::receive(MediaKind::Audio)]);
    pump_until(
        &mut [&mut a, &mut b],
        Duration::from_secs(10),
        "the connections",
        |all| all[0].publish.peer.connected && all[1].subscribe.peer.connected,
    );
    speak(&mut [&mut a, &mut b], mic, 25);
    assert!(
        b.subscribe.peer.received.len() >= 20,
        "bob hears alice first"
    );
    (alice, bob, a, b, mic)
}

#[test]
fn a_timeout_silences_a_speaker_in_the_sfu_and_a_kick_ends_its_call_at_once() {
    let (server, owner) = moderated_voice_server();
    let (alice, bob, mut a, mut b, mic) = a_call_with_a_speaker(&server);

    // A timeout: alice stays in the call and keeps sending, and nothing of it reaches bob.
    act_on(
        &owner,
        &bob,
        &alice,
        json!({"action_type": "timeout_short", "duration_seconds": 600}),
    );
    pump(&mut [&mut a, &mut b], Duration::from_millis(200));
    let before = b.subscribe.peer.received.len();
    speak(&mut [&mut a, &mut b], mic, 25);
    assert_eq!(
        b.subscribe.peer.received.len(),
        before,
        "muted in the SFU, not only told"
    );
    b.ws.assert_none("rtc.participant.left", QUIET);
    let general = alice.first_text_channel("home");
    let post = alice.post(
        &format!("/v1/channels/{general}/messages"),
        &json!({"body": "hi"}),
    );
    assert_eq!(
        (post.status, post.json().str_at("code").to_owned()),
        (403, "timed_out".to_owned())
    );

    // A kick: rtc.kicked and the close for alice at once, her leave for bob.
    let (sent, _) = act_on(&owner, &bob, &alice, json!({"action_type": "kick"}));
    a.ws.expect("rtc.kicked");
    assert!(a.ws.closed_within(Duration::from_secs(1)), "kicked: closed");
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "action accepted → socket closed in {took:?}"
    );
    let left = b.ws.expect("rtc.participant.left");
    assert_eq!(
        left.str_at("payload.participant.participant_id"),
        a.participant_id
    );
    let voice = voice_channel(&owner, "home");
    let again = alice.post(
        &format!("/v1/rtc/channels/{voice}/join-ticket"),
        &json!({"server_id": "home"}),
    );
    assert_eq!(again.status, 200, "a kick is not a ban: {}", again.text());
}

/// Moderation latency, measured by hand (not in CI):
/// `cargo test --release --test e2e_voice -- --ignored --nocapture kick_latency`. Each round a
/// fresh member is in a call (signaling socket, str0m peer publishing) and has a realtime
/// socket, on whichever shards the kernel gives them; a moderator kicks it through the API;
/// measured from the 201 to both of its sockets being closed by the server (and with them
/// its media: the SFU drops the participant before the close). Prints p50, p99 and max.
#[test]
#[ignore = "a measurement, run by hand"]
fn kick_latency_from_the_accepted_action_to_closed_sockets() {
    let (server, owner) = moderated_voice_server();
    let voice = voice_channel(&owner, "home");
    let general = owner.first_text_channel("home");
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(100);
    let mut took = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        // A reporter files at most ten reports an hour: one each round.
        let reporter = Client::user(server.addr);
        reporter.expect(200, reporter.get("/v1/servers/home/channels"));
        let member = Client::user(server.addr);
        let mut realtime = support::ws::Ws::connect(
            server.addr,
            &support::ws::headers_query("home", member.uid(), member.device()),
        );
        realtime.subscribe(&general);
        realtime.expect("chat.presence.snapshot");
        let mut call = Caller::join(server.addr, &ticket_for(&member, &voice));
        call.negotiate("publish", &[Line::send(MediaKind::Audio, "s", "mic")]);
        let (sent, accepted) = act_on(&owner, &reporter, &member, json!({"action_type": "kick"}));
        call.ws.expect("rtc.kicked");
        assert!(call.ws.closed_within(Duration::from_secs(5)));
        assert!(realtime.closed_within(Duration::from_secs(5)));
        took.push((sent.elapsed(), accepted));
    }
    let mut closed: Vec<Duration> = took.iter().map(|t| t.0).collect();
    let mut answered: Vec<Duration> = took.iter().map(|t| t.1).collect();
    closed.sort();
    answered.sort();
    let at = |v: &[Duration], q: f64| v[((v.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    println!(
        "kick sent → 201 over {rounds} rounds: p50 {:?}, p99 {:?}; sent → both sockets closed: p50 {:?}, p99 {:?}, max {:?}",
        at(&answered, 0.50),
        at(&answered, 0.99),
        at(&closed, 0.50),
        at(&closed, 0.99),
        closed[closed.len() - 1]
    );
    assert!(at(&closed, 0.99) < Duration::from_secs(1));
}

#[test]
fn a_kick_and_a_voted_ban_stop_the_target_s_media_reaching_the_others() {
    let (server, owner) = moderated_voice_server();
    // A kick: whatever alice's peer still sends, bob receives none of it.
    let (alice, bob, mut a, mut b, mic) = a_call_with_a_speaker(&server);
    act_on(&owner, &bob, &alice, json!({"action_type": "kick"}));
    a.ws.expect("rtc.kicked");
    b.ws.expect("rtc.participant.left");
    let before = b.subscribe.peer.received.len();
    speak(&mut [&mut a, &mut b], mic, 25);
    assert_eq!(
        b.subscribe.peer.received.len(),
        before,
        "a kicked publisher reaches no one"
    );

    // A ban by vote (the owner alone is eligible; a policy of one vote): the same, and no way
    // back into the call.
    owner.expect(
        200,
        owner.put(
            "/v1/servers/home/moderation/policy",
            &json!({"threshold": 1, "quorum": 1}),
        ),
    );
    let (carol, dave, mut c, mut d, mic) = a_call_with_a_speaker(&server);
    let case = dave.expect(
        201,
        dave.post(
            "/v1/servers/home/moderation/cases",
            &json!({"target_uid": carol.uid(), "reason_code": "abuse"}),
        ),
    );
    let base = format!(
        "/v1/servers/home/moderation/cases/{}",
        case.str_at("case_id")
    );
    owner.expect(
        201,
        owner.post(
            &format!("{base}/actions/propose"),
            &json!({"action_type": "ban"}),
        ),
    );
    let decided = owner.expect(
        200,
        owner.post(&format!("{base}/votes"), &json!({"value": "yes"})),
    );
    assert_eq!(decided.str_at("status"), "enforced");
    c.ws.expect("rtc.kicked");
    d.ws.expect("rtc.participant.left");
    let before = d.subscribe.peer.received.len();
    speak(&mut [&mut c, &mut d], mic, 25);
    assert_eq!(
        d.subscribe.peer.received.len(),
        before,
        "a banned publisher reaches no one"
    );
    let voice = voice_channel(&owner, "home");
    let again = carol.post(
        &format!("/v1/rtc/channels/{voice}/join-ticket"),
        &json!({"server_id": "home"}),
    );
    assert_eq!(again.status, 403, "{}", again.text());
}

/// The operator's view of call quality: after a call of more than one stats interval, the
/// SFU's peer connections have reported their loss and round-trip time on `/metrics`, with the
/// rooms and datagrams counted (loopback loses nothing).
#[test]
fn a_call_reports_its_quality_on_metrics() {
    let (server, _owner) = moderated_voice_server();
    let (_alice, _bob, mut a, mut b, mic) = a_call_with_a_speaker(&server);
    let scrape = || Client::anonymous(server.addr).get("/metrics").text();
    let count = |text: &str, series: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    // str0m reports every STATS_INTERVAL (5 s) per connection, and a round trip only once a
    // receiver report answers a sender report: talk until loss both ways and a round trip are
    // reported, for at most 25 s.
    let until = std::time::Instant::now() + Duration::from_secs(25);
    let text = loop {
        speak(&mut [&mut a, &mut b], mic, 25);
        let text = scrape();
        let reported = count(&text, "openchat_media_loss_ratio_count{direction=\"in\"}") > 0
            && count(&text, "openchat_media_loss_ratio_count{direction=\"out\"}") > 0
            && count(&text, "openchat_media_rtt_seconds_count") > 0;
        if reported || std::time::Instant::now() > until {
            break text;
        }
    };
    for direction in ["in", "out"] {
        let reports = count(
            &text,
            &format!("openchat_media_loss_ratio_count{{direction=\"{direction}\"}}"),
        );
        assert!(reports > 0, "no {direction} loss reports:\n{text}");
        let lossless = count(
            &text,
            &format!("openchat_media_loss_ratio_bucket{{direction=\"{direction}\",le=\"0.01\"}}"),
        );
        assert_eq!(lossless, reports, "loopback loses under 1 %:\n{text}");
    }
    let rtts = count(&text, "openchat_media_rtt_seconds_count");
    assert!(rtts > 0, "no round-trip time reported:\n{text}");
    assert_eq!(
        count(&text, "openchat_media_rtt_seconds_bucket{le=\"0.1\"}"),
        rtts,
        "loopback round trips are under 100 ms:\n{text}"
    );
    assert_eq!(metric_sum(&text, "openchat_voice_rooms"), 1, "{text}");
    assert!(
        metric_sum(&text, "openchat_media_datagrams_received_total") > 100,
        "{text}"
    );
    assert!(
        metric_sum(&text, "openchat_media_datagrams_sent_total") > 100,
        "{text}"
    );
}
