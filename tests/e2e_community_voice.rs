//! Voice through the community API (wire contract A.8): join tickets as the desktop client
//! asks for them (shape, ICE servers, receive caps, refusals), the signaling socket seating,
//! relaying and refusing participants, and a kick reaching a participant within a second.
//! Every test runs against a real server with two shards, on embedded SQLite and on Postgres.

mod support;

use std::time::Duration;

use simd_json::json;
use simd_json::prelude::*;
use support::api::{Client, is_rfc3339_utc};
use support::call::{ticket_for, voice_channel};
use support::json::{JsonPath, encode, key_set};
use support::server::{PUBLIC_BASE_URL, TestServer, start_community};
use support::ws::Ws;

use support::on_both_engines;

const TICKET_SECRET: &str = "0123456789abcdef0123456789abcdef-e2e";

on_both_engines! {
    join_tickets_follow_the_contract => |engine| {
        let server = start_community(engine, &[
            ("OPENCHAT_DEFAULT_SERVER_ID", "home"),
            ("OPENCHAT_RTC_TICKET_SECRET", TICKET_SECRET),
            ("OPENCHAT_RTC_SUBSCRIBE_MAX_VIDEO_TRACKS_BY_SERVER", "home=2"),
            ("OPENCHAT_RTC_TURN_URLS", "turn:turn.chat.test:3478"),
            ("OPENCHAT_RTC_TURN_SECRET", "coturn-shared-secret"),
        ]);
        let alice = Client::user(server.addr);
        let voice = voice_channel(&alice, "home");
        let path = format!("/v1/rtc/channels/{voice}/join-ticket");
        let reply = alice.post(&path, &json!({"server_id": "home"}));
        assert_eq!(reply.status, 200, "{}", reply.text());
        let doc = reply.json();
        assert_eq!(
            doc.keys_at(""),
            key_set(&["ticket", "channel_id", "server_id", "user_uid", "device_id", "expires_at", "signaling_url", "ice_servers", "permissions", "subscribe_receive_policy"])
        );
        assert_eq!(doc.str_at("signaling_url"), "ws://chat.test/v1/rtc/signaling");
        assert!(is_rfc3339_utc(doc.at("expires_at")));
        assert_eq!(doc.keys_at("permissions"), key_set(&["speak", "video", "screenshare"]));
        assert!(doc.bool_at("permissions.speak") && doc.bool_at("permissions.screenshare"));
        // Server override for video, instance default for audio.
        assert_eq!(doc.i64_at("subscribe_receive_policy.max_video_tracks"), 2);
        assert!(doc.i64_at("subscribe_receive_policy.max_audio_tracks") > 0);
        // The ticket carries ephemeral TURN credentials; capabilities never do.
        let turn = doc.arr_at("ice_servers").iter().find(|s| s.str_at("urls.0").starts_with("turn:")).expect("TURN entry");
        assert_eq!(turn.str_at("credential_type"), "ephemeral");
        assert!(turn.str_at("username").ends_with(&format!(":{}", alice.uid())));
        let caps = Client::anonymous(server.addr).get("/v1/client/capabilities").json();
        assert!(caps.arr_at("rtc.ice_servers").iter().all(|s| !s.str_at("urls.0").starts_with("turn:")));
        // The ticket is signed over exactly these claims.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let claims = openchatd::rtc::ticket::verify(TICKET_SECRET.as_bytes(), doc.str_at("ticket"), now).expect("valid ticket");
        assert_eq!((claims.server_id.as_str(), claims.channel_id.as_str(), claims.user_uid.as_str(), claims.device_id.as_str()), ("home", voice.as_str(), alice.uid(), alice.device()));
        assert!(claims.exp > now && claims.exp <= now + 61);
        assert!(openchatd::rtc::ticket::verify(b"another secret of thirty-two bytes!", doc.str_at("ticket"), now).is_err());

        // Refusals: a text channel, another server's id, no identity, no server_id.
        let text = alice.first_text_channel("home");
        alice.post(&format!("/v1/rtc/channels/{text}/join-ticket"), &json!({"server_id": "home"})).assert_error(400, "not_a_voice_channel");
        alice.post(&path, &json!({"server_id": "nope"})).assert_error(404, "server_not_found");
        Client::anonymous(server.addr).post(&path, &json!({"server_id": "home"})).assert_error(401, "unauthorized");
        alice.post(&path, &json!({})).assert_error(400, "invalid_server_id");
        alice.post("/v1/rtc/channels/ch_nope/join-ticket", &json!({"server_id": "home"})).assert_error(404, "channel_not_found");
    };
}

/// A signaling socket that sent `rtc.join` with `ticket`.
fn signal(server: &TestServer, ticket: &str, channel: Option<&str>) -> Ws {
    let mut ws = Ws::connect_to(server.addr, "/v1/rtc/signaling");
    let mut frame = json!({"type": "rtc.join", "request_id": "r1", "payload": {"ticket": ticket}});
    if let Some(channel) = channel {
        frame.insert("channel_id", channel).unwrap();
    }
    ws.send_text(&encode(&frame));
    ws
}

fn expect_rtc_error(ws: &mut Ws, code: &str, retryable: bool) {
    let error = ws.expect("rtc.error");
    assert_eq!(error.str_at("payload.code"), code, "{}", encode(&error));
    assert_eq!(error.bool_at("payload.retryable"), retryable);
    assert!(
        ws.closed_within(Duration::from_secs(2)),
        "a refused join closes the socket"
    );
}

on_both_engines! {
    voice_signaling_seats_relays_and_refuses => |engine| {
        let server = start_community(engine, &[
            ("OPENCHAT_DEFAULT_SERVER_ID", "home"),
            ("OPENCHAT_RTC_TICKET_SECRET", TICKET_SECRET),
        ]);
        let alice = Client::user(server.addr);
        let bob = Client::user(server.addr);
        let voice = voice_channel(&alice, "home");

        let mut a = signal(&server, &ticket_for(&alice, &voice), Some(&voice));
        let joined = a.expect("rtc.joined");
        assert_eq!(joined.arr_at("payload.participants").len(), 1);
        let a_id = joined.str_at("payload.participant_id").to_owned();
        assert_eq!(joined.keys_at("payload.participants.0"), key_set(&["participant_id", "user_uid", "device_id", "joined_at"]));

        let b_ticket = ticket_for(&bob, &voice);
        let mut b = signal(&server, &b_ticket, None);
        let b_joined = b.expect("rtc.joined");
        assert_eq!(b_joined.arr_at("payload.participants").len(), 2);
        let b_id = b_joined.str_at("payload.participant_id").to_owned();
        let announced = a.expect("rtc.participant.joined");
        assert_eq!(announced.str_at("payload.participant.user_uid"), bob.uid());

        // Media state is relayed to the others with the sender's participant id.
        b.send("rtc.media.state", json!({"stream_id": "s1", "track_id": "t1", "stream_kind": "audio_microphone", "action": "start", "mic_muted": false, "deafened": false}));
        let state = a.expect("rtc.media.state");
        assert_eq!(state.str_at("payload.participant_id"), b_id);
        assert_eq!(state.str_at("payload.stream_kind"), "audio_microphone");
        assert_ne!(a_id, b_id);

        // A used ticket, an expired one, a forged one, another channel's, and no join first.
        expect_rtc_error(&mut signal(&server, &b_ticket, None), "rtc_ticket_replayed", false);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let stale = openchatd::rtc::ticket::Claims {
            server_id: "home".into(),
            channel_id: voice.clone(),
            user_uid: alice.uid().into(),
            device_id: alice.device().into(),
            permissions: openchatd::rtc::ticket::Permissions::ALL,
            exp: now - 1,
            jti: "jt_stale".into(),
        };
        expect_rtc_error(&mut signal(&server, &openchatd::rtc::ticket::sign(TICKET_SECRET.as_bytes(), &stale), None), "rtc_ticket_expired", true);
        let forged = openchatd::rtc::ticket::Claims { exp: now + 60, jti: "jt_forged".into(), ..stale };
        expect_rtc_error(&mut signal(&server, &openchatd::rtc::ticket::sign(b"not the server's secret at all!!", &forged), None), "rtc_join_denied", false);
        expect_rtc_error(&mut signal(&server, &ticket_for(&alice, &voice), Some("ch_elsewhere")), "rtc_join_denied", false);
        let mut early = Ws::connect_to(server.addr, "/v1/rtc/signaling");
        early.send("rtc.media.state", json!({"action": "start"}));
        expect_rtc_error(&mut early, "rtc_join_denied", false);

        // Closing the socket is leaving.
        b.close();
        let left = a.expect("rtc.participant.left");
        assert_eq!(left.str_at("payload.participant.participant_id"), b_id);
    };
}

/// A test-only route standing in for the moderation API (a later issue): the configured owner
/// kicks `user_uid` (the body) from voice in `home`.
fn kick_route(router: &mut openchatd::http::Router<openchatd::api::Handler>) {
    fn kick<'a>(ctx: &'a openchatd::api::RequestCtx<'a>) -> openchatd::api::HandlerFuture<'a> {
        Box::pin(async move {
            let target = String::from_utf8(ctx.request.body().to_vec()).unwrap();
            let owner = openchatd::domain::community::Actor {
                user_uid: "uid_owner".into(),
                device_id: "desk".into(),
            };
            ctx.app
                .authority
                .command(openchatd::domain::community::commands::Kick {
                    actor: owner,
                    server_id: "home".into(),
                    target_uid: target.into(),
                })
                .await?;
            Ok(openchatd::http::Response::no_content())
        })
    }
    router.route(
        openchatd::http::Method::Post,
        "/test/kick",
        openchatd::api::Handler::Async(kick),
    );
}

on_both_engines! {
    a_kick_reaches_the_participant_within_a_second => |engine| {
        let server = support::server::start_with(engine, &[
            ("OPENCHAT_AUTH_MODE", "headers"),
            ("OPENCHAT_PUBLIC_BASE_URL", PUBLIC_BASE_URL),
            ("OPENCHAT_RATE_LIMIT_PER_MINUTE", "1000000"),
            ("OPENCHAT_DEFAULT_SERVER_ID", "home"),
            ("OPENCHAT_DEFAULT_SERVER_OWNER_UID", "uid_owner"),
            ("OPENCHAT_RTC_TICKET_SECRET", TICKET_SECRET),
        ], kick_route);
        let alice = Client::user(server.addr);
        let bob = Client::user(server.addr);
        let voice = voice_channel(&alice, "home");
        let mut a = signal(&server, &ticket_for(&alice, &voice), None);
        a.expect("rtc.joined");
        let mut b = signal(&server, &ticket_for(&bob, &voice), None);
        b.expect("rtc.joined");
        a.expect("rtc.participant.joined");
        let started = std::time::Instant::now();
        let reply = alice.post_raw("/test/kick", "text/plain", bob.uid().as_bytes());
        assert_eq!(reply.status, 204, "{}", reply.text());
        b.expect("rtc.kicked");
        assert!(b.closed_within(Duration::from_secs(1)), "the kicked socket is closed");
        assert!(started.elapsed() < Duration::from_secs(1), "kick took {:?}", started.elapsed());
        let left = a.expect("rtc.participant.left");
        assert_eq!(left.str_at("payload.participant.user_uid"), bob.uid());
    };
}
