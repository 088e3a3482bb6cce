//! The endpoints as the drivers see them: [`App`] is the `runtime::Service` the shards serve.
//! Each method only forwards to the endpoint code; what the runtime gets back is a response,
//! never an [`ApiError`] (the error-to-response table stays here, in `api::error`).

use std::future::Future;

use super::route_class::RouteClass;
use super::{ApiError, App, Shard};
use crate::http::{Request, Response};
use crate::runtime::service::{BodyPlan, Service, SessionFn};
use crate::runtime::upload::Upload;

impl Service for App {
    const ROUTE_CLASSES: &'static [&'static str] = &RouteClass::LABELS;

    fn route_class(&self, request: &Request) -> usize {
        RouteClass::of(request.path()) as usize
    }

    fn plan_body(
        &self,
        shard: &Shard,
        head: &Request,
    ) -> impl Future<Output = Result<BodyPlan, Response>> {
        super::plan_body(shard, head)
    }

    async fn handle(&self, shard: &Shard, request: &Request, upload: Option<&Upload>) -> Response {
        match super::handle(shard, request, upload).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        }
    }

    fn internal_error(&self) -> Response {
        ApiError::Internal.into_response()
    }

    fn websocket(&self, request: &Request) -> Option<SessionFn<App>> {
        super::websocket_handler(self, request)
    }

    fn on_notice(&self, notice: &crate::domain::community::Notice) {
        // A revoke on this node is honoured on every other node of the cluster.
        if let (
            Some(cluster),
            crate::domain::community::Notice::SessionRevoked { token_hash, .. },
        ) = (&self.cluster, notice)
        {
            cluster.publish_revoked_session(token_hash);
        }
    }

    fn subprotocol<'r>(&self, request: &'r Request) -> Option<&'r str> {
        super::identity::session_subprotocol(request)
    }
}

#[cfg(test)]
mod tests {
    use crate::api::identity::session_subprotocol;
    use crate::http::Request;
    use crate::runtime::websocket::handshake_response;

    #[test]
    fn handshake_echoes_the_session_subprotocol_only() {
        // What the driver writes for an upgrade: the 101 with the subprotocol `App` picks.
        let upgrade = |protocols: &str| {
            let bytes = format!(
                "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocols}\r\n\r\n"
            );
            let request = Request::from_bytes(bytes.as_bytes(), 1024).unwrap();
            String::from_utf8(handshake_response(&request, session_subprotocol(&request)).unwrap())
                .unwrap()
        };
        let response = upgrade("chat, openchat.session.ocs_abc");
        assert!(response.contains("\r\nSec-WebSocket-Protocol: openchat.session.ocs_abc\r\n"));
        assert!(response.ends_with("\r\n\r\n"));
        assert!(!upgrade("chat").contains("Sec-WebSocket-Protocol"));
        assert!(!upgrade("openchat.session.").contains("Sec-WebSocket-Protocol"));
    }
}
