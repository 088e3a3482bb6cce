//! A connection: one client peer connection's str0m `Rtc` (ICE-lite, the shard's DTLS
//! certificate, no transport-wide congestion control on a subscribe connection), its timer,
//! and the drain of its output after every input: datagrams go out, the events are handed to
//! track assignment (`assign.rs`) and forwarding (`forward.rs`). The SFU's timers are here too:
//! the earliest due connection or speaker, and what happens when time passes.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use str0m::bwe::BweKind;
use str0m::format::PayloadParams;
use str0m::media::{Mid, Rid};
use str0m::{Candidate, Event as RtcEvent, Input, Output, Rtc};

use super::assign::Slot;
use super::{Datagram, Direction, ParticipantId, Sfu, SfuError};

/// How often str0m checks a connection when it asks for nothing sooner.
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// A peer connection of a participant.
pub(super) struct Conn {
    pub(super) rtc: Rtc,
    /// The local candidates it advertised: where its datagrams arrive.
    pub(super) candidates: Vec<SocketAddr>,
    pub(super) ufrag: String,
    /// Client addresses that passed a STUN check for it (a client checks from each of its
    /// candidates; the newest [`super::MAX_ADDRESSES_PER_CONNECTION`] are kept).
    pub(super) addrs: Vec<SocketAddr>,
    /// The local address each client address last sent to, as the kernel said (newest
    /// [`super::MAX_ADDRESSES_PER_CONNECTION`]): what the answers to it are sent from.
    pub(super) arrived_at: Vec<(SocketAddr, IpAddr)>,
    pub(super) timeout: Instant,
    /// Its m-lines, with the simulcast layers each was offered with.
    pub(super) mids: Vec<(Mid, Vec<Rid>)>,
    pub(super) slots: Vec<Slot>,
}

impl Sfu {
    pub(super) fn new_conn(
        &self,
        candidates: &[SocketAddr],
        direction: Direction,
        now: Instant,
    ) -> Result<Conn, SfuError> {
        if candidates.is_empty() {
            return Err(SfuError::Negotiation("no media address to offer".into()));
        }
        let mut config = Rtc::builder()
            .set_ice_lite(true)
            .set_stats_interval(Some(super::STATS_INTERVAL));
        if let Some(cert) = &self.cert {
            config = config.set_dtls_cert(cert.clone());
        }
        if direction == Direction::Subscribe {
            config = without_transport_cc(config);
        }
        let mut rtc = config.build(now);
        for candidate in candidates {
            let local = Candidate::host(*candidate, "udp")
                .map_err(|e| SfuError::Negotiation(e.to_string()))?;
            rtc.add_local_candidate(local);
        }
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        Ok(Conn {
            rtc,
            candidates: candidates.to_vec(),
            ufrag,
            addrs: Vec::new(),
            arrived_at: Vec::new(),
            timeout: now,
            mids: Vec::new(),
            slots: Vec::new(),
        })
    }

    /// The earliest moment something is due: a connection's timeout, or the end of a
    /// speaker's hold.
    pub fn next_timeout(&self) -> Option<Instant> {
        let connections = self
            .members
            .values()
            .flat_map(|m| [m.publish.as_ref(), m.subscribe.as_ref()])
            .flatten()
            .map(|c| c.timeout)
            .min();
        connections
            .into_iter()
            .chain(self.speaking_deadline())
            .min()
    }

    /// Time passes: connections that are due get their timeout; silent speakers stop speaking;
    /// dead connections are dropped.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        for (id, m) in &self.members {
            for (direction, conn) in [
                (Direction::Publish, m.publish.as_ref()),
                (Direction::Subscribe, m.subscribe.as_ref()),
            ] {
                if conn.is_some_and(|c| c.timeout <= now) {
                    due.push((*id, direction));
                }
            }
        }
        self.expire_speakers(now);
        for (participant, direction) in due {
            if let Some(conn) = self
                .members
                .get_mut(&participant)
                .and_then(|m| m.conn(direction))
            {
                let _ = conn.rtc.handle_input(Input::Timeout(now));
            }
            self.drain(participant, direction, now);
            self.drop_if_dead(participant, direction);
        }
    }

    fn drop_if_dead(&mut self, participant: ParticipantId, direction: Direction) {
        let Some(member) = self.members.get_mut(&participant) else {
            return;
        };
        let slot = match direction {
            Direction::Publish => &mut member.publish,
            Direction::Subscribe => &mut member.subscribe,
        };
        if slot.as_ref().is_some_and(|c| !c.rtc.is_alive()) {
            let conn = slot.take().expect("checked");
            let room = member.room;
            self.forget_conn(&conn);
            if direction == Direction::Publish {
                for key in self.tracks_of(participant) {
                    self.remove_track(key);
                }
            }
            self.reassign(room);
        }
    }

    /// Drains one connection's output: datagrams, media to forward, m-lines that appeared or
    /// changed, keyframe requests, bandwidth estimates.
    pub(super) fn drain(&mut self, participant: ParticipantId, direction: Direction, now: Instant) {
        let mut media = Vec::new();
        let mut changed = false;
        let mut keyframe_requests = Vec::new();
        let mut estimate = None;
        {
            let Some(conn) = self
                .members
                .get_mut(&participant)
                .and_then(|m| m.conn(direction))
            else {
                return;
            };
            for event in conn.poll(now, &mut self.out) {
                match event {
                    RtcEvent::MediaAdded(added) => {
                        changed |= conn.note_mid(added.mid, direction);
                    }
                    RtcEvent::MediaChanged(_) => changed = true,
                    RtcEvent::MediaData(data) => media.push(data),
                    RtcEvent::KeyframeRequest(request) => {
                        keyframe_requests.push((request.mid, request.kind))
                    }
                    RtcEvent::EgressBitrateEstimate(
                        BweKind::Twcc { estimate: e, .. } | BweKind::Remb { estimate: e, .. },
                    ) => estimate = Some(e.as_u64()),
                    RtcEvent::MediaIngressStats(stats) => {
                        self.counters.quality.observe_ingress(&stats)
                    }
                    RtcEvent::MediaEgressStats(stats) => {
                        self.counters.quality.observe_egress(&stats)
                    }
                    _ => {}
                }
            }
        }
        if let Some(bps) = estimate
            && let Some(m) = self.members.get_mut(&participant)
        {
            m.estimate = Some(bps);
        }
        if changed {
            if direction == Direction::Publish {
                self.refresh_tracks(participant, now);
            }
            if let Some(room) = self.members.get(&participant).map(|m| m.room) {
                self.reassign(room);
            }
        }
        for (mid, kind) in keyframe_requests {
            self.keyframe_request_from(participant, mid, kind, now);
        }
        for data in media {
            self.forward(participant, data, now);
        }
    }
}

impl Conn {
    /// Polls str0m until it names its next timeout: datagrams go to `out`, events come back
    /// (none, without allocating, when only datagrams came out).
    pub(super) fn poll(&mut self, now: Instant, out: &mut Vec<Datagram>) -> Vec<RtcEvent> {
        let mut events = Vec::new();
        loop {
            match self.rtc.poll_output() {
                Err(_) => {
                    self.timeout = now + IDLE_CHECK;
                    break;
                }
                Ok(Output::Timeout(t)) => {
                    self.timeout = t.min(now + IDLE_CHECK);
                    break;
                }
                Ok(Output::Transmit(t)) => out.push(Datagram {
                    destination: t.destination,
                    source: self.source_for(t.destination),
                    contents: Vec::from(t.contents),
                }),
                Ok(Output::Event(event)) => events.push(event),
            }
        }
        events
    }

    /// Records an m-line of the connection (a receive slot on a subscribe connection). Whether
    /// it was new comes back.
    pub(super) fn note_mid(&mut self, mid: Mid, direction: Direction) -> bool {
        if self.mids.iter().any(|(m, _)| *m == mid) {
            return false;
        }
        let Some(media) = self.rtc.media(mid) else {
            return false;
        };
        let kind = media.kind();
        let rids = match media.rids_rx() {
            str0m::media::Rids::Specific(list) => list.clone(),
            _ => Vec::new(),
        };
        self.mids.push((mid, rids));
        if direction == Direction::Subscribe {
            self.slots.push(Slot::new(mid, kind));
        }
        true
    }
}

/// A subscribe connection negotiates no transport-wide congestion control (neither the
/// `transport-cc` feedback nor its header extension). It runs no send-side estimator (see the
/// notes of `sfu`), so TWCC feedback would tell it nothing; without it, a browser estimates on
/// its receiving side and sends REMB, which is what picks each subscriber's simulcast layer.
fn without_transport_cc(mut config: str0m::RtcConfig) -> str0m::RtcConfig {
    let params: Vec<PayloadParams> = config
        .codec_config()
        .params()
        .iter()
        .map(|p| {
            let mut p = *p;
            p.set_fb_transport_cc(false);
            p
        })
        .collect();
    *config.codec_config() = str0m::format::CodecConfig::new_from_payload_params(params);
    let mut extensions = str0m::rtp::ExtensionMap::empty();
    for (id, extension) in str0m::rtp::ExtensionMap::standard().iter() {
        if *extension != str0m::rtp::Extension::TransportSequenceNumber {
            extensions.set(id, extension.clone());
        }
    }
    config.set_extension_map(extensions)
}

#[cfg(test)]
mod tests {
    use str0m::media::MediaKind;

    use crate::sfu::Direction;
    use crate::sfu::peer::Line;
    use crate::sfu::testnet::{ALL, CAPS, Net, sfu};

    /// Chromium sends REMB (the estimate that picks simulcast layers) only when transport-cc is
    /// not negotiated; publish connections keep it for the publisher's own congestion control.
    #[test]
    fn subscribe_answers_leave_out_transport_cc_so_browsers_send_remb() {
        const TWCC_URI: &str = "transport-wide-cc";
        let mut net = Net::new(sfu());
        net.join(1, CAPS, ALL);
        net.negotiate(
            1,
            Direction::Subscribe,
            &[
                Line::receive(MediaKind::Audio),
                Line::receive(MediaKind::Video),
            ],
        )
        .unwrap();
        net.negotiate(
            1,
            Direction::Publish,
            &[Line::send(MediaKind::Video, "s", "cam")],
        )
        .unwrap();
        let subscribe = net.client(1, Direction::Subscribe).answer.clone();
        assert!(!subscribe.contains("transport-cc"), "{subscribe}");
        assert!(!subscribe.contains(TWCC_URI), "{subscribe}");
        assert!(subscribe.contains("goog-remb"), "{subscribe}");
        let publish = net.client(1, Direction::Publish).answer.clone();
        assert!(publish.contains("transport-cc"), "{publish}");
        assert!(publish.contains(TWCC_URI), "{publish}");
    }
}
