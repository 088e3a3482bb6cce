//! Several `openchatd` nodes as one server (issue 15; the architecture's "More than one
//! machine"): the nodes share PostgreSQL and a NATS server with JetStream, and each community and
//! each voice room is owned by one node at a time through a lease in a NATS KV bucket.
//!
//! Built so far, the foundation: ownership by lease.
//! - [`lease`]: the sans-IO core of one lease (no runtime, no sockets; instants are arguments):
//!   when to claim or renew, what an answer means, and until when this node may serve the key.
//!   A node stops serving `LEASE_TTL - SAFETY_MARGIN` after it *sent* its last successful write,
//!   so its validity ends before the KV entry can expire and another node claim it; the KV
//!   revision is the fencing token.
//! - [`kv`]: the NATS KV driver ([`LeaseStore`]): one bucket per cluster whose `max_age` is the
//!   lease TTL (nats-server 2.9 has no per-key TTL), `create` to claim, `update` with the
//!   revision to renew, delete-if-revision to release; every call bounded by a timeout.
//! - [`keeper`]: the tokio task ([`LeaseKeeper`]) that drives the core for the keys this node
//!   wants, and [`LeaseView`], the cheap thread-safe "may this node serve K now, at which
//!   revision" any thread (a glommio shard) can ask.
//!
//! - [`node`]: the driver a cluster node starts ([`ClusterNode`], its own thread and tokio
//!   runtime): the connection, the bucket, the keeper of the default community's lease, and
//!   [`ClusterStatus`] for readiness (`/readyz` is 503 `cluster_unavailable` while the bus is
//!   unreachable) and metrics; stopping it releases the leases.
//! - [`tickets`]: join tickets are single-use across the cluster (a KV `create` of the ticket
//!   id when it is redeemed, on whichever node).
//! - Revoked sessions: a revoke's notice is published on `<cluster>.sessions.revoked` (token
//!   hash only); the other nodes forget the session, close its sockets and void its tickets
//!   (`ForgetRevokedSession`). Sessions opened after a node started are not sent yet: such a
//!   token is refused on the other nodes (fails closed) until they restart.
//!
//! Not built yet (later pieces of issue 15): no command asks the lease before it is applied; commands for communities owned elsewhere are not forwarded over NATS
//! request/reply; committed events do not travel on a JetStream stream; presence, typing,
//! voice tickets, session revocation, rate limits, readiness while the bus is down, draining
//! and metrics are still single-node.

pub mod keeper;
pub mod kv;
pub mod lease;
pub mod node;
pub mod tickets;

pub use keeper::{Grant, LeaseKeeper, LeaseView};
pub use kv::LeaseStore;
pub use lease::{LEASE_TTL, LeaseKey, LeaseTiming, RENEW_EVERY, SAFETY_MARGIN};
pub use node::{ClusterNode, ClusterStatus};

use std::time::Duration;

/// A boxed error from the NATS client, kept as the source of a [`ClusterError`] so the client's
/// error types do not leak into this crate's API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a cluster operation failed. Display is one line; no variant carries a NATS URL (it may
/// hold a password).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A community or room id that cannot be part of a KV key.
    #[error("invalid lease key {0:?}: expected 1 to 128 characters of A-Z, a-z, 0-9, _ and -")]
    InvalidKey(String),
    /// Lease timings that would let a lease lapse between renewals.
    #[error("invalid lease timing: {0}")]
    InvalidTiming(&'static str),
    /// The NATS server could not be reached or refused the connection.
    #[error("cannot connect to NATS: {0}")]
    Connect(#[source] BoxError),
    /// The lease bucket could not be created or opened (JetStream disabled, or a bucket of the
    /// same name with another configuration, e.g. another TTL).
    #[error("NATS KV bucket {bucket}: {source}")]
    Bucket {
        bucket: String,
        #[source]
        source: BoxError,
    },
    /// No answer within the operation timeout; the operation may or may not have been applied.
    #[error("NATS KV {op} of {key} timed out after {after:?}")]
    Timeout {
        op: &'static str,
        key: String,
        after: Duration,
    },
    /// The cluster driver cannot take the request now (its queue is full, or it stopped).
    #[error("the cluster driver is unavailable: {0}")]
    Unavailable(&'static str),
    /// The server answered with an error other than the ones a lease expects.
    #[error("NATS KV {op} of {key} failed: {source}")]
    Kv {
        op: &'static str,
        key: String,
        #[source]
        source: BoxError,
    },
    /// The entry of a lease key does not hold a node id (written by something else).
    #[error("NATS KV entry {key} does not hold a node id")]
    Malformed { key: String },
}
