//! Input an attacker sends, against the real server on both engines: text a database cannot
//! store (NUL and other controls, JSON escapes that decode to them) in every text field, a
//! write the database refuses in the middle of a burst (its neighbours must commit, the
//! in-memory security state must survive the reload that follows), and the resources one user
//! can make the instance hold or serve (servers, channels, categories, layout size, directory
//! pages, image pixels).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use simd_json::json;
use simd_json::prelude::*;
use support::api::{Client, new_uid};
use support::call::voice_channel;
use support::http::Reply;
use support::json::{Json, JsonPath, encode};
use support::media;
use support::multipart::Multipart;
use support::server::{Engine, TestServer, start_community};
use support::ws::Ws;

const TICKET_SECRET: &str = "hostile-input-test-ticket-secret-0123456789";

/// Texts that must never be stored: NUL, other C0 controls, DEL and a C1 control.
const BAD_TEXTS: &[&str] = &[
    "a\u{0}b",
    "\u{0}",
    "bell\u{7}",
    "\u{1b}[31mred",
    "del\u{7f}",
    "c1\u{85}",
];

fn assert_invalid_text(reply: &Reply, field: &str) {
    reply.assert_error(400, "invalid_text");
    let doc = reply.json();
    assert!(!doc.bool_at("retryable"), "{}", reply.text());
    assert_eq!(doc.str_at("details.field"), field, "{}", reply.text());
}

/// A server whose default server `home` is owned by `owner`.
fn owned_server(engine: Engine, owner: &str, extra: &[(&str, &str)]) -> TestServer {
    let mut vars = vec![
        ("OPENCHAT_DEFAULT_SERVER_ID", "home"),
        ("OPENCHAT_DEFAULT_SERVER_OWNER_UID", owner),
        ("OPENCHAT_RTC_TICKET_SECRET", TICKET_SECRET),
    ];
    vars.extend_from_slice(extra);
    start_community(engine, &vars)
}

fn body_count(client: &Client, channel: &str) -> usize {
    client
        .messages(channel, "limit=200")
        .arr_at("messages")
        .len()
}

support::on_both_engines! {
    text_a_database_cannot_store_is_refused_in_every_field => |engine| {
        let owner_uid = new_uid();
        let server = owned_server(engine, &owner_uid, &[]);
        let owner = Client::with_uid(server.addr, &owner_uid);
        let general = owner.first_text_channel("home");
        let messages = format!("/v1/channels/{general}/messages");
        let before = body_count(&owner, &general);

        // Message bodies, as JSON.
        for bad in BAD_TEXTS {
            assert_invalid_text(&owner.post(&messages, &json!({"body": *bad})), "body");
        }
        // Escapes written by hand: `\u0000`, and a lone high surrogate, which simd-json reads
        // as NUL; a lone low surrogate is not JSON at all.
        for raw in [r#"{"body":"x\u0000y"}"#, r#"{"body":"x\ud800y"}"#, r#"{"body":"\ud800"}"#] {
            assert_invalid_text(&owner.post_raw(&messages, "application/json", raw.as_bytes()), "body");
        }
        owner.post_raw(&messages, "application/json", br#"{"body":"x\udc00y"}"#).assert_error(400, "invalid_json");
        // Multipart: the body field, and a file name (a C1 control passes the part-head parser).
        assert_invalid_text(&owner.post_multipart(&messages, Multipart::new().text("body", "nul\u{0}here")), "body");
        assert_invalid_text(
            &owner.post_multipart(&messages, Multipart::new().text("body", "pic").file("files", "a\u{85}b.png", "image/png", &media::png(4, 4))),
            "file_name",
        );
        assert_eq!(body_count(&owner, &general), before, "nothing refused was stored");
        // Tab, newline and carriage return are text.
        let fine = owner.send(&general, "tab\there\nnext line\r\nend");
        assert_eq!(fine.str_at("body"), "tab\there\nnext line\r\nend");

        // Server names, descriptions and banners, created and changed.
        for (field, body) in [
            ("display_name", json!({"display_name": "Nul\u{0}Club"})),
            ("description", json!({"display_name": "Club", "description": "line\u{0}"})),
            ("banner_preset", json!({"display_name": "Club", "banner_preset": "forest\u{0}"})),
        ] {
            assert_invalid_text(&owner.post("/v1/servers", &body), field);
            assert_invalid_text(&owner.put("/v1/servers/home/settings", &body), field);
        }
        let settings = owner.get("/v1/servers/home/settings");
        assert_eq!(settings.status, 200, "{}", settings.text());
        assert!(!settings.text().contains("\\u0000"), "{}", settings.text());

        // Channel and category names.
        assert_invalid_text(&owner.post("/v1/servers/home/channels", &json!({"name": "ch\u{0}", "type": "text"})), "name");
        assert_invalid_text(&owner.post("/v1/servers/home/categories", &json!({"name": "cat\u{1}", "kind": "text"})), "name");
        let group = owner.groups("home").str_at("groups.0.id").to_owned();
        assert_invalid_text(&owner.put(&format!("/v1/servers/home/categories/{group}"), &json!({"name": "x\u{0}"})), "name");

        // Profiles: display name and avatar preset id.
        assert_invalid_text(&owner.put("/v1/profile/me", &json!({"display_name": "Ada\u{0}"})), "display_name");
        assert_invalid_text(&owner.put("/v1/profile/me", &json!({"avatar_preset_id": "p\u{0}"})), "avatar_preset_id");

        // The query of a mention lookup.
        assert_invalid_text(&owner.get(&format!("/v1/channels/{general}/mentions:resolve?query=a%00b")), "query");

        // The server is healthy and nothing above was stored.
        assert_eq!(owner.get("/healthz").status, 200);
        let profile = owner.get("/v1/profile/me");
        assert!(!profile.text().contains("\\u0000"), "{}", profile.text());
        owner.send(&general, "still here");
        assert_eq!(body_count(&owner, &general), before + 2);
    };

    a_write_the_database_refuses_fails_alone_and_not_retryably => |engine| {
        let owner_uid = new_uid();
        let server = owned_server(engine, &owner_uid, &[]);
        let owner = Client::with_uid(server.addr, &owner_uid);
        let general = owner.first_text_channel("home");
        poison_message_bodies(&server);

        // Bursts of concurrent posts, one of them poisoned: the database refuses that one
        // write. Its neighbours (many in the same group commit) must be stored and answered.
        let mut stored = 0;
        for round in 0..4 {
            let posters: Vec<Client> = (0..24).map(|_| Client::user(server.addr)).collect();
            let replies: Vec<(usize, Reply)> = std::thread::scope(|scope| {
                let handles: Vec<_> = posters
                    .iter()
                    .enumerate()
                    .map(|(i, client)| {
                        let general = &general;
                        scope.spawn(move || {
                            let body = if i == 12 { format!("round {round} poison") } else { format!("round {round} post {i}") };
                            (i, client.post(&format!("/v1/channels/{general}/messages"), &json!({"body": body})))
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for (i, reply) in replies {
                if i == 12 {
                    assert_eq!(reply.status, 500, "{}", reply.text());
                    assert!(!reply.json().bool_at("retryable"), "{}", reply.text());
                } else {
                    assert_eq!(reply.status, 201, "round {round} post {i}: {}", reply.text());
                    stored += 1;
                }
            }
        }
        let page = owner.messages(&general, "limit=200");
        let bodies: Vec<&str> = page.arr_at("messages").iter().map(|m| m.str_at("body")).collect();
        assert_eq!(bodies.iter().filter(|b| b.contains("post")).count(), stored);
        assert!(!bodies.iter().any(|b| b.contains("poison")));
        // And the instance goes on.
        owner.send(&general, "after the bursts");
    };

    a_used_join_ticket_stays_used_after_a_failed_write => |engine| {
        let owner_uid = new_uid();
        let server = owned_server(engine, &owner_uid, &[]);
        let owner = Client::with_uid(server.addr, &owner_uid);
        let general = owner.first_text_channel("home");
        let voice = voice_channel(&owner, "home");
        poison_message_bodies(&server);

        let caller = Client::user(server.addr);
        let ticket = support::call::ticket_for(&caller, &voice);
        let mut first = signal(server.addr, &ticket);
        first.expect("rtc.joined");
        first.close();

        // A write fails; the authority reloads its state from storage.
        let failed = owner.post(&format!("/v1/channels/{general}/messages"), &json!({"body": "poison"}));
        assert_eq!(failed.status, 500, "{}", failed.text());
        wait_until_commands_work(&owner, &general);

        let mut again = signal(server.addr, &ticket);
        let error = again.expect("rtc.error");
        assert_eq!(error.str_at("payload.code"), "rtc_ticket_replayed", "{}", encode(&error));
    };

    rate_limit_windows_survive_a_failed_write => |engine| {
        let owner_uid = new_uid();
        let server = owned_server(engine, &owner_uid, &[("OPENCHAT_RATE_LIMIT_PER_MINUTE", "5")]);
        let owner = Client::with_uid(server.addr, &owner_uid);
        let general = owner.first_text_channel("home");
        poison_message_bodies(&server);

        let spammer = Client::user(server.addr);
        let path = format!("/v1/channels/{general}/messages");
        for i in 0..5 {
            let reply = spammer.post(&path, &json!({"body": format!("spam {i}")}));
            assert_eq!(reply.status, 201, "{}", reply.text());
        }
        spammer.post(&path, &json!({"body": "one too many"})).assert_error(429, "rate_limited");

        // Another user's write fails at the database; the state is reloaded.
        let failed = owner.post(&path, &json!({"body": "poison"}));
        assert_eq!(failed.status, 500, "{}", failed.text());
        wait_until_commands_work(&owner, &general);

        spammer.post(&path, &json!({"body": "still too many"})).assert_error(429, "rate_limited");
    };

    per_user_and_per_server_limits_name_the_limit => |engine| {
        let owner_uid = new_uid();
        let server = owned_server(engine, &owner_uid, &[]);
        let owner = Client::with_uid(server.addr, &owner_uid);

        // Servers created per user.
        let maker = Client::user(server.addr);
        for i in 0..openchatd::domain::community::MAX_SERVERS_CREATED_PER_USER {
            maker.create_server(&format!("Server {i}"));
        }
        let refused = maker.post("/v1/servers", &json!({"display_name": "One more"}));
        refused.assert_error(403, "server_limit_reached");
        assert_limit(&refused, "servers_per_user", openchatd::domain::community::MAX_SERVERS_CREATED_PER_USER);
        Client::user(server.addr).create_server("Someone else's");

        // Categories per server (the default server has two).
        let max_categories = openchatd::domain::community::MAX_CATEGORIES_PER_SERVER;
        for i in 2..max_categories {
            let reply = owner.post("/v1/servers/home/categories", &json!({"name": format!("cat {i}"), "kind": "text"}));
            assert_eq!(reply.status, 201, "{}", reply.text());
        }
        let refused = owner.post("/v1/servers/home/categories", &json!({"name": "too many", "kind": "text"}));
        refused.assert_error(409, "category_limit_reached");
        assert_limit(&refused, "categories_per_server", max_categories);

        // Channels per server (the default server has two).
        let max_channels = openchatd::domain::community::MAX_CHANNELS_PER_SERVER;
        for i in 2..max_channels {
            let reply = owner.post("/v1/servers/home/channels", &json!({"name": format!("ch {i}"), "type": "text"}));
            assert_eq!(reply.status, 201, "{}", reply.text());
        }
        let refused = owner.post("/v1/servers/home/channels", &json!({"name": "too many", "type": "text"}));
        refused.assert_error(409, "channel_limit_reached");
        assert_limit(&refused, "channels_per_server", max_channels);

        // A layout request larger than any server can be.
        let ids: Vec<String> = (0..=openchatd::domain::community::MAX_CHANNELS_PER_SERVER).map(|i| format!("ch_{i}")).collect();
        let refused = owner.put("/v1/servers/home/channel-layout", &json!({"groups": [{"id": "g", "channel_ids": ids}]}));
        refused.assert_error(413, "layout_too_large");
        assert_limit(&refused, "layout_channel_ids", openchatd::domain::community::MAX_CHANNELS_PER_SERVER);
        let groups: Vec<Json> = (0..=openchatd::domain::community::MAX_CATEGORIES_PER_SERVER).map(|i| json!({"id": format!("g{i}"), "channel_ids": []})).collect();
        let refused = owner.put("/v1/servers/home/channel-layout", &json!({"groups": groups}));
        refused.assert_error(413, "layout_too_large");
        assert_limit(&refused, "layout_groups", openchatd::domain::community::MAX_CATEGORIES_PER_SERVER);
    };

    the_server_directory_is_paginated => |engine| {
        let owner_uid = new_uid();
        let server = owned_server(engine, &owner_uid, &[]);
        // 25 makers × 10 servers, plus the default server.
        let makers: Vec<Client> = (0..25).map(|_| Client::user(server.addr)).collect();
        std::thread::scope(|scope| {
            for maker in &makers {
                scope.spawn(move || {
                    for i in 0..10 {
                        maker.create_server(&format!("Listed {i}"));
                    }
                });
            }
        });
        let anonymous = Client::anonymous(server.addr);

        // No parameters (the desktop client): the first 100, the default server first.
        let first = anonymous.get("/v1/servers");
        assert_eq!(first.status, 200, "{}", first.text());
        let first = first.json();
        assert_eq!(first.arr_at("servers").len(), 100);
        assert_eq!(first.str_at("servers.0.server_id"), "home");
        assert!(first.at("next_cursor").is_str());

        // Walking every page with the largest limit sees every server once.
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                None => "/v1/servers?limit=1000".to_owned(),
                Some(c) => format!("/v1/servers?limit=1000&cursor={c}"),
            };
            let page = anonymous.get(&path);
            assert_eq!(page.status, 200, "{}", page.text());
            let page = page.json();
            let servers = page.arr_at("servers");
            assert!(servers.len() <= 200);
            seen.extend(servers.iter().map(|s| s.str_at("server_id").to_owned()));
            match page.at("next_cursor").as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => {
                    assert!(page.at("next_cursor").is_null());
                    break;
                }
            }
        }
        assert_eq!(seen.len(), 251);
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 251, "no server twice");
        assert_eq!(seen[0], "home");

        // Small pages line up with the big ones.
        let small = anonymous.get("/v1/servers?limit=3").json();
        let ids: Vec<&str> = small.arr_at("servers").iter().map(|s| s.str_at("server_id")).collect();
        assert_eq!(ids, seen[..3].iter().map(String::as_str).collect::<Vec<_>>());
        let next = small.str_at("next_cursor").to_owned();
        let second = anonymous.get(&format!("/v1/servers?limit=3&cursor={next}")).json();
        assert_eq!(second.str_at("servers.0.server_id"), seen[3]);

        // Bad parameters.
        anonymous.get("/v1/servers?limit=0").assert_error(400, "invalid_limit");
        anonymous.get("/v1/servers?limit=ten").assert_error(400, "invalid_limit");
        anonymous.get("/v1/servers?cursor=not-a-cursor").assert_error(400, "invalid_cursor");
    };

    image_bombs_are_refused_by_their_pixels => |engine| {
        let owner_uid = new_uid();
        let server = owned_server(engine, &owner_uid, &[]);
        let owner = Client::with_uid(server.addr, &owner_uid);
        let general = owner.first_text_channel("home");
        let before = body_count(&owner, &general);

        // 10,000×10,000 grey pixels compress to a few kilobytes.
        let bomb = grey_png(10_000, 10_000);
        assert!(bomb.len() < 1_000_000, "{} bytes", bomb.len());
        // Well under the dimension limit (16,384 per side) and the upload limit.
        assert_eq!(&bomb[16..24], &[0, 0, 0x27, 0x10, 0, 0, 0x27, 0x10]);
        // Well-formed: a smaller one of the same making is accepted.
        let small = owner.post_multipart(
            &format!("/v1/channels/{general}/messages"),
            Multipart::new().text("body", "small").file("files", "small.png", "image/png", &grey_png(300, 200)),
        );
        assert_eq!(small.status, 201, "{}", small.text());
        let before = before + 1;
        let started = Instant::now();
        let reply = owner.post_multipart(
            &format!("/v1/channels/{general}/messages"),
            Multipart::new().text("body", "look").file("files", "bomb.png", "image/png", &bomb),
        );
        reply.assert_error(413, "image_too_large");
        assert!(!reply.json().bool_at("retryable"));
        assert!(started.elapsed() < Duration::from_secs(5), "refused in {:?}", started.elapsed());
        assert_eq!(body_count(&owner, &general), before);

        // An animated GIF: 1,000×1,000 is fine once, not in 41 frames.
        let frames = grey_gif(1_000, 1_000, 41);
        let reply = owner.post_multipart(
            &format!("/v1/channels/{general}/messages"),
            Multipart::new().file("files", "frames.gif", "image/gif", &frames),
        );
        reply.assert_error(413, "image_too_large");
        let one = grey_gif(1_000, 1_000, 1);
        let reply = owner.post_multipart(
            &format!("/v1/channels/{general}/messages"),
            Multipart::new().file("files", "frame.gif", "image/gif", &one),
        );
        assert_eq!(reply.status, 201, "{}", reply.text());
    };
}

fn assert_limit(reply: &Reply, limit: &str, max: usize) {
    let doc = reply.json();
    assert!(!doc.bool_at("retryable"), "{}", reply.text());
    assert_eq!(doc.str_at("details.limit"), limit, "{}", reply.text());
    assert_eq!(
        doc.at("details.max").as_u64(),
        Some(max as u64),
        "{}",
        reply.text()
    );
}

fn signal(addr: SocketAddr, ticket: &str) -> Ws {
    let mut ws = Ws::connect_to(addr, "/v1/rtc/signaling");
    ws.send_text(&encode(
        &json!({"type": "rtc.join", "request_id": "r1", "payload": {"ticket": ticket}}),
    ));
    ws
}

/// Posts until a command is answered 201 again (the reload after a failed write is done).
fn wait_until_commands_work(client: &Client, channel: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = client.post(
            &format!("/v1/channels/{channel}/messages"),
            &json!({"body": "probe"}),
        );
        if reply.status == 201 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "commands still refused: {}",
            reply.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Makes the database itself refuse any message whose body contains `poison` — a trigger
/// installed next to the server's schema, so one write fails at storage level whatever the
/// domain accepted.
fn poison_message_bodies(server: &TestServer) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use sqlx::Connection;
        match &server.db {
            Some(db) => {
                let mut conn = sqlx::PgConnection::connect(&db.url()).await.unwrap();
                sqlx::raw_sql(
                    "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN
                         IF NEW.body LIKE '%poison%' THEN
                             RAISE EXCEPTION 'poisoned body' USING ERRCODE = '22000';
                         END IF;
                         RETURN NEW;
                     END $$;
                     CREATE TRIGGER refuse_poison BEFORE INSERT ON messages
                         FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
                )
                .execute(&mut conn)
                .await
                .unwrap();
                conn.close().await.unwrap();
            }
            None => {
                let file = server.data_dir.as_ref().unwrap().path().join("openchat.db");
                let url = format!("sqlite://{}", file.display());
                let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::raw_sql(
                    "CREATE TRIGGER refuse_poison BEFORE INSERT ON messages
                     WHEN NEW.body LIKE '%poison%'
                     BEGIN SELECT RAISE(ABORT, 'poisoned body'); END;",
                )
                .execute(&mut conn)
                .await
                .unwrap();
                conn.close().await.unwrap();
            }
        }
    });
}

/// A black greyscale PNG of `width`×`height`, made by hand so it costs nothing to build: its
/// image data is one zero literal and then "repeat the previous 258 bytes" over and over
/// (fixed-Huffman deflate), about 13 bits per 258 pixels.
fn grey_png(width: u32, height: u32) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }
    impl Bits {
        /// `count` bits of `value`, least significant first.
        fn put(&mut self, value: u64, count: u32) {
            self.acc |= value << self.n;
            self.n += count;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        /// A Huffman code, most significant bit first.
        fn code(&mut self, code: u64, len: u32) {
            let reversed = (0..len).fold(0, |r, i| (r << 1) | ((code >> i) & 1));
            self.put(reversed, len);
        }
    }
    // Each row: filter byte 0, then `width` zero pixels.
    let total = (u64::from(width) + 1) * u64::from(height);
    let mut bits = Bits {
        out: Vec::new(),
        acc: 0,
        n: 0,
    };
    bits.put(1, 1); // BFINAL
    bits.put(1, 2); // fixed Huffman
    bits.code(0x30, 8); // literal 0
    let rest = total - 1;
    for _ in 0..rest / 258 {
        bits.code(0xC5, 8); // length 258 (code 285)
        bits.code(0, 5); // distance 1
    }
    for _ in 0..rest % 258 {
        bits.code(0x30, 8);
    }
    bits.code(0, 7); // end of block
    bits.put(0, 7); // flush to a byte
    let mut zlib = vec![0x78, 0x01];
    zlib.extend_from_slice(&bits.out);
    // Adler-32 of `total` zero bytes: a = 1, b = total mod 65521.
    let adler = ((total % 65521) << 16) as u32 | 1;
    zlib.extend_from_slice(&adler.to_be_bytes());

    let chunk = |kind: &[u8; 4], data: &[u8]| {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        let crc = media::crc32(&c[4..]);
        c.extend_from_slice(&crc.to_be_bytes());
        c
    };
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(b"IDAT", &zlib));
    png.extend(chunk(b"IEND", b""));
    png
}

/// A GIF with a `width`×`height` screen and `frames` frames of one pixel each (every frame is
/// composed on the whole screen by a viewer).
fn grey_gif(width: u16, height: u16, frames: u32) -> Vec<u8> {
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&width.to_le_bytes());
    gif.extend_from_slice(&height.to_le_bytes());
    gif.extend_from_slice(&[0x80, 0, 0]); // a global colour table of two colours
    gif.extend_from_slice(&[0, 0, 0, 90, 90, 90]);
    for _ in 0..frames {
        // Image descriptor 1×1 at (0,0), LZW minimum code size 2, codes clear/0/end.
        gif.extend_from_slice(&[0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 2, 0x44, 0x01, 0]);
    }
    gif.push(0x3B);
    gif
}

/// A message straight for storage, with `body`.
fn stored_message(seq: i64, body: &str) -> openchatd::domain::model::Message {
    use openchatd::domain::model::{Content, Message};
    Message {
        seq,
        id: format!("msg_{seq}"),
        server_id: "srv-1".to_owned(),
        channel_id: "ch-1".to_owned(),
        author_uid: "u-alice".to_owned(),
        author_device_id: "dev-1".to_owned(),
        content: Content::Plain {
            body: body.to_owned(),
        },
        reply_to_id: None,
        mentions: vec![],
        attachments: vec![],
        created_at: 10_000 + seq,
        deleted_at: None,
    }
}

/// Below the domain: what each engine makes of a NUL that reached it anyway. Postgres refuses
/// it, and that is a permanent error of that one write (not `Unavailable`, so not retryable),
/// while the writes queued with it commit; SQLite stores it.
#[test]
fn a_nul_that_reaches_postgres_fails_that_write_alone_and_permanently() {
    use openchatd::domain::records::{MessageQuery, Record, Visibility};
    use openchatd::storage::{StorageError, WriteOp, WriteOutcome};
    for harness in [
        support::storage::StorageHarness::postgres(),
        support::storage::StorageHarness::sqlite(),
    ] {
        let (storage, handle) = harness.start();
        let apply =
            |seq, body: &str| WriteOp::Apply(vec![Record::Message(stored_message(seq, body))]);
        let results = support::block_on(storage.write_each(vec![
            apply(1, "before"),
            apply(2, "nul \u{0} here"),
            apply(3, "after"),
        ]));
        assert_eq!(results[0], Ok(WriteOutcome::Done));
        assert_eq!(results[2], Ok(WriteOutcome::Done));
        let stored: Vec<i64> = support::block_on(storage.messages(MessageQuery {
            channel_id: "ch-1".to_owned(),
            visibility: Visibility::All,
            before: None,
            after: None,
            limit: 10,
            include_deleted: true,
        }))
        .unwrap()
        .messages
        .iter()
        .map(|m| m.seq)
        .collect();
        if harness.engine_name() == "postgres" {
            let error = results[1].clone().unwrap_err();
            assert!(matches!(error, StorageError::Internal(_)), "{error:?}");
            assert!(!error.is_retryable());
            assert_eq!(stored, vec![1, 3]);
        } else {
            assert_eq!(results[1], Ok(WriteOutcome::Done));
            assert_eq!(stored, vec![1, 2, 3]);
        }
        handle.shutdown();
    }
}

/// The other way a write fails: the database goes away. The reload once it is back must not
/// forget the used ticket or the spent rate-limit window either.
#[test]
fn a_used_ticket_and_a_spent_window_survive_a_database_outage() {
    use support::server::{PUBLIC_BASE_URL, Place, start_in};
    let place = Place::new(Engine::Postgres);
    let mut proxy = support::proxy::Proxy::start(place.db.as_ref().unwrap().server_addr());
    let url = place.db.as_ref().unwrap().url_via(proxy.addr());
    let owner_uid = new_uid();
    let server = start_in(
        place,
        Some(&url),
        &[
            ("OPENCHAT_AUTH_MODE", "headers"),
            ("OPENCHAT_PUBLIC_BASE_URL", PUBLIC_BASE_URL),
            ("OPENCHAT_RATE_LIMIT_PER_MINUTE", "3"),
            ("OPENCHAT_DEFAULT_SERVER_ID", "home"),
            ("OPENCHAT_DEFAULT_SERVER_OWNER_UID", &owner_uid),
            ("OPENCHAT_RTC_TICKET_SECRET", TICKET_SECRET),
        ],
        |_| {},
    );
    let owner = Client::with_uid(server.addr, &owner_uid);
    let general = owner.first_text_channel("home");
    let voice = voice_channel(&owner, "home");
    let path = format!("/v1/channels/{general}/messages");

    let caller = Client::user(server.addr);
    let ticket = support::call::ticket_for(&caller, &voice);
    let mut first = signal(server.addr, &ticket);
    first.expect("rtc.joined");
    first.close();
    let spammer = Client::user(server.addr);
    for i in 0..3 {
        let reply = spammer.post(&path, &json!({"body": format!("spam {i}")}));
        assert_eq!(reply.status, 201, "{}", reply.text());
    }
    spammer
        .post(&path, &json!({"body": "over"}))
        .assert_error(429, "rate_limited");

    proxy.stop();
    let failed = Client::user(server.addr).post(&path, &json!({"body": "while down"}));
    failed.assert_error(503, "storage_unavailable");
    assert!(failed.json().bool_at("retryable"));
    proxy.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = Client::user(server.addr).post(&path, &json!({"body": "probe"}));
        if reply.status == 201 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "storage did not recover: {}",
            reply.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let error = signal(server.addr, &ticket).expect("rtc.error");
    assert_eq!(
        error.str_at("payload.code"),
        "rtc_ticket_replayed",
        "{}",
        encode(&error)
    );
    spammer
        .post(&path, &json!({"body": "still over"}))
        .assert_error(429, "rate_limited");
}
