//! WebSocket sessions: the HTTP driver hands an upgraded connection here together with every
//! byte it had already read past the request head (a client may send its first frame in the
//! same packet as the handshake), and tungstenite speaks the protocol. tungstenite wants a
//! blocking `Read + Write`; [`MemoryIo`] gives it one backed by two buffers, and this module
//! moves bytes between those buffers and the glommio socket.
//!
//! Two ways to drive a session:
//! - [`Session::recv`] / [`Session::send`], one after the other (request/response sockets);
//! - [`RealtimeSocket`], for the realtime socket of wire-contract A.7: one task reads client
//!   frames while any task of the shard queues server frames through a [`SocketHandle`]. The
//!   socket's task does everything in one poll — read, write the outbox, ping — so a socket
//!   costs one task, one timer and no buffers while it is idle:
//!   - reads go through a stack buffer that lives for one poll only. glommio's `TcpStream`
//!     reads only once the descriptor is readable and copies into the buffer of the poll that
//!     asked, so a poll that returns `Pending` (or a future that is dropped) loses no bytes;
//!     they stay in the kernel;
//!   - frames pushed by other tasks wait in a bounded [`Outbox`]; the socket's task encodes
//!     the WebSocket header itself and copies queued frames into one write batch, freed when
//!     written. Overflow closes the socket: a slow consumer never slows the fan-out;
//!   - a ping goes out every [`PING_INTERVAL`] (one glommio timer per socket);
//!   - the idle deadline and server shutdown use the shard's watchdog (see `watchdog`): each
//!     frame heard moves the socket's deadline (a `Cell` write), and the sweeper shuts down the
//!     read side of a socket silent for [`IDLE_TIMEOUT`], or of every socket once the shard
//!     stops; the read then ends and the socket says goodbye.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_lite::future;
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::Timer;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::shard::Shard;
use super::stats::SocketCloses;
use super::watchdog::{Fired, Watch};
use crate::http::Request;
use crate::realtime::{OUTBOX_MAX_BYTES, OUTBOX_MAX_FRAMES, Outbox, Overflow};

/// Largest frame and message a client may send; a bigger one closes the socket (wire-contract
/// A.7: frames over the size limit close it).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// tungstenite's read buffer per socket, allocated for the socket's whole life. Its default
/// (128 KiB) would dominate the memory of an idle realtime socket; client frames are small,
/// and a larger frame gets room for its whole length when its header arrives.
pub const READ_BUFFER_BYTES: usize = 1024;
/// Bytes queued for a socket before `send` fails (a slow consumer is dropped, not waited for).
pub const MAX_WRITE_BUFFER_BYTES: usize = 1024 * 1024;
/// The server pings every realtime socket this often (wire-contract A.7).
pub const PING_INTERVAL: Duration = Duration::from_secs(25);
/// A realtime socket from which no frame (pongs included) arrives for this long is dropped; so
/// is one whose writes make no progress for this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes read from the socket per read, into a buffer on the stack of one poll.
const READ_CHUNK: usize = 4 * 1024;
/// Queued frames are copied into one write of up to about this many bytes.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// Reads per poll before a busy socket lets the other tasks of the shard run.
const READS_PER_POLL: usize = 64;
/// Control frames (pongs) waiting behind a blocked write before the socket counts as a slow
/// consumer: a client that pings without reading must not grow our memory.
const MAX_CONTROL_BACKLOG_BYTES: usize = 64 * 1024;
/// How long a closing socket may take to write its last frames and its close frame.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

const OPCODE_TEXT: u8 = 0x1;
const OPCODE_PING: u8 = 0x9;

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
        out[..n].copy_from_slice(&self.incoming[..n]);
        self.incoming.advance(n);
        if self.incoming.is_empty() {
            // An idle socket keeps no receive buffer of its own.
            self.incoming = BytesMut::new();
        }
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
/// has no usable `Sec-WebSocket-Key`. `protocol` is the offered subprotocol the service picked
/// (`Service::subprotocol`), echoed: Chromium fails a handshake whose offered subprotocol is
/// not picked (wire contract A.10).
pub fn handshake_response(request: &Request, protocol: Option<&str>) -> Option<Vec<u8>> {
    let key = request.header("sec-websocket-key")?;
    let accept = tungstenite::handshake::derive_accept_key(key);
    let protocol = protocol
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    Some(
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{protocol}\r\n"
        )
        .into_bytes(),
    )
}

/// Appends one unmasked (server-to-client) frame with FIN set: the RFC 6455 §5.2 header, then
/// `payload`.
pub fn write_server_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | (opcode & 0x0f));
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// Reads what the socket has into `incoming`. The chunk lives on the stack of this one poll, so
/// a connection waiting for data holds no read buffer; glommio reads only when the descriptor
/// is readable, so a `Pending` poll leaves every byte in the kernel.
fn poll_fill(
    stream: &mut TcpStream,
    cx: &mut Context<'_>,
    incoming: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    let mut chunk = [0u8; READ_CHUNK];
    match Pin::new(stream).poll_read(cx, &mut chunk) {
        Poll::Ready(Ok(n)) => {
            incoming.extend_from_slice(&chunk[..n]);
            Poll::Ready(Ok(n))
        }
        other => other,
    }
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
        Session { stream, ws }
    }

    /// The address this connection reached the server at.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.stream.local_addr().ok()
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
                    let Session { stream, ws } = self;
                    let incoming = &mut ws.get_mut().incoming;
                    match future::poll_fn(|cx| poll_fill(stream, cx, incoming)).await {
                        Ok(0) | Err(_) => return None,
                        Ok(_) => {}
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

/// Why a realtime socket closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed (a close frame, answered, or the end of the connection).
    PeerClosed,
    /// No frame from the client for the idle timeout.
    Idle,
    /// The server is shutting down (the client gets close code 1001).
    Shutdown,
    /// A client frame over [`MAX_FRAME_BYTES`] (close code 1009).
    TooLarge,
    /// The client broke the WebSocket protocol (close code 1002).
    Protocol,
    /// Its outbox overflowed: a slow consumer.
    Overflow,
    /// Writes made no progress for the idle timeout.
    WriteStalled,
    /// The server closed it through [`SocketHandle::close`] (close code 1000).
    Requested,
    /// Reading or writing failed (reset).
    Failed,
}

impl CloseReason {
    /// The index of this reason's label in `stats::CLOSE_REASONS`.
    pub fn index(self) -> usize {
        match self {
            CloseReason::PeerClosed => 0,
            CloseReason::Idle => 1,
            CloseReason::Shutdown => 2,
            CloseReason::TooLarge => 3,
            CloseReason::Protocol => 4,
            CloseReason::Overflow => 5,
            CloseReason::WriteStalled => 6,
            CloseReason::Requested => 7,
            CloseReason::Failed => 8,
        }
    }
}

/// The timings and bounds of a realtime socket. Production uses [`RealtimeTuning::default`];
/// tests shorten them.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealtimeTuning {
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub outbox_max_frames: usize,
    pub outbox_max_bytes: usize,
}

impl Default for RealtimeTuning {
    fn default() -> Self {
        RealtimeTuning {
            ping_interval: PING_INTERVAL,
            idle_timeout: IDLE_TIMEOUT,
            outbox_max_frames: OUTBOX_MAX_FRAMES,
            outbox_max_bytes: OUTBOX_MAX_BYTES,
        }
    }
}

/// What a socket and its handles share: the outbox, the socket task's waker, and whether the
/// socket is closing.
struct Shared {
    outbox: RefCell<Outbox>,
    waker: RefCell<Option<Waker>>,
    closing: Cell<Option<CloseReason>>,
}

impl Shared {
    fn wake(&self) {
        if let Some(waker) = self.waker.borrow().as_ref() {
            waker.wake_by_ref();
        }
    }

    fn register(&self, waker: &Waker) {
        let mut slot = self.waker.borrow_mut();
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    fn close(&self, reason: CloseReason) {
        if self.closing.get().is_none() {
            self.closing.set(Some(reason));
        }
        self.outbox.borrow_mut().clear();
        self.wake();
    }
}

/// Queues frames for one realtime socket from any task of its shard. Cheap to clone; it does
/// not keep the connection open.
#[derive(Clone)]
pub struct SocketHandle {
    shared: Rc<Shared>,
}

impl SocketHandle {
    /// Queues one server frame (UTF-8 JSON text, as `wire::realtime::encode_frame` makes). Never
    /// waits. `Err(Overflow)` when the outbox is full — the socket is then closed as a slow
    /// consumer — or when the socket is already closing; either way the caller should forget
    /// this handle.
    pub fn push(&self, frame: Bytes) -> Result<(), Overflow> {
        debug_assert!(std::str::from_utf8(&frame).is_ok(), "text frames are UTF-8");
        if self.shared.closing.get().is_some() {
            return Err(Overflow);
        }
        let mut outbox = self.shared.outbox.borrow_mut();
        let was_empty = outbox.is_empty();
        let pushed = outbox.push(frame);
        drop(outbox);
        match pushed {
            Ok(()) => {
                // A non-empty outbox means the socket task is already due to write, or waits
                // for the socket to become writable; either way it comes back by itself.
                if was_empty {
                    self.shared.wake();
                }
                Ok(())
            }
            Err(overflow) => {
                self.shared.close(CloseReason::Overflow);
                Err(overflow)
            }
        }
    }

    /// Closes the socket after what is already queued (close code 1000).
    pub fn close(&self) {
        if self.shared.closing.get().is_none() {
            self.shared.closing.set(Some(CloseReason::Requested));
            self.shared.wake();
        }
    }

    /// Whether the socket is closing or closed.
    pub fn is_closed(&self) -> bool {
        self.shared.closing.get().is_some()
    }

    /// Frames queued and not yet handed to the kernel.
    pub fn queued(&self) -> usize {
        self.shared.outbox.borrow().len()
    }

    /// A handle of no socket (nothing writes its outbox): for tests of what is queued.
    #[cfg(test)]
    pub(crate) fn detached() -> SocketHandle {
        SocketHandle {
            shared: Rc::new(Shared {
                outbox: RefCell::new(Outbox::new(OUTBOX_MAX_FRAMES, OUTBOX_MAX_BYTES)),
                waker: RefCell::new(None),
                closing: Cell::new(None),
            }),
        }
    }

    /// The frames queued, taken out (tests).
    #[cfg(test)]
    pub(crate) fn take_queued(&self) -> Vec<Bytes> {
        let mut outbox = self.shared.outbox.borrow_mut();
        std::iter::from_fn(|| outbox.pop()).collect()
    }
}

/// A realtime WebSocket: the handler reads client text frames with
/// [`RealtimeSocket::next_client_text`] while other tasks push server frames through
/// [`SocketHandle`]s. Queued frames are written only while the handler waits in
/// `next_client_text`, so a handler should not await anything slow between two calls (spawn
/// it and reply through a handle).
///
/// An idle socket costs about 7 KiB of resident memory, its connection task included
/// (`idle_realtime_socket_memory` in `tests/e2e_platform.rs` measures it). A handler should
/// take what it needs from the upgrade `Request` and drop it: the request shares the HTTP
/// driver's 8 KiB read buffer.
pub struct RealtimeSocket {
    // Dropped first, before `session` closes the descriptor: the watchdog must never shut down
    // a descriptor number that may have been reused.
    watch: Rc<Watch>,
    shared: Rc<Shared>,
    session: Session,
    ping: Timer,
    tuning: RealtimeTuning,
    /// Encoded frames being written; no allocation while there is nothing to write.
    out: Vec<u8>,
    written: usize,
    /// Since when writes have been waiting for the socket to become writable.
    stalled_since: Option<Instant>,
    closed: Option<CloseReason>,
    /// The shard's counts of closed sockets, by reason.
    closes: SocketCloses,
}

impl RealtimeSocket {
    pub fn new<S>(session: Session, shard: &Shard<S>) -> RealtimeSocket {
        Self::with_tuning(session, shard, RealtimeTuning::default())
    }

    /// [`RealtimeSocket::new`] with other timings and bounds (tests).
    #[doc(hidden)]
    pub fn with_tuning<S>(
        session: Session,
        shard: &Shard<S>,
        tuning: RealtimeTuning,
    ) -> RealtimeSocket {
        // Writes are watched by the stall check, not by a glommio timer per blocked write.
        let _ = session.stream.set_write_timeout(None);
        let watch = shard.watchdog.watch(session.stream.as_raw_fd());
        watch.arm(Instant::now() + tuning.idle_timeout, true);
        RealtimeSocket {
            watch,
            shared: Rc::new(Shared {
                outbox: RefCell::new(Outbox::new(
                    tuning.outbox_max_frames,
                    tuning.outbox_max_bytes,
                )),
                waker: RefCell::new(None),
                closing: Cell::new(None),
            }),
            session,
            ping: Timer::new(tuning.ping_interval),
            tuning,
            out: Vec::new(),
            written: 0,
            stalled_since: None,
            closed: None,
            closes: shard.stats.socket_closes.clone(),
        }
    }

    pub fn handle(&self) -> SocketHandle {
        SocketHandle {
            shared: self.shared.clone(),
        }
    }

    /// Why the socket closed, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.closed
    }

    /// The next text frame from the client, writing queued frames and pinging meanwhile.
    /// `None` once the socket is closed — by the client, for silence, for a frame over the
    /// limit, for overflow, by a handle, or because the server is stopping; the last frames
    /// and a close frame are written (for at most a second) before it returns.
    pub async fn next_client_text(&mut self) -> Option<String> {
        if self.closed.is_some() {
            return None;
        }
        match future::poll_fn(|cx| self.poll_next(cx)).await {
            Ok(text) => Some(text),
            Err(reason) => {
                self.finish(reason).await;
                None
            }
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<String, CloseReason>> {
        self.shared.register(cx.waker());
        if let Some(reason) = self.shared.closing.get() {
            return Poll::Ready(Err(reason));
        }
        if let Err(reason) = self.poll_ping(cx) {
            return Poll::Ready(Err(reason));
        }
        let read = self.poll_read_text(cx);
        if let Poll::Ready(Err(reason)) = read {
            return Poll::Ready(Err(reason));
        }
        // Also when a text frame is ready: pongs and queued frames go out without waiting for
        // the handler to come back.
        if let Err(reason) = self.poll_write(cx) {
            return Poll::Ready(Err(reason));
        }
        read
    }

    /// Queues a ping when the timer fires; checks for stalled writes at the same pace.
    fn poll_ping(&mut self, cx: &mut Context<'_>) -> Result<(), CloseReason> {
        while Pin::new(&mut self.ping).poll(cx).is_ready() {
            if self
                .stalled_since
                .is_some_and(|since| since.elapsed() >= self.tuning.idle_timeout)
            {
                return Err(CloseReason::WriteStalled);
            }
            // `out` only ever holds whole frames, so appending keeps frame boundaries.
            write_server_frame(&mut self.out, OPCODE_PING, &[]);
            self.ping.reset(self.tuning.ping_interval);
        }
        Ok(())
    }

    fn poll_read_text(&mut self, cx: &mut Context<'_>) -> Poll<Result<String, CloseReason>> {
        for _ in 0..READS_PER_POLL {
            let Session { stream, ws } = &mut self.session;
            match ws.read() {
                Ok(Message::Text(text)) => {
                    self.heard();
                    return Poll::Ready(Ok(text.as_str().to_owned()));
                }
                // Pings are answered by tungstenite (the pong is written with the next
                // batch); binary frames are not part of the protocol; a close is answered on
                // the next read, which then ends the session.
                Ok(_) => {
                    self.heard();
                    if self.session.ws.get_ref().outgoing.len() > MAX_CONTROL_BACKLOG_BYTES {
                        return Poll::Ready(Err(CloseReason::Overflow));
                    }
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    match poll_fill(stream, cx, &mut ws.get_mut().incoming) {
                        Poll::Ready(Ok(0)) => return Poll::Ready(Err(self.why_ended())),
                        Poll::Ready(Ok(_)) => {}
                        Poll::Ready(Err(_)) => return Poll::Ready(Err(CloseReason::Failed)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Poll::Ready(Err(CloseReason::PeerClosed));
                }
                Err(tungstenite::Error::Capacity(e)) => {
                    tracing::debug!(error = %e, "realtime frame over the limit; closing");
                    return Poll::Ready(Err(CloseReason::TooLarge));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "realtime protocol error; closing");
                    return Poll::Ready(Err(CloseReason::Protocol));
                }
            }
        }
        // A client keeping us busy: let the shard's other tasks run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// A frame arrived: the idle deadline moves.
    fn heard(&self) {
        self.watch
            .arm(Instant::now() + self.tuning.idle_timeout, true);
    }

    /// The read side ended: the watchdog shut it (silence or shutdown) or the client left.
    fn why_ended(&self) -> CloseReason {
        match self.watch.fired() {
            Some(Fired::TimedOut) => CloseReason::Idle,
            Some(Fired::Stopping) => CloseReason::Shutdown,
            None => CloseReason::PeerClosed,
        }
    }

    /// Writes as much as the socket takes: the batch in `out`, then control frames tungstenite
    /// queued (pongs, the answer to a close), then queued frames.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<(), CloseReason> {
        loop {
            if self.written == self.out.len() {
                self.out.clear();
                self.written = 0;
                self.refill(WRITE_BATCH_BYTES);
                if self.out.is_empty() {
                    // Idle sockets hold no write buffer.
                    self.out = Vec::new();
                    self.stalled_since = None;
                    return Ok(());
                }
            }
            match Pin::new(&mut self.session.stream).poll_write(cx, &self.out[self.written..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Err(CloseReason::Failed),
                Poll::Ready(Ok(n)) => {
                    self.written += n;
                    self.stalled_since = None;
                }
                Poll::Pending => {
                    self.stalled_since.get_or_insert_with(Instant::now);
                    return Ok(());
                }
            }
        }
    }

    /// Appends to `out` (which holds whole frames) tungstenite's control frames, then queued
    /// frames up to about `limit` bytes.
    fn refill(&mut self, limit: usize) {
        let control = std::mem::take(&mut self.session.ws.get_mut().outgoing);
        if self.out.is_empty() {
            self.out = control;
        } else {
            self.out.extend_from_slice(&control);
        }
        let mut outbox = self.shared.outbox.borrow_mut();
        while self.out.len() < limit {
            let Some(frame) = outbox.pop() else { break };
            write_server_frame(&mut self.out, OPCODE_TEXT, &frame);
        }
    }

    /// Says goodbye: depending on why, the frames still queued and a close frame are written,
    /// for at most [`CLOSE_FLUSH_TIMEOUT`].
    async fn finish(&mut self, reason: CloseReason) {
        let closes = &self.closes[reason.index()];
        closes.set(closes.get() + 1);
        self.closed = Some(reason);
        self.shared.closing.set(Some(reason));
        self.watch.disarm();
        let close = match reason {
            // Nothing more can or should be written.
            CloseReason::Overflow | CloseReason::Failed | CloseReason::WriteStalled => {
                self.shared.outbox.borrow_mut().clear();
                return;
            }
            // What was queued still goes out, before the close frame.
            CloseReason::Shutdown => Some((CloseCode::Away, "server shutting down")),
            CloseReason::Requested => Some((CloseCode::Normal, "")),
            // tungstenite has already queued its answer to the client's close.
            CloseReason::PeerClosed => None,
            CloseReason::Idle => Some((CloseCode::Away, "idle")),
            CloseReason::TooLarge => Some((CloseCode::Size, "frame too large")),
            CloseReason::Protocol => Some((CloseCode::Protocol, "protocol error")),
        };
        if !matches!(reason, CloseReason::Shutdown | CloseReason::Requested) {
            self.shared.outbox.borrow_mut().clear();
        }
        self.refill(usize::MAX);
        if let Some((code, text)) = close {
            let _ = self.session.ws.close(Some(CloseFrame {
                code,
                reason: text.into(),
            }));
            self.refill(usize::MAX);
        }
        let flushed = future::poll_fn(|cx| match self.poll_write(cx) {
            Ok(()) if !self.out.is_empty() => Poll::Pending,
            _ => Poll::Ready(()),
        });
        future::or(flushed, async {
            glommio::timer::sleep(CLOSE_FLUSH_TIMEOUT).await;
        })
        .await;
    }
}

impl Drop for RealtimeSocket {
    fn drop(&mut self) {
        // Handles held elsewhere stop queuing at once, and no longer wake this task.
        *self.shared.waker.borrow_mut() = None;
        self.shared
            .close(self.closed.unwrap_or(CloseReason::Requested));
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
    fn a_drained_memory_io_holds_no_buffer() {
        let mut io = MemoryIo::default();
        io.incoming.extend_from_slice(&[7u8; 3000]);
        let mut buf = [0u8; 4096];
        assert_eq!(io.read(&mut buf).unwrap(), 3000);
        assert_eq!(io.incoming.capacity(), 0);
    }

    #[test]
    fn server_frames_decode_at_every_length_class() {
        for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 200_000] {
            let text = "é".repeat(len / 2) + &"x".repeat(len % 2);
            assert_eq!(text.len(), len);
            let mut wire = Vec::new();
            write_server_frame(&mut wire, OPCODE_TEXT, text.as_bytes());
            write_server_frame(&mut wire, OPCODE_PING, b"");
            let io = MemoryIo {
                incoming: BytesMut::from(&wire[..]),
                outgoing: Vec::new(),
            };
            let mut client = WebSocket::from_raw_socket(io, Role::Client, None);
            assert_eq!(client.read().unwrap(), Message::text(text), "length {len}");
            assert_eq!(client.read().unwrap(), Message::Ping(Bytes::new()));
        }
    }

    #[test]
    fn headers_use_the_shortest_length_encoding() {
        let mut out = Vec::new();
        write_server_frame(&mut out, OPCODE_TEXT, &[b'a'; 125]);
        assert_eq!(&out[..2], [0x81, 125]);
        out.clear();
        write_server_frame(&mut out, OPCODE_TEXT, &[b'a'; 126]);
        assert_eq!(&out[..4], [0x81, 126, 0, 126]);
        out.clear();
        write_server_frame(&mut out, OPCODE_TEXT, &[b'a'; 65_536]);
        assert_eq!(&out[..10], [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(out.len(), 10 + 65_536);
    }

    #[test]
    fn tuning_defaults_are_the_contract_values() {
        let tuning = RealtimeTuning::default();
        assert_eq!(tuning.ping_interval, Duration::from_secs(25));
        assert_eq!(tuning.idle_timeout, Duration::from_secs(60));
        assert_eq!(tuning.outbox_max_frames, 1024);
        assert_eq!(tuning.outbox_max_bytes, 1024 * 1024);
    }

    #[test]
    fn handshake_uses_the_rfc_6455_accept_key() {
        let request = Request::from_bytes(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            1024,
        )
        .unwrap();
        let response = String::from_utf8(handshake_response(&request, None).unwrap()).unwrap();
        // The example of RFC 6455 section 1.3.
        assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(response.starts_with("HTTP/1.1 101 "));
        assert!(!response.contains("Sec-WebSocket-Protocol"));
    }

    #[test]
    fn handshake_echoes_the_picked_subprotocol() {
        let request = Request::from_bytes(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, openchat.session.ocs_abc\r\n\r\n",
            1024,
        )
        .unwrap();
        let response = String::from_utf8(
            handshake_response(&request, Some("openchat.session.ocs_abc")).unwrap(),
        )
        .unwrap();
        assert!(response.contains("\r\nSec-WebSocket-Protocol: openchat.session.ocs_abc\r\n"));
        assert!(response.ends_with("\r\n\r\n"));
        let none = String::from_utf8(handshake_response(&request, None).unwrap()).unwrap();
        assert!(!none.contains("Sec-WebSocket-Protocol"));
        assert!(none.ends_with("\r\n\r\n"));
    }
}
