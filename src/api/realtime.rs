//! `GET /v1/realtime` (wire contract A.7, B.3): one WebSocket per client and server. Opening it
//! is the "opening the server" act that admits (or re-admits) the user; it then receives every
//! committed event of the server, presence and typing of the channels it subscribes to, and
//! its own read acks. With `since_event_id` it first gets what it missed (or
//! `chat.resync_required` when that is no longer kept).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use super::RequestCtx;
use super::Shard;
use super::identity::{actor, bearer_token, query_param};
use crate::domain::community::Actor;
use crate::domain::community::commands::OpenRealtime;
use crate::domain::model::EventId;
use crate::domain::text::is_valid_id;
use crate::http::{Params, Request};
use crate::realtime::{Member, Resume};
use crate::runtime::websocket::{RealtimeSocket, Session, SocketHandle};
use crate::wire::realtime::{ClientRequest, encode_frame, error_frame, parse_client_frame};

use crate::authority::now_rfc3339 as now_text;

fn send_error(handle: &SocketHandle, server_id: &str, message: &str) {
    let _ = handle.push(error_frame(message, server_id, &now_text()));
}

pub fn session(
    shard: Rc<Shard>,
    request: Request,
    session: Session,
) -> Pin<Box<dyn Future<Output = ()>>> {
    Box::pin(run(shard, request, session))
}

/// What the upgrade request said, read before the request (and the HTTP read buffer it shares)
/// is dropped: an idle socket must not keep 8 KiB of HTTP buffer alive.
struct Opening {
    server_id: String,
    since: Option<String>,
    who: Result<Option<Actor>, super::ApiError>,
    /// The session token it was opened with, if any: a revoke closes the socket.
    token: Option<String>,
}

async fn opening(shard: &Shard, request: Request) -> Opening {
    let app = shard.app.clone();
    let ctx = RequestCtx {
        shard,
        app: &app,
        request: &request,
        params: Params::empty(),
        upload: None,
    };
    // A session socket in either mode (`actor` prefers the token): a revoke closes it.
    let token = bearer_token(&ctx).ok().flatten();
    Opening {
        server_id: query_param(&ctx, "server_id")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| app.default_server_id.clone()),
        since: query_param(&ctx, "since_event_id").filter(|s| !s.is_empty()),
        who: actor(&ctx).await,
        token,
    }
}

/// An admitted socket.
struct Admitted {
    who: Actor,
    /// Its number in the hub (registered, events held until it goes live).
    id: u64,
    since: Option<EventId>,
    /// When this opening made the user a member (again): the server's last event id then.
    /// Events up to it were decided before the join, so they do not go out live to this
    /// socket (the resume, if any, applies the read rule to them instead).
    joined_after: Option<EventId>,
}

/// Checks the opening and admits the user. A refusal is the message to send.
async fn admit(
    shard: &Rc<Shard>,
    handle: &SocketHandle,
    server_id: &str,
    since: Option<String>,
    who: Result<Option<Actor>, super::ApiError>,
    token: Option<String>,
) -> Result<Admitted, String> {
    let since = match since {
        None => None,
        Some(raw) => match raw.parse::<u64>() {
            Ok(n) => Some(EventId(n)),
            _ => return Err("since_event_id must be a non-negative integer".to_owned()),
        },
    };
    let who = match who {
        Ok(Some(who)) if is_valid_id(server_id) => who,
        Ok(Some(_)) => return Err("unknown server".to_owned()),
        Ok(None) => {
            return Err(
                "identify yourself: user_uid and device_id (headers mode) or access_token"
                    .to_owned(),
            );
        }
        Err(e) => return Err(e.to_string()),
    };
    // Registered before the admission round trip, its events held until it goes live: an
    // event committed while the socket is being admitted still reaches it.
    // The session is known to the hub before the admission: a revoke decided after the
    // admission finds the socket, one decided before it refuses the admission.
    let session = token.as_deref().map(crate::auth::hash_token);
    let id = shard
        .hub
        .register(server_id, &who.user_uid, session, handle.clone(), false);
    let admitted = {
        let who = who.clone();
        let sid = server_id.to_owned();
        let open = OpenRealtime {
            actor: who,
            server_id: sid.into(),
            token,
        };
        shard.app.authority.command(open).await
    };
    match admitted {
        Ok(joined_after) => Ok(Admitted {
            who,
            id,
            since,
            joined_after,
        }),
        Err(e) => {
            shard.unregister(id);
            // A full authority queue reads "the server is overloaded; retry shortly".
            Err(e.to_string())
        }
    }
}

async fn run(shard: Rc<Shard>, request: Request, session: Session) {
    let mut socket = RealtimeSocket::new(session, &shard);
    let handle = socket.handle();
    let app = shard.app.clone();
    let Opening {
        server_id,
        since,
        who,
        token,
    } = opening(&shard, request).await;
    let admitted = admit(&shard, &handle, &server_id, since, who, token).await;
    let Admitted {
        who,
        id,
        since,
        joined_after,
    } = match admitted {
        Ok(admitted) => admitted,
        Err(message) => {
            // Refusals are one chat.error and a close: the socket is already upgraded.
            send_error(&handle, &server_id, &message);
            handle.close();
            while socket.next_client_text().await.is_some() {}
            return;
        }
    };
    app.authority
        .socket_opened(server_id.clone(), who.user_uid.clone().into());
    let joined_after = joined_after.unwrap_or_default();
    if let Some(since) = since {
        let resumed = app
            .authority
            .resume(server_id.clone(), who.user_uid.clone().into(), since)
            .await;
        match resumed {
            Ok(resumed) => {
                match resumed.resume {
                    Resume::Events(frames) => {
                        for frame in frames {
                            if handle.push(frame).is_err() {
                                break;
                            }
                        }
                    }
                    Resume::ResyncRequired => {
                        let payload = format!(
                            "{{\"server_id\":{},\"last_event_id\":{}}}",
                            crate::domain::community::encode(&server_id),
                            resumed.last_event_id
                        );
                        let _ = handle.push(encode_frame(
                            "chat.resync_required",
                            payload.as_bytes(),
                            None,
                            &server_id,
                            &now_text(),
                        ));
                    }
                }
                shard
                    .hub
                    .go_live(id, resumed.replayed_up_to.max(joined_after));
            }
            Err(e) => {
                send_error(&handle, &server_id, &e.to_string());
                shard.hub.go_live(id, joined_after);
            }
        }
    } else {
        shard.hub.go_live(id, joined_after);
    }
    let member = Member {
        client_id: format!("c{}_{}", shard.id, id),
        user_uid: who.user_uid.clone().into(),
        device_id: who.device_id.clone(),
    };
    while let Some(text) = socket.next_client_text().await {
        let frame = match parse_client_frame(text.as_bytes()) {
            Ok(frame) => frame,
            Err(e) => {
                send_error(&handle, &server_id, &e.to_string());
                continue;
            }
        };
        match frame.kind {
            ClientRequest::Subscribe { channel_id } => {
                // A read of the state where it is: it waits for no command, so it needs no
                // task of its own, and subscriptions take effect in the order they came.
                let allowed = shard.app.authority.read(|c, _| {
                    c.may_subscribe(&who, &server_id, &channel_id)?;
                    Ok(c.presence_hidden(&server_id, &who.user_uid))
                });
                match allowed {
                    Ok(hidden) => shard.subscribe(id, &channel_id, member.clone(), hidden),
                    Err(e) => send_error(&handle, &server_id, &e.to_string()),
                }
            }
            ClientRequest::Unsubscribe { channel_id } => shard.unsubscribe(id, &channel_id),
            ClientRequest::Typing {
                channel_id,
                is_typing,
            } => shard.typing(id, &channel_id, is_typing),
            ClientRequest::Ping => {
                let _ = handle.push(encode_frame("pong", b"{}", None, &server_id, &now_text()));
            }
            ClientRequest::Unknown { type_ } => {
                tracing::debug!(kind = %type_, "unknown realtime frame type ignored");
            }
        }
    }
    shard.unregister(id);
    app.authority.socket_closed(server_id, who.user_uid.into());
}
