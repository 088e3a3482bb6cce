//! Voice rooms (sans-IO): who is in which voice channel, and the signaling frames that follow
//! from joins, leaves, offers, media-state changes and kicks (wire contract A.8). A room lives
//! on the shard that owns its channel (`sharding::shard_for`); its methods return
//! [`Delivery`]s for the caller to route, like presence does. The media of the shard's rooms is
//! one [`Sfu`]: offers become answers, and what the SFU reports (tracks a participant starts or
//! stops receiving, speaking) becomes `rtc.track.published` / `rtc.track.unpublished` /
//! `rtc.subscribe.refresh` / `rtc.participant.speaking` frames. A participant whose signaling
//! socket drops stays for [`RECONNECT_GRACE`] and is taken over when the same user and device
//! join again.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;

use super::ticket::{Claims, Permissions};
use crate::realtime::rate::TokenBucket;
use crate::realtime::{Delivery, SocketRef};
use crate::sfu::{self, Caps, Datagram, Direction, Permit, Sfu};

/// One participant as others see it (`rtc.joined` / `rtc.participant.joined`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParticipantView {
    pub participant_id: String,
    pub user_uid: String,
    pub device_id: String,
    pub joined_at: String,
}

#[derive(Debug, Clone)]
struct Participant {
    view: ParticipantView,
    server_id: String,
    socket: SocketRef,
    permissions: Permissions,
    /// Set while its signaling socket is gone: it stays in the call until then, unless the
    /// same user and device join again (see [`RECONNECT_GRACE`]).
    detached_until: Option<Instant>,
    /// `rtc.media.state` updates it may still have relayed (kept across a reattach).
    media_state_budget: TokenBucket,
}

/// How long a participant whose signaling socket dropped (silence, reset) stays in the call,
/// so that a client on a flaky network can join again as the same participant. A socket the
/// client closes, `rtc.leave` and a kick leave at once.
pub const RECONNECT_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

/// `rtc.media.state` updates one signaling socket may have relayed per second (on average; as
/// many at once). A client sends one per track it starts or stops and per mute or deafen.
pub const MEDIA_STATE_UPDATES_PER_SECOND: u32 = 20;
/// Longest `stream_id` / `track_id` relayed in `rtc.media.state`. They name a track in the
/// sender's SDP (`a=msid`, at most 64 characters by RFC 8830); the slack is for clients that
/// are lax about it.
pub const MAX_MEDIA_STATE_ID_LEN: usize = 128;

/// The fields of a client's `rtc.media.state` that are relayed, checked: ids of at most
/// [`MAX_MEDIA_STATE_ID_LEN`] visible ASCII characters, a known `stream_kind`, `action`
/// `start` or `stop`, booleans that are booleans. A field may be absent (or null); one that is
/// there with another type or value makes the whole update unreadable. Other fields are not
/// relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MediaState<'a> {
    stream_id: Option<&'a str>,
    track_id: Option<&'a str>,
    stream_kind: Option<sfu::StreamKind>,
    action: Option<&'static str>,
    mic_muted: Option<bool>,
    deafened: Option<bool>,
}

impl<'a> MediaState<'a> {
    fn read(payload: &'a simd_json::OwnedValue) -> Option<MediaState<'a>> {
        use simd_json::prelude::*;
        let fields = payload.as_object()?;
        // Absent and null are "not said"; anything else must read.
        let field = |name: &str| fields.get(name).filter(|v| !v.is_null());
        let id = |name: &str| -> Option<Option<&'a str>> {
            match fields.get(name).filter(|v| !v.is_null()) {
                None => Some(None),
                Some(v) => {
                    let text = v.as_str()?;
                    let ok = !text.is_empty()
                        && text.len() <= MAX_MEDIA_STATE_ID_LEN
                        && text.bytes().all(|b| b.is_ascii_graphic());
                    ok.then_some(Some(text))
                }
            }
        };
        let flag = |name: &str| -> Option<Option<bool>> {
            match field(name) {
                None => Some(None),
                Some(v) => v.as_bool().map(Some),
            }
        };
        let stream_kind = match field("stream_kind") {
            None => None,
            Some(v) => Some(sfu::StreamKind::parse(v.as_str()?)?),
        };
        let action = match field("action") {
            None => None,
            Some(v) => match v.as_str()? {
                "start" => Some("start"),
                "stop" => Some("stop"),
                _ => return None,
            },
        };
        let state = MediaState {
            stream_id: id("stream_id")?,
            track_id: id("track_id")?,
            stream_kind,
            action,
            mic_muted: flag("mic_muted")?,
            deafened: flag("deafened")?,
        };
        // An update that says nothing is not worth relaying.
        (state
            != MediaState {
                stream_id: None,
                track_id: None,
                stream_kind: None,
                action: None,
                mic_muted: None,
                deafened: None,
            })
        .then_some(state)
    }

    /// Whether a participant with `p` may announce this `start`: the permission of its kind,
    /// or, when it names none, any permission to send.
    fn may_start(&self, p: Permissions) -> bool {
        match self.stream_kind {
            Some(sfu::StreamKind::Microphone) => p.speak,
            Some(sfu::StreamKind::Camera) => p.video,
            Some(sfu::StreamKind::Screen) => p.screenshare,
            None => p.speak || p.video || p.screenshare,
        }
    }
}

/// `rtc.media.state` as the others get it.
#[derive(Serialize)]
struct RelayedMediaState<'a> {
    participant_id: &'a str,
    user_uid: &'a str,
    device_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    track_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mic_muted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deafened: Option<bool>,
}

#[derive(Debug, Default)]
struct Room {
    /// Numbers the room for the SFU.
    number: sfu::RoomId,
    /// By participant id, in join order (ids increase).
    participants: BTreeMap<u64, Participant>,
}

/// What a joiner brings besides its ticket.
#[derive(Debug, Clone)]
pub struct Seat {
    pub max_participants: usize,
    pub caps: Caps,
    /// The IPs of its media candidates (see [`super::media_ips`]).
    pub media_ips: Vec<IpAddr>,
}

/// Why a join was refused (sent as `rtc.error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("the call is full")]
    Full,
    #[error("this socket already joined a call")]
    AlreadyJoined,
}

/// The voice rooms of one shard.
#[derive(Default)]
pub struct Rooms {
    rooms: HashMap<String, Room>,
    /// Where each joined socket is: (channel, participant number).
    by_socket: HashMap<SocketRef, (String, u64)>,
    /// The channel of each participant number.
    by_number: HashMap<u64, String>,
    next_participant: u64,
    next_room: sfu::RoomId,
    /// The media of every room here (absent when the shard has no UDP socket, as in tests of
    /// signaling alone).
    media: Option<Sfu>,
    /// `rtc.media.state` updates not relayed (over the rate, or unreadable).
    dropped_updates: u64,
}

/// `{"type": kind, "payload": payload}`: the server → client signaling envelope.
pub fn frame<T: Serialize>(kind: &str, payload: &T) -> Bytes {
    #[derive(Serialize)]
    struct Envelope<'a, T> {
        #[serde(rename = "type")]
        kind: &'a str,
        payload: &'a T,
    }
    Bytes::from(simd_json::to_vec(&Envelope { kind, payload }).expect("frames serialize"))
}

/// An `rtc.error {code, message, retryable}` frame.
pub fn error_frame(code: &str, message: &str, retryable: bool) -> Bytes {
    #[derive(Serialize)]
    struct Error<'a> {
        code: &'a str,
        message: &'a str,
        retryable: bool,
    }
    frame(
        "rtc.error",
        &Error {
            code,
            message,
            retryable,
        },
    )
}

#[derive(Serialize)]
struct Joined<'a> {
    participant_id: &'a str,
    participants: Vec<&'a ParticipantView>,
}

#[derive(Serialize)]
struct One<'a> {
    participant: &'a ParticipantView,
}

#[derive(Serialize)]
struct Answer<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    sdp: &'a str,
    direction: &'a str,
}

#[derive(Serialize)]
struct IceCandidate<'a> {
    candidate: &'a str,
    sdp_mid: &'a str,
    sdp_mline_index: u32,
    direction: &'a str,
}

/// `rtc.track.published` / `rtc.track.unpublished`.
#[derive(Serialize)]
struct TrackView<'a> {
    participant_id: &'a str,
    user_uid: &'a str,
    device_id: &'a str,
    track_id: &'a str,
    stream_id: &'a str,
    media_kind: &'a str,
    stream_kind: &'a str,
}

#[derive(Serialize)]
struct Refresh<'a> {
    reason: &'a str,
}

#[derive(Serialize)]
struct Speaking<'a> {
    participant_id: &'a str,
    speaking: bool,
}

impl Rooms {
    /// `socket` joins the room of `claims.channel_id` (ticket already verified and consumed).
    /// It gets `rtc.joined` with everyone (itself included); the others get
    /// `rtc.participant.joined`.
    pub fn join(
        &mut self,
        claims: &Claims,
        socket: SocketRef,
        joined_at: &str,
        seat: Seat,
    ) -> Result<Vec<Delivery>, JoinError> {
        if self.by_socket.contains_key(&socket) {
            return Err(JoinError::AlreadyJoined);
        }
        if !self.rooms.contains_key(&claims.channel_id) {
            self.next_room += 1;
            self.rooms.insert(
                claims.channel_id.clone(),
                Room {
                    number: self.next_room,
                    participants: BTreeMap::new(),
                },
            );
        }
        let room = self.rooms.get_mut(&claims.channel_id).expect("just made");
        let returning = room
            .participants
            .iter()
            .find(|(_, p)| {
                p.detached_until.is_some()
                    && p.view.user_uid == claims.user_uid
                    && p.view.device_id == claims.device_id
            })
            .map(|(n, _)| *n);
        if let Some(number) = returning {
            return Ok(self.reattach(claims, number, socket, seat));
        }
        if room.participants.len() >= seat.max_participants {
            if room.participants.is_empty() {
                self.rooms.remove(&claims.channel_id);
            }
            return Err(JoinError::Full);
        }
        self.next_participant += 1;
        let number = self.next_participant;
        let view = ParticipantView {
            participant_id: format!("p{number}"),
            user_uid: claims.user_uid.clone(),
            device_id: claims.device_id.clone(),
            joined_at: joined_at.to_owned(),
        };
        let mut out = Vec::with_capacity(room.participants.len() + 1);
        let announce = frame("rtc.participant.joined", &One { participant: &view });
        for other in room.participants.values() {
            out.push(Delivery {
                to: other.socket,
                frame: announce.clone(),
            });
        }
        room.participants.insert(
            number,
            Participant {
                view,
                server_id: claims.server_id.clone(),
                socket,
                permissions: claims.permissions,
                detached_until: None,
                media_state_budget: TokenBucket::new(
                    MEDIA_STATE_UPDATES_PER_SECOND,
                    MEDIA_STATE_UPDATES_PER_SECOND,
                ),
            },
        );
        let me = &room.participants[&number].view;
        out.insert(
            0,
            Delivery {
                to: socket,
                frame: frame(
                    "rtc.joined",
                    &Joined {
                        participant_id: &me.participant_id,
                        participants: room.participants.values().map(|p| &p.view).collect(),
                    },
                ),
            },
        );
        self.by_socket
            .insert(socket, (claims.channel_id.clone(), number));
        self.by_number.insert(number, claims.channel_id.clone());
        let room_number = room.number;
        self.add_media(room_number, number, claims.permissions, seat);
        out.extend(self.media_deliveries());
        Ok(out)
    }

    fn add_media(&mut self, room: sfu::RoomId, number: u64, p: Permissions, seat: Seat) {
        if let Some(media) = self.media.as_mut() {
            media.add_participant(
                room,
                number,
                seat.caps,
                Permit {
                    audio: p.speak,
                    camera: p.video,
                    screen: p.screenshare,
                },
                &seat.media_ips,
            );
        }
    }

    /// The same user and device join again within the grace window: the new socket takes the
    /// participant over (same `participant_id`; the others see no leave and no join). Its media
    /// starts afresh, as the client opens new peer connections: its tracks are withdrawn until
    /// it publishes again.
    fn reattach(
        &mut self,
        claims: &Claims,
        number: u64,
        socket: SocketRef,
        seat: Seat,
    ) -> Vec<Delivery> {
        let room = self
            .rooms
            .get_mut(&claims.channel_id)
            .expect("checked by the caller");
        let me = room
            .participants
            .get_mut(&number)
            .expect("found by the caller");
        me.socket = socket;
        me.detached_until = None;
        me.permissions = claims.permissions;
        let room_number = room.number;
        let joined = frame(
            "rtc.joined",
            &Joined {
                participant_id: &room.participants[&number].view.participant_id,
                participants: room.participants.values().map(|p| &p.view).collect(),
            },
        );
        self.by_socket
            .insert(socket, (claims.channel_id.clone(), number));
        if let Some(media) = self.media.as_mut() {
            media.remove_participant(number);
        }
        self.add_media(room_number, number, claims.permissions, seat);
        let mut out = vec![Delivery {
            to: socket,
            frame: joined,
        }];
        out.extend(self.media_deliveries());
        out
    }

    /// The signaling socket dropped without a goodbye: the participant stays for
    /// [`RECONNECT_GRACE`] (its media keeps flowing if its connections live).
    pub fn detach(&mut self, socket: SocketRef, now: Instant) {
        let Some((channel, number)) = self.by_socket.remove(&socket) else {
            return;
        };
        if let Some(p) = self
            .rooms
            .get_mut(&channel)
            .and_then(|r| r.participants.get_mut(&number))
        {
            p.detached_until = Some(now + RECONNECT_GRACE);
        }
    }

    /// Participants whose grace ran out leave.
    pub fn expire(&mut self, now: Instant) -> Vec<Delivery> {
        let gone: Vec<(String, u64)> = self
            .rooms
            .iter()
            .flat_map(|(channel, room)| {
                room.participants
                    .iter()
                    .filter(|(_, p)| p.detached_until.is_some_and(|t| t <= now))
                    .map(|(n, _)| (channel.clone(), *n))
            })
            .collect();
        let mut out = Vec::new();
        for (channel, number) in gone {
            out.extend(self.remove(&channel, number));
        }
        out
    }

    /// Removes `user_uid`'s participants in rooms of `server_id` (a kick): their live sockets
    /// come back (to be sent `rtc.kicked` and closed), with the frames for the others.
    pub fn evict(&mut self, server_id: &str, user_uid: &str) -> (Vec<SocketRef>, Vec<Delivery>) {
        self.evict_where(|p| p.server_id == server_id && p.view.user_uid == user_uid)
    }

    /// Like [`Rooms::evict`], for the participants of one device of `user_uid` in any server
    /// (its session was revoked).
    pub fn evict_device(
        &mut self,
        user_uid: &str,
        device_id: &str,
    ) -> (Vec<SocketRef>, Vec<Delivery>) {
        self.evict_where(|p| p.view.user_uid == user_uid && p.view.device_id == device_id)
    }

    fn evict_where(
        &mut self,
        evicted: impl Fn(&Participant) -> bool,
    ) -> (Vec<SocketRef>, Vec<Delivery>) {
        let targets: Vec<(String, u64, Option<SocketRef>)> = self
            .rooms
            .iter()
            .flat_map(|(channel, room)| {
                room.participants
                    .iter()
                    .filter(|(_, p)| evicted(p))
                    .map(|(n, p)| {
                        (
                            channel.clone(),
                            *n,
                            p.detached_until.is_none().then_some(p.socket),
                        )
                    })
            })
            .collect();
        let mut sockets = Vec::new();
        let mut out = Vec::new();
        for (channel, number, socket) in targets {
            sockets.extend(socket);
            out.extend(self.remove(&channel, number));
        }
        (sockets, out)
    }

    /// `rtc.leave` or a closed socket: the others get `rtc.participant.left` and
    /// `rtc.track.unpublished` for its tracks; an empty room is removed.
    pub fn leave(&mut self, socket: SocketRef) -> Vec<Delivery> {
        let Some((channel, number)) = self.by_socket.get(&socket).cloned() else {
            return Vec::new();
        };
        self.remove(&channel, number)
    }

    /// Takes participant `number` out of the room of `channel`.
    fn remove(&mut self, channel: &str, number: u64) -> Vec<Delivery> {
        let Some(socket) = self
            .rooms
            .get(channel)
            .and_then(|r| r.participants.get(&number))
            .map(|p| p.socket)
        else {
            return Vec::new();
        };
        // Its tracks are withdrawn while it is still known (the frames name it).
        let mut withdrawn = Vec::new();
        if let Some(media) = self.media.as_mut() {
            media.remove_participant(number);
            withdrawn = self.media_deliveries();
        }
        if self
            .by_socket
            .get(&socket)
            .is_some_and(|(_, n)| *n == number)
        {
            self.by_socket.remove(&socket);
        }
        self.by_number.remove(&number);
        let room = self.rooms.get_mut(channel).expect("checked above");
        let gone = room.participants.remove(&number).expect("checked above");
        let left = frame(
            "rtc.participant.left",
            &One {
                participant: &gone.view,
            },
        );
        let mut out: Vec<Delivery> = room
            .participants
            .values()
            .filter(|p| p.detached_until.is_none())
            .map(|p| Delivery {
                to: p.socket,
                frame: left.clone(),
            })
            .collect();
        if room.participants.is_empty() {
            self.rooms.remove(channel);
        }
        out.extend(withdrawn.into_iter().filter(|d| d.to != socket));
        out
    }

    /// `rtc.media.state` from `socket`, relayed to the others. Only the fields of the wire
    /// contract are relayed, each checked ([`MediaState::read`]); the identity fields
    /// (`participant_id`, `user_uid`, `device_id`) are the server's, whatever the client wrote.
    /// A participant may announce a `start` only for a kind it may send (a listen-only one
    /// only reports stops and mute/deafen changes). Past [`MEDIA_STATE_UPDATES_PER_SECOND`]
    /// per socket, and for a payload that does not read, nothing is relayed; both are counted
    /// ([`Rooms::dropped_updates`]) and answered with nothing: an `rtc.error` would end the
    /// client's call.
    pub fn media_state(
        &mut self,
        socket: SocketRef,
        payload: &simd_json::OwnedValue,
        now: Instant,
    ) -> Vec<Delivery> {
        let Some((channel, number)) = self.by_socket.get(&socket) else {
            return Vec::new();
        };
        let Some(room) = self.rooms.get_mut(channel) else {
            return Vec::new();
        };
        let Some(me) = room.participants.get_mut(number) else {
            return Vec::new();
        };
        let Some(state) = MediaState::read(payload) else {
            self.dropped_updates += 1;
            return Vec::new();
        };
        if state.action == Some("start") && !state.may_start(me.permissions) {
            return Vec::new();
        }
        if !me.media_state_budget.try_take(now) {
            self.dropped_updates += 1;
            return Vec::new();
        }
        // The stream kind the client gives a track decides how the SFU announces it.
        if let (Some(media), Some(track), Some(kind)) =
            (self.media.as_mut(), state.track_id, state.stream_kind)
        {
            media.hint_stream_kind(*number, track, kind);
        }
        let me = &room.participants[number];
        let out = frame(
            "rtc.media.state",
            &RelayedMediaState {
                participant_id: &me.view.participant_id,
                user_uid: &me.view.user_uid,
                device_id: &me.view.device_id,
                stream_id: state.stream_id,
                track_id: state.track_id,
                stream_kind: state.stream_kind.map(sfu::StreamKind::as_str),
                action: state.action,
                mic_muted: state.mic_muted,
                deafened: state.deafened,
            },
        );
        room.participants
            .iter()
            .filter(|(n, _)| *n != number)
            .map(|(_, p)| Delivery {
                to: p.socket,
                frame: out.clone(),
            })
            .collect()
    }

    /// `rtc.media.state` updates dropped so far (over a socket's rate, or unreadable).
    pub fn dropped_updates(&self) -> u64 {
        self.dropped_updates
    }

    /// Rooms whose media goes through `media` (the shard's SFU).
    pub fn with_media(media: Sfu) -> Rooms {
        Rooms {
            media: Some(media),
            ..Rooms::default()
        }
    }

    /// `rtc.offer.publish` / `rtc.offer.subscribe` from `socket`: the answer, then the server's
    /// ICE candidates for that connection (tagged with `direction`), then whatever the
    /// negotiation changed for the others. A refused offer is one `rtc.error`.
    pub fn offer(
        &mut self,
        socket: SocketRef,
        direction: Direction,
        sdp: &str,
        now: Instant,
    ) -> Vec<Delivery> {
        let Some(number) = self.by_socket.get(&socket).map(|(_, n)| *n) else {
            return vec![Delivery {
                to: socket,
                frame: error_frame("rtc_join_denied", "join first: rtc.join {ticket}", false),
            }];
        };
        let Some(media) = self.media.as_mut() else {
            return vec![Delivery {
                to: socket,
                frame: error_frame(
                    "rtc_negotiation_failed",
                    "media is not available on this server",
                    true,
                ),
            }];
        };
        let answer = match media.accept_offer(number, direction, sdp, now) {
            Ok(answer) => answer,
            Err(e) => {
                return vec![Delivery {
                    to: socket,
                    frame: error_frame(e.code(), &e.to_string(), false),
                }];
            }
        };
        let kind = direction.as_str();
        let mut out = vec![Delivery {
            to: socket,
            frame: frame(
                &format!("rtc.answer.{kind}"),
                &Answer {
                    kind: "answer",
                    sdp: &answer,
                    direction: kind,
                },
            ),
        }];
        let sdp_mid = crate::sfu::first_mid(&answer).unwrap_or("0");
        for candidate in media.local_candidates(number) {
            out.push(Delivery {
                to: socket,
                frame: frame(
                    "rtc.ice.candidate",
                    &IceCandidate {
                        candidate: &candidate,
                        sdp_mid,
                        sdp_mline_index: 0,
                        direction: kind,
                    },
                ),
            });
        }
        out.extend(self.media_deliveries());
        out
    }

    /// A trickled client candidate (`rtc.ice.candidate {candidate, direction}`). Candidates
    /// that do not parse are ignored: a bad one must not end the call.
    pub fn candidate(&mut self, socket: SocketRef, direction: Direction, candidate: &str) {
        if let (Some((_, number)), Some(media)) = (self.by_socket.get(&socket), self.media.as_mut())
        {
            media.add_remote_candidate(*number, direction, candidate);
        }
    }

    /// A datagram for the shard's SFU, from `from` to the local address `to` (when the kernel
    /// said which).
    pub fn datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: Option<SocketAddr>,
        contents: &[u8],
    ) -> Vec<Delivery> {
        match self.media.as_mut() {
            Some(media) => {
                media.handle_datagram_to(now, from, to, contents);
                self.media_deliveries()
            }
            None => Vec::new(),
        }
    }

    /// When the SFU next needs [`Rooms::timeout`].
    pub fn next_timeout(&self) -> Option<Instant> {
        self.media.as_ref().and_then(|m| m.next_timeout())
    }

    pub fn timeout(&mut self, now: Instant) -> Vec<Delivery> {
        match self.media.as_mut() {
            Some(media) => {
                media.handle_timeout(now);
                self.media_deliveries()
            }
            None => Vec::new(),
        }
    }

    /// Datagrams the SFU wants sent.
    pub fn take_datagrams(&mut self) -> Vec<Datagram> {
        self.media
            .as_mut()
            .map(|m| m.take_datagrams())
            .unwrap_or_default()
    }

    /// (participants, peer connections, SFU counters).
    pub fn media_stats(&self) -> (usize, usize, sfu::Counters) {
        let participants = self.by_number.len();
        match self.media.as_ref() {
            Some(m) => (participants, m.connection_count(), m.counters()),
            None => (participants, 0, sfu::Counters::default()),
        }
    }

    /// Frames for what the SFU reported: each subscriber gets `rtc.track.published` /
    /// `rtc.track.unpublished` for tracks it starts or stops receiving, then one
    /// `rtc.subscribe.refresh`; a room hears who speaks.
    fn media_deliveries(&mut self) -> Vec<Delivery> {
        let Some(media) = self.media.as_mut() else {
            return Vec::new();
        };
        let events = media.take_events();
        let mut out = Vec::new();
        let mut refresh: Vec<SocketRef> = Vec::new();
        for event in events {
            let (to, track, kind) = match event {
                sfu::Event::Announce { to, track } => (to, track, "rtc.track.published"),
                sfu::Event::Withdraw { to, track } => (to, track, "rtc.track.unpublished"),
                sfu::Event::Speaking {
                    participant,
                    speaking,
                    ..
                } => {
                    let Some(channel) = self.by_number.get(&participant) else {
                        continue;
                    };
                    let room = &self.rooms[channel];
                    let Some(speaker) = room.participants.get(&participant) else {
                        continue;
                    };
                    let said = frame(
                        "rtc.participant.speaking",
                        &Speaking {
                            participant_id: &speaker.view.participant_id,
                            speaking,
                        },
                    );
                    out.extend(room.participants.values().map(|p| Delivery {
                        to: p.socket,
                        frame: said.clone(),
                    }));
                    continue;
                }
            };
            let (Some(subscriber), Some(publisher)) =
                (self.participant(to), self.participant(track.publisher))
            else {
                continue;
            };
            out.push(Delivery {
                to: subscriber.socket,
                frame: frame(
                    kind,
                    &TrackView {
                        participant_id: &publisher.view.participant_id,
                        user_uid: &publisher.view.user_uid,
                        device_id: &publisher.view.device_id,
                        track_id: &track.track_id,
                        stream_id: &track.stream_id,
                        media_kind: track.stream_kind.media_kind(),
                        stream_kind: track.stream_kind.as_str(),
                    },
                ),
            });
            if !refresh.contains(&subscriber.socket) {
                refresh.push(subscriber.socket);
            }
        }
        let again = frame(
            "rtc.subscribe.refresh",
            &Refresh {
                reason: "tracks_changed",
            },
        );
        out.extend(refresh.into_iter().map(|to| Delivery {
            to,
            frame: again.clone(),
        }));
        out
    }

    fn participant(&self, number: u64) -> Option<&Participant> {
        let channel = self.by_number.get(&number)?;
        self.rooms.get(channel)?.participants.get(&number)
    }

    /// Participants of a channel's room, in join order.
    pub fn participants(&self, channel_id: &str) -> Vec<&ParticipantView> {
        self.rooms
            .get(channel_id)
            .map(|r| r.participants.values().map(|p| &p.view).collect())
            .unwrap_or_default()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(uid: &str) -> Claims {
        Claims {
            server_id: "srv".into(),
            channel_id: "ch_voice".into(),
            user_uid: uid.into(),
            device_id: format!("dev_{uid}"),
            permissions: Permissions::ALL,
            exp: 100,
            jti: format!("jt_{uid}"),
        }
    }

    fn seat(max_participants: usize) -> Seat {
        Seat {
            max_participants,
            caps: Caps { audio: 8, video: 8 },
            media_ips: vec![IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)],
        }
    }

    /// Rooms with uid_a (socket 1) and uid_b (socket 2) in `ch_voice`.
    fn two_in_a_room() -> Rooms {
        let mut rooms = Rooms::default();
        for (n, uid) in [(1, "uid_a"), (2, "uid_b")] {
            rooms.join(&claims(uid), sock(n), "t", seat(10)).unwrap();
        }
        rooms
    }

    fn sock(n: u64) -> SocketRef {
        SocketRef {
            shard: (n % 2) as usize,
            socket: n,
        }
    }

    fn json(frame: &Bytes) -> simd_json::OwnedValue {
        simd_json::to_owned_value(&mut frame.to_vec()).unwrap()
    }

    #[test]
    fn joining_announces_and_lists_everyone() {
        use simd_json::prelude::*;
        let mut rooms = Rooms::default();
        let first = rooms
            .join(&claims("uid_a"), sock(1), "t1", seat(10))
            .unwrap();
        assert_eq!(first.len(), 1);
        let joined = json(&first[0].frame);
        assert_eq!(joined["type"].as_str(), Some("rtc.joined"));
        assert_eq!(
            joined["payload"]["participants"].as_array().unwrap().len(),
            1
        );
        let second = rooms
            .join(&claims("uid_b"), sock(2), "t2", seat(10))
            .unwrap();
        assert_eq!(second[0].to, sock(2));
        let list = json(&second[0].frame);
        let ids: Vec<&str> = list["payload"]["participants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["user_uid"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["uid_a", "uid_b"]);
        assert_eq!(second[1].to, sock(1));
        let announce = json(&second[1].frame);
        assert_eq!(announce["type"].as_str(), Some("rtc.participant.joined"));
        assert_eq!(
            announce["payload"]["participant"]["user_uid"].as_str(),
            Some("uid_b")
        );
        assert_eq!(
            rooms.join(&claims("uid_b"), sock(2), "t3", seat(10)),
            Err(JoinError::AlreadyJoined)
        );
    }

    #[test]
    fn leaving_announces_and_empty_rooms_go_away() {
        use simd_json::prelude::*;
        let mut rooms = two_in_a_room();
        let left = rooms.leave(sock(1));
        assert_eq!(left.len(), 1);
        assert_eq!(
            json(&left[0].frame)["type"].as_str(),
            Some("rtc.participant.left")
        );
        assert!(
            rooms.leave(sock(1)).is_empty(),
            "leaving twice does nothing"
        );
        assert!(rooms.leave(sock(2)).is_empty());
        assert_eq!(rooms.room_count(), 0);
        assert!(rooms.by_socket.is_empty());
    }

    #[test]
    fn a_full_room_refuses_and_media_state_is_relayed_with_the_participant() {
        use simd_json::prelude::*;
        let mut rooms = Rooms::default();
        rooms.join(&claims("uid_a"), sock(1), "t", seat(2)).unwrap();
        rooms.join(&claims("uid_b"), sock(2), "t", seat(2)).unwrap();
        assert_eq!(
            rooms.join(&claims("uid_c"), sock(3), "t", seat(2)),
            Err(JoinError::Full)
        );
        let payload = simd_json::json!({"stream_id": "s1", "track_id": "t1", "stream_kind": "audio_microphone", "action": "start", "mic_muted": false, "deafened": false});
        let relayed = rooms.media_state(sock(1), &payload, Instant::now());
        assert_eq!(relayed.len(), 1);
        assert_eq!(relayed[0].to, sock(2));
        let doc = json(&relayed[0].frame);
        assert_eq!(doc["payload"]["participant_id"].as_str(), Some("p1"));
        assert_eq!(
            doc["payload"]["stream_kind"].as_str(),
            Some("audio_microphone")
        );
        // Listen-only participants cannot announce a start.
        let mut quiet = claims("uid_q");
        quiet.channel_id = "ch_other".into();
        quiet.permissions = Permissions::LISTEN_ONLY;
        rooms.join(&quiet, sock(4), "t", seat(5)).unwrap();
        let mut listener = claims("uid_l");
        listener.channel_id = "ch_other".into();
        rooms.join(&listener, sock(5), "t", seat(5)).unwrap();
        assert!(
            rooms
                .media_state(sock(4), &payload, Instant::now())
                .is_empty()
        );
        let (kicked, others) = rooms.evict("srv", "uid_q");
        assert_eq!(kicked, vec![sock(4)]);
        assert_eq!(
            others.len(),
            1,
            "the other participant sees the kicked one leave"
        );
        assert_eq!(
            json(&others[0].frame)["type"].as_str(),
            Some("rtc.participant.left")
        );
    }

    #[test]
    fn media_state_relays_only_checked_fields_and_the_servers_identity() {
        use simd_json::prelude::*;
        let mut rooms = two_in_a_room();
        let now = Instant::now();
        let forged = simd_json::json!({
            "participant_id": "p2", "user_uid": "uid_b", "device_id": "dev_uid_b",
            "member": {"user_uid": "uid_b"}, "client_id": "c2", "admin": true,
            "stream_id": "s1", "track_id": "t1", "stream_kind": "audio_microphone",
            "action": "stop", "mic_muted": true, "deafened": false
        });
        let relayed = rooms.media_state(sock(1), &forged, now);
        assert_eq!(relayed.len(), 1);
        assert_eq!(relayed[0].to, sock(2));
        let doc = json(&relayed[0].frame);
        assert_eq!(doc["type"].as_str(), Some("rtc.media.state"));
        let payload = doc["payload"].as_object().unwrap();
        let mut keys: Vec<&str> = payload.keys().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "action",
                "deafened",
                "device_id",
                "mic_muted",
                "participant_id",
                "stream_id",
                "stream_kind",
                "track_id",
                "user_uid"
            ]
        );
        assert_eq!(payload["participant_id"].as_str(), Some("p1"));
        assert_eq!(payload["user_uid"].as_str(), Some("uid_a"));
        assert_eq!(payload["device_id"].as_str(), Some("dev_uid_a"));
        assert_eq!(payload["mic_muted"].as_bool(), Some(true));
        // A mute change alone is relayed with just that.
        let mute = rooms.media_state(
            sock(1),
            &simd_json::json!({"mic_muted": false, "track_id": null}),
            now,
        );
        let doc = json(&mute[0].frame);
        assert_eq!(doc["payload"].as_object().unwrap().len(), 4);
        // Values that do not read: nothing is relayed, and it is counted.
        let long = "x".repeat(MAX_MEDIA_STATE_ID_LEN + 1);
        for bad in [
            simd_json::json!({"action": "explode"}),
            simd_json::json!({"action": "start", "stream_kind": "video_hologram"}),
            simd_json::json!({"mic_muted": "yes"}),
            simd_json::json!({"deafened": 1}),
            simd_json::json!({"track_id": long}),
            simd_json::json!({"track_id": ""}),
            simd_json::json!({"stream_id": "two words"}),
            simd_json::json!({"stream_id": 7}),
            simd_json::json!({"participant_id": "p2"}),
            simd_json::json!({}),
            simd_json::json!("stop"),
        ] {
            assert!(rooms.media_state(sock(1), &bad, now).is_empty(), "{bad:?}");
        }
        assert_eq!(rooms.dropped_updates(), 11);
        let longest = "y".repeat(MAX_MEDIA_STATE_ID_LEN);
        assert_eq!(
            rooms
                .media_state(sock(1), &simd_json::json!({"track_id": longest}), now)
                .len(),
            1
        );
    }

    #[test]
    fn a_start_needs_the_permission_of_its_kind() {
        let mut rooms = Rooms::default();
        let mut voice_only = claims("uid_a");
        voice_only.permissions = Permissions {
            speak: true,
            video: false,
            screenshare: false,
        };
        rooms.join(&voice_only, sock(1), "t", seat(5)).unwrap();
        rooms.join(&claims("uid_b"), sock(2), "t", seat(5)).unwrap();
        let now = Instant::now();
        let start = |kind: &str| simd_json::json!({"action": "start", "stream_kind": kind});
        assert_eq!(
            rooms
                .media_state(sock(1), &start("audio_microphone"), now)
                .len(),
            1
        );
        assert!(
            rooms
                .media_state(sock(1), &start("video_camera"), now)
                .is_empty()
        );
        assert!(
            rooms
                .media_state(sock(1), &start("video_screen"), now)
                .is_empty()
        );
        assert_eq!(
            rooms
                .media_state(sock(2), &start("video_screen"), now)
                .len(),
            1
        );
        let stop = simd_json::json!({"action": "stop", "stream_kind": "video_camera"});
        assert_eq!(rooms.media_state(sock(1), &stop, now).len(), 1);
    }

    #[test]
    fn media_state_is_rate_limited_per_socket() {
        let mut rooms = two_in_a_room();
        let t0 = Instant::now();
        let mute = simd_json::json!({"mic_muted": true});
        let relayed = (0..1000)
            .filter(|_| !rooms.media_state(sock(1), &mute, t0).is_empty())
            .count();
        assert_eq!(relayed, MEDIA_STATE_UPDATES_PER_SECOND as usize);
        assert_eq!(
            rooms.dropped_updates(),
            1000 - u64::from(MEDIA_STATE_UPDATES_PER_SECOND)
        );
        // The other socket has its own budget; the flooder gets one back every 50 ms.
        assert_eq!(rooms.media_state(sock(2), &mute, t0).len(), 1);
        assert!(
            rooms
                .media_state(sock(1), &mute, t0 + std::time::Duration::from_millis(49))
                .is_empty()
        );
        assert_eq!(
            rooms
                .media_state(sock(1), &mute, t0 + std::time::Duration::from_millis(50))
                .len(),
            1
        );
    }

    #[test]
    fn a_dropped_socket_keeps_its_place_for_the_grace_window() {
        use simd_json::prelude::*;
        let now = Instant::now();
        let mut rooms = two_in_a_room();
        // A drops: nobody hears of it, and it is still listed.
        rooms.detach(sock(1), now);
        assert_eq!(rooms.participants("ch_voice").len(), 2);
        assert!(rooms.expire(now + RECONNECT_GRACE / 2).is_empty());
        // It comes back on a new socket: same participant, and no one is told it joined.
        let back = rooms
            .join(&claims("uid_a"), sock(3), "t2", seat(10))
            .unwrap();
        assert_eq!(back.len(), 1, "only the returning socket hears: {back:?}");
        assert_eq!(back[0].to, sock(3));
        let joined = json(&back[0].frame);
        assert_eq!(joined["type"].as_str(), Some("rtc.joined"));
        assert_eq!(joined["payload"]["participant_id"].as_str(), Some("p1"));
        assert!(
            rooms.expire(now + RECONNECT_GRACE * 2).is_empty(),
            "attached again"
        );
        // Another user with the same device id does not take it over.
        rooms.detach(sock(3), now);
        let mut stranger = claims("uid_c");
        stranger.device_id = "dev_uid_a".into();
        let other = rooms.join(&stranger, sock(4), "t", seat(10)).unwrap();
        assert_eq!(
            json(&other[0].frame)["payload"]["participant_id"].as_str(),
            Some("p3")
        );
        // The grace runs out: the attached ones hear A leave.
        let gone = rooms.expire(now + RECONNECT_GRACE);
        let to: Vec<SocketRef> = gone.iter().map(|d| d.to).collect();
        assert_eq!(to, vec![sock(2), sock(4)]);
        assert!(
            gone.iter()
                .all(|d| json(&d.frame)["type"].as_str() == Some("rtc.participant.left"))
        );
        assert_eq!(rooms.participants("ch_voice").len(), 2);
        // A kick removes a detached participant at once, with no socket to close.
        rooms.detach(sock(2), now);
        let (kicked, others) = rooms.evict("srv", "uid_b");
        assert!(kicked.is_empty());
        assert_eq!(others.len(), 1);
        rooms.leave(sock(4));
        assert_eq!(rooms.room_count(), 0);
        assert!(rooms.by_socket.is_empty() && rooms.by_number.is_empty());
    }
}
