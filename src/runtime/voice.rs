//! The voice half of a shard: the voice rooms of the channels this shard owns
//! ([`crate::rtc::room::Rooms`]), their media ([`crate::sfu::Sfu`]), and the sending side of
//! the shard's UDP socket. Signaling sockets anywhere send a room's changes here as
//! [`VoiceOp`]s (over the mesh when the channel is another shard's); the UDP driver
//! (`media.rs`) hands in datagrams and runs the media timer; the frames that come out go back
//! to whichever shards hold the recipients' sockets, and the SFU's datagrams go out on the
//! socket at once. A kick, a member leaving its server and a revoked session end calls here
//! too. Like the hub, the rooms send no frames themselves: each change returns the
//! [`Outgoing`] messages it calls for and the shard driver sends them (the SFU's datagrams,
//! which never leave this shard, go out on the socket here). Nothing here is shared between
//! threads.

use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

use bytes::Bytes;

use super::mesh::{Outgoing, ShardMessage};
use super::stats::ShardStatsSnapshot;
use crate::domain::community::Notice;
use crate::realtime::{Delivery, SocketRef};
use crate::rtc::room::{Rooms, Seat};
use crate::rtc::ticket::Claims;
use crate::sfu::{Direction, Sfu};
use crate::sharding::shard_for;
use crate::wire::signaling::{error_frame, frame};

/// A voice-room change sent to the shard that owns the channel.
#[derive(Debug)]
pub enum VoiceOp {
    Join {
        claims: Claims,
        socket: SocketRef,
        joined_at: String,
        seat: Seat,
        /// The `rtc.join`'s `request_id`, echoed by a refusal.
        request_id: Option<String>,
    },
    /// `rtc.offer.publish` / `rtc.offer.subscribe`.
    Offer {
        channel_id: String,
        socket: SocketRef,
        direction: Direction,
        sdp: String,
        /// The offer's `request_id`, echoed by a refusal.
        request_id: Option<String>,
    },
    /// A trickled client candidate.
    Candidate {
        channel_id: String,
        socket: SocketRef,
        direction: Direction,
        candidate: String,
    },
    Leave {
        channel_id: String,
        socket: SocketRef,
    },
    /// The signaling socket dropped (silence, reset): the participant stays for the reconnect
    /// grace window.
    Detach {
        channel_id: String,
        socket: SocketRef,
    },
    MediaState {
        channel_id: String,
        socket: SocketRef,
        /// The client's payload, JSON.
        payload: String,
    },
}

impl VoiceOp {
    fn channel_id(&self) -> &str {
        match self {
            VoiceOp::Join { claims, .. } => &claims.channel_id,
            VoiceOp::Leave { channel_id, .. }
            | VoiceOp::Detach { channel_id, .. }
            | VoiceOp::MediaState { channel_id, .. }
            | VoiceOp::Offer { channel_id, .. }
            | VoiceOp::Candidate { channel_id, .. } => channel_id,
        }
    }
}

/// The voice rooms of the channels this shard owns, with their media.
#[derive(Default)]
pub struct Voice {
    rooms: RefCell<Rooms>,
    /// This shard's UDP media socket (sending side), once bound.
    media_out: RefCell<Option<UdpSocket>>,
    /// Datagrams the kernel refused (send buffer full).
    media_send_drops: Cell<u64>,
}

impl Voice {
    /// A voice-room change for the shard (of `count`) that owns its channel.
    pub fn to_owner(op: VoiceOp, count: usize) -> Outgoing {
        Outgoing::one(shard_for(op.channel_id(), count), ShardMessage::Voice(op))
    }

    /// Applies a voice-room change to a room this shard owns.
    pub fn apply(&self, op: VoiceOp) -> Outgoing {
        let mut refused = None;
        let deliveries = {
            let mut rooms = self.rooms.borrow_mut();
            match op {
                VoiceOp::Join {
                    claims,
                    socket,
                    joined_at,
                    seat,
                    request_id,
                } => match rooms.join(&claims, socket, &joined_at, seat) {
                    Ok(d) => d,
                    Err(e) => {
                        let frame = error_frame(
                            "rtc_join_denied",
                            &e.to_string(),
                            false,
                            request_id.as_deref(),
                        );
                        let mut out = Outgoing::deliveries(vec![Delivery { to: socket, frame }]);
                        out.close(vec![socket]);
                        return out;
                    }
                },
                VoiceOp::Leave { socket, .. } => rooms.leave(socket),
                VoiceOp::Detach { socket, .. } => {
                    rooms.detach(socket, Instant::now());
                    Vec::new()
                }
                VoiceOp::Offer {
                    socket,
                    direction,
                    sdp,
                    request_id,
                    ..
                } => match rooms.offer(
                    socket,
                    direction,
                    &sdp,
                    request_id.as_deref(),
                    Instant::now(),
                ) {
                    Ok(d) => d,
                    // A refused offer is fatal to the call: the error, then the close.
                    Err(refusal) => {
                        refused = Some(socket);
                        vec![refusal]
                    }
                },
                VoiceOp::Candidate {
                    socket,
                    direction,
                    candidate,
                    ..
                } => {
                    rooms.candidate(socket, direction, &candidate);
                    Vec::new()
                }
                VoiceOp::MediaState {
                    socket, payload, ..
                } => match crate::json::to_owned_value(&mut payload.into_bytes()) {
                    Ok(value) => rooms.media_state(socket, &value, Instant::now()),
                    Err(_) => Vec::new(),
                },
            }
        };
        self.flush_media();
        let mut out = Outgoing::deliveries(deliveries);
        out.close(refused.into_iter().collect());
        out
    }

    /// Gives this shard's rooms their media: the SFU and the socket it sends on.
    pub fn start_media(&self, sfu: Sfu, out: UdpSocket) {
        *self.rooms.borrow_mut() = Rooms::with_media(sfu);
        *self.media_out.borrow_mut() = Some(out);
    }

    /// A datagram arrived on this shard's UDP socket from `from`, sent to the local address
    /// `to` (when the kernel said which).
    pub fn on_datagram(
        &self,
        from: SocketAddr,
        to: Option<SocketAddr>,
        contents: &[u8],
    ) -> Outgoing {
        let deliveries = self
            .rooms
            .borrow_mut()
            .datagram(Instant::now(), from, to, contents);
        self.flush_media();
        Outgoing::deliveries(deliveries)
    }

    /// When the media next needs [`Voice::timeout`].
    pub fn next_timeout(&self) -> Option<Instant> {
        self.rooms.borrow().next_timeout()
    }

    /// Participants whose reconnect grace ran out leave (run by the media timer).
    pub fn expire(&self) -> Outgoing {
        let deliveries = self.rooms.borrow_mut().expire(Instant::now());
        self.flush_media();
        Outgoing::deliveries(deliveries)
    }

    pub fn timeout(&self) -> Outgoing {
        let deliveries = self.rooms.borrow_mut().timeout(Instant::now());
        self.flush_media();
        Outgoing::deliveries(deliveries)
    }

    /// Sends what the SFU produced. A full send buffer drops the datagram (UDP semantics;
    /// counted), it never blocks the shard.
    fn flush_media(&self) {
        let datagrams = self.rooms.borrow_mut().take_datagrams();
        if datagrams.is_empty() {
            return;
        }
        let out = self.media_out.borrow();
        let Some(socket) = out.as_ref() else {
            return;
        };
        let dropped = super::media::send_batch(socket, &datagrams);
        self.media_send_drops
            .set(self.media_send_drops.get() + dropped);
    }

    /// The voice and media counters of this shard (other fields left at zero; `relay_dropped`
    /// counts the media-state updates not relayed).
    pub fn snapshot(&self) -> ShardStatsSnapshot {
        let rooms = self.rooms.borrow();
        let (participants, connections, counters) = rooms.media_stats();
        ShardStatsSnapshot {
            voice_rooms: rooms.room_count() as u64,
            voice_participants: participants as u64,
            media_connections: connections as u64,
            media_forwarded: counters.forwarded,
            media_dropped_in: counters.dropped,
            media_dropped_out: self.media_send_drops.get(),
            media_packets_in: counters.received,
            media_packets_out: counters.sent,
            media_quality: counters.quality,
            relay_dropped: rooms.dropped_updates(),
            ..Default::default()
        }
    }

    /// A notice of the authority that ends calls in rooms this shard owns.
    pub fn on_notice(&self, notice: &Notice) -> Outgoing {
        match notice {
            Notice::MemberLeft {
                server_id,
                user_uid,
            } => self.member_left(server_id, user_uid),
            Notice::VoiceKick {
                server_id,
                user_uid,
            } => self.kick(server_id, user_uid),
            Notice::SessionRevoked {
                user_uid,
                device_id,
                ..
            } => self.session_revoked(user_uid, device_id),
            // Being in a call is not presence: the call's roster is what the call needs.
            Notice::PresenceVisibility { .. } => Outgoing::none(),
            // Who may join a private voice channel is decided at the ticket; who is in stays.
            Notice::ChannelRestricted { .. } => Outgoing::none(),
            Notice::VoiceMute {
                server_id,
                user_uid,
            } => {
                let deliveries = self.rooms.borrow_mut().mute(server_id, user_uid);
                Outgoing::deliveries(deliveries)
            }
        }
    }

    /// `rtc.kicked` then close, for the uid's participants in rooms this shard owns; they leave
    /// at once (no reconnect grace).
    fn kick(&self, server_id: &str, user_uid: &str) -> Outgoing {
        let evicted = self.rooms.borrow_mut().evict(server_id, user_uid);
        let kicked = frame("rtc.kicked", &serde_json_empty());
        self.end_voice(evicted, Some(kicked))
    }

    /// `user_uid` left `server_id`: its calls in the server end (signaling sockets are not
    /// indexed by server: the rooms this shard owns know their participants).
    fn member_left(&self, server_id: &str, user_uid: &str) -> Outgoing {
        let evicted = self.rooms.borrow_mut().evict(server_id, user_uid);
        self.end_voice(evicted, None)
    }

    /// A session was revoked: the calls of its device end.
    fn session_revoked(&self, user_uid: &str, device_id: &str) -> Outgoing {
        let evicted = self.rooms.borrow_mut().evict_device(user_uid, device_id);
        self.end_voice(evicted, None)
    }

    /// What the eviction of participants produced for the others, `notice` (if any) to the
    /// evicted ones' signaling sockets, then the close of those sockets wherever they are held.
    fn end_voice(
        &self,
        (targets, others): (Vec<SocketRef>, Vec<Delivery>),
        notice: Option<Bytes>,
    ) -> Outgoing {
        let notices = notice.into_iter().flat_map(|frame| {
            targets.iter().map(move |to| Delivery {
                to: *to,
                frame: frame.clone(),
            })
        });
        let mut out = Outgoing::deliveries(notices.chain(others).collect());
        if !targets.is_empty() {
            out.close(targets);
        }
        self.flush_media();
        out
    }
}

/// `{}`.
fn serde_json_empty() -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leave(channel_id: &str) -> VoiceOp {
        VoiceOp::Leave {
            channel_id: channel_id.to_owned(),
            socket: SocketRef {
                shard: 0,
                socket: 1,
            },
        }
    }

    #[test]
    fn a_voice_change_goes_to_the_shard_that_owns_its_channel() {
        for channel in ["ch_1", "ch_2", "ch_3", "ch_4", "ch_5"] {
            let out: Vec<_> = Voice::to_owner(leave(channel), 3).into_iter().collect();
            let [(owner, ShardMessage::Voice(VoiceOp::Leave { channel_id, .. }))] = &out[..] else {
                panic!("one voice op");
            };
            assert_eq!(
                (*owner, channel_id.as_str()),
                (shard_for(channel, 3), channel)
            );
        }
    }

    #[test]
    fn changes_to_rooms_nobody_is_in_send_nothing() {
        let voice = Voice::default();
        assert!(voice.apply(leave("ch_1")).is_empty());
        let notice = Notice::MemberLeft {
            server_id: "srv".to_owned(),
            user_uid: "u".to_owned(),
        };
        assert!(voice.on_notice(&notice).is_empty());
        assert!(voice.expire().is_empty());
    }
}
