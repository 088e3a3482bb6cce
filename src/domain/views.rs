//! The JSON shapes of the wire contract (Part A), built from domain entities. Field names are
//! exact; times are RFC 3339 UTC strings; URLs are absolute, built from the public base URL.
//! The same structs serve HTTP responses and realtime event payloads.

use serde::Serialize;

use super::model::*;

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-25T03:18:00.123Z`.
pub fn rfc3339(millis: Millis) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(millis as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// Where clients fetch blobs: `{base}/v1/attachments/{id}` and `{base}/v1/profile/avatar/{id}`.
#[derive(Debug, Clone)]
pub struct Urls {
    /// `OPENCHAT_PUBLIC_BASE_URL` without a trailing slash.
    pub base: String,
}

impl Urls {
    pub fn new(base: &str) -> Urls {
        Urls {
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    pub fn attachment(&self, attachment_id: &str) -> String {
        format!("{}/v1/attachments/{attachment_id}", self.base)
    }

    pub fn avatar(&self, asset_id: &str) -> String {
        format!("{}/v1/profile/avatar/{asset_id}", self.base)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DirectoryItem {
    pub server_id: String,
    pub display_name: String,
    pub description: String,
    pub banner_preset: String,
    pub icon_text: String,
    pub trust_state: &'static str,
    pub identity_handshake_strategy: &'static str,
    pub user_identifier_policy: &'static str,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServerCreated {
    pub server: DirectoryItem,
    pub created_by_uid: String,
    pub created_at: String,
    pub ownership_claim: OwnershipClaim,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OwnershipClaim {
    pub token: String,
    pub expires_at: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Claimed {
    pub server_id: String,
    pub owner_user_uid: String,
    pub claimed_at: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Settings {
    pub server_id: String,
    pub display_name: String,
    pub description: String,
    pub banner_preset: String,
    pub join_policy: crate::domain::model::JoinPolicy,
}

/// `PUT settings` answer and the `chat.server.updated` payload.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SettingsUpdated {
    pub server_id: String,
    pub display_name: String,
    pub description: String,
    pub banner_preset: String,
    pub join_policy: crate::domain::model::JoinPolicy,
    pub updated_by_uid: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Left {
    pub server_id: String,
    pub user_uid: String,
    pub left: bool,
    pub left_at: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MemberItem {
    pub id: String,
    pub name: String,
    pub status: &'static str,
    pub role: &'static str,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Members {
    pub server_id: String,
    pub members: Vec<MemberItem>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChannelItem {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub history_visibility: &'static str,
    pub encryption: &'static str,
    /// Who sees it and who posts in it (Part D).
    pub permissions: ChannelPermissions,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct ChannelPermissions {
    /// `null`: every member; otherwise the lowest role that sees the channel.
    pub view_min_role: Option<&'static str>,
    /// `null`: everyone who sees it; otherwise the lowest role that posts in it.
    pub post_min_role: Option<&'static str>,
    /// Voice: whether members speak (false: listen-only tickets for members).
    pub member_speak: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    pub label: String,
    pub kind: &'static str,
    pub channels: Vec<ChannelItem>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Groups {
    pub groups: Vec<Group>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChannelCreated {
    pub server_id: String,
    pub group_id: String,
    pub channel: ChannelItem,
    pub created_by_uid: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CategoryCreated {
    pub server_id: String,
    pub group: Group,
    pub created_by_uid: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CategoryUpdated {
    pub server_id: String,
    pub group: Group,
    pub updated_by_uid: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LayoutUpdated {
    pub server_id: String,
    pub groups: Vec<Group>,
    pub updated_by_uid: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReplyTo {
    pub message_id: String,
    pub author_uid: Option<String>,
    pub preview_text: String,
    pub is_unavailable: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AttachmentItem {
    pub attachment_id: String,
    pub file_name: String,
    pub url: String,
    pub width: u32,
    pub height: u32,
    pub content_type: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct ActionPermissions {
    pub can_react: bool,
    pub can_reply: bool,
    pub can_mark_unread: bool,
    pub can_pin: bool,
    /// Left out when the reader is unknown (an anonymous read, the shared realtime frame): the
    /// client takes an explicit `false` as final, and without the field falls back to "my own
    /// message" (wire contract A.5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_delete: Option<bool>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MessageItem {
    pub id: String,
    pub channel_id: String,
    pub server_id: String,
    pub author_uid: String,
    /// `None` for encrypted messages, which carry `envelope` instead.
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envelope: Option<crate::domain::model::Envelope>,
    pub created_at: String,
    pub reply_to: Option<ReplyTo>,
    pub mentions: Vec<Mention>,
    pub attachments: Vec<AttachmentItem>,
    pub action_permissions: ActionPermissions,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MessageOut {
    pub message: MessageItem,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MessageList {
    pub messages: Vec<MessageItem>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MessageDeleted {
    pub deleted: bool,
    pub server_id: String,
    pub channel_id: String,
    pub message_id: String,
    pub deleted_by_uid: String,
    pub deleted_at: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReadAckItem {
    pub channel_id: String,
    pub user_uid: String,
    pub last_read_message_id: Option<String>,
    pub acked_at: Option<String>,
    pub cursor_index: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReadAckOut {
    pub channel_id: String,
    pub read_ack: ReadAckItem,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<bool>,
}

/// An invite as listed (Part D): never its code.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InviteItem {
    pub invite_id: String,
    pub server_id: crate::domain::ids::ServerId,
    pub created_by_uid: crate::domain::ids::UserUid,
    pub expires_at: String,
    pub max_uses: u32,
    pub use_count: u32,
    pub created_at: String,
}

/// `POST /v1/servers/{id}/invites`: the invite and its code, shown this once.
#[derive(Clone, Serialize, PartialEq, Eq)]
pub struct InviteCreated {
    #[serde(flatten)]
    pub item: InviteItem,
    pub code: String,
}

/// Without the code: a `{:?}` in a log line must not hand out a way in.
impl std::fmt::Debug for InviteCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InviteCreated")
            .field("item", &self.item)
            .finish_non_exhaustive()
    }
}

/// `GET /v1/servers/{id}/invites`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InvitePage {
    pub invites: Vec<InviteItem>,
    pub next_cursor: Option<String>,
}

/// `POST /v1/invites/{code}/redeem`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Redeemed {
    pub server_id: crate::domain::ids::ServerId,
    pub membership_state: &'static str,
}

/// `PUT /v1/servers/{id}/read-acks` (wire contract A.10): one item per requested channel.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BulkReadAcksOut {
    pub server_id: crate::domain::ids::ServerId,
    pub read_acks: Vec<ReadAckItem>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MentionCandidate {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub token: String,
    pub target_id: String,
    pub display_text: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MentionResults {
    pub results: Vec<MentionCandidate>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProfileItem {
    pub user_uid: String,
    pub display_name: String,
    pub avatar_mode: &'static str,
    pub avatar_preset_id: Option<String>,
    pub avatar_asset_id: Option<String>,
    pub avatar_url: Option<String>,
    pub profile_version: i64,
    pub updated_at: String,
}

/// A member and its role (`GET|PUT /v1/servers/{id}/roles`, Part D).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RoleItem {
    pub user_uid: String,
    pub role: &'static str,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Roles {
    pub server_id: String,
    pub members: Vec<RoleItem>,
}

/// A moderation case (Part D). Its target, when it may see it, sees neither who reported it
/// nor the reporter's text.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CaseItem {
    pub case_id: String,
    pub server_id: String,
    pub reporter_uid: Option<String>,
    pub target_uid: String,
    pub channel_id: Option<String>,
    pub message_id: Option<String>,
    pub reason_code: String,
    pub reason_text: Option<String>,
    pub status: &'static str,
    pub created_at: String,
    pub closed_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CasePage {
    pub cases: Vec<CaseItem>,
    pub next_cursor: Option<String>,
}

/// `GET …/moderation/cases/{case_id}`: the case, then its actions and proposals.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CaseDetail {
    #[serde(flatten)]
    pub case: CaseItem,
    pub actions: Vec<ActionItem>,
    pub proposals: Vec<ProposalItem>,
    /// The evidence the reporter disclosed, opened for the reporter and the staff (set by the
    /// API, which holds the key; `null` otherwise).
    pub evidence: Option<EvidenceText>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EvidenceText {
    pub text: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ActionItem {
    pub action_id: String,
    pub case_id: String,
    pub action_type: &'static str,
    pub target_uid: String,
    pub channel_id: Option<String>,
    pub duration_seconds: Option<i64>,
    pub expires_at: Option<String>,
    pub enforced_by_uid: String,
    pub enforced_at: String,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct VoteTally {
    pub yes: u32,
    pub no: u32,
    pub abstain: u32,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProposalItem {
    pub proposal_id: String,
    pub case_id: String,
    pub action_type: &'static str,
    pub duration_seconds: Option<i64>,
    pub proposed_by_uid: String,
    pub threshold: u32,
    pub quorum: u32,
    pub expires_at: String,
    pub status: &'static str,
    pub votes: VoteTally,
}

/// `GET|PUT …/moderation/policy`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PolicyItem {
    pub server_id: String,
    pub threshold: u32,
    pub quorum: u32,
    pub window_seconds: i64,
}

/// `GET|PUT /v1/servers/{id}/privacy/me` (Part D).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PrivacyItem {
    pub server_id: String,
    pub user_uid: String,
    pub presence_visibility: &'static str,
    pub mention_permission: &'static str,
    /// 0 until the user saves its settings; `If-Match` names it.
    pub version: i64,
    pub updated_at: Option<String>,
}

/// `GET|PUT|DELETE /v1/servers/{id}/profile/me` (Part D): the profile members of that server
/// see, which is the override when there is one and the instance-wide profile otherwise. Its
/// `profile_version` counts changes of both (the sum of their versions), so it rises with
/// every change a member of the server could see, the delete of an override included.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServerProfileItem {
    pub server_id: String,
    #[serde(flatten)]
    pub profile: ProfileItem,
    /// Whether the server has its own profile for the user.
    pub overridden: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProfileOut {
    pub profile: ProfileItem,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Profiles {
    pub profiles: Vec<ProfileItem>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AvatarUploaded {
    pub avatar_asset_id: String,
    pub avatar_url: String,
    pub width: u32,
    pub height: u32,
    pub content_type: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Challenge {
    pub challenge: String,
    pub expires_at: String,
}

#[derive(Clone, Serialize, PartialEq, Eq)]
pub struct SessionOut {
    pub token: String,
    pub user_uid: String,
    pub device_id: String,
    pub expires_at: String,
}

/// Without the token: a `{:?}` in a log line must not hand out a session.
impl std::fmt::Debug for SessionOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionOut")
            .field("token", &"<redacted>")
            .field("user_uid", &self.user_uid)
            .field("device_id", &self.device_id)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SessionInfo {
    pub user_uid: String,
    pub device_id: String,
    pub expires_at: String,
}

impl ProfileItem {
    pub fn of(profile: &Profile, urls: &Urls) -> ProfileItem {
        ProfileItem {
            user_uid: profile.user_uid.clone().into(),
            display_name: profile.display_name.clone(),
            avatar_mode: profile.avatar_mode.as_str(),
            avatar_preset_id: profile.avatar_preset_id.clone(),
            avatar_asset_id: profile.avatar_asset_id.clone(),
            avatar_url: match (profile.avatar_mode, &profile.avatar_asset_id) {
                (AvatarMode::Uploaded, Some(asset)) => Some(urls.avatar(asset)),
                _ => None,
            },
            profile_version: profile.version,
            updated_at: rfc3339(profile.updated_at),
        }
    }
}

impl ChannelItem {
    pub fn of(channel: &Channel) -> ChannelItem {
        ChannelItem {
            id: channel.id.clone().into(),
            name: channel.name.clone(),
            kind: channel.kind.as_str(),
            history_visibility: channel.history_visibility.as_str(),
            encryption: channel.encryption.as_str(),
            permissions: ChannelPermissions {
                view_min_role: channel.access.view_min_role.map(Role::as_str),
                post_min_role: channel.access.post_min_role.map(Role::as_str),
                member_speak: channel.access.member_speak,
            },
        }
    }
}

impl AttachmentItem {
    pub fn of(attachment: &Attachment, urls: &Urls) -> AttachmentItem {
        AttachmentItem {
            attachment_id: attachment.attachment_id.clone(),
            file_name: attachment.file_name.clone(),
            url: urls.attachment(&attachment.attachment_id),
            width: attachment.width,
            height: attachment.height,
            content_type: attachment.content_type.clone(),
            bytes: attachment.bytes,
        }
    }
}

/// Opaque history cursor: the message's position in the instance order.
pub fn encode_cursor(seq: Seq) -> String {
    format!("c{seq}")
}

pub fn decode_cursor(cursor: &str) -> Option<Seq> {
    cursor
        .strip_prefix('c')?
        .parse::<Seq>()
        .ok()
        .filter(|s| *s >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(rfc3339(1_714_564_800_123), "2024-05-01T12:00:00.123Z");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as Millis;
        let parsed = time::OffsetDateTime::parse(
            &rfc3339(now),
            &time::format_description::well_known::Rfc3339,
        );
        assert!(parsed.is_ok());
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode_cursor(&encode_cursor(42)), Some(42));
        assert_eq!(decode_cursor("42"), None);
        assert_eq!(decode_cursor("c-1"), None);
        assert_eq!(decode_cursor("cabc"), None);
    }

    #[test]
    fn urls_are_absolute_and_have_no_double_slash() {
        let urls = Urls::new("http://example.test:8080/");
        assert_eq!(
            urls.attachment("att_1"),
            "http://example.test:8080/v1/attachments/att_1"
        );
    }
}
