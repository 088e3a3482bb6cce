//! Track assignment: which published track goes to which subscriber. A publisher's m-lines
//! become tracks after each negotiation (with ids that are unique in the room, and a stream
//! kind from the client's hint or a guess), and every change in a room recomputes what each
//! participant receives: the room's tracks in publish order, not its own, up to its receive
//! caps, each in a free receive slot of its subscribe connection of the same kind. What a
//! subscriber starts or stops receiving comes out as [`Event::Announce`] /
//! [`Event::Withdraw`]. A simulcast track's layer for a subscriber is chosen here too
//! ([`choose_layer`]); forwarding (`forward.rs`) measures the layers and switches.

use std::time::Instant;

use str0m::format::PayloadParams;
use str0m::media::{Direction as MediaDirection, MediaKind, Mid, Pt, Rid};

use super::{Event, ParticipantId, RoomId, Sfu};

/// What a published track carries (`stream_kind` of the wire contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Microphone,
    Camera,
    Screen,
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Microphone => "audio_microphone",
            StreamKind::Camera => "video_camera",
            StreamKind::Screen => "video_screen",
        }
    }

    pub fn parse(text: &str) -> Option<StreamKind> {
        match text {
            "audio_microphone" => Some(StreamKind::Microphone),
            "video_camera" => Some(StreamKind::Camera),
            "video_screen" => Some(StreamKind::Screen),
            _ => None,
        }
    }

    /// `media_kind` of the wire contract.
    pub fn media_kind(self) -> &'static str {
        match self {
            StreamKind::Microphone => "audio",
            StreamKind::Camera | StreamKind::Screen => "video",
        }
    }

    fn kind(self) -> MediaKind {
        match self {
            StreamKind::Microphone => MediaKind::Audio,
            StreamKind::Camera | StreamKind::Screen => MediaKind::Video,
        }
    }
}

/// A published track as subscribers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    pub publisher: ParticipantId,
    pub track_id: String,
    pub stream_id: String,
    pub stream_kind: StreamKind,
}

/// A track: its publisher and the publisher's m-line.
pub(super) type TrackKey = (ParticipantId, Mid);

/// A simulcast layer of a track, with its bitrate measured over the last second.
pub(super) struct Layer {
    pub(super) rid: Rid,
    pub(super) bytes: u64,
    pub(super) since: Instant,
    pub(super) bps: u64,
}

/// A published track.
pub(super) struct Track {
    pub(super) room: RoomId,
    pub(super) info: TrackInfo,
    /// Simulcast layers (empty for a single-layer track).
    pub(super) layers: Vec<Layer>,
    pub(super) last_keyframe_request: Option<Instant>,
    /// Its publisher may no longer send this kind (a timeout): its media is dropped here.
    pub(super) muted: bool,
}

/// A receive m-line of a subscribe connection and what it carries.
pub(super) struct Slot {
    pub(super) mid: Mid,
    pub(super) kind: MediaKind,
    pub(super) track: Option<TrackKey>,
    /// The simulcast layer forwarded, and the one waited for (switch on its next keyframe).
    pub(super) layer: Option<Rid>,
    pub(super) wanted: Option<Rid>,
    pub(super) layer_checked: Option<Instant>,
    /// Video only: a keyframe was forwarded since the track was put here (frames before the
    /// first keyframe are useless to the decoder and are not sent).
    pub(super) synced: bool,
    /// Payload type mapping from the publisher's to this connection's.
    pub(super) pt: Option<(PayloadParams, Pt)>,
}

impl Slot {
    /// A receive m-line that carries nothing yet.
    pub(super) fn new(mid: Mid, kind: MediaKind) -> Slot {
        Slot {
            mid,
            kind,
            track: None,
            layer: None,
            wanted: None,
            layer_checked: None,
            synced: false,
            pt: None,
        }
    }
}

impl Sfu {
    /// The publisher's m-lines after a negotiation: new receiving m-lines become tracks,
    /// m-lines that stopped sending are withdrawn.
    pub(super) fn refresh_tracks(&mut self, participant: ParticipantId, now: Instant) {
        let Some(member) = self.members.get(&participant) else {
            return;
        };
        let room = member.room;
        let Some(conn) = member.publish.as_ref() else {
            return;
        };
        let mut live = Vec::new();
        for (mid, rids) in &conn.mids {
            let Some(media) = conn.rtc.media(*mid) else {
                continue;
            };
            if !matches!(
                media.direction(),
                MediaDirection::RecvOnly | MediaDirection::SendRecv
            ) {
                continue;
            }
            live.push((
                *mid,
                media.kind(),
                media.track_id().to_owned(),
                media.stream_id().to_owned(),
                rids.clone(),
            ));
        }
        for key in self.tracks_of(participant) {
            if !live.iter().any(|l| l.0 == key.1) {
                self.remove_track(key);
            }
        }
        for (mid, kind, track_id, stream_id, rids) in live {
            let key = (participant, mid);
            if self.tracks.contains_key(&key) {
                continue;
            }
            let member = &self.members[&participant];
            let stream_kind = match kind {
                MediaKind::Audio => StreamKind::Microphone,
                MediaKind::Video => match member.hints.get(&track_id) {
                    Some(kind) => *kind,
                    None => {
                        let has_camera = self.tracks.values().any(|t| {
                            t.info.publisher == participant
                                && t.info.stream_kind == StreamKind::Camera
                        });
                        if has_camera || !member.permit.camera {
                            StreamKind::Screen
                        } else {
                            StreamKind::Camera
                        }
                    }
                },
            };
            let allowed = match stream_kind {
                StreamKind::Microphone => member.permit.audio,
                StreamKind::Camera => member.permit.camera,
                StreamKind::Screen => member.permit.screen,
            };
            if !allowed {
                continue;
            }
            let taken = self
                .tracks
                .values()
                .any(|t| t.room == room && (t.info.track_id == track_id));
            let valid = |s: &str| {
                !s.is_empty()
                    && s.len() <= 64
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.{}".contains(&b))
            };
            let track_id = if taken || !valid(&track_id) {
                format!("p{participant}-{mid}")
            } else {
                track_id
            };
            let stream_id = if valid(&stream_id) {
                stream_id
            } else {
                format!("p{participant}")
            };
            let layers = rids
                .into_iter()
                .map(|rid| Layer {
                    rid,
                    bytes: 0,
                    since: now,
                    bps: 0,
                })
                .collect();
            self.tracks.insert(
                key,
                Track {
                    room,
                    info: TrackInfo {
                        publisher: participant,
                        track_id,
                        stream_id,
                        stream_kind,
                    },
                    layers,
                    last_keyframe_request: None,
                    muted: false,
                },
            );
            self.room_tracks.entry(room).or_default().push(key);
        }
    }

    /// The tracks `participant` publishes.
    pub(super) fn tracks_of(&self, participant: ParticipantId) -> Vec<TrackKey> {
        self.tracks
            .keys()
            .filter(|k| k.0 == participant)
            .copied()
            .collect()
    }

    pub(super) fn remove_track(&mut self, key: TrackKey) {
        if let Some(track) = self.tracks.remove(&key)
            && let Some(list) = self.room_tracks.get_mut(&track.room)
        {
            list.retain(|k| *k != key);
        }
    }

    /// Recomputes what each participant of `room` receives: the room's tracks in publish order
    /// (not its own) up to its caps, each in a receive slot of its subscribe connection.
    pub(super) fn reassign(&mut self, room: RoomId) {
        let Some(participants) = self.rooms.get(&room).cloned() else {
            return;
        };
        let tracks: Vec<TrackKey> = self.room_tracks.get(&room).cloned().unwrap_or_default();
        for participant in participants {
            let Some(member) = self.members.get_mut(&participant) else {
                continue;
            };
            let (mut audio, mut video) = (0, 0);
            let mut wanted = Vec::new();
            for key in &tracks {
                if key.0 == participant {
                    continue;
                }
                let Some(track) = self.tracks.get(key) else {
                    continue;
                };
                let count = match track.info.stream_kind.kind() {
                    MediaKind::Audio => &mut audio,
                    MediaKind::Video => &mut video,
                };
                let cap = match track.info.stream_kind.kind() {
                    MediaKind::Audio => member.caps.audio,
                    MediaKind::Video => member.caps.video,
                };
                if *count < cap {
                    *count += 1;
                    wanted.push(*key);
                }
            }
            for (key, info) in &member.receiving {
                if !wanted.contains(key) {
                    self.events.push(Event::Withdraw {
                        to: participant,
                        track: info.clone(),
                    });
                }
            }
            let mut receiving = Vec::with_capacity(wanted.len());
            for key in wanted {
                let info = self.tracks[&key].info.clone();
                if !member.receiving.iter().any(|(k, _)| *k == key) {
                    self.events.push(Event::Announce {
                        to: participant,
                        track: info.clone(),
                    });
                }
                receiving.push((key, info));
            }
            member.receiving = receiving;
            // Slots: free those whose track is gone, fill free ones.
            if let Some(conn) = member.subscribe.as_mut() {
                let live: Vec<Mid> = conn
                    .mids
                    .iter()
                    .map(|(mid, _)| *mid)
                    .filter(|mid| {
                        conn.rtc.media(*mid).is_some_and(|m| {
                            matches!(
                                m.direction(),
                                MediaDirection::SendOnly | MediaDirection::SendRecv
                            )
                        })
                    })
                    .collect();
                conn.slots.retain(|s| live.contains(&s.mid));
                let receives = |k: TrackKey| member.receiving.iter().any(|(r, _)| *r == k);
                for slot in &mut conn.slots {
                    if slot.track.is_some_and(|k| !receives(k)) {
                        slot.track = None;
                        slot.layer = None;
                        slot.wanted = None;
                        slot.pt = None;
                    }
                }
                for (key, info) in &member.receiving {
                    if conn.slots.iter().any(|s| s.track == Some(*key)) {
                        continue;
                    }
                    let kind = info.stream_kind.kind();
                    if let Some(slot) = conn
                        .slots
                        .iter_mut()
                        .find(|s| s.kind == kind && s.track.is_none())
                    {
                        slot.track = Some(*key);
                        slot.layer_checked = None;
                        slot.synced = false;
                    }
                }
            }
        }
    }
}

/// The simulcast layer for a subscriber: the best measured one within `budget` (bits per
/// second), the smallest when none fits, the best when there is no estimate yet.
pub fn choose_layer(layers: &[(Rid, u64)], budget: Option<u64>) -> Rid {
    let mut sorted: Vec<(Rid, u64)> = layers.to_vec();
    sorted.sort_by_key(|layer| std::cmp::Reverse(layer.1));
    match budget {
        None => sorted[0].0,
        Some(budget) => {
            sorted
                .iter()
                .find(|(_, bps)| *bps <= budget)
                .unwrap_or_else(|| sorted.last().expect("layers are not empty"))
                .0
        }
    }
}

#[cfg(test)]
mod tests {
    use str0m::media::{MediaKind, Rid};

    use super::choose_layer;
    use crate::sfu::peer::Line;
    use crate::sfu::testnet::{ALL, CAPS, Net, sfu};
    use crate::sfu::{Caps, Direction, Event};

    #[test]
    fn receive_caps_limit_what_a_subscriber_gets_and_a_leaver_frees_its_place() {
        let mut net = Net::new(sfu());
        let one_audio = Caps { audio: 1, video: 0 };
        net.join(3, one_audio, ALL);
        net.join(1, CAPS, ALL);
        net.join(2, CAPS, ALL);
        net.negotiate(
            1,
            Direction::Publish,
            &[Line::send(MediaKind::Audio, "a", "a-mic")],
        )
        .unwrap();
        net.negotiate(
            2,
            Direction::Publish,
            &[Line::send(MediaKind::Audio, "b", "b-mic")],
        )
        .unwrap();
        net.negotiate(
            2,
            Direction::Publish,
            &[Line::send(MediaKind::Video, "b", "b-cam")],
        )
        .unwrap();
        let ids = |net: &Net, p| -> Vec<String> {
            net.announced(p)
                .iter()
                .map(|t| t.track_id.clone())
                .collect()
        };
        assert_eq!(ids(&net, 3), ["a-mic"], "one audio track, no video");
        assert_eq!(net.sfu.receiving(3).len(), 1);
        assert_eq!(ids(&net, 1), ["b-mic", "b-cam"]);

        net.sfu.remove_participant(1);
        net.collect();
        assert_eq!(
            ids(&net, 3),
            ["b-mic"],
            "the freed place goes to the next track"
        );
        assert_eq!(ids(&net, 2), Vec::<String>::new());
        assert!(net.events.iter().any(|e| matches!(e,
        Event::Withdraw { to: 2, track } if track.track_id == "a-mic")));
        assert_eq!(net.sfu.participant_count(), 2);
        assert_eq!(net.sfu.connection_count(), 1);
    }

    #[test]
    fn the_layer_is_the_best_within_the_budget_else_the_smallest() {
        let (h, m, l) = (Rid::from("h"), Rid::from("m"), Rid::from("l"));
        let layers = [(l, 150_000), (h, 1_200_000), (m, 500_000)];
        assert_eq!(choose_layer(&layers, None), h, "no estimate yet: the best");
        assert_eq!(choose_layer(&layers, Some(2_000_000)), h);
        assert_eq!(choose_layer(&layers, Some(600_000)), m);
        assert_eq!(choose_layer(&layers, Some(150_000)), l);
        assert_eq!(
            choose_layer(&layers, Some(10_000)),
            l,
            "none fits: the smallest"
        );
    }
}
