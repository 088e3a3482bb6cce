//! Tests of the variable table, the value parsers and the cross-variable rules; RTC behaviour
//! is tested next to it in `rtc.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

/// Cores reported by the fake machine; distinct from every default so tests can tell them apart.
const CORES: usize = 6;

pub(super) fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_vars(
        vars.iter()
            .map(|(name, value)| (name.to_string(), value.to_string())),
        CORES,
    )
}

pub(super) fn ok(vars: &[(&str, &str)]) -> Config {
    config(vars).unwrap_or_else(|error| panic!("rejected {vars:?}: {error}"))
}

pub(super) fn err(vars: &[(&str, &str)]) -> ConfigError {
    match config(vars) {
        Ok(config) => panic!("accepted {vars:?}: {config:?}"),
        Err(error) => error,
    }
}

/// The error must name the variable, be one line, and contain the accepted form.
pub(super) fn assert_rejected(var: &'static str, value: &str, accepted: &str) {
    let error = err(&[(var, value)]);
    assert_eq!(error.var, var, "{value:?}: {error}");
    let line = error.to_string();
    assert!(line.starts_with(&format!("{var}: ")), "{line}");
    assert!(
        !line.contains('\n') && !line.contains('\r'),
        "not one line: {line}"
    );
    assert!(
        line.contains(accepted),
        "{value:?}: {line:?} lacks {accepted:?}"
    );
}

#[test]
fn empty_environment_gives_documented_defaults() {
    let config = ok(&[]);
    assert_eq!(config.shards, CORES);
    assert_eq!(
        config.http_addr,
        "0.0.0.0:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.public_base_url, "http://localhost:8080");
    assert_eq!(config.data_dir, PathBuf::from("./data"));
    assert_eq!(
        config.database,
        DatabaseConfig::Sqlite {
            path: PathBuf::from("./data/openchat.db")
        }
    );
    assert_eq!(config.db_max_connections, 8);
    assert_eq!(config.auth_mode, AuthMode::Session);
    assert!(config.allow_server_creation);
    assert_eq!(config.default_server_id, None);
    assert_eq!(config.server_name, "OpenChat");
    assert_eq!(config.limits.max_body_bytes, 26 * 1024 * 1024);
    assert_eq!(config.limits.max_message_bytes, 4000);
    assert_eq!(config.limits.max_upload_bytes, 25 * 1024 * 1024);
    assert_eq!(config.limits.rate_limit_per_minute, 120);
    assert_eq!(config.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(config.log_filter, "info");
    assert_eq!(config.log_format, LogFormat::Text);
    // RTC defaults are checked in rtc.rs.
}

#[test]
fn empty_values_mean_unset() {
    let vars: Vec<(&str, &str)> = VARIABLES.iter().map(|var| (var.name, "")).collect();
    let config = ok(&vars);
    assert_eq!(config.shards, CORES);
    assert_eq!(config.server_name, "OpenChat");
    assert_eq!(config.rtc.stun_urls.len(), 5);
}

#[test]
fn literal_defaults_parse_to_the_same_config() {
    // Setting a variable to the default the help text shows must change nothing.
    let literal: Vec<(&str, &str)> = VARIABLES
        .iter()
        .filter(|var| !var.default.starts_with('('))
        .map(|var| (var.name, var.default))
        .collect();
    let explicit = ok(&literal);
    let implicit = ok(&[]);
    assert_eq!(format!("{explicit:?}"), format!("{implicit:?}"));
}

#[test]
fn other_variables_are_ignored() {
    let config = ok(&[
        ("PATH", "/bin"),
        ("OPENCHATX", "1"),
        ("MY_OPENCHAT_SHARDS", "x"),
    ]);
    assert_eq!(config.shards, CORES);
}

#[test]
fn unknown_openchat_variable_is_rejected() {
    let error = err(&[("OPENCHAT_FOO", "1")]);
    assert_eq!(error.var, "OPENCHAT_FOO");
    assert_eq!(
        error.to_string(),
        "OPENCHAT_FOO: unknown variable; see openchatd --help"
    );
}

#[test]
fn unknown_variable_suggests_a_near_name() {
    let error = err(&[("OPENCHAT_SHARD", "2")]);
    assert_eq!(error.var, "OPENCHAT_SHARD");
    assert!(
        error.message.contains("did you mean OPENCHAT_SHARDS?"),
        "{error}"
    );
    let error = err(&[("OPENCHAT_RTC_STUN_URL", "none")]);
    assert!(
        error
            .message
            .contains("did you mean OPENCHAT_RTC_STUN_URLS?"),
        "{error}"
    );
    let error = err(&[("openchat_log", "debug")]);
    assert!(
        error.message.contains("did you mean OPENCHAT_LOG?"),
        "{error}"
    );
}

#[test]
fn unknown_variable_is_reported_before_bad_values() {
    let error = err(&[
        ("OPENCHAT_SHARDS", "abc"),
        ("OPENCHAT_ZZZ", "1"),
        ("OPENCHAT_AAA", "1"),
    ]);
    assert_eq!(error.var, "OPENCHAT_AAA");
}

#[test]
fn error_display_matches_the_documented_form() {
    let error = err(&[("OPENCHAT_SHARDS", "abc")]);
    assert_eq!(
        error.to_string(),
        r#"OPENCHAT_SHARDS: invalid value "abc": expected an integer from 1 to 256"#
    );
}

#[test]
fn control_characters_and_long_values_stay_on_one_line() {
    assert_rejected(
        "OPENCHAT_AUTH_MODE",
        "sess\nion",
        "expected session or headers",
    );
    let long = "x".repeat(500);
    let error = err(&[("OPENCHAT_LOG_FORMAT", &long)]);
    assert!(error.to_string().len() < 200, "{error}");
}

#[test]
fn shards() {
    assert_eq!(ok(&[("OPENCHAT_SHARDS", "1")]).shards, 1);
    assert_eq!(ok(&[("OPENCHAT_SHARDS", " 256 ")]).shards, 256);
    for bad in ["abc", "0", "257", "-1", "1.5"] {
        assert_rejected("OPENCHAT_SHARDS", bad, "expected an integer from 1 to 256");
    }
}

#[test]
fn shards_default_is_clamped_to_the_accepted_range() {
    let with_cores = |cores| Config::from_vars(Vec::new(), cores).unwrap().shards;
    assert_eq!(with_cores(0), 1);
    assert_eq!(with_cores(1), 1);
    assert_eq!(with_cores(1000), 256);
}

#[test]
fn http_addr_forms() {
    let addr = |value| ok(&[("OPENCHAT_HTTP_ADDR", value)]).http_addr;
    assert_eq!(addr(":8080"), "0.0.0.0:8080".parse().unwrap());
    assert_eq!(addr(":0"), "0.0.0.0:0".parse().unwrap());
    assert_eq!(addr("127.0.0.1:9000"), "127.0.0.1:9000".parse().unwrap());
    assert_eq!(addr("[::]:8080"), "[::]:8080".parse().unwrap());
    assert_eq!(addr("[::1]:0"), "[::1]:0".parse().unwrap());
    assert_eq!(addr("localhost:8081"), "127.0.0.1:8081".parse().unwrap());
    for bad in [
        "8080",
        "0.0.0.0",
        ":",
        ":65536",
        ":http",
        "example.com:80",
        "::8080",
        "[::]",
    ] {
        assert_rejected("OPENCHAT_HTTP_ADDR", bad, "expected :port or host:port");
    }
}

#[test]
fn public_base_url_defaults_to_the_http_port() {
    assert_eq!(
        ok(&[("OPENCHAT_HTTP_ADDR", "127.0.0.1:9123")]).public_base_url,
        "http://localhost:9123"
    );
}

#[test]
fn public_base_url_forms() {
    let url = |value| ok(&[("OPENCHAT_PUBLIC_BASE_URL", value)]).public_base_url;
    assert_eq!(url("https://chat.example.com/"), "https://chat.example.com");
    assert_eq!(
        url("https://chat.example.com//"),
        "https://chat.example.com"
    );
    assert_eq!(url("http://10.0.0.2:8080"), "http://10.0.0.2:8080");
    assert_eq!(
        url("https://example.com/openchat/"),
        "https://example.com/openchat"
    );
    assert_eq!(url("http://[::1]:8080/"), "http://[::1]:8080");
    for bad in [
        "chat.example.com",
        "ftp://example.com",
        "ws://example.com",
        "https://",
        "https:///path",
        "https://example.com/?a=1",
        "https://example.com/#x",
        "https://user@example.com",
        "https://exa mple.com",
        "https://example.com:port",
        "https://example.com:99999",
        "http://[::1/",
    ] {
        assert_rejected(
            "OPENCHAT_PUBLIC_BASE_URL",
            bad,
            "expected an absolute http:// or https:// URL",
        );
    }
}

#[test]
fn data_dir_moves_the_sqlite_database() {
    let config = ok(&[("OPENCHAT_DATA_DIR", "/var/lib/openchat")]);
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/openchat"));
    assert_eq!(
        config.database,
        DatabaseConfig::Sqlite {
            path: PathBuf::from("/var/lib/openchat/openchat.db")
        }
    );
}

#[test]
fn database_url_selects_postgres() {
    for url in [
        "postgres://u:p@db:5432/openchat",
        "postgresql://db/openchat",
    ] {
        let config = ok(&[("OPENCHAT_DATABASE_URL", url)]);
        assert_eq!(
            config.database,
            DatabaseConfig::Postgres {
                url: url.to_owned()
            }
        );
    }
}

#[test]
fn bad_database_url_names_the_form_but_not_the_value() {
    for bad in [
        "sqlite://./x.db",
        "mysql://u:secret@db/x",
        "postgres://",
        "postgres://u:secret@db/x y",
    ] {
        assert_rejected(
            "OPENCHAT_DATABASE_URL",
            bad,
            "expected a postgres:// or postgresql:// URL",
        );
        assert!(
            !err(&[("OPENCHAT_DATABASE_URL", bad)])
                .to_string()
                .contains("secret")
        );
    }
}

#[test]
fn database_debug_hides_the_password() {
    let config = ok(&[(
        "OPENCHAT_DATABASE_URL",
        "postgres://app:hunter2@db:5432/openchat?password=hunter2",
    )]);
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(
        debug.contains("postgres://app:***@db:5432/openchat?password=***"),
        "{debug}"
    );
}

#[test]
fn db_max_connections() {
    assert_eq!(
        ok(&[("OPENCHAT_DB_MAX_CONNECTIONS", "1000")]).db_max_connections,
        1000
    );
    for bad in ["0", "1001", "many"] {
        assert_rejected(
            "OPENCHAT_DB_MAX_CONNECTIONS",
            bad,
            "expected an integer from 1 to 1000",
        );
    }
}

#[test]
fn auth_mode() {
    assert_eq!(
        ok(&[("OPENCHAT_AUTH_MODE", "headers")]).auth_mode,
        AuthMode::Headers
    );
    assert_eq!(
        ok(&[("OPENCHAT_AUTH_MODE", "Session")]).auth_mode,
        AuthMode::Session
    );
    assert_rejected("OPENCHAT_AUTH_MODE", "token", "expected session or headers");
}

#[test]
fn allow_server_creation() {
    for (value, expected) in [
        ("true", true),
        ("TRUE", true),
        ("1", true),
        ("yes", true),
        ("false", false),
        ("0", false),
        ("No", false),
    ] {
        assert_eq!(
            ok(&[("OPENCHAT_ALLOW_SERVER_CREATION", value)]).allow_server_creation,
            expected,
            "{value}"
        );
    }
    for bad in ["on", "2", "y"] {
        assert_rejected(
            "OPENCHAT_ALLOW_SERVER_CREATION",
            bad,
            "expected true, false, 1, 0, yes or no",
        );
    }
}

#[test]
fn default_server_id() {
    let id = "0d5f6a8b-1f43-4f4f-9d8e-9ab6f913f4f8";
    assert_eq!(
        ok(&[("OPENCHAT_DEFAULT_SERVER_ID", id)])
            .default_server_id
            .as_deref(),
        Some(id)
    );
    assert_eq!(
        ok(&[("OPENCHAT_DEFAULT_SERVER_ID", &"a".repeat(64))])
            .default_server_id
            .unwrap()
            .len(),
        64
    );
    for bad in [
        "a".repeat(65),
        "has space".into(),
        "slash/id".into(),
        "ü".into(),
        " ".into(),
    ] {
        assert_rejected(
            "OPENCHAT_DEFAULT_SERVER_ID",
            &bad,
            "expected 1 to 64 characters of A-Z, a-z, 0-9, _ and -",
        );
    }
}

#[test]
fn default_server_owner_key() {
    use base64::Engine;
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]).verifying_key();
    let unpadded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.as_bytes());
    let padded = base64::engine::general_purpose::URL_SAFE.encode(key.as_bytes());
    let derived = crate::auth::derive_user_uid(&key);
    assert_eq!(ok(&[]).default_server_owner(), None);
    // Padded or not, kept unpadded; the owner is the key's uid.
    for spelling in [&unpadded, &padded] {
        let config = ok(&[("OPENCHAT_DEFAULT_SERVER_OWNER_KEY", spelling.as_str())]);
        assert_eq!(
            config.default_server_owner_key.as_deref(),
            Some(unpadded.as_str())
        );
        assert_eq!(config.default_server_owner(), Some(derived.clone()));
    }
    // With a uid as well, the uid owns and the key is the one bound to it.
    let both = ok(&[
        ("OPENCHAT_DEFAULT_SERVER_OWNER_KEY", unpadded.as_str()),
        ("OPENCHAT_DEFAULT_SERVER_OWNER_UID", "uid_legacy"),
    ]);
    assert_eq!(both.default_server_owner().as_deref(), Some("uid_legacy"));
    for bad in ["not a key", "AAAA", &"A".repeat(43), &unpadded[..40]] {
        assert_rejected(
            "OPENCHAT_DEFAULT_SERVER_OWNER_KEY",
            bad,
            "expected an Ed25519 public key, base64url of 32 bytes",
        );
    }
}

#[test]
fn server_name() {
    assert_eq!(
        ok(&[("OPENCHAT_SERVER_NAME", "  Café Ünïcode  ")]).server_name,
        "Café Ünïcode"
    );
    assert_eq!(
        ok(&[("OPENCHAT_SERVER_NAME", &"é".repeat(100))])
            .server_name
            .chars()
            .count(),
        100
    );
    for bad in ["   ".to_owned(), "x".repeat(101), "tab\there".to_owned()] {
        assert_rejected(
            "OPENCHAT_SERVER_NAME",
            &bad,
            "expected 1 to 100 characters after trimming",
        );
    }
}

#[test]
fn limits() {
    let config = ok(&[
        ("OPENCHAT_HTTP_MAX_BODY_BYTES", "2048"),
        ("OPENCHAT_MAX_MESSAGE_BYTES", "1048576"),
        ("OPENCHAT_MAX_UPLOAD_BYTES", "2048"),
        ("OPENCHAT_RATE_LIMIT_PER_MINUTE", "1000000"),
    ]);
    assert_eq!(config.limits.max_body_bytes, 2048);
    assert_eq!(config.limits.max_message_bytes, 1 << 20);
    assert_eq!(config.limits.max_upload_bytes, 2048);
    assert_eq!(config.limits.rate_limit_per_minute, 1_000_000);
}

#[test]
fn limits_out_of_range() {
    assert_rejected(
        "OPENCHAT_HTTP_MAX_BODY_BYTES",
        "1023",
        "expected an integer from 1024 to 1073741824",
    );
    assert_rejected(
        "OPENCHAT_HTTP_MAX_BODY_BYTES",
        "1073741825",
        "expected an integer from 1024 to 1073741824",
    );
    assert_rejected(
        "OPENCHAT_MAX_MESSAGE_BYTES",
        "0",
        "expected an integer from 1 to 1048576",
    );
    assert_rejected(
        "OPENCHAT_MAX_MESSAGE_BYTES",
        "1048577",
        "expected an integer from 1 to 1048576",
    );
    assert_rejected(
        "OPENCHAT_MAX_UPLOAD_BYTES",
        "0",
        "expected an integer from 1 to 1073741824",
    );
    assert_rejected(
        "OPENCHAT_MAX_UPLOAD_BYTES",
        "25MB",
        "expected an integer from 1 to 1073741824",
    );
    assert_rejected(
        "OPENCHAT_RATE_LIMIT_PER_MINUTE",
        "0",
        "expected an integer from 1 to 1000000",
    );
    assert_rejected(
        "OPENCHAT_RATE_LIMIT_PER_MINUTE",
        "1000001",
        "expected an integer from 1 to 1000000",
    );
}

#[test]
fn body_limit_must_hold_an_upload() {
    // The default upload limit (25 MiB) does not fit in a 1 MiB body.
    assert_rejected(
        "OPENCHAT_HTTP_MAX_BODY_BYTES",
        "1048576",
        "expected an integer from 26214400 (OPENCHAT_MAX_UPLOAD_BYTES)",
    );
    let error = err(&[
        ("OPENCHAT_HTTP_MAX_BODY_BYTES", "4096"),
        ("OPENCHAT_MAX_UPLOAD_BYTES", "4097"),
    ]);
    assert_eq!(error.var, "OPENCHAT_HTTP_MAX_BODY_BYTES");
}

#[test]
fn body_budget_and_connection_caps() {
    let config = ok(&[]);
    assert_eq!(config.limits.body_budget_bytes, 256 * 1024 * 1024);
    assert_eq!(config.limits.max_connections, 10_000);
    assert_eq!(config.limits.max_connections_per_addr, 256);
    let config = ok(&[
        ("OPENCHAT_HTTP_BODY_BUDGET_BYTES", "27262976"),
        ("OPENCHAT_MAX_CONNECTIONS", "1"),
        ("OPENCHAT_MAX_CONNECTIONS_PER_ADDR", "10000000"),
    ]);
    assert_eq!(config.limits.body_budget_bytes, 27_262_976);
    assert_eq!(config.limits.max_connections, 1);
    assert_eq!(config.limits.max_connections_per_addr, 10_000_000);
    // The budget must hold the largest body.
    assert_rejected(
        "OPENCHAT_HTTP_BODY_BUDGET_BYTES",
        "27262975",
        "expected an integer from 27262976 to 68719476736",
    );
    assert_rejected(
        "OPENCHAT_HTTP_BODY_BUDGET_BYTES",
        "lots",
        "expected an integer from 27262976",
    );
    for var in [
        "OPENCHAT_MAX_CONNECTIONS",
        "OPENCHAT_MAX_CONNECTIONS_PER_ADDR",
    ] {
        assert_rejected(var, "0", "expected an integer from 1 to 10000000");
        assert_rejected(var, "10000001", "expected an integer from 1 to 10000000");
    }
}

#[test]
fn queues_between_threads() {
    let defaults = ok(&[]);
    assert_eq!(defaults.authority_queue, crate::authority::DEFAULT_QUEUE);
    assert_eq!(defaults.storage_queue, crate::storage::DEFAULT_WRITE_QUEUE);
    let config = ok(&[
        ("OPENCHAT_AUTHORITY_QUEUE", "1"),
        ("OPENCHAT_STORAGE_QUEUE", "1000000"),
    ]);
    assert_eq!(
        (config.authority_queue, config.storage_queue),
        (1, 1_000_000)
    );
    for var in ["OPENCHAT_AUTHORITY_QUEUE", "OPENCHAT_STORAGE_QUEUE"] {
        assert_rejected(var, "0", "expected an integer from 1 to 1000000");
        assert_rejected(var, "1000001", "expected an integer from 1 to 1000000");
    }
}

#[test]
fn shutdown_timeout() {
    assert_eq!(
        ok(&[("OPENCHAT_SHUTDOWN_TIMEOUT_MS", "0")]).shutdown_timeout,
        Duration::ZERO
    );
    assert_eq!(
        ok(&[("OPENCHAT_SHUTDOWN_TIMEOUT_MS", "600000")]).shutdown_timeout,
        Duration::from_secs(600)
    );
    for bad in ["600001", "-1", "10s"] {
        assert_rejected(
            "OPENCHAT_SHUTDOWN_TIMEOUT_MS",
            bad,
            "expected an integer from 0 to 600000",
        );
    }
}

#[test]
fn log_filter_and_format() {
    let config = ok(&[
        ("OPENCHAT_LOG", "openchatd=debug,info"),
        ("OPENCHAT_LOG_FORMAT", "json"),
    ]);
    assert_eq!(config.log_filter, "openchatd=debug,info");
    assert_eq!(config.log_format, LogFormat::Json);
    assert_rejected("OPENCHAT_LOG", "  ", "expected a tracing filter directive");
    assert_rejected("OPENCHAT_LOG_FORMAT", "yaml", "expected text or json");
}

#[test]
fn help_text_lists_every_variable_with_its_default() {
    let help = help_text();
    assert!(
        help.starts_with("Usage: openchatd [--help] [--version]\n"),
        "{help}"
    );
    for var in VARIABLES {
        assert!(help.contains(var.name), "{}", var.name);
        assert!(help.contains(var.default), "{}", var.name);
        assert!(help.contains(var.help), "{}", var.name);
    }
}

#[test]
fn variable_table_is_well_formed() {
    for (index, var) in VARIABLES.iter().enumerate() {
        assert!(var.name.starts_with(PREFIX), "{}", var.name);
        assert!(
            !var.help.is_empty() && !var.help.contains('\n'),
            "{}",
            var.name
        );
        assert!(
            VARIABLES[..index]
                .iter()
                .all(|other| other.name != var.name),
            "duplicate {}",
            var.name
        );
    }
}

#[test]
fn edit_distance_counts_single_edits() {
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("OPENCHAT_LOG", "OPENCHAT_LOG"), 0);
}

#[test]
fn the_evidence_key_is_64_hex_characters_and_never_shown() {
    let key = "0f".repeat(32);
    let config = ok(&[("OPENCHAT_EVIDENCE_KEY", key.as_str())]);
    assert!(config.evidence_key.is_some());
    assert!(!format!("{config:?}").contains(&key), "Debug shows no key");
    assert!(ok(&[]).evidence_key.is_none(), "unset: the key file");
    for bad in ["short", &"0f".repeat(31), &"zz".repeat(32)] {
        let e = err(&[("OPENCHAT_EVIDENCE_KEY", bad)]);
        assert_eq!(e.var, "OPENCHAT_EVIDENCE_KEY");
        assert!(
            !e.to_string().contains(bad),
            "the refusal shows no value: {e}"
        );
    }
}

/// What a cluster node needs besides the NATS URL: a shared database and the shared secrets.
const CLUSTER_BASE: &[(&str, &str)] = &[
    ("OPENCHAT_DATABASE_URL", "postgres://chat@db:5432/openchat"),
    (
        "OPENCHAT_RTC_TICKET_SECRET",
        "0123456789abcdef0123456789abcdef",
    ),
    ("OPENCHAT_RTC_TURN_SECRET", "coturn-static-auth-secret"),
    ("OPENCHAT_CLUSTER_NATS_URL", "nats://127.0.0.1:4222"),
];

/// `CLUSTER_BASE` without `without`, plus `extra`, on a machine called `host`.
fn cluster_config(
    without: &[&str],
    extra: &[(&str, &str)],
    host: Option<&str>,
) -> Result<Config, ConfigError> {
    let vars = CLUSTER_BASE
        .iter()
        .filter(|(name, _)| !without.contains(name))
        .chain(extra)
        .map(|(name, value)| (name.to_string(), value.to_string()));
    Config::from_vars_on_host(vars, CORES, || host.map(str::to_owned))
}

fn cluster_err(without: &[&str], extra: &[(&str, &str)], host: Option<&str>) -> ConfigError {
    match cluster_config(without, extra, host) {
        Ok(config) => panic!("accepted without {without:?} with {extra:?}: {config:?}"),
        Err(error) => error,
    }
}

#[test]
fn a_single_node_by_default_never_reads_the_host_name() {
    let vars = [
        ("OPENCHAT_NODE_ID", "n1"),
        ("OPENCHAT_CLUSTER_NAME", "chat"),
    ];
    let vars = vars.iter().map(|(n, v)| (n.to_string(), v.to_string()));
    let config = Config::from_vars_on_host(vars, CORES, || {
        panic!("a single node asked for the host name")
    })
    .unwrap();
    assert!(config.cluster.is_none());
    assert!(ok(&[]).cluster.is_none());
    // The single node keeps its SQLite database and random ticket secret.
    assert!(matches!(config.database, DatabaseConfig::Sqlite { .. }));
}

#[test]
fn cluster_defaults_are_the_host_name_and_openchat() {
    let cluster = cluster_config(&[], &[], Some("node-a_1"))
        .unwrap()
        .cluster
        .expect("cluster mode");
    assert_eq!(cluster.nats_urls, ["nats://127.0.0.1:4222"]);
    assert_eq!(cluster.node_id, "node-a_1");
    assert_eq!(cluster.name, "openchat");
}

#[test]
fn explicit_node_id_and_cluster_name_win_over_the_defaults() {
    let extra = [
        ("OPENCHAT_NODE_ID", " n2 "),
        ("OPENCHAT_CLUSTER_NAME", "chat-eu_1"),
    ];
    let vars = CLUSTER_BASE
        .iter()
        .chain(&extra)
        .map(|(n, v)| (n.to_string(), v.to_string()));
    let config =
        Config::from_vars_on_host(vars, CORES, || panic!("OPENCHAT_NODE_ID is set")).unwrap();
    let cluster = config.cluster.expect("cluster mode");
    assert_eq!(
        (cluster.node_id.as_str(), cluster.name.as_str()),
        ("n2", "chat-eu_1")
    );
}

#[test]
fn cluster_nats_url_forms() {
    let urls = |value| {
        cluster_config(&[], &[("OPENCHAT_CLUSTER_NATS_URL", value)], Some("h"))
            .unwrap()
            .cluster
            .unwrap()
            .nats_urls
    };
    assert_eq!(urls(" nats://nats:4222 "), ["nats://nats:4222"]);
    assert_eq!(urls("TLS://nats.example.com"), ["TLS://nats.example.com"]);
    assert_eq!(urls("nats://[::1]:4222/"), ["nats://[::1]:4222/"]);
    assert_eq!(
        urls("nats://a:4222, tls://b:4222,"),
        ["nats://a:4222", "tls://b:4222"]
    );
    assert_eq!(
        urls("nats://app:s3cr@t@nats:4222"),
        ["nats://app:s3cr@t@nats:4222"]
    );
    for bad in [
        "127.0.0.1:4222",
        "http://nats:4222",
        "ws://nats:4222",
        "nats://",
        "nats://:4222",
        "nats://nats:port",
        "nats://nats:99999",
        "nats://nats:4222/path",
        "nats://nats:4222?x=1",
        "nats://na ts:4222",
        "nats://user:secret@",
        ",",
    ] {
        let error = cluster_err(&[], &[("OPENCHAT_CLUSTER_NATS_URL", bad)], Some("h"));
        assert_eq!(error.var, "OPENCHAT_CLUSTER_NATS_URL", "{bad:?}: {error}");
        assert!(
            error
                .message
                .contains("expected nats://host:port or tls://host:port"),
            "{bad:?}: {error}"
        );
        assert!(!error.to_string().contains("secret"), "{error}");
    }
}

#[test]
fn cluster_debug_hides_the_nats_password() {
    let url = "nats://app:hunter2@nats:4222";
    let config = cluster_config(&[], &[("OPENCHAT_CLUSTER_NATS_URL", url)], Some("h")).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("nats://app:***@nats:4222"), "{debug}");
}

#[test]
fn node_id_and_cluster_name_are_identifiers_even_on_a_single_node() {
    for var in ["OPENCHAT_NODE_ID", "OPENCHAT_CLUSTER_NAME"] {
        for bad in [
            "a".repeat(65),
            "node.1".into(),
            "node 1".into(),
            "n*".into(),
            "nöde".into(),
            " ".into(),
        ] {
            assert_rejected(
                var,
                &bad,
                "expected 1 to 64 characters of A-Z, a-z, 0-9, _ and -",
            );
            let error = cluster_err(&[], &[(var, &bad)], Some("h"));
            assert_eq!(error.var, var, "{bad:?}: {error}");
        }
        assert!(cluster_config(&[], &[(var, &"a".repeat(64))], Some("h")).is_ok());
    }
}

#[test]
fn a_host_name_that_is_no_node_id_refuses_the_start() {
    let error = cluster_err(&[], &[], Some("web-1.example.com"));
    assert_eq!(error.var, "OPENCHAT_NODE_ID");
    assert!(
        error.message.contains("\"web-1.example.com\"") && error.message.contains("set 1 to 64"),
        "{error}"
    );
    let error = cluster_err(&[], &[], None);
    assert_eq!(error.var, "OPENCHAT_NODE_ID");
    assert!(
        error.message.contains("host name cannot be read"),
        "{error}"
    );
    // An explicit id makes the host name irrelevant.
    assert!(cluster_config(&[], &[("OPENCHAT_NODE_ID", "n1")], Some("a.b")).is_ok());
}

#[test]
fn cluster_mode_refuses_sqlite() {
    let error = cluster_err(&["OPENCHAT_DATABASE_URL"], &[], Some("h"));
    assert_eq!(error.var, "OPENCHAT_DATABASE_URL");
    let line = error.to_string();
    assert!(
        line.contains("OPENCHAT_CLUSTER_NATS_URL") && line.contains("SQLite"),
        "{line}"
    );
    assert!(!line.contains('\n'), "{line}");
}

#[test]
fn cluster_mode_refuses_a_missing_shared_secret() {
    for var in ["OPENCHAT_RTC_TICKET_SECRET", "OPENCHAT_RTC_TURN_SECRET"] {
        let error = cluster_err(&[var], &[], Some("h"));
        assert_eq!(error.var, var, "{error}");
        assert!(
            error
                .message
                .starts_with("missing: cluster mode (OPENCHAT_CLUSTER_NATS_URL)"),
            "{error}"
        );
        // An empty value is unset, here as everywhere.
        let error = cluster_err(&[var], &[(var, "")], Some("h"));
        assert_eq!(error.var, var, "{error}");
    }
}

#[test]
fn the_host_name_of_this_machine_is_readable() {
    let host = super::cluster::host_name().expect("a Linux host has a name");
    assert!(!host.is_empty() && host == host.trim(), "{host:?}");
}
