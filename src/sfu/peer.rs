//! A client peer connection (sans-IO, on str0m) as the desktop client makes them: it offers,
//! applies the SFU's answer, publishes media frames or receives them. Used by the SFU's tests,
//! the end-to-end tests over real UDP and the load tool; the caller moves its datagrams.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction as MediaDirection, MediaKind, MediaTime, Mid, Rid, Simulcast};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use super::Datagram;

/// A media frame the peer received.
#[derive(Debug, Clone)]
pub struct Received {
    pub mid: Mid,
    pub data: Vec<u8>,
    pub keyframe: bool,
    pub at: Instant,
}

/// What an m-line of an offer asks for.
#[derive(Debug, Clone)]
pub struct Line {
    pub kind: MediaKind,
    /// `SendOnly` to publish, `RecvOnly` to receive.
    pub direction: MediaDirection,
    /// `a=msid` of a published track: (stream_id, track_id).
    pub msid: Option<(String, String)>,
    /// Simulcast layers to send.
    pub rids: Vec<&'static str>,
}

impl Line {
    pub fn send(kind: MediaKind, stream_id: &str, track_id: &str) -> Line {
        Line {
            kind,
            direction: MediaDirection::SendOnly,
            msid: Some((stream_id.to_owned(), track_id.to_owned())),
            rids: Vec::new(),
        }
    }

    pub fn receive(kind: MediaKind) -> Line {
        Line {
            kind,
            direction: MediaDirection::RecvOnly,
            msid: None,
            rids: Vec::new(),
        }
    }
}

pub struct Peer {
    pub addr: SocketAddr,
    pub rtc: Rtc,
    pub connected: bool,
    pub timeout: Instant,
    pub received: Vec<Received>,
    /// Keyframe requests the SFU sent to this peer (as a publisher).
    pub keyframe_requests: usize,
    /// The last answer applied (SDP text).
    pub answer: String,
    out: Vec<Datagram>,
    pending: Option<SdpPendingOffer>,
}

impl Peer {
    /// A peer whose socket is `addr`, with str0m's default codecs.
    pub fn new(addr: SocketAddr, now: Instant) -> Peer {
        Peer::with_config(addr, now, Rtc::builder())
    }

    /// A peer with its own configuration (codecs, for one).
    pub fn with_config(addr: SocketAddr, now: Instant, config: str0m::RtcConfig) -> Peer {
        let mut rtc = config.build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("a host candidate"));
        Peer {
            addr,
            rtc,
            connected: false,
            timeout: now,
            received: Vec::new(),
            keyframe_requests: 0,
            answer: String::new(),
            out: Vec::new(),
            pending: None,
        }
    }

    /// An offer adding `lines` (the m-lines already negotiated stay). The mids of the new
    /// m-lines come back with the offer's SDP text; `None` when there is nothing to offer.
    pub fn offer(&mut self, lines: &[Line]) -> Option<(String, Vec<Mid>)> {
        let mut change = self.rtc.sdp_api();
        let mut mids = Vec::new();
        for line in lines {
            let simulcast = (!line.rids.is_empty()).then(|| {
                let mut s = Simulcast::new();
                for rid in &line.rids {
                    s.add_send_layer(str0m::media::SimulcastLayer::new(rid));
                }
                s
            });
            let (stream, track) = match &line.msid {
                Some((s, t)) => (Some(s.clone()), Some(t.clone())),
                None => (None, None),
            };
            mids.push(change.add_media(line.kind, line.direction, stream, track, simulcast));
        }
        let (offer, pending) = change.apply()?;
        self.pending = Some(pending);
        Some((offer.to_sdp_string(), mids))
    }

    /// The peer's network changes: it sends from and listens on `addr` from now on (the old
    /// address is gone).
    pub fn move_to(&mut self, addr: SocketAddr) {
        self.addr = addr;
        self.rtc
            .add_local_candidate(Candidate::host(addr, "udp").expect("a host candidate"));
    }

    /// An offer that restarts ICE on this connection (new ufrag and password, the m-lines as
    /// they are), as a browser's `restartIce()` makes.
    pub fn restart_ice(&mut self) -> Option<String> {
        let mut change = self.rtc.sdp_api();
        change.ice_restart(true);
        let (offer, pending) = change.apply()?;
        self.pending = Some(pending);
        Some(offer.to_sdp_string())
    }

    /// Applies the SFU's answer to the pending offer.
    pub fn accept_answer(&mut self, answer: &str) -> Result<(), String> {
        let pending = self.pending.take().ok_or("no offer is pending")?;
        let parsed = SdpAnswer::from_sdp_string(answer).map_err(|e| e.to_string())?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, parsed)
            .map_err(|e| e.to_string())?;
        self.answer = answer.to_owned();
        self.drain();
        Ok(())
    }

    /// `(stream_id, track_id)` of an m-line in the last answer.
    pub fn answered_msid(&self, mid: Mid) -> Option<(String, String)> {
        let wanted = mid.to_string();
        for section in self.answer.split("\r\nm=").skip(1) {
            let mut this_mid = None;
            let mut msid = None;
            for line in section.split("\r\n") {
                if let Some(m) = line.strip_prefix("a=mid:") {
                    this_mid = Some(m.trim());
                }
                if let Some((stream, track)) =
                    line.strip_prefix("a=msid:").and_then(|r| r.split_once(' '))
                {
                    msid = Some((stream.to_owned(), track.to_owned()));
                }
            }
            if this_mid == Some(wanted.as_str()) {
                return msid;
            }
        }
        None
    }

    /// A datagram from the SFU.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, contents: &[u8]) {
        let Ok(receive) = Receive::new(Protocol::Udp, from, self.addr, contents) else {
            return;
        };
        if self.rtc.handle_input(Input::Receive(now, receive)).is_ok() {
            self.drain();
        }
    }

    /// Runs the timeout when due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.timeout {
            let _ = self.rtc.handle_input(Input::Timeout(now));
            self.drain();
        }
    }

    /// Writes one media frame on `mid` (`rid` for a simulcast layer). For video, a frame whose
    /// first byte is even is a VP8 keyframe.
    pub fn write(
        &mut self,
        mid: Mid,
        now: Instant,
        time: MediaTime,
        data: &[u8],
        rid: Option<&str>,
        audio_level: Option<i8>,
    ) -> bool {
        let Some(writer) = self.rtc.writer(mid) else {
            return false;
        };
        let Some(pt) = writer
            .payload_params()
            .find(|p| matches!(p.spec().codec, Codec::Opus | Codec::Vp8 | Codec::H264))
            .map(|p| p.pt())
        else {
            return false;
        };
        let mut writer = writer;
        if let Some(rid) = rid {
            writer = writer.rid(Rid::from(rid));
        }
        if let Some(level) = audio_level {
            writer = writer.audio_level(level, true);
        }
        let ok = writer.write(pt, now, time, data.to_vec()).is_ok();
        self.drain();
        ok
    }

    /// Asks the sender of a received m-line for a keyframe.
    pub fn request_keyframe(&mut self, mid: Mid) {
        if let Some(mut writer) = self.rtc.writer(mid) {
            let _ = writer.request_keyframe(None, str0m::media::KeyframeRequestKind::Pli);
        }
        self.drain();
    }

    /// The datagrams to send.
    pub fn take_datagrams(&mut self) -> Vec<Datagram> {
        std::mem::take(&mut self.out)
    }

    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output() {
                Err(_) => break,
                Ok(Output::Timeout(t)) => {
                    self.timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => self.out.push(Datagram {
                    destination: t.destination,
                    source: None,
                    contents: Vec::from(t.contents),
                }),
                Ok(Output::Event(Event::MediaData(data))) => self.received.push(Received {
                    mid: data.mid,
                    keyframe: data.is_keyframe(),
                    data: data.data.to_vec(),
                    at: data.network_time,
                }),
                Ok(Output::Event(Event::KeyframeRequest(_))) => self.keyframe_requests += 1,
                Ok(Output::Event(Event::IceConnectionStateChange(
                    IceConnectionState::Connected | IceConnectionState::Completed,
                )))
                | Ok(Output::Event(Event::Connected)) => self.connected = true,
                Ok(Output::Event(_)) => {}
            }
        }
    }
}

/// The media time of frame `n` at `per_frame` ticks of `kind`'s clock (48 kHz audio, 90 kHz
/// video).
pub fn media_time(kind: MediaKind, n: u64, per_frame: u64) -> MediaTime {
    match kind {
        MediaKind::Audio => MediaTime::new(n * per_frame, str0m::media::Frequency::FORTY_EIGHT_KHZ),
        MediaKind::Video => MediaTime::from_90khz(n * per_frame),
    }
}
