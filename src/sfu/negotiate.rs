//! Negotiation: a client's offers for its publish and subscribe connections and the SFU's
//! answers, checked first (size, number of m-lines, what the participant may send), and the
//! trickled ICE candidates both ways. The first offer for a connection creates it
//! (`conn.rs`); every offer records the connection's m-lines, which then become tracks and
//! receive slots (`assign.rs`). A subscriber's answer names, on each m-line, the ids of the
//! track it carries.

use std::collections::HashMap;
use std::time::Instant;

use str0m::Candidate;
use str0m::change::SdpOffer;
use str0m::media::Mid;

use super::{ParticipantId, Sfu, sdp};

/// Which way a peer connection carries media, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Publish,
    Subscribe,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Publish => "publish",
            Direction::Subscribe => "subscribe",
        }
    }

    pub fn parse(text: &str) -> Option<Direction> {
        match text {
            "publish" => Some(Direction::Publish),
            "subscribe" => Some(Direction::Subscribe),
            _ => None,
        }
    }
}

/// Largest SDP offer accepted, in bytes.
pub const MAX_SDP_BYTES: usize = 64 * 1024;
/// Most m-lines an offer may carry (an offer with hundreds is refused).
pub const MAX_MEDIA_LINES: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SfuError {
    #[error("the offer is not valid SDP: {0}")]
    BadSdp(String),
    #[error("the offer has more than {MAX_MEDIA_LINES} media lines")]
    TooManyMedia,
    #[error("negotiation failed: {0}")]
    Negotiation(String),
    #[error("the offer publishes {0} media this participant may not send")]
    NotPermitted(&'static str),
    #[error("not a participant of a room here")]
    UnknownParticipant,
}

impl SfuError {
    /// The `rtc.error` code of the wire contract.
    pub fn code(&self) -> &'static str {
        match self {
            // A listen-only participant (or one without camera or screen) publishing: the
            // client ends the call on it (wire contract A.10).
            SfuError::NotPermitted(_) => "rtc_media_denied",
            SfuError::UnknownParticipant => "rtc_join_denied",
            _ => "rtc_negotiation_failed",
        }
    }
}

impl Sfu {
    /// Answers a participant's offer for one of its connections, creating the connection on the
    /// first offer and renegotiating it on later ones.
    pub fn accept_offer(
        &mut self,
        participant: ParticipantId,
        direction: Direction,
        offer: &str,
        now: Instant,
    ) -> Result<String, SfuError> {
        if offer.len() > MAX_SDP_BYTES {
            return Err(SfuError::BadSdp("too large".into()));
        }
        if offer.matches("\nm=").count() > MAX_MEDIA_LINES {
            return Err(SfuError::TooManyMedia);
        }
        let parsed =
            SdpOffer::from_sdp_string(offer).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let Some(member) = self.members.get(&participant) else {
            return Err(SfuError::UnknownParticipant);
        };
        if direction == Direction::Publish {
            let permit = member.permit;
            for (kind, sends) in sdp::sending_kinds(offer) {
                if !sends {
                    continue;
                }
                if kind == "audio" && !permit.audio {
                    return Err(SfuError::NotPermitted("audio"));
                }
                if kind == "video" && !permit.camera && !permit.screen {
                    return Err(SfuError::NotPermitted("video"));
                }
            }
        }
        let created = !member.conn_exists(direction);
        if created {
            let conn = self.new_conn(&member.candidates, direction, now)?;
            self.by_ufrag
                .insert(conn.ufrag.clone(), (participant, direction));
            let member = self.members.get_mut(&participant).expect("checked above");
            match direction {
                Direction::Publish => member.publish = Some(conn),
                Direction::Subscribe => member.subscribe = Some(conn),
            }
        }
        let conn = self
            .members
            .get_mut(&participant)
            .and_then(|m| m.conn(direction))
            .expect("created above");
        let answer = match conn.rtc.sdp_api().accept_offer(parsed) {
            Ok(answer) => answer,
            Err(e) => {
                // A first offer that fails leaves no connection behind.
                if created {
                    let member = self.members.get_mut(&participant).expect("checked above");
                    let conn = match direction {
                        Direction::Publish => member.publish.take(),
                        Direction::Subscribe => member.subscribe.take(),
                    };
                    if let Some(conn) = conn {
                        self.forget_conn(&conn);
                    }
                }
                return Err(SfuError::Negotiation(e.to_string()));
            }
        };
        // An offer with new ICE credentials is an ICE restart (the client's first recovery
        // step): str0m answers with new local ones, and a check from an address not known yet
        // names them, so routing follows.
        let ufrag = conn.rtc.direct_api().local_ice_credentials().ufrag;
        let restarted = (ufrag != conn.ufrag).then(|| std::mem::replace(&mut conn.ufrag, ufrag));
        // str0m reports new m-lines only once media can flow; take them from the offer now, so
        // tracks are announced and slots filled while ICE and DTLS are still under way.
        for mid in sdp::mids(offer) {
            conn.note_mid(Mid::from(mid), direction);
        }
        if let Some(old) = restarted {
            let new = conn.ufrag.clone();
            self.by_ufrag.remove(&old);
            self.by_ufrag.insert(new, (participant, direction));
        }
        self.drain(participant, direction, now);
        if direction == Direction::Publish {
            self.refresh_tracks(participant, now);
        }
        let room = self.members[&participant].room;
        self.reassign(room);
        let answer = answer.to_sdp_string();
        Ok(match direction {
            Direction::Publish => answer,
            Direction::Subscribe => self.label_answer(participant, &answer),
        })
    }
    /// Rewrites the `msid` of each m-line of a subscriber's answer to the ids of the track it
    /// carries, as announced in `rtc.track.published`.
    fn label_answer(&self, participant: ParticipantId, answer: &str) -> String {
        let Some(conn) = self
            .members
            .get(&participant)
            .and_then(|m| m.subscribe.as_ref())
        else {
            return answer.to_owned();
        };
        let labels: HashMap<String, (&str, &str)> = conn
            .slots
            .iter()
            .filter_map(|slot| {
                let track = self.tracks.get(&slot.track?)?;
                Some((
                    slot.mid.to_string(),
                    (track.info.stream_id.as_str(), track.info.track_id.as_str()),
                ))
            })
            .collect();
        sdp::relabel(answer, &labels)
    }

    /// A trickled remote ICE candidate (`rtc.ice.candidate`). A bad one is ignored.
    pub fn add_remote_candidate(
        &mut self,
        participant: ParticipantId,
        direction: Direction,
        candidate: &str,
    ) -> bool {
        let text = candidate.trim().trim_start_matches("a=");
        if text.is_empty() {
            // End of candidates.
            return true;
        }
        let Ok(candidate) = Candidate::from_sdp_string(text) else {
            return false;
        };
        match self
            .members
            .get_mut(&participant)
            .and_then(|m| m.conn(direction))
        {
            Some(conn) => {
                conn.rtc.add_remote_candidate(candidate);
                true
            }
            None => false,
        }
    }

    /// The local candidates of a participant's connections, as SDP text (for trickling them
    /// to the client).
    pub fn local_candidates(&self, participant: ParticipantId) -> Vec<String> {
        let Some(member) = self.members.get(&participant) else {
            return Vec::new();
        };
        member
            .candidates
            .iter()
            .filter_map(|addr| Candidate::host(*addr, "udp").ok())
            .map(|c| c.to_sdp_string())
            .collect()
    }
}

/// The first `a=mid` of an SDP (the `sdp_mid` of a candidate trickled for the whole bundle).
pub fn first_mid(sdp: &str) -> Option<&str> {
    sdp::mids(sdp).into_iter().next()
}

#[cfg(test)]
mod tests {
    use str0m::media::{Direction as MediaDirection, MediaKind};

    use crate::sfu::peer::{Line, Peer};
    use crate::sfu::testnet::{ALL, Burst, CAPS, Net, sfu, stun_binding};
    use crate::sfu::{Direction, Event, Permit, SfuError, StreamKind};

    #[test]
    fn renegotiation_adds_camera_and_screen_and_removal_withdraws() {
        let mut net = Net::new(sfu());
        net.join(1, CAPS, ALL);
        net.join(2, CAPS, ALL);
        net.negotiate(2, Direction::Subscribe, &[Line::receive(MediaKind::Audio)])
            .unwrap();
        net.negotiate(
            1,
            Direction::Publish,
            &[Line::send(MediaKind::Audio, "s", "mic")],
        )
        .unwrap();
        // The same publish connection renegotiates twice: camera, then screen share.
        let camera = net
            .negotiate(
                1,
                Direction::Publish,
                &[Line::send(MediaKind::Video, "s", "cam")],
            )
            .unwrap()[0];
        net.sfu.hint_stream_kind(1, "screen", StreamKind::Screen);
        net.negotiate(
            1,
            Direction::Publish,
            &[Line::send(MediaKind::Video, "s2", "screen")],
        )
        .unwrap();
        let kinds: Vec<(String, StreamKind)> = net
            .announced(2)
            .iter()
            .map(|t| (t.track_id.clone(), t.stream_kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("mic".to_owned(), StreamKind::Microphone),
                ("cam".to_owned(), StreamKind::Camera),
                ("screen".to_owned(), StreamKind::Screen)
            ]
        );
        // Bob adds two video slots: camera and screen both flow.
        let videos = net
            .negotiate(
                2,
                Direction::Subscribe,
                &[
                    Line::receive(MediaKind::Video),
                    Line::receive(MediaKind::Video),
                ],
            )
            .unwrap();
        net.connect_all();
        net.publish(1, camera, Burst::video(20, 1000));
        let got = net.received(2).clone();
        assert!(got.len() >= 18, "camera frames: {}", got.len());
        assert!(got.iter().all(|f| videos.contains(&f.mid)));

        // The camera stops (m-line inactive): it is withdrawn from bob.
        {
            let peer = net.client(1, Direction::Publish);
            let mut change = peer.rtc.sdp_api();
            change.set_direction(camera, MediaDirection::Inactive);
            let (offer, pending) = change.apply().unwrap();
            let answer = net
                .sfu
                .accept_offer(1, Direction::Publish, &offer.to_sdp_string(), net.now)
                .unwrap();
            net.client(1, Direction::Publish)
                .rtc
                .sdp_api()
                .accept_answer(
                    pending,
                    str0m::change::SdpAnswer::from_sdp_string(&answer).unwrap(),
                )
                .unwrap();
            net.collect();
        }
        let left: Vec<String> = net
            .announced(2)
            .iter()
            .map(|t| t.track_id.clone())
            .collect();
        assert_eq!(left, ["mic", "screen"]);
        assert!(net.events.iter().any(|e| matches!(e,
        Event::Withdraw { to: 2, track } if track.track_id == "cam")));
    }

    /// The `a=ice-ufrag` of an SDP.
    fn ufrag(sdp: &str) -> String {
        sdp.lines()
            .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
            .expect("an ice-ufrag")
            .to_owned()
    }

    #[test]
    fn an_ice_restart_on_either_connection_keeps_everyone_s_media_flowing() {
        let mut net = Net::new(sfu());
        for p in 1..=3 {
            net.join(p, CAPS, ALL);
        }
        for p in [2, 3] {
            net.negotiate(p, Direction::Subscribe, &[Line::receive(MediaKind::Audio)])
                .unwrap();
        }
        let mic = net
            .negotiate(
                1,
                Direction::Publish,
                &[Line::send(MediaKind::Audio, "s", "mic")],
            )
            .unwrap()[0];
        for p in [2, 3] {
            let (offer, _) = net
                .client(p, Direction::Subscribe)
                .offer(&[])
                .unwrap_or_else(|| {
                    let peer = net.client(p, Direction::Subscribe);
                    peer.offer(&[Line::receive(MediaKind::Audio)]).unwrap()
                });
            let answer = net
                .sfu
                .accept_offer(p, Direction::Subscribe, &offer, net.now)
                .unwrap();
            net.client(p, Direction::Subscribe)
                .accept_answer(&answer)
                .unwrap();
        }
        net.connect_all();
        net.publish(1, mic, Burst::audio(20, 80));
        let before = [net.received(2).len(), net.received(3).len()];
        assert!(before.iter().all(|&n| n >= 18), "{before:?}");

        // The publisher restarts ICE (the client's first recovery step), then a subscriber
        // does from a new network address (its Wi-Fi dropped): each answer has new
        // credentials, the new address is learned from a check naming them, and media goes on
        // for everyone.
        for (p, direction, moved) in [
            (1, Direction::Publish, None),
            (2, Direction::Subscribe, Some("10.0.9.3:7000")),
        ] {
            if let Some(addr) = moved {
                net.client(p, direction).move_to(addr.parse().unwrap());
            }
            let old_answer = net.client(p, direction).answer.clone();
            let offer = net.client(p, direction).restart_ice().expect("an offer");
            let answer = net.sfu.accept_offer(p, direction, &offer, net.now).unwrap();
            assert_ne!(ufrag(&answer), ufrag(&old_answer), "new local credentials");
            net.client(p, direction).accept_answer(&answer).unwrap();
            net.collect();
            for _ in 0..50 {
                net.step(10);
            }
            let counts = [net.received(2).len(), net.received(3).len()];
            net.publish(1, mic, Burst::audio(20, 80));
            let after = [net.received(2).len(), net.received(3).len()];
            for i in 0..2 {
                assert!(
                    after[i] - counts[i] >= 18,
                    "after the restart of {p}'s {direction:?}: {counts:?} -> {after:?}"
                );
            }
        }
        assert!(
            net.events
                .iter()
                .all(|e| !matches!(e, Event::Withdraw { .. })),
            "no track was withdrawn by a restart"
        );
    }

    #[test]
    fn strangers_garbage_bad_offers_and_unpermitted_media_are_refused() {
        let mut net = Net::new(sfu());
        let now = net.now;
        net.sfu
            .handle_datagram(now, "10.9.9.9:1".parse().unwrap(), b"garbage");
        net.sfu
            .handle_datagram(now, "10.9.9.9:1".parse().unwrap(), &[0u8; 1500]);
        assert!(net.sfu.take_datagrams().is_empty());
        assert_eq!(net.sfu.counters().dropped, 2);
        let (offer, _) = Peer::new("10.0.0.9:9".parse().unwrap(), now)
            .offer(&[Line::receive(MediaKind::Audio)])
            .unwrap();
        assert_eq!(
            net.sfu.accept_offer(1, Direction::Subscribe, &offer, now),
            Err(SfuError::UnknownParticipant)
        );
        net.join(1, CAPS, ALL);
        assert!(matches!(
            net.sfu.accept_offer(1, Direction::Publish, "not sdp", now),
            Err(SfuError::BadSdp(_))
        ));
        let many = format!("v=0\n{}", "m=audio 9 UDP/TLS/RTP/SAVPF 111\n".repeat(200));
        assert_eq!(
            net.sfu.accept_offer(1, Direction::Publish, &many, now),
            Err(SfuError::TooManyMedia)
        );
        assert_eq!(
            net.sfu.connection_count(),
            0,
            "a refused offer leaves nothing behind"
        );

        // A listen-only participant may not publish audio.
        let listen_only = Permit {
            audio: false,
            camera: false,
            screen: false,
        };
        net.join(2, CAPS, listen_only);
        let err = net
            .negotiate(
                2,
                Direction::Publish,
                &[Line::send(MediaKind::Audio, "s", "m")],
            )
            .unwrap_err();
        assert_eq!(err.code(), "rtc_media_denied");
        // It may still receive.
        net.negotiate(2, Direction::Subscribe, &[Line::receive(MediaKind::Audio)])
            .unwrap();
        // A STUN binding request naming no connection of ours is dropped.
        let dropped = net.sfu.counters().dropped;
        net.sfu.handle_datagram(
            now,
            "10.9.9.9:2".parse().unwrap(),
            &stun_binding("nobody:else"),
        );
        assert_eq!(net.sfu.counters().dropped, dropped + 1);
        assert!(net.sfu.take_datagrams().is_empty());
        assert_eq!(net.sfu.connection_count(), 1);
        net.sfu.remove_participant(2);
        net.sfu.remove_participant(1);
        assert_eq!(net.sfu.participant_count(), 0);
        assert!(
            net.sfu.next_timeout().is_none(),
            "an empty SFU has no timers"
        );
    }
}
