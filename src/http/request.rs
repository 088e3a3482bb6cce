//! A parsed request and the rules for accepting its head. `Head::parse` turns the exact bytes of
//! a request head into offsets plus the facts the rest of the server asks about (method, target,
//! framing, connection options), refusing everything that could make this server and a proxy in
//! front of it disagree about where a request ends (request smuggling). [`Request`] owns the head
//! as a zero-copy [`Bytes`] slice of the read buffer and answers header questions from offsets.
//!
//! Head rules, each tested below: HTTP/1.0 and 1.1 only (other `HTTP/x.y` → 505, anything else →
//! 400); methods outside [`Method`] → 501; only origin-form targets (and `*` with OPTIONS), no
//! fragment; CRLF line ends only (a bare LF or CR is 400); no obs-fold; at most one
//! `Content-Length` (ASCII digits only) and never together with `Transfer-Encoding`;
//! `Transfer-Encoding` only on HTTP/1.1 and only exactly `chunked` (any other coding → 501);
//! exactly one `Host` on HTTP/1.1; a declared length over the body limit → 413 before any body
//! byte is read.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};

use super::HttpError;
use super::limits::MAX_HEADERS;
use super::reader::RequestReader;
use super::scan::find_byte;

/// The methods this server implements; anything else is answered with 501.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
}

impl Method {
    /// All methods, in the order used for `Allow` headers.
    pub const ALL: [Method; 7] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Options,
        Method::Patch,
    ];

    /// Methods are case-sensitive (RFC 9110 §9.1): `get` is not `GET`.
    pub fn from_token(token: &[u8]) -> Option<Method> {
        Some(match token {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"PATCH" => Method::Patch,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Patch => "PATCH",
        }
    }
}

/// How the body of a request is delimited, decided from its head alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No `Content-Length` and no `Transfer-Encoding`: a request without a body (RFC 9112 §6.3).
    Empty,
    Length(usize),
    Chunked,
}

/// Offsets of one header field inside the head bytes. `u16` is enough because a head never
/// exceeds `MAX_HEAD_BYTES` (asserted in `limits`), and it keeps the table at 8 bytes a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Field {
    name_start: u16,
    name_len: u16,
    value_start: u16,
    value_len: u16,
}

/// Everything learned from a head, as offsets into its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    method: Method,
    version_minor: u8,
    path: (u16, u16),
    query: Option<(u16, u16)>,
    fields: Vec<Field>,
    pub(crate) framing: Framing,
    connection_close: bool,
    connection_keep_alive: bool,
    connection_upgrade: bool,
    pub(crate) expect_continue: bool,
}

impl Head {
    /// Parses exactly one head: `bytes` runs from the request line (leading empty lines already
    /// skipped) to and including the empty line that ends the head.
    pub(crate) fn parse(bytes: &[u8], max_body: usize) -> Result<Head, HttpError> {
        reject_bare_line_feeds(bytes)?;

        // Uninitialized storage: zeroing 100 header slots per request costs more than parsing.
        let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(bytes, &mut raw) {
            Ok(httparse::Status::Complete(n)) if n == bytes.len() => {}
            // The caller cut `bytes` at the first empty line, so httparse must agree exactly.
            Ok(_) => return Err(HttpError::bad_request("malformed request head")),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HttpError::header_fields_too_large("too many header fields"));
            }
            Err(httparse::Error::Version) => return Err(version_error(bytes)),
            Err(_) => return Err(HttpError::bad_request("malformed request head")),
        }

        let version_minor = req.version.unwrap_or(1);
        let method = req
            .method
            .and_then(|m| Method::from_token(m.as_bytes()))
            .ok_or(HttpError::not_implemented("method not implemented"))?;
        let target = req.path.unwrap_or("");
        let offset_of = |s: &[u8]| (s.as_ptr() as usize - bytes.as_ptr() as usize) as u16;

        let target_start = offset_of(target.as_bytes());
        let (path, query) = if target == "*" && method == Method::Options {
            ((target_start, 1), None)
        } else if target.starts_with('/') {
            if target.contains('#') {
                return Err(HttpError::bad_request("fragment in request target"));
            }
            match target.find('?') {
                Some(q) => (
                    (target_start, q as u16),
                    Some((target_start + q as u16 + 1, (target.len() - q - 1) as u16)),
                ),
                None => ((target_start, target.len() as u16), None),
            }
        } else {
            // absolute-form is only for proxies and authority-form only for CONNECT (RFC 9112 §3.2).
            return Err(HttpError::bad_request("request target must be origin-form"));
        };

        let mut head = Head {
            method,
            version_minor,
            path,
            query,
            fields: Vec::with_capacity(req.headers.len()),
            framing: Framing::Empty,
            connection_close: false,
            connection_keep_alive: false,
            connection_upgrade: false,
            expect_continue: false,
        };
        let mut content_length: Option<usize> = None;
        let mut transfer_encoding: Option<&[u8]> = None;
        let mut hosts = 0;
        let mut expect_100 = false;
        for h in req.headers.iter() {
            head.fields.push(Field {
                name_start: offset_of(h.name.as_bytes()),
                name_len: h.name.len() as u16,
                value_start: offset_of(h.value),
                value_len: h.value.len() as u16,
            });
            let name = h.name.as_bytes();
            // Dispatch on length first: most fields are none of these and cost one compare.
            match name.len() {
                4 if name.eq_ignore_ascii_case(b"host") => hosts += 1,
                6 if name.eq_ignore_ascii_case(b"expect") => {
                    expect_100 = h.value.eq_ignore_ascii_case(b"100-continue");
                }
                10 if name.eq_ignore_ascii_case(b"connection") => {
                    for token in list_tokens(h.value) {
                        if token.eq_ignore_ascii_case(b"close") {
                            head.connection_close = true;
                        } else if token.eq_ignore_ascii_case(b"keep-alive") {
                            head.connection_keep_alive = true;
                        } else if token.eq_ignore_ascii_case(b"upgrade") {
                            head.connection_upgrade = true;
                        }
                    }
                }
                14 if name.eq_ignore_ascii_case(b"content-length") => {
                    if content_length.is_some() {
                        // Even equal duplicates: an intermediary may have merged two messages.
                        return Err(HttpError::bad_request("duplicate Content-Length"));
                    }
                    content_length = Some(parse_content_length(h.value)?);
                }
                17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                    if transfer_encoding.is_some() {
                        return Err(HttpError::bad_request("duplicate Transfer-Encoding"));
                    }
                    transfer_encoding = Some(h.value);
                }
                _ => {}
            }
        }

        if version_minor == 1 && hosts == 0 {
            return Err(HttpError::bad_request("missing Host header"));
        }
        if hosts > 1 {
            return Err(HttpError::bad_request("duplicate Host header"));
        }
        head.framing = match (transfer_encoding, content_length) {
            (Some(_), Some(_)) => {
                return Err(HttpError::bad_request(
                    "Transfer-Encoding together with Content-Length",
                ));
            }
            (Some(_), None) if version_minor == 0 => {
                // HTTP/1.0 has no chunked coding; a 1.0 peer cannot have meant it.
                return Err(HttpError::bad_request("Transfer-Encoding on HTTP/1.0"));
            }
            (Some(te), None) => {
                if te.is_empty() {
                    return Err(HttpError::bad_request("empty Transfer-Encoding"));
                }
                if !te.eq_ignore_ascii_case(b"chunked") {
                    // RFC 9112 §6.1: a coding we do not understand is 501, not 400.
                    return Err(HttpError::not_implemented("unsupported Transfer-Encoding"));
                }
                Framing::Chunked
            }
            (None, Some(n)) if n > max_body => {
                return Err(HttpError::payload_too_large("request body too large"));
            }
            (None, Some(0)) | (None, None) => Framing::Empty,
            (None, Some(n)) => Framing::Length(n),
        };
        // 100-continue only means something on HTTP/1.1 and when a body is coming.
        head.expect_continue = expect_100 && version_minor == 1 && head.framing != Framing::Empty;
        Ok(head)
    }
}

/// Split a comma-separated header list into trimmed, non-empty elements.
fn list_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// `Content-Length = 1*DIGIT`, nothing else: no sign, no inner spaces, no `1,1` lists. A value too
/// large for `usize` is certainly over the body limit, so it saturates (and becomes a 413).
fn parse_content_length(value: &[u8]) -> Result<usize, HttpError> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::bad_request("invalid Content-Length"));
    }
    Ok(value.iter().fold(0usize, |n, &d| {
        n.saturating_mul(10).saturating_add(usize::from(d - b'0'))
    }))
}

/// httparse accepts a bare LF as a line end; a front proxy may not, so we refuse it (RFC 9112
/// §2.2 makes accepting it optional). Bare CRs are already refused by httparse.
fn reject_bare_line_feeds(bytes: &[u8]) -> Result<(), HttpError> {
    let mut from = 0;
    while let Some(i) = find_byte(&bytes[from..], b'\n') {
        let lf = from + i;
        if lf == 0 || bytes[lf - 1] != b'\r' {
            return Err(HttpError::bad_request("bare LF in request head"));
        }
        from = lf + 1;
    }
    Ok(())
}

/// httparse reports any unknown version the same way; `HTTP/2.0` deserves 505, `FOO/1.1` 400.
fn version_error(bytes: &[u8]) -> HttpError {
    let line_end = bytes
        .iter()
        .position(|&b| b == b'\r')
        .unwrap_or(bytes.len());
    let line = &bytes[..line_end];
    let token = line.rsplit(|&b| b == b' ').next().unwrap_or(b"");
    match token {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            HttpError::version_not_supported("only HTTP/1.0 and HTTP/1.1 are supported")
        }
        _ => HttpError::bad_request("malformed request line"),
    }
}

/// One complete request: its head (zero-copy from the read buffer) and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    bytes: Bytes,
    head: Head,
    body: Bytes,
}

impl Request {
    pub(crate) fn new(bytes: Bytes, head: Head, body: Bytes) -> Self {
        Self { bytes, head, body }
    }

    pub fn method(&self) -> Method {
        self.head.method
    }

    /// The raw (still percent-encoded) path without the query; starts with `/`, or is `*` for
    /// `OPTIONS *`.
    pub fn path(&self) -> &str {
        let (start, len) = self.head.path;
        self.str_at(start, len)
    }

    /// The raw query string without `?` (`Some("")` for a bare `?`).
    pub fn query(&self) -> Option<&str> {
        self.head.query.map(|(start, len)| self.str_at(start, len))
    }

    /// The value of the first field named `name` (ASCII case-insensitive), trimmed of OWS.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// All fields in the order received, names as sent.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.head.fields.iter().map(|f| {
            (
                self.str_at(f.name_start, f.name_len),
                &self.bytes[usize::from(f.value_start)..][..usize::from(f.value_len)],
            )
        })
    }

    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The body as the head announced it, known before any body byte is read: `Some(n)` for a
    /// `Content-Length` (0 when there is no body), `None` for a chunked body of unknown size.
    pub fn declared_body_len(&self) -> Option<usize> {
        match self.head.framing {
            Framing::Empty => Some(0),
            Framing::Length(n) => Some(n),
            Framing::Chunked => None,
        }
    }

    /// `Expect: 100-continue` on an HTTP/1.1 request with a body.
    pub(crate) fn expects_continue(&self) -> bool {
        self.head.expect_continue
    }

    pub(crate) fn set_body(&mut self, body: Bytes) {
        self.body = body;
    }

    pub fn version_minor(&self) -> u8 {
        self.head.version_minor
    }

    /// Whether the connection may stay open after the response: HTTP/1.1 unless
    /// `Connection: close`, HTTP/1.0 only with `Connection: keep-alive` (and no `close`).
    pub fn keep_alive(&self) -> bool {
        if self.head.connection_close {
            return false;
        }
        self.head.version_minor >= 1 || self.head.connection_keep_alive
    }

    /// An RFC 6455 opening handshake: HTTP/1.1 GET with `Connection: upgrade` (as one token of a
    /// list), `Upgrade: websocket`, a `Sec-WebSocket-Key` and `Sec-WebSocket-Version: 13`.
    pub fn is_websocket_upgrade(&self) -> bool {
        self.head.method == Method::Get
            && self.head.version_minor == 1
            && self.head.connection_upgrade
            && self
                .header("upgrade")
                .is_some_and(|v| list_tokens(v).any(|t| t.eq_ignore_ascii_case(b"websocket")))
            && self
                .header("sec-websocket-key")
                .is_some_and(|v| !v.is_empty())
            && self.header("sec-websocket-version") == Some(b"13")
    }

    /// For tests and benches: parse exactly one complete request from `bytes`; an incomplete
    /// request or bytes after it are a 400.
    pub fn from_bytes(bytes: &[u8], max_body: usize) -> Result<Request, HttpError> {
        let mut buf = BytesMut::from(bytes);
        let mut reader = RequestReader::new(max_body);
        match reader.poll_request(&mut buf)? {
            Some(req) if buf.is_empty() => Ok(req),
            Some(_) => Err(HttpError::bad_request("bytes after the request")),
            None => Err(HttpError::bad_request("incomplete request")),
        }
    }

    /// Offsets were taken from `&str`s httparse validated, so this never falls back in practice;
    /// the fallback avoids `unsafe` for a check that costs a few nanoseconds.
    fn str_at(&self, start: u16, len: u16) -> &str {
        std::str::from_utf8(&self.bytes[usize::from(start)..][..usize::from(len)]).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024;

    fn parse(raw: &str) -> Result<Request, HttpError> {
        Request::from_bytes(raw.as_bytes(), MAX)
    }

    fn status(raw: &str) -> u16 {
        match parse(raw) {
            Ok(_) => 200,
            Err(e) => e.status,
        }
    }

    #[test]
    fn parses_a_typical_get() {
        let req = parse(
            "GET /v1/channels/c1/messages?limit=150&x=1 HTTP/1.1\r\nHost: chat.example\r\n\
             Accept: application/json\r\nX-OpenChat-User-UID:   uid_0123abcd  \r\n\r\n",
        )
        .unwrap();
        assert_eq!(req.method(), Method::Get);
        assert_eq!(req.path(), "/v1/channels/c1/messages");
        assert_eq!(req.query(), Some("limit=150&x=1"));
        assert_eq!(req.version_minor(), 1);
        assert_eq!(req.header("HOST"), Some(&b"chat.example"[..]));
        assert_eq!(
            req.header("x-openchat-user-uid"),
            Some(&b"uid_0123abcd"[..])
        );
        assert_eq!(req.header("missing"), None);
        let names: Vec<&str> = req.headers().map(|(n, _)| n).collect();
        assert_eq!(names, ["Host", "Accept", "X-OpenChat-User-UID"]);
        assert!(req.body().is_empty());
        assert!(req.keep_alive());
        assert!(!req.is_websocket_upgrade());
    }

    #[test]
    fn header_returns_the_first_occurrence() {
        let req = parse("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\n\r\n").unwrap();
        assert_eq!(req.header("x-a"), Some(&b"1"[..]));
        assert_eq!(
            req.headers()
                .filter(|(n, _)| n.eq_ignore_ascii_case("x-a"))
                .count(),
            2
        );
    }

    #[test]
    fn empty_query_and_no_query() {
        assert_eq!(
            parse("GET /a? HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap()
                .query(),
            Some("")
        );
        assert_eq!(
            parse("GET /a HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().query(),
            None
        );
    }

    #[test]
    fn every_supported_method_and_501_for_the_rest() {
        for m in Method::ALL {
            let req = parse(&format!("{} / HTTP/1.1\r\nHost: a\r\n\r\n", m.as_str())).unwrap();
            assert_eq!(req.method(), m);
        }
        for m in ["PROPFIND", "CONNECT", "TRACE", "get", "BREW"] {
            let err = parse(&format!("{m} / HTTP/1.1\r\nHost: a\r\n\r\n")).unwrap_err();
            assert_eq!(
                err,
                HttpError::not_implemented("method not implemented"),
                "{m}"
            );
        }
    }

    #[test]
    fn versions() {
        assert_eq!(parse("GET / HTTP/1.0\r\n\r\n").unwrap().version_minor(), 0);
        for v in ["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3.0"] {
            let err = parse(&format!("GET / {v}\r\nHost: a\r\n\r\n")).unwrap_err();
            assert_eq!(err.status, 505, "{v}");
            assert_eq!(err.code, "http_version_not_supported");
        }
        for v in ["HTTP/1.1x", "http/1.1", "FOO/1.1", "HTTP/11"] {
            assert_eq!(status(&format!("GET / {v}\r\nHost: a\r\n\r\n")), 400, "{v}");
        }
        // HTTP/0.9 style request line without a version.
        assert_eq!(status("GET /\r\n\r\n"), 400);
    }

    #[test]
    fn request_target_forms() {
        assert_eq!(
            status("GET http://evil.example/ HTTP/1.1\r\nHost: a\r\n\r\n"),
            400
        );
        assert_eq!(
            status("GET evil.example:443 HTTP/1.1\r\nHost: a\r\n\r\n"),
            400
        );
        assert_eq!(status("GET * HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        let req = parse("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!((req.path(), req.query()), ("*", None));
        let req = parse("GET /%C3%A9t%C3%A9 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(req.path(), "/%C3%A9t%C3%A9");
    }

    #[test]
    fn path_must_be_utf8() {
        let mut raw = b"GET /caf".to_vec();
        raw.extend_from_slice(&[0xc3, 0xa9]);
        raw.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(Request::from_bytes(&raw, MAX).unwrap().path(), "/café");
        let mut raw = b"GET /caf".to_vec();
        raw.extend_from_slice(&[0xe9, 0xff]);
        raw.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(Request::from_bytes(&raw, MAX).unwrap_err().status, 400);
    }

    #[test]
    fn host_rules() {
        assert_eq!(status("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.0\r\n\r\n"), 200);
        assert_eq!(status("GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"), 400);
    }

    #[test]
    fn content_length_smuggling_rules() {
        let ok = parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc").unwrap();
        assert_eq!(ok.body().as_ref(), b"abc");
        let ok = parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 003\r\n\r\nabc").unwrap();
        assert_eq!(ok.body().as_ref(), b"abc");
        for cl in ["3, 3", "+3", "-3", "3 3", "0x3", "", "3a", "3.0", "٣"] {
            let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {cl}\r\n\r\nabc");
            assert_eq!(
                parse(&raw).unwrap_err(),
                HttpError::bad_request("invalid Content-Length"),
                "{cl:?}"
            );
        }
        assert_eq!(
            parse(
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"
            )
            .unwrap_err(),
            HttpError::bad_request("duplicate Content-Length")
        );
        assert_eq!(
            status(
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\ncontent-length: 4\r\n\r\nabcd"
            ),
            400
        );
    }

    #[test]
    fn content_length_over_the_limit_is_413_even_when_it_overflows() {
        let raw = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            MAX + 1
        );
        assert_eq!(parse(&raw).unwrap_err().status, 413);
        let raw =
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999999\r\n\r\n";
        assert_eq!(parse(raw).unwrap_err().status, 413);
        let raw = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {MAX}\r\n\r\n{}",
            "x".repeat(MAX)
        );
        assert_eq!(parse(&raw).unwrap().body().len(), MAX);
    }

    #[test]
    fn transfer_encoding_rules() {
        let te_cl =
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(
            parse(te_cl).unwrap_err(),
            HttpError::bad_request("Transfer-Encoding together with Content-Length")
        );
        let cl_te =
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(status(cl_te), 400);
        let ok = parse(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        );
        assert_eq!(ok.unwrap().body().as_ref(), b"abc");
        for te in [
            "gzip",
            "chunked, chunked",
            "gzip, chunked",
            "chunked;q=1",
            "identity",
            "xchunked",
        ] {
            let raw =
                format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n0\r\n\r\n");
            assert_eq!(
                parse(&raw).unwrap_err(),
                HttpError::not_implemented("unsupported Transfer-Encoding"),
                "{te}"
            );
        }
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n"),
            400
        );
        assert_eq!(
            status(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            400
        );
        assert_eq!(
            parse("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").unwrap_err(),
            HttpError::bad_request("Transfer-Encoding on HTTP/1.0")
        );
    }

    #[test]
    fn control_characters_and_line_ends() {
        // Bare CR inside a value, NUL in a value, bare CR and NUL in names, space before colon.
        for raw in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX\rY: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX\0Y: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX : 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n",
            b"GET / HTTP/1.1\rHost: a\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\n",
            b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(
                Request::from_bytes(raw, MAX).unwrap_err().status,
                400,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        // Tabs and obs-text are legal in values.
        let req =
            Request::from_bytes(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\xff\r\n\r\n", MAX).unwrap();
        assert_eq!(req.header("x"), Some(&b"a\tb\xff"[..]));
    }

    #[test]
    fn obs_fold_is_rejected() {
        assert_eq!(
            status("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n"),
            400
        );
        assert_eq!(
            status("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\t2\r\n\r\n"),
            400
        );
        assert_eq!(status("GET / HTTP/1.1\r\n Host: a\r\n\r\n"), 400);
    }

    #[test]
    fn too_many_headers_is_431() {
        let fields: String = (0..MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let ok = format!("GET / HTTP/1.0\r\n{fields}\r\n");
        assert_eq!(
            Request::from_bytes(ok.as_bytes(), MAX)
                .unwrap()
                .headers()
                .count(),
            MAX_HEADERS
        );
        let over = format!("GET / HTTP/1.1\r\nHost: a\r\n{fields}\r\n");
        assert_eq!(
            parse(&over).unwrap_err(),
            HttpError::header_fields_too_large("too many header fields")
        );
    }

    #[test]
    fn keep_alive_matrix() {
        let cases = [
            ("HTTP/1.1", "", true),
            ("HTTP/1.1", "Connection: close\r\n", false),
            ("HTTP/1.1", "Connection: CLOSE\r\n", false),
            ("HTTP/1.1", "Connection: keep-alive, close\r\n", false),
            ("HTTP/1.1", "Connection: keep-alive\r\n", true),
            ("HTTP/1.1", "Connection: upgrade\r\n", true),
            ("HTTP/1.1", "Connection: closed\r\n", true),
            ("HTTP/1.0", "", false),
            ("HTTP/1.0", "Connection: keep-alive\r\n", true),
            ("HTTP/1.0", "Connection: Keep-Alive\r\n", true),
            ("HTTP/1.0", "Connection: foo,  keep-alive \r\n", true),
            (
                "HTTP/1.0",
                "Connection: keep-alive\r\nConnection: close\r\n",
                false,
            ),
            ("HTTP/1.0", "Connection: close\r\n", false),
        ];
        for (version, extra, expected) in cases {
            let raw = format!("GET / {version}\r\nHost: a\r\n{extra}\r\n");
            assert_eq!(
                parse(&raw).unwrap().keep_alive(),
                expected,
                "{version} {extra:?}"
            );
        }
    }

    #[test]
    fn websocket_upgrade_detection() {
        let base = |method: &str, version: &str, fields: &str| {
            format!("{method} /v1/realtime {version}\r\nHost: a\r\n{fields}\r\n")
        };
        let good = "Connection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n\
                    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
        assert!(
            parse(&base("GET", "HTTP/1.1", good))
                .unwrap()
                .is_websocket_upgrade()
        );
        assert!(
            !parse(&base("POST", "HTTP/1.1", good))
                .unwrap()
                .is_websocket_upgrade()
        );
        assert!(
            !parse(&base("GET", "HTTP/1.0", good))
                .unwrap()
                .is_websocket_upgrade()
        );
        for broken in [
            good.replace("keep-alive, Upgrade", "keep-alive"),
            good.replace("keep-alive, Upgrade", "upgraded"),
            good.replace("Upgrade: WebSocket", "Upgrade: h2c"),
            good.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            good.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
            good.replace("Sec-WebSocket-Version: 13\r\n", ""),
        ] {
            assert!(
                !parse(&base("GET", "HTTP/1.1", &broken))
                    .unwrap()
                    .is_websocket_upgrade(),
                "{broken}"
            );
        }
        let split = "Connection: keep-alive\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\
                     Sec-WebSocket-Key: x\r\nSec-WebSocket-Version: 13\r\n";
        assert!(
            parse(&base("GET", "HTTP/1.1", split))
                .unwrap()
                .is_websocket_upgrade()
        );
    }

    #[test]
    fn expect_continue_needs_a_body_and_http11() {
        let head = |v: &str, framing: &str| {
            let raw = format!("POST / {v}\r\nHost: a\r\nExpect: 100-Continue\r\n{framing}\r\n");
            let bytes = raw.as_bytes();
            Head::parse(bytes, MAX).unwrap().expect_continue
        };
        assert!(head("HTTP/1.1", "Content-Length: 5\r\n"));
        assert!(head("HTTP/1.1", "Transfer-Encoding: chunked\r\n"));
        assert!(!head("HTTP/1.1", "Content-Length: 0\r\n"));
        assert!(!head("HTTP/1.1", ""));
        assert!(!head("HTTP/1.0", "Content-Length: 5\r\n"));
    }

    #[test]
    fn from_bytes_rejects_incomplete_and_trailing_input() {
        assert_eq!(
            parse("GET / HTTP/1.1\r\nHost: a\r\n").unwrap_err(),
            HttpError::bad_request("incomplete request")
        );
        assert_eq!(
            parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nab").unwrap_err(),
            HttpError::bad_request("incomplete request")
        );
        assert_eq!(
            parse("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET").unwrap_err(),
            HttpError::bad_request("bytes after the request")
        );
    }
}
