//! `GET /v1/client/capabilities` (and `/client/capabilities`): what this instance offers, in the
//! shape of wire-contract A.2. The desktop client refuses to join unless `transport`,
//! `features`, `limits`, `security` and, inside `rtc`, `features`, `ice_servers`,
//! `connection_policy` and `subscribe_receive_policy` are all present, so every object is
//! always emitted. The document depends only on configuration, so it is encoded once at start.

use serde::Serialize;

use super::{HandlerResult, RequestCtx};
use crate::build_info;
use crate::config::{AuthMode, Config, IceServer, ReceiveCaps};
use crate::http::Response;

pub const API_VERSION: &str = "v1";
pub const RTC_PROTOCOL_VERSION: &str = "1";
/// Display names the client may set (wire-contract A.9: at most 32 characters), as the
/// profile rules enforce them.
pub const DISPLAY_NAME_MIN_CHARS: u32 = crate::domain::text::DISPLAY_NAME_MIN_CHARS as u32;
pub const DISPLAY_NAME_MAX_CHARS: u32 = crate::domain::text::DISPLAY_NAME_MAX_CHARS as u32;
pub const AVATAR_MAX_BYTES: u64 = 2 * 1024 * 1024;
pub const AVATAR_MAX_DIMENSION: u32 = 1024;
/// The image types uploads are checked against (`media::ImageFormat`).
pub const IMAGE_MIME_TYPES: [&str; 4] = [
    crate::uploads::ImageFormat::Png.content_type(),
    crate::uploads::ImageFormat::Jpeg.content_type(),
    crate::uploads::ImageFormat::Gif.content_type(),
    crate::uploads::ImageFormat::WebP.content_type(),
];
/// How long the client waits for `rtc.joined` and for an SDP answer, and how it backs off.
pub const RTC_JOIN_TIMEOUT_MS: u32 = 15_000;
pub const RTC_ANSWER_TIMEOUT_MS: u32 = 10_000;
pub const RTC_RECONNECT_BACKOFF_MS: [u32; 5] = [500, 1_000, 2_000, 5_000, 10_000];

pub fn get(ctx: &RequestCtx<'_>) -> HandlerResult {
    Ok(Response::json(200, ctx.app.capabilities_json().clone()))
}

/// Encodes the document for this configuration.
pub fn encode(config: &Config, default_server_id: &str) -> bytes::Bytes {
    let doc = document(config, default_server_id);
    bytes::Bytes::from(simd_json::to_vec(&doc).expect("capabilities document serializes"))
}

#[derive(Serialize)]
pub struct Capabilities<'a> {
    pub server_name: &'a str,
    pub server_id: &'a str,
    pub api_version: &'a str,
    pub build_version: &'a str,
    pub build_commit: &'a str,
    pub identity_handshake_modes: [&'a str; 1],
    pub user_uid_policy: &'a str,
    pub profile_data_policy: &'a str,
    pub auth_mode: &'a str,
    pub transport: Transport,
    pub features: Features,
    pub mentions: Mentions,
    pub read_acks: ReadAcks,
    pub server_actions: ServerActions,
    pub moderation: Moderation,
    pub limits: Limits,
    pub security: Security,
    pub rtc: Rtc,
    pub profile: Profile,
}

#[derive(Serialize)]
pub struct Transport {
    pub websocket: bool,
    pub sse: bool,
    pub polling: bool,
}

#[derive(Serialize)]
pub struct Features {
    pub messaging: bool,
    pub presence: bool,
    pub attachments: bool,
    pub notifications: bool,
    pub server_creation: bool,
}

#[derive(Serialize)]
pub struct Mentions {
    pub user: bool,
    pub channel: bool,
    pub resolve: bool,
    pub notifications: bool,
    pub supported_tokens: [&'static str; 2],
}

#[derive(Serialize)]
pub struct ReadAcks {
    pub channel: bool,
    pub cursor_type: &'static str,
    pub monotonic: bool,
}

/// What of the newest client's server actions (wire contract A.10, Part D) this server stores
/// and enforces; absent or false means the client does not offer it.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerActions {
    /// `PUT /v1/servers/{id}/read-acks`.
    pub bulk_read_acks: bool,
    pub invites: bool,
    /// `GET|PUT /v1/servers/{id}/privacy/me`: presence visibility and mention permission.
    pub privacy: bool,
    /// `GET|PUT|DELETE /v1/servers/{id}/profile/me`.
    pub profile_overrides: bool,
    /// The realtime events of server actions (roles, members removed, cases, locks).
    pub events: bool,
    pub moderation: bool,
}

/// Moderation as the newest client reads it (Part D). The vote policy is the default of a
/// server whose owner set none (`GET …/moderation/policy` has each server's own).
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moderation {
    pub enabled: bool,
    pub actions: ModerationActions,
    pub vote_policy: VotePolicyOut,
    pub evidence_policy: EvidencePolicy,
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModerationActions {
    pub immediate: [&'static str; 3],
    pub vote_required: [&'static str; 3],
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct VotePolicyOut {
    pub threshold: u32,
    pub quorum: u32,
    pub window_seconds: i64,
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvidencePolicy {
    /// A report needs no evidence bundle.
    pub report_bundle_required: bool,
    /// Plaintext evidence may be disclosed, with its own consent.
    pub plaintext_disclosure_optional: bool,
}

pub const MODERATION: Moderation = Moderation {
    enabled: true,
    actions: ModerationActions {
        immediate: ["kick", "timeout_short", "channel_lock"],
        vote_required: ["ban", "timeout_long", "role_remove"],
    },
    vote_policy: VotePolicyOut {
        threshold: crate::domain::model::VotePolicy::DEFAULT.threshold,
        quorum: crate::domain::model::VotePolicy::DEFAULT.quorum,
        window_seconds: crate::domain::model::VotePolicy::DEFAULT.window_seconds,
    },
    evidence_policy: EvidencePolicy {
        report_bundle_required: false,
        plaintext_disclosure_optional: true,
    },
};

/// The server actions advertised: only what is built and enforced.
pub const SERVER_ACTIONS: ServerActions = ServerActions {
    bulk_read_acks: true,
    invites: true,
    privacy: true,
    profile_overrides: true,
    events: true,
    moderation: true,
};

#[derive(Serialize)]
pub struct Limits {
    pub max_message_bytes: u64,
    pub max_upload_bytes: u64,
    pub rate_limit_per_minute: u32,
    pub max_call_participants: u32,
}

#[derive(Serialize)]
pub struct Security {
    pub https_required: bool,
    pub certificate_pinning: &'static str,
    pub tls_fingerprint: Option<String>,
}

#[derive(Serialize)]
pub struct Rtc {
    pub protocol_version: &'static str,
    pub signaling_url: String,
    pub signaling_transport: &'static str,
    pub topologies: [&'static str; 1],
    pub features: RtcFeatures,
    pub ice_servers: Vec<IceServer>,
    pub connection_policy: ConnectionPolicy,
    pub subscribe_receive_policy: ReceiveCaps,
}

#[derive(Serialize)]
pub struct RtcFeatures {
    pub voice: bool,
    pub video: bool,
    pub screenshare: bool,
    pub simulcast: bool,
}

#[derive(Serialize)]
pub struct ConnectionPolicy {
    pub join_timeout_ms: u32,
    pub answer_timeout_ms: u32,
    pub ice_restart_enabled: bool,
    pub reconnect_backoff_ms: [u32; 5],
}

#[derive(Serialize)]
pub struct Profile {
    pub enabled: bool,
    pub scope: &'static str,
    pub fields: [&'static str; 4],
    pub avatar_modes: [&'static str; 2],
    pub display_name: DisplayNameRules,
    pub avatar_upload: AvatarUploadRules,
    pub realtime_event: &'static str,
    pub message_author_profile_mode: &'static str,
}

#[derive(Serialize)]
pub struct DisplayNameRules {
    pub min_length: u32,
    pub max_length: u32,
}

#[derive(Serialize)]
pub struct AvatarUploadRules {
    pub max_bytes: u64,
    pub mime_types: [&'static str; 4],
    pub max_width: u32,
    pub max_height: u32,
}

/// `ws://` or `wss://` URL of an endpoint under the public base URL.
pub fn websocket_url(public_base_url: &str, path: &str) -> String {
    let base = public_base_url.trim_end_matches('/');
    let rest = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    format!("{rest}{path}")
}

pub fn document<'a>(config: &'a Config, default_server_id: &'a str) -> Capabilities<'a> {
    let session = config.auth_mode == AuthMode::Session;
    Capabilities {
        server_name: &config.server_name,
        server_id: default_server_id,
        api_version: API_VERSION,
        build_version: build_info::VERSION,
        build_commit: build_info::COMMIT,
        identity_handshake_modes: [if session {
            "challenge_signature"
        } else {
            "token_proof"
        }],
        user_uid_policy: "either",
        profile_data_policy: "uid_only",
        auth_mode: if session { "session" } else { "headers" },
        transport: Transport {
            websocket: true,
            sse: false,
            polling: false,
        },
        features: Features {
            messaging: true,
            presence: true,
            attachments: true,
            notifications: true,
            server_creation: config.allow_server_creation,
        },
        mentions: Mentions {
            user: true,
            channel: true,
            resolve: true,
            notifications: true,
            supported_tokens: ["@here", "@channel"],
        },
        read_acks: ReadAcks {
            channel: true,
            cursor_type: "message_id",
            monotonic: true,
        },
        server_actions: SERVER_ACTIONS,
        moderation: MODERATION,
        limits: Limits {
            max_message_bytes: config.limits.max_message_bytes as u64,
            max_upload_bytes: config.limits.max_upload_bytes as u64,
            rate_limit_per_minute: config.limits.rate_limit_per_minute,
            max_call_participants: config.rtc.max_call_participants,
        },
        security: Security {
            https_required: config.public_base_url.starts_with("https://"),
            certificate_pinning: "optional",
            tls_fingerprint: None,
        },
        rtc: Rtc {
            protocol_version: RTC_PROTOCOL_VERSION,
            signaling_url: websocket_url(&config.public_base_url, "/v1/rtc/signaling"),
            signaling_transport: "websocket",
            topologies: ["sfu"],
            features: RtcFeatures {
                voice: true,
                video: true,
                screenshare: true,
                simulcast: true,
            },
            ice_servers: config.ice_servers(),
            connection_policy: ConnectionPolicy {
                join_timeout_ms: RTC_JOIN_TIMEOUT_MS,
                answer_timeout_ms: RTC_ANSWER_TIMEOUT_MS,
                ice_restart_enabled: true,
                reconnect_backoff_ms: RTC_RECONNECT_BACKOFF_MS,
            },
            subscribe_receive_policy: config.rtc.receive_caps.default,
        },
        profile: Profile {
            enabled: true,
            scope: "global",
            fields: [
                "display_name",
                "avatar_mode",
                "avatar_preset_id",
                "avatar_asset_id",
            ],
            avatar_modes: ["generated", "uploaded"],
            display_name: DisplayNameRules {
                min_length: DISPLAY_NAME_MIN_CHARS,
                max_length: DISPLAY_NAME_MAX_CHARS,
            },
            avatar_upload: AvatarUploadRules {
                max_bytes: AVATAR_MAX_BYTES,
                mime_types: IMAGE_MIME_TYPES,
                max_width: AVATAR_MAX_DIMENSION,
                max_height: AVATAR_MAX_DIMENSION,
            },
            realtime_event: "profile_updated",
            message_author_profile_mode: "live",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_urls_follow_the_scheme() {
        assert_eq!(
            websocket_url("https://chat.example.org", "/v1/rtc/signaling"),
            "wss://chat.example.org/v1/rtc/signaling"
        );
        assert_eq!(
            websocket_url("http://localhost:8080/", "/x"),
            "ws://localhost:8080/x"
        );
    }

    fn config(vars: &[(&str, &str)]) -> Config {
        Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())), 2).unwrap()
    }

    fn parsed(config: &Config) -> simd_json::OwnedValue {
        let mut bytes = encode(config, "srv").to_vec();
        simd_json::to_owned_value(&mut bytes).unwrap()
    }

    #[test]
    fn every_object_the_client_requires_is_present() {
        use simd_json::prelude::*;
        let doc = parsed(&config(&[]));
        for key in [
            "transport",
            "features",
            "limits",
            "security",
            "rtc",
            "profile",
            "mentions",
            "read_acks",
        ] {
            assert!(
                doc.get(key).and_then(|v| v.as_object()).is_some(),
                "{key} missing"
            );
        }
        let rtc = doc.get("rtc").unwrap();
        for key in ["features", "connection_policy", "subscribe_receive_policy"] {
            assert!(
                rtc.get(key).and_then(|v| v.as_object()).is_some(),
                "rtc.{key} missing"
            );
        }
        assert_eq!(
            rtc.get("ice_servers")
                .and_then(|v| v.as_array())
                .map(|a| a.len()),
            Some(1)
        );
        assert_eq!(doc.get("server_id").and_then(|v| v.as_str()), Some("srv"));
        assert_eq!(
            doc.get("user_uid_policy").and_then(|v| v.as_str()),
            Some("either")
        );
        let caps = rtc.get("subscribe_receive_policy").unwrap();
        assert_eq!(
            caps.get("max_video_tracks").and_then(|v| v.as_u64()),
            Some(8)
        );
        assert_eq!(
            caps.get("max_audio_tracks").and_then(|v| v.as_u64()),
            Some(16)
        );
    }

    #[test]
    fn configuration_shows_through() {
        use simd_json::prelude::*;
        let doc = parsed(&config(&[
            ("OPENCHAT_ALLOW_SERVER_CREATION", "false"),
            ("OPENCHAT_RTC_STUN_URLS", "none"),
            ("OPENCHAT_AUTH_MODE", "headers"),
            ("OPENCHAT_PUBLIC_BASE_URL", "https://chat.example.org"),
            ("OPENCHAT_RTC_TURN_URLS", "turn:turn.example.org:3478"),
            ("OPENCHAT_RTC_TURN_USERNAME", "u"),
            ("OPENCHAT_RTC_TURN_CREDENTIAL", "p"),
        ]));
        assert_eq!(
            doc.get("features")
                .unwrap()
                .get("server_creation")
                .and_then(|v| v.as_bool()),
            Some(false)
        );
        assert_eq!(
            doc.get("identity_handshake_modes")
                .unwrap()
                .as_array()
                .unwrap()[0]
                .as_str(),
            Some("token_proof")
        );
        let rtc = doc.get("rtc").unwrap();
        assert_eq!(
            rtc.get("signaling_url").and_then(|v| v.as_str()),
            Some("wss://chat.example.org/v1/rtc/signaling")
        );
        let ice = rtc.get("ice_servers").unwrap().as_array().unwrap();
        assert_eq!(ice.len(), 1, "STUN disabled, one TURN entry");
        assert_eq!(ice[0].get("username").and_then(|v| v.as_str()), Some("u"));
        assert_eq!(
            doc.get("security")
                .unwrap()
                .get("https_required")
                .and_then(|v| v.as_bool()),
            Some(true)
        );
    }
}
