//! What the newest desktop client adds (wire contract A.10, Part D), the way it drives the
//! server: verified sessions through a server's `sessions/challenge` and `sessions`, the token
//! used instead of the identity headers and as the realtime subprotocol, and the attacks on
//! them. Every test runs against a real server with two shards, on embedded SQLite and on
//! Postgres, over real sockets.

mod support;

use std::time::Duration;

use simd_json::json;
use simd_json::prelude::*;
use support::api::{Client, DeviceKey, default_server_id, is_rfc3339_utc};
use support::json::{Json, JsonPath, encode, key_set};
use support::server::{PUBLIC_BASE_URL, start_community};
use support::ws::Ws;

use support::on_both_engines;

/// The lines of a challenge's payload, after checking what the client checks.
fn payload_lines(challenge: &Json) -> Vec<String> {
    let payload = challenge.str_at("payload");
    assert!(payload.starts_with("openchat-session-v1\n"), "{payload}");
    assert!(payload.len() <= 1024);
    payload.split('\n').map(str::to_owned).collect()
}

/// A new server owned by `owner` (created and claimed, as the client does); its id.
fn owned_server(owner: &Client, name: &str) -> String {
    let created = owner.create_server(name);
    let server_id = created.str_at("server.server_id").to_owned();
    let claimed = owner.post(
        &format!("/v1/servers/{server_id}/ownership:claim"),
        &json!({"claim_token": created.str_at("ownership_claim.token")}),
    );
    assert_eq!(claimed.status, 200, "{}", claimed.text());
    server_id
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
}
