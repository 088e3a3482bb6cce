//! `openchatd`: the backend of a decentralized OpenChat server instance.
//!
//! The folders are the architecture (see `docs/architecture/README.md`):
//! - sans-IO cores, which import no runtime or sockets: [`http`] (request parsing, routing,
//!   responses), [`realtime`] (realtime frames, presence, typing, outbox, resume window),
//!   [`sharding`] (which shard owns what), [`config`];
//! - drivers, which own executors, sockets and threads: [`runtime`] (glommio shards, mesh,
//!   listeners, connection driver), [`storage`] (the sqlx bridge thread, blobs);
//! - [`api`]: the endpoints, which turn requests into domain calls and domain results into
//!   responses.

pub mod api;
pub mod build_info;
pub mod config;
pub mod http;
pub mod realtime;
pub mod runtime;
pub mod sharding;
pub mod storage;
