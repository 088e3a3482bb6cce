//! Participants of the SFU: what each brings when it joins a room (its receive caps, what it
//! may publish, the addresses its connections advertise) and what it has while it is in (its
//! two connections, the tracks it receives, its speaking state). Joining and leaving start
//! the reassignment of the room's tracks (`assign.rs`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::assign::TrackKey;
use super::conn::Conn;
use super::{
    Direction, Event, MAX_LOCAL_CANDIDATES, MAX_MEDIA_LINES, ParticipantId, RoomId, Sfu,
    StreamKind, TrackInfo,
};

/// How many tracks of each kind a subscriber receives at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub audio: usize,
    pub video: usize,
}

/// What a participant may publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    pub audio: bool,
    pub camera: bool,
    pub screen: bool,
}

/// A participant in a room here.
pub(super) struct Member {
    pub(super) room: RoomId,
    /// The addresses its connections advertise (and receive on).
    pub(super) candidates: Vec<SocketAddr>,
    pub(super) caps: Caps,
    pub(super) permit: Permit,
    pub(super) publish: Option<Conn>,
    pub(super) subscribe: Option<Conn>,
    /// Tracks it receives (within its caps), in publish order.
    pub(super) receiving: Vec<(TrackKey, TrackInfo)>,
    /// Stream kinds the client announced for its track ids (`rtc.media.state`).
    pub(super) hints: HashMap<String, StreamKind>,
    pub(super) loud_at: Option<Instant>,
    pub(super) speaking: bool,
    /// Bandwidth estimate of its subscribe connection, bits per second.
    pub(super) estimate: Option<u64>,
}

impl Member {
    pub(super) fn conn(&mut self, direction: Direction) -> Option<&mut Conn> {
        match direction {
            Direction::Publish => self.publish.as_mut(),
            Direction::Subscribe => self.subscribe.as_mut(),
        }
    }

    pub(super) fn conn_exists(&self, direction: Direction) -> bool {
        match direction {
            Direction::Publish => self.publish.is_some(),
            Direction::Subscribe => self.subscribe.is_some(),
        }
    }
}

impl Sfu {
    /// A participant joins `room`: it is announced the room's tracks within `caps`. Its
    /// connections advertise each of `ips` (with this shard's port) as a host candidate, the
    /// first [`MAX_LOCAL_CANDIDATES`] of them.
    pub fn add_participant(
        &mut self,
        room: RoomId,
        participant: ParticipantId,
        caps: Caps,
        permit: Permit,
        ips: &[IpAddr],
    ) {
        let candidates = ips
            .iter()
            .take(MAX_LOCAL_CANDIDATES)
            .map(|ip| SocketAddr::new(*ip, self.port))
            .collect();
        self.members.insert(
            participant,
            Member {
                room,
                candidates,
                caps,
                permit,
                publish: None,
                subscribe: None,
                receiving: Vec::new(),
                hints: HashMap::new(),
                loud_at: None,
                speaking: false,
                estimate: None,
            },
        );
        self.rooms.entry(room).or_default().push(participant);
        self.reassign(room);
    }

    /// A participant may send less from now on (a timeout makes it listen-only): what it
    /// publishes of a kind it may no longer send stops here at once (its tracks stay
    /// announced, silent), and an offer publishing it is refused.
    pub fn restrict(&mut self, participant: ParticipantId, permit: Permit) {
        let Some(member) = self.members.get_mut(&participant) else {
            return;
        };
        member.permit = permit;
        for (key, track) in self.tracks.iter_mut() {
            if key.0 != participant {
                continue;
            }
            track.muted = match track.info.stream_kind {
                StreamKind::Microphone => !permit.audio,
                StreamKind::Camera => !permit.camera,
                StreamKind::Screen => !permit.screen,
            };
        }
        if !permit.audio && member.speaking {
            member.speaking = false;
            member.loud_at = None;
            let room = member.room;
            self.events.push(Event::Speaking {
                room,
                participant,
                speaking: false,
            });
        }
    }

    /// A participant leaves: its connections close, its tracks are withdrawn from the others.
    pub fn remove_participant(&mut self, participant: ParticipantId) {
        let Some(member) = self.members.remove(&participant) else {
            return;
        };
        for conn in [member.publish, member.subscribe].into_iter().flatten() {
            self.forget_conn(&conn);
        }
        let room = member.room;
        if let Some(list) = self.rooms.get_mut(&room) {
            list.retain(|p| *p != participant);
            if list.is_empty() {
                self.rooms.remove(&room);
            }
        }
        let gone: Vec<TrackKey> = self
            .room_tracks
            .get(&room)
            .map(|keys| {
                keys.iter()
                    .filter(|k| k.0 == participant)
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        for key in gone {
            self.remove_track(key);
        }
        if member.speaking {
            self.events.push(Event::Speaking {
                room,
                participant,
                speaking: false,
            });
        }
        self.reassign(room);
        if !self.rooms.contains_key(&room) {
            self.room_tracks.remove(&room);
        }
    }

    /// The client said which stream kind one of its tracks is (`rtc.media.state`).
    pub fn hint_stream_kind(
        &mut self,
        participant: ParticipantId,
        track_id: &str,
        kind: StreamKind,
    ) {
        if let Some(member) = self.members.get_mut(&participant)
            && member.hints.len() < MAX_MEDIA_LINES
        {
            member.hints.insert(track_id.to_owned(), kind);
        }
    }

    /// The tracks `participant` receives, as announced.
    pub fn receiving(&self, participant: ParticipantId) -> Vec<TrackInfo> {
        self.members
            .get(&participant)
            .map(|m| m.receiving.iter().map(|(_, info)| info.clone()).collect())
            .unwrap_or_default()
    }
}
