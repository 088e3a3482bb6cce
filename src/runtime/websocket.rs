//! WebSocket sessions: the HTTP driver hands an upgraded connection here together with every
//! byte it had already read past the request head (a client may send its first frame in the
//! same packet as the handshake), and tungstenite speaks the protocol. tungstenite wants a
//! blocking `Read + Write`; [`MemoryIo`] gives it one backed by two buffers, and this module
//! moves bytes between those buffers and the glommio socket.

use std::io::{self, Read, Write};

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use crate::http::Request;

/// Largest frame and message a client may send; a bigger one closes the socket (wire-contract
/// A.7: frames over the size limit close it).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// tungstenite's read buffer per socket. Its default (128 KiB) would dominate the memory of an
/// idle realtime socket.
pub const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Bytes queued for a socket before `send` fails (a slow consumer is dropped, not waited for).
pub const MAX_WRITE_BUFFER_BYTES: usize = 1024 * 1024;
/// Bytes read from the socket per read.
const READ_CHUNK: usize = 4 * 1024;

/// The in-memory transport tungstenite reads from and writes to.
#[derive(Default)]
pub struct MemoryIo {
    incoming: BytesMut,
    outgoing: Vec<u8>,
}

impl Read for MemoryIo {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.incoming.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = out.len().min(self.incoming.len());
        out[..n].copy_from_slice(&self.incoming.split_to(n));
        Ok(n)
    }
}

impl Write for MemoryIo {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.outgoing.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The `101 Switching Protocols` answer to a valid upgrade request, or `None` when the request
/// has no usable `Sec-WebSocket-Key`.
pub fn handshake_response(request: &Request) -> Option<Vec<u8>> {
    let key = request.header("sec-websocket-key")?;
    let accept = tungstenite::handshake::derive_accept_key(key);
    Some(
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes(),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("socket closed")]
    Closed,
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// One WebSocket connection after the handshake.
pub struct Session {
    stream: TcpStream,
    ws: WebSocket<MemoryIo>,
    scratch: Vec<u8>,
}

impl Session {
    /// Takes over `stream` after the 101 has been written; `already_read` are the bytes that
    /// followed the request head in the HTTP driver's buffer.
    pub fn new(stream: TcpStream, already_read: BytesMut) -> Session {
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .max_frame_size(Some(MAX_FRAME_BYTES))
            .max_message_size(Some(MAX_FRAME_BYTES))
            .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES);
        let ws = WebSocket::from_partially_read(
            MemoryIo::default(),
            already_read.to_vec(),
            Role::Server,
            Some(config),
        );
        Session {
            stream,
            ws,
            scratch: Vec::new(),
        }
    }

    /// The next data message. Pings are answered (and closes acknowledged) on the way.
    /// `None` once the socket is closed, by either side or because a frame broke the limits.
    pub async fn recv(&mut self) -> Option<Message> {
        loop {
            let result = self.ws.read();
            if self.flush().await.is_err() {
                return None;
            }
            match result {
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Ok(Message::Close(_)) => continue, // tungstenite replies; the next read ends it
                Ok(message) => return Some(message),
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.scratch.is_empty() {
                        self.scratch = vec![0; READ_CHUNK];
                    }
                    match self.stream.read(&mut self.scratch).await {
                        Ok(0) | Err(_) => return None,
                        Ok(n) => self
                            .ws
                            .get_mut()
                            .incoming
                            .extend_from_slice(&self.scratch[..n]),
                    }
                }
                Err(tungstenite::Error::Capacity(e)) => {
                    tracing::debug!(error = %e, "websocket frame over the limit; closing");
                    return None;
                }
                Err(_) => return None,
            }
        }
    }

    pub async fn send(&mut self, message: Message) -> Result<(), SessionError> {
        self.ws.send(message).map_err(|e| match e {
            tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
                SessionError::Closed
            }
            other => SessionError::Protocol(other.to_string()),
        })?;
        self.flush().await
    }

    async fn flush(&mut self) -> Result<(), SessionError> {
        let out = std::mem::take(&mut self.ws.get_mut().outgoing);
        if !out.is_empty() {
            let _ = self
                .stream
                .set_write_timeout(Some(crate::http::limits::WRITE_TIMEOUT));
            self.stream
                .write_all(&out)
                .await
                .map_err(|_| SessionError::Closed)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_io_reports_would_block_when_empty() {
        let mut io = MemoryIo::default();
        let mut buf = [0u8; 4];
        assert_eq!(
            io.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        io.incoming.extend_from_slice(b"abcdef");
        assert_eq!(io.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf, b"abcd");
        io.write_all(b"xy").unwrap();
        assert_eq!(io.outgoing, b"xy");
    }

    #[test]
    fn handshake_uses_the_rfc_6455_accept_key() {
        let request = Request::from_bytes(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            1024,
        )
        .unwrap();
        let response = String::from_utf8(handshake_response(&request).unwrap()).unwrap();
        // The example of RFC 6455 section 1.3.
        assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(response.starts_with("HTTP/1.1 101 "));
    }
}
