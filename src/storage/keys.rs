//! The tables of the MLS delivery service (wire contract Part C, migration `0010_e2ee`): what
//! each of its records writes, what the community loads of them at start (no blobs but the
//! group states), and the reads that hand blobs out (claimed packages, mailbox pages, the
//! commit log, backups). Plain SQL both engines run, as the rest of `records` and `reads`.

use crate::domain::keys::*;
use crate::domain::records::Record;

use super::StorageError;
use super::reads::all as fetch;
use super::records::column_int;
use super::sql::{SqlConn, SqlRow, Statement, corrupt};

const INSERT_PACKAGE: &str = "INSERT INTO e2ee_key_packages (key_package_ref, device_id, \
     user_uid, data, last_resort, uploaded_at, not_after, claimed_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, NULL) ON CONFLICT (key_package_ref) DO NOTHING";
const DELETE_PACKAGE: &str = "DELETE FROM e2ee_key_packages WHERE key_package_ref = $1";
const INSERT_CLAIM: &str = "INSERT INTO e2ee_claims (claim_id, key_package_ref, device_id, \
     claimer_uid, claimer_device_id, last_resort, claimed_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (claim_id) DO NOTHING";
const MARK_CLAIMED: &str = "UPDATE e2ee_key_packages SET claimed_at = $2 \
     WHERE key_package_ref = $1 AND NOT last_resort AND claimed_at IS NULL";
const UPSERT_GROUP: &str = "INSERT INTO e2ee_groups (channel_id, epoch, group_info, \
     public_state, updated_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (channel_id) DO UPDATE \
     SET epoch = excluded.epoch, group_info = excluded.group_info, \
     public_state = excluded.public_state, updated_at = excluded.updated_at";
const INSERT_COMMIT: &str = "INSERT INTO e2ee_commits (channel_id, epoch, commit_id, \
     sender_device_id, commit_blob, commit_hash, members, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (channel_id, epoch) DO NOTHING";
const UPSERT_SPAN: &str = "INSERT INTO e2ee_spans (channel_id, user_uid, from_epoch, to_epoch) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (channel_id, user_uid, from_epoch) \
     DO UPDATE SET to_epoch = excluded.to_epoch";
const INSERT_MAILBOX: &str = "INSERT INTO e2ee_mailbox (device_id, seq, kind, channel_id, epoch, \
     blob, sender_device_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (device_id, seq) DO NOTHING";
const ACK_MAILBOX: &str = "DELETE FROM e2ee_mailbox WHERE device_id = $1 AND seq <= $2";
const EXPIRE_MAILBOX: &str = "DELETE FROM e2ee_mailbox WHERE created_at <= $1";
const PURGE_MAILBOX: &str = "DELETE FROM e2ee_mailbox WHERE device_id = $1";
const PURGE_PACKAGES: &str = "DELETE FROM e2ee_key_packages WHERE device_id = $1";
const UPSERT_BACKUP: &str = "INSERT INTO e2ee_backups (user_uid, version, ciphertext, \
     kdf_metadata, updated_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_uid) DO UPDATE SET \
     version = excluded.version, ciphertext = excluded.ciphertext, \
     kdf_metadata = excluded.kdf_metadata, updated_at = excluded.updated_at";

/// Appends the statements of a Part C record.
pub(super) fn statements_for<'a>(
    record: &'a Record,
    out: &mut Vec<Statement<'a>>,
) -> Result<(), StorageError> {
    match record {
        Record::KeyPackage(p) => out.push(Statement::new(
            INSERT_PACKAGE,
            vec![
                (&p.key_package_ref).into(),
                (&p.device_id).into(),
                (&p.user_uid).into(),
                (&p.data).into(),
                super::sql::Param::Bool(p.last_resort),
                p.uploaded_at.into(),
                p.not_after.into(),
            ],
        )),
        Record::KeyPackageDeleted { key_package_ref } => {
            out.push(Statement::new(DELETE_PACKAGE, vec![key_package_ref.into()]))
        }
        Record::KeyPackageClaim(c) => {
            out.push(Statement::new(
                INSERT_CLAIM,
                vec![
                    (&c.claim_id).into(),
                    (&c.key_package_ref).into(),
                    (&c.device_id).into(),
                    (&c.claimer_uid).into(),
                    (&c.claimer_device_id).into(),
                    super::sql::Param::Bool(c.last_resort),
                    c.claimed_at.into(),
                ],
            ));
            out.push(Statement::new(
                MARK_CLAIMED,
                vec![(&c.key_package_ref).into(), c.claimed_at.into()],
            ));
        }
        Record::Group(g) => out.push(Statement::new(
            UPSERT_GROUP,
            vec![
                (&g.channel_id).into(),
                column_int("e2ee_groups.epoch", g.epoch)?.into(),
                (&g.group_info).into(),
                (&g.public_state).into(),
                g.updated_at.into(),
            ],
        )),
        Record::Commit(c) => out.push(Statement::new(
            INSERT_COMMIT,
            vec![
                (&c.channel_id).into(),
                column_int("e2ee_commits.epoch", c.epoch)?.into(),
                (&c.commit_id).into(),
                (&c.sender_device_id).into(),
                (&c.commit).into(),
                (&c.commit_hash).into(),
                (&c.members).into(),
                c.created_at.into(),
            ],
        )),
        Record::EpochSpan(s) => out.push(Statement::new(
            UPSERT_SPAN,
            vec![
                (&s.channel_id).into(),
                (&s.user_uid).into(),
                column_int("e2ee_spans.from_epoch", s.from_epoch)?.into(),
                s.to_epoch
                    .map(|e| column_int("e2ee_spans.to_epoch", e))
                    .transpose()?
                    .into(),
            ],
        )),
        Record::MailboxItem(m) => out.push(Statement::new(
            INSERT_MAILBOX,
            vec![
                (&m.device_id).into(),
                m.seq.into(),
                m.kind.as_str().into(),
                (&m.channel_id).into(),
                column_int("e2ee_mailbox.epoch", m.epoch)?.into(),
                (&m.blob).into(),
                (&m.sender_device_id).into(),
                m.created_at.into(),
            ],
        )),
        Record::MailboxAcked {
            device_id,
            up_to_seq,
        } => out.push(Statement::new(
            ACK_MAILBOX,
            vec![device_id.into(), (*up_to_seq).into()],
        )),
        Record::MailboxExpired { before } => {
            out.push(Statement::new(EXPIRE_MAILBOX, vec![(*before).into()]))
        }
        Record::DevicePurged { device_id } => {
            out.push(Statement::new(PURGE_MAILBOX, vec![device_id.into()]));
            out.push(Statement::new(PURGE_PACKAGES, vec![device_id.into()]));
        }
        Record::Backup(b) => out.push(Statement::new(
            UPSERT_BACKUP,
            vec![
                (&b.user_uid).into(),
                b.version.into(),
                (&b.ciphertext).into(),
                (&b.kdf_metadata).into(),
                b.updated_at.into(),
            ],
        )),
        other => {
            return Err(StorageError::Internal(format!(
                "not a key record: {}",
                std::any::type_name_of_val(other)
            )));
        }
    }
    Ok(())
}

/// A commit's members column, checked as the JSON array of device ids the domain wrote.
fn members_column(text: String) -> Result<String, StorageError> {
    CommitRow::member_ids_of(&text)
        .map(|_| text.clone())
        .ok_or_else(|| corrupt("e2ee_commits.members", &text))
}

fn epoch(row: &impl SqlRow, index: usize, what: &str) -> Result<u64, StorageError> {
    let stored = row.int(index)?;
    u64::try_from(stored).map_err(|_| corrupt(what, stored))
}

const SELECT_PACKAGES: &str = "SELECT key_package_ref, device_id, last_resort, not_after, \
     claimed_at IS NOT NULL, user_uid FROM e2ee_key_packages ORDER BY key_package_ref";
const SELECT_CLAIMS: &str = "SELECT key_package_ref, device_id, claimer_device_id \
     FROM e2ee_claims WHERE claimed_at > $1 ORDER BY claim_id";
const SELECT_GROUPS: &str = "SELECT channel_id, epoch, group_info, public_state, updated_at \
     FROM e2ee_groups ORDER BY channel_id";
const SELECT_RECENT_COMMITS: &str = "SELECT c.channel_id, c.epoch, c.commit_id, \
     c.sender_device_id, '', c.commit_hash, c.members, c.created_at FROM e2ee_commits c \
     JOIN e2ee_groups g ON g.channel_id = c.channel_id WHERE c.epoch + $1 >= g.epoch \
     ORDER BY c.channel_id, c.epoch";
const SELECT_SPANS: &str = "SELECT channel_id, user_uid, from_epoch, to_epoch FROM e2ee_spans \
     ORDER BY channel_id, user_uid, from_epoch";
const SELECT_MAILBOX_INDEX: &str = "SELECT device_id, seq, CAST(length(blob) AS BIGINT), created_at \
     FROM e2ee_mailbox WHERE created_at > $1 ORDER BY device_id, seq";
const SELECT_BACKUP_VERSIONS: &str = "SELECT user_uid, version FROM e2ee_backups ORDER BY user_uid";

/// What the community keeps in memory of Part C. `now` drops expired mailbox items and
/// claims older than a mailbox item's lifetime (a Welcome cannot name them any more).
pub(super) async fn load_snapshot<C: SqlConn>(
    conn: &mut C,
    now: i64,
) -> Result<KeysSnapshot, StorageError> {
    let packages = fetch(conn, SELECT_PACKAGES, vec![], |row| {
        Ok(KeyPackageIndex {
            key_package_ref: row.text(0)?,
            device_id: row.text(1)?,
            last_resort: row.boolean(2)?,
            not_after: row.int(3)?,
            claimed: row.boolean(4)?,
            user_uid: row.text(5)?,
        })
    })
    .await?;
    let claims = fetch(
        conn,
        SELECT_CLAIMS,
        vec![(now - MAILBOX_TTL_MS).into()],
        |row| Ok((row.text(0)?, row.text(1)?, row.text(2)?)),
    )
    .await?;
    let groups = fetch(conn, SELECT_GROUPS, vec![], |row| {
        Ok(GroupRow {
            channel_id: row.text(0)?,
            epoch: epoch(row, 1, "e2ee_groups.epoch")?,
            group_info: row.opt_text(2)?,
            public_state: row.opt_text(3)?,
            updated_at: row.int(4)?,
        })
    })
    .await?;
    let grace = i64::try_from(EPOCH_GRACE).unwrap_or(3);
    // Without their blobs (the commit column is selected as '').
    let recent_commits = fetch(conn, SELECT_RECENT_COMMITS, vec![grace.into()], commit_row).await?;
    let spans = fetch(conn, SELECT_SPANS, vec![], |row| {
        Ok(EpochSpan {
            channel_id: row.text(0)?,
            user_uid: row.text(1)?,
            from_epoch: epoch(row, 2, "e2ee_spans.from_epoch")?,
            to_epoch: row
                .opt_int(3)?
                .map(|e| u64::try_from(e).map_err(|_| corrupt("e2ee_spans.to_epoch", e)))
                .transpose()?,
        })
    })
    .await?;
    let mailbox = fetch(
        conn,
        SELECT_MAILBOX_INDEX,
        vec![(now - MAILBOX_TTL_MS).into()],
        |row| {
            let bytes = row.int(2)?;
            Ok((
                row.text(0)?,
                MailboxIndex {
                    seq: row.int(1)?,
                    bytes: usize::try_from(bytes).map_err(|_| corrupt("mailbox length", bytes))?,
                    created_at: row.int(3)?,
                },
            ))
        },
    )
    .await?;
    let backups = fetch(conn, SELECT_BACKUP_VERSIONS, vec![], |row| {
        Ok((row.text(0)?, row.int(1)?))
    })
    .await?;
    Ok(KeysSnapshot {
        packages,
        claims,
        groups,
        recent_commits,
        spans,
        mailbox,
        backups,
    })
}

/// A read of Part C's blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysQuery {
    /// The data of these packages, by ref.
    Packages(Vec<String>),
    /// A device's live mailbox items after `after`, at most `limit`.
    Mailbox {
        device_id: String,
        after: i64,
        limit: usize,
        now: i64,
    },
    /// A channel's commits that created epochs after `after_epoch`, at most `limit`.
    Commits {
        channel_id: String,
        after_epoch: u64,
        limit: usize,
    },
    /// The accepted commit of a channel with this hash, if any.
    CommitByHash {
        channel_id: String,
        commit_hash: String,
    },
    Backup {
        user_uid: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysAnswer {
    Packages(Vec<(String, String)>),
    Mailbox(Vec<MailboxItem>),
    Commits(Vec<CommitRow>),
    Backup(Option<Backup>),
}

const SELECT_PACKAGE_DATA: &str =
    "SELECT key_package_ref, data FROM e2ee_key_packages WHERE key_package_ref";
const SELECT_MAILBOX: &str = "SELECT device_id, seq, kind, channel_id, epoch, blob, \
     sender_device_id, created_at FROM e2ee_mailbox WHERE device_id = $1 AND seq > $2 \
     AND created_at > $3 ORDER BY seq LIMIT $4";
const SELECT_COMMITS: &str = "SELECT channel_id, epoch, commit_id, sender_device_id, \
     commit_blob, commit_hash, members, created_at FROM e2ee_commits \
     WHERE channel_id = $1 AND epoch > $2 ORDER BY epoch LIMIT $3";
const SELECT_COMMIT_BY_HASH: &str = "SELECT channel_id, epoch, commit_id, sender_device_id, \
     commit_blob, commit_hash, members, created_at FROM e2ee_commits \
     WHERE channel_id = $1 AND commit_hash = $2";
const SELECT_BACKUP: &str = "SELECT user_uid, version, ciphertext, kdf_metadata, updated_at \
     FROM e2ee_backups WHERE user_uid = $1";

pub(super) async fn read<C: SqlConn>(
    conn: &mut C,
    query: &KeysQuery,
) -> Result<KeysAnswer, StorageError> {
    let limit_of = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    Ok(match query {
        KeysQuery::Packages(refs) if refs.is_empty() => KeysAnswer::Packages(Vec::new()),
        KeysQuery::Packages(refs) => {
            // One statement for the claim's refs (a claim names at most MAX_CLAIM_USERS users'
            // active devices), in the order asked.
            let mut statement = Statement::dynamic(String::new(), Vec::new());
            let placeholders: Vec<String> =
                refs.iter().map(|r| statement.push(r.as_str())).collect();
            statement.sql =
                format!("{SELECT_PACKAGE_DATA} IN ({})", placeholders.join(", ")).into();
            let rows = conn.fetch_all(&statement).await?;
            let mut found: std::collections::HashMap<String, String> = rows
                .iter()
                .map(|row| Ok((row.text(0)?, row.text(1)?)))
                .collect::<Result<_, StorageError>>()?;
            KeysAnswer::Packages(
                refs.iter()
                    .filter_map(|r| found.remove(r).map(|data| (r.clone(), data)))
                    .collect(),
            )
        }
        KeysQuery::Mailbox {
            device_id,
            after,
            limit,
            now,
        } => KeysAnswer::Mailbox(
            fetch(
                conn,
                SELECT_MAILBOX,
                vec![
                    device_id.into(),
                    (*after).into(),
                    (now - MAILBOX_TTL_MS).into(),
                    limit_of(*limit).into(),
                ],
                |row| {
                    let kind = row.text(2)?;
                    Ok(MailboxItem {
                        device_id: row.text(0)?,
                        seq: row.int(1)?,
                        kind: MailboxKind::parse(&kind)
                            .ok_or_else(|| corrupt("e2ee_mailbox.kind", &kind))?,
                        channel_id: row.text(3)?,
                        epoch: epoch(row, 4, "e2ee_mailbox.epoch")?,
                        blob: row.text(5)?,
                        sender_device_id: row.text(6)?,
                        created_at: row.int(7)?,
                    })
                },
            )
            .await?,
        ),
        KeysQuery::Commits {
            channel_id,
            after_epoch,
            limit,
        } => KeysAnswer::Commits(
            fetch(
                conn,
                SELECT_COMMITS,
                vec![
                    channel_id.into(),
                    column_int("after_epoch", *after_epoch)?.into(),
                    limit_of(*limit).into(),
                ],
                commit_row,
            )
            .await?,
        ),
        KeysQuery::CommitByHash {
            channel_id,
            commit_hash,
        } => KeysAnswer::Commits(
            fetch(
                conn,
                SELECT_COMMIT_BY_HASH,
                vec![channel_id.into(), commit_hash.into()],
                commit_row,
            )
            .await?,
        ),
        KeysQuery::Backup { user_uid } => {
            let mut rows = fetch(conn, SELECT_BACKUP, vec![user_uid.into()], |row| {
                Ok(Backup {
                    user_uid: row.text(0)?,
                    version: row.int(1)?,
                    ciphertext: row.text(2)?,
                    kdf_metadata: row.text(3)?,
                    updated_at: row.int(4)?,
                })
            })
            .await?;
            KeysAnswer::Backup(rows.pop())
        }
    })
}

fn commit_row(row: &impl SqlRow) -> Result<CommitRow, StorageError> {
    Ok(CommitRow {
        channel_id: row.text(0)?,
        epoch: epoch(row, 1, "e2ee_commits.epoch")?,
        commit_id: row.text(2)?,
        sender_device_id: row.text(3)?,
        commit: row.text(4)?,
        commit_hash: row.text(5)?,
        members: members_column(row.text(6)?)?,
        created_at: row.int(7)?,
    })
}
