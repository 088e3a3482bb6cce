//! The commands the sequencer takes: plain data, one type per command, each naming its
//! answer. A shard builds one from a parsed request and hands it to the authority, which runs
//! it against the state in arrival order (`crate::authority::Authority::command`); nothing but
//! these types crosses into the authority thread. Reads that need no ordering (session checks,
//! history access of a member, profiles, the directory) are not commands: they read the state
//! where they are asked (`Authority::read`).
//!
//! Each `run` is the command's rule, written once in the sub-store that owns it; here it is
//! only named, with its inputs owned so it can travel between threads.

pub mod keys;

use super::{
    ActionAsk, Actor, Admission, Community, HistoryAccess, NewMessage, Outcome, PrivacyChange,
    ProfileChange, Report, SignIn,
};
use crate::domain::error::DomainError;
use crate::domain::identity::BindingView;
use crate::domain::ids::{ChannelId, ServerId, UserUid};
use crate::domain::model::{
    AvatarAsset, ChannelKind, Encryption, EventId, HistoryVisibility, JoinPolicy, Message, Millis,
    Role, VotePolicy, VoteValue,
};
use crate::domain::views;
use crate::rtc::ticket::{Claims, Permissions};

/// A command to the community sequencer.
pub trait Command: Send + 'static {
    /// What a caller is answered once the command's records are committed.
    type Output: Send + 'static;
    /// The command's name in logs and traces.
    const NAME: &'static str;
    /// Whether it changes durable state. Commands that only touch memory (rate-limit windows,
    /// used tickets) still run while the state reloads after a failed write; the others are
    /// refused then (503, retryable), as their records could not be trusted.
    const DURABLE: bool = true;

    fn run(
        self,
        community: &mut Community,
        now: Millis,
    ) -> Result<Outcome<Self::Output>, DomainError>;
}

/// `POST /v1/auth/session`: a verified sign-in becomes a bearer session.
#[derive(Debug, Clone)]
pub struct OpenSession {
    pub sign_in: SignIn,
}

impl Command for OpenSession {
    type Output = views::SessionOut;
    const NAME: &'static str = "open_session";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.open_session(&self.sign_in, now)
    }
}

/// `POST /v1/servers/{id}/sessions` (wire contract A.10): the same sign-in, for a server.
#[derive(Debug, Clone)]
pub struct OpenServerSession {
    pub server_id: ServerId,
    pub sign_in: SignIn,
}

impl Command for OpenServerSession {
    type Output = views::SessionOut;
    const NAME: &'static str = "open_server_session";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.open_server_session(&self.server_id, &self.sign_in, now)
    }
}

/// `DELETE /v1/auth/session`.
#[derive(Debug, Clone)]
pub struct RevokeSession {
    pub token: String,
}

impl Command for RevokeSession {
    type Output = ();
    const NAME: &'static str = "revoke_session";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<()>, DomainError> {
        c.revoke_session(&self.token, now)
    }
}

/// A session revoked on another node of the cluster (see `Community::forget_revoked_session`).
#[derive(Debug, Clone)]
pub struct ForgetRevokedSession {
    pub token_hash: String,
}

impl Command for ForgetRevokedSession {
    type Output = ();
    const NAME: &'static str = "forget_revoked_session";
    // Memory only: the revoking node stored the row.
    const DURABLE: bool = false;
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<()>, DomainError> {
        c.forget_revoked_session(&self.token_hash, now)
    }
}

/// `POST /v1/servers/{id}/identity-bindings`: the owner approves a uid for a key.
#[derive(Debug, Clone)]
pub struct ApproveBinding {
    pub actor: Actor,
    pub server_id: ServerId,
    pub user_uid: UserUid,
    pub public_key: String,
}

impl Command for ApproveBinding {
    type Output = BindingView;
    const NAME: &'static str = "approve_binding";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<BindingView>, DomainError> {
        c.approve_binding(
            &self.actor,
            &self.server_id,
            &self.user_uid,
            &self.public_key,
            now,
        )
    }
}

/// `POST /v1/servers`.
#[derive(Debug, Clone)]
pub struct CreateServer {
    pub actor: Actor,
    pub display_name: String,
    pub description: String,
    pub banner_preset: String,
}

impl Command for CreateServer {
    type Output = views::ServerCreated;
    const NAME: &'static str = "create_server";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.create_server(
            &self.actor,
            &self.display_name,
            &self.description,
            &self.banner_preset,
            now,
        )
    }
}

/// `POST /v1/servers/{id}/ownership:claim`.
#[derive(Debug, Clone)]
pub struct ClaimOwnership {
    pub actor: Actor,
    pub server_id: ServerId,
    pub token: String,
}

impl Command for ClaimOwnership {
    type Output = views::Claimed;
    const NAME: &'static str = "claim_ownership";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.claim_ownership(&self.actor, &self.server_id, &self.token, now)
    }
}

/// `GET /v1/servers/{id}/settings` (a command: a first contact joins).
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub actor: Actor,
    pub server_id: ServerId,
}

impl Command for ServerSettings {
    type Output = views::Settings;
    const NAME: &'static str = "server_settings";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.settings_of(&self.actor, &self.server_id, now)
    }
}

/// `PATCH /v1/servers/{id}/settings`.
#[derive(Debug, Clone)]
pub struct UpdateSettings {
    pub actor: Actor,
    pub server_id: ServerId,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub banner_preset: Option<String>,
    pub join_policy: Option<JoinPolicy>,
}

impl Command for UpdateSettings {
    type Output = views::SettingsUpdated;
    const NAME: &'static str = "update_settings";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        let change = super::SettingsChange {
            display_name: self.display_name.as_deref(),
            description: self.description.as_deref(),
            banner_preset: self.banner_preset.as_deref(),
            join_policy: self.join_policy,
        };
        c.update_settings(&self.actor, &self.server_id, &change, now)
    }
}

/// `DELETE /v1/servers/{id}/membership`.
#[derive(Debug, Clone)]
pub struct Leave {
    pub actor: Actor,
    pub server_id: ServerId,
}

impl Command for Leave {
    type Output = views::Left;
    const NAME: &'static str = "leave";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.leave(&self.actor, &self.server_id, now)
    }
}

/// Joins or re-admits (`PUT /v1/servers/{id}/membership`, a voice join).
#[derive(Debug, Clone)]
pub struct Admit {
    pub actor: Actor,
    pub server_id: ServerId,
    pub how: Admission,
}

impl Command for Admit {
    type Output = Role;
    const NAME: &'static str = "admit";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Role>, DomainError> {
        c.admit(&self.actor, &self.server_id, self.how, now)
    }
}

/// A realtime socket opening: its session must still be valid (when it came with one), and
/// the uid is admitted (`Connect`). Answers the server's last event id when the admission made
/// it a member just now: events before it are not the new member's to replay.
#[derive(Debug, Clone)]
pub struct OpenRealtime {
    pub actor: Actor,
    pub server_id: ServerId,
    pub token: Option<String>,
}

impl Command for OpenRealtime {
    type Output = Option<EventId>;
    const NAME: &'static str = "open_realtime";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Option<EventId>>, DomainError> {
        if let Some(token) = &self.token
            && c.authenticate(token, now).is_none()
        {
            return Err(DomainError::InvalidToken);
        }
        let admitted = c.admit(&self.actor, &self.server_id, Admission::Connect, now)?;
        let joined_after = (!admitted.records.is_empty()).then(|| c.last_event_id(&self.server_id));
        Ok(admitted.map(|_| joined_after))
    }
}

/// `GET /v1/servers/{id}/members`.
#[derive(Debug, Clone)]
pub struct ListMembers {
    pub actor: Option<Actor>,
    pub server_id: ServerId,
}

impl Command for ListMembers {
    type Output = views::Members;
    const NAME: &'static str = "list_members";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.members(self.actor.as_ref(), &self.server_id, now)
    }
}

/// `GET /v1/servers/{id}/channels`.
#[derive(Debug, Clone)]
pub struct ListChannels {
    pub actor: Option<Actor>,
    pub server_id: ServerId,
}

impl Command for ListChannels {
    type Output = views::Groups;
    const NAME: &'static str = "list_channels";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.channels_of(self.actor.as_ref(), &self.server_id, now)
    }
}

/// `POST /v1/servers/{id}/channels`.
#[derive(Debug, Clone)]
pub struct CreateChannel {
    pub actor: Actor,
    pub server_id: ServerId,
    pub name: String,
    pub kind: ChannelKind,
    pub group_id: Option<String>,
    pub visibility: Option<HistoryVisibility>,
    pub encryption: Option<Encryption>,
}

impl Command for CreateChannel {
    type Output = views::ChannelCreated;
    const NAME: &'static str = "create_channel";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.create_channel(
            &self.actor,
            &self.server_id,
            &self.name,
            self.kind,
            self.group_id.as_deref(),
            self.visibility,
            self.encryption,
            now,
        )
    }
}

/// `POST /v1/servers/{id}/categories`.
#[derive(Debug, Clone)]
pub struct CreateCategory {
    pub actor: Actor,
    pub server_id: ServerId,
    pub name: String,
    pub kind: ChannelKind,
}

impl Command for CreateCategory {
    type Output = views::CategoryCreated;
    const NAME: &'static str = "create_category";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.create_category(&self.actor, &self.server_id, &self.name, self.kind, now)
    }
}

/// `PATCH /v1/servers/{id}/categories/{group_id}`.
#[derive(Debug, Clone)]
pub struct RenameCategory {
    pub actor: Actor,
    pub server_id: ServerId,
    pub group_id: String,
    pub name: String,
}

impl Command for RenameCategory {
    type Output = views::CategoryUpdated;
    const NAME: &'static str = "rename_category";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.rename_category(
            &self.actor,
            &self.server_id,
            &self.group_id,
            &self.name,
            now,
        )
    }
}

/// `DELETE /v1/servers/{id}/categories/{group_id}`.
#[derive(Debug, Clone)]
pub struct DeleteCategory {
    pub actor: Actor,
    pub server_id: ServerId,
    pub group_id: String,
}

impl Command for DeleteCategory {
    type Output = views::LayoutUpdated;
    const NAME: &'static str = "delete_category";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.delete_category(&self.actor, &self.server_id, &self.group_id, now)
    }
}

/// `PUT /v1/servers/{id}/layout`: each group with its channels, in order.
#[derive(Debug, Clone)]
pub struct SetLayout {
    pub actor: Actor,
    pub server_id: ServerId,
    pub groups: Vec<(String, Vec<String>)>,
}

impl Command for SetLayout {
    type Output = views::LayoutUpdated;
    const NAME: &'static str = "set_layout";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.set_layout(&self.actor, &self.server_id, &self.groups, now)
    }
}

/// What a reader may see of a channel when deciding it may change the state: a first contact
/// of an open server joins it. Readers already decided use [`Community::history_access_now`]
/// without a command.
#[derive(Debug, Clone)]
pub struct OpenHistory {
    pub actor: Option<Actor>,
    pub channel_id: ChannelId,
}

impl Command for OpenHistory {
    type Output = HistoryAccess;
    const NAME: &'static str = "open_history";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<HistoryAccess>, DomainError> {
        c.history_access(self.actor.as_ref(), &self.channel_id, now)
    }
}

/// `POST /v1/channels/{id}/messages`.
#[derive(Debug, Clone)]
pub struct PostMessage {
    pub actor: Actor,
    pub channel_id: ChannelId,
    pub new: NewMessage,
}

impl Command for PostMessage {
    type Output = views::MessageItem;
    const NAME: &'static str = "post_message";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.post_message(&self.actor, &self.channel_id, self.new, now)
    }
}

/// `DELETE /v1/channels/{id}/messages/{message_id}`, with the stored message.
#[derive(Debug, Clone)]
pub struct DeleteMessage {
    pub actor: Actor,
    pub channel_id: ChannelId,
    pub message: Message,
}

impl Command for DeleteMessage {
    type Output = views::MessageDeleted;
    const NAME: &'static str = "delete_message";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.delete_message(&self.actor, &self.channel_id, &self.message, now)
    }
}

/// `GET /v1/channels/{id}/read-ack`.
#[derive(Debug, Clone)]
pub struct ReadAck {
    pub actor: Actor,
    pub channel_id: ChannelId,
}

impl Command for ReadAck {
    type Output = views::ReadAckOut;
    const NAME: &'static str = "read_ack";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.read_ack(&self.actor, &self.channel_id, now)
    }
}

/// `PUT /v1/channels/{id}/read-ack`, with the stored message it names.
#[derive(Debug, Clone)]
pub struct PutReadAck {
    pub actor: Actor,
    pub channel_id: ChannelId,
    pub message: Message,
}

impl Command for PutReadAck {
    type Output = views::ReadAckOut;
    const NAME: &'static str = "put_read_ack";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.put_read_ack(&self.actor, &self.channel_id, &self.message, now)
    }
}

/// `PUT /v1/servers/{id}/read-acks`, with the stored message each cursor names (`None`:
/// nothing readable in that channel).
#[derive(Debug, Clone)]
pub struct PutReadAcks {
    pub actor: Actor,
    pub server_id: ServerId,
    pub acks: Vec<(ChannelId, Option<Message>)>,
}

impl Command for PutReadAcks {
    type Output = views::BulkReadAcksOut;
    const NAME: &'static str = "put_read_acks";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.put_read_acks(&self.actor, &self.server_id, &self.acks, now)
    }
}

/// `POST /v1/servers/{id}/invites`.
#[derive(Debug, Clone)]
pub struct CreateInvite {
    pub actor: Actor,
    pub server_id: ServerId,
    pub expires_at: Millis,
    pub max_uses: u32,
}

impl Command for CreateInvite {
    type Output = views::InviteCreated;
    const NAME: &'static str = "create_invite";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.create_invite(
            &self.actor,
            &self.server_id,
            self.expires_at,
            self.max_uses,
            now,
        )
    }
}

/// `DELETE /v1/servers/{id}/invites/{invite_id}`.
#[derive(Debug, Clone)]
pub struct RevokeInvite {
    pub actor: Actor,
    pub server_id: ServerId,
    pub invite_id: String,
}

impl Command for RevokeInvite {
    type Output = ();
    const NAME: &'static str = "revoke_invite";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<()>, DomainError> {
        c.revoke_invite(&self.actor, &self.server_id, &self.invite_id, now)
    }
}

/// `POST /v1/invites/{code}/redeem`. The code is a secret: its `Debug` leaves it out.
#[derive(Clone)]
pub struct RedeemInvite {
    pub actor: Actor,
    pub code: String,
}

impl std::fmt::Debug for RedeemInvite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedeemInvite")
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

impl Command for RedeemInvite {
    type Output = views::Redeemed;
    const NAME: &'static str = "redeem_invite";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.redeem_invite(&self.actor, &self.code, now)
    }
}

/// `GET /v1/channels/{id}/mentions`.
#[derive(Debug, Clone)]
pub struct ResolveMentions {
    pub actor: Actor,
    pub channel_id: ChannelId,
    pub query: String,
    pub limit: usize,
}

impl Command for ResolveMentions {
    type Output = views::MentionResults;
    const NAME: &'static str = "resolve_mentions";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.resolve_mentions(&self.actor, &self.channel_id, &self.query, self.limit, now)
    }
}

/// `PUT /v1/profile/me`.
#[derive(Debug, Clone)]
pub struct PutProfile {
    pub actor: Actor,
    pub change: ProfileChange,
}

impl Command for PutProfile {
    type Output = views::ProfileItem;
    const NAME: &'static str = "put_profile";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.put_profile(&self.actor, self.change, now)
    }
}

/// `PUT /v1/servers/{id}/privacy/me`.
#[derive(Debug, Clone)]
pub struct PutPrivacy {
    pub actor: Actor,
    pub server_id: ServerId,
    pub change: PrivacyChange,
}

impl Command for PutPrivacy {
    type Output = views::PrivacyItem;
    const NAME: &'static str = "put_privacy";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.put_privacy(&self.actor, &self.server_id, self.change, now)
    }
}

/// `PUT /v1/servers/{id}/profile/me`.
#[derive(Debug, Clone)]
pub struct PutServerProfile {
    pub actor: Actor,
    pub server_id: ServerId,
    pub change: ProfileChange,
}

impl Command for PutServerProfile {
    type Output = views::ServerProfileItem;
    const NAME: &'static str = "put_server_profile";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.put_server_profile(&self.actor, &self.server_id, self.change, now)
    }
}

/// `DELETE /v1/servers/{id}/profile/me`.
#[derive(Debug, Clone)]
pub struct DeleteServerProfile {
    pub actor: Actor,
    pub server_id: ServerId,
    pub if_match: Option<i64>,
}

impl Command for DeleteServerProfile {
    type Output = views::ServerProfileItem;
    const NAME: &'static str = "delete_server_profile";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.delete_server_profile(&self.actor, &self.server_id, self.if_match, now)
    }
}

/// An avatar image stored and checked by the caller becomes an asset.
#[derive(Debug, Clone)]
pub struct AddAvatarAsset {
    pub asset: AvatarAsset,
}

impl Command for AddAvatarAsset {
    type Output = views::AvatarUploaded;
    const NAME: &'static str = "add_avatar_asset";
    fn run(self, c: &mut Community, _: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        Ok(c.add_avatar_asset(self.asset))
    }
}

/// Spends one of the uid's write tokens (uploads ask before they store the bytes).
#[derive(Debug, Clone)]
pub struct TakeWriteToken {
    pub uid: UserUid,
}

impl Command for TakeWriteToken {
    type Output = ();
    const NAME: &'static str = "take_write_token";
    const DURABLE: bool = false;
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<()>, DomainError> {
        c.take_write_token(&self.uid, now).map(Outcome::pure)
    }
}

/// `POST /v1/rtc/join-ticket`: remembers the signed ticket so a leave, kick, ban or revoke
/// voids it; answers the permissions it carries.
#[derive(Debug, Clone)]
pub struct GrantTicket {
    pub actor: Actor,
    pub server_id: ServerId,
    pub channel_id: ChannelId,
    pub jti: String,
    pub exp: i64,
}

impl Command for GrantTicket {
    type Output = Permissions;
    const NAME: &'static str = "grant_ticket";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Permissions>, DomainError> {
        c.grant_ticket(
            &self.actor,
            &self.server_id,
            &self.channel_id,
            &self.jti,
            self.exp,
            now,
        )
    }
}

/// `rtc.join`: a ticket whose signature the caller checked is used, once.
#[derive(Debug, Clone)]
pub struct RedeemTicket {
    pub claims: Claims,
}

impl Command for RedeemTicket {
    type Output = ();
    const NAME: &'static str = "redeem_ticket";
    const DURABLE: bool = false;
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<()>, DomainError> {
        c.redeem_ticket(&self.claims, now).map(Outcome::pure)
    }
}

/// `PUT /v1/servers/{id}/roles {user_uid, role}`.
#[derive(Debug, Clone)]
pub struct SetRole {
    pub actor: Actor,
    pub server_id: ServerId,
    pub target_uid: UserUid,
    pub role: Role,
}

impl Command for SetRole {
    type Output = views::RoleItem;
    const NAME: &'static str = "set_role";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.set_role(
            &self.actor,
            &self.server_id,
            &self.target_uid,
            self.role,
            now,
        )
    }
}

/// `PUT /v1/servers/{id}/channels/{channel_id}/permissions`.
#[derive(Debug, Clone)]
pub struct SetChannelAccess {
    pub actor: Actor,
    pub server_id: ServerId,
    pub channel_id: ChannelId,
    pub access: crate::domain::model::ChannelAccess,
}

impl Command for SetChannelAccess {
    type Output = views::LayoutUpdated;
    const NAME: &'static str = "set_channel_access";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.set_channel_access(
            &self.actor,
            &self.server_id,
            &self.channel_id,
            self.access,
            now,
        )
    }
}

/// `PUT /v1/servers/{id}/moderation/policy`.
#[derive(Debug, Clone)]
pub struct PutVotePolicy {
    pub actor: Actor,
    pub server_id: ServerId,
    pub policy: VotePolicy,
}

impl Command for PutVotePolicy {
    type Output = views::PolicyItem;
    const NAME: &'static str = "put_vote_policy";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.put_vote_policy(&self.actor, &self.server_id, self.policy, now)
    }
}

/// `POST /v1/servers/{id}/moderation/cases`.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub actor: Actor,
    pub server_id: ServerId,
    pub report: Report,
}

impl Command for FileReport {
    type Output = views::CaseItem;
    const NAME: &'static str = "report";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.report(&self.actor, &self.server_id, self.report, now)
    }
}

/// `POST …/cases/{case_id}/actions/immediate`.
#[derive(Debug, Clone)]
pub struct ActNow {
    pub actor: Actor,
    pub server_id: ServerId,
    pub case_id: String,
    pub ask: ActionAsk,
}

impl Command for ActNow {
    type Output = views::ActionItem;
    const NAME: &'static str = "act_now";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.act_now(&self.actor, &self.server_id, &self.case_id, self.ask, now)
    }
}

/// `POST …/cases/{case_id}/actions/propose`.
#[derive(Debug, Clone)]
pub struct Propose {
    pub actor: Actor,
    pub server_id: ServerId,
    pub case_id: String,
    pub ask: ActionAsk,
}

impl Command for Propose {
    type Output = views::ProposalItem;
    const NAME: &'static str = "propose";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.propose(&self.actor, &self.server_id, &self.case_id, self.ask, now)
    }
}

/// `POST …/cases/{case_id}/votes`.
#[derive(Debug, Clone)]
pub struct CastVote {
    pub actor: Actor,
    pub server_id: ServerId,
    pub case_id: String,
    pub value: VoteValue,
}

impl Command for CastVote {
    type Output = views::ProposalItem;
    const NAME: &'static str = "vote";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<Self::Output>, DomainError> {
        c.vote(&self.actor, &self.server_id, &self.case_id, self.value, now)
    }
}

/// Removes a member from a server at once (moderator and up, over a lower rank).
#[derive(Debug, Clone)]
pub struct Kick {
    pub actor: Actor,
    pub server_id: ServerId,
    pub target_uid: UserUid,
}

impl Command for Kick {
    type Output = ();
    const NAME: &'static str = "kick";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<()>, DomainError> {
        c.kick(&self.actor, &self.server_id, &self.target_uid, now)
    }
}

/// Bans a member from a server, until a time or for good (`until: None`).
#[derive(Debug, Clone)]
pub struct Ban {
    pub actor: Actor,
    pub server_id: ServerId,
    pub target_uid: UserUid,
    pub until: Option<Millis>,
}

impl Command for Ban {
    type Output = ();
    const NAME: &'static str = "ban";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<()>, DomainError> {
        c.ban(
            &self.actor,
            &self.server_id,
            &self.target_uid,
            self.until,
            now,
        )
    }
}

/// Silences a member of a server until a time.
#[derive(Debug, Clone)]
pub struct Timeout {
    pub actor: Actor,
    pub server_id: ServerId,
    pub target_uid: UserUid,
    pub until: Millis,
}

impl Command for Timeout {
    type Output = ();
    const NAME: &'static str = "timeout";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<()>, DomainError> {
        c.timeout(
            &self.actor,
            &self.server_id,
            &self.target_uid,
            self.until,
            now,
        )
    }
}

/// Locks (or unlocks) a channel for posting.
#[derive(Debug, Clone)]
pub struct LockChannel {
    pub actor: Actor,
    pub channel_id: ChannelId,
    pub locked: bool,
}

impl Command for LockChannel {
    type Output = ();
    const NAME: &'static str = "lock_channel";
    fn run(self, c: &mut Community, now: Millis) -> Result<Outcome<()>, DomainError> {
        c.lock_channel(&self.actor, &self.channel_id, self.locked, now)
    }
}
