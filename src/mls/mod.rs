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

use openmls::prelude::{BasicCredential, Ciphersuite, Credential, CredentialType};

mod application;
mod commit;
mod error;
mod framing;
mod group_info;
mod key_package;
mod state;
#[cfg(test)]
mod tests;

pub use application::check_application;
pub use commit::{check_commit, check_genesis};
pub use error::MlsError;
pub use key_package::validate_key_package;

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

/// Identity bytes of a Basic credential.
fn basic_identity(credential: &Credential) -> Result<Vec<u8>, MlsError> {
    if credential.credential_type() != CredentialType::Basic {
        return Err(MlsError::NotBasicCredential);
    }
    BasicCredential::try_from(credential.clone())
        .map(|c| c.identity().to_vec())
        .map_err(|_| MlsError::NotBasicCredential)
}
