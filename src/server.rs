//! The wiring: the one place that knows both the endpoints ([`crate::api`]) and the drivers
//! ([`crate::runtime`]). It opens storage, starts the authority, builds the [`App`] with what
//! the drivers discovered of the host, and has the shards serve it.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use crate::api::{App, Handler};
use crate::authority::Authority;
use crate::config::Config;
use crate::domain::community::Settings as DomainSettings;
use crate::domain::views::Urls;
use crate::http::Router;
use crate::runtime::{Shards, Shutdown};
use crate::storage::{BridgeHandle, Storage, StorageConfig, WriteOp, WriteOutcome};

/// Storage key of the default server's id when it is generated rather than configured.
const DEFAULT_SERVER_ID_KEY: &str = "default_server_id";

/// A running `openchatd`: shards accepting on `local_addr`, the storage bridge behind them.
pub struct Server {
    shards: Shards,
    bridge: Option<BridgeHandle>,
    authority: Option<crate::authority::Stopper>,
    /// The cluster driver of a node of several (`OPENCHAT_CLUSTER_NATS_URL`).
    cluster: Option<crate::cluster::ClusterNode>,
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
        let evidence_key = match &config.evidence_key {
            Some(key) => key.clone(),
            None => {
                let mut fresh = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fresh);
                crate::auth::evidence_key::EvidenceKey::from_file_or_create(
                    &config.data_dir,
                    fresh,
                )
                .with_context(|| {
                    format!(
                        "OPENCHAT_EVIDENCE_KEY is unset and the key file {} could not be read or made",
                        config
                            .data_dir
                            .join(crate::auth::evidence_key::KEY_FILE)
                            .display()
                    )
                })?
            }
        };
        let cluster = match &config.cluster {
            Some(cluster) => Some(
                crate::cluster::ClusterNode::start(
                    cluster,
                    vec![crate::cluster::LeaseKey::community(&default_server_id)?],
                    forget_revoked(started.authority.clone()),
                )
                .context("OPENCHAT_CLUSTER_NATS_URL: the cluster bus could not be reached")?,
            ),
            None => None,
        };
        let app = App::new(
            config,
            storage,
            default_server_id,
            started.authority,
            crate::runtime::media::host_ipv4_addresses(),
            evidence_key,
            extra_routes,
        );
        let app = Arc::new(match &cluster {
            Some(node) => app.with_cluster(node.status()),
            None => app,
        });
        let shards = Shards::start(
            &app.config,
            app.clone(),
            &app.default_server_id,
            started.receivers,
        )?;
        Ok(Server {
            shards,
            bridge: Some(bridge),
            authority: Some(authority),
            cluster,
            app,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.shards.local_addr()
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// A handle that stops the server (what SIGTERM does).
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shards.shutdown_handle()
    }

    /// Waits until every shard has drained and stopped, then closes storage.
    pub fn wait(mut self) -> anyhow::Result<()> {
        let mut failed = self.shards.join();
        // The authority finishes its in-flight commits before the bridge closes.
        // Leases go first, so other nodes take over at once rather than after the TTL.
        if let Some(cluster) = self.cluster.take()
            && !cluster.stop()
        {
            tracing::warn!("not every cluster lease was released in time; others wait for the TTL");
        }
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
        self.shards.shutdown_handle().trigger();
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

/// What a cluster node does when another node revoked a session: forget it here too.
fn forget_revoked(authority: Authority) -> crate::cluster::node::RevokedHook {
    Arc::new(move |token_hash| {
        let authority = authority.clone();
        Box::pin(async move {
            let forget = crate::domain::community::commands::ForgetRevokedSession { token_hash };
            if let Err(error) = authority.command(forget).await {
                tracing::warn!(%error, "a session revoked on another node was not forgotten here");
            }
        })
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
        max_devices_per_user: config.limits.max_devices_per_user,
    }
}
