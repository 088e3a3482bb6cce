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
//! caller keeps for a group is a [`GroupState`]: the current epoch, the
//! GroupInfo of that epoch (which carries the ratchet tree, and is what
//! clients fetch) and `public_state`, an opaque serialization of the DS's own
//! validated public view of the group after the last accepted commit.
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
//! # Leaf lifetimes and the kept state
//!
//! A leaf that comes from a KeyPackage carries the package's lifetime until
//! its member self-updates. openmls' `PublicGroup::from_external` (building a
//! group from a GroupInfo) checks those lifetimes against the system clock, so
//! a group with a passive member would stop loading from its GroupInfo once
//! that member's package expired (typically after 84 days), and every later
//! commit, even the one removing that member, would be refused. Lifetimes
//! matter when a leaf is introduced (RFC 9420 §7.3: a KeyPackage must be valid
//! when it is added), not afterwards.
//!
//! Therefore [`check_commit`] does not rebuild the group from the kept
//! GroupInfo: it restores `public_state` with `PublicGroup::load`, which trusts
//! what the DS already validated, and only falls back to `from_external` on
//! the GroupInfo when `public_state` is empty (state kept before this field
//! existed), does not load (for instance after an openmls upgrade that
//! changed its storage format) or does not describe exactly the kept
//! GroupInfo (same group context, confirmation tag and ratchet tree). The
//! fallback still has the lifetime hazard; [`AcceptedCommit::loaded_from`]
//! says which path was taken so the caller can log it. The bundle's new
//! GroupInfo is checked without `from_external` too (signature by the signer
//! leaf of the merged tree, and byte equality of group context, confirmation
//! tag and ratchet tree with the merged group).
//!
//! Limits the caller must know about:
//!
//! * Clocks. openmls checks leaf-node lifetimes against the system clock
//!   inside `KeyPackageIn::validate` (uploads and added packages) and
//!   `PublicGroup::from_external` (genesis, and the fallback above); that
//!   cannot be switched off from outside the crate. The checks done here with
//!   `now_secs` come on top of those, so pass the wall clock.
//! * Membership and confirmation tags. The DS has neither the membership key
//!   nor the confirmation key. openmls requires the membership tag to be
//!   present but does not verify it here, and the confirmation tag is not
//!   covered by the commit signature. The DS compares the commit's
//!   confirmation tag with the one in the new GroupInfo, but both come from the
//!   committer; a member can still send a commit the DS accepts and the other
//!   members refuse (a member can always disrupt its own group).

use std::panic::{AssertUnwindSafe, catch_unwind};

use openmls::ciphersuite::signable::Verifiable;
use openmls::messages::ConfirmationTag;
use openmls::messages::group_info::VerifiableGroupInfo;
use openmls::prelude::ContentType;
use openmls::prelude::OpenMlsProvider;
use openmls::prelude::{
    BasicCredential, Ciphersuite, Credential, CredentialType, GroupId, KeyPackage,
    KeyPackageVerifyError, LeafNodeIndex, MlsMessageBodyIn, MlsMessageIn, ProcessedMessageContent,
    ProposalStore, ProtocolMessage, ProtocolVersion, PublicGroup, PublicProcessMessageError,
    Sender, ValidationError,
    tls_codec::{DeserializeBytes, Serialize as TlsSerializeTrait},
};
use openmls::treesync::errors::LifetimeError;
use openmls_rust_crypto::{MemoryStorage, OpenMlsRustCrypto};

#[cfg(test)]
mod tests;

/// Largest accepted KeyPackage upload, in bytes.
pub const MAX_KEY_PACKAGE_BYTES: usize = 16 * 1024;
/// Longest accepted KeyPackage lifetime (not_after - not_before): 84 days plus
/// one hour of clock-skew margin, which is also openmls' default upper bound.
pub const MAX_KEY_PACKAGE_LIFETIME_SECS: u64 = 84 * 24 * 3600 + 3600;
/// Largest accepted commit, welcome or group info, each, in bytes.
pub const MAX_HANDSHAKE_BYTES: usize = 1 << 20;
/// Largest `public_state` that is restored; a larger one is ignored (the
/// GroupInfo is used instead). openmls stores the tree as JSON, a few times
/// the size of its TLS encoding.
pub const MAX_PUBLIC_STATE_BYTES: usize = 16 * MAX_HANDSHAKE_BYTES;

/// Leading bytes of a `public_state`, naming this format (version 1: openmls
/// 0.9 `MemoryStorage` entries of a `PublicGroup`).
const PUBLIC_STATE_MAGIC: &[u8; 8] = b"ocds-pg1";

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

/// The public state the DS keeps for a group: the current epoch, that
/// epoch's GroupInfo (TLS-encoded MLSMessage) carrying the ratchet_tree
/// extension, and the DS's own validated public view of the group.
///
/// Keep the three fields together (one row, written atomically) and pass them
/// back as they were returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupState {
    /// The group's current epoch.
    pub epoch: u64,
    /// The current epoch's GroupInfo, as received (TLS-encoded MLSMessage).
    /// This is what clients fetch; it is exactly the merged state.
    pub group_info: Vec<u8>,
    /// Opaque serialization of the DS's validated `PublicGroup` of this epoch
    /// (see the module documentation). Not a wire format: it depends on the
    /// openmls version and is only ever read back by this module. Empty means
    /// "none" (state kept before this field existed): the GroupInfo is used.
    pub public_state: Vec<u8>,
}

/// Which kept state a commit was checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateSource {
    /// The `public_state` of the kept [`GroupState`] (the normal case).
    PublicState,
    /// The kept GroupInfo, because `public_state` was empty, did not load or
    /// did not match the GroupInfo. This path checks leaf lifetimes by the
    /// system clock; worth a log line when `public_state` was not empty.
    GroupInfo,
    /// The genesis GroupInfo given with the group's first commit.
    Genesis,
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
    /// The state to keep for the next commit: the bundle's group_info (checked
    /// to be exactly the merged group) and the merged group's `public_state`.
    pub state: GroupState,
    /// Which kept state the commit was checked against.
    pub loaded_from: StateSource,
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

/// Builds a verified `PublicGroup` from a decoded GroupInfo and its
/// ratchet_tree extension with openmls' `from_external` (signature, tree
/// hash, parent hashes, leaf signatures, and leaf lifetimes by the system
/// clock). openmls also writes the group into `provider`'s storage.
fn group_from_group_info(
    provider: &OpenMlsRustCrypto,
    verifiable: VerifiableGroupInfo,
) -> Result<PublicGroup, MlsError> {
    let tree = verifiable
        .extensions()
        .ratchet_tree()
        .ok_or(MlsError::InvalidGroupInfo)?
        .ratchet_tree()
        .clone();
    PublicGroup::from_external(
        provider.crypto(),
        provider.storage(),
        tree,
        verifiable,
        ProposalStore::new(),
    )
    .map(|(group, _group_info)| group)
    .map_err(|_| MlsError::InvalidGroupInfo)
}

/// What a GroupInfo says about its group, TLS-encoded: it must be equal for a
/// GroupInfo and the group it describes.
#[derive(PartialEq, Eq)]
struct Fingerprint {
    group_context: Vec<u8>,
    confirmation_tag: Vec<u8>,
    ratchet_tree: Vec<u8>,
}

/// The fingerprint of a group the DS holds.
fn group_fingerprint(group: &PublicGroup) -> Result<Fingerprint, MlsError> {
    let encode_err = |_| MlsError::Internal;
    Ok(Fingerprint {
        group_context: group
            .group_context()
            .tls_serialize_detached()
            .map_err(encode_err)?,
        confirmation_tag: group
            .confirmation_tag()
            .tls_serialize_detached()
            .map_err(encode_err)?,
        ratchet_tree: group
            .export_ratchet_tree()
            .tls_serialize_detached()
            .map_err(encode_err)?,
    })
}

/// The (unverified) fingerprint and signer of a GroupInfo.
///
/// openmls 0.9 keeps `VerifiableGroupInfo::signer` and the confirmation tag
/// accessor `pub(crate)`, so both are read from the TLS encoding of the
/// GroupInfo (RFC 9420 §12.4.3: group_context, extensions, confirmation_tag,
/// signer, signature). The parse is then checked by rebuilding the GroupInfo
/// from the parts with the public `VerifiableGroupInfo::new` and comparing.
fn group_info_fingerprint(
    verifiable: &VerifiableGroupInfo,
) -> Result<(Fingerprint, LeafNodeIndex), MlsError> {
    let bad = |_| MlsError::InvalidGroupInfo;
    let whole = verifiable.tls_serialize_detached().map_err(bad)?;
    let group_context = verifiable
        .group_context()
        .tls_serialize_detached()
        .map_err(bad)?;
    let extensions = verifiable
        .extensions()
        .tls_serialize_detached()
        .map_err(bad)?;
    let rest = whole
        .strip_prefix(group_context.as_slice())
        .and_then(|rest| rest.strip_prefix(extensions.as_slice()))
        .ok_or(MlsError::InvalidGroupInfo)?;
    let (tag, rest) = ConfirmationTag::tls_deserialize_bytes(rest).map_err(bad)?;
    let (signer, _signature) = u32::tls_deserialize_bytes(rest).map_err(bad)?;
    let signer = LeafNodeIndex::new(signer);
    let rebuilt = VerifiableGroupInfo::new(
        verifiable.group_context().clone(),
        verifiable.extensions().clone(),
        tag.clone(),
        signer,
        Verifiable::signature(verifiable).clone(),
    );
    if rebuilt != *verifiable {
        return Err(MlsError::InvalidGroupInfo);
    }
    let ratchet_tree = verifiable
        .extensions()
        .ratchet_tree()
        .ok_or(MlsError::InvalidGroupInfo)?
        .ratchet_tree()
        .tls_serialize_detached()
        .map_err(bad)?;
    Ok((
        Fingerprint {
            group_context,
            confirmation_tag: tag.tls_serialize_detached().map_err(bad)?,
            ratchet_tree,
        },
        signer,
    ))
}

/// Serializes every entry of a storage: [`PUBLIC_STATE_MAGIC`], a u32 entry
/// count, then per entry (sorted by key) a u32 key length, the key, a u32 value
/// length and the value, integers big-endian.
fn export_public_state(storage: &MemoryStorage) -> Result<Vec<u8>, MlsError> {
    let values = storage
        .values
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut entries: Vec<(&Vec<u8>, &Vec<u8>)> = values.iter().collect();
    entries.sort();
    let len32 = |n: usize| {
        u32::try_from(n)
            .map(u32::to_be_bytes)
            .map_err(|_| MlsError::Internal)
    };
    let size: usize = entries.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(PUBLIC_STATE_MAGIC.len() + 4 + size);
    out.extend_from_slice(PUBLIC_STATE_MAGIC);
    out.extend_from_slice(&len32(entries.len())?);
    for (key, value) in entries {
        out.extend_from_slice(&len32(key.len())?);
        out.extend_from_slice(key);
        out.extend_from_slice(&len32(value.len())?);
        out.extend_from_slice(value);
    }
    Ok(out)
}

/// Parses [`export_public_state`]'s format; `None` for anything else
/// (wrong magic, bad lengths, duplicate keys, trailing bytes).
fn parse_public_state(data: &[u8]) -> Option<std::collections::HashMap<Vec<u8>, Vec<u8>>> {
    /// At most this many entries (a `PublicGroup` writes four).
    const MAX_ENTRIES: usize = 64;
    fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = data.split_at_checked(n)?;
        *data = rest;
        Some(head)
    }
    fn take_u32(data: &mut &[u8]) -> Option<usize> {
        let bytes: [u8; 4] = take(data, 4)?.try_into().ok()?;
        usize::try_from(u32::from_be_bytes(bytes)).ok()
    }
    let mut data = data;
    if take(&mut data, PUBLIC_STATE_MAGIC.len())? != PUBLIC_STATE_MAGIC {
        return None;
    }
    let count = take_u32(&mut data)?;
    if count > MAX_ENTRIES {
        return None;
    }
    let mut entries = std::collections::HashMap::with_capacity(count);
    for _ in 0..count {
        let key_len = take_u32(&mut data)?;
        let key = take(&mut data, key_len)?.to_vec();
        let value_len = take_u32(&mut data)?;
        let value = take(&mut data, value_len)?.to_vec();
        if entries.insert(key, value).is_some() {
            return None;
        }
    }
    data.is_empty().then_some(entries)
}

/// Restores a `public_state` as a `PublicGroup` of `group_id` with
/// `PublicGroup::load` (which checks nothing, in particular no lifetimes: the
/// DS validated this group when it accepted the commit that produced it).
///
/// `None` unless it loads and describes exactly the kept GroupInfo
/// (`expected`): a state of another group, epoch or branch, a corrupted one or
/// one written by an openmls version with another storage format is not used.
/// openmls' storage panics on undecodable JSON; that is caught here too.
fn restore_public_state(
    group_id: &[u8],
    data: &[u8],
    expected: &Fingerprint,
) -> Option<(OpenMlsRustCrypto, PublicGroup)> {
    if data.is_empty() || data.len() > MAX_PUBLIC_STATE_BYTES {
        return None;
    }
    let entries = parse_public_state(data)?;
    let restore = || -> Option<(OpenMlsRustCrypto, PublicGroup)> {
        let provider = OpenMlsRustCrypto::default();
        *provider.storage().values.write().ok()? = entries;
        let group =
            PublicGroup::load(provider.storage(), &GroupId::from_slice(group_id)).ok()??;
        if group.group_id().as_slice() != group_id
            || group.ciphersuite() != CIPHERSUITE
            || !group.queued_proposals(provider.storage()).ok()?.is_empty()
            || group_fingerprint(&group).ok()? != *expected
        {
            return None;
        }
        Some((provider, group))
    };
    catch_unwind(AssertUnwindSafe(restore)).ok().flatten()
}

/// The group a kept state describes, and how it was obtained: from
/// `public_state` when that is usable (and `use_public_state`), else from the
/// GroupInfo.
fn load_state(
    group_id: &[u8],
    state: &GroupState,
    use_public_state: bool,
) -> Result<(OpenMlsRustCrypto, PublicGroup, StateSource), MlsError> {
    let (verifiable, summary) =
        decode_group_info(&state.group_info).map_err(|_| MlsError::InvalidState)?;
    if summary.group_id != group_id || summary.epoch != state.epoch {
        return Err(MlsError::InvalidState);
    }
    if use_public_state
        && !state.public_state.is_empty()
        && let Ok((expected, _)) = group_info_fingerprint(&verifiable)
        && let Some((provider, group)) =
            restore_public_state(group_id, &state.public_state, &expected)
    {
        return Ok((provider, group, StateSource::PublicState));
    }
    let provider = OpenMlsRustCrypto::default();
    let group = group_from_group_info(&provider, verifiable).map_err(|_| MlsError::InvalidState)?;
    if group.group_context().epoch().as_u64() != state.epoch {
        return Err(MlsError::InvalidState);
    }
    Ok((provider, group, StateSource::GroupInfo))
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
/// returns the state to keep (with its `public_state`) plus its single leaf.
///
/// `genesis` must be a TLS-encoded MLSMessage GroupInfo with the ratchet_tree
/// extension, of group `group_id`, epoch 0, our ciphersuite, exactly one leaf
/// with a Basic credential, and verify under openmls (`PublicGroup::from_external`:
/// signature by that leaf, tree hash, leaf node signatures and lifetimes).
/// The caller should compare the leaf with the creating device.
pub fn check_genesis(group_id: &[u8], genesis: &[u8]) -> Result<(GroupState, Leaf), MlsError> {
    guarded(|| {
        let (provider, _group, leaf) = check_genesis_inner(group_id, genesis)?;
        let state = GroupState {
            epoch: 0,
            group_info: genesis.to_vec(),
            public_state: export_public_state(provider.storage())?,
        };
        Ok((state, leaf))
    })
}

/// [`check_genesis`]'s checks; returns the verified group, whose provider's
/// storage holds exactly that group.
fn check_genesis_inner(
    group_id: &[u8],
    genesis: &[u8],
) -> Result<(OpenMlsRustCrypto, PublicGroup, Leaf), MlsError> {
    let to_genesis = |e| match e {
        MlsError::InvalidGroupInfo => MlsError::InvalidGenesis,
        other => other,
    };
    let (verifiable, summary) = decode_group_info(genesis).map_err(to_genesis)?;
    if summary.group_id != group_id {
        return Err(MlsError::WrongGroup);
    }
    if summary.epoch != 0 {
        return Err(MlsError::InvalidGenesis);
    }
    let provider = OpenMlsRustCrypto::default();
    let group = group_from_group_info(&provider, verifiable).map_err(to_genesis)?;
    if group.group_context().epoch().as_u64() != 0 || group.group_id().as_slice() != group_id {
        return Err(MlsError::InvalidGenesis);
    }
    let mut leaves = leaves_of(&group)?;
    if leaves.len() != 1 {
        return Err(MlsError::InvalidGenesis);
    }
    let leaf = leaves.pop().ok_or(MlsError::InvalidGenesis)?;
    Ok((provider, group, leaf))
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
/// * the commit is replayed with openmls on the kept `PublicGroup`: restored
///   from `current.public_state` when that loads and matches
///   `current.group_info` exactly, else (or for a genesis) built from the
///   GroupInfo and its ratchet tree with `from_external` (see the module
///   documentation; [`AcceptedCommit::loaded_from`] tells which). The replay
///   checks the signature against the sender's leaf, confirmation-tag
///   presence, proposal validity (including the added KeyPackages), update
///   path and parent hashes. The membership tag must be present but cannot be
///   verified (the DS has no membership key);
/// * every added KeyPackage's lifetime is valid at `now_secs` and not too long
///   (leaves already in the tree are not judged by their lifetime again);
/// * the merged result must equal the bundle's `group_info`: that GroupInfo
///   must be of epoch current+1, have the same TLS-encoded GroupContext, the
///   same confirmation tag and the same ratchet_tree extension as the merged
///   group (the tree it exports), and be signed by the leaf it names as signer
///   in the merged tree;
/// * every leaf after the commit has a Basic credential;
/// * a welcome is required exactly when the commit adds members; it must be an
///   MLSMessage Welcome in our ciphersuite whose recipients are exactly the
///   added KeyPackages.
///
/// A commit refused against the restored `public_state` is checked once more
/// against the GroupInfo alone, and accepted if that accepts it (so a
/// `public_state` can only ever add acceptances, never refusals, compared with
/// the GroupInfo); the first error is returned otherwise.
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
    let input = CommitInput {
        group_id,
        current,
        genesis,
        commit,
        welcome,
        group_info,
        now_secs,
    };
    let mut loaded_from = None;
    let first = guarded(|| check_commit_inner(&input, true, &mut loaded_from));
    match first {
        // Refused against the restored public_state: the kept GroupInfo gets
        // a second chance, so that a public_state that restored and matched
        // the GroupInfo but is wrong in a part the match cannot see (openmls
        // keeps the interim transcript hash private) never refuses a commit
        // the GroupInfo accepts. Costs one GroupInfo load per such refusal,
        // what every commit cost before public_state.
        Err(error)
            if loaded_from == Some(StateSource::PublicState)
                && !matches!(error, MlsError::TooLarge { .. }) =>
        {
            let mut again = None;
            guarded(|| check_commit_inner(&input, false, &mut again)).or(Err(error))
        }
        other => other,
    }
}

/// The arguments of [`check_commit`].
struct CommitInput<'a> {
    group_id: &'a [u8],
    current: Option<&'a GroupState>,
    genesis: Option<&'a [u8]>,
    commit: &'a [u8],
    welcome: Option<&'a [u8]>,
    group_info: &'a [u8],
    now_secs: u64,
}

/// One attempt of [`check_commit`]; `use_public_state` false skips
/// `public_state`. Sets `loaded_from` once the kept state is loaded.
fn check_commit_inner(
    input: &CommitInput<'_>,
    use_public_state: bool,
    loaded_from_out: &mut Option<StateSource>,
) -> Result<AcceptedCommit, MlsError> {
    let &CommitInput {
        group_id,
        current,
        genesis,
        commit,
        welcome,
        group_info,
        now_secs,
    } = input;
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
    let (new_group_info, new_summary) = decode_group_info(group_info)?;
    if new_summary.group_id != group_id || new_summary.epoch != current_epoch.saturating_add(1) {
        return Err(MlsError::GroupInfoMismatch);
    }
    let welcome_refs_given = match welcome {
        Some(w) => Some(welcome_refs_of(w)?),
        None => None,
    };

    // The state the commit applies to (the genesis is verified only now).
    let (provider, mut group, loaded_from) = match (current, genesis) {
        (Some(state), _) => load_state(group_id, state, use_public_state)?,
        (None, Some(genesis)) => {
            let (provider, group, _) = check_genesis_inner(group_id, genesis)?;
            (provider, group, StateSource::Genesis)
        }
        (None, None) => return Err(MlsError::MissingGenesis),
    };
    *loaded_from_out = Some(loaded_from);
    if group.group_context().epoch().as_u64() != current_epoch
        || group.group_id().as_slice() != group_id
    {
        return Err(MlsError::InvalidState);
    }
    let old_members = leaves_of(&group).map_err(|_| MlsError::InvalidState)?;

    // Replay the commit.
    let processed = group
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

    // Merge into an emptied storage, so that afterwards it holds exactly what
    // openmls writes for the merged group: the new public_state.
    provider
        .storage()
        .values
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clear();
    group
        .merge_commit(provider.storage(), *staged)
        .map_err(|e| MlsError::InvalidCommit(e.to_string()))?;
    let merged = &group;
    let new_epoch = merged.group_context().epoch().as_u64();
    let members = leaves_of(merged)?;

    // The bundle's GroupInfo must be exactly this result, signed by a member
    // of the merged tree. No from_external here: it would judge the lifetimes
    // of leaves that were validated when they were added.
    if new_epoch != new_summary.epoch {
        return Err(MlsError::GroupInfoMismatch);
    }
    let (given, signer) = group_info_fingerprint(&new_group_info)?;
    if given != group_fingerprint(merged)? {
        return Err(MlsError::GroupInfoMismatch);
    }
    let signer_key = merged
        .leaf(signer)
        .ok_or(MlsError::InvalidGroupInfo)?
        .signature_key()
        .clone()
        .into_signature_public_key_enriched(CIPHERSUITE.signature_algorithm());
    new_group_info
        .verify(provider.crypto(), &signer_key)
        .map_err(|_| MlsError::InvalidGroupInfo)?;

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
            public_state: export_public_state(provider.storage())?,
        },
        loaded_from,
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
