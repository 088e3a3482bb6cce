//! The voice half of a shard: the voice rooms of the channels this shard owns
//! ([`crate::rtc::room::Rooms`]), their media ([`crate::sfu::Sfu`]), and the sending side of
//! the shard's UDP socket. Signaling sockets anywhere send a room's changes here as
//! [`VoiceOp`]s (over the mesh when the channel is another shard's); the UDP driver
//! (`media.rs`) hands in datagrams and runs the media timer; the frames that come out go back
//! to whichever shards hold the recipients' sockets, and the SFU's datagrams go out on the
//! socket at once. A kick, a member leaving its server and a revoked session end calls here
//! too. Nothing here is shared between threads.

use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, UdpSocket};
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use super::hub::{close_sockets, deliver, to_shard};
use super::mesh::{ShardMessage, ShardStatsSnapshot};
use super::shard::Shard;
use crate::realtime::{Delivery, SocketRef};
use crate::rtc::room::{Rooms, Seat, error_frame, frame};
use crate::rtc::ticket::Claims;
use crate::sfu::{Direction, Sfu};
use crate::sharding::shard_for;

/// A voice-room change sent to the shard that owns the channel.
#[derive(Debug)]
pub enum VoiceOp {
    Join {
        claims: Claims,
        socket: SocketRef,
        joined_at: String,
        seat: Seat,
    },
    /// `rtc.offer.publish` / `rtc.offer.subscribe`.
    Offer {
        channel_id: String,
        socket: SocketRef,
        direction: Direction,
        sdp: String,
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
    /// Sends a voice-room change to the channel's owner shard.
    pub fn send(&self, shard: &Rc<Shard>, op: VoiceOp) {
        to_shard(
            shard,
            shard_for(op.channel_id(), shard.count),
            ShardMessage::Voice(op),
        );
    }

    /// Applies a voice-room change to a room this shard owns.
    pub fn apply(&self, shard: &Rc<Shard>, op: VoiceOp) {
        let deliveries = {
            let mut rooms = self.rooms.borrow_mut();
            match op {
                VoiceOp::Join {
                    claims,
                    socket,
                    joined_at,
                    seat,
                } => match rooms.join(&claims, socket, &joined_at, seat) {
                    Ok(d) => d,
                    Err(e) => {
                        deliver(
                            shard,
                            vec![Delivery {
                                to: socket,
                                frame: error_frame("rtc_join_denied", &e.to_string(), false),
                            }],
                        );
                        close_sockets(shard, vec![socket]);
                        return;
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
                    ..
                } => rooms.offer(socket, direction, &sdp, Instant::now()),
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
        deliver(shard, deliveries);
        self.flush_media();
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
        shard: &Rc<Shard>,
        from: SocketAddr,
        to: Option<SocketAddr>,
        contents: &[u8],
    ) {
        let deliveries = self
            .rooms
            .borrow_mut()
            .datagram(Instant::now(), from, to, contents);
        if !deliveries.is_empty() {
            deliver(shard, deliveries);
        }
        self.flush_media();
    }

    /// When the media next needs [`Voice::timeout`].
    pub fn next_timeout(&self) -> Option<Instant> {
        self.rooms.borrow().next_timeout()
    }

    /// Participants whose reconnect grace ran out leave (run by the media timer).
    pub fn expire(&self, shard: &Rc<Shard>) {
        let deliveries = self.rooms.borrow_mut().expire(Instant::now());
        if !deliveries.is_empty() {
            deliver(shard, deliveries);
        }
        self.flush_media();
    }

    pub fn timeout(&self, shard: &Rc<Shard>) {
        let deliveries = self.rooms.borrow_mut().timeout(Instant::now());
        if !deliveries.is_empty() {
            deliver(shard, deliveries);
        }
        self.flush_media();
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
            voice_participants: participants as u64,
            media_connections: connections as u64,
            media_forwarded: counters.forwarded,
            media_dropped_in: counters.dropped,
            media_dropped_out: self.media_send_drops.get(),
            relay_dropped: rooms.dropped_updates(),
            ..Default::default()
        }
    }

    /// `rtc.kicked` then close, for the uid's participants in rooms this shard owns; they leave
    /// at once (no reconnect grace).
    pub fn kick(&self, shard: &Rc<Shard>, server_id: &str, user_uid: &str) {
        let evicted = self.rooms.borrow_mut().evict(server_id, user_uid);
        let kicked = frame("rtc.kicked", &serde_json_empty());
        self.end_voice(shard, evicted, Some(kicked));
    }

    /// `user_uid` left `server_id`: its calls in the server end (signaling sockets are not
    /// indexed by server: the rooms this shard owns know their participants).
    pub fn member_left(&self, shard: &Rc<Shard>, server_id: &str, user_uid: &str) {
        let evicted = self.rooms.borrow_mut().evict(server_id, user_uid);
        self.end_voice(shard, evicted, None);
    }

    /// A session was revoked: the calls of its device end.
    pub fn session_revoked(&self, shard: &Rc<Shard>, user_uid: &str, device_id: &str) {
        let evicted = self.rooms.borrow_mut().evict_device(user_uid, device_id);
        self.end_voice(shard, evicted, None);
    }

    /// Sends the others what the eviction of participants produced, `notice` (if any) to the
    /// evicted ones' signaling sockets, then closes those sockets wherever they are held.
    fn end_voice(
        &self,
        shard: &Rc<Shard>,
        (targets, others): (Vec<SocketRef>, Vec<Delivery>),
        notice: Option<Bytes>,
    ) {
        let notices = notice.into_iter().flat_map(|frame| {
            targets.iter().map(move |to| Delivery {
                to: *to,
                frame: frame.clone(),
            })
        });
        deliver(shard, notices.chain(others).collect());
        if !targets.is_empty() {
            close_sockets(shard, targets);
        }
        self.flush_media();
    }
}

/// `{}`.
fn serde_json_empty() -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::new()
}
