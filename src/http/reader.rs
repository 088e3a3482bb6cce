//! The incremental request reader: the connection driver appends whatever the socket gave it to
//! one `BytesMut` and calls [`RequestReader::poll_request`] until it returns `Ok(None)`. The reader
//! owns the framing state between calls (awaiting a head, reading a `Content-Length` body, decoding
//! a chunked body), takes complete requests off the front of the buffer with zero-copy splits and
//! never takes a byte past the end of a request, so pipelined requests and the first frames after
//! a WebSocket upgrade stay in the buffer for whoever reads next.
//!
//! Heads are located with a resumable scan for the empty line, so a head that trickles in byte by
//! byte is scanned once, not re-parsed on every read; the full parse (`Head::parse`) runs once
//! the whole head is there. More than [`MAX_HEAD_BYTES`] without a complete head is a 431 at once.

use bytes::{Buf, Bytes, BytesMut};

use super::HttpError;
use super::chunked::ChunkedDecoder;
use super::limits::{MAX_HEAD_BYTES, MAX_LEADING_EMPTY_LINES};
use super::request::{Framing, Head, Request};
use super::scan::find_byte;

#[derive(Debug)]
enum State {
    /// Between requests or inside a head. `scanned` is how far the search for the head's end has
    /// got (an index into the buffer); `started` whether any byte of this request has arrived.
    Head { scanned: usize, started: bool },
    /// The head of a request with a body has been taken off the buffer; the driver decides what
    /// happens to the body ([`RequestReader::read_body`], [`RequestReader::stream_body`]) or
    /// refuses the request before a byte of it is read.
    Decide(Request),
    /// `len` body bytes are awaited in one piece (in memory).
    Length { request: Request, len: usize },
    /// The body is being decoded into `body` (in memory), at most `limit` bytes.
    Chunked {
        request: Request,
        decoder: ChunkedDecoder,
        body: BytesMut,
        limit: usize,
    },
    /// The body is handed out in pieces as it arrives; `remaining` bytes are still to come.
    StreamLength { request: Request, remaining: usize },
    /// A chunked body handed out in pieces as it is decoded.
    StreamChunked {
        request: Request,
        decoder: ChunkedDecoder,
    },
    /// A request was refused; the connection is unusable, and the same error is repeated.
    Failed(HttpError),
}

/// What [`RequestReader::poll`] found.
#[derive(Debug)]
pub enum Polled {
    /// A complete request (a bodyless one, or one whose body was read into memory).
    Request(Request),
    /// The head of a request with a body is complete
    /// ([`pending_head`](RequestReader::pending_head)); not a byte of the body has been taken.
    /// The driver must now call `read_body`, `stream_body` or `refuse`.
    BodyPending,
}

/// A piece of a streamed body ([`RequestReader::poll_body`]).
#[derive(Debug)]
pub enum BodyPiece {
    /// Body bytes, in order; zero-copy from the read buffer for `Content-Length` bodies.
    Data(Bytes),
    /// Everything buffered has been handed out; append more and call again.
    More,
    /// The body is complete; the request (with an empty body) and the reader go back to
    /// awaiting the next head.
    End(Request),
}

/// Resumable HTTP/1.1 request reader for one connection.
#[derive(Debug)]
pub struct RequestReader {
    max_body_bytes: usize,
    state: State,
    expect_continue: bool,
}

impl RequestReader {
    /// `max_body_bytes` applies to the declared `Content-Length` and to the decoded size of a
    /// chunked body (`OPENCHAT_HTTP_MAX_BODY_BYTES`, default
    /// [`DEFAULT_MAX_BODY_BYTES`](super::limits::DEFAULT_MAX_BODY_BYTES)); a driver may ask for
    /// less per request ([`read_body`](Self::read_body)).
    pub fn new(max_body_bytes: usize) -> Self {
        Self {
            max_body_bytes,
            state: State::Head {
                scanned: 0,
                started: false,
            },
            expect_continue: false,
        }
    }

    /// Takes from `buf` (via `split_to`, zero-copy) exactly the bytes of the next complete request,
    /// reading every body into memory up to the reader's limit.
    ///
    /// `Ok(None)`: more bytes are needed; call again after appending to `buf`. `buf` may have been
    /// partly consumed (the head of a request whose body is pending, decoded chunks), the state is
    /// kept. Between calls the caller may only append to `buf`. Never consumes bytes after the end
    /// of a request. After an `Err` the connection must be answered and closed; further calls
    /// return the same error.
    pub fn poll_request(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, HttpError> {
        loop {
            match self.poll(buf)? {
                Some(Polled::Request(request)) => return Ok(Some(request)),
                Some(Polled::BodyPending) => self.read_body(self.max_body_bytes)?,
                None => return Ok(None),
            }
        }
    }

    /// Like [`poll_request`](Self::poll_request), but stops after the head of a request with a
    /// body ([`Polled::BodyPending`]) so the driver can decide about the body from the head.
    pub fn poll(&mut self, buf: &mut BytesMut) -> Result<Option<Polled>, HttpError> {
        match self.poll_inner(buf) {
            Ok(Some(Polled::Request(request))) => {
                // The body is complete: a late `100 Continue` would only confuse the client.
                self.expect_continue = false;
                Ok(Some(Polled::Request(request)))
            }
            Ok(other) => Ok(other),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// The head of the request whose body awaits a decision ([`Polled::BodyPending`]).
    pub fn pending_head(&self) -> Option<&Request> {
        match &self.state {
            State::Decide(request) => Some(request),
            _ => None,
        }
    }

    /// Reads the pending body into memory, at most `limit` bytes (and never more than the
    /// reader's own limit). A declared length over it is a 413 now, before any body byte is
    /// read; a chunked body is cut off with 413 once it crosses it. Then keep calling
    /// [`poll`](Self::poll).
    pub fn read_body(&mut self, limit: usize) -> Result<(), HttpError> {
        let limit = limit.min(self.max_body_bytes);
        let State::Decide(request) = std::mem::replace(&mut self.state, State::Failed(DECIDED))
        else {
            return Err(self.fail(DECIDED));
        };
        self.state = match request.declared_body_len() {
            Some(len) if len > limit => {
                return Err(self.fail(HttpError::payload_too_large("request body too large")));
            }
            Some(len) => State::Length { request, len },
            None => State::Chunked {
                request,
                decoder: ChunkedDecoder::new(),
                body: BytesMut::new(),
                limit,
            },
        };
        self.expect_continue = self.pending_expects_continue();
        Ok(())
    }

    /// Hands the pending body out in pieces as it arrives ([`poll_body`](Self::poll_body)),
    /// bounded by the reader's limit.
    pub fn stream_body(&mut self) -> Result<(), HttpError> {
        let State::Decide(request) = std::mem::replace(&mut self.state, State::Failed(DECIDED))
        else {
            return Err(self.fail(DECIDED));
        };
        self.state = match request.declared_body_len() {
            Some(remaining) => State::StreamLength { request, remaining },
            None => State::StreamChunked {
                request,
                decoder: ChunkedDecoder::new(),
            },
        };
        self.expect_continue = self.pending_expects_continue();
        Ok(())
    }

    /// The pending request is refused with `error` (answered by the driver, which then closes
    /// the connection without reading the body).
    pub fn refuse(&mut self, error: HttpError) {
        self.expect_continue = false;
        self.state = State::Failed(error);
    }

    /// The next piece of a body being streamed ([`stream_body`](Self::stream_body)).
    pub fn poll_body(&mut self, buf: &mut BytesMut) -> Result<BodyPiece, HttpError> {
        let piece = match &mut self.state {
            State::Failed(e) => return Err(e.clone()),
            State::StreamLength { remaining, .. } => {
                if *remaining == 0 {
                    None
                } else if buf.is_empty() {
                    return Ok(BodyPiece::More);
                } else {
                    let n = (*remaining).min(buf.len());
                    *remaining -= n;
                    Some(buf.split_to(n).freeze())
                }
            }
            State::StreamChunked { decoder, .. } => {
                let mut out = BytesMut::new();
                match decoder.decode(buf, &mut out, self.max_body_bytes) {
                    Err(e) => return Err(self.fail(e)),
                    Ok(done) if !out.is_empty() => {
                        let _ = done;
                        Some(out.freeze())
                    }
                    Ok(Some(_)) => None,
                    Ok(None) => return Ok(BodyPiece::More),
                }
            }
            _ => return Err(self.fail(DECIDED)),
        };
        if let Some(data) = piece {
            return Ok(BodyPiece::Data(data));
        }
        self.expect_continue = false;
        Ok(BodyPiece::End(self.finish(Bytes::new(), buf)))
    }

    /// True while part of a request has been received (the head or body timeout applies), false
    /// when idle between requests (the keep-alive timeout applies).
    pub fn is_mid_request(&self) -> bool {
        match self.state {
            State::Head { started, .. } => started,
            State::Failed(_) => false,
            _ => true,
        }
    }

    /// True once a head has been taken and its body is awaited (the body timeout applies, not
    /// the header timeout).
    pub fn is_awaiting_body(&self) -> bool {
        matches!(
            self.state,
            State::Decide(_)
                | State::Length { .. }
                | State::Chunked { .. }
                | State::StreamLength { .. }
                | State::StreamChunked { .. }
        )
    }

    /// True exactly once after a head with `Expect: 100-continue` whose body is still pending: the
    /// driver then writes `HTTP/1.1 100 Continue\r\n\r\n` before reading on.
    pub fn take_expect_continue(&mut self) -> bool {
        std::mem::take(&mut self.expect_continue)
    }

    fn pending_expects_continue(&self) -> bool {
        match &self.state {
            State::Length { request, .. }
            | State::Chunked { request, .. }
            | State::StreamLength { request, .. }
            | State::StreamChunked { request, .. } => request.expects_continue(),
            _ => false,
        }
    }

    fn fail(&mut self, e: HttpError) -> HttpError {
        self.expect_continue = false;
        self.state = State::Failed(e.clone());
        e
    }

    fn poll_inner(&mut self, buf: &mut BytesMut) -> Result<Option<Polled>, HttpError> {
        match &mut self.state {
            State::Failed(e) => Err(e.clone()),
            State::Decide(_) => Ok(Some(Polled::BodyPending)),
            State::StreamLength { .. } | State::StreamChunked { .. } => Err(DECIDED),
            State::Head { scanned, started } => {
                *started = !buf.is_empty();
                let Some((skip, head_len)) = find_head(buf, scanned)? else {
                    return Ok(None);
                };
                let head = Head::parse(&buf[skip..skip + head_len], self.max_body_bytes)?;
                buf.advance(skip);
                let bytes = buf.split_to(head_len).freeze();
                let framing = head.framing;
                let request = Request::new(bytes, head, Bytes::new());
                if framing == Framing::Empty {
                    self.state = State::Head {
                        scanned: 0,
                        started: !buf.is_empty(),
                    };
                    return Ok(Some(Polled::Request(request)));
                }
                self.state = State::Decide(request);
                Ok(Some(Polled::BodyPending))
            }
            State::Length { len, .. } => {
                if buf.len() < *len {
                    return Ok(None);
                }
                let body = buf.split_to(*len).freeze();
                Ok(Some(Polled::Request(self.finish(body, buf))))
            }
            State::Chunked {
                decoder,
                body,
                limit,
                ..
            } => {
                if decoder.decode(buf, body, *limit)?.is_none() {
                    return Ok(None);
                }
                let body = std::mem::take(body).freeze();
                Ok(Some(Polled::Request(self.finish(body, buf))))
            }
        }
    }

    /// Completes the request whose head is held in the state and goes back to awaiting a head.
    fn finish(&mut self, body: Bytes, buf: &BytesMut) -> Request {
        let next = State::Head {
            scanned: 0,
            started: !buf.is_empty(),
        };
        match std::mem::replace(&mut self.state, next) {
            State::Length { mut request, .. }
            | State::Chunked { mut request, .. }
            | State::StreamLength { mut request, .. }
            | State::StreamChunked { mut request, .. } => {
                request.set_body(body);
                request
            }
            // Only called from the body states above.
            _ => unreachable!("finish without a head"),
        }
    }
}

/// A body call out of order (the driver's bug, not the client's): the connection is closed.
const DECIDED: HttpError = HttpError {
    status: 500,
    code: "internal",
    message: "request body handled out of order",
};

/// Locates a complete head at the front of `buf`: `Ok(Some((skip, len)))` where `skip` is the
/// number of leading empty lines' bytes and `len` the head length through its empty line.
/// `scanned` carries the search position across calls so each byte is looked at about once.
fn find_head(buf: &[u8], scanned: &mut usize) -> Result<Option<(usize, usize)>, HttpError> {
    let mut skip = 0;
    while buf[skip..].starts_with(b"\r\n") {
        skip += 2;
        if skip > 2 * MAX_LEADING_EMPTY_LINES {
            return Err(HttpError::bad_request(
                "too many empty lines before the request",
            ));
        }
    }
    let window_end = buf.len().min(skip + MAX_HEAD_BYTES);
    let mut at = (*scanned).max(skip);
    // The head ends at the first LF followed by CRLF (or by a bare LF, which the full parse then
    // rejects, so such a request fails fast instead of waiting for a CRLF that never comes).
    while at < window_end {
        let Some(i) = find_byte(&buf[at..window_end], b'\n') else {
            at = window_end;
            break;
        };
        let lf = at + i;
        match (buf.get(lf + 1), buf.get(lf + 2)) {
            (Some(b'\n'), _) => return complete(skip, lf + 2),
            (Some(b'\r'), Some(b'\n')) => return complete(skip, lf + 3),
            (None, _) | (Some(b'\r'), None) => {
                // Undecided until more bytes arrive: resume from this LF.
                at = lf;
                break;
            }
            _ => at = lf + 1,
        }
    }
    *scanned = at;
    if buf.len() - skip > MAX_HEAD_BYTES {
        return Err(HttpError::header_fields_too_large("request head too large"));
    }
    Ok(None)
}

fn complete(skip: usize, end: usize) -> Result<Option<(usize, usize)>, HttpError> {
    if end - skip > MAX_HEAD_BYTES {
        return Err(HttpError::header_fields_too_large("request head too large"));
    }
    Ok(Some((skip, end - skip)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Method;
    use crate::http::limits::MAX_HEADERS;
    use proptest::prelude::*;

    const MAX: usize = 4096;

    fn poll(reader: &mut RequestReader, buf: &mut BytesMut) -> Result<Option<Request>, HttpError> {
        reader.poll_request(buf)
    }

    #[test]
    fn pipelined_two_and_three_requests() {
        let mut buf = BytesMut::from(
            &b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
               POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
               POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"[..],
        );
        let mut reader = RequestReader::new(MAX);
        let a = poll(&mut reader, &mut buf).unwrap().unwrap();
        assert_eq!((a.method(), a.path()), (Method::Get, "/a"));
        assert!(
            reader.is_mid_request(),
            "the next request's bytes are already here"
        );
        let b = poll(&mut reader, &mut buf).unwrap().unwrap();
        assert_eq!((b.path(), b.body().as_ref()), ("/b", &b"hello"[..]));
        let c = poll(&mut reader, &mut buf).unwrap().unwrap();
        assert_eq!((c.path(), c.body().as_ref()), ("/c", &b"hi"[..]));
        assert!(buf.is_empty());
        assert_eq!(poll(&mut reader, &mut buf), Ok(None));
        assert!(!reader.is_mid_request());

        let mut two = BytesMut::from(
            &b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        );
        let mut reader = RequestReader::new(MAX);
        assert_eq!(poll(&mut reader, &mut two).unwrap().unwrap().path(), "/1");
        assert_eq!(poll(&mut reader, &mut two).unwrap().unwrap().path(), "/2");
        assert!(two.is_empty());
    }

    #[test]
    fn a_body_waits_for_a_decision_made_from_the_head() {
        let mut buf = BytesMut::from(
            &b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhel"
                [..],
        );
        let mut reader = RequestReader::new(MAX);
        assert!(matches!(
            reader.poll(&mut buf),
            Ok(Some(Polled::BodyPending))
        ));
        let head = reader.pending_head().expect("the head is there");
        assert_eq!((head.path(), head.declared_body_len()), ("/a", Some(5)));
        assert_eq!(&buf[..], b"hel", "not a body byte was taken");
        assert!(
            !reader.take_expect_continue(),
            "no 100 Continue before the decision"
        );
        assert!(matches!(
            reader.poll(&mut buf),
            Ok(Some(Polled::BodyPending))
        ));
        reader.read_body(5).unwrap();
        assert!(
            reader.take_expect_continue(),
            "100 Continue once the body is wanted"
        );
        assert!(matches!(reader.poll(&mut buf), Ok(None)));
        buf.extend_from_slice(b"lo");
        let Ok(Some(Polled::Request(req))) = reader.poll(&mut buf) else {
            panic!("complete");
        };
        assert_eq!(req.body().as_ref(), b"hello");
        assert!(!reader.is_mid_request());
    }

    #[test]
    fn a_body_over_the_limit_of_its_kind_is_413_before_it_is_read() {
        let mut reader = RequestReader::new(MAX);
        let mut buf =
            BytesMut::from(&b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n"[..]);
        assert!(matches!(
            reader.poll(&mut buf),
            Ok(Some(Polled::BodyPending))
        ));
        assert_eq!(reader.read_body(10).unwrap_err().status, 413);
        assert_eq!(
            reader.poll(&mut buf).unwrap_err().status,
            413,
            "the reader stays failed"
        );
        // Chunked: cut off once the decoded body crosses the limit.
        let mut reader = RequestReader::new(MAX);
        let mut buf = BytesMut::from(
            &b"PUT /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello!\r\n6\r\n"[..],
        );
        assert!(matches!(
            reader.poll(&mut buf),
            Ok(Some(Polled::BodyPending))
        ));
        assert_eq!(reader.pending_head().unwrap().declared_body_len(), None);
        reader.read_body(10).unwrap();
        assert_eq!(reader.poll(&mut buf).unwrap_err().status, 413);
    }

    #[test]
    fn a_refused_head_fails_the_reader() {
        let mut reader = RequestReader::new(MAX);
        let mut buf =
            BytesMut::from(&b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"[..]);
        assert!(matches!(
            reader.poll(&mut buf),
            Ok(Some(Polled::BodyPending))
        ));
        reader.refuse(HttpError::bad_request("no"));
        assert_eq!(
            reader.poll(&mut buf).unwrap_err(),
            HttpError::bad_request("no")
        );
        assert!(reader.pending_head().is_none());
    }

    #[test]
    fn a_streamed_body_comes_out_in_pieces_and_nothing_past_it() {
        for raw in [
            &b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world"[..],
            b"POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        ] {
            let mut wire = raw.to_vec();
            wire.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut reader = RequestReader::new(MAX);
            let mut buf = BytesMut::new();
            let mut body = Vec::new();
            let mut ended = None;
            let mut streaming = false;
            for piece in wire.chunks(3) {
                buf.extend_from_slice(piece);
                if ended.is_some() {
                    continue;
                }
                if !streaming {
                    match reader.poll(&mut buf).unwrap() {
                        Some(Polled::BodyPending) => {
                            reader.stream_body().unwrap();
                            streaming = true;
                        }
                        None => continue,
                        Some(Polled::Request(_)) => panic!("the body is streamed"),
                    }
                }
                loop {
                    match reader.poll_body(&mut buf).unwrap() {
                        BodyPiece::Data(d) => body.extend_from_slice(&d),
                        BodyPiece::More => break,
                        BodyPiece::End(req) => {
                            ended = Some(req);
                            break;
                        }
                    }
                }
            }
            let req = ended.expect("the body ended");
            assert_eq!(req.path(), "/u");
            assert_eq!(body, b"hello world");
            let next = reader.poll_request(&mut buf).unwrap().unwrap();
            assert_eq!(next.path(), "/next", "the next request is intact");
        }
    }

    #[test]
    fn bytes_after_an_upgrade_head_stay_in_the_buffer() {
        let frame = [0x81u8, 0x85, 1, 2, 3, 4, b'a', b'b', b'c', b'd', b'e'];
        let mut raw = b"GET /v1/realtime HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            .to_vec();
        raw.extend_from_slice(&frame);
        let mut buf = BytesMut::from(&raw[..]);
        let req = RequestReader::new(MAX)
            .poll_request(&mut buf)
            .unwrap()
            .unwrap();
        assert!(req.is_websocket_upgrade());
        assert_eq!(&buf[..], &frame[..]);
    }

    #[test]
    fn head_and_body_are_zero_copy_slices_of_the_buffer() {
        let mut buf = BytesMut::with_capacity(256);
        buf.extend_from_slice(b"POST /z HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody");
        let base = buf.as_ptr() as usize;
        let req = RequestReader::new(MAX)
            .poll_request(&mut buf)
            .unwrap()
            .unwrap();
        assert_eq!(req.path().as_ptr() as usize, base + 5);
        assert_eq!(req.body().as_ptr() as usize, base + 48);
    }

    #[test]
    fn head_over_the_limit_is_431_even_while_incomplete() {
        let mut reader = RequestReader::new(MAX);
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: "[..]);
        assert_eq!(poll(&mut reader, &mut buf), Ok(None));
        buf.extend_from_slice(&vec![b'a'; MAX_HEAD_BYTES]);
        let err = poll(&mut reader, &mut buf).unwrap_err();
        assert_eq!(
            err,
            HttpError::header_fields_too_large("request head too large")
        );
        // Sticky.
        assert_eq!(poll(&mut reader, &mut BytesMut::new()), Err(err));
    }

    #[test]
    fn head_exactly_at_the_limit_is_accepted() {
        let prefix = "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ";
        let pad = MAX_HEAD_BYTES - prefix.len() - 4;
        let raw = format!("{prefix}{}\r\n\r\n", "p".repeat(pad));
        assert_eq!(raw.len(), MAX_HEAD_BYTES);
        assert!(Request::from_bytes(raw.as_bytes(), MAX).is_ok());
        let raw = format!("{prefix}{}\r\n\r\n", "p".repeat(pad + 1));
        assert_eq!(
            Request::from_bytes(raw.as_bytes(), MAX).unwrap_err().status,
            431
        );
    }

    #[test]
    fn too_many_headers_is_431_from_the_reader() {
        let fields: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\nHost: x\r\n{fields}\r\n");
        assert_eq!(
            Request::from_bytes(raw.as_bytes(), MAX).unwrap_err().status,
            431
        );
    }

    #[test]
    fn content_length_over_max_is_413_before_the_body_arrives() {
        let mut buf =
            BytesMut::from(&b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4097\r\n\r\n"[..]);
        let err = RequestReader::new(MAX).poll_request(&mut buf).unwrap_err();
        assert_eq!(err, HttpError::payload_too_large("request body too large"));
    }

    #[test]
    fn chunked_body_over_max_is_413() {
        let raw = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n";
        let mut buf = BytesMut::from(&raw[..]);
        let err = RequestReader::new(0x7ff)
            .poll_request(&mut buf)
            .unwrap_err();
        assert_eq!(err.status, 413);
    }

    #[test]
    fn leading_empty_lines_are_skipped_but_bounded() {
        let ok = format!(
            "{}GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "\r\n".repeat(MAX_LEADING_EMPTY_LINES)
        );
        assert_eq!(Request::from_bytes(ok.as_bytes(), MAX).unwrap().path(), "/");
        let bad = format!(
            "{}GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "\r\n".repeat(MAX_LEADING_EMPTY_LINES + 1)
        );
        assert_eq!(
            Request::from_bytes(bad.as_bytes(), MAX).unwrap_err().status,
            400
        );
        // Bare LF empty lines are not CRLF.
        assert_eq!(
            Request::from_bytes(b"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", MAX)
                .unwrap_err()
                .status,
            400
        );
        // Only CRLFs so far: waiting, not failing.
        let mut reader = RequestReader::new(MAX);
        let mut buf = BytesMut::from(&b"\r\n\r"[..]);
        assert_eq!(reader.poll_request(&mut buf), Ok(None));
        assert_eq!(
            &buf[..],
            b"\r\n\r",
            "nothing consumed before a request starts"
        );
    }

    #[test]
    fn bare_lf_heads_fail_fast() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\nHost: x\n\n"[..]);
        assert_eq!(
            RequestReader::new(MAX)
                .poll_request(&mut buf)
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn mid_request_tracking() {
        let mut reader = RequestReader::new(MAX);
        assert!(!reader.is_mid_request());
        let mut buf = BytesMut::new();
        assert_eq!(reader.poll_request(&mut buf), Ok(None));
        assert!(!reader.is_mid_request());
        buf.extend_from_slice(b"PO");
        assert_eq!(reader.poll_request(&mut buf), Ok(None));
        assert!(reader.is_mid_request());
        buf.extend_from_slice(b"ST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(reader.poll_request(&mut buf), Ok(None));
        assert!(reader.is_mid_request());
        assert!(buf.is_empty(), "the head was taken");
        buf.extend_from_slice(b"ok");
        assert_eq!(
            reader
                .poll_request(&mut buf)
                .unwrap()
                .unwrap()
                .body()
                .as_ref(),
            b"ok"
        );
        assert!(!reader.is_mid_request());
    }

    #[test]
    fn expect_continue_is_reported_exactly_once_while_the_body_is_pending() {
        let mut reader = RequestReader::new(MAX);
        let mut buf = BytesMut::from(
            &b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"[..],
        );
        assert!(!reader.take_expect_continue());
        assert_eq!(reader.poll_request(&mut buf), Ok(None));
        assert!(reader.take_expect_continue());
        assert!(!reader.take_expect_continue());
        buf.extend_from_slice(b"abc");
        assert!(reader.poll_request(&mut buf).unwrap().is_some());
        assert!(!reader.take_expect_continue());

        // The body came with the head: nothing to continue.
        let mut buf = BytesMut::from(
            &b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc"
                [..],
        );
        assert!(reader.poll_request(&mut buf).unwrap().is_some());
        assert!(!reader.take_expect_continue());

        // Chunked: pending until the last chunk.
        let mut buf = BytesMut::from(
            &b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na"[..],
        );
        assert_eq!(reader.poll_request(&mut buf), Ok(None));
        assert!(reader.take_expect_continue());
    }

    // ---- property tests ----

    /// A valid request as a (method, path, headers, body framing) description.
    #[derive(Debug, Clone)]
    struct Spec {
        method: &'static str,
        path: String,
        query: Option<String>,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        /// `Some(splits)`: send chunked with these chunk lengths (they cover the body).
        chunks: Option<Vec<usize>>,
        version: u8,
    }

    impl Spec {
        fn encode(&self) -> Vec<u8> {
            let mut out = format!("{} {}", self.method, self.path);
            if let Some(q) = &self.query {
                out.push('?');
                out.push_str(q);
            }
            out.push_str(&format!(" HTTP/1.{}\r\nHost: example\r\n", self.version));
            for (n, v) in &self.headers {
                out.push_str(&format!("{n}: {v}\r\n"));
            }
            let mut out = out.into_bytes();
            match &self.chunks {
                Some(lens) => {
                    out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    let mut at = 0;
                    for &len in lens {
                        out.extend_from_slice(format!("{len:x};e=1\r\n").as_bytes());
                        out.extend_from_slice(&self.body[at..at + len]);
                        out.extend_from_slice(b"\r\n");
                        at += len;
                    }
                    out.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
                }
                None => {
                    if !self.body.is_empty() {
                        out.extend_from_slice(
                            format!("Content-Length: {}\r\n", self.body.len()).as_bytes(),
                        );
                    }
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(&self.body);
                }
            }
            out
        }
    }

    fn spec() -> impl Strategy<Value = Spec> {
        let method = prop::sample::select(vec![
            "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH",
        ]);
        let path = "(/[a-zA-Z0-9_.~%:-]{0,12}){1,4}";
        let query = proptest::option::of("[a-z0-9=&+%]{0,20}");
        let header =
            ("X-[A-Za-z0-9-]{1,12}", "[ -~]{0,30}").prop_map(|(n, v)| (n, v.trim().to_string()));
        let headers = proptest::collection::vec(header, 0..8);
        let body = proptest::collection::vec(any::<u8>(), 0..200);
        (
            method,
            path,
            query,
            headers,
            body,
            any::<bool>(),
            any::<u64>(),
            any::<bool>(),
        )
            .prop_map(|(method, path, query, headers, body, chunked, seed, v11)| {
                let chunks = (chunked && v11).then(|| {
                    let mut lens = Vec::new();
                    let mut left = body.len();
                    let mut s = seed;
                    while left > 0 {
                        let len = 1 + (s % left as u64) as usize;
                        s = s.rotate_left(7) ^ 0x9e37_79b9;
                        lens.push(len);
                        left -= len;
                    }
                    lens
                });
                Spec {
                    method,
                    path,
                    query,
                    headers,
                    body,
                    chunks,
                    version: u8::from(v11),
                }
            })
    }

    /// Feeds `pieces` one after the other, collecting every request and checking consumption.
    fn feed(pieces: &[&[u8]]) -> (Vec<Request>, Option<HttpError>, usize) {
        feed_with(MAX, pieces)
    }

    fn feed_with(max: usize, pieces: &[&[u8]]) -> (Vec<Request>, Option<HttpError>, usize) {
        let mut reader = RequestReader::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in pieces {
            buf.extend_from_slice(piece);
            loop {
                match reader.poll_request(&mut buf) {
                    Ok(Some(req)) => out.push(req),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e), buf.len()),
                }
            }
        }
        (out, None, buf.len())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn split_at_every_offset_equals_whole(specs in proptest::collection::vec(spec(), 1..3)) {
            let wire: Vec<u8> = specs.iter().flat_map(Spec::encode).collect();
            let (whole, err, left) = feed(&[&wire]);
            prop_assert_eq!(err, None);
            prop_assert_eq!(left, 0);
            prop_assert_eq!(whole.len(), specs.len());
            for (req, spec) in whole.iter().zip(&specs) {
                prop_assert_eq!(req.method().as_str(), spec.method);
                prop_assert_eq!(req.path(), spec.path.as_str());
                prop_assert_eq!(req.query(), spec.query.as_deref());
                prop_assert_eq!(req.body().as_ref(), &spec.body[..]);
                prop_assert_eq!(req.headers().count(), spec.headers.len() + 1 + usize::from(spec.chunks.is_some() || !spec.body.is_empty()));
            }
            for at in 0..=wire.len() {
                let (split, err, left) = feed(&[&wire[..at], &wire[at..]]);
                prop_assert_eq!(err, None);
                prop_assert_eq!(left, 0);
                prop_assert_eq!(&split, &whole, "split at {}", at);
            }
        }

        #[test]
        fn random_multi_splits_equal_whole(specs in proptest::collection::vec(spec(), 1..4),
                                           cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12)) {
            let wire: Vec<u8> = specs.iter().flat_map(Spec::encode).collect();
            let (whole, _, _) = feed(&[&wire]);
            let mut offsets: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
            offsets.sort_unstable();
            let mut pieces = Vec::new();
            let mut prev = 0;
            for o in offsets {
                pieces.push(&wire[prev..o]);
                prev = o;
            }
            pieces.push(&wire[prev..]);
            let (split, err, left) = feed(&pieces);
            prop_assert_eq!(err, None);
            prop_assert_eq!(left, 0);
            prop_assert_eq!(split, whole);
        }

        #[test]
        fn arbitrary_bytes_never_panic_or_overconsume(data in proptest::collection::vec(any::<u8>(), 0..600),
                                                      prefix in prop::sample::select(vec![
                                                          &b""[..],
                                                          b"GET / HTTP/1.1\r\nHost: x\r\n",
                                                          b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                                                          b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
                                                      ]),
                                                      cut in any::<prop::sample::Index>()) {
            let mut wire = prefix.to_vec();
            wire.extend_from_slice(&data);
            let at = cut.index(wire.len() + 1);
            let mut reader = RequestReader::new(64);
            let mut buf = BytesMut::new();
            let mut consumed = 0;
            let mut given = 0;
            let mut split = (Vec::new(), None);
            'pieces: for piece in [&wire[..at], &wire[at..]] {
                buf.extend_from_slice(piece);
                given += piece.len();
                loop {
                    let before = buf.len();
                    let res = reader.poll_request(&mut buf);
                    prop_assert!(buf.len() <= before);
                    consumed += before - buf.len();
                    prop_assert!(consumed <= given);
                    match res {
                        Ok(Some(req)) => {
                            prop_assert!(req.path().starts_with('/') || req.path() == "*");
                            prop_assert!(req.body().len() <= 64);
                            split.0.push(req);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            prop_assert!([400, 413, 431, 501, 505].contains(&e.status));
                            split.1 = Some(e);
                            break 'pieces;
                        }
                    }
                }
            }
            // Where the input was cut must not change the outcome, errors included.
            let (whole, whole_err, _) = feed_with(64, &[&wire]);
            prop_assert_eq!(split.0, whole);
            prop_assert_eq!(split.1, whole_err);
        }
    }
}
