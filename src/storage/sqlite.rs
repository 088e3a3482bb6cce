//! The embedded SQLite engine: file settings, migrations, and the SQL for each command.
//!
//! Durability settings are the point of this file. WAL lets readers run beside the single writer;
//! `synchronous = FULL` fsyncs the WAL at every commit, so an acknowledged write survives a
//! `kill -9` *and* a power loss. That costs one fsync per transaction, which group commit
//! amortises over a whole batch. Adding a [`WriteOp`] variant means adding one arm to [`apply`]
//! here and one to `postgres::apply`.

use std::path::Path;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use super::{ACQUIRE_TIMEOUT, SQLITE_BUSY_TIMEOUT, WriteOp, WriteOutcome};

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

/// Runs `ops` in one transaction; either all of them commit or none does.
pub(super) async fn commit(
    pool: &SqlitePool,
    ops: &[WriteOp],
) -> Result<Vec<WriteOutcome>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut outcomes = Vec::with_capacity(ops.len());
    for op in ops {
        outcomes.push(apply(&mut tx, op).await?);
    }
    tx.commit().await?;
    Ok(outcomes)
}

async fn apply(conn: &mut SqliteConnection, op: &WriteOp) -> Result<WriteOutcome, sqlx::Error> {
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
    }
}
