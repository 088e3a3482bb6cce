//! Attacks on request bodies (issue 9, items 2, 3 and 12b): memory is bounded before identity is
//! known, JSON bodies are small, uploads stream through temp files that never outlive their
//! request, blob downloads stream, connections are capped, and the blobs of a refused post are
//! removed. Every test runs a real server in this process over real sockets.
//!
//! The memory test reads this process's RSS, so the tests of this file run one at a time
//! (`SERIAL`): another test's 25 MiB bodies must not count against it.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use simd_json::json;
use simd_json::prelude::*;
use support::api::{Client, default_server_id};
use support::http::{Conn, get};
use support::json::{JsonPath, encode};
use support::media;
use support::multipart::Multipart;
use support::server::{Engine, PUBLIC_BASE_URL, TestServer, start_community};
use support::ws::{Ws, headers_query};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const MIB: usize = 1024 * 1024;
const UPLOAD: usize = 25 * MIB;

fn vm_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

/// The default server's first text channel, as seen by a member.
fn general(server: &TestServer) -> (Client, String) {
    let alice = Client::user(server.addr);
    let server_id = default_server_id(server.addr);
    let channel = alice.first_text_channel(&server_id);
    (alice, channel)
}

/// Reads one response head and body from a raw stream (status, body); `None` on EOF or reset.
/// Status, body and (lowercased) headers of one response.
type Answer = (u16, String, Vec<(String, String)>);

fn read_answer(stream: &mut TcpStream) -> Option<Answer> {
    let mut conn_buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head_len)) = parsed.parse(&conn_buf) {
            let status = parsed.code.unwrap();
            let headers: Vec<(String, String)> = parsed
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let len: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .map(|(_, v)| v.parse().unwrap())
                .unwrap_or(0);
            while conn_buf.len() < head_len + len {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => conn_buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body = String::from_utf8_lossy(&conn_buf[head_len..head_len + len]).into_owned();
            return Some((status, body, headers));
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => conn_buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn multipart_head(path: &str, identity: &str, len: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\n{identity}Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// Files under `<data_dir>/<sub>` (recursively), directories not counted.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Blob files (the temp folder of the blob store excluded).
fn blob_files(server: &TestServer) -> Vec<std::path::PathBuf> {
    let root = server.data_dir.as_ref().unwrap().path().join("blobs");
    files_under(&root)
        .into_iter()
        .filter(|p| !p.starts_with(root.join("tmp")))
        .collect()
}

fn upload_temp_files(server: &TestServer) -> Vec<std::path::PathBuf> {
    files_under(&server.data_dir.as_ref().unwrap().path().join("uploads"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 40 anonymous clients each declare and send a 25 MiB multipart post. Without identity the
/// server must answer 401 from the head and never buffer the bodies: RSS may not grow by more
/// than 400 MiB (it grew by 1.17 GB when every body was buffered).
#[test]
fn forty_anonymous_25_mib_uploads_do_not_grow_memory() {
    let _serial = serial();
    let server = start_community(Engine::Sqlite, &[]);
    let (_alice, channel) = general(&server);
    let path = format!("/v1/channels/{channel}/messages");
    let before = vm_rss_bytes();
    let peak = std::sync::Arc::new(AtomicU64::new(before));
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(vm_rss_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let addr = server.addr;
    // Every client sends its head and all but the last byte of its body, then waits for the
    // others: a server that buffers bodies now holds 40 of them at once.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(41));
    let clients: Vec<_> = (0..40)
        .map(|_| {
            let path = path.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                stream
                    .set_write_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                stream
                    .write_all(multipart_head(&path, "", UPLOAD).as_bytes())
                    .unwrap();
                let chunk = vec![b'a'; 256 * 1024];
                let mut sent = 0;
                let mut failed = false;
                while sent < UPLOAD - 1 {
                    let n = chunk.len().min(UPLOAD - 1 - sent);
                    if stream.write_all(&chunk[..n]).is_err() {
                        failed = true;
                        break;
                    }
                    sent += n;
                }
                barrier.wait();
                // Give the server time to take in what is on the wire before the last byte.
                std::thread::sleep(Duration::from_millis(500));
                if !failed && stream.write_all(b"-").is_ok() {
                    sent += 1;
                }
                (sent, read_answer(&mut stream).map(|(s, _, _)| s))
            })
        })
        .collect();
    barrier.wait();
    let answers: Vec<(usize, Option<u16>)> =
        clients.into_iter().map(|c| c.join().unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let growth = peak.load(Ordering::Relaxed).saturating_sub(before);
    eprintln!("RSS growth under the attack: {} MiB", growth / MIB as u64);
    assert!(
        growth <= 400 * MIB as u64,
        "RSS grew by {} MiB",
        growth / MIB as u64
    );
    for (sent, status) in &answers {
        assert!(
            matches!(status, None | Some(401)),
            "an anonymous upload got {status:?} after {sent} bytes"
        );
    }
    assert!(answers.iter().any(|(_, s)| *s == Some(401)), "{answers:?}");
    // The server still serves.
    assert_eq!(get(server.addr, "/healthz").status, 200);
}

/// Identity comes from the head: a post that needs identity and carries none (or a bearer
/// token that is not valid) is answered 401 at once, with the body still unsent, and the
/// connection closes.
#[test]
fn identity_is_checked_before_the_body_is_read() {
    let _serial = serial();
    let server = start_community(Engine::Sqlite, &[]);
    let (_alice, channel) = general(&server);
    let path = format!("/v1/channels/{channel}/messages");
    for identity in ["", "X-OpenChat-User-UID: not a uid!\r\n"] {
        let mut conn = Conn::open(server.addr);
        let started = Instant::now();
        conn.send(multipart_head(&path, identity, UPLOAD).as_bytes());
        let reply = conn
            .read_reply()
            .expect("answered before the body was sent");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(reply.status, 400 | 401), "{}", reply.text());
        reply.assert_cors();
        assert_eq!(
            reply.json().get("retryable").and_then(|v| v.as_bool()),
            Some(false)
        );
        assert_eq!(reply.header("connection"), Some("close"));
        assert!(conn.closed_within(Duration::from_secs(3)));
    }
    // Avatars and the other bodied endpoints too; session mode with a token nobody issued.
    let session = support::server::start_with(
        Engine::Sqlite,
        &[("OPENCHAT_PUBLIC_BASE_URL", PUBLIC_BASE_URL)],
        |_| {},
    );
    for (path, auth, json_len) in [
        (
            "/v1/profile/avatar",
            "Authorization: Bearer not-a-token\r\n",
            None,
        ),
        ("/v1/profile/avatar", "", None),
        // A JSON body over 64 KiB (and under the 1 MiB JSON limit) waits for identity too.
        (
            "/v1/servers",
            "Authorization: Bearer not-a-token\r\n",
            Some(900 * 1024),
        ),
    ] {
        let mut conn = Conn::open(session.addr);
        let head = match json_len {
            None => multipart_head(path, auth, UPLOAD),
            Some(len) => format!(
                "POST {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
            ),
        };
        conn.send(head.as_bytes());
        let reply = conn
            .read_reply()
            .expect("answered before the body was sent");
        reply.assert_error(
            401,
            if auth.is_empty() {
                "unauthorized"
            } else {
                "invalid_token"
            },
        );
        assert!(conn.closed_within(Duration::from_secs(3)));
    }
}

/// Bodies in flight share one byte budget: a request whose declared body does not fit is
/// answered 503 `server_busy` (retryable, with Retry-After) before its body is read; once the
/// budget is free again the same request goes through.
#[test]
fn the_body_budget_answers_503_before_reading() {
    let _serial = serial();
    let server = start_community(
        Engine::Sqlite,
        &[
            ("OPENCHAT_HTTP_MAX_BODY_BYTES", "2097152"),
            ("OPENCHAT_MAX_UPLOAD_BYTES", "2000000"),
            ("OPENCHAT_HTTP_BODY_BUDGET_BYTES", "3000000"),
        ],
    );
    let (alice, channel) = general(&server);
    let path = format!("/v1/channels/{channel}/messages");
    let identity = format!(
        "X-OpenChat-User-UID: {}\r\nX-OpenChat-Device-ID: {}\r\n",
        alice.uid(),
        alice.device()
    );
    // The first upload takes 2 MB of the 3 MB budget and keeps it while its body trickles.
    let mut holder = Conn::open(server.addr);
    holder.send(multipart_head(&path, &identity, 2_000_000).as_bytes());
    holder.send(b"--XyZ\r\n");
    std::thread::sleep(Duration::from_millis(200));
    let mut refused = Conn::open(server.addr);
    let started = Instant::now();
    refused.send(multipart_head(&path, &identity, 2_000_000).as_bytes());
    let reply = refused.read_reply().expect("answered from the head");
    assert!(started.elapsed() < Duration::from_secs(2));
    reply.assert_error(503, "server_busy");
    assert_eq!(
        reply.json().get("retryable").and_then(|v| v.as_bool()),
        Some(true)
    );
    assert!(reply.header("retry-after").is_some(), "{:?}", reply.headers);
    // Small JSON posts still fit beside it.
    alice.send(&channel, "still here");
    // The holder gives up; its budget comes back.
    drop(holder);
    std::thread::sleep(Duration::from_millis(300));
    let png = media::png(8, 8);
    let form = Multipart::new()
        .text("body", "after")
        .file("files", "a.png", "image/png", &png);
    let posted = alice.post_multipart(&path, form);
    assert_eq!(posted.status, 201, "{}", posted.text());
}

/// JSON endpoints take at most 1 MiB: four 25 MiB JSON bodies are refused with 413 from their
/// heads, and `/healthz` keeps answering fast while they are sent. A big layout still fits.
#[test]
fn json_bodies_are_small_and_do_not_stall_the_shard() {
    let _serial = serial();
    let server = start_community(Engine::Sqlite, &[]);
    let alice = Client::user(server.addr);
    let created = alice.create_server("Big Layouts");
    let server_id = created.str_at("server.server_id").to_owned();
    let token = created.str_at("ownership_claim.token").to_owned();
    let claimed = alice.post(
        &format!("/v1/servers/{server_id}/ownership:claim"),
        &json!({ "claim_token": token }),
    );
    assert_eq!(claimed.status, 200, "{}", claimed.text());
    let path = format!("/v1/servers/{server_id}/channel-layout");
    let identity = format!(
        "X-OpenChat-User-UID: {}\r\nX-OpenChat-Device-ID: {}\r\n",
        alice.uid(),
        alice.device()
    );
    let addr = server.addr;
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (path, identity) = (path.clone(), identity.clone());
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let head = format!(
                    "PUT {path} HTTP/1.1\r\nHost: test\r\n{identity}Content-Type: application/json\r\nContent-Length: {UPLOAD}\r\n\r\n"
                );
                stream.write_all(head.as_bytes()).unwrap();
                let mut body = b"{\"groups\":[".to_vec();
                body.resize(256 * 1024, b' ');
                let mut sent = 0;
                while sent < UPLOAD {
                    if stream.write_all(&body).is_err() {
                        break;
                    }
                    sent += body.len();
                }
                read_answer(&mut stream)
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    let probe_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < probe_until {
        let started = Instant::now();
        assert_eq!(get(addr, "/healthz").status, 200);
        slowest = slowest.max(started.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    for sender in senders {
        let (status, body, _) = sender.join().unwrap().expect("a 413 answer");
        assert_eq!(status, 413, "{body}");
        assert!(body.contains("payload_too_large"), "{body}");
    }
    assert!(
        slowest < Duration::from_millis(200),
        "/healthz took {slowest:?}"
    );

    // A layout body near the limit (padded to 900 KiB) is read and applied.
    let groups = alice.groups(&server_id);
    let layout: Vec<_> = groups
        .arr_at("groups")
        .iter()
        .map(|g| {
            let ids: Vec<String> = g
                .arr_at("channels")
                .iter()
                .map(|c| c.str_at("id").to_owned())
                .collect();
            json!({"id": g.str_at("id"), "channel_ids": ids})
        })
        .collect();
    let mut body = encode(&json!({ "groups": layout })).into_bytes();
    body.resize(900 * 1024, b' ');
    let reply = alice.request("PUT", &path, &[], Some(("application/json", &body)));
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Just over 1 MiB: 413.
    body.resize(MIB + 1, b' ');
    alice
        .request("PUT", &path, &[], Some(("application/json", &body)))
        .assert_error(413, "payload_too_large");
}

support::on_both_engines! {
    uploads_stream_through_temp_files_that_are_always_removed => |engine| {
        let _serial = serial();
        let server = start_community(engine, &[]);
        let (alice, channel) = general(&server);
        let path = format!("/v1/channels/{channel}/messages");
        let png = media::png(40, 30);
        let form = Multipart::new().text("body", "a picture").file("files", "p.png", "image/png", &png);
        let posted = alice.post_multipart(&path, form);
        assert_eq!(posted.status, 201, "{}", posted.text());
        let url = posted.json().str_at("message.attachments.0.url").to_owned();
        let attachment_path = url.strip_prefix(PUBLIC_BASE_URL).unwrap().to_owned();
        // Served in full, streamed from the file; HEAD gives the length without the body.
        let served = alice.get(&attachment_path);
        assert_eq!(served.status, 200);
        assert_eq!(served.body, png);
        assert_eq!(served.header("content-type"), Some("image/png"));
        let mut conn = Conn::open(server.addr);
        conn.send(format!("HEAD {attachment_path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        let head = conn.read_head_reply().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.header("content-length"), Some(png.len().to_string().as_str()));
        assert_eq!(conn.get("/healthz").status, 200, "nothing followed the HEAD answer");
        // Refused uploads: not an image, too many parts' worth, a broken form, a client that
        // stops halfway. None leaves a temp file behind.
        alice.post_multipart(&path, Multipart::new().file("files", "x.png", "image/png", b"plain text")).assert_error(415, "unsupported_media_type");
        let broken = alice.post_raw(&path, "multipart/form-data; boundary=XyZ", b"--XyZ\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n\r\nnever closed");
        broken.assert_error(400, "bad_multipart");
        let mut quitter = Conn::open(server.addr);
        let identity = format!("X-OpenChat-User-UID: {}\r\nX-OpenChat-Device-ID: {}\r\n", alice.uid(), alice.device());
        quitter.send(multipart_head(&path, &identity, 1_000_000).as_bytes());
        quitter.send(b"--XyZ\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n\r\n");
        quitter.send(&vec![0u8; 300_000]);
        std::thread::sleep(Duration::from_millis(300));
        drop(quitter);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(upload_temp_files(&server), Vec::<std::path::PathBuf>::new());
        // The avatar path spools too.
        let avatar = alice.post_multipart("/v1/profile/avatar", Multipart::new().file("file", "me.png", "image/png", &media::png(32, 32)));
        assert_eq!(avatar.status, 201, "{}", avatar.text());
        assert_eq!(upload_temp_files(&server), Vec::<std::path::PathBuf>::new());
    };

    blobs_of_a_refused_post_are_removed => |engine| {
        let _serial = serial();
        let server = start_community(engine, &[]);
        let (alice, general_channel) = general(&server);
        // The outsider left the default server: its posts there are refused.
        let outsider = Client::user(server.addr);
        let default_server = default_server_id(server.addr);
        outsider.send(&general_channel, "first contact makes a member");
        let left = outsider.delete(&format!("/v1/servers/{default_server}/membership"));
        assert!(left.status < 300, "{}", left.text());
        let private = general_channel.clone();
        let png = media::png(21, 13);
        let would_be = format!("/v1/attachments/att_{}", sha256_hex(&png));
        let blobs_before = blob_files(&server);

        // Not a member: refused, and no blob is left behind or served.
        let form = Multipart::new().text("body", "let me in").file("files", "a.png", "image/png", &png);
        let refused = outsider.post_multipart(&format!("/v1/channels/{private}/messages"), form);
        assert!(matches!(refused.status, 403 | 404), "{}", refused.text());
        assert_eq!(blob_files(&server), blobs_before);
        assert_eq!(alice.get(&would_be).status, 404);

        // A reply to a message that does not exist: refused after the files were checked.
        let form = Multipart::new().text("body", "re").text("reply_to_message_id", "msg_missing").file("files", "a.png", "image/png", &png);
        let refused = alice.post_multipart(&format!("/v1/channels/{general_channel}/messages"), form);
        assert!(matches!(refused.status, 400 | 404), "{}", refused.text());
        assert_eq!(blob_files(&server), blobs_before);
        assert_eq!(alice.get(&would_be).status, 404);

        // The same bytes in an accepted post are stored; a later refused post of the same
        // bytes must not remove what the accepted one references.
        let form = Multipart::new().text("body", "ok").file("files", "a.png", "image/png", &png);
        let posted = alice.post_multipart(&format!("/v1/channels/{general_channel}/messages"), form);
        assert_eq!(posted.status, 201, "{}", posted.text());
        assert_eq!(alice.get(&would_be).status, 200);
        let form = Multipart::new().text("body", "again").file("files", "a.png", "image/png", &png);
        let refused = outsider.post_multipart(&format!("/v1/channels/{private}/messages"), form);
        assert!(matches!(refused.status, 403 | 404), "{}", refused.text());
        let served = alice.get(&would_be);
        assert_eq!(served.status, 200);
        assert_eq!(served.body, png);

        // An avatar's blob is kept too: upload it as an avatar, then refuse a post with it.
        let avatar_png = media::png(17, 17);
        let avatar = alice.post_multipart("/v1/profile/avatar", Multipart::new().file("file", "me.png", "image/png", &avatar_png));
        assert_eq!(avatar.status, 201, "{}", avatar.text());
        let form = Multipart::new().text("body", "x").file("files", "me.png", "image/png", &avatar_png);
        let refused = outsider.post_multipart(&format!("/v1/channels/{private}/messages"), form);
        assert!(matches!(refused.status, 403 | 404), "{}", refused.text());
        let avatar_blob = format!("/v1/attachments/att_{}", sha256_hex(&avatar_png));
        assert_eq!(alice.get(&avatar_blob).status, 200, "the avatar's blob is still there");
    };
}

fn connect_from(local: &str, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&socket2::SockAddr::from(
            format!("{local}:0").parse::<SocketAddr>().unwrap(),
        ))
        .unwrap();
    socket.connect(&socket2::SockAddr::from(addr)).unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// A refused connection is answered 503 `server_busy` (or closed) at once.
fn is_refused(stream: &mut TcpStream) -> bool {
    let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    match read_answer(stream) {
        None => true,
        Some((503, body, _)) => {
            assert!(body.contains("server_busy"), "{body}");
            true
        }
        Some((200, _, _)) => false,
        Some((status, body, _)) => panic!("{status} {body}"),
    }
}

/// One address cannot take every descriptor: over `OPENCHAT_MAX_CONNECTIONS_PER_ADDR` its
/// connections are refused while another address is still served; over
/// `OPENCHAT_MAX_CONNECTIONS` everyone is refused until connections close.
#[test]
fn connections_are_capped_per_address_and_in_total() {
    let _serial = serial();
    let server = start_community(
        Engine::Sqlite,
        &[
            ("OPENCHAT_MAX_CONNECTIONS_PER_ADDR", "6"),
            ("OPENCHAT_MAX_CONNECTIONS", "1000"),
        ],
    );
    let addr = server.addr;
    let mut held: Vec<TcpStream> = (0..6)
        .map(|_| {
            let mut s = connect_from("127.0.0.1", addr);
            assert!(!is_refused(&mut s));
            s
        })
        .collect();
    let mut over = connect_from("127.0.0.1", addr);
    assert!(
        is_refused(&mut over),
        "the 7th connection of one address is refused"
    );
    let mut other = connect_from("127.0.0.2", addr);
    assert!(!is_refused(&mut other), "another address is still served");
    held.pop();
    std::thread::sleep(Duration::from_millis(200));
    let mut again = connect_from("127.0.0.1", addr);
    assert!(!is_refused(&mut again), "a freed slot can be used again");
    drop((held, other, again, over));
    drop(server);

    // Total cap: 4 over two shards, two each.
    let server = start_community(Engine::Sqlite, &[("OPENCHAT_MAX_CONNECTIONS", "4")]);
    let addr = server.addr;
    let mut open = Vec::new();
    let mut refused = 0;
    for i in 0..12 {
        let mut s = connect_from(&format!("127.0.0.{}", 10 + i), addr);
        if is_refused(&mut s) {
            refused += 1;
        } else {
            open.push(s);
        }
    }
    assert!(open.len() <= 4, "{} connections were served", open.len());
    assert!(refused >= 8, "{refused} refused");
    drop(open);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(addr, "/healthz").status, 200, "closing frees the slots");
}

/// A WebSocket session keeps its connection's place under the caps for its whole life (it
/// runs in a task of its own once the HTTP exchange that opened it is over), and gives it back
/// when it closes.
#[test]
fn websocket_sessions_hold_their_place_under_the_caps() {
    let _serial = serial();
    let server = start_community(
        Engine::Sqlite,
        &[
            ("OPENCHAT_MAX_CONNECTIONS_PER_ADDR", "3"),
            ("OPENCHAT_MAX_CONNECTIONS", "1000"),
        ],
    );
    let addr = server.addr;
    let server_id = default_server_id(addr);
    let mut sockets: Vec<Ws> = (0..3)
        .map(|i| {
            Ws::connect(
                addr,
                &headers_query(&server_id, &format!("uid_cap{i}"), "desk"),
            )
            .live()
        })
        .collect();
    let mut over = connect_from("127.0.0.1", addr);
    assert!(
        is_refused(&mut over),
        "three live sessions fill the address's three places"
    );
    let mut other = connect_from("127.0.0.2", addr);
    assert!(!is_refused(&mut other), "another address is still served");
    // The sessions still work.
    for ws in &mut sockets {
        ws.send("ping", json!({}));
        ws.expect("pong");
    }
    sockets.pop();
    std::thread::sleep(Duration::from_millis(300));
    let mut again = connect_from("127.0.0.1", addr);
    assert!(
        !is_refused(&mut again),
        "a closed session gives its place back"
    );
}
