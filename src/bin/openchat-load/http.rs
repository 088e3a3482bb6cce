//! A minimal keep-alive HTTP/1.1 client: requests are written whole, responses parsed with
//! httparse (Content-Length, chunked, or delimited by close).

use std::io;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::net::Connector;

const MAX_HEADERS: usize = 64;
/// Largest response accepted (discovery documents are a few KiB).
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("connection closed before a complete response")]
    Closed,
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("timed out")]
    Timeout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The server closes the connection after this response.
    pub close: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes needed.
    Partial,
    /// A response and the number of bytes of the buffer it used.
    Done(Response, usize),
}

/// Parses one response from the start of `buf`. `eof`: the peer has closed, so a response
/// without a length ends here. Interim 1xx responses are skipped.
pub fn parse_response(buf: &[u8], eof: bool) -> Result<Parsed, HttpError> {
    let mut start = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(&buf[start..]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if eof => return Err(HttpError::Closed),
            Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
            Err(e) => return Err(HttpError::Malformed(e.to_string())),
        };
        let status = response.code.unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            start += head_len;
            continue;
        }
        let mut content_length = None;
        let mut chunked = false;
        let mut close = response.version == Some(0);
        for h in response.headers.iter() {
            let value = std::str::from_utf8(h.value)
                .map_err(|_| HttpError::Malformed(format!("non-UTF-8 {} header", h.name)))?
                .trim();
            if h.name.eq_ignore_ascii_case("content-length") {
                let n: usize = value
                    .parse()
                    .map_err(|_| HttpError::Malformed(format!("Content-Length {value:?}")))?;
                if content_length.is_some_and(|m| m != n) {
                    return Err(HttpError::Malformed("conflicting Content-Length".into()));
                }
                content_length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            } else if h.name.eq_ignore_ascii_case("connection") {
                for token in value.split(',').map(str::trim) {
                    if token.eq_ignore_ascii_case("close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case("keep-alive") {
                        close = false;
                    }
                }
            }
        }
        let body_start = start + head_len;
        let rest = &buf[body_start..];
        let no_body = status == 204 || status == 304 || status == 101;
        let (body, used) = if no_body {
            (Vec::new(), 0)
        } else if chunked {
            match decode_chunked(rest)? {
                Some(done) => done,
                None if eof => return Err(HttpError::Closed),
                None => return Ok(Parsed::Partial),
            }
        } else if let Some(n) = content_length {
            if rest.len() < n {
                if eof {
                    return Err(HttpError::Closed);
                }
                return Ok(Parsed::Partial);
            }
            (rest[..n].to_vec(), n)
        } else if eof {
            close = true;
            (rest.to_vec(), rest.len())
        } else {
            return Ok(Parsed::Partial);
        };
        return Ok(Parsed::Done(
            Response {
                status,
                body,
                close,
            },
            body_start + used,
        ));
    }
}

/// A complete chunked body: (decoded body, bytes used including trailers), or `None`.
fn decode_chunked(mut rest: &[u8]) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    let total = rest.len();
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find_crlf(rest) else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&rest[..line_end])
            .map_err(|_| HttpError::Malformed("chunk size line".into()))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| HttpError::Malformed(format!("chunk size {size_text:?}")))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            // trailers, then an empty line
            loop {
                let Some(end) = find_crlf(rest) else {
                    return Ok(None);
                };
                rest = &rest[end + 2..];
                if end == 0 {
                    return Ok(Some((body, total - rest.len())));
                }
            }
        }
        if body.len() + size > MAX_RESPONSE_BYTES {
            return Err(HttpError::Malformed("response too large".into()));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        if &rest[size..size + 2] != b"\r\n" {
            return Err(HttpError::Malformed("chunk not followed by CRLF".into()));
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

/// The bytes of one request. `headers` are extra `(name, value)` pairs (identity headers).
pub fn request(
    method: &str,
    path: &str,
    authority: &str,
    headers: &[(&str, &str)],
    json_body: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + json_body.map_or(0, <[u8]>::len));
    out.extend_from_slice(format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\n").as_bytes());
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if let Some(body) = json_body {
        out.extend_from_slice(
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(body);
    } else {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The headers of the identity a request acts as (`OPENCHAT_AUTH_MODE=headers`).
pub fn identity<'a>(uid: &'a str, device: &'a str) -> [(&'static str, &'a str); 2] {
    [
        ("X-OpenChat-User-UID", uid),
        ("X-OpenChat-Device-ID", device),
    ]
}

/// One exchange's outcome with the instants the caller measures between.
pub struct Exchange {
    pub response: Response,
    /// Taken just before the request was written.
    pub sent_at: Instant,
    /// Taken right after the read that completed the response.
    pub received_at: Instant,
}

/// A keep-alive connection; after an error or a `close` response it must be dropped.
pub struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl HttpConn {
    pub async fn connect(connector: &Connector) -> io::Result<HttpConn> {
        Ok(HttpConn {
            stream: connector.connect().await?,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Writes `request` and reads its response. `on_send` runs with the send instant right
    /// before the first byte is written (so other tasks can see it before any effect of the
    /// request can reach them).
    pub async fn exchange(
        &mut self,
        request: &[u8],
        on_send: impl FnOnce(Instant),
    ) -> Result<Exchange, HttpError> {
        let sent_at = Instant::now();
        on_send(sent_at);
        self.stream.write_all(request).await?;
        loop {
            if !self.buf.is_empty()
                && let Parsed::Done(response, used) = parse_response(&self.buf, false)?
            {
                self.buf.drain(..used);
                return Ok(Exchange {
                    response,
                    sent_at,
                    received_at: Instant::now(),
                });
            }
            if self.buf.len() >= MAX_RESPONSE_BYTES {
                return Err(HttpError::Malformed("response too large".into()));
            }
            self.buf.reserve(4096);
            let n = self.stream.read_buf(&mut self.buf).await?;
            let received_at = Instant::now();
            if n == 0 {
                return match parse_response(&self.buf, true)? {
                    Parsed::Done(response, _) => {
                        self.buf.clear();
                        Ok(Exchange {
                            response,
                            sent_at,
                            received_at,
                        })
                    }
                    Parsed::Partial => Err(HttpError::Closed),
                };
            }
            if let Parsed::Done(response, used) = parse_response(&self.buf, false)? {
                self.buf.drain(..used);
                return Ok(Exchange {
                    response,
                    sent_at,
                    received_at,
                });
            }
        }
    }
}

/// A GET on a fresh connection, with a timeout; the body of a 200 or an error naming the status.
pub async fn get(
    connector: &Connector,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: std::time::Duration,
) -> Result<Vec<u8>, String> {
    let attempt = async {
        let mut conn = HttpConn::connect(connector).await?;
        conn.exchange(&request("GET", path, authority, headers, None), |_| {})
            .await
    };
    let exchange = tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("GET {path}: {}", HttpError::Timeout))?
        .map_err(|e| format!("GET {path}: {e}"))?;
    let response = exchange.response;
    if response.status != 200 {
        return Err(format!(
            "GET {path}: status {} {}",
            response.status,
            String::from_utf8_lossy(&response.body[..response.body.len().min(300)])
        ));
    }
    Ok(response.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(buf: &[u8]) -> (Response, usize) {
        match parse_response(buf, false).unwrap() {
            Parsed::Done(r, n) => (r, n),
            Parsed::Partial => panic!("partial"),
        }
    }

    #[test]
    fn content_length_response_and_what_follows() {
        let raw = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"message\":{\"a\":1}}HTTP/1.1";
        // Content-Length 17 cuts the JSON: the parser obeys the header, not the JSON.
        let (r, used) = done(raw);
        assert_eq!(r.status, 201);
        assert_eq!(r.body, b"{\"message\":{\"a\":1");
        assert!(!r.close);
        assert_eq!(&raw[used..], b"}}HTTP/1.1");
    }

    #[test]
    fn partial_until_the_whole_body_is_there() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..raw.len() {
            assert_eq!(
                parse_response(&raw[..cut], false).unwrap(),
                Parsed::Partial,
                "{cut}"
            );
            assert!(parse_response(&raw[..cut], true).is_err(), "{cut} at eof");
        }
        assert_eq!(done(raw).0.body, b"hello");
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nnext";
        let (r, used) = done(raw);
        assert_eq!(r.body, b"hello world");
        assert_eq!(&raw[used..], b"next");
        for cut in 40..raw.len() - 4 {
            assert_eq!(
                parse_response(&raw[..cut], false).unwrap(),
                Parsed::Partial,
                "{cut}"
            );
        }
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(matches!(
            parse_response(bad, false),
            Err(HttpError::Malformed(_))
        ));
    }

    #[test]
    fn close_and_keep_alive_and_interim() {
        let (r, _) = done(b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        assert_eq!((r.status, r.close), (503, true));
        let (r, _) = done(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(r.close, "HTTP/1.0 closes by default");
        let (r, _) =
            done(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
        assert!(!r.close);
        let (r, used) = done(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!((r.status, used), (204, 52));
        // no length: the body runs to the close
        let raw = b"HTTP/1.1 200 OK\r\n\r\nall of it";
        assert_eq!(parse_response(raw, false).unwrap(), Parsed::Partial);
        let Parsed::Done(r, _) = parse_response(raw, true).unwrap() else {
            panic!()
        };
        assert_eq!((r.body.as_slice(), r.close), (&b"all of it"[..], true));
        assert!(parse_response(b"SMTP nonsense\r\n\r\n", false).is_err());
        assert!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                false
            )
            .is_err()
        );
    }

    #[test]
    fn request_bytes() {
        let body = br#"{"body":"load:1"}"#;
        let r = request(
            "POST",
            "/v1/channels/c1/messages",
            "127.0.0.1:8080",
            &identity("uid_01000000", "desktop_01000000"),
            Some(body),
        );
        let text = String::from_utf8(r).unwrap();
        assert_eq!(
            text,
            "POST /v1/channels/c1/messages HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\
             X-OpenChat-User-UID: uid_01000000\r\nX-OpenChat-Device-ID: desktop_01000000\r\n\
             Content-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"body\":\"load:1\"}"
        );
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut parsed = httparse::Request::new(&mut headers);
        assert!(parsed.parse(text.as_bytes()).unwrap().is_complete());
        let get = request("GET", "/v1/client/capabilities", "h:1", &[], None);
        assert!(get.ends_with(b"Host: h:1\r\n\r\n"));
    }
}
