//! A voice participant as the desktop client is one: a signaling socket and two str0m peer
//! connections (publish and subscribe), each on its own UDP socket on loopback. The client
//! offers, the server answers; datagrams move when a test pumps the participants.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use openchatd::sfu::peer::{Line, Peer};
use simd_json::json;
use str0m::media::Mid;

use super::api::Client;
use super::json::{Json, JsonPath, encode};
use super::ws::Ws;

/// The first voice channel of `server_id`.
pub fn voice_channel(client: &Client, server_id: &str) -> String {
    let groups = client.groups(server_id);
    groups
        .arr_at("groups")
        .iter()
        .flat_map(|g| g.arr_at("channels").iter())
        .find(|c| c.str_at("type") == "voice")
        .map(|c| c.str_at("id").to_owned())
        .expect("the seeded voice channel")
}

/// A fresh join ticket of `client` for `channel` of the default server `home`.
pub fn ticket_for(client: &Client, channel: &str) -> String {
    let reply = client.post(
        &format!("/v1/rtc/channels/{channel}/join-ticket"),
        &json!({"server_id": "home"}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json().str_at("ticket").to_owned()
}

/// One peer connection and its socket.
pub struct Conn {
    pub peer: Peer,
    socket: UdpSocket,
}

impl Conn {
    fn new() -> Conn {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
        socket.set_nonblocking(true).unwrap();
        let addr = socket.local_addr().unwrap();
        Conn {
            peer: Peer::new(addr, Instant::now()),
            socket,
        }
    }

    /// Moves datagrams both ways and runs due timeouts; true when anything happened.
    fn pump(&mut self) -> bool {
        let mut busy = false;
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = self.socket.recv_from(&mut buf) {
            self.peer.handle_datagram(Instant::now(), from, &buf[..n]);
            busy = true;
        }
        self.peer.handle_timeout(Instant::now());
        for d in self.peer.take_datagrams() {
            let _ = self.socket.send_to(&d.contents, d.destination);
            busy = true;
        }
        busy
    }
}

pub struct Caller {
    pub ws: Ws,
    pub participant_id: String,
    pub publish: Conn,
    pub subscribe: Conn,
}

impl Caller {
    /// Opens signaling and joins with `ticket`; panics unless `rtc.joined` comes.
    pub fn join(server: SocketAddr, ticket: &str) -> Caller {
        let mut ws = Ws::connect_to(server, "/v1/rtc/signaling");
        ws.send_text(&encode(
            &json!({"type": "rtc.join", "request_id": "j", "payload": {"ticket": ticket}}),
        ));
        let joined = ws.expect("rtc.joined");
        Caller {
            participant_id: joined.str_at("payload.participant_id").to_owned(),
            ws,
            publish: Conn::new(),
            subscribe: Conn::new(),
        }
    }

    fn conn(&mut self, direction: &str) -> &mut Conn {
        match direction {
            "publish" => &mut self.publish,
            _ => &mut self.subscribe,
        }
    }

    /// Sends `rtc.offer.{direction}` adding `lines`, applies `rtc.answer.{direction}` and the
    /// trickled server candidate. The new m-lines' mids come back.
    pub fn negotiate(&mut self, direction: &str, lines: &[Line]) -> Vec<Mid> {
        let (sdp, mids) = self
            .conn(direction)
            .peer
            .offer(lines)
            .expect("something to offer");
        self.ws.send(
            &format!("rtc.offer.{direction}"),
            json!({"type": "offer", "sdp": sdp, "direction": direction}),
        );
        let answer = self.ws.expect(&format!("rtc.answer.{direction}"));
        assert_eq!(answer.str_at("payload.type"), "answer");
        assert_eq!(answer.str_at("payload.direction"), direction);
        self.conn(direction)
            .peer
            .accept_answer(answer.str_at("payload.sdp"))
            .expect("the answer applies");
        let candidate = self.ws.expect_where("rtc.ice.candidate", |f| {
            f.str_at("payload.direction") == direction
        });
        let text = candidate.str_at("payload.candidate").to_owned();
        let parsed = str0m::Candidate::from_sdp_string(text.trim_start_matches("a="))
            .expect("the server's candidate parses");
        self.conn(direction).peer.rtc.add_remote_candidate(parsed);
        mids
    }

    fn pump(&mut self) -> bool {
        let a = self.publish.pump();
        let b = self.subscribe.pump();
        a || b
    }
}

/// Pumps every caller's datagrams for `duration`.
pub fn pump(callers: &mut [&mut Caller], duration: Duration) {
    let end = Instant::now() + duration;
    loop {
        let mut busy = false;
        for c in callers.iter_mut() {
            busy |= c.pump();
        }
        if Instant::now() >= end {
            break;
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Pumps until `done` holds, or panics after `within`.
pub fn pump_until(
    callers: &mut [&mut Caller],
    within: Duration,
    what: &str,
    done: impl Fn(&[&mut Caller]) -> bool,
) {
    let end = Instant::now() + within;
    while !done(callers) {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        pump(callers, Duration::from_millis(5));
    }
}

/// The next frame of `kind` whose `track_id` is `track_id`.
pub fn expect_track(ws: &mut Ws, kind: &str, track_id: &str) -> Json {
    ws.expect_where(kind, |f| f.str_at("payload.track_id") == track_id)
}
