//! Forwarding: media frames from a publisher to every subscriber receiving that track, written
//! on the receive slot assignment gave it (`assign.rs`), with the payload type mapped to the
//! subscriber's. Video waits for a keyframe on a new slot; a simulcast track sends each
//! subscriber one layer, measured here and chosen by [`choose_layer`], switching on a keyframe
//! of the new layer. Keyframe requests go to the publisher (a subscriber's PLI/FIR, or the
//! SFU's own when a subscriber needs one), at most every [`KEYFRAME_REQUEST_INTERVAL`]. The
//! audio-level header drives the speaking state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::media::{KeyframeRequestKind, MediaData, MediaKind, Mid, Rid};

use super::assign::TrackKey;
use super::{Event, ParticipantId, Sfu, StreamKind, choose_layer};

/// A participant counts as speaking this long after its last loud audio packet.
pub const SPEAKING_HOLD: Duration = Duration::from_millis(600);
/// Audio louder than this (audio-level header, dBov) counts as speech.
pub const SPEAKING_THRESHOLD_DBOV: i8 = -50;
/// Keyframe requests to one publisher's track are at most this frequent.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// How often a subscriber's simulcast layer is reconsidered.
pub const LAYER_CHECK_INTERVAL: Duration = Duration::from_secs(1);

impl Sfu {
    /// Sets a subscriber's bandwidth estimate as its connection's BWE would.
    #[cfg(test)]
    pub(crate) fn set_estimate(&mut self, participant: ParticipantId, bps: u64) {
        if let Some(m) = self.members.get_mut(&participant) {
            m.estimate = Some(bps);
            if let Some(conn) = m.subscribe.as_mut() {
                for slot in &mut conn.slots {
                    slot.layer_checked = None;
                }
            }
        }
    }

    /// When the first speaker's hold runs out.
    pub(super) fn speaking_deadline(&self) -> Option<Instant> {
        self.members
            .values()
            .filter(|m| m.speaking)
            .filter_map(|m| m.loud_at)
            .map(|t| t + SPEAKING_HOLD)
            .min()
    }

    /// Speakers silent for [`SPEAKING_HOLD`] stop speaking.
    pub(super) fn expire_speakers(&mut self, now: Instant) {
        let mut quiet = Vec::new();
        for (id, m) in &mut self.members {
            if m.speaking && m.loud_at.is_none_or(|t| t + SPEAKING_HOLD <= now) {
                m.speaking = false;
                quiet.push((m.room, *id));
            }
        }
        for (room, participant) in quiet {
            self.events.push(Event::Speaking {
                room,
                participant,
                speaking: false,
            });
        }
    }

    /// A subscriber asked for a keyframe on one of its slots: ask the track's publisher.
    pub(super) fn keyframe_request_from(
        &mut self,
        subscriber: ParticipantId,
        mid: Mid,
        kind: KeyframeRequestKind,
        now: Instant,
    ) {
        let found = self
            .members
            .get(&subscriber)
            .and_then(|m| m.subscribe.as_ref())
            .and_then(|c| c.slots.iter().find(|s| s.mid == mid))
            .and_then(|s| Some((s.track?, s.layer.or(s.wanted))));
        if let Some((key, rid)) = found {
            self.request_keyframe(key, rid, kind, now);
        }
    }

    fn request_keyframe(
        &mut self,
        key: TrackKey,
        rid: Option<Rid>,
        kind: KeyframeRequestKind,
        now: Instant,
    ) {
        let Some(track) = self.tracks.get_mut(&key) else {
            return;
        };
        if track
            .last_keyframe_request
            .is_some_and(|t| now < t + KEYFRAME_REQUEST_INTERVAL)
        {
            return;
        }
        let rid = rid.or_else(|| track.layers.first().map(|l| l.rid));
        let Some(conn) = self
            .members
            .get_mut(&key.0)
            .and_then(|m| m.publish.as_mut())
        else {
            return;
        };
        if let Some(mut writer) = conn.rtc.writer(key.1) {
            let kind = if writer.is_request_keyframe_possible(kind) {
                kind
            } else if writer.is_request_keyframe_possible(KeyframeRequestKind::Pli) {
                KeyframeRequestKind::Pli
            } else {
                KeyframeRequestKind::Fir
            };
            if writer.request_keyframe(rid, kind).is_ok() {
                track.last_keyframe_request = Some(now);
            }
        }
        self.drain_request(key.0, now);
    }

    /// Media from a publisher goes to every subscriber receiving that track.
    pub(super) fn forward(&mut self, from: ParticipantId, data: MediaData, now: Instant) {
        let key = (from, data.mid);
        let Some(track) = self.tracks.get_mut(&key) else {
            return;
        };
        if track.muted {
            self.counters.dropped += 1;
            return;
        }
        let room = track.room;
        let audio = track.info.stream_kind == StreamKind::Microphone;
        // Layer bitrates, measured over the last second.
        if let Some(rid) = data.rid
            && let Some(layer) = track.layers.iter_mut().find(|l| l.rid == rid)
        {
            layer.bytes += data.data.len() as u64;
            let elapsed = now.saturating_duration_since(layer.since);
            if elapsed >= LAYER_CHECK_INTERVAL {
                layer.bps = layer.bytes * 8 * 1000 / (elapsed.as_millis().max(1) as u64);
                layer.bytes = 0;
                layer.since = now;
            }
        }
        let layers: Vec<(Rid, u64)> = track.layers.iter().map(|l| (l.rid, l.bps)).collect();
        if audio {
            self.note_audio_level(from, &data, now);
        }
        let Some(participants) = self.rooms.get(&room) else {
            return;
        };
        let keyframe = !audio && data.is_keyframe();
        let mut wants_keyframe = Vec::new();
        let mut targets = Vec::with_capacity(participants.len());
        for p in participants {
            if *p != from {
                targets.push(*p);
            }
        }
        for subscriber in targets {
            let Some(member) = self.members.get_mut(&subscriber) else {
                continue;
            };
            let video_slots = member
                .subscribe
                .as_ref()
                .map(|c| {
                    c.slots
                        .iter()
                        .filter(|s| s.kind == MediaKind::Video && s.track.is_some())
                        .count()
                })
                .unwrap_or(0);
            let estimate = member.estimate;
            let Some(conn) = member.subscribe.as_mut() else {
                continue;
            };
            let Some(slot) = conn.slots.iter_mut().find(|s| s.track == Some(key)) else {
                continue;
            };
            if !layers.is_empty() {
                if slot
                    .layer_checked
                    .is_none_or(|t| now >= t + LAYER_CHECK_INTERVAL)
                {
                    slot.layer_checked = Some(now);
                    let budget = estimate.map(|e| e / video_slots.max(1) as u64);
                    let choice = choose_layer(&layers, budget);
                    if slot.layer != Some(choice) && slot.wanted != Some(choice) {
                        slot.wanted = Some(choice);
                        wants_keyframe.push(Some(choice));
                    }
                }
                if keyframe && data.rid.is_some() && data.rid == slot.wanted {
                    slot.layer = slot.wanted.take();
                }
                if data.rid != slot.layer {
                    continue;
                }
            } else if !audio && !slot.synced {
                if !keyframe {
                    wants_keyframe.push(None);
                    continue;
                }
                slot.synced = true;
            }
            let pt = match &slot.pt {
                Some((params, pt)) if *params == data.params => *pt,
                _ => {
                    let Some(writer) = conn.rtc.writer(slot.mid) else {
                        continue;
                    };
                    let Some(pt) = writer.match_params(data.params) else {
                        continue;
                    };
                    slot.pt = Some((data.params, pt));
                    pt
                }
            };
            let mid = slot.mid;
            let Some(mut writer) = conn.rtc.writer(mid) else {
                continue;
            };
            if audio && let Some(level) = data.ext_vals.audio_level {
                writer = writer.audio_level(level, data.ext_vals.voice_activity.unwrap_or(false));
            }
            if writer
                .write(pt, data.network_time, data.time, Arc::clone(&data.data))
                .is_ok()
            {
                self.counters.forwarded += 1;
            }
            // str0m packetizes written media in its timeout handling, not when polled: the
            // connection is due now, and the next timeout pass sends what every publisher wrote
            // to it since (one pass for several frames instead of a poll after each).
            conn.timeout = now;
        }
        for rid in wants_keyframe {
            self.request_keyframe(key, rid, KeyframeRequestKind::Pli, now);
        }
    }

    fn note_audio_level(&mut self, from: ParticipantId, data: &MediaData, now: Instant) {
        let Some(level) = data.ext_vals.audio_level else {
            return;
        };
        // dBov: 0 is the loudest, -127 silence.
        if level < SPEAKING_THRESHOLD_DBOV {
            return;
        }
        let Some(member) = self.members.get_mut(&from) else {
            return;
        };
        member.loud_at = Some(now);
        if !member.speaking {
            member.speaking = true;
            self.events.push(Event::Speaking {
                room: member.room,
                participant: from,
                speaking: true,
            });
        }
    }

    /// Sends what a keyframe request queued on a publisher's connection (its RTCP). The
    /// connection was drained when its last input came, so a request adds no event to handle.
    fn drain_request(&mut self, publisher: ParticipantId, now: Instant) {
        if let Some(conn) = self
            .members
            .get_mut(&publisher)
            .and_then(|m| m.publish.as_mut())
        {
            conn.poll(now, &mut self.out);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use str0m::media::MediaKind;

    use crate::sfu::peer::{Line, media_time};
    use crate::sfu::testnet::{ALL, Burst, CAPS, Net, sfu};
    use crate::sfu::{Direction, Event, StreamKind};

    #[test]
    fn audio_reaches_a_subscriber_with_the_announced_ids_and_nothing_echoes() {
        let mut net = Net::new(sfu());
        net.join(1, CAPS, ALL);
        net.join(2, CAPS, ALL);
        // Bob's subscribe connection comes before any track exists (wire contract A.8).
        let slots = net
            .negotiate(
                2,
                Direction::Subscribe,
                &[
                    Line::receive(MediaKind::Audio),
                    Line::receive(MediaKind::Video),
                ],
            )
            .unwrap();
        let mic = net
            .negotiate(
                1,
                Direction::Publish,
                &[Line::send(MediaKind::Audio, "alice-stream", "alice-mic")],
            )
            .unwrap()[0];
        let announced = net.announced(2);
        assert_eq!(announced.len(), 1, "bob is told about alice's microphone");
        assert_eq!(announced[0].track_id, "alice-mic");
        assert_eq!(announced[0].stream_id, "alice-stream");
        assert_eq!(announced[0].stream_kind, StreamKind::Microphone);
        assert!(
            net.announced(1).is_empty(),
            "alice is not told about her own track"
        );

        // Bob re-offers (rtc.subscribe.refresh): the answer carries the announced ids.
        let (stream, track) = {
            let (offer, _) = net
                .client(2, Direction::Subscribe)
                .offer(&[Line::receive(MediaKind::Audio)])
                .unwrap();
            let answer = net
                .sfu
                .accept_offer(2, Direction::Subscribe, &offer, net.now)
                .unwrap();
            net.client(2, Direction::Subscribe)
                .accept_answer(&answer)
                .unwrap();
            net.client(2, Direction::Subscribe)
                .answered_msid(slots[0])
                .expect("an msid on the audio slot")
        };
        assert_eq!(
            (stream.as_str(), track.as_str()),
            ("alice-stream", "alice-mic")
        );

        net.connect_all();
        net.publish(1, mic, Burst::audio(50, 80));
        let got = net.received(2);
        assert!(got.len() >= 45, "bob got {} of 50 frames", got.len());
        assert!(got.iter().all(|f| f.mid == slots[0] && f.data.len() == 80));
        assert!(net.sfu.counters().forwarded >= 45);
        assert!(
            net.clients
                .iter()
                .filter(|c| c.participant == 1)
                .all(|c| c.peer.received.is_empty()),
            "nothing is echoed to the publisher"
        );
        // The audio level made alice speak, and silence ends it.
        assert!(net.events.contains(&Event::Speaking {
            room: 1,
            participant: 1,
            speaking: true
        }));
        for _ in 0..50 {
            net.step(20);
        }
        assert!(net.events.contains(&Event::Speaking {
            room: 1,
            participant: 1,
            speaking: false
        }));
    }

    #[test]
    fn h264_video_is_forwarded_from_the_first_keyframe() {
        let mut net = Net::new(sfu());
        net.h264 = true;
        net.join(1, CAPS, ALL);
        net.join(2, CAPS, ALL);
        let slot = net
            .negotiate(2, Direction::Subscribe, &[Line::receive(MediaKind::Video)])
            .unwrap()[0];
        let camera = net
            .negotiate(
                1,
                Direction::Publish,
                &[Line::send(MediaKind::Video, "s", "cam")],
            )
            .unwrap()[0];
        assert!(net.client(2, Direction::Subscribe).answer.contains("H264"));
        net.connect_all();
        // Annex B access units: an IDR slice every tenth frame, non-IDR slices otherwise. The
        // first frames are not IDR, so the subscriber waits for the keyframe it asked for.
        for n in 0..25u64 {
            net.now += Duration::from_millis(33);
            let now = net.now;
            let nal = if n % 10 == 5 { 0x65 } else { 0x41 };
            let mut frame = vec![0, 0, 0, 1, nal];
            frame.extend(std::iter::repeat_n(n as u8 | 0x10, 1500));
            net.client(1, Direction::Publish).write(
                camera,
                now,
                media_time(MediaKind::Video, n, 3000),
                &frame,
                None,
                None,
            );
            net.step(0);
        }
        for _ in 0..20 {
            net.step(20);
        }
        let got = net.received(2).clone();
        assert!(got.iter().all(|f| f.mid == slot));
        assert!(
            got.first().is_some_and(|f| f.keyframe),
            "the first frame is the IDR"
        );
        assert!(got.len() >= 18, "frames 5..25 arrive: {}", got.len());
        assert!(net.client(1, Direction::Publish).keyframe_requests >= 1);
    }

    #[test]
    fn lost_packets_are_recovered_by_nack_and_keyframe_requests_reach_the_publisher() {
        let mut net = Net::new(sfu());
        net.join(1, CAPS, ALL);
        net.join(2, CAPS, ALL);
        let slot = net
            .negotiate(2, Direction::Subscribe, &[Line::receive(MediaKind::Video)])
            .unwrap()[0];
        let camera = net
            .negotiate(
                1,
                Direction::Publish,
                &[Line::send(MediaKind::Video, "s", "cam")],
            )
            .unwrap()[0];
        net.connect_all();
        // Interframes first: they are held back from the new subscriber, and the publisher is
        // asked for a keyframe.
        for n in 0..3 {
            net.now += Duration::from_millis(33);
            let now = net.now;
            net.client(1, Direction::Publish).write(
                camera,
                now,
                media_time(MediaKind::Video, n, 3000),
                &[1u8; 500],
                None,
                None,
            );
            net.step(0);
        }
        for _ in 0..5 {
            net.step(20);
        }
        assert!(net.received(2).is_empty());
        assert!(net.client(1, Direction::Publish).keyframe_requests >= 1);

        // One in twenty datagrams from clients is lost; frames span three packets each, so
        // without retransmission about one frame in seven would be broken.
        net.drop_upstream = Some(Box::new(|n| n % 20 == 0));
        net.publish(1, camera, Burst::video(40, 3000));
        net.drop_upstream = None;
        for _ in 0..20 {
            net.step(20);
        }
        let forwarded = net.sfu.counters().forwarded;
        assert!(
            forwarded >= 39,
            "the SFU's NACKs recover the lost packets: {forwarded} of 40 frames complete"
        );
        let got = net.received(2).len();
        assert!(got >= 36, "the subscriber got {got} of 40");

        // A subscriber's PLI goes to the publisher (once the throttle allows).
        let before = net.client(1, Direction::Publish).keyframe_requests;
        for _ in 0..30 {
            net.step(20);
        }
        net.client(2, Direction::Subscribe).request_keyframe(slot);
        for _ in 0..5 {
            net.step(20);
        }
        assert!(net.client(1, Direction::Publish).keyframe_requests > before);
    }

    #[test]
    fn simulcast_layer_follows_the_subscriber_estimate_switching_on_a_keyframe() {
        let mut net = Net::new(sfu());
        net.join(1, CAPS, ALL);
        net.join(2, CAPS, ALL);
        net.negotiate(2, Direction::Subscribe, &[Line::receive(MediaKind::Video)])
            .unwrap();
        let mut line = Line::send(MediaKind::Video, "s", "cam");
        line.rids = vec!["h", "l"];
        let camera = net.negotiate(1, Direction::Publish, &[line]).unwrap()[0];
        net.connect_all();
        // h frames are 1200 bytes, l frames 600 (about 290 and 145 kbit/s at 30 fps).
        net.publish(1, camera, Burst::video(60, 1200).layers(&["h", "l"]));
        let sizes = |net: &mut Net| -> Vec<usize> {
            net.received(2).iter().map(|f| f.data.len()).collect()
        };
        let first = sizes(&mut net);
        assert!(first.len() >= 40, "frames: {}", first.len());
        assert!(
            first.iter().rev().take(20).all(|s| *s == 1200),
            "without an estimate the best layer is sent"
        );
        let seen = first.len();

        net.sfu.set_estimate(2, 200_000);
        net.publish(1, camera, Burst::video(60, 1200).layers(&["h", "l"]));
        let after: Vec<usize> = sizes(&mut net)[seen..].to_vec();
        assert!(after.iter().rev().take(20).all(|s| *s == 600), "{after:?}");
        // The switch happened at a keyframe: no l frame before the first l keyframe.
        let frames = &net.received(2)[seen..];
        let first_low = frames.iter().position(|f| f.data.len() == 600).unwrap();
        assert!(frames[first_low].keyframe);
    }
}
