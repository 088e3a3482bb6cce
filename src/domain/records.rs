//! What the domain asks storage to persist, and what storage hands back at start.
//!
//! Every [`Record`] is an idempotent upsert or insert-if-absent keyed by its entity's id, so a
//! batch that is retried after an ambiguous failure changes nothing the second time. One domain
//! command produces a `Vec<Record>` that is committed atomically (one `WriteOp::Apply`).

use std::collections::HashMap;

use super::identity::IdentityBinding;
use super::model::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Server(Server),
    Category(Category),
    DeleteCategory {
        id: String,
    },
    Channel(Channel),
    /// The whole membership row: role and every span (spans are replaced as a set).
    Membership(Membership),
    Profile(Profile),
    AvatarAsset(AvatarAsset),
    ClaimToken(ClaimToken),
    Device(Device),
    Session(Session),
    ReadAck(ReadAck),
    /// Insert; a message with the same id already stored is left as it is.
    Message(Message),
    MessageDeleted {
        id: String,
        deleted_at: Millis,
    },
    /// Insert; `(server_id, event_id)` already stored is left as it is.
    Event(StoredEvent),
    /// Upsert by `(server_id, kind, target)`.
    Moderation(Moderation),
    /// Upsert by id: an invite, with its use count and revocation.
    Invite(Invite),
    /// Upsert by (server, uid): a member's privacy in a server.
    Privacy(Privacy),
    /// Upsert by (server, uid): a user's profile in a server (cleared ones too).
    ServerProfile(ServerProfile),
    /// Insert by seq (append-only: an existing row is left as it is).
    Audit(AuditEntry),
    /// Upsert by id.
    Case(Case),
    /// Insert by id.
    ModAction(ModAction),
    /// Upsert by server.
    VotePolicy {
        server_id: String,
        policy: VotePolicy,
        updated_at: Millis,
    },
    /// Upsert by id (its status changes).
    Proposal(Proposal),
    /// Insert by (proposal, voter): one vote per voter, in the database too.
    Vote(Vote),
    /// Insert by case: a report's evidence, sealed (`crate::auth::evidence_key`).
    Evidence {
        case_id: String,
        server_id: String,
        sealed: String,
        created_at: Millis,
    },
    /// Delete by case: evidence past its keeping time.
    EvidenceDeleted {
        case_id: String,
    },
    /// Upsert by uid: an approved binding of a uid to a key, with who approved it.
    IdentityBinding(IdentityBinding),
    /// Insert-if-absent by ref: a validated KeyPackage (Part C).
    KeyPackage(super::keys::KeyPackageRow),
    /// Delete by ref: a last-resort package replaced by a new one.
    KeyPackageDeleted {
        key_package_ref: String,
    },
    /// Insert by id, and a one-time package's row marked claimed.
    KeyPackageClaim(super::keys::Claim),
    /// Upsert by channel: a group's epoch and public state.
    Group(super::keys::GroupRow),
    /// Insert by (channel, epoch): one commit per epoch, in the database too.
    Commit(super::keys::CommitRow),
    /// Upsert by (channel, uid, from_epoch).
    EpochSpan(super::keys::EpochSpan),
    /// Insert by (device, seq).
    MailboxItem(super::keys::MailboxItem),
    /// Delete a device's items up to the seq.
    MailboxAcked {
        device_id: String,
        up_to_seq: i64,
    },
    /// Mailbox items that arrived at or before `before` are deleted (past their lifetime).
    MailboxExpired {
        before: Millis,
    },
    /// A revoked device: its packages and mailbox are deleted.
    DevicePurged {
        device_id: String,
    },
    /// Upsert by uid.
    Backup(super::keys::Backup),
    /// The server has handed out event ids up to `event_id` (events that are not logged, such
    /// as new messages, are counted this way). Never moves backwards.
    LastEventId {
        server_id: String,
        event_id: EventId,
    },
}

/// Everything the domain keeps in memory, as loaded from storage at start (or after a failed
/// write, to get back in step with what is really committed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub servers: Vec<Server>,
    pub categories: Vec<Category>,
    pub channels: Vec<Channel>,
    pub memberships: Vec<Membership>,
    pub profiles: Vec<Profile>,
    pub avatar_assets: Vec<AvatarAsset>,
    /// Unused and unexpired only.
    pub claim_tokens: Vec<ClaimToken>,
    pub devices: Vec<Device>,
    /// Unrevoked and unexpired only.
    pub sessions: Vec<Session>,
    pub read_acks: Vec<ReadAck>,
    /// Moderation measures in force.
    pub moderation: Vec<Moderation>,
    /// Approved identity bindings, by uid.
    pub identity_bindings: Vec<IdentityBinding>,
    /// Invites not revoked and not expired.
    pub invites: Vec<Invite>,
    pub privacy: Vec<Privacy>,
    pub server_profiles: Vec<ServerProfile>,
    pub cases: Vec<Case>,
    pub mod_actions: Vec<ModAction>,
    pub vote_policies: Vec<(String, VotePolicy)>,
    pub proposals: Vec<Proposal>,
    pub votes: Vec<Vote>,
    /// Sealed evidence by case id.
    pub evidence: Vec<(String, String)>,
    /// The MLS delivery service's state (Part C).
    pub keys: super::keys::KeysSnapshot,
    /// Highest message seq ever stored (0 when none).
    pub last_seq: Seq,
    /// Highest moderation audit seq (0 when none).
    pub last_audit_seq: i64,
    /// Highest event id per server.
    pub last_event_ids: HashMap<String, EventId>,
    /// The newest events of each server (at most the resume window), oldest first.
    pub recent_events: Vec<StoredEvent>,
}

/// Which messages of a channel a reader may see (wire contract B.2), in the message order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    All,
    /// Only messages with `lo < seq <= hi` for one of the spans (`hi = None`: open-ended).
    Spans(Vec<(Seq, Option<Seq>)>),
    /// An end-to-end encrypted channel (wire contract C): of what `seqs` allows, only the
    /// messages of the epochs the reader was in the group (`lo <= epoch <= hi`, `hi = None`:
    /// still in it). A message without an epoch is not one of them.
    Epochs {
        seqs: Box<Visibility>,
        epochs: Vec<(u64, Option<u64>)>,
    },
}

impl Visibility {
    /// Whether a message at `seq`, of MLS epoch `epoch` (`None`: plaintext), is visible.
    pub fn allows(&self, seq: Seq, epoch: Option<u64>) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Spans(spans) => spans
                .iter()
                .any(|&(lo, hi)| seq > lo && hi.is_none_or(|hi| seq <= hi)),
            Visibility::Epochs { seqs, epochs } => {
                seqs.allows(seq, epoch)
                    && epoch.is_some_and(|e| {
                        epochs
                            .iter()
                            .any(|&(lo, hi)| e >= lo && hi.is_none_or(|hi| e <= hi))
                    })
            }
        }
    }

    /// [`Visibility::allows`] for a message.
    pub fn allows_message(&self, message: &Message) -> bool {
        self.allows(message.seq, message.epoch())
    }

    /// Whether nothing at all is visible.
    pub fn is_nothing(&self) -> bool {
        match self {
            Visibility::All => false,
            Visibility::Spans(spans) => spans.is_empty(),
            Visibility::Epochs { seqs, epochs } => epochs.is_empty() || seqs.is_nothing(),
        }
    }
}

/// A page request for a channel's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageQuery {
    pub channel_id: String,
    pub visibility: Visibility,
    /// Only messages with `seq < before` (older page).
    pub before: Option<Seq>,
    /// Only messages with `seq > after` (newer page). With both unset: the latest.
    pub after: Option<Seq>,
    pub limit: usize,
    /// Deleted messages are left out of pages.
    pub include_deleted: bool,
}

/// A page of history: messages oldest first, plus the messages they reply to (looked up by id
/// whether or not they are on the page, deleted or not) so reply previews can be built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessagePage {
    pub messages: Vec<Message>,
    /// Whether older visible messages exist before the first one returned.
    pub has_older: bool,
    pub reply_targets: Vec<Message>,
}
