//! One shard: a glommio executor pinned to one core that accepts its own connections, serves
//! them, and answers its peers over the mesh. Everything here is single-threaded (`Rc`, `Cell`);
//! the only shared state is the immutable [`App`] and the storage handle.

use std::cell::Cell;
use std::os::fd::{FromRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_lite::future;
use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::net::TcpListener;
use glommio::sync::Gate;

use super::mesh::{Mesh, ShardMessage, ShardStatsSnapshot};
use super::shutdown::Shutdown;
use super::watchdog::{SWEEP_INTERVAL, Watchdog};
use crate::api::App;

/// How long a shard waits for a peer's reply before reporting it as missing.
pub const PEER_REPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after an accept error such as EMFILE, so a full descriptor table does not spin a core.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

#[derive(Default)]
pub struct ShardStats {
    pub requests: Cell<u64>,
    pub connections_accepted: Cell<u64>,
    pub connections_open: Cell<u64>,
    pub protocol_errors: Cell<u64>,
    pub panics: Cell<u64>,
}

fn bump(counter: &Cell<u64>) {
    counter.set(counter.get() + 1);
}

impl ShardStats {
    pub fn count_request(&self) {
        bump(&self.requests);
    }
    pub fn count_protocol_error(&self) {
        bump(&self.protocol_errors);
    }
    pub fn count_panic(&self) {
        bump(&self.panics);
    }
}

pub struct Shard {
    pub id: usize,
    pub count: usize,
    pub app: Arc<App>,
    pub stats: ShardStats,
    pub shutdown: Shutdown,
    mesh: Mesh,
    /// Read deadlines of this shard's connections (see `watchdog`).
    pub watchdog: Watchdog,
    stopped: Cell<bool>,
    /// `Date` header value, recomputed when the second changes.
    date: Cell<(u64, [u8; 29])>,
    /// Realtime sockets of this shard and presence of the channels it owns.
    pub hub: super::hub::Hub,
}

impl Shard {
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
        ShardStatsSnapshot {
            shard: self.id,
            requests: self.stats.requests.get(),
            connections_accepted: self.stats.connections_accepted.get(),
            connections_open: self.stats.connections_open.get(),
            protocol_errors: self.stats.protocol_errors.get(),
            panics: self.stats.panics.get(),
            realtime_sockets: self.hub.socket_count() as u64,
            mesh_dropped: self.mesh.dropped(),
            ..self.hub.media_snapshot()
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

    /// Handles a message meant for this shard (from a peer over the mesh, or from this shard
    /// itself through `hub::to_shard`).
    pub(super) fn handle_message(self: &Rc<Self>, message: ShardMessage) {
        match message {
            ShardMessage::CollectStats { reply } => {
                let _ = reply.send(self.snapshot());
            }
            ShardMessage::Presence(op) => self.hub.apply(self, op),
            ShardMessage::Deliver(frames) => self.hub.push_local(frames),
            ShardMessage::Voice(op) => self.hub.apply_voice(self, op),
            ShardMessage::CloseSockets(ids) => self.hub.close_local(&ids),
        }
    }
}

/// Everything a shard needs to start; built on the main thread, moved into the executor.
pub struct ShardSeed {
    pub id: usize,
    pub count: usize,
    pub listener_fd: RawFd,
    /// This shard's UDP media socket and its port.
    pub udp_fd: RawFd,
    pub udp_port: u16,
    pub app: Arc<App>,
    pub mesh: MeshBuilder<ShardMessage, Full>,
    pub shutdown: Shutdown,
}

/// The shard's main future: join the mesh, accept until shutdown, then drain.
pub async fn run(seed: ShardSeed) {
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
        stats: ShardStats::default(),
        shutdown: seed.shutdown,
        mesh: Mesh::new(senders),
        watchdog: Watchdog::default(),
        stopped: Cell::new(false),
        date: Cell::new((0, [b' '; 29])),
        hub: super::hub::Hub::default(),
    });
    if let Some(mut broadcasts) = shard.app.take_broadcasts(shard.id) {
        let pump = shard.clone();
        glommio::spawn_local(async move {
            while let Some(broadcast) = broadcasts.recv().await {
                pump.hub.on_broadcast(&pump, broadcast);
            }
        })
        .detach();
    }
    super::media::start(shard.clone(), seed.udp_fd, seed.udp_port);
    let typing = shard.clone();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(super::hub::TYPING_SWEEP_INTERVAL).await;
            typing.hub.expire_typing(&typing);
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
                bump(&shard.stats.connections_accepted);
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
    let grace = shard.app.config.shutdown_timeout;
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
