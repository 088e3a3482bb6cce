//! The live side of the community API: realtime delivery across shards (wire contract A.7,
//! B.3), sessions end to end (B.1), and durability of acknowledged messages through a
//! `kill -9` of the real binary. Every test runs on embedded SQLite and on Postgres.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use simd_json::json;
use simd_json::prelude::*;
use support::api::{Client, DeviceKey, default_channel, default_server_id, ids_of};
use support::json::{Json, JsonPath, encode};
use support::server::{PUBLIC_BASE_URL, Place, start_community};
use support::ws::{
    QUIET, Ws, created_id, headers_query, one_per_shard, open_placed, placed_elsewhere,
};

use support::on_both_engines;

on_both_engines! {
    messages_reach_every_socket_on_both_shards => |engine| {
        let server = start_community(engine, &[]);
        let alice = Client::user(server.addr);
        let (server_id, general) = default_channel(&server, &alice);
        let bob = Client::user(server.addr);
        let mut sockets = one_per_shard(server.addr, &server_id, alice.uid(), &general);
        sockets.extend(one_per_shard(server.addr, &server_id, bob.uid(), &general));
        let shards: BTreeSet<&str> = sockets.iter().map(|p| p.shard.as_str()).collect();
        assert_eq!(shards.len(), 2);
        // A socket that subscribed to nothing still gets every message of its server.
        let mut idle = Ws::connect(server.addr, &headers_query(&server_id, bob.uid(), "desktop_idle")).live();

        for poster in [&alice, &bob] {
            let sent = poster.send(&general, &format!("from {}", poster.uid()));
            for placed in sockets.iter_mut() {
                let frame = placed.ws.expect_where("chat.message.created", |f| created_id(f) == sent.str_at("id"));
                assert_eq!(frame.str_at("payload.message.author_uid"), poster.uid());
                assert_eq!(frame.str_at("server_id"), server_id);
            }
            idle.expect_where("chat.message.created", |f| created_id(f) == sent.str_at("id"));
        }

        // Events of another server do not leak in.
        let other = alice.create_server("Elsewhere");
        let elsewhere = alice.first_text_channel(other.str_at("server.server_id"));
        let stray = alice.send(&elsewhere, "not for the default server");
        for placed in sockets.iter_mut() {
            placed.ws.assert_none_where("chat.message.created", Duration::from_millis(100), |f| created_id(f) == stray.str_at("id"));
        }
    };

    concurrent_posts_all_reach_every_socket_in_order => |engine| {
        let server = start_community(engine, &[]);
        let alice = Client::user(server.addr);
        let (server_id, general) = default_channel(&server, &alice);
        let mut sockets = one_per_shard(server.addr, &server_id, alice.uid(), &general);
        let writers: Vec<Client> = (0..8).map(|_| Client::user(server.addr)).collect();
        let before = alice.send(&general, "before the burst");
        let since = sockets[0].ws.expect_where("chat.message.created", |f| created_id(f) == before.str_at("id")).i64_at("event_id");
        sockets[1].ws.expect_where("chat.message.created", |f| created_id(f) == before.str_at("id"));
        let posted: BTreeSet<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = writers
                .iter()
                .map(|w| {
                    let general = general.clone();
                    scope.spawn(move || {
                        (0..25)
                            .map(|i| w.send(&general, &format!("burst {i}")).str_at("id").to_owned())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(posted.len(), 200);
        for placed in sockets.iter_mut() {
            let mut seen = BTreeSet::new();
            let mut last_event = 0;
            while seen.len() < posted.len() {
                let frame = placed.ws.wait_for("chat.message.created", Duration::from_secs(5), |_| true).unwrap_or_else(|| {
                    let missing: Vec<&String> = posted.difference(&seen).collect();
                    panic!("socket on shard {} got {} of 200 messages; missing {missing:?}", placed.shard, seen.len())
                });
                let event_id = frame.i64_at("event_id");
                assert!(event_id > last_event, "event {event_id} after {last_event}");
                last_event = event_id;
                seen.insert(created_id(&frame).to_owned());
            }
            assert_eq!(seen, posted);
        }
        // History holds them all, and so does the resume log.
        let history = ids_of(&alice.messages(&general, "limit=200"), "messages");
        assert_eq!(history.iter().cloned().collect::<BTreeSet<_>>(), posted);
        let mut resumed = Ws::connect(server.addr, &format!("{}&since_event_id={since}", headers_query(&server_id, alice.uid(), "desktop_late")));
        let mut replayed = BTreeSet::new();
        while replayed.len() < posted.len() {
            let frame = resumed.wait_for("chat.message.created", Duration::from_secs(5), |_| true).unwrap_or_else(|| {
                panic!("the resume replayed {} of {} messages", replayed.len(), posted.len())
            });
            replayed.insert(created_id(&frame).to_owned());
        }
        assert_eq!(replayed, posted);
    };

    presence_and_typing_cross_shards => |engine| {
        let server = start_community(engine, &[]);
        let alice = Client::user(server.addr);
        let (server_id, general) = default_channel(&server, &alice);
        let bob = Client::user(server.addr);
        let mut a = open_placed(server.addr, &server_id, alice.uid(), &general);
        let mut b = placed_elsewhere(server.addr, &server_id, bob.uid(), &general, &a.shard);
        assert_ne!(a.shard, b.shard);
        let bob_device = b.device.clone();
        let is_bob = |f: &Json| f.str_at("payload.member.device_id") == bob_device;

        // Alice saw bob's (shard-probing) subscriptions come and go; the one kept is present.
        let joined = a.ws.expect_where("chat.presence.joined", is_bob);
        assert_eq!(joined.str_at("payload.channel_id"), general);
        assert_eq!(joined.str_at("payload.member.user_uid"), bob.uid());
        assert!(!joined.str_at("payload.member.client_id").is_empty());

        // Typing goes to the other subscribers only.
        b.ws.send("chat.typing.update", json!({"channel_id": general.as_str(), "is_typing": true}));
        let typing = a.ws.expect_where("chat.typing.updated", is_bob);
        assert!(typing.bool_at("payload.is_typing"));
        assert_eq!(typing.str_at("payload.channel_id"), general);
        assert_eq!(typing.str_at("payload.member.user_uid"), bob.uid());
        b.ws.assert_none("chat.typing.updated", QUIET);
        a.ws.send("chat.typing.update", json!({"channel_id": general.as_str(), "is_typing": true}));
        let alice_device = a.device.clone();
        let typing = b.ws.expect_where("chat.typing.updated", |f| f.str_at("payload.member.device_id") == alice_device);
        assert_eq!(typing.str_at("payload.member.user_uid"), alice.uid());
        a.ws.assert_none_where("chat.typing.updated", QUIET, |f| f.str_at("payload.member.device_id") == alice_device);

        // Unsubscribing and closing both show as left.
        b.ws.send("chat.unsubscribe", json!({"channel_id": general.as_str()}));
        let left = a.ws.expect_where("chat.presence.left", is_bob);
        assert_eq!(left.str_at("payload.channel_id"), general);
        b.ws.subscribe(&general);
        let snapshot = b.ws.expect("chat.presence.snapshot");
        let present: Vec<&str> = snapshot.arr_at("payload.members").iter().map(|m| m.str_at("device_id")).collect();
        assert!(present.contains(&a.device.as_str()) && present.contains(&bob_device.as_str()), "{present:?}");
        a.ws.expect_where("chat.presence.joined", is_bob);
        drop(b);
        a.ws.expect_where("chat.presence.left", is_bob);
    };

    bad_frames_get_an_error_and_oversized_ones_close => |engine| {
        let server = start_community(engine, &[]);
        let alice = Client::user(server.addr);
        let (server_id, general) = default_channel(&server, &alice);
        let mut ws = Ws::connect(server.addr, &headers_query(&server_id, alice.uid(), "desktop_frames"));

        ws.send_text("this is not json");
        let error = ws.expect("chat.error");
        assert!(!error.str_at("payload.message").is_empty());
        ws.send_text(r#"{"type":"chat.subscribe","request_id":"r1","payload":{"channel_id":"ch_nowhere"}}"#);
        ws.expect("chat.error");
        ws.send_text(r#"{"type":"chat.subscribe","request_id":"r2","payload":{}}"#);
        ws.expect("chat.error");
        // A channel of another server is not this socket's to watch.
        let other = alice.create_server("Other");
        let foreign = alice.first_text_channel(other.str_at("server.server_id"));
        ws.subscribe(&foreign);
        ws.expect("chat.error");
        ws.assert_none("chat.presence.snapshot", QUIET);
        // Unknown frame types are ignored, not errors.
        ws.send("chat.future.feature", json!({"x": 1}));
        ws.assert_none("chat.error", QUIET);
        // Still open and working.
        ws.subscribe(&general);
        ws.expect("chat.presence.snapshot");
        let sent = alice.send(&general, "still here");
        ws.expect_where("chat.message.created", |f| created_id(f) == sent.str_at("id"));

        // A frame over 64 KiB closes the socket.
        ws.send_text(&"x".repeat(70 * 1024));
        assert!(ws.closed_within(Duration::from_secs(3)), "an oversized frame did not close the socket");

        // Refusals after the upgrade are a chat.error, then a close.
        let mut anonymous = Ws::connect(server.addr, &format!("server_id={server_id}"));
        anonymous.expect("chat.error");
        assert!(anonymous.closed_within(Duration::from_secs(3)));
        let mut nowhere = Ws::connect(server.addr, &headers_query("srv_nowhere", alice.uid(), "desktop_x"));
        nowhere.expect("chat.error");
        assert!(nowhere.closed_within(Duration::from_secs(3)));
        let mut bad_since = Ws::connect(server.addr, &format!("{}&since_event_id=soon", headers_query(&server_id, alice.uid(), "desktop_y")));
        bad_since.expect("chat.error");
        assert!(bad_since.closed_within(Duration::from_secs(3)));
    };

    resume_replays_missed_events_or_asks_for_a_resync => |engine| {
        let server = start_community(engine, &[]);
        let alice = Client::user(server.addr);
        let (server_id, general) = default_channel(&server, &alice);
        let bob = Client::user(server.addr);
        let query = headers_query(&server_id, alice.uid(), "desktop_resume");
        let mut ws = Ws::connect(server.addr, &query).live();
        let seen = alice.send(&general, "seen live");
        let last_seen = ws.expect_where("chat.message.created", |f| created_id(f) == seen.str_at("id")).i64_at("event_id");
        drop(ws);

        let missed: Vec<String> = (0..3).map(|i| bob.send(&general, &format!("missed {i}")).str_at("id").to_owned()).collect();
        let mut resumed = Ws::connect(server.addr, &format!("{query}&since_event_id={last_seen}"));
        let mut last = last_seen;
        for id in &missed {
            let frame = resumed.expect("chat.message.created");
            assert_eq!(created_id(&frame), id, "replayed in order");
            assert!(frame.i64_at("event_id") > last);
            last = frame.i64_at("event_id");
        }
        // Then live, without repeats.
        let live = bob.send(&general, "live again");
        let frame = resumed.expect("chat.message.created");
        assert_eq!(created_id(&frame), live.str_at("id"));
        resumed.assert_none("chat.message.created", QUIET);

        // An id this server never gave out cannot be resumed from.
        let mut future = Ws::connect(server.addr, &format!("{query}&since_event_id={}", last + 1_000_000));
        let resync = future.expect("chat.resync_required");
        assert_eq!(resync.str_at("server_id"), server_id);
        // Nor can one older than the kept window: after enough events, event 1 is gone.
        let window = openchatd::realtime::RESUME_WINDOW_EVENTS as i64;
        if window <= 2_000 {
            let path = format!("/v1/channels/{general}/messages");
            let events_now = last;
            let needed = (window - events_now + 2).max(0) as usize;
            let bodies: Vec<Vec<u8>> = (0..needed).map(|i| encode(&json!({"body": format!("filler {i}")})).into_bytes()).collect();
            post_pipelined(server.addr, &alice, &path, &bodies);
            let mut old = Ws::connect(server.addr, &format!("{query}&since_event_id=1"));
            let resync = old.expect("chat.resync_required");
            assert_eq!(resync.str_at("server_id"), server_id);
            let sent = bob.send(&general, "after the resync");
            old.expect_where("chat.message.created", |f| created_id(f) == sent.str_at("id"));
        }
    };

    sessions_end_to_end => |engine| {
        let server = start_community(engine, &[("OPENCHAT_AUTH_MODE", "session")]);
        let addr = server.addr;
        let server_id = default_server_id(addr);
        Client::anonymous(addr).get(&format!("/v1/servers/{server_id}/channels")).assert_error(401, "unauthorized");
        let caps = Client::anonymous(addr).get("/v1/client/capabilities").json();
        assert_eq!(caps.str_at("identity_handshake_modes.0"), "challenge_signature");

        // Challenge, signature, token.
        let key = DeviceKey::new();
        let session = key.sign_in(addr, PUBLIC_BASE_URL, None);
        let token = session.str_at("token").to_owned();
        let uid = session.str_at("user_uid").to_owned();
        assert_eq!(session.str_at("device_id"), key.device_id);
        assert!(!uid.is_empty());
        assert!(session.try_at("expires_at").is_some());
        let me = Client::bearer(addr, &token);
        let check = me.get("/v1/auth/session");
        assert_eq!(check.status, 200, "{}", check.text());
        assert_eq!(check.json().str_at("user_uid"), uid);
        let profile = me.get("/v1/profile/me");
        assert_eq!(profile.status, 200, "{}", profile.text());
        assert_eq!(profile.json().str_at("user_uid"), uid);
        let general = me.first_text_channel(&server_id);

        // The token posts and opens the realtime socket.
        let mut ws = Ws::connect(addr, &format!("server_id={server_id}&access_token={token}"));
        ws.subscribe(&general);
        let snapshot = ws.expect("chat.presence.snapshot");
        assert!(snapshot.arr_at("payload.members").iter().any(|m| m.str_at("user_uid") == uid), "{}", encode(&snapshot));
        let sent = me.send(&general, "signed in");
        assert_eq!(sent.str_at("author_uid"), uid);
        ws.expect_where("chat.message.created", |f| created_id(f) == sent.str_at("id"));

        // A challenge answers once; a signature for another origin does not count.
        let challenge = key.challenge(addr, None);
        assert_eq!(key.open_session(addr, PUBLIC_BASE_URL, None, &challenge).status, 201);
        key.open_session(addr, PUBLIC_BASE_URL, None, &challenge).assert_error(401, "unauthorized");
        let challenge = key.challenge(addr, None);
        key.open_session(addr, "http://evil.test", None, &challenge).assert_error(401, "unauthorized");
        key.open_session(addr, PUBLIC_BASE_URL, None, &challenge).assert_error(401, "unauthorized");

        // Forged tokens and identity headers get nowhere.
        let forged = Client::bearer(addr, "ocs_forgedforgedforgedforgedforgedforged");
        forged.get("/v1/profile/me").assert_error(401, "invalid_token");
        forged.post(&format!("/v1/channels/{general}/messages"), &json!({"body": "forged"})).assert_error(401, "invalid_token");
        let headers_only = Client::with_uid(addr, &uid);
        headers_only.get("/v1/profile/me").assert_error(401, "unauthorized");
        headers_only.post(&format!("/v1/channels/{general}/messages"), &json!({"body": "spoofed"})).assert_error(401, "unauthorized");
        let mut forged_ws = Ws::connect(addr, &format!("server_id={server_id}&access_token=ocs_forged"));
        forged_ws.expect("chat.error");
        assert!(forged_ws.closed_within(Duration::from_secs(3)));
        let mut spoofed_ws = Ws::connect(addr, &headers_query(&server_id, &uid, "desktop_spoof"));
        spoofed_ws.expect("chat.error");
        assert!(spoofed_ws.closed_within(Duration::from_secs(3)));

        // A uid is derived from the key; another key cannot take it, and a uid nobody holds
        // is not taken by asking for it (it needs an approved binding).
        assert_eq!(uid, key.derived_uid());
        let thief = DeviceKey::new();
        let challenge = thief.challenge(addr, Some(&uid));
        thief.open_session(addr, PUBLIC_BASE_URL, Some(&uid), &challenge).assert_error(409, "identity_key_mismatch");
        let named = DeviceKey::new();
        let chosen = format!("uid_{:08x}", rand::random::<u32>());
        let challenge = named.challenge(addr, Some(&chosen));
        named.open_session(addr, PUBLIC_BASE_URL, Some(&chosen), &challenge).assert_error(403, "binding_required");
        for public_key in ["not-a-key", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
            let refused = Client::anonymous(addr).post("/v1/auth/challenge", &json!({"device_id": "desktop_k", "public_key": public_key}));
            assert_eq!(refused.status, 400, "{}", refused.text());
            assert!(refused.json().str_at("code").starts_with("invalid_"), "{}", refused.text());
        }

        // Revoking ends the session everywhere.
        let revoked = me.delete("/v1/auth/session");
        assert_eq!(revoked.status, 200, "{}", revoked.text());
        me.get("/v1/auth/session").assert_error(401, "invalid_token");
        me.get("/v1/profile/me").assert_error(401, "invalid_token");
        me.post(&format!("/v1/channels/{general}/messages"), &json!({"body": "after revoke"})).assert_error(401, "invalid_token");
        let mut revoked_ws = Ws::connect(addr, &format!("server_id={server_id}&access_token={token}"));
        revoked_ws.expect("chat.error");
        assert!(revoked_ws.closed_within(Duration::from_secs(3)));
        // The same device signs in again.
        let again = key.sign_in(addr, PUBLIC_BASE_URL, None);
        assert_eq!(again.str_at("user_uid"), uid);
        assert_eq!(Client::bearer(addr, again.str_at("token")).get("/v1/profile/me").status, 200);
    };

    acknowledged_messages_survive_kill_9 => |engine| {
        let place = Place::new(engine);
        let mut daemon = Daemon::start(&place);
        let alice = Client::user(daemon.addr);
        let server_id = default_server_id(daemon.addr);
        let general = alice.first_text_channel(&server_id);
        let query = headers_query(&server_id, alice.uid(), "desktop_durable");
        let mut ws = Ws::connect(daemon.addr, &query).live();
        let first = alice.send(&general, "durable first");
        let first_event = ws.expect_where("chat.message.created", |f| created_id(f) == first.str_at("id")).i64_at("event_id");

        // Three writers at once, so acknowledgements come out of shared commits; SIGKILL the
        // moment the last one is acknowledged.
        let mut acknowledged: BTreeSet<String> = std::thread::scope(|scope| {
            let writers: Vec<_> = (0..3)
                .map(|w| {
                    let alice = alice.clone();
                    let general = general.clone();
                    scope.spawn(move || {
                        (0..10)
                            .map(|i| alice.send(&general, &format!("durable {w}.{i}")).str_at("id").to_owned())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            writers.into_iter().flat_map(|w| w.join().unwrap()).collect()
        });
        daemon.kill9();
        acknowledged.insert(first.str_at("id").to_owned());

        let daemon = Daemon::start(&place);
        let alice = Client { addr: daemon.addr, ..alice };
        assert_eq!(default_server_id(daemon.addr), server_id);
        let stored = ids_of(&alice.messages(&general, "limit=50"), "messages");
        assert_eq!(stored.len(), 31, "{stored:?}");
        assert_eq!(stored.iter().cloned().collect::<BTreeSet<_>>(), acknowledged, "acknowledged messages were lost");
        assert_eq!(stored[0], first.str_at("id"));

        // Event ids go on from where they were: every acknowledged message had its own, so the
        // first id after the restart is above all of them (clients skip ids they have seen).
        // Resuming from before the crash replays all that was missed, or asks for a resync
        // (the window may start after a restart), never a part.
        let mut resumed = Ws::connect(daemon.addr, &format!("{query}&since_event_id={first_event}"));
        let deadline = Instant::now() + Duration::from_secs(5);
        let first_frame = loop {
            assert!(Instant::now() < deadline, "neither a replay nor a resync after the restart");
            if let Some(frame) = resumed.wait_for("chat.resync_required", Duration::from_millis(20), |_| true) {
                break frame;
            }
            if let Some(frame) = resumed.wait_for("chat.message.created", Duration::from_millis(20), |_| true) {
                break frame;
            }
        };
        if first_frame.str_at("type") == "chat.resync_required" {
            assert!(first_frame.i64_at("payload.last_event_id") >= first_event + 30, "{}", encode(&first_frame));
        } else {
            let mut replayed = vec![created_id(&first_frame).to_owned()];
            while replayed.len() < stored.len() - 1 {
                replayed.push(created_id(&resumed.expect("chat.message.created")).to_owned());
            }
            assert_eq!(replayed, stored[1..].to_vec(), "the replay misses events");
        }
        let after = alice.send(&general, "after the crash");
        let live = resumed.expect_where("chat.message.created", |f| created_id(f) == after.str_at("id"));
        assert!(live.i64_at("event_id") > first_event + 30, "event ids went back: {}", encode(&live));
    };
}

/// Posts `bodies` as JSON messages, pipelined on a few keep-alive connections at once, so many
/// events are made quickly; every one must answer 201.
fn post_pipelined(addr: SocketAddr, who: &Client, path: &str, bodies: &[Vec<u8>]) {
    let support::api::Identity::Headers { uid, device } = &who.identity else {
        panic!("headers identity expected")
    };
    let per_connection = bodies.len().div_ceil(4).max(1);
    std::thread::scope(|scope| {
        for chunk in bodies.chunks(per_connection) {
            scope.spawn(move || {
                for batch in chunk.chunks(64) {
                    let mut conn = support::http::Conn::open(addr);
                    let mut bytes = Vec::new();
                    for body in batch {
                        bytes.extend_from_slice(
                            format!(
                                "POST {path} HTTP/1.1\r\nHost: test\r\nX-OpenChat-User-UID: {uid}\r\nX-OpenChat-Device-ID: {device}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                                body.len()
                            )
                            .as_bytes(),
                        );
                        bytes.extend_from_slice(body);
                    }
                    conn.send(&bytes);
                    for _ in batch {
                        let reply = conn.read_reply().expect("a reply per pipelined request");
                        assert_eq!(reply.status, 201, "{}", reply.text());
                    }
                }
            });
        }
    });
}

/// The real `openchatd` binary on a free port, in headers mode, on `place`'s storage.
struct Daemon {
    child: Child,
    addr: SocketAddr,
}

impl Daemon {
    fn start(place: &Place) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_openchatd"));
        for (key, _) in std::env::vars() {
            if key.starts_with("OPENCHAT_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("OPENCHAT_HTTP_ADDR", "127.0.0.1:0")
            .env("OPENCHAT_RTC_UDP_PORT", "0")
            .env("OPENCHAT_SHARDS", "2")
            .env("OPENCHAT_DATA_DIR", place.data_dir.path())
            .env("OPENCHAT_AUTH_MODE", "headers")
            .env("OPENCHAT_PUBLIC_BASE_URL", PUBLIC_BASE_URL)
            .env("OPENCHAT_RATE_LIMIT_PER_MINUTE", "1000000")
            .env("OPENCHAT_LOG_FORMAT", "json")
            .env("OPENCHAT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(db) = &place.db {
            cmd.env("OPENCHAT_DATABASE_URL", db.url());
        }
        let mut child = cmd.spawn().expect("spawn openchatd");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        let addr = loop {
            assert!(Instant::now() < deadline, "no listening line: {seen:?}");
            let Some(Ok(line)) = lines.next() else {
                let status = child.wait().ok();
                panic!("openchatd ended before listening ({status:?}): {seen:?}");
            };
            if line.contains("listening") {
                let doc = support::json::parse(line.as_bytes());
                if let Some(addr) = doc.try_at("fields.addr").and_then(|a| a.as_str()) {
                    break addr.parse().expect("a socket address");
                }
            }
            seen.push(line);
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Daemon { child, addr }
    }

    /// SIGKILL: no shutdown, no flush, nothing but what was already durable.
    fn kill9(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.wait();
        }
    }
}
