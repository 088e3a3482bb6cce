//! One shard: a glommio executor pinned to one core that accepts its own connections, serves
//! them, and answers its peers over the mesh. Everything here is single-threaded (`Rc`, `Cell`);
//! the only shared state is the immutable service `S` (the endpoints, see `service`) and the
//! drivers' [`Shared`] admission state. The shard is also the driver of its realtime state: the
//! hub and the voice rooms return what a change calls for ([`Outgoing`]) and
//! [`Shard::dispatch`] sends it.

use std::cell::Cell;
use std::os::fd::{FromRawFd, RawFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_lite::future;
use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::net::TcpListener;
use glommio::sync::Gate;

use super::admission::{BodyBudget, ConnectionCaps};
use super::hub::Hub;
use super::mesh::{Mesh, Outgoing, ShardMessage};
use super::service::Service;
use super::shutdown::Shutdown;
use super::stats::{ShardStats, ShardStatsSnapshot};
use super::voice::{Voice, VoiceOp};
use super::watchdog::{SWEEP_INTERVAL, Watchdog};
use crate::authority::{Broadcast, Broadcasts};
use crate::realtime::Member;

/// How long a shard waits for a peer's reply before reporting it as missing.
pub const PEER_REPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after an accept error such as EMFILE, so a full descriptor table does not spin a core.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// What every shard's drivers share, set up once by the wiring: admission (connection caps,
/// the body budget), where uploads are spooled, and the limits the connection loop and the
/// drain go by.
pub struct Shared {
    /// Open connections per shard and per source address.
    pub connection_caps: ConnectionCaps,
    /// Request body bytes in flight over all shards (`OPENCHAT_HTTP_BODY_BUDGET_BYTES`).
    pub body_budget: Arc<BodyBudget>,
    /// Where multipart uploads are spooled (`<data_dir>/uploads`).
    pub upload_dir: PathBuf,
    /// The largest request body (`OPENCHAT_HTTP_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// How long a stopping shard waits for its connections (`OPENCHAT_SHUTDOWN_TIMEOUT`).
    pub shutdown_timeout: Duration,
}

pub struct Shard<S> {
    pub id: usize,
    pub count: usize,
    /// The endpoints this shard serves.
    pub app: Arc<S>,
    pub shared: Arc<Shared>,
    pub stats: ShardStats,
    pub shutdown: Shutdown,
    mesh: Mesh,
    /// Read deadlines of this shard's connections (see `watchdog`).
    pub watchdog: Watchdog,
    stopped: Cell<bool>,
    /// `Date` header value, recomputed when the second changes.
    date: Cell<(u64, [u8; 29])>,
    /// Realtime sockets of this shard and presence of the channels it owns.
    pub hub: Hub,
    /// Voice rooms of the channels this shard owns, with their media.
    pub voice: Voice,
}

impl<S: Service> Shard<S> {
    /// Whether this shard has stopped accepting (connections then finish and close).
    pub fn is_stopping(&self) -> bool {
        self.stopped.get()
    }

    /// The IMF-fixdate of the current second, for the `Date` header.
    pub fn http_date(&self) -> [u8; 29] {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (second, cached) = self.date.get();
        if second == now {
            return cached;
        }
        let fresh = crate::http::response::format_http_date(now);
        self.date.set((now, fresh));
        fresh
    }

    pub fn snapshot(&self) -> ShardStatsSnapshot {
        let media = self.voice.snapshot();
        ShardStatsSnapshot {
            shard: self.id,
            requests: self.stats.requests.get(),
            connections_accepted: self.stats.connections_accepted.get(),
            connections_open: self.stats.connections_open.get(),
            protocol_errors: self.stats.protocol_errors.get(),
            panics: self.stats.panics.get(),
            routes: self.stats.routes(),
            socket_closes: self.stats.closes(),
            realtime_sockets: self.hub.socket_count() as u64,
            mesh_dropped: self.mesh.dropped(),
            relay_dropped: media.relay_dropped + self.hub.relay_dropped(),
            ..media
        }
    }

    /// Counters of every shard, asked over the mesh; a shard that does not answer within
    /// [`PEER_REPLY_TIMEOUT`] is reported as `None`.
    pub async fn collect_stats(&self) -> Vec<(usize, Option<ShardStatsSnapshot>)> {
        let mut all = Vec::with_capacity(self.count);
        for peer in 0..self.count {
            if peer == self.id {
                all.push((peer, Some(self.snapshot())));
                continue;
            }
            let (reply, answer) = tokio::sync::oneshot::channel();
            let sent = self
                .mesh
                .send_to(peer, ShardMessage::CollectStats { reply })
                .await;
            let snapshot = match sent {
                Ok(()) => {
                    future::or(async { answer.await.ok() }, async {
                        glommio::timer::sleep(PEER_REPLY_TIMEOUT).await;
                        None
                    })
                    .await
                }
                Err(_) => None,
            };
            all.push((peer, snapshot));
        }
        all
    }

    /// Posts `message` to shard `to` over the mesh, in order after what was posted to it
    /// before, without waiting (see `mesh::Mesh::post`). A message for this shard or for no
    /// shard is dropped.
    pub fn post(&self, to: usize, message: ShardMessage) -> super::mesh::Posted {
        self.mesh.post(to, message).unwrap_or_else(|_| {
            tracing::debug!(to, "cross-shard message for this or no shard dropped");
            super::mesh::Posted::Dropped
        })
    }

    /// Sends `message` to shard `to` over the mesh.
    pub async fn send_to(
        &self,
        to: usize,
        message: ShardMessage,
    ) -> Result<(), Option<ShardMessage>> {
        self.mesh.send_to(to, message).await
    }

    /// Sends what a change of the hub or the voice rooms called for, in order: a message for
    /// this shard is handled at once (and what it calls for is sent before the next one, as if
    /// it had been a call), one for another shard goes over the mesh after every message this
    /// shard posted it before (`mesh::Mesh::post`: one ordered queue per peer, never waiting).
    pub fn dispatch(&self, out: Outgoing) {
        for (target, message) in out {
            if target == self.id {
                self.handle_message(message);
            } else {
                self.post(target, message);
            }
        }
    }

    /// Handles a message meant for this shard (from a peer over the mesh, or from this shard
    /// itself through [`Shard::dispatch`]).
    pub(super) fn handle_message(&self, message: ShardMessage) {
        match message {
            ShardMessage::CollectStats { reply } => {
                let _ = reply.send(self.snapshot());
            }
            ShardMessage::Presence(op) => self.dispatch(self.hub.apply(op)),
            ShardMessage::Deliver(frames) => self.hub.push_local(frames),
            ShardMessage::Voice(op) => self.dispatch(self.voice.apply(op)),
            ShardMessage::CloseSockets(ids) => self.hub.close_local(&ids),
        }
    }

    /// A committed event or a notice from the authority: the hub's sockets take it, then the
    /// voice rooms (a member that left, a kick and a revoked session end calls too).
    fn on_broadcast(&self, broadcast: Broadcast) {
        self.dispatch(self.hub.on_broadcast(&broadcast));
        if let Broadcast::Notice(notice) = &broadcast {
            self.dispatch(self.voice.on_notice(notice));
            if self.id == 0 {
                self.app.on_notice(notice);
            }
        }
    }

    /// Subscribes realtime socket `socket` of this shard to `channel_id`'s presence.
    pub fn subscribe(&self, socket: u64, channel_id: &str, member: Member, hidden: (bool, i64)) {
        self.dispatch(self.hub.subscribe(socket, channel_id, member, hidden));
    }

    pub fn unsubscribe(&self, socket: u64, channel_id: &str) {
        self.dispatch(self.hub.unsubscribe(socket, channel_id));
    }

    pub fn typing(&self, socket: u64, channel_id: &str, is_typing: bool) {
        self.dispatch(self.hub.typing(socket, channel_id, is_typing));
    }

    /// Forgets a closed socket of this shard; the owners of its channels are told.
    pub fn unregister(&self, socket: u64) {
        self.dispatch(self.hub.unregister(socket));
    }

    /// Sends a voice-room change to the shard that owns its channel.
    pub fn voice(&self, op: VoiceOp) {
        self.dispatch(Voice::to_owner(op, self.count));
    }
}

/// Everything a shard needs to start; built on the main thread, moved into the executor.
pub struct ShardSeed<S> {
    pub id: usize,
    pub count: usize,
    pub listener_fd: RawFd,
    /// This shard's UDP media socket and its port.
    pub udp_fd: RawFd,
    pub udp_port: u16,
    pub app: Arc<S>,
    pub shared: Arc<Shared>,
    /// The committed events and notices of the authority for this shard.
    pub broadcasts: Option<Broadcasts>,
    /// The server named by typing frames of a channel whose server is not recorded.
    pub default_server_id: String,
    pub mesh: MeshBuilder<ShardMessage, Full>,
    pub shutdown: Shutdown,
}

/// The shard's main future: join the mesh, accept until shutdown, then drain.
pub async fn run<S: Service>(seed: ShardSeed<S>) {
    // SAFETY: the descriptor is a listening socket created by `listener::bind_reuseport` and
    // handed to exactly this shard.
    let listener = unsafe { TcpListener::from_raw_fd(seed.listener_fd) };
    let (senders, mut receivers) = match seed.mesh.join().await {
        Ok(pair) => pair,
        Err(e) => {
            tracing::error!(shard = seed.id, error = %e, "could not join the shard mesh");
            seed.shutdown.trigger();
            return;
        }
    };
    let shard = Rc::new(Shard {
        id: seed.id,
        count: seed.count,
        app: seed.app,
        shared: seed.shared,
        stats: ShardStats::new(S::ROUTE_CLASSES.len()),
        shutdown: seed.shutdown,
        mesh: Mesh::new(senders),
        watchdog: Watchdog::default(),
        stopped: Cell::new(false),
        date: Cell::new((0, [b' '; 29])),
        hub: Hub::new(seed.id, seed.count, seed.default_server_id),
        voice: Voice::default(),
    });
    if let Some(mut broadcasts) = seed.broadcasts {
        let pump = shard.clone();
        glommio::spawn_local(async move {
            while let Some(broadcast) = broadcasts.recv().await {
                pump.on_broadcast(broadcast);
            }
        })
        .detach();
    }
    super::media::start(shard.clone(), seed.udp_fd, seed.udp_port);
    let typing = shard.clone();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(super::hub::TYPING_SWEEP_INTERVAL).await;
            typing.dispatch(typing.hub.expire_typing());
        }
    })
    .detach();
    for (_, stream) in receivers.streams() {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(message) = stream.recv().await {
                shard.handle_message(message);
            }
        })
        .detach();
    }
    let sweeper = shard.clone();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(SWEEP_INTERVAL).await;
            sweeper
                .watchdog
                .sweep(std::time::Instant::now(), sweeper.is_stopping());
        }
    })
    .detach();
    tracing::debug!(shard = shard.id, "accepting");

    let connections = Gate::new();
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            shard.shutdown.wait().await;
            None
        })
        .await;
        match accepted {
            None => break,
            Some(Ok(stream)) => {
                shard.stats.count_accept();
                let shard = shard.clone();
                if let Ok(task) =
                    connections.spawn(super::conn::serve(stream, shard, connections.clone()))
                {
                    task.detach();
                }
            }
            Some(Err(e)) => {
                tracing::warn!(shard = shard.id, error = %e, "accept failed");
                glommio::timer::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
    drop(listener);
    shard.stopped.set(true);
    shard.watchdog.sweep(std::time::Instant::now(), true);
    let grace = shard.shared.shutdown_timeout;
    let drained = future::or(
        async {
            let _ = connections.close().await;
            true
        },
        async {
            glommio::timer::sleep(grace).await;
            false
        },
    )
    .await;
    let open = shard.stats.connections_open.get();
    if drained {
        tracing::debug!(shard = shard.id, "drained");
    } else {
        tracing::warn!(
            shard = shard.id,
            open,
            "grace time over; closing remaining connections"
        );
    }
}
