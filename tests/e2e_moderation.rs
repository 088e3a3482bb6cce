//! Roles and the moderation audit (wire contract Part D), black box: who may change whose role
//! (owner, admin, moderator, member, a higher rank, someone who left, a stranger, nobody), the
//! realtime event of a change, the audit pages only staff read, and an audit the database
//! itself keeps append-only. Every test runs against a real server with two shards, on
//! embedded SQLite and on Postgres.

mod support;

use simd_json::json;
use simd_json::prelude::*;
use support::api::{Client, owned_server};
use support::json::{JsonPath, encode, key_set};
use support::server::{restart_community, start_community};
use support::ws::{Ws, headers_query};

use support::on_both_engines;

fn roles_path(server_id: &str) -> String {
    format!("/v1/servers/{server_id}/roles")
}

fn audit_path(server_id: &str) -> String {
    format!("/v1/servers/{server_id}/moderation/audit")
}

/// `PUT roles {user_uid, role}` by `who`: (status, code or role).
fn set_role(who: &Client, server_id: &str, uid: &str, role: &str) -> (u16, String) {
    let reply = who.put(
        &roles_path(server_id),
        &json!({"user_uid": uid, "role": role}),
    );
    let status = reply.status;
    if status == 401 {
        return (status, "unauthorized".to_owned());
    }
    let doc = reply.json();
    match doc.try_at("code") {
        Some(code) => (status, code.as_str().unwrap_or_default().to_owned()),
        None => (status, doc.str_at("role").to_owned()),
    }
}

on_both_engines! {
    roles_follow_rank_and_every_change_is_an_event_and_an_audit_row => |engine| {
        let server = start_community(engine, &[]);
        let addr = server.addr;
        let owner = Client::user(addr);
        let server_id = owned_server(&owner, "Ranked");
        let [admin, moderator, member, other, leaver] = std::array::from_fn(|_| Client::user(addr));
        for c in [&admin, &moderator, &member, &other, &leaver] {
            c.expect(200, c.get(&format!("/v1/servers/{server_id}/channels")));
        }
        leaver.expect(200, leaver.delete(&format!("/v1/servers/{server_id}/membership")));
        let mut watcher = Ws::connect(addr, &headers_query(&server_id, member.uid(), "member_desk"));
        let ok = |role: &str| (200u16, role.to_owned());
        let no = |status: u16, code: &str| (status, code.to_owned());

        assert_eq!(set_role(&owner, &server_id, admin.uid(), "admin"), ok("admin"));
        let event = watcher.expect("chat.member.role_updated");
        assert_eq!(
            (event.str_at("payload.server_id"), event.str_at("payload.user_uid"), event.str_at("payload.role")),
            (server_id.as_str(), admin.uid(), "admin")
        );
        assert_eq!(set_role(&admin, &server_id, moderator.uid(), "moderator"), ok("moderator"));
        // The matrix: only a higher rank, never upwards to one's own rank, never oneself,
        // never the owner, never ownership, only current members.
        for (who, target, role, expected) in [
            (&admin, member.uid(), "admin", no(403, "forbidden")),
            (&admin, admin.uid(), "member", no(403, "forbidden")),
            (&admin, owner.uid(), "member", no(403, "forbidden")),
            (&moderator, member.uid(), "moderator", no(403, "forbidden")),
            (&moderator, member.uid(), "member", no(403, "forbidden")),
            (&member, other.uid(), "moderator", no(403, "forbidden")),
            (&member, member.uid(), "admin", no(403, "forbidden")),
            (&owner, owner.uid(), "member", no(403, "forbidden")),
            (&owner, member.uid(), "owner", no(400, "invalid_role")),
            (&owner, member.uid(), "superuser", no(400, "invalid_role")),
            (&owner, leaver.uid(), "moderator", no(404, "member_not_found")),
            (&owner, "uid_never_here", "moderator", no(404, "member_not_found")),
            (&leaver, member.uid(), "moderator", no(403, "not_a_member")),
            (&Client::anonymous(addr), member.uid(), "moderator", no(401, "unauthorized")),
        ] {
            assert_eq!(set_role(who, &server_id, target, role), expected, "{} sets {target} to {role}", who.uid());
        }
        assert_eq!(owner.put(&roles_path(&server_id), &json!({"user_uid": "bad\u{0}uid", "role": "member"})).status, 400);
        assert_eq!(set_role(&owner, "no_such_server", member.uid(), "moderator"), no(404, "server_not_found"));
        // The owner demotes the admin: the admin loses what it could do.
        assert_eq!(set_role(&owner, &server_id, admin.uid(), "member"), ok("member"));
        assert_eq!(set_role(&admin, &server_id, other.uid(), "moderator"), no(403, "forbidden"));

        let roles = member.expect(200, member.get(&roles_path(&server_id)));
        assert_eq!(roles.keys_at(""), key_set(&["server_id", "members"]));
        let listed: Vec<(String, String)> = roles.arr_at("members").iter()
            .map(|m| (m.str_at("user_uid").to_owned(), m.str_at("role").to_owned())).collect();
        assert_eq!(listed[0], (owner.uid().to_owned(), "owner".to_owned()));
        assert!(listed.contains(&(moderator.uid().to_owned(), "moderator".to_owned())));
        assert!(listed.iter().all(|(uid, _)| uid != leaver.uid()), "{listed:?}");
        assert_eq!(leaver.get(&roles_path(&server_id)).status, 403);

        // The audit: staff only, newest first, one row per change.
        for who in [&member, &leaver] {
            assert_eq!(who.get(&audit_path(&server_id)).status, 403, "{}", who.uid());
        }
        assert_eq!(Client::anonymous(addr).get(&audit_path(&server_id)).status, 401);
        let audit = moderator.expect(200, moderator.get(&audit_path(&server_id)));
        let items = audit.arr_at("items");
        assert_eq!(items.len(), 3, "{}", encode(&audit));
        assert_eq!(
            items[0].keys_at(""),
            key_set(&["audit_id", "server_id", "case_id", "actor_uid", "event_type", "payload", "created_at"])
        );
        assert_eq!((items[0].str_at("event_type"), items[0].str_at("actor_uid")), ("role_updated", owner.uid()));
        assert_eq!(
            (items[0].str_at("payload.user_uid"), items[0].str_at("payload.from"), items[0].str_at("payload.to")),
            (admin.uid(), "admin", "member")
        );
        assert_eq!(items[2].str_at("payload.to"), "admin");
        assert!(audit.is_null_at("next_cursor"));
        assert_eq!(moderator.get(&format!("{}?cursor=nonsense", audit_path(&server_id))).status, 400);
    };

    the_audit_pages_survive_a_restart_and_the_database_refuses_to_rewrite_it => |engine| {
        let server = start_community(engine, &[]);
        let addr = server.addr;
        let owner = Client::user(addr);
        let server_id = owned_server(&owner, "Audited");
        let member = Client::user(addr);
        member.expect(200, member.get(&format!("/v1/servers/{server_id}/channels")));
        // 61 changes: two pages.
        for i in 0..61 {
            let role = if i % 2 == 0 { "moderator" } else { "member" };
            assert_eq!(set_role(&owner, &server_id, member.uid(), role), (200, role.to_owned()));
        }
        let first = owner.expect(200, owner.get(&audit_path(&server_id)));
        assert_eq!(first.arr_at("items").len(), 50);
        let cursor = first.str_at("next_cursor").to_owned();
        let second = owner.expect(200, owner.get(&format!("{}?cursor={cursor}", audit_path(&server_id))));
        assert_eq!(second.arr_at("items").len(), 11);
        assert!(second.is_null_at("next_cursor"));
        let mut ids: Vec<String> = first.arr_at("items").iter().chain(second.arr_at("items")).map(|i| i.str_at("audit_id").to_owned()).collect();
        assert_eq!(second.arr_at("items").last().unwrap().str_at("payload.to"), "moderator", "the oldest last");
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 61, "every row once");

        // Not even SQL can change or remove a row.
        let count = || server.sql("SELECT CAST(COUNT(*) AS TEXT) FROM moderation_audit")[0].clone();
        assert_eq!(count(), "61");
        for statement in [
            "UPDATE moderation_audit SET actor_uid = 'uid_someone_else'",
            "DELETE FROM moderation_audit",
        ] {
            let refused = server.try_sql(statement).expect_err(statement);
            assert!(refused.contains("append-only"), "{statement}: {refused}");
        }
        if server.db.is_some() {
            let refused = server.try_sql("TRUNCATE moderation_audit").expect_err("truncate");
            assert!(refused.contains("append-only"), "{refused}");
        }
        assert_eq!(count(), "61");
        let server = restart_community(server);
        let owner = Client::with_uid(server.addr, owner.uid());
        let after = owner.expect(200, owner.get(&audit_path(&server_id)));
        assert_eq!(after.arr_at("items")[0].str_at("audit_id"), first.arr_at("items")[0].str_at("audit_id"));
        // New rows continue after the old ones.
        let member = Client::with_uid(server.addr, member.uid());
        assert_eq!(set_role(&owner, &server_id, member.uid(), "member"), (200, "member".to_owned()));
        let newest = owner.expect(200, owner.get(&audit_path(&server_id)));
        assert_eq!(newest.arr_at("items")[0].str_at("payload.from"), "moderator");
        assert_eq!(newest.arr_at("items")[1].str_at("audit_id"), first.arr_at("items")[0].str_at("audit_id"));
    };
}
