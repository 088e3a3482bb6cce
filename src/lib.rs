//! `openchatd`: the backend of a decentralized OpenChat server instance.
//!
//! The folders are the architecture (see `docs/architecture/README.md`):
//! - sans-IO cores, which import no runtime or sockets: [`http`] (request parsing, routing,
//!   responses), [`domain`] (entities, the community rules, mentions and names, the reference
//!   history store), [`wire`] (the realtime and signaling frames: typed parsers and
//!   encoders), [`realtime`] (presence, typing, outbox, resume window),
//!   [`uploads`] (image checks and metadata stripping), [`auth`] (session crypto), [`sharding`]
//!   (which shard owns what), [`json`] (the one way JSON from the network is parsed), [`config`]
//!   (every `OPENCHAT_*` variable), [`rtc`] (join tickets, TURN credentials, voice rooms, the
//!   addresses media candidates carry), [`sfu`] (the str0m SFU along its run loop: route,
//!   connection, negotiation, track assignment, forwarding), [`build_info`], [`clock`] (the OS clock, for drivers), [`histogram`]
//!   (fixed-bucket histograms for `/metrics`);
//! - drivers, which own executors, sockets and threads: [`runtime`] (glommio shards, mesh,
//!   listeners, connection driver, the per-shard realtime hub, voice and the UDP media
//!   driver; it serves any `runtime::Service` and imports no endpoint), [`authority`] (the
//!   thread that owns the community state and orders every command), [`storage`] (the sqlx
//!   bridge thread, blobs);
//! - [`api`]: the endpoints, which turn requests into domain calls and domain results into
//!   responses; its `App` is the service the runtime serves;
//! - [`server`]: the wiring, the only module that knows both `api` and `runtime`.

pub mod api;
pub mod auth;
pub mod authority;
pub mod build_info;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod histogram;
pub mod http;
pub mod json;
pub mod logging;
pub mod mls;
pub mod realtime;
pub mod rtc;
pub mod runtime;
pub mod server;
pub mod sfu;
pub mod sharding;
pub mod storage;
pub mod uploads;
pub mod wire;
