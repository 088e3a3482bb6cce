//! A member's own settings in a server (wire contract Part D), the way the newest client drives
//! them: privacy (hidden presence and typing across both shards, the member list, mention
//! permission in posts, events and suggestions) and the per-server profile (If-Match, what the
//! members of that server see and what others do not, delete, restart), and the hostile
//! requests against both. Every test runs against a real server with two shards, on embedded
//! SQLite and on Postgres, over real sockets.

mod support;

use simd_json::json;
use simd_json::prelude::*;
use support::api::{Client, default_server_id, owned_server};
use support::http::Reply;
use support::json::{Json, JsonPath, encode, key_set};
use support::server::{restart_community, start_community};
use support::ws::{QUIET, Ws, headers_query, one_per_shard, open_placed};

use support::on_both_engines;

/// `PUT path` with a JSON body and `If-Match: version`.
fn put_if_match(client: &Client, path: &str, body: &Json, version: i64) -> Reply {
    let version = version.to_string();
    client.request(
        "PUT",
        path,
        &[("If-Match", version.as_str())],
        Some(("application/json", encode(body).as_bytes())),
    )
}

fn privacy_path(server_id: &str) -> String {
    format!("/v1/servers/{server_id}/privacy/me")
}

fn profile_path(server_id: &str) -> String {
    format!("/v1/servers/{server_id}/profile/me")
}

/// `field` of `uid`'s entry in the member list as `reader` sees it.
fn member_field(reader: &Client, server_id: &str, uid: &str, field: &str) -> String {
    let members = reader.expect(200, reader.get(&format!("/v1/servers/{server_id}/members")));
    members
        .arr_at("members")
        .iter()
        .find(|m| m.str_at("id") == uid)
        .unwrap_or_else(|| panic!("{uid} is not listed: {}", encode(&members)))
        .str_at(field)
        .to_owned()
}

/// The status `reader` sees for `uid` in the member list.
fn member_status(reader: &Client, server_id: &str, uid: &str) -> String {
    member_field(reader, server_id, uid, "status")
}

/// The display name `reader` sees for `uid` in the member list.
fn member_name(reader: &Client, server_id: &str, uid: &str) -> String {
    member_field(reader, server_id, uid, "name")
}

fn device_ids(snapshot: &Json) -> Vec<String> {
    snapshot
        .arr_at("payload.members")
        .iter()
        .map(|m| m.str_at("device_id").to_owned())
        .collect()
}

fn mention_tokens(message: &Json) -> Vec<String> {
    message
        .arr_at("mentions")
        .iter()
        .map(|m| m.str_at("token").to_owned())
        .collect()
}

on_both_engines! {
    hidden_presence_leaves_no_trace_on_either_shard_and_comes_back_at_once => |engine| {
        let server = start_community(engine, &[]);
        let addr = server.addr;
        let server_id = default_server_id(addr);
        let alice = Client::user(addr);
        let bob = Client::user(addr);
        let general = alice.first_text_channel(&server_id);
        let mut watcher = open_placed(addr, &server_id, bob.uid(), &general);
        // Alice on both shards: the change must reach the presence of every shard.
        let mut mine = one_per_shard(addr, &server_id, alice.uid(), &general);
        let devices: Vec<String> = mine.iter().map(|p| p.device.clone()).collect();
        for device in &devices {
            watcher.ws.expect_where("chat.presence.joined", |f| f.str_at("payload.member.device_id") == device);
        }
        assert_eq!(member_status(&bob, &server_id, alice.uid()), "online");
        // Frames about the sockets `one_per_shard` opened and closed again are not the point.
        watcher.ws.drain(QUIET);
        watcher.ws.clear();

        let fresh = alice.expect(200, alice.get(&privacy_path(&server_id)));
        assert_eq!(
            fresh.keys_at(""),
            key_set(&["server_id", "user_uid", "presence_visibility", "mention_permission", "version", "updated_at"])
        );
        assert_eq!(
            (fresh.str_at("presence_visibility"), fresh.str_at("mention_permission"), fresh.i64_at("version")),
            ("visible", "all_members", 0)
        );
        // Typing is seen before she hides, so the hide must stop it.
        mine[0].ws.send("chat.typing.update", json!({"channel_id": general.as_str(), "is_typing": true}));
        watcher.ws.expect_where("chat.typing.updated", |f| f.bool_at("payload.is_typing"));

        let hidden = alice.expect(200, put_if_match(&alice, &privacy_path(&server_id), &json!({"presence_visibility": "hidden"}), 0));
        assert_eq!((hidden.str_at("presence_visibility"), hidden.i64_at("version")), ("hidden", 1));
        watcher.ws.expect_where("chat.typing.updated", |f| !f.bool_at("payload.is_typing"));
        for device in &devices {
            watcher.ws.expect_where("chat.presence.left", |f| f.str_at("payload.member.device_id") == device);
        }
        // Her own devices still see each other.
        for p in mine.iter_mut() {
            p.ws.assert_none_where("chat.presence.left", QUIET, |f| devices.iter().any(|d| d == f.str_at("payload.member.device_id")));
        }
        assert_eq!(member_status(&bob, &server_id, alice.uid()), "offline");
        assert_eq!(member_status(&alice, &server_id, alice.uid()), "online", "she sees herself as she is");

        // While hidden: no typing, no join of a new socket, absent from others' snapshots,
        // present in her own.
        for p in mine.iter_mut() {
            p.ws.send("chat.typing.update", json!({"channel_id": general.as_str(), "is_typing": true}));
        }
        watcher.ws.assert_none("chat.typing.updated", QUIET);
        let mut third = open_placed(addr, &server_id, alice.uid(), &general);
        watcher.ws.assert_none("chat.presence.joined", QUIET);
        let mut late = Ws::connect(addr, &headers_query(&server_id, bob.uid(), "late_device"));
        late.subscribe(&general);
        let seen = device_ids(&late.expect("chat.presence.snapshot"));
        assert!(devices.iter().chain([&third.device]).all(|d| !seen.contains(d)), "{seen:?}");
        third.ws.subscribe(&general);
        let own = device_ids(&third.ws.expect("chat.presence.snapshot"));
        assert!(devices.iter().all(|d| own.contains(d)), "{own:?}");

        // Settings survive a restart.
        drop((watcher, mine, third, late));
        let server = restart_community(server);
        let addr = server.addr;
        let alice = Client::with_uid(addr, alice.uid());
        let bob = Client::with_uid(addr, bob.uid());
        let kept = alice.expect(200, alice.get(&privacy_path(&server_id)));
        assert_eq!((kept.str_at("presence_visibility"), kept.i64_at("version")), ("hidden", 1));
        let mut watcher = open_placed(addr, &server_id, bob.uid(), &general);
        let mine = one_per_shard(addr, &server_id, alice.uid(), &general);
        watcher.ws.assert_none("chat.presence.joined", QUIET);

        // A stale version is refused with the current settings; the right one shows her again.
        let stale = put_if_match(&alice, &privacy_path(&server_id), &json!({"presence_visibility": "visible"}), 0);
        assert_eq!(stale.status, 409, "{}", stale.text());
        let stale = stale.json();
        assert_eq!((stale.str_at("code"), stale.bool_at("retryable")), ("privacy_conflict", false));
        assert_eq!(stale.i64_at("details.privacy.version"), 1);
        let shown = alice.expect(200, alice.put(&privacy_path(&server_id), &json!({"presence_visibility": "visible", "version": 1})));
        assert_eq!(shown.i64_at("version"), 2);
        for p in &mine {
            watcher.ws.expect_where("chat.presence.joined", |f| f.str_at("payload.member.device_id") == p.device);
        }
        assert_eq!(member_status(&bob, &server_id, alice.uid()), "online");
    };

    a_mention_the_target_does_not_permit_is_no_mention_and_notifies_nobody => |engine| {
        let server = start_community(engine, &[]);
        let addr = server.addr;
        let owner = Client::user(addr);
        let server_id = owned_server(&owner, "Quiet place");
        let general = owner.first_text_channel(&server_id);
        let (bob, carol, dave) = (Client::user(addr), Client::user(addr), Client::user(addr));
        for c in [&bob, &carol, &dave] {
            c.expect(200, c.get(&format!("/v1/servers/{server_id}/channels")));
        }
        carol.expect(200, carol.put(&privacy_path(&server_id), &json!({"mention_permission": "staff_only"})));
        dave.expect(200, dave.put(&privacy_path(&server_id), &json!({"mention_permission": "nobody"})));
        let mut listener = Ws::connect(addr, &headers_query(&server_id, carol.uid(), "carol_desk"));
        listener.subscribe(&general);
        listener.expect("chat.presence.snapshot");

        let body = format!("@{} @{} @{} @here", carol.uid(), dave.uid(), bob.uid());
        let by_bob = bob.send(&general, &body);
        assert_eq!(mention_tokens(&by_bob), [format!("@{}", bob.uid()), "@here".to_owned()]);
        let event = listener.expect_where("chat.message.created", |f| f.str_at("payload.message.id") == by_bob.str_at("id"));
        assert_eq!(mention_tokens(event.at("payload.message")), mention_tokens(&by_bob), "the event is what was stored");
        let by_owner = owner.send(&general, &body);
        assert_eq!(
            mention_tokens(&by_owner),
            [format!("@{}", carol.uid()), format!("@{}", bob.uid()), "@here".to_owned()],
            "staff may mention carol; nobody may mention dave"
        );
        let history = bob.messages(&general, "limit=10");
        let stored: Vec<Vec<String>> = history.arr_at("messages").iter().map(mention_tokens).collect();
        assert!(stored.contains(&mention_tokens(&by_bob)) && stored.contains(&mention_tokens(&by_owner)), "{stored:?}");
        // Suggestions offer only who may be mentioned.
        let suggested = bob.expect(200, bob.get(&format!("/v1/channels/{general}/mentions:resolve?query=&limit=25")));
        let users: Vec<&str> = suggested.arr_at("results").iter().filter(|r| r.str_at("type") == "user").map(|r| r.str_at("target_id")).collect();
        assert!(users.contains(&bob.uid()) && users.contains(&owner.uid()), "{users:?}");
        assert!(!users.contains(&carol.uid()) && !users.contains(&dave.uid()), "{users:?}");
        // Dave may mention himself.
        let by_dave = dave.send(&general, &format!("@{} here", dave.uid()));
        assert_eq!(mention_tokens(&by_dave), [format!("@{}", dave.uid())]);
    };

    a_server_profile_is_what_members_of_that_server_see_and_nowhere_else => |engine| {
        let server = start_community(engine, &[]);
        let addr = server.addr;
        let home = default_server_id(addr);
        let alice = Client::user(addr);
        let bob = Client::user(addr);
        let elsewhere = owned_server(&bob, "Elsewhere");
        let general = alice.first_text_channel(&home);
        alice.expect(200, alice.get(&format!("/v1/servers/{elsewhere}/channels")));
        alice.expect(200, alice.put("/v1/profile/me", &json!({"display_name": "Alice"})));
        let mut in_home = Ws::connect(addr, &headers_query(&home, bob.uid(), "bob_home"));
        let mut in_elsewhere = Ws::connect(addr, &headers_query(&elsewhere, bob.uid(), "bob_else"));
        in_home.subscribe(&general);
        in_home.expect("chat.presence.snapshot");

        let before = alice.expect(200, alice.get(&profile_path(&home)));
        assert_eq!(
            before.keys_at(""),
            key_set(&["server_id", "user_uid", "display_name", "avatar_mode", "avatar_preset_id", "avatar_asset_id", "avatar_url", "profile_version", "updated_at", "overridden"])
        );
        assert_eq!((before.bool_at("overridden"), before.str_at("display_name")), (false, "Alice"));
        let version = before.i64_at("profile_version");
        let stale = put_if_match(&alice, &profile_path(&home), &json!({"display_name": "Al"}), version - 1);
        assert_eq!(stale.status, 409, "{}", stale.text());
        assert_eq!(stale.json().str_at("code"), "profile_conflict");
        let set = alice.expect(200, put_if_match(&alice, &profile_path(&home), &json!({"display_name": "Al of Home", "avatar_preset_id": "fox"}), version));
        assert_eq!((set.bool_at("overridden"), set.str_at("display_name"), set.str_at("avatar_preset_id")), (true, "Al of Home", "fox"));
        assert!(set.i64_at("profile_version") > version);

        // Members of home see it live, flat as every profile_updated; elsewhere hears nothing.
        let live = in_home.expect("profile_updated");
        assert_eq!((live.str_at("payload.user_uid"), live.str_at("payload.display_name")), (alice.uid(), "Al of Home"));
        assert_eq!(live.i64_at("payload.profile_version"), set.i64_at("profile_version"));
        in_elsewhere.assert_none("profile_updated", QUIET);
        let batch = |server: Option<&str>| {
            let query = server.map(|s| format!("&server_id={s}")).unwrap_or_default();
            let doc = bob.expect(200, bob.get(&format!("/v1/profiles:batch?user_uid={}{query}", alice.uid())));
            doc.str_at("profiles.0.display_name").to_owned()
        };
        assert_eq!(batch(Some(&home)), "Al of Home");
        assert_eq!(batch(Some(&elsewhere)), "Alice");
        assert_eq!(batch(None), "Alice", "several servers here: the instance-wide profile");
        assert_eq!(member_name(&bob, &home, alice.uid()), "Al of Home");
        assert_eq!(member_name(&bob, &elsewhere, alice.uid()), "Alice");
        let mention = bob.send(&general, &format!("hi @{}", alice.uid()));
        assert_eq!(mention.str_at("mentions.0.display_text"), "@Al of Home");
        assert_eq!(alice.expect(200, alice.get("/v1/profile/me")).str_at("display_name"), "Alice");

        // A global change does not show over the override, but home's version still rises.
        alice.expect(200, alice.put("/v1/profile/me", &json!({"display_name": "Alicia"})));
        let after_global = in_home.expect_where("profile_updated", |f| f.i64_at("payload.profile_version") > set.i64_at("profile_version"));
        assert_eq!(after_global.str_at("payload.display_name"), "Al of Home");
        assert_eq!(in_elsewhere.expect("profile_updated").str_at("payload.display_name"), "Alicia");

        // Someone else's avatar is refused; the override survives a restart.
        let foreign = alice.put(&profile_path(&home), &json!({"avatar_mode": "uploaded", "avatar_asset_id": "av_not_hers"}));
        assert_eq!((foreign.status, foreign.json().str_at("code").to_owned()), (403, "avatar_asset_forbidden".to_owned()));
        drop((in_home, in_elsewhere));
        let server = restart_community(server);
        let addr = server.addr;
        let alice = Client::with_uid(addr, alice.uid());
        let kept = alice.expect(200, alice.get(&profile_path(&home)));
        assert_eq!((kept.bool_at("overridden"), kept.str_at("display_name")), (true, "Al of Home"));

        // Deleted: home shows the global profile again, with a version above every earlier one.
        let mut in_home = Ws::connect(addr, &headers_query(&home, bob.uid(), "bob_home2"));
        let gone = alice.request("DELETE", &profile_path(&home), &[("If-Match", &kept.i64_at("profile_version").to_string())], None);
        assert_eq!(gone.status, 200, "{}", gone.text());
        let gone = gone.json();
        assert_eq!((gone.bool_at("overridden"), gone.str_at("display_name")), (false, "Alicia"));
        assert!(gone.i64_at("profile_version") > kept.i64_at("profile_version"));
        let live = in_home.expect("profile_updated");
        assert_eq!(live.str_at("payload.display_name"), "Alicia");
        let bob = Client::with_uid(addr, bob.uid());
        assert_eq!(member_name(&bob, &home, alice.uid()), "Alicia");
        let again = alice.delete(&profile_path(&home));
        assert_eq!(again.status, 200, "deleting nothing changes nothing: {}", again.text());
        in_home.assert_none("profile_updated", QUIET);
    };

    hostile_settings_requests_get_clear_errors_and_change_nothing => |engine| {
        let server = start_community(engine, &[]);
        let addr = server.addr;
        let home = default_server_id(addr);
        let alice = Client::user(addr);
        let outsider = Client::user(addr);
        let invite_only = owned_server(&alice, "Closed");
        alice.expect(200, alice.put(&format!("/v1/servers/{invite_only}/settings"), &json!({"join_policy": "invite"})));
        let code = |reply: Reply| {
            let status = reply.status;
            let doc = reply.json();
            assert!(doc.try_at("retryable").is_some_and(|r| r.as_bool() == Some(false)), "{}", encode(&doc));
            (status, doc.str_at("code").to_owned())
        };
        let bad = |c: &str| (400u16, c.to_owned());
        for (body, expected) in [
            (r#"{"presence_visibility":"invisible"}"#, bad("invalid_presence_visibility")),
            (r#"{"mention_permission":"everyone"}"#, bad("invalid_mention_permission")),
            (r#"{"presence_visibility":7}"#, bad("invalid_json")),
            (r#"{"presence_visibility":"hid\u0000den"}"#, bad("invalid_presence_visibility")),
            (r#"{"presence_visibility":"#, bad("invalid_json")),
        ] {
            let reply = alice.request("PUT", &privacy_path(&home), &[], Some(("application/json", body.as_bytes())));
            assert_eq!(code(reply), expected, "{body}");
        }
        let not_utf8 = alice.request("PUT", &privacy_path(&home), &[], Some(("application/json", b"{\"presence_visibility\":\"\xff\"}")));
        assert_eq!(not_utf8.status, 400, "{}", not_utf8.text());
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(alice.request("PUT", &privacy_path(&home), &[], Some(("application/json", deep.as_bytes()))).status, 400);
        let huge = format!(r#"{{"display_name":"{}"}}"#, "x".repeat(1_100_000));
        let reply = alice.request("PUT", &profile_path(&home), &[], Some(("application/json", huge.as_bytes())));
        assert_eq!(reply.status, 413, "{}", reply.text());
        for (name, expected) in [("nul\u{0}name", "invalid_text"), ("   ", "invalid_display_name"), (&"ü".repeat(33), "invalid_display_name")] {
            let reply = alice.put(&profile_path(&home), &json!({"display_name": name}));
            assert_eq!(code(reply), bad(expected), "{name:?}");
        }
        let reply = alice.request("PUT", &profile_path(&home), &[("If-Match", "abc")], Some(("application/json", b"{}")));
        assert_eq!(code(reply), bad("invalid_if_match"));
        let reply = alice.request("DELETE", &profile_path(&home), &[("If-Match", "-1")], None);
        assert_eq!(reply.status, 409, "{}", reply.text());
        assert_eq!(alice.get(&privacy_path("no_such_server")).status, 404);
        assert_eq!(alice.put(&profile_path("no_such_server"), &json!({"display_name": "x"})).status, 404);
        assert_eq!(code(alice.get(&privacy_path("bad%00id"))), (404, "not_found".to_owned()));
        for path in [privacy_path(&home), profile_path(&home)] {
            assert_eq!(Client::anonymous(addr).get(&path).status, 401, "{path}");
            assert_eq!(Client::anonymous(addr).put(&path, &json!({})).status, 401, "{path}");
        }
        // Settings are no way into an invite-only server.
        for path in [privacy_path(&invite_only), profile_path(&invite_only)] {
            let reply = outsider.put(&path, &json!({"presence_visibility": "hidden", "display_name": "Sneaky"}));
            assert_eq!(code(reply), (403, "invite_required".to_owned()), "{path}");
        }
        let members = alice.expect(200, alice.get(&format!("/v1/servers/{invite_only}/members")));
        assert!(members.arr_at("members").iter().all(|m| m.str_at("id") != outsider.uid()), "{}", encode(&members));
        // Nothing above changed alice's settings.
        let privacy = alice.expect(200, alice.get(&privacy_path(&home)));
        assert_eq!((privacy.str_at("presence_visibility"), privacy.i64_at("version")), ("visible", 0));
        let profile = alice.expect(200, alice.get(&profile_path(&home)));
        assert!(!profile.bool_at("overridden"), "{}", encode(&profile));
    };
}
