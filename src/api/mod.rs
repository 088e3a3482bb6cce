//! The endpoints: each turns a parsed request into calls on storage (and, in later issues, the
//! domain layer) and the result into a [`Response`]. Routing is a table built once in
//! [`App::new`]; errors are [`ApiError`]s, mapped to statuses in one place.

pub mod auth;
pub mod capabilities;
pub mod error;
pub mod health;
pub mod identity;
pub mod input;
pub mod messages;
pub mod metrics;
pub mod profiles;
pub mod realtime;
pub mod rtc;
pub mod servers;
pub mod signaling;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

pub use error::ApiError;

use crate::authority::{Authority, Broadcast};
use crate::config::Config;
use crate::domain::views::Urls;
use crate::http::{Method, Params, Request, Response, RouteMatch, Router};
use crate::runtime::shard::Shard;
use crate::runtime::websocket::Session;
use crate::storage::Storage;

/// Shared by every shard; immutable after start.
pub struct App {
    pub config: Config,
    pub storage: Storage,
    pub default_server_id: String,
    pub authority: Authority,
    pub urls: Urls,
    /// Signs voice join tickets (`OPENCHAT_RTC_TICKET_SECRET`, or random per start).
    pub ticket_secret: Vec<u8>,
    /// Signs sign-in challenges (random per start: challenges live 60 s).
    pub challenge_key: crate::auth::challenge::ChallengeKey,
    /// When this process started (Unix seconds). Used ticket ids are kept in memory only, so
    /// tickets issued before the start are refused: none can be replayed across a restart.
    pub started_at_secs: i64,
    /// The host's interface IPv4 addresses, read at start: extra media candidates for clients
    /// on this machine (`rtc::media_ips`).
    pub host_ips: Vec<std::net::Ipv4Addr>,
    /// Each shard takes its receiver of committed events once, at start.
    broadcasts: std::sync::Mutex<Vec<Option<tokio::sync::mpsc::UnboundedReceiver<Broadcast>>>>,
    router: Router<Handler>,
    /// The capabilities document is the same for every caller: encoded once.
    capabilities: bytes::Bytes,
}

/// What a handler sees of its request.
pub struct RequestCtx<'a> {
    pub shard: &'a Shard,
    pub app: &'a App,
    pub request: &'a Request,
    pub params: Params<'a>,
}

pub type HandlerResult = Result<Response, ApiError>;
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = HandlerResult> + 'a>>;

/// Runs a WebSocket session after the handshake; it owns the connection until it returns.
pub type WebSocketHandler = fn(Rc<Shard>, Request, Session) -> Pin<Box<dyn Future<Output = ()>>>;

/// Handlers that need no I/O answer synchronously, so the hot probes cost no allocation.
#[derive(Clone, Copy)]
pub enum Handler {
    Sync(fn(&RequestCtx<'_>) -> HandlerResult),
    Async(for<'a> fn(&'a RequestCtx<'a>) -> HandlerFuture<'a>),
    /// An endpoint that only speaks WebSocket; plain requests get 426.
    WebSocket(WebSocketHandler),
}

impl App {
    pub fn new(
        config: Config,
        storage: Storage,
        default_server_id: String,
        authority: Authority,
        broadcasts: Vec<tokio::sync::mpsc::UnboundedReceiver<Broadcast>>,
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
        App {
            config,
            storage,
            default_server_id,
            authority,
            urls,
            ticket_secret,
            challenge_key: crate::auth::challenge::ChallengeKey::random(),
            started_at_secs: crate::authority::now_millis() / 1000,
            host_ips: crate::runtime::media::host_ipv4_addresses(),
            broadcasts: std::sync::Mutex::new(broadcasts.into_iter().map(Some).collect()),
            router,
            capabilities,
        }
    }

    pub fn capabilities_json(&self) -> &bytes::Bytes {
        &self.capabilities
    }

    /// The committed-event feed of shard `shard` (handed out once).
    pub fn take_broadcasts(
        &self,
        shard: usize,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<Broadcast>> {
        self.broadcasts
            .lock()
            .ok()
            .and_then(|mut v| v.get_mut(shard).and_then(Option::take))
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
            Get,
            "/v1/channels/{channel_id}/mentions:resolve",
            A(messages::resolve_mentions),
        )
        .route(
            Get,
            "/v1/attachments/{attachment_id}",
            A(messages::attachment),
        )
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

/// Routes `request` and runs its handler.
pub async fn handle(shard: &Shard, request: &Request) -> HandlerResult {
    let app = &*shard.app;
    match app.router.find(request.method(), request.path()) {
        RouteMatch::Found { handler, params } => {
            let ctx = RequestCtx {
                shard,
                app,
                request,
                params,
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
