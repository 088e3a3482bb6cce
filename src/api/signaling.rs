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
use crate::rtc::room::{Seat, error_frame};
use crate::rtc::ticket::{self, TicketError};
use crate::runtime::voice::VoiceOp;
use crate::runtime::websocket::{CloseReason, RealtimeSocket, Session, SocketHandle};
use crate::sfu::{Caps, Direction};

/// A client frame `{type, request_id, channel_id, payload}` (public for the fuzz target).
#[doc(hidden)]
pub struct Envelope {
    pub kind: String,
    pub channel_id: Option<String>,
    pub payload: Option<simd_json::OwnedValue>,
}

impl Envelope {
    /// A string field of the payload.
    pub fn text(&self, field: &str) -> Option<String> {
        use simd_json::prelude::*;
        self.payload
            .as_ref()?
            .get(field)?
            .as_str()
            .map(str::to_owned)
    }

    /// `None` for anything that is not a JSON object with a string `type` (too deep included).
    pub fn parse(text: String) -> Option<Envelope> {
        use simd_json::prelude::*;
        let mut bytes = text.into_bytes();
        let value = crate::json::to_owned_value(&mut bytes).ok()?;
        Some(Envelope {
            kind: value.get("type")?.as_str()?.to_owned(),
            channel_id: value
                .get("channel_id")
                .and_then(|c| c.as_str())
                .map(str::to_owned),
            payload: value.get("payload").cloned(),
        })
    }
}

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

/// Sends a fatal `rtc.error` and closes.
fn fail(handle: &SocketHandle, code: &str, message: &str, retryable: bool) {
    let _ = handle.push(error_frame(code, message, retryable));
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
        let Some(envelope) = Envelope::parse(text) else {
            if joined.is_none() {
                fail(
                    &handle,
                    "rtc_join_denied",
                    "the first frame must be rtc.join",
                    false,
                );
            }
            continue;
        };
        match (envelope.kind.as_str(), &joined) {
            ("rtc.join", None) => match join(&shard, &envelope, me, &media_ips).await {
                Ok(channel) => joined = Some(channel),
                Err((code, message, retryable)) => fail(&handle, code, &message, retryable),
            },
            (_, None) => fail(
                &handle,
                "rtc_join_denied",
                "join first: rtc.join {ticket}",
                false,
            ),
            ("rtc.leave", Some(channel)) => {
                shard.voice(VoiceOp::Leave {
                    channel_id: channel.clone(),
                    socket: me,
                });
                joined = None;
            }
            ("rtc.media.state", Some(channel)) => {
                if let Some(payload) = envelope.payload {
                    shard.voice(VoiceOp::MediaState {
                        channel_id: channel.clone(),
                        socket: me,
                        payload: simd_json::to_string(&payload).unwrap_or_default(),
                    });
                }
            }
            ("rtc.offer.publish" | "rtc.offer.subscribe", Some(channel)) => {
                let direction = if envelope.kind == "rtc.offer.publish" {
                    Direction::Publish
                } else {
                    Direction::Subscribe
                };
                match envelope.text("sdp") {
                    Some(sdp) => shard.voice(VoiceOp::Offer {
                        channel_id: channel.clone(),
                        socket: me,
                        direction,
                        sdp,
                    }),
                    None => fail(
                        &handle,
                        "rtc_negotiation_failed",
                        "an offer needs {sdp}",
                        false,
                    ),
                }
            }
            ("rtc.ice.candidate", Some(channel)) => {
                // A candidate without a known direction cannot be placed; it is dropped.
                let direction = envelope
                    .text("direction")
                    .as_deref()
                    .and_then(Direction::parse);
                if let (Some(direction), Some(candidate)) = (direction, envelope.text("candidate"))
                {
                    shard.voice(VoiceOp::Candidate {
                        channel_id: channel.clone(),
                        socket: me,
                        direction,
                        candidate,
                    });
                }
            }
            (other, Some(_)) => {
                tracing::debug!(kind = other, "signaling frame of an unknown type ignored");
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

/// Verifies and consumes the ticket of an `rtc.join`, then asks the owner shard to seat the
/// socket. The value is the channel joined.
async fn join(
    shard: &Rc<Shard>,
    envelope: &Envelope,
    me: SocketRef,
    media_ips: &[IpAddr],
) -> Result<String, JoinRefusal> {
    use simd_json::prelude::*;
    let ticket_text = envelope
        .payload
        .as_ref()
        .and_then(|p| p.get("ticket"))
        .and_then(|t| t.as_str())
        .ok_or((
            "rtc_join_denied",
            "rtc.join needs {ticket}".to_owned(),
            false,
        ))?;
    let now = crate::authority::now_millis() / 1000;
    let claims = ticket::verify(&shard.app.ticket_secret, ticket_text, now)
        .map_err(|e| (e.code(), e.to_string(), e == TicketError::Expired))?;
    if claims.exp - ticket::TICKET_TTL_SECS < shard.app.started_at_secs {
        return Err((
            "rtc_ticket_expired",
            "the ticket was issued before this server started; ask for a new one".to_owned(),
            true,
        ));
    }
    if envelope
        .channel_id
        .as_deref()
        .is_some_and(|c| !c.is_empty() && c != claims.channel_id)
    {
        return Err((
            "rtc_join_denied",
            "the ticket is for another channel".to_owned(),
            false,
        ));
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
    });
    Ok(channel)
}
