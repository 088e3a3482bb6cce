//! The entities of a community instance, as the domain layer holds them in memory and as the
//! storage engines persist them. Plain data: no I/O, no runtime.
//!
//! Times are [`Millis`] (milliseconds since the Unix epoch, UTC) everywhere inside; they become
//! RFC 3339 strings only at the wire (see `views`). Message order is a global sequence number
//! ([`Seq`]) handed out by the single domain authority; membership spans are expressed in the
//! same sequence, so "what did this reader see while a member" is an interval test.

use serde::{Deserialize, Serialize};

pub use super::ids::{ChannelId, MessageId, ServerId, UserUid};

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;
/// Position of a message in the instance-wide message order (1, 2, 3…; 0 = before any).
pub type Seq = i64;

/// A server's realtime event id (wire contract B.3): 1, 2, 3… per server, handed out in
/// command order, never reused; 0 means "none yet". The wire and the resume cursor carry it as
/// an unsigned integer; storage keeps it in a signed 64-bit column, converted only at that
/// boundary ([`EventId::from_stored`], [`EventId::stored`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct EventId(pub u64);

impl EventId {
    /// No event yet.
    pub const NONE: EventId = EventId(0);

    /// The id after this one.
    pub fn next(self) -> EventId {
        EventId(self.0 + 1)
    }

    /// The id as storage writes it. Ids count up by one from zero, so they stay far below
    /// `i64::MAX`; one that did not would be a bug, refused rather than wrapped.
    pub fn stored(self) -> i64 {
        i64::try_from(self.0).expect("event ids stay below i64::MAX")
    }

    /// An id read from storage; a negative one is corrupt data.
    pub fn from_stored(value: i64) -> Option<EventId> {
        u64::try_from(value).ok().map(EventId)
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire (and column) spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parses the wire spelling; `None` for anything else.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

wire_enum!(
    /// A member's role in a server, from most to least powerful.
    Role { Owner = "owner", Admin = "admin", Moderator = "moderator", Member = "member" }
);
wire_enum!(
    /// What a channel (and a category, which holds channels of one kind) carries.
    ChannelKind { Text = "text", Voice = "voice" }
);
wire_enum!(
    /// Who may read a channel's history (wire contract B.2).
    HistoryVisibility { Joined = "joined", Members = "members", Public = "public" }
);
wire_enum!(
    /// Chosen at channel creation, never changed (wire contract C).
    Encryption { None = "none", E2ee = "e2ee" }
);
wire_enum!(
    /// How a uid becomes a member (Part D): `open`, its first identified contact joins it;
    /// `invite`, only redeeming an invite does.
    JoinPolicy { Open = "open", Invite = "invite" }
);
wire_enum!(
    AvatarMode { Generated = "generated", Uploaded = "uploaded" }
);
wire_enum!(
    /// Whether other members see a user's presence and typing in a server (Part D).
    PresenceVisibility { Visible = "visible", Hidden = "hidden" }
);
wire_enum!(
    /// Who may mention a user in a server (Part D): a mention by anyone else is not parsed
    /// as one and notifies nobody.
    MentionPermission { AllMembers = "all_members", StaffOnly = "staff_only", Nobody = "nobody" }
);
wire_enum!(
    /// A moderation measure (the hooks voice needs now; the moderation API comes later).
    ModerationKind { Ban = "ban", Timeout = "timeout", Lock = "lock" }
);

wire_enum!(
    /// Where a moderation case stands (Part D).
    CaseStatus { Open = "open", Voting = "voting", Enforced = "enforced", Rejected = "rejected", Closed = "closed" }
);
wire_enum!(
    /// A moderation action: the first three are taken at once by a moderator, the others
    /// only by a vote.
    ActionType {
        Kick = "kick",
        TimeoutShort = "timeout_short",
        ChannelLock = "channel_lock",
        Ban = "ban",
        TimeoutLong = "timeout_long",
        RoleRemove = "role_remove"
    }
);
wire_enum!(
    ProposalStatus { Open = "open", Enforced = "enforced", Rejected = "rejected", Expired = "expired" }
);
wire_enum!(
    VoteValue { Yes = "yes", No = "no", Abstain = "abstain" }
);

impl ActionType {
    /// Whether a moderator takes it at once (the others need a vote).
    pub fn is_immediate(self) -> bool {
        matches!(
            self,
            ActionType::Kick | ActionType::TimeoutShort | ActionType::ChannelLock
        )
    }
}

/// A report to the staff of a server about a member (Part D).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub id: String,
    pub server_id: ServerId,
    pub reporter_uid: UserUid,
    pub target_uid: UserUid,
    pub channel_id: Option<String>,
    pub message_id: Option<String>,
    pub reason_code: String,
    pub reason_text: Option<String>,
    pub status: CaseStatus,
    pub created_at: Millis,
    pub closed_at: Option<Millis>,
}

/// A moderation action taken on a case (immediately or by a vote).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModAction {
    pub id: String,
    pub case_id: String,
    pub server_id: ServerId,
    pub action_type: ActionType,
    pub target_uid: UserUid,
    pub channel_id: Option<String>,
    pub duration_seconds: Option<i64>,
    pub expires_at: Option<Millis>,
    pub enforced_by_uid: UserUid,
    pub enforced_at: Millis,
}

/// How a server votes on actions that need one (Part D); a proposal keeps the policy it was
/// made under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VotePolicy {
    /// Yes votes that enforce.
    pub threshold: u32,
    /// Distinct eligible voters who must have voted.
    pub quorum: u32,
    pub window_seconds: i64,
}

impl VotePolicy {
    pub const DEFAULT: VotePolicy = VotePolicy {
        threshold: 2,
        quorum: 3,
        window_seconds: 24 * 3600,
    };
}

/// A proposal to take an action on a case, decided by the staff's votes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub id: String,
    pub case_id: String,
    pub server_id: ServerId,
    pub action_type: ActionType,
    pub duration_seconds: Option<i64>,
    pub proposed_by_uid: UserUid,
    pub policy: VotePolicy,
    pub expires_at: Millis,
    pub status: ProposalStatus,
    pub created_at: Millis,
    /// The proposer's `Idempotency-Key`: the same key proposes once.
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    pub proposal_id: String,
    pub voter_uid: UserUid,
    pub value: VoteValue,
    pub at: Millis,
}

impl Role {
    /// Higher is more powerful.
    pub fn rank(self) -> u8 {
        match self {
            Role::Owner => 3,
            Role::Admin => 2,
            Role::Moderator => 1,
            Role::Member => 0,
        }
    }

    pub fn at_least(self, other: Role) -> bool {
        self.rank() >= other.rank()
    }

    /// Every role of `min`'s rank or above.
    pub fn at_least_all(min: Role) -> Vec<Role> {
        Role::ALL
            .iter()
            .copied()
            .filter(|r| r.at_least(min))
            .collect()
    }
}

/// Banner presets the desktop client offers (wire contract A.3).
pub const BANNER_PRESETS: &[&str] = &[
    "ocean", "sunset", "ember", "forest", "midnight", "orchid", "teal", "gold", "slate",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub id: ServerId,
    pub display_name: String,
    pub description: String,
    pub banner_preset: String,
    pub discoverable: bool,
    pub join_policy: JoinPolicy,
    /// `None` until someone claims it (or the operator names an owner).
    pub owner_uid: Option<UserUid>,
    pub created_by_uid: Option<UserUid>,
    pub created_at: Millis,
    pub updated_by_uid: Option<UserUid>,
    pub updated_at: Millis,
}

/// An invite to a server (Part D). The code is shown once, at creation; only its hash is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    pub id: String,
    pub server_id: ServerId,
    /// `crate::auth::hash_token` of the code.
    pub code_hash: String,
    pub created_by_uid: UserUid,
    pub expires_at: Millis,
    pub max_uses: u32,
    pub use_count: u32,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

impl Invite {
    /// Whether it still lets someone in at `now`.
    pub fn is_live(&self, now: Millis) -> bool {
        self.revoked_at.is_none() && self.expires_at > now && self.use_count < self.max_uses
    }
}

/// A group of channels in the sidebar ("category" in the API, "group" in the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    pub id: String,
    pub server_id: ServerId,
    pub label: String,
    pub kind: ChannelKind,
    pub position: i64,
    pub created_by_uid: Option<UserUid>,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub id: ChannelId,
    pub server_id: ServerId,
    pub category_id: String,
    pub name: String,
    pub kind: ChannelKind,
    /// Order inside its category.
    pub position: i64,
    pub history_visibility: HistoryVisibility,
    pub encryption: Encryption,
    pub created_by_uid: Option<UserUid>,
    pub created_at: Millis,
    /// Who may see and who may post in it (Part D).
    pub access: ChannelAccess,
}

/// Per-channel permissions for the member role (Part D): a private channel is seen only by
/// `view_min_role` and above (hidden from everyone else's channel list, history, realtime,
/// mentions and voice tickets); a read-only one is posted in only by `post_min_role` and
/// above; a voice channel with `member_speak: false` gives members listen-only tickets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelAccess {
    pub view_min_role: Option<Role>,
    pub post_min_role: Option<Role>,
    pub member_speak: bool,
}

impl Default for ChannelAccess {
    fn default() -> Self {
        ChannelAccess {
            view_min_role: None,
            post_min_role: None,
            member_speak: true,
        }
    }
}

impl ChannelAccess {
    /// Whether a member of `role` (`None`: anonymous, or no current member) sees the channel.
    pub fn viewable_by(&self, role: Option<Role>) -> bool {
        match self.view_min_role {
            None => true,
            Some(min) => role.is_some_and(|r| r.at_least(min)),
        }
    }
}

/// One uid's standing in one server. `spans` is its membership history, oldest first; the uid
/// is a current member when the last span is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub server_id: ServerId,
    pub user_uid: UserUid,
    pub role: Role,
    pub spans: Vec<Span>,
}

/// A stretch of membership: messages with `joined_seq < seq <= left_seq` were posted during it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub joined_seq: Seq,
    pub joined_at: Millis,
    pub left_seq: Option<Seq>,
    pub left_at: Option<Millis>,
}

impl Membership {
    pub fn is_current(&self) -> bool {
        self.spans.last().is_some_and(|s| s.left_seq.is_none())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub user_uid: UserUid,
    pub display_name: String,
    pub avatar_mode: AvatarMode,
    pub avatar_preset_id: Option<String>,
    pub avatar_asset_id: Option<String>,
    /// 0 for the default profile of a uid that never saved one.
    pub version: i64,
    pub updated_at: Millis,
}

/// A member's privacy in one server (Part D). A user who never saved one is visible and may
/// be mentioned by all members (version 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privacy {
    pub server_id: ServerId,
    pub user_uid: UserUid,
    pub presence_visibility: PresenceVisibility,
    pub mention_permission: MentionPermission,
    pub version: i64,
    pub updated_at: Millis,
}

/// A user's profile in one server, in place of the instance-wide one (Part D). Deleting it
/// keeps the row with `cleared` set, so its version goes on rising and a stale `If-Match`
/// from before the delete never matches a later override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerProfile {
    pub server_id: ServerId,
    pub user_uid: UserUid,
    pub display_name: String,
    pub avatar_mode: AvatarMode,
    pub avatar_preset_id: Option<String>,
    pub avatar_asset_id: Option<String>,
    pub version: i64,
    pub updated_at: Millis,
    pub cleared: bool,
}

/// One row of the moderation audit (Part D): appended, never changed. `seq` orders the rows
/// of the instance as the authority decided them; `payload` is JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: i64,
    pub audit_id: String,
    pub server_id: ServerId,
    pub case_id: Option<String>,
    pub actor_uid: UserUid,
    pub event_type: String,
    pub payload: String,
    pub created_at: Millis,
}

/// An uploaded avatar image. Only `owner_uid` may put it on a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvatarAsset {
    pub id: String,
    pub owner_uid: UserUid,
    /// Hex sha256 of the stored bytes (the blob id).
    pub blob: String,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub created_at: Millis,
}

/// A single-use token that makes whoever presents it the owner of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimToken {
    /// sha256 hex of the token; the token itself is never stored.
    pub token_hash: String,
    pub server_id: ServerId,
    pub expires_at: Millis,
    pub used_at: Option<Millis>,
}

/// A device's Ed25519 identity key, bound to the uid it first signed in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub device_id: String,
    pub user_uid: UserUid,
    /// base64url of the 32 key bytes.
    pub public_key: String,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

/// A bearer session (wire contract B.1). Stored by the hash of its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub token_hash: String,
    pub user_uid: UserUid,
    pub device_id: String,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub revoked_at: Option<Millis>,
}

/// How far a user has read a channel. Never moves backwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadAck {
    pub user_uid: UserUid,
    pub channel_id: ChannelId,
    pub message_id: MessageId,
    pub seq: Seq,
    pub acked_at: Millis,
}

/// What a message carries: plaintext, or an end-to-end encrypted envelope the server stores as
/// is (wire contract C).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Plain { body: String },
    Envelope(Envelope),
}

/// An end-to-end encrypted message body (wire contract C); blobs are base64url text. One
/// definition for every place the fields appear: the request's `envelope` (deserialized into
/// it), the rendered message's `envelope` (serialized from it, same field order) and storage,
/// which splits it into the `messages` columns of the same names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The MLS epoch the message was encrypted in.
    pub epoch: u64,
    /// base64url of the MLS PrivateMessage (it carries its own nonce and AAD).
    pub ciphertext: String,
    pub sender_device_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mention {
    #[serde(rename = "type")]
    pub kind: String,
    pub token: String,
    pub target_id: String,
    pub display_text: String,
    pub range: Utf16Range,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Utf16Range {
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// `att_` + hex sha256 of the stored (metadata-stripped) bytes.
    pub attachment_id: String,
    pub file_name: String,
    pub width: u32,
    pub height: u32,
    pub content_type: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub seq: Seq,
    pub id: String,
    pub server_id: String,
    pub channel_id: String,
    pub author_uid: String,
    pub author_device_id: String,
    pub content: Content,
    pub reply_to_id: Option<String>,
    pub mentions: Vec<Mention>,
    pub attachments: Vec<Attachment>,
    pub created_at: Millis,
    pub deleted_at: Option<Millis>,
}

impl Message {
    /// The MLS epoch of an encrypted message (`None`: plaintext).
    pub fn epoch(&self) -> Option<u64> {
        match &self.content {
            Content::Plain { .. } => None,
            Content::Envelope(e) => Some(e.epoch),
        }
    }
}

/// The id of the message at `seq`: ids are positions in the message order, so storage finds a
/// message by its primary key.
pub fn message_id(seq: Seq) -> String {
    format!("msg_{seq}")
}

/// The position named by a message id (`None` for anything `message_id` does not produce).
pub fn message_seq(id: &str) -> Option<Seq> {
    let digits = id.strip_prefix("msg_")?;
    let seq: Seq = digits.parse().ok()?;
    (seq > 0 && message_id(seq) == id).then_some(seq)
}

/// A moderation measure in force (or lifted). `target` is a uid for bans and timeouts and a
/// channel id for locks; `until` is `None` for "until lifted".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moderation {
    pub server_id: ServerId,
    pub kind: ModerationKind,
    pub target: String,
    pub until: Option<Millis>,
    pub active: bool,
    pub by_uid: UserUid,
    pub at: Millis,
}

impl Moderation {
    pub fn in_force(&self, now: Millis) -> bool {
        self.active && self.until.is_none_or(|until| until > now)
    }
}

/// One entry of a server's event log (wire contract B.3): the frame clients got live, kept so a
/// reconnecting client can resume after `event_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub server_id: ServerId,
    pub event_id: EventId,
    pub kind: String,
    /// The JSON payload as sent.
    pub payload: String,
    pub created_at: Millis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_name_their_position_and_nothing_else() {
        assert_eq!(message_id(42), "msg_42");
        assert_eq!(message_seq("msg_42"), Some(42));
        for other in [
            "msg_042",
            "msg_0",
            "msg_-1",
            "msg_",
            "42",
            "msg_4x",
            "msg_99999999999999999999",
        ] {
            assert_eq!(message_seq(other), None, "{other}");
        }
    }
}
