//! The HTTP/1.1 connection driver: the thin, I/O-owning loop around the sans-IO
//! [`RequestReader`]. It reads into one buffer, answers every complete request already buffered
//! (pipelining) in one write, enforces the timeouts of `http::limits`, and closes the
//! connection after any protocol error. A panic while handling a request answers 500, closes
//! that one connection and is counted; the shard goes on.

use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::TcpStream;

use super::shard::Shard;
use super::watchdog::{Fired, Phase, RequestClock, Watch};
use super::websocket;
use crate::api::{self, ApiError};
use crate::http::limits::{MAX_PIPELINE_DEPTH, WRITE_TIMEOUT};
use crate::http::{Method, Request, RequestReader, Response};
use std::os::fd::AsRawFd;

/// Bytes asked of the socket per read (one scratch buffer of this size per connection).
const READ_CHUNK: usize = 8 * 1024;
/// Responses are flushed once this many bytes are waiting, even mid-pipeline.
const OUT_FLUSH_BYTES: usize = 64 * 1024;
/// After an error response, how long (and how much) we keep reading the client's leftover bytes
/// before closing, so the kernel does not reset the connection before the client reads our answer.
const LINGER_TIME: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

pub async fn serve(stream: TcpStream, shard: Rc<Shard>) {
    let _ = stream.set_nodelay(true);
    let open = &shard.stats.connections_open;
    open.set(open.get() + 1);
    let outcome = AssertUnwindSafe(drive(stream, shard.clone()))
        .catch_unwind()
        .await;
    if outcome.is_err() {
        shard.stats.count_panic();
        tracing::error!(
            shard = shard.id,
            "connection driver panicked; connection closed"
        );
    }
    open.set(open.get() - 1);
}

enum Next {
    KeepGoing,
    Close,
    /// Close after letting the client finish sending (error responses).
    LingerAndClose,
}

async fn drive(mut stream: TcpStream, shard: Rc<Shard>) {
    // Dropped at the end of this function, before `stream` closes the descriptor.
    let watch = shard.watchdog.watch(stream.as_raw_fd());
    let max_body = shard.app.config.limits.max_body_bytes;
    let mut reader = RequestReader::new(max_body);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut scratch = vec![0u8; READ_CHUNK];
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let mut clock = RequestClock::default();

    loop {
        let mut next = Next::KeepGoing;
        let mut answered = 0usize;
        loop {
            match reader.poll_request(&mut buf) {
                Ok(Some(request)) => {
                    clock.finished();
                    if let Some(session) = api::websocket_handler(&shard.app, &request) {
                        shard.stats.count_request();
                        let Some(accept) = websocket::handshake_response(&request) else {
                            next = Next::LingerAndClose;
                            break;
                        };
                        out.extend_from_slice(&accept);
                        if write_all(&mut stream, &out).await.is_err() {
                            return;
                        }
                        // The session owns the socket from here; the bytes already read past
                        // the head (a first frame sent with the handshake) go with it. The
                        // HTTP buffers are freed now rather than held for the session's life.
                        drop(watch);
                        drop((scratch, out, reader));
                        let session_io = websocket::Session::new(stream, buf);
                        return session(shard.clone(), request, session_io).await;
                    }
                    let (response, healthy) = respond(&shard, &request).await;
                    let keep_alive = healthy && request.keep_alive() && !shard.is_stopping();
                    response.encode(
                        &mut out,
                        &shard.http_date(),
                        keep_alive,
                        request.method() == Method::Head,
                    );
                    shard.stats.count_request();
                    if !keep_alive {
                        next = Next::Close;
                        break;
                    }
                    answered += 1;
                    if answered >= MAX_PIPELINE_DEPTH || out.len() >= OUT_FLUSH_BYTES {
                        if write_all(&mut stream, &out).await.is_err() {
                            return;
                        }
                        out.clear();
                        answered = 0;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    shard.stats.count_protocol_error();
                    e.response()
                        .encode(&mut out, &shard.http_date(), false, false);
                    next = Next::LingerAndClose;
                    break;
                }
            }
        }
        if !out.is_empty() {
            if write_all(&mut stream, &out).await.is_err() {
                return;
            }
            out.clear();
        }
        match next {
            Next::KeepGoing => {}
            Next::Close => return,
            Next::LingerAndClose => return linger(stream).await,
        }
        if reader.take_expect_continue()
            && write_all(&mut stream, b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return;
        }

        let mid_request = reader.is_mid_request() || !buf.is_empty();
        // A head must be complete within the header timeout of its first byte, however
        // steadily it trickles; a body within the body timeout of its head (`RequestClock`).
        let phase = if !mid_request {
            if shard.is_stopping() {
                return;
            }
            Phase::Idle
        } else if reader.is_awaiting_body() {
            Phase::Body
        } else {
            Phase::Head
        };
        watch.arm(clock.deadline(phase, Instant::now()), !mid_request);
        match read_more(&mut stream, &mut buf, &mut scratch, &watch).await {
            ReadOutcome::Data => {}
            ReadOutcome::Closed | ReadOutcome::Shutdown => return,
            ReadOutcome::TimedOut => {
                if mid_request {
                    shard.stats.count_protocol_error();
                    Response::error(408, "request_timeout", "request not received in time", true)
                        .encode(&mut out, &shard.http_date(), false, false);
                    let _ = write_all(&mut stream, &out).await;
                }
                return;
            }
        }
    }
}

/// Routes and runs one request. The flag is false when the connection must close afterwards
/// (the handler panicked).
async fn respond(shard: &Shard, request: &Request) -> (Response, bool) {
    if request.method() == Method::Options {
        // CORS preflight on any path; `Response::encode` adds the CORS headers.
        return (Response::no_content(), true);
    }
    let handled = AssertUnwindSafe(api::handle(shard, request))
        .catch_unwind()
        .await;
    match handled {
        Ok(Ok(response)) => (response, true),
        Ok(Err(error)) => (error.into_response(), true),
        Err(_) => {
            shard.stats.count_panic();
            tracing::error!(shard = shard.id, path = request.path(), "handler panicked");
            (ApiError::Internal.into_response(), false)
        }
    }
}

enum ReadOutcome {
    Data,
    Closed,
    TimedOut,
    Shutdown,
}

async fn read_more(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    scratch: &mut [u8],
    watch: &Watch,
) -> ReadOutcome {
    let outcome = match stream.read(scratch).await {
        Ok(0) => match watch.fired() {
            Some(Fired::TimedOut) => ReadOutcome::TimedOut,
            Some(Fired::Stopping) => ReadOutcome::Shutdown,
            None => ReadOutcome::Closed,
        },
        Ok(n) => {
            // One small copy instead of zero-filling fresh buffer space on every read.
            buf.extend_from_slice(&scratch[..n]);
            ReadOutcome::Data
        }
        Err(_) => ReadOutcome::Closed,
    };
    watch.disarm();
    outcome
}

async fn write_all(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    stream.write_all(bytes).await
}

async fn linger(mut stream: TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write).await;
    let _ = stream.set_read_timeout(Some(LINGER_TIME));
    let deadline = Instant::now() + LINGER_TIME;
    // On the heap, not in the future: an array here would sit in the state of every
    // connection's task, WebSocket sessions included, for the connection's whole life.
    let mut scratch = vec![0u8; 4096];
    let mut drained = 0;
    while drained < LINGER_BYTES && Instant::now() < deadline {
        match stream.read(&mut scratch).await {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}
