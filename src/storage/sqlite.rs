//! The embedded SQLite engine: file settings, migrations, and the SQL for each command.
//!
//! Durability settings are the point of this file. WAL lets readers run beside the single writer;
//! `synchronous = FULL` fsyncs the WAL at every commit, so an acknowledged write survives a
//! `kill -9` *and* a power loss. That costs one fsync per transaction, which group commit
//! amortises over a whole batch. Adding a [`WriteOp`] variant means adding one arm to [`apply`]
//! here and one to `postgres::apply`. The community records' single-row SQL is shared with
//! Postgres (`records`, `reads`, run through the [`SqlConn`] impl below); the bulk inserts are
//! this engine's own.

use std::path::Path;

use sqlx::migrate::Migrator;
use sqlx::query::Query;
use sqlx::sqlite::{
    Sqlite, SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row};

use crate::domain::model::{Millis, StoredEvent};
use crate::domain::records::Snapshot;

use super::records::{
    self, Bulk, ColumnValue, EVENT_COLUMN_COUNT, EVENT_COLUMNS, MESSAGE_COLUMN_COUNT,
    MESSAGE_COLUMNS, MessageRow,
};
use super::sql::{Param, SqlConn, SqlRow, Statement};
use super::{ACQUIRE_TIMEOUT, SQLITE_BUSY_TIMEOUT, StorageError, WriteOp, WriteOutcome, reads};

/// Most bind parameters one statement may carry: SQLITE_MAX_VARIABLE_NUMBER's default since
/// SQLite 3.32 (the bundled library is newer). Bulk inserts are split to stay under it.
const MAX_BIND_PARAMETERS: usize = 32_766;

pub(super) static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// Builds the pool without connecting; the file is created on first connection.
pub(super) fn lazy_pool(path: &Path, max_connections: u32) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        // Another process (a backup, an admin shell) may hold the lock briefly; wait for it
        // rather than failing at once, but well inside COMMAND_TIMEOUT.
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true);
    SqlitePoolOptions::new()
        .max_connections(max_connections.max(1))
        .min_connections(0)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(true)
        .connect_lazy_with(options)
}

pub(super) async fn ping(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}

pub(super) async fn get_meta(pool: &SqlitePool, key: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT value FROM instance_meta WHERE key = ?1")
        .bind(key)
        .fetch_optional(pool)
        .await
}

/// Runs `ops` in one transaction; either all of them commit or none does. The messages and
/// events of all `Apply` ops go in last, in multi-row statements (see `records`).
pub(super) async fn commit(
    pool: &SqlitePool,
    ops: &[WriteOp],
) -> Result<Vec<WriteOutcome>, StorageError> {
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
    conn: &mut SqliteConnection,
    op: &'a WriteOp,
    bulk: &mut Bulk<'a>,
) -> Result<WriteOutcome, StorageError> {
    match op {
        WriteOp::PutMeta { key, value } => {
            sqlx::query(
                "INSERT INTO instance_meta (key, value, updated_at) \
                 VALUES (?1, ?2, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(key)
            .bind(value)
            .execute(&mut *conn)
            .await?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::InsertMetaIfAbsent { key, value } => {
            let inserted = sqlx::query(
                "INSERT INTO instance_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .bind(value)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if inserted == 1 {
                return Ok(WriteOutcome::Done);
            }
            let existing: String =
                sqlx::query_scalar("SELECT value FROM instance_meta WHERE key = ?1")
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

/// `INSERT INTO messages (…) VALUES (…), (…), … ON CONFLICT DO NOTHING`, as few statements as
/// the bind-parameter limit allows.
async fn insert_messages(conn: &mut SqliteConnection, bulk: &Bulk<'_>) -> Result<(), StorageError> {
    let rows = bulk
        .messages
        .iter()
        .map(|message| MessageRow::new(message))
        .collect::<Result<Vec<_>, _>>()?;
    for chunk in rows.chunks(MAX_BIND_PARAMETERS / MESSAGE_COLUMN_COUNT) {
        let mut insert =
            QueryBuilder::<Sqlite>::new(format!("INSERT INTO messages ({MESSAGE_COLUMNS}) "));
        insert.push_values(chunk, |mut row, r| {
            for value in r.values() {
                match value {
                    ColumnValue::Int(value) => row.push_bind(value),
                    ColumnValue::Text(value) => row.push_bind(value),
                };
            }
        });
        insert.push(" ON CONFLICT DO NOTHING");
        execute_bulk(conn, &mut insert, chunk.len()).await?;
    }
    Ok(())
}

async fn insert_events(
    conn: &mut SqliteConnection,
    events: &[&StoredEvent],
) -> Result<(), StorageError> {
    for chunk in events.chunks(MAX_BIND_PARAMETERS / EVENT_COLUMN_COUNT) {
        let mut insert =
            QueryBuilder::<Sqlite>::new(format!("INSERT INTO events ({EVENT_COLUMNS}) "));
        insert.push_values(chunk, |mut row, e| {
            row.push_bind(e.server_id.as_str())
                .push_bind(e.event_id.stored())
                .push_bind(e.kind.as_str())
                .push_bind(e.payload.as_str())
                .push_bind(e.created_at);
        });
        insert.push(" ON CONFLICT DO NOTHING");
        execute_bulk(conn, &mut insert, chunk.len()).await?;
    }
    Ok(())
}

/// The statement text depends on the row count, so only the one-row shape (the common case when
/// the server is quiet) is kept prepared; bigger ones are prepared, run and finalized, which is
/// cheap next to the commit's fsync and keeps them from crowding the statement cache.
async fn execute_bulk(
    conn: &mut SqliteConnection,
    insert: &mut QueryBuilder<'_, Sqlite>,
    rows: usize,
) -> Result<(), StorageError> {
    insert
        .build()
        .persistent(rows == 1)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The snapshot's many SELECTs in one read transaction: in WAL mode it reads one committed state
/// from its first SELECT to the end, whatever the writer commits meanwhile.
pub(super) async fn load_snapshot(
    pool: &SqlitePool,
    resume_window: usize,
    now: Millis,
) -> Result<Snapshot, StorageError> {
    let mut tx = pool.begin().await?;
    let snapshot = reads::load_snapshot(&mut *tx, resume_window, now).await?;
    tx.commit().await?;
    Ok(snapshot)
}

fn bind<'q>(statement: &'q Statement<'q>) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    statement
        .params
        .iter()
        .fold(sqlx::query(&statement.sql), |query, param| match *param {
            Param::Text(value) => query.bind(value),
            Param::Int(value) => query.bind(value),
            Param::Bool(value) => query.bind(value),
        })
}

impl SqlConn for SqliteConnection {
    type Row = SqliteRow;

    async fn execute(&mut self, statement: &Statement<'_>) -> Result<u64, sqlx::Error> {
        Ok(bind(statement).execute(self).await?.rows_affected())
    }

    async fn fetch_all(
        &mut self,
        statement: &Statement<'_>,
    ) -> Result<Vec<SqliteRow>, sqlx::Error> {
        bind(statement).fetch_all(self).await
    }

    async fn fetch_optional(
        &mut self,
        statement: &Statement<'_>,
    ) -> Result<Option<SqliteRow>, sqlx::Error> {
        bind(statement).fetch_optional(self).await
    }
}

impl SqlRow for SqliteRow {
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
