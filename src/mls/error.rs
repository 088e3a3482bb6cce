//! [`MlsError`], why an MLS object was refused, and its stable
//! [`reason`](MlsError::reason) codes.

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
    /// The lifetime range is longer than
    /// [`MAX_KEY_PACKAGE_LIFETIME_SECS`](super::MAX_KEY_PACKAGE_LIFETIME_SECS), or
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
