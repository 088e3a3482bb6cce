//! Start-up configuration: every `OPENCHAT_*` environment variable is declared, documented and
//! validated here and nowhere else, so the `--help` text, the README table and the parser cannot
//! drift apart. A bad value stops the start with a one-line [`ConfigError`] that names the
//! variable and the accepted form; an unknown `OPENCHAT_*` name is an error too, because a typo
//! that silently falls back to a default is the hardest misconfiguration to notice. The core,
//! [`Config::from_vars`], is pure (variables and a core count in, a [`Config`] or the first error
//! out), so tests never touch the process environment; [`Config::from_env`] is the thin wrapper
//! `main` calls. An empty value means "unset, use the default" (containers and Helm charts emit
//! empty variables for optional settings).

mod cluster;
mod parse;
pub use parse::redact_url;
mod rtc;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::collections::HashMap;

pub use crate::domain::model::HistoryVisibility;
pub use cluster::ClusterConfig;
pub use rtc::{IceServer, ReceiveCaps, ReceiveCapsConfig, RtcConfig, TurnConfig};

/// One configuration variable as the help text shows it. `default` is either the literal value
/// the parser falls back to (the parser reads it from here, so help and behaviour agree) or, in
/// parentheses, a description of a computed default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VarSpec {
    pub name: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

const SHARDS: VarSpec = VarSpec {
    name: "OPENCHAT_SHARDS",
    default: "(number of available cores)",
    help: "Executor threads, one per core, each owning its share of connections and rooms (1 to 256).",
};
const HTTP_ADDR: VarSpec = VarSpec {
    name: "OPENCHAT_HTTP_ADDR",
    default: ":8080",
    help: "HTTP listen address: host:port or :port (all interfaces), [::]:port for IPv6; port 0 picks a free port.",
};
const PUBLIC_BASE_URL: VarSpec = VarSpec {
    name: "OPENCHAT_PUBLIC_BASE_URL",
    default: "(http://localhost:<port of OPENCHAT_HTTP_ADDR>)",
    help: "Absolute http:// or https:// URL clients reach this server at; the origin signed in session challenges.",
};
const DATA_DIR: VarSpec = VarSpec {
    name: "OPENCHAT_DATA_DIR",
    default: "./data",
    help: "Directory for the embedded SQLite database and uploaded files.",
};
const DATABASE_URL: VarSpec = VarSpec {
    name: "OPENCHAT_DATABASE_URL",
    default: "(unset: embedded SQLite at $OPENCHAT_DATA_DIR/openchat.db)",
    help: "postgres:// or postgresql:// URL to store data in PostgreSQL instead of the embedded SQLite.",
};
const DB_MAX_CONNECTIONS: VarSpec = VarSpec {
    name: "OPENCHAT_DB_MAX_CONNECTIONS",
    default: "8",
    help: "Size of the storage connection pool (1 to 1000).",
};
const AUTH_MODE: VarSpec = VarSpec {
    name: "OPENCHAT_AUTH_MODE",
    default: "session",
    help: "How requests prove identity: session (Ed25519 challenge, bearer token) or headers (identity headers, desktop client).",
};
const ALLOW_SERVER_CREATION: VarSpec = VarSpec {
    name: "OPENCHAT_ALLOW_SERVER_CREATION",
    default: "true",
    help: "Whether users may create servers through the API (true/false, yes/no, 1/0).",
};
const DEFAULT_SERVER_ID: VarSpec = VarSpec {
    name: "OPENCHAT_DEFAULT_SERVER_ID",
    default: "(unset: generated at first start and kept in storage)",
    help: "Id of the instance's default server: 1 to 64 characters of A-Z a-z 0-9 _ -.",
};
const DEFAULT_SERVER_OWNER_UID: VarSpec = VarSpec {
    name: "OPENCHAT_DEFAULT_SERVER_OWNER_UID",
    default: "(unset: the first start logs a single-use claim token instead)",
    help: "User uid that owns the default server (1 to 64 characters of A-Z a-z 0-9 _ -). In session mode only a key whose derived uid it is, or OPENCHAT_DEFAULT_SERVER_OWNER_KEY, may sign in as it.",
};
const DEFAULT_SERVER_OWNER_KEY: VarSpec = VarSpec {
    name: "OPENCHAT_DEFAULT_SERVER_OWNER_KEY",
    default: "(unset)",
    help: "The operator's Ed25519 public key (base64url, 32 bytes): its derived uid owns the default server, or, with OPENCHAT_DEFAULT_SERVER_OWNER_UID, it is the key bound to that uid (devices of that uid with another key are revoked at start).",
};
const EVIDENCE_KEY: VarSpec = VarSpec {
    name: "OPENCHAT_EVIDENCE_KEY",
    default: "(unset: a key made at first start in $OPENCHAT_DATA_DIR/evidence.key, mode 0600)",
    help: "Key that seals report evidence at rest (XChaCha20-Poly1305), 64 hex characters (`openssl rand -hex 32`). Several nodes need the same one.",
};
const DEFAULT_HISTORY_VISIBILITY: VarSpec = VarSpec {
    name: "OPENCHAT_DEFAULT_HISTORY_VISIBILITY",
    default: "joined",
    help: "History visibility of new channels: joined (members see what was posted while they were members), members (current members see all) or public (anyone, also without identity; what the desktop client needs for its anonymous reads).",
};
const SERVER_NAME: VarSpec = VarSpec {
    name: "OPENCHAT_SERVER_NAME",
    default: "OpenChat",
    help: "Display name of the default server (1 to 100 characters).",
};
const HTTP_MAX_BODY_BYTES: VarSpec = VarSpec {
    name: "OPENCHAT_HTTP_MAX_BODY_BYTES",
    default: "27262976",
    help: "Largest request body in bytes (1024 to 1073741824, at least OPENCHAT_MAX_UPLOAD_BYTES).",
};
const HTTP_BODY_BUDGET_BYTES: VarSpec = VarSpec {
    name: "OPENCHAT_HTTP_BODY_BUDGET_BYTES",
    default: "268435456",
    help: "Request body bytes all connections may have in flight together (at least OPENCHAT_HTTP_MAX_BODY_BYTES, at most 68719476736); a body that does not fit is answered 503 server_busy before it is read.",
};
const MAX_CONNECTIONS: VarSpec = VarSpec {
    name: "OPENCHAT_MAX_CONNECTIONS",
    default: "10000",
    help: "Open connections of the process, split evenly over the shards (1 to 10000000); over it a new connection is answered 503 and closed.",
};
const MAX_CONNECTIONS_PER_ADDR: VarSpec = VarSpec {
    name: "OPENCHAT_MAX_CONNECTIONS_PER_ADDR",
    default: "256",
    help: "Open connections from one source IP address (1 to 10000000); over it a new connection from that address is answered 503 and closed.",
};
const AUTHORITY_QUEUE: VarSpec = VarSpec {
    name: "OPENCHAT_AUTHORITY_QUEUE",
    default: "4096",
    help: "Commands that may wait for the community authority thread (1 to 1000000); over it a request is answered 503 overloaded at once.",
};
const STORAGE_QUEUE: VarSpec = VarSpec {
    name: "OPENCHAT_STORAGE_QUEUE",
    default: "4096",
    help: "Writes that may wait for the database (1 to 1000000); while it is full the authority takes no new command, so its own queue fills.",
};
const MAX_MESSAGE_BYTES: VarSpec = VarSpec {
    name: "OPENCHAT_MAX_MESSAGE_BYTES",
    default: "4000",
    help: "Largest chat message in bytes (1 to 1048576).",
};
const MAX_UPLOAD_BYTES: VarSpec = VarSpec {
    name: "OPENCHAT_MAX_UPLOAD_BYTES",
    default: "26214400",
    help: "Largest uploaded file in bytes (1 to 1073741824).",
};
const RATE_LIMIT_PER_MINUTE: VarSpec = VarSpec {
    name: "OPENCHAT_RATE_LIMIT_PER_MINUTE",
    default: "120",
    help: "Requests per minute allowed per client (1 to 1000000).",
};
const MAX_DEVICES_PER_USER: VarSpec = VarSpec {
    name: "OPENCHAT_MAX_DEVICES_PER_USER",
    default: "10",
    help: "Active devices one user may have, signed in or linked (1 to 1000).",
};
const RTC_STUN_URLS: VarSpec = VarSpec {
    name: "OPENCHAT_RTC_STUN_URLS",
    default: "stun:stun.l.google.com:19302,stun:stun1.l.google.com:19302,stun:stun2.l.google.com:19302,stun:stun3.l.google.com:19302,stun:stun4.l.google.com:19302",
    help: "Comma-separated stun:/stuns: URLs advertised to clients; none or - advertises no STUN.",
};
const RTC_TURN_URLS: VarSpec = VarSpec {
    name: "OPENCHAT_RTC_TURN_URLS",
    default: "",
    help: "Comma-separated turn:/turns: URLs advertised to clients; needs the TURN username and credential.",
};
const RTC_TURN_USERNAME: VarSpec = VarSpec {
    name: "OPENCHAT_RTC_TURN_USERNAME",
    default: "",
    help: "TURN username (required when OPENCHAT_RTC_TURN_URLS is set).",
};
const RTC_TURN_CREDENTIAL: VarSpec = VarSpec {
    name: "OPENCHAT_RTC_TURN_CREDENTIAL",
    default: "",
    help: "TURN password (required when OPENCHAT_RTC_TURN_URLS is set; never logged).",
};
const RTC_TURN_CREDENTIAL_TYPE: VarSpec = VarSpec {
    name: "OPENCHAT_RTC_TURN_CREDENTIAL_TYPE",
    default: "static",
    help: "TURN credential type: static (OPENCHAT_RTC_TURN_USERNAME/CREDENTIAL) or ephemeral (coturn shared secret OPENCHAT_RTC_TURN_SECRET; the default when that is set).",
};
const RTC_TURN_SECRET: VarSpec = VarSpec {
    name: "OPENCHAT_RTC_TURN_SECRET",
    default: "(unset: static TURN credentials)",
    help: "coturn static-auth-secret: join tickets then carry ephemeral TURN credentials valid 12 hours (at least 16 characters).",
};
const RTC_TICKET_SECRET: VarSpec = VarSpec {
    name: "OPENCHAT_RTC_TICKET_SECRET",
    default: "(unset: random per start; several nodes need the same one)",
    help: "Secret that signs voice join tickets (HMAC-SHA256), at least 32 characters.",
};
const RTC_SUBSCRIBE_MAX_VIDEO_TRACKS: VarSpec = VarSpec {
    name: "OPENCHAT_RTC_SUBSCRIBE_MAX_VIDEO_TRACKS",
    default: "8",
    help: "Video tracks a call participant receives at most, instance default (0 to 64).",
};
const RTC_SUBSCRIBE_MAX_AUDIO_TRACKS: VarSpec = VarSpec {
    name: "OPENCHAT_RTC_SUBSCRIBE_MAX_AUDIO_TRACKS",
    default: "16",
    help: "Audio tracks a call participant receives at most, instance default (0 to 64).",
};
const RTC_SUBSCRIBE_MAX_VIDEO_TRACKS_BY_SERVER: VarSpec = VarSpec {
    name: "OPENCHAT_RTC_SUBSCRIBE_MAX_VIDEO_TRACKS_BY_SERVER",
    default: "",
    help: "Per-server video track caps as comma-separated server_id=value (0 to 64).",
};
const RTC_SUBSCRIBE_MAX_AUDIO_TRACKS_BY_SERVER: VarSpec = VarSpec {
    name: "OPENCHAT_RTC_SUBSCRIBE_MAX_AUDIO_TRACKS_BY_SERVER",
    default: "",
    help: "Per-server audio track caps as comma-separated server_id=value (0 to 64).",
};
const RTC_SUBSCRIBE_MAX_VIDEO_TRACKS_BY_CHANNEL: VarSpec = VarSpec {
    name: "OPENCHAT_RTC_SUBSCRIBE_MAX_VIDEO_TRACKS_BY_CHANNEL",
    default: "",
    help: "Per-channel video track caps as comma-separated channel_id=value (0 to 64); beat server caps.",
};
const RTC_SUBSCRIBE_MAX_AUDIO_TRACKS_BY_CHANNEL: VarSpec = VarSpec {
    name: "OPENCHAT_RTC_SUBSCRIBE_MAX_AUDIO_TRACKS_BY_CHANNEL",
    default: "",
    help: "Per-channel audio track caps as comma-separated channel_id=value (0 to 64); beat server caps.",
};
const RTC_UDP_PORT: VarSpec = VarSpec {
    name: "OPENCHAT_RTC_UDP_PORT",
    default: "50000",
    help: "First UDP media port; shard n uses this port + n, so port + shards - 1 must be at most 65535. 0 gives every shard any free port.",
};
const RTC_PUBLIC_IP: VarSpec = VarSpec {
    name: "OPENCHAT_RTC_PUBLIC_IP",
    default: "(unset: the address the client reached)",
    help: "IP address advertised in media candidates. Unset, a participant gets the IP its signaling connection reached; behind NAT set the public address (and forward the UDP ports).",
};
const RTC_MAX_CALL_PARTICIPANTS: VarSpec = VarSpec {
    name: "OPENCHAT_RTC_MAX_CALL_PARTICIPANTS",
    default: "25",
    help: "Participants allowed in one call (1 to 1000).",
};
const CLUSTER_NATS_URL: VarSpec = VarSpec {
    name: "OPENCHAT_CLUSTER_NATS_URL",
    default: "(unset: a single node)",
    help: "nats:// or tls:// URL of the NATS server (JetStream) the nodes of a cluster share, several separated by commas; needs PostgreSQL and the same OPENCHAT_RTC_TICKET_SECRET and OPENCHAT_RTC_TURN_SECRET on every node.",
};
const NODE_ID: VarSpec = VarSpec {
    name: "OPENCHAT_NODE_ID",
    default: "(the host name)",
    help: "This node's name in the cluster, unique among its nodes: 1 to 64 characters of A-Z a-z 0-9 _ - (it becomes part of NATS keys and subjects).",
};
const CLUSTER_NAME: VarSpec = VarSpec {
    name: "OPENCHAT_CLUSTER_NAME",
    default: "openchat",
    help: "Prefix of the cluster's NATS subjects and buckets, the same on every node: 1 to 64 characters of A-Z a-z 0-9 _ -.",
};
const SHUTDOWN_TIMEOUT_MS: VarSpec = VarSpec {
    name: "OPENCHAT_SHUTDOWN_TIMEOUT_MS",
    default: "10000",
    help: "Milliseconds a graceful shutdown waits for connections to drain (0 to 600000).",
};
const SHUTDOWN_DRAIN_DELAY_MS: VarSpec = VarSpec {
    name: "OPENCHAT_SHUTDOWN_DRAIN_DELAY_MS",
    default: "0",
    help: "Milliseconds between SIGTERM and closing the listener, while /readyz answers 503 draining and requests are still served, so a load balancer stops sending new ones first (0 to 120000; the chart sets 5000).",
};
const LOG: VarSpec = VarSpec {
    name: "OPENCHAT_LOG",
    default: "info",
    help: "Log filter in tracing EnvFilter syntax, e.g. info or openchatd=debug,info.",
};
const LOG_FORMAT: VarSpec = VarSpec {
    name: "OPENCHAT_LOG_FORMAT",
    default: "text",
    help: "Log output format: text or json.",
};

/// Every variable, in the order of the help text.
pub const VARIABLES: &[VarSpec] = &[
    SHARDS,
    HTTP_ADDR,
    PUBLIC_BASE_URL,
    DATA_DIR,
    DATABASE_URL,
    DB_MAX_CONNECTIONS,
    AUTH_MODE,
    ALLOW_SERVER_CREATION,
    DEFAULT_SERVER_ID,
    DEFAULT_SERVER_OWNER_UID,
    DEFAULT_SERVER_OWNER_KEY,
    EVIDENCE_KEY,
    DEFAULT_HISTORY_VISIBILITY,
    SERVER_NAME,
    HTTP_MAX_BODY_BYTES,
    HTTP_BODY_BUDGET_BYTES,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_ADDR,
    AUTHORITY_QUEUE,
    STORAGE_QUEUE,
    MAX_MESSAGE_BYTES,
    MAX_UPLOAD_BYTES,
    RATE_LIMIT_PER_MINUTE,
    MAX_DEVICES_PER_USER,
    RTC_STUN_URLS,
    RTC_TURN_URLS,
    RTC_TURN_USERNAME,
    RTC_TURN_CREDENTIAL,
    RTC_TURN_CREDENTIAL_TYPE,
    RTC_TURN_SECRET,
    RTC_TICKET_SECRET,
    RTC_SUBSCRIBE_MAX_VIDEO_TRACKS,
    RTC_SUBSCRIBE_MAX_AUDIO_TRACKS,
    RTC_SUBSCRIBE_MAX_VIDEO_TRACKS_BY_SERVER,
    RTC_SUBSCRIBE_MAX_AUDIO_TRACKS_BY_SERVER,
    RTC_SUBSCRIBE_MAX_VIDEO_TRACKS_BY_CHANNEL,
    RTC_SUBSCRIBE_MAX_AUDIO_TRACKS_BY_CHANNEL,
    RTC_UDP_PORT,
    RTC_PUBLIC_IP,
    RTC_MAX_CALL_PARTICIPANTS,
    CLUSTER_NATS_URL,
    NODE_ID,
    CLUSTER_NAME,
    SHUTDOWN_TIMEOUT_MS,
    SHUTDOWN_DRAIN_DELAY_MS,
    LOG,
    LOG_FORMAT,
];

const PREFIX: &str = "OPENCHAT_";

/// The `--help` output: usage line, then every variable with its default and description.
pub fn help_text() -> String {
    let mut text = String::from(
        "Usage: openchatd [--help] [--version]\n\n\
         openchatd is configured only through OPENCHAT_* environment variables. An empty value\n\
         means the default; an unknown OPENCHAT_* variable or a bad value stops the start.\n\n\
         Variables:\n",
    );
    for var in VARIABLES {
        let default = if var.default.is_empty() {
            "(empty)"
        } else {
            var.default
        };
        text.push_str(&format!(
            "  {}\n      default: {}\n      {}\n",
            var.name, default, var.help
        ));
    }
    text
}

/// Why the configuration was rejected. Display is one line, `VARIABLE: message`, fit for a
/// start-up failure; values that may hold secrets are never echoed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl ConfigError {
    fn new(var: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            var,
            message: message.into(),
        }
    }

    /// `invalid value "<raw>": <expected>`; the value is Debug-quoted so control characters
    /// cannot break the one-line form, and long values are cut.
    fn invalid(var: &VarSpec, raw: &str, expected: &str) -> Self {
        Self::new(
            var.name,
            format!("invalid value {}: {expected}", parse::quoted(raw)),
        )
    }

    /// For variables whose value may carry a password: say what was expected, never what was seen.
    fn invalid_secret(var: &VarSpec, expected: &str) -> Self {
        Self::new(
            var.name,
            format!("invalid value (not shown, it may contain a password): {expected}"),
        )
    }
}

/// The validated configuration of one `openchatd` process.
#[derive(Debug, Clone)]
pub struct Config {
    pub shards: usize,
    pub http_addr: SocketAddr,
    /// No trailing slash: it is the `origin` in signed session challenges (wire contract B.1).
    pub public_base_url: String,
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    pub db_max_connections: u32,
    pub auth_mode: AuthMode,
    pub allow_server_creation: bool,
    /// `None`: the storage layer generates one at first start and keeps it.
    pub default_server_id: Option<String>,
    pub server_name: String,
    pub default_server_owner_uid: Option<String>,
    /// `OPENCHAT_EVIDENCE_KEY`; `None`: the key file in the data directory.
    pub evidence_key: Option<crate::auth::evidence_key::EvidenceKey>,
    /// The operator's key (base64url, unpadded), `OPENCHAT_DEFAULT_SERVER_OWNER_KEY`.
    pub default_server_owner_key: Option<String>,
    pub default_history_visibility: HistoryVisibility,
    pub limits: Limits,
    /// Places in the authority's command queue (`OPENCHAT_AUTHORITY_QUEUE`).
    pub authority_queue: usize,
    /// Places in the storage bridge's write queue (`OPENCHAT_STORAGE_QUEUE`).
    pub storage_queue: usize,
    pub rtc: RtcConfig,
    /// `None`: a single node (`OPENCHAT_CLUSTER_NATS_URL` unset).
    pub cluster: Option<ClusterConfig>,
    pub shutdown_timeout: Duration,
    /// `OPENCHAT_SHUTDOWN_DRAIN_DELAY_MS`: how long a stopping server stays ready-false but
    /// serving before it closes its listener.
    pub shutdown_drain_delay: Duration,
    pub log_filter: String,
    pub log_format: LogFormat,
}

/// Where data lives. Debug hides the Postgres password because a `Config` is printed in
/// start-up diagnostics and logs must never carry credentials.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseConfig {
    Postgres { url: String },
    Sqlite { path: PathBuf },
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseConfig::Postgres { url } => f
                .debug_struct("Postgres")
                .field("url", &parse::redact_url(url))
                .finish(),
            DatabaseConfig::Sqlite { path } => {
                f.debug_struct("Sqlite").field("path", path).finish()
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Ed25519 challenge, then a bearer token (wire contract B.1).
    Session,
    /// Identity taken from request headers, as the desktop client sends it.
    Headers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Sizes and rates the HTTP layer enforces and the capabilities document advertises.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_message_bytes: usize,
    pub max_upload_bytes: usize,
    pub rate_limit_per_minute: u32,
    /// Active devices per user (`OPENCHAT_MAX_DEVICES_PER_USER`).
    pub max_devices_per_user: usize,
    /// Body bytes in flight over all connections (`OPENCHAT_HTTP_BODY_BUDGET_BYTES`).
    pub body_budget_bytes: usize,
    /// Open connections of the process (`OPENCHAT_MAX_CONNECTIONS`), split over the shards.
    pub max_connections: usize,
    /// Open connections from one IP address (`OPENCHAT_MAX_CONNECTIONS_PER_ADDR`).
    pub max_connections_per_addr: usize,
}

/// The known `OPENCHAT_*` variables present in the environment, keyed by their static name.
struct Env {
    values: HashMap<&'static str, String>,
}

impl Env {
    /// Keeps our variables and rejects unknown `OPENCHAT_*` names before any value is looked at:
    /// a misspelt name is the likelier root cause of whatever else looks wrong.
    fn new<I: IntoIterator<Item = (String, String)>>(vars: I) -> Result<Env, ConfigError> {
        let mut values = HashMap::new();
        let mut unknown: Vec<String> = Vec::new();
        for (name, value) in vars {
            match VARIABLES.iter().find(|var| var.name == name) {
                Some(var) => {
                    values.insert(var.name, value);
                }
                None if is_ours(&name) => unknown.push(name),
                None => {}
            }
        }
        // Sorted so the reported error does not depend on the environment's order.
        match unknown.into_iter().min() {
            Some(name) => Err(unknown_variable(&name)),
            None => Ok(Env { values }),
        }
    }

    /// The value, or `None` when unset or empty.
    fn value(&self, var: &VarSpec) -> Option<&str> {
        self.values
            .get(var.name)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }

    /// The value, or the literal default from the variable's spec.
    fn value_or_default(&self, var: &VarSpec) -> &str {
        self.value(var).unwrap_or(var.default)
    }

    /// The variable's value (or literal default) as an integer in `min..=max`.
    fn integer<T>(&self, var: &VarSpec, min: T, max: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        parse::integer(var, self.value_or_default(var), min, max)
    }

    /// The variable's value (or literal default) as one of `choices`.
    fn keyword<T: Copy>(&self, var: &VarSpec, choices: &[(&str, T)]) -> Result<T, ConfigError> {
        parse::keyword(var, self.value_or_default(var), choices)
    }
}

/// Case-insensitive so that `openchat_shards` (ignored by the case-sensitive environment) is
/// reported rather than silently dropped.
fn is_ours(name: &str) -> bool {
    name.get(..PREFIX.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(PREFIX))
}

fn unknown_variable(name: &str) -> ConfigError {
    let mut message = String::from("unknown variable; see openchatd --help");
    if let Some(near) = closest_known(name) {
        message.push_str(&format!(" (did you mean {near}?)"));
    }
    ConfigError::new(static_name(name), message)
}

/// `ConfigError::var` is `&'static str` so callers can match on known names; an unknown name
/// only exists at run time, so it is leaked. This happens at most once, on the path that ends
/// the process.
fn static_name(name: &str) -> &'static str {
    match VARIABLES.iter().find(|var| var.name == name) {
        Some(var) => var.name,
        None => Box::leak(name.to_owned().into_boxed_str()),
    }
}

/// The known name within a small edit distance, to turn "unknown" into "did you mean". The
/// allowance grows with the length of the part after the prefix, so a short unrelated name
/// (`OPENCHAT_FOO`) is not "corrected" into a short real one (`OPENCHAT_LOG`).
fn closest_known(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    let allowance = (upper.len().saturating_sub(PREFIX.len()) / 4).clamp(1, 3);
    VARIABLES
        .iter()
        .map(|var| (edit_distance(&upper, var.name), var.name))
        .filter(|(distance, _)| *distance <= allowance)
        .min()
        .map(|(_, known)| known)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

impl Config {
    /// The uid that owns the default server: `OPENCHAT_DEFAULT_SERVER_OWNER_UID`, else the uid
    /// derived from `OPENCHAT_DEFAULT_SERVER_OWNER_KEY`.
    pub fn default_server_owner(&self) -> Option<String> {
        self.default_server_owner_uid.clone().or_else(|| {
            let key = crate::auth::decode_public_key(self.default_server_owner_key.as_deref()?);
            key.ok().map(|k| crate::auth::derive_user_uid(&k))
        })
    }

    /// Reads the process environment; `available_cores` comes from
    /// `std::thread::available_parallelism()`.
    pub fn from_env() -> Result<Config, ConfigError> {
        let mut vars = Vec::new();
        // `vars_os` because `std::env::vars` panics on a non-UTF-8 value anywhere in the
        // environment, and only our own variables are our business.
        for (name, value) in std::env::vars_os() {
            let name = name.to_string_lossy().into_owned();
            match value.into_string() {
                Ok(value) => vars.push((name, value)),
                Err(_) if is_ours(&name) => {
                    return Err(ConfigError::new(
                        static_name(&name),
                        "invalid value (not valid UTF-8): expected UTF-8 text",
                    ));
                }
                Err(_) => {}
            }
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Config::from_vars(vars, cores)
    }

    /// Pure but for the host name, which only a cluster node without `OPENCHAT_NODE_ID` reads:
    /// the testable core. `vars` = all environment variables (the function ignores
    /// non-`OPENCHAT_` ones). Returns the first error in help-text order, after unknown names.
    pub fn from_vars<I: IntoIterator<Item = (String, String)>>(
        vars: I,
        available_cores: usize,
    ) -> Result<Config, ConfigError> {
        Config::from_vars_on_host(vars, available_cores, cluster::host_name)
    }

    /// [`Config::from_vars`] with the host name (the default `OPENCHAT_NODE_ID`) given by
    /// `host_name`, which is called at most once and only in cluster mode.
    pub fn from_vars_on_host<I: IntoIterator<Item = (String, String)>>(
        vars: I,
        available_cores: usize,
        host_name: impl FnOnce() -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let env = Env::new(vars)?;

        let shards = match env.value(&SHARDS) {
            Some(raw) => parse::integer(&SHARDS, raw, 1usize, 256)?,
            None => available_cores.clamp(1, 256),
        };
        let http_addr = parse::listen_addr(&HTTP_ADDR, env.value_or_default(&HTTP_ADDR))?;
        let public_base_url = match env.value(&PUBLIC_BASE_URL) {
            Some(raw) => parse::base_url(&PUBLIC_BASE_URL, raw)?,
            None => format!("http://localhost:{}", http_addr.port()),
        };
        // Not trimmed: a path is taken as written.
        let data_dir = PathBuf::from(env.value_or_default(&DATA_DIR));
        let database = match env.value(&DATABASE_URL) {
            Some(raw) => DatabaseConfig::Postgres {
                url: parse::postgres_url(&DATABASE_URL, raw)?,
            },
            None => DatabaseConfig::Sqlite {
                path: data_dir.join("openchat.db"),
            },
        };
        let db_max_connections = env.integer(&DB_MAX_CONNECTIONS, 1u32, 1000)?;
        let auth_mode = env.keyword(
            &AUTH_MODE,
            &[
                ("session", AuthMode::Session),
                ("headers", AuthMode::Headers),
            ],
        )?;
        let allow_server_creation = parse::boolean(
            &ALLOW_SERVER_CREATION,
            env.value_or_default(&ALLOW_SERVER_CREATION),
        )?;
        let default_server_id = env
            .value(&DEFAULT_SERVER_ID)
            .map(|raw| parse::identifier(&DEFAULT_SERVER_ID, raw))
            .transpose()?;
        let default_server_owner_uid = env
            .value(&DEFAULT_SERVER_OWNER_UID)
            .map(|raw| parse::identifier(&DEFAULT_SERVER_OWNER_UID, raw))
            .transpose()?;
        let default_server_owner_key = env
            .value(&DEFAULT_SERVER_OWNER_KEY)
            .map(|raw| parse::public_key(&DEFAULT_SERVER_OWNER_KEY, raw))
            .transpose()?;
        let evidence_key = env
            .value(&EVIDENCE_KEY)
            .map(|raw| {
                crate::auth::evidence_key::EvidenceKey::from_hex(raw).ok_or_else(|| {
                    ConfigError::new(
                        EVIDENCE_KEY.name,
                        "invalid value (not shown, it is a secret): expected 64 hex characters",
                    )
                })
            })
            .transpose()?;
        let default_history_visibility = env.keyword(
            &DEFAULT_HISTORY_VISIBILITY,
            &[
                ("joined", HistoryVisibility::Joined),
                ("members", HistoryVisibility::Members),
                ("public", HistoryVisibility::Public),
            ],
        )?;
        let server_name =
            parse::display_name(&SERVER_NAME, env.value_or_default(&SERVER_NAME), 100)?;
        let limits = limits_from_env(&env)?;
        let authority_queue = env.integer(&AUTHORITY_QUEUE, 1usize, 1_000_000)?;
        let storage_queue = env.integer(&STORAGE_QUEUE, 1usize, 1_000_000)?;
        let rtc = rtc::rtc_from_env(&env, shards)?;
        let cluster = cluster::cluster_from_env(&env, &database, host_name)?;
        let shutdown_ms = env.integer(&SHUTDOWN_TIMEOUT_MS, 0u64, 600_000)?;
        let drain_delay_ms = env.integer(&SHUTDOWN_DRAIN_DELAY_MS, 0u64, 120_000)?;
        let log_filter = parse::log_filter(&LOG, env.value_or_default(&LOG))?;
        let log_format = env.keyword(
            &LOG_FORMAT,
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
        )?;

        Ok(Config {
            shards,
            http_addr,
            public_base_url,
            data_dir,
            database,
            db_max_connections,
            auth_mode,
            allow_server_creation,
            default_server_id,
            server_name,
            default_server_owner_uid,
            default_server_owner_key,
            evidence_key,
            default_history_visibility,
            limits,
            authority_queue,
            storage_queue,
            rtc,
            cluster,
            shutdown_timeout: Duration::from_millis(shutdown_ms),
            shutdown_drain_delay: Duration::from_millis(drain_delay_ms),
            log_filter,
            log_format,
        })
    }
}

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const GIB: usize = 1024 * MIB;

fn limits_from_env(env: &Env) -> Result<Limits, ConfigError> {
    let body_raw = env.value_or_default(&HTTP_MAX_BODY_BYTES);
    let max_body_bytes = parse::integer(&HTTP_MAX_BODY_BYTES, body_raw, KIB, GIB)?;
    let max_message_bytes = env.integer(&MAX_MESSAGE_BYTES, 1, MIB)?;
    let max_upload_bytes = env.integer(&MAX_UPLOAD_BYTES, 1, GIB)?;
    let rate_limit_per_minute = env.integer(&RATE_LIMIT_PER_MINUTE, 1u32, 1_000_000)?;
    let max_devices_per_user = env.integer(&MAX_DEVICES_PER_USER, 1usize, 1000)?;
    // An upload travels in one request body; a smaller body limit would make the advertised
    // upload limit a lie.
    if max_body_bytes < max_upload_bytes {
        return Err(ConfigError::invalid(
            &HTTP_MAX_BODY_BYTES,
            body_raw,
            &format!(
                "expected an integer from {max_upload_bytes} (OPENCHAT_MAX_UPLOAD_BYTES) to {GIB}, \
                 because uploads travel in one request body"
            ),
        ));
    }
    // A budget smaller than the largest body would refuse every largest upload forever.
    let budget_raw = env.value_or_default(&HTTP_BODY_BUDGET_BYTES);
    let body_budget_bytes = parse::integer(
        &HTTP_BODY_BUDGET_BYTES,
        budget_raw,
        max_body_bytes,
        64 * GIB,
    )?;
    let max_connections = env.integer(&MAX_CONNECTIONS, 1, 10_000_000)?;
    let max_connections_per_addr = env.integer(&MAX_CONNECTIONS_PER_ADDR, 1, 10_000_000)?;
    Ok(Limits {
        max_body_bytes,
        max_message_bytes,
        max_upload_bytes,
        rate_limit_per_minute,
        max_devices_per_user,
        body_budget_bytes,
        max_connections,
        max_connections_per_addr,
    })
}

#[cfg(test)]
mod tests;
