//! The Postgres engine: pool settings, migrations, and the SQL for each command.
//!
//! Adding a [`WriteOp`] variant means adding one arm to [`apply`] here and one to
//! `sqlite::apply`; batching, transactions and retries live in `group_commit`. The community
//! records' single-row SQL is shared with SQLite (`records`, `reads`, run through the
//! [`SqlConn`] impl below); the bulk inserts are this engine's own.

use std::str::FromStr;
use std::sync::LazyLock;

use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::postgres::{
    PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow, Postgres,
};
use sqlx::query::Query;

use crate::domain::model::{Millis, StoredEvent};
use crate::domain::records::{Record, Snapshot};

use super::records::{
    self, Bulk, EVENT_COLUMNS, MESSAGE_COLUMN_TYPES, MESSAGE_COLUMNS, MessageRow, SqlType,
};
use super::sql::{Param, SqlConn, SqlRow, Statement};
use super::{ACQUIRE_TIMEOUT, StorageError, WriteOp, WriteOutcome, reads};

pub(super) static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// Builds the pool without connecting: the caller decides how long to wait for the server.
pub(super) fn lazy_pool(url: &str, max_connections: u32) -> Result<PgPool, StorageError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|error| StorageError::Internal(format!("invalid Postgres URL: {error}")))?
        .application_name("openchatd");
    Ok(PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .min_connections(0)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // A connection that sat idle while the server restarted (or a proxy dropped it) is dead
        // but looks fine; pinging it before use lets the pool replace it instead of failing a
        // command, so service resumes by itself when the database is back.
        .test_before_acquire(true)
        .connect_lazy_with(options))
}

pub(super) async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}

pub(super) async fn get_meta(pool: &PgPool, key: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT value FROM instance_meta WHERE key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await
}

/// Runs `ops` in one transaction; either all of them commit or none does. The messages and
/// events of all `Apply` ops go in last, one bulk statement each (see `records`).
pub(super) async fn commit(
    pool: &PgPool,
    ops: &[WriteOp],
) -> Result<Vec<WriteOutcome>, StorageError> {
    if let Some(bulk) = messages_only(ops) {
        return commit_messages(pool, &bulk, ops.len()).await;
    }
    let mut tx = pool.begin().await?;
    let mut outcomes = Vec::with_capacity(ops.len());
    let mut bulk = Bulk::default();
    for op in ops {
        outcomes.push(apply(&mut tx, op, &mut bulk).await?);
    }
    insert_messages(&mut tx, &bulk).await?;
    insert_events(&mut tx, &bulk.events).await?;
    for statement in bulk.counter_updates() {
        SqlConn::execute(&mut *tx, &statement).await?;
    }
    tx.commit().await?;
    Ok(outcomes)
}

async fn apply<'a>(
    conn: &mut PgConnection,
    op: &'a WriteOp,
    bulk: &mut Bulk<'a>,
) -> Result<WriteOutcome, StorageError> {
    match op {
        WriteOp::PutMeta { key, value } => {
            sqlx::query(
                "INSERT INTO instance_meta (key, value, updated_at) VALUES ($1, $2, now()) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
            )
            .bind(key)
            .bind(value)
            .execute(&mut *conn)
            .await?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::InsertMetaIfAbsent { key, value } => {
            let inserted = sqlx::query(
                "INSERT INTO instance_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .bind(value)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if inserted == 1 {
                return Ok(WriteOutcome::Done);
            }
            // ON CONFLICT DO NOTHING waited for any competing insert to commit, so under
            // READ COMMITTED this statement sees the row that won.
            let existing: String =
                sqlx::query_scalar("SELECT value FROM instance_meta WHERE key = $1")
                    .bind(key)
                    .fetch_one(&mut *conn)
                    .await?;
            Ok(WriteOutcome::Existing(existing))
        }
        WriteOp::Apply(batch) => {
            records::apply_records(conn, batch, bulk).await?;
            Ok(WriteOutcome::Done)
        }
    }
}

/// One statement for any number of messages: each column travels as one array parameter and
/// `UNNEST` zips them back into rows. The text never changes, so it is prepared once per
/// connection.
static INSERT_MESSAGES: LazyLock<String> = LazyLock::new(|| {
    let arrays: Vec<String> = MESSAGE_COLUMN_TYPES
        .iter()
        .enumerate()
        .map(|(i, kind)| format!("${}::{}[]", i + 1, kind.name()))
        .collect();
    format!(
        "INSERT INTO messages ({MESSAGE_COLUMNS}) SELECT * FROM UNNEST({}) ON CONFLICT DO NOTHING",
        arrays.join(", ")
    )
});

static INSERT_EVENTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO events ({EVENT_COLUMNS}) \
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[]) \
         ON CONFLICT DO NOTHING"
    )
});

/// The batch as messages and event counters when that is all it holds (the posting hot path),
/// `None` otherwise.
fn messages_only(ops: &[WriteOp]) -> Option<Bulk<'_>> {
    let mut bulk = Bulk::default();
    for op in ops {
        let WriteOp::Apply(records) = op else {
            return None;
        };
        for record in records {
            // Logged events and other records need the general path.
            let bulk_only = matches!(record, Record::Message(_) | Record::LastEventId { .. });
            if !bulk_only || !bulk.take(record) {
                return None;
            }
        }
    }
    Some(bulk)
}

/// Inserts the messages and raises the counters in ONE statement, outside an explicit
/// transaction: a single statement is atomic on its own, and the batch costs one round trip
/// (and one WAL flush) instead of BEGIN, INSERT, UPDATE, COMMIT.
static INSERT_MESSAGES_AND_COUNTERS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH inserted AS ({}) \
         UPDATE servers AS s SET last_event_id = v.event_id \
         FROM UNNEST($18::text[], $19::bigint[]) AS v(server_id, event_id) \
         WHERE s.id = v.server_id AND s.last_event_id < v.event_id",
        *INSERT_MESSAGES
    )
});

async fn commit_messages(
    pool: &PgPool,
    bulk: &Bulk<'_>,
    ops: usize,
) -> Result<Vec<WriteOutcome>, StorageError> {
    let rows = message_rows(bulk)?;
    let counters = bulk.counters();
    bind_messages(sqlx::query(&INSERT_MESSAGES_AND_COUNTERS), &rows)
        .bind(counters.iter().map(|(s, _)| *s).collect::<Vec<_>>())
        .bind(counters.iter().map(|(_, id)| *id).collect::<Vec<_>>())
        .execute(pool)
        .await?;
    Ok(vec![WriteOutcome::Done; ops])
}

fn message_rows<'a>(bulk: &'a Bulk<'a>) -> Result<Vec<MessageRow<'a>>, StorageError> {
    bulk.messages
        .iter()
        .map(|message| MessageRow::new(message))
        .collect()
}

async fn insert_messages(conn: &mut PgConnection, bulk: &Bulk<'_>) -> Result<(), StorageError> {
    if bulk.messages.is_empty() {
        return Ok(());
    }
    let rows = message_rows(bulk)?;
    bind_messages(sqlx::query(&INSERT_MESSAGES), &rows)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Binds the 17 column arrays of `rows` as `$1`…`$17` (one array per column of
/// [`MessageRow::values`]).
fn bind_messages<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    rows: &'q [MessageRow<'q>],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let values: Vec<_> = rows.iter().map(MessageRow::values).collect();
    MESSAGE_COLUMN_TYPES
        .iter()
        .enumerate()
        .fold(query, |query, (column, kind)| match kind {
            SqlType::BigInt => {
                query.bind(values.iter().map(|v| v[column].int()).collect::<Vec<_>>())
            }
            SqlType::Text => {
                query.bind(values.iter().map(|v| v[column].text()).collect::<Vec<_>>())
            }
        })
}

async fn insert_events(
    conn: &mut PgConnection,
    events: &[&StoredEvent],
) -> Result<(), StorageError> {
    if events.is_empty() {
        return Ok(());
    }
    sqlx::query(&INSERT_EVENTS)
        .bind(
            events
                .iter()
                .map(|e| e.server_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.event_id.stored())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.payload.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.created_at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The snapshot's many SELECTs in one REPEATABLE READ transaction, so they all see the same
/// committed state even while the writer keeps committing.
pub(super) async fn load_snapshot(
    pool: &PgPool,
    resume_window: usize,
    now: Millis,
) -> Result<Snapshot, StorageError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let snapshot = reads::load_snapshot(&mut *tx, resume_window, now).await?;
    tx.commit().await?;
    Ok(snapshot)
}

fn bind<'q>(statement: &'q Statement<'q>) -> Query<'q, Postgres, PgArguments> {
    statement
        .params
        .iter()
        .fold(sqlx::query(&statement.sql), |query, param| match *param {
            Param::Text(value) => query.bind(value),
            Param::Int(value) => query.bind(value),
            Param::Bool(value) => query.bind(value),
        })
}

impl SqlConn for PgConnection {
    type Row = PgRow;

    async fn execute(&mut self, statement: &Statement<'_>) -> Result<u64, sqlx::Error> {
        Ok(bind(statement).execute(self).await?.rows_affected())
    }

    async fn fetch_all(&mut self, statement: &Statement<'_>) -> Result<Vec<PgRow>, sqlx::Error> {
        bind(statement).fetch_all(self).await
    }

    async fn fetch_optional(
        &mut self,
        statement: &Statement<'_>,
    ) -> Result<Option<PgRow>, sqlx::Error> {
        bind(statement).fetch_optional(self).await
    }
}

impl SqlRow for PgRow {
    fn text(&self, index: usize) -> Result<String, sqlx::Error> {
        self.try_get(index)
    }

    fn opt_text(&self, index: usize) -> Result<Option<String>, sqlx::Error> {
        self.try_get(index)
    }

    fn int(&self, index: usize) -> Result<i64, sqlx::Error> {
        self.try_get(index)
    }

    fn opt_int(&self, index: usize) -> Result<Option<i64>, sqlx::Error> {
        self.try_get(index)
    }

    fn boolean(&self, index: usize) -> Result<bool, sqlx::Error> {
        self.try_get(index)
    }
}

pub use crate::config::redact_url;
