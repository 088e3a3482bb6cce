//! End-to-end encrypted channels (wire contract Part C) with real MLS on both sides: every
//! device is an openmls client (`support::mls_client`) whose signature key is its Ed25519
//! session key, talking to a real server (two shards, embedded SQLite and Postgres) over HTTP
//! and the realtime socket. The server is the delivery service: it validates and routes, and
//! every member decrypts what it may and nothing else reaches anyone else — by any path.
//!
//! Every test ends by reading the whole server log of the binary (captured at trace level)
//! for the blobs it sent and received: none may be there.

mod support;

use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use simd_json::json;
use simd_json::prelude::*;
use support::api::{Client, DeviceKey, owned_server};
use support::e2ee::{Device, b64, unb64};
use support::json::{Json, JsonPath, encode};
use support::server::{PUBLIC_BASE_URL, TestServer, start_community};
use support::ws::Ws;

use support::on_both_engines;

/// Everything any server of this test process logged, at trace level.
fn log() -> &'static Arc<Mutex<Vec<u8>>> {
    support::logs::captured(openchatd::config::LogFormat::Text)
}

/// No blob or code the devices handled appears in the log: neither a prefix of its base64url
/// (24 characters find one quoted or cut) nor 16 bytes from its middle as hex, contiguous or
/// as `{:x?}` prints a byte slice (openmls's trace lines do).
fn assert_nothing_logged(devices: &[&Device], codes: &[&str]) {
    let text = String::from_utf8_lossy(&log().lock().unwrap()).into_owned();
    assert!(
        !text.is_empty(),
        "the capture works: the servers logged something"
    );
    for d in devices {
        for secret in &d.secrets {
            let probe = &secret[..secret.len().min(24)];
            assert!(
                probe.len() < 16 || !text.contains(probe),
                "a blob of {} is in the log",
                d.id()
            );
            let bytes = unb64(secret);
            if bytes.len() >= 32 {
                let middle = &bytes[bytes.len() / 2 - 8..bytes.len() / 2 + 8];
                let hex: String = middle.iter().map(|b| format!("{b:02x}")).collect();
                let debug = format!("{middle:x?}");
                let debug = debug.trim_matches(|c| c == '[' || c == ']');
                assert!(
                    !text.contains(&hex) && !text.contains(debug),
                    "a blob of {} is in the log as hex",
                    d.id()
                );
            }
        }
    }
    for code in codes {
        assert!(!text.contains(code), "a link code is in the log");
    }
}

fn session_server(engine: support::server::Engine) -> TestServer {
    log();
    start_community(engine, &[("OPENCHAT_AUTH_MODE", "session")])
}

/// A server owned by `owner` with one encrypted channel; `(server_id, channel_id)`.
fn encrypted_channel(owner: &Device) -> (String, String) {
    let server_id = owned_server(&owner.client, "Cipher");
    let created = owner.client.expect(
        201,
        owner.client.post(
            &format!("/v1/servers/{server_id}/channels"),
            &json!({"name": "secret", "type": "text", "encryption": "e2ee"}),
        ),
    );
    assert_eq!(created.str_at("channel.encryption"), "e2ee");
    (server_id, created.str_at("channel.id").to_owned())
}

/// `device` joins the open server (first contact).
fn join(device: &Device, server_id: &str) {
    device.client.expect(
        200,
        device
            .client
            .post(&format!("/v1/servers/{server_id}/membership"), &json!({})),
    );
}

fn epoch_doc(device: &Device, channel_id: &str) -> Json {
    device.client.expect(
        200,
        device
            .client
            .get(&format!("/v1/channels/{channel_id}/epoch")),
    )
}

fn member_devices(doc: &Json) -> Vec<String> {
    let mut ids: Vec<String> = doc
        .arr_at("members")
        .iter()
        .flat_map(|m| {
            m.arr_at("device_ids")
                .iter()
                .map(|d| d.as_str().unwrap().to_owned())
        })
        .collect();
    ids.sort();
    ids
}

/// `committer` claims the packages of `uids`, commits adding them (and removing `remove`),
/// submits and merges; the new epoch.
fn add_and_commit(committer: &mut Device, channel_id: &str, uids: &[&str], remove: &[&str]) -> u64 {
    let known = committer.mls.members(channel_id);
    let packages: Vec<Vec<u8>> = committer
        .claim(uids)
        .into_iter()
        .filter(|(device, _, _)| !known.contains(device))
        .map(|(_, p, _)| p)
        .collect();
    let bundle = committer.mls.commit_changes(channel_id, &packages, remove);
    let reply = committer.submit(channel_id, &bundle, None);
    assert_eq!(reply.status, 201, "{}", reply.text());
    committer.mls.merge_pending(channel_id);
    let epoch = reply.json().i64_at("epoch") as u64;
    assert_eq!(epoch, committer.mls.epoch(channel_id));
    epoch
}

/// The socket of `device` on `server_id`, subscribed to `channel_id`.
fn socket(device: &Device, server_id: &str, channel_id: &str) -> Ws {
    let mut ws = Ws::connect(
        device.addr,
        &format!("server_id={server_id}&access_token={}", device.token()),
    )
    .live();
    ws.subscribe(channel_id);
    ws
}

fn created_with_epoch(ws: &mut Ws, epoch: u64, within: Duration) -> Option<Json> {
    ws.wait_for("chat.message.created", within, |f| {
        f.try_at("payload.message.envelope.epoch")
            .and_then(|e| e.as_i64())
            == Some(epoch as i64)
    })
}

on_both_engines! {
    an_encrypted_conversation_through_joins_a_leave_a_new_device_and_the_desktop_client => |engine| {
        let server = session_server(engine);
        let addr = server.addr;
        let mut a1 = Device::sign_in(addr);
        let mut b1 = Device::sign_in(addr);
        let mut c1 = Device::sign_in(addr);
        let (server_id, channel) = encrypted_channel(&a1);
        join(&b1, &server_id);
        join(&c1, &server_id);
        for d in [&mut a1, &mut b1, &mut c1] {
            let up = d.upload_packages(5);
            assert_eq!((up.i64_at("one_time"), up.bool_at("last_resort")), (5, true), "{}", encode(&up));
        }

        // Before any commit: epoch 0, a rotation due, the three devices expected.
        let doc = epoch_doc(&a1, &channel);
        assert_eq!((doc.i64_at("epoch"), doc.bool_at("rotation_required")), (0, true));
        let mut expected = vec![a1.id().to_owned(), b1.id().to_owned(), c1.id().to_owned()];
        expected.sort();
        assert_eq!(member_devices(&doc), expected);
        // Plaintext is refused in an encrypted channel; so is a post before the first commit.
        a1.client.post(&format!("/v1/channels/{channel}/messages"), &json!({"body": "in clear"}))
            .assert_error(400, "plaintext_not_allowed");

        // a1 creates the group and adds b1 and c1 in the first commit.
        let genesis = a1.mls.create_group(&channel);
        let packages: Vec<Vec<u8>> = a1.claim(&[&b1.uid, &c1.uid]).into_iter().map(|(_, p, last)| { assert!(!last); p }).collect();
        assert_eq!(packages.len(), 2);
        let bundle = a1.mls.commit_changes(&channel, &packages, &[]);
        let mut b_ws = socket(&b1, &server_id, &channel);
        let reply = a1.submit(&channel, &bundle, Some(&genesis));
        assert_eq!(reply.status, 201, "{}", reply.text());
        let accepted = reply.json();
        assert_eq!((accepted.str_at("channel_id"), accepted.i64_at("epoch")), (channel.as_str(), 1));
        assert!(!accepted.str_at("commit_id").is_empty());
        a1.mls.merge_pending(&channel);
        // The same bytes again: the same answer, no second epoch.
        let again = a1.submit(&channel, &bundle, Some(&genesis));
        assert_eq!(again.status, 201, "{}", again.text());
        assert_eq!(again.json().str_at("commit_id"), accepted.str_at("commit_id"));
        b_ws.expect_where("chat.epoch.committed", |f| f.i64_at("payload.epoch") == 1);
        b_ws.expect_where("keys.mailbox.available", |f| f.str_at("payload.device_id") == b1.id());
        assert_eq!(b1.join_from_mailbox(), channel);
        assert_eq!(c1.join_from_mailbox(), channel);
        assert_eq!(b1.mls.epoch(&channel), 1);
        let doc = epoch_doc(&c1, &channel);
        assert_eq!((doc.i64_at("epoch"), doc.bool_at("rotation_required")), (1, false));

        // Everyone talks; everyone decrypts everything, live and from history.
        for (d, text) in [(&mut a1, "hello from a"), (&mut b1, "hello from b"), (&mut c1, "hello from c")] {
            let reply = d.post(&channel, text);
            assert_eq!(reply.status, 201, "{}", reply.text());
            let m = reply.json();
            assert!(m.is_null_at("message.body"), "{}", encode(&m));
            assert_eq!(m.i64_at("message.envelope.epoch"), 1);
        }
        let live = created_with_epoch(&mut b_ws, 1, Duration::from_secs(5)).expect("b1 gets a1's message live");
        assert_eq!(b1.open(&channel, live.str_at("payload.message.envelope.ciphertext")).as_deref(), Some("hello from a"));
        for d in [&mut a1, &mut b1, &mut c1] {
            let (plain, failed) = d.read_history(&channel);
            // A sender cannot decrypt its own application messages in MLS; the others' it can.
            assert_eq!(plain.len() + failed, 3);
            assert_eq!(plain.len(), 2, "{} decrypts the others' messages", d.id());
        }

        // The desktop client (headers mode is not on this server; any reader without MLS)
        // sees the channel as encrypted and the messages with body null.
        let channels = a1.client.expect(200, a1.client.get(&format!("/v1/servers/{server_id}/channels")));
        let listed = encode(&channels);
        assert!(listed.contains("\"encryption\":\"e2ee\""), "{listed}");

        // A later joiner: a rotation is required and posting waits for it.
        let mut d1 = Device::sign_in(addr);
        join(&d1, &server_id);
        d1.upload_packages(3);
        assert!(epoch_doc(&a1, &channel).bool_at("rotation_required"));
        b1.post(&channel, "while d joins").assert_error(409, "epoch_rotation_required");
        let first_epoch_message = b1.history_epochs(&channel);
        assert_eq!(first_epoch_message, vec![1, 1, 1]);
        let epoch2 = add_and_commit(&mut a1, &channel, &[&d1.uid], &[]);
        assert_eq!(epoch2, 2);
        d1.join_from_mailbox();
        b1.catch_up(&channel);
        let mut d_ws = socket(&d1, &server_id, &channel);
        let mut a_ws = socket(&a1, &server_id, &channel);
        // c1 has not seen epoch 2 yet: its epoch-1 message is still in the grace window.
        let late = c1.post(&channel, "late in epoch 1");
        assert_eq!(late.status, 201, "{}", late.text());
        let late_id = late.json().str_at("message.id").to_owned();
        assert!(created_with_epoch(&mut a_ws, 1, Duration::from_secs(5)).is_some(), "a1 was in epoch 1");
        assert!(created_with_epoch(&mut d_ws, 1, Duration::from_secs(1)).is_none(), "d1 was not");
        c1.catch_up(&channel);
        assert_eq!(d1.post(&channel, "d is here").status, 201);
        // d1's user reads only epoch 2 on every path: history, replies, read cursors, resume.
        assert_eq!(d1.history_epochs(&channel), vec![2]);
        d1.client.post(&format!("/v1/channels/{channel}/messages"), &json!({
            "envelope": {"epoch": 2, "ciphertext": b64(&d1.mls.encrypt(&channel, b"re")), "sender_device_id": d1.id()},
            "reply_to_message_id": late_id,
        })).assert_error(404, "message_not_found");
        d1.client.put(&format!("/v1/channels/{channel}/read-ack"), &json!({"last_read_message_id": late_id}))
            .assert_error(404, "message_not_found");
        let mut resumed = Ws::connect(addr, &format!("server_id={server_id}&access_token={}&since_event_id=0", d1.token()));
        resumed.drain(Duration::from_millis(500));
        assert!(resumed.backlog().all(|f| f.try_at("payload.message.envelope.epoch").and_then(|e| e.as_i64()) != Some(1)),
            "no epoch-1 message replays to d1");
        let (plain, _) = d1.read_history(&channel);
        assert!(plain.is_empty(), "its own message only");
        let (plain, _) = b1.read_history(&channel);
        assert!(plain.contains(&"d is here".to_owned()) && plain.contains(&"late in epoch 1".to_owned()), "{plain:?}");

        // c leaves: nothing after. The rotation removes c1; c's user reads nothing of it.
        c1.client.delete(&format!("/v1/servers/{server_id}/membership"));
        assert!(epoch_doc(&a1, &channel).bool_at("rotation_required"));
        let epoch3 = add_and_commit(&mut a1, &channel, &[], &[c1.id()]);
        b1.catch_up(&channel);
        d1.catch_up(&channel);
        assert_eq!(b1.post(&channel, "after c left").status, 201);
        join(&c1, &server_id);
        assert!(epoch_doc(&a1, &channel).bool_at("rotation_required"), "c is back: rotate again");
        let seen_by_c = c1.history_epochs(&channel);
        assert!(!seen_by_c.contains(&epoch3) && seen_by_c.contains(&1), "{seen_by_c:?}");
        // Put c back in the group so the next step has the full member set.
        assert_eq!(add_and_commit(&mut a1, &channel, &[&c1.uid], &[]), epoch3 + 1);

        // A second device of a: linked with a code, then added; older epochs reach it only
        // through its own user's envelope and backup.
        let a2_key = DeviceKey::new();
        let started = Client::anonymous(addr).expect(201, Client::anonymous(addr).post("/v1/devices/link/start", &json!({
            "user_uid": a1.uid, "device_id": a2_key.device_id, "public_key": a2_key.public_key(),
        })));
        let request_id = started.str_at("request_id").to_owned();
        let code = started.str_at("link_code").to_owned();
        let status = Client::anonymous(addr).get(&format!("/v1/devices/link/{request_id}"));
        assert_eq!(status.json().str_at("state"), "pending");
        a1.client.post("/v1/devices/link/confirm", &json!({"request_id": request_id, "link_code": "00000000"}))
            .assert_error(404, "link_invalid");
        let mut a1_ws = socket(&a1, &server_id, &channel);
        a1.client.expect(200, a1.client.post("/v1/devices/link/confirm", &json!({"request_id": request_id, "link_code": code})));
        assert_eq!(Client::anonymous(addr).get(&format!("/v1/devices/link/{request_id}")).json().str_at("state"), "confirmed");
        a1.client.post("/v1/devices/link/confirm", &json!({"request_id": request_id, "link_code": code}))
            .assert_error(404, "link_invalid");
        a1_ws.expect_where("keys.device.added", |f| f.str_at("payload.device_id") == a2_key.device_id);
        let mut a2 = Device::sign_in_as(addr, a2_key, &a1.uid);
        assert_eq!(a2.uid, a1.uid);
        let devices = a1.client.expect(200, a1.client.get(&format!("/v1/users/{}/devices", a1.uid)));
        assert_eq!(devices.arr_at("devices").len(), 2);
        a2.upload_packages(3);
        let a_uid = a1.uid.clone();
        let epoch5 = add_and_commit(&mut a1, &channel, &[&a_uid], &[]);
        a2.join_from_mailbox();
        assert_eq!(a2.mls.epoch(&channel), epoch5);
        // a2 may fetch its user's old messages but cannot decrypt them with its own state…
        let (plain, failed) = a2.read_history(&channel);
        assert!(plain.is_empty() && failed >= 5, "{plain:?} {failed}");
        // …so a1 sends it an envelope for epoch 1 (sealed with a key of its user's own), and a
        // backup; an envelope to d1 for epoch 1 is refused, d was never in it.
        let sealed = b64(b"sealed:hello from b");
        a1.secrets.push(sealed.clone());
        a1.client.expect(201, a1.client.post("/v1/keys/envelopes", &json!({"envelopes": [
            {"target_device_id": a2.id(), "channel_id": channel, "epoch": 1, "blob": sealed},
        ]})));
        a1.client.post("/v1/keys/envelopes", &json!({"envelopes": [
            {"target_device_id": d1.id(), "channel_id": channel, "epoch": 1, "blob": sealed},
        ]})).assert_error(403, "epoch_not_eligible");
        let items = a2.mailbox(0);
        let envelope = items.iter().find(|i| i.str_at("kind") == "envelope").expect("the envelope");
        assert_eq!((envelope.i64_at("epoch"), envelope.str_at("sender_device_id")), (1, a1.id()));
        assert_eq!(unb64(envelope.str_at("blob")), b"sealed:hello from b");
        let backup = b64(b"sealed backup of epochs 1-4");
        a1.secrets.push(backup.clone());
        let v1 = a1.client.expect(200, a1.client.put("/v1/keys/backup", &json!({"ciphertext": backup, "kdf_metadata": "argon2id:m=65536,t=3"})));
        assert_eq!(v1.i64_at("version"), 1);
        a1.client.put("/v1/keys/backup", &json!({"ciphertext": backup, "kdf_metadata": "x"}))
            .assert_error(409, "backup_conflict");
        let read = a2.client.expect(200, a2.client.get("/v1/keys/backup"));
        assert_eq!((read.i64_at("version"), read.str_at("ciphertext")), (1, backup.as_str()));

        // A revoked device can do nothing more.
        a1.client.expect(200, a1.client.delete(&format!("/v1/devices/{}", a2.id())));
        a2.post(&channel, "from the grave").assert_error(401, "invalid_token");
        let counts = a1.client.expect(200, a1.client.get("/v1/keys/packages/count"));
        assert_eq!(counts.arr_at("devices").len(), 1, "{}", encode(&counts));
        assert!(epoch_doc(&a1, &channel).bool_at("rotation_required"), "a2 must leave the group");

        assert_nothing_logged(&[&a1, &a2, &b1, &c1, &d1], &[&code]);
    };
}

/// Two group members `(a, b)` of a fresh encrypted channel at epoch 1; `(server, channel)`.
fn pair(addr: std::net::SocketAddr) -> (Device, Device, String, String) {
    let mut a = Device::sign_in(addr);
    let mut b = Device::sign_in(addr);
    let (server_id, channel) = encrypted_channel(&a);
    join(&b, &server_id);
    a.upload_packages(2);
    b.upload_packages(2);
    let genesis = a.mls.create_group(&channel);
    let packages: Vec<Vec<u8>> = a.claim(&[&b.uid]).into_iter().map(|(_, p, _)| p).collect();
    let bundle = a.mls.commit_changes(&channel, &packages, &[]);
    let reply = a.submit(&channel, &bundle, Some(&genesis));
    assert_eq!(reply.status, 201, "{}", reply.text());
    a.mls.merge_pending(&channel);
    b.join_from_mailbox();
    (a, b, server_id, channel)
}

on_both_engines! {
    two_members_committing_at_one_epoch_have_exactly_one_winner_fifty_times => |engine| {
        let server = session_server(engine);
        let (mut a, mut b, server_id, channel) = pair(server.addr);
        for round in 0..50u64 {
            let epoch = a.mls.epoch(&channel);
            assert_eq!(epoch, b.mls.epoch(&channel));
            let bundle_a = a.mls.commit_update(&channel);
            let bundle_b = b.mls.commit_update(&channel);
            let barrier = Barrier::new(2);
            let (ra, rb) = std::thread::scope(|s| {
                let ta = s.spawn(|| { barrier.wait(); a.submit(&channel, &bundle_a, None) });
                let tb = s.spawn(|| { barrier.wait(); b.submit(&channel, &bundle_b, None) });
                (ta.join().unwrap(), tb.join().unwrap())
            });
            let (winner, loser, lost) = match (ra.status, rb.status) {
                (201, 409) => (&mut a, &mut b, rb),
                (409, 201) => (&mut b, &mut a, ra),
                other => panic!("round {round}: {other:?} {} {}", ra.text(), rb.text()),
            };
            lost.assert_error(409, "epoch_conflict");
            assert_eq!(lost.json().i64_at("details.current_epoch") as u64, epoch + 1);
            winner.mls.merge_pending(&channel);
            // The loser drops its commit, applies the winner's, and commits again.
            loser.mls.clear_pending(&channel);
            loser.catch_up(&channel);
            let retry = loser.mls.commit_update(&channel);
            let again = loser.submit(&channel, &retry, None);
            assert_eq!(again.status, 201, "round {round}: {}", again.text());
            assert_eq!(again.json().i64_at("epoch") as u64, epoch + 2);
            loser.mls.merge_pending(&channel);
            winner.catch_up(&channel);
        }
        assert_eq!(epoch_doc(&a, &channel).i64_at("epoch"), 101);
        // The log has one commit per epoch, and both members still talk.
        let log = a.client.expect(200, a.client.get(&format!("/v1/channels/{channel}/commits?after_epoch=0&limit=100")));
        let epochs: Vec<i64> = log.arr_at("commits").iter().map(|c| c.i64_at("epoch")).collect();
        assert_eq!(epochs, (1..=100).collect::<Vec<i64>>());
        assert_eq!(a.post(&channel, "still here").status, 201);
        let (plain, _) = b.read_history(&channel);
        assert_eq!(plain, vec!["still here".to_owned()]);

        // A losing commit's Welcome is never delivered: b and a both add e, a wins.
        let mut e = Device::sign_in(server.addr);
        join(&e, &server_id);
        e.upload_packages(2);
        let for_b: Vec<Vec<u8>> = b.claim(&[&e.uid]).into_iter().map(|(_, p, _)| p).collect();
        let for_a: Vec<Vec<u8>> = a.claim(&[&e.uid]).into_iter().map(|(_, p, _)| p).collect();
        let bundle_a = a.mls.commit_changes(&channel, &for_a, &[]);
        let bundle_b = b.mls.commit_changes(&channel, &for_b, &[]);
        assert_eq!(a.submit(&channel, &bundle_a, None).status, 201);
        b.submit(&channel, &bundle_b, None).assert_error(409, "epoch_conflict");
        let items = e.mailbox(0);
        let welcomes: Vec<&Json> = items.iter().filter(|i| i.str_at("kind") == "welcome").collect();
        assert_eq!(welcomes.len(), 1, "{items:?}");
        assert_eq!(welcomes[0].str_at("sender_device_id"), a.id());
        a.mls.merge_pending(&channel);
        e.join_from_mailbox();
        assert_eq!(e.mls.epoch(&channel), 102);
        assert_nothing_logged(&[&a, &b, &e], &[]);
    };

    fifty_concurrent_claims_hand_each_one_time_package_out_once => |engine| {
        let server = session_server(engine);
        let addr = server.addr;
        let mut target = Device::sign_in(addr);
        let (server_id, channel) = encrypted_channel(&target);
        target.upload_packages(20);
        let mut target_ws = socket(&target, &server_id, &channel);
        let claimers: Vec<Device> = (0..50).map(|_| { let d = Device::sign_in(addr); join(&d, &server_id); d }).collect();
        let barrier = Barrier::new(claimers.len());
        let uid = target.uid.clone();
        let results: Vec<Json> = std::thread::scope(|s| {
            let handles: Vec<_> = claimers.iter().map(|c| {
                let (barrier, uid) = (&barrier, &uid);
                s.spawn(move || {
                    barrier.wait();
                    c.client.expect(200, c.client.post("/v1/keys/packages:claim", &json!({"user_uids": [uid]})))
                })
            }).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut one_time = Vec::new();
        let mut last_resort = std::collections::BTreeSet::new();
        for r in &results {
            let packages = r.arr_at("packages");
            assert_eq!(packages.len(), 1, "{}", encode(r));
            let p = &packages[0];
            assert_eq!(p.str_at("device_id"), target.id());
            if p.bool_at("last_resort") {
                last_resort.insert(p.str_at("key_package_ref").to_owned());
            } else {
                one_time.push(p.str_at("key_package_ref").to_owned());
            }
        }
        one_time.sort();
        let before = one_time.len();
        one_time.dedup();
        assert_eq!((before, one_time.len(), last_resort.len()), (20, 20, 1), "each one-time package once, then the last resort");
        let claimed = server.sql(&format!("SELECT CAST(COUNT(*) AS TEXT) FROM e2ee_key_packages WHERE device_id = '{}' AND claimed_at IS NOT NULL", target.id()));
        assert_eq!(claimed, vec!["20".to_owned()]);
        let recorded = server.sql(&format!("SELECT CAST(COUNT(*) AS TEXT) FROM e2ee_claims WHERE device_id = '{}'", target.id()));
        assert_eq!(recorded, vec!["50".to_owned()]);
        // Under ten left, the owner's device is told, each time one more goes.
        let low = target_ws.expect_where("keys.packages.low", |f| f.str_at("payload.device_id") == target.id());
        assert!(low.i64_at("payload.one_time") < 10, "{}", encode(&low));
        let counts = target.client.expect(200, target.client.get("/v1/keys/packages/count"));
        assert_eq!((counts.i64_at("devices.0.one_time"), counts.bool_at("devices.0.last_resort")), (0, true));
        // A re-upload of a claimed package does not put it back.
        let again = target.upload_packages(0);
        assert_eq!(again.i64_at("one_time"), 0, "{}", encode(&again));
        assert_nothing_logged(&[&target], &[]);
    };

    hostile_mls_input_is_refused_and_changes_nothing => |engine| {
        let server = session_server(engine);
        let addr = server.addr;
        let (mut a, mut b, server_id, channel) = pair(addr);
        let packages = |d: &Device, data: Vec<u8>| d.client.post("/v1/keys/packages", &json!({"packages": [{"data": b64(&data), "last_resort": false}]}));
        // Key packages: a foreign signature key, an over-long lifetime, garbage, not base64.
        packages(&a, a.mls.foreign_key_package()).assert_error(400, "invalid_mls_message");
        packages(&a, a.mls.key_package_with_lifetime(90 * 24 * 3600)).assert_error(400, "invalid_mls_message");
        packages(&a, vec![0u8; 300]).assert_error(400, "invalid_mls_message");
        packages(&a, b.mls.key_packages(1).remove(0)).assert_error(400, "invalid_mls_message");
        a.client.post("/v1/keys/packages", &json!({"packages": [{"data": "not base64!", "last_resort": false}]}))
            .assert_error(400, "invalid_blob");
        let too_many: Vec<Json> = a.mls.key_packages(101).iter().map(|p| json!({"data": b64(p)})).collect();
        let reply = a.client.post("/v1/keys/packages", &json!({"packages": too_many}));
        assert!(reply.status == 409 || reply.status == 413, "{}", reply.text());

        // Commits: a PrivateMessage commit, garbage, an old epoch, a stale member set, a
        // Welcome for a package the committer did not claim.
        let private = a.mls.private_commit(&channel);
        let body = json!({"commit": b64(&private), "group_info": b64(&[1, 2, 3])});
        a.client.post(&format!("/v1/channels/{channel}/commits"), &body).assert_error(400, "private_handshake_not_allowed");
        let garbage = json!({"commit": b64(&[0u8; 64]), "group_info": b64(&[0u8; 64])});
        a.client.post(&format!("/v1/channels/{channel}/commits"), &garbage).assert_error(400, "invalid_mls_message");
        let mut c = Device::sign_in(addr);
        join(&c, &server_id);
        c.upload_packages(2);
        let stale = a.mls.commit_update(&channel);
        let reply = a.submit(&channel, &stale, None);
        reply.assert_error(409, "member_set_mismatch");
        assert!(encode(&reply.json()).contains(c.id()), "the expected set names the new device: {}", reply.text());
        a.mls.clear_pending(&channel);
        let unclaimed = c.mls.key_packages(1);
        let upload = c.client.post("/v1/keys/packages", &json!({"packages": [{"data": b64(&unclaimed[0])}]}));
        assert_eq!(upload.status, 201, "{}", upload.text());
        let sneaky = a.mls.commit_changes(&channel, &unclaimed, &[]);
        a.submit(&channel, &sneaky, None).assert_error(403, "welcome_not_claimed");
        a.mls.clear_pending(&channel);
        assert!(c.mailbox(0).is_empty(), "no Welcome of a refused commit");
        let epoch = add_and_commit(&mut a, &channel, &[&c.uid], &[]);
        assert_eq!(epoch, 2);
        c.join_from_mailbox();
        b.catch_up(&channel);
        // The commit of epoch 1 again, now that the group is at 2: stale.
        let first = a.client.expect(200, a.client.get(&format!("/v1/channels/{channel}/commits?after_epoch=0")));
        let old = first.str_at("commits.0.commit").to_owned();
        let reply = a.client.post(&format!("/v1/channels/{channel}/commits"), &json!({"commit": old, "group_info": b64(&[0u8; 8])}));
        assert_eq!(reply.status, 201, "the accepted commit of epoch 1 is answered as before, not applied again: {}", reply.text());
        assert_eq!(reply.json().i64_at("epoch"), 1);
        assert_eq!(epoch_doc(&a, &channel).i64_at("epoch"), 2);

        // Messages: the wrong epoch stated, another device named, another group's message,
        // a commit posted as a message.
        let ct = a.mls.encrypt(&channel, b"x");
        let post = |d: &Device, envelope: Json| d.client.post(&format!("/v1/channels/{channel}/messages"), &json!({"envelope": envelope}));
        post(&a, json!({"epoch": 1, "ciphertext": b64(&ct), "sender_device_id": a.id()})).assert_error(400, "epoch_mismatch");
        post(&a, json!({"epoch": 2, "ciphertext": b64(&ct), "sender_device_id": b.id()})).assert_error(403, "sender_not_in_epoch");
        let (_, other) = encrypted_channel(&a);
        a.mls.create_group(&other);
        let foreign = a.mls.encrypt(&other, b"elsewhere");
        post(&a, json!({"epoch": 0, "ciphertext": b64(&foreign), "sender_device_id": a.id()})).assert_error(400, "invalid_mls_message");
        post(&a, json!({"epoch": 2, "ciphertext": old, "sender_device_id": a.id()})).assert_error(400, "invalid_mls_message");
        post(&a, json!({"epoch": 2, "ciphertext": "%%%", "sender_device_id": a.id()})).assert_error(400, "invalid_blob");
        assert!(b.history_epochs(&channel).is_empty(), "nothing was stored");
        // Envelopes to no device, to a stranger's, mailbox paging bounds.
        a.client.post("/v1/keys/envelopes", &json!({"envelopes": [{"target_device_id": "desktop_nobody", "channel_id": channel, "epoch": 1, "blob": b64(b"x")}]}))
            .assert_error(403, "epoch_not_eligible");
        a.client.get("/v1/keys/mailbox?after=-1").assert_error(400, "invalid_query");
        // A device's mailbox takes 1,000 items; the sender of the next gets 507, all or nothing.
        let batch: Vec<Json> = (0..100).map(|i| json!({"target_device_id": b.id(), "channel_id": channel, "epoch": 1, "blob": b64(format!("e{i}").as_bytes())})).collect();
        for _ in 0..10 {
            a.client.expect(201, a.client.post("/v1/keys/envelopes", &json!({"envelopes": batch})));
        }
        a.client.post("/v1/keys/envelopes", &json!({"envelopes": [batch[0]]})).assert_error(507, "mailbox_full");
        let page = b.mailbox(0);
        assert_eq!(page.len(), 100, "a page holds at most 100");
        let last = page.last().unwrap().i64_at("seq");
        let acked = b.client.expect(200, b.client.post("/v1/keys/mailbox:ack", &json!({"up_to_seq": last})));
        assert_eq!(acked.i64_at("deleted"), 100);
        a.client.expect(201, a.client.post("/v1/keys/envelopes", &json!({"envelopes": [batch[0]]})));
        a.client.get(&format!("/v1/channels/{channel}/commits?after_epoch=x")).assert_error(400, "invalid_query");
        // A stranger to the server learns nothing of the channel.
        let stranger = Device::sign_in(addr);
        stranger.client.get(&format!("/v1/channels/{channel}/epoch")).assert_error(404, "channel_not_found");
        stranger.client.get(&format!("/v1/channels/{channel}/commits")).assert_error(404, "channel_not_found");
        let claimed = stranger.client.expect(200, stranger.client.post("/v1/keys/packages:claim", &json!({"user_uids": [a.uid]})));
        assert!(claimed.arr_at("packages").is_empty(), "no packages for strangers");
        // Link codes: unknown requests, wrong users, too many guesses.
        let new_key = DeviceKey::new();
        let started = Client::anonymous(addr).expect(201, Client::anonymous(addr).post("/v1/devices/link/start", &json!({
            "user_uid": a.uid, "device_id": new_key.device_id, "public_key": new_key.public_key(),
        })));
        let request_id = started.str_at("request_id").to_owned();
        let code = started.str_at("link_code").to_owned();
        b.client.post("/v1/devices/link/confirm", &json!({"request_id": request_id, "link_code": code}))
            .assert_error(404, "link_invalid");
        for _ in 0..5 {
            a.client.post("/v1/devices/link/confirm", &json!({"request_id": request_id, "link_code": "12345678"}))
                .assert_error(404, "link_invalid");
        }
        a.client.post("/v1/devices/link/confirm", &json!({"request_id": request_id, "link_code": code}))
            .assert_error(404, "link_invalid");
        assert_eq!(Client::anonymous(addr).get(&format!("/v1/devices/link/{request_id}")).json().str_at("state"), "expired");
        let _ = PUBLIC_BASE_URL;
        assert_nothing_logged(&[&a, &b, &c], &[&code]);
    };
}

/// The figures of the delivery service, on Postgres (`ENGINE=sqlite` for the embedded file):
/// `cargo test --release --test e2e_e2ee -- --ignored --nocapture delivery_service_rates`.
/// One client on loopback, requests one after another, so each figure is the server's
/// latency per operation turned into a rate:
/// - commit acceptance: a two-member group, each round a self-update (a commit with a path);
///   only the `POST …/commits` is timed (the client builds and merges outside the timer);
/// - key-package claims: one claimer claims a user's one device over and over (100 one-time
///   packages, then the last resort);
/// - encrypted against plaintext send: the same member posts `ROUNDS` × 200 messages to a
///   plaintext channel and to an encrypted one of the same server, in alternating rounds, the
///   ciphertexts made before the timer; the ratio is of the medians.
#[test]
#[ignore = "a measurement, run by hand"]
fn delivery_service_rates() {
    use std::time::Instant;
    let engine = match std::env::var("ENGINE").as_deref() {
        Ok("sqlite") => support::server::Engine::Sqlite,
        _ => support::server::Engine::Postgres,
    };
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let server = session_server(engine);
    let (mut a, mut b, server_id, channel) = pair(server.addr);

    let mut commit_time = Duration::ZERO;
    let commits = 200;
    for i in 0..commits {
        let (who, other) = if i % 2 == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        let bundle = who.mls.commit_update(&channel);
        let started = Instant::now();
        let reply = who.submit(&channel, &bundle, None);
        commit_time += started.elapsed();
        assert_eq!(reply.status, 201, "{}", reply.text());
        who.mls.merge_pending(&channel);
        other.catch_up(&channel);
    }
    println!(
        "commits accepted: {commits} in {commit_time:?} = {:.0}/s ({:?} each)",
        commits as f64 / commit_time.as_secs_f64(),
        commit_time / commits
    );

    let target = Device::sign_in(server.addr);
    join(&target, &server_id);
    let packages: Vec<Json> = target
        .mls
        .key_packages(100)
        .iter()
        .map(|p| json!({"data": b64(p)}))
        .collect();
    target.client.expect(
        201,
        target
            .client
            .post("/v1/keys/packages", &json!({"packages": packages})),
    );
    target.client.expect(201, target.client.post("/v1/keys/packages", &json!({"packages": [{"data": b64(&target.mls.last_resort_package()), "last_resort": true}]})));
    // The target joined the server: it enters the group before anyone posts again.
    let target_uid = target.uid.clone();
    add_and_commit(&mut a, &channel, &[&target_uid], &[]);
    let claims = 300;
    let started = Instant::now();
    for _ in 0..claims {
        let doc = a.client.expect(
            200,
            a.client.post(
                "/v1/keys/packages:claim",
                &json!({"user_uids": [target.uid]}),
            ),
        );
        assert_eq!(doc.arr_at("packages").len(), 1);
    }
    let claim_time = started.elapsed();
    println!(
        "claims: {claims} in {claim_time:?} = {:.0}/s",
        claims as f64 / claim_time.as_secs_f64()
    );

    let plain_channel = a.client.first_text_channel(&server_id);
    let per_round = 200;
    let mut plain_rates = Vec::new();
    let mut sealed_rates = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        for i in 0..per_round {
            a.client.expect(
                201,
                a.client.post(
                    &format!("/v1/channels/{plain_channel}/messages"),
                    &json!({"body": format!("plain message number {i} of a round")}),
                ),
            );
        }
        plain_rates.push(per_round as f64 / started.elapsed().as_secs_f64());
        let epoch = a.mls.epoch(&channel);
        let bodies: Vec<Json> = (0..per_round)
            .map(|i| {
                let ct = b64(&a.mls.encrypt(
                    &channel,
                    format!("sealed message number {i} of a round").as_bytes(),
                ));
                json!({"envelope": {"epoch": epoch, "ciphertext": ct, "sender_device_id": a.id()}})
            })
            .collect();
        let started = Instant::now();
        for body in &bodies {
            a.client.expect(
                201,
                a.client
                    .post(&format!("/v1/channels/{channel}/messages"), body),
            );
        }
        sealed_rates.push(per_round as f64 / started.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|x, y| x.partial_cmp(y).unwrap());
        v[v.len() / 2]
    };
    let (p, s) = (median(&mut plain_rates), median(&mut sealed_rates));
    println!(
        "plaintext send {p:.0}/s, encrypted send {s:.0}/s (medians of {rounds} alternating rounds of {per_round}); encrypted / plaintext = {:.2}",
        s / p
    );
}

on_both_engines! {
    the_delivery_service_loses_nothing_across_a_restart => |engine| {
        let server = session_server(engine);
        let (mut a, mut b, server_id, channel) = pair(server.addr);
        assert_eq!(a.post(&channel, "before the restart").status, 201);
        let mut e = Device::sign_in(server.addr);
        join(&e, &server_id);
        e.upload_packages(3);
        let for_e: Vec<Vec<u8>> = a.claim(&[&e.uid]).into_iter().map(|(_, p, _)| p).collect();
        a.client.expect(200, a.client.put("/v1/keys/backup", &json!({"ciphertext": b64(b"v1"), "kdf_metadata": "k"})));
        let vars = [
            support::server::COMMUNITY_VARS,
            &[("OPENCHAT_AUTH_MODE", "session")],
        ].concat();
        let place = server.stop();
        let server = support::server::start_in(place, None, &vars, |_| {});
        for d in [&mut a, &mut b, &mut e] {
            d.client.addr = server.addr;
            d.addr = server.addr;
        }
        // The epoch, the member set, the claim and the packages are as they were.
        let doc = epoch_doc(&a, &channel);
        assert_eq!((doc.i64_at("epoch"), doc.bool_at("rotation_required")), (1, true), "{}", encode(&doc));
        let counts = e.client.expect(200, e.client.get("/v1/keys/packages/count"));
        assert_eq!(counts.i64_at("devices.0.one_time"), 2, "one of three was claimed");
        let bundle = a.mls.commit_changes(&channel, &for_e, &[]);
        let reply = a.submit(&channel, &bundle, None);
        assert_eq!(reply.status, 201, "the package claimed before the restart may be welcomed: {}", reply.text());
        a.mls.merge_pending(&channel);
        e.join_from_mailbox();
        b.catch_up(&channel);
        // The history rule still knows who was in which epoch.
        assert_eq!(e.history_epochs(&channel), Vec::<u64>::new());
        assert_eq!(b.history_epochs(&channel), vec![1]);
        let (plain, _) = b.read_history(&channel);
        assert_eq!(plain, vec!["before the restart".to_owned()]);
        assert_eq!(e.post(&channel, "after").status, 201);
        assert_eq!(b.history_epochs(&channel), vec![1, 2]);
        // The commit of epoch 1 is still recognised; the backup's version goes on.
        let first = a.client.expect(200, a.client.get(&format!("/v1/channels/{channel}/commits?after_epoch=0")));
        let reply = a.client.post(&format!("/v1/channels/{channel}/commits"), &json!({"commit": first.str_at("commits.0.commit"), "group_info": b64(&[0u8; 4])}));
        assert_eq!((reply.status, reply.json().i64_at("epoch")), (201, 1), "{}", reply.text());
        a.client.put("/v1/keys/backup", &json!({"ciphertext": b64(b"v2"), "kdf_metadata": "k"})).assert_error(409, "backup_conflict");
        let v2 = a.client.request("PUT", "/v1/keys/backup", &[("If-Match", "1")], Some(("application/json", encode(&json!({"ciphertext": b64(b"v2"), "kdf_metadata": "k"})).as_bytes())));
        assert_eq!((v2.status, v2.json().i64_at("version")), (200, 2), "{}", v2.text());

        // A kick ends b's membership: the group must rotate before anyone posts again.
        let cases = format!("/v1/servers/{server_id}/moderation/cases");
        let case = e.client.expect(201, e.client.post(&cases, &json!({"target_uid": b.uid, "reason_code": "abuse"})));
        a.client.expect(201, a.client.post(&format!("{cases}/{}/actions/immediate", case.str_at("case_id")), &json!({"action_type": "kick"})));
        let doc = epoch_doc(&a, &channel);
        assert!(doc.bool_at("rotation_required"), "{}", encode(&doc));
        assert!(!encode(&doc).contains(b.id()), "b is out of the authoritative set: {}", encode(&doc));
        e.post(&channel, "before the rotation").assert_error(409, "epoch_rotation_required");
        add_and_commit(&mut a, &channel, &[], &[b.id()]);
        e.catch_up(&channel);
        assert_eq!(e.post(&channel, "after the rotation").status, 201);
        assert_nothing_logged(&[&a, &b, &e], &[]);
    };
}
