//! Voice rooms (sans-IO): who is in which voice channel, and the signaling frames that follow
//! from joins, leaves, media-state changes and kicks (wire contract A.8, steps 1, 2, 5, 6). A
//! room lives on the shard that owns its channel (`sharding::shard_for`); its methods return
//! [`Delivery`]s for the caller to route, like presence does. Media (offers, answers, tracks)
//! is the SFU's part and comes next.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde::Serialize;

use super::ticket::{Claims, Permissions};
use crate::realtime::{Delivery, SocketRef};

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
}

#[derive(Debug, Default)]
struct Room {
    /// By participant id, in join order (ids increase).
    participants: BTreeMap<u64, Participant>,
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
#[derive(Debug, Default)]
pub struct Rooms {
    rooms: HashMap<String, Room>,
    /// Where each joined socket is: (channel, participant number).
    by_socket: HashMap<SocketRef, (String, u64)>,
    next_participant: u64,
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

impl Rooms {
    /// `socket` joins the room of `claims.channel_id` (ticket already verified and consumed).
    /// It gets `rtc.joined` with everyone (itself included); the others get
    /// `rtc.participant.joined`.
    pub fn join(
        &mut self,
        claims: &Claims,
        socket: SocketRef,
        joined_at: &str,
        max_participants: usize,
    ) -> Result<Vec<Delivery>, JoinError> {
        if self.by_socket.contains_key(&socket) {
            return Err(JoinError::AlreadyJoined);
        }
        let room = self.rooms.entry(claims.channel_id.clone()).or_default();
        if room.participants.len() >= max_participants {
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
        Ok(out)
    }

    /// `rtc.leave` or a closed socket: the others get `rtc.participant.left`; an empty room is
    /// removed.
    pub fn leave(&mut self, socket: SocketRef) -> Vec<Delivery> {
        let Some((channel, number)) = self.by_socket.remove(&socket) else {
            return Vec::new();
        };
        let Some(room) = self.rooms.get_mut(&channel) else {
            return Vec::new();
        };
        let Some(gone) = room.participants.remove(&number) else {
            return Vec::new();
        };
        let left = frame(
            "rtc.participant.left",
            &One {
                participant: &gone.view,
            },
        );
        let out = room
            .participants
            .values()
            .map(|p| Delivery {
                to: p.socket,
                frame: left.clone(),
            })
            .collect();
        if room.participants.is_empty() {
            self.rooms.remove(&channel);
        }
        out
    }

    /// `rtc.media.state` from `socket`, relayed to the others with its `participant_id`. A
    /// listen-only participant may only report `stop`s and mute/deafen changes.
    pub fn media_state(&self, socket: SocketRef, payload: &simd_json::OwnedValue) -> Vec<Delivery> {
        use simd_json::prelude::*;
        let Some((channel, number)) = self.by_socket.get(&socket) else {
            return Vec::new();
        };
        let room = &self.rooms[channel];
        let me = &room.participants[number];
        let mut relayed = match payload.as_object() {
            Some(fields) => fields.clone(),
            None => return Vec::new(),
        };
        let starts = relayed.get("action").and_then(|a| a.as_str()) == Some("start");
        if starts && !(me.permissions.speak || me.permissions.video || me.permissions.screenshare) {
            return Vec::new();
        }
        relayed.insert(
            "participant_id".into(),
            simd_json::OwnedValue::from(me.view.participant_id.clone()),
        );
        let out = frame("rtc.media.state", &simd_json::OwnedValue::from(relayed));
        room.participants
            .iter()
            .filter(|(n, _)| *n != number)
            .map(|(_, p)| Delivery {
                to: p.socket,
                frame: out.clone(),
            })
            .collect()
    }

    /// Sockets of `user_uid` in rooms of `server_id` on this shard (for a kick).
    pub fn sockets_of(&self, server_id: &str, user_uid: &str) -> Vec<SocketRef> {
        self.rooms
            .values()
            .flat_map(|r| r.participants.values())
            .filter(|p| p.server_id == server_id && p.view.user_uid == user_uid)
            .map(|p| p.socket)
            .collect()
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
        let first = rooms.join(&claims("uid_a"), sock(1), "t1", 10).unwrap();
        assert_eq!(first.len(), 1);
        let joined = json(&first[0].frame);
        assert_eq!(joined["type"].as_str(), Some("rtc.joined"));
        assert_eq!(
            joined["payload"]["participants"].as_array().unwrap().len(),
            1
        );
        let second = rooms.join(&claims("uid_b"), sock(2), "t2", 10).unwrap();
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
            rooms.join(&claims("uid_b"), sock(2), "t3", 10),
            Err(JoinError::AlreadyJoined)
        );
    }

    #[test]
    fn leaving_announces_and_empty_rooms_go_away() {
        use simd_json::prelude::*;
        let mut rooms = Rooms::default();
        rooms.join(&claims("uid_a"), sock(1), "t", 10).unwrap();
        rooms.join(&claims("uid_b"), sock(2), "t", 10).unwrap();
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
        rooms.join(&claims("uid_a"), sock(1), "t", 2).unwrap();
        rooms.join(&claims("uid_b"), sock(2), "t", 2).unwrap();
        assert_eq!(
            rooms.join(&claims("uid_c"), sock(3), "t", 2),
            Err(JoinError::Full)
        );
        let payload = simd_json::json!({"stream_id": "s1", "track_id": "t1", "stream_kind": "audio_microphone", "action": "start", "mic_muted": false, "deafened": false});
        let relayed = rooms.media_state(sock(1), &payload);
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
        rooms.join(&quiet, sock(4), "t", 5).unwrap();
        let mut listener = claims("uid_l");
        listener.channel_id = "ch_other".into();
        rooms.join(&listener, sock(5), "t", 5).unwrap();
        assert!(rooms.media_state(sock(4), &payload).is_empty());
        assert_eq!(rooms.sockets_of("srv", "uid_q"), vec![sock(4)]);
    }
}
