//! The whole pipeline against a tiny fake openchatd: std threads, a thread per connection,
//! just enough of the contract (capabilities, channels, message posts, realtime sockets that
//! get a ping at once, a presence snapshot on subscribe and every created message).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

use crate::args::{self, Command};
use crate::{fanout, idle, send};

const CHANNELS: &str = r#"{"groups":[{"id":"g_voice","label":"Voice","kind":"voice","channels":[{"id":"ch_voice","name":"Lounge","type":"voice"}]},{"id":"g_text","label":"Text","kind":"text","channels":[{"id":"ch_general","name":"general","type":"text"}]}]}"#;

#[derive(Default)]
struct Options {
    /// Answer the realtime upgrade with a 401.
    reject_realtime: bool,
    /// Do not deliver messages whose body starts with this to the first socket.
    drop_for_first_socket: Option<&'static str>,
}

#[derive(Default)]
struct State {
    options: Options,
    sockets: Mutex<Vec<Arc<Mutex<TcpStream>>>>,
    posts: AtomicU64,
    posts_without_identity: AtomicU64,
    post_uids: Mutex<HashSet<String>>,
    realtime_queries: Mutex<Vec<String>>,
    subscribes: AtomicU64,
    pongs: AtomicU64,
    events: AtomicU64,
}

struct Fake {
    addr: SocketAddr,
    state: Arc<State>,
}

impl Fake {
    fn start(options: Options) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            options,
            ..State::default()
        });
        let accept_state = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = accept_state.clone();
                std::thread::spawn(move || serve_connection(stream, state));
            }
        });
        Fake { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A server-to-client frame (unmasked, unfragmented).
fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= 0xffff => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame
}

fn event(state: &State, kind: &str, payload: &str) -> Vec<u8> {
    let id = state.events.fetch_add(1, SeqCst);
    server_frame(
        0x1,
        format!(
            r#"{{"type":"{kind}","payload":{payload},"event_id":{id},"server_id":"srv_fake","timestamp":"2026-01-01T00:00:00Z"}}"#
        )
        .as_bytes(),
    )
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    stream.write_all(
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

fn serve_connection(mut stream: TcpStream, state: Arc<State>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // one request head
        let (method, path, uid, device, key, head_len, body_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(head_len)) = request.parse(&buf) {
                let header = |name: &str| {
                    request
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).into_owned())
                };
                break (
                    request.method.unwrap_or("").to_string(),
                    request.path.unwrap_or("").to_string(),
                    header("x-openchat-user-uid"),
                    header("x-openchat-device-id"),
                    header("sec-websocket-key"),
                    head_len,
                    header("content-length").map_or(0, |v| v.parse::<usize>().unwrap()),
                );
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        while buf.len() < head_len + body_len {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let mut body = buf[head_len..head_len + body_len].to_vec();
        buf.drain(..head_len + body_len);

        let result = match (method.as_str(), path.as_str()) {
            ("GET", "/v1/client/capabilities") => respond(
                &mut stream,
                "200 OK",
                r#"{"server_name":"Fake","server_id":"srv_fake","transport":{"websocket":true}}"#,
            ),
            ("GET", "/v1/servers/srv_fake/channels") => {
                // chunked, in two chunks, to exercise the client's decoder
                let (a, b) = CHANNELS.split_at(40);
                stream.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                        a.len(),
                        b.len()
                    )
                    .as_bytes(),
                )
            }
            ("POST", "/v1/channels/ch_general/messages") => {
                let valid = |v: &Option<String>, prefix: &str| {
                    v.as_deref()
                        .is_some_and(|v| v.starts_with(prefix) && v.len() == prefix.len() + 8)
                };
                if !valid(&uid, "uid_") || !valid(&device, "desktop_") {
                    state.posts_without_identity.fetch_add(1, SeqCst);
                }
                state
                    .post_uids
                    .lock()
                    .unwrap()
                    .insert(uid.unwrap_or_default());
                let n = state.posts.fetch_add(1, SeqCst);
                #[derive(serde::Deserialize)]
                struct Post {
                    body: String,
                }
                let post: Post = simd_json::serde::from_slice(&mut body).unwrap();
                let message = format!(
                    r#"{{"id":"m_{n}","channel_id":"ch_general","author_uid":"uid_x","body":{},"created_at":"2026-01-01T00:00:00Z","mentions":[]}}"#,
                    simd_json::to_string(&post.body).unwrap()
                );
                let frame = event(
                    &state,
                    "chat.message.created",
                    &format!(r#"{{"message":{message}}}"#),
                );
                let skip_first = state
                    .options
                    .drop_for_first_socket
                    .is_some_and(|p| post.body.starts_with(p));
                for (i, socket) in state.sockets.lock().unwrap().iter().enumerate() {
                    if !(skip_first && i == 0) {
                        let _ = socket.lock().unwrap().write_all(&frame);
                    }
                }
                respond(
                    &mut stream,
                    "201 Created",
                    &format!(r#"{{"message":{message}}}"#),
                )
            }
            ("GET", p) if p.starts_with("/v1/realtime?") => {
                state.realtime_queries.lock().unwrap().push(p.to_string());
                if state.options.reject_realtime {
                    let _ = respond(
                        &mut stream,
                        "401 Unauthorized",
                        r#"{"code":"unauthenticated","message":"no","retryable":false}"#,
                    );
                    return;
                }
                let accept = tungstenite::handshake::derive_accept_key(key.unwrap().as_bytes());
                // the 101 and a first ping in one write: the client must keep the bytes
                // that follow the head
                let mut answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                )
                .into_bytes();
                answer.extend_from_slice(&server_frame(0x9, b"hi"));
                if stream.write_all(&answer).is_err() {
                    return;
                }
                let writer = Arc::new(Mutex::new(stream.try_clone().unwrap()));
                state.sockets.lock().unwrap().push(writer.clone());
                let mut ws = WebSocket::from_partially_read(stream, buf, Role::Server, None);
                loop {
                    match ws.read() {
                        Ok(Message::Text(text)) if text.contains("\"chat.subscribe\"") => {
                            state.subscribes.fetch_add(1, SeqCst);
                            let snapshot = event(
                                &state,
                                "chat.presence.snapshot",
                                r#"{"channel_id":"ch_general","members":[]}"#,
                            );
                            let _ = writer.lock().unwrap().write_all(&snapshot);
                        }
                        Ok(Message::Pong(p)) if p.as_ref() == b"hi" => {
                            state.pongs.fetch_add(1, SeqCst);
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            }
            _ => respond(&mut stream, "404 Not Found", r#"{"code":"not_found"}"#),
        };
        if result.is_err() {
            return;
        }
    }
}

fn command(line: &str) -> Command {
    let argv: Vec<String> = line.split_whitespace().map(String::from).collect();
    args::parse(&argv).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn fanout_delivers_every_frame_and_measures_it() {
    let fake = Fake::start(Options::default());
    let Command::Fanout(args) = command(&format!(
        "fanout --url {} --subscribers 20 --rate 200 --duration 1s --senders 2 --drain 3s",
        fake.url()
    )) else {
        panic!()
    };
    let report = runtime().block_on(fanout::run(&args)).unwrap();
    println!("{}", report.human());
    assert_eq!(report.channel_id, "ch_general", "the first text channel");
    assert_eq!(report.server_id, "srv_fake");
    assert_eq!(
        (report.subscribers_connected, report.subscriber_failures),
        (20, 0)
    );
    assert_eq!(report.snapshots, 20);
    assert_eq!(report.messages_scheduled, 200);
    assert_eq!(report.messages_committed, 200);
    assert_eq!(report.frames_expected, 4000);
    assert_eq!(report.frames_received, 4000);
    assert_eq!(
        (
            report.frames_missing,
            report.duplicate_frames,
            report.unexpected_frames
        ),
        (0, 0, 0)
    );
    assert_eq!(report.send_to_frame.count, 4000);
    assert_eq!(report.ack_to_frame.count, 4000);
    assert!(report.send_to_frame.p50_us > 0.0);
    assert!(report.ack_to_frame.max_us <= report.send_to_frame.max_us);
    assert_eq!(report.post_latency.count, 200);
    assert!(report.send_rate_achieved > 150.0 && report.send_rate_achieved < 250.0);
    assert_eq!(report.pings_answered, 20);
    assert!(!report.failed());

    let state = &fake.state;
    assert_eq!(
        state.posts.load(SeqCst),
        202,
        "200 + one warm-up per sender"
    );
    assert_eq!(state.posts_without_identity.load(SeqCst), 0);
    assert_eq!(state.post_uids.lock().unwrap().len(), 2);
    assert_eq!(state.subscribes.load(SeqCst), 20);
    assert_eq!(
        state.pongs.load(SeqCst),
        20,
        "each socket answered the ping"
    );
    let queries = state.realtime_queries.lock().unwrap();
    let uids: HashSet<_> = queries
        .iter()
        .map(|q| q.split("user_uid=").nth(1).unwrap()[..12].to_string())
        .collect();
    assert_eq!(uids.len(), 20, "a distinct uid per subscriber");
    assert!(
        queries
            .iter()
            .all(|q| q.contains("server_id=srv_fake") && q.contains("device_id=desktop_"))
    );

    let json = simd_json::to_string(&report).unwrap();
    assert!(json.starts_with(r#"{"mode":"fanout""#), "{json}");
    assert!(json.contains(r#""frames_missing":0"#), "{json}");
    assert!(json.contains(r#""p999_us""#), "{json}");
}

#[test]
fn fanout_reports_a_missing_frame_loudly() {
    let fake = Fake::start(Options {
        drop_for_first_socket: Some("load:7/"),
        ..Options::default()
    });
    let Command::Fanout(args) = command(&format!(
        "fanout --url {} --subscribers 5 --rate 100 --duration 200ms --senders 1 --drain 500ms",
        fake.url()
    )) else {
        panic!()
    };
    let report = runtime().block_on(fanout::run(&args)).unwrap();
    assert_eq!(report.messages_committed, 20);
    assert_eq!(report.frames_expected, 100);
    assert_eq!(report.frames_received, 99);
    assert_eq!(report.frames_missing, 1);
    assert_eq!(report.subscribers_missing_frames, 1);
    assert!(report.failed());
    let human = report.human();
    assert!(
        human.contains("!!! FAILED: 1 of 100 expected frames MISSING"),
        "{human}"
    );
    assert!(human.contains("missed 1 frame(s): seq 7"), "{human}");
}

#[test]
fn send_counts_committed_messages_per_second() {
    let fake = Fake::start(Options::default());
    let Command::Send(args) = command(&format!(
        "send --url {} --connections 4 --users 2 --duration 500ms",
        fake.url()
    )) else {
        panic!()
    };
    let report = runtime().block_on(send::run(&args)).unwrap();
    println!("{}", report.human());
    assert_eq!(report.connected, 4);
    assert!(report.committed > 10, "{}", report.committed);
    assert_eq!(report.per_second.len(), 1);
    assert!(report.latency.count >= report.committed);
    assert!(report.statuses.is_empty());
    assert_eq!((report.transport_errors, report.timeouts), (0, 0));
    assert!(!report.failed());
    assert_eq!(fake.state.posts_without_identity.load(SeqCst), 0);
    let uids = fake.state.post_uids.lock().unwrap();
    assert_eq!(uids.len(), 2, "--users 2 spreads 4 connections over 2 uids");
    assert!(
        simd_json::to_string(&report)
            .unwrap()
            .contains(r#""mode":"send""#)
    );
}

#[test]
fn send_counts_other_statuses() {
    let fake = Fake::start(Options::default());
    let Command::Send(args) = command(&format!(
        "send --url {} --connections 2 --duration 200ms --channel ch_elsewhere",
        fake.url()
    )) else {
        panic!()
    };
    let report = runtime().block_on(send::run(&args)).unwrap();
    assert_eq!(report.committed, 0);
    assert!(report.statuses["404"] > 0);
    assert!(report.failed());
}

#[test]
fn idle_holds_sockets_answers_pings_and_reads_memory() {
    let fake = Fake::start(Options::default());
    let pid = std::process::id();
    let Command::Idle(args) = command(&format!(
        "idle --url {} --sockets 30 --hold 300ms --settle 100ms --server-pid {pid} --source-ips 2",
        fake.url()
    )) else {
        panic!()
    };
    let report = runtime().block_on(idle::run(&args, 1 << 20)).unwrap();
    println!("{}", report.human());
    assert_eq!((report.opened, report.failed), (30, 0));
    assert_eq!(report.closed_during_hold, 0);
    assert_eq!(report.pings_answered, 30);
    assert_eq!(report.source_ips, 2);
    assert!(report.server_rss_before_kib.is_some());
    assert!(report.server_rss_settled_kib.is_some());
    assert!(report.server_kib_per_socket.is_some());
    assert!(!report.failed());
    assert_eq!(fake.state.pongs.load(SeqCst), 30);
}

#[test]
fn idle_reports_refused_upgrades() {
    let fake = Fake::start(Options {
        reject_realtime: true,
        ..Options::default()
    });
    let Command::Idle(args) = command(&format!("idle --url {} --sockets 3 --hold 0s", fake.url()))
    else {
        panic!()
    };
    let report = runtime().block_on(idle::run(&args, 1 << 20)).unwrap();
    assert_eq!((report.opened, report.failed), (0, 3));
    assert!(report.failed());
    let failure = report.first_failure.unwrap();
    assert!(
        failure.contains("401") && failure.contains("unauthenticated"),
        "{failure}"
    );
}
