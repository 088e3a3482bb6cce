//! Genesis GroupInfos and commit bundles: accepted commits, the genesis
//! rules, epochs, mismatched GroupInfos, framing and welcomes.

use super::*;
use openmls::prelude::MIXED_CIPHERTEXT_WIRE_FORMAT_POLICY;

#[test]
fn genesis_checked() {
    let alice = Dev::new("alice-dev");
    let (_, genesis) = create(&alice, CH);
    let (state, leaf) = check_genesis(CH.as_bytes(), &genesis).expect("genesis");
    assert_eq!(state.epoch, 0);
    assert_eq!(leaf.identity, b"alice-dev");
    assert_eq!(leaf.signature_key, alice.key());
    assert_eq!(check_genesis(b"other", &genesis), Err(MlsError::WrongGroup));
    assert_eq!(
        check_genesis(CH.as_bytes(), b"\x00\x01\x00\x04"),
        Err(MlsError::InvalidGenesis)
    );
    let (kp, _) = alice.kp();
    assert_eq!(
        check_genesis(CH.as_bytes(), &kp),
        Err(MlsError::InvalidGenesis)
    );
}

#[test]
fn add_two_members_accepted() {
    let w = world();
    let a = &w.accepted;
    assert_eq!(a.new_epoch, 1);
    assert_eq!(a.state.epoch, 1);
    assert_eq!(a.committer, b"alice-dev");
    let ids: Vec<&[u8]> = a.members.iter().map(|l| l.identity.as_slice()).collect();
    assert_eq!(ids, vec![&b"alice-dev"[..], b"bob-dev", b"carol-dev"]);
    assert_eq!(a.members[1].signature_key, w.bob.key());
    let mut got = a.welcome_refs.clone();
    got.sort();
    let mut want = w.refs.clone();
    want.sort();
    assert_eq!(got, want);
    assert!(a.removed.is_empty());
    assert_eq!(a.state.group_info, w.add.group_info);
}

#[test]
fn genesis_rules() {
    let w = world();
    let b = &w.add;
    assert_eq!(
        check_commit(
            CH.as_bytes(),
            None,
            None,
            &b.commit,
            b.welcome.as_deref(),
            &b.group_info,
            now()
        ),
        Err(MlsError::MissingGenesis)
    );
    assert_eq!(
        check_commit(
            CH.as_bytes(),
            Some(&w.accepted.state),
            Some(&w.genesis),
            &b.commit,
            b.welcome.as_deref(),
            &b.group_info,
            now()
        ),
        Err(MlsError::UnexpectedGenesis)
    );
    assert_eq!(
        check_commit(
            b"other",
            None,
            Some(&w.genesis),
            &b.commit,
            b.welcome.as_deref(),
            &b.group_info,
            now()
        ),
        Err(MlsError::WrongGroup)
    );
}

#[test]
fn stale_epoch_refused() {
    let mut w = world();
    let state1 = w.accepted.state.clone();
    // Bob and Alice both commit on epoch 1; Alice's is accepted first.
    let first = update(&w.alice, &mut w.ga);
    let second = update(&w.bob, &mut w.gb);
    let acc = check_commit(
        CH.as_bytes(),
        Some(&state1),
        None,
        &first.commit,
        None,
        &first.group_info,
        now(),
    )
    .expect("first");
    assert_eq!(acc.new_epoch, 2);
    assert_eq!(
        check_commit(
            CH.as_bytes(),
            Some(&acc.state),
            None,
            &second.commit,
            None,
            &second.group_info,
            now()
        ),
        Err(MlsError::WrongEpoch {
            message_epoch: 1,
            current_epoch: 2
        })
    );
    // Replaying the accepted one is refused the same way.
    assert!(matches!(
        check_commit(
            CH.as_bytes(),
            Some(&acc.state),
            None,
            &first.commit,
            None,
            &first.group_info,
            now()
        ),
        Err(MlsError::WrongEpoch { .. })
    ));
    // And the next one from Alice goes through.
    w.ga.merge_pending_commit(&w.alice.provider).expect("merge");
    let third = commit(&w.alice, &mut w.ga, vec![], vec![2]);
    let acc3 = check_commit(
        CH.as_bytes(),
        Some(&acc.state),
        None,
        &third.commit,
        None,
        &third.group_info,
        now(),
    )
    .expect("third");
    assert_eq!(acc3.removed, vec![b"carol-dev".to_vec()]);
    assert_eq!(acc3.members.len(), 2);
}

#[test]
fn mismatched_group_info_refused() {
    let mut w = world();
    let state = w.accepted.state.clone();
    let a = update(&w.alice, &mut w.ga);
    let b = update(&w.bob, &mut w.gb);
    // Alice's commit with Bob's epoch-2 group info.
    assert_eq!(
        check_commit(
            CH.as_bytes(),
            Some(&state),
            None,
            &a.commit,
            None,
            &b.group_info,
            now()
        ),
        Err(MlsError::GroupInfoMismatch)
    );
    // Alice's commit with the current (epoch-1) group info.
    assert_eq!(
        check_commit(
            CH.as_bytes(),
            Some(&state),
            None,
            &a.commit,
            None,
            &state.group_info,
            now()
        ),
        Err(MlsError::GroupInfoMismatch)
    );
    // Garbage group info.
    assert_eq!(
        check_commit(
            CH.as_bytes(),
            Some(&state),
            None,
            &a.commit,
            None,
            b"\x00\x01junk",
            now()
        ),
        Err(MlsError::InvalidGroupInfo)
    );
    // The right one passes.
    assert!(
        check_commit(
            CH.as_bytes(),
            Some(&state),
            None,
            &a.commit,
            None,
            &a.group_info,
            now()
        )
        .is_ok()
    );
}

#[test]
fn private_commit_and_proposal_refused() {
    let mut w = world();
    let state = w.accepted.state.clone();
    w.ga.set_configuration(
        w.alice.provider.storage(),
        &join_config(MIXED_CIPHERTEXT_WIRE_FORMAT_POLICY),
    )
    .expect("config");
    let private = update(&w.alice, &mut w.ga);
    assert_eq!(
        check_commit(
            CH.as_bytes(),
            Some(&state),
            None,
            &private.commit,
            None,
            &private.group_info,
            now()
        ),
        Err(MlsError::NotPublicMessage)
    );
    assert_eq!(
        check_application(CH.as_bytes(), &private.commit),
        Err(MlsError::NotApplication)
    );
    w.ga.clear_pending_commit(w.alice.provider.storage())
        .expect("clear");
    w.ga.set_configuration(
        w.alice.provider.storage(),
        &join_config(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY),
    )
    .expect("config");
    let (proposal, _) =
        w.ga.propose_self_update(
            &w.alice.provider,
            &w.alice.signer,
            LeafNodeParameters::default(),
        )
        .expect("proposal");
    assert_eq!(
        check_commit(
            CH.as_bytes(),
            Some(&state),
            None,
            &bytes(&proposal),
            None,
            &state.group_info,
            now()
        ),
        Err(MlsError::NotACommit)
    );
}

#[test]
fn welcome_rules() {
    let mut w = world();
    let state = w.accepted.state.clone();
    let dave = Dev::new("dave-dev");
    let (_, kd) = dave.kp();
    let b = commit(&w.alice, &mut w.ga, vec![kd], vec![]);
    assert_eq!(
        check_commit(
            CH.as_bytes(),
            Some(&state),
            None,
            &b.commit,
            None,
            &b.group_info,
            now()
        ),
        Err(MlsError::MissingWelcome)
    );
    // The welcome of another commit (names bob and carol, not dave).
    assert_eq!(
        check_commit(
            CH.as_bytes(),
            Some(&state),
            None,
            &b.commit,
            w.add.welcome.as_deref(),
            &b.group_info,
            now()
        ),
        Err(MlsError::WelcomeMismatch)
    );
    assert_eq!(
        check_commit(
            CH.as_bytes(),
            Some(&state),
            None,
            &b.commit,
            Some(b"\x00\x01\x00\x03"),
            &b.group_info,
            now()
        ),
        Err(MlsError::InvalidWelcome)
    );
    // Added key package expired by the caller's clock.
    assert_eq!(
        check_commit(
            CH.as_bytes(),
            Some(&state),
            None,
            &b.commit,
            b.welcome.as_deref(),
            &b.group_info,
            now() + 100 * 86400
        ),
        Err(MlsError::Expired)
    );
    let ok = check_commit(
        CH.as_bytes(),
        Some(&state),
        None,
        &b.commit,
        b.welcome.as_deref(),
        &b.group_info,
        now(),
    )
    .expect("ok");
    assert_eq!(ok.welcome_refs.len(), 1);
    // A welcome with a commit that adds nobody.
    w.ga.clear_pending_commit(w.alice.provider.storage())
        .expect("clear");
    let u = update(&w.alice, &mut w.ga);
    assert_eq!(
        check_commit(
            CH.as_bytes(),
            Some(&state),
            None,
            &u.commit,
            b.welcome.as_deref(),
            &u.group_info,
            now()
        ),
        Err(MlsError::UnexpectedWelcome)
    );
    // Commit of another group.
    let _ = &w.carol;
    assert_eq!(
        check_commit(
            b"other-channel",
            Some(&state),
            None,
            &u.commit,
            None,
            &u.group_info,
            now()
        ),
        Err(MlsError::WrongGroup)
    );
}
