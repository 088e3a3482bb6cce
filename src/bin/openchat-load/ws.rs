//! The realtime client: an HTTP/1.1 upgrade written by hand and checked with httparse, then
//! tungstenite's codec (client role: masked frames out, pongs answered) reading straight from
//! the non-blocking socket through [`SocketIo`], which reports `WouldBlock` when the kernel has
//! nothing more. A socket costs one small task, its codec buffer and the kernel's socket.

use std::io::{self, Read, Write};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use crate::net::Connector;

/// Largest handshake response head accepted.
const MAX_HANDSHAKE_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("socket closed")]
    Closed,
    #[error("handshake: {0}")]
    Handshake(String),
    #[error("protocol: {0}")]
    Protocol(String),
}

/// The socket as tungstenite's blocking-looking `Read + Write`: `try_read`/`try_write`, which
/// answer `WouldBlock` and clear tokio's readiness when the kernel has nothing.
pub struct SocketIo(pub TcpStream);

impl Read for SocketIo {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(out)
    }
}

impl Write for SocketIo {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.try_write(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `/v1/realtime?server_id=..&user_uid=..&device_id=..` (wire contract A.7, headers mode).
pub fn realtime_path(server_id: &str, uid: &str, device: &str) -> String {
    format!(
        "/v1/realtime?server_id={}&user_uid={}&device_id={}",
        percent_encode(server_id),
        percent_encode(uid),
        percent_encode(device)
    )
}

pub fn handshake_request(authority: &str, path: &str, key: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Checks the server's answer to the upgrade: `Ok(Some(head length))` for a valid 101,
/// `Ok(None)` when more bytes are needed.
pub fn parse_handshake(buf: &[u8], key: &str) -> Result<Option<usize>, WsError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(WsError::Handshake(e.to_string())),
    };
    let status = response.code.unwrap_or(0);
    if status != 101 {
        let body = String::from_utf8_lossy(&buf[head_len..buf.len().min(head_len + 300)]);
        return Err(WsError::Handshake(format!("status {status} {body}")));
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    if !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err(WsError::Handshake("no Upgrade: websocket".into()));
    }
    if !header("connection").is_some_and(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    }) {
        return Err(WsError::Handshake("no Connection: Upgrade".into()));
    }
    let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
    if header("sec-websocket-accept") != Some(expected.as_str()) {
        return Err(WsError::Handshake("wrong Sec-WebSocket-Accept".into()));
    }
    Ok(Some(head_len))
}

pub struct WsClient {
    ws: WebSocket<SocketIo>,
}

impl WsClient {
    /// Connects, upgrades, and keeps any frame bytes that came with the 101.
    /// `read_buffer`: the codec's initial read buffer (grows for larger frames).
    pub async fn connect(
        connector: &Connector,
        authority: &str,
        path: &str,
        read_buffer: usize,
    ) -> Result<WsClient, WsError> {
        let mut stream = connector.connect().await?;
        let key = tungstenite::handshake::client::generate_key();
        stream
            .write_all(&handshake_request(authority, path, &key))
            .await?;
        let mut buf = Vec::with_capacity(512);
        let head_len = loop {
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(WsError::Handshake("closed before the 101".into()));
            }
            if let Some(n) = parse_handshake(&buf, &key)? {
                break n;
            }
            if buf.len() > MAX_HANDSHAKE_BYTES {
                return Err(WsError::Handshake("response head too large".into()));
            }
        };
        Ok(WsClient::from_parts(
            stream,
            buf.split_off(head_len),
            read_buffer,
        ))
    }

    pub fn from_parts(stream: TcpStream, already_read: Vec<u8>, read_buffer: usize) -> WsClient {
        let config = WebSocketConfig::default().read_buffer_size(read_buffer);
        WsClient {
            ws: WebSocket::from_partially_read(
                SocketIo(stream),
                already_read,
                Role::Client,
                Some(config),
            ),
        }
    }

    pub async fn readable(&self) -> io::Result<()> {
        self.ws.get_ref().0.readable().await
    }

    /// Handles every message that can be read without waiting: text to `on_text`, pings
    /// counted in `pings` (tungstenite queues the pong; [`WsClient::flush`] sends it). Returns
    /// when the socket has nothing more for now, or why it is finished.
    pub fn drain(&mut self, pings: &mut u64, mut on_text: impl FnMut(&str)) -> Result<(), WsError> {
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => on_text(text.as_str()),
                Ok(Message::Ping(_)) => *pings += 1,
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(());
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Err(WsError::Closed);
                }
                Err(tungstenite::Error::Io(e)) => return Err(WsError::Io(e)),
                Err(e) => return Err(WsError::Protocol(e.to_string())),
            }
        }
    }

    /// Writes out whatever is queued (client frames, pongs), waiting for the socket if needed.
    pub async fn flush(&mut self) -> Result<(), WsError> {
        loop {
            match self.ws.flush() {
                Ok(()) => return Ok(()),
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.ws.get_ref().0.writable().await?;
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Err(WsError::Closed);
                }
                Err(e) => return Err(WsError::Protocol(e.to_string())),
            }
        }
    }

    pub async fn send_text(&mut self, text: String) -> Result<(), WsError> {
        match self.ws.write(Message::text(text)) {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(WsError::Protocol(e.to_string())),
        }
        self.flush().await
    }

    /// Reads until `stop` turns true or the socket ends, answering pings. `on_text` gets each
    /// text message with the instant taken right after the socket turned readable (before
    /// any decoding), so client-side parsing does not add to measured latency.
    /// Returns the pings answered, or why the socket ended first.
    pub async fn serve(
        &mut self,
        stop: &mut watch::Receiver<bool>,
        mut on_text: impl FnMut(&str, Instant),
    ) -> Result<u64, (WsError, u64)> {
        let mut pings = 0;
        let at = Instant::now();
        let first = self.drain(&mut pings, |t| on_text(t, at));
        first.map_err(|e| (e, pings))?;
        self.flush().await.map_err(|e| (e, pings))?;
        loop {
            tokio::select! {
                biased;
                ready = self.readable() => {
                    let at = Instant::now();
                    ready.map_err(|e| (WsError::Io(e), pings))?;
                    let drained = self.drain(&mut pings, |t| on_text(t, at));
                    drained.map_err(|e| (e, pings))?;
                    self.flush().await.map_err(|e| (e, pings))?;
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow_and_update() {
                        return Ok(pings);
                    }
                }
            }
        }
    }
}

/// The sequence number of a `chat.message.created` frame whose message body is
/// `load:<seq>/<run>` for this run's `run` tag; `None` for any other frame. A string scan,
/// not a JSON parse: the fan-out test reads hundreds of thousands of frames a second on the
/// machine that runs the server.
pub fn created_seq(frame: &str, run: &str) -> Option<u64> {
    if !frame.contains("\"chat.message.created\"") {
        return None;
    }
    let after_key = &frame[frame.find("\"body\"")? + "\"body\"".len()..];
    let value = after_key.trim_start().strip_prefix(':')?.trim_start();
    let rest = value.strip_prefix("\"load:")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let seq = rest[..digits].parse().ok()?;
    let tail = rest[digits..].strip_prefix('/')?.strip_prefix(run)?;
    tail.starts_with('"').then_some(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_request() {
        assert_eq!(
            realtime_path("srv_1", "uid_0a0b0c0d", "desktop 1&x"),
            "/v1/realtime?server_id=srv_1&user_uid=uid_0a0b0c0d&device_id=desktop%201%26x"
        );
        let req = handshake_request(
            "127.0.0.1:8080",
            "/v1/realtime?x=1",
            "dGhlIHNhbXBsZSBub25jZQ==",
        );
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut parsed = httparse::Request::new(&mut headers);
        assert!(parsed.parse(&req).unwrap().is_complete());
        assert_eq!(parsed.path, Some("/v1/realtime?x=1"));
        assert!(
            parsed
                .headers
                .iter()
                .any(|h| h.name == "Sec-WebSocket-Version" && h.value == b"13")
        );
    }

    #[test]
    fn handshake_answers() {
        // RFC 6455 section 1.3's example key and accept value
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi";
        assert_eq!(parse_handshake(ok, key).unwrap(), Some(ok.len() - 4));
        assert_eq!(parse_handshake(&ok[..40], key).unwrap(), None);
        let wrong_key = parse_handshake(ok, "AAAAAAAAAAAAAAAAAAAAAA==");
        assert!(matches!(wrong_key, Err(WsError::Handshake(m)) if m.contains("Accept")));
        let denied =
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 20\r\n\r\n{\"code\":\"no_auth\"}..";
        assert!(
            matches!(parse_handshake(denied, key), Err(WsError::Handshake(m)) if m.contains("401") && m.contains("no_auth"))
        );
        let no_upgrade = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert!(parse_handshake(no_upgrade, key).is_err());
    }

    #[test]
    fn created_frames_are_recognised() {
        let run = "1a2b3c4d";
        let frame = r#"{"type":"chat.message.created","payload":{"message":{"id":"m1","channel_id":"c1","author_uid":"uid_03000000","body":"load:42/1a2b3c4d","created_at":"2026-01-01T00:00:00Z","mentions":[]}},"event_id":7,"server_id":"s","timestamp":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(created_seq(frame, run), Some(42));
        let spaced = r#"{ "payload": { "message": { "body" : "load:7/1a2b3c4d" } }, "type": "chat.message.created" }"#;
        assert_eq!(created_seq(spaced, run), Some(7));
        // another run, a warm-up message, another event type, a malformed body
        assert_eq!(
            created_seq(&frame.replace("1a2b3c4d", "ffffffff"), run),
            None
        );
        assert_eq!(
            created_seq(&frame.replace("load:42/", "load:warmup/"), run),
            None
        );
        assert_eq!(
            created_seq(
                &frame.replace("chat.message.created", "chat.message.deleted"),
                run
            ),
            None
        );
        assert_eq!(created_seq(&frame.replace("load:42", "load:"), run), None);
        assert_eq!(
            created_seq(&frame.replace("/1a2b3c4d\"", "/1a2b3c4dx\""), run),
            None
        );
        assert_eq!(
            created_seq(r#"{"type":"chat.presence.snapshot"}"#, run),
            None
        );
    }

    /// Client framing over a real socket against tungstenite's server role: our frames arrive
    /// masked and whole, server text (also fragmented) arrives in order, pings are answered.
    #[tokio::test]
    async fn frames_both_ways_and_pongs() {
        use tungstenite::protocol::frame::Frame;
        use tungstenite::protocol::frame::coding::{Data, OpCode};

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (socket, _) = listener.accept().unwrap();
            let mut ws = WebSocket::from_raw_socket(socket, Role::Server, None);
            let got = ws.read().unwrap();
            ws.send(Message::text("one")).unwrap();
            ws.send(Message::Ping(b"p".to_vec().into())).unwrap();
            // "two" in two fragments
            ws.write(Message::Frame(Frame::message(
                b"tw".to_vec(),
                OpCode::Data(Data::Text),
                false,
            )))
            .unwrap();
            ws.write(Message::Frame(Frame::message(
                b"o".to_vec(),
                OpCode::Data(Data::Continue),
                true,
            )))
            .unwrap();
            ws.flush().unwrap();
            let pong = ws.read().unwrap();
            ws.close(None).unwrap();
            // wait for the client's close reply, so the client sees a clean end
            while ws.read().is_ok() {}
            (got, pong)
        });

        let stream = Connector::new(addr, Vec::new()).connect().await.unwrap();
        let mut client = WsClient::from_parts(stream, Vec::new(), 64);
        client
            .send_text(
                r#"{"type":"chat.subscribe","request_id":"1","payload":{"channel_id":"c"}}"#.into(),
            )
            .await
            .unwrap();
        let (_stop_tx, mut stop) = watch::channel(false);
        let mut texts = Vec::new();
        let end = client
            .serve(&mut stop, |t, _| texts.push(t.to_string()))
            .await;
        let (got, pong) = server.join().unwrap();
        assert!(matches!(end, Err((WsError::Closed, 1))), "{end:?}");
        assert_eq!(texts, ["one", "two"]);
        assert_eq!(
            got.to_text().unwrap(),
            r#"{"type":"chat.subscribe","request_id":"1","payload":{"channel_id":"c"}}"#
        );
        assert_eq!(pong, Message::Pong(b"p".to_vec().into()));
    }
}
