//! One type over both engines: opening (connect with a bounded wait, then migrate), reads, the
//! batch commit, and closing. Each method is a two-arm match into `postgres` or `sqlite` (or into
//! the shared `reads`, on a connection of that engine), so the rest of the bridge never cares
//! which engine it runs on.

use std::time::Instant;

use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

use crate::domain::model::{AuditEntry, EventId, Message, StoredEvent};
use crate::domain::records::{MessagePage, MessageQuery, Snapshot};

use super::{
    Engine, START_CONNECT_DEADLINE, StorageError, WriteOp, WriteOutcome, bounded, postgres, reads,
    sqlite,
};

/// A connected, migrated database. Cloning shares the pool.
#[derive(Clone)]
pub(super) enum Database {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Database {
    /// Connects (waiting up to [`START_CONNECT_DEADLINE`] for a database that refuses
    /// connections) and runs the engine's embedded migrations.
    pub(super) async fn open(
        engine: &Engine,
        max_connections: u32,
    ) -> Result<Database, StorageError> {
        let database = match engine {
            Engine::Postgres { url } => {
                Database::Postgres(postgres::lazy_pool(url, max_connections)?)
            }
            Engine::Sqlite { path } => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|error| {
                        StorageError::Internal(format!(
                            "cannot create {}: {error}",
                            parent.display()
                        ))
                    })?;
                }
                Database::Sqlite(sqlite::lazy_pool(path, max_connections))
            }
        };
        database.wait_until_reachable().await?;
        database.migrate().await?;
        Ok(database)
    }

    /// The pool's connections now: all, idle, and the most it opens.
    pub(super) fn pool_stats(&self) -> super::PoolStats {
        let (size, idle, max) = match self {
            Database::Postgres(pool) => (
                pool.size(),
                pool.num_idle(),
                pool.options().get_max_connections(),
            ),
            Database::Sqlite(pool) => (
                pool.size(),
                pool.num_idle(),
                pool.options().get_max_connections(),
            ),
        };
        super::PoolStats {
            size,
            idle: u32::try_from(idle).unwrap_or(u32::MAX),
            max,
        }
    }

    /// Each ping already retries refused connections for `ACQUIRE_TIMEOUT`; this loop extends
    /// that to the start deadline, but only for errors that waiting can fix (not a bad password
    /// or a missing database).
    async fn wait_until_reachable(&self) -> Result<(), StorageError> {
        let deadline = Instant::now() + START_CONNECT_DEADLINE;
        loop {
            match bounded(self.ping()).await {
                Ok(()) => return Ok(()),
                Err(error) if error.is_retryable() && Instant::now() < deadline => {
                    tracing::warn!(%error, "database not reachable yet, retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn migrate(&self) -> Result<(), StorageError> {
        let result = match self {
            Database::Postgres(pool) => postgres::MIGRATOR.run(pool).await,
            Database::Sqlite(pool) => sqlite::MIGRATOR.run(pool).await,
        };
        result.map_err(|error| StorageError::Internal(format!("migration failed: {error}")))
    }

    pub(super) async fn ping(&self) -> Result<(), StorageError> {
        let result = match self {
            Database::Postgres(pool) => postgres::ping(pool).await,
            Database::Sqlite(pool) => sqlite::ping(pool).await,
        };
        Ok(result?)
    }

    pub(super) async fn get_meta(&self, key: &str) -> Result<Option<String>, StorageError> {
        let result = match self {
            Database::Postgres(pool) => postgres::get_meta(pool, key).await,
            Database::Sqlite(pool) => sqlite::get_meta(pool, key).await,
        };
        Ok(result?)
    }

    /// Applies `ops` in one transaction and returns one outcome per op, in order.
    pub(super) async fn commit(&self, ops: &[WriteOp]) -> Result<Vec<WriteOutcome>, StorageError> {
        match self {
            Database::Postgres(pool) => postgres::commit(pool, ops).await,
            Database::Sqlite(pool) => sqlite::commit(pool, ops).await,
        }
    }

    pub(super) async fn load_snapshot(
        &self,
        resume_window: usize,
    ) -> Result<Snapshot, StorageError> {
        let now = now_millis();
        match self {
            Database::Postgres(pool) => postgres::load_snapshot(pool, resume_window, now).await,
            Database::Sqlite(pool) => sqlite::load_snapshot(pool, resume_window, now).await,
        }
    }

    pub(super) async fn messages(&self, query: &MessageQuery) -> Result<MessagePage, StorageError> {
        match self {
            Database::Postgres(pool) => reads::messages(&mut *pool.acquire().await?, query).await,
            Database::Sqlite(pool) => reads::messages(&mut *pool.acquire().await?, query).await,
        }
    }

    pub(super) async fn message(&self, id: &str) -> Result<Option<Message>, StorageError> {
        match self {
            Database::Postgres(pool) => reads::message(&mut *pool.acquire().await?, id).await,
            Database::Sqlite(pool) => reads::message(&mut *pool.acquire().await?, id).await,
        }
    }

    pub(super) async fn events_after(
        &self,
        server_id: &str,
        after_event_id: EventId,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        match self {
            Database::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                reads::events_after(&mut *conn, server_id, after_event_id, limit).await
            }
            Database::Sqlite(pool) => {
                let mut conn = pool.acquire().await?;
                reads::events_after(&mut *conn, server_id, after_event_id, limit).await
            }
        }
    }

    pub(super) async fn audit_page(
        &self,
        server_id: &str,
        before: i64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StorageError> {
        match self {
            Database::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                reads::audit_page(&mut *conn, server_id, before, limit).await
            }
            Database::Sqlite(pool) => {
                let mut conn = pool.acquire().await?;
                reads::audit_page(&mut *conn, server_id, before, limit).await
            }
        }
    }

    pub(super) async fn keys(
        &self,
        query: &super::KeysQuery,
    ) -> Result<super::KeysAnswer, StorageError> {
        match self {
            Database::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                super::keys::read(&mut *conn, query).await
            }
            Database::Sqlite(pool) => {
                let mut conn = pool.acquire().await?;
                super::keys::read(&mut *conn, query).await
            }
        }
    }

    /// Waits for borrowed connections to come back, then closes them all.
    pub(super) async fn close(&self) {
        match self {
            Database::Postgres(pool) => pool.close().await,
            Database::Sqlite(pool) => pool.close().await,
        }
    }
}

use crate::clock::now_millis;
