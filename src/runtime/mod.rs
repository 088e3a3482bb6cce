//! Drivers that own threads, executors and sockets: one pinned glommio executor per shard
//! ([`shard`]), the connection loop ([`conn`]), listeners ([`listener`]), the shard mesh
//! ([`mesh`]), the realtime hub ([`hub`]), the voice rooms and the UDP media driver ([`voice`],
//! [`media`]) and the shutdown signal ([`shutdown`]). The endpoints are a [`Service`] to them
//! ([`service`]): [`Shards::start`] runs any service, and the wiring (`crate::server`) is what
//! hands it the endpoints.

pub mod admission;
pub mod conn;
pub mod hub;
pub mod listener;
pub mod media;
pub mod mesh;
pub mod process;
pub mod service;
pub mod shard;
pub mod shutdown;
pub mod stats;
pub mod upload;
pub mod voice;
pub mod watchdog;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use crate::authority::Broadcasts;
use crate::config::Config;
pub use service::Service;
pub use shutdown::Shutdown;

/// Memory each shard registers with io_uring for file I/O buffers. Shards do network I/O into
/// their own buffers, so glommio's default of 10 MiB per shard would only pin memory.
const IO_MEMORY_PER_SHARD: usize = 1024 * 1024;

/// The running shards: each accepting on `local_addr`, serving one service.
pub struct Shards {
    addr: SocketAddr,
    shutdown: Shutdown,
    handles: Vec<ExecutorJoinHandle<()>>,
}

impl Shards {
    /// Binds the listeners and the UDP media ports (`OPENCHAT_HTTP_ADDR`,
    /// `OPENCHAT_RTC_UDP_PORT`) and starts `config.shards` shards serving `app`; shard `i`
    /// takes `broadcasts[i]`, the authority's feed for it. Returns once all are started;
    /// errors name what could not be set up.
    pub fn start<S: Service>(
        config: &Config,
        app: Arc<S>,
        default_server_id: &str,
        broadcasts: Vec<Broadcasts>,
    ) -> anyhow::Result<Shards> {
        let shards = config.shards;
        let shared = Arc::new(shared(config));
        let (fds, addr) =
            listener::bind_reuseport(config.http_addr, shards).with_context(|| {
                format!("cannot listen on {} (OPENCHAT_HTTP_ADDR)", config.http_addr)
            })?;
        let mut udp = Vec::with_capacity(shards);
        for id in 0..shards {
            let base = config.rtc.udp_port_base;
            let port = if base == 0 { 0 } else { base + id as u16 };
            let bound = media::bind(port).with_context(|| {
                format!("cannot bind UDP media port {port} for shard {id} (OPENCHAT_RTC_UDP_PORT)")
            })?;
            udp.push(bound);
        }
        let cpus = allowed_cpus();
        if shards > cpus.len() {
            tracing::warn!(
                shards,
                cores = cpus.len(),
                "more shards than cores; shards are not pinned"
            );
        }
        let shutdown = Shutdown::new();
        let mesh = MeshBuilder::full(shards, mesh::MESH_CHANNEL_CAPACITY);
        let mut broadcasts = broadcasts.into_iter();
        let mut handles = Vec::with_capacity(shards);
        for (id, (fd, (udp_fd, udp_addr))) in fds.into_iter().zip(udp).enumerate() {
            let placement = if shards <= cpus.len() {
                Placement::Fixed(cpus[id])
            } else {
                Placement::Unbound
            };
            let seed = shard::ShardSeed {
                id,
                count: shards,
                listener_fd: fd,
                udp_fd,
                udp_port: udp_addr.port(),
                app: app.clone(),
                shared: shared.clone(),
                broadcasts: broadcasts.next(),
                default_server_id: default_server_id.to_owned(),
                mesh: mesh.clone(),
                shutdown: shutdown.clone(),
            };
            let handle = LocalExecutorBuilder::new(placement)
                .name(&format!("shard-{id}"))
                .io_memory(IO_MEMORY_PER_SHARD)
                .spawn(move || shard::run(seed))
                .map_err(|e| anyhow::anyhow!("cannot start shard {id}: {e}"))?;
            handles.push(handle);
        }
        Ok(Shards {
            addr,
            shutdown,
            handles,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that stops the shards (what SIGTERM does).
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Waits until every shard has drained and stopped; the value is how many stopped
    /// abnormally.
    pub fn join(&mut self) -> usize {
        self.handles
            .drain(..)
            .filter_map(|handle| handle.join().err())
            .count()
    }
}

/// The drivers' shared state for `config`. The upload folder is prepared here; if it cannot
/// be, uploads fail one by one with 500 and everything else works.
fn shared(config: &Config) -> shard::Shared {
    let upload_dir = match upload::prepare_dir(&config.data_dir) {
        Ok(dir) => dir,
        Err(e) => {
            tracing::error!(error = %e, "cannot prepare the upload folder in the data dir");
            config.data_dir.join(upload::UPLOAD_DIR)
        }
    };
    shard::Shared {
        connection_caps: admission::ConnectionCaps::new(
            config.limits.max_connections,
            config.limits.max_connections_per_addr,
            config.shards,
        ),
        body_budget: admission::BodyBudget::new(config.limits.body_budget_bytes),
        upload_dir,
        max_body_bytes: config.limits.max_body_bytes,
        shutdown_timeout: config.shutdown_timeout,
    }
}

/// CPUs this process may run on (its affinity mask), in order.
fn allowed_cpus() -> Vec<usize> {
    use nix::sched::{CpuSet, sched_getaffinity};
    match sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1))
            .collect(),
    }
}
