//! The cluster driver of one node: a thread with its own tokio runtime holding the NATS
//! connection, the lease bucket and the [`LeaseKeeper`] of the keys this node wants, and a
//! cheap [`ClusterStatus`] for the shards (readiness, metrics).
//!
//! A thread of its own rather than the storage bridge's runtime: a stalled or unreachable bus
//! must never delay a database write, and the bridge must never delay a lease renewal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::kv::{CONNECT_TIMEOUT, LeaseStore, OP_TIMEOUT};
use super::tickets::TicketStore;
use super::{ClusterError, LeaseKeeper, LeaseKey, LeaseTiming, LeaseView};
use crate::config::ClusterConfig;

/// How often the connection's state is sampled for [`ClusterStatus::bus_connected`].
const STATE_POLL: Duration = Duration::from_millis(200);
/// How often the client pings the server: a bus that stopped answering (a partition, not a
/// closed socket) is noticed within about two of these.
const PING_INTERVAL: Duration = Duration::from_secs(1);

/// Ticket claims waiting for the driver; past this, a join is answered `cluster_unavailable`
/// (retryable) instead of queueing without bound.
const TICKET_QUEUE: usize = 1024;

type TicketClaim = (String, oneshot::Sender<Result<bool, ClusterError>>);

/// Revocations waiting to be published; past this they are dropped with a warning (the other
/// nodes then honour the revoke at their next start, from the database).
const REVOKED_QUEUE: usize = 4096;

/// What a node does with a session another node revoked (the token's hash): the wiring runs
/// the authority's `ForgetRevokedSession`.
pub type RevokedHook = Arc<
    dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync,
>;

/// The subject of revoked sessions.
fn revoked_subject(cluster: &str) -> String {
    format!("{cluster}.sessions.revoked")
}

/// What the shards may ask of the cluster driver, from any thread.
#[derive(Debug, Clone)]
pub struct ClusterStatus {
    node_id: Arc<str>,
    connected: Arc<AtomicBool>,
    view: LeaseView,
    tickets: mpsc::Sender<TicketClaim>,
    revoked: mpsc::Sender<String>,
}

impl ClusterStatus {
    /// This node's name (`OPENCHAT_NODE_ID`).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Whether the NATS connection is up now (sampled every [`STATE_POLL`]).
    pub fn bus_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Leases this node may serve at `now`.
    pub fn leases_held(&self, now: Instant) -> usize {
        self.view.held(now).len()
    }

    /// Marks the join ticket `jti` used, cluster-wide: `true` the first time on any node. Works
    /// from any executor (a glommio shard awaits the answer of the driver's tokio thread).
    pub async fn claim_ticket(&self, jti: &str) -> Result<bool, ClusterError> {
        let (reply, answer) = oneshot::channel();
        self.tickets
            .try_send((jti.to_owned(), reply))
            .map_err(|_| ClusterError::Unavailable("too many ticket claims in flight"))?;
        answer
            .await
            .map_err(|_| ClusterError::Unavailable("the cluster driver stopped"))?
    }

    /// Tells the other nodes that the session of `token_hash` was revoked here; they forget it
    /// within the bus's delivery time (milliseconds on a LAN).
    pub fn publish_revoked_session(&self, token_hash: &str) {
        if self.revoked.try_send(token_hash.to_owned()).is_err() {
            tracing::warn!("a revoked session was not published to the cluster (queue full)");
        }
    }

    /// Whether this node may serve `key` at `now`, and at which revision (the fencing token).
    pub fn may_serve(&self, key: &LeaseKey, now: Instant) -> Option<u64> {
        self.view.may_serve(key, now)
    }
}

/// The running driver; [`ClusterNode::stop`] releases its leases.
pub struct ClusterNode {
    status: ClusterStatus,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<bool>>,
}

impl ClusterNode {
    /// Connects to the bus of `config`, opens the lease bucket and starts keeping the leases of
    /// `wanted`. Returns once connected; a bus that cannot be reached within the connect
    /// timeout is an error (the start fails and says so). `on_revoked` runs for each session
    /// another node revoked.
    pub fn start(
        config: &ClusterConfig,
        wanted: Vec<LeaseKey>,
        on_revoked: RevokedHook,
    ) -> Result<ClusterNode, ClusterError> {
        Self::start_with_timing(config, wanted, on_revoked, LeaseTiming::PRODUCTION)
    }

    /// [`ClusterNode::start`] with other lease timings (tests).
    #[doc(hidden)]
    pub fn start_with_timing(
        config: &ClusterConfig,
        wanted: Vec<LeaseKey>,
        on_revoked: RevokedHook,
        timing: LeaseTiming,
    ) -> Result<ClusterNode, ClusterError> {
        let config = config.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("cluster".into())
            .spawn(move || run(config, wanted, on_revoked, timing, ready_tx, stopped))
            .map_err(|e| ClusterError::Connect(Box::new(e)))?;
        match ready_rx.recv() {
            Ok(Ok(status)) => Ok(ClusterNode {
                status,
                stop: Some(stop),
                thread: Some(thread),
            }),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(_) => {
                let _ = thread.join();
                Err(ClusterError::Connect(
                    "the cluster thread stopped at start".into(),
                ))
            }
        }
    }

    pub fn status(&self) -> ClusterStatus {
        self.status.clone()
    }

    /// Releases every lease (others take over at once, not after the TTL) and stops the
    /// thread. Returns whether every release was answered in time.
    pub fn stop(mut self) -> bool {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> bool {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.thread
            .take()
            .map(|thread| thread.join().unwrap_or(false))
            .unwrap_or(true)
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn run(
    config: ClusterConfig,
    wanted: Vec<LeaseKey>,
    on_revoked: RevokedHook,
    timing: LeaseTiming,
    ready: std::sync::mpsc::Sender<Result<ClusterStatus, ClusterError>>,
    stopped: oneshot::Receiver<()>,
) -> bool {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(ClusterError::Connect(Box::new(e))));
            return false;
        }
    };
    runtime.block_on(async move {
        let (client, keeper, status) = match start(&config, wanted, on_revoked, timing).await {
            Ok(started) => started,
            Err(e) => {
                let _ = ready.send(Err(e));
                return false;
            }
        };
        let connected = status.connected.clone();
        if ready.send(Ok(status)).is_err() {
            return keeper.shutdown().await;
        }
        let mut stopped = stopped;
        let mut poll = tokio::time::interval(STATE_POLL);
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = poll.tick() => {
                    let up = client.connection_state() == async_nats::connection::State::Connected;
                    if connected.swap(up, Ordering::AcqRel) != up {
                        if up {
                            tracing::info!("cluster bus connected again");
                        } else {
                            tracing::warn!("cluster bus unreachable: not ready, leases cannot be renewed");
                        }
                    }
                }
            }
        }
        let released = keeper.shutdown().await;
        let _ = tokio::time::timeout(OP_TIMEOUT, client.flush()).await;
        released
    })
}

/// Connects, opens both buckets, starts the ticket, revocation and lease tasks on the current
/// runtime; the connection, the keeper and the status for the shards.
async fn start(
    config: &ClusterConfig,
    wanted: Vec<LeaseKey>,
    on_revoked: RevokedHook,
    timing: LeaseTiming,
) -> Result<(async_nats::Client, LeaseKeeper, ClusterStatus), ClusterError> {
    let client = async_nats::ConnectOptions::new()
        .name(format!("openchatd {}", config.node_id))
        .connection_timeout(CONNECT_TIMEOUT)
        .request_timeout(Some(OP_TIMEOUT))
        .ping_interval(PING_INTERVAL)
        .connect(config.nats_urls.as_slice())
        .await
        .map_err(|e| ClusterError::Connect(Box::new(e)))?;
    let store = LeaseStore::open(client.clone(), &config.name, &config.node_id, timing).await?;
    let tickets = TicketStore::open(client.clone(), &config.name, &config.node_id).await?;
    let subject = revoked_subject(&config.name);
    let mut revocations = client
        .subscribe(subject.clone())
        .await
        .map_err(|e| ClusterError::Connect(Box::new(e)))?;

    let (ticket_tx, mut ticket_rx) = mpsc::channel::<TicketClaim>(TICKET_QUEUE);
    tokio::spawn(async move {
        while let Some((jti, reply)) = ticket_rx.recv().await {
            let tickets = tickets.clone();
            tokio::spawn(async move {
                let _ = reply.send(tickets.claim(&jti).await);
            });
        }
    });
    let me = config.node_id.clone();
    tokio::spawn(async move {
        use futures_lite::StreamExt;
        while let Some(message) = revocations.next().await {
            let Some((from, hash)) = std::str::from_utf8(&message.payload)
                .ok()
                .and_then(|text| text.split_once(' '))
            else {
                continue;
            };
            let is_hash = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
            if from != me && is_hash {
                tokio::spawn(on_revoked(hash.to_owned()));
            }
        }
    });
    let (revoked_tx, mut revoked_rx) = mpsc::channel::<String>(REVOKED_QUEUE);
    let publisher = client.clone();
    let me = config.node_id.clone();
    tokio::spawn(async move {
        while let Some(hash) = revoked_rx.recv().await {
            let payload = bytes::Bytes::from(format!("{me} {hash}"));
            if let Err(error) = publisher.publish(subject.clone(), payload).await {
                tracing::warn!(%error, "a revoked session was not published to the cluster");
            }
        }
    });
    let keeper = LeaseKeeper::spawn(store);
    for key in wanted {
        keeper.want(key);
    }
    let status = ClusterStatus {
        node_id: config.node_id.as_str().into(),
        connected: Arc::new(AtomicBool::new(true)),
        view: keeper.view(),
        tickets: ticket_tx,
        revoked: revoked_tx,
    };
    Ok((client, keeper, status))
}
