//! The SFU core (sans-IO, on str0m): the media of every voice room one shard owns. Datagrams and
//! time go in; datagrams and [`Event`]s come out. Nothing here touches a socket or a clock.
//!
//! A participant has two peer connections (wire contract A.8): one it publishes on and one it
//! receives on. The client always offers; the SFU answers as an ICE-lite agent. Every track a
//! participant publishes gets ids (`track_id`, `stream_id`) that the subscribers see in their
//! answers, and each subscriber receives the room's tracks up to its receive caps, in publish
//! order. A track a subscriber starts or stops receiving is reported as [`Event::Announce`] /
//! [`Event::Withdraw`] so the signaling layer can send `rtc.track.published` /
//! `rtc.track.unpublished` and `rtc.subscribe.refresh`.
//!
//! Forwarding works on whole media frames: str0m depacketizes, reorders and asks for lost
//! packets (NACK) on the publisher's side, and packetizes, paces and retransmits on each
//! subscriber's side. Keyframe requests (PLI/FIR) from a subscriber go to the publisher of the
//! track it is receiving. Simulcast tracks are forwarded one layer per subscriber, chosen from
//! the subscriber's bandwidth estimate (the REMB its client sends) and the number of video
//! tracks it receives; a switch waits for a keyframe of the new layer. The audio-level header
//! drives a speaking state.
//!
//! Subscribe connections do not run str0m's send-side estimator (TWCC) and pacer: a pacer
//! queues whatever exceeds its estimate, and a subscriber that sends no feedback made that
//! queue (and the shard's memory) grow without bound under load. Media goes out as it comes.
//!
//! # The run loop, and where each step lives
//!
//! 1. A participant joins or leaves a room ([`Sfu::add_participant`],
//!    [`Sfu::remove_participant`]; `participant.rs`).
//! 2. Its client offers, for its publish or its subscribe connection; the answer comes back
//!    ([`Sfu::accept_offer`]; `negotiate.rs`, with the SDP text operations of `sdp.rs`). The
//!    first offer creates the connection: one str0m `Rtc` (`conn.rs`).
//! 3. A datagram arrives ([`Sfu::handle_datagram_to`]): it is routed to the connection whose
//!    address or ICE ufrag it names, and a new client address that passed a STUN check is
//!    learned (`route.rs`).
//! 4. The connection is drained (`conn.rs`): datagrams go out; new or changed m-lines make
//!    tracks and reassign what every subscriber of the room receives (`assign.rs`); media
//!    frames are forwarded to the subscribers receiving their track, keyframe requests go to
//!    the publisher, the audio level sets who speaks (`forward.rs`).
//! 5. Time passes: when [`Sfu::next_timeout`] is due, the driver calls
//!    [`Sfu::handle_timeout`]; due connections get their timeout and are drained as in step 4,
//!    silent speakers stop speaking, dead connections are dropped (`conn.rs`). An idle shard
//!    has no connections and so no timeouts.
//! 6. The driver takes what came out: [`Sfu::take_datagrams`] to send, [`Sfu::take_events`]
//!    for the signaling layer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use str0m::config::DtlsCert;

use crate::histogram::{Histogram, LOSS_RATIO, RTT_SECONDS};

mod assign;
mod conn;
mod forward;
mod negotiate;
mod participant;
#[cfg(feature = "test-peer")]
pub mod peer;
mod route;
mod sdp;
#[cfg(test)]
mod testnet;

pub use assign::{StreamKind, TrackInfo, choose_layer};
pub use forward::{
    KEYFRAME_REQUEST_INTERVAL, LAYER_CHECK_INTERVAL, SPEAKING_HOLD, SPEAKING_THRESHOLD_DBOV,
};
pub use negotiate::{Direction, MAX_MEDIA_LINES, MAX_SDP_BYTES, SfuError, first_mid};
pub use participant::{Caps, Permit};
pub use route::{MAX_ADDRESSES_PER_CONNECTION, MAX_LOCAL_CANDIDATES};

use assign::{Track, TrackKey};
use participant::Member;

/// A participant, numbered by the shard (unique on it).
pub type ParticipantId = u64;
/// A room, numbered by the shard.
pub type RoomId = u64;

/// What the signaling layer has to tell participants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `to` now receives `track` (`rtc.track.published`, then `rtc.subscribe.refresh`).
    Announce { to: ParticipantId, track: TrackInfo },
    /// `to` no longer receives `track` (`rtc.track.unpublished`, then `rtc.subscribe.refresh`).
    Withdraw { to: ParticipantId, track: TrackInfo },
    /// A participant started or stopped speaking.
    Speaking {
        room: RoomId,
        participant: ParticipantId,
        speaking: bool,
    },
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub destination: SocketAddr,
    /// The local address to send it from: the one the destination's datagrams arrive at, so
    /// the client sees its answers come from the candidate it used. `None`: the kernel picks
    /// by route.
    pub source: Option<IpAddr>,
    pub contents: Vec<u8>,
}

/// Counters for metrics and the load tool.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    /// Media frames written to subscribers.
    pub forwarded: u64,
    /// Datagrams nobody here accepts (strangers, garbage).
    pub dropped: u64,
    /// Datagrams a connection took in, and datagrams the connections gave out to send.
    pub received: u64,
    pub sent: u64,
    /// What the connections' periodic stats ([`STATS_INTERVAL`]) said of round-trip time and
    /// loss.
    pub quality: Quality,
}

/// How often each peer connection reports its round-trip time and loss.
pub const STATS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Round-trip times and loss fractions, one observation per media line per report (RTCP receiver
/// reports; the transport-wide figures are not used, as subscribe connections run without
/// transport-cc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quality {
    pub rtt: Histogram,
    /// Loss of what publishers send here, as measured here.
    pub loss_in: Histogram,
    /// Loss of what is sent to subscribers, as their receiver reports say.
    pub loss_out: Histogram,
}

impl Quality {
    /// One media line's periodic report of what a publisher sent here: the loss this end
    /// measured (in its receiver reports), and the round trip where the sender's extended
    /// reports give one.
    pub fn observe_ingress(&mut self, stats: &str0m::stats::MediaIngressStats) {
        if let Some(loss) = stats.loss {
            self.loss_in.observe(f64::from(loss));
        }
        if let Some(rtt) = stats.rtt {
            self.rtt.observe(rtt.as_secs_f64());
        }
    }

    /// One media line's periodic report of what went to a subscriber: the loss and round trip
    /// its receiver reports say.
    pub fn observe_egress(&mut self, stats: &str0m::stats::MediaEgressStats) {
        if let Some(loss) = stats.loss {
            self.loss_out.observe(f64::from(loss));
        }
        if let Some(rtt) = stats.rtt {
            self.rtt.observe(rtt.as_secs_f64());
        }
    }
}

impl Default for Quality {
    fn default() -> Self {
        Quality {
            rtt: Histogram::new(RTT_SECONDS),
            loss_in: Histogram::new(LOSS_RATIO),
            loss_out: Histogram::new(LOSS_RATIO),
        }
    }
}

/// The SFU of one shard.
pub struct Sfu {
    /// The port of this shard's UDP socket.
    port: u16,
    /// One DTLS certificate for every connection (see [`Sfu::new`]).
    cert: Option<DtlsCert>,
    /// Participants, with their connections and what they receive (`participant.rs`).
    members: HashMap<ParticipantId, Member>,
    /// Participants of each room, in join order.
    rooms: HashMap<RoomId, Vec<ParticipantId>>,
    /// Published tracks (`assign.rs`).
    tracks: HashMap<TrackKey, Track>,
    /// Tracks of each room, in publish order.
    room_tracks: HashMap<RoomId, Vec<TrackKey>>,
    /// Where datagrams go (`route.rs`): by client address, and by ICE ufrag for a STUN check
    /// from an address not known yet.
    by_addr: HashMap<SocketAddr, (ParticipantId, Direction)>,
    by_ufrag: HashMap<String, (ParticipantId, Direction)>,
    out: Vec<Datagram>,
    events: Vec<Event>,
    counters: Counters,
}

impl Sfu {
    /// An SFU whose UDP socket has `port`.
    pub fn new(port: u16) -> Sfu {
        // One DTLS certificate for every connection of the shard: generating one per
        // connection costs milliseconds on each join.
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate();
        Sfu {
            port,
            cert,
            members: HashMap::new(),
            rooms: HashMap::new(),
            tracks: HashMap::new(),
            room_tracks: HashMap::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            out: Vec::new(),
            events: Vec::new(),
            counters: Counters::default(),
        }
    }

    /// The datagrams to send now.
    pub fn take_datagrams(&mut self) -> Vec<Datagram> {
        self.counters.sent += self.out.len() as u64;
        std::mem::take(&mut self.out)
    }

    /// Whether datagrams are waiting.
    pub fn has_datagrams(&self) -> bool {
        !self.out.is_empty()
    }

    /// What happened since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Participants with media state here.
    pub fn participant_count(&self) -> usize {
        self.members.len()
    }

    /// Peer connections open here.
    pub fn connection_count(&self) -> usize {
        self.members
            .values()
            .map(|m| m.publish.is_some() as usize + m.subscribe.is_some() as usize)
            .sum()
    }
}
