//! Unit tests for the DS checks, with a minimal inline openmls client (the
//! full test client lives in `tests/support/mls_client.rs`, which unit tests
//! cannot import).
//!
//! This file holds the shared client helpers (devices, groups, commit
//! bundles, the three-member [`World`]); the tests are in one file per
//! subject.

use super::*;
use openmls::prelude::tls_codec::{DeserializeBytes, Serialize as TlsSerializeTrait};
use openmls::prelude::{
    CommitMessageBundle, CredentialWithKey, GroupId, KeyPackage, KeyPackageBuilder, LeafNodeIndex,
    LeafNodeParameters, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY, MlsGroup, MlsGroupCreateConfig,
    MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn, MlsMessageOut, OpenMlsProvider,
    SignatureScheme, StagedWelcome,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use std::time::{SystemTime, UNIX_EPOCH};

mod application;
mod commits;
mod errors;
mod fuzz;
mod key_packages;
mod public_state;

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
