//! Back-pressure (issue 10, item 4), tried against the real server with a stalled database: a
//! test connection holds the lock the writer needs (Postgres `LOCK TABLE messages IN ACCESS
//! EXCLUSIVE MODE`, SQLite an exclusive transaction on the same file) while a flood of posts
//! arrives. The queues between shards, authority and storage bridge are bounded, so the posts
//! past them are answered 503 `overloaded` (retryable, `Retry-After`) at once instead of piling
//! up in memory; `/healthz` stays fast; a realtime socket that needs the authority gets a
//! `chat.error` saying so, a voice join an `rtc.error overloaded` (retryable); reads that need
//! no ordering (profiles, the directory) still answer at once, as they do not queue; and once
//! the lock is released every post that was answered 201 is in the history and the server
//! works as before.

mod support;

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use simd_json::prelude::*;
use support::api::{Client, default_server_id};
use support::call::{ticket_for, voice_channel};
use support::json::{JsonPath, encode};
use support::server::{Engine, TestServer, start_community};
use support::ws::{Ws, headers_query};

/// Places in the authority's command queue and in the bridge's write queue for these tests:
/// small, so a flood of a few hundred posts fills them.
const QUEUE: usize = 8;
/// Posts in flight at once while the database is stalled: many more than the queues hold.
const FLOOD: usize = 300;
/// Longest the stall lasts: inside the writer's `COMMAND_TIMEOUT` (5 s) and SQLite's busy
/// timeout (3 s), so the stalled writes wait and then commit rather than fail.
const STALL: Duration = Duration::from_millis(2_500);
/// "At once" for a refusal.
const QUICK: Duration = Duration::from_millis(1_000);

/// Holds the lock the group-commit writer needs until told to let go (or `STALL` passed).
struct Stall {
    release: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Stall {
    fn hold(engine: Engine, server: &TestServer) -> Stall {
        let target = match engine {
            Engine::Postgres => Target::Postgres(server.db.as_ref().expect("a database").url()),
            Engine::Sqlite => Target::Sqlite(
                server
                    .data_dir
                    .as_ref()
                    .expect("a data dir")
                    .path()
                    .join("openchat.db"),
            ),
        };
        let (locked_tx, locked_rx) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(target.lock_until(locked_tx, release_rx));
        });
        locked_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the lock is taken");
        Stall { release, thread }
    }

    fn release(self) {
        let _ = self.release.send(());
        self.thread.join().expect("the lock holder ends cleanly");
    }
}

enum Target {
    Postgres(String),
    Sqlite(PathBuf),
}

impl Target {
    async fn lock_until(self, locked: mpsc::Sender<()>, release: mpsc::Receiver<()>) {
        use sqlx::Connection;
        let wait = || {
            let _ = release.recv_timeout(STALL);
        };
        match self {
            Target::Postgres(url) => {
                let mut conn = sqlx::postgres::PgConnection::connect(&url).await.unwrap();
                sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
                sqlx::query("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                locked.send(()).unwrap();
                wait();
                sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
            Target::Sqlite(path) => {
                let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path);
                let mut conn = sqlx::sqlite::SqliteConnection::connect_with(&options)
                    .await
                    .unwrap();
                sqlx::query("BEGIN EXCLUSIVE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                locked.send(()).unwrap();
                wait();
                sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
        }
    }
}

/// The raw bytes of `client` posting `body` to `channel_id` (headers mode).
fn post_bytes(client: &Client, channel_id: &str, body: &str) -> Vec<u8> {
    let json = format!("{{\"body\":\"{body}\"}}");
    format!(
        "POST /v1/channels/{channel_id}/messages HTTP/1.1\r\nHost: test\r\n\
         X-OpenChat-User-UID: {}\r\nX-OpenChat-Device-ID: {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
        client.uid(),
        client.device(),
        json.len()
    )
    .into_bytes()
}

/// A request sent on its own connection, and its answer once it came.
struct InFlight {
    stream: TcpStream,
    sent: Instant,
    buf: Vec<u8>,
    answer: Option<Answer>,
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: simd_json::OwnedValue,
    after: Duration,
}

impl InFlight {
    fn send(addr: SocketAddr, request: &[u8]) -> InFlight {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        let sent = Instant::now();
        stream.write_all(request).expect("write");
        stream.set_nonblocking(true).unwrap();
        InFlight {
            stream,
            sent,
            buf: Vec::new(),
            answer: None,
        }
    }

    /// Reads what has arrived; true once the whole answer is in.
    fn poll(&mut self) -> bool {
        if self.answer.is_some() {
            return true;
        }
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head)) = parsed.parse(&self.buf) else {
            return false;
        };
        let header = |name: &str| {
            parsed
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if self.buf.len() < head + length {
            return false;
        }
        let mut body = self.buf[head..head + length].to_vec();
        self.answer = Some(Answer {
            status: parsed.code.unwrap(),
            retry_after: header("retry-after"),
            body: simd_json::to_owned_value(&mut body).expect("a JSON body"),
            after: self.sent.elapsed(),
        });
        true
    }
}

/// Polls every request until each is answered or `within` passed.
fn collect(requests: &mut [InFlight], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut open = 0;
        for request in requests.iter_mut() {
            if !request.poll() {
                open += 1;
            }
        }
        if open == 0 || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn assert_overloaded(answer: &Answer) {
    assert_eq!(answer.status, 503, "{:?}", answer.body);
    assert_eq!(
        answer.body.str_at("code"),
        "overloaded",
        "{:?}",
        answer.body
    );
    assert_eq!(answer.body.at("retryable").as_bool(), Some(true));
    assert_eq!(answer.retry_after.as_deref(), Some("1"));
    assert!(answer.after < QUICK, "a refusal took {:?}", answer.after);
}

/// All ids in the channel's history (paging back from the newest).
fn history_ids(client: &Client, channel_id: &str) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut before: Option<String> = None;
    loop {
        let query = match &before {
            Some(cursor) => format!("limit=200&before={cursor}"),
            None => "limit=200".to_owned(),
        };
        let page = client.messages(channel_id, &query);
        let messages = page.at("messages").as_array().expect("messages").clone();
        if messages.is_empty() {
            return ids;
        }
        let first = messages[0].str_at("id").to_owned();
        let fresh = messages
            .iter()
            .filter(|m| ids.insert(m.str_at("id").to_owned()))
            .count();
        if fresh == 0 || messages.len() < 200 {
            return ids;
        }
        before = Some(first);
    }
}

support::on_both_engines! {
    a_stalled_database_sheds_load_with_503_overloaded_and_loses_no_acknowledged_post => |engine| {
        let queue = QUEUE.to_string();
        let server = start_community(
            engine,
            &[
                ("OPENCHAT_AUTHORITY_QUEUE", queue.as_str()),
                ("OPENCHAT_STORAGE_QUEUE", queue.as_str()),
                ("OPENCHAT_DEFAULT_SERVER_ID", "home"),
            ],
        );
        let alice = Client::user(server.addr);
        let server_id = default_server_id(server.addr);
        let channel = alice.first_text_channel(&server_id);
        // Alice is a member before the stall: her posts need only the message write.
        let before = alice.send(&channel, "before the stall").str_at("id").to_owned();
        let ticket = ticket_for(&alice, &voice_channel(&alice, &server_id));

        let stall = Stall::hold(engine, &server);
        let stalled_at = Instant::now();
        let mut flood: Vec<InFlight> = (0..FLOOD)
            .map(|i| InFlight::send(server.addr, &post_bytes(&alice, &channel, &format!("flood {i}"))))
            .collect();

        // The liveness probe does not queue behind the database.
        let started = Instant::now();
        let health = support::http::get(server.addr, "/healthz");
        assert_eq!(health.status, 200);
        assert!(started.elapsed() < QUICK, "/healthz took {:?}", started.elapsed());

        // The queues are full now: more work is refused at once, and says why.
        collect(&mut flood, Duration::from_millis(800));
        let mut probe = InFlight::send(server.addr, &post_bytes(&alice, &channel, "probe"));
        collect(std::slice::from_mut(&mut probe), QUICK);
        assert_overloaded(probe.answer.as_ref().expect("the probe is answered at once"));

        // Reads that need no ordering do not queue behind the stalled commands: the profile,
        // the directory and the profile batch answer at once while posts are refused.
        let profiles = format!("/v1/profiles:batch?user_uid={}", alice.uid());
        for path in ["/v1/profile/me", "/v1/servers", profiles.as_str()] {
            let started = Instant::now();
            let reply = alice.get(path);
            assert_eq!(reply.status, 200, "{path}: {}", String::from_utf8_lossy(&reply.body));
            assert!(started.elapsed() < QUICK, "{path} took {:?}", started.elapsed());
        }

        // A realtime socket needs the authority to be admitted: it is told in its own frame.
        let bob = Client::user(server.addr);
        let mut ws = Ws::connect(server.addr, &headers_query(&server_id, bob.uid(), bob.device()));
        let refused = ws.expect("chat.error");
        assert!(
            refused.str_at("payload.message").contains("overloaded"),
            "{refused:?}"
        );
        // A voice join spends its ticket at the authority: refused, retryable, before closing.
        let mut signaling = Ws::connect_to(server.addr, "/v1/rtc/signaling");
        signaling.send_text(&encode(&simd_json::json!({
            "type": "rtc.join", "request_id": "r1", "payload": {"ticket": ticket},
        })));
        let refused = signaling.expect("rtc.error");
        assert_eq!(refused.str_at("payload.code"), "overloaded", "{}", encode(&refused));
        assert_eq!(refused.at("payload.retryable").as_bool(), Some(true));
        assert!(signaling.closed_within(QUICK), "a refused join closes the socket");
        assert!(
            stalled_at.elapsed() < STALL,
            "the checks above outlasted the stall ({:?}); the test proves nothing",
            stalled_at.elapsed()
        );
        stall.release();

        // Every post is answered: committed (201) or refused up front (503 overloaded).
        collect(&mut flood, Duration::from_secs(20));
        let mut created = Vec::new();
        let mut refused = 0;
        for request in &flood {
            let answer = request.answer.as_ref().expect("every post is answered");
            match answer.status {
                201 => created.push(answer.body.str_at("message.id").to_owned()),
                _ => {
                    assert_overloaded(answer);
                    refused += 1;
                }
            }
        }
        eprintln!("[{engine:?}] {} of {FLOOD} posts committed, {refused} refused", created.len());
        assert!(refused > 0, "no post was refused");
        // What waited during the stall is bounded by the queues, not by the flood: the
        // authority's queue, the flush it holds, the writer's queue and the batch it commits.
        assert!(
            created.len() <= 4 * QUEUE + 4,
            "{} posts were taken while the database was stalled",
            created.len()
        );

        // Nothing acknowledged is lost, and the server works as before.
        let after = alice.send(&channel, "after the stall").str_at("id").to_owned();
        let history = history_ids(&alice, &channel);
        for id in created.iter().chain([&before, &after]) {
            assert!(history.contains(id), "acknowledged post {id} is not in the history");
        }
        let ws = Ws::connect(server.addr, &headers_query(&server_id, bob.uid(), bob.device()));
        ws.live().close();
    };
}
