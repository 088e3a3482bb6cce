//! End-to-end encryption as the delivery service sees it (wire contract Part C): the rows it
//! keeps for key packages, claims, groups, commits, epoch spans, mailboxes and backups, and
//! the refusals of its rules ([`KeyError`]). The rules themselves are the community's
//! (`crate::domain::community` e2ee); the MLS parsing and validation is `crate::mls`.
//!
//! Nothing here is key material the server could use: KeyPackages are public, Welcomes,
//! envelopes and backups are ciphertext for devices, GroupInfos are the group's public state.
//! Blobs are base64url text, as on the wire, and never go into a log line.

use serde::Serialize;

use super::model::Millis;

/// One-time packages a device may keep uploaded (beside its one last-resort package).
pub const MAX_ONE_TIME_PACKAGES: usize = 100;
/// Below this many one-time packages a device gets `keys.packages.low`.
pub const LOW_PACKAGES: usize = 10;
/// Packages one upload may carry.
pub const MAX_PACKAGES_PER_UPLOAD: usize = 101;
/// Users one claim may name.
pub const MAX_CLAIM_USERS: usize = 50;
/// Epochs behind the current one an application message may still be sent in.
pub const EPOCH_GRACE: u64 = 3;
/// Items a device's mailbox holds at most (507 to the sender over it).
pub const MAX_MAILBOX_ITEMS: usize = 1000;
/// Bytes (of base64url blobs) a device's mailbox holds at most.
pub const MAX_MAILBOX_BYTES: usize = 8 * 1024 * 1024;
/// A mailbox item is dropped this long after it arrived.
pub const MAILBOX_TTL_MS: Millis = 30 * 24 * 3600 * 1000;
/// Items per mailbox page.
pub const MAX_MAILBOX_PAGE: usize = 100;
/// Envelopes one request may carry.
pub const MAX_ENVELOPES_PER_REQUEST: usize = 100;
/// Largest envelope blob (base64url characters).
pub const MAX_ENVELOPE_CHARS: usize = 64 * 1024;
/// Largest backup ciphertext (base64url characters) and its KDF metadata.
pub const MAX_BACKUP_CHARS: usize = 1024 * 1024;
pub const MAX_KDF_METADATA_CHARS: usize = 4096;
/// Commits per page of the commit log.
pub const MAX_COMMITS_PAGE: usize = 100;
/// A link code is good for this long, once.
pub const LINK_TTL_MS: Millis = 10 * 60 * 1000;
/// Link requests waiting at once, instance-wide (a start over it is refused, retryable).
pub const MAX_PENDING_LINKS: usize = 10_000;
/// Wrong codes a link request takes before it is void.
pub const MAX_LINK_ATTEMPTS: u32 = 5;

/// A KeyPackage as uploaded and validated (`crate::mls::validate_key_package`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPackageRow {
    /// Hex of the KeyPackageRef.
    pub key_package_ref: String,
    pub device_id: String,
    pub user_uid: String,
    /// base64url of the TLS-encoded MlsMessage.
    pub data: String,
    pub last_resort: bool,
    pub uploaded_at: Millis,
    /// End of the package's lifetime (ms).
    pub not_after: Millis,
}

/// What the community keeps in memory of a stored package: no data (storage has it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPackageIndex {
    pub key_package_ref: String,
    pub device_id: String,
    pub user_uid: String,
    pub last_resort: bool,
    pub not_after: Millis,
    pub claimed: bool,
}

/// A package handed out: who asked, for which device's package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub claim_id: String,
    pub key_package_ref: String,
    pub device_id: String,
    pub claimer_uid: String,
    pub claimer_device_id: String,
    pub last_resort: bool,
    pub claimed_at: Millis,
}

/// A group's public state at its current epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    pub channel_id: String,
    pub epoch: u64,
    /// base64url of the GroupInfo (with its ratchet tree) of this epoch; `None` before the
    /// first commit.
    pub group_info: Option<String>,
    /// base64url of the delivery service's validated public group state (`crate::mls`).
    pub public_state: Option<String>,
    pub updated_at: Millis,
}

/// One entry of a channel's commit log: the commit that created `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRow {
    pub channel_id: String,
    pub epoch: u64,
    pub commit_id: String,
    pub sender_device_id: String,
    /// base64url of the PublicMessage commit.
    pub commit: String,
    /// Hex sha256 of the commit's bytes: a resubmission is recognised by it.
    pub commit_hash: String,
    /// The device ids in the group after the commit, sorted, as a JSON array (one column).
    pub members: String,
    pub created_at: Millis,
}

impl CommitRow {
    /// The device ids of a `members` column (`None`: not a JSON array of strings).
    pub fn member_ids_of(members: &str) -> Option<Vec<String>> {
        let mut bytes = members.as_bytes().to_vec();
        simd_json::from_slice(&mut bytes).ok()
    }
}

/// The epochs `from_epoch..=to_epoch` (open: still a member) a user was in a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochSpan {
    pub channel_id: String,
    pub user_uid: String,
    pub from_epoch: u64,
    pub to_epoch: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MailboxKind {
    Welcome,
    Envelope,
}

impl MailboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MailboxKind::Welcome => "welcome",
            MailboxKind::Envelope => "envelope",
        }
    }

    pub fn parse(s: &str) -> Option<MailboxKind> {
        match s {
            "welcome" => Some(MailboxKind::Welcome),
            "envelope" => Some(MailboxKind::Envelope),
            _ => None,
        }
    }
}

/// An item of a device's mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxItem {
    pub device_id: String,
    pub seq: i64,
    pub kind: MailboxKind,
    pub channel_id: String,
    pub epoch: u64,
    pub blob: String,
    pub sender_device_id: String,
    pub created_at: Millis,
}

/// What the community keeps in memory of a mailbox item: its place and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxIndex {
    pub seq: i64,
    pub bytes: usize,
    pub created_at: Millis,
}

/// A user's encrypted key backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub user_uid: String,
    pub version: i64,
    pub ciphertext: String,
    pub kdf_metadata: String,
    pub updated_at: Millis,
}

/// Everything of Part C the community loads at start (no blobs but the group states).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeysSnapshot {
    pub packages: Vec<KeyPackageIndex>,
    /// `(key_package_ref, device_id, claimer_device_id)` of recent claims.
    pub claims: Vec<(String, String, String)>,
    pub groups: Vec<GroupRow>,
    /// The newest commits of each group (at most `EPOCH_GRACE + 1`), without their blobs.
    pub recent_commits: Vec<CommitRow>,
    pub spans: Vec<EpochSpan>,
    /// `(device_id, index)` of every mailbox item.
    pub mailbox: Vec<(String, MailboxIndex)>,
    /// `(user_uid, version)` of every backup.
    pub backups: Vec<(String, i64)>,
}

/// Why the delivery service refused (wire contract Part C).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// An MLS message that does not parse or validate; `reason` is `crate::mls`'s.
    #[error("the MLS {what} is not valid: {reason}")]
    InvalidMls {
        what: &'static str,
        reason: &'static str,
    },
    #[error("a blob is not base64url")]
    InvalidBlob,
    #[error("handshakes must be MLS PublicMessages: the delivery service checks them")]
    PrivateHandshake,
    #[error("the commit is for epoch {message_epoch}; the group is at epoch {current_epoch}")]
    EpochConflict {
        message_epoch: u64,
        current_epoch: u64,
    },
    #[error("after this commit the group must hold exactly the channel's member devices")]
    MemberSetMismatch { expected: Vec<MemberDevices> },
    #[error("a member's MLS signature key must be its device's identity key")]
    SignatureKeyMismatch,
    #[error("the Welcome names a key package this device did not claim")]
    WelcomeNotClaimed,
    #[error("the first commit of a group needs its epoch-0 GroupInfo (genesis_group_info)")]
    GenesisRequired,
    #[error("the committing device is not in the group")]
    NotInGroup,
    #[error("the message's epoch is too old: re-encrypt it in the current epoch")]
    EpochStale { current_epoch: u64 },
    #[error("the group's membership changed: a member must commit the new member set first")]
    RotationRequired { current_epoch: u64 },
    #[error("the envelope says epoch {stated}; the ciphertext is of epoch {actual}")]
    EpochMismatch { stated: u64, actual: u64 },
    #[error("the sender must be the posting device, a member of that epoch")]
    SenderNotInEpoch,
    #[error("the target was not a member of the group in that epoch")]
    EpochNotEligible,
    #[error(
        "a device may keep at most {} one-time key packages",
        MAX_ONE_TIME_PACKAGES
    )]
    TooManyPackages,
    #[error("at most {max} per request")]
    TooManyItems { max: usize },
    #[error("the target device's mailbox is full")]
    MailboxFull,
    #[error("the backup changed since the version you have")]
    BackupConflict { current_version: i64 },
    #[error("a user may have at most {max} active devices")]
    TooManyDevices { max: usize },
    #[error("the link request is unknown, used or expired")]
    LinkInvalid,
    #[error("too many link requests are waiting; retry later")]
    LinksBusy,
    #[error("not an active device of yours")]
    NotYourDevice,
    #[error("this is not an end-to-end encrypted channel")]
    NotEncrypted,
}

/// A user of the authoritative member set and its device ids (sorted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberDevices {
    pub user_uid: String,
    pub device_ids: Vec<String>,
}

impl KeyError {
    pub fn code(&self) -> &'static str {
        use KeyError::*;
        match self {
            InvalidMls { .. } => "invalid_mls_message",
            InvalidBlob => "invalid_blob",
            PrivateHandshake => "private_handshake_not_allowed",
            EpochConflict { .. } => "epoch_conflict",
            MemberSetMismatch { .. } => "member_set_mismatch",
            SignatureKeyMismatch => "signature_key_mismatch",
            WelcomeNotClaimed => "welcome_not_claimed",
            GenesisRequired => "genesis_required",
            NotInGroup => "not_in_group",
            EpochStale { .. } => "epoch_stale",
            RotationRequired { .. } => "epoch_rotation_required",
            EpochMismatch { .. } => "epoch_mismatch",
            SenderNotInEpoch => "sender_not_in_epoch",
            EpochNotEligible => "epoch_not_eligible",
            TooManyPackages => "too_many_key_packages",
            TooManyItems { .. } => "too_many_items",
            MailboxFull => "mailbox_full",
            BackupConflict { .. } => "backup_conflict",
            TooManyDevices { .. } => "device_limit_reached",
            LinkInvalid => "link_invalid",
            LinksBusy => "links_busy",
            NotYourDevice => "device_not_found",
            NotEncrypted => "not_encrypted",
        }
    }

    pub fn status(&self) -> u16 {
        use KeyError::*;
        match self {
            InvalidMls { .. }
            | InvalidBlob
            | PrivateHandshake
            | SignatureKeyMismatch
            | GenesisRequired
            | EpochMismatch { .. }
            | TooManyItems { .. }
            | NotEncrypted => 400,
            SenderNotInEpoch | NotInGroup | WelcomeNotClaimed | EpochNotEligible => 403,
            NotYourDevice | LinkInvalid => 404,
            EpochConflict { .. }
            | MemberSetMismatch { .. }
            | EpochStale { .. }
            | RotationRequired { .. }
            | TooManyPackages
            | BackupConflict { .. }
            | TooManyDevices { .. } => 409,
            MailboxFull => 507,
            LinksBusy => 503,
        }
    }

    /// Transient only: a full link table empties as requests expire.
    pub fn retryable(&self) -> bool {
        matches!(self, KeyError::LinksBusy)
    }

    /// The `details` object (encoded JSON), for the refusals that carry one.
    pub fn details(&self) -> Option<String> {
        use KeyError::*;
        match self {
            EpochConflict { current_epoch, .. }
            | EpochStale { current_epoch }
            | RotationRequired { current_epoch } => {
                Some(format!("{{\"current_epoch\":{current_epoch}}}"))
            }
            MemberSetMismatch { expected } => Some(format!(
                "{{\"members\":{}}}",
                super::community::encode(expected)
            )),
            BackupConflict { current_version } => {
                Some(format!("{{\"current_version\":{current_version}}}"))
            }
            InvalidMls { reason, .. } => Some(format!("{{\"reason\":\"{reason}\"}}")),
            TooManyItems { max } | TooManyDevices { max } => Some(format!("{{\"max\":{max}}}")),
            _ => None,
        }
    }
}
