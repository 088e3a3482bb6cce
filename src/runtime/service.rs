//! What the drivers need from the endpoint layer, stated by the drivers: the connection loop
//! serves any [`Service`], and only the wiring (`crate::server`) knows which one it is. So the
//! runtime imports no endpoint code, and the endpoints depend on the runtime, never the
//! reverse.
//!
//! The shards hold the service as a type parameter (`Shard<S>`), not behind `dyn`: every call
//! below is resolved at compile time, so the hot path (`/healthz` is measured against nginx)
//! pays no virtual call and no boxed future per request.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use super::shard::Shard;
use super::upload::Upload;
use super::websocket::Session;
use crate::http::{Request, Response};

/// The endpoint layer, as the connection driver calls it.
pub trait Service: Send + Sync + Sized + 'static {
    /// The labels of the route classes `/metrics` counts requests by.
    const ROUTE_CLASSES: &'static [&'static str];

    /// The route class of `request`: an index into [`Service::ROUTE_CLASSES`], from the head
    /// alone.
    fn route_class(&self, request: &Request) -> usize;

    /// How the body of the request whose head is `head` is taken in, decided from the head
    /// alone, before a byte of the body is read. `Err` is the answer to send before closing
    /// (a declared body over its limit, a large body without identity...). The driver then
    /// reserves the body's share of the body budget itself.
    fn plan_body(
        &self,
        shard: &Shard<Self>,
        head: &Request,
    ) -> impl Future<Output = Result<BodyPlan, Response>>;

    /// Routes and answers a request (its body read, or its upload spooled). Failures are the
    /// service's to turn into responses: the driver only writes what comes back.
    fn handle(
        &self,
        shard: &Shard<Self>,
        request: &Request,
        upload: Option<&Upload>,
    ) -> impl Future<Output = Response>;

    /// The answer when serving failed below the service: a handler panicked, an upload could
    /// not be written to its temp file.
    fn internal_error(&self) -> Response;

    /// The session to run when `request` is a WebSocket upgrade to a WebSocket endpoint;
    /// `None` sends it through [`Service::handle`] like any request.
    fn websocket(&self, request: &Request) -> Option<SessionFn<Self>>;

    /// A notice of the authority, seen once per process (on shard 0), for what lies beyond
    /// the shards (the cluster bus). Nothing by default.
    fn on_notice(&self, _notice: &crate::domain::community::Notice) {}

    /// The subprotocol offered in `request` that the `101` echoes, if any (a browser fails a
    /// handshake whose offered subprotocol is not picked).
    fn subprotocol<'r>(&self, request: &'r Request) -> Option<&'r str>;
}

/// Runs a WebSocket session after the handshake; it owns the connection until it returns. A
/// plain function pointer: picking one per upgrade costs nothing.
pub type SessionFn<S> = fn(Rc<Shard<S>>, Request, Session) -> Pin<Box<dyn Future<Output = ()>>>;

/// What happens to the body of a request whose head has arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyPlan {
    /// Read it into memory, at most `limit` bytes.
    InMemory { limit: usize },
    /// Stream the multipart form to temp files (the handler gets it as an [`Upload`]); the
    /// body is at most `limit` bytes.
    Upload { boundary: String, limit: usize },
}

impl BodyPlan {
    /// The most the body may hold: what it reserves of the body budget when its length is not
    /// declared.
    pub fn limit(&self) -> usize {
        match self {
            BodyPlan::InMemory { limit } | BodyPlan::Upload { limit, .. } => *limit,
        }
    }
}
