//! The domain authority: the one thread that changes the [`Community`] state and decides every
//! command, in arrival order. Shards send it typed commands ([`Command`]: plain data, one type
//! per command, `crate::domain::community::commands`) and await the answers; it commits what a
//! command changed through the storage bridge's group commit before answering, and publishes
//! the command's realtime events to every shard only after the commit, in commit order.
//!
//! Reads that need no ordering (session checks, a member's history access, profiles, the
//! directory) do not queue: [`Authority::read`] runs on the caller's thread against the same
//! state, behind a read-write lock the authority holds for the few microseconds each command
//! takes. A read therefore never waits for the command queue, a stalled database or a flush:
//! only, at most, for the one command being decided. It sees what the commands before it
//! decided, as a queued read did (their records may still be on the way to the database; their
//! events are published only after the commit).
//!
//! Why one owner: the rules (membership spans, roles, ordering of messages and event ids) are
//! simplest and cheapest when one thread sees every change in order; a command costs a few
//! microseconds of in-memory work, while its durable write is batched with its neighbours.
//!
//! Failure policy: the state changes as soon as a command is accepted, so that the next command
//! sees it; if the commit then fails, the state is ahead of the database. Each command's records
//! are their own write in the group commit, so a write the database refuses (a constraint or
//! data error) fails that command alone: its neighbours commit. After any failure the authority
//! marks itself stale, holds the jobs that arrive (up to [`MAX_DEFERRED_JOBS`]) until its
//! in-flight writes have finished, reloads the state from storage, and runs them. What lives
//! only in memory (rate-limit windows, used join tickets, answered challenges, open sockets) is
//! carried across the reload. If the reload fails too (the database is gone), commands are
//! refused (`503`, retryable) until a later reload succeeds. Events of a failed write are never
//! published. A refused write is answered 503 `storage_unavailable` (retryable) only when the
//! database was unavailable; otherwise 500 `storage_write_failed`, not retryable.
//!
//! Back-pressure: every queue into and out of this thread is bounded, and nothing on either
//! side waits on a full one. Shards hand in commands with a `try_send` on a queue of
//! `OPENCHAT_AUTHORITY_QUEUE` places ([`DEFAULT_QUEUE`]); a full queue is
//! [`AuthorityError::Overloaded`] at once (503 `overloaded`, retryable, or a realtime error
//! frame), and the command was never taken, so it changed nothing. The authority hands each
//! flush to the storage bridge's bounded write queue (`OPENCHAT_STORAGE_QUEUE`) whole; when the
//! bridge has no room for it (a slow or locked database), the flush waits on a task of its own
//! and the authority takes no new command until it is queued: commands pile up in the bounded
//! command queue instead, and shards answer 503. That is the chain a stalled database travels
//! back to the clients by, without memory growing anywhere and without losing an acknowledged
//! write: a command is either refused before it ran, or committed and answered as always.
//! Events go to the shards the same way (`queues::Fanout`): a shard that falls behind gets the
//! rest in order, and until it has, no new command is taken. Realtime sockets opening and
//! closing are counted in a shared ledger (`queues::SocketLedger`) instead of queued, so they
//! are never refused. What the thread sends itself (commit results) is one message per flush in
//! flight, bounded by the flushes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::domain::community::{
    Audience, Command, Community, Emitted, Notice, Outcome, Settings, Subject,
};
use crate::domain::entropy::Entropy;
use crate::domain::error::{DomainError, Outage};
use crate::domain::model::{EventId, Millis};
use crate::domain::records::{Record, Snapshot};
use crate::domain::views;
use crate::realtime::{EventRing, RESUME_WINDOW_EVENTS, Resume};
use crate::storage::{Storage, StorageError, WriteOp, WriteOutcome, Writes};

mod queues;

pub use queues::{Broadcasts, SHARD_EVENT_QUEUE};
use queues::{Fanout, SocketLedger};

/// Default of `OPENCHAT_AUTHORITY_QUEUE`: commands (and reads) that may wait for the authority
/// thread. At ~15 k commands/s that is a quarter second of work; a command over it is refused at
/// once with 503 `overloaded`.
pub const DEFAULT_QUEUE: usize = 4096;

/// How often expired challenges and sessions are swept from memory.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

pub use crate::clock::now_millis;

/// The current time as the wire writes it (RFC 3339 UTC, milliseconds).
pub fn now_rfc3339() -> String {
    views::rfc3339(now_millis())
}

/// A committed event on its way to the shards: the frame is encoded once and shared.
#[derive(Debug)]
pub struct Published {
    pub server_id: String,
    pub audience: Audience,
    pub event_id: Option<EventId>,
    pub frame: Bytes,
}

/// An event kept for resuming: its frame, and what it is about for the read rule.
#[derive(Debug, Clone)]
struct Replayable {
    frame: Bytes,
    subject: Subject,
}

/// What a resuming socket gets ([`Authority::resume`]).
#[derive(Debug)]
pub struct Resumed {
    /// The frames the reader missed and may read, or `ResyncRequired`.
    pub resume: Resume,
    /// The server's last event id (named in `chat.resync_required`).
    pub last_event_id: EventId,
    /// Every event published up to this id was considered for the replay; the socket's live
    /// events start after it. Events with an id but still being committed are later and go
    /// out live.
    pub replayed_up_to: EventId,
}

/// What the shards receive from the authority.
#[derive(Debug, Clone)]
pub enum Broadcast {
    Event(Arc<Published>),
    Notice(Arc<Notice>),
}

type Job = Box<dyn FnOnce(&mut Core) + Send>;

/// Why the authority did not answer a command with the command's own result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    /// The command ran and was refused (or could not be stored), or the authority is gone.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The authority's queue is full: the command was not taken and changed nothing.
    #[error("the server is overloaded; retry shortly")]
    Overloaded,
}

/// The state, changed only by the authority thread and read by any thread.
type Shared = Arc<RwLock<Community>>;

/// The state, to read it. A command that panicked under the lock leaves it poisoned; its
/// changes were all made before the panic, so the state is read as it stands.
fn read_state(state: &Shared) -> RwLockReadGuard<'_, Community> {
    state.read().unwrap_or_else(PoisonError::into_inner)
}

/// The shards' handle. Cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct Authority {
    jobs: mpsc::Sender<Job>,
    sockets: Arc<SocketLedger>,
    state: Shared,
}

/// Returned by [`Authority::start`].
pub struct Started {
    pub authority: Authority,
    /// One receiver per shard, in shard order.
    pub receivers: Vec<Broadcasts>,
    pub stopper: Stopper,
}

/// Stops the authority thread: it refuses new commands, lets in-flight commits finish and
/// publish, and ends.
pub struct Stopper {
    stop: mpsc::UnboundedSender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Stopper {
    /// Returns `false` if the thread panicked.
    pub fn stop(mut self) -> bool {
        let _ = self.stop.send(());
        self.thread.take().is_none_or(|t| t.join().is_ok())
    }
}

struct Core {
    /// Written only here, each command under the lock for the time it takes to decide.
    community: Shared,
    settings: Settings,
    storage: Storage,
    shards: Fanout,
    sockets: Arc<SocketLedger>,
    rings: HashMap<String, EventRing<Replayable>>,
    loopback: mpsc::UnboundedSender<Internal>,
    /// Flushes not yet published: waiting for room at the bridge, queued there, or committed
    /// and waiting for an earlier one.
    in_flight: usize,
    /// Most commands in one flush: [`MAX_COMMANDS_PER_FLUSH`], or less when the bridge's write
    /// queue is smaller (a flush enters it whole).
    flush_limit: usize,
    /// A flush waits for room at the bridge; until it is queued, later flushes wait in
    /// `blocked` (in order) and no new command is taken.
    bridge_full: bool,
    blocked: VecDeque<Flush>,
    stale: bool,
    /// Set from a failed write until the reload after it: jobs wait in `deferred` meanwhile.
    deferring: bool,
    deferred: VecDeque<Job>,
    pending: Batch,
    /// Flushes can finish in any order (each waits for its storage reply on a task of its own,
    /// and tasks woken together are not polled in a promised order), but event ids were handed
    /// out in command order, and the resume rings and the shards' hubs drop an id lower than
    /// one they have seen. So flushes are published in flush order: each takes a ticket, and a
    /// finished one waits in `finished` until all before it are out.
    next_ticket: u64,
    next_to_publish: u64,
    finished: BTreeMap<u64, Option<Vec<Publication>>>,
}

/// The events and notices of one committed command.
type Publication = (Vec<Emitted>, Vec<Notice>);

/// A flush on its way to the bridge.
struct Flush {
    ticket: u64,
    batch: Batch,
}

/// Messages from the authority's own commit tasks back to its loop. Unbounded but bounded by
/// construction: at most two per flush in flight (plus one reload retry).
enum Internal {
    /// The flush that waited for room at the bridge is queued there.
    Queued,
    /// Flush `ticket` is done: the events and notices of each command that committed, in
    /// order; `failed` when some command's write did not (the state must be reloaded).
    Committed {
        ticket: u64,
        published: Vec<Publication>,
        failed: bool,
    },
    /// Flush `Some(ticket)` failed, or (`None`) a reload after a failure is due again.
    Failed { ticket: Option<u64> },
}

/// Commands taken in one wake-up whose records are not yet written.
#[derive(Default)]
struct Batch {
    done: Vec<Pending>,
}

struct Pending {
    /// The command's records: one write of the group commit, committed or refused alone.
    records: Vec<Record>,
    events: Vec<Emitted>,
    notices: Vec<Notice>,
    answer: Box<dyn FnOnce(Result<(), DomainError>) + Send>,
}

/// Most commands answered by one storage write. Bounded so one transaction stays small next
/// to the storage command timeout.
pub const MAX_COMMANDS_PER_FLUSH: usize = 256;

/// Most jobs held while the state reloads after a failed write; later ones run at once (and a
/// command among them is refused, 503, as the state is stale).
pub const MAX_DEFERRED_JOBS: usize = 10_000;

/// The community's ids and tokens come from a generator seeded by the OS, as unguessable as
/// the OS's own randomness.
fn os_entropy() -> Entropy {
    Entropy::from_seed(crate::auth::os_seed())
}

/// What a command whose write failed is told: retry later only when the database was
/// unavailable; a write it refused (a constraint or data error) fails the same way again.
fn write_failed(error: &StorageError) -> DomainError {
    match error {
        StorageError::Unavailable(_) => DomainError::Unavailable(Outage::Storage),
        StorageError::Overloaded => DomainError::Unavailable(Outage::StorageOverloaded),
        other => {
            tracing::error!(error = %other, "a domain write failed");
            DomainError::WriteFailed
        }
    }
}

impl Authority {
    /// Loads the state, bootstraps the default server (creating and seeding it on first
    /// start), and spawns the authority thread. The claim token of a freshly created default
    /// server is logged once here.
    ///
    /// `queue` is the command queue's size (`OPENCHAT_AUTHORITY_QUEUE`, at least 1).
    pub fn start(
        settings: Settings,
        storage: Storage,
        shards: usize,
        queue: usize,
        default_server_name: &str,
        default_owner: Option<&str>,
        default_owner_key: Option<&str>,
    ) -> anyhow::Result<Started> {
        let snapshot = futures_lite::future::block_on(storage.load_snapshot(0))
            .map_err(|e| anyhow::anyhow!("cannot load the community state: {e}"))?;
        let (fanout, receivers) = Fanout::new(shards, SHARD_EVENT_QUEUE);
        let core = Core::new(settings, storage, snapshot, fanout);
        let mut state = core.state();
        let mut boot =
            state.bootstrap_default_server(default_server_name, default_owner, now_millis());
        if let (Some(uid), Some(key)) = (default_owner, default_owner_key) {
            let bound = state.bind_owner_key(uid, key, now_millis());
            if bound.records.iter().any(|r| matches!(r, Record::Device(_))) {
                tracing::warn!(
                    user_uid = uid,
                    "devices of the default server's owner uid with another key than OPENCHAT_DEFAULT_SERVER_OWNER_KEY were revoked"
                );
            }
            boot.records.extend(bound.records);
        }
        let default_server_id = state.default_server_id().to_owned();
        drop(state);
        if !boot.records.is_empty() {
            futures_lite::future::block_on(core.storage.write(WriteOp::Apply(boot.records)))
                .map_err(|e| anyhow::anyhow!("cannot store the default server: {e}"))?;
        }
        if let Some(token) = boot.value {
            // Logged once, at the start that created the server; it is the only way to claim
            // the default server when no owner uid is configured.
            tracing::warn!(
                server_id = default_server_id,
                claim_token = %token,
                "default server created without an owner: claim it with POST /v1/servers/{{server_id}}/ownership:claim and this single-use token (valid 30 days), or set OPENCHAT_DEFAULT_SERVER_OWNER_UID"
            );
        }
        let (jobs, inbox) = mpsc::channel(queue.max(1));
        let sockets = core.sockets.clone();
        let state = core.community.clone();
        let (stop, stop_rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("authority".to_owned())
            .spawn(move || core.run(inbox, stop_rx))?;
        Ok(Started {
            authority: Authority {
                jobs,
                sockets,
                state,
            },
            receivers,
            stopper: Stopper {
                stop,
                thread: Some(thread),
            },
        })
    }

    /// Queues `job` without waiting for room: a full queue is [`AuthorityError::Overloaded`]
    /// at once (the job is dropped unrun).
    async fn submit<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Core, oneshot::Sender<Result<T, DomainError>>) + Send + 'static,
    ) -> Result<T, AuthorityError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |core: &mut Core| job(core, tx));
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(AuthorityError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(DomainError::Unavailable(Outage::ShuttingDown).into());
            }
        }
        rx.await
            .map_err(|_| DomainError::Unavailable(Outage::ShuttingDown))?
            .map_err(AuthorityError::Domain)
    }

    /// Runs `f` against the state without changing it, on the caller's thread: it waits for
    /// no queue, only (at most) for the command being decided. `f` must not block; it cannot
    /// hold the state across an await.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Community, Millis) -> Result<T, DomainError>,
    ) -> Result<T, AuthorityError> {
        let state = read_state(&self.state);
        f(&state, now_millis()).map_err(AuthorityError::Domain)
    }

    /// Runs a command in arrival order; answers once what it changed is committed.
    pub async fn command<C: Command>(&self, command: C) -> Result<C::Output, AuthorityError> {
        self.submit(move |core, reply| {
            if C::DURABLE && core.stale {
                let _ = reply.send(Err(DomainError::Unavailable(Outage::CatchingUp)));
                return;
            }
            let decided = command.run(&mut core.state(), now_millis());
            match decided {
                Err(e) => {
                    tracing::debug!(command = C::NAME, refused = e.code(), "command refused");
                    let _ = reply.send(Err(e));
                }
                Ok(outcome) => core.commit(outcome, reply),
            }
        })
        .await
    }

    /// Events of `server_id` after `since` for a resuming socket of `reader_uid` (wire
    /// contract B.3): only those the reader could read when they happened (the read rule of
    /// history, `Community::replay_rule`), in order.
    pub async fn resume(
        &self,
        server_id: String,
        reader_uid: String,
        since: EventId,
    ) -> Result<Resumed, AuthorityError> {
        self.submit(move |core, reply| {
            let community = read_state(&core.community);
            let last = community.last_event_id(&server_id);
            let ring = core.rings.get(&server_id);
            let replayed_up_to = ring.map_or(EventId::NONE, |r| r.latest());
            let resume = if since == last {
                Resume::Events(Vec::new())
            } else if since > last {
                // An id this server never issued (a reset database, another instance).
                Resume::ResyncRequired
            } else {
                match ring {
                    Some(ring) => {
                        let mut rule = community.replay_rule(&server_id, &reader_uid);
                        match ring.since_where(since, |e| rule.allows(&e.subject)) {
                            Resume::Events(events) => {
                                Resume::Events(events.into_iter().map(|e| e.frame).collect())
                            }
                            Resume::ResyncRequired => Resume::ResyncRequired,
                        }
                    }
                    None => Resume::ResyncRequired,
                }
            };
            drop(community);
            let _ = reply.send(Ok(Resumed {
                resume,
                last_event_id: last,
                replayed_up_to,
            }));
        })
        .await
    }

    /// Status bookkeeping from realtime sockets: counted in the ledger, never refused; the
    /// authority applies it before the next command it runs.
    pub fn socket_opened(&self, server_id: String, uid: String) {
        self.sockets.record(server_id, uid, 1);
    }

    /// Commands (and reads) waiting for the authority thread now, for `/metrics`.
    pub fn queue_depth(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }

    pub fn socket_closed(&self, server_id: String, uid: String) {
        self.sockets.record(server_id, uid, -1);
    }
}

/// The frame clients get for an event: `{type, payload, event_id, server_id, timestamp}`.
pub fn frame_of(event: &Emitted) -> Bytes {
    crate::wire::realtime::encode_frame(
        event.kind,
        event.payload.as_bytes(),
        event.event_id.map(|id| id.0),
        &event.server_id,
        &views::rfc3339(event.created_at),
    )
}

impl Core {
    fn new(settings: Settings, storage: Storage, snapshot: Snapshot, shards: Fanout) -> Core {
        let (loopback, _) = mpsc::unbounded_channel();
        let flush_limit = MAX_COMMANDS_PER_FLUSH
            .min(storage.write_queue_size())
            .max(1);
        Core {
            community: Arc::new(RwLock::new(Community::new(
                settings.clone(),
                snapshot,
                os_entropy(),
            ))),
            settings,
            storage,
            shards,
            sockets: Arc::default(),
            rings: HashMap::new(),
            loopback,
            in_flight: 0,
            flush_limit,
            bridge_full: false,
            blocked: VecDeque::new(),
            stale: false,
            deferring: false,
            deferred: VecDeque::new(),
            pending: Batch::default(),
            next_ticket: 0,
            next_to_publish: 0,
            finished: BTreeMap::new(),
        }
    }

    /// Takes a loaded state. The resume windows start empty, just after each server's last
    /// event id: events from before a (re)load are not all stored (new-message events are only
    /// counted), so resuming across it must answer `chat.resync_required`, never a window with
    /// holes in it.
    fn install(&mut self, snapshot: Snapshot) {
        self.rings.clear();
        let mut fresh = Community::new(self.settings.clone(), snapshot, os_entropy());
        let mut state = self.state();
        fresh.restore_volatile(state.take_volatile());
        *state = fresh;
    }

    /// The state, to change it. Held for one command (or one bookkeeping step) at a time:
    /// every read on the shards waits while it is held.
    fn state(&self) -> RwLockWriteGuard<'_, Community> {
        self.community
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Folds the sockets opened and closed since the last look into the state.
    fn count_sockets(&mut self) {
        let counts = self.sockets.take();
        if counts.is_empty() {
            return;
        }
        let mut state = self.state();
        for ((server_id, uid), net) in counts {
            for _ in 0..net.unsigned_abs() {
                if net > 0 {
                    state.socket_opened(&server_id, &uid);
                } else {
                    state.socket_closed(&server_id, &uid);
                }
            }
        }
    }

    /// Whether the loop takes commands: not while a flush waits for the bridge or a shard
    /// falls behind on events (see the module docs).
    fn taking(&self) -> bool {
        !self.bridge_full && self.shards.caught_up()
    }

    /// Runs a job, or holds it while the state reloads after a failed write. The socket counts
    /// are brought up to date first: a socket opened before the job was sent is counted in it.
    fn take(&mut self, job: Job) {
        if self.deferring && self.deferred.len() < MAX_DEFERRED_JOBS {
            self.deferred.push_back(job);
        } else {
            self.count_sockets();
            job(self);
        }
    }

    /// Runs the jobs held during a reload, in arrival order, and writes what they produced.
    fn run_deferred(&mut self) {
        self.deferring = false;
        while let Some(job) = self.deferred.pop_front() {
            self.count_sockets();
            job(self);
            if self.pending.done.len() >= self.flush_limit {
                self.flush();
            }
        }
        self.flush();
    }

    fn run(mut self, mut inbox: mpsc::Receiver<Job>, mut stop: mpsc::UnboundedReceiver<()>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("authority runtime");
        let local = tokio::task::LocalSet::new();
        let (loopback, mut internal) = mpsc::unbounded_channel();
        self.loopback = loopback;
        local.block_on(&runtime, async move {
            let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                let taking = self.taking();
                let lagging = self.shards.lagging();
                tokio::select! {
                    biased;
                    Some(msg) = internal.recv() => self.on_internal(msg).await,
                    (shard, permit) = room_at(lagging) => self.shards.resume(shard, permit),
                    job = inbox.recv(), if taking => match job {
                        Some(job) => {
                            self.take(job);
                            // Take whatever else is already queued, then write it all at once.
                            while self.pending.done.len() < self.flush_limit {
                                match inbox.try_recv() {
                                    Ok(job) => self.take(job),
                                    Err(_) => break,
                                }
                            }
                            self.flush();
                        }
                        None => break,
                    },
                    _ = sweep.tick() => {
                        self.count_sockets();
                        self.state().sweep(now_millis());
                        // Evidence past its keeping time, and key packages and mailbox items
                        // past theirs, are deleted like any change: committed.
                        let mut purged = self.state().purge_evidence(now_millis());
                        purged.extend(self.state().purge_keys(now_millis()));
                        if !purged.is_empty() {
                            let (reply, _) = oneshot::channel();
                            let outcome = Outcome {
                                value: (),
                                records: purged,
                                events: Vec::new(),
                                notices: Vec::new(),
                            };
                            self.commit(outcome, reply);
                            self.flush();
                        }
                    }
                    _ = stop.recv() => break,
                }
            }
            // Let commits already under way (or waiting for the bridge) finish and publish.
            while self.in_flight > 0 {
                match internal.recv().await {
                    Some(msg) => self.on_internal(msg).await,
                    None => break,
                }
            }
        });
    }

    /// Queues the command's records for the next flush; the answer goes out after it commits.
    fn commit<T: Send + 'static>(
        &mut self,
        outcome: Outcome<T>,
        reply: oneshot::Sender<Result<T, DomainError>>,
    ) {
        let Outcome {
            value,
            records,
            events,
            notices,
        } = outcome;
        if records.is_empty() {
            self.publish(events, notices);
            let _ = reply.send(Ok(value));
            return;
        }
        self.pending.done.push(Pending {
            records,
            events,
            notices,
            answer: Box::new(move |result| {
                let _ = reply.send(result.map(|()| value));
            }),
        });
    }

    /// Hands everything the commands since the last flush produced to storage, one write per
    /// command, sent together so the group commit puts them in one transaction (and, when the
    /// database refuses one, commits the others without it); then answers them and publishes
    /// the events of those that committed, in order. Under load, one wake of this thread takes
    /// many commands, so this is where group commit starts: fewer, larger transactions and one
    /// cross-thread round trip per batch.
    fn flush(&mut self) {
        if self.pending.done.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        let flush = Flush {
            ticket: self.next_ticket,
            batch,
        };
        self.next_ticket += 1;
        self.in_flight += 1;
        if self.bridge_full {
            self.blocked.push_back(flush);
        } else {
            self.send(flush);
        }
    }

    /// Hands `flush` to the bridge whole: at once when its write queue has room, else from a
    /// task that waits for the room while the loop takes no new command (`bridge_full`).
    fn send(&mut self, flush: Flush) {
        let Flush { ticket, mut batch } = flush;
        let ops = batch
            .done
            .iter_mut()
            .map(|p| WriteOp::Apply(std::mem::take(&mut p.records)))
            .collect();
        let loopback = self.loopback.clone();
        match self.storage.try_write_each(ops) {
            Ok(writes) => {
                tokio::task::spawn_local(finish(ticket, batch, writes, loopback));
            }
            Err(ops) => {
                tracing::debug!("the storage bridge is full; commands wait");
                self.bridge_full = true;
                let storage = self.storage.clone();
                tokio::task::spawn_local(async move {
                    let writes = storage.queue_writes(ops).await;
                    let _ = loopback.send(Internal::Queued);
                    finish(ticket, batch, writes, loopback).await;
                });
            }
        }
    }

    /// The flush that waited is queued at the bridge: send the ones behind it, until one has
    /// to wait again.
    fn on_queued(&mut self) {
        self.bridge_full = false;
        while !self.bridge_full
            && let Some(flush) = self.blocked.pop_front()
        {
            self.send(flush);
        }
    }

    async fn on_internal(&mut self, msg: Internal) {
        if let Internal::Queued = msg {
            self.on_queued();
            return;
        }
        self.in_flight -= 1;
        match msg {
            Internal::Queued => {}
            Internal::Committed {
                ticket,
                published,
                failed,
            } => {
                self.finished.insert(ticket, Some(published));
                if failed {
                    tracing::warn!("a write failed; the authority reloads its state from storage");
                    self.stale = true;
                    self.deferring = true;
                }
            }
            Internal::Failed { ticket } => {
                if let Some(ticket) = ticket {
                    tracing::warn!("a write failed; the authority reloads its state from storage");
                    self.finished.insert(ticket, None);
                }
                self.stale = true;
            }
        }
        // Publishes finished flushes up to the first one still under way.
        while let Some(finished) = self.finished.remove(&self.next_to_publish) {
            self.next_to_publish += 1;
            for (events, notices) in finished.into_iter().flatten() {
                self.publish(events, notices);
            }
        }
        if self.stale && self.in_flight == 0 {
            match self.storage.load_snapshot(0).await {
                Ok(snapshot) => {
                    self.install(snapshot);
                    self.stale = false;
                    tracing::info!("authority state reloaded");
                    self.run_deferred();
                }
                Err(error) => {
                    tracing::warn!(%error, "reload failed; retrying on the next command");
                    // The held jobs run now; their commands are refused while the state is
                    // stale, so they learn at once that storage is unavailable.
                    self.run_deferred();
                    // Try again soon even if no command arrives.
                    self.in_flight += 1;
                    let loopback = self.loopback.clone();
                    tokio::task::spawn_local(async move {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        let _ = loopback.send(Internal::Failed { ticket: None });
                    });
                }
            }
        }
    }

    fn publish(&mut self, events: Vec<Emitted>, notices: Vec<Notice>) {
        for event in events {
            let frame = frame_of(&event);
            if let Some(id) = event.event_id {
                self.rings
                    .entry(event.server_id.clone())
                    .or_insert_with(|| {
                        EventRing::starting_after(EventId(id.0 - 1), RESUME_WINDOW_EVENTS)
                    })
                    .push(
                        id,
                        Replayable {
                            frame: frame.clone(),
                            subject: event.subject,
                        },
                    );
            }
            let published = Arc::new(Published {
                server_id: event.server_id,
                audience: event.audience,
                event_id: event.event_id,
                frame,
            });
            self.shards.send(Broadcast::Event(published));
        }
        for notice in notices {
            self.shards.send(Broadcast::Notice(Arc::new(notice)));
        }
    }
}

/// Waits for room in the channel of the lagging shard, if any (never resolves otherwise).
async fn room_at(
    lagging: Option<(usize, mpsc::Sender<Broadcast>)>,
) -> (usize, Option<mpsc::OwnedPermit<Broadcast>>) {
    match lagging {
        Some((shard, sender)) => (shard, sender.reserve_owned().await.ok()),
        None => std::future::pending().await,
    }
}

/// Waits for a flush's writes, answers each command, and reports the flush to the loop (which
/// publishes the events of those that committed, in flush order).
async fn finish(
    ticket: u64,
    batch: Batch,
    writes: Writes,
    loopback: mpsc::UnboundedSender<Internal>,
) {
    let results: Vec<Result<WriteOutcome, StorageError>> = writes.outcomes().await;
    let mut published = Vec::with_capacity(batch.done.len());
    let mut answers = Vec::with_capacity(batch.done.len());
    let mut failed = false;
    for (p, result) in batch.done.into_iter().zip(results) {
        match result {
            Ok(_) => {
                published.push((p.events, p.notices));
                answers.push((p.answer, Ok(())));
            }
            Err(error) => {
                failed = true;
                answers.push((p.answer, Err(write_failed(&error))));
            }
        }
    }
    let _ = loopback.send(Internal::Committed {
        ticket,
        published,
        failed,
    });
    for (answer, result) in answers {
        answer(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::community::commands::TakeWriteToken;
    use crate::domain::community::fixtures::booted;
    use crate::domain::model::HistoryVisibility;

    /// A handle whose queue nobody reads, over a state with the default server.
    fn unread(queue: usize) -> (Authority, mpsc::Receiver<Job>) {
        let (jobs, inbox) = mpsc::channel(queue);
        let community = booted(HistoryVisibility::Joined, 1_000);
        let authority = Authority {
            jobs,
            sockets: Arc::default(),
            state: Arc::new(RwLock::new(community)),
        };
        (authority, inbox)
    }

    fn spend(uid: &str) -> TakeWriteToken {
        TakeWriteToken { uid: uid.into() }
    }

    fn poll_once<F: std::future::Future>(future: F) -> Option<F::Output> {
        futures_lite::future::block_on(futures_lite::future::poll_once(std::pin::pin!(future)))
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_takes_nothing() {
        let (authority, mut inbox) = unread(1);
        let mut waiting = Box::pin(authority.command(spend("a")));
        assert!(
            poll_once(&mut waiting).is_none(),
            "the first job is queued and waits"
        );
        assert_eq!(
            poll_once(authority.command(spend("b"))),
            Some(Err(AuthorityError::Overloaded))
        );
        assert!(inbox.try_recv().is_ok());
        assert!(inbox.try_recv().is_err(), "the refused job was not queued");
    }

    #[test]
    fn reads_answer_while_the_queue_is_full() {
        let (authority, _inbox) = unread(1);
        let mut waiting = Box::pin(authority.command(spend("a")));
        assert!(poll_once(&mut waiting).is_none());
        assert_eq!(
            poll_once(authority.command(spend("b"))),
            Some(Err(AuthorityError::Overloaded)),
            "the queue is full"
        );
        // A session check or a history decision does not queue: it is answered at once.
        let read = authority.read(|c, _| Ok(c.default_server_id().to_owned()));
        assert_eq!(read, Ok("home".to_owned()));
        let access = authority.read(|c, _| Ok(c.history_access_now(None, "nope").is_some()));
        assert_eq!(
            access,
            Ok(true),
            "an unknown channel is decided without a command"
        );
    }

    #[test]
    fn a_stopped_authority_is_unavailable_not_overloaded() {
        let (authority, inbox) = unread(1);
        drop(inbox);
        let refused = poll_once(authority.command(spend("a"))).expect("answered at once");
        // Refused as the shutdown it is (503 `storage_unavailable`), not as a full queue.
        assert!(
            matches!(refused, Err(AuthorityError::Domain(_))),
            "{refused:?}"
        );
    }

    #[test]
    fn socket_bookkeeping_is_counted_even_when_the_queue_is_full() {
        let (authority, _inbox) = unread(1);
        let _waiting = Box::pin(authority.command(spend("a")));
        authority.socket_opened("srv".into(), "alice".into());
        authority.socket_opened("srv".into(), "alice".into());
        authority.socket_closed("srv".into(), "alice".into());
        let counted = authority.sockets.take();
        assert_eq!(counted[&("srv".to_owned(), "alice".to_owned())], 1);
    }
}
