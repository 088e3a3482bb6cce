//! Seats: joining a room (within its size, or taking over the detached participant of the same
//! user and device), leaving, and the reconnect grace of a participant whose signaling socket
//! dropped. Every way out of a room ends in [`Rooms::remove`]: the others hear the participant
//! leave and its tracks are withdrawn.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use serde::Serialize;

use super::{MEDIA_STATE_UPDATES_PER_SECOND, Participant, ParticipantView, Room, Rooms};
use crate::realtime::rate::TokenBucket;
use crate::realtime::{Delivery, SocketRef};
use crate::rtc::ticket::{Claims, Permissions};
use crate::sfu::{self, Caps, Permit};
use crate::wire::signaling::frame;

/// How long a participant whose signaling socket dropped (silence, reset) stays in the call,
/// so that a client on a flaky network can join again as the same participant. A socket the
/// client closes, `rtc.leave` and a kick leave at once.
pub const RECONNECT_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

/// What a joiner brings besides its ticket.
#[derive(Debug, Clone)]
pub struct Seat {
    pub max_participants: usize,
    pub caps: Caps,
    /// The IPs of its media candidates (see [`crate::rtc::media_ips`]).
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

#[derive(Serialize)]
struct Joined<'a> {
    participant_id: &'a str,
    participants: Vec<&'a ParticipantView>,
}

#[derive(Serialize)]
struct One<'a> {
    participant: &'a ParticipantView,
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

    /// `rtc.leave` or a closed socket: the others get `rtc.participant.left` and
    /// `rtc.track.unpublished` for its tracks; an empty room is removed.
    pub fn leave(&mut self, socket: SocketRef) -> Vec<Delivery> {
        let Some((channel, number)) = self.by_socket.get(&socket).cloned() else {
            return Vec::new();
        };
        self.remove(&channel, number)
    }

    /// Takes participant `number` out of the room of `channel`.
    pub(super) fn remove(&mut self, channel: &str, number: u64) -> Vec<Delivery> {
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
}

#[cfg(test)]
mod tests {
    use super::super::testing::{claims, json, seat, sock, two_in_a_room};
    use super::*;

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
