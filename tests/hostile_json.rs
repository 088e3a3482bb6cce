//! Attacks on what the server parses and how long it waits, against the real server: JSON
//! nested 20,000 levels deep in an HTTP body, a realtime frame and a signaling frame (before
//! `json::MAX_JSON_DEPTH` this overflowed a shard's stack and aborted the process, this test
//! binary included); heads trickled one byte a second (they lived 40 s, not the documented
//! 10 s); and the envelope of an expiring typing indicator on a server other than the default.
//! None of this touches storage beyond setup, so it runs on the embedded default only.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use openchatd::http::limits::HEADER_READ_TIMEOUT;
use simd_json::json;
use support::api::{Client, default_server_id};
use support::call::{Caller, ticket_for, voice_channel};
use support::http::{Conn, get};
use support::json::{Json, JsonPath, encode};
use support::server::{Engine, TestServer, start_community};
use support::ws::{Ws, headers_query};

/// Far past any depth limit, and past what a thread's stack survives without one.
const DEEP: usize = 20_000;

fn deep_array(levels: usize) -> String {
    format!("{}{}", "[".repeat(levels), "]".repeat(levels))
}

fn deep_object(levels: usize) -> String {
    format!("{}1{}", "{\"a\":".repeat(levels), "}".repeat(levels))
}

/// The server still answers: `/healthz` and a real write through the whole stack.
fn assert_alive(server: &TestServer, member: &Client, channel: &str) {
    assert_eq!(get(server.addr, "/healthz").status, 200);
    let sent = member.send(channel, "still here");
    assert_eq!(sent.str_at("body"), "still here");
}

#[test]
fn deeply_nested_http_bodies_are_a_400_and_the_server_lives() {
    let server = start_community(Engine::Sqlite, &[]);
    let alice = Client::user(server.addr);
    let server_id = default_server_id(server.addr);
    let general = alice.first_text_channel(&server_id);
    let anonymous = Client::anonymous(server.addr);

    for body in [deep_array(DEEP), deep_object(DEEP)] {
        // Before any identity: the sign-in challenge.
        anonymous
            .post_raw("/v1/auth/challenge", "application/json", body.as_bytes())
            .assert_error(400, "invalid_json");
        // A member's request, and the depth hidden inside an expected field.
        alice
            .request(
                "PUT",
                &format!("/v1/channels/{general}/read-ack"),
                &[],
                Some(("application/json", body.as_bytes())),
            )
            .assert_error(400, "invalid_json");
        let inside = format!("{{\"display_name\": {body}}}");
        alice
            .request(
                "PUT",
                "/v1/profile/me",
                &[],
                Some(("application/json", inside.as_bytes())),
            )
            .assert_error(400, "invalid_json");
    }
    // A message post: 20,000 arrays are within the size its body may have.
    alice
        .post_raw(
            &format!("/v1/channels/{general}/messages"),
            "application/json",
            deep_array(DEEP).as_bytes(),
        )
        .assert_error(400, "invalid_json");
    // Unclosed nesting is refused the same way.
    let unclosed = "[".repeat(DEEP);
    anonymous
        .post_raw(
            "/v1/auth/challenge",
            "application/json",
            unclosed.as_bytes(),
        )
        .assert_error(400, "invalid_json");

    // The refusal names the limit.
    let reply = anonymous.post_raw(
        "/v1/auth/challenge",
        "application/json",
        deep_array(openchatd::json::MAX_JSON_DEPTH + 1).as_bytes(),
    );
    reply.assert_error(400, "invalid_json");
    assert!(
        reply.text().contains("nested deeper than"),
        "{}",
        reply.text()
    );
    assert!(!reply.json().bool_at("retryable"));
    // Honest nesting well inside the limit is parsed as before.
    let created = alice.post(
        &format!("/v1/channels/{general}/messages"),
        &json!({"body": "nested fine", "reply_to_message_id": null}),
    );
    assert_eq!(created.status, 201, "{}", created.text());

    assert_alive(&server, &alice, &general);
}

#[test]
fn a_deeply_nested_realtime_frame_is_a_chat_error_and_the_socket_lives() {
    let server = start_community(Engine::Sqlite, &[]);
    let alice = Client::user(server.addr);
    let server_id = default_server_id(server.addr);
    let general = alice.first_text_channel(&server_id);
    let mut ws = Ws::connect(
        server.addr,
        &headers_query(&server_id, alice.uid(), alice.device()),
    )
    .live();

    // 20,000 arrays fit in a frame (40 KB of the 64 KiB allowed); objects cost more bytes per
    // level, so they go about as deep as a frame allows.
    let frames = [
        format!(
            "{{\"type\":\"chat.subscribe\",\"request_id\":\"deep\",\"payload\":{}}}",
            deep_array(DEEP)
        ),
        format!("{{\"type\":\"ping\",\"payload\":{}}}", deep_object(10_000)),
        deep_array(DEEP),
    ];
    for frame in &frames {
        assert!(frame.len() < openchatd::runtime::websocket::MAX_FRAME_BYTES);
        ws.send_text(frame);
        let error = ws.expect("chat.error");
        assert!(
            encode(&error).contains("nested deeper than"),
            "{}",
            encode(&error)
        );
    }
    // The same socket goes on working.
    ws.send("ping", json!({}));
    ws.expect("pong");
    ws.subscribe(&general);
    ws.expect("chat.presence.snapshot");
    assert!(!ws.is_closed());
    assert_alive(&server, &alice, &general);
    ws.expect_where("chat.message.created", |f| {
        f.str_at("payload.message.body") == "still here"
    });
}

const TICKET_SECRET: &str = "0123456789abcdef0123456789abcdef-hostile";

#[test]
fn a_deeply_nested_signaling_frame_is_refused_and_the_server_lives() {
    let server = start_community(
        Engine::Sqlite,
        &[
            ("OPENCHAT_DEFAULT_SERVER_ID", "home"),
            ("OPENCHAT_RTC_TICKET_SECRET", TICKET_SECRET),
        ],
    );
    let alice = Client::user(server.addr);
    let general = alice.first_text_channel("home");
    let voice = voice_channel(&alice, "home");

    // As the first frame: not an rtc.join, so refused and closed.
    let mut early = Ws::connect_to(server.addr, "/v1/rtc/signaling");
    early.send_text(&deep_array(DEEP));
    let refused = early.expect("rtc.error");
    assert_eq!(refused.str_at("payload.code"), "rtc_join_denied");
    assert!(early.closed_within(Duration::from_secs(3)));

    // An rtc.join whose ticket sits under 20,000 levels.
    let mut hidden = Ws::connect_to(server.addr, "/v1/rtc/signaling");
    hidden.send_text(&format!(
        "{{\"type\":\"rtc.join\",\"payload\":{{\"ticket\":{}}}}}",
        deep_array(DEEP)
    ));
    assert_eq!(
        hidden.expect("rtc.error").str_at("payload.code"),
        "rtc_join_denied"
    );

    // After joining: the deep frame is dropped like any malformed one, the call goes on.
    let mut caller = Caller::join(server.addr, &ticket_for(&alice, &voice));
    caller.ws.send_text(&format!(
        "{{\"type\":\"rtc.media.state\",\"payload\":{}}}",
        deep_array(DEEP)
    ));
    caller.ws.send_text(&deep_array(DEEP));
    caller.ws.send(
        "rtc.offer.publish",
        json!({"type": "offer", "sdp": "v=0 nonsense", "direction": "publish"}),
    );
    assert_eq!(
        caller.ws.expect("rtc.error").str_at("payload.code"),
        "rtc_negotiation_failed"
    );
    assert!(!caller.ws.is_closed());
    assert_alive(&server, &alice, &general);
}

/// Writes `head` one byte a second (the first at once) until the server closes the
/// connection, and says how long after the first byte that was and what the server sent.
/// Gives up (returns `None`) after `give_up`.
fn trickle(mut stream: TcpStream, head: &[u8], give_up: Duration) -> Option<(Duration, Vec<u8>)> {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let started = Instant::now();
    let mut received = Vec::new();
    let mut sent = 0;
    let mut buf = [0u8; 1024];
    while started.elapsed() < give_up {
        let due = started + Duration::from_secs(sent as u64);
        if Instant::now() >= due {
            let byte = head[sent % head.len()];
            if stream.write_all(&[byte]).is_err() {
                return Some((started.elapsed(), received));
            }
            sent += 1;
        }
        match stream.read(&mut buf) {
            Ok(0) => return Some((started.elapsed(), received)),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some((started.elapsed(), received)),
        }
    }
    None
}

fn assert_cut_at_the_header_timeout(what: &str, outcome: Option<(Duration, Vec<u8>)>) {
    let (after, received) = outcome.unwrap_or_else(|| panic!("{what}: still open"));
    assert!(
        after >= HEADER_READ_TIMEOUT - Duration::from_millis(500)
            && after <= HEADER_READ_TIMEOUT + Duration::from_secs(2),
        "{what}: closed {after:?} after the first byte"
    );
    // What the server said before closing, if it reached us, is the 408.
    if !received.is_empty() {
        let text = String::from_utf8_lossy(&received);
        assert!(text.starts_with("HTTP/1.1 408"), "{what}: {text}");
    }
}

#[test]
fn a_trickled_head_is_cut_off_at_the_header_timeout() {
    let server = start_community(Engine::Sqlite, &[]);
    let addr: SocketAddr = server.addr;
    // A head that never ends: a request line and then one endless header value.
    let head = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let give_up = HEADER_READ_TIMEOUT + Duration::from_secs(5);

    // The first request of a connection.
    let first = std::thread::spawn(move || {
        let stream = TcpStream::connect(addr).unwrap();
        trickle(stream, head, give_up)
    });
    // A later request on a keep-alive connection.
    let later = std::thread::spawn(move || {
        let mut conn = Conn::open(addr);
        assert_eq!(conn.get("/healthz").status, 200);
        assert_eq!(conn.get("/healthz").status, 200);
        let stream = conn.stream.try_clone().unwrap();
        trickle(stream, head, give_up)
    });
    // A body that trickles as slowly is judged by the body timeout, not the header one: it
    // completes after 12 s and is answered.
    let body = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        let body = b"{}          ";
        stream
            .write_all(
                format!(
                    "POST /v1/auth/challenge HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .unwrap();
        let started = Instant::now();
        for byte in body {
            std::thread::sleep(Duration::from_secs(1));
            stream.write_all(&[*byte]).unwrap();
        }
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reply = Vec::new();
        let mut buf = [0u8; 1024];
        while !reply.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
        }
        (
            started.elapsed(),
            String::from_utf8_lossy(&reply).into_owned(),
        )
    });

    assert_cut_at_the_header_timeout("first request", first.join().unwrap());
    assert_cut_at_the_header_timeout("keep-alive request", later.join().unwrap());
    let (took, reply) = body.join().unwrap();
    assert!(took > HEADER_READ_TIMEOUT, "{took:?}");
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(get(addr, "/healthz").status, 200);
}

#[test]
fn an_expiring_typing_indicator_names_its_channels_server() {
    let server = start_community(Engine::Sqlite, &[]);
    let alice = Client::user(server.addr);
    let bob = Client::user(server.addr);
    let created = alice.create_server("Typists");
    let server_id = created.str_at("server.server_id").to_owned();
    assert_ne!(server_id, default_server_id(server.addr));
    let joined = bob.post(&format!("/v1/servers/{server_id}/membership"), &json!({}));
    assert_eq!(joined.status, 200, "{}", joined.text());
    let channel = alice.first_text_channel(&server_id);

    let mut a = Ws::connect(
        server.addr,
        &headers_query(&server_id, alice.uid(), alice.device()),
    )
    .live();
    let mut b = Ws::connect(
        server.addr,
        &headers_query(&server_id, bob.uid(), bob.device()),
    )
    .live();
    a.subscribe(&channel);
    a.expect("chat.presence.snapshot");
    b.subscribe(&channel);
    b.expect("chat.presence.snapshot");

    b.send(
        "chat.typing.update",
        json!({"channel_id": channel.as_str(), "is_typing": true}),
    );
    let started = a.expect_where("chat.typing.updated", |f| f.bool_at("payload.is_typing"));
    assert_eq!(started.str_at("server_id"), server_id);

    // Bob goes silent: after the typing timeout the server says he stopped.
    let wait = openchatd::realtime::TYPING_TIMEOUT + Duration::from_secs(3);
    let stopped: Json = a
        .wait_for("chat.typing.updated", wait, |f| {
            !f.bool_at("payload.is_typing")
        })
        .expect("the expiry frame");
    assert_eq!(stopped.str_at("payload.member.user_uid"), bob.uid());
    assert_eq!(stopped.str_at("payload.channel_id"), channel);
    assert_eq!(
        stopped.str_at("server_id"),
        server_id,
        "{}",
        encode(&stopped)
    );
}
