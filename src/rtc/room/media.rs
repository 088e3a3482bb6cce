//! The rooms' media: the shard's [`Sfu`] behind the signaling. Offers become answers followed
//! by the server's ICE candidates, trickled client candidates and datagrams go to the SFU, its
//! timer is the rooms' timer, and what it reports becomes frames: `rtc.track.published` /
//! `rtc.track.unpublished` and one `rtc.subscribe.refresh` per subscriber whose tracks changed,
//! `rtc.participant.speaking` to a room.

use std::net::SocketAddr;
use std::time::Instant;

use serde::Serialize;

use super::Rooms;
use crate::realtime::{Delivery, SocketRef};
use crate::sfu::{self, Datagram, Direction, Sfu};
use crate::wire::signaling::{error_frame, frame};

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
    /// Rooms whose media goes through `media` (the shard's SFU).
    pub fn with_media(media: Sfu) -> Rooms {
        Rooms {
            media: Some(media),
            ..Rooms::default()
        }
    }

    /// `rtc.offer.publish` / `rtc.offer.subscribe` from `socket`: the answer, then the server's
    /// ICE candidates for that connection (tagged with `direction`), then whatever the
    /// negotiation changed for the others. A refused offer is the one `rtc.error` to send
    /// (echoing `request_id`) before the socket is closed.
    pub fn offer(
        &mut self,
        socket: SocketRef,
        direction: Direction,
        sdp: &str,
        request_id: Option<&str>,
        now: Instant,
    ) -> Result<Vec<Delivery>, Delivery> {
        let refuse = |code: &str, message: &str, retryable: bool| Delivery {
            to: socket,
            frame: error_frame(code, message, retryable, request_id),
        };
        let Some(number) = self.by_socket.get(&socket).map(|(_, n)| *n) else {
            return Err(refuse(
                "rtc_join_denied",
                "join first: rtc.join {ticket}",
                false,
            ));
        };
        let Some(media) = self.media.as_mut() else {
            return Err(refuse(
                "rtc_negotiation_failed",
                "media is not available on this server",
                true,
            ));
        };
        let answer = match media.accept_offer(number, direction, sdp, now) {
            Ok(answer) => answer,
            Err(e) => return Err(refuse(e.code(), &e.to_string(), false)),
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
        Ok(out)
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
    pub(super) fn media_deliveries(&mut self) -> Vec<Delivery> {
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
}

#[cfg(test)]
mod tests {
    use super::super::testing::{claims, json, seat, sock};
    use super::*;

    /// The code and `retryable` of a refusal, which echoes the offer's `request_id`.
    fn error(out: &Result<Vec<Delivery>, Delivery>) -> (String, bool) {
        use simd_json::prelude::*;
        let Err(refusal) = out else {
            panic!("not refused: {out:?}");
        };
        let doc = json(&refusal.frame);
        assert_eq!(doc["type"].as_str(), Some("rtc.error"));
        assert_eq!(doc["request_id"].as_str(), Some("offer_1"));
        let payload = &doc["payload"];
        (
            payload["code"].as_str().unwrap().to_owned(),
            payload["retryable"].as_bool().unwrap(),
        )
    }

    #[test]
    fn an_offer_needs_a_join_and_media_and_a_refused_one_is_one_error() {
        let now = Instant::now();
        let stranger: SocketAddr = "10.0.0.9:9".parse().unwrap();
        let mut rooms = Rooms::default();
        let offer = |rooms: &mut Rooms, sdp: &str| {
            rooms.offer(sock(1), Direction::Publish, sdp, Some("offer_1"), now)
        };
        assert_eq!(
            error(&offer(&mut rooms, "v=0")),
            ("rtc_join_denied".to_owned(), false)
        );
        rooms
            .join(&claims("uid_a"), sock(1), "t", seat(10))
            .unwrap();
        assert_eq!(
            error(&offer(&mut rooms, "v=0")),
            ("rtc_negotiation_failed".to_owned(), true),
            "no media on this server: worth another try"
        );
        assert!(rooms.datagram(now, stranger, None, b"garbage").is_empty());
        assert_eq!(rooms.media_stats(), (1, 0, sfu::Counters::default()));

        let mut rooms = Rooms::with_media(Sfu::new(50000));
        rooms
            .join(&claims("uid_a"), sock(1), "t", seat(10))
            .unwrap();
        assert_eq!(
            error(&offer(&mut rooms, "not sdp")),
            ("rtc_negotiation_failed".to_owned(), false)
        );
        assert!(rooms.datagram(now, stranger, None, b"garbage").is_empty());
        let (participants, connections, counters) = rooms.media_stats();
        assert_eq!((participants, connections, counters.dropped), (1, 0, 1));
        assert!(rooms.take_datagrams().is_empty());
    }
}
