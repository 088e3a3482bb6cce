//! `GET /v1/rtc/signaling` (WebSocket, wire contract A.8): the voice signaling socket. The first
//! frame must be `rtc.join {ticket}`; the ticket is verified (signature, expiry), consumed once
//! at the authority (single use across shards), and the socket joins the room on the shard that
//! owns the channel. Then every frame goes to that shard: `rtc.offer.publish` /
//! `rtc.offer.subscribe` are answered by its SFU, `rtc.ice.candidate` adds a client candidate,
//! `rtc.media.state` is relayed, `rtc.leave` or closing leaves, a moderation kick sends
//! `rtc.kicked` and closes. Frames of unknown types are ignored.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;

use super::Shard;
use crate::domain::community::commands::RedeemTicket;
use crate::http::Request;
use crate::realtime::SocketRef;
use crate::rtc::room::Seat;
use crate::rtc::ticket::{self, TicketError};
use crate::runtime::voice::VoiceOp;
use crate::runtime::websocket::{CloseReason, RealtimeSocket, Session, SocketHandle};
use crate::sfu::Caps;
use crate::wire::signaling::{
    SignalingFrame, SignalingRequest, error_frame, parse_signaling_frame,
};

pub fn session(
    shard: Rc<Shard>,
    request: Request,
    session: Session,
) -> Pin<Box<dyn Future<Output = ()>>> {
    // Nothing of the upgrade request is needed: identity comes with the ticket.
    drop(request);
    let media_ips = crate::rtc::media_ips(
        shard.app.config.rtc.public_ip,
        session.local_addr(),
        &shard.app.host_ips,
    );
    Box::pin(run(shard, session, media_ips))
}

/// Sends a fatal `rtc.error` about the frame `request_id` named, then closes.
fn fail(
    handle: &SocketHandle,
    request_id: Option<&str>,
    code: &str,
    message: &str,
    retryable: bool,
) {
    let _ = handle.push(error_frame(code, message, retryable, request_id));
    handle.close();
}

async fn run(shard: Rc<Shard>, session: Session, media_ips: Vec<IpAddr>) {
    let mut socket = RealtimeSocket::new(session, &shard);
    let handle = socket.handle();
    let id = shard.hub.register_plain(handle.clone());
    let me = SocketRef {
        shard: shard.id,
        socket: id,
    };
    // The channel of the room this socket is in.
    let mut joined: Option<String> = None;
    while let Some(text) = socket.next_client_text().await {
        let Some(SignalingFrame {
            request_id,
            request,
        }) = parse_signaling_frame(text)
        else {
            if joined.is_none() {
                fail(
                    &handle,
                    None,
                    "rtc_join_denied",
                    "the first frame must be rtc.join",
                    false,
                );
            }
            continue;
        };
        let request_id = request_id.as_deref();
        match (request, &joined) {
            (SignalingRequest::Join { ticket, channel_id }, None) => {
                match join(&shard, ticket, channel_id, request_id, me, &media_ips).await {
                    Ok(channel) => joined = Some(channel),
                    Err((code, message, retryable)) => {
                        fail(&handle, request_id, code, &message, retryable)
                    }
                }
            }
            (_, None) => fail(
                &handle,
                request_id,
                "rtc_join_denied",
                "join first: rtc.join {ticket}",
                false,
            ),
            (SignalingRequest::Leave, Some(channel)) => {
                shard.voice(VoiceOp::Leave {
                    channel_id: channel.clone(),
                    socket: me,
                });
                joined = None;
            }
            (SignalingRequest::MediaState { payload }, Some(channel)) => {
                if let Some(payload) = payload {
                    shard.voice(VoiceOp::MediaState {
                        channel_id: channel.clone(),
                        socket: me,
                        payload,
                    });
                }
            }
            (SignalingRequest::Offer { direction, sdp }, Some(channel)) => match sdp {
                Some(sdp) => shard.voice(VoiceOp::Offer {
                    channel_id: channel.clone(),
                    socket: me,
                    direction,
                    sdp,
                    request_id: request_id.map(str::to_owned),
                }),
                None => fail(
                    &handle,
                    request_id,
                    "rtc_negotiation_failed",
                    "an offer needs {sdp}",
                    false,
                ),
            },
            (
                SignalingRequest::Candidate {
                    direction,
                    candidate,
                },
                Some(channel),
            ) => {
                // A candidate without a known direction cannot be placed; it is dropped.
                if let (Some(direction), Some(candidate)) = (direction, candidate) {
                    shard.voice(VoiceOp::Candidate {
                        channel_id: channel.clone(),
                        socket: me,
                        direction,
                        candidate,
                    });
                }
            }
            (
                other @ (SignalingRequest::Join { .. } | SignalingRequest::Unknown { .. }),
                Some(_),
            ) => {
                tracing::debug!(
                    kind = other.kind(),
                    "signaling frame of an unknown type ignored"
                );
            }
        }
    }
    if let Some(channel) = joined {
        // A socket the client closed leaves; one lost to silence or a reset gets the
        // reconnect grace window (`rtc::room::RECONNECT_GRACE`).
        let dropped = matches!(
            socket.close_reason(),
            Some(CloseReason::Idle | CloseReason::Failed | CloseReason::WriteStalled)
        );
        let op = if dropped {
            VoiceOp::Detach {
                channel_id: channel,
                socket: me,
            }
        } else {
            VoiceOp::Leave {
                channel_id: channel,
                socket: me,
            }
        };
        shard.voice(op);
    }
    shard.unregister(id);
}

type JoinRefusal = (&'static str, String, bool);

/// Verifies and consumes the ticket of an `rtc.join` (and checks its top-level `channel_id`,
/// when given), then asks the owner shard to seat the socket. The value is the channel joined.
async fn join(
    shard: &Rc<Shard>,
    ticket: Option<String>,
    channel_id: Option<String>,
    request_id: Option<&str>,
    me: SocketRef,
    media_ips: &[IpAddr],
) -> Result<String, JoinRefusal> {
    let ticket_text = ticket.ok_or((
        "rtc_join_denied",
        "rtc.join needs {ticket}".to_owned(),
        false,
    ))?;
    let now = crate::authority::now_millis() / 1000;
    let claims = ticket::verify(&shard.app.ticket_secret, &ticket_text, now)
        .map_err(|e| (e.code(), e.to_string(), e == TicketError::Expired))?;
    // A single node keeps used ticket ids in memory only, so it refuses tickets from before its
    // start; a cluster node keeps them in the cluster's bucket, which outlives any node.
    if shard.app.cluster.is_none()
        && claims.exp - ticket::TICKET_TTL_SECS < shard.app.started_at_secs
    {
        return Err((
            "rtc_ticket_expired",
            "the ticket was issued before this server started; ask for a new one".to_owned(),
            true,
        ));
    }
    if channel_id
        .as_deref()
        .is_some_and(|c| !c.is_empty() && c != claims.channel_id)
    {
        return Err((
            "rtc_join_denied",
            "the ticket is for another channel".to_owned(),
            false,
        ));
    }
    // Single use across the cluster first: a ticket replayed on another node is refused there.
    // Before the local redeem, so a bus outage (retryable) leaves the ticket unused everywhere.
    if let Some(cluster) = &shard.app.cluster {
        match cluster.claim_ticket(&claims.jti).await {
            Ok(true) => {}
            Ok(false) => {
                let e = super::ApiError::from(crate::domain::error::DomainError::TicketReplayed);
                return Err((e.code(), e.to_string(), false));
            }
            Err(error) => {
                tracing::warn!(%error, "ticket not claimed on the cluster bus");
                let e = super::ApiError::ClusterUnavailable;
                return Err((e.code(), e.to_string(), true));
            }
        }
    }
    let redeem = RedeemTicket {
        claims: claims.clone(),
    };
    shard.app.authority.command(redeem).await.map_err(|e| {
        // `rtc.error {code, message, retryable}`: a full authority queue is `overloaded`,
        // retryable, like its HTTP answer.
        let e = super::ApiError::from(e);
        (e.code(), e.to_string(), e.retryable())
    })?;
    let channel = claims.channel_id.clone();
    let caps = shard
        .app
        .config
        .rtc
        .receive_caps
        .resolve(&claims.server_id, &claims.channel_id);
    shard.voice(VoiceOp::Join {
        claims,
        socket: me,
        joined_at: crate::authority::now_rfc3339(),
        seat: Seat {
            max_participants: shard.app.config.rtc.max_call_participants as usize,
            caps: Caps {
                audio: caps.max_audio_tracks as usize,
                video: caps.max_video_tracks as usize,
            },
            media_ips: media_ips.to_vec(),
        },
        request_id: request_id.map(str::to_owned),
    });
    Ok(channel)
}
