//! The domain rules, exercised without storage or sockets. Messages live in the in-memory
//! reference store (`history::MemoryHistory`), as storage would hold them.

use ed25519_dalek::SigningKey;

use super::community::*;
use super::history::MemoryHistory;
use super::model::*;
use super::records::{MessageQuery, Record, Snapshot, Visibility};
use super::views::{Urls, rfc3339};

const ORIGIN: &str = "https://chat.example.test";

fn settings(visibility: HistoryVisibility) -> Settings {
    Settings {
        default_server_id: "home".into(),
        default_history_visibility: visibility,
        allow_server_creation: true,
        max_message_bytes: 4000,
        rate_limit_per_minute: 1000,
        handshake_strategy: "token_proof",
        origin: ORIGIN.into(),
        urls: Urls::new(ORIGIN),
    }
}

fn community(visibility: HistoryVisibility) -> Community {
    let mut c = Community::new(settings(visibility), Snapshot::default());
    let boot = c.bootstrap_default_server("Home", Some("uid_owner"), 1_000);
    assert!(
        boot.value.is_none(),
        "an owner was configured: no claim token"
    );
    c
}

fn actor(uid: &str) -> Actor {
    Actor {
        user_uid: uid.into(),
        device_id: format!("dev_{uid}"),
    }
}

fn text_channel(c: &mut Community, server: &str, who: &Actor) -> String {
    c.channels_of(Some(who), server, 1)
        .unwrap()
        .value
        .groups
        .iter()
        .flat_map(|g| g.channels.iter())
        .find(|ch| ch.kind == "text")
        .unwrap()
        .id
        .clone()
}

/// A plaintext message without attachments, replying to `reply` if given.
fn plain(body: impl Into<String>, reply: Option<&Message>) -> NewMessage {
    NewMessage {
        content: Content::Plain { body: body.into() },
        reply_to: reply.cloned(),
        reply_to_id: reply.map(|m| m.id.clone()),
        attachments: Vec::new(),
    }
}

/// Posts through the rules and stores the result in `history`, as the authority would.
fn post(
    c: &mut Community,
    history: &mut MemoryHistory,
    who: &Actor,
    channel: &str,
    body: &str,
    reply: Option<&Message>,
) -> Message {
    let out = c
        .post_message(who, channel, plain(body, reply), 10)
        .unwrap();
    let message = out
        .records
        .iter()
        .find_map(|r| match r {
            Record::Message(m) => Some(m.clone()),
            _ => None,
        })
        .expect("a post stores a message");
    assert_eq!(out.events.len(), 1);
    assert_eq!(out.events[0].kind, "chat.message.created");
    history.insert(message.clone());
    message
}

fn read(
    c: &mut Community,
    history: &MemoryHistory,
    who: Option<&Actor>,
    channel: &str,
) -> Result<Vec<String>, super::error::DomainError> {
    let access = c.history_access(who, channel, 20)?.value;
    let page = history.query(&MessageQuery {
        channel_id: channel.into(),
        visibility: access.visibility,
        before: None,
        after: None,
        limit: 100,
        include_deleted: false,
    });
    Ok(page
        .messages
        .iter()
        .map(|m| match &m.content {
            Content::Plain { body } => body.clone(),
            Content::Envelope { .. } => String::new(),
        })
        .collect())
}

#[test]
fn the_default_server_is_seeded_with_a_text_and_a_voice_group() {
    let mut c = community(HistoryVisibility::Joined);
    let groups = c
        .channels_of(Some(&actor("uid_a")), "home", 1)
        .unwrap()
        .value
        .groups;
    let shape: Vec<(&str, Vec<(&str, &str)>)> = groups
        .iter()
        .map(|g| {
            (
                g.kind,
                g.channels
                    .iter()
                    .map(|ch| (ch.name.as_str(), ch.kind))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            ("text", vec![("general", "text")]),
            ("voice", vec![("General", "voice")])
        ]
    );
    // Bootstrapping again changes nothing.
    let again = c.bootstrap_default_server("Other name", Some("uid_owner"), 2_000);
    assert!(again.records.is_empty());
    assert_eq!(c.current_role("home", "uid_owner"), Some(Role::Owner));
}

#[test]
fn without_a_configured_owner_the_first_start_yields_a_claim_token_that_works_once() {
    let mut c = Community::new(settings(HistoryVisibility::Joined), Snapshot::default());
    let token = c
        .bootstrap_default_server("Home", None, 1)
        .value
        .expect("claim token");
    let claimer = actor("uid_claimer");
    assert_eq!(
        c.claim_ownership(&claimer, "home", "occ_wrong", 2)
            .unwrap_err()
            .code(),
        "invalid_claim_token"
    );
    let claimed = c
        .claim_ownership(&claimer, "home", &token, 2)
        .unwrap()
        .value;
    assert_eq!(claimed.owner_user_uid, "uid_claimer");
    assert_eq!(c.current_role("home", "uid_claimer"), Some(Role::Owner));
    let replay = c
        .claim_ownership(&actor("uid_thief"), "home", &token, 3)
        .unwrap_err();
    assert_eq!(replay.code(), "invalid_claim_token");
}

#[test]
fn a_created_server_is_claimed_by_a_different_uid_with_its_token_and_expires() {
    let mut c = community(HistoryVisibility::Joined);
    let creator = actor("uid_creator");
    let created = c
        .create_server(&creator, "  Rust  Club ", "hello", "forest", 100)
        .unwrap();
    let server_id = created.value.server.server_id.clone();
    assert_eq!(created.value.server.display_name, "Rust  Club");
    assert_eq!(created.value.server.banner_preset, "forest");
    assert_eq!(created.value.server.icon_text.chars().count(), 2);
    // The creator is a plain member until someone claims.
    assert_eq!(
        c.current_role(&server_id, "uid_creator"),
        Some(Role::Member)
    );
    let other = actor("uid_other");
    let token = created.value.ownership_claim.token.clone();
    // Expired tokens are refused.
    let late = c
        .claim_ownership(&other, &server_id, &token, 100 + CLAIM_TOKEN_TTL_MS)
        .unwrap_err();
    assert_eq!(late.code(), "claim_token_expired");
    c.claim_ownership(&other, &server_id, &token, 200).unwrap();
    assert_eq!(c.current_role(&server_id, "uid_other"), Some(Role::Owner));
    // Unknown presets and disabled creation are refused.
    assert_eq!(
        c.create_server(&creator, "X", "", "neon", 1)
            .unwrap_err()
            .code(),
        "invalid_banner_preset"
    );
    let mut locked = Community::new(
        Settings {
            allow_server_creation: false,
            ..settings(HistoryVisibility::Joined)
        },
        Snapshot::default(),
    );
    locked.bootstrap_default_server("Home", None, 1);
    let refused = locked.create_server(&creator, "X", "", "", 1).unwrap_err();
    assert_eq!(
        (refused.status(), refused.code()),
        (403, "server_creation_disabled")
    );
}

#[test]
fn layout_changes_need_an_admin_and_emit_events() {
    let mut c = community(HistoryVisibility::Joined);
    let member = actor("uid_member");
    let owner = actor("uid_owner");
    let refused = c
        .create_category(&member, "home", "Games", ChannelKind::Text, 5)
        .unwrap_err();
    assert_eq!((refused.status(), refused.code()), (403, "forbidden"));
    let settings_refused = c
        .update_settings(&member, "home", Some("Mine"), None, None, 5)
        .unwrap_err();
    assert_eq!(settings_refused.status(), 403);

    let cat = c
        .create_category(&owner, "home", "Games", ChannelKind::Text, 5)
        .unwrap();
    assert_eq!(cat.events[0].kind, "chat.category.created");
    let group_id = cat.value.group.id.clone();
    let ch = c
        .create_channel(
            &owner,
            "home",
            "chess",
            ChannelKind::Text,
            Some(&group_id),
            None,
            None,
            6,
        )
        .unwrap();
    assert_eq!(ch.events[0].kind, "chat.channel.created");
    assert_eq!(ch.value.channel.history_visibility, "joined");
    let wrong_kind = c
        .create_channel(
            &owner,
            "home",
            "lobby",
            ChannelKind::Voice,
            Some(&group_id),
            None,
            None,
            6,
        )
        .unwrap_err();
    assert_eq!(wrong_kind.code(), "group_kind_mismatch");
    let renamed = c
        .rename_category(&owner, "home", &group_id, "Board games", 7)
        .unwrap();
    assert_eq!(renamed.value.group.label, "Board games");
    assert_eq!(renamed.events[0].kind, "chat.category.updated");

    // Event ids of a server increase by one.
    let ids: Vec<i64> = [&cat.events[0], &ch.events[0], &renamed.events[0]]
        .iter()
        .map(|e| e.event_id.unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2, 3]);

    // A layout must list every channel exactly once, in groups of its kind.
    let groups = c.channels_of(Some(&owner), "home", 8).unwrap().value.groups;
    let text_group = groups
        .iter()
        .find(|g| g.kind == "text" && g.id != group_id)
        .unwrap()
        .id
        .clone();
    let all_text: Vec<String> = groups
        .iter()
        .filter(|g| g.kind == "text")
        .flat_map(|g| g.channels.iter().map(|c| c.id.clone()))
        .collect();
    let voice_group = groups.iter().find(|g| g.kind == "voice").unwrap();
    let voice_ids: Vec<String> = voice_group.channels.iter().map(|c| c.id.clone()).collect();
    let dropped = c
        .set_layout(
            &owner,
            "home",
            &[(group_id.clone(), vec![all_text[0].clone()])],
            9,
        )
        .unwrap_err();
    assert_eq!(dropped.code(), "invalid_layout");
    let duplicated = c
        .set_layout(
            &owner,
            "home",
            &[
                (
                    group_id.clone(),
                    vec![
                        all_text[0].clone(),
                        all_text[0].clone(),
                        all_text[1].clone(),
                    ],
                ),
                (voice_group.id.clone(), voice_ids.clone()),
            ],
            9,
        )
        .unwrap_err();
    assert_eq!(duplicated.code(), "invalid_layout");
    let invented = c
        .set_layout(
            &owner,
            "home",
            &[(group_id.clone(), vec!["ch_nope".into()])],
            9,
        )
        .unwrap_err();
    assert_eq!(invented.code(), "invalid_layout");
    let moved = c
        .set_layout(
            &owner,
            "home",
            &[
                (group_id.clone(), all_text.clone()),
                (voice_group.id.clone(), voice_ids),
                (text_group.clone(), vec![]),
            ],
            9,
        )
        .unwrap();
    assert_eq!(moved.value.groups[0].id, group_id);
    assert_eq!(moved.value.groups[0].channels.len(), 2);
    assert_eq!(moved.events[0].kind, "chat.channel.layout.updated");
    // Deleting the now-empty group works; deleting the last text group with channels does not.
    c.delete_category(&owner, "home", &text_group, 10).unwrap();
    let last = c
        .delete_category(&owner, "home", &group_id, 10)
        .unwrap_err();
    assert_eq!(last.code(), "category_not_empty");
}

#[test]
fn a_later_joiner_does_not_see_earlier_messages_in_a_joined_channel() {
    let mut c = community(HistoryVisibility::Joined);
    let mut history = MemoryHistory::default();
    let alice = actor("uid_alice");
    let channel = text_channel(&mut c, "home", &alice);
    post(&mut c, &mut history, &alice, &channel, "before bob", None);
    let bob = actor("uid_bob");
    assert_eq!(
        read(&mut c, &history, Some(&bob), &channel).unwrap(),
        Vec::<String>::new()
    );
    post(&mut c, &mut history, &alice, &channel, "after bob", None);
    assert_eq!(
        read(&mut c, &history, Some(&bob), &channel).unwrap(),
        vec!["after bob"]
    );
    assert_eq!(
        read(&mut c, &history, Some(&alice), &channel).unwrap(),
        vec!["before bob", "after bob"]
    );
    // Anonymous readers get nothing from a non-public channel.
    assert_eq!(
        read(&mut c, &history, None, &channel).unwrap_err().status(),
        401
    );
}

#[test]
fn leaving_ends_access_and_rejoining_opens_a_new_span() {
    let mut c = community(HistoryVisibility::Joined);
    let mut history = MemoryHistory::default();
    let alice = actor("uid_alice");
    let bob = actor("uid_bob");
    let channel = text_channel(&mut c, "home", &alice);
    post(&mut c, &mut history, &bob, &channel, "one", None);
    let left = c.leave(&bob, "home", 11).unwrap();
    assert!(matches!(left.notices[0], Notice::MemberLeft { .. }));
    // Leaving twice is fine and changes nothing.
    assert!(c.leave(&bob, "home", 12).unwrap().records.is_empty());
    post(&mut c, &mut history, &alice, &channel, "two", None);
    // A uid that left can neither read nor post nor subscribe until it comes back.
    assert_eq!(
        read(&mut c, &history, Some(&bob), &channel)
            .unwrap_err()
            .code(),
        "not_a_member"
    );
    let post_err = c
        .post_message(&bob, &channel, plain("x", None), 13)
        .unwrap_err();
    assert_eq!(post_err.code(), "not_a_member");
    assert_eq!(
        c.may_subscribe(&bob, "home", &channel).unwrap_err().code(),
        "not_a_member"
    );
    // Opening the server again (realtime connect) re-admits with a new span.
    c.admit(&bob, "home", Admission::Connect, 14).unwrap();
    post(&mut c, &mut history, &alice, &channel, "three", None);
    assert_eq!(
        read(&mut c, &history, Some(&bob), &channel).unwrap(),
        vec!["one", "three"]
    );
}

#[test]
fn members_and_public_visibility() {
    let mut c = community(HistoryVisibility::Members);
    let mut history = MemoryHistory::default();
    let alice = actor("uid_alice");
    let channel = text_channel(&mut c, "home", &alice);
    post(&mut c, &mut history, &alice, &channel, "early", None);
    assert_eq!(
        read(&mut c, &history, Some(&actor("uid_late")), &channel).unwrap(),
        vec!["early"]
    );
    assert_eq!(
        read(&mut c, &history, None, &channel).unwrap_err().status(),
        401
    );

    let mut p = community(HistoryVisibility::Public);
    let mut history = MemoryHistory::default();
    let channel = text_channel(&mut p, "home", &alice);
    post(&mut p, &mut history, &alice, &channel, "hello world", None);
    assert_eq!(
        read(&mut p, &history, None, &channel).unwrap(),
        vec!["hello world"]
    );
    // Anonymous reads of a server with public channels work; they join nobody.
    assert!(p.channels_of(None, "home", 1).is_ok());
    assert!(p.members(None, "home", 1).unwrap().records.is_empty());
}

#[test]
fn replies_mentions_and_permissions() {
    let mut c = community(HistoryVisibility::Joined);
    let mut history = MemoryHistory::default();
    let alice = actor("uid_alice");
    let bob = actor("uid_bob");
    let channel = text_channel(&mut c, "home", &alice);
    // Bob is a member before the message he replies to (a reply names only what the replier
    // may read).
    c.admit(&bob, "home", Admission::Connect, 1).unwrap();
    c.put_profile(
        &bob,
        ProfileChange {
            display_name: Some("Bob".into()),
            ..Default::default()
        },
        5,
    )
    .unwrap();
    let first = post(
        &mut c,
        &mut history,
        &alice,
        &channel,
        "first   message\nwith lines",
        None,
    );
    let out = c
        .post_message(
            &bob,
            &channel,
            plain("😀 @uid_alice look @here", Some(&first)),
            20,
        )
        .unwrap();
    let m = out.value;
    let reply = m.reply_to.as_ref().unwrap();
    assert_eq!(reply.message_id, first.id);
    assert_eq!(reply.author_uid.as_deref(), Some("uid_alice"));
    assert_eq!(reply.preview_text, "first message with lines");
    assert!(!reply.is_unavailable);
    assert_eq!(m.mentions.len(), 2);
    assert_eq!(
        (
            m.mentions[0].kind.as_str(),
            m.mentions[0].target_id.as_str()
        ),
        ("user", "uid_alice")
    );
    // UTF-16: the emoji is two code units, then a space.
    assert_eq!(
        (m.mentions[0].range.start, m.mentions[0].range.end),
        (3, 3 + "@uid_alice".len())
    );
    assert_eq!(
        (
            m.mentions[1].token.as_str(),
            m.mentions[1].target_id.as_str()
        ),
        ("@here", channel.as_str())
    );
    assert!(m.action_permissions.can_delete, "the author may delete");
    // Others may not delete; a moderator may.
    let stored = history.get(&m.id).cloned().unwrap_or_else(|| {
        out.records
            .iter()
            .find_map(|r| match r {
                Record::Message(x) => Some(x.clone()),
                _ => None,
            })
            .unwrap()
    });
    assert_eq!(
        c.delete_message(&alice, &channel, &stored, 30)
            .unwrap_err()
            .status(),
        403
    );
    let deleted = c.delete_message(&bob, &channel, &stored, 30).unwrap();
    assert_eq!(deleted.events[0].kind, "chat.message.deleted");
    // A deleted reply target renders as unavailable.
    let mut gone = first.clone();
    gone.deleted_at = Some(40);
    let rendered = c.render(&m_as_message(&stored), Some(&gone), &Visibility::All, None);
    assert!(rendered.reply_to.unwrap().is_unavailable);
}

fn m_as_message(m: &Message) -> Message {
    m.clone()
}

#[test]
fn oversize_and_wrong_kind_posts_are_refused() {
    let mut c = community(HistoryVisibility::Joined);
    let alice = actor("uid_alice");
    let channel = text_channel(&mut c, "home", &alice);
    let big = "x".repeat(4001);
    let err = c
        .post_message(&alice, &channel, plain(big, None), 1)
        .unwrap_err();
    assert_eq!((err.status(), err.code()), (413, "payload_too_large"));
    let voice = c.channels_of(Some(&alice), "home", 1).unwrap().value.groups[1].channels[0]
        .id
        .clone();
    let err = c
        .post_message(&alice, &voice, plain("hi", None), 1)
        .unwrap_err();
    assert_eq!(err.code(), "not_a_text_channel");
    let owner = actor("uid_owner");
    let e2ee = c
        .create_channel(
            &owner,
            "home",
            "secret",
            ChannelKind::Text,
            None,
            None,
            Some(Encryption::E2ee),
            2,
        )
        .unwrap()
        .value
        .channel
        .id;
    let err = c
        .post_message(&alice, &e2ee, plain("hi", None), 3)
        .unwrap_err();
    assert_eq!(err.code(), "plaintext_not_allowed");
}

#[test]
fn read_acks_never_move_backwards_and_go_to_the_same_user_only() {
    let mut c = community(HistoryVisibility::Joined);
    let mut history = MemoryHistory::default();
    let alice = actor("uid_alice");
    let channel = text_channel(&mut c, "home", &alice);
    let m1 = post(&mut c, &mut history, &alice, &channel, "1", None);
    let m2 = post(&mut c, &mut history, &alice, &channel, "2", None);
    let first = c.put_read_ack(&alice, &channel, &m2, 50).unwrap();
    assert_eq!(first.value.applied, Some(true));
    assert_eq!(first.events[0].audience, Audience::User("uid_alice".into()));
    assert_eq!(first.events[0].event_id, None);
    let back = c.put_read_ack(&alice, &channel, &m1, 51).unwrap();
    assert_eq!(back.value.applied, Some(false));
    assert_eq!(
        back.value.read_ack.last_read_message_id.as_deref(),
        Some(m2.id.as_str())
    );
    assert!(back.records.is_empty() && back.events.is_empty());
    let got = c.read_ack(&alice, &channel, 52).unwrap().value;
    assert_eq!(got.read_ack.cursor_index, m2.seq);
    assert_eq!(got.read_ack.acked_at.as_deref(), Some(rfc3339(50).as_str()));
}

#[test]
fn profiles_default_conflict_and_avatar_ownership() {
    let mut c = community(HistoryVisibility::Joined);
    let alice = actor("uid_alice");
    let fresh = c.profile_item("uid_never_seen");
    assert_eq!(
        (fresh.profile_version, fresh.display_name.as_str()),
        (0, "uid_never_seen")
    );
    c.admit(&alice, "home", Admission::Connect, 1).unwrap();
    let saved = c
        .put_profile(
            &alice,
            ProfileChange {
                display_name: Some("Cafe\u{301}".into()),
                if_match: Some(0),
                ..Default::default()
            },
            2,
        )
        .unwrap();
    assert_eq!(saved.value.display_name, "Café", "names are NFC-normalized");
    assert_eq!(saved.value.profile_version, 1);
    assert_eq!(
        saved.events.len(),
        1,
        "one profile_updated per server of the user"
    );
    assert_eq!(saved.events[0].kind, "profile_updated");
    let stale = c
        .put_profile(
            &alice,
            ProfileChange {
                display_name: Some("Other".into()),
                if_match: Some(0),
                ..Default::default()
            },
            3,
        )
        .unwrap_err();
    assert_eq!((stale.status(), stale.code()), (409, "profile_conflict"));
    assert!(stale.details().unwrap().contains("\"profile_version\":1"));
    let too_long = c
        .put_profile(
            &alice,
            ProfileChange {
                display_name: Some("x".repeat(33)),
                ..Default::default()
            },
            3,
        )
        .unwrap_err();
    assert_eq!(too_long.code(), "invalid_display_name");
    let asset = AvatarAsset {
        id: "av_1".into(),
        owner_uid: "uid_bob".into(),
        blob: "00".repeat(32),
        content_type: "image/png".into(),
        width: 1,
        height: 1,
        bytes: 10,
        created_at: 1,
    };
    c.add_avatar_asset(asset);
    let theft = c
        .put_profile(
            &alice,
            ProfileChange {
                avatar_mode: Some(AvatarMode::Uploaded),
                avatar_asset_id: Some("av_1".into()),
                ..Default::default()
            },
            4,
        )
        .unwrap_err();
    assert_eq!(theft.code(), "avatar_asset_forbidden");
    let bob = actor("uid_bob");
    let ok = c
        .put_profile(
            &bob,
            ProfileChange {
                avatar_mode: Some(AvatarMode::Uploaded),
                avatar_asset_id: Some("av_1".into()),
                ..Default::default()
            },
            5,
        )
        .unwrap();
    assert_eq!(
        ok.value.avatar_url.as_deref(),
        Some("https://chat.example.test/v1/profile/avatar/av_1")
    );
    assert_eq!(
        c.profiles(&vec!["u".to_string(); 101]).unwrap_err().code(),
        "too_many_profiles"
    );
}

/// A sign-in whose challenge checked out (`crate::auth::challenge`), nonce `n`, issued at `at`.
fn sign_in(
    key: &SigningKey,
    device: &str,
    uid: Option<&str>,
    n: u8,
    at: Millis,
    signature_valid: bool,
) -> SignIn {
    SignIn {
        device_id: device.into(),
        public_key: base64_url(key.verifying_key().as_bytes()),
        derived_uid: crate::auth::derive_user_uid(&key.verifying_key()),
        requested_uid: uid.map(str::to_owned),
        challenge: crate::auth::challenge::Verified {
            id: [n; crate::auth::challenge::NONCE_BYTES],
            expires_at: at + CHALLENGE_TTL_MS,
        },
        signature_valid,
    }
}

#[test]
fn sessions_spend_their_challenge_and_take_the_keys_uid() {
    let mut c = community(HistoryVisibility::Joined);
    let key = SigningKey::from_bytes(&[7u8; 32]);
    // A bad signature is refused, and the challenge is then spent.
    assert_eq!(
        c.open_session(&sign_in(&key, "dev_1", None, 1, 1_000, false), 1_001)
            .unwrap_err()
            .status(),
        401
    );
    assert_eq!(
        c.open_session(&sign_in(&key, "dev_1", None, 1, 1_000, true), 1_002)
            .unwrap_err()
            .status(),
        401,
        "replayed challenge"
    );
    let expired = c
        .open_session(
            &sign_in(&key, "dev_1", None, 2, 2_000, true),
            2_000 + CHALLENGE_TTL_MS,
        )
        .unwrap_err();
    assert_eq!(expired.status(), 401);
    let session = c
        .open_session(&sign_in(&key, "dev_1", None, 3, 3_000, true), 3_001)
        .unwrap();
    let token = session.value.token.clone();
    assert!(
        session
            .records
            .iter()
            .all(|r| !format!("{r:?}").contains(&token)),
        "tokens are stored hashed"
    );
    assert!(
        !format!("{:?}", session.value).contains(&token),
        "Debug hides the token"
    );
    let (who, _) = c.authenticate(&token, 3_002).unwrap();
    assert_eq!(
        who.user_uid,
        crate::auth::derive_user_uid(&key.verifying_key())
    );
    assert!(c.authenticate("ocs_forged", 3_002).is_none());
    // The same key on a new device is the same uid.
    let again = c
        .open_session(
            &sign_in(&key, "dev_1b", Some(&who.user_uid), 4, 3_000, true),
            3_003,
        )
        .unwrap();
    assert_eq!(again.value.user_uid, who.user_uid);
    // Another key cannot take the same uid.
    let other = SigningKey::from_bytes(&[9u8; 32]);
    let clash = c
        .open_session(
            &sign_in(&other, "dev_2", Some(&who.user_uid), 5, 4_000, true),
            4_001,
        )
        .unwrap_err();
    assert_eq!(
        (clash.status(), clash.code()),
        (409, "identity_key_mismatch")
    );
    // Nor a uid nobody holds yet, by asking for it first.
    let grab = c
        .open_session(
            &sign_in(&other, "dev_2", Some("uid_owner"), 6, 4_000, true),
            4_001,
        )
        .unwrap_err();
    assert_eq!((grab.status(), grab.code()), (403, "binding_required"));
    // Revoked and expired sessions do not authenticate.
    c.revoke_session(&token, 5_000).unwrap();
    assert!(c.authenticate(&token, 5_001).is_none());
}

#[test]
fn an_approved_binding_lets_a_key_take_a_legacy_uid() {
    let mut c = community(HistoryVisibility::Joined);
    // uid_legacy used the server in headers mode; the owner approves its key.
    c.admit(&actor("uid_legacy"), "home", Admission::Connect, 10)
        .unwrap();
    let key = SigningKey::from_bytes(&[11u8; 32]);
    let public = base64_url(key.verifying_key().as_bytes());
    let refused = c
        .open_session(&sign_in(&key, "dev_l", Some("uid_legacy"), 1, 20, true), 21)
        .unwrap_err();
    assert_eq!(refused.code(), "binding_required");
    // A member may not approve; the owner may.
    c.admit(&actor("uid_member"), "home", Admission::Connect, 10)
        .unwrap();
    let denied = c
        .approve_binding(&actor("uid_member"), "home", "uid_legacy", &public, 30)
        .unwrap_err();
    assert_eq!(denied.status(), 403);
    let approved = c
        .approve_binding(&actor("uid_owner"), "home", "uid_legacy", &public, 31)
        .unwrap();
    assert_eq!(approved.value.approved_by_uid, "uid_owner");
    assert!(matches!(
        approved.records.as_slice(),
        [Record::IdentityBinding(b)] if b.user_uid == "uid_legacy" && b.public_key == public && b.approved_at == 31
    ));
    let session = c
        .open_session(&sign_in(&key, "dev_l", Some("uid_legacy"), 2, 40, true), 41)
        .unwrap();
    assert_eq!(session.value.user_uid, "uid_legacy");
    // A second key for the same uid is a conflict; a uid that never was a member is unknown.
    let other = base64_url(
        SigningKey::from_bytes(&[12u8; 32])
            .verifying_key()
            .as_bytes(),
    );
    let clash = c
        .approve_binding(&actor("uid_owner"), "home", "uid_legacy", &other, 50)
        .unwrap_err();
    assert_eq!(clash.code(), "identity_key_mismatch");
    let stranger = c
        .approve_binding(&actor("uid_owner"), "home", "uid_nobody", &other, 50)
        .unwrap_err();
    assert_eq!(stranger.status(), 404);
    // The owner uid itself cannot be bound away by anyone below it.
    c.set_role(&actor("uid_owner"), "home", "uid_member", Role::Admin, 60)
        .unwrap();
    let up = c
        .approve_binding(&actor("uid_member"), "home", "uid_owner", &other, 61)
        .unwrap_err();
    assert_eq!(up.status(), 403);
}

#[test]
fn the_operators_key_owns_the_configured_uid_and_evicts_earlier_takers() {
    let mut c = community(HistoryVisibility::Joined);
    // Before the fix someone took uid_owner by asking first: a device with another key.
    let squatter = SigningKey::from_bytes(&[13u8; 32]);
    let operator = SigningKey::from_bytes(&[14u8; 32]);
    let operator_pub = base64_url(operator.verifying_key().as_bytes());
    let squat = Record::Device(Device {
        device_id: "dev_squat".into(),
        user_uid: "uid_owner".into(),
        public_key: base64_url(squatter.verifying_key().as_bytes()),
        created_at: 1,
        revoked_at: None,
    });
    let mut snapshot = Snapshot::default();
    if let Record::Device(d) = squat {
        snapshot.devices.push(d);
    }
    let mut c2 = Community::new(settings(HistoryVisibility::Joined), snapshot);
    c2.bootstrap_default_server("Home", Some("uid_owner"), 1);
    let bound = c2.bind_owner_key("uid_owner", &operator_pub, 2);
    assert!(bound.records.iter().any(
        |r| matches!(r, Record::Device(d) if d.device_id == "dev_squat" && d.revoked_at == Some(2))
    ));
    assert!(bound.records.iter().any(|r| matches!(r, Record::IdentityBinding(b) if b.user_uid == "uid_owner" && b.public_key == operator_pub)));
    let session = c2
        .open_session(
            &sign_in(&operator, "dev_op", Some("uid_owner"), 1, 10, true),
            11,
        )
        .unwrap();
    assert_eq!(session.value.user_uid, "uid_owner");
    let evicted = c2
        .open_session(
            &sign_in(&squatter, "dev_squat", Some("uid_owner"), 2, 10, true),
            11,
        )
        .unwrap_err();
    assert_eq!(evicted.code(), "identity_key_mismatch");
    // A key that derives the owner uid needs no binding.
    let derived = crate::auth::derive_user_uid(&operator.verifying_key());
    let plain = c.bind_owner_key(&derived, &operator_pub, 3);
    assert!(plain.records.is_empty());
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn the_directory_lists_discoverable_servers_and_hides_left_ones() {
    let mut c = community(HistoryVisibility::Joined);
    let alice = actor("uid_alice");
    let listed = |c: &Community, a: Option<&Actor>| {
        c.directory(a)
            .into_iter()
            .map(|d| d.server_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(listed(&c, None), vec!["home"]);
    assert_eq!(listed(&c, Some(&alice)), vec!["home"]);
    let created = c
        .create_server(&alice, "Club", "", "", 5)
        .unwrap()
        .value
        .server
        .server_id;
    assert_eq!(
        listed(&c, Some(&alice)),
        vec!["home".to_string(), created.clone()]
    );
    c.admit(&alice, "home", Admission::Connect, 6).unwrap();
    c.leave(&alice, "home", 7).unwrap();
    assert_eq!(listed(&c, Some(&alice)), vec![created]);
    let item = &c.directory(None)[0];
    assert_eq!(
        (item.trust_state, item.user_identifier_policy),
        ("verified", "either")
    );
}

#[test]
fn a_refused_command_changes_nothing() {
    let mut c = community(HistoryVisibility::Joined);
    let member = actor("uid_member");
    // First contact inside a refused admin command does not leave a membership behind.
    c.create_category(&member, "home", "X", ChannelKind::Text, 1)
        .unwrap_err();
    assert_eq!(c.current_role("home", "uid_member"), None);
    assert_eq!(c.last_event_id("home"), 0);
}

#[test]
fn message_ids_name_their_position_and_nothing_else() {
    assert_eq!(message_id(42), "msg_42");
    assert_eq!(message_seq("msg_42"), Some(42));
    for other in [
        "msg_042",
        "msg_0",
        "msg_-1",
        "msg_",
        "42",
        "msg_4x",
        "msg_99999999999999999999",
    ] {
        assert_eq!(message_seq(other), None, "{other}");
    }
}

#[test]
fn new_message_events_are_counted_not_logged() {
    let mut c = community(HistoryVisibility::Joined);
    let mut history = MemoryHistory::default();
    let alice = actor("uid_alice");
    let channel = text_channel(&mut c, "home", &alice);
    let before = c.last_event_id("home");
    let out = c
        .post_message(&alice, &channel, plain("hi", None), 1)
        .unwrap();
    assert_eq!(out.events[0].event_id, Some(before + 1));
    assert!(out.records.iter().all(|r| !matches!(r, Record::Event(_))));
    assert!(out.records.contains(&Record::LastEventId {
        server_id: "home".into(),
        event_id: before + 1
    }));
    let _ = &mut history;
}

fn voice_channel(c: &mut Community, who: &Actor) -> String {
    c.channels_of(Some(who), "home", 1)
        .unwrap()
        .value
        .groups
        .iter()
        .flat_map(|g| g.channels.iter())
        .find(|ch| ch.kind == "voice")
        .unwrap()
        .id
        .clone()
}

#[test]
fn voice_grants_check_channel_membership_ban_lock_and_timeout() {
    use crate::rtc::ticket::Permissions;
    let mut c = community(HistoryVisibility::Joined);
    let owner = actor("uid_owner");
    let alice = actor("uid_alice");
    let voice = voice_channel(&mut c, &alice);
    let text = text_channel(&mut c, "home", &alice);
    assert_eq!(
        c.grant_voice(&alice, "home", &voice, 1).unwrap().value,
        Permissions::ALL
    );
    assert_eq!(
        c.grant_voice(&alice, "home", &text, 1).unwrap_err().code(),
        "not_a_voice_channel"
    );
    assert_eq!(
        c.grant_voice(&alice, "nope", &voice, 1).unwrap_err().code(),
        "server_not_found"
    );
    let other = c
        .create_server(&owner, "Other", "", "", 1)
        .unwrap()
        .value
        .server
        .server_id;
    assert_eq!(
        c.grant_voice(&alice, &other, &voice, 1).unwrap_err().code(),
        "channel_not_found"
    );

    // A ticket re-admits a uid that left (an "opening" act).
    c.leave(&alice, "home", 2).unwrap();
    assert!(c.grant_voice(&alice, "home", &voice, 3).is_ok());
    assert!(c.current_role("home", "uid_alice").is_some());

    // Timeout: listen-only until it ends.
    c.timeout(&owner, "home", "uid_alice", 100, 4).unwrap();
    assert_eq!(
        c.grant_voice(&alice, "home", &voice, 50).unwrap().value,
        Permissions::LISTEN_ONLY
    );
    assert_eq!(
        c.grant_voice(&alice, "home", &voice, 100).unwrap().value,
        Permissions::ALL
    );

    // Lock: no new tickets for anyone until unlocked.
    c.lock_channel(&owner, &voice, true, 5).unwrap();
    assert_eq!(
        c.grant_voice(&alice, "home", &voice, 6).unwrap_err().code(),
        "channel_locked"
    );
    c.lock_channel(&owner, &voice, false, 7).unwrap();
    assert!(c.grant_voice(&alice, "home", &voice, 8).is_ok());

    // Ban: membership ends, sockets close, voice is kicked, no ticket; lifting it restores.
    let banned = c.ban(&owner, "home", "uid_alice", None, 9).unwrap();
    assert!(banned.notices.contains(&Notice::VoiceKick {
        server_id: "home".into(),
        user_uid: "uid_alice".into()
    }));
    assert!(
        banned
            .notices
            .iter()
            .any(|n| matches!(n, Notice::MemberLeft { .. }))
    );
    assert!(
        banned.records.iter().any(
            |r| matches!(r, Record::Moderation(m) if m.kind == ModerationKind::Ban && m.active)
        )
    );
    assert_eq!(
        c.grant_voice(&alice, "home", &voice, 10)
            .unwrap_err()
            .code(),
        "banned"
    );
    c.unban(&owner, "home", "uid_alice", 11).unwrap();
    assert!(c.grant_voice(&alice, "home", &voice, 12).is_ok());
}

#[test]
fn only_moderators_moderate_and_never_upwards() {
    let mut c = community(HistoryVisibility::Joined);
    let owner = actor("uid_owner");
    let moderator = actor("uid_mod");
    let member = actor("uid_member");
    c.admit(&moderator, "home", Admission::Connect, 1).unwrap();
    c.admit(&member, "home", Admission::Connect, 1).unwrap();
    assert_eq!(
        c.kick(&member, "home", "uid_mod", 2).unwrap_err().status(),
        403
    );
    c.set_role(&owner, "home", "uid_mod", Role::Moderator, 3)
        .unwrap();
    assert_eq!(
        c.set_role(&moderator, "home", "uid_member", Role::Admin, 3)
            .unwrap_err()
            .status(),
        403
    );
    assert_eq!(
        c.set_role(&owner, "home", "uid_mod", Role::Owner, 3)
            .unwrap_err()
            .code(),
        "invalid_role"
    );
    let kicked = c.kick(&moderator, "home", "uid_member", 4).unwrap();
    // A kick ends the membership: voice first (`rtc.kicked`), then the sockets.
    assert_eq!(
        kicked.notices,
        vec![
            Notice::VoiceKick {
                server_id: "home".into(),
                user_uid: "uid_member".into()
            },
            Notice::MemberLeft {
                server_id: "home".into(),
                user_uid: "uid_member".into()
            }
        ]
    );
    assert!(c.current_role("home", "uid_member").is_none());
    // Not the owner, not oneself, not a peer of the same rank.
    assert_eq!(
        c.kick(&moderator, "home", "uid_owner", 5)
            .unwrap_err()
            .status(),
        403
    );
    assert_eq!(
        c.ban(&moderator, "home", "uid_mod", None, 5)
            .unwrap_err()
            .status(),
        403
    );
    let voice = voice_channel(&mut c, &owner);
    assert_eq!(
        c.lock_channel(&member, &voice, true, 6)
            .unwrap_err()
            .status(),
        403
    );
}

#[test]
fn join_tickets_are_single_use() {
    let mut c = community(HistoryVisibility::Joined);
    c.consume_ticket("jt_1", 100).unwrap();
    assert_eq!(
        c.consume_ticket("jt_1", 100).unwrap_err().code(),
        "rtc_ticket_replayed"
    );
    c.consume_ticket("jt_2", 100).unwrap();
    // Once expired, the id is forgotten (the ticket no longer verifies anyway).
    c.sweep(100_000);
    c.consume_ticket("jt_1", 200).unwrap();
}

#[test]
fn moderation_survives_a_reload() {
    let mut c = community(HistoryVisibility::Joined);
    let owner = actor("uid_owner");
    let alice = actor("uid_alice");
    let voice = voice_channel(&mut c, &alice);
    let banned = c.ban(&owner, "home", "uid_alice", Some(1_000), 9).unwrap();
    let measures: Vec<Moderation> = banned
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Moderation(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    let mut reloaded = Community::new(
        settings(HistoryVisibility::Joined),
        Snapshot {
            moderation: measures,
            ..Snapshot::default()
        },
    );
    reloaded.bootstrap_default_server("Home", Some("uid_owner"), 10);
    let voice2 = voice_channel(&mut reloaded, &owner);
    assert_eq!(
        reloaded
            .grant_voice(&alice, "home", &voice2, 500)
            .unwrap_err()
            .code(),
        "banned"
    );
    assert!(
        reloaded.grant_voice(&alice, "home", &voice2, 1_000).is_ok(),
        "the ban ran out"
    );
    let _ = voice;
}
