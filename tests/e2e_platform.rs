//! End-to-end tests of the platform: a real server with two shards on a free port, on embedded
//! SQLite and on Postgres, spoken to over real sockets with raw HTTP/1.1.

mod support;

use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use openchatd::api::Shard;
use openchatd::api::{Handler, HandlerFuture, RequestCtx};
use openchatd::http::{Method, Request, Response, Router};
use openchatd::runtime::websocket::{RealtimeSocket, RealtimeTuning, Session};
use openchatd::wire::realtime::encode_frame;
use simd_json::prelude::*;
use support::http::{Conn, get};
use support::server::{Engine, Place, start, start_in, start_with};

// The binary runs on mimalloc; so does this test, so memory measured here is what production
// would see.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use support::on_both_engines;

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
    _: std::rc::Rc<openchatd::api::Shard>,
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

/// Timings short enough to watch in a test: a ping every 200 ms, dropped after 1 s of silence.
const QUICK: RealtimeTuning = RealtimeTuning {
    ping_interval: Duration::from_millis(200),
    idle_timeout: Duration::from_secs(1),
    outbox_max_frames: 64,
    outbox_max_bytes: 256 * 1024,
};

/// Production timings with a small outbox, so a slow consumer overflows quickly.
const SMALL_OUTBOX: RealtimeTuning = RealtimeTuning {
    ping_interval: openchatd::runtime::websocket::PING_INTERVAL,
    idle_timeout: openchatd::runtime::websocket::IDLE_TIMEOUT,
    outbox_max_frames: 64,
    outbox_max_bytes: 256 * 1024,
};

/// A realtime test socket. Text `stream N SIZE` makes another task push N frames
/// `test.chunk {seq, pad}` of about SIZE bytes, then `test.done`, pausing as a fan-out would;
/// `close` closes from the server side; anything else comes back as `test.echo {text}`.
async fn realtime_session(shard: Rc<Shard>, session: Session, tuning: RealtimeTuning) {
    let mut socket = RealtimeSocket::with_tuning(session, &shard, tuning);
    let handle = socket.handle();
    while let Some(text) = socket.next_client_text().await {
        let words: Vec<&str> = text.split(' ').collect();
        match words[..] {
            ["stream", count, size] => {
                let (count, size): (u64, usize) = (count.parse().unwrap(), size.parse().unwrap());
                let handle = handle.clone();
                glommio::spawn_local(async move {
                    let pad = "x".repeat(size);
                    for seq in 0..count {
                        let payload = format!(r#"{{"seq":{seq},"pad":"{pad}"}}"#);
                        let frame =
                            encode_frame("test.chunk", payload.as_bytes(), Some(seq), "srv", "t");
                        if handle.push(frame).is_err() {
                            return;
                        }
                        if seq % 8 == 7 {
                            // Events arrive over time; a pause also lets the executor poll
                            // for writable sockets, which a busy task queue defers.
                            glommio::timer::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    let _ = handle.push(encode_frame("test.done", b"{}", None, "srv", "t"));
                })
                .detach();
            }
            ["close"] => handle.close(),
            _ => {
                let payload = format!(r#"{{"text":{}}}"#, simd_json::to_string(&text).unwrap());
                let _ = handle.push(encode_frame(
                    "test.echo",
                    payload.as_bytes(),
                    None,
                    "srv",
                    "t",
                ));
            }
        }
    }
}

fn realtime_quick(
    shard: Rc<Shard>,
    _: Request,
    session: Session,
) -> Pin<Box<dyn Future<Output = ()>>> {
    Box::pin(realtime_session(shard, session, QUICK))
}

fn realtime_small_outbox(
    shard: Rc<Shard>,
    _: Request,
    session: Session,
) -> Pin<Box<dyn Future<Output = ()>>> {
    Box::pin(realtime_session(shard, session, SMALL_OUTBOX))
}

/// A realtime socket with production settings that only waits for the client.
fn realtime_idle(
    shard: Rc<Shard>,
    _: Request,
    session: Session,
) -> Pin<Box<dyn Future<Output = ()>>> {
    Box::pin(async move {
        let mut socket = RealtimeSocket::new(session, &shard);
        while socket.next_client_text().await.is_some() {}
    })
}

fn test_routes(r: &mut Router<Handler>) {
    r.route(Method::Get, "/test/panic", Handler::Async(panicking));
    r.route(Method::Get, "/test/slow", Handler::Async(slow));
    r.route(Method::Get, "/test/echo", Handler::WebSocket(echo));
    r.route(
        Method::Get,
        "/test/realtime",
        Handler::WebSocket(realtime_quick),
    );
    r.route(
        Method::Get,
        "/test/realtime-small",
        Handler::WebSocket(realtime_small_outbox),
    );
    r.route(
        Method::Get,
        "/test/realtime-idle",
        Handler::WebSocket(realtime_idle),
    );
}

fn upgrade_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").into_bytes()
}

type Client = tungstenite::WebSocket<std::net::TcpStream>;

/// A WebSocket client connected to `path`.
fn ws_client(addr: SocketAddr, path: &str) -> Client {
    let mut conn = Conn::open(addr);
    conn.send(&upgrade_request(path));
    assert_eq!(conn.read_head_reply().expect("101").status, 101);
    let leftover = conn.take_buffered();
    tungstenite::WebSocket::from_partially_read(
        conn.stream,
        leftover,
        tungstenite::protocol::Role::Client,
        None,
    )
}

/// The next text frame as JSON, answering pings on the way; `None` when the socket ends.
fn next_json(ws: &mut Client) -> Option<simd_json::OwnedValue> {
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Text(text)) => {
                return Some(simd_json::to_owned_value(&mut text.as_bytes().to_vec()).unwrap());
            }
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

fn frame_type(frame: &simd_json::OwnedValue) -> &str {
    frame.get("type").and_then(|t| t.as_str()).unwrap()
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
        let gauge = |name: &str| -> u64 {
            let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name}:\n{text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert!(gauge("openchat_process_resident_memory_bytes") > 1 << 20, "{text}");
        assert!(gauge("openchat_process_open_fds") > 2, "a listener and the scrape's connection at least: {text}");
        assert_eq!(gauge("openchat_authority_queue_depth"), 0, "nothing waits while idle: {text}");
        for shard in 0..2 {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("openchat_http_requests_total{{shard=\"{shard}\"}}")))
                .unwrap_or_else(|| panic!("no counter for shard {shard}:\n{text}"));
            let count: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(count > 0, "shard {shard} served nothing: {text}");
        }
    };

    metrics_count_routes_statuses_commits_and_socket_closes => |engine| {
        let server = start_with(engine, &[("OPENCHAT_AUTH_MODE", "headers")], test_routes);
        for _ in 0..5 {
            assert_eq!(get(server.addr, "/healthz").status, 200);
        }
        assert_eq!(get(server.addr, "/v1/nope").status, 404);
        assert_eq!(get(server.addr, "/v1/servers").status, 200);
        // A write: a new server.
        let mut conn = Conn::open(server.addr);
        conn.send(b"POST /v1/servers HTTP/1.1\r\nHost: a\r\nX-OpenChat-User-UID: uid_metrics\r\nX-OpenChat-Device-ID: dev_metrics\r\nContent-Type: application/json\r\nContent-Length: 24\r\n\r\n{\"display_name\":\"Books\"}");
        let created = conn.read_reply().unwrap();
        assert_eq!(created.status, 201, "{}", created.text());
        // A realtime socket the client closes.
        let mut ws = ws_client(server.addr, "/test/realtime");
        ws.close(None).unwrap();
        while ws.read().is_ok() {}
        let deadline = Instant::now() + Duration::from_secs(5);
        let text = loop {
            let text = get(server.addr, "/metrics").text();
            if text.contains("openchat_realtime_socket_closes_total{reason=\"peer_closed\"} 1\n") || Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let value = |series: &str| -> u64 {
            text.lines()
                .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or_else(|| panic!("no {series}:\n{text}"))
        };
        assert!(value("openchat_http_responses_total{route=\"probe\",status=\"2xx\"}") >= 5, "{text}");
        assert_eq!(value("openchat_http_responses_total{route=\"other\",status=\"4xx\"}"), 1, "{text}");
        assert_eq!(value("openchat_http_responses_total{route=\"servers\",status=\"2xx\"}"), 2, "{text}");
        assert_eq!(value("openchat_http_request_duration_seconds_count{route=\"servers\"}"), 2, "{text}");
        // The upgrade counts as a 1xx of its class (the test endpoint is outside /v1: other).
        assert_eq!(value("openchat_http_responses_total{route=\"other\",status=\"1xx\"}"), 1, "{text}");
        assert_eq!(value("openchat_realtime_socket_closes_total{reason=\"peer_closed\"}"), 1, "{text}");
        // The create committed: the writer timed its batches, and the pool is there.
        let commits = value("openchat_storage_commit_duration_seconds_count");
        assert!(commits >= 1, "{text}");
        assert_eq!(value("openchat_storage_commit_duration_seconds_bucket{le=\"+Inf\"}"), commits);
        assert_eq!(value("openchat_storage_writes_failed_total"), 0, "{text}");
        assert!(value("openchat_storage_pool_max_connections") >= 1, "{text}");
        let pool = value("openchat_storage_pool_connections{state=\"busy\"}")
            + value("openchat_storage_pool_connections{state=\"idle\"}");
        assert!(pool >= 1 && pool <= value("openchat_storage_pool_max_connections"), "{text}");
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
fn realtime_sockets_ping_echo_and_drop_the_silent() {
    let server = start_with(Engine::Sqlite, &[], test_routes);

    // A client that reads gets pings, answers them, and outlives the idle timeout.
    let mut alive = ws_client(server.addr, "/test/realtime");
    alive
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // Meanwhile a client that never sends anything, not even a pong, is dropped.
    let mut silent = Conn::open(server.addr);
    silent.send(&upgrade_request("/test/realtime"));
    assert_eq!(silent.read_head_reply().unwrap().status, 101);
    let silent_since = Instant::now();

    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < QUICK.idle_timeout * 2 + Duration::from_millis(500) {
        match alive.read() {
            Ok(tungstenite::Message::Ping(_)) => pings += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("the answering client was dropped: {e}"),
        }
    }
    assert!(pings >= 5, "pings every 200 ms, got {pings}");
    alive
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    alive
        .send(tungstenite::Message::text("héllo \"you\""))
        .unwrap();
    let echo = next_json(&mut alive).unwrap();
    assert_eq!(frame_type(&echo), "test.echo");
    assert_eq!(
        echo.get("payload")
            .and_then(|p| p.get("text"))
            .and_then(|t| t.as_str()),
        Some("héllo \"you\"")
    );
    assert!(echo.get("event_id").is_some_and(|e| e.is_null()));

    assert!(
        silent.closed_within(Duration::from_secs(3)),
        "the silent client was not dropped"
    );
    let waited = silent_since.elapsed();
    assert!(
        waited >= QUICK.idle_timeout - Duration::from_millis(100),
        "{waited:?}"
    );

    // The server closing a socket through its handle sends close code 1000.
    alive.send(tungstenite::Message::text("close")).unwrap();
    let close = loop {
        match alive.read() {
            Ok(tungstenite::Message::Close(frame)) => break frame,
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(
        close.map(|f| f.code),
        Some(tungstenite::protocol::frame::coding::CloseCode::Normal)
    );
}

#[test]
fn a_realtime_frame_over_the_limit_closes_the_socket() {
    let server = start_with(Engine::Sqlite, &[], test_routes);
    let mut conn = Conn::open(server.addr);
    conn.send(&upgrade_request("/test/realtime-small"));
    assert_eq!(conn.read_head_reply().unwrap().status, 101);
    let _ = conn
        .stream
        .write_all(&client_frame(0x1, &vec![b'x'; 70 * 1024]));
    assert!(conn.closed_within(Duration::from_secs(3)));

    // A frame at the limit is fine.
    let mut ws = ws_client(server.addr, "/test/realtime-small");
    let text = "y".repeat(openchatd::runtime::websocket::MAX_FRAME_BYTES - 20);
    ws.send(tungstenite::Message::text(text.clone())).unwrap();
    let echo = next_json(&mut ws).unwrap();
    assert_eq!(
        echo.get("payload")
            .and_then(|p| p.get("text"))
            .and_then(|t| t.as_str()),
        Some(text.as_str())
    );
}

#[test]
fn a_slow_consumer_is_dropped_while_others_keep_receiving() {
    // One shard, so both sockets share it: the slow one must not hold the other back.
    let server = start_with(Engine::Sqlite, &[("OPENCHAT_SHARDS", "1")], test_routes);
    // About 9 MiB each: more than the kernel buffers of the slow path hold (about 3 MiB here).
    const FRAMES: u64 = 8_000;
    const PAD: usize = 1024;

    // Receive buffers are fixed (no autotuning to tens of MiB): the slow reader's is small, so
    // what the server cannot write piles up in its outbox soon; the fast reader's absorbs a
    // few hundred milliseconds of this test thread not being scheduled.
    let client = |receive_buffer: usize| {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(receive_buffer).unwrap();
        socket.connect(&server.addr.into()).unwrap();
        tungstenite::WebSocket::from_raw_socket(
            handshake(socket.into(), "/test/realtime-small"),
            tungstenite::protocol::Role::Client,
            None,
        )
    };
    let mut slow = client(4096);
    let mut fast = client(1024 * 1024);
    slow.send(tungstenite::Message::text(format!("stream {FRAMES} {PAD}")))
        .unwrap();
    fast.send(tungstenite::Message::text(format!("stream {FRAMES} {PAD}")))
        .unwrap();

    // The fast reader gets every frame, in order, then the end marker.
    for expected in 0..FRAMES {
        let frame = next_json(&mut fast)
            .unwrap_or_else(|| panic!("the fast reader was dropped after {expected} frames"));
        assert_eq!(frame_type(&frame), "test.chunk");
        assert_eq!(
            frame
                .get("payload")
                .and_then(|p| p.get("seq"))
                .and_then(|s| s.as_u64()),
            Some(expected)
        );
        assert_eq!(
            frame.get("event_id").and_then(|e| e.as_u64()),
            Some(expected)
        );
    }
    assert_eq!(frame_type(&next_json(&mut fast).unwrap()), "test.done");

    // The slow reader, reading only now, finds what the kernel buffered and then the end of
    // the connection: it was dropped, and never got the end marker.
    slow.get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut received = 0u64;
    loop {
        match slow.read() {
            Ok(tungstenite::Message::Text(text)) => {
                assert!(
                    !text.as_str().contains("test.done"),
                    "the slow reader was never dropped"
                );
                received += 1;
            }
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the slow reader is still connected after {received} frames")
            }
            Err(_) => break,
        }
    }
    assert!(received < FRAMES, "{received}");
    // The operator sees the drop on /metrics as a slow consumer.
    let text = get(server.addr, "/metrics").text();
    assert!(
        text.contains("openchat_realtime_socket_closes_total{reason=\"slow_consumer\"} 1\n"),
        "{text}"
    );

    // And the server goes on serving.
    let mut ws = ws_client(server.addr, "/test/realtime-small");
    ws.send(tungstenite::Message::text("still here")).unwrap();
    assert_eq!(frame_type(&next_json(&mut ws).unwrap()), "test.echo");
}

#[test]
fn a_client_that_pings_without_reading_is_dropped() {
    let server = start_with(Engine::Sqlite, &[], test_routes);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut stream = handshake(socket.into(), "/test/realtime-small");
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // Every ping asks for a pong that cannot be written: the pongs must not pile up forever.
    let batch = client_frame(0x9, &[b'p'; 125]).repeat(1000);
    let mut refused = false;
    for _ in 0..400 {
        if stream.write_all(&batch).is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "the server kept reading pings it could not answer");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) => {
                assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "still open");
                break;
            }
        }
    }
}

#[test]
fn shutdown_closes_realtime_sockets_with_going_away() {
    let mut server = start_with(Engine::Sqlite, &[], test_routes);
    let mut clients: Vec<Client> = (0..4)
        .map(|_| ws_client(server.addr, "/test/realtime-small"))
        .collect();
    for ws in &mut clients {
        ws.send(tungstenite::Message::text("ready?")).unwrap();
        assert_eq!(frame_type(&next_json(ws).unwrap()), "test.echo");
    }
    let started = Instant::now();
    let running = server.server.take().unwrap();
    let stopping = std::thread::spawn(move || running.stop());
    for ws in &mut clients {
        let close = loop {
            match ws.read() {
                Ok(tungstenite::Message::Close(frame)) => break frame,
                Ok(_) => continue,
                Err(e) => panic!("no close frame: {e}"),
            }
        };
        assert_eq!(
            close.map(|f| f.code),
            Some(tungstenite::protocol::frame::coding::CloseCode::Away)
        );
    }
    stopping.join().unwrap().expect("clean stop");
    // The grace time is 3 s: sockets that ignored shutdown would have held the stop that long.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// Resident memory of this process, in bytes.
fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Upgrades `stream` to a WebSocket on `path`, reading the answer byte by byte so that nothing
/// past the head is consumed.
fn handshake(mut stream: std::net::TcpStream, path: &str) -> std::net::TcpStream {
    stream.write_all(&upgrade_request(path)).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "closed during the handshake"
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// Opens a realtime socket with a raw client that holds nothing but its descriptor.
fn open_idle_socket(addr: SocketAddr) -> std::net::TcpStream {
    handshake(
        std::net::TcpStream::connect(addr).unwrap(),
        "/test/realtime-idle",
    )
}

/// Measures the resident memory of idle realtime sockets (both ends are in this process; the
/// client end holds only a descriptor). Run with
/// `cargo test --release --test e2e_platform idle_realtime_socket_memory -- --ignored --nocapture`.
/// Needs about 2 descriptors per socket (see `ulimit -n`).
#[test]
#[ignore]
fn idle_realtime_socket_memory() {
    const SOCKETS: usize = 9_000;
    let server = start_with(Engine::Sqlite, &[], test_routes);
    let mut streams: Vec<std::net::TcpStream> =
        (0..200).map(|_| open_idle_socket(server.addr)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_bytes();
    streams.reserve(SOCKETS);
    let started = Instant::now();
    for _ in 0..SOCKETS {
        streams.push(open_idle_socket(server.addr));
    }
    let opened_in = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_bytes();
    let per_socket = (after.saturating_sub(before)) as f64 / SOCKETS as f64;
    println!(
        "{SOCKETS} idle realtime sockets opened in {opened_in:?}: RSS {} -> {} KiB, {:.0} bytes ({:.1} KiB) per socket",
        before / 1024,
        after / 1024,
        per_socket,
        per_socket / 1024.0
    );
    assert!(
        per_socket < 20.0 * 1024.0,
        "{per_socket} bytes per idle socket"
    );
    drop(streams);
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

/// Every `openchat_*` series and grouping label the shipped Grafana dashboard reads is one a
/// running server exports on `/metrics` (a renamed metric would otherwise leave a silently
/// empty panel).
#[test]
fn the_dashboard_reads_only_exported_series() {
    let server = start(Engine::Sqlite);
    // Labelled series appear once they count something.
    assert_eq!(get(server.addr, "/healthz").status, 200);
    let text = get(server.addr, "/metrics").text();
    let mut families = std::collections::HashSet::new();
    let mut labels: std::collections::HashSet<String> =
        ["le", "job", "instance"].map(String::from).into();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split(' ');
            let name = words.next().unwrap().to_owned();
            if words.next() == Some("histogram") {
                for suffix in ["_bucket", "_sum", "_count"] {
                    families.insert(format!("{name}{suffix}"));
                }
            }
            families.insert(name);
        } else if let Some((_, rest)) = line.split_once('{') {
            for pair in rest.split("\",") {
                if let Some((label, _)) = pair.split_once('=') {
                    labels.insert(label.to_owned());
                }
            }
        }
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/openchat-backend/files/dashboards/openchatd.json"
    );
    let mut raw = std::fs::read(path).unwrap();
    let dashboard = simd_json::to_owned_value(&mut raw).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    fn walk(value: &simd_json::OwnedValue, out: &mut Vec<String>) {
        match value {
            simd_json::OwnedValue::Object(map) => {
                for (key, v) in map.iter() {
                    match (key.as_str(), v.as_str()) {
                        ("expr" | "query", Some(q)) => out.push(q.to_owned()),
                        _ => walk(v, out),
                    }
                }
            }
            simd_json::OwnedValue::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&dashboard, &mut queries);
    assert!(queries.len() > 30, "{} queries", queries.len());
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut read = 0;
    for query in &queries {
        let mut rest = query.as_str();
        while let Some(at) = rest.find("openchat_") {
            let name: String = rest[at..].chars().take_while(|c| ident(*c)).collect();
            assert!(
                families.contains(&name),
                "{name} (in {query}) is not exported:\n{text}"
            );
            read += 1;
            rest = &rest[at + name.len()..];
        }
        let mut rest = query.as_str();
        while let Some(at) = rest.find(" by (") {
            let group = &rest[at + 5..];
            let end = group.find(')').expect("a closed group");
            for label in group[..end].split(',').map(str::trim) {
                assert!(
                    labels.contains(label),
                    "label {label} (in {query}) is not exported"
                );
            }
            rest = &group[end..];
        }
    }
    assert!(read >= 37, "{read} series read");
}
