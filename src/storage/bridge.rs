//! The `storage-bridge` thread: its tokio runtime, start-up, command dispatch and shutdown.
//!
//! The runtime is tokio's *current-thread* flavour. Everything the bridge does is waiting —
//! on Postgres sockets, on SQLite's own per-connection worker threads (sqlx runs SQLite calls
//! there, not on the runtime), on the blocking pool for blob files — so one thread drives it
//! all, and the process keeps exactly one storage thread beside the shards, as the architecture
//! promises. A multi-thread runtime with one worker would add a second thread (the caller of
//! `block_on` plus the worker) and work stealing we have no use for.
//!
//! The run loop, in order:
//! 1. create the data dir and open the blob folder, build the runtime, connect and migrate;
//!    report success or the error to [`Storage::start`](super::Storage::start), which is blocked
//!    waiting for it;
//! 2. receive commands: reads become their own tasks (concurrent on the pool, each bounded by
//!    `COMMAND_TIMEOUT`, at most `MAX_READS_IN_FLIGHT` at once: with that many under way the
//!    dispatcher waits, and the bounded inbox fills); writes arrive in the single group-commit
//!    writer's own bounded queue;
//! 3. on the stop signal ([`BridgeHandle`](super::BridgeHandle)), close the inbox and the write
//!    queue (later sends fail at once with "storage bridge stopped"), still serve every command
//!    and write already queued, let the writer commit its last batch, wait for in-flight reads,
//!    close the pool, and let the thread end.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::blobs::BlobStore;
use super::engine::Database;
use super::group_commit::{self, PendingWrite};
use super::{
    Command, Engine, MAX_BLOB_BYTES, MAX_READS_IN_FLIGHT, READ_QUEUE, Reply, StatsCounters,
    StorageConfig, StorageError, bounded, postgres,
};

/// The handles of a started bridge.
pub(super) struct Spawned {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) writes: mpsc::Sender<PendingWrite>,
    pub(super) stop: watch::Sender<bool>,
    pub(super) thread: JoinHandle<()>,
}

/// The bridge side of the queues.
struct Inboxes {
    commands: mpsc::Receiver<Command>,
    writes: mpsc::Receiver<PendingWrite>,
    stop: watch::Receiver<bool>,
}

/// Spawns the bridge thread and blocks until it is ready to serve (or failed to start).
pub(super) fn spawn(
    config: StorageConfig,
    stats: Arc<StatsCounters>,
    write_queue: usize,
) -> Result<Spawned, StorageError> {
    let (commands, commands_rx) = mpsc::channel(READ_QUEUE);
    let (writes, writes_rx) = mpsc::channel(write_queue);
    let (stop, stop_rx) = watch::channel(false);
    let inboxes = Inboxes {
        commands: commands_rx,
        writes: writes_rx,
        stop: stop_rx,
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("storage-bridge".to_owned())
        .spawn(move || run(config, stats, inboxes, ready_tx))
        .map_err(|error| StorageError::Internal(format!("cannot spawn storage bridge: {error}")))?;
    let started = ready_rx.recv().unwrap_or_else(|_| {
        Err(StorageError::Internal(
            "storage bridge thread died during start".to_owned(),
        ))
    });
    match started {
        Ok(()) => Ok(Spawned {
            commands,
            writes,
            stop,
            thread,
        }),
        Err(error) => {
            let _ = thread.join();
            Err(error)
        }
    }
}

fn run(
    config: StorageConfig,
    stats: Arc<StatsCounters>,
    inboxes: Inboxes,
    ready: std::sync::mpsc::Sender<Result<(), StorageError>>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("storage-blocking")
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send(Err(StorageError::Internal(format!(
                "cannot build the storage runtime: {error}"
            ))));
            return;
        }
    };
    let blobs = match open_data_dir(&config.data_dir) {
        Ok(blobs) => blobs,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    runtime.block_on(async move {
        let database = match Database::open(&config.engine, config.max_connections).await {
            Ok(database) => database,
            Err(error) => {
                tracing::error!(engine = ?config.engine, %error, "storage failed to start");
                let _ = ready.send(Err(error));
                return;
            }
        };
        log_ready(&config);
        let _ = ready.send(Ok(()));
        serve(database, blobs, inboxes, stats).await;
        tracing::info!("storage bridge stopped");
    });
}

fn open_data_dir(data_dir: &Path) -> Result<BlobStore, StorageError> {
    let cannot = |error: std::io::Error| {
        StorageError::Internal(format!(
            "cannot prepare data dir {}: {error}",
            data_dir.display()
        ))
    };
    std::fs::create_dir_all(data_dir).map_err(cannot)?;
    BlobStore::open(data_dir).map_err(cannot)
}

fn log_ready(config: &StorageConfig) {
    match &config.engine {
        Engine::Postgres { url } => tracing::info!(
            engine = "postgres",
            database = %postgres::redact_url(url),
            max_connections = config.max_connections,
            "storage ready"
        ),
        Engine::Sqlite { path } => tracing::info!(
            engine = "sqlite",
            path = %path.display(),
            "storage ready"
        ),
    }
}

/// Steps 2 and 3 of the run loop: dispatch until the inbox is closed and drained, then wind down.
async fn serve(database: Database, blobs: BlobStore, inboxes: Inboxes, stats: Arc<StatsCounters>) {
    let Inboxes {
        commands,
        writes,
        stop,
    } = inboxes;
    let _ = stats.database.set(database.clone());
    // Every read task holds a permit; holding them all means the reads have finished.
    let reads = Arc::new(Semaphore::new(MAX_READS_IN_FLIGHT));
    // The writer runs beside the dispatcher in this same task rather than as a spawned one: it
    // needs no `Send` bound that way. Both end once the stop signal closed their queues and
    // they served what was in them.
    tokio::join!(
        dispatch(
            database.clone(),
            blobs,
            commands,
            stop.clone(),
            reads.clone()
        ),
        group_commit::run_writer(database.clone(), writes, stop, stats),
    );
    let _ = reads.acquire_many(MAX_READS_IN_FLIGHT as u32).await;
    database.close().await;
}

async fn dispatch(
    database: Database,
    blobs: BlobStore,
    mut inbox: mpsc::Receiver<Command>,
    mut stop: watch::Receiver<bool>,
    reads: Arc<Semaphore>,
) {
    let mut stopping = false;
    loop {
        let command = tokio::select! {
            biased;
            // A dropped handle stops the bridge too.
            _ = stop.wait_for(|stop| *stop), if !stopping => {
                // Commands already in the channel are still delivered after `close`.
                inbox.close();
                stopping = true;
                continue;
            }
            command = inbox.recv() => command,
        };
        let Some(command) = command else {
            break;
        };
        // With MAX_READS_IN_FLIGHT under way, wait here: the inbox fills meanwhile, and callers
        // are told `Overloaded` instead of tasks piling up. The semaphore is never closed.
        let Ok(permit) = reads.clone().acquire_owned().await else {
            break;
        };
        match command {
            Command::Ping(reply) => {
                let database = database.clone();
                spawn_read(permit, reply, async move { database.ping().await });
            }
            Command::GetMeta { key, reply } => {
                let database = database.clone();
                spawn_read(permit, reply, async move { database.get_meta(&key).await });
            }
            Command::LoadSnapshot {
                resume_window,
                reply,
            } => {
                let database = database.clone();
                spawn_read(permit, reply, async move {
                    database.load_snapshot(resume_window).await
                });
            }
            Command::Messages { query, reply } => {
                let database = database.clone();
                spawn_read(
                    permit,
                    reply,
                    async move { database.messages(&query).await },
                );
            }
            Command::Message { id, reply } => {
                let database = database.clone();
                spawn_read(permit, reply, async move { database.message(&id).await });
            }
            Command::EventsAfter {
                server_id,
                after_event_id,
                limit,
                reply,
            } => {
                let database = database.clone();
                spawn_read(permit, reply, async move {
                    database
                        .events_after(&server_id, after_event_id, limit)
                        .await
                });
            }
            Command::Keys { query, reply } => {
                let database = database.clone();
                spawn_read(permit, reply, async move { database.keys(&query).await });
            }
            Command::AuditPage {
                server_id,
                before,
                limit,
                reply,
            } => {
                let database = database.clone();
                spawn_read(permit, reply, async move {
                    database.audit_page(&server_id, before, limit).await
                });
            }
            Command::PutBlob { bytes, reply } => {
                if bytes.len() > MAX_BLOB_BYTES {
                    let _ = reply.send(Err(StorageError::Internal(format!(
                        "blob of {} bytes exceeds MAX_BLOB_BYTES ({MAX_BLOB_BYTES})",
                        bytes.len()
                    ))));
                    continue;
                }
                let blobs = blobs.clone();
                spawn_read(permit, reply, async move {
                    blocking(move || blobs.put(&bytes)).await
                });
            }
            Command::GetBlob { id, reply } => {
                let blobs = blobs.clone();
                spawn_read(permit, reply, async move {
                    let found = blocking(move || blobs.get(&id)).await?;
                    Ok(found.map(Bytes::from))
                });
            }
        }
    }
}

/// Runs one non-write command as its own task, bounded by `COMMAND_TIMEOUT`. The name is loose:
/// blob puts take this path too, because they do not touch the database and need no batching.
fn spawn_read<T: Send + 'static>(
    permit: OwnedSemaphorePermit,
    reply: Reply<T>,
    work: impl Future<Output = Result<T, StorageError>> + Send + 'static,
) {
    if reply.is_closed() {
        // The caller stopped waiting before we started; nothing would see the answer.
        return;
    }
    tokio::spawn(async move {
        let result = bounded(work).await;
        let _ = reply.send(result);
        drop(permit);
    });
}

/// Blob files are ordinary blocking I/O (with fsyncs); keep them off the runtime thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, StorageError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(StorageError::Internal(format!("blob I/O failed: {error}"))),
        Err(error) => Err(StorageError::Internal(format!("blob task failed: {error}"))),
    }
}
