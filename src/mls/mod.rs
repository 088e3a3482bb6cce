//! MLS (RFC 9420) delivery-service checks for end-to-end encrypted channels.
//!
//! The server acts as the MLS delivery service (DS). It never holds group
//! secrets and never decrypts anything. What it can do is parse the MLS
//! framing and check everything that is signed or otherwise public:
//!
//! * uploaded KeyPackages ([`validate_key_package`]),
//! * the creator's epoch-0 GroupInfo of a new channel ([`check_genesis`]),
//! * commit bundles (commit + optional welcome + the new GroupInfo)
//!   ([`check_commit`]), by replaying the commit on a public view of the group,
//! * application messages, whose header only ([`check_application`]).
//!
//! This module is sans-IO: no sockets, no clock (the current time is passed in
//! as seconds since the Unix epoch) and no state of its own. The only state the
//! caller keeps for a group is a [`GroupState`]: the current epoch and the
//! GroupInfo of that epoch, which carries the ratchet tree.
//!
//! Fixed parameters: protocol version MLS 1.0, ciphersuite
//! `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519`, Basic credentials whose
//! identity is the device id (UTF-8) and whose signature key is the device's
//! 32-byte Ed25519 identity key.
//!
//! Wire encoding: every blob (key package, commit, welcome, group info,
//! application message) is a TLS-encoded `MLSMessage` (RFC 9420 §6), i.e. what
//! openmls' `MlsMessageOut::tls_serialize_detached` produces. Trailing bytes are
//! refused.
//!
//! Each call builds a fresh `OpenMlsRustCrypto` provider (cheap: it is an
//! in-memory map plus a seeded RNG) so nothing leaks between calls.
//!
//! Limits the caller must know about:
//!
//! * Clocks. openmls checks leaf-node lifetimes against the system clock
//!   inside `KeyPackageIn::validate` and `PublicGroup::from_external`; that
//!   cannot be switched off from outside the crate. The checks done here with
//!   `now_secs` come on top of those, so pass the wall clock.
//! * Expired leaves block the group. `from_external` refuses a tree in which a
//!   leaf that came from a KeyPackage (a member added but never updated) is
//!   past its not_after. From then on the kept state no longer loads and every
//!   commit is refused with [`MlsError::InvalidState`], although clients still
//!   accept commits. Clients must therefore self-update (a commit with a path
//!   replaces the leaf by one without lifetime) soon after joining, well
//!   before their package's not_after.
//! * Membership and confirmation tags. The DS has neither the membership key
//!   nor the confirmation key. openmls requires the membership tag to be
//!   present but does not verify it here, and the confirmation tag is not
//!   covered by the commit signature. The DS compares the commit's
//!   confirmation tag with the one in the new GroupInfo, but both come from the
//!   committer; a member can still send a commit the DS accepts and the other
//!   members refuse (a member can always disrupt its own group).

use std::panic::{AssertUnwindSafe, catch_unwind};

use openmls::messages::group_info::VerifiableGroupInfo;
use openmls::prelude::ContentType;
use openmls::prelude::OpenMlsProvider;
use openmls::prelude::{
    BasicCredential, Ciphersuite, Credential, CredentialType, GroupId, KeyPackage,
    KeyPackageVerifyError, MlsMessageBodyIn, MlsMessageIn, ProcessedMessageContent, ProposalStore,
    ProtocolMessage, ProtocolVersion, PublicGroup, PublicProcessMessageError, Sender,
    ValidationError,
    tls_codec::{DeserializeBytes, Serialize as TlsSerializeTrait},
};
use openmls::treesync::errors::LifetimeError;
use openmls_rust_crypto::OpenMlsRustCrypto;

#[cfg(test)]
mod tests;

/// Largest accepted KeyPackage upload, in bytes.
pub const MAX_KEY_PACKAGE_BYTES: usize = 16 * 1024;
/// Longest accepted KeyPackage lifetime (not_after - not_before): 84 days plus
/// one hour of clock-skew margin, which is also openmls' default upper bound.
pub const MAX_KEY_PACKAGE_LIFETIME_SECS: u64 = 84 * 24 * 3600 + 3600;
/// Largest accepted commit, welcome or group info, each, in bytes.
pub const MAX_HANDSHAKE_BYTES: usize = 1 << 20;

/// The one ciphersuite this server accepts.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// MLS wire-format code points (RFC 9420 §17.2).
const WIRE_FORMAT_KEY_PACKAGE: u16 = 5;

/// Why an MLS object was refused. Every variant is one reason; use
/// [`MlsError::reason`] for a stable snake_case code.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum MlsError {
    /// The blob is larger than the limit for its kind.
    #[error("message too large ({size} bytes, limit {max})")]
    TooLarge {
        /// Size of the blob received.
        size: usize,
        /// The limit that applies.
        max: usize,
    },
    /// The bytes do not decode as a TLS-encoded MLSMessage (or have trailing bytes).
    #[error("malformed MLS message")]
    Malformed,
    /// The MLSMessage (or the KeyPackage inside) is not protocol version MLS 1.0.
    #[error("unsupported MLS protocol version")]
    WrongProtocolVersion,
    /// The object uses another ciphersuite than the one this server accepts.
    #[error("unsupported ciphersuite")]
    WrongCiphersuite,
    /// The MLSMessage is well formed but does not carry a KeyPackage.
    #[error("not a key package")]
    NotAKeyPackage,
    /// openmls refused the KeyPackage (bad signature, bad leaf node, init key
    /// equal to the encryption key, unsupported extension, ...).
    #[error("invalid key package")]
    InvalidKeyPackage,
    /// A credential is not a Basic credential.
    #[error("credential is not a basic credential")]
    NotBasicCredential,
    /// The credential identity is not the uploading device's id.
    #[error("credential identity is not this device")]
    CredentialMismatch,
    /// The leaf's signature key is not the device's Ed25519 identity key.
    #[error("signature key is not the device identity key")]
    SignatureKeyMismatch,
    /// The lifetime range is longer than [`MAX_KEY_PACKAGE_LIFETIME_SECS`], or
    /// not_after lies further than that in the future.
    #[error("key package lifetime too long")]
    LifetimeTooLong,
    /// not_after is at or before the current time.
    #[error("key package expired")]
    Expired,
    /// not_before is after the current time.
    #[error("key package not valid yet")]
    NotYetValid,
    /// A handshake message arrived as a PrivateMessage; the DS needs PublicMessage commits.
    #[error("handshake message is not a public message")]
    NotPublicMessage,
    /// The message is a PublicMessage but not a commit (a proposal, for example).
    #[error("not a commit")]
    NotACommit,
    /// The message belongs to another group.
    #[error("message is for another group")]
    WrongGroup,
    /// The commit is not for the group's current epoch.
    #[error("commit epoch {message_epoch} is not the current epoch {current_epoch}")]
    WrongEpoch {
        /// Epoch carried by the commit.
        message_epoch: u64,
        /// Epoch the DS holds for the group.
        current_epoch: u64,
    },
    /// The commit is not sent by a member of the group (external commits and
    /// external senders are not accepted).
    #[error("commit sender is not a member")]
    SenderNotMember,
    /// Replaying the commit on the public group failed (bad signature, bad
    /// proposals, bad update path, ...). The text is openmls' error, for logs.
    #[error("invalid commit: {0}")]
    InvalidCommit(String),
    /// The new GroupInfo is valid on its own but is not the result of this
    /// commit (other epoch, other group context or confirmation tag).
    #[error("group info does not match the commit")]
    GroupInfoMismatch,
    /// The GroupInfo cannot be used: not a GroupInfo, no ratchet tree, bad
    /// signature, tree hash mismatch, invalid leaves, ...
    #[error("invalid group info")]
    InvalidGroupInfo,
    /// No genesis GroupInfo was given for a group without state.
    #[error("group has no state and no genesis group info was given")]
    MissingGenesis,
    /// A genesis GroupInfo was given although the group already has state.
    #[error("genesis group info given for a group that already exists")]
    UnexpectedGenesis,
    /// The genesis GroupInfo is not an epoch-0 single-member group.
    #[error("invalid genesis group info")]
    InvalidGenesis,
    /// The commit adds members but no Welcome was given.
    #[error("commit adds members but no welcome was given")]
    MissingWelcome,
    /// A Welcome was given although the commit adds nobody.
    #[error("welcome given for a commit that adds nobody")]
    UnexpectedWelcome,
    /// The Welcome does not decode as an MLSMessage Welcome.
    #[error("invalid welcome")]
    InvalidWelcome,
    /// The Welcome's recipients are not exactly the added KeyPackages.
    #[error("welcome recipients do not match the added key packages")]
    WelcomeMismatch,
    /// The message is not an application PrivateMessage.
    #[error("not an application message")]
    NotApplication,
    /// The state kept by the caller could not be loaded (should not happen).
    #[error("stored group state is unusable")]
    InvalidState,
    /// openmls panicked on this input; the input is refused.
    #[error("internal error while checking the message")]
    Internal,
}

impl MlsError {
    /// A short, stable snake_case code for API error details.
    pub fn reason(&self) -> &'static str {
        match self {
            MlsError::TooLarge { .. } => "too_large",
            MlsError::Malformed => "malformed",
            MlsError::WrongProtocolVersion => "wrong_protocol_version",
            MlsError::WrongCiphersuite => "wrong_ciphersuite",
            MlsError::NotAKeyPackage => "not_a_key_package",
            MlsError::InvalidKeyPackage => "invalid_key_package",
            MlsError::NotBasicCredential => "not_basic_credential",
            MlsError::CredentialMismatch => "credential_mismatch",
            MlsError::SignatureKeyMismatch => "signature_key_mismatch",
            MlsError::LifetimeTooLong => "lifetime_too_long",
            MlsError::Expired => "expired",
            MlsError::NotYetValid => "not_yet_valid",
            MlsError::NotPublicMessage => "not_public_message",
            MlsError::NotACommit => "not_a_commit",
            MlsError::WrongGroup => "wrong_group",
            MlsError::WrongEpoch { .. } => "wrong_epoch",
            MlsError::SenderNotMember => "sender_not_member",
            MlsError::InvalidCommit(_) => "invalid_commit",
            MlsError::GroupInfoMismatch => "group_info_mismatch",
            MlsError::InvalidGroupInfo => "invalid_group_info",
            MlsError::MissingGenesis => "missing_genesis",
            MlsError::UnexpectedGenesis => "unexpected_genesis",
            MlsError::InvalidGenesis => "invalid_genesis",
            MlsError::MissingWelcome => "missing_welcome",
            MlsError::UnexpectedWelcome => "unexpected_welcome",
            MlsError::InvalidWelcome => "invalid_welcome",
            MlsError::WelcomeMismatch => "welcome_mismatch",
            MlsError::NotApplication => "not_application",
            MlsError::InvalidState => "invalid_state",
            MlsError::Internal => "internal",
        }
    }
}

/// What the server learns from an accepted KeyPackage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidKeyPackage {
    /// KeyPackageRef bytes (RFC 9420 §5.2, the hash reference openmls computes).
    pub key_package_ref: Vec<u8>,
    /// not_before of the leaf node lifetime, seconds since the epoch.
    pub not_before: u64,
    /// not_after of the leaf node lifetime, seconds since the epoch.
    pub not_after: u64,
    /// The package carries the last_resort extension (informational; the
    /// server decides itself which package is handed out last).
    pub has_last_resort_extension: bool,
}

/// The public state the DS keeps for a group: the current epoch and that
/// epoch's GroupInfo (TLS-encoded MLSMessage) carrying the ratchet_tree
/// extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupState {
    /// The group's current epoch.
    pub epoch: u64,
    /// The current epoch's GroupInfo, as received (TLS-encoded MLSMessage).
    pub group_info: Vec<u8>,
}

/// One occupied leaf of the ratchet tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// Leaf index in the ratchet tree.
    pub index: u32,
    /// Basic credential identity: the device id bytes.
    pub identity: Vec<u8>,
    /// The leaf's signature public key (32 raw Ed25519 bytes for this suite).
    pub signature_key: Vec<u8>,
}

/// The result of an accepted commit bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedCommit {
    /// The epoch the group is in after the commit.
    pub new_epoch: u64,
    /// Identity (device id) of the committer's leaf.
    pub committer: Vec<u8>,
    /// Every leaf of the tree after the commit, in leaf order.
    pub members: Vec<Leaf>,
    /// Identities of the leaves the commit removed.
    pub removed: Vec<Vec<u8>>,
    /// KeyPackageRefs named by the Welcome's EncryptedGroupSecrets (empty
    /// without a welcome). Equal, as a set, to the refs of the added packages.
    pub welcome_refs: Vec<Vec<u8>>,
    /// The state to keep for the next commit (built from the bundle's group_info).
    pub state: GroupState,
}

/// What the DS can see of an application message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppMessage {
    /// The epoch the message was encrypted in (from the clear header).
    pub epoch: u64,
}

/// Runs `f`, turning a panic inside openmls into [`MlsError::Internal`].
fn guarded<T>(f: impl FnOnce() -> Result<T, MlsError>) -> Result<T, MlsError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(Err(MlsError::Internal))
}

fn check_size(data: &[u8], max: usize) -> Result<(), MlsError> {
    if data.len() > max {
        return Err(MlsError::TooLarge {
            size: data.len(),
            max,
        });
    }
    Ok(())
}

/// The big-endian u16 at byte offset `at`, if the buffer is long enough.
fn be16(data: &[u8], at: usize) -> Option<u16> {
    let bytes = data.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]))
}

/// Decodes a whole buffer as an MLSMessage. A wrong leading protocol version
/// gives [`MlsError::WrongProtocolVersion`], anything else undecodable
/// [`MlsError::Malformed`].
fn parse_message(data: &[u8]) -> Result<MlsMessageIn, MlsError> {
    if be16(data, 0).is_some_and(|v| v != 1) {
        return Err(MlsError::WrongProtocolVersion);
    }
    MlsMessageIn::tls_deserialize_exact_bytes(data).map_err(|_| MlsError::Malformed)
}

/// Identity bytes of a Basic credential.
fn basic_identity(credential: &Credential) -> Result<Vec<u8>, MlsError> {
    if credential.credential_type() != CredentialType::Basic {
        return Err(MlsError::NotBasicCredential);
    }
    BasicCredential::try_from(credential.clone())
        .map(|c| c.identity().to_vec())
        .map_err(|_| MlsError::NotBasicCredential)
}

/// Lifetime checks against `now_secs` shared by key package upload and adds.
///
/// Only call on a validated KeyPackage: openmls' `KeyPackage::life_time`
/// assumes the lifetime is present, which validation guarantees.
fn check_lifetime(key_package: &KeyPackage, now_secs: u64) -> Result<(u64, u64), MlsError> {
    let lifetime = key_package.life_time();
    let (not_before, not_after) = (lifetime.not_before(), lifetime.not_after());
    if not_after < not_before || not_after - not_before > MAX_KEY_PACKAGE_LIFETIME_SECS {
        return Err(MlsError::LifetimeTooLong);
    }
    if not_before > now_secs {
        return Err(MlsError::NotYetValid);
    }
    if not_after <= now_secs {
        return Err(MlsError::Expired);
    }
    if not_after > now_secs.saturating_add(MAX_KEY_PACKAGE_LIFETIME_SECS) {
        return Err(MlsError::LifetimeTooLong);
    }
    Ok((not_before, not_after))
}

/// Validates an uploaded KeyPackage.
///
/// `data` must be a TLS-encoded MLSMessage with wire format `mls_key_package`
/// (RFC 9420 §6, what `MlsMessageOut::from(key_package)` serializes to); a bare
/// KeyPackage is refused (as [`MlsError::Malformed`] or [`MlsError::NotAKeyPackage`]).
///
/// Checks, in order: size (≤ [`MAX_KEY_PACKAGE_BYTES`]), protocol version of
/// the message and the package, that it is a KeyPackage, the ciphersuite,
/// openmls' validation (leaf node and package signatures, leaf node source,
/// init key ≠ encryption key, extensions listed in capabilities, lifetime
/// present and valid by the system clock), a Basic credential whose identity is
/// `device_id`, the leaf signature key equal to `identity_key`, and the
/// lifetime against `now_secs`: not_before ≤ now < not_after, range ≤
/// [`MAX_KEY_PACKAGE_LIFETIME_SECS`], and not_after ≤ now + that maximum.
pub fn validate_key_package(
    data: &[u8],
    device_id: &str,
    identity_key: &[u8; 32],
    now_secs: u64,
) -> Result<ValidKeyPackage, MlsError> {
    guarded(|| validate_key_package_inner(data, device_id, identity_key, now_secs))
}

fn validate_key_package_inner(
    data: &[u8],
    device_id: &str,
    identity_key: &[u8; 32],
    now_secs: u64,
) -> Result<ValidKeyPackage, MlsError> {
    check_size(data, MAX_KEY_PACKAGE_BYTES)?;
    // Peek the fixed header: MLSMessage version(2) wire_format(2), then the
    // KeyPackage's version(2) and cipher_suite(2). This lets us give precise
    // reasons (e.g. a ciphersuite openmls' provider does not even support).
    if be16(data, 2).is_some_and(|wf| wf != WIRE_FORMAT_KEY_PACKAGE) {
        // Still decode first so garbage reports Malformed, not NotAKeyPackage.
        parse_message(data)?;
        return Err(MlsError::NotAKeyPackage);
    }
    if be16(data, 0).is_some_and(|v| v != 1) || be16(data, 4).is_some_and(|v| v != 1) {
        return Err(MlsError::WrongProtocolVersion);
    }
    if be16(data, 6).is_some_and(|cs| cs != u16::from(CIPHERSUITE)) {
        return Err(MlsError::WrongCiphersuite);
    }
    let message = parse_message(data)?;
    let key_package_in = match message.extract() {
        MlsMessageBodyIn::KeyPackage(kp) => kp,
        _ => return Err(MlsError::NotAKeyPackage),
    };
    let provider = OpenMlsRustCrypto::default();
    let key_package: KeyPackage = key_package_in
        .validate(provider.crypto(), ProtocolVersion::Mls10)
        .map_err(|e| match e {
            KeyPackageVerifyError::InvalidProtocolVersion => MlsError::WrongProtocolVersion,
            // openmls judges lifetimes by the system clock.
            KeyPackageVerifyError::LifetimeError(LifetimeError::NotValidYet { .. }) => {
                MlsError::NotYetValid
            }
            KeyPackageVerifyError::LifetimeError(_) => MlsError::Expired,
            _ => MlsError::InvalidKeyPackage,
        })?;
    if key_package.ciphersuite() != CIPHERSUITE {
        return Err(MlsError::WrongCiphersuite);
    }
    let leaf = key_package.leaf_node();
    let identity = basic_identity(leaf.credential())?;
    if identity != device_id.as_bytes() {
        return Err(MlsError::CredentialMismatch);
    }
    if leaf.signature_key().as_slice() != identity_key.as_slice() {
        return Err(MlsError::SignatureKeyMismatch);
    }
    let (not_before, not_after) = check_lifetime(&key_package, now_secs)?;
    let key_package_ref = key_package
        .hash_ref(provider.crypto())
        .map_err(|_| MlsError::InvalidKeyPackage)?
        .as_slice()
        .to_vec();
    Ok(ValidKeyPackage {
        key_package_ref,
        not_before,
        not_after,
        has_last_resort_extension: key_package.last_resort(),
    })
}

/// A public view of a group built from a kept or received GroupInfo.
struct LoadedGroup {
    group: PublicGroup,
}

/// Decodes a GroupInfo MLSMessage and builds a verified `PublicGroup` from it
/// and its ratchet_tree extension (signature, tree hash, parent hashes, leaf
/// signatures and lifetimes are checked by openmls).
fn load_group_info(
    provider: &OpenMlsRustCrypto,
    data: &[u8],
) -> Result<(LoadedGroup, VerifiableGroupInfoSummary), MlsError> {
    let (verifiable, summary) = decode_group_info(data)?;
    let tree = verifiable
        .extensions()
        .ratchet_tree()
        .ok_or(MlsError::InvalidGroupInfo)?
        .ratchet_tree()
        .clone();
    let (group, _group_info) = PublicGroup::from_external(
        provider.crypto(),
        provider.storage(),
        tree,
        verifiable,
        ProposalStore::new(),
    )
    .map_err(|_| MlsError::InvalidGroupInfo)?;
    Ok((LoadedGroup { group }, summary))
}

/// Decodes a GroupInfo MLSMessage without verifying it: size, encoding,
/// ciphersuite and presence of the ratchet_tree extension.
fn decode_group_info(
    data: &[u8],
) -> Result<(VerifiableGroupInfo, VerifiableGroupInfoSummary), MlsError> {
    check_size(data, MAX_HANDSHAKE_BYTES)?;
    let message = parse_message(data).map_err(|e| match e {
        MlsError::Malformed => MlsError::InvalidGroupInfo,
        other => other,
    })?;
    let verifiable: VerifiableGroupInfo = match message.extract() {
        MlsMessageBodyIn::GroupInfo(gi) => gi,
        _ => return Err(MlsError::InvalidGroupInfo),
    };
    if verifiable.ciphersuite() != CIPHERSUITE {
        return Err(MlsError::WrongCiphersuite);
    }
    if verifiable.extensions().ratchet_tree().is_none() {
        return Err(MlsError::InvalidGroupInfo);
    }
    let summary = VerifiableGroupInfoSummary {
        group_id: verifiable.group_id().as_slice().to_vec(),
        epoch: verifiable.epoch().as_u64(),
    };
    Ok((verifiable, summary))
}

/// The unverified header of a GroupInfo (see [`decode_group_info`]).
fn peek_group_info(data: &[u8]) -> Result<VerifiableGroupInfoSummary, MlsError> {
    decode_group_info(data).map(|(_, summary)| summary)
}

/// The unverified header fields of a GroupInfo, read before verification.
struct VerifiableGroupInfoSummary {
    group_id: Vec<u8>,
    epoch: u64,
}

/// Lists the leaves of a public group; every credential must be Basic.
fn leaves_of(group: &PublicGroup) -> Result<Vec<Leaf>, MlsError> {
    group
        .members()
        .map(|m| {
            Ok(Leaf {
                index: m.index.u32(),
                identity: basic_identity(&m.credential)?,
                signature_key: m.signature_key,
            })
        })
        .collect()
}

/// Validates the creator's epoch-0 GroupInfo for a new group on its own and
/// returns the state to keep plus its single leaf.
///
/// `genesis` must be a TLS-encoded MLSMessage GroupInfo with the ratchet_tree
/// extension, of group `group_id`, epoch 0, our ciphersuite, exactly one leaf
/// with a Basic credential, and verify under openmls (`PublicGroup::from_external`:
/// signature by that leaf, tree hash, leaf node signatures and lifetimes).
/// The caller should compare the leaf with the creating device.
pub fn check_genesis(group_id: &[u8], genesis: &[u8]) -> Result<(GroupState, Leaf), MlsError> {
    guarded(|| check_genesis_inner(group_id, genesis))
}

fn check_genesis_inner(group_id: &[u8], genesis: &[u8]) -> Result<(GroupState, Leaf), MlsError> {
    let provider = OpenMlsRustCrypto::default();
    let (loaded, summary) = load_group_info(&provider, genesis).map_err(|e| match e {
        MlsError::InvalidGroupInfo => MlsError::InvalidGenesis,
        other => other,
    })?;
    if summary.group_id != group_id {
        return Err(MlsError::WrongGroup);
    }
    if summary.epoch != 0 || loaded.group.group_context().epoch().as_u64() != 0 {
        return Err(MlsError::InvalidGenesis);
    }
    let mut leaves = leaves_of(&loaded.group)?;
    if leaves.len() != 1 {
        return Err(MlsError::InvalidGenesis);
    }
    let leaf = leaves.pop().ok_or(MlsError::InvalidGenesis)?;
    Ok((
        GroupState {
            epoch: 0,
            group_info: genesis.to_vec(),
        },
        leaf,
    ))
}

/// Checks a commit bundle against the kept state.
///
/// `current` is `None` only for a group without state (epoch 0); then
/// `genesis` must be the creator's epoch-0 GroupInfo (see [`check_genesis`]).
/// With `current` given, a `genesis` is refused ([`MlsError::UnexpectedGenesis`]).
///
/// Checks, in order:
/// * sizes (each ≤ [`MAX_HANDSHAKE_BYTES`]);
/// * `commit` is an MLSMessage PublicMessage (a PrivateMessage gives
///   [`MlsError::NotPublicMessage`]) with content type commit
///   ([`MlsError::NotACommit`]), of `group_id` ([`MlsError::WrongGroup`]), for
///   the current epoch ([`MlsError::WrongEpoch`]), sent by a member
///   ([`MlsError::SenderNotMember`]);
/// * the commit is replayed with openmls on a `PublicGroup` built from the kept
///   GroupInfo and its ratchet tree: signature against the sender's leaf,
///   confirmation-tag presence, proposal validity (including the added
///   KeyPackages), update path and parent hashes. The membership tag must be
///   present but cannot be verified (the DS has no membership key);
/// * every added KeyPackage's lifetime is valid at `now_secs` and not too long;
/// * the merged result must equal the bundle's `group_info`: that GroupInfo
///   must itself verify (`from_external`), be of epoch current+1, have the same
///   TLS-encoded GroupContext and the same confirmation tag as the merged group;
/// * every leaf after the commit has a Basic credential;
/// * a welcome is required exactly when the commit adds members; it must be an
///   MLSMessage Welcome in our ciphersuite whose recipients are exactly the
///   added KeyPackages.
///
/// It does NOT check who the members should be: the caller compares
/// `members`/`removed`/`committer` with its authoritative membership.
pub fn check_commit(
    group_id: &[u8],
    current: Option<&GroupState>,
    genesis: Option<&[u8]>,
    commit: &[u8],
    welcome: Option<&[u8]>,
    group_info: &[u8],
    now_secs: u64,
) -> Result<AcceptedCommit, MlsError> {
    guarded(|| {
        check_commit_inner(
            group_id, current, genesis, commit, welcome, group_info, now_secs,
        )
    })
}

fn check_commit_inner(
    group_id: &[u8],
    current: Option<&GroupState>,
    genesis: Option<&[u8]>,
    commit: &[u8],
    welcome: Option<&[u8]>,
    group_info: &[u8],
    now_secs: u64,
) -> Result<AcceptedCommit, MlsError> {
    check_size(commit, MAX_HANDSHAKE_BYTES)?;
    check_size(group_info, MAX_HANDSHAKE_BYTES)?;
    if let Some(w) = welcome {
        check_size(w, MAX_HANDSHAKE_BYTES)?;
    }

    // The epoch the commit must be for.
    let current_epoch = match (current, genesis) {
        (Some(_), Some(_)) => return Err(MlsError::UnexpectedGenesis),
        (Some(state), None) => state.epoch,
        (None, Some(_)) => 0,
        (None, None) => return Err(MlsError::MissingGenesis),
    };

    // Framing checks, before any expensive work.
    let protocol_message: ProtocolMessage = match parse_message(commit)?.extract() {
        MlsMessageBodyIn::PublicMessage(pm) => ProtocolMessage::from(pm),
        MlsMessageBodyIn::PrivateMessage(_) => return Err(MlsError::NotPublicMessage),
        _ => return Err(MlsError::NotACommit),
    };
    if protocol_message.content_type() != ContentType::Commit {
        return Err(MlsError::NotACommit);
    }
    if protocol_message.group_id().as_slice() != group_id {
        return Err(MlsError::WrongGroup);
    }
    let message_epoch = protocol_message.epoch().as_u64();
    if message_epoch != current_epoch {
        return Err(MlsError::WrongEpoch {
            message_epoch,
            current_epoch,
        });
    }
    if let ProtocolMessage::PublicMessage(pm) = &protocol_message
        && !matches!(pm.sender(), Sender::Member(_))
    {
        return Err(MlsError::SenderNotMember);
    }

    // Cheap decoding of the other two blobs before any signature work, so
    // junk is refused without loading the group.
    let new_summary = peek_group_info(group_info)?;
    if new_summary.group_id != group_id || new_summary.epoch != current_epoch.saturating_add(1) {
        return Err(MlsError::GroupInfoMismatch);
    }
    let welcome_refs_given = match welcome {
        Some(w) => Some(welcome_refs_of(w)?),
        None => None,
    };

    // The state the commit applies to (the genesis is verified only now).
    let owned_genesis;
    let state: &GroupState = match (current, genesis) {
        (Some(state), _) => state,
        (None, Some(genesis)) => {
            owned_genesis = check_genesis_inner(group_id, genesis)?.0;
            &owned_genesis
        }
        (None, None) => return Err(MlsError::MissingGenesis),
    };

    // Load the kept state.
    let provider = OpenMlsRustCrypto::default();
    let (mut loaded, summary) =
        load_group_info(&provider, &state.group_info).map_err(|_| MlsError::InvalidState)?;
    if summary.group_id != group_id || summary.epoch != state.epoch {
        return Err(MlsError::InvalidState);
    }
    let old_members = leaves_of(&loaded.group).map_err(|_| MlsError::InvalidState)?;

    // Replay the commit.
    let processed = loaded
        .group
        .process_message(provider.crypto(), protocol_message)
        .map_err(|e| match e {
            PublicProcessMessageError::ValidationError(ValidationError::UnknownMember) => {
                MlsError::SenderNotMember
            }
            other => MlsError::InvalidCommit(other.to_string()),
        })?;
    let committer = basic_identity(processed.credential())?;
    let staged = match processed.into_content() {
        ProcessedMessageContent::StagedCommitMessage(staged) => staged,
        _ => return Err(MlsError::NotACommit),
    };

    let mut added_refs: Vec<Vec<u8>> = Vec::new();
    for add in staged.add_proposals() {
        let kp = add.add_proposal().key_package();
        check_lifetime(kp, now_secs)?;
        basic_identity(kp.leaf_node().credential())?;
        let r = kp
            .hash_ref(provider.crypto())
            .map_err(|e| MlsError::InvalidCommit(e.to_string()))?;
        added_refs.push(r.as_slice().to_vec());
    }
    let removed_indices: Vec<u32> = staged
        .remove_proposals()
        .map(|r| r.remove_proposal().removed().u32())
        .collect();
    let removed: Vec<Vec<u8>> = old_members
        .iter()
        .filter(|leaf| removed_indices.contains(&leaf.index))
        .map(|leaf| leaf.identity.clone())
        .collect();

    loaded
        .group
        .merge_commit(provider.storage(), *staged)
        .map_err(|e| MlsError::InvalidCommit(e.to_string()))?;
    let merged = &loaded.group;
    let new_epoch = merged.group_context().epoch().as_u64();
    let members = leaves_of(merged)?;

    // The bundle's GroupInfo must be this result.
    let gi_provider = OpenMlsRustCrypto::default();
    let (new_loaded, _) = load_group_info(&gi_provider, group_info)?;
    if new_epoch != new_summary.epoch {
        return Err(MlsError::GroupInfoMismatch);
    }
    let merged_context = merged
        .group_context()
        .tls_serialize_detached()
        .map_err(|_| MlsError::Internal)?;
    let new_context = new_loaded
        .group
        .group_context()
        .tls_serialize_detached()
        .map_err(|_| MlsError::GroupInfoMismatch)?;
    let merged_tag = merged
        .confirmation_tag()
        .tls_serialize_detached()
        .map_err(|_| MlsError::Internal)?;
    let new_tag = new_loaded
        .group
        .confirmation_tag()
        .tls_serialize_detached()
        .map_err(|_| MlsError::GroupInfoMismatch)?;
    if merged_context != new_context || merged_tag != new_tag {
        return Err(MlsError::GroupInfoMismatch);
    }

    // Welcome.
    let welcome_refs = match (welcome_refs_given, added_refs.is_empty()) {
        (None, true) => Vec::new(),
        (None, false) => return Err(MlsError::MissingWelcome),
        (Some(_), true) => return Err(MlsError::UnexpectedWelcome),
        (Some(refs), false) => {
            let mut a = added_refs.clone();
            let mut b = refs.clone();
            a.sort();
            b.sort();
            if a != b {
                return Err(MlsError::WelcomeMismatch);
            }
            refs
        }
    };

    Ok(AcceptedCommit {
        new_epoch,
        committer,
        members,
        removed,
        welcome_refs,
        state: GroupState {
            epoch: new_epoch,
            group_info: group_info.to_vec(),
        },
    })
}

/// Decodes a Welcome MLSMessage and returns its recipients' KeyPackageRefs.
fn welcome_refs_of(data: &[u8]) -> Result<Vec<Vec<u8>>, MlsError> {
    let message = parse_message(data).map_err(|e| match e {
        MlsError::Malformed => MlsError::InvalidWelcome,
        other => other,
    })?;
    let welcome = match message.extract() {
        MlsMessageBodyIn::Welcome(w) => w,
        _ => return Err(MlsError::InvalidWelcome),
    };
    if welcome.ciphersuite() != CIPHERSUITE {
        return Err(MlsError::WrongCiphersuite);
    }
    Ok(welcome
        .secrets()
        .iter()
        .map(|s| s.new_member().as_slice().to_vec())
        .collect())
}

/// Checks an application message as far as the DS can see it: a TLS-encoded
/// MLSMessage PrivateMessage of `group_id` whose clear header says content
/// type application. A PrivateMessage commit or proposal, and any
/// PublicMessage, give [`MlsError::NotApplication`]. Returns the epoch from the
/// header; the caller decides which epochs it still relays. No size limit is
/// applied here (the caller's body limit applies).
pub fn check_application(group_id: &[u8], ciphertext: &[u8]) -> Result<AppMessage, MlsError> {
    guarded(|| {
        let message = match parse_message(ciphertext)?.extract() {
            MlsMessageBodyIn::PrivateMessage(pm) => ProtocolMessage::from(pm),
            _ => return Err(MlsError::NotApplication),
        };
        if message.group_id() != &GroupId::from_slice(group_id) {
            return Err(MlsError::WrongGroup);
        }
        if message.content_type() != ContentType::Application {
            return Err(MlsError::NotApplication);
        }
        Ok(AppMessage {
            epoch: message.epoch().as_u64(),
        })
    })
}
