//! A small MLS (RFC 9420) client for integration tests, built on openmls.
//!
//! It plays the devices of an end-to-end encrypted channel against the
//! server's delivery service. It is test support only and is not built into
//! the server.
//!
//! Conventions shared with the server (`src/mls`):
//! * ciphersuite `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519`;
//! * a Basic credential whose identity is the device id (UTF-8);
//! * the MLS signature key is the device's Ed25519 identity key: the
//!   ed25519-dalek `SigningKey` built from the 32-byte seed. openmls'
//!   `SignatureKeyPair` for Ed25519 stores the private key as exactly that
//!   32-byte seed and the public key as the 32-byte compressed point;
//! * every blob returned or accepted is a TLS-encoded `MLSMessage`
//!   (`MlsMessageOut` bytes), key packages included;
//! * the channel id is the MLS group id (UTF-8 bytes);
//! * commits are PublicMessages (the DS must read them); application messages
//!   are PrivateMessages (openmls always encrypts application data);
//! * every GroupInfo carries the ratchet_tree extension, and joins use the
//!   tree from the Welcome's GroupInfo.
//!
//! Methods panic on unexpected openmls errors: that is a test failure.
//! Methods that tests expect to fail return `Result<_, String>`.

#![allow(dead_code)]

use std::collections::HashMap;

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;

/// The one ciphersuite the server accepts.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// Messages a member may receive for past epochs (application messages that
/// cross a commit).
pub const MAX_PAST_EPOCHS: usize = 3;

/// A commit bundle as uploaded to the server.
#[derive(Clone, Debug)]
pub struct Bundle {
    /// The commit, a PublicMessage.
    pub commit: Vec<u8>,
    /// The Welcome for added members, if the commit adds anyone.
    pub welcome: Option<Vec<u8>>,
    /// The new epoch's GroupInfo, with the ratchet_tree extension.
    pub group_info: Vec<u8>,
}

/// One device: its signing key, its openmls provider (key store) and the
/// groups (channels) it is in, by channel id.
pub struct MlsDevice {
    /// The device id, used as the Basic credential identity.
    pub device_id: String,
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    groups: HashMap<String, MlsGroup>,
}

/// The wire format policy of every group: outgoing handshakes as
/// PublicMessage, incoming either. Application messages are always encrypted
/// by openmls regardless of the policy.
fn join_config(wire_format: WireFormatPolicy) -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .wire_format_policy(wire_format)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .sender_ratchet_configuration(SenderRatchetConfiguration::new(100, 1000))
        .build()
}

fn to_bytes(message: &MlsMessageOut) -> Vec<u8> {
    message
        .tls_serialize_detached()
        .expect("serialize MLSMessage")
}

fn parse(bytes: &[u8]) -> Result<MlsMessageIn, String> {
    MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| format!("decode: {e:?}"))
}

fn identity_of(credential: &Credential) -> String {
    BasicCredential::try_from(credential.clone())
        .map(|c| String::from_utf8_lossy(c.identity()).into_owned())
        .unwrap_or_default()
}

impl MlsDevice {
    /// A device whose MLS signature key is the Ed25519 key derived from `seed`
    /// (ed25519-dalek `SigningKey::from_bytes(&seed)`).
    pub fn new(device_id: &str, seed: [u8; 32]) -> MlsDevice {
        let signing_key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let public = signing_key.verifying_key().to_bytes().to_vec();
        let signer = SignatureKeyPair::from_raw(SignatureScheme::ED25519, seed.to_vec(), public);
        Self::with_signer(device_id, signer)
    }

    fn with_signer(device_id: &str, signer: SignatureKeyPair) -> MlsDevice {
        let provider = OpenMlsRustCrypto::default();
        signer.store(provider.storage()).expect("store signer");
        let credential = CredentialWithKey {
            credential: BasicCredential::new(device_id.as_bytes().to_vec()).into(),
            signature_key: signer.public().into(),
        };
        MlsDevice {
            device_id: device_id.to_string(),
            provider,
            signer,
            credential,
            groups: HashMap::new(),
        }
    }

    /// The device's 32-byte Ed25519 identity (= MLS signature) public key.
    pub fn identity_key(&self) -> [u8; 32] {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.signer.public());
        key
    }

    fn build_key_package(&self, builder: KeyPackageBuilder) -> Vec<u8> {
        let bundle = builder
            .build(
                CIPHERSUITE,
                &self.provider,
                &self.signer,
                self.credential.clone(),
            )
            .expect("build key package");
        to_bytes(&MlsMessageOut::from(bundle.key_package().clone()))
    }

    /// `n` one-time KeyPackages (default lifetime: 84 days, not_before one
    /// hour in the past). Their private keys stay in this device's store.
    pub fn key_packages(&self, n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|_| self.build_key_package(KeyPackage::builder()))
            .collect()
    }

    /// A KeyPackage carrying the last_resort extension. openmls'
    /// `mark_as_last_resort` adds the extension but not the matching entry in
    /// the leaf's capabilities, without which openmls' own validation refuses
    /// the package (`UnsupportedExtension`), so the capability is listed here.
    pub fn last_resort_package(&self) -> Vec<u8> {
        self.build_key_package(
            KeyPackage::builder()
                .mark_as_last_resort()
                .leaf_node_capabilities(
                    Capabilities::builder()
                        .extensions(vec![ExtensionType::LastResort])
                        .build(),
                ),
        )
    }

    /// A KeyPackage valid from one hour ago until `secs` from now (so its
    /// lifetime range is `secs + 3600`).
    pub fn key_package_with_lifetime(&self, secs: u64) -> Vec<u8> {
        self.build_key_package(KeyPackage::builder().key_package_lifetime(Lifetime::new(secs)))
    }

    /// A KeyPackage whose credential names this device but which is signed
    /// with (and whose leaf carries) a different, random Ed25519 key.
    pub fn foreign_key_package(&self) -> Vec<u8> {
        let other = MlsDevice::with_signer(
            &self.device_id,
            SignatureKeyPair::new(SignatureScheme::ED25519).expect("keygen"),
        );
        other.key_packages(1).remove(0)
    }

    fn group(&self, channel_id: &str) -> &MlsGroup {
        self.groups
            .get(channel_id)
            .unwrap_or_else(|| panic!("{} is not in {channel_id}", self.device_id))
    }

    fn group_mut(&mut self, channel_id: &str) -> &mut MlsGroup {
        let id = self.device_id.clone();
        self.groups
            .get_mut(channel_id)
            .unwrap_or_else(|| panic!("{id} is not in {channel_id}"))
    }

    /// Creates the group for `channel_id` (group id = channel id bytes) with
    /// this device as its only member and returns the genesis GroupInfo
    /// (epoch 0, with ratchet tree).
    pub fn create_group(&mut self, channel_id: &str) -> Vec<u8> {
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .use_ratchet_tree_extension(true)
            .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
            .max_past_epochs(MAX_PAST_EPOCHS)
            .sender_ratchet_configuration(SenderRatchetConfiguration::new(100, 1000))
            .build();
        let group = MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &config,
            GroupId::from_slice(channel_id.as_bytes()),
            self.credential.clone(),
        )
        .expect("create group");
        let info = group
            .export_group_info(self.provider.crypto(), &self.signer, true)
            .expect("export group info");
        self.groups.insert(channel_id.to_string(), group);
        to_bytes(&info)
    }

    /// The current GroupInfo of a channel (with ratchet tree).
    pub fn group_info(&self, channel_id: &str) -> Vec<u8> {
        let info = self
            .group(channel_id)
            .export_group_info(self.provider.crypto(), &self.signer, true)
            .expect("export group info");
        to_bytes(&info)
    }

    /// One commit adding the given KeyPackages (MLSMessage bytes) and removing
    /// the given devices (by id). The commit stays pending until
    /// [`MlsDevice::merge_pending`] or [`MlsDevice::clear_pending`].
    pub fn commit_changes(&mut self, channel_id: &str, add: &[Vec<u8>], remove: &[&str]) -> Bundle {
        let key_packages: Vec<KeyPackage> = add
            .iter()
            .map(|bytes| match parse(bytes).expect("key package").extract() {
                MlsMessageBodyIn::KeyPackage(kp) => kp
                    .validate(self.provider.crypto(), ProtocolVersion::Mls10)
                    .expect("valid key package"),
                _ => panic!("not a key package"),
            })
            .collect();
        let group = self.group(channel_id);
        let removals: Vec<LeafNodeIndex> = remove
            .iter()
            .map(|id| {
                group
                    .members()
                    .find(|m| identity_of(&m.credential) == *id)
                    .unwrap_or_else(|| panic!("{id} is not a member"))
                    .index
            })
            .collect();
        let provider = &self.provider;
        let signer = &self.signer;
        let group = self.groups.get_mut(channel_id).expect("group");
        let bundle = group
            .commit_builder()
            .propose_adds(key_packages)
            .propose_removals(removals)
            .load_psks(provider.storage())
            .expect("load psks")
            .build(provider.rand(), provider.crypto(), signer, |_| true)
            .expect("build commit")
            .stage_commit(provider)
            .expect("stage commit");
        bundle_bytes(bundle)
    }

    /// A self-update commit (new leaf key and path, no membership change),
    /// left pending.
    pub fn commit_update(&mut self, channel_id: &str) -> Bundle {
        let provider = &self.provider;
        let signer = &self.signer;
        let group = self.groups.get_mut(channel_id).expect("group");
        let bundle = group
            .self_update(provider, signer, LeafNodeParameters::default())
            .expect("self update");
        bundle_bytes(bundle)
    }

    /// Merges the pending commit (after the server accepted it).
    pub fn merge_pending(&mut self, channel_id: &str) {
        let provider = &self.provider;
        let group = self.groups.get_mut(channel_id).expect("group");
        group.merge_pending_commit(provider).expect("merge pending");
    }

    /// Drops the pending commit (after the server refused it).
    pub fn clear_pending(&mut self, channel_id: &str) {
        let provider = &self.provider;
        let group = self.groups.get_mut(channel_id).expect("group");
        group
            .clear_pending_commit(provider.storage())
            .expect("clear pending");
    }

    /// A self-update commit encoded as a PrivateMessage, for refusal tests.
    /// It switches the group's outgoing policy to ciphertext for this one
    /// commit, then drops the pending commit and restores the normal policy,
    /// so the group state is unchanged.
    pub fn private_commit(&mut self, channel_id: &str) -> Vec<u8> {
        let provider = &self.provider;
        let signer = &self.signer;
        let group = self.groups.get_mut(channel_id).expect("group");
        group
            .set_configuration(
                provider.storage(),
                &join_config(MIXED_CIPHERTEXT_WIRE_FORMAT_POLICY),
            )
            .expect("set config");
        let bundle = group
            .self_update(provider, signer, LeafNodeParameters::default())
            .expect("self update");
        group
            .clear_pending_commit(provider.storage())
            .expect("clear pending");
        group
            .set_configuration(
                provider.storage(),
                &join_config(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY),
            )
            .expect("restore config");
        to_bytes(bundle.commit())
    }

    /// Joins from a Welcome (MLSMessage bytes) using the ratchet tree from the
    /// Welcome's GroupInfo; returns the channel id (the group id).
    pub fn join(&mut self, welcome: &[u8]) -> String {
        self.try_join(welcome).expect("join")
    }

    /// Like [`MlsDevice::join`] but returns openmls' error as text.
    pub fn try_join(&mut self, welcome: &[u8]) -> Result<String, String> {
        let welcome = match parse(welcome)?.extract() {
            MlsMessageBodyIn::Welcome(w) => w,
            _ => return Err("not a welcome".into()),
        };
        let staged = StagedWelcome::new_from_welcome(
            &self.provider,
            &join_config(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY),
            welcome,
            None,
        )
        .map_err(|e| format!("{e:?}"))?;
        let group = staged
            .into_group(&self.provider)
            .map_err(|e| format!("{e:?}"))?;
        let channel_id = String::from_utf8_lossy(group.group_id().as_slice()).into_owned();
        self.groups.insert(channel_id.clone(), group);
        Ok(channel_id)
    }

    /// Processes and merges someone else's commit.
    pub fn process_commit(&mut self, channel_id: &str, commit: &[u8]) -> Result<(), String> {
        let message = parse(commit)?
            .try_into_protocol_message()
            .map_err(|e| format!("{e:?}"))?;
        let provider = &self.provider;
        let group = self
            .groups
            .get_mut(channel_id)
            .ok_or_else(|| format!("not in {channel_id}"))?;
        let processed = group
            .process_message(provider, message)
            .map_err(|e| format!("{e:?}"))?;
        match processed.into_content() {
            ProcessedMessageContent::StagedCommitMessage(staged) => group
                .merge_staged_commit(provider, *staged)
                .map_err(|e| format!("{e:?}")),
            other => Err(format!("not a commit: {other:?}")),
        }
    }

    /// Encrypts an application message (a PrivateMessage).
    pub fn encrypt(&mut self, channel_id: &str, plaintext: &[u8]) -> Vec<u8> {
        let provider = &self.provider;
        let signer = &self.signer;
        let group = self.groups.get_mut(channel_id).expect("group");
        let message = group
            .create_message(provider, signer, plaintext)
            .expect("create message");
        to_bytes(&message)
    }

    /// Decrypts an application message.
    pub fn decrypt(&mut self, channel_id: &str, ciphertext: &[u8]) -> Result<Vec<u8>, String> {
        let message = parse(ciphertext)?
            .try_into_protocol_message()
            .map_err(|e| format!("{e:?}"))?;
        let provider = &self.provider;
        let group = self
            .groups
            .get_mut(channel_id)
            .ok_or_else(|| format!("not in {channel_id}"))?;
        let processed = group
            .process_message(provider, message)
            .map_err(|e| format!("{e:?}"))?;
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) => Ok(app.into_bytes()),
            other => Err(format!("not an application message: {other:?}")),
        }
    }

    /// The group's current epoch.
    pub fn epoch(&self, channel_id: &str) -> u64 {
        self.group(channel_id).epoch().as_u64()
    }

    /// The device ids of the group's members, in leaf order.
    pub fn members(&self, channel_id: &str) -> Vec<String> {
        self.group(channel_id)
            .members()
            .map(|m| identity_of(&m.credential))
            .collect()
    }

    /// Whether this device is (still) an active member of the channel's group.
    pub fn is_active(&self, channel_id: &str) -> bool {
        self.groups.get(channel_id).is_some_and(|g| g.is_active())
    }
}

fn bundle_bytes(bundle: CommitMessageBundle) -> Bundle {
    let (commit, welcome, group_info) = bundle.into_messages();
    Bundle {
        commit: to_bytes(&commit),
        welcome: welcome.as_ref().map(to_bytes),
        group_info: to_bytes(&group_info.expect("group info (ratchet tree extension is on)")),
    }
}
