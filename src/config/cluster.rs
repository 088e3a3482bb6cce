//! Cluster settings: whether this process is one node of several sharing a NATS server, its name
//! there, and the cluster's name. Unset `OPENCHAT_CLUSTER_NATS_URL` is today's single node, and
//! nothing else here changes it. In cluster mode the rules that make several nodes one server
//! are checked at start: one shared PostgreSQL database (an embedded SQLite file cannot be
//! shared), and the RTC secrets every node must hold alike (a ticket signed by one node is
//! checked by another; TURN credentials minted by one are honoured by the shared coturn).

use std::fmt;

use super::parse;
use super::{
    CLUSTER_NAME, CLUSTER_NATS_URL, ConfigError, DATABASE_URL, DatabaseConfig, Env, NODE_ID,
    RTC_TICKET_SECRET, RTC_TURN_SECRET,
};

/// Where the host name is read first; `gethostname(2)` is the fallback.
const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";

/// The node of a cluster this process is (`OPENCHAT_CLUSTER_NATS_URL` set).
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The NATS servers (`nats://` or `tls://`, as written); several are tried in turn. Debug
    /// hides their passwords.
    pub nats_urls: Vec<String>,
    /// `OPENCHAT_NODE_ID` or the host name; part of NATS keys and subjects.
    pub node_id: String,
    /// `OPENCHAT_CLUSTER_NAME`: the prefix of the cluster's subjects and buckets.
    pub name: String,
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self
            .nats_urls
            .iter()
            .map(|url| parse::redact_url(url))
            .collect();
        f.debug_struct("ClusterConfig")
            .field("nats_urls", &urls)
            .field("node_id", &self.node_id)
            .field("name", &self.name)
            .finish()
    }
}

/// The host name of this machine, trimmed; `None` if neither source gives one.
pub(super) fn host_name() -> Option<String> {
    let from_file = std::fs::read_to_string(HOSTNAME_FILE)
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|name| !name.is_empty());
    from_file.or_else(gethostname)
}

fn gethostname() -> Option<String> {
    // HOST_NAME_MAX is 64 on Linux; room for the terminating NUL and then some.
    let mut buffer = [0u8; 256];
    // SAFETY: the pointer and length describe `buffer`, which outlives the call; the kernel
    // writes at most `len` bytes.
    let result = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if result != 0 {
        return None;
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    let name = String::from_utf8_lossy(&buffer[..end]).trim().to_owned();
    (!name.is_empty()).then_some(name)
}

/// The cluster settings, `None` for a single node. The node id and cluster name are validated
/// whenever set, so a typo shows before cluster mode is switched on; the host name is only
/// consulted (through `host_name`) in cluster mode, so a single node never depends on it.
pub(super) fn cluster_from_env(
    env: &Env,
    database: &DatabaseConfig,
    host_name: impl FnOnce() -> Option<String>,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let nats_urls = env
        .value(&CLUSTER_NATS_URL)
        .map(|raw| parse::nats_urls(&CLUSTER_NATS_URL, raw))
        .transpose()?;
    let node_id = env
        .value(&NODE_ID)
        .map(|raw| parse::identifier(&NODE_ID, raw))
        .transpose()?;
    let name = parse::identifier(&CLUSTER_NAME, env.value_or_default(&CLUSTER_NAME))?;
    let Some(nats_urls) = nats_urls else {
        return Ok(None);
    };
    if matches!(database, DatabaseConfig::Sqlite { .. }) {
        return Err(ConfigError::new(
            DATABASE_URL.name,
            "missing: cluster mode (OPENCHAT_CLUSTER_NATS_URL) needs a postgres:// URL that \
             every node shares; the embedded SQLite database is single-node",
        ));
    }
    for (var, what) in [
        (
            &RTC_TICKET_SECRET,
            "every node checks the join tickets the others sign",
        ),
        (
            &RTC_TURN_SECRET,
            "every node mints TURN credentials the shared coturn must accept",
        ),
    ] {
        if env.value(var).is_none() {
            return Err(ConfigError::new(
                var.name,
                format!(
                    "missing: cluster mode (OPENCHAT_CLUSTER_NATS_URL) needs the same value on \
                     every node, because {what}"
                ),
            ));
        }
    }
    let node_id = match node_id {
        Some(id) => id,
        None => node_id_from_host(host_name())?,
    };
    Ok(Some(ClusterConfig {
        nats_urls,
        node_id,
        name,
    }))
}

/// The default node id: the host name, if it is a valid id.
fn node_id_from_host(host: Option<String>) -> Result<String, ConfigError> {
    let Some(host) = host else {
        return Err(ConfigError::new(
            NODE_ID.name,
            "missing: the host name cannot be read; set 1 to 64 characters of A-Z, a-z, 0-9, _ \
             and -, unique in the cluster",
        ));
    };
    parse::identifier(&NODE_ID, &host).map_err(|_| {
        ConfigError::new(
            NODE_ID.name,
            format!(
                "missing, and the host name {} is no node id: set 1 to 64 characters of A-Z, \
                 a-z, 0-9, _ and -, unique in the cluster",
                parse::quoted(&host)
            ),
        )
    })
}
