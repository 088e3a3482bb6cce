//! A blocking realtime client: tungstenite's client handshake over a std `TcpStream`, reads with
//! short timeouts so tests wait for a frame by polling against a deadline instead of sleeping.
//! Frames that arrive while a test waits for another type are kept in order, so no event is
//! lost to a wait that looked for something else.

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use simd_json::prelude::*;
use tungstenite::{Message, WebSocket};

use super::api::new_device;
use super::json::{Json, JsonPath, encode, parse};

/// What tests usually give the server to deliver a frame.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to be confident that a frame does not come.
pub const QUIET: Duration = Duration::from_millis(400);
const POLL: Duration = Duration::from_millis(20);

pub struct Ws {
    ws: WebSocket<TcpStream>,
    backlog: VecDeque<Json>,
    closed: bool,
    next_request: u64,
}

/// The realtime query of the headers mode: `server_id`, `user_uid`, `device_id`.
pub fn headers_query(server_id: &str, uid: &str, device: &str) -> String {
    format!("server_id={server_id}&user_uid={uid}&device_id={device}")
}

impl Ws {
    /// Opens `/v1/realtime?{query}`; panics unless the server answers 101.
    pub fn connect(addr: SocketAddr, query: &str) -> Ws {
        Ws::connect_to(addr, &format!("/v1/realtime?{query}"))
    }

    /// Opens the WebSocket at `path` (with its query); panics unless the server answers 101.
    pub fn connect_to(addr: SocketAddr, path: &str) -> Ws {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let url = format!("ws://{addr}{path}");
        let (ws, response) = tungstenite::client::client(url.as_str(), stream)
            .unwrap_or_else(|e| panic!("websocket handshake to {url} failed: {e}"));
        assert_eq!(response.status().as_u16(), 101);
        ws.get_ref().set_read_timeout(Some(POLL)).unwrap();
        Ws {
            ws,
            backlog: VecDeque::new(),
            closed: false,
            next_request: 0,
        }
    }

    /// Opens `/v1/realtime?{query}` offering the WebSocket subprotocol `protocol`; panics
    /// unless the server answers 101 and picks that subprotocol (tungstenite checks the echo).
    pub fn connect_with_protocol(addr: SocketAddr, query: &str, protocol: &str) -> Ws {
        use tungstenite::client::IntoClientRequest;
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let url = format!("ws://{addr}/v1/realtime?{query}");
        let mut request = url.as_str().into_client_request().expect("a request");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            protocol.parse().expect("a header value"),
        );
        let (ws, response) = tungstenite::client::client(request, stream)
            .unwrap_or_else(|e| panic!("websocket handshake to {url} failed: {e}"));
        assert_eq!(response.status().as_u16(), 101);
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some(protocol)
        );
        ws.get_ref().set_read_timeout(Some(POLL)).unwrap();
        Ws {
            ws,
            backlog: VecDeque::new(),
            closed: false,
            next_request: 0,
        }
    }

    /// Waits until the server has registered the socket for its server's events: the upgrade
    /// answer comes before that, so an event published right after the handshake could miss
    /// it. The server reads client frames only once registered, so its `pong` proves it.
    pub fn live(mut self) -> Ws {
        self.send("ping", simd_json::json!({}));
        self.expect("pong");
        self
    }

    /// Sends a client frame `{type, request_id, payload}`.
    pub fn send(&mut self, kind: &str, payload: Json) {
        self.next_request += 1;
        let frame = simd_json::json!({
            "type": kind,
            "request_id": format!("req_{}", self.next_request),
            "payload": payload,
        });
        self.send_text(&encode(&frame));
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .expect("send a frame");
    }

    /// `chat.subscribe`.
    pub fn subscribe(&mut self, channel_id: &str) {
        self.send(
            "chat.subscribe",
            simd_json::json!({ "channel_id": channel_id }),
        );
    }

    /// Reads one frame from the socket into the backlog; false on timeout or close.
    fn pump(&mut self) -> bool {
        if self.closed {
            return false;
        }
        match self.ws.read() {
            Ok(Message::Text(text)) => {
                self.backlog.push_back(parse(text.as_bytes()));
                true
            }
            Ok(Message::Close(_)) => {
                self.closed = true;
                false
            }
            Ok(_) => true,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                false
            }
            Err(_) => {
                self.closed = true;
                false
            }
        }
    }

    /// The first frame (in arrival order) of type `kind` that satisfies `matches`, waiting up
    /// to `within`; other frames stay queued.
    pub fn wait_for(
        &mut self,
        kind: &str,
        within: Duration,
        matches: impl Fn(&Json) -> bool,
    ) -> Option<Json> {
        let deadline = Instant::now() + within;
        let mut checked = 0;
        loop {
            while checked < self.backlog.len() {
                let frame = &self.backlog[checked];
                if frame.try_at("type").and_then(|t| t.as_str()) == Some(kind) && matches(frame) {
                    return self.backlog.remove(checked);
                }
                checked += 1;
            }
            if Instant::now() >= deadline {
                return None;
            }
            if !self.pump() && self.closed {
                // Whatever was read before the close is still looked at above.
                if checked >= self.backlog.len() {
                    return None;
                }
            }
        }
    }

    /// Like [`Ws::wait_for`], but panics when no such frame comes.
    pub fn expect_where(&mut self, kind: &str, matches: impl Fn(&Json) -> bool) -> Json {
        match self.wait_for(kind, WAIT, matches) {
            Some(frame) => frame,
            None => panic!(
                "no matching `{kind}` frame within {WAIT:?}; closed: {}; got: {}",
                self.closed,
                self.describe_backlog()
            ),
        }
    }

    /// The next frame of type `kind`.
    pub fn expect(&mut self, kind: &str) -> Json {
        self.expect_where(kind, |_| true)
    }

    /// Panics if a frame of type `kind` matching `matches` arrives within `within`.
    pub fn assert_none_where(
        &mut self,
        kind: &str,
        within: Duration,
        matches: impl Fn(&Json) -> bool,
    ) {
        if let Some(frame) = self.wait_for(kind, within, matches) {
            panic!("unexpected `{kind}` frame: {}", encode(&frame));
        }
    }

    pub fn assert_none(&mut self, kind: &str, within: Duration) {
        self.assert_none_where(kind, within, |_| true);
    }

    /// Reads everything that arrives within `within` into the backlog.
    pub fn drain(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline && !self.closed {
            self.pump();
        }
    }

    /// Forgets queued frames.
    pub fn clear(&mut self) {
        self.backlog.clear();
    }

    /// Frames received and not yet taken.
    pub fn backlog(&self) -> impl Iterator<Item = &Json> {
        self.backlog.iter()
    }

    /// True once the server has closed the socket (close frame, EOF or reset) within `within`.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while !self.closed && Instant::now() < deadline {
            self.pump();
        }
        self.closed
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn describe_backlog(&self) -> String {
        self.backlog
            .iter()
            .map(encode)
            .collect::<Vec<_>>()
            .join("\n  ")
    }

    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }

    /// Drops the connection with a TCP reset and no close frame, as a network failure does.
    pub fn reset(mut self) {
        let _ = socket2::SockRef::from(self.ws.get_ref()).set_linger(Some(Duration::ZERO));
        // Closed without a shutdown (see Drop): close(2) with a zero linger sends the reset.
        self.closed = true;
    }
}

impl Drop for Ws {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.ws.get_ref().shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The `type` of a frame.
pub fn kind(frame: &Json) -> &str {
    frame.str_at("type")
}

/// A subscribed realtime socket and the shard that serves it.
pub struct Placed {
    pub ws: Ws,
    pub device: String,
    pub shard: String,
}

/// The shard of a socket, read from its own `client_id` in a presence snapshot (`c{shard}_{n}`).
pub fn shard_of(snapshot: &Json, device: &str) -> String {
    let me = snapshot
        .arr_at("payload.members")
        .iter()
        .find(|m| m.str_at("device_id") == device)
        .unwrap_or_else(|| panic!("the subscriber is missing: {}", encode(snapshot)));
    let client_id = me.str_at("client_id");
    client_id
        .split('_')
        .next()
        .filter(|s| s.starts_with('c') && s.len() > 1)
        .unwrap_or_else(|| panic!("client_id {client_id:?} does not name its shard"))
        .to_owned()
}

/// Opens a socket for `uid`, subscribes it to `channel_id`, and learns its shard.
pub fn open_placed(addr: SocketAddr, server_id: &str, uid: &str, channel_id: &str) -> Placed {
    let device = new_device();
    let mut ws = Ws::connect(addr, &headers_query(server_id, uid, &device));
    ws.subscribe(channel_id);
    let snapshot = ws.expect("chat.presence.snapshot");
    let shard = shard_of(&snapshot, &device);
    Placed { ws, device, shard }
}

/// Sockets of `uid` until one lands on each of the two shards (the kernel spreads
/// connections over the shards' SO_REUSEPORT listeners by their addresses, so a few tries do).
pub fn one_per_shard(
    addr: SocketAddr,
    server_id: &str,
    uid: &str,
    channel_id: &str,
) -> Vec<Placed> {
    let mut by_shard: HashMap<String, Placed> = HashMap::new();
    for _ in 0..32 {
        let placed = open_placed(addr, server_id, uid, channel_id);
        by_shard.entry(placed.shard.clone()).or_insert(placed);
        if by_shard.len() == 2 {
            return by_shard.into_values().collect();
        }
    }
    panic!("32 connections all landed on one shard");
}

/// A socket of `uid` on a shard other than `not_on`.
pub fn placed_elsewhere(
    addr: SocketAddr,
    server_id: &str,
    uid: &str,
    channel_id: &str,
    not_on: &str,
) -> Placed {
    one_per_shard(addr, server_id, uid, channel_id)
        .into_iter()
        .find(|p| p.shard != not_on)
        .expect("a socket on the other shard")
}

/// A realtime socket of `client` on `server_id`, registered for events.
pub fn socket(
    server: &super::server::TestServer,
    client: &super::api::Client,
    server_id: &str,
) -> Ws {
    Ws::connect(
        server.addr,
        &headers_query(server_id, client.uid(), client.device()),
    )
    .live()
}

/// The `payload.message.id` of a `chat.message.created` frame.
pub fn created_id(frame: &Json) -> &str {
    frame.str_at("payload.message.id")
}
