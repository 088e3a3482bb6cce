//! Unit tests for the DS checks, with a minimal inline openmls client (the
//! full test client lives in `tests/support/mls_client.rs`, which unit tests
//! cannot import).

use super::*;
use openmls::prelude::{
    Capabilities, CommitMessageBundle, CredentialWithKey, ExtensionType, KeyPackageBuilder,
    LeafNodeIndex, LeafNodeParameters, Lifetime, MIXED_CIPHERTEXT_WIRE_FORMAT_POLICY,
    MIXED_PLAINTEXT_WIRE_FORMAT_POLICY, MlsGroup, MlsGroupCreateConfig, MlsGroupJoinConfig,
    MlsMessageOut, SignatureScheme, StagedWelcome,
};
use openmls_basic_credential::SignatureKeyPair;
use std::time::{SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------- helpers

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A device: provider (key store), signer, credential.
struct Dev {
    id: String,
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
}

impl Dev {
    fn new(id: &str) -> Dev {
        Self::with_scheme(id, SignatureScheme::ED25519)
    }

    fn with_scheme(id: &str, scheme: SignatureScheme) -> Dev {
        let provider = OpenMlsRustCrypto::default();
        let signer = SignatureKeyPair::new(scheme).expect("keygen");
        signer.store(provider.storage()).expect("store signer");
        Dev {
            id: id.to_string(),
            provider,
            signer,
        }
    }

    fn key(&self) -> [u8; 32] {
        let mut k = [0u8; 32];
        let public = self.signer.public();
        if public.len() == 32 {
            k.copy_from_slice(public);
        }
        k
    }

    fn cred(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(self.id.as_bytes().to_vec()).into(),
            signature_key: self.signer.public().into(),
        }
    }

    fn kp_with(&self, builder: KeyPackageBuilder, cs: Ciphersuite) -> (Vec<u8>, KeyPackage) {
        let bundle = builder
            .build(cs, &self.provider, &self.signer, self.cred())
            .expect("key package");
        let kp = bundle.key_package().clone();
        (bytes(&MlsMessageOut::from(kp.clone())), kp)
    }

    fn kp(&self) -> (Vec<u8>, KeyPackage) {
        self.kp_with(KeyPackage::builder(), CIPHERSUITE)
    }
}

fn bytes(m: &MlsMessageOut) -> Vec<u8> {
    m.tls_serialize_detached().expect("serialize")
}

fn join_config(policy: openmls::prelude::WireFormatPolicy) -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .wire_format_policy(policy)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(3)
        .build()
}

/// Creates a group and returns it with its genesis GroupInfo.
fn create(dev: &Dev, ch: &str) -> (MlsGroup, Vec<u8>) {
    let config = MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .use_ratchet_tree_extension(true)
        .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
        .max_past_epochs(3)
        .build();
    let group = MlsGroup::new_with_group_id(
        &dev.provider,
        &dev.signer,
        &config,
        GroupId::from_slice(ch.as_bytes()),
        dev.cred(),
    )
    .expect("group");
    let gi = group
        .export_group_info(dev.provider.crypto(), &dev.signer, true)
        .expect("group info");
    (group, bytes(&gi))
}

struct Bundle {
    commit: Vec<u8>,
    welcome: Option<Vec<u8>>,
    group_info: Vec<u8>,
}

fn to_bundle(b: CommitMessageBundle) -> Bundle {
    let (c, w, g) = b.into_messages();
    Bundle {
        commit: bytes(&c),
        welcome: w.as_ref().map(bytes),
        group_info: bytes(&g.expect("group info")),
    }
}

/// One commit adding `adds` and removing leaves `removes`, left pending.
fn commit(dev: &Dev, group: &mut MlsGroup, adds: Vec<KeyPackage>, removes: Vec<u32>) -> Bundle {
    let b = group
        .commit_builder()
        .propose_adds(adds)
        .propose_removals(removes.into_iter().map(LeafNodeIndex::new))
        .load_psks(dev.provider.storage())
        .expect("psks")
        .build(
            dev.provider.rand(),
            dev.provider.crypto(),
            &dev.signer,
            |_| true,
        )
        .expect("build")
        .stage_commit(&dev.provider)
        .expect("stage");
    to_bundle(b)
}

fn update(dev: &Dev, group: &mut MlsGroup) -> Bundle {
    to_bundle(
        group
            .self_update(&dev.provider, &dev.signer, LeafNodeParameters::default())
            .expect("update"),
    )
}

fn join(dev: &Dev, welcome: &[u8]) -> MlsGroup {
    let welcome = match MlsMessageIn::tls_deserialize_exact_bytes(welcome)
        .expect("welcome")
        .extract()
    {
        MlsMessageBodyIn::Welcome(w) => w,
        _ => panic!("not a welcome"),
    };
    StagedWelcome::new_from_welcome(
        &dev.provider,
        &join_config(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY),
        welcome,
        None,
    )
    .expect("staged welcome")
    .into_group(&dev.provider)
    .expect("join")
}

/// A three-member group at epoch 1, with the DS state accepted for it.
struct World {
    alice: Dev,
    bob: Dev,
    carol: Dev,
    ga: MlsGroup,
    gb: MlsGroup,
    genesis: Vec<u8>,
    add: Bundle,
    accepted: AcceptedCommit,
    refs: Vec<Vec<u8>>,
}

const CH: &str = "channel-42";

fn world() -> World {
    let alice = Dev::new("alice-dev");
    let bob = Dev::new("bob-dev");
    let carol = Dev::new("carol-dev");
    let (mut ga, genesis) = create(&alice, CH);
    let (_, kb) = bob.kp();
    let (_, kc) = carol.kp();
    let refs = vec![
        kb.hash_ref(alice.provider.crypto())
            .expect("ref")
            .as_slice()
            .to_vec(),
        kc.hash_ref(alice.provider.crypto())
            .expect("ref")
            .as_slice()
            .to_vec(),
    ];
    let add = commit(&alice, &mut ga, vec![kb, kc], vec![]);
    let accepted = check_commit(
        CH.as_bytes(),
        None,
        Some(&genesis),
        &add.commit,
        add.welcome.as_deref(),
        &add.group_info,
        now(),
    )
    .expect("add accepted");
    ga.merge_pending_commit(&alice.provider).expect("merge");
    let gb = join(&bob, add.welcome.as_deref().expect("welcome"));
    World {
        alice,
        bob,
        carol,
        ga,
        gb,
        genesis,
        add,
        accepted,
        refs,
    }
}

// ---------------------------------------------------------------- key packages

#[test]
fn key_package_accepted_with_openmls_ref() {
    let dev = Dev::new("dev-1");
    let (data, kp) = dev.kp();
    let valid = validate_key_package(&data, "dev-1", &dev.key(), now()).expect("valid");
    let expected = kp.hash_ref(dev.provider.crypto()).expect("ref");
    assert_eq!(valid.key_package_ref, expected.as_slice());
    assert_eq!(valid.not_after, kp.life_time().not_after());
    assert!(!valid.has_last_resort_extension);
    assert!(valid.not_after - valid.not_before <= MAX_KEY_PACKAGE_LIFETIME_SECS);
}

#[test]
fn last_resort_package_flagged() {
    let dev = Dev::new("dev-1");
    let builder = KeyPackage::builder()
        .mark_as_last_resort()
        .leaf_node_capabilities(
            Capabilities::builder()
                .extensions(vec![ExtensionType::LastResort])
                .build(),
        );
    let (data, _) = dev.kp_with(builder, CIPHERSUITE);
    let valid = validate_key_package(&data, "dev-1", &dev.key(), now()).expect("valid");
    assert!(valid.has_last_resort_extension);
    // Without the capability openmls itself refuses the package.
    let (bad, _) = dev.kp_with(KeyPackage::builder().mark_as_last_resort(), CIPHERSUITE);
    assert_eq!(
        validate_key_package(&bad, "dev-1", &dev.key(), now()),
        Err(MlsError::InvalidKeyPackage)
    );
}

#[test]
fn key_package_refusals() {
    let dev = Dev::new("dev-1");
    let (data, _) = dev.kp();
    let t = now();

    // Foreign signature key: credential names dev-1, signed by another key.
    let other = Dev::new("dev-1");
    let (foreign, _) = other.kp();
    assert_eq!(
        validate_key_package(&foreign, "dev-1", &dev.key(), t),
        Err(MlsError::SignatureKeyMismatch)
    );
    // Wrong identity.
    assert_eq!(
        validate_key_package(&data, "dev-2", &dev.key(), t),
        Err(MlsError::CredentialMismatch)
    );
    // Over-long lifetime.
    let (long, _) = dev.kp_with(
        KeyPackage::builder().key_package_lifetime(Lifetime::new(MAX_KEY_PACKAGE_LIFETIME_SECS)),
        CIPHERSUITE,
    );
    assert_eq!(
        validate_key_package(&long, "dev-1", &dev.key(), t),
        Err(MlsError::LifetimeTooLong)
    );
    // Just inside the limit (range = secs + 1h margin).
    let (ok, _) = dev.kp_with(
        KeyPackage::builder()
            .key_package_lifetime(Lifetime::new(MAX_KEY_PACKAGE_LIFETIME_SECS - 3600)),
        CIPHERSUITE,
    );
    assert!(validate_key_package(&ok, "dev-1", &dev.key(), t).is_ok());
    // Judged by the caller's clock.
    assert_eq!(
        validate_key_package(&data, "dev-1", &dev.key(), t + 90 * 86400),
        Err(MlsError::Expired)
    );
    assert_eq!(
        validate_key_package(&data, "dev-1", &dev.key(), t - 2 * 3600),
        Err(MlsError::NotYetValid)
    );
    // Garbage, truncated, too large, trailing bytes.
    assert_eq!(
        validate_key_package(b"hello world", "dev-1", &dev.key(), t),
        Err(MlsError::WrongProtocolVersion)
    );
    assert_eq!(
        validate_key_package(&[], "dev-1", &dev.key(), t),
        Err(MlsError::Malformed)
    );
    for cut in [1, 3, 5, 8, 20, data.len() / 2, data.len() - 1] {
        let r = validate_key_package(&data[..cut], "dev-1", &dev.key(), t);
        assert!(r.is_err(), "truncated at {cut}");
    }
    let mut trailing = data.clone();
    trailing.push(0);
    assert_eq!(
        validate_key_package(&trailing, "dev-1", &dev.key(), t),
        Err(MlsError::Malformed)
    );
    let big = vec![0u8; MAX_KEY_PACKAGE_BYTES + 1];
    assert!(matches!(
        validate_key_package(&big, "dev-1", &dev.key(), t),
        Err(MlsError::TooLarge { .. })
    ));
    // A bare KeyPackage (not wrapped in an MLSMessage).
    let (_, kp) = dev.kp();
    let bare = kp.tls_serialize_detached().expect("serialize");
    assert!(validate_key_package(&bare, "dev-1", &dev.key(), t).is_err());
    // A flipped signature byte.
    let mut bad_sig = data.clone();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 1;
    assert_eq!(
        validate_key_package(&bad_sig, "dev-1", &dev.key(), t),
        Err(MlsError::InvalidKeyPackage)
    );
    // Another ciphersuite.
    let p256 = Dev::with_scheme("dev-1", SignatureScheme::ECDSA_SECP256R1_SHA256);
    let (other_cs, _) = p256.kp_with(
        KeyPackage::builder(),
        Ciphersuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
    );
    assert_eq!(
        validate_key_package(&other_cs, "dev-1", &dev.key(), t),
        Err(MlsError::WrongCiphersuite)
    );
    // Not a key package (a group info).
    let (_, gi) = create(&dev, "c");
    assert_eq!(
        validate_key_package(&gi, "dev-1", &dev.key(), t),
        Err(MlsError::NotAKeyPackage)
    );
}

// ---------------------------------------------------------------- commits

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

#[test]
fn application_messages() {
    let mut w = world();
    let ct =
        w.ga.create_message(&w.alice.provider, &w.alice.signer, b"hi")
            .expect("message");
    let ct = bytes(&ct);
    assert_eq!(
        check_application(CH.as_bytes(), &ct),
        Ok(AppMessage { epoch: 1 })
    );
    assert_eq!(check_application(b"other", &ct), Err(MlsError::WrongGroup));
    assert_eq!(
        check_application(CH.as_bytes(), &w.add.commit),
        Err(MlsError::NotApplication)
    );
    assert_eq!(
        check_application(CH.as_bytes(), &w.add.group_info),
        Err(MlsError::NotApplication)
    );
    assert_eq!(
        check_application(CH.as_bytes(), b"xx"),
        Err(MlsError::WrongProtocolVersion)
    );
    assert_eq!(
        check_application(CH.as_bytes(), b"\x00\x01\x00\x02"),
        Err(MlsError::Malformed)
    );
    // An application message passed as a commit.
    assert_eq!(
        check_commit(
            CH.as_bytes(),
            Some(&w.accepted.state),
            None,
            &ct,
            None,
            &w.add.group_info,
            now()
        ),
        Err(MlsError::NotPublicMessage)
    );
}

#[test]
fn reasons_are_snake_case() {
    let all = [
        MlsError::TooLarge { size: 1, max: 0 },
        MlsError::WrongEpoch {
            message_epoch: 1,
            current_epoch: 2,
        },
        MlsError::InvalidCommit("x".into()),
        MlsError::NotApplication,
    ];
    for e in all {
        assert!(
            e.reason()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_')
        );
    }
}

// ---------------------------------------------------------------- kept state

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

fn accept(state: &GroupState, b: &Bundle) -> Result<AcceptedCommit, MlsError> {
    check_commit(
        CH.as_bytes(),
        Some(state),
        None,
        &b.commit,
        b.welcome.as_deref(),
        &b.group_info,
        now(),
    )
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

#[test]
fn public_state_fuzz_no_panic() {
    let mut w = world();
    let state = w.accepted.state.clone();
    let a = update(&w.alice, &mut w.ga);
    let expected = accept(&state, &a).expect("normal");
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let rounds = if cfg!(debug_assertions) { 40 } else { 400 };
    let mut from_public_state = 0;
    for i in 0..rounds {
        let mut bad = mutate(&mut rng, &state.public_state);
        if i % 3 == 0 {
            // A second mutation deeper inside (the JSON values).
            bad = mutate(&mut rng, &bad);
        }
        let s = GroupState {
            public_state: bad,
            ..state.clone()
        };
        let r = accept(&s, &a).unwrap_or_else(|e| panic!("round {i}: {e:?}"));
        assert_eq!(r.state, expected.state, "round {i}");
        if r.loaded_from == StateSource::PublicState {
            from_public_state += 1;
        }
        // A refused commit stays refused with any public_state.
        if i % 10 == 0 {
            let junk = Bundle {
                commit: a.commit.clone(),
                welcome: None,
                group_info: w.add.group_info.clone(),
            };
            assert!(accept(&s, &junk).is_err());
        }
    }
    // Most mutations make the state unusable; the rest hit bytes nothing reads.
    assert!(from_public_state < rounds, "{from_public_state}");
}

// ---------------------------------------------------------------- fuzz-like

/// xorshift64*, deterministic.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(rng: &mut Rng, src: &[u8]) -> Vec<u8> {
    let mut v = src.to_vec();
    match rng.below(5) {
        0 => {
            // flip a few bytes
            for _ in 0..=rng.below(4) {
                let i = rng.below(v.len());
                if let Some(b) = v.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
        }
        1 => {
            let cut = rng.below(v.len());
            v.truncate(cut);
        }
        2 => {
            let i = rng.below(v.len());
            if let Some(b) = v.get_mut(i) {
                *b = 0xff;
            }
        }
        3 => {
            let i = rng.below(v.len() + 1);
            v.insert(i.min(v.len()), rng.next() as u8);
        }
        _ => {
            // set a length-ish byte to something large
            let i = rng.below(v.len().min(64));
            if let Some(b) = v.get_mut(i) {
                *b = 0x7f;
            }
        }
    }
    v
}

#[test]
fn fuzz_no_panic() {
    let mut w = world();
    let dev = Dev::new("dev-1");
    let (kp, _) = dev.kp();
    let state = w.accepted.state.clone();
    let next = update(&w.alice, &mut w.ga);
    let ct = bytes(
        &w.gb
            .create_message(&w.bob.provider, &w.bob.signer, b"x")
            .expect("message"),
    );
    let samples: Vec<&[u8]> = vec![
        &kp,
        &w.genesis,
        &w.add.commit,
        w.add.welcome.as_deref().unwrap_or(&[]),
        &w.add.group_info,
        &next.commit,
        &next.group_info,
        &ct,
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let t = now();
    // Random byte strings (half with a plausible MLSMessage header) into every
    // function and every argument position.
    for i in 0..2000 {
        let len = rng.below(300);
        let mut input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if i % 2 == 0 && input.len() >= 4 {
            input[0] = 0;
            input[1] = 1;
            input[2] = 0;
            input[3] = 1 + rng.below(5) as u8;
        }
        feed_all(&w, &dev, &state, &next, &input, t, i % 100 == 0);
    }
    // Mutated valid messages. Each mutant that still decodes costs signature
    // checks, which are ~200x slower in an unoptimized build, so the deep
    // commit positions get a smaller share there.
    let deep_every = if cfg!(debug_assertions) { 25 } else { 1 };
    let mut accepted_mutants = 0;
    for i in 0..2000 {
        let src = samples[rng.below(samples.len())];
        let input = mutate(&mut rng, src);
        let _ = validate_key_package(&input, "dev-1", &dev.key(), t);
        let _ = check_genesis(CH.as_bytes(), &input);
        let _ = check_application(CH.as_bytes(), &input);
        if i % deep_every == 0 {
            if check_commit(
                CH.as_bytes(),
                Some(&state),
                None,
                &input,
                None,
                &next.group_info,
                t,
            )
            .is_ok()
            {
                accepted_mutants += 1;
            }
            feed_all(&w, &dev, &state, &next, &input, t, i % 100 == 0);
        }
    }
    // A mutant can only be accepted if the mutation changed nothing signed.
    assert!(
        accepted_mutants <= 5,
        "{accepted_mutants} mutated commits accepted"
    );
}

fn feed_all(
    w: &World,
    dev: &Dev,
    state: &GroupState,
    next: &Bundle,
    input: &[u8],
    t: u64,
    as_state: bool,
) {
    let _ = validate_key_package(input, "dev-1", &dev.key(), t);
    let _ = check_genesis(CH.as_bytes(), input);
    let _ = check_application(CH.as_bytes(), input);
    let _ = check_commit(
        CH.as_bytes(),
        Some(state),
        None,
        input,
        None,
        &next.group_info,
        t,
    );
    let _ = check_commit(
        CH.as_bytes(),
        Some(state),
        None,
        &next.commit,
        None,
        input,
        t,
    );
    let _ = check_commit(
        CH.as_bytes(),
        None,
        Some(input),
        &w.add.commit,
        w.add.welcome.as_deref(),
        &w.add.group_info,
        t,
    );
    let _ = check_commit(
        CH.as_bytes(),
        None,
        Some(&w.genesis),
        &w.add.commit,
        Some(input),
        &w.add.group_info,
        t,
    );
    if as_state {
        let bogus = GroupState {
            epoch: 1,
            group_info: input.to_vec(),
            public_state: Vec::new(),
        };
        let _ = check_commit(
            CH.as_bytes(),
            Some(&bogus),
            None,
            &next.commit,
            None,
            &next.group_info,
            t,
        );
    }
}
