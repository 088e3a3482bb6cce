//! The read rule on every path that asks it (history pages, resume, replies) and the voiding of
//! join tickets, exercised on a whole [`Community`] without storage.

use super::*;
use crate::rtc::ticket::Claims;

const ORIGIN: &str = "https://chat.example.test";

fn community() -> Community {
    let settings = Settings {
        default_server_id: "home".into(),
        default_history_visibility: HistoryVisibility::Joined,
        allow_server_creation: true,
        max_message_bytes: 4000,
        rate_limit_per_minute: 1000,
        handshake_strategy: "token_proof",
        origin: ORIGIN.into(),
        urls: Urls::new(ORIGIN),
    };
    let mut c = Community::new(settings, Snapshot::default());
    c.bootstrap_default_server("Home", Some("uid_owner"), 1);
    c
}

fn actor(uid: &str) -> Actor {
    Actor {
        user_uid: uid.into(),
        device_id: format!("dev_{uid}"),
    }
}

fn first_channel(c: &Community, kind: ChannelKind) -> Channel {
    let mut channels: Vec<&Channel> = c
        .channels
        .values()
        .filter(|ch| ch.server_id == "home" && ch.kind == kind)
        .collect();
    channels.sort_by_key(|ch| ch.position);
    channels[0].clone()
}

fn plain(body: &str, reply_to_id: Option<&str>, reply_to: Option<&Message>) -> NewMessage {
    NewMessage {
        content: Content::Plain { body: body.into() },
        reply_to: reply_to.cloned(),
        reply_to_id: reply_to_id.map(str::to_owned),
        attachments: Vec::new(),
    }
}

/// Posts and returns the stored message and its event.
fn post(c: &mut Community, who: &Actor, channel: &str, new: NewMessage) -> (Message, Emitted) {
    let out = c.post_message(who, channel, new, 10).unwrap();
    let message = out
        .records
        .iter()
        .find_map(|r| match r {
            Record::Message(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap();
    (message, out.events[0].clone())
}

#[test]
fn pages_resume_and_replies_ask_the_same_rule() {
    let mut c = community();
    let general = first_channel(&c, ChannelKind::Text);
    let alice = actor("uid_alice");
    let bob = actor("uid_bob");
    let (before, event) = post(&mut c, &alice, &general.id, plain("before", None, None));
    assert_eq!(
        event.subject,
        Subject::Message {
            channel_id: general.id.clone(),
            seq: before.seq
        }
    );
    c.admit(&bob, "home", Admission::Connect, 11).unwrap();
    let (after, after_event) = post(&mut c, &alice, &general.id, plain("after", None, None));

    // The page.
    let access = c.history_access(Some(&bob), &general.id, 12).unwrap().value;
    assert!(!access.visibility.allows(before.seq));
    assert!(access.visibility.allows(after.seq));
    // The resume.
    let mut rule = c.replay_rule("home", "uid_bob");
    assert!(!rule.allows(&event.subject));
    assert!(rule.allows(&after_event.subject));
    assert!(rule.allows(&Subject::Server));
    let mut alices = c.replay_rule("home", "uid_alice");
    assert!(alices.allows(&event.subject));
    // A channel of another server named in a subject is not replayed on this one.
    let mut elsewhere = c.replay_rule("srv_other", "uid_alice");
    assert!(!elsewhere.allows(&event.subject));
    // The reply.
    assert!(!c.may_read(Some("uid_bob"), &before));
    assert!(c.may_read(Some("uid_bob"), &after));
    let refused = c
        .post_message(
            &bob,
            &general.id,
            plain("re", Some(&before.id), Some(&before)),
            13,
        )
        .unwrap_err();
    assert_eq!(refused, DomainError::NotFound(What::Message));

    // After leaving, nothing of the joined channel replays, not even server-level events.
    c.leave(&bob, "home", 14).unwrap();
    let mut rule = c.replay_rule("home", "uid_bob");
    assert!(!rule.allows(&after_event.subject));
    assert!(!rule.allows(&Subject::Server));
}

#[test]
fn unreadable_missing_foreign_and_deleted_targets_get_one_answer_and_join_nobody() {
    let mut c = community();
    let general = first_channel(&c, ChannelKind::Text);
    let alice = actor("uid_alice");
    let (target, _) = post(&mut c, &alice, &general.id, plain("target", None, None));
    let carol = actor("uid_carol");
    let missing = c
        .post_message(&carol, &general.id, plain("re", Some("msg_999"), None), 20)
        .unwrap_err();
    assert_eq!(missing, DomainError::NotFound(What::Message));
    // Carol's first contact would make her a member from now on: the target is before that.
    let unreadable = c
        .post_message(
            &carol,
            &general.id,
            plain("re", Some(&target.id), Some(&target)),
            20,
        )
        .unwrap_err();
    assert_eq!(unreadable, missing);
    assert!(
        c.membership("home", "uid_carol").is_none(),
        "a refused post joins nobody"
    );
    // In another channel (even one alice reads), a different id, or deleted: the same.
    let mut elsewhere = target.clone();
    elsewhere.channel_id = "ch_other".into();
    let mut renamed = target.clone();
    renamed.id = "msg_12345".into();
    let mut deleted = target.clone();
    deleted.deleted_at = Some(15);
    for t in [&elsewhere, &renamed, &deleted] {
        let refused = c
            .post_message(
                &alice,
                &general.id,
                plain("re", Some(&target.id), Some(t)),
                21,
            )
            .unwrap_err();
        assert_eq!(refused, missing);
    }
    // The real one, for its reader.
    let (reply, event) = post(
        &mut c,
        &alice,
        &general.id,
        plain("re", Some(&target.id), Some(&target)),
    );
    assert_eq!(reply.reply_to_id.as_deref(), Some(target.id.as_str()));
    assert!(event.payload.contains("\"preview_text\":\"target\""));
}

fn claims(c: &Community, who: &Actor, jti: &str, exp: i64) -> Claims {
    Claims {
        server_id: "home".into(),
        channel_id: first_channel(c, ChannelKind::Voice).id,
        user_uid: who.user_uid.clone(),
        device_id: who.device_id.clone(),
        permissions: crate::rtc::ticket::Permissions::ALL,
        exp,
        jti: jti.into(),
    }
}

/// A ticket granted at `now` (ms), valid 60 s.
fn grant(c: &mut Community, who: &Actor, jti: &str, now: Millis) -> Claims {
    let voice = first_channel(c, ChannelKind::Voice).id;
    let exp = now / 1000 + 60;
    c.grant_ticket(who, "home", &voice, jti, exp, now).unwrap();
    claims(c, who, jti, exp)
}

#[test]
fn leaving_kicks_bans_and_revokes_void_the_tickets_taken_before() {
    let mut c = community();
    let owner = actor("uid_owner");
    let alice = actor("uid_alice");
    let denied = |r: Result<(), DomainError>| r.unwrap_err().code();

    // Leave: the ticket taken before is void; one taken after (which re-admits) works once.
    let before = grant(&mut c, &alice, "jt_before_leave", 100_000);
    c.leave(&alice, "home", 100_000).unwrap();
    assert_eq!(denied(c.redeem_ticket(&before, 100_001)), "rtc_join_denied");
    let after = grant(&mut c, &alice, "jt_after_leave", 100_000);
    c.redeem_ticket(&after, 100_001).unwrap();
    assert_eq!(
        denied(c.redeem_ticket(&after, 100_002)),
        "rtc_ticket_replayed"
    );

    // Kick: the membership ends too.
    let before = grant(&mut c, &alice, "jt_before_kick", 101_000);
    c.kick(&owner, "home", "uid_alice", 101_000).unwrap();
    assert!(c.current_role("home", "uid_alice").is_none());
    assert_eq!(denied(c.redeem_ticket(&before, 101_001)), "rtc_join_denied");

    // Ban.
    let before = grant(&mut c, &alice, "jt_before_ban", 102_000);
    c.ban(&owner, "home", "uid_alice", None, 102_000).unwrap();
    assert_eq!(denied(c.redeem_ticket(&before, 102_001)), "rtc_join_denied");
    c.unban(&owner, "home", "uid_alice", 102_002).unwrap();

    // Revoke: the device's tickets, in every server, and a notice for its sockets.
    let token = "ocs_revoked_token";
    let hash = crate::auth::hash_token(token);
    c.sessions.insert(
        hash.clone(),
        Session {
            token_hash: hash.clone(),
            user_uid: alice.user_uid.clone(),
            device_id: alice.device_id.clone(),
            created_at: 1,
            expires_at: 10_000_000,
            revoked_at: None,
        },
    );
    let before = grant(&mut c, &alice, "jt_before_revoke", 103_000);
    let other_device = Actor {
        device_id: "dev_other".into(),
        ..alice.clone()
    };
    let other = grant(&mut c, &other_device, "jt_other_device", 103_000);
    let revoked = c.revoke_session(token, 103_000).unwrap();
    assert_eq!(
        revoked.notices,
        vec![Notice::SessionRevoked {
            token_hash: hash,
            user_uid: alice.user_uid.clone(),
            device_id: alice.device_id.clone(),
        }]
    );
    assert_eq!(denied(c.redeem_ticket(&before, 103_001)), "rtc_join_denied");
    c.redeem_ticket(&other, 103_001).unwrap();

    // Voids are forgotten once no ticket from before them can still verify.
    let late = claims(&c, &alice, "jt_unknown", 104);
    assert_eq!(denied(c.redeem_ticket(&late, 103_500)), "rtc_join_denied");
    c.sweep(200_000);
    let fresh = claims(&c, &alice, "jt_unknown_later", 260);
    c.redeem_ticket(&fresh, 200_001).unwrap();
}

#[test]
fn a_reload_keeps_the_voids_of_tickets_taken_before_a_leave() {
    let mut c = community();
    let alice = actor("uid_alice");
    let before = grant(&mut c, &alice, "jt_before_reload", 100_000);
    c.leave(&alice, "home", 100_000).unwrap();
    // A failed write makes the authority reload the rest from storage: the fresh state gets
    // what only lived in memory.
    let volatile = c.take_volatile();
    let mut reloaded = community();
    reloaded.restore_volatile(volatile);
    assert_eq!(
        reloaded.redeem_ticket(&before, 100_001).unwrap_err().code(),
        "rtc_join_denied"
    );
}
