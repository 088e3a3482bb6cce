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
//! Time: the driver calls [`Sfu::handle_timeout`] when [`Sfu::next_timeout`] is due. An idle
//! shard has no connections and so no timeouts.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::bwe::BweKind;
use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::format::PayloadParams;
use str0m::media::{
    Direction as MediaDirection, KeyframeRequestKind, MediaData, MediaKind, Mid, Pt, Rid,
};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event as RtcEvent, Input, Output, Rtc};

pub mod peer;
mod sdp;

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

/// A participant, numbered by the shard (unique on it).
pub type ParticipantId = u64;
/// A room, numbered by the shard.
pub type RoomId = u64;

/// Largest SDP offer accepted, in bytes.
pub const MAX_SDP_BYTES: usize = 64 * 1024;
/// Most m-lines an offer may carry (an offer with hundreds is refused).
pub const MAX_MEDIA_LINES: usize = 32;
/// A participant counts as speaking this long after its last loud audio packet.
pub const SPEAKING_HOLD: Duration = Duration::from_millis(600);
/// Audio louder than this (audio-level header, dBov) counts as speech.
pub const SPEAKING_THRESHOLD_DBOV: i8 = -50;
/// Keyframe requests to one publisher's track are at most this frequent.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// How often a subscriber's simulcast layer is reconsidered.
pub const LAYER_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Local candidates a connection advertises at most (the configured public address, or the
/// address the client reached plus the host's interface addresses for a loopback client).
pub const MAX_LOCAL_CANDIDATES: usize = 4;
/// Client addresses routed to one connection at most.
pub const MAX_ADDRESSES_PER_CONNECTION: usize = 8;
/// How often str0m checks a connection when it asks for nothing sooner.
const IDLE_CHECK: Duration = Duration::from_millis(500);

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
            SfuError::NotPermitted(_) => "rtc_permission_denied",
            SfuError::UnknownParticipant => "rtc_join_denied",
            _ => "rtc_negotiation_failed",
        }
    }
}

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Media frames written to subscribers.
    pub forwarded: u64,
    /// Datagrams nobody here accepts (strangers, garbage).
    pub dropped: u64,
}

/// A track: its publisher and the publisher's m-line.
type TrackKey = (ParticipantId, Mid);

struct Layer {
    rid: Rid,
    bytes: u64,
    since: Instant,
    bps: u64,
}

struct Track {
    room: RoomId,
    info: TrackInfo,
    /// Simulcast layers (empty for a single-layer track).
    layers: Vec<Layer>,
    last_keyframe_request: Option<Instant>,
}

/// A receive m-line of a subscribe connection and what it carries.
struct Slot {
    mid: Mid,
    kind: MediaKind,
    track: Option<TrackKey>,
    /// The simulcast layer forwarded, and the one waited for (switch on its next keyframe).
    layer: Option<Rid>,
    wanted: Option<Rid>,
    layer_checked: Option<Instant>,
    /// Video only: a keyframe was forwarded since the track was put here (frames before the
    /// first keyframe are useless to the decoder and are not sent).
    synced: bool,
    /// Payload type mapping from the publisher's to this connection's.
    pt: Option<(PayloadParams, Pt)>,
}

struct Conn {
    rtc: Rtc,
    /// The local candidates it advertised: where its datagrams arrive.
    candidates: Vec<SocketAddr>,
    ufrag: String,
    /// Client addresses that passed a STUN check for it (a client checks from each of its
    /// candidates; the newest [`MAX_ADDRESSES_PER_CONNECTION`] are kept).
    addrs: Vec<SocketAddr>,
    /// The local address each client address last sent to, as the kernel said (newest
    /// [`MAX_ADDRESSES_PER_CONNECTION`]): what the answers to it are sent from.
    arrived_at: Vec<(SocketAddr, IpAddr)>,
    timeout: Instant,
    /// Its m-lines, with the simulcast layers each was offered with.
    mids: Vec<(Mid, Vec<Rid>)>,
    slots: Vec<Slot>,
}

struct Member {
    room: RoomId,
    /// The addresses its connections advertise (and receive on).
    candidates: Vec<SocketAddr>,
    caps: Caps,
    permit: Permit,
    publish: Option<Conn>,
    subscribe: Option<Conn>,
    /// Tracks it receives (within its caps), in publish order.
    receiving: Vec<(TrackKey, TrackInfo)>,
    /// Stream kinds the client announced for its track ids (`rtc.media.state`).
    hints: HashMap<String, StreamKind>,
    loud_at: Option<Instant>,
    speaking: bool,
    /// Bandwidth estimate of its subscribe connection, bits per second.
    estimate: Option<u64>,
}

impl Member {
    fn conn(&mut self, direction: Direction) -> Option<&mut Conn> {
        match direction {
            Direction::Publish => self.publish.as_mut(),
            Direction::Subscribe => self.subscribe.as_mut(),
        }
    }
}

/// The SFU of one shard.
pub struct Sfu {
    /// The port of this shard's UDP socket.
    port: u16,
    cert: Option<DtlsCert>,
    members: HashMap<ParticipantId, Member>,
    /// Participants of each room, in join order.
    rooms: HashMap<RoomId, Vec<ParticipantId>>,
    tracks: HashMap<TrackKey, Track>,
    /// Tracks of each room, in publish order.
    room_tracks: HashMap<RoomId, Vec<TrackKey>>,
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

    fn forget_conn(&mut self, conn: &Conn) {
        self.by_ufrag.remove(&conn.ufrag);
        for addr in &conn.addrs {
            self.by_addr.remove(addr);
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
        // str0m reports new m-lines only once media can flow; take them from the offer now, so
        // tracks are announced and slots filled while ICE and DTLS are still under way.
        for mid in sdp::mids(offer) {
            conn.note_mid(Mid::from(mid), direction);
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

    fn new_conn(
        &self,
        candidates: &[SocketAddr],
        direction: Direction,
        now: Instant,
    ) -> Result<Conn, SfuError> {
        if candidates.is_empty() {
            return Err(SfuError::Negotiation("no media address to offer".into()));
        }
        let mut config = Rtc::builder().set_ice_lite(true);
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

    /// Which connection a datagram from `source` belongs to: a known address, or a STUN binding
    /// request naming a connection's ufrag.
    fn route(&self, source: SocketAddr, contents: &[u8]) -> Option<(ParticipantId, Direction)> {
        if let Some(found) = self.by_addr.get(&source) {
            return Some(*found);
        }
        let stun = str0m::ice::StunMessage::parse(contents).ok()?;
        if !stun.is_binding_request() {
            return None;
        }
        let (local, _remote) = stun.split_username()?;
        self.by_ufrag.get(local).copied()
    }

    /// A datagram from the network, when the local address it was sent to is not known (see
    /// [`Sfu::handle_datagram_to`]).
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) {
        self.handle_datagram_to(now, source, None, contents);
    }

    /// A datagram from the network, from `source` to `destination` (the local address it was
    /// sent to, as the kernel says: `IP_PKTINFO`). str0m is told the candidate the client
    /// used, and the answers go out from that address. Datagrams no connection accepts are
    /// dropped.
    pub fn handle_datagram_to(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: Option<SocketAddr>,
        contents: &[u8],
    ) {
        let Some((participant, direction)) = self.route(source, contents) else {
            self.counters.dropped += 1;
            return;
        };
        let Some(conn) = self
            .members
            .get_mut(&participant)
            .and_then(|m| m.conn(direction))
        else {
            return;
        };
        let candidate = conn.candidate_for(source, destination);
        let Ok(receive) = Receive::new(Protocol::Udp, source, candidate, contents) else {
            self.counters.dropped += 1;
            return;
        };
        let input = Input::Receive(now, receive);
        if !conn.rtc.accepts(&input) {
            self.counters.dropped += 1;
            return;
        }
        if conn.rtc.handle_input(input).is_err() {
            conn.rtc.disconnect();
        }
        if let Some(local) = destination {
            conn.note_arrival(source, local.ip());
        }
        if !conn.addrs.contains(&source) {
            // A STUN check naming this connection from a new address (another candidate of
            // the client, or a NAT rebinding): route that address here too.
            if conn.addrs.len() >= MAX_ADDRESSES_PER_CONNECTION {
                let oldest = conn.addrs.remove(0);
                self.by_addr.remove(&oldest);
            }
            conn.addrs.push(source);
            self.by_addr.insert(source, (participant, direction));
        }
        self.drain(participant, direction, now);
    }

    /// The earliest moment something is due.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.members
            .values()
            .flat_map(|m| {
                let speaking = m
                    .speaking
                    .then_some(m.loud_at)
                    .flatten()
                    .map(|t| t + SPEAKING_HOLD);
                [m.publish.as_ref(), m.subscribe.as_ref()]
                    .into_iter()
                    .flatten()
                    .map(|c| c.timeout)
                    .chain(speaking)
            })
            .min()
    }

    /// Time passes: connections that are due get their timeout; silent speakers stop speaking;
    /// dead connections are dropped.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        let mut quiet = Vec::new();
        for (id, m) in &mut self.members {
            for (direction, conn) in [
                (Direction::Publish, m.publish.as_ref()),
                (Direction::Subscribe, m.subscribe.as_ref()),
            ] {
                if conn.is_some_and(|c| c.timeout <= now) {
                    due.push((*id, direction));
                }
            }
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

    /// The datagrams to send now.
    pub fn take_datagrams(&mut self) -> Vec<Datagram> {
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

    /// The tracks `participant` receives, as announced.
    pub fn receiving(&self, participant: ParticipantId) -> Vec<TrackInfo> {
        self.members
            .get(&participant)
            .map(|m| m.receiving.iter().map(|(_, info)| info.clone()).collect())
            .unwrap_or_default()
    }

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

    /// Drains one connection's output: datagrams, media to forward, m-lines that appeared or
    /// changed, keyframe requests, bandwidth estimates.
    fn drain(&mut self, participant: ParticipantId, direction: Direction, now: Instant) {
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

    /// The publisher's m-lines after a negotiation: new receiving m-lines become tracks,
    /// m-lines that stopped sending are withdrawn.
    fn refresh_tracks(&mut self, participant: ParticipantId, now: Instant) {
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
                },
            );
            self.room_tracks.entry(room).or_default().push(key);
        }
    }

    /// The tracks `participant` publishes.
    fn tracks_of(&self, participant: ParticipantId) -> Vec<TrackKey> {
        self.tracks
            .keys()
            .filter(|k| k.0 == participant)
            .copied()
            .collect()
    }

    fn remove_track(&mut self, key: TrackKey) {
        if let Some(track) = self.tracks.remove(&key)
            && let Some(list) = self.room_tracks.get_mut(&track.room)
        {
            list.retain(|k| *k != key);
        }
    }

    /// Recomputes what each participant of `room` receives: the room's tracks in publish order
    /// (not its own) up to its caps, each in a receive slot of its subscribe connection.
    fn reassign(&mut self, room: RoomId) {
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

    /// A subscriber asked for a keyframe on one of its slots: ask the track's publisher.
    fn keyframe_request_from(
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
    fn forward(&mut self, from: ParticipantId, data: MediaData, now: Instant) {
        let key = (from, data.mid);
        let Some(track) = self.tracks.get_mut(&key) else {
            return;
        };
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

impl Conn {
    /// Which of its candidates a datagram from `source` to the local address `destination` was
    /// meant for: that address when it is one of them (the kernel said where the datagram
    /// arrived). Otherwise (not known, or an address behind a NAT that advertises another)
    /// the candidate of the same kind as the sender (loopback or not), else the first.
    fn candidate_for(&self, source: SocketAddr, destination: Option<SocketAddr>) -> SocketAddr {
        if let Some(local) = destination
            && self.candidates.contains(&local)
        {
            return local;
        }
        let loopback = source.ip().is_loopback();
        self.candidates
            .iter()
            .find(|c| c.ip().is_loopback() == loopback)
            .unwrap_or(&self.candidates[0])
            .to_owned()
    }

    /// `source` sent to the local address `local`.
    fn note_arrival(&mut self, source: SocketAddr, local: IpAddr) {
        match self.arrived_at.iter_mut().find(|(s, _)| *s == source) {
            Some((_, seen)) => *seen = local,
            None => {
                if self.arrived_at.len() >= MAX_ADDRESSES_PER_CONNECTION {
                    self.arrived_at.remove(0);
                }
                self.arrived_at.push((source, local));
            }
        }
    }

    /// The local address to answer `destination` from, if it was heard.
    fn source_for(&self, destination: SocketAddr) -> Option<IpAddr> {
        self.arrived_at
            .iter()
            .find(|(s, _)| *s == destination)
            .map(|(_, local)| *local)
    }

    /// Polls str0m until it names its next timeout: datagrams go to `out`, events come back
    /// (none, without allocating, when only datagrams came out).
    fn poll(&mut self, now: Instant, out: &mut Vec<Datagram>) -> Vec<RtcEvent> {
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
    fn note_mid(&mut self, mid: Mid, direction: Direction) -> bool {
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
            self.slots.push(Slot {
                mid,
                kind,
                track: None,
                layer: None,
                wanted: None,
                layer_checked: None,
                synced: false,
                pt: None,
            });
        }
        true
    }
}

impl Member {
    fn conn_exists(&self, direction: Direction) -> bool {
        match direction {
            Direction::Publish => self.publish.is_some(),
            Direction::Subscribe => self.subscribe.is_some(),
        }
    }
}

/// A subscribe connection negotiates no transport-wide congestion control (neither the
/// `transport-cc` feedback nor its header extension). It runs no send-side estimator (see the
/// module notes), so TWCC feedback would tell it nothing; without it, a browser estimates on
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

/// The first `a=mid` of an SDP (the `sdp_mid` of a candidate trickled for the whole bundle).
pub fn first_mid(sdp: &str) -> Option<&str> {
    sdp::mids(sdp).into_iter().next()
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
mod tests;
