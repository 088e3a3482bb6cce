//! The endpoints: each turns a parsed request into calls on storage (and, in later issues, the
//! domain layer) and the result into a [`Response`]. Routing is a table built once in
//! [`App::new`]; errors are [`ApiError`]s, mapped to statuses in one place. [`App`] is the
//! service the drivers serve (`runtime::Service`, implemented in [`service`]).

pub mod auth;
pub mod blob_holds;
pub mod capabilities;
pub mod error;
pub mod health;
pub mod identity;
pub mod input;
pub mod invites;
pub mod keys;
pub mod messages;
pub mod metrics;
pub mod moderation;
pub mod privacy;
pub mod profiles;
pub mod realtime;
pub mod route_class;
pub mod rtc;
pub mod servers;
pub mod service;
pub mod signaling;

use std::future::Future;
use std::pin::Pin;

pub use error::ApiError;

use crate::authority::Authority;
use crate::config::Config;
use crate::domain::views::Urls;
use crate::http::limits::{IDENTITY_BEFORE_BODY_BYTES, MAX_JSON_BODY_BYTES};
use crate::http::{Method, Params, Request, Response, RouteMatch, Router};
use crate::runtime::service::{BodyPlan, SessionFn};
use crate::runtime::upload::Upload;
use crate::storage::Storage;

/// A shard serving the endpoints: what handlers and sessions see of the driver.
pub type Shard = crate::runtime::shard::Shard<App>;

/// Shared by every shard; immutable after start.
pub struct App {
    pub config: Config,
    pub storage: Storage,
    pub default_server_id: String,
    pub authority: Authority,
    pub urls: Urls,
    /// Signs voice join tickets (`OPENCHAT_RTC_TICKET_SECRET`, or random per start).
    pub ticket_secret: Vec<u8>,
    /// Seals report evidence at rest (`OPENCHAT_EVIDENCE_KEY` or the data directory's key file).
    pub evidence_key: crate::auth::evidence_key::EvidenceKey,
    /// Signs sign-in challenges (random per start: challenges live 60 s).
    pub challenge_key: crate::auth::challenge::ChallengeKey,
    /// When this process started (Unix seconds). Used ticket ids are kept in memory only, so
    /// tickets issued before the start are refused: none can be replayed across a restart.
    pub started_at_secs: i64,
    /// The host's interface IPv4 addresses, read at start by the drivers and handed in:
    /// extra media candidates for clients on this machine (`rtc::media_ips`).
    pub host_ips: Vec<std::net::Ipv4Addr>,
    router: Router<Handler>,
    /// The capabilities document is the same for every caller: encoded once.
    capabilities: bytes::Bytes,
    /// Blobs stored by uploads whose post or avatar is not decided yet.
    pub blob_holds: blob_holds::BlobHolds,
    /// The two endpoints whose bodies may be large multipart uploads.
    uploads: Router<()>,
    /// This node's view of the cluster (`None`: a single node).
    pub cluster: Option<crate::cluster::ClusterStatus>,
}

/// What a handler sees of its request.
pub struct RequestCtx<'a> {
    pub shard: &'a Shard,
    pub app: &'a App,
    pub request: &'a Request,
    pub params: Params<'a>,
    /// The form of a multipart upload, spooled to temp files while it arrived (only on the
    /// upload endpoints; their multipart bodies never reach `request.body()`).
    pub upload: Option<&'a Upload>,
}

pub type HandlerResult = Result<Response, ApiError>;
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = HandlerResult> + 'a>>;

/// Runs a WebSocket session after the handshake; it owns the connection until it returns.
pub type WebSocketHandler = SessionFn<App>;

/// Handlers that need no I/O answer synchronously, so the hot probes cost no allocation.
#[derive(Clone, Copy)]
pub enum Handler {
    Sync(fn(&RequestCtx<'_>) -> HandlerResult),
    Async(for<'a> fn(&'a RequestCtx<'a>) -> HandlerFuture<'a>),
    /// An endpoint that only speaks WebSocket; plain requests get 426.
    WebSocket(WebSocketHandler),
}

impl App {
    /// The endpoints over `storage` and `authority`; `host_ips` are the host's interface
    /// addresses (`runtime::media::host_ipv4_addresses`, read by the wiring).
    pub fn new(
        config: Config,
        storage: Storage,
        default_server_id: String,
        authority: Authority,
        host_ips: Vec<std::net::Ipv4Addr>,
        evidence_key: crate::auth::evidence_key::EvidenceKey,
        extra_routes: fn(&mut Router<Handler>),
    ) -> App {
        let capabilities = capabilities::encode(&config, &default_server_id);
        let mut router = routes();
        extra_routes(&mut router);
        let urls = Urls::new(&config.public_base_url);
        let ticket_secret = match &config.rtc.ticket_secret {
            Some(secret) => secret.0.clone(),
            None => crate::rtc::ticket::random_secret(),
        };
        let mut uploads = Router::new();
        uploads
            .route(Method::Post, "/v1/channels/{channel_id}/messages", ())
            .route(Method::Post, "/v1/profile/avatar", ());
        App {
            blob_holds: blob_holds::BlobHolds::default(),
            uploads,
            config,
            storage,
            default_server_id,
            authority,
            urls,
            ticket_secret,
            evidence_key,
            challenge_key: crate::auth::challenge::ChallengeKey::random(),
            started_at_secs: crate::authority::now_millis() / 1000,
            host_ips,
            router,
            capabilities,
            cluster: None,
        }
    }

    /// This app as one node of a cluster.
    pub fn with_cluster(mut self, cluster: crate::cluster::ClusterStatus) -> App {
        self.cluster = Some(cluster);
        self
    }

    pub fn capabilities_json(&self) -> &bytes::Bytes {
        &self.capabilities
    }
}

fn routes() -> Router<Handler> {
    let mut r = Router::new();
    r.route(Method::Get, "/healthz", Handler::Sync(health::healthz))
        .route(Method::Get, "/readyz", Handler::Async(health::readyz))
        .route(Method::Get, "/metrics", Handler::Async(metrics::metrics))
        .route(
            Method::Get,
            "/v1/client/capabilities",
            Handler::Sync(capabilities::get),
        )
        .route(
            Method::Get,
            "/client/capabilities",
            Handler::Sync(capabilities::get),
        );
    use Handler::Async as A;
    use Method::{Delete, Get, Post, Put};
    r.route(Get, "/v1/servers", A(servers::list))
        .route(Post, "/v1/servers", A(servers::create))
        .route(
            Post,
            "/v1/servers/{server_id}/ownership:claim",
            A(servers::claim),
        )
        .route(
            Get,
            "/v1/servers/{server_id}/settings",
            A(servers::get_settings),
        )
        .route(
            Put,
            "/v1/servers/{server_id}/settings",
            A(servers::put_settings),
        )
        .route(
            Delete,
            "/v1/servers/{server_id}/membership",
            A(servers::leave),
        )
        .route(Post, "/v1/servers/{server_id}/membership", A(servers::join))
        .route(Get, "/v1/servers/{server_id}/members", A(servers::members))
        .route(
            Get,
            "/v1/servers/{server_id}/channels",
            A(servers::channels),
        )
        .route(
            Post,
            "/v1/servers/{server_id}/channels",
            A(servers::create_channel),
        )
        .route(
            Post,
            "/v1/servers/{server_id}/categories",
            A(servers::create_category),
        )
        .route(
            Put,
            "/v1/servers/{server_id}/categories/{group_id}",
            A(servers::rename_category),
        )
        .route(
            Delete,
            "/v1/servers/{server_id}/categories/{group_id}",
            A(servers::delete_category),
        )
        .route(
            Put,
            "/v1/servers/{server_id}/channel-layout",
            A(servers::put_layout),
        )
        .route(Get, "/v1/channels/{channel_id}/messages", A(messages::list))
        .route(
            Post,
            "/v1/channels/{channel_id}/messages",
            A(messages::create),
        )
        .route(
            Delete,
            "/v1/channels/{channel_id}/messages/{message_id}",
            A(messages::delete),
        )
        .route(
            Get,
            "/v1/channels/{channel_id}/read-ack",
            A(messages::get_read_ack),
        )
        .route(
            Put,
            "/v1/channels/{channel_id}/read-ack",
            A(messages::put_read_ack),
        )
        .route(
            Put,
            "/v1/servers/{server_id}/read-acks",
            A(messages::put_read_acks),
        )
        .route(
            Get,
            "/v1/channels/{channel_id}/mentions:resolve",
            A(messages::resolve_mentions),
        )
        .route(
            Get,
            "/v1/attachments/{attachment_id}",
            A(messages::attachment),
        )
        .route(Get, "/v1/users/{user_uid}/devices", A(keys::devices))
        .route(Delete, "/v1/devices/{device_id}", A(keys::revoke_device))
        .route(Post, "/v1/devices/link/start", A(keys::link_start))
        .route(Post, "/v1/devices/link/confirm", A(keys::link_confirm))
        .route(Get, "/v1/devices/link/{request_id}", A(keys::link_status))
        .route(Post, "/v1/keys/packages", A(keys::upload_packages))
        .route(Post, "/v1/keys/packages:claim", A(keys::claim_packages))
        .route(Get, "/v1/keys/packages/count", A(keys::package_count))
        .route(Post, "/v1/keys/envelopes", A(keys::envelopes))
        .route(Get, "/v1/keys/mailbox", A(keys::mailbox))
        .route(Post, "/v1/keys/mailbox:ack", A(keys::mailbox_ack))
        .route(Put, "/v1/keys/backup", A(keys::put_backup))
        .route(Get, "/v1/keys/backup", A(keys::get_backup))
        .route(Get, "/v1/channels/{channel_id}/epoch", A(keys::epoch))
        .route(Post, "/v1/channels/{channel_id}/commits", A(keys::commit))
        .route(Get, "/v1/channels/{channel_id}/commits", A(keys::commits))
        .route(Get, "/v1/profile/me", A(profiles::get_me))
        .route(Put, "/v1/profile/me", A(profiles::put_me))
        .route(Post, "/v1/profile/avatar", A(profiles::upload_avatar))
        .route(Get, "/v1/profile/avatar/{asset_id}", A(profiles::avatar))
        .route(Get, "/v1/profiles:batch", A(profiles::batch))
        .route(Post, "/v1/auth/challenge", A(auth::challenge))
        .route(Post, "/v1/auth/session", A(auth::open))
        .route(Get, "/v1/auth/session", A(auth::check))
        .route(Delete, "/v1/auth/session", A(auth::revoke))
        .route(
            Post,
            "/v1/servers/{server_id}/sessions/challenge",
            A(auth::server_challenge),
        )
        .route(
            Post,
            "/v1/servers/{server_id}/sessions",
            A(auth::server_session),
        )
        .route(Post, "/v1/servers/{server_id}/invites", A(invites::create))
        .route(Get, "/v1/servers/{server_id}/invites", A(invites::list))
        .route(
            Delete,
            "/v1/servers/{server_id}/invites/{invite_id}",
            A(invites::revoke),
        )
        .route(Post, "/v1/invites/{code}/redeem", A(invites::redeem))
        .route(Get, "/v1/servers/{server_id}/roles", A(moderation::roles))
        .route(
            Put,
            "/v1/servers/{server_id}/roles",
            A(moderation::set_role),
        )
        .route(
            Get,
            "/v1/servers/{server_id}/moderation/audit",
            A(moderation::audit),
        )
        .route(
            Put,
            "/v1/servers/{server_id}/channels/{channel_id}/permissions",
            A(moderation::set_channel_access),
        )
        .route(
            Get,
            "/v1/servers/{server_id}/moderation/policy",
            A(moderation::policy),
        )
        .route(
            Put,
            "/v1/servers/{server_id}/moderation/policy",
            A(moderation::put_policy),
        )
        .route(
            Get,
            "/v1/servers/{server_id}/moderation/cases",
            A(moderation::cases),
        )
        .route(
            Post,
            "/v1/servers/{server_id}/moderation/cases",
            A(moderation::report),
        )
        .route(
            Get,
            "/v1/servers/{server_id}/moderation/cases/{case_id}",
            A(moderation::case),
        )
        .route(
            Post,
            "/v1/servers/{server_id}/moderation/cases/{case_id}/actions/immediate",
            A(moderation::act_now),
        )
        .route(
            Post,
            "/v1/servers/{server_id}/moderation/cases/{case_id}/actions/propose",
            A(moderation::propose),
        )
        .route(
            Post,
            "/v1/servers/{server_id}/moderation/cases/{case_id}/votes",
            A(moderation::vote),
        )
        .route(
            Get,
            "/v1/servers/{server_id}/privacy/me",
            A(privacy::get_me),
        )
        .route(
            Put,
            "/v1/servers/{server_id}/privacy/me",
            A(privacy::put_me),
        )
        .route(
            Get,
            "/v1/servers/{server_id}/profile/me",
            A(profiles::get_server_me),
        )
        .route(
            Put,
            "/v1/servers/{server_id}/profile/me",
            A(profiles::put_server_me),
        )
        .route(
            Delete,
            "/v1/servers/{server_id}/profile/me",
            A(profiles::delete_server_me),
        )
        .route(
            Post,
            "/v1/servers/{server_id}/identity-bindings",
            A(auth::approve_binding),
        )
        .route(Get, "/v1/realtime", Handler::WebSocket(realtime::session))
        .route(
            Get,
            "/v1/rtc/signaling",
            Handler::WebSocket(signaling::session),
        )
        .route(
            Post,
            "/v1/rtc/channels/{channel_id}/join-ticket",
            A(rtc::join_ticket),
        );
    r
}

/// Decides from the head alone, before a byte of the body is read, whether and how the body of
/// `head` is taken in (a multipart upload is streamed to temp files, [`RequestCtx::upload`]).
/// Refusals are the response to send before closing the connection: 413 for a declared body
/// over the limit of its kind (JSON endpoints take [`MAX_JSON_BODY_BYTES`]; only the two
/// multipart uploads take up to `OPENCHAT_HTTP_MAX_BODY_BYTES`), 401 when the endpoint needs
/// identity, the body is large (over [`IDENTITY_BEFORE_BODY_BYTES`], chunked, or an upload)
/// and the head carries no valid identity. (The driver then reserves the body's share of the
/// body budget, or answers 503 `server_busy`.)
pub async fn plan_body(shard: &Shard, head: &Request) -> Result<BodyPlan, Response> {
    let app = &*shard.app;
    let declared = head.declared_body_len();
    let route = app.router.find(head.method(), head.path());
    let is_upload = matches!(
        app.uploads.find(head.method(), head.path()),
        RouteMatch::Found { .. }
    );
    let boundary = if is_upload {
        head.header("content-type").and_then(|ct| {
            (ct.len() >= 19 && ct[..19].eq_ignore_ascii_case(b"multipart/form-data"))
                .then(|| crate::http::multipart::boundary_from_content_type(ct))
        })
    } else {
        None
    };
    let plan = match boundary {
        Some(Err(e)) => return Err(crate::http::HttpError::from(e).response()),
        Some(Ok(boundary)) => BodyPlan::Upload {
            boundary,
            limit: app.config.limits.max_body_bytes,
        },
        None => {
            // A JSON post may carry the largest message body (twice, escaped) and an envelope.
            let message =
                crate::domain::limits::max_message_post_bytes(app.config.limits.max_message_bytes);
            let limit = if is_upload {
                MAX_JSON_BODY_BYTES.max(message)
            } else {
                MAX_JSON_BODY_BYTES
            };
            BodyPlan::InMemory { limit }
        }
    };
    if declared.is_some_and(|n| n > plan.limit()) {
        return Err(crate::http::HttpError::payload_too_large("request body too large").response());
    }
    let large = matches!(plan, BodyPlan::Upload { .. })
        || declared.is_none_or(|n| n > IDENTITY_BEFORE_BODY_BYTES);
    if large
        && let RouteMatch::Found { handler, params } = route
        && needs_identity(head, handler)
    {
        let ctx = RequestCtx {
            shard,
            app,
            request: head,
            params,
            upload: None,
        };
        if let Err(e) = identity::require_actor(&ctx).await {
            return Err(e.into_response());
        }
    }
    Ok(plan)
}

/// Whether a request with a body to this endpoint can only succeed with identity: every write
/// except signing in, which is how identity is obtained.
fn needs_identity(head: &Request, handler: &Handler) -> bool {
    matches!(handler, Handler::Async(_))
        && matches!(
            head.method(),
            Method::Post | Method::Put | Method::Delete | Method::Patch
        )
        && !is_sign_in(head.path())
}

/// The sign-in paths: B.1's `/v1/auth/...` and A.10's `/v1/servers/{id}/sessions` and
/// `…/sessions/challenge`.
fn is_sign_in(path: &str) -> bool {
    path.starts_with("/v1/auth/")
        || path.strip_prefix("/v1/servers/").is_some_and(|rest| {
            matches!(rest.split_once('/'), Some((id, "sessions" | "sessions/challenge")) if !id.is_empty() && !id.contains('/'))
        })
}

/// Routes `request` and runs its handler.
pub async fn handle(shard: &Shard, request: &Request, upload: Option<&Upload>) -> HandlerResult {
    let app = &*shard.app;
    match app.router.find(request.method(), request.path()) {
        RouteMatch::Found { handler, params } => {
            let ctx = RequestCtx {
                shard,
                app,
                request,
                params,
                upload,
            };
            match *handler {
                Handler::Sync(f) => f(&ctx),
                Handler::Async(f) => f(&ctx).await,
                Handler::WebSocket(_) => Err(ApiError::UpgradeRequired),
            }
        }
        RouteMatch::MethodNotAllowed { mut allowed } => {
            // Every path answers OPTIONS (CORS preflight) before routing.
            allowed.insert(Method::Options);
            Err(ApiError::MethodNotAllowed {
                allow: allowed.allow_header(),
            })
        }
        RouteMatch::NotFound => Err(ApiError::NotFound),
    }
}

/// The session handler for `request` when it is a WebSocket upgrade to a WebSocket endpoint.
pub fn websocket_handler(app: &App, request: &Request) -> Option<WebSocketHandler> {
    if !request.is_websocket_upgrade() {
        return None;
    }
    match app.router.find(request.method(), request.path()) {
        RouteMatch::Found {
            handler: Handler::WebSocket(f),
            ..
        } => Some(*f),
        _ => None,
    }
}

/// Serializes `value` as a JSON response.
pub fn json<T: serde::Serialize>(status: u16, value: &T) -> HandlerResult {
    match simd_json::to_vec(value) {
        Ok(body) => Ok(Response::json(status, body)),
        Err(e) => {
            tracing::error!(error = %e, "response serialization failed");
            Err(ApiError::Internal)
        }
    }
}
