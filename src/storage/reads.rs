//! Reading the community domain back: the start-up [`Snapshot`], history pages, single
//! messages and the event log. Plain SQL both engines run (see `sql`); each function takes a
//! [`SqlConn`], so the engine decides which connection or transaction it runs on.
//!
//! History pages follow `crate::domain::history::MemoryHistory::query` exactly; the property
//! test in `tests/storage_community.rs` holds both engines to it.

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::domain::model::*;
use crate::domain::records::{MessagePage, MessageQuery, Snapshot, Visibility};

use super::StorageError;
use super::records::{EVENT_COLUMNS, MESSAGE_COLUMNS};
use super::sql::{SqlConn, SqlRow, Statement, corrupt};

/// Loads everything the domain keeps in memory. `now` decides which claim tokens and sessions
/// are still usable. Lists are sorted by primary key (byte order, the same on both engines);
/// `recent_events` by server id, then event id.
///
/// Run it inside one read transaction: the tables are read one after the other.
pub(super) async fn load_snapshot<C: SqlConn>(
    conn: &mut C,
    resume_window: usize,
    now: Millis,
) -> Result<Snapshot, StorageError> {
    let mut snapshot = Snapshot {
        servers: all(conn, SELECT_SERVERS, vec![], server).await?,
        categories: all(conn, SELECT_CATEGORIES, vec![], category).await?,
        channels: all(conn, SELECT_CHANNELS, vec![], channel).await?,
        memberships: memberships(conn).await?,
        profiles: all(conn, SELECT_PROFILES, vec![], profile).await?,
        avatar_assets: all(conn, SELECT_AVATAR_ASSETS, vec![], avatar_asset).await?,
        claim_tokens: all(conn, SELECT_CLAIM_TOKENS, vec![now.into()], claim_token).await?,
        devices: all(conn, SELECT_DEVICES, vec![], device).await?,
        sessions: all(conn, SELECT_SESSIONS, vec![now.into()], session).await?,
        read_acks: all(conn, SELECT_READ_ACKS, vec![], read_ack).await?,
        moderation: all(conn, SELECT_MODERATION, vec![now.into()], moderation).await?,
        identity_bindings: all(conn, SELECT_IDENTITY_BINDINGS, vec![], identity_binding).await?,
        invites: all(conn, SELECT_INVITES, vec![now.into()], invite).await?,
        privacy: all(conn, SELECT_PRIVACY, vec![], privacy).await?,
        server_profiles: all(conn, SELECT_SERVER_PROFILES, vec![], server_profile).await?,
        cases: all(conn, SELECT_CASES, vec![], case).await?,
        mod_actions: all(conn, SELECT_MOD_ACTIONS, vec![], mod_action).await?,
        vote_policies: all(conn, SELECT_VOTE_POLICIES, vec![], vote_policy).await?,
        proposals: all(conn, SELECT_PROPOSALS, vec![], proposal).await?,
        votes: all(conn, SELECT_VOTES, vec![], vote).await?,
        evidence: all(conn, SELECT_EVIDENCE, vec![], |row| {
            Ok((row.text(0)?, row.text(1)?))
        })
        .await?,
        keys: super::keys::load_snapshot(conn, now).await?,
        last_seq: 0,
        last_audit_seq: 0,
        last_event_ids: HashMap::new(),
        recent_events: Vec::new(),
    };
    snapshot.servers.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    snapshot.categories.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    snapshot.channels.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    snapshot
        .profiles
        .sort_unstable_by(|a, b| a.user_uid.cmp(&b.user_uid));
    snapshot
        .avatar_assets
        .sort_unstable_by(|a, b| a.id.cmp(&b.id));
    snapshot
        .claim_tokens
        .sort_unstable_by(|a, b| a.token_hash.cmp(&b.token_hash));
    snapshot
        .devices
        .sort_unstable_by(|a, b| a.device_id.cmp(&b.device_id));
    snapshot
        .sessions
        .sort_unstable_by(|a, b| a.token_hash.cmp(&b.token_hash));
    snapshot
        .read_acks
        .sort_unstable_by(|a, b| (&a.user_uid, &a.channel_id).cmp(&(&b.user_uid, &b.channel_id)));

    let last_seq = conn
        .fetch_optional(&Statement::new(SELECT_LAST_SEQ, vec![]))
        .await?;
    snapshot.last_seq = match last_seq {
        Some(row) => row.int(0)?,
        None => 0,
    };
    let last_audit_seq = conn
        .fetch_optional(&Statement::new(SELECT_LAST_AUDIT_SEQ, vec![]))
        .await?;
    snapshot.last_audit_seq = match last_audit_seq {
        Some(row) => row.int(0)?,
        None => 0,
    };

    let mut last_event_ids: Vec<(String, EventId)> =
        all(conn, SELECT_LAST_EVENT_IDS, vec![], |row| {
            Ok((row.text(0)?, event_id(row, 1)?))
        })
        .await?;
    // A server may appear twice (its logged events and its counter): keep the highest.
    last_event_ids.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    last_event_ids.dedup_by(|later, first| later.0 == first.0);
    let window = sql_limit(resume_window);
    for (server_id, _) in &last_event_ids {
        if window == 0 {
            break;
        }
        let mut newest = all(
            conn,
            &SELECT_NEWEST_EVENTS,
            vec![server_id.into(), window.into()],
            event,
        )
        .await?;
        newest.reverse();
        snapshot.recent_events.append(&mut newest);
    }
    snapshot.last_event_ids = last_event_ids.into_iter().collect();
    Ok(snapshot)
}

/// One page of a channel's history; see [`MessageQuery`] and `MemoryHistory::query`.
pub(super) async fn messages<C: SqlConn>(
    conn: &mut C,
    query: &MessageQuery,
) -> Result<MessagePage, StorageError> {
    if query.visibility.is_nothing() {
        // Nothing is visible: no page, nothing older.
        return Ok(MessagePage::default());
    }
    let limit = sql_limit(query.limit);
    let newer_page = query.after.is_some();

    let mut page = Statement::dynamic(String::new(), Vec::new());
    let mut sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE ");
    sql += &visible_filter(query, &mut page);
    if let Some(before) = query.before {
        sql += &format!(" AND seq < {}", page.push(before));
    }
    if let Some(after) = query.after {
        sql += &format!(" AND seq > {}", page.push(after));
    }
    // The latest page (or an older one) is read newest first, with one message more than asked:
    // if that one exists, older visible messages exist. A newer page is read oldest first and
    // asks separately.
    let (order, fetch) = if newer_page {
        ("ASC", limit)
    } else {
        ("DESC", limit.saturating_add(1))
    };
    sql += &format!(" ORDER BY seq {order} LIMIT {}", page.push(fetch));
    page.sql = sql.into();
    let rows = conn.fetch_all(&page).await?;
    let mut messages = rows
        .iter()
        .map(message_row)
        .collect::<Result<Vec<_>, _>>()?;

    let has_older = if newer_page {
        has_older(conn, query, messages.first().map(|m| m.seq)).await?
    } else {
        let more = messages.len() > query.limit;
        messages.truncate(query.limit);
        messages.reverse();
        more
    };
    let reply_targets = reply_targets(conn, &messages).await?;
    Ok(MessagePage {
        messages,
        has_older,
        reply_targets,
    })
}

/// The message with this id, deleted or not.
pub(super) async fn message<C: SqlConn>(
    conn: &mut C,
    id: &str,
) -> Result<Option<Message>, StorageError> {
    let Some(seq) = crate::domain::model::message_seq(id) else {
        return Ok(None);
    };
    let statement = Statement::new(&SELECT_MESSAGE_BY_SEQ, vec![seq.into()]);
    match conn.fetch_optional(&statement).await? {
        Some(row) => Ok(Some(message_row(&row)?)),
        None => Ok(None),
    }
}

/// Events of `server_id` with `event_id > after_event_id`, oldest first, at most `limit`.
pub(super) async fn events_after<C: SqlConn>(
    conn: &mut C,
    server_id: &str,
    after_event_id: EventId,
    limit: usize,
) -> Result<Vec<StoredEvent>, StorageError> {
    all(
        conn,
        &SELECT_EVENTS_AFTER,
        vec![
            server_id.into(),
            after_event_id.stored().into(),
            sql_limit(limit).into(),
        ],
        event,
    )
    .await
}

// ---- history pages ---------------------------------------------------------------------------

/// `channel_id = … AND <visibility> AND <not deleted>`, binding into `statement`. For spans, the
/// overall range is added as plain bounds too, so the (channel_id, seq) index narrows the scan.
fn visible_filter<'a>(query: &'a MessageQuery, statement: &mut Statement<'a>) -> String {
    let mut sql = format!("channel_id = {}", statement.push(query.channel_id.as_str()));
    sql += &visibility_sql(&query.visibility, statement);
    if !query.include_deleted {
        sql += " AND deleted_at IS NULL";
    }
    sql
}

/// The ` AND …` conditions of `visibility` (nothing for `All`).
fn visibility_sql<'a>(visibility: &'a Visibility, statement: &mut Statement<'a>) -> String {
    let mut sql = String::new();
    if let Visibility::Epochs { seqs, epochs } = visibility {
        sql += &visibility_sql(seqs, statement);
        let alternatives: Vec<String> = epochs
            .iter()
            .map(|&(lo, hi)| {
                let lo = i64::try_from(lo).unwrap_or(i64::MAX);
                match hi {
                    Some(hi) => format!(
                        "(epoch_id >= {} AND epoch_id <= {})",
                        statement.push(lo),
                        statement.push(i64::try_from(hi).unwrap_or(i64::MAX))
                    ),
                    None => format!("(epoch_id >= {})", statement.push(lo)),
                }
            })
            .collect();
        sql += &format!(
            " AND epoch_id IS NOT NULL AND ({})",
            alternatives.join(" OR ")
        );
        return sql;
    }
    if let Visibility::Spans(spans) = visibility {
        let lowest = spans.iter().map(|&(lo, _)| lo).min();
        if let Some(lowest) = lowest {
            sql += &format!(" AND seq > {}", statement.push(lowest));
        }
        let highest = spans
            .iter()
            .map(|&(_, hi)| hi)
            .try_fold(i64::MIN, |top, hi| {
                hi.map(|hi| top.max(hi)) // any open span: no upper bound
            });
        if let Some(highest) = highest {
            sql += &format!(" AND seq <= {}", statement.push(highest));
        }
        let alternatives: Vec<String> = spans
            .iter()
            .map(|&(lo, hi)| match hi {
                Some(hi) => format!(
                    "(seq > {} AND seq <= {})",
                    statement.push(lo),
                    statement.push(hi)
                ),
                None => format!("(seq > {})", statement.push(lo)),
            })
            .collect();
        sql += &format!(" AND ({})", alternatives.join(" OR "));
    }
    sql
}

/// For a newer page: whether a visible message exists before the page — before its first
/// message, or, when the page is empty, at or before `after` (and before `before`).
async fn has_older<C: SqlConn>(
    conn: &mut C,
    query: &MessageQuery,
    first_seq: Option<Seq>,
) -> Result<bool, StorageError> {
    let mut statement = Statement::dynamic(String::new(), Vec::new());
    let filter = visible_filter(query, &mut statement);
    let mut sql = format!("SELECT 1 FROM messages WHERE {filter}");
    match first_seq {
        Some(first) => sql += &format!(" AND seq < {}", statement.push(first)),
        None => {
            if let Some(after) = query.after {
                sql += &format!(" AND seq <= {}", statement.push(after));
            }
            if let Some(before) = query.before {
                sql += &format!(" AND seq < {}", statement.push(before));
            }
        }
    }
    sql += " LIMIT 1";
    statement.sql = sql.into();
    Ok(conn.fetch_optional(&statement).await?.is_some())
}

/// The IN-list sizes reply targets are looked up with (padded by repeating the last id), so
/// only a handful of statement shapes are ever prepared.
const ID_LIST_SHAPES: [usize; 4] = [1, 4, 16, 64];

/// The messages the page's messages reply to, whatever their channel, visibility or deletion,
/// sorted by seq.
async fn reply_targets<C: SqlConn>(
    conn: &mut C,
    page: &[Message],
) -> Result<Vec<Message>, StorageError> {
    let mut ids: Vec<i64> = page
        .iter()
        .filter_map(|m| m.reply_to_id.as_deref())
        .filter_map(crate::domain::model::message_seq)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut targets = Vec::new();
    for chunk in ids.chunks(ID_LIST_SHAPES[ID_LIST_SHAPES.len() - 1]) {
        let shape = ID_LIST_SHAPES
            .into_iter()
            .find(|&shape| shape >= chunk.len())
            .unwrap_or(chunk.len());
        let mut statement = Statement::dynamic(String::new(), Vec::with_capacity(shape));
        let placeholders: Vec<String> = (0..shape)
            .map(|i| statement.push(chunk[i.min(chunk.len() - 1)]))
            .collect();
        statement.sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE seq IN ({})",
            placeholders.join(", ")
        )
        .into();
        for row in conn.fetch_all(&statement).await? {
            targets.push(message_row(&row)?);
        }
    }
    targets.sort_unstable_by_key(|m| m.seq);
    Ok(targets)
}

// ---- statements ------------------------------------------------------------------------------

const SELECT_SERVERS: &str = "SELECT id, display_name, description, banner_preset, \
     discoverable, join_policy, owner_uid, created_by_uid, created_at, updated_by_uid, \
     updated_at FROM servers";
const SELECT_CATEGORIES: &str =
    "SELECT id, server_id, label, kind, position, created_by_uid, created_at FROM categories";
const SELECT_CHANNELS: &str = "SELECT id, server_id, category_id, name, kind, position, \
     history_visibility, encryption, created_by_uid, created_at, view_min_role, post_min_role, \
     member_speak FROM channels";
const SELECT_MEMBERSHIPS: &str = "SELECT server_id, user_uid, role FROM memberships";
const SELECT_SPANS: &str = "SELECT server_id, user_uid, joined_seq, joined_at, left_seq, \
     left_at FROM membership_spans ORDER BY joined_seq";
const SELECT_PROFILES: &str = "SELECT user_uid, display_name, avatar_mode, avatar_preset_id, \
     avatar_asset_id, version, updated_at FROM profiles";
const SELECT_AVATAR_ASSETS: &str = "SELECT id, owner_uid, blob, content_type, width, height, \
     bytes, created_at FROM avatar_assets";
const SELECT_CLAIM_TOKENS: &str = "SELECT token_hash, server_id, expires_at, used_at \
     FROM claim_tokens WHERE used_at IS NULL AND expires_at > $1";
const SELECT_DEVICES: &str =
    "SELECT device_id, user_uid, public_key, created_at, revoked_at FROM devices";
const SELECT_SESSIONS: &str = "SELECT token_hash, user_uid, device_id, created_at, expires_at, \
     revoked_at FROM sessions WHERE revoked_at IS NULL AND expires_at > $1";
const SELECT_READ_ACKS: &str =
    "SELECT user_uid, channel_id, message_id, seq, acked_at FROM read_acks";
const SELECT_MODERATION: &str = "SELECT server_id, kind, target, until, active, by_uid, at \
     FROM moderation WHERE active AND (until IS NULL OR until > $1) \
     ORDER BY server_id, kind, target";
const SELECT_IDENTITY_BINDINGS: &str = "SELECT user_uid, public_key, server_id, approved_by_uid, \
     approved_at FROM identity_bindings ORDER BY user_uid";
const SELECT_INVITES: &str = "SELECT id, server_id, code_hash, created_by_uid, expires_at, \
     max_uses, use_count, created_at, revoked_at FROM invites \
     WHERE revoked_at IS NULL AND expires_at > $1 ORDER BY id";
const SELECT_PRIVACY: &str = "SELECT server_id, user_uid, presence_visibility, \
     mention_permission, version, updated_at FROM member_privacy ORDER BY server_id, user_uid";
const SELECT_SERVER_PROFILES: &str = "SELECT server_id, user_uid, display_name, avatar_mode, \
     avatar_preset_id, avatar_asset_id, version, updated_at, cleared FROM server_profiles \
     ORDER BY server_id, user_uid";
const SELECT_CASES: &str = "SELECT id, server_id, reporter_uid, target_uid, channel_id, \
     message_id, reason_code, reason_text, status, created_at, closed_at FROM moderation_cases \
     ORDER BY created_at, id";
const SELECT_MOD_ACTIONS: &str = "SELECT id, case_id, server_id, action_type, target_uid, \
     channel_id, duration_seconds, expires_at, enforced_by_uid, enforced_at \
     FROM moderation_actions ORDER BY enforced_at, id";
const SELECT_VOTE_POLICIES: &str = "SELECT server_id, threshold, quorum, window_seconds \
     FROM moderation_policies ORDER BY server_id";
const SELECT_PROPOSALS: &str = "SELECT id, case_id, server_id, action_type, duration_seconds, \
     proposed_by_uid, threshold, quorum, window_seconds, expires_at, status, created_at, \
     idempotency_key FROM moderation_proposals ORDER BY created_at, id";
const SELECT_VOTES: &str = "SELECT proposal_id, voter_uid, value, at FROM moderation_votes \
     ORDER BY at, proposal_id, voter_uid";
const SELECT_EVIDENCE: &str = "SELECT case_id, sealed FROM moderation_evidence ORDER BY case_id";
const SELECT_LAST_SEQ: &str = "SELECT seq FROM messages ORDER BY seq DESC LIMIT 1";
const SELECT_LAST_AUDIT_SEQ: &str = "SELECT seq FROM moderation_audit ORDER BY seq DESC LIMIT 1";
const SELECT_AUDIT_PAGE: &str = "SELECT seq, audit_id, server_id, case_id, actor_uid, event_type, \
     payload, created_at FROM moderation_audit WHERE server_id = $1 AND seq < $2 \
     ORDER BY seq DESC LIMIT $3";
const SELECT_LAST_EVENT_IDS: &str = "SELECT server_id, MAX(event_id) FROM events GROUP BY server_id \
     UNION ALL SELECT id, last_event_id FROM servers WHERE last_event_id > 0";
static SELECT_NEWEST_EVENTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE server_id = $1 ORDER BY event_id DESC LIMIT $2"
    )
});
static SELECT_EVENTS_AFTER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE server_id = $1 AND event_id > $2 \
         ORDER BY event_id ASC LIMIT $3"
    )
});
static SELECT_MESSAGE_BY_SEQ: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE seq = $1"));

// ---- decoding --------------------------------------------------------------------------------

pub(super) async fn all<'a, C: SqlConn, T>(
    conn: &mut C,
    sql: &'static str,
    params: Vec<super::sql::Param<'a>>,
    decode: impl Fn(&C::Row) -> Result<T, StorageError>,
) -> Result<Vec<T>, StorageError> {
    let rows = conn.fetch_all(&Statement::new(sql, params)).await?;
    rows.iter().map(decode).collect()
}

async fn memberships<C: SqlConn>(conn: &mut C) -> Result<Vec<Membership>, StorageError> {
    let mut memberships = all(conn, SELECT_MEMBERSHIPS, vec![], |row| {
        Ok(Membership {
            server_id: row.text(0)?.into(),
            user_uid: row.text(1)?.into(),
            role: wire(Role::parse, row.text(2)?, "memberships.role")?,
            spans: Vec::new(),
        })
    })
    .await?;
    let mut spans: HashMap<(ServerId, UserUid), Vec<Span>> = HashMap::new();
    for row in conn
        .fetch_all(&Statement::new(SELECT_SPANS, vec![]))
        .await?
    {
        spans
            .entry((row.text(0)?.into(), row.text(1)?.into()))
            .or_default()
            .push(Span {
                joined_seq: row.int(2)?,
                joined_at: row.int(3)?,
                left_seq: row.opt_int(4)?,
                left_at: row.opt_int(5)?,
            });
    }
    for membership in &mut memberships {
        let key = (
            std::mem::take(&mut membership.server_id),
            std::mem::take(&mut membership.user_uid),
        );
        membership.spans = spans.remove(&key).unwrap_or_default();
        (membership.server_id, membership.user_uid) = key;
    }
    memberships
        .sort_unstable_by(|a, b| (&a.server_id, &a.user_uid).cmp(&(&b.server_id, &b.user_uid)));
    Ok(memberships)
}

fn wire<T>(parse: fn(&str) -> Option<T>, text: String, column: &str) -> Result<T, StorageError> {
    parse(&text).ok_or_else(|| corrupt(column, format_args!("{text:?}")))
}

fn server(row: &impl SqlRow) -> Result<Server, StorageError> {
    Ok(Server {
        id: row.text(0)?.into(),
        display_name: row.text(1)?,
        description: row.text(2)?,
        banner_preset: row.text(3)?,
        discoverable: row.boolean(4)?,
        join_policy: wire(JoinPolicy::parse, row.text(5)?, "servers.join_policy")?,
        owner_uid: row.opt_text(6)?.map(Into::into),
        created_by_uid: row.opt_text(7)?.map(Into::into),
        created_at: row.int(8)?,
        updated_by_uid: row.opt_text(9)?.map(Into::into),
        updated_at: row.int(10)?,
    })
}

fn category(row: &impl SqlRow) -> Result<Category, StorageError> {
    Ok(Category {
        id: row.text(0)?,
        server_id: row.text(1)?.into(),
        label: row.text(2)?,
        kind: wire(ChannelKind::parse, row.text(3)?, "categories.kind")?,
        position: row.int(4)?,
        created_by_uid: row.opt_text(5)?.map(Into::into),
        created_at: row.int(6)?,
    })
}

fn channel(row: &impl SqlRow) -> Result<Channel, StorageError> {
    Ok(Channel {
        id: row.text(0)?.into(),
        server_id: row.text(1)?.into(),
        category_id: row.text(2)?,
        name: row.text(3)?,
        kind: wire(ChannelKind::parse, row.text(4)?, "channels.kind")?,
        position: row.int(5)?,
        history_visibility: wire(
            HistoryVisibility::parse,
            row.text(6)?,
            "channels.history_visibility",
        )?,
        encryption: wire(Encryption::parse, row.text(7)?, "channels.encryption")?,
        created_by_uid: row.opt_text(8)?.map(Into::into),
        created_at: row.int(9)?,
        access: ChannelAccess {
            view_min_role: row
                .opt_text(10)?
                .map(|r| wire(Role::parse, r, "channels.view_min_role"))
                .transpose()?,
            post_min_role: row
                .opt_text(11)?
                .map(|r| wire(Role::parse, r, "channels.post_min_role"))
                .transpose()?,
            member_speak: row.boolean(12)?,
        },
    })
}

fn profile(row: &impl SqlRow) -> Result<Profile, StorageError> {
    Ok(Profile {
        user_uid: row.text(0)?.into(),
        display_name: row.text(1)?,
        avatar_mode: wire(AvatarMode::parse, row.text(2)?, "profiles.avatar_mode")?,
        avatar_preset_id: row.opt_text(3)?,
        avatar_asset_id: row.opt_text(4)?,
        version: row.int(5)?,
        updated_at: row.int(6)?,
    })
}

fn privacy(row: &impl SqlRow) -> Result<Privacy, StorageError> {
    Ok(Privacy {
        server_id: row.text(0)?.into(),
        user_uid: row.text(1)?.into(),
        presence_visibility: wire(
            PresenceVisibility::parse,
            row.text(2)?,
            "member_privacy.presence_visibility",
        )?,
        mention_permission: wire(
            MentionPermission::parse,
            row.text(3)?,
            "member_privacy.mention_permission",
        )?,
        version: row.int(4)?,
        updated_at: row.int(5)?,
    })
}

fn server_profile(row: &impl SqlRow) -> Result<ServerProfile, StorageError> {
    Ok(ServerProfile {
        server_id: row.text(0)?.into(),
        user_uid: row.text(1)?.into(),
        display_name: row.text(2)?,
        avatar_mode: wire(
            AvatarMode::parse,
            row.text(3)?,
            "server_profiles.avatar_mode",
        )?,
        avatar_preset_id: row.opt_text(4)?,
        avatar_asset_id: row.opt_text(5)?,
        version: row.int(6)?,
        updated_at: row.int(7)?,
        cleared: row.boolean(8)?,
    })
}

fn case(row: &impl SqlRow) -> Result<Case, StorageError> {
    Ok(Case {
        id: row.text(0)?,
        server_id: row.text(1)?.into(),
        reporter_uid: row.text(2)?.into(),
        target_uid: row.text(3)?.into(),
        channel_id: row.opt_text(4)?,
        message_id: row.opt_text(5)?,
        reason_code: row.text(6)?,
        reason_text: row.opt_text(7)?,
        status: wire(CaseStatus::parse, row.text(8)?, "moderation_cases.status")?,
        created_at: row.int(9)?,
        closed_at: row.opt_int(10)?,
    })
}

fn mod_action(row: &impl SqlRow) -> Result<ModAction, StorageError> {
    Ok(ModAction {
        id: row.text(0)?,
        case_id: row.text(1)?,
        server_id: row.text(2)?.into(),
        action_type: wire(
            ActionType::parse,
            row.text(3)?,
            "moderation_actions.action_type",
        )?,
        target_uid: row.text(4)?.into(),
        channel_id: row.opt_text(5)?,
        duration_seconds: row.opt_int(6)?,
        expires_at: row.opt_int(7)?,
        enforced_by_uid: row.text(8)?.into(),
        enforced_at: row.int(9)?,
    })
}

/// A stored count (threshold, quorum): positive and small.
fn small_count(row: &impl SqlRow, index: usize, column: &str) -> Result<u32, StorageError> {
    let stored = row.int(index)?;
    u32::try_from(stored).map_err(|_| corrupt(column, stored))
}

fn vote_policy(row: &impl SqlRow) -> Result<(String, VotePolicy), StorageError> {
    Ok((
        row.text(0)?,
        VotePolicy {
            threshold: small_count(row, 1, "moderation_policies.threshold")?,
            quorum: small_count(row, 2, "moderation_policies.quorum")?,
            window_seconds: row.int(3)?,
        },
    ))
}

fn proposal(row: &impl SqlRow) -> Result<Proposal, StorageError> {
    Ok(Proposal {
        id: row.text(0)?,
        case_id: row.text(1)?,
        server_id: row.text(2)?.into(),
        action_type: wire(
            ActionType::parse,
            row.text(3)?,
            "moderation_proposals.action_type",
        )?,
        duration_seconds: row.opt_int(4)?,
        proposed_by_uid: row.text(5)?.into(),
        policy: VotePolicy {
            threshold: small_count(row, 6, "moderation_proposals.threshold")?,
            quorum: small_count(row, 7, "moderation_proposals.quorum")?,
            window_seconds: row.int(8)?,
        },
        expires_at: row.int(9)?,
        status: wire(
            ProposalStatus::parse,
            row.text(10)?,
            "moderation_proposals.status",
        )?,
        created_at: row.int(11)?,
        idempotency_key: row.opt_text(12)?,
    })
}

fn vote(row: &impl SqlRow) -> Result<Vote, StorageError> {
    Ok(Vote {
        proposal_id: row.text(0)?,
        voter_uid: row.text(1)?.into(),
        value: wire(VoteValue::parse, row.text(2)?, "moderation_votes.value")?,
        at: row.int(3)?,
    })
}

fn avatar_asset(row: &impl SqlRow) -> Result<AvatarAsset, StorageError> {
    Ok(AvatarAsset {
        id: row.text(0)?,
        owner_uid: row.text(1)?.into(),
        blob: row.text(2)?,
        content_type: row.text(3)?,
        width: unsigned(row, 4, "avatar_assets.width")?,
        height: unsigned(row, 5, "avatar_assets.height")?,
        bytes: unsigned(row, 6, "avatar_assets.bytes")?,
        created_at: row.int(7)?,
    })
}

fn unsigned<T: TryFrom<i64>>(
    row: &impl SqlRow,
    index: usize,
    column: &str,
) -> Result<T, StorageError> {
    let value = row.int(index)?;
    T::try_from(value).map_err(|_| corrupt(column, value))
}

fn claim_token(row: &impl SqlRow) -> Result<ClaimToken, StorageError> {
    Ok(ClaimToken {
        token_hash: row.text(0)?,
        server_id: row.text(1)?.into(),
        expires_at: row.int(2)?,
        used_at: row.opt_int(3)?,
    })
}

fn device(row: &impl SqlRow) -> Result<Device, StorageError> {
    Ok(Device {
        device_id: row.text(0)?,
        user_uid: row.text(1)?.into(),
        public_key: row.text(2)?,
        created_at: row.int(3)?,
        revoked_at: row.opt_int(4)?,
    })
}

fn identity_binding(
    row: &impl SqlRow,
) -> Result<crate::domain::identity::IdentityBinding, StorageError> {
    Ok(crate::domain::identity::IdentityBinding {
        user_uid: row.text(0)?,
        public_key: row.text(1)?,
        server_id: row.text(2)?,
        approved_by_uid: row.text(3)?,
        approved_at: row.int(4)?,
    })
}

fn session(row: &impl SqlRow) -> Result<Session, StorageError> {
    Ok(Session {
        token_hash: row.text(0)?,
        user_uid: row.text(1)?.into(),
        device_id: row.text(2)?,
        created_at: row.int(3)?,
        expires_at: row.int(4)?,
        revoked_at: row.opt_int(5)?,
    })
}

fn read_ack(row: &impl SqlRow) -> Result<ReadAck, StorageError> {
    Ok(ReadAck {
        user_uid: row.text(0)?.into(),
        channel_id: row.text(1)?.into(),
        message_id: row.text(2)?.into(),
        seq: row.int(3)?,
        acked_at: row.int(4)?,
    })
}

fn moderation(row: &impl SqlRow) -> Result<Moderation, StorageError> {
    Ok(Moderation {
        server_id: row.text(0)?.into(),
        kind: wire(ModerationKind::parse, row.text(1)?, "moderation.kind")?,
        target: row.text(2)?,
        until: row.opt_int(3)?,
        active: row.boolean(4)?,
        by_uid: row.text(5)?.into(),
        at: row.int(6)?,
    })
}

fn invite(row: &impl SqlRow) -> Result<Invite, StorageError> {
    let count = |index: usize, column: &str| {
        let stored = row.int(index)?;
        u32::try_from(stored).map_err(|_| corrupt(column, stored))
    };
    Ok(Invite {
        id: row.text(0)?,
        server_id: row.text(1)?.into(),
        code_hash: row.text(2)?,
        created_by_uid: row.text(3)?.into(),
        expires_at: row.int(4)?,
        max_uses: count(5, "invites.max_uses")?,
        use_count: count(6, "invites.use_count")?,
        created_at: row.int(7)?,
        revoked_at: row.opt_int(8)?,
    })
}

/// A page of `server_id`'s moderation audit, newest first: rows with `seq < before`, at most
/// `limit`.
pub(super) async fn audit_page<C: SqlConn>(
    conn: &mut C,
    server_id: &str,
    before: i64,
    limit: usize,
) -> Result<Vec<AuditEntry>, StorageError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    all(
        conn,
        SELECT_AUDIT_PAGE,
        vec![server_id.into(), before.into(), limit.into()],
        audit_entry,
    )
    .await
}

fn audit_entry(row: &impl SqlRow) -> Result<AuditEntry, StorageError> {
    Ok(AuditEntry {
        seq: row.int(0)?,
        audit_id: row.text(1)?,
        server_id: row.text(2)?.into(),
        case_id: row.opt_text(3)?,
        actor_uid: row.text(4)?.into(),
        event_type: row.text(5)?,
        payload: row.text(6)?,
        created_at: row.int(7)?,
    })
}

/// An event id column: stored signed, never negative.
fn event_id(row: &impl SqlRow, index: usize) -> Result<EventId, StorageError> {
    let stored = row.int(index)?;
    EventId::from_stored(stored).ok_or_else(|| corrupt("event id", stored))
}

fn event(row: &impl SqlRow) -> Result<StoredEvent, StorageError> {
    Ok(StoredEvent {
        server_id: row.text(0)?.into(),
        event_id: event_id(row, 1)?,
        kind: row.text(2)?,
        payload: row.text(3)?,
        created_at: row.int(4)?,
    })
}

/// Decodes a row selected as [`MESSAGE_COLUMNS`].
fn message_row(row: &impl SqlRow) -> Result<Message, StorageError> {
    let content = match row.opt_text(6)? {
        Some(body) => Content::Plain { body },
        None => {
            let missing = || corrupt("messages row", "neither body nor envelope");
            Content::Envelope(Envelope {
                epoch: u64::try_from(row.opt_int(7)?.ok_or_else(missing)?)
                    .map_err(|_| corrupt("messages row", "negative epoch"))?,
                ciphertext: row.opt_text(8)?.ok_or_else(missing)?,
                sender_device_id: row.opt_text(11)?.ok_or_else(missing)?,
            })
        }
    };
    Ok(Message {
        seq: row.int(0)?,
        id: row.text(1)?,
        channel_id: row.text(2)?,
        server_id: row.text(3)?,
        author_uid: row.text(4)?,
        author_device_id: row.text(5)?,
        content,
        reply_to_id: row.opt_text(12)?,
        mentions: json_array(row.text(13)?, "messages.mentions")?,
        attachments: json_array(row.text(14)?, "messages.attachments")?,
        created_at: row.int(15)?,
        deleted_at: row.opt_int(16)?,
    })
}

fn json_array<T: serde::de::DeserializeOwned>(
    text: String,
    column: &str,
) -> Result<Vec<T>, StorageError> {
    if text == "[]" {
        return Ok(Vec::new());
    }
    let mut bytes = text.into_bytes();
    simd_json::from_slice(&mut bytes).map_err(|error| corrupt(column, error))
}

/// A `usize` count as an SQL LIMIT (saturating; no real page comes near `i64::MAX`).
fn sql_limit(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}
