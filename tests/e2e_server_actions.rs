//! What the newest desktop client adds (wire contract A.10, Part D), the way it drives the
//! server: verified sessions through a server's `sessions/challenge` and `sessions`, the token
//! used instead of the identity headers and as the realtime subprotocol, and the attacks on
//! them. Every test runs against a real server with two shards, on embedded SQLite and on
//! Postgres, over real sockets.

mod support;

use std::time::Duration;

use simd_json::json;
use simd_json::prelude::*;
use support::api::{Client, DeviceKey, default_server_id, is_rfc3339_utc, owned_server};
use support::call::voice_channel;
use support::json::{Json, JsonPath, encode, key_set};
use support::server::{PUBLIC_BASE_URL, TestServer, restart_community, start_community};
use support::ws::{QUIET, Ws, headers_query};

use support::on_both_engines;

/// The lines of a challenge's payload, after checking what the client checks.
fn payload_lines(challenge: &Json) -> Vec<String> {
    let payload = challenge.str_at("payload");
    assert!(payload.starts_with("openchat-session-v1\n"), "{payload}");
    assert!(payload.len() <= 1024);
    payload.split('\n').map(str::to_owned).collect()
}

/// Every stored invite row, its columns joined as text, read from the database itself.
fn stored_invites(server: &TestServer) -> Vec<String> {
    server.sql(
        "SELECT id || ' ' || server_id || ' ' || code_hash || ' ' || created_by_uid || ' ' || \
         CAST(max_uses AS TEXT) || ' ' || CAST(use_count AS TEXT) AS line FROM invites",
    )
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An RFC 3339 time `secs` from now.
fn in_secs(secs: i64) -> String {
    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(secs);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

on_both_engines! {
    a_verified_session_is_opened_and_used_the_way_the_newest_client_does => |engine| {
        // Headers mode: today's client and the newest one on the same server.
        let server = start_community(engine, &[]);
        let addr = server.addr;
        let server_id = default_server_id(addr);
        let key = DeviceKey::new();

        let challenge = key.server_challenge(addr, &server_id, None);
        assert_eq!(challenge.status, 201, "{}", challenge.text());
        let challenge = challenge.json();
        assert_eq!(
            challenge.keys_at(""),
            key_set(&["challenge_id", "server_id", "user_uid", "payload", "expires_at"]),
            "{}", encode(&challenge)
        );
        assert_eq!(challenge.str_at("server_id"), server_id);
        assert_eq!(challenge.str_at("user_uid"), key.derived_uid(), "B.1's uid derivation");
        assert!(is_rfc3339_utc(challenge.at("expires_at")));
        // Everything the session binds is inside what the client signs.
        let lines = payload_lines(&challenge);
        assert_eq!(lines.len(), 7, "{lines:?}");
        assert_eq!(lines[1], PUBLIC_BASE_URL);
        assert_eq!(lines[2], server_id);
        assert_eq!(lines[3], key.derived_uid());
        assert_eq!(lines[4], key.device_id);
        assert!(lines[5].len() >= 22, "a nonce of at least 128 bits: {}", lines[5]);
        assert_eq!(lines[6], challenge.str_at("expires_at"));

        let signature = key.sign_payload(challenge.str_at("payload"));
        let session = key.server_session(addr, &server_id, challenge.str_at("challenge_id"), &signature);
        assert_eq!(session.status, 201, "{}", session.text());
        let session = session.json();
        assert_eq!(session.str_at("server_id"), server_id);
        assert_eq!(session.str_at("user_uid"), key.derived_uid());
        let token = session.str_at("token").to_owned();
        assert!(!token.is_empty() && token.len() <= 128, "{token}");
        assert!(is_rfc3339_utc(session.at("expires_at")));

        // The token instead of the headers: the device comes from the session.
        let me = Client::bearer(addr, &token);
        let check = me.expect(200, me.get("/v1/auth/session"));
        assert_eq!(check.str_at("user_uid"), key.derived_uid());
        assert_eq!(check.str_at("device_id"), key.device_id);
        let general = me.first_text_channel(&server_id);
        // The realtime socket with the token as its subprotocol, echoed (Chromium fails the
        // handshake otherwise; `connect_with_protocol` checks the echo).
        let mut ws = Ws::connect_with_protocol(
            addr,
            &format!("server_id={server_id}"),
            &format!("openchat.session.{token}"),
        );
        ws.subscribe(&general);
        ws.expect("chat.presence.snapshot");
        let peer = Client::user(addr);
        peer.messages(&general, "limit=150");
        let sent = me.send(&general, "signed in for real");
        assert_eq!(sent.str_at("author_uid"), key.derived_uid());
        let live = ws.expect_where("chat.message.created", |f| {
            f.str_at("payload.message.id") == sent.str_at("id")
        });
        assert_eq!(live.str_at("payload.message.author_uid"), key.derived_uid());
        // A headers-mode member reads it.
        let page = peer.messages(&general, "limit=150");
        assert!(page.arr_at("messages").iter().any(|m| m.str_at("id") == sent.str_at("id")));

        // Identity headers next to a token are not read: the session decides who asks.
        let spoof = me.request(
            "POST",
            &format!("/v1/channels/{general}/messages"),
            &[("X-OpenChat-User-UID", "uid_someoneelse"), ("X-OpenChat-Device-ID", "desktop_x")],
            Some(("application/json", br#"{"body":"who am i"}"#)),
        );
        assert_eq!(spoof.status, 201, "{}", spoof.text());
        assert_eq!(spoof.json().str_at("message.author_uid"), key.derived_uid());

        // One session system: B.1's revoke ends it, and its socket closes at once.
        me.expect(200, me.delete("/v1/auth/session"));
        assert!(ws.closed_within(Duration::from_secs(3)), "the revoked session's socket stays open");
        me.get("/v1/auth/session").assert_error(401, "invalid_token");
        me.post(&format!("/v1/channels/{general}/messages"), &json!({"body": "after revoke"}))
            .assert_error(401, "invalid_token");
    };

    verified_session_challenges_cannot_be_replayed_moved_or_forged => |engine| {
        let server = start_community(engine, &[]);
        let addr = server.addr;
        let server_id = default_server_id(addr);
        let owner = Client::user(addr);
        let other_id = owned_server(&owner, "Elsewhere");
        let key = DeviceKey::new();
        let fresh = |server: &str| {
            let reply = key.server_challenge(addr, server, None);
            assert_eq!(reply.status, 201, "{}", reply.text());
            reply.json()
        };

        // Replay: the second use of one challenge fails, even with a valid signature.
        let c = fresh(&server_id);
        let signature = key.sign_payload(c.str_at("payload"));
        let first = key.server_session(addr, &server_id, c.str_at("challenge_id"), &signature);
        assert_eq!(first.status, 201, "{}", first.text());
        key.server_session(addr, &server_id, c.str_at("challenge_id"), &signature)
            .assert_error(401, "unauthorized");

        // Moved: a challenge of one server does not open a session at another.
        let c = fresh(&server_id);
        let signature = key.sign_payload(c.str_at("payload"));
        key.server_session(addr, &other_id, c.str_at("challenge_id"), &signature)
            .assert_error(401, "unauthorized");

        // Forged: a signature by another key, or over anything but the payload (another
        // origin, B.1's message), fails, and spends the challenge.
        let c = fresh(&server_id);
        let mallory = DeviceKey::new();
        key.server_session(addr, &server_id, c.str_at("challenge_id"), &mallory.sign_payload(c.str_at("payload")))
            .assert_error(401, "unauthorized");
        key.server_session(addr, &server_id, c.str_at("challenge_id"), &key.sign_payload(c.str_at("payload")))
            .assert_error(401, "unauthorized");
        let c = fresh(&server_id);
        let elsewhere = c.str_at("payload").replace(PUBLIC_BASE_URL, "https://evil.example");
        key.server_session(addr, &server_id, c.str_at("challenge_id"), &key.sign_payload(&elsewhere))
            .assert_error(401, "unauthorized");
        let c = fresh(&server_id);
        key.server_session(addr, &server_id, c.str_at("challenge_id"), &key.sign(PUBLIC_BASE_URL, c.str_at("challenge_id")))
            .assert_error(401, "unauthorized");

        // A tampered id, B.1's challenge in its place, an unknown server, garbage.
        let c = fresh(&server_id);
        let id = c.str_at("challenge_id");
        let flipped: String = id.chars().enumerate()
            .map(|(i, ch)| if i == 40 { if ch == 'A' { 'B' } else { 'A' } } else { ch })
            .collect();
        key.server_session(addr, &server_id, &flipped, &key.sign_payload(c.str_at("payload")))
            .assert_error(401, "unauthorized");
        let b1 = key.challenge(addr, None);
        key.server_session(addr, &server_id, &b1, &key.sign(PUBLIC_BASE_URL, &b1))
            .assert_error(401, "unauthorized");
        key.server_challenge(addr, "srv_nothere", None).assert_error(404, "server_not_found");
        key.server_session(addr, &server_id, &"A".repeat(100_000), &signature)
            .assert_error(401, "unauthorized");
        let anon = Client::anonymous(addr);
        for body in [
            json!({}),
            json!({"challenge_id": "", "signature": "x"}),
            json!({"challenge_id": 7, "signature": []}),
            json!({"challenge_id": id, "signature": "x".repeat(10_000)}),
        ] {
            let reply = anon.post(&format!("/v1/servers/{server_id}/sessions"), &body);
            assert_eq!(reply.status, 400, "{} -> {}", encode(&body), reply.text());
        }
        for body in [
            json!({"public_key": key.public_key()}),
            json!({"public_key": key.public_key(), "device_id": "desk\u{0}top"}),
            json!({"public_key": "AAAA", "device_id": "desktop_1"}),
            json!({"public_key": "A".repeat(100_000), "device_id": "desktop_1"}),
            json!({"public_key": key.public_key(), "device_id": "d".repeat(65)}),
            json!({"public_key": key.public_key(), "device_id": "desktop_1", "user_uid": "uid\n2"}),
        ] {
            let reply = anon.post(&format!("/v1/servers/{server_id}/sessions/challenge"), &body);
            assert_eq!(reply.status, 400, "{} -> {}", encode(&body), reply.text());
        }
    };

    verified_sessions_follow_b1s_binding_rules => |engine| {
        let server = start_community(engine, &[]);
        let addr = server.addr;
        let server_id = default_server_id(addr);
        // A headers-mode uid of the desktop client, a member with history.
        let legacy = Client::user(addr);
        let general = legacy.first_text_channel(&server_id);
        legacy.send(&general, "before moving to sessions");
        let legacy_uid = legacy.uid().to_owned();
        let key = DeviceKey::new();

        // Nobody takes a uid by asking first: told before anything is signed.
        key.server_challenge(addr, &server_id, Some(&legacy_uid)).assert_error(403, "binding_required");
        // Approved by the owner of a server the uid is a member of.
        let owner = Client::user(addr);
        let own_id = owned_server(&owner, "Mine");
        let own_general = legacy.first_text_channel(&own_id);
        legacy.send(&own_general, "a member of Mine");
        let approved = owner.post(
            &format!("/v1/servers/{own_id}/identity-bindings"),
            &json!({"user_uid": legacy_uid.as_str(), "public_key": key.public_key()}),
        );
        assert_eq!(approved.status, 201, "{}", approved.text());
        let session = key.server_sign_in(addr, &own_id, Some(&legacy_uid));
        assert_eq!(session.str_at("user_uid"), legacy_uid);
        // The uid is now bound to that key: another key asking for it is refused.
        let mallory = DeviceKey::new();
        mallory.server_challenge(addr, &own_id, Some(&legacy_uid)).assert_error(409, "identity_key_mismatch");
        // And a device keeps its key: the same device id with another key is refused.
        let thief = DeviceKey { device_id: key.device_id.clone(), ..DeviceKey::new() };
        thief.server_challenge(addr, &own_id, None).assert_error(409, "identity_key_mismatch");
        // B.1 and A.10 are one system: the same key through B.1 gets the same uid and device.
        let b1 = key.sign_in(addr, PUBLIC_BASE_URL, Some(&legacy_uid));
        assert_eq!(b1.str_at("user_uid"), legacy_uid);
        let via_b1 = Client::bearer(addr, b1.str_at("token"));
        let posted = via_b1.send(&own_general, "same person");
        assert_eq!(posted.str_at("author_uid"), legacy_uid);
    };

    bulk_read_acks_are_all_or_nothing_cover_exactly_what_was_asked_and_never_move_back => |engine| {
        let server = start_community(engine, &[]);
        let addr = server.addr;
        let owner = Client::user(addr);
        let server_id = owned_server(&owner, "Readers");
        let general = owner.first_text_channel(&server_id);
        let second = owner.expect(201, owner.post(&format!("/v1/servers/{server_id}/channels"), &json!({"name": "second", "type": "text"})));
        let second = second.str_at("channel.id").to_owned();
        let empty = owner.expect(201, owner.post(&format!("/v1/servers/{server_id}/channels"), &json!({"name": "quiet", "type": "text"})));
        let empty = empty.str_at("channel.id").to_owned();
        let voice = voice_channel(&owner, &server_id);
        let elsewhere = default_server_id(addr);
        let elsewhere_channel = owner.first_text_channel(&elsewhere);

        let reader = Client::user(addr);
        let mut reader_ws = Ws::connect(addr, &headers_query(&server_id, reader.uid(), reader.device())).live();
        let mut owner_ws = Ws::connect(addr, &headers_query(&server_id, owner.uid(), owner.device())).live();
        let g: Vec<String> = (0..3).map(|i| owner.send(&general, &format!("g{i}")).str_at("id").to_owned()).collect();
        let s2 = owner.send(&second, "s0").str_at("id").to_owned();
        let path = format!("/v1/servers/{server_id}/read-acks");
        let cursor = |channel: &str| reader.get(&format!("/v1/channels/{channel}/read-ack")).json().at("read_ack.last_read_message_id").clone();

        // The newest client's shape: named cursors and empty ones (= latest), in one request.
        let acked = reader.put(&path, &json!({"read_acks": [
            {"channel_id": general.as_str(), "last_read_message_id": g[1].as_str()},
            {"channel_id": second.as_str(), "last_read_message_id": ""},
            {"channel_id": empty.as_str()},
        ]}));
        assert_eq!(acked.status, 200, "{}", acked.text());
        let acked = acked.json();
        assert_eq!(acked.str_at("server_id"), server_id);
        let items = acked.arr_at("read_acks");
        let channels: Vec<&str> = items.iter().map(|i| i.str_at("channel_id")).collect();
        assert_eq!(channels, [general.as_str(), second.as_str(), empty.as_str()], "exactly the requested channels, in order");
        assert_eq!(items[0].str_at("last_read_message_id"), g[1]);
        assert_eq!(items[1].str_at("last_read_message_id"), s2);
        assert!(items[2].is_null_at("last_read_message_id"), "an empty channel has nothing to move");
        for item in items {
            assert_eq!(item.str_at("user_uid"), reader.uid());
            assert_eq!(item.keys_at(""), key_set(&["channel_id", "user_uid", "last_read_message_id", "acked_at", "cursor_index"]));
        }
        // One event per advanced channel, flat, to the reader alone.
        let mut advanced: Vec<String> = (0..2).map(|_| reader_ws.expect("chat.read_ack.updated").str_at("payload.channel_id").to_owned()).collect();
        advanced.sort();
        let mut expected = vec![general.clone(), second.clone()];
        expected.sort();
        assert_eq!(advanced, expected);
        reader_ws.assert_none("chat.read_ack.updated", QUIET);
        owner_ws.assert_none("chat.read_ack.updated", QUIET);

        // Never back: an older cursor leaves it, and tells nobody.
        let back = reader.expect(200, reader.put(&path, &json!({"read_acks": [{"channel_id": general.as_str(), "last_read_message_id": g[0].as_str()}]})));
        assert_eq!(back.str_at("read_acks.0.last_read_message_id"), g[1]);
        reader_ws.assert_none("chat.read_ack.updated", QUIET);

        // All or nothing: one bad entry, and the good one beside it does not move either.
        let forward = json!({"channel_id": general.as_str(), "last_read_message_id": g[2].as_str()});
        for (bad, status, code) in [
            (json!({"channel_id": voice.as_str()}), 400, "not_a_text_channel"),
            (json!({"channel_id": general.as_str()}), 400, "duplicate_channel"),
            (json!({"channel_id": elsewhere_channel.as_str()}), 404, "channel_not_found"),
            (json!({"channel_id": "ch_nothere"}), 404, "channel_not_found"),
            (json!({"channel_id": second.as_str(), "last_read_message_id": g[0].as_str()}), 404, "message_not_found"),
            (json!({"channel_id": second.as_str(), "last_read_message_id": "msg_nothere"}), 404, "message_not_found"),
            (json!({"channel_id": second.as_str(), "last_read_message_id": "bad id\u{0}"}), 400, "invalid_message_id"),
            (json!({"channel_id": 7}), 400, "invalid_json"),
            (json!({}), 400, "invalid_channel_id"),
        ] {
            let reply = reader.put(&path, &json!({"read_acks": [forward.clone(), bad.clone()]}));
            reply.assert_error(status, code);
            assert_eq!(cursor(&general).as_str(), Some(g[1].as_str()), "moved by a refused request with {}", encode(&bad));
        }
        reader_ws.assert_none("chat.read_ack.updated", QUIET);
        let too_many: Vec<Json> = (0..501).map(|i| json!({"channel_id": format!("ch_{i}")})).collect();
        reader.put(&path, &json!({"read_acks": too_many})).assert_error(400, "too_many_read_acks");
        reader.put(&path, &json!({})).assert_error(400, "invalid_read_acks");
        reader.put(&path, &json!({"read_acks": {"channel_id": general.as_str()}})).assert_error(400, "invalid_json");
        reader.put("/v1/servers/srv_nothere/read-acks", &json!({"read_acks": []})).assert_error(404, "server_not_found");
        Client::anonymous(addr).put(&path, &json!({"read_acks": []})).assert_error(401, "unauthorized");
        // 500 is the limit, not one less.
        let at_limit: Vec<Json> = (0..500).map(|i| json!({"channel_id": format!("ch_{i}")})).collect();
        reader.put(&path, &json!({"read_acks": at_limit})).assert_error(404, "channel_not_found");

        // And the request that is right moves it.
        let moved = reader.expect(200, reader.put(&path, &json!({"read_acks": [forward]})));
        assert_eq!(moved.str_at("read_acks.0.last_read_message_id"), g[2]);
        assert_eq!(reader_ws.expect("chat.read_ack.updated").str_at("payload.last_read_message_id"), g[2]);
    };

    a_read_cursor_cannot_probe_for_messages_the_reader_may_not_read => |engine| {
        let server = start_community(engine, &[]);
        let addr = server.addr;
        let owner = Client::user(addr);
        let server_id = owned_server(&owner, "Joined history");
        let general = owner.first_text_channel(&server_id);
        // Posted before the newcomer joins a `joined` channel: not the newcomer's to read.
        let before = owner.send(&general, "before you came").str_at("id").to_owned();
        let newcomer = Client::user(addr);
        newcomer.messages(&general, "limit=150");
        let after = owner.send(&general, "after you came").str_at("id").to_owned();
        let single = format!("/v1/channels/{general}/read-ack");
        newcomer.put(&single, &json!({"last_read_message_id": before.as_str()})).assert_error(404, "message_not_found");
        newcomer.put(&format!("/v1/servers/{server_id}/read-acks"), &json!({"read_acks": [{"channel_id": general.as_str(), "last_read_message_id": before.as_str()}]}))
            .assert_error(404, "message_not_found");
        // Its own messages and later ones are fine.
        let ok = newcomer.expect(200, newcomer.put(&single, &json!({"last_read_message_id": after.as_str()})));
        assert_eq!(ok.str_at("read_ack.last_read_message_id"), after);
    };

    capabilities_advertise_the_server_actions_that_are_enforced => |engine| {
        let server = start_community(engine, &[]);
        let caps = Client::anonymous(server.addr).expect(200, Client::anonymous(server.addr).get("/v1/client/capabilities"));
        assert_eq!(
            caps.keys_at("server_actions"),
            key_set(&["bulk_read_acks", "invites", "privacy", "profile_overrides", "events", "moderation"])
        );
        assert!(caps.bool_at("server_actions.bulk_read_acks"));
        assert!(caps.bool_at("server_actions.invites"));
        assert!(caps.bool_at("server_actions.privacy"));
        assert!(caps.bool_at("server_actions.profile_overrides"));
        assert!(caps.bool_at("server_actions.events"));
        assert!(caps.bool_at("server_actions.moderation"));
        assert_eq!(caps.keys_at("moderation"), key_set(&["enabled", "actions", "vote_policy", "evidence_policy"]));
        assert!(caps.bool_at("moderation.enabled"));
        let names = |path: &str| -> Vec<String> { caps.arr_at(path).iter().map(|v| v.as_str().unwrap().to_owned()).collect() };
        assert_eq!(names("moderation.actions.immediate"), ["kick", "timeout_short", "channel_lock"]);
        assert_eq!(names("moderation.actions.vote_required"), ["ban", "timeout_long", "role_remove"]);
        assert_eq!(
            (caps.i64_at("moderation.vote_policy.threshold"), caps.i64_at("moderation.vote_policy.quorum"), caps.i64_at("moderation.vote_policy.window_seconds")),
            (2, 3, 86400)
        );
        assert!(!caps.bool_at("moderation.evidence_policy.report_bundle_required"));
        assert!(caps.bool_at("moderation.evidence_policy.plaintext_disclosure_optional"));
    };

    invites_are_made_shown_once_listed_revoked_and_redeemed_into_an_invite_only_server => |engine| {
        let server = start_community(engine, &[]);
        let addr = server.addr;
        let owner = Client::user(addr);
        let server_id = owned_server(&owner, "Members only");
        let general = owner.first_text_channel(&server_id);
        let settings = owner.expect(200, owner.put(&format!("/v1/servers/{server_id}/settings"), &json!({"join_policy": "invite"})));
        assert_eq!(settings.str_at("join_policy"), "invite");
        owner.put(&format!("/v1/servers/{server_id}/settings"), &json!({"join_policy": "closed"})).assert_error(400, "invalid_join_policy");

        // Invite-only: no way in by opening it, and it is not listed to outsiders.
        let outsider = Client::user(addr);
        outsider.get(&format!("/v1/channels/{general}/messages?limit=150")).assert_error(403, "invite_required");
        outsider.post(&format!("/v1/channels/{general}/messages"), &json!({"body": "let me in"})).assert_error(403, "invite_required");
        outsider.post(&format!("/v1/servers/{server_id}/membership"), &json!({})).assert_error(403, "invite_required");
        let listed = outsider.expect(200, outsider.get("/v1/servers"));
        assert!(!listed.arr_at("servers").iter().any(|s| s.str_at("server_id") == server_id), "{}", encode(&listed));
        let mut refused = Ws::connect(addr, &headers_query(&server_id, outsider.uid(), outsider.device()));
        refused.expect("chat.error");

        // Made by the owner: the code once, and 24 random bytes of it.
        let path = format!("/v1/servers/{server_id}/invites");
        let made = owner.post(&path, &json!({"expires_at": in_secs(3600), "max_uses": 2}));
        assert_eq!(made.status, 201, "{}", made.text());
        let made = made.json();
        assert_eq!(made.keys_at(""), key_set(&["invite_id", "server_id", "code", "created_by_uid", "expires_at", "max_uses", "use_count", "created_at"]));
        let code = made.str_at("code").to_owned();
        assert_eq!(code.len(), 32, "24 bytes as unpadded base64url: {code}");
        assert!(code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(made.str_at("server_id"), server_id);
        assert_eq!(made.str_at("created_by_uid"), owner.uid());
        assert_eq!(made.i64_at("max_uses"), 2);
        assert_eq!(made.i64_at("use_count"), 0);
        assert!(is_rfc3339_utc(made.at("expires_at")) && is_rfc3339_utc(made.at("created_at")));
        let invite_id = made.str_at("invite_id").to_owned();
        // Stored hashed: the database has the hash and never the code.
        let rows = stored_invites(&server);
        assert_eq!(rows.len(), 1);
        assert!(!rows[0].contains(&code), "{}", rows[0]);
        assert!(rows[0].contains(&sha256_hex(&code)), "{}", rows[0]);
        // Listed without the code.
        let list = owner.expect(200, owner.get(&path));
        assert_eq!(list.arr_at("invites").len(), 1);
        assert!(list.at("invites.0").get("code").is_none());
        assert_eq!(list.str_at("invites.0.invite_id"), invite_id);
        assert!(list.is_null_at("next_cursor"));

        // Only the owner or an admin makes, lists and revokes them; the bounds hold.
        let member = Client::user(addr);
        let redeemed = member.expect(200, member.post(&format!("/v1/invites/{code}/redeem"), &json!({})));
        assert_eq!(redeemed.str_at("server_id"), server_id);
        assert_eq!(redeemed.str_at("membership_state"), "active");
        member.post(&path, &json!({"expires_at": in_secs(3600), "max_uses": 2})).assert_error(403, "forbidden");
        member.get(&path).assert_error(403, "forbidden");
        member.delete(&format!("{path}/{invite_id}")).assert_error(403, "forbidden");
        for (body, code_) in [
            (json!({"expires_at": in_secs(30), "max_uses": 1}), "invalid_expires_at"),
            (json!({"expires_at": in_secs(31 * 24 * 3600), "max_uses": 1}), "invalid_expires_at"),
            (json!({"expires_at": in_secs(-60), "max_uses": 1}), "invalid_expires_at"),
            (json!({"expires_at": "tomorrow", "max_uses": 1}), "invalid_expires_at"),
            (json!({"expires_at": in_secs(3600), "max_uses": 0}), "invalid_max_uses"),
            (json!({"expires_at": in_secs(3600), "max_uses": 1001}), "invalid_max_uses"),
            (json!({"expires_at": in_secs(3600)}), "invalid_max_uses"),
        ] {
            owner.post(&path, &body).assert_error(400, code_);
        }
        owner.post(&path, &json!({"expires_at": in_secs(3600), "max_uses": -1})).assert_error(400, "invalid_json");

        // A member reads and posts; redeeming again as a member spends no use.
        member.send(&general, "in by invite");
        member.expect(200, member.post(&format!("/v1/invites/{code}/redeem"), &json!({})));
        assert_eq!(owner.expect(200, owner.get(&path)).i64_at("invites.0.use_count"), 1);
        let second = Client::user(addr);
        second.expect(200, second.post(&format!("/v1/invites/{code}/redeem"), &json!({})));
        // Used up.
        let third = Client::user(addr);
        third.post(&format!("/v1/invites/{code}/redeem"), &json!({})).assert_error(410, "invite_expired");
        // Revoked: 204, and it lets nobody else in.
        let another = owner.expect(201, owner.post(&path, &json!({"expires_at": in_secs(3600), "max_uses": 5})));
        let another_code = another.str_at("code").to_owned();
        let revoked = owner.delete(&format!("{path}/{}", another.str_at("invite_id")));
        assert_eq!(revoked.status, 204, "{}", revoked.text());
        third.post(&format!("/v1/invites/{another_code}/redeem"), &json!({})).assert_error(410, "invite_expired");
        // Unknown, malformed, anonymous.
        third.post("/v1/invites/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/redeem", &json!({})).assert_error(404, "invite_not_found");
        third.post("/v1/invites/bad%00code/redeem", &json!({})).assert_error(400, "invalid_invite_code");
        Client::anonymous(addr).post(&format!("/v1/invites/{code}/redeem"), &json!({})).assert_error(401, "unauthorized");
        // Leaving an invite-only server means needing a new invite.
        member.expect(200, member.delete(&format!("/v1/servers/{server_id}/membership")));
        member.post(&format!("/v1/servers/{server_id}/membership"), &json!({})).assert_error(403, "invite_required");

        // It all survives a restart, codes still unknown to the database.
        let server = restart_community(server);
        let addr = server.addr;
        let owner = Client { addr, ..owner };
        let list = owner.expect(200, owner.get(&format!("/v1/servers/{server_id}/invites")));
        let kept: Vec<&Json> = list.arr_at("invites").iter().collect();
        assert_eq!(kept.len(), 1, "the revoked one is gone: {}", encode(&list));
        assert_eq!(kept[0].i64_at("use_count"), 2);
        let third = Client { addr, ..third };
        third.post(&format!("/v1/invites/{code}/redeem"), &json!({})).assert_error(410, "invite_expired");
    };

    an_invites_use_limit_holds_under_fifty_parallel_redemptions => |engine| {
        let server = start_community(engine, &[]);
        let addr = server.addr;
        let owner = Client::user(addr);
        let server_id = owned_server(&owner, "Ten seats");
        owner.expect(200, owner.put(&format!("/v1/servers/{server_id}/settings"), &json!({"join_policy": "invite"})));
        let made = owner.expect(201, owner.post(&format!("/v1/servers/{server_id}/invites"), &json!({"expires_at": in_secs(3600), "max_uses": 10})));
        let code = made.str_at("code").to_owned();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(50));
        let statuses: Vec<u16> = (0..50)
            .map(|_| {
                let (barrier, code) = (barrier.clone(), code.clone());
                let client = Client::user(addr);
                std::thread::spawn(move || {
                    barrier.wait();
                    client.post(&format!("/v1/invites/{code}/redeem"), &json!({})).status
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 10, "{statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == 410).count(), 40, "{statuses:?}");
        let members = owner.expect(200, owner.get(&format!("/v1/servers/{server_id}/members")));
        assert_eq!(members.arr_at("members").len(), 11, "the owner and ten");
        let listed = owner.expect(200, owner.get(&format!("/v1/servers/{server_id}/invites")));
        assert_eq!(listed.i64_at("invites.0.use_count"), 10);
        assert!(stored_invites(&server)[0].ends_with(" 10 10"), "{:?}", stored_invites(&server));
    };

    invites_page_fifty_at_a_time_newest_first => |engine| {
        let server = start_community(engine, &[]);
        let owner = Client::user(server.addr);
        let server_id = owned_server(&owner, "Many invites");
        let path = format!("/v1/servers/{server_id}/invites");
        let made: Vec<String> = (0..60)
            .map(|_| owner.expect(201, owner.post(&path, &json!({"expires_at": in_secs(3600), "max_uses": 1}))).str_at("invite_id").to_owned())
            .collect();
        let first = owner.expect(200, owner.get(&path));
        assert_eq!(first.arr_at("invites").len(), 50);
        let cursor = first.str_at("next_cursor").to_owned();
        let second = owner.expect(200, owner.get(&format!("{path}?cursor={cursor}")));
        assert_eq!(second.arr_at("invites").len(), 10);
        assert!(second.is_null_at("next_cursor"));
        let mut seen: Vec<String> = first.arr_at("invites").iter().chain(second.arr_at("invites").iter()).map(|i| i.str_at("invite_id").to_owned()).collect();
        seen.sort();
        let mut all = made.clone();
        all.sort();
        assert_eq!(seen, all, "every invite once");
        owner.get(&format!("{path}?cursor=inv_nothere")).assert_error(404, "invite_not_found");
        owner.get(&format!("{path}?cursor=%00")).assert_error(400, "invalid_cursor");
    };

    join_tickets_name_what_was_asked_and_a_timed_out_member_only_listens => |engine| {
        let server = start_community(engine, &[]);
        let addr = server.addr;
        let home = default_server_id(addr);
        let owner = Client::user(addr);
        let other = owned_server(&owner, "Other");
        let alice = Client::user(addr);
        let voice = voice_channel(&alice, &home);
        let path = format!("/v1/rtc/channels/{voice}/join-ticket");
        // The client checks that the ticket names the server and channel it asked for: the
        // server never hands out one for another pair; a mismatch is refused.
        let ticket = alice.expect(200, alice.post(&path, &json!({"server_id": home.as_str()})));
        assert_eq!((ticket.str_at("server_id"), ticket.str_at("channel_id")), (home.as_str(), voice.as_str()));
        assert!(ticket.bool_at("permissions.speak"));
        alice.post(&path, &json!({"server_id": other.as_str()})).assert_error(404, "channel_not_found");
        let elsewhere = voice_channel(&owner, &other);
        owner.post(&format!("/v1/rtc/channels/{elsewhere}/join-ticket"), &json!({"server_id": home.as_str()}))
            .assert_error(404, "channel_not_found");

        // A timeout in force (as the moderation issue's endpoints will store it; put in the
        // database here, seen after a restart): the ticket is listen-only, and the client's
        // publish is refused with its terminal code, before the close.
        let until = (std::time::SystemTime::now() + Duration::from_secs(3600))
            .duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        server.sql(&format!(
            "INSERT INTO moderation (server_id, kind, target, until, active, by_uid, at) \
             VALUES ('{home}', 'timeout', '{}', {until}, TRUE, '{}', 1) RETURNING target",
            alice.uid(), owner.uid()
        ));
        let server = restart_community(server);
        let addr = server.addr;
        let alice = Client::with_uid(addr, alice.uid());
        let ticket = alice.expect(200, alice.post(&path, &json!({"server_id": home.as_str()})));
        assert_eq!(
            (ticket.bool_at("permissions.speak"), ticket.bool_at("permissions.video"), ticket.bool_at("permissions.screenshare")),
            (false, false, false),
            "{}", encode(&ticket)
        );
        let mut caller = support::call::Caller::join(addr, ticket.str_at("ticket"));
        let (sdp, _) = caller.publish.peer
            .offer(&[openchatd::sfu::peer::Line::send(str0m::media::MediaKind::Audio, "s", "mic")])
            .unwrap();
        caller.ws.send_text(&encode(&json!({
            "type": "rtc.offer.publish", "request_id": "offer_mic", "payload": {"type": "offer", "sdp": sdp, "direction": "publish"}
        })));
        let error = caller.ws.expect("rtc.error");
        assert_eq!((error.str_at("payload.code"), error.str_at("request_id")), ("rtc_media_denied", "offer_mic"));
        assert!(caller.ws.closed_within(Duration::from_secs(2)));
        // Listening works: a fresh ticket, a subscribe connection.
        let ticket = alice.expect(200, alice.post(&path, &json!({"server_id": home.as_str()})));
        let mut caller = support::call::Caller::join(addr, ticket.str_at("ticket"));
        caller.negotiate("subscribe", &[openchatd::sfu::peer::Line::receive(str0m::media::MediaKind::Audio)]);
        caller.ws.assert_none("rtc.error", QUIET);
    };
}
