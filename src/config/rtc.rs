//! Voice and video settings: the ICE servers advertised to clients, the per-subscriber receive
//! caps with their server and channel overrides, and the UDP ports the SFU binds. TURN is only
//! ever advertised together with its credentials, because a TURN URL without them makes the
//! browser's `RTCPeerConnection` constructor throw and the call fails before it starts.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use super::parse;
use super::{
    Config, ConfigError, Env, RTC_MAX_CALL_PARTICIPANTS, RTC_PUBLIC_IP, RTC_STUN_URLS,
    RTC_SUBSCRIBE_MAX_AUDIO_TRACKS, RTC_SUBSCRIBE_MAX_AUDIO_TRACKS_BY_CHANNEL,
    RTC_SUBSCRIBE_MAX_AUDIO_TRACKS_BY_SERVER, RTC_SUBSCRIBE_MAX_VIDEO_TRACKS,
    RTC_SUBSCRIBE_MAX_VIDEO_TRACKS_BY_CHANNEL, RTC_SUBSCRIBE_MAX_VIDEO_TRACKS_BY_SERVER,
    RTC_TICKET_SECRET, RTC_TURN_CREDENTIAL, RTC_TURN_CREDENTIAL_TYPE, RTC_TURN_SECRET,
    RTC_TURN_URLS, RTC_TURN_USERNAME, RTC_UDP_PORT, VarSpec,
};

/// Largest receive cap accepted for either media kind, instance-wide or as an override.
const MAX_TRACKS: u32 = 64;

#[derive(Debug, Clone)]
pub struct RtcConfig {
    /// Empty when STUN advertisement is disabled (`none` or `-`).
    pub stun_urls: Vec<String>,
    pub turn: Option<TurnConfig>,
    pub receive_caps: ReceiveCapsConfig,
    /// Shard `n` binds `udp_port_base + n` (one port per shard, see the sharding notes).
    pub udp_port_base: u16,
    pub public_ip: Option<IpAddr>,
    pub max_call_participants: u32,
    /// Signs join tickets; `None`: a random secret per start.
    pub ticket_secret: Option<Secret>,
}

/// A secret that never shows in `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A TURN server with the credentials every client needs. Debug hides the credential: logs
/// must never contain ICE credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnConfig {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
    /// `static`, or `ephemeral` (then `username`/`credential` are empty and `secret` is set).
    pub credential_type: String,
    /// The coturn shared secret of ephemeral credentials.
    pub secret: Option<Secret>,
}

impl fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnConfig")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field("credential", &"***")
            .field("credential_type", &self.credential_type)
            .field("secret", &self.secret)
            .finish()
    }
}

/// How many remote tracks of each kind one subscriber receives (wire contract A.2/A.8
/// `subscribe_receive_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ReceiveCaps {
    pub max_video_tracks: u32,
    pub max_audio_tracks: u32,
}

/// Instance defaults plus per-server and per-channel overrides, one map per field so that a
/// channel can override video alone and still inherit the server's audio cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiveCapsConfig {
    pub default: ReceiveCaps,
    pub video_by_server: HashMap<String, u32>,
    pub audio_by_server: HashMap<String, u32>,
    pub video_by_channel: HashMap<String, u32>,
    pub audio_by_channel: HashMap<String, u32>,
}

impl ReceiveCapsConfig {
    /// Resolution order per field: channel override, then server override, then instance default.
    pub fn resolve(&self, server_id: &str, channel_id: &str) -> ReceiveCaps {
        let pick =
            |by_channel: &HashMap<String, u32>, by_server: &HashMap<String, u32>, default| {
                by_channel
                    .get(channel_id)
                    .or_else(|| by_server.get(server_id))
                    .copied()
                    .unwrap_or(default)
            };
        ReceiveCaps {
            max_video_tracks: pick(
                &self.video_by_channel,
                &self.video_by_server,
                self.default.max_video_tracks,
            ),
            max_audio_tracks: pick(
                &self.audio_by_channel,
                &self.audio_by_server,
                self.default.max_audio_tracks,
            ),
        }
    }
}

/// One `ice_servers[]` entry of the capabilities document and join tickets (wire contract A.2).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_type: Option<String>,
    /// RFC 3339; only ephemeral credentials expire, so always `None` today.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl RtcConfig {
    /// STUN first (one entry carrying every STUN URL), then TURN with its credentials.
    pub fn ice_servers(&self) -> Vec<IceServer> {
        let mut servers = Vec::new();
        if !self.stun_urls.is_empty() {
            servers.push(IceServer {
                urls: self.stun_urls.clone(),
                username: None,
                credential: None,
                credential_type: None,
                expires_at: None,
            });
        }
        // `TurnConfig` cannot exist without credentials, so this entry always carries them.
        // Ephemeral credentials are minted per user (`ice_servers_for`): not here.
        if let Some(turn) = self.turn.as_ref().filter(|t| t.secret.is_none()) {
            servers.push(IceServer {
                urls: turn.urls.clone(),
                username: Some(turn.username.clone()),
                credential: Some(turn.credential.clone()),
                credential_type: Some(turn.credential_type.clone()),
                expires_at: None,
            });
        }
        servers
    }
}

impl RtcConfig {
    /// ICE servers for one user's join ticket at `now` (Unix seconds): as [`RtcConfig::ice_servers`],
    /// plus, with a TURN secret, a TURN entry with fresh ephemeral credentials.
    pub fn ice_servers_for(&self, user: &str, now: i64) -> Vec<IceServer> {
        let mut servers = self.ice_servers();
        if let Some(turn) = &self.turn
            && let Some(secret) = &turn.secret
        {
            let expires = now + crate::rtc::turn::TURN_CREDENTIAL_TTL_SECS;
            let (username, credential) = crate::rtc::turn::credentials(&secret.0, user, expires);
            servers.push(IceServer {
                urls: turn.urls.clone(),
                username: Some(username),
                credential: Some(credential),
                credential_type: Some("ephemeral".to_owned()),
                expires_at: Some(crate::domain::views::rfc3339(expires * 1000)),
            });
        }
        servers
    }
}

impl Config {
    /// ICE servers for capabilities and tickets: STUN entries first (one entry with all STUN
    /// urls), then TURN with credentials.
    pub fn ice_servers(&self) -> Vec<IceServer> {
        self.rtc.ice_servers()
    }
}

pub(super) fn rtc_from_env(env: &Env, shards: usize) -> Result<RtcConfig, ConfigError> {
    let stun_urls = stun_urls(env)?;
    let turn = turn(env)?;
    let receive_caps = receive_caps(env)?;
    let udp_port_base = udp_port_base(env, shards)?;
    let public_ip = env
        .value(&RTC_PUBLIC_IP)
        .map(|raw| public_ip(&RTC_PUBLIC_IP, raw))
        .transpose()?;
    let max_call_participants = env.integer(&RTC_MAX_CALL_PARTICIPANTS, 1u32, 1000)?;
    let ticket_secret = match env.value(&RTC_TICKET_SECRET) {
        None => None,
        Some(raw) if raw.len() >= crate::rtc::ticket::MIN_SECRET_BYTES => {
            Some(Secret(raw.as_bytes().to_vec()))
        }
        Some(_) => {
            return Err(ConfigError::new(
                RTC_TICKET_SECRET.name,
                "too short: expected at least 32 characters (for example `openssl rand -hex 32`)",
            ));
        }
    };
    Ok(RtcConfig {
        ticket_secret,
        stun_urls,
        turn,
        receive_caps,
        udp_port_base,
        public_ip,
        max_call_participants,
    })
}

fn stun_urls(env: &Env) -> Result<Vec<String>, ConfigError> {
    let raw = env.value_or_default(&RTC_STUN_URLS);
    // Explicit words for "no STUN" because an empty value means "default" everywhere.
    if raw.trim() == "-" || raw.trim().eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    parse::url_list(
        &RTC_STUN_URLS,
        raw,
        &["stun:", "stuns:"],
        "expected comma-separated stun: or stuns: URLs such as stun:stun.l.google.com:19302, or none",
    )
}

fn turn(env: &Env) -> Result<Option<TurnConfig>, ConfigError> {
    let urls = parse::url_list(
        &RTC_TURN_URLS,
        env.value_or_default(&RTC_TURN_URLS),
        &["turn:", "turns:"],
        "expected comma-separated turn: or turns: URLs such as turn:turn.example.com:3478?transport=udp",
    )?;
    // Validated even without TURN URLs so a typo is caught before TURN is switched on.
    let secret = match env.value(&RTC_TURN_SECRET) {
        None => None,
        Some(raw) if raw.len() >= 16 => Some(Secret(raw.as_bytes().to_vec())),
        Some(_) => {
            return Err(ConfigError::new(
                RTC_TURN_SECRET.name,
                "too short: expected coturn's static-auth-secret, at least 16 characters",
            ));
        }
    };
    let credential_type = match env.value(&RTC_TURN_CREDENTIAL_TYPE) {
        None if secret.is_some() => "ephemeral",
        _ => env.keyword(
            &RTC_TURN_CREDENTIAL_TYPE,
            &[("static", "static"), ("ephemeral", "ephemeral")],
        )?,
    };
    match (credential_type, &secret) {
        ("ephemeral", None) => {
            return Err(ConfigError::new(
                RTC_TURN_SECRET.name,
                "missing: required when OPENCHAT_RTC_TURN_CREDENTIAL_TYPE=ephemeral",
            ));
        }
        ("static", Some(_)) => {
            return Err(ConfigError::new(
                RTC_TURN_CREDENTIAL_TYPE.name,
                "static conflicts with OPENCHAT_RTC_TURN_SECRET: use ephemeral (or unset it)",
            ));
        }
        _ => {}
    }
    if urls.is_empty() {
        return Ok(None);
    }
    if secret.is_some() {
        for var in [&RTC_TURN_USERNAME, &RTC_TURN_CREDENTIAL] {
            if env.value(var).is_some() {
                return Err(ConfigError::new(
                    var.name,
                    "must be unset with ephemeral TURN credentials (OPENCHAT_RTC_TURN_SECRET)",
                ));
            }
        }
        return Ok(Some(TurnConfig {
            urls,
            username: String::new(),
            credential: String::new(),
            credential_type: "ephemeral".to_owned(),
            secret,
        }));
    }
    // Username and credential are taken verbatim (not trimmed): they are secrets, and a
    // trailing space may be part of one.
    let required = |var: &VarSpec| {
        env.value(var).map(str::to_owned).ok_or_else(|| {
            ConfigError::new(
                var.name,
                "missing: required when OPENCHAT_RTC_TURN_URLS is set (browsers reject a TURN server without credentials)",
            )
        })
    };
    let username = required(&RTC_TURN_USERNAME)?;
    let credential = required(&RTC_TURN_CREDENTIAL)?;
    Ok(Some(TurnConfig {
        urls,
        username,
        credential,
        credential_type: credential_type.to_owned(),
        secret: None,
    }))
}

fn receive_caps(env: &Env) -> Result<ReceiveCapsConfig, ConfigError> {
    let cap = |var: &VarSpec| env.integer(var, 0u32, MAX_TRACKS);
    let overrides = |var: &VarSpec| overrides(var, env.value_or_default(var));
    Ok(ReceiveCapsConfig {
        default: ReceiveCaps {
            max_video_tracks: cap(&RTC_SUBSCRIBE_MAX_VIDEO_TRACKS)?,
            max_audio_tracks: cap(&RTC_SUBSCRIBE_MAX_AUDIO_TRACKS)?,
        },
        video_by_server: overrides(&RTC_SUBSCRIBE_MAX_VIDEO_TRACKS_BY_SERVER)?,
        audio_by_server: overrides(&RTC_SUBSCRIBE_MAX_AUDIO_TRACKS_BY_SERVER)?,
        video_by_channel: overrides(&RTC_SUBSCRIBE_MAX_VIDEO_TRACKS_BY_CHANNEL)?,
        audio_by_channel: overrides(&RTC_SUBSCRIBE_MAX_AUDIO_TRACKS_BY_CHANNEL)?,
    })
}

/// `id=value,id=value`; spaces around ids, values and pairs are trimmed and empty pairs dropped.
fn overrides(var: &VarSpec, raw: &str) -> Result<HashMap<String, u32>, ConfigError> {
    let expected = format!(
        "expected comma-separated id=value pairs with a non-empty id and a value from 0 to {MAX_TRACKS}"
    );
    let mut map = HashMap::new();
    for pair in raw
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
    {
        let parsed = pair.split_once('=').and_then(|(id, value)| {
            let id = id.trim();
            let value = value
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|v| *v <= MAX_TRACKS)?;
            (!id.is_empty()).then_some((id, value))
        });
        let Some((id, value)) = parsed else {
            return Err(ConfigError::new(
                var.name,
                format!("invalid pair {}: {expected}", parse::quoted(pair)),
            ));
        };
        // A duplicate is an operator mistake either way; silently letting one win hides it.
        if map.insert(id.to_owned(), value).is_some() {
            return Err(ConfigError::new(
                var.name,
                format!(
                    "duplicate id in pair {}: {expected}, each id once",
                    parse::quoted(pair)
                ),
            ));
        }
    }
    Ok(map)
}

fn udp_port_base(env: &Env, shards: usize) -> Result<u16, ConfigError> {
    let raw = env.value_or_default(&RTC_UDP_PORT);
    let port = parse::integer(&RTC_UDP_PORT, raw, 0u16, u16::MAX)?;
    if port == 0 {
        // Every shard takes any free port (tests run many servers side by side).
        return Ok(0);
    }
    // Every shard binds its own port, so the whole run must fit.
    let highest = usize::from(u16::MAX) + 1 - shards;
    if usize::from(port) > highest {
        return Err(ConfigError::invalid(
            &RTC_UDP_PORT,
            raw,
            &format!(
                "expected a port from 1 to {highest}, because each of the {shards} shards binds port + shard index"
            ),
        ));
    }
    Ok(port)
}

/// An address clients can send to: not unspecified (`0.0.0.0`, `::`) and not multicast.
fn public_ip(var: &VarSpec, raw: &str) -> Result<IpAddr, ConfigError> {
    match raw.trim().parse::<IpAddr>() {
        Ok(ip) if !ip.is_unspecified() && !ip.is_multicast() => Ok(ip),
        _ => Err(ConfigError::invalid(
            var,
            raw,
            "expected a unicast IPv4 or IPv6 address clients can reach, e.g. 203.0.113.10",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_rejected, err, ok};
    use super::*;

    const GOOGLE_STUN: [&str; 5] = [
        "stun:stun.l.google.com:19302",
        "stun:stun1.l.google.com:19302",
        "stun:stun2.l.google.com:19302",
        "stun:stun3.l.google.com:19302",
        "stun:stun4.l.google.com:19302",
    ];
    const TURN: [(&str, &str); 3] = [
        (
            "OPENCHAT_RTC_TURN_URLS",
            "turn:turn.example.com:3478?transport=udp, turns:turn.example.com:5349",
        ),
        ("OPENCHAT_RTC_TURN_USERNAME", "openchat-turn"),
        ("OPENCHAT_RTC_TURN_CREDENTIAL", "s3cret-credential"),
    ];

    #[test]
    fn defaults() {
        let rtc = ok(&[]).rtc;
        assert_eq!(rtc.stun_urls, GOOGLE_STUN);
        assert!(rtc.turn.is_none());
        assert_eq!(
            rtc.receive_caps.default,
            ReceiveCaps {
                max_video_tracks: 8,
                max_audio_tracks: 16
            }
        );
        assert!(
            rtc.receive_caps.video_by_server.is_empty()
                && rtc.receive_caps.audio_by_channel.is_empty()
        );
        assert_eq!(rtc.udp_port_base, 50000);
        assert_eq!(rtc.public_ip, None);
        assert_eq!(rtc.max_call_participants, 25);
    }

    #[test]
    fn stun_urls_are_trimmed_and_empties_dropped() {
        let rtc = ok(&[(
            "OPENCHAT_RTC_STUN_URLS",
            " stun:a.example:3478 ,, stuns:b.example:5349, ",
        )])
        .rtc;
        assert_eq!(
            rtc.stun_urls,
            ["stun:a.example:3478", "stuns:b.example:5349"]
        );
    }

    #[test]
    fn stun_can_be_disabled() {
        for off in ["none", "NONE", "-", " - "] {
            assert!(
                ok(&[("OPENCHAT_RTC_STUN_URLS", off)])
                    .rtc
                    .stun_urls
                    .is_empty(),
                "{off:?}"
            );
        }
    }

    #[test]
    fn bad_stun_urls() {
        for bad in [
            "turn:a.example",
            "stun.l.google.com:19302",
            "stun:",
            "stun:a b",
            "stun:ok,http://x",
        ] {
            assert_rejected(
                "OPENCHAT_RTC_STUN_URLS",
                bad,
                "expected comma-separated stun: or stuns: URLs",
            );
        }
    }

    #[test]
    fn turn_with_credentials() {
        let turn = ok(&TURN).rtc.turn.expect("turn configured");
        assert_eq!(
            turn.urls,
            [
                "turn:turn.example.com:3478?transport=udp",
                "turns:turn.example.com:5349"
            ]
        );
        assert_eq!(turn.username, "openchat-turn");
        assert_eq!(turn.credential, "s3cret-credential");
        assert_eq!(turn.credential_type, "static");
    }

    #[test]
    fn turn_without_credentials_is_rejected() {
        let error = err(&TURN[..1]);
        assert_eq!(error.var, "OPENCHAT_RTC_TURN_USERNAME");
        assert!(
            error
                .message
                .contains("required when OPENCHAT_RTC_TURN_URLS is set"),
            "{error}"
        );
        let error = err(&[TURN[0], TURN[1]]);
        assert_eq!(error.var, "OPENCHAT_RTC_TURN_CREDENTIAL");
        let error = err(&[TURN[0], TURN[2]]);
        assert_eq!(error.var, "OPENCHAT_RTC_TURN_USERNAME");
    }

    #[test]
    fn turn_credentials_without_urls_advertise_nothing() {
        assert!(ok(&TURN[1..]).rtc.turn.is_none());
    }

    #[test]
    fn bad_turn_settings() {
        for bad in ["stun:a.example", "turn:", "https://turn.example.com"] {
            assert_rejected(
                "OPENCHAT_RTC_TURN_URLS",
                bad,
                "expected comma-separated turn: or turns: URLs",
            );
        }
        assert_rejected(
            "OPENCHAT_RTC_TURN_CREDENTIAL_TYPE",
            "dynamic",
            "expected static or ephemeral",
        );
    }

    #[test]
    fn ephemeral_turn_needs_a_secret_and_no_static_credentials() {
        let no_secret = Config::from_vars(
            vec![(
                "OPENCHAT_RTC_TURN_CREDENTIAL_TYPE".to_owned(),
                "ephemeral".to_owned(),
            )],
            2,
        )
        .unwrap_err();
        assert_eq!(no_secret.var, "OPENCHAT_RTC_TURN_SECRET");
        let vars = |extra: &[(&str, &str)]| {
            let mut v = vec![
                (
                    "OPENCHAT_RTC_TURN_URLS".to_owned(),
                    "turn:turn.example.com:3478".to_owned(),
                ),
                (
                    "OPENCHAT_RTC_TURN_SECRET".to_owned(),
                    "0123456789abcdef0123".to_owned(),
                ),
            ];
            v.extend(extra.iter().map(|(k, x)| (k.to_string(), x.to_string())));
            v
        };
        let clash = Config::from_vars(vars(&[("OPENCHAT_RTC_TURN_USERNAME", "u")]), 2).unwrap_err();
        assert_eq!(clash.var, "OPENCHAT_RTC_TURN_USERNAME");
        let static_clash =
            Config::from_vars(vars(&[("OPENCHAT_RTC_TURN_CREDENTIAL_TYPE", "static")]), 2)
                .unwrap_err();
        assert_eq!(static_clash.var, "OPENCHAT_RTC_TURN_CREDENTIAL_TYPE");
        let config = Config::from_vars(vars(&[]), 2).unwrap();
        // Capabilities never carry a TURN URL without credentials: only the STUN entry.
        assert!(
            config
                .ice_servers()
                .iter()
                .all(|s| s.urls.iter().all(|u| !u.starts_with("turn")))
        );
        let ticket = config.rtc.ice_servers_for("uid_a", 1_700_000_000);
        let turn = ticket
            .iter()
            .find(|s| s.urls[0].starts_with("turn"))
            .unwrap();
        assert_eq!(turn.credential_type.as_deref(), Some("ephemeral"));
        assert_eq!(turn.username.as_deref(), Some("1700043200:uid_a"));
        assert_eq!(turn.expires_at.as_deref(), Some("2023-11-15T10:13:20.000Z"));
        assert!(!format!("{:?}", config.rtc).contains("0123456789abcdef0123"));
        let short = Config::from_vars(
            vec![("OPENCHAT_RTC_TICKET_SECRET".to_owned(), "short".to_owned())],
            2,
        )
        .unwrap_err();
        assert_eq!(short.var, "OPENCHAT_RTC_TICKET_SECRET");
    }

    #[test]
    fn turn_debug_hides_the_credential() {
        let debug = format!("{:?}", ok(&TURN));
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn receive_cap_defaults() {
        let caps = ok(&[
            ("OPENCHAT_RTC_SUBSCRIBE_MAX_VIDEO_TRACKS", "0"),
            ("OPENCHAT_RTC_SUBSCRIBE_MAX_AUDIO_TRACKS", "64"),
        ])
        .rtc
        .receive_caps;
        assert_eq!(
            caps.default,
            ReceiveCaps {
                max_video_tracks: 0,
                max_audio_tracks: 64
            }
        );
        assert_rejected(
            "OPENCHAT_RTC_SUBSCRIBE_MAX_VIDEO_TRACKS",
            "65",
            "expected an integer from 0 to 64",
        );
        assert_rejected(
            "OPENCHAT_RTC_SUBSCRIBE_MAX_AUDIO_TRACKS",
            "-1",
            "expected an integer from 0 to 64",
        );
    }

    #[test]
    fn override_csv_parsing() {
        let caps = ok(&[
            (
                "OPENCHAT_RTC_SUBSCRIBE_MAX_VIDEO_TRACKS_BY_SERVER",
                "0d5f6a8b-1f43-4f4f-9d8e-9ab6f913f4f8=10,6b6d8f24-a39f-4f8a-9f9d-0f70f2a2e9f1=6",
            ),
            (
                "OPENCHAT_RTC_SUBSCRIBE_MAX_AUDIO_TRACKS_BY_CHANNEL",
                " vc_general = 20 , tl_vc_huddle=12, ",
            ),
            ("OPENCHAT_RTC_SUBSCRIBE_MAX_AUDIO_TRACKS_BY_SERVER", "s=0"),
            ("OPENCHAT_RTC_SUBSCRIBE_MAX_VIDEO_TRACKS_BY_CHANNEL", "c=64"),
        ])
        .rtc
        .receive_caps;
        assert_eq!(caps.video_by_server.len(), 2);
        assert_eq!(
            caps.video_by_server["0d5f6a8b-1f43-4f4f-9d8e-9ab6f913f4f8"],
            10
        );
        assert_eq!(
            caps.video_by_server["6b6d8f24-a39f-4f8a-9f9d-0f70f2a2e9f1"],
            6
        );
        assert_eq!(caps.audio_by_channel.len(), 2);
        assert_eq!(caps.audio_by_channel["vc_general"], 20);
        assert_eq!(caps.audio_by_channel["tl_vc_huddle"], 12);
        assert_eq!(caps.audio_by_server["s"], 0);
        assert_eq!(caps.video_by_channel["c"], 64);
    }

    #[test]
    fn bad_override_pairs_name_the_pair() {
        for var in [
            "OPENCHAT_RTC_SUBSCRIBE_MAX_VIDEO_TRACKS_BY_SERVER",
            "OPENCHAT_RTC_SUBSCRIBE_MAX_AUDIO_TRACKS_BY_SERVER",
            "OPENCHAT_RTC_SUBSCRIBE_MAX_VIDEO_TRACKS_BY_CHANNEL",
            "OPENCHAT_RTC_SUBSCRIBE_MAX_AUDIO_TRACKS_BY_CHANNEL",
        ] {
            for (value, pair) in [
                ("a=1,b", "\"b\""),
                ("=5", "\"=5\""),
                ("a=65", "\"a=65\""),
                ("a=-1", "\"a=-1\""),
                ("a=x", "\"a=x\""),
                ("a=1=2", "\"a=1=2\""),
            ] {
                assert_rejected(var, value, "expected comma-separated id=value pairs");
                assert!(err(&[(var, value)]).message.contains(pair), "{var}={value}");
            }
            let error = err(&[(var, "a=1, a=2")]);
            assert_eq!(error.var, var);
            assert!(
                error.message.starts_with("duplicate id in pair \"a=2\""),
                "{error}"
            );
        }
    }

    #[test]
    fn resolve_prefers_channel_then_server_then_default_per_field() {
        let caps = ok(&[
            ("OPENCHAT_RTC_SUBSCRIBE_MAX_VIDEO_TRACKS_BY_SERVER", "srv=4"),
            ("OPENCHAT_RTC_SUBSCRIBE_MAX_AUDIO_TRACKS_BY_SERVER", "srv=5"),
            ("OPENCHAT_RTC_SUBSCRIBE_MAX_VIDEO_TRACKS_BY_CHANNEL", "vc=2"),
            (
                "OPENCHAT_RTC_SUBSCRIBE_MAX_AUDIO_TRACKS_BY_CHANNEL",
                "audio_only=3",
            ),
        ])
        .rtc
        .receive_caps;
        let caps_of = |video, audio| ReceiveCaps {
            max_video_tracks: video,
            max_audio_tracks: audio,
        };
        // Nothing matches: instance default.
        assert_eq!(caps.resolve("other", "other"), caps_of(8, 16));
        // Server override for both fields.
        assert_eq!(caps.resolve("srv", "other"), caps_of(4, 5));
        // Channel video beats server video; audio still comes from the server.
        assert_eq!(caps.resolve("srv", "vc"), caps_of(2, 5));
        // Channel audio beats server audio; video still comes from the server.
        assert_eq!(caps.resolve("srv", "audio_only"), caps_of(4, 3));
        // Channel override without a server override falls back to the default for the other field.
        assert_eq!(caps.resolve("other", "vc"), caps_of(2, 16));
    }

    #[test]
    fn udp_port_range_must_fit_every_shard() {
        assert_eq!(ok(&[("OPENCHAT_RTC_UDP_PORT", "1")]).rtc.udp_port_base, 1);
        assert_eq!(
            ok(&[("OPENCHAT_SHARDS", "1"), ("OPENCHAT_RTC_UDP_PORT", "65535")])
                .rtc
                .udp_port_base,
            65535
        );
        assert_eq!(
            ok(&[("OPENCHAT_SHARDS", "4"), ("OPENCHAT_RTC_UDP_PORT", "65532")])
                .rtc
                .udp_port_base,
            65532
        );
        let error = err(&[("OPENCHAT_SHARDS", "4"), ("OPENCHAT_RTC_UDP_PORT", "65533")]);
        assert_eq!(error.var, "OPENCHAT_RTC_UDP_PORT");
        assert!(
            error.message.contains("expected a port from 1 to 65532"),
            "{error}"
        );
        // 0: every shard takes any free port.
        assert_eq!(ok(&[("OPENCHAT_RTC_UDP_PORT", "0")]).rtc.udp_port_base, 0);
        for bad in ["-1", "65536", "udp"] {
            assert_rejected(
                "OPENCHAT_RTC_UDP_PORT",
                bad,
                "expected an integer from 0 to 65535",
            );
        }
    }

    #[test]
    fn public_ip() {
        let ip = |value| ok(&[("OPENCHAT_RTC_PUBLIC_IP", value)]).rtc.public_ip;
        assert_eq!(ip("203.0.113.10"), Some("203.0.113.10".parse().unwrap()));
        assert_eq!(ip("2001:db8::1"), Some("2001:db8::1".parse().unwrap()));
        for bad in [
            "turn.example.com",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "203.0.113.10:3478",
        ] {
            assert_rejected(
                "OPENCHAT_RTC_PUBLIC_IP",
                bad,
                "expected a unicast IPv4 or IPv6 address",
            );
        }
    }

    #[test]
    fn max_call_participants() {
        assert_eq!(
            ok(&[("OPENCHAT_RTC_MAX_CALL_PARTICIPANTS", "1000")])
                .rtc
                .max_call_participants,
            1000
        );
        for bad in ["0", "1001", "lots"] {
            assert_rejected(
                "OPENCHAT_RTC_MAX_CALL_PARTICIPANTS",
                bad,
                "expected an integer from 1 to 1000",
            );
        }
    }

    #[test]
    fn ice_servers_default_is_one_stun_entry() {
        let servers = ok(&[]).ice_servers();
        assert_eq!(
            servers,
            [IceServer {
                urls: GOOGLE_STUN.map(String::from).to_vec(),
                username: None,
                credential: None,
                credential_type: None,
                expires_at: None,
            }]
        );
    }

    #[test]
    fn ice_servers_put_stun_first_then_turn_with_credentials() {
        let servers = ok(&TURN).ice_servers();
        assert_eq!(servers.len(), 2);
        assert!(servers[0].urls.iter().all(|url| url.starts_with("stun:")));
        assert_eq!(servers[1].urls.len(), 2);
        assert_eq!(servers[1].username.as_deref(), Some("openchat-turn"));
        assert_eq!(servers[1].credential.as_deref(), Some("s3cret-credential"));
        assert_eq!(servers[1].credential_type.as_deref(), Some("static"));
    }

    #[test]
    fn ice_servers_never_emit_turn_without_credentials() {
        let setups: [&[(&str, &str)]; 4] = [
            &[],
            &TURN,
            &TURN[1..],
            &[
                ("OPENCHAT_RTC_STUN_URLS", "none"),
                TURN[0],
                TURN[1],
                TURN[2],
            ],
        ];
        for vars in setups {
            for server in ok(vars).ice_servers() {
                let has_turn = server.urls.iter().any(|url| url.starts_with("turn"));
                if has_turn {
                    assert!(
                        server.username.is_some() && server.credential.is_some(),
                        "{server:?}"
                    );
                }
            }
        }
        assert!(
            ok(&[("OPENCHAT_RTC_STUN_URLS", "-")])
                .ice_servers()
                .is_empty()
        );
    }

    #[test]
    fn ice_servers_serialize_like_the_wire_contract() {
        let servers = ok(&[
            ("OPENCHAT_RTC_STUN_URLS", "stun:a.example:3478"),
            TURN[0],
            TURN[1],
            TURN[2],
        ])
        .ice_servers();
        let json = simd_json::to_string(&servers).unwrap();
        assert_eq!(
            json,
            r#"[{"urls":["stun:a.example:3478"]},{"urls":["turn:turn.example.com:3478?transport=udp","turns:turn.example.com:5349"],"username":"openchat-turn","credential":"s3cret-credential","credential_type":"static"}]"#
        );
    }

    #[test]
    fn receive_caps_serialize_like_the_wire_contract() {
        let json = simd_json::to_string(&ReceiveCaps {
            max_video_tracks: 8,
            max_audio_tracks: 16,
        })
        .unwrap();
        assert_eq!(json, r#"{"max_video_tracks":8,"max_audio_tracks":16}"#);
    }
}
