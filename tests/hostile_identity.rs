//! Attacks on identity (wire contract B.1, A.10), against the real server: taking a uid by
//! asking for it first, squatting the default server's owner uid, locking everyone out of
//! sign-in with a flood of challenges, authenticating plain HTTP through the query string, and
//! reading secrets out of a `trace` log.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use openchatd::sfu::peer::Line;
use simd_json::json;
use simd_json::prelude::*;
use str0m::media::MediaKind;
use support::api::{Client, DeviceKey, default_server_id};
use support::call::{Caller, voice_channel};
use support::json::{Json, JsonPath, encode, parse};
use support::server::{Engine as Db, PUBLIC_BASE_URL, Place, TestServer, start_in};
use support::ws::Ws;

/// A community server in session mode (the default mode, spelled out).
fn session_server(place: Place, extra: &[(&str, &str)]) -> TestServer {
    let mut vars: Vec<(&str, &str)> = vec![
        ("OPENCHAT_AUTH_MODE", "session"),
        ("OPENCHAT_PUBLIC_BASE_URL", PUBLIC_BASE_URL),
        ("OPENCHAT_RATE_LIMIT_PER_MINUTE", "1000000"),
    ];
    vars.extend_from_slice(extra);
    start_in(place, None, &vars, |_| {})
}

fn headers_server(place: Place) -> TestServer {
    start_in(
        place,
        None,
        &[
            ("OPENCHAT_AUTH_MODE", "headers"),
            ("OPENCHAT_PUBLIC_BASE_URL", PUBLIC_BASE_URL),
            ("OPENCHAT_RATE_LIMIT_PER_MINUTE", "1000000"),
        ],
        |_| {},
    )
}

/// Challenge and session for `uid`; the raw reply of `POST /v1/auth/session`.
fn try_sign_in(key: &DeviceKey, addr: SocketAddr, uid: Option<&str>) -> support::http::Reply {
    let challenge = key.challenge(addr, uid);
    key.open_session(addr, PUBLIC_BASE_URL, uid, &challenge)
}

fn bearer(addr: SocketAddr, session: &Json) -> Client {
    Client::bearer(addr, session.str_at("token"))
}

fn approve(client: &Client, server_id: &str, uid: &str, key: &DeviceKey) -> support::http::Reply {
    client.post(
        &format!("/v1/servers/{server_id}/identity-bindings"),
        &json!({"user_uid": uid, "public_key": key.public_key()}),
    )
}

/// `PUT /v1/servers/{id}/settings`: only the owner or an admin gets 200.
fn rename(client: &Client, server_id: &str, name: &str) -> u16 {
    client
        .put(
            &format!("/v1/servers/{server_id}/settings"),
            &json!({"display_name": name}),
        )
        .status
}

support::on_both_engines! {
    a_key_gets_its_derived_uid_and_no_uid_is_taken_by_asking_first => |engine| {
        let server = session_server(Place::new(engine), &[]);
        let addr = server.addr;
        let alice = DeviceKey::new();
        let session = alice.sign_in(addr, PUBLIC_BASE_URL, None);
        // `uid_` + 32 hex of SHA-256 over the label and the key, as the contract computes it.
        assert_eq!(session.str_at("user_uid"), alice.derived_uid());
        assert_eq!(session.str_at("user_uid").len(), 4 + 32);
        // Asking for the derived uid explicitly is the same.
        let again = alice.sign_in(addr, PUBLIC_BASE_URL, Some(&alice.derived_uid()));
        assert_eq!(again.str_at("user_uid"), alice.derived_uid());

        // A stranger asking for a uid nobody holds yet does not get it.
        let mallory = DeviceKey::new();
        let wanted = format!("uid_{:08x}", rand::random::<u32>());
        try_sign_in(&mallory, addr, Some(&wanted)).assert_error(403, "binding_required");
        // Nor alice's uid, which is bound to her key.
        try_sign_in(&mallory, addr, Some(&alice.derived_uid())).assert_error(409, "identity_key_mismatch");
        // Nor the uid the default server's owner would have.
        try_sign_in(&mallory, addr, Some("uid_owner")).assert_error(403, "binding_required");
        // Mallory still signs in, as herself.
        let own = mallory.sign_in(addr, PUBLIC_BASE_URL, None);
        assert_eq!(own.str_at("user_uid"), mallory.derived_uid());
        // Alice on a second device with the same key is alice.
        let alice_laptop = DeviceKey { key: alice.key.clone(), device_id: support::api::new_device() };
        assert_eq!(alice_laptop.sign_in(addr, PUBLIC_BASE_URL, None).str_at("user_uid"), alice.derived_uid());
    };

    the_default_owner_uid_is_only_the_operators_key => |engine| {
        // Today whoever signs in first with the configured uid owns the default server.
        let owner_uid = "uid_0wner";
        let operator = DeviceKey::new();
        let place = Place::new(engine);
        let server = session_server(place, &[("OPENCHAT_DEFAULT_SERVER_OWNER_UID", owner_uid)]);
        let addr = server.addr;
        let server_id = default_server_id(addr);
        let mallory = DeviceKey::new();
        try_sign_in(&mallory, addr, Some(owner_uid)).assert_error(403, "binding_required");
        let mallory_session = mallory.sign_in(addr, PUBLIC_BASE_URL, None);
        assert_eq!(rename(&bearer(addr, &mallory_session), &server_id, "Mallory's"), 403);
        let place = server.stop();

        // The operator names its key: that key, and only it, signs in as the owner uid.
        let operator_key = operator.public_key();
        let server = session_server(place, &[
            ("OPENCHAT_DEFAULT_SERVER_OWNER_UID", owner_uid),
            ("OPENCHAT_DEFAULT_SERVER_OWNER_KEY", &operator_key),
        ]);
        let addr = server.addr;
        let session = operator.sign_in(addr, PUBLIC_BASE_URL, Some(owner_uid));
        assert_eq!(session.str_at("user_uid"), owner_uid);
        assert_eq!(rename(&bearer(addr, &session), &server_id, "The operator's"), 200);
        try_sign_in(&mallory, addr, Some(owner_uid)).assert_error(409, "identity_key_mismatch");
        let place = server.stop();

        // The key alone: its derived uid owns the default server.
        let server = session_server(place, &[("OPENCHAT_DEFAULT_SERVER_OWNER_KEY", &operator_key)]);
        let addr = server.addr;
        // A fresh device: the one above is bound to `owner_uid`.
        let operator = DeviceKey { key: operator.key.clone(), device_id: support::api::new_device() };
        let session = operator.sign_in(addr, PUBLIC_BASE_URL, None);
        assert_eq!(session.str_at("user_uid"), operator.derived_uid());
        assert_eq!(rename(&bearer(addr, &session), &server_id, "Renamed by key"), 200);
        let mallory_session = mallory.sign_in(addr, PUBLIC_BASE_URL, None);
        assert_eq!(rename(&bearer(addr, &mallory_session), &server_id, "Mallory's"), 403);
    };

    an_approved_binding_brings_a_headers_mode_uid_to_sessions => |engine| {
        // A desktop-client uid of the headers mode, a member of the default server.
        let legacy = format!("uid_{:08x}", rand::random::<u32>());
        let bystander = format!("uid_{:08x}", rand::random::<u32>());
        let server = headers_server(Place::new(engine));
        let server_id = default_server_id(server.addr);
        for uid in [&legacy, &bystander] {
            let client = Client::with_uid(server.addr, uid);
            let general = client.first_text_channel(&server_id);
            client.send(&general, "from the headers days");
        }
        let place = server.stop();

        let operator = DeviceKey::new();
        let operator_key = operator.public_key();
        let server = session_server(place, &[("OPENCHAT_DEFAULT_SERVER_OWNER_KEY", &operator_key)]);
        let addr = server.addr;
        let owner = bearer(addr, &operator.sign_in(addr, PUBLIC_BASE_URL, None));
        let moved = DeviceKey::new();
        try_sign_in(&moved, addr, Some(&legacy)).assert_error(403, "binding_required");

        // A plain member cannot approve; a signed-out request is 401.
        let member = bearer(addr, &DeviceKey::new().sign_in(addr, PUBLIC_BASE_URL, None));
        let general = member.first_text_channel(&server_id);
        member.send(&general, "hello");
        approve(&member, &server_id, &legacy, &moved).assert_error(403, "forbidden");
        approve(&Client::anonymous(addr), &server_id, &legacy, &moved).assert_error(401, "unauthorized");
        // Only uids that were members of the server, with a real key.
        approve(&owner, &server_id, "uid_neverseen", &moved).assert_error(404, "member_not_found");
        let bad = owner.post(&format!("/v1/servers/{server_id}/identity-bindings"), &json!({"user_uid": legacy.as_str(), "public_key": "nope"}));
        assert_eq!(bad.status, 400, "{}", bad.text());

        // The owner approves: 201, with who approved what and when.
        let approved = approve(&owner, &server_id, &legacy, &moved);
        assert_eq!(approved.status, 201, "{}", approved.text());
        let doc = approved.json();
        assert_eq!(doc.str_at("user_uid"), legacy);
        assert_eq!(doc.str_at("public_key"), moved.public_key());
        assert_eq!(doc.str_at("server_id"), server_id);
        assert_eq!(doc.str_at("approved_by_uid"), operator.derived_uid());
        assert!(support::api::is_rfc3339_utc(doc.at("approved_at")), "{}", encode(&doc));
        // Another key for the same uid is a conflict.
        approve(&owner, &server_id, &legacy, &DeviceKey::new()).assert_error(409, "identity_key_mismatch");

        // The binding is stored: it holds after a restart.
        let place = server.stop();
        let server = session_server(place, &[("OPENCHAT_DEFAULT_SERVER_OWNER_KEY", &operator_key)]);
        let addr = server.addr;
        let session = moved.sign_in(addr, PUBLIC_BASE_URL, Some(&legacy));
        assert_eq!(session.str_at("user_uid"), legacy);
        let me = bearer(addr, &session);
        let sent = me.send(&general, "signed in as my old uid");
        assert_eq!(sent.str_at("author_uid"), legacy);
        // The bystander's uid is still nobody's to take.
        try_sign_in(&DeviceKey::new(), addr, Some(&bystander)).assert_error(403, "binding_required");
        try_sign_in(&DeviceKey::new(), addr, Some(&legacy)).assert_error(409, "identity_key_mismatch");
    };
}

/// `POST {path}` with a JSON body from a socket bound to `local`, on a fresh connection.
fn post_from(local: IpAddr, addr: SocketAddr, path: &str, body: &Json) -> (u16, Json) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::new(local, 0).into())
        .expect("bind the client socket");
    socket.connect(&addr.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let body = encode(body);
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let status = std::str::from_utf8(&reply[9..12]).unwrap().parse().unwrap();
    (status, parse(&reply[split + 4..]))
}

/// Requests in the flood. The challenge store this replaced refused everyone once 100,000
/// challenges were outstanding.
const FLOOD_REQUESTS: usize = 110_000;
/// Requests written per round trip on the flood's keep-alive connections.
const FLOOD_PIPELINE: usize = 200;
const FLOOD_CONNECTIONS: usize = 4;

/// Sends `count` challenge requests with random device ids over one keep-alive connection;
/// returns the status counts.
fn flood(
    addr: SocketAddr,
    count: usize,
    public_key: &str,
) -> std::collections::BTreeMap<u16, usize> {
    let mut conn = support::http::Conn::open(addr);
    let mut statuses = std::collections::BTreeMap::new();
    let mut sent = 0;
    while sent < count {
        let batch = FLOOD_PIPELINE.min(count - sent);
        let mut bytes = Vec::new();
        for _ in 0..batch {
            let body = format!(
                r#"{{"device_id":"flood_{:016x}","public_key":"{public_key}"}}"#,
                rand::random::<u64>()
            );
            bytes.extend_from_slice(format!(
                "POST /v1/auth/challenge HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ).as_bytes());
        }
        conn.send(&bytes);
        for _ in 0..batch {
            let reply = conn
                .read_reply()
                .expect("the flood's connection stays open");
            *statuses.entry(reply.status).or_insert(0) += 1;
        }
        sent += batch;
    }
    statuses
}

#[test]
fn a_challenge_flood_from_one_address_does_not_lock_out_sign_in_from_another() {
    let server = session_server(Place::new(Db::Sqlite), &[]);
    let addr = server.addr;
    let started = Instant::now();
    let flooder = DeviceKey::new().public_key();
    let totals = std::thread::scope(|scope| {
        let floods: Vec<_> = (0..FLOOD_CONNECTIONS)
            .map(|_| scope.spawn(|| flood(addr, FLOOD_REQUESTS / FLOOD_CONNECTIONS, &flooder)))
            .collect();
        let mut totals = std::collections::BTreeMap::new();
        for f in floods {
            for (status, n) in f.join().unwrap() {
                *totals.entry(status).or_insert(0) += n;
            }
        }
        totals
    });
    eprintln!(
        "flood of {FLOOD_REQUESTS} challenges from 127.0.0.1 in {:?}: {totals:?}",
        started.elapsed()
    );
    assert_eq!(totals.values().sum::<usize>(), FLOOD_REQUESTS);

    // The victim, from another address, right after the flood (its challenges would all still
    // be outstanding in a stateful store).
    let victim = DeviceKey::new();
    let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let ask = json!({"device_id": victim.device_id.as_str(), "public_key": victim.public_key()});
    let (status, doc) = post_from(from, addr, "/v1/auth/challenge", &ask);
    assert_eq!(status, 200, "{}", encode(&doc));
    let challenge = doc.str_at("challenge").to_owned();
    let answer = json!({
        "device_id": victim.device_id.as_str(),
        "public_key": victim.public_key(),
        "challenge": challenge.as_str(),
        "signature": victim.sign(PUBLIC_BASE_URL, &challenge),
    });
    let (status, doc) = post_from(from, addr, "/v1/auth/session", &answer);
    assert_eq!(status, 201, "{}", encode(&doc));
    assert_eq!(doc.str_at("user_uid"), victim.derived_uid());
    // Still single use.
    let (status, doc) = post_from(from, addr, "/v1/auth/session", &answer);
    assert_eq!((status, doc.str_at("code")), (401, "unauthorized"));
    // A flooder's challenge is bound to what it was asked for: not reusable for another key.
    let other_ask = json!({"device_id": "desktop_x", "public_key": flooder.as_str()});
    let (status, doc) = post_from(from, addr, "/v1/auth/challenge", &other_ask);
    assert_eq!(status, 200);
    let foreign = json!({
        "device_id": victim.device_id.as_str(),
        "public_key": victim.public_key(),
        "challenge": doc.str_at("challenge"),
        "signature": victim.sign(PUBLIC_BASE_URL, doc.str_at("challenge")),
    });
    let (status, _) = post_from(from, addr, "/v1/auth/session", &foreign);
    assert_eq!(status, 401);
}

#[test]
fn plain_http_ignores_a_token_in_the_query_and_websockets_take_the_subprotocol() {
    let server = session_server(Place::new(Db::Sqlite), &[]);
    let addr = server.addr;
    let server_id = default_server_id(addr);
    let key = DeviceKey::new();
    let session = key.sign_in(addr, PUBLIC_BASE_URL, None);
    let token = session.str_at("token").to_owned();
    let me = Client::bearer(addr, &token);
    assert_eq!(me.get("/v1/profile/me").status, 200);
    // The same token in the query of plain HTTP authenticates nothing.
    let anonymous = Client::anonymous(addr);
    anonymous
        .get(&format!("/v1/profile/me?access_token={token}"))
        .assert_error(401, "unauthorized");
    anonymous
        .get(&format!("/v1/auth/session?access_token={token}"))
        .assert_error(401, "unauthorized");
    let general = me.first_text_channel(&server_id);
    anonymous
        .post(
            &format!("/v1/channels/{general}/messages?access_token={token}"),
            &json!({"body": "via the query"}),
        )
        .assert_error(401, "unauthorized");

    // WebSockets: the subprotocol, echoed, identifies the socket; so does `access_token`.
    let mut ws = Ws::connect_with_protocol(
        addr,
        &format!("server_id={server_id}"),
        &format!("openchat.session.{token}"),
    );
    ws.subscribe(&general);
    let snapshot = ws.expect("chat.presence.snapshot");
    assert!(
        snapshot
            .arr_at("payload.members")
            .iter()
            .any(|m| m.str_at("user_uid") == key.derived_uid()),
        "{}",
        encode(&snapshot)
    );
    let mut by_query =
        Ws::connect(addr, &format!("server_id={server_id}&access_token={token}")).live();
    let sent = me.send(&general, "both sockets");
    for socket in [&mut ws, &mut by_query] {
        socket.expect_where("chat.message.created", |f| {
            f.str_at("payload.message.id") == sent.str_at("id")
        });
    }
    // A forged token in the subprotocol is refused like any other.
    let mut forged = Ws::connect_with_protocol(
        addr,
        &format!("server_id={server_id}"),
        "openchat.session.ocs_forged",
    );
    forged.expect("chat.error");
    assert!(forged.closed_within(Duration::from_secs(3)));
}

/// The real binary at `trace`, its log in a file: sign-in, a realtime socket with the token,
/// a server with its claim token, a join ticket and a voice offer and answer. None of the
/// secrets may appear in the log; the default server's claim token only in the one line that
/// hands it to the operator.
#[test]
fn a_trace_log_carries_no_secrets() {
    let place = Place::new(Db::Sqlite);
    let log_path = place.data_dir.path().join("openchatd.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_openchatd"));
    for (key, _) in std::env::vars() {
        if key.starts_with("OPENCHAT_") {
            cmd.env_remove(key);
        }
    }
    let data = place.data_dir.path().join("data");
    let mut child = cmd
        .env("OPENCHAT_HTTP_ADDR", "127.0.0.1:0")
        .env("OPENCHAT_RTC_UDP_PORT", "0")
        .env("OPENCHAT_SHARDS", "2")
        .env("OPENCHAT_DATA_DIR", &data)
        .env("OPENCHAT_PUBLIC_BASE_URL", PUBLIC_BASE_URL)
        .env("OPENCHAT_LOG", "trace")
        .env("OPENCHAT_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn openchatd");
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr: SocketAddr = loop {
        assert!(Instant::now() < deadline, "no listening line");
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let found = text
            .lines()
            .filter(|l| l.contains("\"listening\""))
            .find_map(|line| {
                parse(line.as_bytes())
                    .try_at("fields.addr")
                    .and_then(|a| a.as_str().map(str::to_owned))
            });
        if let Some(addr) = found {
            break addr.parse().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    };

    let mut secrets: Vec<(String, String)> = Vec::new();
    let key = DeviceKey::new();
    let challenge = key.challenge(addr, None);
    let reply = key.open_session(addr, PUBLIC_BASE_URL, None, &challenge);
    assert_eq!(reply.status, 201, "{}", reply.text());
    let token = reply.json().str_at("token").to_owned();
    secrets.push(("session token".into(), token.clone()));
    let me = Client::bearer(addr, &token);
    let server_id = default_server_id(addr);
    let general = me.first_text_channel(&server_id);
    let mut ws = Ws::connect(addr, &format!("server_id={server_id}&access_token={token}")).live();
    let mut ws2 = Ws::connect_with_protocol(
        addr,
        &format!("server_id={server_id}"),
        &format!("openchat.session.{token}"),
    )
    .live();
    // A verified session of A.10: its challenge id, the signed payload and the token.
    let verified = DeviceKey::new();
    let challenge = verified.server_challenge(addr, &server_id, None);
    assert_eq!(challenge.status, 201, "{}", challenge.text());
    let challenge = challenge.json();
    let signature = verified.sign_payload(challenge.str_at("payload"));
    let session = verified.server_session(
        addr,
        &server_id,
        challenge.str_at("challenge_id"),
        &signature,
    );
    assert_eq!(session.status, 201, "{}", session.text());
    secrets.push((
        "verified-session challenge id".into(),
        challenge.str_at("challenge_id").to_owned(),
    ));
    secrets.push(("verified-session signature".into(), signature));
    secrets.push((
        "verified-session token".into(),
        session.json().str_at("token").to_owned(),
    ));
    me.send(&general, "logged?");
    ws.expect("chat.message.created");
    ws2.expect("chat.message.created");
    let created = me.create_server("Secret keeper");
    secrets.push((
        "claim token".into(),
        created.str_at("ownership_claim.token").to_owned(),
    ));

    let voice = voice_channel(&me, &server_id);
    let ticket = me.post(
        &format!("/v1/rtc/channels/{voice}/join-ticket"),
        &json!({"server_id": server_id.as_str()}),
    );
    assert_eq!(ticket.status, 200, "{}", ticket.text());
    let ticket = ticket.json().str_at("ticket").to_owned();
    secrets.push(("join ticket".into(), ticket.clone()));
    let mut caller = Caller::join(addr, &ticket);
    let (offer, _) = caller
        .publish
        .peer
        .offer(&[Line::send(MediaKind::Audio, "s", "mic")])
        .expect("an offer");
    caller.ws.send(
        "rtc.offer.publish",
        json!({"type": "offer", "sdp": offer.as_str(), "direction": "publish"}),
    );
    let answer = caller.ws.expect("rtc.answer.publish");
    let answer_sdp = answer.str_at("payload.sdp").to_owned();
    for (whose, sdp) in [("offer", offer.as_str()), ("answer", answer_sdp.as_str())] {
        for line in sdp.lines() {
            if let Some(pwd) = line.strip_prefix("a=ice-pwd:") {
                secrets.push((
                    format!("ICE password of the {whose}"),
                    pwd.trim().to_owned(),
                ));
            }
            if let Some(fp) = line.strip_prefix("a=fingerprint:") {
                let value = fp
                    .split_whitespace()
                    .nth(1)
                    .expect("hash and value")
                    .to_owned();
                secrets.push((format!("DTLS fingerprint of the {whose}"), value));
            }
        }
    }
    assert!(
        secrets
            .iter()
            .filter(|(what, _)| what.starts_with("ICE"))
            .count()
            >= 2,
        "{secrets:?}"
    );
    assert!(
        secrets
            .iter()
            .filter(|(what, _)| what.starts_with("DTLS"))
            .count()
            >= 2,
        "{secrets:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");

    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        text.lines().count() > 50,
        "trace logged next to nothing:\n{text}"
    );
    let mut leaks = Vec::new();
    for (what, secret) in &secrets {
        for line in text.lines().filter(|l| l.contains(secret.as_str())) {
            let doc = parse(line.as_bytes());
            let target = doc
                .try_at("target")
                .and_then(|t| t.as_str())
                .unwrap_or("?")
                .to_owned();
            let message: String = doc
                .try_at("fields.message")
                .and_then(|t| t.as_str())
                .unwrap_or(line)
                .chars()
                .take(80)
                .collect();
            leaks.push(format!("{what} ({target}): {message}"));
        }
    }
    leaks.dedup();
    assert!(
        leaks.is_empty(),
        "secrets in the log:\n{}",
        leaks.join("\n")
    );
    // The default server's claim token: exactly one line, the warning meant for the operator.
    let claim_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("default server created without an owner"))
        .collect();
    assert_eq!(claim_lines.len(), 1, "{claim_lines:#?}");
    let claim = parse(claim_lines[0].as_bytes());
    assert_eq!(claim.str_at("level"), "WARN");
    let default_claim = claim.str_at("fields.claim_token").to_owned();
    assert!(default_claim.starts_with("occ_"), "{default_claim}");
    assert_eq!(text.matches(default_claim.as_str()).count(), 1);
}
