//! The community API as the desktop client drives it (wire contract Part A, B.2): hydrating a
//! server anonymously, creating and claiming servers, editing the channel layout, messages with
//! replies, mentions and images, history paging, read acks, profiles and avatars, leaving and
//! rejoining, and bad input. Every test runs against a real server with two shards, on embedded
//! SQLite and on Postgres, over real sockets.

mod support;

use std::time::Duration;

use simd_json::json;
use simd_json::prelude::*;
use support::api::{Client, default_channel, default_server_id, ids_of, is_rfc3339_utc, new_uid};
use support::json::{Json, JsonPath, encode, key_set};
use support::multipart::Multipart;
use support::server::start_community;
use support::ws::{QUIET, Ws, created_id, headers_query, socket};

use support::on_both_engines;

/// The fields of a message object (wire contract A.5), plus `server_id`, which this server adds.
const MESSAGE_KEYS: &[&str] = &[
    "id",
    "channel_id",
    "server_id",
    "author_uid",
    "body",
    "created_at",
    "reply_to",
    "mentions",
    "attachments",
    "action_permissions",
];

/// Bodies of a message page, oldest first.
fn bodies(page: &Json) -> Vec<String> {
    page.arr_at("messages")
        .iter()
        .map(|m| m.str_at("body").to_owned())
        .collect()
}

/// Polls `GET /v1/servers/{id}/members` until `uid` has `status` (socket bookkeeping is
/// asynchronous).
fn wait_for_status(reader: &Client, server_id: &str, uid: &str, status: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let members = reader.get(&format!("/v1/servers/{server_id}/members"));
        assert_eq!(members.status, 200, "{}", members.text());
        let members = members.json();
        let member = members
            .arr_at("members")
            .iter()
            .find(|m| m.str_at("id") == uid);
        if let Some(m) = member {
            assert!(!m.str_at("name").is_empty());
            if m.str_at("status") == status {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{uid} is not {status}: {}",
            encode(&members)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_error_shape(reply: &support::http::Reply, status: u16, code: &str) {
    reply.assert_error(status, code);
}

on_both_engines! {
    desktop_client_hydrates_a_public_default_server => |engine| {
        let server = start_community(engine, &[("OPENCHAT_DEFAULT_HISTORY_VISIBILITY", "public")]);
        let anon = Client::anonymous(server.addr);

        // Capabilities name a server that exists in the directory.
        let caps = anon.get("/v1/client/capabilities").json();
        let server_id = caps.str_at("server_id").to_owned();
        assert_eq!(caps.str_at("identity_handshake_modes.0"), "token_proof");
        let directory = anon.get("/v1/servers");
        assert_eq!(directory.status, 200, "{}", directory.text());
        let directory = directory.json();
        let item = directory
            .arr_at("servers")
            .iter()
            .find(|s| s.str_at("server_id") == server_id)
            .unwrap_or_else(|| panic!("default server not listed: {}", encode(&directory)));
        assert_eq!(
            item.keys_at(""),
            key_set(&["server_id", "display_name", "description", "banner_preset", "icon_text", "trust_state", "identity_handshake_strategy", "user_identifier_policy"])
        );
        assert!(["verified", "unverified"].contains(&item.str_at("trust_state")));
        assert_eq!(item.str_at("identity_handshake_strategy"), "token_proof");
        assert!(["server_scoped", "global", "either"].contains(&item.str_at("user_identifier_policy")));
        assert_eq!(item.str_at("icon_text").chars().count(), 2);

        // Anonymous reads of the default server: the seeded layout, members, history.
        let groups = anon.groups(&server_id);
        let groups = groups.arr_at("groups");
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert_eq!(groups[0].str_at("kind"), "text");
        assert_eq!(groups[0].str_at("channels.0.name"), "general");
        assert_eq!(groups[0].str_at("channels.0.type"), "text");
        assert_eq!(groups[1].str_at("kind"), "voice");
        assert_eq!(groups[1].str_at("channels.0.type"), "voice");
        let general = groups[0].str_at("channels.0.id").to_owned();

        let members = anon.get(&format!("/v1/servers/{server_id}/members"));
        assert_eq!(members.status, 200, "{}", members.text());
        assert_eq!(members.json().str_at("server_id"), server_id);
        let history = anon.messages(&general, "limit=150");
        assert!(history.arr_at("messages").is_empty());
        assert!(history.is_null_at("next_cursor"));

        // Preflights of the client's identified calls.
        for path in ["/v1/profile/me", &format!("/v1/channels/{general}/messages"), &format!("/v1/channels/{general}/read-ack")] {
            let preflight = anon.request("OPTIONS", path, &[("Access-Control-Request-Method", "PUT"), ("Access-Control-Request-Headers", "x-openchat-user-uid, content-type")], None);
            assert_eq!(preflight.status, 204, "{path}");
        }

        // The user the client makes up on first start.
        let me = Client::user(server.addr);
        let profile = me.get("/v1/profile/me");
        assert_eq!(profile.status, 200, "{}", profile.text());
        let profile = profile.json();
        assert_eq!(profile.str_at("user_uid"), me.uid());
        assert_eq!(profile.i64_at("profile_version"), 0);
        assert_eq!(profile.str_at("avatar_mode"), "generated");
        assert!(!profile.str_at("display_name").is_empty());
        for key in ["avatar_preset_id", "avatar_asset_id", "avatar_url", "updated_at"] {
            assert!(profile.try_at(key).is_some(), "profile misses {key}");
        }
        let listed = me.get("/v1/servers").json();
        assert!(listed.arr_at("servers").iter().any(|s| s.str_at("server_id") == server_id));

        let ack = me.get(&format!("/v1/channels/{general}/read-ack"));
        assert_eq!(ack.status, 200, "{}", ack.text());
        let ack = ack.json();
        assert_eq!(ack.str_at("channel_id"), general);
        assert_eq!(ack.str_at("read_ack.user_uid"), me.uid());
        assert!(ack.is_null_at("read_ack.last_read_message_id"));

        // Realtime: the snapshot of a subscription includes the subscriber itself.
        let mut ws = socket(&server, &me, &server_id);
        ws.subscribe(&general);
        let snapshot = ws.expect("chat.presence.snapshot");
        assert_eq!(snapshot.str_at("payload.channel_id"), general);
        assert_eq!(snapshot.str_at("server_id"), server_id);
        let mine = snapshot
            .arr_at("payload.members")
            .iter()
            .find(|m| m.str_at("device_id") == me.device())
            .unwrap_or_else(|| panic!("the subscriber is missing: {}", encode(&snapshot)));
        assert_eq!(mine.str_at("user_uid"), me.uid());
        assert!(!mine.str_at("client_id").is_empty());

        // Connecting made the uid a member, shown online.
        wait_for_status(&anon, &server_id, me.uid(), "online");

        // A user is offline once its last socket is closed.
        drop(socket(&server, &me, &server_id));
        let probe = Client::user(server.addr);
        let probe_ws = socket(&server, &probe, &server_id);
        wait_for_status(&anon, &server_id, probe.uid(), "online");
        drop(probe_ws);
        wait_for_status(&anon, &server_id, probe.uid(), "offline");
        wait_for_status(&anon, &server_id, me.uid(), "online");

        // A post shows up for the anonymous reader (the client reads before it acts with its
        // identity), with what a plain member may do.
        let sent = me.send(&general, "hello world");
        let created = ws.expect("chat.message.created");
        assert_eq!(created_id(&created), sent.str_at("id"));
        let page = anon.messages(&general, "limit=150");
        assert_eq!(ids_of(&page, "messages"), vec![sent.str_at("id").to_owned()]);
        for (permission, allowed) in [("can_react", true), ("can_reply", true), ("can_mark_unread", true), ("can_pin", false)] {
            assert_eq!(page.bool_at(&format!("messages.0.action_permissions.{permission}")), allowed, "{permission}: {}", encode(&page));
        }
        // The reader is unknown: `can_delete` is left out, never `false` (the client would take
        // it as final and its author could never delete after a reload). The same for the
        // shared realtime frame.
        for (what, permissions) in [("page", page.at("messages.0.action_permissions")), ("frame", created.at("payload.message.action_permissions"))] {
            assert!(!permissions.keys_at("").contains(&"can_delete".to_owned()), "{what}: {}", encode(permissions));
        }
    };

    anonymous_readers_see_only_public_channels => |engine| {
        let server = start_community(engine, &[("OPENCHAT_DEFAULT_HISTORY_VISIBILITY", "public"), ("OPENCHAT_DEFAULT_SERVER_OWNER_UID", "uid_00000wner")]);
        let anon = Client::anonymous(server.addr);
        let owner = Client::with_uid(server.addr, "uid_00000wner");
        let member = Client::user(server.addr);
        let server_id = default_server_id(server.addr);
        let general = anon.first_text_channel(&server_id);

        // The configured owner runs the default server.
        let staff = owner.post(&format!("/v1/servers/{server_id}/channels"), &json!({"name": "staff", "type": "text", "history_visibility": "members"}));
        assert_eq!(staff.status, 201, "{}", staff.text());
        let staff = staff.json();
        assert_eq!(staff.str_at("channel.history_visibility"), "members");
        let staff = staff.str_at("channel.id").to_owned();
        member.put(&format!("/v1/servers/{server_id}/settings"), &json!({"display_name": "Mine now"})).assert_error(403, "forbidden");
        assert_eq!(owner.put(&format!("/v1/servers/{server_id}/settings"), &json!({"display_name": "Owned"})).status, 200);
        let members = anon.get(&format!("/v1/servers/{server_id}/members")).json();
        let listed = members.arr_at("members").iter().find(|m| m.str_at("id") == owner.uid()).unwrap_or_else(|| panic!("{}", encode(&members)));
        assert_eq!(listed.str_at("role"), "owner");

        let secret = owner.send(&staff, "members only");
        owner.send(&general, "for everyone");

        // Anonymous: the public channel only.
        let visible: Vec<String> = anon.groups(&server_id).arr_at("groups").iter().flat_map(|g| ids_of(g, "channels")).collect();
        assert!(visible.contains(&general) && !visible.contains(&staff), "{visible:?}");
        anon.get(&format!("/v1/channels/{staff}/messages?limit=150")).assert_error(401, "unauthorized");
        assert_eq!(bodies(&anon.messages(&general, "limit=150")), vec!["for everyone".to_owned()]);

        // An empty category is listed to anonymous readers too (the client reloads the layout
        // anonymously; a missing one could not be deleted from the UI). A category whose
        // channels are all hidden from them is not.
        let later = owner.post(&format!("/v1/servers/{server_id}/categories"), &json!({"name": "Later", "kind": "text"}));
        assert_eq!(later.status, 201, "{}", later.text());
        let later = later.json().str_at("group.id").to_owned();
        let backroom = owner.post(&format!("/v1/servers/{server_id}/categories"), &json!({"name": "Backroom", "kind": "text"})).json().str_at("group.id").to_owned();
        let hidden = owner.post(&format!("/v1/servers/{server_id}/channels"), &json!({"name": "mods", "type": "text", "group_id": backroom, "history_visibility": "members"}));
        assert_eq!(hidden.status, 201, "{}", hidden.text());
        let groups = anon.groups(&server_id);
        let group_ids = ids_of(&groups, "groups");
        assert!(group_ids.contains(&later), "the empty category is listed: {}", encode(&groups));
        let listed = groups.arr_at("groups").iter().find(|g| g.str_at("id") == later).unwrap();
        assert!(listed.arr_at("channels").is_empty());
        assert!(!group_ids.contains(&backroom), "a category of hidden channels is not: {}", encode(&groups));
        assert!(ids_of(&member.groups(&server_id), "groups").contains(&backroom), "members see it");

        // A member sees and reads both.
        let visible: Vec<String> = member.groups(&server_id).arr_at("groups").iter().flat_map(|g| ids_of(g, "channels")).collect();
        assert!(visible.contains(&general) && visible.contains(&staff), "{visible:?}");
        assert_eq!(member.message_ids(&staff, "limit=150"), vec![secret.str_at("id").to_owned()]);
    };

    servers_are_created_claimed_and_laid_out => |engine| {
        let server = start_community(engine, &[]);
        let creator = Client::user(server.addr);
        let owner = Client::user(server.addr);
        let stranger = Client::user(server.addr);

        let created = creator.create_server("Test Guild");
        assert_eq!(created.str_at("created_by_uid"), creator.uid());
        assert!(is_rfc3339_utc(created.at("created_at")));
        assert!(is_rfc3339_utc(created.at("ownership_claim.expires_at")));
        assert_eq!(created.str_at("server.display_name"), "Test Guild");
        assert_eq!(created.str_at("server.banner_preset"), "forest");
        let server_id = created.str_at("server.server_id").to_owned();
        let token = created.str_at("ownership_claim.token").to_owned();
        let claim_path = format!("/v1/servers/{server_id}/ownership:claim");

        // A wrong token changes nothing; the right one makes the claiming uid the owner, once.
        stranger.post(&claim_path, &json!({"claim_token": "occ_not_the_token"})).assert_error(403, "invalid_claim_token");
        let claimed = owner.post(&claim_path, &json!({"claim_token": token.as_str()}));
        assert_eq!(claimed.status, 200, "{}", claimed.text());
        let claimed = claimed.json();
        assert_eq!(claimed.str_at("server_id"), server_id);
        assert_eq!(claimed.str_at("owner_user_uid"), owner.uid());
        assert!(is_rfc3339_utc(claimed.at("claimed_at")));
        stranger.post(&claim_path, &json!({"claim_token": token.as_str()})).assert_error(403, "invalid_claim_token");
        owner.post(&claim_path, &json!({"claim_token": token.as_str()})).assert_error(403, "invalid_claim_token");

        // The seeded layout, and a member watching the server's events.
        let seeded = owner.groups(&server_id);
        let text_group = seeded.str_at("groups.0.id").to_owned();
        let general = seeded.str_at("groups.0.channels.0.id").to_owned();
        let voice_group = seeded.str_at("groups.1.id").to_owned();
        let voice = seeded.str_at("groups.1.channels.0.id").to_owned();
        let mut watcher = socket(&server, &stranger, &server_id);

        // Categories and channels.
        let category = owner.post(&format!("/v1/servers/{server_id}/categories"), &json!({"name": "Projects", "kind": "text"}));
        assert_eq!(category.status, 201, "{}", category.text());
        let category = category.json();
        assert_eq!(category.str_at("server_id"), server_id);
        assert_eq!(category.str_at("group.label"), "Projects");
        assert_eq!(category.str_at("group.kind"), "text");
        assert!(category.arr_at("group.channels").is_empty());
        assert_eq!(category.str_at("created_by_uid"), owner.uid());
        let projects = category.str_at("group.id").to_owned();
        let event = watcher.expect("chat.category.created");
        assert_eq!(event.str_at("payload.group.id"), projects);

        let channel = owner.post(&format!("/v1/servers/{server_id}/channels"), &json!({"name": "plans", "type": "text", "group_id": projects.as_str()}));
        assert_eq!(channel.status, 201, "{}", channel.text());
        let channel = channel.json();
        assert_eq!(channel.str_at("group_id"), projects);
        assert_eq!(channel.str_at("channel.name"), "plans");
        assert_eq!(channel.str_at("channel.type"), "text");
        assert_eq!(channel.str_at("created_by_uid"), owner.uid());
        let plans = channel.str_at("channel.id").to_owned();
        let event = watcher.expect("chat.channel.created");
        assert_eq!(event.str_at("payload.channel.id"), plans);
        assert_eq!(event.str_at("payload.group_id"), projects);

        let renamed = owner.put(&format!("/v1/servers/{server_id}/categories/{projects}"), &json!({"name": "Roadmap"}));
        assert_eq!(renamed.status, 200, "{}", renamed.text());
        assert_eq!(renamed.json().str_at("group.label"), "Roadmap");
        assert_eq!(renamed.json().str_at("updated_by_uid"), owner.uid());
        assert_eq!(watcher.expect("chat.category.updated").str_at("payload.group.label"), "Roadmap");

        // Members who are neither owner nor admin may not change anything.
        for reply in [
            stranger.post(&format!("/v1/servers/{server_id}/categories"), &json!({"name": "Mine", "kind": "text"})),
            stranger.post(&format!("/v1/servers/{server_id}/channels"), &json!({"name": "mine", "type": "text"})),
            creator.put(&format!("/v1/servers/{server_id}/categories/{projects}"), &json!({"name": "Hijacked"})),
            creator.delete(&format!("/v1/servers/{server_id}/categories/{projects}")),
            stranger.put(&format!("/v1/servers/{server_id}/channel-layout"), &json!({"groups": [{"id": text_group.as_str(), "channel_ids": [general.as_str(), plans.as_str()]}, {"id": voice_group.as_str(), "channel_ids": [voice.as_str()]}]})),
            stranger.put(&format!("/v1/servers/{server_id}/settings"), &json!({"display_name": "Hijacked"})),
        ] {
            assert_error_shape(&reply, 403, "forbidden");
        }

        // Layouts that drop, duplicate or invent channels are refused and change nothing.
        let layout_path = format!("/v1/servers/{server_id}/channel-layout");
        let before = owner.groups(&server_id);
        for groups in [
            json!([{"id": projects.as_str(), "channel_ids": [plans.as_str()]}, {"id": text_group.as_str(), "channel_ids": []}, {"id": voice_group.as_str(), "channel_ids": [voice.as_str()]}]),
            json!([{"id": projects.as_str(), "channel_ids": [plans.as_str(), general.as_str()]}, {"id": text_group.as_str(), "channel_ids": [general.as_str()]}, {"id": voice_group.as_str(), "channel_ids": [voice.as_str()]}]),
            json!([{"id": projects.as_str(), "channel_ids": [plans.as_str(), general.as_str(), "ch_invented"]}, {"id": voice_group.as_str(), "channel_ids": [voice.as_str()]}]),
            json!([{"id": "cat_invented", "channel_ids": [plans.as_str(), general.as_str()]}, {"id": voice_group.as_str(), "channel_ids": [voice.as_str()]}]),
            json!([{"id": projects.as_str(), "channel_ids": [plans.as_str(), general.as_str(), voice.as_str()]}]),
        ] {
            owner.put(&layout_path, &json!({"groups": groups})).assert_error(400, "invalid_layout");
        }
        assert_eq!(encode(&owner.groups(&server_id)), encode(&before));

        // A valid layout: Roadmap first holding both text channels, then the voice group.
        let laid = owner.put(&layout_path, &json!({"groups": [
            {"id": projects.as_str(), "channel_ids": [general.as_str(), plans.as_str()]},
            {"id": voice_group.as_str(), "channel_ids": [voice.as_str()]},
            {"id": text_group.as_str(), "channel_ids": []},
        ]}));
        assert_eq!(laid.status, 200, "{}", laid.text());
        let laid = laid.json();
        let order: Vec<&str> = laid.arr_at("groups").iter().map(|g| g.str_at("id")).collect();
        assert_eq!(order, vec![projects.as_str(), voice_group.as_str(), text_group.as_str()]);
        assert_eq!(ids_of(laid.at("groups.0"), "channels"), vec![general.clone(), plans.clone()]);
        assert_eq!(encode(owner.groups(&server_id).at("groups")), encode(laid.at("groups")));
        let event = watcher.expect("chat.channel.layout.updated");
        assert_eq!(encode(event.at("payload.groups")), encode(laid.at("groups")));

        // Deleting a group moves its channels to the next group of its kind.
        let deleted = owner.delete(&format!("/v1/servers/{server_id}/categories/{projects}"));
        assert_eq!(deleted.status, 200, "{}", deleted.text());
        let deleted = deleted.json();
        assert_eq!(deleted.str_at("server_id"), server_id);
        assert_eq!(deleted.str_at("updated_by_uid"), owner.uid());
        let groups = deleted.arr_at("groups");
        assert!(groups.iter().all(|g| g.str_at("id") != projects));
        let text = groups.iter().find(|g| g.str_at("id") == text_group).expect("text group kept");
        assert_eq!(ids_of(text, "channels"), vec![general.clone(), plans.clone()]);
        let event = watcher.expect("chat.channel.layout.updated");
        assert_eq!(encode(event.at("payload.groups")), encode(deleted.at("groups")));
        owner.delete(&format!("/v1/servers/{server_id}/categories/{projects}")).assert_error(404, "group_not_found");

        // Settings.
        let settings_path = format!("/v1/servers/{server_id}/settings");
        let settings = owner.get(&settings_path);
        assert_eq!(settings.status, 200, "{}", settings.text());
        assert_eq!(
            settings.json().keys_at(""),
            key_set(&["server_id", "display_name", "description", "banner_preset", "join_policy"])
        );
        let updated = owner.put(&settings_path, &json!({"display_name": "Renamed Guild", "description": "new words", "banner_preset": "sunset"}));
        assert_eq!(updated.status, 200, "{}", updated.text());
        let updated = updated.json();
        assert_eq!(updated.str_at("display_name"), "Renamed Guild");
        assert_eq!(updated.str_at("banner_preset"), "sunset");
        assert_eq!(updated.str_at("updated_by_uid"), owner.uid());
        assert!(is_rfc3339_utc(updated.at("updated_at")));
        let event = watcher.expect("chat.server.updated");
        for key in ["server_id", "display_name", "description", "banner_preset", "updated_by_uid", "updated_at"] {
            assert_eq!(encode(event.at(&format!("payload.{key}"))), encode(updated.at(key)), "{key}");
        }
        owner.put(&settings_path, &json!({"banner_preset": "plaid"})).assert_error(400, "invalid_banner_preset");
        assert_eq!(owner.get(&settings_path).json().str_at("display_name"), "Renamed Guild");
        let listed = stranger.get("/v1/servers").json();
        let item = listed.arr_at("servers").iter().find(|s| s.str_at("server_id") == server_id).expect("listed");
        assert_eq!(item.str_at("display_name"), "Renamed Guild");
        assert_eq!(item.str_at("icon_text").chars().count(), 2);
    };

    server_creation_can_be_turned_off => |engine| {
        let server = start_community(engine, &[("OPENCHAT_ALLOW_SERVER_CREATION", "false")]);
        let caps = Client::anonymous(server.addr).get("/v1/client/capabilities").json();
        assert!(!caps.bool_at("features.server_creation"));
        let user = Client::user(server.addr);
        user.post("/v1/servers", &json!({"display_name": "Nope", "description": "", "banner_preset": "ocean"}))
            .assert_error(403, "server_creation_disabled");
        let listed = user.get("/v1/servers").json();
        assert_eq!(listed.arr_at("servers").len(), 1, "only the default server: {}", encode(&listed));
    };

    messages_have_the_contract_shape_replies_and_mentions => |engine| {
        let server = start_community(engine, &[]);
        let alice = Client::user(server.addr);
        let (server_id, general) = default_channel(&server, &alice);
        let bob = Client::user(server.addr);
        let mut alice_ws = socket(&server, &alice, &server_id);
        let mut bob_ws = socket(&server, &bob, &server_id);
        let named = bob.put("/v1/profile/me", &json!({"display_name": "Bob Builder"}));
        assert_eq!(named.status, 200, "{}", named.text());

        let reply = alice.post(&format!("/v1/channels/{general}/messages"), &json!({"body": "first words"}));
        assert_eq!(reply.status, 201, "{}", reply.text());
        let first = reply.json().at("message").clone();
        assert_eq!(first.keys_at(""), key_set(MESSAGE_KEYS));
        assert!(first.str_at("id").len() > 3);
        assert_eq!(first.str_at("channel_id"), general);
        assert_eq!(first.str_at("server_id"), server_id);
        assert_eq!(first.str_at("author_uid"), alice.uid());
        assert_eq!(first.str_at("body"), "first words");
        assert!(is_rfc3339_utc(first.at("created_at")));
        assert!(first.is_null_at("reply_to"));
        assert!(first.arr_at("mentions").is_empty());
        assert!(first.arr_at("attachments").is_empty());
        assert_eq!(
            first.keys_at("action_permissions"),
            key_set(&["can_react", "can_reply", "can_mark_unread", "can_pin", "can_delete"])
        );
        assert!(first.bool_at("action_permissions.can_delete"), "the author may delete");
        assert!(first.bool_at("action_permissions.can_reply"));

        // Every socket of the server gets the message, subscribed or not.
        for ws in [&mut alice_ws, &mut bob_ws] {
            let event = ws.expect("chat.message.created");
            assert_eq!(created_id(&event), first.str_at("id"));
            assert_eq!(event.str_at("payload.message.body"), "first words");
            assert_eq!(event.str_at("server_id"), server_id);
            assert!(event.i64_at("event_id") > 0);
            assert!(event.try_at("timestamp").is_some());
        }

        // A reply carries a preview of its target, for readers and in the event.
        let reply = bob.post(&format!("/v1/channels/{general}/messages"), &json!({"body": "answer", "reply_to_message_id": first.str_at("id")}));
        assert_eq!(reply.status, 201, "{}", reply.text());
        let answer = reply.json().at("message").clone();
        assert_eq!(answer.str_at("reply_to.message_id"), first.str_at("id"));
        assert_eq!(answer.str_at("reply_to.author_uid"), alice.uid());
        assert_eq!(answer.str_at("reply_to.preview_text"), "first words");
        assert!(!answer.bool_at("reply_to.is_unavailable"));
        assert_eq!(answer.str_at("author_uid"), bob.uid());
        assert!(answer.bool_at("action_permissions.can_delete"));
        let event = alice_ws.expect_where("chat.message.created", |f| created_id(f) == answer.str_at("id"));
        assert_eq!(event.str_at("payload.message.reply_to.preview_text"), "first words");
        let page = alice.messages(&general, "limit=10");
        assert_eq!(page.str_at("messages.1.reply_to.author_uid"), alice.uid());
        assert!(!page.bool_at("messages.1.action_permissions.can_delete"), "alice may not delete bob's reply");
        assert!(page.bool_at("messages.0.action_permissions.can_delete"));

        bob.post(&format!("/v1/channels/{general}/messages"), &json!({"body": "to nothing", "reply_to_message_id": "msg_does_not_exist"}))
            .assert_error(404, "message_not_found");

        // Mentions, with UTF-16 ranges counted past an emoji.
        let body = format!("😀 hi @{} and @here, mail a@here.org", bob.uid());
        let sent = alice.send(&general, &body);
        let mentions = sent.arr_at("mentions");
        assert_eq!(mentions.len(), 2, "{}", encode(&sent));
        let utf16 = |s: &str| s.encode_utf16().count() as i64;
        let user_token = format!("@{}", bob.uid());
        let user_start = utf16(&body[..body.find(&user_token).unwrap()]);
        assert_eq!(utf16("😀 hi "), user_start);
        let user = &mentions[0];
        assert_eq!(user.str_at("type"), "user");
        assert_eq!(user.str_at("token"), user_token);
        assert_eq!(user.str_at("target_id"), bob.uid());
        assert_eq!(user.str_at("display_text"), "@Bob Builder");
        assert_eq!(user.i64_at("range.start"), user_start);
        assert_eq!(user.i64_at("range.end"), user_start + utf16(&user_token));
        let here = &mentions[1];
        assert_eq!(here.str_at("type"), "channel");
        assert_eq!(here.str_at("token"), "@here");
        assert_eq!(here.str_at("target_id"), general);
        let here_start = utf16(&body[..body.find("@here").unwrap()]);
        assert_eq!(here.i64_at("range.start"), here_start);
        assert_eq!(here.i64_at("range.end"), here_start + 5);
        let event = bob_ws.expect_where("chat.message.created", |f| created_id(f) == sent.str_at("id"));
        assert_eq!(encode(event.at("payload.message.mentions")), encode(sent.at("mentions")));

        // Mention lookups for the composer.
        let found = alice.get(&format!("/v1/channels/{general}/mentions:resolve?query=bob&limit=5"));
        assert_eq!(found.status, 200, "{}", found.text());
        let found = found.json();
        let hit = found.arr_at("results").iter().find(|r| r.str_at("target_id") == bob.uid()).unwrap_or_else(|| panic!("bob not found: {}", encode(&found)));
        assert_eq!(hit.str_at("type"), "user");
        assert_eq!(hit.str_at("token"), user_token);
        let all = alice.get(&format!("/v1/channels/{general}/mentions:resolve?query=&limit=20")).json();
        assert!(all.arr_at("results").iter().any(|r| r.str_at("token") == "@here"));

        // A deleted target makes the reply preview unavailable.
        let deleted = alice.delete(&format!("/v1/channels/{general}/messages/{}", first.str_at("id")));
        assert_eq!(deleted.status, 200, "{}", deleted.text());
        let page = bob.messages(&general, "limit=10");
        let answer_now = page.arr_at("messages").iter().find(|m| m.str_at("id") == answer.str_at("id")).expect("the reply stays");
        assert!(answer_now.bool_at("reply_to.is_unavailable"));
        assert_eq!(answer_now.str_at("reply_to.message_id"), first.str_at("id"));
    };

    message_limits_and_deletes => |engine| {
        let server = start_community(engine, &[("OPENCHAT_MAX_MESSAGE_BYTES", "100"), ("OPENCHAT_DEFAULT_SERVER_OWNER_UID", "uid_0000c0de")]);
        let owner = Client::with_uid(server.addr, "uid_0000c0de");
        let alice = Client::user(server.addr);
        let (server_id, general) = default_channel(&server, &alice);
        let bob = Client::user(server.addr);
        let mut bob_ws = socket(&server, &bob, &server_id);

        // Over the message size: 413, JSON and multipart alike; exactly at it: fine.
        let path = format!("/v1/channels/{general}/messages");
        alice.post(&path, &json!({"body": "x".repeat(101)})).assert_error(413, "payload_too_large");
        alice.post_multipart(&path, Multipart::new().text("body", &"é".repeat(51))).assert_error(413, "payload_too_large");
        let at_limit = alice.send(&general, &"y".repeat(100));
        alice.post(&path, &json!({"body": "   "})).assert_error(400, "empty_message");
        bob_ws.expect_where("chat.message.created", |f| created_id(f) == at_limit.str_at("id"));

        // Only the author (or a moderator) deletes.
        let mine = alice.send(&general, "delete me");
        let theirs = bob.send(&general, "keep me");
        bob.delete(&format!("{path}/{}", mine.str_at("id"))).assert_error(403, "forbidden");
        let deleted = alice.delete(&format!("{path}/{}", mine.str_at("id")));
        assert_eq!(deleted.status, 200, "{}", deleted.text());
        let deleted = deleted.json();
        assert!(deleted.bool_at("deleted"));
        assert_eq!(deleted.str_at("message_id"), mine.str_at("id"));
        let event = bob_ws.expect("chat.message.deleted");
        assert_eq!(event.str_at("payload.message_id"), mine.str_at("id"));
        let ids = alice.message_ids(&general, "limit=50");
        assert!(!ids.contains(&mine.str_at("id").to_owned()));
        assert!(ids.contains(&theirs.str_at("id").to_owned()));
        // Deleting again is harmless; a message of another channel is not found here.
        assert_eq!(alice.delete(&format!("{path}/{}", mine.str_at("id"))).status, 200);
        alice.delete(&format!("{path}/msg_nope")).assert_error(404, "message_not_found");

        // The owner (OPENCHAT_DEFAULT_SERVER_OWNER_UID) moderates.
        let page = owner.messages(&general, "limit=50");
        let seen = page.arr_at("messages").iter().find(|m| m.str_at("id") == theirs.str_at("id")).expect("the owner reads it");
        assert!(seen.bool_at("action_permissions.can_delete") && seen.bool_at("action_permissions.can_pin"));
        let removed = owner.delete(&format!("{path}/{}", theirs.str_at("id")));
        assert_eq!(removed.status, 200, "{}", removed.text());
        assert_eq!(removed.json().str_at("deleted_by_uid"), owner.uid());
        assert!(!alice.message_ids(&general, "limit=50").contains(&theirs.str_at("id").to_owned()));
    };

    history_pages_back_and_forth => |engine| {
        let server = start_community(engine, &[("OPENCHAT_DEFAULT_HISTORY_VISIBILITY", "members")]);
        let alice = Client::user(server.addr);
        let (_, general) = default_channel(&server, &alice);
        let sent: Vec<String> = (0..120).map(|i| alice.send(&general, &format!("m{i}")).str_at("id").to_owned()).collect();
        let body = |i: usize| format!("m{i}");

        // Newest page first, each page oldest first, next_cursor leading further back.
        let page1 = alice.messages(&general, "limit=50");
        assert_eq!(bodies(&page1), (70..120).map(body).collect::<Vec<_>>());
        let cursor1 = page1.str_at("next_cursor").to_owned();
        let page2 = alice.messages(&general, &format!("limit=50&before={cursor1}"));
        assert_eq!(bodies(&page2), (20..70).map(body).collect::<Vec<_>>());
        let cursor2 = page2.str_at("next_cursor").to_owned();
        let page3 = alice.messages(&general, &format!("limit=50&before={cursor2}"));
        assert_eq!(bodies(&page3), (0..20).map(body).collect::<Vec<_>>());
        assert!(page3.is_null_at("next_cursor"), "the start of history");
        let mut all = ids_of(&page3, "messages");
        all.extend(ids_of(&page2, "messages"));
        all.extend(ids_of(&page1, "messages"));
        assert_eq!(all, sent);

        // The client's first load, and the whole history at once.
        let whole = alice.messages(&general, "limit=150");
        assert_eq!(ids_of(&whole, "messages"), sent);
        assert!(whole.is_null_at("next_cursor"));

        // Newer than a cursor.
        let after = alice.messages(&general, &format!("limit=200&after={cursor2}"));
        assert_eq!(bodies(&after), (21..120).map(body).collect::<Vec<_>>());
        let next = alice.messages(&general, &format!("limit=10&after={cursor2}"));
        assert_eq!(bodies(&next), (21..31).map(body).collect::<Vec<_>>(), "the ten right after the cursor");

        // Another member sees it all too (members visibility); bad cursors and limits are 400.
        let bob = Client::user(server.addr);
        assert_eq!(bob.message_ids(&general, "limit=150"), sent);
        alice.get(&format!("/v1/channels/{general}/messages?before=garbage")).assert_error(400, "invalid_cursor");
        alice.get(&format!("/v1/channels/{general}/messages?limit=0")).assert_error(400, "invalid_limit");
        alice.get(&format!("/v1/channels/{general}/messages?limit=many")).assert_error(400, "invalid_limit");
    };

    an_empty_read_ack_marks_the_latest_message_or_changes_nothing => |engine| {
        // The client sends `PUT read-ack {}` on every subscribe, also to an empty channel.
        let server = start_community(engine, &[]);
        let alice = Client::user(server.addr);
        let (_, general) = default_channel(&server, &alice);
        let path = format!("/v1/channels/{general}/read-ack");
        for body in [json!({}), json!({"last_read_message_id": ""}), json!({"last_read_message_id": null})] {
            let reply = alice.put(&path, &body);
            assert_eq!(reply.status, 200, "{}: {}", encode(&body), reply.text());
            let reply = reply.json();
            assert!(!reply.bool_at("applied"), "nothing to mark: {}", encode(&reply));
            assert!(reply.is_null_at("read_ack.last_read_message_id"));
            assert_eq!(reply.str_at("channel_id"), general);
        }
        // With messages: the newest one the reader may read, deleted ones left out.
        let ids: Vec<String> = (0..3).map(|i| alice.send(&general, &format!("m{i}")).str_at("id").to_owned()).collect();
        assert_eq!(alice.delete(&format!("/v1/channels/{general}/messages/{}", ids[2])).status, 200);
        let marked = alice.put(&path, &json!({}));
        assert_eq!(marked.status, 200, "{}", marked.text());
        let marked = marked.json();
        assert!(marked.bool_at("applied"));
        assert_eq!(marked.str_at("read_ack.last_read_message_id"), ids[1]);
        // Again: already there, not moved.
        let again = alice.put(&path, &json!({})).json();
        assert!(!again.bool_at("applied"));
        assert_eq!(again.str_at("read_ack.last_read_message_id"), ids[1]);
        // A cursor that is not an id at all is still refused.
        alice.put(&path, &json!({"last_read_message_id": "not an id"})).assert_error(400, "invalid_message_id");
    };

    read_acks_only_move_forward_and_reach_only_their_user => |engine| {
        let server = start_community(engine, &[]);
        let alice = Client::user(server.addr);
        let (server_id, general) = default_channel(&server, &alice);
        let bob = Client::user(server.addr);
        let mut alice_ws = socket(&server, &alice, &server_id);
        let mut alice_other_device = Ws::connect(server.addr, &headers_query(&server_id, alice.uid(), "desktop_second")).live();
        let mut bob_ws = socket(&server, &bob, &server_id);
        let ids: Vec<String> = (0..5).map(|i| alice.send(&general, &format!("r{i}")).str_at("id").to_owned()).collect();
        let path = format!("/v1/channels/{general}/read-ack");

        let put = |who: &Client, id: &str| {
            let reply = who.put(&path, &json!({"last_read_message_id": id}));
            assert_eq!(reply.status, 200, "{}", reply.text());
            reply.json()
        };
        let first = put(&alice, &ids[3]);
        assert!(first.bool_at("applied"));
        assert_eq!(first.str_at("channel_id"), general);
        assert_eq!(first.str_at("read_ack.last_read_message_id"), ids[3]);
        assert_eq!(first.str_at("read_ack.user_uid"), alice.uid());
        assert!(is_rfc3339_utc(first.at("read_ack.acked_at")));
        for ws in [&mut alice_ws, &mut alice_other_device] {
            // Flat, the read-ack item itself (A.7): the client reads `payload.user_uid`.
            let event = ws.expect("chat.read_ack.updated");
            assert_eq!(event.str_at("payload.last_read_message_id"), ids[3]);
            assert_eq!(event.str_at("payload.user_uid"), alice.uid());
            assert_eq!(event.str_at("payload.channel_id"), general);
            assert_eq!(event.i64_at("payload.cursor_index"), first.i64_at("read_ack.cursor_index"));
            assert!(is_rfc3339_utc(event.at("payload.acked_at")));
            assert!(!event.keys_at("payload").contains(&"read_ack".to_owned()), "no wrapper: {}", encode(&event));
        }

        // Backwards is not applied and tells nobody.
        let back = put(&alice, &ids[1]);
        assert!(!back.bool_at("applied"));
        assert_eq!(back.str_at("read_ack.last_read_message_id"), ids[3]);
        let got = alice.get(&path).json();
        assert_eq!(got.str_at("read_ack.last_read_message_id"), ids[3]);
        assert_eq!(got.i64_at("read_ack.cursor_index"), first.i64_at("read_ack.cursor_index"));

        let forward = put(&alice, &ids[4]);
        assert!(forward.bool_at("applied"));
        assert!(forward.i64_at("read_ack.cursor_index") > first.i64_at("read_ack.cursor_index"));
        let event = alice_ws.expect("chat.read_ack.updated");
        assert_eq!(event.str_at("payload.last_read_message_id"), ids[4], "the backwards ack emitted nothing");

        // Bob's ack is his own.
        assert!(bob.get(&path).json().is_null_at("read_ack.last_read_message_id"));
        assert!(put(&bob, &ids[0]).bool_at("applied"));
        let own = bob_ws.expect("chat.read_ack.updated");
        assert_eq!(own.str_at("payload.user_uid"), bob.uid(), "bob got alice's ack");
        bob_ws.assert_none_where("chat.read_ack.updated", QUIET, |_| true);
        alice_ws.assert_none("chat.read_ack.updated", QUIET);
        alice.put(&path, &json!({"last_read_message_id": "msg_unknown"})).assert_error(404, "message_not_found");
    };

    leaving_closes_sockets_and_rejoining_opens_a_new_span => |engine| {
        // `joined` visibility (the default): members read what was posted while they were members.
        let server = start_community(engine, &[]);
        let alice = Client::user(server.addr);
        let (server_id, general) = default_channel(&server, &alice);
        let bob = Client::user(server.addr);
        let early = alice.send(&general, "before bob").str_at("id").to_owned();

        // Bob's first contact makes him a member from now on.
        let mut bob_ws = socket(&server, &bob, &server_id);
        let mut bob_ws2 = socket(&server, &bob, &server_id);
        let mut alice_ws = socket(&server, &alice, &server_id);
        assert!(bob.message_ids(&general, "limit=50").is_empty(), "a later joiner does not see earlier messages");
        assert_eq!(alice.message_ids(&general, "limit=50"), vec![early.clone()]);
        let during_first = bob.send(&general, "bob was here").str_at("id").to_owned();
        alice_ws.expect_where("chat.message.created", |f| created_id(f) == during_first);

        let left = bob.delete(&format!("/v1/servers/{server_id}/membership"));
        assert_eq!(left.status, 200, "{}", left.text());
        let left = left.json();
        assert_eq!(left.str_at("server_id"), server_id);
        assert_eq!(left.str_at("user_uid"), bob.uid());
        assert!(left.bool_at("left"));
        assert!(is_rfc3339_utc(left.at("left_at")));
        assert!(bob_ws.closed_within(Duration::from_secs(3)), "bob's socket stays open after leaving");
        assert!(bob_ws2.closed_within(Duration::from_secs(3)), "bob's second socket stays open after leaving");
        assert!(!alice_ws.closed_within(QUIET), "alice's socket is not touched");
        let again = bob.delete(&format!("/v1/servers/{server_id}/membership"));
        assert_eq!(again.status, 200, "leaving is idempotent: {}", again.text());
        bob.delete("/v1/servers/srv_unknown/membership").assert_error(404, "server_not_found");

        // Outside, bob can neither post nor read, and the directory no longer lists the server.
        bob.post(&format!("/v1/channels/{general}/messages"), &json!({"body": "let me in"})).assert_error(403, "not_a_member");
        bob.get(&format!("/v1/channels/{general}/messages?limit=50")).assert_error(403, "not_a_member");
        let listed = bob.get("/v1/servers").json();
        assert!(listed.arr_at("servers").iter().all(|s| s.str_at("server_id") != server_id), "{}", encode(&listed));
        let gap = alice.send(&general, "while bob was away").str_at("id").to_owned();

        // Rejoining opens a new span: both spans readable, the gap not.
        let joined = bob.post(&format!("/v1/servers/{server_id}/membership"), &json!({}));
        assert_eq!(joined.status, 200, "{}", joined.text());
        let back = alice.send(&general, "welcome back").str_at("id").to_owned();
        let seen = bob.message_ids(&general, "limit=50");
        assert_eq!(seen, vec![during_first.clone(), back.clone()], "gap {gap} and early {early} hidden");
        assert_eq!(alice.message_ids(&general, "limit=50"), vec![early, during_first, gap, back]);

        // Leaving again and opening the realtime socket re-admits too.
        assert_eq!(bob.delete(&format!("/v1/servers/{server_id}/membership")).status, 200);
        bob.post(&format!("/v1/channels/{general}/messages"), &json!({"body": "still out"})).assert_error(403, "not_a_member");
        let mut bob_ws3 = socket(&server, &bob, &server_id);
        bob_ws3.subscribe(&general);
        bob_ws3.expect("chat.presence.snapshot");
        let posted = bob.send(&general, "back through the socket");
        bob_ws3.expect_where("chat.message.created", |f| created_id(f) == posted.str_at("id"));
    };

    writes_are_rate_limited_per_user => |engine| {
        let server = start_community(engine, &[("OPENCHAT_RATE_LIMIT_PER_MINUTE", "5")]);
        let alice = Client::user(server.addr);
        let bob = Client::user(server.addr);
        let (_, general) = default_channel(&server, &alice);
        let caps = alice.get("/v1/client/capabilities").json();
        assert_eq!(caps.i64_at("limits.rate_limit_per_minute"), 5);
        for i in 0..5 {
            alice.send(&general, &format!("allowed {i}"));
        }
        let refused = alice.post(&format!("/v1/channels/{general}/messages"), &json!({"body": "one too many"}));
        refused.assert_error(429, "rate_limited");
        assert!(refused.json().bool_at("retryable"));
        // Reads are not limited, nothing was stored, and other users are not affected.
        assert_eq!(alice.message_ids(&general, "limit=50").len(), 5);
        bob.send(&general, "my own allowance");
    };

    bad_input_is_refused_cleanly_and_stores_nothing => |engine| {
        let server = start_community(engine, &[]);
        let alice = Client::user(server.addr);
        let (server_id, general) = default_channel(&server, &alice);
        let path = format!("/v1/channels/{general}/messages");
        alice.send(&general, "the only message");
        let count = || alice.messages(&general, "limit=50").arr_at("messages").len();

        // Malformed JSON and wrong types.
        alice.post_raw(&path, "application/json", b"{\"body\": \"unterminated").assert_error(400, "invalid_json");
        alice.post(&path, &json!({"body": 42})).assert_error(400, "invalid_json");
        alice.post(&path, &json!(["body"])).assert_error(400, "invalid_json");
        alice.post("/v1/servers", &json!({"display_name": ["x"]})).assert_error(400, "invalid_json");
        alice.put(&format!("/v1/servers/{server_id}/channel-layout"), &json!({"groups": "all"})).assert_error(400, "invalid_json");
        alice.put(&format!("/v1/channels/{general}/read-ack"), &json!({"last_read_message_id": 5})).assert_error(400, "invalid_json");
        alice.put("/v1/profile/me", &json!({"display_name": false})).assert_error(400, "invalid_json");
        alice.post("/v1/servers", &json!({"display_name": "Bad", "banner_preset": "plaid"})).assert_error(400, "invalid_banner_preset");

        // Voice channels carry no messages.
        let voice = alice.groups(&server_id).arr_at("groups").iter().flat_map(|g| g.arr_at("channels").iter()).find(|c| c.str_at("type") == "voice").map(|c| c.str_at("id").to_owned()).expect("a voice channel");
        alice.post(&format!("/v1/channels/{voice}/messages"), &json!({"body": "hello?"})).assert_error(400, "not_a_text_channel");

        // Unknown ids.
        alice.get("/v1/channels/ch_nope/messages?limit=5").assert_error(404, "channel_not_found");
        alice.post("/v1/channels/ch_nope/messages", &json!({"body": "x"})).assert_error(404, "channel_not_found");
        alice.get("/v1/servers/srv_nope/channels").assert_error(404, "server_not_found");
        alice.get("/v1/servers/srv_nope/members").assert_error(404, "server_not_found");
        alice.get("/v1/servers/srv_nope/settings").assert_error(404, "server_not_found");
        alice.post("/v1/servers/srv_nope/ownership:claim", &json!({"claim_token": "occ_x"})).assert_error(404, "server_not_found");
        alice.put(&format!("/v1/servers/{server_id}/categories/cat_nope"), &json!({"name": "x"})).assert_error(404, "group_not_found");
        assert_eq!(alice.get("/v1/attachments/att_nope").status, 404);
        assert_eq!(alice.get("/v1/profile/avatar/av_nope").status, 404);
        assert_eq!(alice.get("/v1/channels/not%20an%20id/messages").status, 404);

        // Broken multipart bodies.
        alice.post_raw(&path, "multipart/form-data", b"--x\r\n").assert_error(400, "bad_multipart");
        alice.post_raw(&path, "multipart/form-data; boundary=abc", b"--abc\r\nContent-Disposition: form-data; name=\"body\"\r\n\r\nno end")
            .assert_error(400, "bad_multipart");
        alice.post_raw(&path, "multipart/form-data; boundary=abc", b"no delimiter at all").assert_error(400, "bad_multipart");
        alice.post_raw(&path, "multipart/form-data; boundary=abc", b"--abc\r\nX-No-Disposition: 1\r\n\r\nhi\r\n--abc--\r\n")
            .assert_error(400, "bad_multipart");

        // Batches of profiles are bounded.
        let uids: Vec<String> = (0..101).map(|_| new_uid()).collect();
        let query = |n: usize| uids[..n].iter().map(|u| format!("user_uid={u}")).collect::<Vec<_>>().join("&");
        alice.get(&format!("/v1/profiles:batch?{}", query(101))).assert_error(400, "too_many_profiles");
        let hundred = alice.get(&format!("/v1/profiles:batch?{}", query(100)));
        assert_eq!(hundred.status, 200, "{}", hundred.text());
        assert_eq!(hundred.json().arr_at("profiles").len(), 100);

        // Identity that is present but malformed is an error, not anonymity.
        let bad = Client::anonymous(server.addr).request("GET", "/v1/profile/me", &[("X-OpenChat-User-UID", "not a uid!")], None);
        assert_eq!(bad.status, 400, "{}", bad.text());
        Client::anonymous(server.addr).get("/v1/profile/me").assert_error(401, "unauthorized");
        Client::anonymous(server.addr).post(&path, &json!({"body": "anon"})).assert_error(401, "unauthorized");

        // After all that, still one message.
        assert_eq!(count(), 1);
    };
}
