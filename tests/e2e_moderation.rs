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
use support::ws::{QUIET, Ws, headers_query};

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

fn cases_path(server_id: &str) -> String {
    format!("/v1/servers/{server_id}/moderation/cases")
}

/// A report of `target` by `reporter`: the new case id.
fn report(reporter: &Client, server_id: &str, target: &Client) -> String {
    let case = reporter.expect(
        201,
        reporter.post(
            &cases_path(server_id),
            &json!({"target_uid": target.uid(), "reason_code": "harassment", "reason_text": "see the thread"}),
        ),
    );
    case.str_at("case_id").to_owned()
}

/// `POST …/cases/{case}/{what}` by `who`: (status, the reply).
fn on_case(
    who: &Client,
    server_id: &str,
    case_id: &str,
    what: &str,
    body: simd_json::OwnedValue,
) -> (u16, simd_json::OwnedValue) {
    let reply = who.post(
        &format!("{}/{case_id}/{what}", cases_path(server_id)),
        &body,
    );
    let status = reply.status;
    (status, reply.json())
}

/// A server with an owner, an admin, two moderators and three members, all joined.
struct Staffed {
    server_id: String,
    owner: Client,
    admin: Client,
    mods: [Client; 2],
    members: [Client; 3],
}

fn staffed(addr: std::net::SocketAddr) -> Staffed {
    let owner = Client::user(addr);
    let server_id = owned_server(&owner, "Moderated");
    let admin = Client::user(addr);
    let mods = [Client::user(addr), Client::user(addr)];
    let members = [Client::user(addr), Client::user(addr), Client::user(addr)];
    for c in std::iter::once(&admin).chain(&mods).chain(&members) {
        c.expect(200, c.get(&format!("/v1/servers/{server_id}/channels")));
    }
    assert_eq!(set_role(&owner, &server_id, admin.uid(), "admin").0, 200);
    for m in &mods {
        assert_eq!(set_role(&admin, &server_id, m.uid(), "moderator").0, 200);
    }
    Staffed {
        server_id,
        owner,
        admin,
        mods,
        members,
    }
}

on_both_engines! {
    reports_are_seen_by_whom_they_concern_and_immediate_actions_act_at_once => |engine| {
        let server = start_community(engine, &[]);
        let addr = server.addr;
        let s = staffed(addr);
        let id = s.server_id.as_str();
        let [reporter, target, bystander] = &s.members;
        let general = s.owner.first_text_channel(id);
        let case_id = report(reporter, id, target);
        // Who sees it: the reporter and the staff; not the target (yet), not a bystander.
        for who in [reporter, &s.mods[0], &s.owner] {
            let seen = who.expect(200, who.get(&format!("{}/{case_id}", cases_path(id))));
            assert_eq!((seen.str_at("status"), seen.str_at("reporter_uid")), ("open", reporter.uid()));
        }
        for who in [target, bystander] {
            assert_eq!(who.get(&format!("{}/{case_id}", cases_path(id))).status, 404, "{}", who.uid());
            let listed = who.expect(200, who.get(&cases_path(id)));
            assert!(listed.arr_at("cases").is_empty(), "{}", encode(&listed));
        }
        assert_eq!(Client::anonymous(addr).get(&cases_path(id)).status, 401);
        let staff_list = s.mods[1].expect(200, s.mods[1].get(&cases_path(id)));
        assert_eq!(staff_list.arr_at("cases").len(), 1);
        // Bad reports: oneself, a stranger, a bad reason, someone else's channel.
        for (body, status, code) in [
            (json!({"target_uid": reporter.uid(), "reason_code": "spam"}), 400, "invalid_target"),
            (json!({"target_uid": "uid_never_here", "reason_code": "spam"}), 404, "member_not_found"),
            (json!({"target_uid": target.uid(), "reason_code": "Not A Code!"}), 400, "invalid_reason"),
            (json!({"target_uid": target.uid(), "reason_code": "spam", "reason_text": "x".repeat(1001)}), 400, "invalid_reason"),
            (json!({"target_uid": target.uid(), "reason_code": "sp\u{0}am"}), 400, "invalid_text"),
            (json!({"target_uid": target.uid(), "reason_code": "spam", "channel_id": "ch_elsewhere"}), 404, "channel_not_found"),
        ] {
            let reply = reporter.post(&cases_path(id), &body);
            assert_eq!((reply.status, reply.json().str_at("code").to_owned()), (status, code.to_owned()), "{}", encode(&body));
        }
        // Only staff act, and only over a lower rank; kick, timeout and lock only here.
        for (who, body, status, code) in [
            (bystander, json!({"action_type": "kick"}), 403, "forbidden"),
            (&s.mods[0], json!({"action_type": "ban"}), 400, "invalid_action"),
            (&s.mods[0], json!({"action_type": "timeout_short", "duration_seconds": 3601}), 400, "invalid_action"),
            (&s.mods[0], json!({"action_type": "channel_lock"}), 400, "invalid_action"),
            (&s.mods[0], json!({"action_type": "fly"}), 400, "invalid_action"),
        ] {
            let (got, reply) = on_case(who, id, &case_id, "actions/immediate", body.clone());
            assert_eq!((got, reply.str_at("code")), (status, code), "{}", encode(&body));
        }
        let upward = report(reporter, id, &s.admin);
        let (got, reply) = on_case(&s.mods[0], id, &upward, "actions/immediate", json!({"action_type": "kick"}));
        assert_eq!((got, reply.str_at("code")), (403, "forbidden"), "a moderator does not kick an admin");

        // A timeout: the target may not post; the case is enforced and now visible to it,
        // without who reported it.
        let (got, action) = on_case(&s.mods[0], id, &case_id, "actions/immediate", json!({"action_type": "timeout_short", "duration_seconds": 120}));
        assert_eq!(got, 201, "{}", encode(&action));
        assert_eq!(
            action.keys_at(""),
            key_set(&["action_id", "case_id", "action_type", "target_uid", "channel_id", "duration_seconds", "expires_at", "enforced_by_uid", "enforced_at"])
        );
        assert_eq!((action.str_at("action_type"), action.str_at("target_uid"), action.i64_at("duration_seconds")), ("timeout_short", target.uid(), 120));
        let post = target.post(&format!("/v1/channels/{general}/messages"), &json!({"body": "still here"}));
        assert_eq!((post.status, post.json().str_at("code").to_owned()), (403, "timed_out".to_owned()));
        let seen = target.expect(200, target.get(&format!("{}/{case_id}", cases_path(id))));
        assert_eq!(seen.str_at("status"), "enforced");
        assert!(seen.is_null_at("reporter_uid") && seen.is_null_at("reason_text"), "{}", encode(&seen));
        assert_eq!(seen.arr_at("actions").len(), 1);
        let (got, reply) = on_case(&s.mods[0], id, &case_id, "actions/immediate", json!({"action_type": "kick"}));
        assert_eq!((got, reply.str_at("code")), (409, "case_closed"));

        // A lock: members may not post there; staff may; everyone hears of it.
        let mut watcher = Ws::connect(addr, &headers_query(id, bystander.uid(), "bystander_desk"));
        let lock_case = report(reporter, id, bystander);
        let (got, _) = on_case(&s.mods[1], id, &lock_case, "actions/immediate", json!({"action_type": "channel_lock", "channel_id": general.as_str(), "duration_seconds": 300}));
        assert_eq!(got, 201);
        let locked = watcher.expect("chat.channel.locked");
        assert_eq!(locked.str_at("payload.channel_id"), general);
        let post = bystander.post(&format!("/v1/channels/{general}/messages"), &json!({"body": "hello?"}));
        assert_eq!((post.status, post.json().str_at("code").to_owned()), (403, "channel_locked".to_owned()));
        s.mods[1].send(&general, "the channel is locked for five minutes");

        // A kick: out of the server at once, its socket closed, the others told why.
        let mut targets_socket = Ws::connect(addr, &headers_query(id, target.uid(), "target_desk"));
        targets_socket.subscribe(&general);
        targets_socket.expect("chat.presence.snapshot");
        let kick_case = report(reporter, id, target);
        let (got, _) = on_case(&s.admin, id, &kick_case, "actions/immediate", json!({"action_type": "kick"}));
        assert_eq!(got, 201);
        assert!(targets_socket.closed_within(std::time::Duration::from_secs(1)));
        let removed = watcher.expect("chat.member.removed");
        assert_eq!((removed.str_at("payload.user_uid"), removed.str_at("payload.reason")), (target.uid(), "kicked"));
        let members = s.owner.expect(200, s.owner.get(&format!("/v1/servers/{id}/members")));
        assert!(members.arr_at("members").iter().all(|m| m.str_at("id") != target.uid()));

        // Every step is in the audit.
        let audit = s.owner.expect(200, s.owner.get(&audit_path(id)));
        let kinds: Vec<&str> = audit.arr_at("items").iter().map(|i| i.str_at("event_type")).collect();
        for kind in ["case_opened", "action_enforced"] {
            assert!(kinds.contains(&kind), "{kinds:?}");
        }
        assert!(audit.arr_at("items").iter().any(|i| i.try_at("case_id").and_then(|c| c.as_str()) == Some(kick_case.as_str())));
    };

    a_ban_is_voted_under_the_policy_of_its_proposal_and_enforced_once => |engine| {
        let server = start_community(engine, &[]);
        let addr = server.addr;
        let s = staffed(addr);
        let id = s.server_id.as_str();
        let [reporter, target, bystander] = &s.members;
        let policy = s.bystander_policy(id, bystander);
        assert_eq!((policy.0, policy.1, policy.2), (2, 3, 86400), "the default policy");
        let case_id = report(reporter, id, target);
        // Only an eligible voter proposes; the same key proposes once.
        let (got, reply) = on_case(bystander, id, &case_id, "actions/propose", json!({"action_type": "ban"}));
        assert_eq!((got, reply.str_at("code")), (403, "forbidden"));
        let (got, reply) = on_case(&s.mods[0], id, &case_id, "actions/propose", json!({"action_type": "kick"}));
        assert_eq!((got, reply.str_at("code")), (400, "invalid_action"));
        let (got, proposal) = on_case(&s.mods[0], id, &case_id, "actions/propose", json!({"action_type": "ban", "idempotency_key": "ban-1"}));
        assert_eq!(got, 201, "{}", encode(&proposal));
        assert_eq!(
            proposal.keys_at(""),
            key_set(&["proposal_id", "case_id", "action_type", "duration_seconds", "proposed_by_uid", "threshold", "quorum", "expires_at", "status", "votes"])
        );
        assert_eq!((proposal.i64_at("threshold"), proposal.i64_at("quorum"), proposal.str_at("status")), (2, 3, "open"));
        let (got, again) = on_case(&s.mods[0], id, &case_id, "actions/propose", json!({"action_type": "ban", "idempotency_key": "ban-1"}));
        assert_eq!((got, again.str_at("proposal_id")), (201, proposal.str_at("proposal_id")));
        let (got, reply) = on_case(&s.mods[1], id, &case_id, "actions/propose", json!({"action_type": "ban"}));
        assert_eq!((got, reply.str_at("code")), (409, "proposal_open"));
        // The policy changes now: the open proposal keeps its own.
        let changed = s.owner.put(&format!("/v1/servers/{id}/moderation/policy"), &json!({"threshold": 4, "quorum": 5}));
        assert_eq!(changed.status, 200, "{}", changed.text());
        assert_eq!(s.admin.put(&format!("/v1/servers/{id}/moderation/policy"), &json!({"threshold": 1})).status, 403);
        assert_eq!(s.owner.put(&format!("/v1/servers/{id}/moderation/policy"), &json!({"threshold": 6, "quorum": 5})).status, 400);

        let vote = |who: &Client, value: &str| on_case(who, id, &case_id, "votes", json!({"value": value}));
        let (got, reply) = vote(bystander, "yes");
        assert_eq!((got, reply.str_at("code")), (403, "forbidden"), "members do not vote");
        let (got, reply) = vote(target, "no");
        assert_eq!(got, 403, "nor does the target: {}", encode(&reply));
        assert_eq!(vote(&s.mods[0], "maybe").0, 400);
        let (got, after) = vote(&s.mods[0], "yes");
        assert_eq!((got, after.str_at("status"), after.i64_at("votes.yes")), (200, "open", 1));
        let (got, reply) = vote(&s.mods[0], "no");
        assert_eq!((got, reply.str_at("code")), (409, "already_voted"));
        let (_, after) = vote(&s.mods[1], "yes");
        assert_eq!((after.str_at("status"), after.i64_at("votes.yes")), ("open", 2), "two yes, but only two voters of three");
        let mut targets_socket = Ws::connect(addr, &headers_query(id, target.uid(), "target_desk"));
        // The third voter says no, and the quorum is met with two yes: the ban is enforced in
        // this request.
        let (got, decided) = vote(&s.admin, "no");
        assert_eq!((got, decided.str_at("status")), (200, "enforced"), "{}", encode(&decided));
        assert!(targets_socket.closed_within(std::time::Duration::from_secs(1)));
        let (got, reply) = vote(&s.owner, "yes");
        assert_eq!((got, reply.str_at("code")), (409, "proposal_closed"));
        // Banned: no way back in.
        let back = target.get(&format!("/v1/servers/{id}/channels"));
        assert_eq!(back.status, 403, "{}", back.text());
        let detail = s.owner.expect(200, s.owner.get(&format!("{}/{case_id}", cases_path(id))));
        assert_eq!(detail.str_at("status"), "enforced");
        assert_eq!(detail.arr_at("actions").len(), 1, "enforced once");
        assert_eq!(detail.arr_at("actions")[0].str_at("action_type"), "ban");

        // Too few eligible voters for the new policy (four staff outrank a member; the quorum
        // is five): no proposal at all.
        let other_case = report(reporter, id, bystander);
        let (got, reply) = on_case(&s.mods[0], id, &other_case, "actions/propose", json!({"action_type": "timeout_long", "duration_seconds": 7200}));
        assert_eq!((got, reply.str_at("code")), (409, "quorum_unreachable"), "{}", encode(&reply));
        assert_eq!((reply.i64_at("details.eligible"), reply.i64_at("details.quorum")), (4, 5));
    };
}

impl Staffed {
    /// The policy as a member reads it: (threshold, quorum, window_seconds).
    fn bystander_policy(&self, server_id: &str, reader: &Client) -> (i64, i64, i64) {
        let p = reader.expect(
            200,
            reader.get(&format!("/v1/servers/{server_id}/moderation/policy")),
        );
        (
            p.i64_at("threshold"),
            p.i64_at("quorum"),
            p.i64_at("window_seconds"),
        )
    }
}

on_both_engines! {
    two_final_votes_at_once_enforce_once_and_reports_are_capped => |engine| {
        let server = start_community(engine, &[]);
        let addr = server.addr;
        let s = staffed(addr);
        let id = s.server_id.as_str();
        let [reporter, target, _] = &s.members;
        s.owner.expect(200, s.owner.put(&format!("/v1/servers/{id}/moderation/policy"), &json!({"threshold": 2, "quorum": 2})));
        let case_id = report(reporter, id, target);
        let (got, _) = on_case(&s.owner, id, &case_id, "actions/propose", json!({"action_type": "timeout_long", "duration_seconds": 86400}));
        assert_eq!(got, 201);
        assert_eq!(on_case(&s.owner, id, &case_id, "votes", json!({"value": "yes"})).0, 200);
        let voters = [&s.admin, &s.mods[0], &s.mods[1]];
        let results: Vec<(u16, String)> = std::thread::scope(|scope| {
            let handles: Vec<_> = voters
                .into_iter()
                .map(|v| {
                    let case_id = case_id.clone();
                    scope.spawn(move || {
                        let (status, reply) = on_case(v, id, &case_id, "votes", json!({"value": "yes"}));
                        let what = reply.try_at("status").or(reply.try_at("code")).and_then(|x| x.as_str()).unwrap_or_default().to_owned();
                        (status, what)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let enforced = results.iter().filter(|r| **r == (200, "enforced".to_owned())).count();
        let closed = results.iter().filter(|r| **r == (409, "proposal_closed".to_owned())).count();
        assert_eq!((enforced, closed), (1, 2), "{results:?}");
        let detail = s.owner.expect(200, s.owner.get(&format!("{}/{case_id}", cases_path(id))));
        assert_eq!(detail.arr_at("actions").len(), 1, "{}", encode(&detail));
        let actions = server.sql("SELECT CAST(COUNT(*) AS TEXT) FROM moderation_actions");
        assert_eq!(actions, ["1"]);

        // A flood of reports: ten an hour from one member, then 429 with when to retry.
        let flooder = &s.members[2];
        let mut statuses = Vec::new();
        for _ in 0..12 {
            statuses.push(flooder.post(&cases_path(id), &json!({"target_uid": reporter.uid(), "reason_code": "spam"})).status);
        }
        assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 10, "{statuses:?}");
        let throttled = flooder.post(&cases_path(id), &json!({"target_uid": reporter.uid(), "reason_code": "spam"}));
        assert_eq!(throttled.status, 429);
        let throttled = throttled.json();
        assert!(throttled.bool_at("retryable") && throttled.i64_at("details.retry_after_ms") > 0, "{}", encode(&throttled));
    };
}

on_both_engines! {
    evidence_is_disclosed_only_with_consent_sealed_at_rest_and_shown_only_to_reporter_and_staff => |engine| {
        let server = start_community(engine, &[]);
        let addr = server.addr;
        let s = staffed(addr);
        let id = s.server_id.as_str();
        let [reporter, target, bystander] = &s.members;
        const SECRET: &str = "he wrote: meet me behind the station at nine";
        let without = reporter.post(&cases_path(id), &json!({"target_uid": target.uid(), "reason_code": "threat", "evidence": {"text": SECRET}}));
        assert_eq!((without.status, without.json().str_at("code").to_owned()), (400, "evidence_consent_required".to_owned()));
        let long = reporter.post(&cases_path(id), &json!({"target_uid": target.uid(), "reason_code": "threat", "evidence": {"text": "x".repeat(4001), "consent": true}}));
        assert_eq!(long.status, 400);
        let case = reporter.expect(201, reporter.post(&cases_path(id), &json!({
            "target_uid": target.uid(), "reason_code": "threat", "evidence": {"text": SECRET, "consent": true}
        })));
        let case_id = case.str_at("case_id").to_owned();
        for who in [reporter, &s.mods[0]] {
            let seen = who.expect(200, who.get(&format!("{}/{case_id}", cases_path(id))));
            assert_eq!(seen.str_at("evidence.text"), SECRET, "{}", who.uid());
        }
        assert_eq!(bystander.get(&format!("{}/{case_id}", cases_path(id))).status, 404);
        let (got, _) = on_case(&s.mods[0], id, &case_id, "actions/immediate", json!({"action_type": "timeout_short"}));
        assert_eq!(got, 201);
        let as_target = target.expect(200, target.get(&format!("{}/{case_id}", cases_path(id))));
        assert!(as_target.is_null_at("evidence"), "{}", encode(&as_target));
        // At rest it is sealed: the text is in no table.
        let sealed = server.sql("SELECT sealed FROM moderation_evidence");
        assert_eq!(sealed.len(), 1);
        assert!(!sealed[0].contains("station"), "{}", sealed[0]);
        for query in [
            "SELECT CAST(COUNT(*) AS TEXT) FROM moderation_cases WHERE COALESCE(reason_text, '') LIKE '%station%'",
            "SELECT CAST(COUNT(*) AS TEXT) FROM moderation_audit WHERE payload LIKE '%station%'",
            "SELECT CAST(COUNT(*) AS TEXT) FROM events WHERE payload LIKE '%station%'",
        ] {
            assert_eq!(server.sql(query), ["0"], "{query}");
        }
        // The key is kept (a file in the data directory): the staff read it after a restart.
        let server = restart_community(server);
        let moderator = Client::with_uid(server.addr, s.mods[0].uid());
        let seen = moderator.expect(200, moderator.get(&format!("{}/{case_id}", cases_path(id))));
        assert_eq!(seen.str_at("evidence.text"), SECRET);
    };
}

on_both_engines! {
    a_private_channel_exists_only_for_its_roles_and_read_only_and_listen_only_channels_hold => |engine| {
        let server = start_community(engine, &[]);
        let addr = server.addr;
        let s = staffed(addr);
        let id = s.server_id.as_str();
        let [member, other, _] = &s.members;
        let moderator = &s.mods[0];
        let general = s.owner.first_text_channel(id);
        let created = s.admin.expect(201, s.admin.post(&format!("/v1/servers/{id}/channels"), &json!({"name": "staff-room", "type": "text"})));
        let room = created.str_at("channel.id").to_owned();
        let mut member_socket = Ws::connect(addr, &headers_query(id, member.uid(), "member_desk"));
        let mut staff_socket = Ws::connect(addr, &headers_query(id, moderator.uid(), "mod_desk"));
        member_socket.subscribe(&general);
        member_socket.expect("chat.presence.snapshot");
        staff_socket.subscribe(&room);
        staff_socket.expect("chat.presence.snapshot");
        let mut lurker = Ws::connect(addr, &headers_query(id, other.uid(), "other_desk"));
        lurker.subscribe(&room);
        lurker.expect("chat.presence.snapshot");

        let permissions = format!("/v1/servers/{id}/channels/{room}/permissions");
        assert_eq!(member.put(&permissions, &json!({"view_min_role": "moderator"})).status, 403);
        assert_eq!(s.admin.put(&permissions, &json!({"view_min_role": "wizard"})).status, 400);
        let layout = s.admin.expect(200, s.admin.put(&permissions, &json!({"view_min_role": "moderator"})));
        let listed = |doc: &simd_json::OwnedValue, path: &str| -> Vec<String> {
            doc.arr_at(path).iter().flat_map(|g| g.arr_at("channels").iter().map(|c| c.str_at("id").to_owned())).collect()
        };
        assert!(listed(&layout, "groups").contains(&room), "the admin sees it: {}", encode(&layout));
        // The layout goes out as each role sees it; a lurker that followed it no longer does.
        let for_member = member_socket.expect("chat.channel.layout.updated");
        assert!(!listed(&for_member, "payload.groups").contains(&room), "{}", encode(&for_member));
        let for_staff = staff_socket.expect("chat.channel.layout.updated");
        assert!(listed(&for_staff, "payload.groups").contains(&room));
        assert!(!encode(&for_member).contains("staff-room"));
        staff_socket.expect_where("chat.presence.left", |f| f.str_at("payload.member.user_uid") == other.uid());
        // Every path of a member: list, history, post, subscribe, read marker, mentions.
        let channels = member.expect(200, member.get(&format!("/v1/servers/{id}/channels")));
        assert!(!listed(&channels, "groups").contains(&room));
        let staff_view = moderator.expect(200, moderator.get(&format!("/v1/servers/{id}/channels")));
        assert!(listed(&staff_view, "groups").contains(&room));
        for reply in [
            member.get(&format!("/v1/channels/{room}/messages")),
            member.post(&format!("/v1/channels/{room}/messages"), &json!({"body": "knock knock"})),
            member.put(&format!("/v1/channels/{room}/read-ack"), &json!({})),
            member.get(&format!("/v1/channels/{room}/mentions:resolve?query=")),
            member.put(&format!("/v1/servers/{id}/read-acks"), &json!({"read_acks": [{"channel_id": general.as_str()}, {"channel_id": room.as_str()}]})),
            Client::anonymous(addr).get(&format!("/v1/channels/{room}/messages")),
        ] {
            assert_eq!((reply.status, reply.json().str_at("code").to_owned()), (404, "channel_not_found".to_owned()));
        }
        member_socket.subscribe(&room);
        let refused = member_socket.expect("chat.error");
        assert!(encode(&refused).contains("channel"), "{}", encode(&refused));
        // Live and on resume, the member gets nothing of the room; a mention of it there is none.
        let said = moderator.send(&room, &format!("@{} about the ban", member.uid()));
        assert!(said.arr_at("mentions").is_empty(), "a member cannot see this channel: {}", encode(&said));
        staff_socket.expect_where("chat.message.created", |f| f.str_at("payload.message.id") == said.str_at("id"));
        member_socket.assert_none("chat.message.created", QUIET);
        let mut resumed = Ws::connect(addr, &format!("{}&since_event_id=0", headers_query(id, member.uid(), "member_late")));
        resumed.drain(QUIET);
        let replayed: Vec<String> = resumed.backlog().map(encode).collect();
        assert!(replayed.iter().all(|f| !f.contains(&room) && !f.contains("staff-room")), "{replayed:?}");

        // Read-only: members read, staff post.
        s.admin.expect(200, s.admin.put(&format!("/v1/servers/{id}/channels/{general}/permissions"), &json!({"post_min_role": "moderator"})));
        let post = member.post(&format!("/v1/channels/{general}/messages"), &json!({"body": "hello"}));
        assert_eq!((post.status, post.json().str_at("code").to_owned()), (403, "channel_read_only".to_owned()));
        moderator.send(&general, "announcements only");
        let page = member.messages(&general, "limit=5");
        assert_eq!(page.arr_at("messages").last().unwrap().str_at("body"), "announcements only", "members still read it");

        // Voice: members listen only; a private voice channel has no ticket for them.
        let voice = support::call::voice_channel(&s.owner, id);
        let ticket = |who: &Client| who.post(&format!("/v1/rtc/channels/{voice}/join-ticket"), &json!({"server_id": id}));
        s.admin.expect(200, s.admin.put(&format!("/v1/servers/{id}/channels/{voice}/permissions"), &json!({"member_speak": false})));
        assert!(!member.expect(200, ticket(member)).bool_at("permissions.speak"));
        assert!(moderator.expect(200, ticket(moderator)).bool_at("permissions.speak"));
        s.admin.expect(200, s.admin.put(&format!("/v1/servers/{id}/channels/{voice}/permissions"), &json!({"view_min_role": "moderator"})));
        let refused = ticket(member);
        assert_eq!((refused.status, refused.json().str_at("code").to_owned()), (404, "channel_not_found".to_owned()));
        // Audited.
        let audit = s.owner.expect(200, s.owner.get(&audit_path(id)));
        assert!(audit.arr_at("items").iter().any(|i| i.str_at("event_type") == "channel_permissions_updated"));
    };
}

on_both_engines! {
    someone_who_left_a_banned_member_and_nobody_can_do_nothing_with_moderation => |engine| {
        let server = start_community(engine, &[]);
        let addr = server.addr;
        let s = staffed(addr);
        let id = s.server_id.as_str();
        let [reporter, banned, leaver] = &s.members;
        s.owner.expect(200, s.owner.put(&format!("/v1/servers/{id}/moderation/policy"), &json!({"threshold": 1, "quorum": 1})));
        let case_id = report(reporter, id, banned);
        assert_eq!(on_case(&s.owner, id, &case_id, "actions/propose", json!({"action_type": "ban"})).0, 201);
        assert_eq!(on_case(&s.owner, id, &case_id, "votes", json!({"value": "yes"})).1.str_at("status"), "enforced");
        leaver.expect(200, leaver.delete(&format!("/v1/servers/{id}/membership")));
        let open_case = report(reporter, id, &s.mods[1]);
        let anonymous = Client::anonymous(addr);
        for who in [banned, leaver, &anonymous] {
            let expected = if who.uid_opt().is_none() { 401 } else { 403 };
            let attempts = [
                who.get(&cases_path(id)),
                who.post(&cases_path(id), &json!({"target_uid": reporter.uid(), "reason_code": "spam"})),
                who.get(&format!("{}/{case_id}", cases_path(id))),
                who.post(&format!("{}/{open_case}/actions/immediate", cases_path(id)), &json!({"action_type": "kick"})),
                who.post(&format!("{}/{open_case}/actions/propose", cases_path(id)), &json!({"action_type": "ban"})),
                who.post(&format!("{}/{open_case}/votes", cases_path(id)), &json!({"value": "yes"})),
                who.get(&format!("/v1/servers/{id}/moderation/policy")),
                who.put(&format!("/v1/servers/{id}/moderation/policy"), &json!({"threshold": 1})),
                who.get(&audit_path(id)),
                who.get(&roles_path(id)),
                who.put(&roles_path(id), &json!({"user_uid": reporter.uid(), "role": "moderator"})),
            ];
            for (n, reply) in attempts.iter().enumerate() {
                // The banned member may read the case of its own ban (what was done to it, not
                // who asked or why); the one who left sees no case at all.
                let own = who.uid_opt() == Some(banned.uid()) && (n == 0 || n == 2);
                if own {
                    assert_eq!(reply.status, 200, "{}", reply.text());
                    let text = reply.text();
                    assert!(!text.contains(reporter.uid()) && !text.contains("see the thread"), "{text}");
                    continue;
                }
                let listed_nothing = reply.status == 200 && reply.json().try_at("cases").is_some_and(|c| c.as_array().is_some_and(|a| a.is_empty()));
                // A case one may not see is not found.
                let unseen = n == 2 && reply.status == 404 && expected == 403;
                assert!(reply.status == expected || listed_nothing || unseen, "{} attempt {n}: {} {}", who.uid_opt().unwrap_or("anonymous"), reply.status, reply.text());
            }
        }
        // Nothing above changed anything: the open case is still open, roles as they were.
        let detail = s.owner.expect(200, s.owner.get(&format!("{}/{open_case}", cases_path(id))));
        assert_eq!((detail.str_at("status"), detail.arr_at("proposals").len()), ("open", 0));
        assert_eq!(set_role(&s.owner, id, reporter.uid(), "member"), (200, "member".to_owned()));
    };
}
