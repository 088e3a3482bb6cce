//! The lease keeper: a tokio task that holds the leases this node wants. It drives one
//! [`Lease`] per key on a timer (claim what is free, renew what is held every
//! [renewal interval](super::lease::LeaseTiming::renew_every), release on request), runs the
//! KV operations of different keys concurrently (one slow key must not starve the renewals of
//! the others), and publishes each held lease as a [`Grant`] in a [`LeaseView`].
//!
//! The view is what the rest of the process asks, from any thread: a `std::sync::RwLock` around
//! a map, read with no runtime. A grant carries the instant its validity ends and readers compare
//! it with their own clock, so a keeper that stalls (a blocked runtime, a dead task) makes its
//! grants run out by themselves rather than linger. A grant is withdrawn before its release is
//! sent. A command that checked the view just before that may still be executing; the revision
//! it was handed is the fencing token that later layers check at commit.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::{Id, JoinSet};

use super::kv::LeaseStore;
use super::lease::{Action, ClaimOutcome, Lease, LeaseKey, LeaseState, RenewOutcome};

/// How many operation timeouts `shutdown` waits at most: a claim still pending, then the
/// release of what it created, and one for slack.
const SHUTDOWN_ROUNDS: u32 = 3;

/// A held lease as the view shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The revision of this node's latest write of the entry: the fencing token.
    pub revision: u64,
    /// The revision of the claim that began this holding; unchanged while renewals succeed, so
    /// a different tenure means the key was lost (and its in-memory state is stale) in between.
    pub tenure: u64,
    /// The node may serve the key until this instant (exclusive).
    pub valid_until: Instant,
}

impl Grant {
    /// Whether the grant still holds at `now`.
    pub fn is_valid(&self, now: Instant) -> bool {
        now < self.valid_until
    }
}

/// The cheap, thread-safe read of the keeper's leases. Clones share one map.
#[derive(Debug, Clone, Default)]
pub struct LeaseView {
    grants: Arc<RwLock<HashMap<LeaseKey, Grant>>>,
}

impl LeaseView {
    /// The revision this node may serve `key` with at `now`, `None` if it may not.
    pub fn may_serve(&self, key: &LeaseKey, now: Instant) -> Option<u64> {
        self.grant(key, now).map(|grant| grant.revision)
    }

    /// The grant of `key` if it is valid at `now`.
    pub fn grant(&self, key: &LeaseKey, now: Instant) -> Option<Grant> {
        self.read()
            .get(key)
            .copied()
            .filter(|grant| grant.is_valid(now))
    }

    /// The keys this node may serve at `now` (for metrics and draining).
    pub fn held(&self, now: Instant) -> Vec<LeaseKey> {
        let mut keys: Vec<LeaseKey> = self
            .read()
            .iter()
            .filter(|(_, grant)| grant.is_valid(now))
            .map(|(key, _)| key.clone())
            .collect();
        keys.sort();
        keys
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<LeaseKey, Grant>> {
        // Only this module writes, with plain inserts and removes: a poisoned map is whole.
        self.grants.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, key: &LeaseKey, grant: Option<Grant>) {
        let mut grants = self.grants.write().unwrap_or_else(PoisonError::into_inner);
        match grant {
            Some(grant) => grants.insert(key.clone(), grant),
            None => grants.remove(key),
        };
    }
}

/// The task's side of the view: writes a grant only when it changed, so readers meet the
/// write lock once per renewal, not once per loop turn.
struct Publisher {
    view: LeaseView,
    published: HashMap<LeaseKey, Grant>,
}

impl Publisher {
    /// Publishes what `lease` grants now.
    fn update(&mut self, key: &LeaseKey, lease: &Lease) {
        let grant = grant(lease);
        if self.published.get(key) == grant.as_ref() {
            return;
        }
        match grant {
            Some(grant) => self.published.insert(key.clone(), grant),
            None => self.published.remove(key),
        };
        self.view.set(key, grant);
    }

    /// Withdraws the grant of a forgotten lease.
    fn forget(&mut self, key: &LeaseKey) {
        if self.published.remove(key).is_some() {
            self.view.set(key, None);
        }
    }
}

/// What the handle asks the task.
enum Command {
    Want(LeaseKey),
    Release(LeaseKey),
    /// Release everything, then answer and stop.
    Shutdown(oneshot::Sender<()>),
}

/// The answer of one KV operation, for one key.
enum Done {
    Claim(ClaimOutcome),
    Renew(RenewOutcome),
    Release,
}

/// The handle of the keeper task. Dropping it makes the task release every lease and stop;
/// [`LeaseKeeper::shutdown`] does the same and waits for it.
#[derive(Debug)]
pub struct LeaseKeeper {
    commands: mpsc::UnboundedSender<Command>,
    view: LeaseView,
    task: tokio::task::JoinHandle<()>,
    /// Bound on the wait of `shutdown`: a pending claim, then its release, plus slack.
    shutdown_limit: Duration,
}

impl LeaseKeeper {
    /// Starts the keeper for `store`'s node on the current tokio runtime (panics outside one,
    /// like `tokio::spawn`).
    pub fn spawn(store: LeaseStore) -> LeaseKeeper {
        let (commands, receiver) = mpsc::unbounded_channel();
        let view = LeaseView::default();
        let shutdown_limit = store.op_timeout() * SHUTDOWN_ROUNDS;
        let task = tokio::spawn(run(store, receiver, view.clone()));
        LeaseKeeper {
            commands,
            view,
            task,
            shutdown_limit,
        }
    }

    /// Wants `key`: it is claimed as soon as it is free, then kept.
    pub fn want(&self, key: LeaseKey) {
        // A send fails only once the task has stopped, when there is nothing left to keep.
        let _ = self.commands.send(Command::Want(key));
    }

    /// Stops wanting `key`: it stops being served at once and is released.
    pub fn release(&self, key: LeaseKey) {
        let _ = self.commands.send(Command::Release(key));
    }

    /// The view of this keeper's grants, to hand to other threads.
    pub fn view(&self) -> LeaseView {
        self.view.clone()
    }

    /// Shorthand for [`LeaseView::may_serve`] at `now`.
    pub fn may_serve(&self, key: &LeaseKey, now: Instant) -> Option<u64> {
        self.view.may_serve(key, now)
    }

    /// Releases every lease (others can claim them at once rather than after the TTL) and
    /// stops the task; bounded by three operation timeouts. Returns whether every release
    /// was answered in time.
    pub async fn shutdown(self) -> bool {
        let (done, answer) = oneshot::channel();
        if self.commands.send(Command::Shutdown(done)).is_err() {
            return false;
        }
        let answered = tokio::time::timeout(self.shutdown_limit, answer)
            .await
            .is_ok_and(|answer| answer.is_ok());
        if !answered {
            self.task.abort();
        }
        answered
    }
}

/// The task: poll every lease, start what they ask for, then sleep until the next command,
/// answer or due instant.
async fn run(store: LeaseStore, mut commands: mpsc::UnboundedReceiver<Command>, view: LeaseView) {
    let timing = store.timing();
    let store = Arc::new(store);
    let mut leases: HashMap<LeaseKey, Lease> = HashMap::new();
    let mut operations: JoinSet<(LeaseKey, Done)> = JoinSet::new();
    // Which key each running operation is for, so a panicked one can still be answered.
    let mut running: HashMap<Id, (LeaseKey, Action)> = HashMap::new();
    let mut stopping: Option<Option<oneshot::Sender<()>>> = None;
    let mut publisher = Publisher {
        view,
        published: HashMap::new(),
    };
    loop {
        let now = Instant::now();
        for (key, lease) in leases.iter_mut() {
            let action = lease.poll(now);
            // Published before anything is sent: a release withdraws the grant first.
            publisher.update(key, lease);
            if action != Action::Nothing {
                let id = start(&mut operations, &store, key.clone(), action);
                running.insert(id, (key.clone(), action));
            }
        }
        leases.retain(|key, lease| {
            let keep = lease.state() != LeaseState::Released;
            if !keep {
                publisher.forget(key);
            }
            keep
        });
        if stopping.is_some() && leases.is_empty() && operations.is_empty() {
            if let Some(Some(done)) = stopping.take() {
                let _ = done.send(());
            }
            return;
        }
        let wake = leases.values().filter_map(Lease::next_wakeup).min();
        tokio::select! {
            command = commands.recv(), if stopping.is_none() => {
                let now = Instant::now();
                match command {
                    Some(Command::Want(key)) => leases
                        .entry(key)
                        .or_insert_with(|| Lease::new(timing, now))
                        .want(now),
                    Some(Command::Release(key)) => {
                        if let Some(lease) = leases.get_mut(&key) {
                            lease.release(now);
                            publisher.update(&key, lease);
                        }
                    }
                    Some(Command::Shutdown(done)) => {
                        release_all(&mut leases, &mut publisher, now);
                        stopping = Some(Some(done));
                    }
                    None => {
                        release_all(&mut leases, &mut publisher, now);
                        stopping = Some(None);
                    }
                }
            }
            Some(joined) = operations.join_next_with_id(), if !operations.is_empty() => {
                let now = Instant::now();
                let (id, key, done) = match joined {
                    Ok((id, (key, done))) => (id, key, done),
                    Err(error) => {
                        // The operation panicked: count it as failed.
                        let Some((key, action)) = running.remove(&error.id()) else {
                            continue;
                        };
                        (error.id(), key, failed(action))
                    }
                };
                running.remove(&id);
                if let Some(lease) = leases.get_mut(&key) {
                    match done {
                        Done::Claim(outcome) => lease.claim_done(outcome, now),
                        Done::Renew(outcome) => lease.renew_done(outcome, now),
                        Done::Release => lease.release_done(now),
                    }
                    publisher.update(&key, lease);
                }
            }
            _ = sleep_until(wake), if wake.is_some() => {}
        }
    }
}

/// Stops serving and wanting every lease; the next poll sends the releases.
fn release_all(leases: &mut HashMap<LeaseKey, Lease>, publisher: &mut Publisher, now: Instant) {
    for (key, lease) in leases.iter_mut() {
        lease.release(now);
        publisher.update(key, lease);
    }
}

/// The grant a lease gives: held and not yet past its validity (the view re-checks the
/// instant at every read).
fn grant(lease: &Lease) -> Option<Grant> {
    match lease.state() {
        LeaseState::Held {
            revision, tenure, ..
        } => lease.valid_until().map(|valid_until| Grant {
            revision,
            tenure,
            valid_until,
        }),
        _ => None,
    }
}

/// Starts the KV operation of `action` for `key`; returns its task id.
fn start(
    operations: &mut JoinSet<(LeaseKey, Done)>,
    store: &Arc<LeaseStore>,
    key: LeaseKey,
    action: Action,
) -> Id {
    let store = Arc::clone(store);
    let handle = operations.spawn(async move {
        let done = match action {
            Action::Claim => Done::Claim(match store.claim(&key).await {
                Ok(Some(revision)) => ClaimOutcome::Created { revision },
                Ok(None) => ClaimOutcome::HeldElsewhere,
                Err(error) => {
                    tracing::debug!(%key, %error, "lease claim failed");
                    ClaimOutcome::Failed
                }
            }),
            Action::Renew { revision } => Done::Renew(match store.renew(&key, revision).await {
                Ok(Some(revision)) => RenewOutcome::Updated { revision },
                Ok(None) => {
                    tracing::warn!(%key, revision, "lease lost: the entry moved on");
                    RenewOutcome::WrongRevision
                }
                Err(error) => {
                    tracing::warn!(%key, %error, "lease renewal failed");
                    RenewOutcome::Failed
                }
            }),
            Action::Release { revision } => {
                if let Err(error) = store.release(&key, revision).await {
                    tracing::debug!(%key, %error, "lease release failed; it expires with the TTL");
                }
                Done::Release
            }
            // Never started: `run` starts only real actions.
            Action::Nothing => Done::Release,
        };
        (key, done)
    });
    handle.id()
}

/// The answer standing in for an operation that never answered.
fn failed(action: Action) -> Done {
    match action {
        Action::Claim => Done::Claim(ClaimOutcome::Failed),
        Action::Renew { .. } => Done::Renew(RenewOutcome::Failed),
        Action::Release { .. } | Action::Nothing => Done::Release,
    }
}

/// Sleeps until `wake`, or forever for `None` (the branch is disabled then anyway).
async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(wake) => tokio::time::sleep_until(wake.into()).await,
        None => std::future::pending().await,
    }
}
