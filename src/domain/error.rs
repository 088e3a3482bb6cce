//! Why the domain refused a command: one variant per reason, with the data the reason needs.
//! Each variant has a stable [`DomainError::code`] clients match on and a message (its
//! `Display`); both are part of the wire contract and do not change. How a refusal is answered
//! over HTTP (status, whether it is retryable, the `details` object) is decided in one place,
//! `crate::api::error`, not here: the domain names what went wrong, the API says how to tell.

use super::model::ChannelKind;
use super::text::{NameError, TextError};
use super::views::{PrivacyItem, ProfileItem};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    // ----- the request names something that is not there --------------------------------
    #[error("{}", .0.message())]
    NotFound(What),

    // ----- who is asking ----------------------------------------------------------------
    /// An anonymous request for something only an identified reader may see.
    #[error("identify yourself to read this {0}")]
    IdentityRequired(Readable),
    #[error("the challenge is unknown, used or expired")]
    ChallengeInvalid,
    #[error("the signature does not match")]
    SignatureMismatch,
    #[error("no such session")]
    NoSuchSession,
    #[error("the session token is unknown, expired or revoked")]
    InvalidToken,
    #[error("this device was revoked")]
    DeviceRevoked,
    #[error(
        "this uid is not derived from your key: an owner or admin must approve binding it to your key first"
    )]
    BindingRequired,
    #[error("this uid or device is bound to another key")]
    KeyMismatch,

    // ----- what the asker may do ---------------------------------------------------------
    #[error("you are not a member of this server")]
    NotAMember,
    /// The asker's role (or authorship) does not allow the act.
    #[error("{}", .0.message())]
    Forbidden(Needs),
    #[error("this instance does not allow creating servers")]
    ServerCreationDisabled,
    #[error("the claim token is not valid for this server")]
    InvalidClaimToken,
    #[error("the claim token has expired")]
    ClaimTokenExpired,
    #[error("that avatar was not uploaded by you")]
    AvatarAssetForbidden,
    #[error("you are banned from this server")]
    Banned,
    #[error("this channel is locked")]
    ChannelLocked,
    #[error("this channel is read-only for your role")]
    ReadOnlyChannel,
    #[error("you are in a timeout in this server: you may read and listen, not post or speak")]
    TimedOut,
    /// A moderation action that is not one of this endpoint's, or with a bad duration or
    /// channel (the text says which).
    #[error("{0}")]
    InvalidAction(&'static str),
    #[error(
        "reason_code must be 1 to 64 characters of a-z 0-9 _, reason_text at most 1000 characters"
    )]
    InvalidReason,
    #[error("a case is about another member of the server")]
    InvalidTarget,
    #[error("the policy needs 1 <= threshold <= quorum <= 50 and a window of 60 seconds to 7 days")]
    InvalidPolicy,
    #[error("this case has an open proposal: vote on it")]
    ProposalOpen,
    #[error("too few eligible voters ({eligible}) for the quorum ({quorum}): no proposal")]
    QuorumUnreachable { eligible: u32, quorum: u32 },
    #[error("you voted on this proposal already")]
    AlreadyVoted,
    #[error("this case is closed")]
    CaseClosed,
    #[error("this proposal is no longer open")]
    ProposalClosed,
    /// Reports one user may file per hour in a server.
    #[error("too many reports in the last hour; retry later")]
    ReportsThrottled { retry_after_ms: i64 },
    #[error("this join ticket was already used")]
    TicketReplayed,
    #[error("{}", .0.message())]
    JoinDenied(JoinDenial),

    // ----- what the request carries ------------------------------------------------------
    /// A text field failed the text rule (`super::limits::text_field`).
    #[error("{field} {reason}")]
    InvalidText {
        /// The field's wire name.
        field: &'static str,
        reason: TextError,
    },
    #[error("{0}")]
    InvalidDisplayName(NameError),
    #[error("{0}")]
    InvalidDescription(NameError),
    /// A channel or category name.
    #[error("{0}")]
    InvalidName(NameError),
    #[error("banner_preset must be one of {}", super::model::BANNER_PRESETS.join(", "))]
    InvalidBannerPreset,
    #[error("at most {} characters", super::community::MAX_PRESET_ID_CHARS)]
    InvalidAvatarPresetId,
    #[error("avatar_mode uploaded needs an avatar_asset_id")]
    AvatarAssetRequired,
    /// A layout that does not list every channel of the server once, in a group of its kind.
    #[error("{0}")]
    InvalidLayout(String),
    #[error("no group of this kind; name one")]
    GroupRequired,
    #[error("a {} channel cannot go into a {} group", .channel.as_str(), .group.as_str())]
    GroupKindMismatch {
        channel: ChannelKind,
        group: ChannelKind,
    },
    #[error("voice channels carry no messages to encrypt")]
    EncryptedVoice,
    #[error("ownership moves by claim, not by role")]
    OwnershipByClaim,
    #[error("messages go to text channels")]
    NotATextChannel,
    #[error("join tickets are for voice channels")]
    NotAVoiceChannel,
    #[error("this channel is end-to-end encrypted")]
    PlaintextNotAllowed,
    #[error("this channel is not end-to-end encrypted")]
    EnvelopeNotAllowed,
    #[error("a message needs a body or an attachment")]
    EmptyMessage,
    #[error("a message body holds at most {max_bytes} bytes")]
    MessageTooLarge { max_bytes: usize },
    #[error("the files of one message total at most {max_bytes} bytes")]
    UploadsTooLarge { max_bytes: usize },
    #[error(
        "at most {} attachments per message",
        super::community::MAX_ATTACHMENTS_PER_MESSAGE
    )]
    TooManyAttachments,
    #[error("at most {} uids per batch", super::community::MAX_PROFILES_PER_BATCH)]
    TooManyProfiles,
    #[error("at most {} read acks per request", super::limits::MAX_BULK_READ_ACKS)]
    TooManyReadAcks,
    #[error("expires_at must be between 1 minute and 30 days from now")]
    InvalidInviteExpiry,
    #[error("max_uses must be 1 to 1000")]
    InvalidInviteUses,
    #[error("each channel at most once per request")]
    DuplicateChannel,

    // ----- what the state allows ---------------------------------------------------------
    #[error("this server is invite-only: redeem an invite to join")]
    InviteRequired,
    #[error("the invite is expired, revoked or used up")]
    InviteExpired,
    #[error("move its channels first: no other group of this kind can take them")]
    CategoryNotEmpty,
    /// A refusal of the MLS delivery service (Part C).
    #[error("{0}")]
    Keys(super::keys::KeyError),
    /// `If-Match` named an older profile version; carries the current profile.
    #[error("the profile changed since you read it")]
    ProfileConflict { current: Box<ProfileItem> },
    #[error("the privacy settings changed since the version you have: read them and try again")]
    PrivacyConflict { current: Box<PrivacyItem> },
    /// A count limit (waiting does not help).
    #[error("{}", .0.message())]
    LimitReached(Limit),

    // ----- come back later ---------------------------------------------------------------
    /// The per-user write limit (`super::rate`).
    #[error("more than {per_minute} writes per minute; retry shortly")]
    RateLimited {
        per_minute: u32,
        retry_after_ms: i64,
    },
    /// Too many sign-ins in the last minute, instance-wide.
    #[error("too many sign-ins in the last minute; retry shortly")]
    SignInsThrottled,
    /// The authority cannot answer now; the same request may work later.
    #[error("{}", .0.message())]
    Unavailable(Outage),
    /// Storage refused the command's write (a constraint or data error): it fails the same way
    /// again.
    #[error("the change could not be stored")]
    WriteFailed,
}

impl DomainError {
    /// The stable code clients match on (the wire's `code`).
    pub fn code(&self) -> &'static str {
        use DomainError::*;
        match self {
            NotFound(what) => what.code(),
            IdentityRequired(_) | ChallengeInvalid | SignatureMismatch | NoSuchSession => {
                "unauthorized"
            }
            InvalidToken => "invalid_token",
            DeviceRevoked => "device_revoked",
            BindingRequired => "binding_required",
            KeyMismatch => "identity_key_mismatch",
            NotAMember => "not_a_member",
            Forbidden(_) => "forbidden",
            ServerCreationDisabled => "server_creation_disabled",
            InvalidClaimToken => "invalid_claim_token",
            ClaimTokenExpired => "claim_token_expired",
            AvatarAssetForbidden => "avatar_asset_forbidden",
            Banned => "banned",
            ChannelLocked => "channel_locked",
            ReadOnlyChannel => "channel_read_only",
            TimedOut => "timed_out",
            InvalidAction(_) => "invalid_action",
            InvalidReason => "invalid_reason",
            InvalidTarget => "invalid_target",
            InvalidPolicy => "invalid_policy",
            ProposalOpen => "proposal_open",
            QuorumUnreachable { .. } => "quorum_unreachable",
            AlreadyVoted => "already_voted",
            CaseClosed => "case_closed",
            ProposalClosed => "proposal_closed",
            ReportsThrottled { .. } => "rate_limited",
            TicketReplayed => "rtc_ticket_replayed",
            JoinDenied(_) => "rtc_join_denied",
            InvalidText { .. } => "invalid_text",
            InvalidDisplayName(_) => "invalid_display_name",
            InvalidDescription(_) => "invalid_description",
            InvalidName(_) => "invalid_name",
            InvalidBannerPreset => "invalid_banner_preset",
            InvalidAvatarPresetId => "invalid_avatar_preset_id",
            AvatarAssetRequired => "avatar_asset_required",
            InvalidLayout(_) => "invalid_layout",
            GroupRequired => "group_required",
            GroupKindMismatch { .. } => "group_kind_mismatch",
            EncryptedVoice => "invalid_encryption",
            OwnershipByClaim => "invalid_role",
            NotATextChannel => "not_a_text_channel",
            NotAVoiceChannel => "not_a_voice_channel",
            PlaintextNotAllowed => "plaintext_not_allowed",
            EnvelopeNotAllowed => "envelope_not_allowed",
            EmptyMessage => "empty_message",
            MessageTooLarge { .. } | UploadsTooLarge { .. } => "payload_too_large",
            TooManyAttachments => "too_many_attachments",
            TooManyProfiles => "too_many_profiles",
            TooManyReadAcks => "too_many_read_acks",
            InvalidInviteExpiry => "invalid_expires_at",
            InvalidInviteUses => "invalid_max_uses",
            InviteRequired => "invite_required",
            InviteExpired => "invite_expired",
            DuplicateChannel => "duplicate_channel",
            CategoryNotEmpty => "category_not_empty",
            Keys(k) => k.code(),
            ProfileConflict { .. } => "profile_conflict",
            PrivacyConflict { .. } => "privacy_conflict",
            LimitReached(limit) => limit.code(),
            RateLimited { .. } | SignInsThrottled => "rate_limited",
            Unavailable(_) => "storage_unavailable",
            WriteFailed => "storage_write_failed",
        }
    }
}

/// What a `*_not_found` refusal could not find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    Server,
    Channel,
    Message,
    /// A category of the server named in the request.
    Group,
    /// A current member of the server.
    Member,
    /// Any membership of the uid in the server, current or past (it never was a member).
    AnyMembership,
    Invite,
    Case,
    Proposal,
}

impl What {
    fn code(self) -> &'static str {
        match self {
            What::Server => "server_not_found",
            What::Channel => "channel_not_found",
            What::Message => "message_not_found",
            What::Group => "group_not_found",
            What::Member | What::AnyMembership => "member_not_found",
            What::Invite => "invite_not_found",
            What::Case => "case_not_found",
            What::Proposal => "proposal_not_found",
        }
    }

    fn message(self) -> &'static str {
        match self {
            What::Server => "no such server",
            What::Channel => "no such channel",
            What::Message => "no such message",
            What::Group => "no such group in this server",
            What::Member => "no such member",
            What::AnyMembership => "that uid was never a member of this server",
            What::Invite => "no such invite",
            What::Case => "no such case",
            What::Proposal => "no open proposal on this case",
        }
    }
}

/// What an anonymous reader asked to read ([`DomainError::IdentityRequired`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readable {
    Server,
    Channel,
}

impl std::fmt::Display for Readable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Readable::Server => "server",
            Readable::Channel => "channel",
        })
    }
}

/// Who may do what a [`DomainError::Forbidden`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// The owner or an admin of the server.
    Admin,
    /// A moderator or above.
    Moderator,
    /// The owner (roles are assigned by the owner).
    Owner,
    /// The author of the message, or a moderator or above.
    AuthorOrModerator,
    /// A moderator above the target's rank.
    HigherRank,
    /// Someone above the uid's role in each of its servers (binding a uid to a key).
    RankInEveryServer,
}

impl Needs {
    fn message(self) -> &'static str {
        match self {
            Needs::Admin => "this needs the owner or an admin of the server",
            Needs::Moderator => "this needs a moderator or above",
            Needs::Owner => "only the owner assigns roles",
            Needs::AuthorOrModerator => "only the author or a moderator may delete this message",
            Needs::HigherRank => "you cannot moderate a member of your rank or above",
            Needs::RankInEveryServer => {
                "only someone above the uid's role in each of its servers may bind it"
            }
        }
    }
}

/// Why a redeemed join ticket does not let its holder in ([`DomainError::JoinDenied`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinDenial {
    /// The uid is banned (a ban after the ticket still stops the join).
    Banned,
    /// A leave, kick, ban or revoked session after the ticket voided it.
    Withdrawn,
}

impl JoinDenial {
    fn message(self) -> &'static str {
        match self {
            JoinDenial::Banned => "banned from this server",
            JoinDenial::Withdrawn => {
                "this ticket was withdrawn when its user left, was removed or signed out; ask for a new one"
            }
        }
    }
}

/// A count limit ([`DomainError::LimitReached`]): what a user may do, what a server holds,
/// or the size of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Servers one uid may create.
    ServersPerUser,
    /// Channels one server holds.
    ChannelsPerServer,
    /// Categories one server holds.
    CategoriesPerServer,
    /// Groups one layout request lists.
    LayoutGroups,
    /// Channel ids one layout request lists, over all its groups.
    LayoutChannelIds,
    /// Live (unrevoked, unexpired) invites one server holds.
    InvitesPerServer,
    /// Open cases one reporter has in one server.
    OpenReportsPerUser,
}

impl Limit {
    /// Its name in the refusal's `details.limit`.
    pub fn name(self) -> &'static str {
        match self {
            Limit::ServersPerUser => "servers_per_user",
            Limit::ChannelsPerServer => "channels_per_server",
            Limit::CategoriesPerServer => "categories_per_server",
            Limit::LayoutGroups => "layout_groups",
            Limit::LayoutChannelIds => "layout_channel_ids",
            Limit::InvitesPerServer => "invites_per_server",
            Limit::OpenReportsPerUser => "open_reports_per_user",
        }
    }

    /// Its value, `details.max`.
    pub fn max(self) -> usize {
        use super::community::{
            MAX_CATEGORIES_PER_SERVER, MAX_CHANNELS_PER_SERVER, MAX_SERVERS_CREATED_PER_USER,
        };
        use super::limits::{
            MAX_INVITES_PER_SERVER, MAX_LAYOUT_CHANNEL_IDS, MAX_LAYOUT_GROUPS,
            MAX_OPEN_REPORTS_PER_USER,
        };
        match self {
            Limit::ServersPerUser => MAX_SERVERS_CREATED_PER_USER,
            Limit::ChannelsPerServer => MAX_CHANNELS_PER_SERVER,
            Limit::CategoriesPerServer => MAX_CATEGORIES_PER_SERVER,
            Limit::LayoutGroups => MAX_LAYOUT_GROUPS,
            Limit::LayoutChannelIds => MAX_LAYOUT_CHANNEL_IDS,
            Limit::InvitesPerServer => MAX_INVITES_PER_SERVER,
            Limit::OpenReportsPerUser => MAX_OPEN_REPORTS_PER_USER,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Limit::ServersPerUser => "server_limit_reached",
            Limit::ChannelsPerServer => "channel_limit_reached",
            Limit::CategoriesPerServer => "category_limit_reached",
            Limit::LayoutGroups | Limit::LayoutChannelIds => "layout_too_large",
            Limit::InvitesPerServer => "invite_limit_reached",
            Limit::OpenReportsPerUser => "report_limit_reached",
        }
    }

    fn message(self) -> String {
        let max = self.max();
        match self {
            Limit::ServersPerUser => format!("one user may create at most {max} servers"),
            Limit::ChannelsPerServer => format!("a server holds at most {max} channels"),
            Limit::CategoriesPerServer => format!("a server holds at most {max} groups"),
            Limit::LayoutGroups => format!("a layout lists at most {max} groups"),
            Limit::LayoutChannelIds => format!("a layout lists at most {max} channel ids"),
            Limit::InvitesPerServer => format!("a server holds at most {max} live invites"),
            Limit::OpenReportsPerUser => {
                format!("one member has at most {max} open reports in a server")
            }
        }
    }
}

/// Why the authority cannot answer now ([`DomainError::Unavailable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// The database did not take the write.
    Storage,
    /// The authority thread is gone.
    ShuttingDown,
    /// The state is reloading from storage after a failed write.
    CatchingUp,
    /// The database's queue is full.
    StorageOverloaded,
}

impl Outage {
    fn message(self) -> &'static str {
        match self {
            Outage::Storage => "storage is unavailable",
            Outage::ShuttingDown => "the server is shutting down",
            Outage::CatchingUp => "catching up with storage; retry shortly",
            Outage::StorageOverloaded => "storage is overloaded",
        }
    }
}

#[cfg(test)]
impl DomainError {
    /// The HTTP status the API answers with (`crate::api::error`), so the rules' tests can pin
    /// the wire answer next to the rule.
    pub(crate) fn status(&self) -> u16 {
        crate::api::error::ApiError::from(self.clone()).status()
    }

    pub(crate) fn retryable(&self) -> bool {
        crate::api::error::ApiError::from(self.clone()).retryable()
    }

    pub(crate) fn details(&self) -> Option<String> {
        crate::api::error::ApiError::from(self.clone()).details()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages_are_the_wire_ones() {
        let cases = [
            (
                DomainError::NotFound(What::Group),
                "group_not_found",
                "no such group in this server",
            ),
            (
                DomainError::IdentityRequired(Readable::Channel),
                "unauthorized",
                "identify yourself to read this channel",
            ),
            (
                DomainError::Forbidden(Needs::Admin),
                "forbidden",
                "this needs the owner or an admin of the server",
            ),
            (
                DomainError::GroupKindMismatch {
                    channel: ChannelKind::Voice,
                    group: ChannelKind::Text,
                },
                "group_kind_mismatch",
                "a voice channel cannot go into a text group",
            ),
            (
                DomainError::LimitReached(Limit::ChannelsPerServer),
                "channel_limit_reached",
                "a server holds at most 500 channels",
            ),
            (
                DomainError::InvalidAvatarPresetId,
                "invalid_avatar_preset_id",
                "at most 64 characters",
            ),
            (
                DomainError::InvalidBannerPreset,
                "invalid_banner_preset",
                "banner_preset must be one of ocean, sunset, ember, forest, midnight, orchid, teal, gold, slate",
            ),
        ];
        for (e, code, message) in cases {
            assert_eq!((e.code(), e.to_string().as_str()), (code, message));
        }
    }
}
