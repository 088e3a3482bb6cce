//! History bound to membership on every path (issue 9, items 5–7; wire contract B.1–B.3), tried
//! as an attacker would against the real server: a realtime resume replays only what the reader
//! could read when it happened; a reply cannot name (or probe for) a message its author may not
//! read; leaving, a revoked session, a kick or a ban closes the affected sockets and voice at
//! once and voids the join tickets taken before.

mod support;

use std::time::{Duration, Instant};

use simd_json::json;
use simd_json::prelude::*;
use support::api::{Client, DeviceKey, default_server_id};
use support::call::{Caller, ticket_for, voice_channel};
use support::json::{Json, JsonPath, encode};
use support::multipart::Multipart;
use support::server::{PUBLIC_BASE_URL, TestServer, start_community, start_with};
use support::ws::{QUIET, Ws, headers_query};

/// The owner of the default server in these tests (`OPENCHAT_DEFAULT_SERVER_OWNER_UID`).
const OWNER: &str = "uid_owner";
/// How fast "at once" must be.
const AT_ONCE: Duration = Duration::from_secs(1);

fn created_id(frame: &Json) -> &str {
    frame.str_at("payload.message.id")
}

/// A channel of `server_id` made by the owner, with this history visibility.
fn channel(owner: &Client, server_id: &str, name: &str, visibility: &str) -> String {
    let reply = owner.post(
        &format!("/v1/servers/{server_id}/channels"),
        &json!({"name": name, "type": "text", "history_visibility": visibility}),
    );
    assert_eq!(reply.status, 201, "{}", reply.text());
    let doc = reply.json();
    assert_eq!(doc.str_at("channel.history_visibility"), visibility);
    doc.str_at("channel.id").to_owned()
}

/// A realtime socket of `client` that resumed from `since` (or none), once the server reads
/// its frames: everything the resume replays is in its backlog by then.
fn resumed(server: &TestServer, client: &Client, server_id: &str, since: Option<i64>) -> Ws {
    let mut query = headers_query(server_id, client.uid(), client.device());
    if let Some(since) = since {
        query.push_str(&format!("&since_event_id={since}"));
    }
    Ws::connect(server.addr, &query).live()
}

/// Ids of the `chat.message.created` frames waiting in `ws`.
fn replayed_messages(ws: &Ws) -> Vec<String> {
    ws.backlog()
        .filter(|f| f.str_at("type") == "chat.message.created")
        .map(|f| created_id(f).to_owned())
        .collect()
}

fn kinds(ws: &Ws) -> Vec<String> {
    ws.backlog().map(|f| f.str_at("type").to_owned()).collect()
}

support::on_both_engines! {
    // Item 5: a later joiner resuming from the start gets nothing of a `joined` channel from
    // before its join (not even the deletion of such a message), but `members` and `public`
    // channels and server-level events replay.
    a_resume_from_before_the_join_replays_only_what_the_joiner_could_read => |engine| {
        let server = start_community(engine, &[("OPENCHAT_DEFAULT_SERVER_OWNER_UID", OWNER)]);
        let owner = Client::with_uid(server.addr, OWNER);
        let server_id = default_server_id(server.addr);
        let joined = owner.first_text_channel(&server_id);
        let staff = channel(&owner, &server_id, "staff", "members");
        let open = channel(&owner, &server_id, "open", "public");
        let alice = Client::user(server.addr);
        let secret = alice.send(&joined, "before bob joined").str_at("id").to_owned();
        let kept = alice.send(&joined, "also before bob").str_at("id").to_owned();
        let for_members = alice.send(&staff, "members read this").str_at("id").to_owned();
        let for_all = alice.send(&open, "anyone reads this").str_at("id").to_owned();

        // Bob's first contact makes him a member from now on; then a message from before is
        // deleted (its deletion names a message bob never could read).
        let bob = Client::user(server.addr);
        bob.groups(&server_id);
        let deleted = alice.delete(&format!("/v1/channels/{joined}/messages/{secret}"));
        assert_eq!(deleted.status, 200, "{}", deleted.text());
        let after = alice.send(&joined, "after bob joined").str_at("id").to_owned();

        let ws = resumed(&server, &bob, &server_id, Some(0));
        let kinds = kinds(&ws);
        assert!(!kinds.iter().any(|k| k == "chat.resync_required"), "event 0 is still in the window: {kinds:?}");
        assert!(kinds.iter().any(|k| k == "chat.channel.created"), "server-level events replay: {kinds:?}");
        let replayed = replayed_messages(&ws);
        assert_eq!(replayed, vec![for_members.clone(), for_all.clone(), after.clone()], "secret {secret} and {kept} came before bob's join");
        assert!(
            !ws.backlog().any(|f| f.str_at("type") == "chat.message.deleted"),
            "the deletion of a message bob could not read leaked: {}",
            ws.backlog().map(encode).collect::<Vec<_>>().join("\n")
        );
        // The history page says the same.
        assert_eq!(bob.message_ids(&joined, "limit=50"), vec![after.clone()]);

        // Alice, a member all along, gets all of it.
        let ws = resumed(&server, &alice, &server_id, Some(0));
        assert_eq!(replayed_messages(&ws), vec![secret.clone(), kept, for_members, for_all, after]);
        assert!(ws.backlog().any(|f| f.str_at("type") == "chat.message.deleted" && f.str_at("payload.message_id") == secret));
    };

    // Item 5: leaving and rejoining; the resume skips what a `joined` channel got meanwhile.
    a_resume_after_rejoining_skips_the_gap => |engine| {
        let server = start_community(engine, &[("OPENCHAT_DEFAULT_SERVER_OWNER_UID", OWNER)]);
        let owner = Client::with_uid(server.addr, OWNER);
        let server_id = default_server_id(server.addr);
        let joined = owner.first_text_channel(&server_id);
        let staff = channel(&owner, &server_id, "staff", "members");
        let open = channel(&owner, &server_id, "open", "public");
        let alice = Client::user(server.addr);
        let bob = Client::user(server.addr);
        alice.groups(&server_id);
        let mut ws = resumed(&server, &bob, &server_id, None);
        let seen = alice.send(&joined, "bob saw this live").str_at("id").to_owned();
        let since = ws.expect_where("chat.message.created", |f| created_id(f) == seen).i64_at("event_id");
        let missed = alice.send(&joined, "posted while bob was still a member").str_at("id").to_owned();
        ws.expect_where("chat.message.created", |f| created_id(f) == missed);
        drop(ws);

        let left = bob.delete(&format!("/v1/servers/{server_id}/membership"));
        assert_eq!(left.status, 200, "{}", left.text());
        let gap = alice.send(&joined, "while bob was away").str_at("id").to_owned();
        let gap_members = alice.send(&staff, "members channel while bob was away").str_at("id").to_owned();
        let gap_public = alice.send(&open, "public while bob was away").str_at("id").to_owned();
        let back = bob.post(&format!("/v1/servers/{server_id}/membership"), &json!({}));
        assert_eq!(back.status, 200, "{}", back.text());

        let mut ws = resumed(&server, &bob, &server_id, Some(since));
        assert_eq!(
            replayed_messages(&ws),
            vec![missed.clone(), gap_members, gap_public],
            "{gap} was posted in a joined channel while bob was away"
        );
        assert_eq!(bob.message_ids(&joined, "limit=50"), vec![seen, missed]);
        // Then live.
        ws.clear();
        let live = alice.send(&joined, "welcome back").str_at("id").to_owned();
        ws.expect_where("chat.message.created", |f| created_id(f) == live);
    };

    // Item 6: a reply to a message the replier may not read gets exactly the answer of a reply
    // to a message that does not exist, on JSON and multipart posts, and nothing is posted.
    replies_to_unreadable_messages_are_refused_like_missing_ones => |engine| {
        let server = start_community(engine, &[("OPENCHAT_DEFAULT_SERVER_OWNER_UID", OWNER)]);
        let server_id = default_server_id(server.addr);
        let alice = Client::user(server.addr);
        let general = alice.first_text_channel(&server_id);
        let before = alice.send(&general, "posted before bob joined").str_at("id").to_owned();
        let bob = Client::user(server.addr);
        bob.groups(&server_id);
        let mut alice_ws = resumed(&server, &alice, &server_id, None);
        let path = format!("/v1/channels/{general}/messages");

        let json_reply = |who: &Client, target: &str| who.post(&path, &json!({"body": "what about this", "reply_to_message_id": target}));
        let multipart_reply = |who: &Client, target: &str| {
            who.post_multipart(&path, Multipart::new().text("body", "what about this").text("reply_to_message_id", target))
        };
        let answer = |reply: support::http::Reply| -> (u16, String) {
            reply.assert_error(404, "message_not_found");
            (reply.status, encode(&reply.json()))
        };
        let missing = answer(json_reply(&bob, "msg_987654321"));
        assert_eq!(answer(multipart_reply(&bob, "msg_987654321")), missing);
        assert_eq!(answer(json_reply(&bob, "not a message id at all")), missing);

        // Before the join.
        assert_eq!(answer(json_reply(&bob, &before)), missing, "a message from before the join");
        assert_eq!(answer(multipart_reply(&bob, &before)), missing, "a message from before the join (multipart)");

        // A gap: bob leaves, alice posts, bob comes back.
        assert_eq!(bob.delete(&format!("/v1/servers/{server_id}/membership")).status, 200);
        let gap = alice.send(&general, "while bob was away").str_at("id").to_owned();
        assert_eq!(bob.post(&format!("/v1/servers/{server_id}/membership"), &json!({})).status, 200);
        assert_eq!(answer(json_reply(&bob, &gap)), missing, "a message from the gap");
        assert_eq!(answer(multipart_reply(&bob, &gap)), missing, "a message from the gap (multipart)");

        // Another server's channel: not even its own member may reply across.
        let elsewhere = alice.create_server("Elsewhere");
        let far_channel = alice.first_text_channel(elsewhere.str_at("server.server_id"));
        let far = alice.send(&far_channel, "in another server").str_at("id").to_owned();
        assert_eq!(answer(json_reply(&bob, &far)), missing, "another server's message");
        assert_eq!(answer(json_reply(&alice, &far)), missing, "replies stay in their channel");

        // Nothing was posted or broadcast; a reply bob may make still works.
        let readable = alice.send(&general, "after bob came back").str_at("id").to_owned();
        let ok = json_reply(&bob, &readable);
        assert_eq!(ok.status, 201, "{}", ok.text());
        let ok = ok.json();
        assert_eq!(ok.str_at("message.reply_to.preview_text"), "after bob came back");
        let from_bob = alice_ws.expect_where("chat.message.created", |f| f.str_at("payload.message.author_uid") == bob.uid());
        assert_eq!(created_id(&from_bob), ok.str_at("message.id"), "a refused reply was broadcast");
        let page = alice.messages(&general, "limit=50");
        let by_bob: Vec<&Json> = page.arr_at("messages").iter().filter(|m| m.str_at("author_uid") == bob.uid()).collect();
        assert_eq!(by_bob.len(), 1, "{}", encode(&page));
    };

    // Item 7: leaving closes the leaver's realtime and signaling sockets of that server at
    // once, ends its voice participation, and voids the ticket it took before.
    leaving_closes_sockets_and_voice_and_voids_tickets => |engine| {
        let server = start_community(engine, &[("OPENCHAT_DEFAULT_SERVER_ID", "home")]);
        let alice = Client::user(server.addr);
        let bob = Client::user(server.addr);
        let voice = voice_channel(&alice, "home");
        let mut bob_ws = resumed(&server, &bob, "home", None);
        let mut alice_call = Caller::join(server.addr, &ticket_for(&alice, &voice));
        let mut bob_call = Caller::join(server.addr, &ticket_for(&bob, &voice));
        alice_call.ws.expect("rtc.participant.joined");
        let unused = ticket_for(&bob, &voice);

        let started = Instant::now();
        let left = bob.delete("/v1/servers/home/membership");
        assert_eq!(left.status, 200, "{}", left.text());
        assert!(bob_ws.closed_within(AT_ONCE), "the realtime socket stays open after leaving");
        assert!(bob_call.ws.closed_within(AT_ONCE), "the signaling socket stays open after leaving");
        let gone = alice_call.ws.expect("rtc.participant.left");
        assert_eq!(gone.str_at("payload.participant.user_uid"), bob.uid());
        assert!(started.elapsed() < 2 * AT_ONCE, "took {:?}", started.elapsed());
        refused(&server, &unused, "rtc_join_denied");

        // Coming back (a new ticket re-admits) works.
        let _back = Caller::join(server.addr, &ticket_for(&bob, &voice));
        alice_call.ws.expect("rtc.participant.joined");
    };

    // Item 7: a kick and a ban close the target's sockets of the server and its voice, and
    // void its unused tickets; after a kick the user may come back, after a ban not.
    kicks_and_bans_close_sockets_and_void_tickets => |engine| {
        let server = start_with(engine, &[
            ("OPENCHAT_AUTH_MODE", "headers"),
            ("OPENCHAT_PUBLIC_BASE_URL", PUBLIC_BASE_URL),
            ("OPENCHAT_RATE_LIMIT_PER_MINUTE", "1000000"),
            ("OPENCHAT_DEFAULT_SERVER_ID", "home"),
            ("OPENCHAT_DEFAULT_SERVER_OWNER_UID", OWNER),
        ], moderation_routes);
        let owner = Client::with_uid(server.addr, OWNER);
        let bob = Client::user(server.addr);
        let voice = voice_channel(&bob, "home");
        for (action, banned) in [("kick", false), ("ban", true)] {
            let mut bob_ws = resumed(&server, &bob, "home", None);
            let mut bob_call = Caller::join(server.addr, &ticket_for(&bob, &voice));
            let unused = ticket_for(&bob, &voice);
            let reply = owner.post_raw(&format!("/test/{action}"), "text/plain", bob.uid().as_bytes());
            assert_eq!(reply.status, 204, "{action}: {}", reply.text());
            bob_call.ws.expect("rtc.kicked");
            assert!(bob_call.ws.closed_within(AT_ONCE), "{action}: the signaling socket stays open");
            assert!(bob_ws.closed_within(AT_ONCE), "{action}: the realtime socket stays open");
            refused(&server, &unused, "rtc_join_denied");
            if !banned {
                // A kick is not a ban: bob may come back.
                let mut again = resumed(&server, &bob, "home", None);
                assert!(!again.closed_within(QUIET));
                let _call = Caller::join(server.addr, &ticket_for(&bob, &voice));
            } else {
                bob.post(&format!("/v1/rtc/channels/{voice}/join-ticket"), &json!({"server_id": "home"})).assert_error(403, "banned");
            }
        }
    };

    // Item 7 (sessions): revoking a session closes every socket opened with that token at
    // once and the voice of its device, and voids the device's tickets taken before; another
    // session's socket stays.
    revoking_a_session_closes_its_sockets_and_voids_its_tickets => |engine| {
        let server = start_community(engine, &[("OPENCHAT_AUTH_MODE", "session"), ("OPENCHAT_DEFAULT_SERVER_ID", "home")]);
        let addr = server.addr;
        let key = DeviceKey::new();
        let first = key.sign_in(addr, PUBLIC_BASE_URL, None);
        let second = key.sign_in(addr, PUBLIC_BASE_URL, None);
        let uid = first.str_at("user_uid").to_owned();
        let revoked = Client::bearer(addr, first.str_at("token"));
        let kept = Client::bearer(addr, second.str_at("token"));
        let observer = Client::bearer(addr, DeviceKey::new().sign_in(addr, PUBLIC_BASE_URL, None).str_at("token"));
        let voice = voice_channel(&revoked, "home");
        let general = revoked.first_text_channel("home");

        let mut revoked_ws = Ws::connect(addr, &format!("server_id=home&access_token={}", first.str_at("token"))).live();
        let mut revoked_ws2 = Ws::connect(addr, &format!("server_id=home&access_token={}", first.str_at("token"))).live();
        let mut kept_ws = Ws::connect(addr, &format!("server_id=home&access_token={}", second.str_at("token"))).live();
        let mut observer_call = Caller::join(addr, &ticket_for(&observer, &voice));
        let mut call = Caller::join(addr, &ticket_for(&revoked, &voice));
        observer_call.ws.expect("rtc.participant.joined");
        let unused = ticket_for(&revoked, &voice);

        let started = Instant::now();
        let reply = revoked.delete("/v1/auth/session");
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(revoked_ws.closed_within(AT_ONCE), "the revoked token's socket stays open");
        assert!(revoked_ws2.closed_within(AT_ONCE), "the revoked token's second socket stays open");
        assert!(started.elapsed() < AT_ONCE + Duration::from_millis(200), "took {:?}", started.elapsed());
        assert!(call.ws.closed_within(AT_ONCE), "the revoked device's voice stays");
        let gone = observer_call.ws.expect("rtc.participant.left");
        assert_eq!(gone.str_at("payload.participant.user_uid"), uid);
        refused(&server, &unused, "rtc_join_denied");

        // The other session is untouched and may take a new ticket.
        assert!(!kept_ws.closed_within(QUIET), "another session's socket was closed");
        let sent = kept.send(&general, "still signed in");
        kept_ws.expect_where("chat.message.created", |f| created_id(f) == sent.str_at("id"));
        let _again = Caller::join(addr, &ticket_for(&kept, &voice));
    };
}

/// `rtc.join` with `ticket` is refused with `code`, and the socket closed.
fn refused(server: &TestServer, ticket: &str, code: &str) {
    let mut ws = Ws::connect_to(server.addr, "/v1/rtc/signaling");
    ws.send_text(&encode(
        &json!({"type": "rtc.join", "request_id": "r1", "payload": {"ticket": ticket}}),
    ));
    let error = ws.expect("rtc.error");
    assert_eq!(error.str_at("payload.code"), code, "{}", encode(&error));
    assert!(!error.bool_at("payload.retryable"));
    assert!(
        ws.closed_within(Duration::from_secs(2)),
        "a refused join closes the socket"
    );
}

/// Test-only routes standing in for the moderation API (a later issue): the configured owner
/// kicks or bans `user_uid` (the body) in `home`.
fn moderation_routes(router: &mut openchatd::http::Router<openchatd::api::Handler>) {
    fn owner() -> openchatd::domain::community::Actor {
        openchatd::domain::community::Actor {
            user_uid: OWNER.into(),
            device_id: "desk".into(),
        }
    }
    fn kick<'a>(ctx: &'a openchatd::api::RequestCtx<'a>) -> openchatd::api::HandlerFuture<'a> {
        Box::pin(async move {
            let target = String::from_utf8(ctx.request.body().to_vec()).unwrap();
            let owner = owner();
            ctx.app
                .authority
                .command(openchatd::domain::community::commands::Kick {
                    actor: owner,
                    server_id: "home".into(),
                    target_uid: target.into(),
                })
                .await?;
            Ok(openchatd::http::Response::no_content())
        })
    }
    fn ban<'a>(ctx: &'a openchatd::api::RequestCtx<'a>) -> openchatd::api::HandlerFuture<'a> {
        Box::pin(async move {
            let target = String::from_utf8(ctx.request.body().to_vec()).unwrap();
            let owner = owner();
            ctx.app
                .authority
                .command(openchatd::domain::community::commands::Ban {
                    actor: owner,
                    server_id: "home".into(),
                    target_uid: target.into(),
                    until: None,
                })
                .await?;
            Ok(openchatd::http::Response::no_content())
        })
    }
    use openchatd::api::Handler::Async;
    use openchatd::http::Method::Post;
    router.route(Post, "/test/kick", Async(kick));
    router.route(Post, "/test/ban", Async(ban));
}
