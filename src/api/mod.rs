//! The endpoints: each turns a parsed request into calls on storage (and, in later issues, the
//! domain layer) and the result into a [`Response`]. Routing is a table built once in
//! [`App::new`]; errors are [`ApiError`]s, mapped to statuses in one place.

pub mod capabilities;
pub mod error;
pub mod health;
pub mod metrics;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

pub use error::ApiError;

use crate::config::Config;
use crate::http::{Method, Params, Request, Response, RouteMatch, Router};
use crate::runtime::shard::Shard;
use crate::runtime::websocket::Session;
use crate::storage::Storage;

/// Shared by every shard; immutable after start.
pub struct App {
    pub config: Config,
    pub storage: Storage,
    pub default_server_id: String,
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
        extra_routes: fn(&mut Router<Handler>),
    ) -> App {
        let capabilities = capabilities::encode(&config, &default_server_id);
        let mut router = routes();
        extra_routes(&mut router);
        App {
            config,
            storage,
            default_server_id,
            router,
            capabilities,
        }
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
