//! End-to-end tests of the platform: a real server with two shards on a free port, on embedded
//! SQLite and on Postgres, spoken to over real sockets with raw HTTP/1.1.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use openchatd::api::{Handler, HandlerFuture, RequestCtx};
use openchatd::http::{Method, Response, Router};
use simd_json::prelude::*;
use support::http::{Conn, get};
use support::server::{Engine, Place, start, start_in, start_with};

/// Runs the test body once per storage engine.
macro_rules! on_both_engines {
    ($($name:ident => $body:expr;)*) => {$(
        mod $name {
            use super::*;
            #[test]
            fn sqlite() {
                ($body)(Engine::Sqlite)
            }
            #[test]
            fn postgres() {
                ($body)(Engine::Postgres)
            }
        }
    )*};
}

fn panicking<'a>(_: &'a RequestCtx<'a>) -> HandlerFuture<'a> {
    Box::pin(async { panic!("handler bug on purpose") })
}

fn slow<'a>(_: &'a RequestCtx<'a>) -> HandlerFuture<'a> {
    Box::pin(async {
        glommio::timer::sleep(Duration::from_millis(700)).await;
        Ok(Response::json(200, &br#"{"slow":true}"#[..]))
    })
}

/// Echoes text messages until the client goes away.
fn echo(
    _: std::rc::Rc<openchatd::runtime::shard::Shard>,
    _: openchatd::http::Request,
    mut session: openchatd::runtime::websocket::Session,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
    Box::pin(async move {
        while let Some(message) = session.recv().await {
            if session.send(message).await.is_err() {
                break;
            }
        }
    })
}

fn test_routes(r: &mut Router<Handler>) {
    r.route(Method::Get, "/test/panic", Handler::Async(panicking));
    r.route(Method::Get, "/test/slow", Handler::Async(slow));
    r.route(Method::Get, "/test/echo", Handler::WebSocket(echo));
}

/// A client frame (clients must mask): FIN, `opcode`, and the payload.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x1f, 0x2e, 0x3d, 0x4c];
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

const UPGRADE: &[u8] = b"GET /test/echo HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

on_both_engines! {
    probes_answer_json_with_cors => |engine| {
        let server = start(engine);
        let health = get(server.addr, "/healthz");
        assert_eq!(health.status, 200);
        health.assert_cors();
        assert_eq!(health.json().get("status").and_then(|v| v.as_str()), Some("ok"));
        assert_eq!(health.header("content-type"), Some("application/json"));
        assert!(health.header("date").is_some_and(|d| d.ends_with(" GMT")));

        let ready = get(server.addr, "/readyz");
        assert_eq!(ready.status, 200, "{}", ready.text());
        ready.assert_cors();
        let expected = if engine == Engine::Sqlite { "sqlite" } else { "postgres" };
        assert_eq!(ready.json().get("storage").and_then(|v| v.as_str()), Some(expected));
    };

    capabilities_are_complete_and_the_default_server_id_is_stable => |engine| {
        let server = start(engine);
        let first = get(server.addr, "/v1/client/capabilities");
        assert_eq!(first.status, 200);
        first.assert_cors();
        let fallback = get(server.addr, "/client/capabilities");
        assert_eq!(first.body, fallback.body, "both paths serve the same document");
        let doc = first.json();
        for key in ["transport", "features", "limits", "security", "rtc", "profile"] {
            assert!(doc.get(key).and_then(|v| v.as_object()).is_some(), "{key} missing");
        }
        let rtc = doc.get("rtc").unwrap();
        for key in ["features", "connection_policy", "subscribe_receive_policy"] {
            assert!(rtc.get(key).and_then(|v| v.as_object()).is_some(), "rtc.{key} missing");
        }
        assert_eq!(rtc.get("ice_servers").unwrap().as_array().unwrap()[0].get("urls").unwrap().as_array().unwrap().len(), 5);
        let signaling = rtc.get("signaling_url").and_then(|v| v.as_str()).unwrap();
        assert!(signaling.starts_with("ws://") && signaling.ends_with("/v1/rtc/signaling"), "{signaling}");
        assert_eq!(doc.get("build_commit").and_then(|v| v.as_str()), Some(openchatd::build_info::COMMIT));
        let server_id = doc.get("server_id").and_then(|v| v.as_str()).unwrap().to_string();
        assert!(!server_id.is_empty());

        // A restart on the same data keeps the generated default server id.
        let place = server.stop();
        let again = start_in(place, None, &[], |_| {});
        let doc = get(again.addr, "/v1/client/capabilities").json();
        assert_eq!(doc.get("server_id").and_then(|v| v.as_str()), Some(server_id.as_str()));
    };

    keep_alive_and_pipelining => |engine| {
        let server = start(engine);
        let mut conn = Conn::open(server.addr);
        for _ in 0..50 {
            assert_eq!(conn.get("/healthz").status, 200);
        }
        // Three requests in one write come back in order on the same connection.
        conn.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /nope HTTP/1.1\r\nHost: a\r\n\r\nGET /readyz HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(conn.read_reply().unwrap().status, 200);
        conn.read_reply().unwrap().assert_error(404, "not_found");
        assert_eq!(conn.read_reply().unwrap().status, 200);
        // HEAD gets the headers only.
        conn.send(b"HEAD /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
        let head = conn.read_head_reply().unwrap();
        assert_eq!(head.header("content-length"), Some("15"));
        assert_eq!(conn.get("/healthz").status, 200, "the connection is still in step after HEAD");
        // `Connection: close` is honoured.
        conn.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        assert_eq!(conn.read_reply().unwrap().header("connection"), Some("close"));
        assert!(conn.closed_within(Duration::from_secs(2)));
    };

    errors_are_json_with_cors_and_options_is_204 => |engine| {
        let server = start(engine);
        get(server.addr, "/v1/nowhere").assert_error(404, "not_found");
        let mut conn = Conn::open(server.addr);
        conn.send(b"DELETE /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
        let reply = conn.read_reply().unwrap();
        reply.assert_error(405, "method_not_allowed");
        assert!(reply.header("allow").unwrap().contains("GET"));
        conn.send(b"OPTIONS /v1/servers/x/ownership:claim HTTP/1.1\r\nHost: a\r\nOrigin: null\r\nAccess-Control-Request-Method: POST\r\n\r\n");
        let preflight = conn.read_reply().unwrap();
        assert_eq!(preflight.status, 204);
        preflight.assert_cors();
    };

    request_bodies_are_consumed_in_both_framings => |engine| {
        let server = start(engine);
        let mut conn = Conn::open(server.addr);
        conn.send(b"POST /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
        conn.read_reply().unwrap().assert_error(405, "method_not_allowed");
        conn.send(b"PUT /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world");
        conn.read_reply().unwrap().assert_error(405, "method_not_allowed");
        assert_eq!(conn.get("/healthz").status, 200, "both bodies were consumed exactly");
        // Expect: 100-continue gets the interim response before the body is sent.
        conn.send(b"PUT /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!(conn.read_reply().unwrap().status, 100);
        conn.send(b"data");
        conn.read_reply().unwrap().assert_error(405, "method_not_allowed");
    };

    connections_spread_over_both_shards => |engine| {
        let server = start(engine);
        for _ in 0..40 {
            assert_eq!(get(server.addr, "/healthz").status, 200);
        }
        let metrics = get(server.addr, "/metrics");
        assert_eq!(metrics.status, 200);
        let text = metrics.text();
        assert!(text.contains("openchat_shards_unresponsive 0"), "{text}");
        for shard in 0..2 {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("openchat_http_requests_total{{shard=\"{shard}\"}}")))
                .unwrap_or_else(|| panic!("no counter for shard {shard}:\n{text}"));
            let count: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(count > 0, "shard {shard} served nothing: {text}");
        }
    };

    a_panicking_handler_does_not_take_the_shard_down => |engine| {
        let server = start_with(engine, &[], test_routes);
        for _ in 0..10 {
            let mut conn = Conn::open(server.addr);
            conn.get("/test/panic").assert_error(500, "internal");
            assert!(conn.closed_within(Duration::from_secs(2)), "the connection of a panicked request is closed");
        }
        for _ in 0..20 {
            assert_eq!(get(server.addr, "/healthz").status, 200);
        }
        let text = get(server.addr, "/metrics").text();
        let panics: u64 = text
            .lines()
            .filter(|l| l.starts_with("openchat_panics_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(panics, 10, "{text}");
    };

    shutdown_drains_in_flight_requests => |engine| {
        let server = start_with(engine, &[], test_routes);
        let addr = server.addr;
        let mut idle = Conn::open(addr);
        assert_eq!(idle.get("/healthz").status, 200);
        let mut busy = Conn::open(addr);
        busy.send(b"GET /test/slow HTTP/1.1\r\nHost: a\r\n\r\n");
        std::thread::sleep(Duration::from_millis(150));
        let started = Instant::now();
        let handle = server.server.as_ref().unwrap().shutdown_handle();
        handle.trigger();
        let reply = busy.read_reply().expect("the in-flight request is answered");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("connection"), Some("close"));
        assert!(idle.closed_within(Duration::from_secs(2)), "idle keep-alive connections are closed");
        let _place = server.stop();
        assert!(started.elapsed() < Duration::from_secs(3), "drained in {:?}", started.elapsed());
        assert!(std::net::TcpStream::connect(addr).is_err(), "no longer accepting");
    };

    malformed_requests_get_an_error_and_a_closed_connection => |engine| {
        let server = start_with(engine, &[("OPENCHAT_HTTP_MAX_BODY_BYTES", "1048576"), ("OPENCHAT_MAX_UPLOAD_BYTES", "1000000")], |_| {});
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (b"GET /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(), 400),
            (b"POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello".to_vec(), 400),
            (b"POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n".to_vec(), 400),
            (b"POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n".to_vec(), 413),
            (b"POST /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n".to_vec(), 400),
            (b"GET /healthz HTTP/1.1\r\n\r\n".to_vec(), 400),
            (b"GET http://evil/healthz HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage-that-looks-like-tls\r\n\r\n".to_vec(), 400),
            (format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(20_000)).into_bytes(), 431),
            ((0..120).fold(b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec(), |mut v, i| { v.extend(format!("X-H{i}: v\r\n").bytes()); v })
                .into_iter().chain(b"\r\n".iter().copied()).collect(), 431),
        ];
        for (bytes, status) in cases {
            let mut conn = Conn::open(server.addr);
            conn.send(&bytes);
            let reply = conn.read_reply().unwrap_or_else(|| panic!("no reply to {:?}", String::from_utf8_lossy(&bytes[..bytes.len().min(80)])));
            assert_eq!(reply.status, status, "for {:?}: {}", String::from_utf8_lossy(&bytes[..bytes.len().min(80)]), reply.text());
            reply.assert_cors();
            assert!(reply.json().get("code").is_some());
            assert!(conn.closed_within(Duration::from_secs(3)), "closed after {status}");
        }
        // A chunked body over the limit is cut off with 413 once it crosses it.
        let mut conn = Conn::open(server.addr);
        conn.send(b"POST /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        let chunk = format!("{:x}\r\n{}\r\n", 600_000, "x".repeat(600_000));
        let _ = conn.stream.write_all(chunk.as_bytes());
        let _ = conn.stream.write_all(chunk.as_bytes());
        conn.read_reply().unwrap().assert_error(413, "payload_too_large");
        // Both shards still serve.
        for _ in 0..20 {
            assert_eq!(get(server.addr, "/healthz").status, 200);
        }
    };

    websocket_upgrade_keeps_the_bytes_sent_with_the_handshake => |engine| {
        let server = start_with(engine, &[], test_routes);
        // Handshake and first frame in one write: the frame must not be lost in the hand-over.
        let mut conn = Conn::open(server.addr);
        let mut bytes = UPGRADE.to_vec();
        bytes.extend(client_frame(0x1, b"first"));
        conn.send(&bytes);
        let reply = conn.read_head_reply().expect("101");
        assert_eq!(reply.status, 101);
        assert_eq!(reply.header("sec-websocket-accept"), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        let leftover = conn.take_buffered();
        let mut ws = tungstenite::WebSocket::from_partially_read(conn.stream, leftover, tungstenite::protocol::Role::Client, None);
        assert_eq!(ws.read().unwrap(), tungstenite::Message::text("first"));
        ws.send(tungstenite::Message::text("second")).unwrap();
        assert_eq!(ws.read().unwrap(), tungstenite::Message::text("second"));
        ws.close(None).unwrap();

        // A frame over the 64 KiB limit closes the socket.
        let mut conn = Conn::open(server.addr);
        conn.send(UPGRADE);
        assert_eq!(conn.read_head_reply().unwrap().status, 101);
        let big = client_frame(0x1, &vec![b'x'; openchatd::runtime::websocket::MAX_FRAME_BYTES + 1]);
        let _ = conn.stream.write_all(&big);
        assert!(conn.closed_within(Duration::from_secs(3)));

        // A plain request to a WebSocket endpoint is told to upgrade.
        get(server.addr, "/test/echo").assert_error(426, "upgrade_required");
        assert_eq!(get(server.addr, "/healthz").status, 200);
    };

    a_slowloris_connection_is_closed => |engine| {
        let server = start(engine);
        let mut conn = Conn::open(server.addr);
        conn.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\n");
        let started = Instant::now();
        // The head never completes: the server answers 408 and closes after the header timeout.
        let reply = conn.read_reply().expect("a 408 before closing");
        reply.assert_error(408, "request_timeout");
        let waited = started.elapsed();
        assert!(waited >= openchatd::http::limits::HEADER_READ_TIMEOUT - Duration::from_millis(500), "{waited:?}");
        assert!(waited < openchatd::http::limits::HEADER_READ_TIMEOUT + Duration::from_secs(3), "{waited:?}");
        assert!(conn.closed_within(Duration::from_secs(2)));
    };
}

#[test]
fn readiness_follows_the_database_and_recovers_by_itself() {
    let place = Place::new(Engine::Postgres);
    let mut proxy = support::proxy::Proxy::start(place.db.as_ref().unwrap().server_addr());
    let url = place.db.as_ref().unwrap().url_via(proxy.addr());
    let server = start_in(place, Some(&url), &[], |_| {});
    assert_eq!(get(server.addr, "/readyz").status, 200);

    proxy.stop();
    let started = Instant::now();
    let reply = get(server.addr, "/readyz");
    reply.assert_error(503, "storage_unavailable");
    assert_eq!(
        reply.json().get("retryable").and_then(|v| v.as_bool()),
        Some(true)
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "answered in {:?}",
        started.elapsed()
    );
    assert_eq!(
        get(server.addr, "/healthz").status,
        200,
        "liveness does not depend on the database"
    );

    proxy.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = get(server.addr, "/readyz");
        if reply.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "storage did not recover: {}",
            reply.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
