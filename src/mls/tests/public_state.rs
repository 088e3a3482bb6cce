//! The kept state: `public_state` round trips, expired leaves, unusable or
//! foreign states falling back to the GroupInfo, and the new GroupInfo checked
//! without `from_external`.

use super::*;
use crate::mls::group_info::{decode_group_info, group_info_fingerprint};
use crate::mls::state::{export_public_state, parse_public_state, restore_public_state};
use openmls::prelude::{Lifetime, ProcessedMessageContent};
use openmls_rust_crypto::MemoryStorage;

/// Another member processes and merges a commit.
fn apply(dev: &Dev, group: &mut MlsGroup, commit: &[u8]) {
    let message = MlsMessageIn::tls_deserialize_exact_bytes(commit).expect("commit");
    let protocol = message
        .try_into_protocol_message()
        .expect("protocol message");
    let processed = group
        .process_message(&dev.provider, protocol)
        .expect("process");
    match processed.into_content() {
        ProcessedMessageContent::StagedCommitMessage(staged) => group
            .merge_staged_commit(&dev.provider, *staged)
            .expect("merge staged"),
        _ => panic!("not a commit"),
    }
}

fn without_public_state(state: &GroupState) -> GroupState {
    GroupState {
        public_state: Vec::new(),
        ..state.clone()
    }
}

#[test]
fn expired_leaf_does_not_block_group() {
    let alice = Dev::new("alice-dev");
    let bob = Dev::new("bob-dev");
    let carol = Dev::new("carol-dev");
    let (mut ga, genesis) = create(&alice, CH);
    let (_, kb) = bob.kp();
    // Carol's package lives two seconds; she never updates.
    let (_, kc) = carol.kp_with(
        KeyPackage::builder().key_package_lifetime(Lifetime::new(2)),
        CIPHERSUITE,
    );
    let carol_not_after = kc.life_time().not_after();
    let add = commit(&alice, &mut ga, vec![kb, kc], vec![]);
    let acc1 = check_commit(
        CH.as_bytes(),
        None,
        Some(&genesis),
        &add.commit,
        add.welcome.as_deref(),
        &add.group_info,
        now(),
    )
    .expect("add");
    assert_eq!(acc1.loaded_from, StateSource::Genesis);
    assert!(!acc1.state.public_state.is_empty());
    ga.merge_pending_commit(&alice.provider).expect("merge");
    let mut gb = join(&bob, add.welcome.as_deref().expect("welcome"));

    // Let the clock pass carol's not_after (openmls: valid while now < not_after).
    while now() <= carol_not_after {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // An update by another member.
    let ub = update(&bob, &mut gb);
    // The GroupInfo alone no longer loads (the documented fallback hazard)...
    assert_eq!(
        accept(&without_public_state(&acc1.state), &ub),
        Err(MlsError::InvalidState)
    );
    // ...the kept public_state does.
    let acc2 = accept(&acc1.state, &ub).expect("update after expiry");
    assert_eq!(acc2.loaded_from, StateSource::PublicState);
    assert_eq!(acc2.new_epoch, 2);
    assert_eq!(acc2.committer, b"bob-dev");
    gb.merge_pending_commit(&bob.provider).expect("merge");
    apply(&alice, &mut ga, &ub.commit);

    // Removing the expired member.
    let rm = commit(&alice, &mut ga, vec![], vec![2]);
    let acc3 = accept(&acc2.state, &rm).expect("remove expired member");
    assert_eq!(acc3.loaded_from, StateSource::PublicState);
    assert_eq!(acc3.removed, vec![b"carol-dev".to_vec()]);
    let ids: Vec<&[u8]> = acc3.members.iter().map(|l| l.identity.as_slice()).collect();
    assert_eq!(ids, vec![&b"alice-dev"[..], b"bob-dev"]);
    ga.merge_pending_commit(&alice.provider).expect("merge");
    apply(&bob, &mut gb, &rm.commit);

    // The kept GroupInfo is exactly the merged state: without the expired leaf
    // it loads on its own again, and both paths give the same result.
    let ua = update(&alice, &mut ga);
    let from_info = accept(&without_public_state(&acc3.state), &ua).expect("from group info");
    assert_eq!(from_info.loaded_from, StateSource::GroupInfo);
    let from_state = accept(&acc3.state, &ua).expect("from public state");
    assert_eq!(from_state.loaded_from, StateSource::PublicState);
    assert_eq!(from_info.state, from_state.state);
    assert_eq!(from_info.members, from_state.members);
}

#[test]
fn genesis_public_state_restores() {
    let alice = Dev::new("alice-dev");
    let (_, genesis) = create(&alice, CH);
    let (state, _) = check_genesis(CH.as_bytes(), &genesis).expect("genesis");
    assert!(state.public_state.starts_with(PUBLIC_STATE_MAGIC));
    let parsed = parse_public_state(&state.public_state).expect("parses");
    assert!(!parsed.is_empty());
    let (verifiable, _) = decode_group_info(&genesis).expect("decode");
    let (expected, _) = group_info_fingerprint(&verifiable).expect("fingerprint");
    let (_, group) =
        restore_public_state(CH.as_bytes(), &state.public_state, &expected).expect("restores");
    assert_eq!(group.group_context().epoch().as_u64(), 0);
    // Not as another group.
    assert!(restore_public_state(b"other", &state.public_state, &expected).is_none());
    // Deterministic: the same input gives the same bytes.
    assert_eq!(
        check_genesis(CH.as_bytes(), &genesis).expect("again").0,
        state
    );
}

#[test]
fn unusable_public_state_falls_back_to_group_info() {
    let mut w = world();
    let state = w.accepted.state.clone();
    let a = update(&w.alice, &mut w.ga);
    let normal = accept(&state, &a).expect("normal");
    assert_eq!(normal.loaded_from, StateSource::PublicState);
    let ps = &state.public_state;
    let mut corrupted: Vec<Vec<u8>> = vec![
        Vec::new(),
        ps[..ps.len() / 2].to_vec(),
        ps[..ps.len() - 1].to_vec(),
        [ps.as_slice(), b"x"].concat(),
        b"ocds-pg1".to_vec(),
        b"ocds-pg1\x00\x00\x00\x00".to_vec(),
        b"ocds-pg9".iter().chain(&ps[8..]).copied().collect(),
        vec![0xff; 64],
        vec![0u8; MAX_PUBLIC_STATE_BYTES + 1],
    ];
    // A flipped byte in every 97th position (framing, keys and JSON values).
    for i in (0..ps.len()).step_by(97) {
        let mut v = ps.clone();
        v[i] ^= 0x20;
        corrupted.push(v);
    }
    for (n, bad) in corrupted.iter().enumerate() {
        let s = GroupState {
            public_state: bad.clone(),
            ..state.clone()
        };
        let r = accept(&s, &a).unwrap_or_else(|e| panic!("corruption {n}: {e:?}"));
        assert_eq!(r.state, normal.state, "corruption {n}");
        assert_eq!(r.members, normal.members, "corruption {n}");
        if n < 9 {
            assert_eq!(r.loaded_from, StateSource::GroupInfo, "corruption {n}");
        }
    }
    // Stored state that cannot load either way is still InvalidState.
    let hopeless = GroupState {
        epoch: 1,
        group_info: b"\x00\x01junk".to_vec(),
        public_state: state.public_state.clone(),
    };
    assert_eq!(accept(&hopeless, &a), Err(MlsError::InvalidState));
}

#[test]
fn foreign_public_state_not_used() {
    let mut w = world();
    let state1 = w.accepted.state.clone();
    let genesis_state = check_genesis(CH.as_bytes(), &w.genesis).expect("genesis").0;
    // Another group with the same id and epoch (a channel created again).
    let w2 = world();
    let other_ch = {
        let dev = Dev::new("alice-dev");
        let (_, g) = create(&dev, "other-channel");
        check_genesis(b"other-channel", &g).expect("other").0
    };
    let a = update(&w.alice, &mut w.ga);
    let normal = accept(&state1, &a).expect("normal");
    for (name, foreign) in [
        ("same id, other group", &w2.accepted.state.public_state),
        ("same group, epoch 0", &genesis_state.public_state),
        ("other group id", &other_ch.public_state),
    ] {
        let mixed = GroupState {
            public_state: foreign.clone(),
            ..state1.clone()
        };
        let r = accept(&mixed, &a).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(r.loaded_from, StateSource::GroupInfo, "{name}");
        assert_eq!(r.state, normal.state, "{name}");
    }
    // A commit made against the other group is not accepted with its
    // public_state next to this group's GroupInfo.
    let mut w2 = w2;
    let a2 = update(&w2.alice, &mut w2.ga);
    let mixed = GroupState {
        public_state: w2.accepted.state.public_state.clone(),
        ..state1.clone()
    };
    assert!(accept(&mixed, &a2).is_err());
    assert!(accept(&w2.accepted.state, &a2).is_ok());

    // Two branches of epoch 2: Alice's (accepted) and Bob's.
    let branch_a = normal.state.clone();
    let ub = update(&w.bob, &mut w.gb);
    let branch_b = accept(&state1, &ub).expect("bob's branch").state;
    w.ga.merge_pending_commit(&w.alice.provider)
        .expect("merge a");
    w.gb.merge_pending_commit(&w.bob.provider).expect("merge b");
    let next_a = update(&w.alice, &mut w.ga);
    let next_b = update(&w.bob, &mut w.gb);
    let a_info_b_state = GroupState {
        public_state: branch_b.public_state.clone(),
        ..branch_a.clone()
    };
    let b_info_a_state = GroupState {
        public_state: branch_a.public_state.clone(),
        ..branch_b.clone()
    };
    // Bob's branch commit is never accepted against Alice's GroupInfo...
    assert!(accept(&a_info_b_state, &next_b).is_err());
    assert!(accept(&branch_a, &next_b).is_err());
    // ...and each GroupInfo wins over the other branch's public_state.
    let pure_a = accept(&branch_a, &next_a).expect("pure a");
    let r = accept(&a_info_b_state, &next_a).expect("a with b's state");
    assert_eq!(r.loaded_from, StateSource::GroupInfo);
    assert_eq!(r.state, pure_a.state);
    let pure_b = accept(&branch_b, &next_b).expect("pure b");
    let r = accept(&b_info_a_state, &next_b).expect("b with a's state");
    assert_eq!(r.loaded_from, StateSource::GroupInfo);
    assert_eq!(r.state, pure_b.state);
    assert!(accept(&b_info_a_state, &next_a).is_err());
}

#[test]
fn wrong_interim_transcript_hash_retried_from_group_info() {
    // A public_state that restores and matches the GroupInfo (context, tag,
    // tree) but carries another interim transcript hash, which openmls does
    // not let us compare: the commit computes another transcript, fails
    // against it, and is then accepted from the GroupInfo.
    let mut w = world();
    let state = w.accepted.state.clone();
    let a = update(&w.alice, &mut w.ga);
    let normal = accept(&state, &a).expect("normal");
    let mut entries = parse_public_state(&state.public_state).expect("parses");
    let value = entries
        .iter_mut()
        .find(|(k, _)| k.starts_with(b"InterimTranscriptHash"))
        .map(|(_, v)| v)
        .expect("interim transcript hash entry");
    let text = String::from_utf8(value.clone()).expect("json");
    let open = text.find('[').expect("array");
    let end = open + 1 + text[open + 1..].find(',').expect("elements");
    let replacement = if &text[open + 1..end] == "7" {
        "8"
    } else {
        "7"
    };
    *value = format!("{}{}{}", &text[..=open], replacement, &text[end..]).into_bytes();
    let storage = MemoryStorage::default();
    *storage.values.write().expect("lock") = entries;
    let tampered = export_public_state(&storage).expect("export");
    let (verifiable, _) = decode_group_info(&state.group_info).expect("decode");
    let (expected, _) = group_info_fingerprint(&verifiable).expect("fingerprint");
    assert!(restore_public_state(CH.as_bytes(), &tampered, &expected).is_some());
    let s = GroupState {
        public_state: tampered,
        ..state.clone()
    };
    let r = accept(&s, &a).expect("accepted on the second try");
    assert_eq!(r.loaded_from, StateSource::GroupInfo);
    assert_eq!(r.state, normal.state);
}

#[test]
fn new_group_info_checked_without_from_external() {
    let mut w = world();
    let state = w.accepted.state.clone();
    let a = update(&w.alice, &mut w.ga);
    // A broken signature (the last byte is in it).
    let mut bad_sig = a.group_info.clone();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 1;
    let bundle = Bundle {
        commit: a.commit.clone(),
        welcome: None,
        group_info: bad_sig,
    };
    assert_eq!(accept(&state, &bundle), Err(MlsError::InvalidGroupInfo));
    // Without the ratchet tree.
    w.ga.merge_pending_commit(&w.alice.provider).expect("merge");
    let no_tree = bytes(
        &w.ga
            .export_group_info(w.alice.provider.crypto(), &w.alice.signer, false)
            .expect("group info"),
    );
    let bundle = Bundle {
        commit: a.commit.clone(),
        welcome: None,
        group_info: no_tree,
    };
    assert_eq!(accept(&state, &bundle), Err(MlsError::InvalidGroupInfo));
    // Signed by another member of the merged tree (Bob, after processing):
    // same context, tag and tree, so it is the merged state.
    apply(&w.bob, &mut w.gb, &a.commit);
    let by_bob = bytes(
        &w.gb
            .export_group_info(w.bob.provider.crypto(), &w.bob.signer, true)
            .expect("group info"),
    );
    let bundle = Bundle {
        commit: a.commit.clone(),
        welcome: None,
        group_info: by_bob.clone(),
    };
    let acc = accept(&state, &bundle).expect("signed by bob");
    assert_eq!(acc.state.group_info, by_bob);
    assert_eq!(acc.committer, b"alice-dev");
    // The same with the committer's own GroupInfo gives the same public_state.
    assert_eq!(
        accept(&state, &a).expect("alice's").state.public_state,
        acc.state.public_state
    );
}
