//! Drivers that own threads, executors and sockets: one pinned glommio executor per shard
//! ([`shard`]), the connection loop ([`conn`]), listeners ([`listener`]), the shard mesh
//! ([`mesh`]) and the shutdown signal ([`shutdown`]). [`Server`] wires them to the storage bridge
//! and the endpoints.

pub mod admission;
pub mod conn;
pub mod hub;
pub mod listener;
pub mod media;
pub mod mesh;
pub mod shard;
pub mod shutdown;
pub mod upload;
pub mod voice;
pub mod watchdog;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use crate::api::{App, Handler};
use crate::authority::Authority;
use crate::config::Config;
use crate::domain::community::Settings as DomainSettings;
use crate::domain::views::Urls;
use crate::http::Router;
use crate::storage::{BridgeHandle, Storage, StorageConfig, WriteOp, WriteOutcome};
pub use shutdown::Shutdown;

/// Memory each shard registers with io_uring for file I/O buffers. Shards do network I/O into
/// their own buffers, so glommio's default of 10 MiB per shard would only pin memory.
const IO_MEMORY_PER_SHARD: usize = 1024 * 1024;

/// Storage key of the default server's id when it is generated rather than configured.
const DEFAULT_SERVER_ID_KEY: &str = "default_server_id";

/// A running `openchatd`: shards accepting on `local_addr`, the storage bridge behind them.
pub struct Server {
    addr: SocketAddr,
    shutdown: Shutdown,
    shards: Vec<ExecutorJoinHandle<()>>,
    bridge: Option<BridgeHandle>,
    authority: Option<crate::authority::Stopper>,
    app: Arc<App>,
}

impl Server {
    /// Opens storage (running migrations), binds the listeners and starts every shard. Returns
    /// once all shards are started; errors name what could not be set up.
    pub fn start(config: Config) -> anyhow::Result<Server> {
        Self::start_with_routes(config, |_| {})
    }

    /// Like [`Server::start`], with extra routes added to the table (tests use it for handlers
    /// that panic or stall).
    pub fn start_with_routes(
        config: Config,
        extra_routes: fn(&mut Router<Handler>),
    ) -> anyhow::Result<Server> {
        let (storage, bridge) = Storage::start_with_write_queue(
            StorageConfig {
                engine: config.database.clone(),
                data_dir: config.data_dir.clone(),
                max_connections: config.db_max_connections,
            },
            config.storage_queue,
        )
        .context("storage could not be opened")?;
        let default_server_id = resolve_default_server_id(&config, &storage)?;
        let started = Authority::start(
            domain_settings(&config, &default_server_id),
            storage.clone(),
            config.shards,
            config.authority_queue,
            &config.server_name,
            config.default_server_owner().as_deref(),
            config.default_server_owner_key.as_deref(),
        )
        .context("the community state could not be loaded")?;
        let authority = started.stopper;
        let app = Arc::new(App::new(
            config,
            storage,
            default_server_id,
            started.authority,
            started.receivers,
            extra_routes,
        ));

        let shards = app.config.shards;
        let (fds, addr) =
            listener::bind_reuseport(app.config.http_addr, shards).with_context(|| {
                format!(
                    "cannot listen on {} (OPENCHAT_HTTP_ADDR)",
                    app.config.http_addr
                )
            })?;
        let mut udp = Vec::with_capacity(shards);
        for id in 0..shards {
            let base = app.config.rtc.udp_port_base;
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
        Ok(Server {
            addr,
            shutdown,
            shards: handles,
            bridge: Some(bridge),
            authority: Some(authority),
            app,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// A handle that stops the server (what SIGTERM does).
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Waits until every shard has drained and stopped, then closes storage.
    pub fn wait(mut self) -> anyhow::Result<()> {
        let mut failed = 0;
        for handle in self.shards.drain(..) {
            if handle.join().is_err() {
                failed += 1;
            }
        }
        // The authority finishes its in-flight commits before the bridge closes.
        if let Some(authority) = self.authority.take()
            && !authority.stop()
        {
            failed += 1;
        }
        if let Some(bridge) = self.bridge.take() {
            bridge.shutdown();
        }
        anyhow::ensure!(failed == 0, "{failed} shard(s) stopped abnormally");
        Ok(())
    }

    /// Triggers shutdown and waits for it.
    pub fn stop(self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        self.wait()
    }
}

/// The configured id, or the one generated at first start and kept in storage (first writer
/// wins, so two nodes starting together agree).
fn resolve_default_server_id(config: &Config, storage: &Storage) -> anyhow::Result<String> {
    if let Some(id) = &config.default_server_id {
        return Ok(id.clone());
    }
    let fresh = uuid::Uuid::new_v4().to_string();
    let outcome = futures_lite::future::block_on(storage.write(WriteOp::InsertMetaIfAbsent {
        key: DEFAULT_SERVER_ID_KEY.into(),
        value: fresh.clone(),
    }))
    .context("cannot store the default server id")?;
    Ok(match outcome {
        WriteOutcome::Existing(id) => id,
        WriteOutcome::Done => fresh,
    })
}

/// What the domain rules need from configuration.
fn domain_settings(config: &Config, default_server_id: &str) -> DomainSettings {
    DomainSettings {
        default_server_id: default_server_id.to_owned(),
        default_history_visibility: config.default_history_visibility,
        allow_server_creation: config.allow_server_creation,
        max_message_bytes: config.limits.max_message_bytes,
        rate_limit_per_minute: config.limits.rate_limit_per_minute,
        handshake_strategy: match config.auth_mode {
            crate::config::AuthMode::Session => "challenge_signature",
            crate::config::AuthMode::Headers => "token_proof",
        },
        origin: config.public_base_url.trim_end_matches('/').to_owned(),
        urls: Urls::new(&config.public_base_url),
    }
}

/// CPUs this process may run on (its affinity mask), in order.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1))
                .collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}
