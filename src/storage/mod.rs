//! The storage bridge: the only place where the database and the blob folder are touched.
//!
//! Shards run on glommio, whose futures are not `Send`, while sqlx needs tokio. So storage lives on
//! one dedicated thread, `storage-bridge`, that runs a current-thread tokio runtime and the sqlx
//! pool (see `bridge`). A [`Storage`] is the shards' side of it: every method sends a typed
//! command over a bounded tokio channel and awaits the reply on a tokio oneshot. Both primitives
//! are runtime-agnostic, so the methods work from glommio, from a test thread with `block_on`,
//! or from tokio alike.
//!
//! Back-pressure: nothing queues without limit on the way to the database (see `bridge_queue`).
//! Reads, blob puts and pings take a place in a queue of [`READ_QUEUE`] commands without waiting:
//! a full queue fails the call at once with [`StorageError::Overloaded`] (503 `overloaded`), so a
//! shard's event loop never waits on it; the bridge runs at most [`MAX_READS_IN_FLIGHT`] of them
//! at once and stops taking more while that many are under way. Writes go straight to the
//! group-commit writer's queue ([`DEFAULT_WRITE_QUEUE`], `OPENCHAT_STORAGE_QUEUE`); a writer
//! waits for room there (the authority stops taking commands meanwhile, see `crate::authority`)
//! or asks for room without waiting ([`Storage::try_write_each`]).
//!
//! Reads run as concurrent tasks on the pool; writes go to one writer task that commits whatever
//! has queued up in a single transaction (group commit, see `group_commit`). Two engines sit
//! behind one contract: Postgres (`postgres`) for production and an embedded SQLite file
//! (`sqlite`) so the server runs with nothing else installed. Every command is bounded by
//! [`COMMAND_TIMEOUT`]; an unreachable database turns into [`StorageError::Unavailable`], never into
//! a hang.
//!
//! The community domain is written as [`WriteOp::Apply`] (the `Record`s of one domain command;
//! see `records`, which also explains why a batch's messages and events go in as one bulk
//! statement each) and read back with [`Storage::load_snapshot`], [`Storage::messages`],
//! [`Storage::message`] and [`Storage::events_after`] (see `reads`). Both engines share that SQL
//! through the small adapter in `sql`.

mod blobs;
mod bridge;
mod bridge_queue;
mod engine;
mod error;
mod group_commit;
mod keys;
pub use keys::{KeysAnswer, KeysQuery};
mod postgres;
mod reads;
mod records;
mod sql;
mod sqlite;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::domain::model::{AuditEntry, EventId, Message, StoredEvent};
use crate::domain::records::{MessagePage, MessageQuery, Record, Snapshot};
use crate::histogram::{Histogram, LATENCY_SECONDS};

pub use blobs::{BlobId, blob_path};
pub use bridge_queue::Writes;
pub use error::StorageError;
pub use postgres::redact_url;

/// Upper bound on any one command, measured on the bridge from the moment it starts the work; for
/// writes, on the whole batch they are committed in (retries included), so a write waits at most
/// for the batch ahead of it plus its own. On expiry the caller gets
/// [`StorageError::Unavailable`]: a database that stopped answering must not hold a request (or a
/// shard's task) forever.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a command may wait for a pooled connection (including reconnect attempts, which
/// sqlx retries with backoff while the server refuses connections). Shorter than
/// [`COMMAND_TIMEOUT`] so that "database gone" is reported as such rather than as a timeout.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long [`Storage::start`] keeps trying to reach a database that refuses connections. Covers
/// the usual "the database container starts a moment after us" without hiding a wrong URL.
pub const START_CONNECT_DEADLINE: Duration = Duration::from_secs(6);

/// How long SQLite waits for a lock held by another process before reporting BUSY (which maps
/// to `Unavailable`). Inside [`COMMAND_TIMEOUT`] so the error, not the timeout, reaches the caller.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(3);

/// Most writes committed in one transaction. Large enough that a burst commits in a few fsyncs,
/// small enough that one transaction stays well inside [`COMMAND_TIMEOUT`].
pub const MAX_WRITE_BATCH: usize = 512;

/// Default of `OPENCHAT_STORAGE_QUEUE`: writes that may wait for the group-commit writer
/// (beside the batch it is committing). A writer waits for room ([`Storage::write`],
/// [`Storage::write_each`]) or is told there is none ([`Storage::try_write_each`]); the authority
/// stops taking commands while it waits, so a stalled database ends in 503 `overloaded` at the
/// shards instead of memory growing.
pub const DEFAULT_WRITE_QUEUE: usize = 4096;

/// Reads, blob puts and pings that may wait for the bridge's dispatcher; past it a call fails at
/// once with [`StorageError::Overloaded`].
pub const READ_QUEUE: usize = 1024;

/// Reads (and blob puts) the bridge runs at once; while that many are under way it takes no
/// further command, so the [`READ_QUEUE`] fills instead.
pub const MAX_READS_IN_FLIGHT: usize = 256;

/// Largest blob accepted by [`Storage::put_blob`]. The HTTP layer should reject bigger bodies
/// earlier; this is the storage layer's own backstop.
pub const MAX_BLOB_BYTES: usize = 64 * 1024 * 1024;

/// What [`Storage::start`] needs to know.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub engine: Engine,
    /// Holds the blob folder (and, by convention, the SQLite file). Created if missing.
    pub data_dir: PathBuf,
    /// Size of the sqlx pool. Reads use it concurrently; the writer holds one connection per batch.
    pub max_connections: u32,
}

/// Which database the bridge talks to: the configuration's choice itself (its `Debug` never
/// prints a password).
pub use crate::config::DatabaseConfig as Engine;

impl Engine {
    fn name(&self) -> &'static str {
        match self {
            Engine::Postgres { .. } => "postgres",
            Engine::Sqlite { .. } => "sqlite",
        }
    }
}

/// A change to the database. Each variant is applied by one match arm per engine
/// (`postgres::apply`, `sqlite::apply`); the group-commit machinery does not look inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Set `key` to `value`, overwriting any previous value.
    PutMeta { key: String, value: String },
    /// Set `key` to `value` only if `key` has no value yet: the first writer wins.
    InsertMetaIfAbsent { key: String, value: String },
    /// The records of one domain command, committed together (in the batch's transaction) or
    /// not at all. Every record is an idempotent upsert or insert-if-absent; see
    /// `records` for what each does. Outcome: [`WriteOutcome::Done`].
    Apply(Vec<Record>),
}

/// What a committed [`WriteOp`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    Done,
    /// `InsertMetaIfAbsent` found the key already set: this is the value that won.
    Existing(String),
}

/// Counters of the group-commit writer and the pool, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StorageStats {
    /// Batches the writer took from its queue (each is one transaction, or one per op when a
    /// batch had to be split after a failure).
    pub write_batches: u64,
    /// Writes acknowledged with `Ok` (their transaction committed).
    pub writes_committed: u64,
    /// Writes answered with an error (the database refused or was unreachable).
    pub writes_failed: u64,
    /// Most writes ever taken in one batch.
    pub largest_batch: u64,
    /// How long each batch took to commit (its retries included), from the writer's side.
    pub commit_seconds: Histogram,
    /// Connections the pool holds now, and how many of them are idle (`None` before the bridge
    /// opened the database).
    pub pool: Option<PoolStats>,
}

/// The connection pool at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

impl Default for StorageStats {
    fn default() -> Self {
        StorageStats {
            write_batches: 0,
            writes_committed: 0,
            writes_failed: 0,
            largest_batch: 0,
            commit_seconds: Histogram::new(LATENCY_SECONDS),
            pool: None,
        }
    }
}

/// Shared between [`Storage`] handles and the writer task; relaxed atomics are enough because the
/// numbers are only ever read as a loose snapshot. The histogram is behind a mutex taken once per
/// batch and once per scrape.
#[derive(Default)]
struct StatsCounters {
    write_batches: AtomicU64,
    writes_committed: AtomicU64,
    writes_failed: AtomicU64,
    largest_batch: AtomicU64,
    commit_seconds: Mutex<Option<Histogram>>,
    /// The open database, for its pool's size (set by the bridge once it has opened it).
    database: OnceLock<engine::Database>,
}

impl std::fmt::Debug for StatsCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsCounters").finish_non_exhaustive()
    }
}

impl StatsCounters {
    fn record_batch(&self, size: usize, committed: usize, took: std::time::Duration) {
        self.write_batches.fetch_add(1, Ordering::Relaxed);
        self.writes_committed
            .fetch_add(committed as u64, Ordering::Relaxed);
        self.writes_failed
            .fetch_add((size - committed.min(size)) as u64, Ordering::Relaxed);
        self.largest_batch.fetch_max(size as u64, Ordering::Relaxed);
        let mut histogram = self
            .commit_seconds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        histogram
            .get_or_insert_with(|| Histogram::new(LATENCY_SECONDS))
            .observe(took.as_secs_f64());
    }

    fn snapshot(&self) -> StorageStats {
        let commit_seconds = self
            .commit_seconds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .unwrap_or_else(|| Histogram::new(LATENCY_SECONDS));
        StorageStats {
            write_batches: self.write_batches.load(Ordering::Relaxed),
            writes_committed: self.writes_committed.load(Ordering::Relaxed),
            writes_failed: self.writes_failed.load(Ordering::Relaxed),
            largest_batch: self.largest_batch.load(Ordering::Relaxed),
            commit_seconds,
            pool: self.database.get().map(engine::Database::pool_stats),
        }
    }
}

/// Runs `work` with the [`COMMAND_TIMEOUT`] bound; expiry becomes `Unavailable`. Must be awaited
/// on the bridge's tokio runtime (it uses tokio's timer).
async fn bounded<T>(
    work: impl std::future::Future<Output = Result<T, StorageError>>,
) -> Result<T, StorageError> {
    tokio::time::timeout(COMMAND_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(StorageError::timed_out()))
}

type Reply<T> = oneshot::Sender<Result<T, StorageError>>;

/// A request to the bridge thread's dispatcher (writes go to the writer's own queue instead).
/// Each carries the oneshot its answer goes to.
enum Command {
    Ping(Reply<()>),
    GetMeta {
        key: String,
        reply: Reply<Option<String>>,
    },
    PutBlob {
        bytes: Bytes,
        reply: Reply<BlobId>,
    },
    GetBlob {
        id: BlobId,
        reply: Reply<Option<Bytes>>,
    },
    LoadSnapshot {
        resume_window: usize,
        reply: Reply<Snapshot>,
    },
    Messages {
        query: MessageQuery,
        reply: Reply<MessagePage>,
    },
    Message {
        id: String,
        reply: Reply<Option<Message>>,
    },
    EventsAfter {
        server_id: String,
        after_event_id: EventId,
        limit: usize,
        reply: Reply<Vec<StoredEvent>>,
    },
    AuditPage {
        server_id: String,
        before: i64,
        limit: usize,
        reply: Reply<Vec<AuditEntry>>,
    },
    Keys {
        query: KeysQuery,
        reply: Reply<KeysAnswer>,
    },
}

/// The shards' handle on storage. Cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct Storage {
    commands: mpsc::Sender<Command>,
    writes: mpsc::Sender<group_commit::PendingWrite>,
    engine: &'static str,
    stats: Arc<StatsCounters>,
}

/// Owns the bridge thread. Dropping it shuts the bridge down like [`BridgeHandle::shutdown`].
pub struct BridgeHandle {
    /// Set to `true` to stop: the dispatcher and the writer close their queues, serve what is
    /// in them and end.
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Storage {
    /// Creates `data_dir` (and the SQLite file) if missing, spawns the `storage-bridge` thread,
    /// connects, runs the embedded migrations and returns once the bridge accepts commands.
    ///
    /// Fails with [`StorageError::Unavailable`] if the database still refuses connections after
    /// [`START_CONNECT_DEADLINE`], and with [`StorageError::Internal`] for anything that waiting
    /// will not fix (bad URL, failed migration, unwritable data dir).
    pub fn start(config: StorageConfig) -> Result<(Storage, BridgeHandle), StorageError> {
        Storage::start_with_write_queue(config, DEFAULT_WRITE_QUEUE)
    }

    /// [`Storage::start`] with room for `write_queue` waiting writes (`OPENCHAT_STORAGE_QUEUE`,
    /// at least 1) instead of [`DEFAULT_WRITE_QUEUE`].
    pub fn start_with_write_queue(
        config: StorageConfig,
        write_queue: usize,
    ) -> Result<(Storage, BridgeHandle), StorageError> {
        let engine = config.engine.name();
        let stats = Arc::new(StatsCounters::default());
        let spawned = bridge::spawn(config, stats.clone(), write_queue.max(1))?;
        let storage = Storage {
            commands: spawned.commands,
            writes: spawned.writes,
            engine,
            stats,
        };
        let handle = BridgeHandle {
            stop: spawned.stop,
            thread: Some(spawned.thread),
        };
        Ok((storage, handle))
    }

    /// `"postgres"` or `"sqlite"`.
    pub fn engine_name(&self) -> &'static str {
        self.engine
    }

    /// Round trip to the database (`SELECT 1`), for `/readyz`.
    pub async fn ping(&self) -> Result<(), StorageError> {
        self.call(Command::Ping).await
    }

    /// Queues `op` for the next group commit (waiting for room in the write queue) and resolves
    /// once its transaction committed.
    pub async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StorageError> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(group_commit::PendingWrite { op, reply })
            .await
            .map_err(|_| StorageError::bridge_stopped())?;
        answer.await.map_err(|_| StorageError::bridge_stopped())?
    }

    pub async fn get_meta(&self, key: &str) -> Result<Option<String>, StorageError> {
        let key = key.to_owned();
        self.call(|reply| Command::GetMeta { key, reply }).await
    }

    /// Stores `bytes` content-addressed and returns their id. Storing the same bytes twice is a
    /// no-op that returns the same id.
    pub async fn put_blob(&self, bytes: Bytes) -> Result<BlobId, StorageError> {
        self.call(|reply| Command::PutBlob { bytes, reply }).await
    }

    /// `Ok(None)` when no blob has this id.
    pub async fn get_blob(&self, id: &BlobId) -> Result<Option<Bytes>, StorageError> {
        let id = id.clone();
        self.call(|reply| Command::GetBlob { id, reply }).await
    }

    /// Everything the domain keeps in memory, read in one consistent transaction: every
    /// entity (lists sorted by primary key), claim tokens still unused and unexpired and sessions
    /// still unrevoked and unexpired (by the system clock now), the highest message seq (0 when
    /// none), the highest event id of each server, and each server's newest `resume_window`
    /// events, oldest first (servers in id order).
    pub async fn load_snapshot(&self, resume_window: usize) -> Result<Snapshot, StorageError> {
        self.call(|reply| Command::LoadSnapshot {
            resume_window,
            reply,
        })
        .await
    }

    /// One page of a channel's history, exactly as `MessageQuery` and `MessagePage` describe it
    /// (`crate::domain::history::MemoryHistory::query` is the executable definition).
    pub async fn messages(&self, query: MessageQuery) -> Result<MessagePage, StorageError> {
        self.call(|reply| Command::Messages { query, reply }).await
    }

    /// The message with this id, deleted or not; `Ok(None)` when there is none.
    pub async fn message(&self, id: &str) -> Result<Option<Message>, StorageError> {
        let id = id.to_owned();
        self.call(|reply| Command::Message { id, reply }).await
    }

    /// The events of `server_id` after `after_event_id`, oldest first, at most `limit`.
    pub async fn events_after(
        &self,
        server_id: &str,
        after_event_id: EventId,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        let server_id = server_id.to_owned();
        self.call(|reply| Command::EventsAfter {
            server_id,
            after_event_id,
            limit,
            reply,
        })
        .await
    }

    /// A page of `server_id`'s moderation audit, newest first: rows with `seq < before`, at
    /// most `limit`.
    pub async fn audit_page(
        &self,
        server_id: &str,
        before: i64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StorageError> {
        let server_id = server_id.to_owned();
        self.call(|reply| Command::AuditPage {
            server_id,
            before,
            limit,
            reply,
        })
        .await
    }

    /// A read of the MLS delivery service's blobs (`keys`).
    pub async fn keys(&self, query: KeysQuery) -> Result<KeysAnswer, StorageError> {
        self.call(|reply| Command::Keys { query, reply }).await
    }

    pub fn stats(&self) -> StorageStats {
        self.stats.snapshot()
    }

    /// Sends a command without waiting for room: a full [`READ_QUEUE`] is
    /// [`StorageError::Overloaded`] at once.
    async fn call<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, StorageError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .try_send(command(reply))
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => StorageError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => StorageError::bridge_stopped(),
            })?;
        // The bridge always answers unless its thread is gone (the sender is dropped with it).
        answer.await.map_err(|_| StorageError::bridge_stopped())?
    }
}

impl BridgeHandle {
    /// Stops accepting commands, finishes the ones already sent (including the pending write
    /// batch), closes the pool and joins the thread. Commands sent afterwards fail with
    /// `Unavailable("storage bridge stopped")`.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        // If the send fails the thread is already on its way out; joining is still right.
        let _ = self.stop.send(true);
        if thread.join().is_err() {
            tracing::error!("storage bridge thread panicked");
        }
    }
}

impl Drop for BridgeHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
