//! The trust issue: logs never carry secrets, at any level. A real server (Postgres whose URL
//! holds a password, configured ticket and TURN secrets, an evidence key) runs with the binary's
//! own subscriber at `trace` (`openchatd::logging::install`, the caps on the dependencies that
//! print frames and credentials included), captured in memory. A user signs in, opens a
//! verified server session and a realtime socket with its token, posts, gets a join ticket and
//! TURN credentials, joins a call with real str0m peers over UDP (SDP offers and answers, ICE
//! passwords, DTLS), replays the ticket and tries forged credentials; then the whole log is
//! searched for every one of those secrets.
//!
//! E2EE blobs (ciphertexts, key packages, Welcomes, link codes) have their own search at the
//! end of every test of `tests/e2e_e2ee.rs`.

mod support;

use std::time::Duration;

use openchatd::sfu::peer::Line;
use simd_json::json;
use simd_json::prelude::*;
use support::api::{Client, DeviceKey};
use support::call::{Caller, pump, pump_until, voice_channel};
use support::json::{JsonPath, encode};
use support::server::{Engine, PUBLIC_BASE_URL, Place, start_in};
use support::ws::Ws;

use str0m::media::MediaKind;

/// Everything any server of this test process logged, at trace level.
fn log() -> &'static std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    support::logs::captured(openchatd::config::LogFormat::Json)
}

const TICKET_SECRET: &str = "ticket-secret-that-must-never-be-logged-0123456789";
const TURN_SECRET: &str = "turn-shared-secret-never-logged-9876543210";
const EVIDENCE_KEY: &str = "5e5e5e5e0123456789abcdef0123456789abcdef0123456789abcdefdeadbeef";
const DB_PASSWORD: &str = "db-password-never-logged-42";

#[test]
fn no_secret_reaches_the_log_at_trace_level() {
    let log = log();
    let place = Place::new(Engine::Postgres);
    // Trust authentication ignores the password: it is there to be leaked, not checked.
    let url = place.db.as_ref().unwrap().url().replacen(
        "postgres@",
        &format!("postgres:{DB_PASSWORD}@"),
        1,
    );
    assert!(url.contains(DB_PASSWORD), "{url}");
    let server = start_in(
        place,
        Some(&url),
        &[
            ("OPENCHAT_AUTH_MODE", "session"),
            ("OPENCHAT_PUBLIC_BASE_URL", PUBLIC_BASE_URL),
            ("OPENCHAT_DEFAULT_SERVER_ID", "home"),
            ("OPENCHAT_RTC_TICKET_SECRET", TICKET_SECRET),
            ("OPENCHAT_RTC_TURN_SECRET", TURN_SECRET),
            ("OPENCHAT_RTC_TURN_URLS", "turn:turn.test:3478"),
            ("OPENCHAT_EVIDENCE_KEY", EVIDENCE_KEY),
            ("OPENCHAT_LOG", "trace"),
        ],
        |_| {},
    );
    let addr = server.addr;
    let mut secrets: Vec<(String, String)> = [
        ("the ticket secret", TICKET_SECRET),
        ("the TURN secret", TURN_SECRET),
        ("the evidence key", EVIDENCE_KEY),
        ("the database password", DB_PASSWORD),
    ]
    .map(|(what, s)| (what.to_owned(), s.to_owned()))
    .into();

    // Sign-in: the challenge, its signature and the session token.
    let key = DeviceKey::new();
    let challenge = key.challenge(addr, None);
    let signature = key.sign(PUBLIC_BASE_URL, &challenge);
    let reply = key.open_session(addr, PUBLIC_BASE_URL, None, &challenge);
    assert_eq!(reply.status, 201, "{}", reply.text());
    let session = reply.json();
    let token = session.str_at("token").to_owned();
    let uid = session.str_at("user_uid").to_owned();
    secrets.push(("a sign-in signature".into(), signature));
    secrets.push(("a session token".into(), token.clone()));
    let user = Client::bearer(addr, &token);

    // A verified server session (wire contract A.10).
    let server_session = key.server_sign_in(addr, "home", Some(&uid));
    secrets.push((
        "a server session token".into(),
        server_session.str_at("token").to_owned(),
    ));

    // The realtime socket, its token in the subprotocol; a post seen live.
    let mut ws =
        Ws::connect_with_protocol(addr, "server_id=home", &format!("openchat.session.{token}"));
    let channel = user.first_text_channel("home");
    ws.subscribe(&channel);
    ws.expect("chat.presence.snapshot");
    let body = format!("private words {}", uuid::Uuid::new_v4());
    let posted = user.post(
        &format!("/v1/channels/{channel}/messages"),
        &json!({"body": body.as_str()}),
    );
    assert_eq!(posted.status, 201, "{}", posted.text());
    ws.expect("chat.message.created");
    secrets.push(("a message body".into(), body));

    // A join ticket with ephemeral TURN credentials, then a call over real UDP.
    let voice = voice_channel(&user, "home");
    let ticket_reply = user.post(
        &format!("/v1/rtc/channels/{voice}/join-ticket"),
        &json!({"server_id": "home"}),
    );
    assert_eq!(ticket_reply.status, 200, "{}", ticket_reply.text());
    let ticket_doc = ticket_reply.json();
    let ticket = ticket_doc.str_at("ticket").to_owned();
    let turn = ticket_doc
        .arr_at("ice_servers")
        .iter()
        .find(|s| s.try_at("credential").is_some())
        .expect("TURN credentials in the ticket")
        .str_at("credential")
        .to_owned();
    secrets.push(("a join ticket".into(), ticket.clone()));
    secrets.push(("a TURN credential".into(), turn));
    let mut caller = Caller::join(addr, &ticket);
    caller.negotiate("publish", &[Line::send(MediaKind::Audio, "s", "mic")]);
    pump_until(
        &mut [&mut caller],
        Duration::from_secs(10),
        "the publish connection",
        |all| all[0].publish.peer.connected,
    );
    pump(&mut [&mut caller], Duration::from_millis(200));
    let client_pwd = caller
        .publish
        .peer
        .rtc
        .direct_api()
        .local_ice_credentials()
        .pass;
    let server_pwd = caller
        .publish
        .peer
        .answer
        .lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-pwd:"))
        .expect("the answer has an ICE password")
        .to_owned();
    secrets.push(("the client's ICE password".into(), client_pwd));
    secrets.push(("the SFU's ICE password".into(), server_pwd));

    // Hostile tries: the ticket replayed, a forged token, a forged ticket.
    let mut replay = Ws::connect_to(addr, "/v1/rtc/signaling");
    replay.send_text(&encode(
        &json!({"type": "rtc.join", "request_id": "r", "payload": {"ticket": ticket.as_str()}}),
    ));
    replay.expect("rtc.error");
    let forged_token = format!("ocs_{}", "Zm9yZ2Vk".repeat(6));
    let forged = Client::bearer(addr, &forged_token).get("/v1/servers");
    assert_eq!(forged.status, 401, "{}", forged.text());
    let forged_ticket = format!("{}x", &ticket[..ticket.len() - 1]);
    let mut bad = Ws::connect_to(addr, "/v1/rtc/signaling");
    bad.send_text(&encode(
        &json!({"type": "rtc.join", "request_id": "f", "payload": {"ticket": forged_ticket.as_str()}}),
    ));
    bad.expect("rtc.error");
    secrets.push(("a forged token".into(), forged_token));
    secrets.push(("a forged ticket".into(), forged_ticket));

    drop((caller, ws, replay, bad));
    let place = server.stop();
    drop(place);

    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    // The capture is at trace level and saw this run: the server's own debug and trace lines,
    // and the dependencies' (sqlx's statements, str0m's ICE).
    assert!(text.contains("\"level\":\"TRACE\""), "trace lines captured");
    assert!(text.contains("\"level\":\"DEBUG\""), "debug lines captured");
    assert!(text.lines().count() > 100, "{} lines", text.lines().count());
    for (what, secret) in &secrets {
        assert!(secret.len() >= 16, "{what} is long enough to search for");
        // Whole, and any 16-character piece of it (a token cut, or a ticket's signature part).
        for start in (0..=secret.len() - 16).step_by(8) {
            let piece = &secret[start..start + 16];
            assert!(
                !text.contains(piece),
                "{what} is in the log ({piece}): {}",
                text.lines().find(|l| l.contains(piece)).unwrap_or_default()
            );
        }
    }
    for marker in ["a=ice-pwd", "Bearer ocs_", "openchat.session.ocs_"] {
        assert!(
            !text.contains(marker),
            "{marker} is in the log: {}",
            text.lines()
                .find(|l| l.contains(marker))
                .unwrap_or_default()
        );
    }
}
