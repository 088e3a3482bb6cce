//! The SFU core (sans-IO, on str0m): one `Rtc` per peer connection, datagrams and time in,
//! datagrams and events out. A participant has two peer connections (wire contract A.8): one it
//! publishes on, one it receives on; the client always offers and the SFU answers (ICE-lite on
//! the server side). Media data from a publisher is written to every other participant's
//! subscribe connection that has a free receive slot of that kind.
//!
//! This first part forwards audio and video frames between participants. Not yet: track
//! announcements with stable ids (`rtc.track.published`), renegotiation when tracks appear,
//! receive caps, simulcast layers, keyframe requests on PLI/FIR, speaking state.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::media::{MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// Which way a peer connection carries media, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Publish,
    Subscribe,
}

/// Largest SDP offer accepted, in bytes.
pub const MAX_SDP_BYTES: usize = 64 * 1024;
/// Most m-lines an offer may carry (an offer with hundreds is refused).
pub const MAX_MEDIA_LINES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SfuError {
    #[error("the offer is not valid SDP: {0}")]
    BadSdp(String),
    #[error("the offer has too many media lines")]
    TooManyMedia,
    #[error("negotiation failed: {0}")]
    Negotiation(String),
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// A source of media: the publishing participant and its m-line.
type Source = (u64, Mid);

/// A receive m-line of a subscribe connection and the source it carries, if any.
type Slot = (Mid, MediaKind, Option<Source>);

struct Peer {
    participant: u64,
    direction: Direction,
    rtc: Rtc,
    /// For subscribe connections: receive slots (mids) by kind, and whether they are taken.
    slots: Vec<Slot>,
}

/// The SFU of one room.
pub struct Sfu {
    local: SocketAddr,
    peers: Vec<Peer>,
    out: Vec<Datagram>,
}

impl Sfu {
    /// An SFU that receives on `local` (the shard's UDP socket as clients reach it).
    pub fn new(local: SocketAddr) -> Sfu {
        Sfu {
            local,
            peers: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Answers a client's offer for `participant`'s `direction` connection, creating the
    /// connection on the first offer and renegotiating it on later ones.
    pub fn accept_offer(
        &mut self,
        participant: u64,
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
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let index = match self
            .peers
            .iter()
            .position(|p| p.participant == participant && p.direction == direction)
        {
            Some(i) => i,
            None => {
                let mut rtc = Rtc::builder().set_ice_lite(true).build(now);
                let candidate = Candidate::host(self.local, "udp")
                    .map_err(|e| SfuError::Negotiation(e.to_string()))?;
                rtc.add_local_candidate(candidate);
                self.peers.push(Peer {
                    participant,
                    direction,
                    rtc,
                    slots: Vec::new(),
                });
                self.peers.len() - 1
            }
        };
        let answer = self.peers[index]
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SfuError::Negotiation(e.to_string()))?;
        self.drain(index, now);
        Ok(answer.to_sdp_string())
    }

    /// A datagram from the network. Datagrams no peer accepts (strangers, garbage) are dropped.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) {
        let Ok(receive) = Receive::new(Protocol::Udp, source, self.local, contents) else {
            return;
        };
        let input = Input::Receive(now, receive);
        let Some(index) = self.peers.iter().position(|p| p.rtc.accepts(&input)) else {
            return;
        };
        if self.peers[index].rtc.handle_input(input).is_err() {
            self.peers[index].rtc.disconnect();
        }
        self.drain(index, now);
    }

    /// Time passes: every connection gets its timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        for index in 0..self.peers.len() {
            let _ = self.peers[index].rtc.handle_input(Input::Timeout(now));
            self.drain(index, now);
        }
        self.peers.retain(|p| p.rtc.is_alive());
    }

    /// The datagrams to send now.
    pub fn take_datagrams(&mut self) -> Vec<Datagram> {
        std::mem::take(&mut self.out)
    }

    /// Removes a participant's connections.
    pub fn remove_participant(&mut self, participant: u64) {
        self.peers.retain(|p| p.participant != participant);
        for peer in &mut self.peers {
            for slot in &mut peer.slots {
                if slot.2.is_some_and(|(p, _)| p == participant) {
                    slot.2 = None;
                }
            }
        }
    }

    /// Drains one connection's output; media it received is forwarded to the others.
    fn drain(&mut self, index: usize, now: Instant) {
        let mut forwarded = Vec::new();
        loop {
            match self.peers[index].rtc.poll_output() {
                Ok(Output::Timeout(_)) | Err(_) => break,
                Ok(Output::Transmit(t)) => self.out.push(Datagram {
                    destination: t.destination,
                    contents: t.contents.to_vec(),
                }),
                Ok(Output::Event(Event::MediaAdded(added))) => {
                    if self.peers[index].direction == Direction::Subscribe {
                        self.peers[index].slots.push((added.mid, added.kind, None));
                    }
                }
                Ok(Output::Event(Event::MediaData(data))) => forwarded.push(data),
                Ok(Output::Event(_)) => {}
            }
        }
        let from = self.peers[index].participant;
        for data in forwarded {
            self.forward(from, data, now);
        }
    }

    fn forward(&mut self, from: u64, data: str0m::media::MediaData, now: Instant) {
        let kind = if data.params.spec().codec.is_audio() {
            MediaKind::Audio
        } else {
            MediaKind::Video
        };
        for index in 0..self.peers.len() {
            let peer = &mut self.peers[index];
            if peer.participant == from || peer.direction != Direction::Subscribe {
                continue;
            }
            // The slot this source already has, or the first free one of its kind.
            let source = (from, data.mid);
            let slot = peer
                .slots
                .iter()
                .position(|s| s.2 == Some(source))
                .or_else(|| peer.slots.iter().position(|s| s.1 == kind && s.2.is_none()));
            let Some(slot) = slot else { continue };
            peer.slots[slot].2 = Some(source);
            let mid = peer.slots[slot].0;
            let Some(writer) = peer.rtc.writer(mid) else {
                continue;
            };
            let Some(pt) = writer.match_params(data.params) else {
                continue;
            };
            if writer.write(pt, now, data.time, data.data.clone()).is_ok() {
                self.drain_no_forward(index);
            }
        }
    }

    /// Drains a subscribe connection after a write (it receives no media to forward).
    fn drain_no_forward(&mut self, index: usize) {
        loop {
            match self.peers[index].rtc.poll_output() {
                Ok(Output::Timeout(_)) | Err(_) => break,
                Ok(Output::Transmit(t)) => self.out.push(Datagram {
                    destination: t.destination,
                    contents: t.contents.to_vec(),
                }),
                Ok(Output::Event(_)) => {}
            }
        }
    }

    /// Connections in the room.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests;
