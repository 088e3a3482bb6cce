//! The HTTP/1.1 connection driver: the thin, I/O-owning loop around the sans-IO
//! [`RequestReader`]. It reads into one buffer, answers every complete request already buffered
//! (pipelining) in one write, enforces the timeouts of `http::limits`, and closes the
//! connection after any protocol error. A panic while handling a request answers 500, closes
//! that one connection and is counted; the shard goes on. What a request means is the
//! [`Service`]'s to say: this loop asks it how to take a body in, what to answer, and which
//! WebSocket session an upgrade opens.

use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::TcpStream;
use glommio::sync::Gate;

use super::admission::BodyPermit;
use super::service::{BodyPlan, Service, SessionFn};
use super::shard::Shard;
use super::upload::{SpoolError, Spooler, Upload};
use super::watchdog::{Fired, Phase, RequestClock, Watch};
use super::websocket;
use crate::http::limits::{BUSY_RETRY_AFTER_SECS, MAX_PIPELINE_DEPTH, WRITE_TIMEOUT};
use crate::http::reader::{BodyPiece, Polled};
use crate::http::{HttpError, Method, Request, RequestReader, Response};
use glommio::io::BufferedFile;
use std::os::fd::AsRawFd;

/// Bytes asked of the socket per read (one scratch buffer of this size per connection).
const READ_CHUNK: usize = 8 * 1024;
/// Responses are flushed once this many bytes are waiting, even mid-pipeline.
const OUT_FLUSH_BYTES: usize = 64 * 1024;
/// After an error response, how long (and how much) we keep reading the client's leftover bytes
/// before closing, so the kernel does not reset the connection before the client reads our answer.
const LINGER_TIME: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

pub async fn serve<S: Service>(stream: TcpStream, shard: Rc<Shard<S>>, connections: Gate) {
    let _ = stream.set_nodelay(true);
    // Connection caps (`OPENCHAT_MAX_CONNECTIONS` per shard, `OPENCHAT_MAX_CONNECTIONS_PER_ADDR`
    // over all shards), checked before anything is read: one address cannot take every
    // descriptor, and a full shard answers instead of failing to accept.
    let Ok(peer) = stream.peer_addr() else {
        return;
    };
    let open = usize::try_from(shard.stats.connections_open.get()).unwrap_or(usize::MAX);
    let Some(permit) = shard.shared.connection_caps.admit(peer.ip(), open) else {
        return refuse_connection(stream, &shard).await;
    };
    let counted = Counted::new(shard.clone());
    let outcome = AssertUnwindSafe(drive(stream, shard.clone()))
        .catch_unwind()
        .await;
    let upgrade = match outcome {
        Ok(upgrade) => upgrade,
        Err(_) => {
            shard.stats.count_panic();
            tracing::error!(
                shard = shard.id,
                "connection driver panicked; connection closed"
            );
            None
        }
    };
    let Some(Upgrade {
        session,
        request,
        io,
    }) = upgrade
    else {
        return;
    };
    // A WebSocket session outlives the HTTP exchange that opened it: it runs in a task of its
    // own, so the HTTP driver's state (its buffers, body and upload states) is freed now
    // rather than held for the session's whole life. The session keeps the connection's
    // place under the caps and in the shard's count, and the shutdown gate waits for it.
    let task = connections.spawn(async move {
        let _held = (permit, counted);
        let outcome = AssertUnwindSafe(session(shard.clone(), request, io))
            .catch_unwind()
            .await;
        if outcome.is_err() {
            shard.stats.count_panic();
            tracing::error!(shard = shard.id, "WebSocket session panicked; closed");
        }
    });
    // A closing gate (shutdown) refuses the task; the session's socket is then dropped.
    if let Ok(task) = task {
        task.detach();
    }
}

/// A WebSocket handshake answered by the HTTP driver: the session to run on the socket.
struct Upgrade<S> {
    session: SessionFn<S>,
    request: Request,
    io: websocket::Session,
}

/// One open connection in the shard's count, from admission until the connection (or the
/// WebSocket session it became) ends.
struct Counted<S>(Rc<Shard<S>>);

impl<S> Counted<S> {
    fn new(shard: Rc<Shard<S>>) -> Counted<S> {
        let open = &shard.stats.connections_open;
        open.set(open.get() + 1);
        Counted(shard)
    }
}

impl<S> Drop for Counted<S> {
    fn drop(&mut self) {
        let open = &self.0.stats.connections_open;
        open.set(open.get() - 1);
    }
}

enum Next {
    KeepGoing,
    Close,
    /// Close after letting the client finish sending (error responses).
    LingerAndClose,
}

/// A request body being taken in: its share of the body budget (held until the request is
/// answered) and, for an upload, the spooler writing its form to temp files.
struct InFlight {
    _permit: BodyPermit,
    spool: Option<Spooler>,
}

async fn drive<S: Service>(mut stream: TcpStream, shard: Rc<Shard<S>>) -> Option<Upgrade<S>> {
    // Dropped at the end of this function, before `stream` closes the descriptor.
    let watch = shard.watchdog.watch(stream.as_raw_fd());
    let max_body = shard.shared.max_body_bytes;
    let mut reader = RequestReader::new(max_body);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut scratch = vec![0u8; READ_CHUNK];
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let mut clock = RequestClock::default();
    let mut in_flight: Option<InFlight> = None;

    loop {
        let mut next = Next::KeepGoing;
        let mut answered = 0usize;
        loop {
            // An upload being streamed takes every buffered byte first.
            if let Some(spool) = in_flight.as_mut().and_then(|f| f.spool.as_mut()) {
                match reader.poll_body(&mut buf) {
                    Ok(BodyPiece::Data(piece)) => {
                        if let Err(e) = spool.feed(&piece).await {
                            spool_error(&*shard.app, e).encode(
                                &mut out,
                                &shard.http_date(),
                                false,
                                false,
                            );
                            next = Next::LingerAndClose;
                            break;
                        }
                        continue;
                    }
                    Ok(BodyPiece::More) => break,
                    Ok(BodyPiece::End(request)) => {
                        clock.finished();
                        let Some(InFlight {
                            _permit: permit,
                            spool: Some(spool),
                        }) = in_flight.take()
                        else {
                            unreachable!("an upload is in flight");
                        };
                        let started = Instant::now();
                        let (response, healthy) = match spool.finish().await {
                            // The form and its temp files are dropped once answered.
                            Ok(upload) => respond(&shard, &request, Some(&upload)).await,
                            Err(e) => (spool_error(&*shard.app, e), true),
                        };
                        drop(permit);
                        match pipeline(
                            &shard,
                            &mut stream,
                            &mut out,
                            &mut answered,
                            &request,
                            (response, started),
                            healthy,
                        )
                        .await
                        {
                            Emitted::Gone => return None,
                            Emitted::Close => {
                                next = Next::Close;
                                break;
                            }
                            Emitted::KeepAlive { .. } => continue,
                        }
                    }
                    Err(e) => {
                        shard.stats.count_protocol_error();
                        e.response()
                            .encode(&mut out, &shard.http_date(), false, false);
                        next = Next::LingerAndClose;
                        break;
                    }
                }
            }
            match reader.poll(&mut buf) {
                Ok(Some(Polled::Request(request))) => {
                    clock.finished();
                    if let Some(session) = shard.app.websocket(&request) {
                        let class = shard.app.route_class(&request);
                        shard.stats.count_request(class, 101, None);
                        let protocol = shard.app.subprotocol(&request);
                        let Some(accept) = websocket::handshake_response(&request, protocol) else {
                            next = Next::LingerAndClose;
                            break;
                        };
                        out.extend_from_slice(&accept);
                        if write_all(&mut stream, &out).await.is_err() {
                            return None;
                        }
                        // The session owns the socket from here; the bytes already read past
                        // the head (a first frame sent with the handshake) go with it. The
                        // HTTP buffers are freed now rather than held for the session's life.
                        drop(watch);
                        drop((scratch, out, reader, in_flight));
                        return Some(Upgrade {
                            session,
                            request,
                            io: websocket::Session::new(stream, buf),
                        });
                    }
                    let started = Instant::now();
                    let (response, healthy) = respond(&shard, &request, None).await;
                    // An in-memory body's share of the budget comes back once it is answered.
                    in_flight = None;
                    match pipeline(
                        &shard,
                        &mut stream,
                        &mut out,
                        &mut answered,
                        &request,
                        (response, started),
                        healthy,
                    )
                    .await
                    {
                        Emitted::Gone => return None,
                        Emitted::Close => {
                            next = Next::Close;
                            break;
                        }
                        Emitted::KeepAlive { .. } => {}
                    }
                }
                Ok(Some(Polled::BodyPending)) => {
                    // Route, identity and budget are decided from the head, before the body.
                    let admitted = match reader.pending_head() {
                        Some(head) => admit_body(&shard, head).await,
                        None => Err(shard.app.internal_error()),
                    };
                    let (plan, permit) = match admitted {
                        Ok(admitted) => admitted,
                        Err(response) => {
                            reader.refuse(REFUSED);
                            response.encode(&mut out, &shard.http_date(), false, false);
                            next = Next::LingerAndClose;
                            break;
                        }
                    };
                    let spool = match plan {
                        BodyPlan::InMemory { limit } => reader.read_body(limit).map(|()| None),
                        BodyPlan::Upload { boundary, .. } => reader.stream_body().and_then(|()| {
                            Spooler::new(shard.shared.upload_dir.clone(), &boundary)
                                .map(Some)
                                .map_err(|e| match e {
                                    SpoolError::Form(e) => e,
                                    SpoolError::Io(_) => REFUSED,
                                })
                        }),
                    };
                    match spool {
                        Ok(spool) => {
                            in_flight = Some(InFlight {
                                _permit: permit,
                                spool,
                            });
                        }
                        Err(e) => {
                            shard.stats.count_protocol_error();
                            e.response()
                                .encode(&mut out, &shard.http_date(), false, false);
                            next = Next::LingerAndClose;
                            break;
                        }
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
                return None;
            }
            out.clear();
        }
        match next {
            Next::KeepGoing => {}
            Next::Close => return None,
            Next::LingerAndClose => {
                linger(stream).await;
                return None;
            }
        }
        if reader.take_expect_continue()
            && write_all(&mut stream, b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return None;
        }

        let mid_request = reader.is_mid_request() || !buf.is_empty();
        // A head must be complete within the header timeout of its first byte, however
        // steadily it trickles; a body within the body timeout of its head (`RequestClock`).
        let phase = if !mid_request {
            if shard.is_stopping() {
                return None;
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
            ReadOutcome::Closed | ReadOutcome::Shutdown => return None,
            ReadOutcome::TimedOut => {
                if mid_request {
                    shard.stats.count_protocol_error();
                    Response::error(408, "request_timeout", "request not received in time", true)
                        .encode(&mut out, &shard.http_date(), false, false);
                    let _ = write_all(&mut stream, &out).await;
                }
                return None;
            }
        }
    }
}

/// What became of an encoded response.
enum Emitted {
    /// The connection stays open; `flushed` when `out` was written (a file body).
    KeepAlive { flushed: bool },
    /// The response is in `out`; close after writing it.
    Close,
    /// Writing failed: the peer is gone.
    Gone,
}

/// [`emit`]s one answer of a pipeline (`answered` counts those still in `out`), then writes
/// `out` once the pipeline is [`MAX_PIPELINE_DEPTH`] deep or holds [`OUT_FLUSH_BYTES`], so a
/// long pipeline neither waits for its end nor grows the buffer without bound.
async fn pipeline<S: Service>(
    shard: &Shard<S>,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    answered: &mut usize,
    request: &Request,
    answer: (Response, Instant),
    healthy: bool,
) -> Emitted {
    let emitted = emit(shard, stream, out, request, answer, healthy).await;
    if let Emitted::KeepAlive { flushed } = emitted {
        *answered = if flushed { 0 } else { *answered + 1 };
        if *answered >= MAX_PIPELINE_DEPTH || out.len() >= OUT_FLUSH_BYTES {
            if write_all(stream, out).await.is_err() {
                return Emitted::Gone;
            }
            out.clear();
            *answered = 0;
        }
    }
    emitted
}

/// Encodes `response` into `out`. A file body (blob download) is streamed right away, after
/// writing what `out` holds, in pieces of [`FILE_CHUNK`].
async fn emit<S: Service>(
    shard: &Shard<S>,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    request: &Request,
    (response, started): (Response, Instant),
    healthy: bool,
) -> Emitted {
    let keep_alive = healthy && request.keep_alive() && !shard.is_stopping();
    let head_request = request.method() == Method::Head;
    response.encode(out, &shard.http_date(), keep_alive, head_request);
    shard.stats.count_request(
        shard.app.route_class(request),
        response.status,
        Some(started.elapsed()),
    );
    let mut flushed = false;
    if let Some(file) = response.file_body().filter(|_| !head_request) {
        if write_all(stream, out).await.is_err() {
            return Emitted::Gone;
        }
        out.clear();
        if let Err(e) = send_file(stream, &file.path, file.len).await {
            // The head promised the length: the connection cannot go on.
            tracing::debug!(error = %e, "file body not sent");
            return Emitted::Gone;
        }
        flushed = true;
    }
    if keep_alive {
        Emitted::KeepAlive { flushed }
    } else {
        Emitted::Close
    }
}

/// Bytes read from a file and written to the socket at a time.
const FILE_CHUNK: usize = 64 * 1024;

async fn send_file(
    stream: &mut TcpStream,
    path: &std::path::Path,
    len: u64,
) -> std::io::Result<()> {
    let file = BufferedFile::open(path).await?;
    let mut pos = 0u64;
    while pos < len {
        let want = usize::try_from(len - pos)
            .unwrap_or(FILE_CHUNK)
            .min(FILE_CHUNK);
        let piece = file.read_at(pos, want).await?;
        if piece.is_empty() {
            let _ = file.close().await;
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file shorter than announced",
            ));
        }
        write_all(stream, &piece).await?;
        pos += piece.len() as u64;
    }
    let _ = file.close().await;
    Ok(())
}

/// The answer to an upload that could not be taken in.
fn spool_error(service: &impl Service, e: SpoolError) -> Response {
    match e {
        SpoolError::Form(e) => e.response(),
        SpoolError::Io(e) => {
            tracing::error!(error = %e, "cannot write an upload to its temp file");
            service.internal_error()
        }
    }
}

/// How the body of `head` is taken in (the service's plan, or its refusal to send), and the
/// body's share of the body budget, held until the request is answered: its declared length,
/// or the plan's limit when the length is not declared. Over the budget: 503 `server_busy`,
/// after the service's own refusals (413, 401), as the service decides those from the head.
async fn admit_body<S: Service>(
    shard: &Shard<S>,
    head: &Request,
) -> Result<(BodyPlan, BodyPermit), Response> {
    let plan = shard.app.plan_body(shard, head).await?;
    let reserve = head.declared_body_len().unwrap_or(plan.limit());
    let permit = shard.shared.body_budget.try_take(reserve).ok_or_else(|| {
        Response::error(
            503,
            "server_busy",
            "the server is receiving too many request bodies; retry shortly",
            true,
        )
        .header("Retry-After", BUSY_RETRY_AFTER_SECS.to_string())
    })?;
    Ok((plan, permit))
}

/// The reader's state after a request is refused from its head (the answer is the refusal's).
const REFUSED: HttpError = HttpError {
    status: 500,
    code: "internal",
    message: "request refused",
};

/// Over a connection cap: a 503 `server_busy` and close, without serving anything.
async fn refuse_connection<S: Service>(mut stream: TcpStream, shard: &Shard<S>) {
    let mut out = Vec::with_capacity(512);
    Response::error(
        503,
        "server_busy",
        "too many open connections; retry shortly",
        true,
    )
    .header("Retry-After", BUSY_RETRY_AFTER_SECS.to_string())
    .encode(&mut out, &shard.http_date(), false, false);
    if write_all(&mut stream, &out).await.is_ok() {
        linger(stream).await;
    }
}

/// Routes and runs one request. The flag is false when the connection must close afterwards
/// (the handler panicked).
async fn respond<S: Service>(
    shard: &Shard<S>,
    request: &Request,
    upload: Option<&Upload>,
) -> (Response, bool) {
    if request.method() == Method::Options {
        // CORS preflight on any path; `Response::encode` adds the CORS headers.
        return (Response::no_content(), true);
    }
    let handled = AssertUnwindSafe(shard.app.handle(shard, request, upload))
        .catch_unwind()
        .await;
    match handled {
        Ok(response) => (response, true),
        Err(_) => {
            shard.stats.count_panic();
            tracing::error!(shard = shard.id, path = request.path(), "handler panicked");
            (shard.app.internal_error(), false)
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
