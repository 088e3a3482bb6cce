//! The MLS delivery service's tables (wire contract Part C, migration `0010_e2ee`) through the
//! storage bridge, on both engines: every key record written with `WriteOp::Apply` and read
//! back through `load_snapshot` and `keys`, and history pages of encrypted channels (the epoch
//! rule) held to `MemoryHistory::query`.

mod support;

use openchatd::domain::history::MemoryHistory;
use openchatd::domain::keys::*;
use openchatd::domain::model::*;
use openchatd::domain::records::{MessageQuery, Record, Visibility};
use openchatd::storage::{KeysAnswer, KeysQuery, Storage};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::block_on;
use support::storage::{StorageHarness, apply, now};

fn keys_snapshot(storage: &Storage) -> KeysSnapshot {
    block_on(storage.load_snapshot(10)).expect("snapshot").keys
}

fn read(storage: &Storage, query: KeysQuery) -> KeysAnswer {
    block_on(storage.keys(query)).expect("read")
}

fn package(r: &str, device: &str, last_resort: bool, at: Millis) -> KeyPackageRow {
    KeyPackageRow {
        key_package_ref: r.to_owned(),
        device_id: device.to_owned(),
        user_uid: "uid_a".to_owned(),
        data: format!("data-of-{r}"),
        last_resort,
        uploaded_at: at,
        not_after: at + 1000,
    }
}

fn commit(epoch: u64, at: Millis) -> CommitRow {
    CommitRow {
        channel_id: "ch_1".to_owned(),
        epoch,
        commit_id: format!("cmt_{epoch}"),
        sender_device_id: "dev_a".to_owned(),
        commit: format!("commit-{epoch}"),
        commit_hash: format!("hash-{epoch}"),
        members: "[\"dev_a\",\"dev_b\"]".to_owned(),
        created_at: at,
    }
}

fn item(device: &str, seq: i64, at: Millis) -> MailboxItem {
    MailboxItem {
        device_id: device.to_owned(),
        seq,
        kind: if seq == 1 {
            MailboxKind::Welcome
        } else {
            MailboxKind::Envelope
        },
        channel_id: "ch_1".to_owned(),
        epoch: seq as u64,
        blob: format!("blob-{seq}"),
        sender_device_id: "dev_a".to_owned(),
        created_at: at,
    }
}

fn every_key_record_round_trips(h: StorageHarness) {
    let (storage, handle) = h.start();
    let t = now();
    let mut records = vec![
        Record::KeyPackage(package("r1", "dev_b", false, t)),
        Record::KeyPackage(package("r2", "dev_b", false, t)),
        Record::KeyPackage(package("lr1", "dev_b", true, t)),
        Record::KeyPackage(package("lr0", "dev_b", true, t)),
        Record::KeyPackageDeleted {
            key_package_ref: "lr0".to_owned(),
        },
        Record::KeyPackage(package("gone", "dev_x", false, t)),
        Record::MailboxItem(item("dev_x", 1, t)),
        Record::DevicePurged {
            device_id: "dev_x".to_owned(),
        },
        Record::KeyPackageClaim(Claim {
            claim_id: "kpc_1".to_owned(),
            key_package_ref: "r1".to_owned(),
            device_id: "dev_b".to_owned(),
            claimer_uid: "uid_a".to_owned(),
            claimer_device_id: "dev_a".to_owned(),
            last_resort: false,
            claimed_at: t,
        }),
        Record::Group(GroupRow {
            channel_id: "ch_1".to_owned(),
            epoch: 1,
            group_info: Some("gi-1".to_owned()),
            public_state: Some("ps-1".to_owned()),
            updated_at: t,
        }),
        Record::Commit(commit(1, t)),
        Record::Group(GroupRow {
            channel_id: "ch_1".to_owned(),
            epoch: 2,
            group_info: Some("gi-2".to_owned()),
            public_state: Some("ps-2".to_owned()),
            updated_at: t,
        }),
        Record::Commit(commit(2, t)),
        Record::EpochSpan(EpochSpan {
            channel_id: "ch_1".to_owned(),
            user_uid: "uid_a".to_owned(),
            from_epoch: 1,
            to_epoch: None,
        }),
        Record::EpochSpan(EpochSpan {
            channel_id: "ch_1".to_owned(),
            user_uid: "uid_b".to_owned(),
            from_epoch: 1,
            to_epoch: None,
        }),
        Record::EpochSpan(EpochSpan {
            channel_id: "ch_1".to_owned(),
            user_uid: "uid_b".to_owned(),
            from_epoch: 1,
            to_epoch: Some(1),
        }),
        Record::MailboxItem(item("dev_b", 1, t)),
        Record::MailboxItem(item("dev_b", 2, t)),
        Record::MailboxItem(item("dev_b", 3, t)),
        Record::MailboxAcked {
            device_id: "dev_b".to_owned(),
            up_to_seq: 1,
        },
        Record::Backup(Backup {
            user_uid: "uid_a".to_owned(),
            version: 1,
            ciphertext: "ct1".to_owned(),
            kdf_metadata: "k".to_owned(),
            updated_at: t,
        }),
        Record::Backup(Backup {
            user_uid: "uid_a".to_owned(),
            version: 2,
            ciphertext: "ct2".to_owned(),
            kdf_metadata: "k".to_owned(),
            updated_at: t,
        }),
    ];
    apply(&storage, records.clone());
    let expected = KeysSnapshot {
        packages: vec![
            KeyPackageIndex {
                key_package_ref: "lr1".to_owned(),
                device_id: "dev_b".to_owned(),
                user_uid: "uid_a".to_owned(),
                last_resort: true,
                not_after: t + 1000,
                claimed: false,
            },
            KeyPackageIndex {
                key_package_ref: "r1".to_owned(),
                device_id: "dev_b".to_owned(),
                user_uid: "uid_a".to_owned(),
                last_resort: false,
                not_after: t + 1000,
                claimed: true,
            },
            KeyPackageIndex {
                key_package_ref: "r2".to_owned(),
                device_id: "dev_b".to_owned(),
                user_uid: "uid_a".to_owned(),
                last_resort: false,
                not_after: t + 1000,
                claimed: false,
            },
        ],
        claims: vec![("r1".to_owned(), "dev_b".to_owned(), "dev_a".to_owned())],
        groups: vec![GroupRow {
            channel_id: "ch_1".to_owned(),
            epoch: 2,
            group_info: Some("gi-2".to_owned()),
            public_state: Some("ps-2".to_owned()),
            updated_at: t,
        }],
        recent_commits: vec![
            CommitRow {
                commit: String::new(),
                ..commit(1, t)
            },
            CommitRow {
                commit: String::new(),
                ..commit(2, t)
            },
        ],
        spans: vec![
            EpochSpan {
                channel_id: "ch_1".to_owned(),
                user_uid: "uid_a".to_owned(),
                from_epoch: 1,
                to_epoch: None,
            },
            EpochSpan {
                channel_id: "ch_1".to_owned(),
                user_uid: "uid_b".to_owned(),
                from_epoch: 1,
                to_epoch: Some(1),
            },
        ],
        mailbox: vec![
            (
                "dev_b".to_owned(),
                MailboxIndex {
                    seq: 2,
                    bytes: 6,
                    created_at: t,
                },
            ),
            (
                "dev_b".to_owned(),
                MailboxIndex {
                    seq: 3,
                    bytes: 6,
                    created_at: t,
                },
            ),
        ],
        backups: vec![("uid_a".to_owned(), 2)],
    };
    assert_eq!(keys_snapshot(&storage), expected, "[{}]", h.engine_name());
    // Applying the same records again changes nothing (every statement is idempotent but the
    // ack, which deletes what is already deleted).
    records.retain(|r| {
        !matches!(
            r,
            Record::KeyPackageDeleted { .. } | Record::DevicePurged { .. }
        )
    });
    records.retain(|r| !matches!(r, Record::KeyPackage(p) if p.key_package_ref == "lr0" || p.key_package_ref == "gone"));
    records
        .retain(|r| !matches!(r, Record::MailboxItem(m) if m.device_id == "dev_x" || m.seq == 1));
    apply(&storage, records);
    assert_eq!(
        keys_snapshot(&storage),
        expected,
        "[{}] idempotent",
        h.engine_name()
    );

    // The reads that hand blobs out.
    let KeysAnswer::Packages(data) = read(
        &storage,
        KeysQuery::Packages(vec!["r1".into(), "lr1".into(), "gone".into()]),
    ) else {
        panic!()
    };
    assert_eq!(
        data,
        vec![
            ("r1".to_owned(), "data-of-r1".to_owned()),
            ("lr1".to_owned(), "data-of-lr1".to_owned())
        ]
    );
    let KeysAnswer::Mailbox(items) = read(
        &storage,
        KeysQuery::Mailbox {
            device_id: "dev_b".into(),
            after: 0,
            limit: 100,
            now: t,
        },
    ) else {
        panic!()
    };
    assert_eq!(items, vec![item("dev_b", 2, t), item("dev_b", 3, t)]);
    let KeysAnswer::Mailbox(items) = read(
        &storage,
        KeysQuery::Mailbox {
            device_id: "dev_b".into(),
            after: 2,
            limit: 100,
            now: t,
        },
    ) else {
        panic!()
    };
    assert_eq!(items, vec![item("dev_b", 3, t)]);
    let KeysAnswer::Mailbox(items) = read(
        &storage,
        KeysQuery::Mailbox {
            device_id: "dev_b".into(),
            after: 0,
            limit: 100,
            now: t + MAILBOX_TTL_MS,
        },
    ) else {
        panic!()
    };
    assert!(items.is_empty(), "expired items are not handed out");
    let KeysAnswer::Commits(log) = read(
        &storage,
        KeysQuery::Commits {
            channel_id: "ch_1".into(),
            after_epoch: 1,
            limit: 10,
        },
    ) else {
        panic!()
    };
    assert_eq!(log, vec![commit(2, t)]);
    let KeysAnswer::Commits(found) = read(
        &storage,
        KeysQuery::CommitByHash {
            channel_id: "ch_1".into(),
            commit_hash: "hash-1".into(),
        },
    ) else {
        panic!()
    };
    assert_eq!(found, vec![commit(1, t)]);
    let KeysAnswer::Backup(backup) = read(
        &storage,
        KeysQuery::Backup {
            user_uid: "uid_a".into(),
        },
    ) else {
        panic!()
    };
    assert_eq!(
        backup.map(|b| (b.version, b.ciphertext)),
        Some((2, "ct2".to_owned()))
    );
    handle.shutdown();
}

/// An encrypted message at `seq` of `epoch`.
fn sealed(seq: Seq, epoch: u64) -> Message {
    Message {
        seq,
        id: message_id(seq),
        server_id: "srv".to_owned(),
        channel_id: "ch_1".to_owned(),
        author_uid: "uid_a".to_owned(),
        author_device_id: "dev_a".to_owned(),
        content: Content::Envelope(Envelope {
            epoch,
            ciphertext: format!("ct{seq}"),
            sender_device_id: "dev_a".to_owned(),
        }),
        reply_to_id: None,
        mentions: vec![],
        attachments: vec![],
        created_at: seq,
        deleted_at: None,
    }
}

fn epoch_pages_match_the_reference(h: StorageHarness) {
    let (storage, handle) = h.start();
    // 40 messages with epochs that mostly rise but fall back within the grace window.
    let epochs: Vec<u64> = (1..=40)
        .map(|s: u64| (s / 4).saturating_sub(s % 3))
        .collect();
    let messages: Vec<Message> = epochs
        .iter()
        .enumerate()
        .map(|(i, e)| sealed(i as Seq + 1, *e))
        .collect();
    apply(
        &storage,
        messages.iter().cloned().map(Record::Message).collect(),
    );
    let mut reference = MemoryHistory::default();
    for m in &messages {
        reference.insert(m.clone());
    }
    let mut runner = TestRunner::new(Config {
        cases: 64,
        ..Config::default()
    });
    let strategy = (
        proptest::collection::vec((0u64..12, proptest::option::of(0u64..12)), 0..3),
        proptest::option::of(proptest::collection::vec(
            (0i64..40, proptest::option::of(0i64..40)),
            1..3,
        )),
        proptest::option::of(1i64..42),
        1usize..15,
    );
    let result = runner.run(&strategy, |(epochs, seqs, before, limit)| {
        let seqs = match seqs {
            None => Visibility::All,
            Some(spans) => Visibility::Spans(spans),
        };
        let query = MessageQuery {
            channel_id: "ch_1".to_owned(),
            visibility: Visibility::Epochs {
                seqs: Box::new(seqs),
                epochs,
            },
            before,
            after: None,
            limit,
            include_deleted: false,
        };
        let got = block_on(storage.messages(query.clone())).expect("page");
        let want = reference.query(&query);
        let ids = |p: &openchatd::domain::records::MessagePage| {
            p.messages.iter().map(|m| m.seq).collect::<Vec<_>>()
        };
        prop_assert_eq!(ids(&got), ids(&want), "{:?}", query);
        prop_assert_eq!(got.has_older, want.has_older, "{:?}", query);
        Ok(())
    });
    if let Err(failure) = result {
        panic!("[{}] {failure}", h.engine_name());
    }
    handle.shutdown();
}

support::on_both_engines!(
    harness StorageHarness:
    every_key_record_round_trips,
    epoch_pages_match_the_reference,
);
