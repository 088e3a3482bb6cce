//! The community domain through the storage bridge, on both engines: every `Record` written with
//! `WriteOp::Apply` and read back through `load_snapshot`, `messages`, `message` and
//! `events_after`. History pages are held to `MemoryHistory::query` (the executable definition)
//! by a property test. Like `storage_bridge.rs`, callers drive futures from plain OS threads.

mod support;

use std::cell::Cell;
use std::collections::HashMap;

use openchatd::domain::history::MemoryHistory;
use openchatd::domain::model::*;
use openchatd::domain::records::{MessagePage, MessageQuery, Record, Snapshot, Visibility};
use openchatd::storage::{Storage, StorageError, WriteOp, WriteOutcome};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::storage::{StorageHarness, apply, now};
use support::{block_on, join_all};

const HOUR: Millis = 3_600_000;

fn snapshot(storage: &Storage) -> Snapshot {
    block_on(storage.load_snapshot(100)).expect("snapshot loads")
}

// ---- fixtures --------------------------------------------------------------------------------

fn server(id: &str, name: &str) -> Server {
    Server {
        id: id.to_owned().into(),
        display_name: name.to_owned(),
        description: format!("about {name}"),
        banner_preset: "ocean".to_owned(),
        discoverable: true,
        join_policy: JoinPolicy::Open,
        owner_uid: None,
        created_by_uid: Some("u-alice".to_owned().into()),
        created_at: 1_000,
        updated_by_uid: None,
        updated_at: 1_000,
    }
}

fn category(id: &str, label: &str) -> Category {
    Category {
        id: id.to_owned(),
        server_id: "srv-1".to_owned().into(),
        label: label.to_owned(),
        kind: ChannelKind::Text,
        position: 0,
        created_by_uid: None,
        created_at: 2_000,
    }
}

fn channel(id: &str, name: &str) -> Channel {
    Channel {
        id: id.to_owned().into(),
        server_id: "srv-1".to_owned().into(),
        category_id: "cat-1".to_owned(),
        name: name.to_owned(),
        kind: ChannelKind::Text,
        position: 1,
        history_visibility: HistoryVisibility::Joined,
        encryption: Encryption::None,
        created_by_uid: Some("u-alice".to_owned().into()),
        created_at: 3_000,
        access: ChannelAccess {
            view_min_role: Some(Role::Moderator),
            post_min_role: None,
            member_speak: false,
        },
    }
}

fn span(joined_seq: Seq, left_seq: Option<Seq>) -> Span {
    Span {
        joined_seq,
        joined_at: joined_seq * 10,
        left_seq,
        left_at: left_seq.map(|s| s * 10),
    }
}

fn membership(user: &str, role: Role, spans: Vec<Span>) -> Membership {
    Membership {
        server_id: "srv-1".to_owned().into(),
        user_uid: user.to_owned().into(),
        role,
        spans,
    }
}

fn profile(user: &str, name: &str, version: i64) -> Profile {
    Profile {
        user_uid: user.to_owned().into(),
        display_name: name.to_owned(),
        avatar_mode: AvatarMode::Generated,
        avatar_preset_id: Some("preset-3".to_owned()),
        avatar_asset_id: None,
        version,
        updated_at: 4_000 + version,
    }
}

fn avatar(id: &str, bytes: u64) -> AvatarAsset {
    AvatarAsset {
        id: id.to_owned(),
        owner_uid: "u-alice".to_owned().into(),
        blob: "ab".repeat(32),
        content_type: "image/png".to_owned(),
        width: 256,
        height: u32::MAX,
        bytes,
        created_at: 5_000,
    }
}

fn claim(hash: &str, expires_at: Millis, used_at: Option<Millis>) -> ClaimToken {
    ClaimToken {
        token_hash: hash.to_owned(),
        server_id: "srv-1".to_owned().into(),
        expires_at,
        used_at,
    }
}

fn device(id: &str, revoked_at: Option<Millis>) -> Device {
    Device {
        device_id: id.to_owned(),
        user_uid: "u-alice".to_owned().into(),
        public_key: "pk-".to_owned() + id,
        created_at: 6_000,
        revoked_at,
    }
}

fn session(hash: &str, expires_at: Millis, revoked_at: Option<Millis>) -> Session {
    Session {
        token_hash: hash.to_owned(),
        user_uid: "u-alice".to_owned().into(),
        device_id: "dev-1".to_owned(),
        created_at: 7_000,
        expires_at,
        revoked_at,
    }
}

fn read_ack(user: &str, channel: &str, seq: Seq) -> ReadAck {
    ReadAck {
        user_uid: user.to_owned().into(),
        channel_id: channel.to_owned().into(),
        message_id: format!("msg_{seq}").into(),
        seq,
        acked_at: 8_000 + seq,
    }
}

fn plain(seq: Seq, channel: &str) -> Message {
    Message {
        seq,
        id: format!("msg_{seq}"),
        server_id: "srv-1".to_owned(),
        channel_id: channel.to_owned(),
        author_uid: "u-alice".to_owned(),
        author_device_id: "dev-1".to_owned(),
        content: Content::Plain {
            body: format!("hello {seq} — ünïcode ✓"),
        },
        reply_to_id: None,
        mentions: vec![],
        attachments: vec![],
        created_at: 10_000 + seq,
        deleted_at: None,
    }
}

fn rich(seq: Seq, channel: &str) -> Message {
    Message {
        content: Content::Envelope(Envelope {
            epoch: 7,
            ciphertext: "Y2lwaGVy".to_owned(),
            sender_device_id: "dev-1".to_owned(),
        }),
        reply_to_id: Some("msg_1".to_owned()),
        mentions: vec![Mention {
            kind: "user".to_owned(),
            token: "<@u-bob>".to_owned(),
            target_id: "u-bob".to_owned(),
            display_text: "@bob".to_owned(),
            range: Utf16Range { start: 0, end: 4 },
        }],
        attachments: vec![Attachment {
            attachment_id: format!("att_{}", "cd".repeat(32)),
            file_name: "cat \"photo\".png".to_owned(),
            width: 640,
            height: 480,
            content_type: "image/png".to_owned(),
            bytes: 12_345,
        }],
        ..plain(seq, channel)
    }
}

fn event(server_id: &str, event_id: i64) -> StoredEvent {
    StoredEvent {
        server_id: server_id.to_owned().into(),
        event_id: EventId(event_id as u64),
        kind: "message.created".to_owned(),
        payload: format!(r#"{{"type":"message.created","event_id":{event_id},"text":"a\"b"}}"#),
        created_at: 20_000 + event_id,
    }
}

fn latest(channel: &str, limit: usize) -> MessageQuery {
    MessageQuery {
        channel_id: channel.to_owned(),
        visibility: Visibility::All,
        before: None,
        after: None,
        limit,
        include_deleted: true,
    }
}

/// One of every record, and the snapshot they should produce (at a time between the token and
/// session expiries below).
fn everything() -> (Vec<Record>, Snapshot) {
    let now = now();
    let servers = vec![server("srv-1", "One"), {
        let mut s = server("srv-2", "Two");
        s.owner_uid = Some("u-bob".to_owned().into());
        s.discoverable = false;
        s.updated_by_uid = Some("u-bob".to_owned().into());
        s
    }];
    let categories = vec![category("cat-1", "Text"), {
        let mut c = category("cat-2", "Voice");
        c.kind = ChannelKind::Voice;
        c.position = 1;
        c.created_by_uid = Some("u-alice".to_owned().into());
        c
    }];
    let channels = vec![channel("ch-1", "general"), {
        let mut c = channel("ch-2", "lounge");
        c.kind = ChannelKind::Voice;
        c.category_id = "cat-2".to_owned();
        c.history_visibility = HistoryVisibility::Public;
        c.encryption = Encryption::E2ee;
        c.created_by_uid = None;
        c
    }];
    let memberships = vec![
        membership("u-alice", Role::Owner, vec![span(0, None)]),
        membership("u-bob", Role::Member, vec![span(2, Some(5))]),
    ];
    let profiles = vec![profile("u-alice", "Alice", 1), {
        let mut p = profile("u-bob", "Bob", 0);
        p.avatar_mode = AvatarMode::Uploaded;
        p.avatar_preset_id = None;
        p.avatar_asset_id = Some("av-1".to_owned());
        p
    }];
    let avatar_assets = vec![avatar("av-1", 1_234_567)];
    let claim_tokens = vec![claim("claim-live", now + HOUR, None)];
    let devices = vec![device("dev-1", None), device("dev-2", Some(9_000))];
    let sessions = vec![session("sess-live", now + HOUR, None)];
    let read_acks = vec![read_ack("u-alice", "ch-1", 2), read_ack("u-bob", "ch-1", 1)];
    let messages = [plain(1, "ch-1"), rich(2, "ch-1")];
    let events = vec![event("srv-1", 1), event("srv-1", 2), event("srv-2", 1)];

    let mut records = Vec::new();
    records.extend(servers.iter().cloned().map(Record::Server));
    records.extend(categories.iter().cloned().map(Record::Category));
    records.extend(channels.iter().cloned().map(Record::Channel));
    records.extend(memberships.iter().cloned().map(Record::Membership));
    records.extend(profiles.iter().cloned().map(Record::Profile));
    records.extend(avatar_assets.iter().cloned().map(Record::AvatarAsset));
    records.extend(claim_tokens.iter().cloned().map(Record::ClaimToken));
    records.extend(devices.iter().cloned().map(Record::Device));
    records.extend(sessions.iter().cloned().map(Record::Session));
    records.extend(read_acks.iter().cloned().map(Record::ReadAck));
    // In force: a ban until lifted and a channel lock; a lifted timeout is not loaded.
    let moderation = vec![
        Moderation {
            server_id: "srv-1".to_owned().into(),
            kind: ModerationKind::Ban,
            target: "u-carol".to_owned(),
            until: None,
            active: true,
            by_uid: "u-alice".to_owned().into(),
            at: 1_000,
        },
        Moderation {
            server_id: "srv-1".to_owned().into(),
            kind: ModerationKind::Lock,
            target: "ch-voice".to_owned(),
            until: Some(i64::MAX),
            active: true,
            by_uid: "u-alice".to_owned().into(),
            at: 1_001,
        },
    ];
    records.extend(moderation.iter().cloned().map(Record::Moderation));
    records.push(Record::Moderation(Moderation {
        server_id: "srv-1".to_owned().into(),
        kind: ModerationKind::Timeout,
        target: "u-dave".to_owned(),
        until: Some(5_000),
        active: false,
        by_uid: "u-alice".to_owned().into(),
        at: 1_002,
    }));
    let identity_bindings = vec![openchatd::domain::identity::IdentityBinding {
        user_uid: "u-legacy".to_owned(),
        public_key: "key-legacy".to_owned(),
        server_id: "srv-1".to_owned(),
        approved_by_uid: "u-alice".to_owned(),
        approved_at: 1_003,
    }];
    records.extend(
        identity_bindings
            .iter()
            .cloned()
            .map(Record::IdentityBinding),
    );
    // Live invites are loaded (after an upsert that raised the count); revoked and expired
    // ones are not.
    let invite = |id: &str, expires_at: i64, revoked_at: Option<i64>| Invite {
        id: id.to_owned(),
        server_id: "srv-1".to_owned().into(),
        code_hash: format!("hash-{id}"),
        created_by_uid: "u-alice".to_owned().into(),
        expires_at,
        max_uses: 5,
        use_count: 0,
        created_at: 1_004,
        revoked_at,
    };
    let live = Invite {
        use_count: 3,
        ..invite("inv-live", i64::MAX, None)
    };
    records.push(Record::Invite(invite("inv-live", i64::MAX, None)));
    records.push(Record::Invite(live.clone()));
    records.push(Record::Invite(invite("inv-revoked", i64::MAX, Some(1_005))));
    records.push(Record::Invite(invite("inv-expired", 2_000, None)));
    let invites = vec![live];
    // Privacy and server profiles: the upsert replaces the row; a cleared profile is kept.
    let privacy = |version: i64, presence| Privacy {
        server_id: "srv-1".to_owned().into(),
        user_uid: "u-bob".to_owned().into(),
        presence_visibility: presence,
        mention_permission: MentionPermission::StaffOnly,
        version,
        updated_at: 1_006 + version,
    };
    records.push(Record::Privacy(privacy(1, PresenceVisibility::Visible)));
    records.push(Record::Privacy(privacy(2, PresenceVisibility::Hidden)));
    let privacy = vec![privacy(2, PresenceVisibility::Hidden)];
    let server_profile = |uid: &str, cleared: bool| ServerProfile {
        server_id: "srv-1".to_owned().into(),
        user_uid: uid.to_owned().into(),
        display_name: format!("{uid} here"),
        avatar_mode: AvatarMode::Uploaded,
        avatar_preset_id: Some("preset-2".to_owned()),
        avatar_asset_id: Some("av-1".to_owned()),
        version: 3,
        updated_at: 1_010,
        cleared,
    };
    records.push(Record::ServerProfile(ServerProfile {
        version: 1,
        ..server_profile("u-alice", false)
    }));
    records.push(Record::ServerProfile(server_profile("u-alice", true)));
    records.push(Record::ServerProfile(server_profile("u-bob", false)));
    let mut server_profiles = vec![
        server_profile("u-alice", true),
        server_profile("u-bob", false),
    ];
    server_profiles.sort_by(|a, b| a.user_uid.cmp(&b.user_uid));
    // The audit is appended, read in pages (not loaded), and counted: a retried insert of the
    // same seq changes nothing.
    let audit = |seq: i64| AuditEntry {
        seq,
        audit_id: format!("aud-{seq}"),
        server_id: "srv-1".to_owned().into(),
        case_id: (seq == 2).then(|| "case-1".to_owned()),
        actor_uid: "u-alice".to_owned().into(),
        event_type: "role_updated".to_owned(),
        payload: format!("{{\"n\":{seq}}}"),
        created_at: 1_020 + seq,
    };
    records.push(Record::Audit(audit(1)));
    records.push(Record::Audit(audit(2)));
    records.push(Record::Audit(AuditEntry {
        payload: "{\"rewritten\":true}".to_owned(),
        ..audit(2)
    }));
    // Moderation: a case whose status changes (upsert), its action, a policy set twice, a
    // proposal decided (upsert of its status) and two votes, one sent twice.
    let case = Case {
        id: "case-1".to_owned(),
        server_id: "srv-1".to_owned().into(),
        reporter_uid: "u-bob".to_owned().into(),
        target_uid: "u-carol".to_owned().into(),
        channel_id: Some("ch-1".to_owned()),
        message_id: Some("msg_1".to_owned()),
        reason_code: "spam".to_owned(),
        reason_text: Some("links".to_owned()),
        status: CaseStatus::Open,
        created_at: 1_030,
        closed_at: None,
    };
    records.push(Record::Case(case.clone()));
    let case = Case {
        status: CaseStatus::Enforced,
        closed_at: Some(1_040),
        ..case
    };
    records.push(Record::Case(case.clone()));
    let action = ModAction {
        id: "act-1".to_owned(),
        case_id: "case-1".to_owned(),
        server_id: "srv-1".to_owned().into(),
        action_type: ActionType::TimeoutLong,
        target_uid: "u-carol".to_owned().into(),
        channel_id: None,
        duration_seconds: Some(7_200),
        expires_at: Some(8_000_000),
        enforced_by_uid: "u-alice".to_owned().into(),
        enforced_at: 1_040,
    };
    records.push(Record::ModAction(action.clone()));
    for threshold in [1, 2] {
        records.push(Record::VotePolicy {
            server_id: "srv-1".to_owned(),
            policy: VotePolicy {
                threshold,
                quorum: 2,
                window_seconds: 600,
            },
            updated_at: 1_031,
        });
    }
    let proposal = Proposal {
        id: "prop-1".to_owned(),
        case_id: "case-1".to_owned(),
        server_id: "srv-1".to_owned().into(),
        action_type: ActionType::TimeoutLong,
        duration_seconds: Some(7_200),
        proposed_by_uid: "u-alice".to_owned().into(),
        policy: VotePolicy {
            threshold: 2,
            quorum: 2,
            window_seconds: 600,
        },
        expires_at: 1_632,
        status: ProposalStatus::Open,
        created_at: 1_032,
        idempotency_key: Some("key-1".to_owned()),
    };
    records.push(Record::Proposal(proposal.clone()));
    let proposal = Proposal {
        status: ProposalStatus::Enforced,
        ..proposal
    };
    records.push(Record::Proposal(proposal.clone()));
    let vote = |voter: &str, value| Vote {
        proposal_id: "prop-1".to_owned(),
        voter_uid: voter.to_owned().into(),
        value,
        at: 1_035,
    };
    records.push(Record::Vote(vote("u-alice", VoteValue::Yes)));
    records.push(Record::Vote(vote("u-dave", VoteValue::Yes)));
    records.push(Record::Vote(vote("u-dave", VoteValue::No)));
    // Evidence: inserted once, and a deleted one is gone.
    for case_id in ["case-1", "case-gone"] {
        records.push(Record::Evidence {
            case_id: case_id.to_owned(),
            server_id: "srv-1".to_owned(),
            sealed: format!("sealed-{case_id}"),
            created_at: 1_036,
        });
    }
    records.push(Record::EvidenceDeleted {
        case_id: "case-gone".to_owned(),
    });
    records.extend(messages.iter().cloned().map(Record::Message));
    records.extend(events.iter().cloned().map(Record::Event));

    let expected = Snapshot {
        servers,
        categories,
        channels,
        memberships,
        profiles,
        avatar_assets,
        claim_tokens,
        devices,
        sessions,
        read_acks,
        moderation,
        identity_bindings,
        invites,
        privacy,
        server_profiles,
        // Part C's tables: `tests/storage_keys.rs`.
        keys: Default::default(),
        last_seq: 2,
        last_audit_seq: 2,
        cases: vec![case],
        mod_actions: vec![action],
        vote_policies: vec![(
            "srv-1".to_owned(),
            VotePolicy {
                threshold: 2,
                quorum: 2,
                window_seconds: 600,
            },
        )],
        proposals: vec![proposal],
        votes: vec![
            vote("u-alice", VoteValue::Yes),
            vote("u-dave", VoteValue::Yes),
        ],
        evidence: vec![("case-1".to_owned(), "sealed-case-1".to_owned())],
        last_event_ids: HashMap::from([
            ("srv-1".to_owned(), EventId(2)),
            ("srv-2".to_owned(), EventId(1)),
        ]),
        recent_events: events,
    };
    (records, expected)
}

// ---- the shared suite ------------------------------------------------------------------------

fn empty_storage_gives_an_empty_snapshot(h: StorageHarness) {
    let (storage, handle) = h.start();
    assert_eq!(snapshot(&storage), Snapshot::default());
    assert_eq!(block_on(storage.message("msg_1")), Ok(None));
    assert_eq!(
        block_on(storage.messages(latest("ch-1", 10))),
        Ok(MessagePage::default())
    );
    assert_eq!(
        block_on(storage.events_after("srv-1", EventId(0), 10)),
        Ok(vec![])
    );
    handle.shutdown();
}

fn every_record_round_trips(h: StorageHarness) {
    let (records, expected) = everything();
    let (storage, handle) = h.start();
    apply(&storage, records);
    assert_eq!(snapshot(&storage), expected);

    let stored = block_on(storage.message("msg_2")).unwrap().unwrap();
    assert_eq!(stored, rich(2, "ch-1"));
    // Audit pages: newest first, before a seq, bounded; the retried insert left row 2 as it was.
    let audit = block_on(storage.audit_page("srv-1", i64::MAX, 10)).unwrap();
    let seen: Vec<(i64, &str)> = audit.iter().map(|a| (a.seq, a.payload.as_str())).collect();
    assert_eq!(seen, [(2, "{\"n\":2}"), (1, "{\"n\":1}")]);
    assert_eq!(audit[0].case_id.as_deref(), Some("case-1"));
    assert_eq!(
        block_on(storage.audit_page("srv-1", 2, 10)).unwrap().len(),
        1
    );
    assert_eq!(
        block_on(storage.audit_page("srv-1", i64::MAX, 1))
            .unwrap()
            .len(),
        1
    );
    assert!(
        block_on(storage.audit_page("srv-2", i64::MAX, 10))
            .unwrap()
            .is_empty()
    );
    let page = block_on(storage.messages(latest("ch-1", 10))).unwrap();
    assert_eq!(page.messages, vec![plain(1, "ch-1"), rich(2, "ch-1")]);
    assert_eq!(page.reply_targets, vec![plain(1, "ch-1")]);
    assert!(!page.has_older);
    assert_eq!(
        block_on(storage.events_after("srv-1", EventId(0), 10)),
        Ok(vec![event("srv-1", 1), event("srv-1", 2)])
    );

    // The two records that remove or change rather than upsert.
    apply(
        &storage,
        vec![
            Record::DeleteCategory {
                id: "cat-2".to_owned(),
            },
            Record::MessageDeleted {
                id: "msg_1".to_owned(),
                deleted_at: 99_000,
            },
        ],
    );
    let after = snapshot(&storage);
    assert_eq!(after.categories, vec![category("cat-1", "Text")]);
    let deleted = block_on(storage.message("msg_1")).unwrap().unwrap();
    assert_eq!(deleted.deleted_at, Some(99_000));
    assert_eq!(
        Message {
            deleted_at: None,
            ..deleted
        },
        plain(1, "ch-1")
    );
    let mut visible_only = latest("ch-1", 10);
    visible_only.include_deleted = false;
    let page = block_on(storage.messages(visible_only)).unwrap();
    assert_eq!(page.messages, vec![rich(2, "ch-1")]);
    // Deleted reply targets are still handed out, for the "original was deleted" preview.
    assert_eq!(page.reply_targets.len(), 1);
    assert_eq!(page.reply_targets[0].deleted_at, Some(99_000));
    handle.shutdown();

    // Everything is still there after a restart.
    let (storage, handle) = h.start();
    assert_eq!(snapshot(&storage), after);
    handle.shutdown();
}

fn upserts_overwrite(h: StorageHarness) {
    let (records, mut expected) = everything();
    let (storage, handle) = h.start();
    apply(&storage, records);

    let now = now();
    let mut renamed = server("srv-1", "Renamed");
    renamed.owner_uid = Some("u-carol".to_owned().into());
    renamed.updated_at = 50_000;
    let mut moved = category("cat-1", "Moved");
    moved.position = 9;
    let mut channel_moved = channel("ch-1", "general-2");
    channel_moved.category_id = "cat-2".to_owned();
    channel_moved.history_visibility = HistoryVisibility::Members;
    let promoted = membership(
        "u-bob",
        Role::Moderator,
        vec![span(2, Some(5)), span(7, None)],
    );
    let mut resized = avatar("av-1", 99);
    resized.width = 1;
    let revoked = device("dev-1", Some(60_000));
    let acked = read_ack("u-bob", "ch-1", 2);
    // Using a claim token and revoking a session take them out of the snapshot.
    let used = claim("claim-live", now + HOUR, Some(now));
    let ended = session("sess-live", now + HOUR, Some(now));
    apply(
        &storage,
        vec![
            Record::Server(renamed.clone()),
            Record::Category(moved.clone()),
            Record::Channel(channel_moved.clone()),
            Record::Membership(promoted.clone()),
            Record::Profile(profile("u-alice", "Alice B.", 2)),
            Record::AvatarAsset(resized.clone()),
            Record::ClaimToken(used),
            Record::Device(revoked.clone()),
            Record::Session(ended),
            Record::ReadAck(acked.clone()),
            // Insert-if-absent: a message or event with a stored key is left as it was.
            Record::Message(Message {
                content: Content::Plain {
                    body: "rewritten".to_owned(),
                },
                ..plain(1, "ch-1")
            }),
            Record::Event(StoredEvent {
                payload: "{}".to_owned(),
                ..event("srv-1", 1)
            }),
        ],
    );
    expected.servers[0] = renamed;
    expected.categories[0] = moved;
    expected.channels[0] = channel_moved;
    expected.memberships[1] = promoted;
    expected.profiles[0] = profile("u-alice", "Alice B.", 2);
    expected.avatar_assets[0] = resized;
    expected.claim_tokens.clear();
    expected.devices[0] = revoked;
    expected.sessions.clear();
    expected.read_acks[1] = acked;
    assert_eq!(snapshot(&storage), expected);
    assert_eq!(
        block_on(storage.message("msg_1")),
        Ok(Some(plain(1, "ch-1")))
    );
    assert_eq!(
        block_on(storage.events_after("srv-1", EventId(0), 1)),
        Ok(vec![event("srv-1", 1)])
    );
    handle.shutdown();
}

fn apply_is_idempotent(h: StorageHarness) {
    let (records, expected) = everything();
    let (storage, handle) = h.start();
    apply(&storage, records.clone());
    let once = snapshot(&storage);
    let page_once = block_on(storage.messages(latest("ch-1", 10))).unwrap();
    apply(&storage, records.clone());
    // And twice within one op, and once more concurrently with itself (one batch).
    let doubled: Vec<Record> = records.iter().chain(&records).cloned().collect();
    apply(&storage, doubled);
    let writes = (0..4)
        .map(|_| storage.write(WriteOp::Apply(records.clone())))
        .collect();
    for outcome in block_on(join_all(writes)) {
        assert_eq!(outcome, Ok(WriteOutcome::Done));
    }
    assert_eq!(snapshot(&storage), once);
    assert_eq!(once, expected);
    assert_eq!(
        block_on(storage.messages(latest("ch-1", 10))).unwrap(),
        page_once
    );
    handle.shutdown();
}

fn memberships_keep_several_spans(h: StorageHarness) {
    let (storage, handle) = h.start();
    let spans = vec![span(0, Some(3)), span(5, Some(8)), span(13, None)];
    let other_server = Membership {
        server_id: "srv-2".to_owned().into(),
        ..membership("u-bob", Role::Admin, vec![span(1, None)])
    };
    apply(
        &storage,
        vec![
            Record::Membership(membership("u-bob", Role::Member, spans.clone())),
            Record::Membership(other_server.clone()),
            Record::Membership(membership("u-carol", Role::Member, vec![])),
        ],
    );
    assert_eq!(
        snapshot(&storage).memberships,
        vec![
            membership("u-bob", Role::Member, spans.clone()),
            membership("u-carol", Role::Member, vec![]),
            other_server.clone(),
        ]
    );
    // Spans are replaced as a set: closing the open one and dropping the first.
    let replaced = vec![span(5, Some(8)), span(13, Some(21))];
    apply(
        &storage,
        vec![Record::Membership(membership(
            "u-bob",
            Role::Moderator,
            replaced.clone(),
        ))],
    );
    let memberships = snapshot(&storage).memberships;
    assert_eq!(
        memberships[0],
        membership("u-bob", Role::Moderator, replaced)
    );
    assert!(!memberships[0].is_current());
    assert_eq!(memberships[2], other_server, "other servers untouched");
    handle.shutdown();
}

fn sessions_and_claim_tokens_are_filtered(h: StorageHarness) {
    let (storage, handle) = h.start();
    let now = now();
    let live_claim = claim("c-live", now + HOUR, None);
    let live_session = session("s-live", now + HOUR, None);
    apply(
        &storage,
        vec![
            Record::ClaimToken(live_claim.clone()),
            Record::ClaimToken(claim("c-expired", now - 1, None)),
            Record::ClaimToken(claim("c-used", now + HOUR, Some(now - 5))),
            Record::Session(live_session.clone()),
            Record::Session(session("s-expired", now - 1, None)),
            Record::Session(session("s-revoked", now + HOUR, Some(now - 5))),
            // Devices are all kept, revoked or not: the domain needs the bindings.
            Record::Device(device("d-live", None)),
            Record::Device(device("d-revoked", Some(now - 5))),
        ],
    );
    let snapshot = snapshot(&storage);
    assert_eq!(snapshot.claim_tokens, vec![live_claim]);
    assert_eq!(snapshot.sessions, vec![live_session]);
    assert_eq!(snapshot.devices.len(), 2);
    handle.shutdown();
}

fn events_are_windowed_per_server(h: StorageHarness) {
    let (storage, handle) = h.start();
    // srv-a: 1..=10, srv-b: 1..=2, srv-c: 5 and 7 only (gaps are allowed), written out of order.
    let mut events: Vec<StoredEvent> = (1..=10).map(|id| event("srv-a", id)).collect();
    events.extend([event("srv-b", 2), event("srv-b", 1)]);
    events.extend([event("srv-c", 7), event("srv-c", 5)]);
    events.reverse();
    apply(&storage, events.into_iter().map(Record::Event).collect());

    let snapshot = block_on(storage.load_snapshot(3)).unwrap();
    assert_eq!(
        snapshot.last_event_ids,
        HashMap::from([
            ("srv-a".to_owned(), EventId(10)),
            ("srv-b".to_owned(), EventId(2)),
            ("srv-c".to_owned(), EventId(7)),
        ])
    );
    assert_eq!(
        snapshot.recent_events,
        vec![
            event("srv-a", 8),
            event("srv-a", 9),
            event("srv-a", 10),
            event("srv-b", 1),
            event("srv-b", 2),
            event("srv-c", 5),
            event("srv-c", 7),
        ]
    );
    assert_eq!(
        block_on(storage.load_snapshot(0)).unwrap().recent_events,
        vec![]
    );

    assert_eq!(
        block_on(storage.events_after("srv-a", EventId(4), 3)),
        Ok(vec![
            event("srv-a", 5),
            event("srv-a", 6),
            event("srv-a", 7)
        ])
    );
    assert_eq!(
        block_on(storage.events_after("srv-c", EventId(5), 10)),
        Ok(vec![event("srv-c", 7)])
    );
    assert_eq!(
        block_on(storage.events_after("srv-a", EventId(10), 10)),
        Ok(vec![])
    );
    assert_eq!(
        block_on(storage.events_after("srv-z", EventId(0), 10)),
        Ok(vec![])
    );
    handle.shutdown();
}

fn concurrent_applies_are_group_committed(h: StorageHarness) {
    const THREADS: usize = 6;
    const PER_THREAD: usize = 50;
    const TOTAL: usize = THREADS * PER_THREAD;
    let (storage, handle) = h.start();
    let before = storage.stats();
    let writers: Vec<_> = (0..THREADS)
        .map(|thread| {
            let storage = storage.clone();
            std::thread::spawn(move || {
                let writes = (0..PER_THREAD)
                    .map(|i| {
                        let seq = (i * THREADS + thread + 1) as Seq;
                        storage.write(WriteOp::Apply(vec![
                            Record::Message(plain(seq, "ch-busy")),
                            Record::Event(event("srv-1", seq)),
                        ]))
                    })
                    .collect();
                block_on(join_all(writes))
            })
        })
        .collect();
    for writer in writers {
        for outcome in writer.join().unwrap() {
            assert_eq!(outcome, Ok(WriteOutcome::Done));
        }
    }
    let stats = storage.stats();
    let batches = stats.write_batches - before.write_batches;
    eprintln!(
        "[{}] {TOTAL} concurrent Apply([Message, Event]) committed in {batches} batches \
         (largest {})",
        storage.engine_name(),
        stats.largest_batch
    );
    assert_eq!(
        stats.writes_committed - before.writes_committed,
        TOTAL as u64
    );
    assert!(batches <= (TOTAL / 10) as u64, "little grouping: {stats:?}");

    let page = block_on(storage.messages(latest("ch-busy", TOTAL + 1))).unwrap();
    let seqs: Vec<Seq> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=TOTAL as Seq).collect::<Vec<_>>());
    assert_eq!(page.messages[41], plain(42, "ch-busy"));
    let events = block_on(storage.events_after("srv-1", EventId(0), TOTAL + 1)).unwrap();
    assert_eq!(events.len(), TOTAL);
    assert_eq!(events[TOTAL - 1], event("srv-1", TOTAL as i64));
    let snapshot = block_on(storage.load_snapshot(10)).unwrap();
    assert_eq!(snapshot.last_seq, TOTAL as Seq);
    assert_eq!(snapshot.last_event_ids["srv-1"], EventId(TOTAL as u64));
    assert_eq!(snapshot.recent_events.len(), 10);
    handle.shutdown();
}

fn a_failing_apply_fails_alone_and_whole(h: StorageHarness) {
    let (storage, handle) = h.start();
    // u64::MAX bytes cannot be stored; the message beside it in the same Apply must not be
    // stored either, and the other Applies of the batch must commit.
    let writes = vec![
        storage.write(WriteOp::Apply(vec![
            Record::Message(plain(1, "ch-1")),
            Record::Event(event("srv-1", 1)),
        ])),
        storage.write(WriteOp::Apply(vec![
            Record::Message(plain(2, "ch-1")),
            Record::AvatarAsset(avatar("av-huge", u64::MAX)),
            Record::Event(event("srv-1", 2)),
        ])),
        storage.write(WriteOp::Apply(vec![Record::Message(plain(3, "ch-1"))])),
    ];
    let outcomes = block_on(join_all(writes));
    assert_eq!(outcomes[0], Ok(WriteOutcome::Done));
    assert!(
        matches!(outcomes[1], Err(StorageError::Internal(_))),
        "{:?}",
        outcomes[1]
    );
    assert_eq!(outcomes[2], Ok(WriteOutcome::Done));
    let page = block_on(storage.messages(latest("ch-1", 10))).unwrap();
    let seqs: Vec<Seq> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![1, 3]);
    let snapshot = snapshot(&storage);
    assert!(snapshot.avatar_assets.is_empty());
    assert_eq!(snapshot.recent_events, vec![event("srv-1", 1)]);
    handle.shutdown();
}

// ---- history pages against the reference -----------------------------------------------------

/// A message of a generated history: the gap to the previous seq, which channel, what it
/// replies to (an earlier message by index, or a dangling id), whether it is an envelope, and
/// whether it gets deleted afterwards.
type MessageSpec = (Seq, bool, Option<usize>, bool, bool);

/// A generated query: channel (0, 1, or 2 = a channel with no messages), spans (`None` = all),
/// before, after, limit, include_deleted.
type QuerySpec = (
    u8,
    Option<Vec<(Seq, Option<Seq>)>>,
    Option<Seq>,
    Option<Seq>,
    usize,
    bool,
);

fn history_case() -> impl Strategy<Value = (Vec<MessageSpec>, Vec<QuerySpec>)> {
    let message = (
        1..=3 as Seq,
        any::<bool>(),
        prop::option::of(0..48usize),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.25),
    );
    prop::collection::vec(message, 0..40).prop_flat_map(|specs| {
        // Bounds and span ends range over the history's seqs and one step past either end.
        let last: Seq = specs.iter().map(|spec| spec.0).sum();
        let bound = move || -1..=last + 2;
        let spans = prop::collection::vec((bound(), prop::option::of(bound())), 0..4);
        let query = (
            0..3u8,
            prop::option::weighted(0.7, spans),
            prop::option::of(bound()),
            prop::option::weighted(0.4, bound()),
            0..9usize,
            any::<bool>(),
        );
        (Just(specs), prop::collection::vec(query, 1..16))
    })
}

fn messages_match_the_reference(h: StorageHarness) {
    let (storage, handle) = h.start();
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    // Cases share the database: each gets its own channels, ids and seq range.
    let case = Cell::new(0i64);
    let result = runner.run(&history_case(), |(specs, queries)| {
        case.set(case.get() + 1);
        let base = case.get() * 1_000_000;
        let channel = |which: u8| format!("case{}-ch{which}", case.get());
        // Message ids are positions (`msg_<seq>`): the id of the message at `index`.
        let mut seqs: Vec<i64> = Vec::new();

        let mut reference = MemoryHistory::new();
        let mut messages = Vec::new();
        let mut seq = base;
        for (index, &(gap, second, reply_to, envelope, _)) in specs.iter().enumerate() {
            seq += gap;
            let mut message = if envelope {
                rich(seq, &channel(second as u8))
            } else {
                plain(seq, &channel(second as u8))
            };
            message.id = message_id(seq);
            message.reply_to_id = reply_to.map(|target| {
                if target < index {
                    message_id(seqs[target])
                } else {
                    // A message that was never stored.
                    message_id(base + 999_000 + target as i64)
                }
            });
            seqs.push(seq);
            reference.insert(message.clone());
            messages.push(message);
        }
        let writes = messages
            .iter()
            .map(|m| storage.write(WriteOp::Apply(vec![Record::Message(m.clone())])))
            .collect();
        for outcome in block_on(join_all(writes)) {
            prop_assert_eq!(outcome, Ok(WriteOutcome::Done));
        }
        let deletions: Vec<_> = specs
            .iter()
            .enumerate()
            .filter(|(_, spec)| spec.4)
            .map(|(index, _)| {
                let deleted_at = 90_000 + index as Millis;
                reference.mark_deleted(&message_id(seqs[index]), deleted_at);
                storage.write(WriteOp::Apply(vec![Record::MessageDeleted {
                    id: message_id(seqs[index]),
                    deleted_at,
                }]))
            })
            .collect();
        for outcome in block_on(join_all(deletions)) {
            prop_assert_eq!(outcome, Ok(WriteOutcome::Done));
        }

        for (which, spans, before, after, limit, include_deleted) in queries {
            let query = MessageQuery {
                channel_id: channel(which),
                visibility: match spans {
                    None => Visibility::All,
                    Some(spans) => Visibility::Spans(
                        spans
                            .into_iter()
                            .map(|(lo, hi)| (base + lo, hi.map(|hi| base + hi)))
                            .collect(),
                    ),
                },
                before: before.map(|b| base + b),
                after: after.map(|a| base + a),
                limit,
                include_deleted,
            };
            let stored = block_on(storage.messages(query.clone()));
            prop_assert_eq!(stored, Ok(reference.query(&query)), "{:?}", query);
        }
        for message in messages.iter().take(3) {
            let stored = block_on(storage.message(&message.id));
            prop_assert_eq!(stored, Ok(reference.get(&message.id).cloned()));
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("[{}] {failure}", h.engine_name());
    }
    handle.shutdown();
}

// Generates `sqlite::<test>` and `postgres::<test>` for each function of the shared suite.
support::on_both_engines!(
    harness StorageHarness:
    empty_storage_gives_an_empty_snapshot,
    every_record_round_trips,
    upserts_overwrite,
    apply_is_idempotent,
    memberships_keep_several_spans,
    sessions_and_claim_tokens_are_filtered,
    events_are_windowed_per_server,
    concurrent_applies_are_group_committed,
    a_failing_apply_fails_alone_and_whole,
    messages_match_the_reference,
);
