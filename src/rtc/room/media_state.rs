//! `rtc.media.state`: a participant tells the others what it starts or stops sending and
//! whether it is muted or deafened. The server checks every field it relays, fills in the
//! identity itself, holds each socket to [`MEDIA_STATE_UPDATES_PER_SECOND`], and passes the
//! stream kind a client gives a track on to the SFU (it decides how the track is announced).

use std::time::Instant;

use serde::Serialize;

use super::Rooms;
use crate::realtime::{Delivery, SocketRef};
use crate::rtc::ticket::Permissions;
use crate::sfu;
use crate::wire::signaling::frame;

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

impl Rooms {
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
}

#[cfg(test)]
mod tests {
    use super::super::testing::{claims, json, seat, sock, two_in_a_room};
    use super::*;
    use crate::rtc::room::JoinError;

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
}
