//! The delivery service's rules without MLS: the facts a shard would hand in are made by hand,
//! so each rule is pinned on its own (the MLS checks are `crate::mls`'s tests; both together
//! run in `tests/e2e_e2ee.rs`).

use super::*;
use crate::domain::community::fixtures::*;
use crate::domain::community::{Actor, Admission, NewMessage, Outcome};
use crate::domain::error::DomainError;
use crate::domain::model::{ChannelKind, Content, Device, Envelope, HistoryVisibility};
use crate::domain::records::Record;

const KEY_A: &str = "key-of-a";
const KEY_B: &str = "key-of-b";

/// `home` with an encrypted channel; `a` (the owner) and `b` are members with one enrolled
/// device each. Returns the channel id.
fn setup(c: &mut Community) -> String {
    let owner = actor("uid_owner");
    for (who, key) in [(&owner, KEY_A), (&actor("uid_b"), KEY_B)] {
        c.sessions.devices.insert(
            who.device_id.clone(),
            Device {
                device_id: who.device_id.clone(),
                user_uid: who.user_uid.clone(),
                public_key: key.to_owned(),
                created_at: 1,
                revoked_at: None,
            },
        );
        c.admit(who, "home", Admission::Connect, 2).unwrap();
        upload(
            c,
            who,
            &[
                &format!("{}-1", who.device_id),
                &format!("{}-2", who.device_id),
            ],
            Some(&format!("{}-lr", who.device_id)),
        );
    }
    c.create_channel(
        &owner,
        "home",
        "secret",
        ChannelKind::Text,
        None,
        None,
        Some(Encryption::E2ee),
        3,
    )
    .unwrap()
    .value
    .channel
    .id
}

fn upload(
    c: &mut Community,
    who: &Actor,
    one_time: &[&str],
    last_resort: Option<&str>,
) -> UploadOut {
    let row = |r: &str, last_resort: bool| KeyPackageRow {
        key_package_ref: r.to_owned(),
        device_id: who.device_id.clone(),
        user_uid: who.user_uid.to_string(),
        data: "d".to_owned(),
        last_resort,
        uploaded_at: 2,
        not_after: 1_000_000,
    };
    let mut rows: Vec<KeyPackageRow> = one_time.iter().map(|r| row(r, false)).collect();
    rows.extend(last_resort.map(|r| row(r, true)));
    c.upload_packages(who, rows, 2).unwrap().value
}

/// The facts of a commit by `who` at `based_on` leaving `leaves` in the group.
fn facts(
    channel: &str,
    who: &Actor,
    based_on: u64,
    leaves: &[(&str, &str)],
    welcome_refs: &[&str],
    hash: &str,
) -> CommitFacts {
    CommitFacts {
        channel_id: channel.to_owned(),
        based_on_epoch: based_on,
        new_epoch: based_on + 1,
        committer: who.device_id.clone(),
        leaves: leaves
            .iter()
            .map(|(d, k)| (d.to_string(), k.to_string()))
            .collect(),
        welcome_refs: welcome_refs.iter().map(|r| r.to_string()).collect(),
        welcome: (!welcome_refs.is_empty()).then(|| "welcome".to_owned()),
        group_info: format!("gi-{hash}"),
        public_state: format!("ps-{hash}"),
        commit: format!("commit-{hash}"),
        commit_hash: hash.to_owned(),
    }
}

fn envelope(who: &Actor, epoch: u64) -> NewMessage {
    NewMessage {
        content: Content::Envelope(Envelope {
            epoch,
            ciphertext: "ct".to_owned(),
            sender_device_id: who.device_id.clone(),
        }),
        reply_to: None,
        reply_to_id: None,
        attachments: vec![],
    }
}

#[test]
fn each_one_time_package_goes_once_then_the_last_resort_flagged() {
    let mut c = community(HistoryVisibility::Joined);
    setup(&mut c);
    let (a, b) = (actor("uid_owner"), actor("uid_b"));
    let mut handed = Vec::new();
    for _ in 0..4 {
        let claimed = c.claim_packages(&a, &["uid_b".to_owned()], 5).unwrap();
        assert_eq!(claimed.value.len(), 1);
        handed.push((
            claimed.value[0].key_package_ref.clone(),
            claimed.value[0].last_resort,
        ));
        assert!(matches!(claimed.records[0], Record::KeyPackageClaim(_)));
    }
    assert_eq!(
        handed,
        vec![
            ("dev_uid_b-1".to_owned(), false),
            ("dev_uid_b-2".to_owned(), false),
            ("dev_uid_b-lr".to_owned(), true),
            ("dev_uid_b-lr".to_owned(), true),
        ]
    );
    // A re-upload of a claimed package does not put it back; a new last resort replaces the old.
    let again = upload(&mut c, &b, &["dev_uid_b-1"], Some("dev_uid_b-lr2"));
    assert_eq!((again.accepted, again.one_time), (1, 0));
    assert_eq!(
        c.claim_packages(&a, &["uid_b".to_owned()], 5)
            .unwrap()
            .value[0]
            .key_package_ref,
        "dev_uid_b-lr2"
    );
    // A stranger (no shared server) gets nothing; a revoked device hands nothing out.
    c.sessions.devices.insert(
        "dev_uid_x".into(),
        Device {
            device_id: "dev_uid_x".into(),
            user_uid: "uid_x".into(),
            public_key: "k".into(),
            created_at: 1,
            revoked_at: None,
        },
    );
    assert!(
        c.claim_packages(&actor("uid_x"), &["uid_b".to_owned()], 5)
            .unwrap()
            .value
            .is_empty()
    );
    c.revoke_device(&b, "dev_uid_b", 6).unwrap();
    assert!(
        c.claim_packages(&a, &["uid_b".to_owned()], 7)
            .unwrap()
            .value
            .is_empty()
    );
}

#[test]
fn one_commit_per_epoch_exactly_the_member_set_and_claimed_welcomes_only() {
    let mut c = community(HistoryVisibility::Joined);
    let channel = setup(&mut c);
    let (a, b) = (actor("uid_owner"), actor("uid_b"));
    let both = [("dev_uid_owner", KEY_A), ("dev_uid_b", KEY_B)];
    // b's package not claimed by a yet: its Welcome is refused.
    let refused = c
        .accept_commit(
            &a,
            facts(&channel, &a, 0, &both, &["dev_uid_b-1"], "h1"),
            10,
        )
        .unwrap_err();
    assert_eq!(refused, DomainError::Keys(KeyError::WelcomeNotClaimed));
    let claimed = c
        .claim_packages(&a, &["uid_b".to_owned()], 10)
        .unwrap()
        .value;
    let r = claimed[0].key_package_ref.clone();
    // A group without b is not the member set; nor is a wrong key.
    let short = c
        .accept_commit(&a, facts(&channel, &a, 0, &both[..1], &[], "h1"), 10)
        .unwrap_err();
    assert!(
        matches!(short, DomainError::Keys(KeyError::MemberSetMismatch { ref expected }) if expected.len() == 2),
        "{short:?}"
    );
    let forged = c
        .accept_commit(
            &a,
            facts(
                &channel,
                &a,
                0,
                &[both[0], ("dev_uid_b", "other")],
                &[&r],
                "h1",
            ),
            10,
        )
        .unwrap_err();
    assert_eq!(forged, DomainError::Keys(KeyError::SignatureKeyMismatch));
    // Without a Welcome for b, b could never join: refused.
    let unwelcomed = c
        .accept_commit(&a, facts(&channel, &a, 0, &both, &[], "h1"), 10)
        .unwrap_err();
    assert_eq!(unwelcomed, DomainError::Keys(KeyError::WelcomeNotClaimed));
    let accepted = c
        .accept_commit(&a, facts(&channel, &a, 0, &both, &[&r], "h1"), 10)
        .unwrap();
    assert_eq!(accepted.value.epoch, 1);
    let kinds: Vec<&str> = accepted
        .records
        .iter()
        .map(|r| match r {
            Record::Group(_) => "group",
            Record::Commit(_) => "commit",
            Record::EpochSpan(_) => "span",
            Record::MailboxItem(m) if m.device_id == "dev_uid_b" => "welcome to b",
            Record::Event(_) => "event",
            _ => "other",
        })
        .filter(|k| *k != "other")
        .collect();
    for k in ["group", "commit", "span", "welcome to b", "event"] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    // The same commit again: the same answer, nothing new. Another for epoch 0: the conflict.
    let again = c
        .accept_commit(&a, facts(&channel, &a, 0, &both, &[&r], "h1"), 11)
        .unwrap();
    assert_eq!(
        (again.value.commit_id.as_str(), again.records.len()),
        (accepted.value.commit_id.as_str(), 0)
    );
    let late = c
        .accept_commit(&b, facts(&channel, &b, 0, &both, &[], "h2"), 11)
        .unwrap_err();
    assert_eq!(
        late,
        DomainError::Keys(KeyError::EpochConflict {
            message_epoch: 0,
            current_epoch: 1
        })
    );
    let next = c
        .accept_commit(&b, facts(&channel, &b, 1, &both, &[], "h3"), 12)
        .unwrap();
    assert_eq!(next.value.epoch, 2);
}

#[test]
fn an_encrypted_message_reaches_only_the_users_of_its_epoch() {
    let mut c = community(HistoryVisibility::Joined);
    let channel = setup(&mut c);
    let (a, b) = (actor("uid_owner"), actor("uid_b"));
    // No group yet: a post waits for the first commit.
    let early = c
        .post_message(&a, &channel, envelope(&a, 0), 10)
        .unwrap_err();
    assert_eq!(
        early,
        DomainError::Keys(KeyError::RotationRequired { current_epoch: 0 })
    );
    // a alone first (b leaves and comes back later).
    c.leave(&b, "home", 10).unwrap();
    c.accept_commit(
        &a,
        facts(&channel, &a, 0, &[("dev_uid_owner", KEY_A)], &[], "h1"),
        11,
    )
    .unwrap();
    let first = c.post_message(&a, &channel, envelope(&a, 1), 12).unwrap();
    c.admit(&b, "home", Admission::Connect, 13).unwrap();
    assert_eq!(
        c.post_message(&a, &channel, envelope(&a, 1), 13)
            .unwrap_err(),
        DomainError::Keys(KeyError::RotationRequired { current_epoch: 1 })
    );
    let r = c
        .claim_packages(&a, &["uid_b".to_owned()], 13)
        .unwrap()
        .value[0]
        .key_package_ref
        .clone();
    c.accept_commit(
        &a,
        facts(
            &channel,
            &a,
            1,
            &[("dev_uid_owner", KEY_A), ("dev_uid_b", KEY_B)],
            &[&r],
            "h2",
        ),
        14,
    )
    .unwrap();
    // Epoch 1 is still in the grace window for a; b was not in it.
    let late = c.post_message(&a, &channel, envelope(&a, 1), 15).unwrap();
    assert_eq!(
        late.events[0].audience,
        Audience::Users(vec!["uid_owner".to_owned()])
    );
    let now = c.post_message(&a, &channel, envelope(&a, 2), 16).unwrap();
    assert_eq!(
        now.events[0].audience,
        Audience::Users(vec!["uid_b".to_owned(), "uid_owner".to_owned()])
    );
    let ch = c.channel_info(&channel).unwrap().clone();
    let for_b = c.read_visibility(&ch, Some("uid_b")).unwrap();
    let stored = |o: &Outcome<crate::domain::views::MessageItem>| stored_message(&o.records);
    assert!(!for_b.allows_message(&stored(&first)) && !for_b.allows_message(&stored(&late)));
    assert!(for_b.allows_message(&stored(&now)));
    assert!(
        c.read_visibility(&ch, Some("uid_owner"))
            .unwrap()
            .allows_message(&stored(&first))
    );
    // b's own device may not speak for a's, nor post an epoch it was not in.
    assert_eq!(
        c.post_message(&b, &channel, envelope(&a, 2), 17)
            .unwrap_err(),
        DomainError::Keys(KeyError::SenderNotInEpoch)
    );
    assert_eq!(
        c.post_message(&b, &channel, envelope(&b, 1), 17)
            .unwrap_err(),
        DomainError::Keys(KeyError::SenderNotInEpoch)
    );
    // Three epochs later epoch 2 is stale.
    for (e, h) in [(2, "h3"), (3, "h4"), (4, "h5"), (5, "h6")] {
        c.accept_commit(
            &a,
            facts(
                &channel,
                &a,
                e,
                &[("dev_uid_owner", KEY_A), ("dev_uid_b", KEY_B)],
                &[],
                h,
            ),
            18,
        )
        .unwrap();
    }
    assert_eq!(
        c.post_message(&a, &channel, envelope(&a, 2), 19)
            .unwrap_err(),
        DomainError::Keys(KeyError::EpochStale { current_epoch: 6 })
    );
    assert!(c.post_message(&a, &channel, envelope(&a, 3), 19).is_ok());
}

#[test]
fn expired_packages_are_never_handed_out_and_the_sweep_deletes_them_and_old_mail() {
    let mut c = community(HistoryVisibility::Joined);
    let channel = setup(&mut c);
    let a = actor("uid_owner");
    // The fixtures' packages live until 1,000,000: at that time none is handed out.
    assert!(
        c.claim_packages(&a, &["uid_b".to_owned()], 1_000_000)
            .unwrap()
            .value
            .is_empty()
    );
    let purged = c.purge_keys(1_000_000);
    let deleted = purged
        .iter()
        .filter(|r| matches!(r, Record::KeyPackageDeleted { .. }))
        .count();
    assert_eq!(
        deleted, 6,
        "both devices' two one-time and one last-resort packages"
    );
    assert!(c.purge_keys(1_000_000).is_empty(), "once");
    // Mail past 30 days goes too, in memory and in storage.
    let mut records = Vec::new();
    c.mailbox_push(
        "dev_uid_b",
        MailboxKind::Envelope,
        &channel,
        1,
        "blob",
        "dev_uid_owner",
        10,
        &mut records,
    );
    assert!(c.purge_keys(10 + MAILBOX_TTL_MS - 1).is_empty());
    assert_eq!(
        c.purge_keys(10 + MAILBOX_TTL_MS),
        vec![Record::MailboxExpired { before: 10 }]
    );
    assert_eq!(c.keys.mailboxes["dev_uid_b"].items.len(), 0);
}
