//! Who a request comes from. In both modes `Authorization: Bearer <token>` (for WebSockets
//! also the `openchat.session.<token>` subprotocol or `access_token` in the query), checked
//! against the authority's sessions. Headers mode (desktop-client compatibility) also takes
//! `X-OpenChat-User-UID` / `X-OpenChat-Device-ID` headers, or `user_uid` / `device_id` query
//! parameters on the realtime socket, on trust when no token is sent. No identity at all is
//! fine for the reads the contract allows anonymously.

use super::{ApiError, RequestCtx};
use crate::config::AuthMode;
use crate::domain::community::Actor;
use crate::domain::error::DomainError;
use crate::domain::ids::ParseId;
use crate::http::Request;
use crate::http::query::query_pairs;

/// Device id assumed in headers mode when a client sends a uid but no device id.
pub const DEFAULT_DEVICE_ID: &str = "default";

fn header_str<'a>(ctx: &'a RequestCtx<'_>, name: &str) -> Result<Option<&'a str>, ApiError> {
    match ctx.request.header(name) {
        None => Ok(None),
        Some(raw) => std::str::from_utf8(raw)
            .map(|s| Some(s.trim()).filter(|s| !s.is_empty()))
            .map_err(|_| ApiError::bad_request("invalid_header", format!("{name} is not UTF-8"))),
    }
}

/// A query parameter, percent-decoded (first occurrence).
pub fn query_param(ctx: &RequestCtx<'_>, name: &str) -> Option<String> {
    let query = ctx.request.query()?;
    query_pairs(query)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Prefix of the WebSocket subprotocol that carries a session token (wire contract A.10).
pub const SESSION_SUBPROTOCOL_PREFIX: &str = "openchat.session.";

/// The `openchat.session.<token>` entry of a `Sec-WebSocket-Protocol` offer, whole (the server
/// echoes it, or Chromium fails the handshake).
pub fn session_subprotocol(request: &Request) -> Option<&str> {
    let offered = std::str::from_utf8(request.header("sec-websocket-protocol")?).ok()?;
    offered.split(',').map(str::trim).find(|p| {
        p.len() > SESSION_SUBPROTOCOL_PREFIX.len() && p.starts_with(SESSION_SUBPROTOCOL_PREFIX)
    })
}

/// The bearer token of the request: the `Authorization` header; on a WebSocket upgrade also
/// the `openchat.session.<token>` subprotocol or the `access_token` query parameter (a browser
/// cannot set headers there). A plain HTTP request is never authenticated by its query: URLs
/// end up in logs, proxies and browser history.
pub fn bearer_token(ctx: &RequestCtx<'_>) -> Result<Option<String>, ApiError> {
    if let Some(value) = header_str(ctx, "authorization")? {
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("Authorization must be 'Bearer <token>'"))?;
        return Ok(Some(token.to_owned()));
    }
    if !ctx.request.is_websocket_upgrade() {
        return Ok(None);
    }
    if let Some(protocol) = session_subprotocol(ctx.request) {
        return Ok(Some(
            protocol[SESSION_SUBPROTOCOL_PREFIX.len()..].to_owned(),
        ));
    }
    Ok(query_param(ctx, "access_token").filter(|t| !t.is_empty()))
}

/// An identity header's value as an id of type `T` (the id rule), or 400 `invalid_identity`.
fn checked_id<T: ParseId>(value: &str, what: &str) -> Result<T, ApiError> {
    T::parse_id(value).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_identity",
            format!("{what} must be 1 to 64 characters of A-Z a-z 0-9 _ -"),
        )
    })
}

/// The requester, if it identified itself. A malformed identity is an error, not anonymity.
///
/// A bearer token is the identity in either mode (a verified session of A.10 or B.1; the
/// device comes from the session, and `X-OpenChat-*` headers beside it are not read). Without
/// one, headers mode takes the identity headers on trust and session mode has none.
pub async fn actor(ctx: &RequestCtx<'_>) -> Result<Option<Actor>, ApiError> {
    if let Some(token) = bearer_token(ctx)? {
        // A session check reads the state where it is asked: it never queues behind writes.
        let found = ctx
            .app
            .authority
            .read(|c, now| Ok(c.authenticate(&token, now)))?;
        return match found {
            Some((actor, _)) => Ok(Some(actor)),
            None => Err(ApiError::Domain(DomainError::InvalidToken)),
        };
    }
    match ctx.app.config.auth_mode {
        AuthMode::Session => Ok(None),
        AuthMode::Headers => {
            let uid = match header_str(ctx, "x-openchat-user-uid")? {
                Some(uid) => Some(uid.to_owned()),
                None => query_param(ctx, "user_uid").filter(|u| !u.is_empty()),
            };
            let Some(uid) = uid else { return Ok(None) };
            let device = match header_str(ctx, "x-openchat-device-id")? {
                Some(d) => d.to_owned(),
                None => query_param(ctx, "device_id")
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| DEFAULT_DEVICE_ID.to_owned()),
            };
            Ok(Some(Actor {
                user_uid: checked_id(&uid, "X-OpenChat-User-UID")?,
                device_id: checked_id(&device, "X-OpenChat-Device-ID")?,
            }))
        }
    }
}

/// The requester; 401 when it did not identify itself.
pub async fn require_actor(ctx: &RequestCtx<'_>) -> Result<Actor, ApiError> {
    actor(ctx).await?.ok_or_else(|| {
        ApiError::unauthorized(match ctx.app.config.auth_mode {
            AuthMode::Session => "this needs a session: Authorization: Bearer <token>",
            AuthMode::Headers => "this needs X-OpenChat-User-UID",
        })
    })
}
