//! Voice rooms (sans-IO): who is in which voice channel, and the signaling frames that follow
//! from joins, leaves, offers, media-state changes and kicks (wire contract A.8). A room lives
//! on the shard that owns its channel (`sharding::shard_for`); its methods return
//! [`Delivery`](crate::realtime::Delivery)s for the caller to route, like presence does. The media of the shard's rooms is
//! one [`Sfu`]: offers become answers, and what the SFU reports (tracks a participant starts or
//! stops receiving, speaking) becomes `rtc.track.published` / `rtc.track.unpublished` /
//! `rtc.subscribe.refresh` / `rtc.participant.speaking` frames. A participant whose signaling
//! socket drops stays for [`RECONNECT_GRACE`] and is taken over when the same user and device
//! join again.
//!
//! [`Rooms`] is one state with a file per concern:
//! - `seats.rs`: joining (a seat in a room, or taking over a detached participant), leaving,
//!   detaching for the reconnect grace and its expiry;
//! - `moderation.rs`: kicks and revoked sessions take participants out;
//! - `media_state.rs`: `rtc.media.state`, checked, rate-limited and relayed;
//! - `media.rs`: the rooms' media through the SFU (offers, candidates, datagrams, timers) and
//!   the frames for what it reports.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::Serialize;

use super::ticket::Permissions;
use crate::realtime::SocketRef;
use crate::realtime::rate::TokenBucket;
use crate::sfu::{self, Sfu};

mod media;
mod media_state;
mod moderation;
mod seats;

pub use media_state::{MAX_MEDIA_STATE_ID_LEN, MEDIA_STATE_UPDATES_PER_SECOND};
pub use seats::{JoinError, RECONNECT_GRACE, Seat};

/// One participant as others see it (`rtc.joined` / `rtc.participant.joined`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParticipantView {
    pub participant_id: String,
    pub user_uid: String,
    pub device_id: String,
    pub joined_at: String,
}

/// A participant of a room, as the server knows it.
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

/// The room of one voice channel.
#[derive(Debug, Default)]
struct Room {
    /// Numbers the room for the SFU.
    number: sfu::RoomId,
    /// By participant id, in join order (ids increase).
    participants: BTreeMap<u64, Participant>,
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

impl Rooms {
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

/// What the tests of each concern start from.
#[cfg(test)]
mod testing {
    use std::net::IpAddr;

    use bytes::Bytes;

    use super::*;
    use crate::rtc::ticket::Claims;
    use crate::sfu::Caps;

    pub(super) fn claims(uid: &str) -> Claims {
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

    pub(super) fn seat(max_participants: usize) -> Seat {
        Seat {
            max_participants,
            caps: Caps { audio: 8, video: 8 },
            media_ips: vec![IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)],
        }
    }

    /// Rooms with uid_a (socket 1) and uid_b (socket 2) in `ch_voice`.
    pub(super) fn two_in_a_room() -> Rooms {
        let mut rooms = Rooms::default();
        for (n, uid) in [(1, "uid_a"), (2, "uid_b")] {
            rooms.join(&claims(uid), sock(n), "t", seat(10)).unwrap();
        }
        rooms
    }

    pub(super) fn sock(n: u64) -> SocketRef {
        SocketRef {
            shard: (n % 2) as usize,
            socket: n,
        }
    }

    pub(super) fn json(frame: &Bytes) -> simd_json::OwnedValue {
        simd_json::to_owned_value(&mut frame.to_vec()).unwrap()
    }
}
