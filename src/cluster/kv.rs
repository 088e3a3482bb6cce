//! The NATS KV driver of the leases: one bucket per cluster, `<cluster>_leases`, with
//! `max_age` = the lease TTL and one entry of history, so an entry not rewritten within the TTL
//! disappears (nats-server 2.9 has no per-key TTL; a bucket-wide age is what it offers). The
//! value of an entry is the owner's node id; its revision (the stream sequence, rising across
//! the whole bucket) is the fencing token.
//!
//! - claim = `create` (fails if a live entry exists; a delete marker counts as free),
//! - renew = `update` expecting the revision this node wrote last,
//! - release = delete expecting that revision (`delete_expect_revision`: the server refuses the
//!   delete marker if another write came in between, so a node never deletes a successor's
//!   lease),
//! - owner = read the last entry.
//!
//! Every call is bounded by the operation timeout. A timed-out write may still have been applied
//! by the server; the lease core treats it as not applied, which is safe (the entry only lives
//! longer) but can leave a key unclaimable until it expires.
//!
//! Runs on a tokio runtime (the storage bridge thread's, later).

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;

use super::lease::{LeaseKey, LeaseTiming};
use super::{BoxError, ClusterError};
use crate::config::ClusterConfig;

/// Longest wait for one KV operation (and for each JetStream API request under it). Short
/// against the renewal interval, so a stalled server costs a retry, not the lease.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the TCP and TLS handshake with one NATS server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The suffix of the lease bucket's name after the cluster name.
const BUCKET_SUFFIX: &str = "_leases";
/// JetStream names a KV bucket's stream `KV_<bucket>`.
const KV_STREAM_PREFIX: &str = "KV_";

/// A handle on the lease bucket for one node. Cheap to clone (the NATS connection is shared).
#[derive(Debug, Clone)]
pub struct LeaseStore {
    kv: kv::Store,
    node_id: String,
    timing: LeaseTiming,
    op_timeout: Duration,
}

impl LeaseStore {
    /// The bucket of `cluster_name`'s leases.
    pub fn bucket_name(cluster_name: &str) -> String {
        format!("{cluster_name}{BUCKET_SUFFIX}")
    }

    /// Connects to the NATS servers of `config` and opens (or creates) the lease bucket.
    pub async fn connect(
        config: &ClusterConfig,
        timing: LeaseTiming,
    ) -> Result<LeaseStore, ClusterError> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("openchatd {}", config.node_id))
            .connection_timeout(CONNECT_TIMEOUT)
            .request_timeout(Some(OP_TIMEOUT))
            .connect(config.nats_urls.as_slice())
            .await
            .map_err(|e| ClusterError::Connect(Box::new(e)))?;
        LeaseStore::open(client, &config.name, &config.node_id, timing).await
    }

    /// Opens (or creates) the lease bucket of `cluster_name` on an existing connection, as
    /// `node_id`. Nodes racing to create it are fine (creating an identical bucket is a no-op);
    /// a bucket of that name with another TTL or history is an error, because nodes that
    /// disagree on the TTL would disagree on when a lease has expired.
    pub async fn open(
        client: async_nats::Client,
        cluster_name: &str,
        node_id: &str,
        timing: LeaseTiming,
    ) -> Result<LeaseStore, ClusterError> {
        let bucket = LeaseStore::bucket_name(cluster_name);
        let kv = open_bucket(
            client,
            &bucket,
            "openchatd leases: community and voice room owners",
            timing.ttl(),
        )
        .await?;
        Ok(LeaseStore {
            kv,
            node_id: node_id.to_owned(),
            timing,
            op_timeout: OP_TIMEOUT,
        })
    }

    /// The same store with another bound on each operation (tests; production uses
    /// [`OP_TIMEOUT`]).
    pub fn with_op_timeout(mut self, op_timeout: Duration) -> LeaseStore {
        self.op_timeout = op_timeout;
        self
    }

    /// The node this store claims and renews as.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The timings the bucket was opened with (its `max_age` is their TTL).
    pub fn timing(&self) -> LeaseTiming {
        self.timing
    }

    /// The bound on each operation.
    pub fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    /// Claims `key` for this node: `Some(revision)` if the entry was created, `None` if another
    /// node holds it (a live entry exists).
    pub async fn claim(&self, key: &LeaseKey) -> Result<Option<u64>, ClusterError> {
        let value = Bytes::from(self.node_id.clone());
        match self
            .bounded("claim", key, self.kv.create(key.as_str(), value))
            .await?
        {
            Ok(revision) => Ok(Some(revision)),
            Err(error) if error.kind() == CreateErrorKind::AlreadyExists => Ok(None),
            Err(error) => Err(self.failed("claim", key, error)),
        }
    }

    /// Renews this node's lease on `key` written at `revision`: `Some(new revision)`, or `None`
    /// if the entry is not at `revision` any more (expired, released or taken: the lease is
    /// lost).
    pub async fn renew(&self, key: &LeaseKey, revision: u64) -> Result<Option<u64>, ClusterError> {
        let value = Bytes::from(self.node_id.clone());
        let update = self.kv.update(key.as_str(), value, revision);
        match self.bounded("renew", key, update).await? {
            Ok(revision) => Ok(Some(revision)),
            Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(error) if error.kind() == UpdateErrorKind::TimedOut => {
                Err(self.timed_out("renew", key))
            }
            Err(error) => Err(self.failed("renew", key, error)),
        }
    }

    /// Releases this node's lease on `key` if it is still at `revision`: `true` if deleted,
    /// `false` if the entry had moved on (not ours any more; nothing was changed).
    pub async fn release(&self, key: &LeaseKey, revision: u64) -> Result<bool, ClusterError> {
        let delete = self.kv.delete_expect_revision(key.as_str(), Some(revision));
        match self.bounded("release", key, delete).await? {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(error) if error.kind() == UpdateErrorKind::TimedOut => {
                Err(self.timed_out("release", key))
            }
            Err(error) => Err(self.failed("release", key, error)),
        }
    }

    /// The holder of `key` and the revision of its entry, `None` if nobody holds it. Says what
    /// the server has; the holder's own validity ends earlier (the safety margin).
    pub async fn owner(&self, key: &LeaseKey) -> Result<Option<(String, u64)>, ClusterError> {
        let entry = match self
            .bounded("owner", key, self.kv.entry(key.as_str()))
            .await?
        {
            Ok(entry) => entry,
            Err(error) => return Err(self.failed("owner", key, error)),
        };
        match entry {
            Some(entry) if entry.operation == Operation::Put => {
                let node = String::from_utf8(entry.value.to_vec()).map_err(|_| {
                    ClusterError::Malformed {
                        key: key.to_string(),
                    }
                })?;
                Ok(Some((node, entry.revision)))
            }
            // A delete or purge marker: released.
            _ => Ok(None),
        }
    }

    /// Runs `operation` within the operation timeout.
    async fn bounded<T>(
        &self,
        op: &'static str,
        key: &LeaseKey,
        operation: impl Future<Output = T>,
    ) -> Result<T, ClusterError> {
        within(self.op_timeout, operation)
            .await
            .ok_or_else(|| self.timed_out(op, key))
    }

    fn timed_out(&self, op: &'static str, key: &LeaseKey) -> ClusterError {
        ClusterError::Timeout {
            op,
            key: key.to_string(),
            after: self.op_timeout,
        }
    }

    fn failed(
        &self,
        op: &'static str,
        key: &LeaseKey,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> ClusterError {
        ClusterError::Kv {
            op,
            key: key.to_string(),
            source: Box::new(error),
        }
    }
}

/// Opens the KV bucket `bucket` (one entry of history, entries gone `max_age` after their last
/// write), creating it if it does not exist; an existing bucket with another `max_age` or
/// history is an error, because nodes that disagree on it would disagree on what has expired.
pub(super) async fn open_bucket(
    client: async_nats::Client,
    bucket: &str,
    description: &str,
    max_age: Duration,
) -> Result<kv::Store, ClusterError> {
    let mut context = jetstream::new(client);
    context.set_timeout(OP_TIMEOUT);
    let bucket_error = |source: BoxError| ClusterError::Bucket {
        bucket: bucket.to_owned(),
        source,
    };
    // The bucket's stream, written out rather than through `create_key_value`: that asks
    // for the account info first, and async-nats 0.50 cannot parse 2.9's answer (it lacks
    // `reserved_memory`). The fields are the ones `create_key_value` would set.
    let stream = jetstream::stream::Config {
        name: format!("{KV_STREAM_PREFIX}{bucket}"),
        description: Some(description.to_owned()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        // File storage: a restarted server must keep both the entries (or a node could claim
        // what another still serves, or a used ticket be taken again) and the sequence (the
        // fencing tokens must keep rising).
        storage: jetstream::stream::StorageType::File,
        num_replicas: 1,
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    };
    let created = within(OP_TIMEOUT, context.create_stream(stream)).await;
    let kv = within(OP_TIMEOUT, context.get_key_value(bucket))
        .await
        .ok_or_else(|| bucket_error(format!("no answer within {OP_TIMEOUT:?}").into()))?;
    match (created, kv) {
        (Some(Ok(_)), Ok(kv)) => Ok(kv),
        // Exists with another configuration? Say which part matters.
        (Some(Err(create_error)), Ok(existing)) => {
            // `status` reads the configuration fetched by `get_key_value`.
            let status = existing
                .status()
                .await
                .map_err(|e| bucket_error(Box::new(e)))?;
            if status.max_age() != max_age || status.history() != 1 {
                return Err(bucket_error(
                    format!(
                        "exists with max_age {:?} and history {}, but this node needs \
                         max_age {max_age:?} and history 1",
                        status.max_age(),
                        status.history(),
                    )
                    .into(),
                ));
            }
            tracing::debug!(%bucket, error = %create_error, "bucket kept as it is");
            Ok(existing)
        }
        (Some(Err(create_error)), Err(_)) => Err(bucket_error(Box::new(create_error))),
        (None, _) => Err(bucket_error(
            format!("no answer within {OP_TIMEOUT:?}").into(),
        )),
        (Some(Ok(_)), Err(open_error)) => Err(bucket_error(Box::new(open_error))),
    }
}

/// `operation`'s output, or `None` after `limit`.
async fn within<T>(limit: Duration, operation: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(limit, operation).await.ok()
}
