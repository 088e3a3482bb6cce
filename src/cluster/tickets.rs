//! Join tickets are single-use across the cluster: the first node that redeems a ticket writes
//! its id into the KV bucket `<cluster>_tickets` with `create`, which fails for an id already
//! there, so the same ticket replayed on another node is refused. Entries live
//! [`TICKET_ENTRY_TTL`]: longer than any ticket verifies (`rtc::ticket::TICKET_TTL_SECS`), so a
//! used id is never forgotten while its ticket could still be presented.

use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind};
use bytes::Bytes;

use super::ClusterError;
use super::kv::{OP_TIMEOUT, open_bucket};

/// How long a used ticket id is kept: the ticket lifetime and a minute for clock skew.
pub const TICKET_ENTRY_TTL: Duration =
    Duration::from_secs(crate::rtc::ticket::TICKET_TTL_SECS as u64 + 60);
/// The suffix of the bucket's name after the cluster name.
const BUCKET_SUFFIX: &str = "_tickets";
/// The longest ticket id taken as a key (server-made ids are `jt_` and 32 hex digits).
const MAX_JTI_LEN: usize = 64;

/// The used ticket ids of one cluster.
#[derive(Debug, Clone)]
pub struct TicketStore {
    kv: kv::Store,
    node_id: String,
}

impl TicketStore {
    pub fn bucket_name(cluster_name: &str) -> String {
        format!("{cluster_name}{BUCKET_SUFFIX}")
    }

    pub async fn open(
        client: async_nats::Client,
        cluster_name: &str,
        node_id: &str,
    ) -> Result<TicketStore, ClusterError> {
        let kv = open_bucket(
            client,
            &Self::bucket_name(cluster_name),
            "openchatd join tickets already used",
            TICKET_ENTRY_TTL,
        )
        .await?;
        Ok(TicketStore {
            kv,
            node_id: node_id.to_owned(),
        })
    }

    /// Marks `jti` used by this node: `true` the first time anywhere in the cluster, `false`
    /// when a node used it before.
    pub async fn claim(&self, jti: &str) -> Result<bool, ClusterError> {
        let valid = !jti.is_empty()
            && jti.len() <= MAX_JTI_LEN
            && jti
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(ClusterError::InvalidKey(format!(
                "ticket id of {} bytes",
                jti.len()
            )));
        }
        let key = format!("jti.{jti}");
        let created = tokio::time::timeout(
            OP_TIMEOUT,
            self.kv
                .create(key.as_str(), Bytes::from(self.node_id.clone())),
        )
        .await
        .map_err(|_| ClusterError::Timeout {
            op: "ticket claim",
            key: key.clone(),
            after: OP_TIMEOUT,
        })?;
        match created {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == CreateErrorKind::AlreadyExists => Ok(false),
            Err(error) => Err(ClusterError::Kv {
                op: "ticket claim",
                key,
                source: Box::new(error),
            }),
        }
    }
}
