//! Writing the community domain: what each [`Record`] does to the tables.
//!
//! Records other than messages and events become one or more single-row statements, run at
//! once, in order ([`apply_records`]). Messages and events are only collected: the engine inserts
//! all of a batch's messages with one multi-row statement (and the events with another) after
//! every other record of the batch, so the hot path — posting — costs a constant number of
//! statements per group commit however many messages it carries. That reordering is safe
//! because nothing else in a batch reads or changes a message or event inserted in the same
//! batch (a `MessageDeleted` always follows the committed message).
//!
//! Every statement is idempotent: upserts set every column from the record, inserts of messages
//! and events do nothing when the row exists, a membership replaces its span set, deletions of
//! absent rows delete nothing. A batch retried after an ambiguous failure changes nothing.

use crate::domain::model::{Content, Envelope, EventId, Message, StoredEvent};
use crate::domain::records::Record;

use super::StorageError;
use super::sql::{Param, SqlConn, Statement};

/// The rows one group commit inserts in bulk, borrowed from its `Apply` ops, in op order.
#[derive(Debug, Default)]
pub(super) struct Bulk<'a> {
    pub(super) messages: Vec<&'a Message>,
    pub(super) events: Vec<&'a StoredEvent>,
    /// Highest `LastEventId` per server in the batch: one update per server, not per message.
    pub(super) last_event_ids: std::collections::HashMap<&'a str, EventId>,
}

impl<'a> Bulk<'a> {
    /// Collects `record` when it is one of the bulk kinds (message, event, event counter);
    /// `false` for a record that needs its own statement.
    pub(super) fn take(&mut self, record: &'a Record) -> bool {
        match record {
            Record::Message(message) => self.messages.push(message),
            Record::Event(event) => self.events.push(event),
            Record::LastEventId {
                server_id,
                event_id,
            } => {
                let highest = self
                    .last_event_ids
                    .entry(server_id.as_str())
                    .or_insert(EventId::NONE);
                *highest = (*highest).max(*event_id);
            }
            _ => return false,
        }
        true
    }

    /// Each server's highest event id in the batch, by server id.
    pub(super) fn counters(&self) -> Vec<(&'a str, i64)> {
        let mut servers: Vec<(&str, i64)> = self
            .last_event_ids
            .iter()
            .map(|(s, id)| (*s, id.stored()))
            .collect();
        servers.sort_unstable();
        servers
    }

    /// The statements that raise each server's event counter (run after the bulk inserts).
    pub(super) fn counter_updates(&self) -> Vec<Statement<'a>> {
        self.counters()
            .into_iter()
            .map(|(server_id, event_id)| {
                Statement::new(RAISE_LAST_EVENT_ID, vec![server_id.into(), event_id.into()])
            })
            .collect()
    }
}

const RAISE_LAST_EVENT_ID: &str = "UPDATE servers SET last_event_id = $2 \
     WHERE id = $1 AND last_event_id < $2";

/// Runs the single-row statements of `records` on `conn`, in order, and leaves their messages
/// and events in `bulk` for the engine's bulk inserts.
pub(super) async fn apply_records<'a, C: SqlConn>(
    conn: &mut C,
    records: &'a [Record],
    bulk: &mut Bulk<'a>,
) -> Result<(), StorageError> {
    let mut statements = Vec::new();
    for record in records {
        if !bulk.take(record) {
            statements.clear();
            statements_for(record, &mut statements)?;
            for statement in &statements {
                conn.execute(statement).await?;
            }
        }
    }
    Ok(())
}

const UPSERT_SERVER: &str = "INSERT INTO servers (id, display_name, description, banner_preset, \
     discoverable, join_policy, owner_uid, created_by_uid, created_at, updated_by_uid, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
     ON CONFLICT (id) DO UPDATE SET display_name = excluded.display_name, \
     description = excluded.description, banner_preset = excluded.banner_preset, \
     discoverable = excluded.discoverable, join_policy = excluded.join_policy, \
     owner_uid = excluded.owner_uid, created_by_uid = excluded.created_by_uid, \
     created_at = excluded.created_at, updated_by_uid = excluded.updated_by_uid, \
     updated_at = excluded.updated_at";

const UPSERT_CATEGORY: &str = "INSERT INTO categories \
     (id, server_id, label, kind, position, created_by_uid, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (id) DO UPDATE SET server_id = excluded.server_id, label = excluded.label, \
     kind = excluded.kind, position = excluded.position, \
     created_by_uid = excluded.created_by_uid, created_at = excluded.created_at";

const DELETE_CATEGORY: &str = "DELETE FROM categories WHERE id = $1";

const UPSERT_CHANNEL: &str = "INSERT INTO channels (id, server_id, category_id, name, kind, \
     position, history_visibility, encryption, created_by_uid, created_at, view_min_role, \
     post_min_role, member_speak) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
     ON CONFLICT (id) DO UPDATE SET server_id = excluded.server_id, \
     category_id = excluded.category_id, name = excluded.name, kind = excluded.kind, \
     position = excluded.position, history_visibility = excluded.history_visibility, \
     encryption = excluded.encryption, created_by_uid = excluded.created_by_uid, \
     created_at = excluded.created_at, view_min_role = excluded.view_min_role, \
     post_min_role = excluded.post_min_role, member_speak = excluded.member_speak";

const UPSERT_MEMBERSHIP: &str = "INSERT INTO memberships (server_id, user_uid, role) \
     VALUES ($1, $2, $3) ON CONFLICT (server_id, user_uid) DO UPDATE SET role = excluded.role";

const DELETE_SPANS: &str = "DELETE FROM membership_spans WHERE server_id = $1 AND user_uid = $2";

const INSERT_SPAN: &str = "INSERT INTO membership_spans \
     (server_id, user_uid, joined_seq, joined_at, left_seq, left_at) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (server_id, user_uid, joined_seq) DO UPDATE SET joined_at = excluded.joined_at, \
     left_seq = excluded.left_seq, left_at = excluded.left_at";

const UPSERT_PROFILE: &str = "INSERT INTO profiles (user_uid, display_name, avatar_mode, \
     avatar_preset_id, avatar_asset_id, version, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (user_uid) DO UPDATE SET display_name = excluded.display_name, \
     avatar_mode = excluded.avatar_mode, avatar_preset_id = excluded.avatar_preset_id, \
     avatar_asset_id = excluded.avatar_asset_id, version = excluded.version, \
     updated_at = excluded.updated_at";

const UPSERT_PRIVACY: &str = "INSERT INTO member_privacy (server_id, user_uid, \
     presence_visibility, mention_permission, version, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (server_id, user_uid) DO UPDATE SET \
     presence_visibility = excluded.presence_visibility, \
     mention_permission = excluded.mention_permission, version = excluded.version, \
     updated_at = excluded.updated_at";

const UPSERT_SERVER_PROFILE: &str = "INSERT INTO server_profiles (server_id, user_uid, \
     display_name, avatar_mode, avatar_preset_id, avatar_asset_id, version, updated_at, cleared) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (server_id, user_uid) DO UPDATE SET display_name = excluded.display_name, \
     avatar_mode = excluded.avatar_mode, avatar_preset_id = excluded.avatar_preset_id, \
     avatar_asset_id = excluded.avatar_asset_id, version = excluded.version, \
     updated_at = excluded.updated_at, cleared = excluded.cleared";

const INSERT_AUDIT: &str = "INSERT INTO moderation_audit (seq, audit_id, server_id, case_id, \
     actor_uid, event_type, payload, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (seq) DO NOTHING";

const UPSERT_CASE: &str = "INSERT INTO moderation_cases (id, server_id, reporter_uid, \
     target_uid, channel_id, message_id, reason_code, reason_text, status, created_at, closed_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
     ON CONFLICT (id) DO UPDATE SET status = excluded.status, closed_at = excluded.closed_at";

const INSERT_MOD_ACTION: &str = "INSERT INTO moderation_actions (id, case_id, server_id, \
     action_type, target_uid, channel_id, duration_seconds, expires_at, enforced_by_uid, \
     enforced_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING";

const UPSERT_VOTE_POLICY: &str = "INSERT INTO moderation_policies (server_id, threshold, quorum, \
     window_seconds, updated_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (server_id) DO UPDATE SET threshold = excluded.threshold, \
     quorum = excluded.quorum, window_seconds = excluded.window_seconds, \
     updated_at = excluded.updated_at";

const UPSERT_PROPOSAL: &str = "INSERT INTO moderation_proposals (id, case_id, server_id, \
     action_type, duration_seconds, proposed_by_uid, threshold, quorum, window_seconds, \
     expires_at, status, created_at, idempotency_key) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
     ON CONFLICT (id) DO UPDATE SET status = excluded.status";

const INSERT_VOTE: &str = "INSERT INTO moderation_votes (proposal_id, voter_uid, value, at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (proposal_id, voter_uid) DO NOTHING";

const INSERT_EVIDENCE: &str = "INSERT INTO moderation_evidence (case_id, server_id, sealed, \
     created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (case_id) DO NOTHING";

const DELETE_EVIDENCE: &str = "DELETE FROM moderation_evidence WHERE case_id = $1";

const UPSERT_AVATAR_ASSET: &str = "INSERT INTO avatar_assets \
     (id, owner_uid, blob, content_type, width, height, bytes, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (id) DO UPDATE SET owner_uid = excluded.owner_uid, blob = excluded.blob, \
     content_type = excluded.content_type, width = excluded.width, height = excluded.height, \
     bytes = excluded.bytes, created_at = excluded.created_at";

const UPSERT_CLAIM_TOKEN: &str = "INSERT INTO claim_tokens \
     (token_hash, server_id, expires_at, used_at) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (token_hash) DO UPDATE SET server_id = excluded.server_id, \
     expires_at = excluded.expires_at, used_at = excluded.used_at";

const UPSERT_DEVICE: &str = "INSERT INTO devices \
     (device_id, user_uid, public_key, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (device_id) DO UPDATE SET user_uid = excluded.user_uid, \
     public_key = excluded.public_key, created_at = excluded.created_at, \
     revoked_at = excluded.revoked_at";

const UPSERT_SESSION: &str = "INSERT INTO sessions \
     (token_hash, user_uid, device_id, created_at, expires_at, revoked_at) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (token_hash) DO UPDATE SET user_uid = excluded.user_uid, \
     device_id = excluded.device_id, created_at = excluded.created_at, \
     expires_at = excluded.expires_at, revoked_at = excluded.revoked_at";

const UPSERT_READ_ACK: &str = "INSERT INTO read_acks \
     (user_uid, channel_id, message_id, seq, acked_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (user_uid, channel_id) DO UPDATE SET message_id = excluded.message_id, \
     seq = excluded.seq, acked_at = excluded.acked_at";

const UPSERT_MODERATION: &str = "INSERT INTO moderation \
     (server_id, kind, target, until, active, by_uid, at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (server_id, kind, target) DO UPDATE SET until = excluded.until, \
     active = excluded.active, by_uid = excluded.by_uid, at = excluded.at";

const UPSERT_IDENTITY_BINDING: &str = "INSERT INTO identity_bindings \
     (user_uid, public_key, server_id, approved_by_uid, approved_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (user_uid) DO UPDATE SET public_key = excluded.public_key, \
     server_id = excluded.server_id, approved_by_uid = excluded.approved_by_uid, \
     approved_at = excluded.approved_at";

const UPSERT_INVITE: &str = "INSERT INTO invites \
     (id, server_id, code_hash, created_by_uid, expires_at, max_uses, use_count, created_at, \
     revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (id) DO UPDATE SET use_count = excluded.use_count, \
     revoked_at = excluded.revoked_at";

const MARK_MESSAGE_DELETED: &str = "UPDATE messages SET deleted_at = $2 WHERE seq = $1";

/// Appends the statements that persist `record` (anything but a message or an event).
fn statements_for<'a>(
    record: &'a Record,
    out: &mut Vec<Statement<'a>>,
) -> Result<(), StorageError> {
    let statement = match record {
        Record::Server(s) => Statement::new(
            UPSERT_SERVER,
            vec![
                (&s.id).into(),
                (&s.display_name).into(),
                (&s.description).into(),
                (&s.banner_preset).into(),
                s.discoverable.into(),
                s.join_policy.as_str().into(),
                (&s.owner_uid).into(),
                (&s.created_by_uid).into(),
                s.created_at.into(),
                (&s.updated_by_uid).into(),
                s.updated_at.into(),
            ],
        ),
        Record::Category(c) => Statement::new(
            UPSERT_CATEGORY,
            vec![
                (&c.id).into(),
                (&c.server_id).into(),
                (&c.label).into(),
                c.kind.as_str().into(),
                c.position.into(),
                (&c.created_by_uid).into(),
                c.created_at.into(),
            ],
        ),
        Record::DeleteCategory { id } => Statement::new(DELETE_CATEGORY, vec![id.into()]),
        Record::Channel(c) => Statement::new(
            UPSERT_CHANNEL,
            vec![
                (&c.id).into(),
                (&c.server_id).into(),
                (&c.category_id).into(),
                (&c.name).into(),
                c.kind.as_str().into(),
                c.position.into(),
                c.history_visibility.as_str().into(),
                c.encryption.as_str().into(),
                (&c.created_by_uid).into(),
                c.created_at.into(),
                c.access
                    .view_min_role
                    .map(crate::domain::model::Role::as_str)
                    .into(),
                c.access
                    .post_min_role
                    .map(crate::domain::model::Role::as_str)
                    .into(),
                c.access.member_speak.into(),
            ],
        ),
        Record::Membership(m) => {
            let who = || vec![Param::from(&m.server_id), Param::from(&m.user_uid)];
            out.push(Statement::new(
                UPSERT_MEMBERSHIP,
                vec![
                    (&m.server_id).into(),
                    (&m.user_uid).into(),
                    m.role.as_str().into(),
                ],
            ));
            out.push(Statement::new(DELETE_SPANS, who()));
            for span in &m.spans {
                let mut params = who();
                params.extend::<[Param<'_>; 4]>([
                    span.joined_seq.into(),
                    span.joined_at.into(),
                    span.left_seq.into(),
                    span.left_at.into(),
                ]);
                out.push(Statement::new(INSERT_SPAN, params));
            }
            return Ok(());
        }
        Record::Profile(p) => Statement::new(
            UPSERT_PROFILE,
            vec![
                (&p.user_uid).into(),
                (&p.display_name).into(),
                p.avatar_mode.as_str().into(),
                (&p.avatar_preset_id).into(),
                (&p.avatar_asset_id).into(),
                p.version.into(),
                p.updated_at.into(),
            ],
        ),
        Record::Privacy(p) => Statement::new(
            UPSERT_PRIVACY,
            vec![
                (&p.server_id).into(),
                (&p.user_uid).into(),
                p.presence_visibility.as_str().into(),
                p.mention_permission.as_str().into(),
                p.version.into(),
                p.updated_at.into(),
            ],
        ),
        Record::ServerProfile(p) => Statement::new(
            UPSERT_SERVER_PROFILE,
            vec![
                (&p.server_id).into(),
                (&p.user_uid).into(),
                (&p.display_name).into(),
                p.avatar_mode.as_str().into(),
                (&p.avatar_preset_id).into(),
                (&p.avatar_asset_id).into(),
                p.version.into(),
                p.updated_at.into(),
                p.cleared.into(),
            ],
        ),
        Record::Audit(a) => Statement::new(
            INSERT_AUDIT,
            vec![
                a.seq.into(),
                (&a.audit_id).into(),
                (&a.server_id).into(),
                (&a.case_id).into(),
                (&a.actor_uid).into(),
                (&a.event_type).into(),
                (&a.payload).into(),
                a.created_at.into(),
            ],
        ),
        Record::Case(c) => Statement::new(
            UPSERT_CASE,
            vec![
                (&c.id).into(),
                (&c.server_id).into(),
                (&c.reporter_uid).into(),
                (&c.target_uid).into(),
                (&c.channel_id).into(),
                (&c.message_id).into(),
                (&c.reason_code).into(),
                (&c.reason_text).into(),
                c.status.as_str().into(),
                c.created_at.into(),
                c.closed_at.into(),
            ],
        ),
        Record::ModAction(a) => Statement::new(
            INSERT_MOD_ACTION,
            vec![
                (&a.id).into(),
                (&a.case_id).into(),
                (&a.server_id).into(),
                a.action_type.as_str().into(),
                (&a.target_uid).into(),
                (&a.channel_id).into(),
                a.duration_seconds.into(),
                a.expires_at.into(),
                (&a.enforced_by_uid).into(),
                a.enforced_at.into(),
            ],
        ),
        Record::VotePolicy {
            server_id,
            policy,
            updated_at,
        } => Statement::new(
            UPSERT_VOTE_POLICY,
            vec![
                server_id.into(),
                i64::from(policy.threshold).into(),
                i64::from(policy.quorum).into(),
                policy.window_seconds.into(),
                (*updated_at).into(),
            ],
        ),
        Record::Proposal(p) => Statement::new(
            UPSERT_PROPOSAL,
            vec![
                (&p.id).into(),
                (&p.case_id).into(),
                (&p.server_id).into(),
                p.action_type.as_str().into(),
                p.duration_seconds.into(),
                (&p.proposed_by_uid).into(),
                i64::from(p.policy.threshold).into(),
                i64::from(p.policy.quorum).into(),
                p.policy.window_seconds.into(),
                p.expires_at.into(),
                p.status.as_str().into(),
                p.created_at.into(),
                (&p.idempotency_key).into(),
            ],
        ),
        Record::Vote(v) => Statement::new(
            INSERT_VOTE,
            vec![
                (&v.proposal_id).into(),
                (&v.voter_uid).into(),
                v.value.as_str().into(),
                v.at.into(),
            ],
        ),
        Record::Evidence {
            case_id,
            server_id,
            sealed,
            created_at,
        } => Statement::new(
            INSERT_EVIDENCE,
            vec![
                case_id.into(),
                server_id.into(),
                sealed.into(),
                (*created_at).into(),
            ],
        ),
        Record::EvidenceDeleted { case_id } => {
            Statement::new(DELETE_EVIDENCE, vec![case_id.into()])
        }
        Record::AvatarAsset(a) => Statement::new(
            UPSERT_AVATAR_ASSET,
            vec![
                (&a.id).into(),
                (&a.owner_uid).into(),
                (&a.blob).into(),
                (&a.content_type).into(),
                i64::from(a.width).into(),
                i64::from(a.height).into(),
                column_int("avatar_assets.bytes", a.bytes)?.into(),
                a.created_at.into(),
            ],
        ),
        Record::ClaimToken(t) => Statement::new(
            UPSERT_CLAIM_TOKEN,
            vec![
                (&t.token_hash).into(),
                (&t.server_id).into(),
                t.expires_at.into(),
                t.used_at.into(),
            ],
        ),
        Record::Device(d) => Statement::new(
            UPSERT_DEVICE,
            vec![
                (&d.device_id).into(),
                (&d.user_uid).into(),
                (&d.public_key).into(),
                d.created_at.into(),
                d.revoked_at.into(),
            ],
        ),
        Record::Session(s) => Statement::new(
            UPSERT_SESSION,
            vec![
                (&s.token_hash).into(),
                (&s.user_uid).into(),
                (&s.device_id).into(),
                s.created_at.into(),
                s.expires_at.into(),
                s.revoked_at.into(),
            ],
        ),
        Record::ReadAck(r) => Statement::new(
            UPSERT_READ_ACK,
            vec![
                (&r.user_uid).into(),
                (&r.channel_id).into(),
                (&r.message_id).into(),
                r.seq.into(),
                r.acked_at.into(),
            ],
        ),
        Record::Moderation(m) => Statement::new(
            UPSERT_MODERATION,
            vec![
                (&m.server_id).into(),
                m.kind.as_str().into(),
                (&m.target).into(),
                m.until.into(),
                m.active.into(),
                (&m.by_uid).into(),
                m.at.into(),
            ],
        ),
        Record::Invite(i) => Statement::new(
            UPSERT_INVITE,
            vec![
                (&i.id).into(),
                (&i.server_id).into(),
                (&i.code_hash).into(),
                (&i.created_by_uid).into(),
                i.expires_at.into(),
                i64::from(i.max_uses).into(),
                i64::from(i.use_count).into(),
                i.created_at.into(),
                i.revoked_at.into(),
            ],
        ),
        Record::IdentityBinding(b) => Statement::new(
            UPSERT_IDENTITY_BINDING,
            vec![
                (&b.user_uid).into(),
                (&b.public_key).into(),
                (&b.server_id).into(),
                (&b.approved_by_uid).into(),
                b.approved_at.into(),
            ],
        ),
        Record::MessageDeleted { id, deleted_at } => {
            // An id no message can have marks nothing.
            let seq = crate::domain::model::message_seq(id).unwrap_or(0);
            Statement::new(MARK_MESSAGE_DELETED, vec![seq.into(), (*deleted_at).into()])
        }
        Record::KeyPackage(_)
        | Record::KeyPackageDeleted { .. }
        | Record::KeyPackageClaim(_)
        | Record::Group(_)
        | Record::Commit(_)
        | Record::EpochSpan(_)
        | Record::MailboxItem(_)
        | Record::MailboxAcked { .. }
        | Record::MailboxExpired { .. }
        | Record::DevicePurged { .. }
        | Record::Backup(_) => return super::keys::statements_for(record, out),
        Record::Message(_) | Record::Event(_) | Record::LastEventId { .. } => {
            return Err(StorageError::Internal(
                "messages and events are inserted in bulk, not one by one".to_owned(),
            ));
        }
    };
    out.push(statement);
    Ok(())
}

/// A `u64` for a BIGINT column. Values past `i64::MAX` cannot be stored; refusing them is an
/// error of this write alone (the batch is retried without it).
pub(super) fn column_int(column: &str, value: u64) -> Result<i64, StorageError> {
    i64::try_from(value)
        .map_err(|_| StorageError::Internal(format!("{column} = {value} does not fit a BIGINT")))
}

/// The columns of `messages` in the order the bulk inserts (and the reads) use them.
pub(super) const MESSAGE_COLUMNS: &str = "seq, id, channel_id, server_id, author_uid, \
     author_device_id, body, epoch_id, ciphertext, nonce, aad, sender_device_id, reply_to_id, \
     mentions, attachments, created_at, deleted_at";

/// How many columns [`MESSAGE_COLUMNS`] names.
pub(super) const MESSAGE_COLUMN_COUNT: usize = 17;

/// The SQL type of each of [`MESSAGE_COLUMNS`], in order (Postgres names the array types of
/// its `UNNEST` insert from them).
pub(super) const MESSAGE_COLUMN_TYPES: [SqlType; MESSAGE_COLUMN_COUNT] = {
    use SqlType::{BigInt as I, Text as T};
    [I, T, T, T, T, T, T, I, T, T, T, T, T, T, T, I, I]
};

/// The two column types of `messages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SqlType {
    BigInt,
    Text,
}

impl SqlType {
    pub(super) fn name(self) -> &'static str {
        match self {
            SqlType::BigInt => "bigint",
            SqlType::Text => "text",
        }
    }
}

/// One value of a message row (`None` is NULL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ColumnValue<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
}

impl<'a> ColumnValue<'a> {
    /// The value of a `bigint` column ([`MESSAGE_COLUMN_TYPES`] and [`MessageRow::values`]
    /// agree, which a test checks).
    pub(super) fn int(self) -> Option<i64> {
        match self {
            ColumnValue::Int(value) => value,
            ColumnValue::Text(_) => None,
        }
    }

    /// The value of a `text` column.
    pub(super) fn text(self) -> Option<&'a str> {
        match self {
            ColumnValue::Text(value) => value,
            ColumnValue::Int(_) => None,
        }
    }
}

/// The columns of `events`, in bulk-insert (and read) order.
pub(super) const EVENT_COLUMNS: &str = "server_id, event_id, kind, payload, created_at";

pub(super) const EVENT_COLUMN_COUNT: usize = 5;

/// A message flattened into its columns (the content split into its nullable columns, mentions
/// and attachments as JSON), borrowing from the message.
pub(super) struct MessageRow<'a> {
    pub(super) message: &'a Message,
    pub(super) body: Option<&'a str>,
    pub(super) epoch_id: Option<i64>,
    pub(super) ciphertext: Option<&'a str>,
    pub(super) nonce: Option<&'a str>,
    pub(super) aad: Option<&'a str>,
    pub(super) sender_device_id: Option<&'a str>,
    pub(super) mentions: String,
    pub(super) attachments: String,
}

impl<'a> MessageRow<'a> {
    pub(super) fn new(message: &'a Message) -> Result<MessageRow<'a>, StorageError> {
        // An MLS PrivateMessage carries its own nonce and AAD: those columns hold ''.
        let (body, epoch_id, ciphertext, nonce, aad, sender_device_id) =
            match &message.content {
                Content::Plain { body } => (Some(body.as_str()), None, None, None, None, None),
                Content::Envelope(Envelope {
                    epoch,
                    ciphertext,
                    sender_device_id,
                }) => (
                    None,
                    Some(i64::try_from(*epoch).map_err(|_| {
                        StorageError::Internal(format!("epoch {epoch} out of range"))
                    })?),
                    Some(ciphertext.as_str()),
                    Some(""),
                    Some(""),
                    Some(sender_device_id.as_str()),
                ),
            };
        Ok(MessageRow {
            message,
            body,
            epoch_id,
            ciphertext,
            nonce,
            aad,
            sender_device_id,
            mentions: json_array(&message.mentions)?,
            attachments: json_array(&message.attachments)?,
        })
    }

    /// The row's values in [`MESSAGE_COLUMNS`] order: the one place an insert's column order is
    /// written down. Both engines bind from it (Postgres one array per column, SQLite row by
    /// row); reads decode the same order in `reads::message_row`.
    pub(super) fn values(&self) -> [ColumnValue<'_>; MESSAGE_COLUMN_COUNT] {
        use ColumnValue::{Int, Text};
        let m = self.message;
        [
            Int(Some(m.seq)),
            Text(Some(&m.id)),
            Text(Some(&m.channel_id)),
            Text(Some(&m.server_id)),
            Text(Some(&m.author_uid)),
            Text(Some(&m.author_device_id)),
            Text(self.body),
            Int(self.epoch_id),
            Text(self.ciphertext),
            Text(self.nonce),
            Text(self.aad),
            Text(self.sender_device_id),
            Text(m.reply_to_id.as_deref()),
            Text(Some(&self.mentions)),
            Text(Some(&self.attachments)),
            Int(Some(m.created_at)),
            Int(m.deleted_at),
        ]
    }
}

fn json_array<T: serde::Serialize>(items: &[T]) -> Result<String, StorageError> {
    if items.is_empty() {
        return Ok("[]".to_owned());
    }
    simd_json::to_string(items)
        .map_err(|error| StorageError::Internal(format!("cannot encode JSON column: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::*;

    fn membership(spans: usize) -> Record {
        Record::Membership(Membership {
            server_id: "s".into(),
            user_uid: "u".into(),
            role: Role::Admin,
            spans: (0..spans as i64)
                .map(|i| Span {
                    joined_seq: i * 10,
                    joined_at: i,
                    left_seq: Some(i * 10 + 5),
                    left_at: Some(i + 1),
                })
                .collect(),
        })
    }

    #[test]
    fn membership_replaces_role_and_span_set() {
        let record = membership(2);
        let mut out = Vec::new();
        statements_for(&record, &mut out).unwrap();
        let sql: Vec<&str> = out.iter().map(|s| &*s.sql).collect();
        assert_eq!(
            sql,
            vec![UPSERT_MEMBERSHIP, DELETE_SPANS, INSERT_SPAN, INSERT_SPAN]
        );
        assert_eq!(
            out[3].params,
            vec![
                Param::Text(Some("s")),
                Param::Text(Some("u")),
                Param::Int(Some(10)),
                Param::Int(Some(1)),
                Param::Int(Some(15)),
                Param::Int(Some(2)),
            ]
        );
    }

    #[test]
    fn every_statement_binds_as_many_params_as_it_names() {
        let records = [
            membership(1),
            Record::DeleteCategory { id: "c".into() },
            Record::MessageDeleted {
                id: "m".into(),
                deleted_at: 5,
            },
            Record::ClaimToken(ClaimToken {
                token_hash: "h".into(),
                server_id: "s".into(),
                expires_at: 1,
                used_at: None,
            }),
        ];
        for record in &records {
            let mut out = Vec::new();
            statements_for(record, &mut out).unwrap();
            for statement in out {
                let highest = (1..=statement.params.len())
                    .rev()
                    .find(|n| statement.sql.contains(&format!("${n}")));
                assert_eq!(highest, Some(statement.params.len()), "{}", statement.sql);
            }
        }
    }

    #[test]
    fn oversized_byte_count_is_refused() {
        let record = Record::AvatarAsset(AvatarAsset {
            id: "a".into(),
            owner_uid: "u".into(),
            blob: "b".into(),
            content_type: "image/png".into(),
            width: 1,
            height: 1,
            bytes: u64::MAX,
            created_at: 0,
        });
        let error = statements_for(&record, &mut Vec::new()).unwrap_err();
        assert!(matches!(error, StorageError::Internal(_)), "{error:?}");
    }

    #[test]
    fn message_row_splits_content() {
        let message = Message {
            seq: 1,
            id: "m".into(),
            server_id: "s".into(),
            channel_id: "c".into(),
            author_uid: "u".into(),
            author_device_id: "d".into(),
            content: Content::Envelope(Envelope {
                epoch: 3,
                ciphertext: "ct".into(),
                sender_device_id: "d".into(),
            }),
            reply_to_id: None,
            mentions: vec![],
            attachments: vec![],
            created_at: 0,
            deleted_at: None,
        };
        let row = MessageRow::new(&message).unwrap();
        assert_eq!(row.body, None);
        assert_eq!(row.epoch_id, Some(3));
        assert_eq!(row.ciphertext, Some("ct"));
        assert_eq!(row.mentions, "[]");
        assert_eq!(
            MESSAGE_COLUMNS.split(',').count(),
            MESSAGE_COLUMN_COUNT,
            "column count"
        );
        assert_eq!(EVENT_COLUMNS.split(',').count(), EVENT_COLUMN_COUNT);
    }

    #[test]
    fn message_values_follow_the_column_types() {
        let mut message = Message {
            seq: 9,
            id: "msg_9".into(),
            server_id: "s".into(),
            channel_id: "c".into(),
            author_uid: "u".into(),
            author_device_id: "d".into(),
            content: Content::Plain { body: "hi".into() },
            reply_to_id: Some("msg_1".into()),
            mentions: vec![],
            attachments: vec![],
            created_at: 5,
            deleted_at: Some(6),
        };
        let row = MessageRow::new(&message).unwrap();
        let values = row.values();
        for (i, (value, kind)) in values.iter().zip(MESSAGE_COLUMN_TYPES).enumerate() {
            let matches = matches!(
                (value, kind),
                (ColumnValue::Int(_), SqlType::BigInt) | (ColumnValue::Text(_), SqlType::Text)
            );
            assert!(matches, "column {i} is {value:?}, declared {kind:?}");
        }
        let names: Vec<&str> = MESSAGE_COLUMNS.split(',').map(str::trim).collect();
        let value = |name: &str| values[names.iter().position(|n| *n == name).unwrap()];
        assert_eq!(value("seq"), ColumnValue::Int(Some(9)));
        assert_eq!(value("id"), ColumnValue::Text(Some("msg_9")));
        assert_eq!(value("body"), ColumnValue::Text(Some("hi")));
        assert_eq!(value("epoch_id"), ColumnValue::Int(None));
        assert_eq!(value("reply_to_id"), ColumnValue::Text(Some("msg_1")));
        assert_eq!(value("mentions"), ColumnValue::Text(Some("[]")));
        assert_eq!(value("created_at"), ColumnValue::Int(Some(5)));
        assert_eq!(value("deleted_at"), ColumnValue::Int(Some(6)));
        message.deleted_at = None;
        let row = MessageRow::new(&message).unwrap();
        assert_eq!(row.values()[16], ColumnValue::Int(None));
    }
}
