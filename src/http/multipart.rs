//! `multipart/form-data` request bodies (RFC 7578 on RFC 2046), parsed from the complete body the
//! reader already bounded by the body limit. It owns the boundary parameter of the
//! `Content-Type`, the delimiter framing (preamble and epilogue ignored, closing delimiter
//! required), the bounded part headers and the `Content-Disposition` parameters (`name`,
//! `filename`; `filename*` is ignored because browsers always send `filename` too). Part data is
//! borrowed from the body, never copied.

use super::HttpError;
use super::limits::{
    MAX_MULTIPART_PART_HEAD_BYTES, MAX_MULTIPART_PART_HEADERS, MAX_MULTIPART_PARTS,
};
use super::scan::find_subslice;

/// One part of a form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    pub name: String,
    /// As sent (browsers percent-encode `"` and line breaks in it); not a safe path.
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: &'a [u8],
}

/// Why a multipart body was refused: 413 for too many parts, 400 `bad_multipart` otherwise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    #[error("content type is not multipart/form-data")]
    NotMultipart,
    #[error("missing multipart boundary")]
    MissingBoundary,
    #[error("invalid multipart boundary")]
    InvalidBoundary,
    #[error("multipart body has no opening delimiter")]
    MissingOpeningDelimiter,
    #[error("multipart body has no closing delimiter")]
    MissingClosingDelimiter,
    #[error("malformed multipart delimiter line")]
    MalformedDelimiter,
    #[error("multipart part headers too large")]
    PartHeadTooLarge,
    #[error("malformed multipart part headers")]
    MalformedPartHead,
    #[error("missing or invalid Content-Disposition in multipart part")]
    BadContentDisposition,
    #[error("too many multipart parts")]
    TooManyParts,
}

impl MultipartError {
    pub fn status(&self) -> u16 {
        match self {
            MultipartError::TooManyParts => 413,
            _ => 400,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            MultipartError::TooManyParts => "payload_too_large",
            _ => "bad_multipart",
        }
    }

    fn message(&self) -> &'static str {
        match self {
            MultipartError::NotMultipart => "content type is not multipart/form-data",
            MultipartError::MissingBoundary => "missing multipart boundary",
            MultipartError::InvalidBoundary => "invalid multipart boundary",
            MultipartError::MissingOpeningDelimiter => "multipart body has no opening delimiter",
            MultipartError::MissingClosingDelimiter => "multipart body has no closing delimiter",
            MultipartError::MalformedDelimiter => "malformed multipart delimiter line",
            MultipartError::PartHeadTooLarge => "multipart part headers too large",
            MultipartError::MalformedPartHead => "malformed multipart part headers",
            MultipartError::BadContentDisposition => "missing or invalid Content-Disposition",
            MultipartError::TooManyParts => "too many multipart parts",
        }
    }
}

impl From<MultipartError> for HttpError {
    fn from(e: MultipartError) -> Self {
        HttpError {
            status: e.status(),
            code: e.code(),
            message: e.message(),
        }
    }
}

/// The boundary of a `multipart/form-data; boundary=...` content type (token or quoted string,
/// 1..=70 characters of RFC 2046 `bchars`, not ending in a space).
pub fn boundary_from_content_type(ct: &[u8]) -> Result<String, MultipartError> {
    let (media_type, params) = match ct.iter().position(|&b| b == b';') {
        Some(i) => (&ct[..i], &ct[i + 1..]),
        None => (ct, &b""[..]),
    };
    if !media_type
        .trim_ascii()
        .eq_ignore_ascii_case(b"multipart/form-data")
    {
        return Err(MultipartError::NotMultipart);
    }
    let params = parse_params(params).map_err(|()| MultipartError::InvalidBoundary)?;
    let (_, boundary) = params
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(b"boundary"))
        .ok_or(MultipartError::MissingBoundary)?;
    let is_bchar = |b: &u8| b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(b);
    if boundary.is_empty()
        || boundary.len() > 70
        || boundary.ends_with(b" ")
        || !boundary.iter().all(is_bchar)
    {
        return Err(MultipartError::InvalidBoundary);
    }
    String::from_utf8(boundary).map_err(|_| MultipartError::InvalidBoundary)
}

/// Splits a complete `multipart/form-data` body into its parts.
pub fn parse_multipart<'a>(
    body: &'a [u8],
    boundary: &str,
) -> Result<Vec<Part<'a>>, MultipartError> {
    if boundary.is_empty() || boundary.len() > 70 {
        return Err(MultipartError::InvalidBoundary);
    }
    // Every delimiter but the very first is preceded by CRLF, which belongs to the delimiter.
    let mut delimiter = Vec::with_capacity(boundary.len() + 4);
    delimiter.extend_from_slice(b"\r\n--");
    delimiter.extend_from_slice(boundary.as_bytes());
    let dash_boundary = &delimiter[2..];

    let mut pos = if body.starts_with(dash_boundary) {
        dash_boundary.len()
    } else {
        find_subslice(body, &delimiter).ok_or(MultipartError::MissingOpeningDelimiter)?
            + delimiter.len()
    };
    let mut parts = Vec::new();
    loop {
        // After a delimiter: `--` closes the body, otherwise padding and CRLF open a part.
        let rest = &body[pos..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        let padding = rest
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        if !rest[padding..].starts_with(b"\r\n") {
            return Err(if rest[padding..].is_empty() {
                MultipartError::MissingClosingDelimiter
            } else {
                MultipartError::MalformedDelimiter
            });
        }
        pos += padding + 2;
        if parts.len() == MAX_MULTIPART_PARTS {
            return Err(MultipartError::TooManyParts);
        }

        let head_len = part_head_len(&body[pos..])?;
        let part_head = &body[pos..pos + head_len];
        pos += head_len;
        let data_len = find_subslice(&body[pos..], &delimiter)
            .ok_or(MultipartError::MissingClosingDelimiter)?;
        let mut part = parse_part_head(part_head)?;
        part.data = &body[pos..pos + data_len];
        parts.push(part);
        pos += data_len + delimiter.len();
    }
}

/// Length of the part's header block, its terminating empty line included.
fn part_head_len(rest: &[u8]) -> Result<usize, MultipartError> {
    if rest.starts_with(b"\r\n") {
        return Ok(2);
    }
    let window = &rest[..rest.len().min(MAX_MULTIPART_PART_HEAD_BYTES)];
    match find_subslice(window, b"\r\n\r\n") {
        Some(i) => Ok(i + 4),
        None if rest.len() > MAX_MULTIPART_PART_HEAD_BYTES => Err(MultipartError::PartHeadTooLarge),
        None => Err(MultipartError::MissingClosingDelimiter),
    }
}

fn parse_part_head(head: &[u8]) -> Result<Part<'static>, MultipartError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_MULTIPART_PART_HEADERS];
    match httparse::parse_headers(head, &mut raw) {
        Ok(httparse::Status::Complete((n, _))) if n == head.len() => {}
        // Ending early means a bare-LF empty line: not the framing we located.
        _ => return Err(MultipartError::MalformedPartHead),
    }
    let mut disposition = None;
    let mut content_type = None;
    for h in raw.iter().take_while(|h| !h.name.is_empty()) {
        if h.name.eq_ignore_ascii_case("content-disposition") {
            if disposition.is_some() {
                return Err(MultipartError::BadContentDisposition);
            }
            disposition = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("content-type") {
            let value =
                std::str::from_utf8(h.value).map_err(|_| MultipartError::MalformedPartHead)?;
            content_type = Some(value.to_owned());
        }
    }
    let disposition = disposition.ok_or(MultipartError::BadContentDisposition)?;
    let (kind, params) = match disposition.iter().position(|&b| b == b';') {
        Some(i) => (&disposition[..i], &disposition[i + 1..]),
        None => (disposition, &b""[..]),
    };
    if !kind.trim_ascii().eq_ignore_ascii_case(b"form-data") {
        return Err(MultipartError::BadContentDisposition);
    }
    let mut name = None;
    let mut filename = None;
    for (key, value) in parse_params(params).map_err(|()| MultipartError::BadContentDisposition)? {
        let slot = if key.eq_ignore_ascii_case(b"name") {
            &mut name
        } else if key.eq_ignore_ascii_case(b"filename") {
            &mut filename
        } else {
            continue;
        };
        if slot.is_some() {
            return Err(MultipartError::BadContentDisposition);
        }
        *slot = Some(String::from_utf8(value).map_err(|_| MultipartError::BadContentDisposition)?);
    }
    Ok(Part {
        name: name.ok_or(MultipartError::BadContentDisposition)?,
        filename,
        content_type,
        data: &[],
    })
}

/// The head of one part of a streamed form ([`MultipartStream`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartHead {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
}

/// What [`MultipartStream::next_event`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultipartEvent {
    /// A part begins; its data follows in `Data` events until the next `Part` or `End`.
    Part(PartHead),
    /// Data of the current part, in order (possibly empty pieces are never returned).
    Data(bytes::Bytes),
    /// The closing delimiter was read; the rest of the body (the epilogue) is ignored.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    /// Before the first delimiter; `at_start` while nothing of the body was dropped yet.
    Preamble {
        at_start: bool,
    },
    /// Right after a delimiter: `--` closes, padding and CRLF open a part.
    AfterDelimiter,
    PartHead,
    Data,
    Done,
}

/// Incremental `multipart/form-data` parser for a body that arrives in pieces: the same grammar
/// and limits as [`parse_multipart`], but holding at most a part head or a delimiter's length
/// of the body at a time (plus whatever was fed and not yet taken out), so a 25 MiB upload can
/// go to disk as it arrives. Feed pieces with [`feed`](Self::feed), take events with
/// [`next_event`](Self::next_event) until it returns `Ok(None)`, and call
/// [`finish`](Self::finish) once the body has ended.
#[derive(Debug)]
pub struct MultipartStream {
    /// `\r\n--boundary`; the first delimiter of a body may come without its CRLF.
    delimiter: Vec<u8>,
    pending: bytes::BytesMut,
    state: StreamState,
    parts: usize,
}

impl MultipartStream {
    pub fn new(boundary: &str) -> Result<MultipartStream, MultipartError> {
        if boundary.is_empty() || boundary.len() > 70 {
            return Err(MultipartError::InvalidBoundary);
        }
        let mut delimiter = Vec::with_capacity(boundary.len() + 4);
        delimiter.extend_from_slice(b"\r\n--");
        delimiter.extend_from_slice(boundary.as_bytes());
        Ok(MultipartStream {
            delimiter,
            pending: bytes::BytesMut::new(),
            state: StreamState::Preamble { at_start: true },
            parts: 0,
        })
    }

    /// Appends the next piece of the body.
    pub fn feed(&mut self, piece: &[u8]) {
        if self.state == StreamState::Done {
            return;
        }
        self.pending.extend_from_slice(piece);
    }

    /// The next event from what was fed; `Ok(None)` when more of the body is needed.
    pub fn next_event(&mut self) -> Result<Option<MultipartEvent>, MultipartError> {
        self.step(false)
    }

    /// The body has ended: the events still due, then an error if the form was not closed.
    pub fn finish(&mut self) -> Result<Option<MultipartEvent>, MultipartError> {
        self.step(true)
    }

    fn step(&mut self, eof: bool) -> Result<Option<MultipartEvent>, MultipartError> {
        let dlen = self.delimiter.len();
        loop {
            match self.state {
                StreamState::Done => {
                    self.pending.clear();
                    return Ok(None);
                }
                StreamState::Preamble { at_start } => {
                    let dash_boundary = &self.delimiter[2..];
                    if at_start {
                        if self.pending.starts_with(dash_boundary) {
                            let _ = self.pending.split_to(dash_boundary.len());
                            self.state = StreamState::AfterDelimiter;
                            continue;
                        }
                        if !eof
                            && self.pending.len() < dash_boundary.len()
                            && dash_boundary.starts_with(&self.pending)
                        {
                            return Ok(None);
                        }
                    }
                    match find_subslice(&self.pending, &self.delimiter) {
                        Some(i) => {
                            let _ = self.pending.split_to(i + dlen);
                            self.state = StreamState::AfterDelimiter;
                        }
                        None if eof => return Err(MultipartError::MissingOpeningDelimiter),
                        None => {
                            // Keep only what could still begin the delimiter.
                            let drop = self.pending.len().saturating_sub(dlen - 1);
                            if drop > 0 || !at_start {
                                let _ = self.pending.split_to(drop);
                                self.state = StreamState::Preamble { at_start: false };
                            }
                            return Ok(None);
                        }
                    }
                }
                StreamState::AfterDelimiter => {
                    let rest = &self.pending[..];
                    if rest.starts_with(b"--") {
                        self.state = StreamState::Done;
                        return Ok(Some(MultipartEvent::End));
                    }
                    if rest == b"-" && !eof {
                        return Ok(None);
                    }
                    let padding = rest
                        .iter()
                        .take_while(|&&b| b == b' ' || b == b'\t')
                        .count();
                    let after = &rest[padding..];
                    if !after.starts_with(b"\r\n") {
                        if !eof && (after.is_empty() || after == b"\r") {
                            if padding > MAX_MULTIPART_PART_HEAD_BYTES {
                                return Err(MultipartError::MalformedDelimiter);
                            }
                            return Ok(None);
                        }
                        return Err(if after.is_empty() {
                            MultipartError::MissingClosingDelimiter
                        } else {
                            MultipartError::MalformedDelimiter
                        });
                    }
                    let _ = self.pending.split_to(padding + 2);
                    if self.parts == MAX_MULTIPART_PARTS {
                        return Err(MultipartError::TooManyParts);
                    }
                    self.state = StreamState::PartHead;
                }
                StreamState::PartHead => {
                    let head_len = match part_head_len(&self.pending) {
                        Ok(n) => n,
                        Err(MultipartError::MissingClosingDelimiter) if !eof => return Ok(None),
                        Err(e) => return Err(e),
                    };
                    let head = self.pending.split_to(head_len);
                    let part = parse_part_head(&head)?;
                    self.parts += 1;
                    self.state = StreamState::Data;
                    return Ok(Some(MultipartEvent::Part(PartHead {
                        name: part.name,
                        filename: part.filename,
                        content_type: part.content_type,
                    })));
                }
                StreamState::Data => match find_subslice(&self.pending, &self.delimiter) {
                    Some(0) => {
                        let _ = self.pending.split_to(dlen);
                        self.state = StreamState::AfterDelimiter;
                    }
                    Some(i) => {
                        return Ok(Some(MultipartEvent::Data(
                            self.pending.split_to(i).freeze(),
                        )));
                    }
                    None if eof => return Err(MultipartError::MissingClosingDelimiter),
                    None => {
                        let safe = self.pending.len().saturating_sub(dlen - 1);
                        if safe == 0 {
                            return Ok(None);
                        }
                        return Ok(Some(MultipartEvent::Data(
                            self.pending.split_to(safe).freeze(),
                        )));
                    }
                },
            }
        }
    }
}

/// A header parameter: the name as sent and the value with quoting removed.
type HeaderParam<'a> = (&'a [u8], Vec<u8>);

/// `*( OWS ";" OWS token "=" ( token / quoted-string ) )` after the first `;` (already removed),
/// with quoted-pair escapes resolved. Empty elements (`;;`) are tolerated. The caller knows which
/// header it was parsing, so the error carries nothing.
fn parse_params(mut s: &[u8]) -> Result<Vec<HeaderParam<'_>>, ()> {
    let is_token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    let mut out = Vec::new();
    loop {
        s = s.trim_ascii_start();
        if let Some(rest) = s.strip_prefix(b";") {
            s = rest;
            continue;
        }
        if s.is_empty() {
            return Ok(out);
        }
        let name_len = s.iter().take_while(|b| is_token(b)).count();
        if name_len == 0 || s.get(name_len) != Some(&b'=') {
            return Err(());
        }
        let name = &s[..name_len];
        s = &s[name_len + 1..];
        let mut value = Vec::new();
        if let Some(rest) = s.strip_prefix(b"\"") {
            let mut i = 0;
            loop {
                match rest.get(i) {
                    None => return Err(()),
                    Some(b'"') => break,
                    Some(b'\\') => {
                        value.push(*rest.get(i + 1).ok_or(())?);
                        i += 2;
                    }
                    Some(&b) => {
                        value.push(b);
                        i += 1;
                    }
                }
            }
            s = &rest[i + 1..];
        } else {
            let len = s.iter().take_while(|b| is_token(b)).count();
            if len == 0 {
                return Err(());
            }
            value.extend_from_slice(&s[..len]);
            s = &s[len..];
        }
        out.push((name, value));
        let trimmed = s.trim_ascii_start();
        if !(trimmed.is_empty() || trimmed.starts_with(b";")) {
            return Err(());
        }
        s = trimmed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BROWSER_BODY: &[u8] = b"------WebKitFormBoundary7MA4YWxkTrZu0gW\r\n\
Content-Disposition: form-data; name=\"caption\"\r\n\
\r\n\
hello world\r\n\
------WebKitFormBoundary7MA4YWxkTrZu0gW\r\n\
Content-Disposition: form-data; name=\"file\"; filename=\"cat \\\"1\\\".png\"; filename*=UTF-8''cat.png\r\n\
Content-Type: image/png\r\n\
\r\n\
\x89PNG\r\n\x1a\n\0\0--not-a-boundary\r\n\r\n\
------WebKitFormBoundary7MA4YWxkTrZu0gW--\r\n";

    const BOUNDARY: &str = "----WebKitFormBoundary7MA4YWxkTrZu0gW";

    #[test]
    fn parses_a_browser_form() {
        let parts = parse_multipart(BROWSER_BODY, BOUNDARY).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[0],
            Part {
                name: "caption".into(),
                filename: None,
                content_type: None,
                data: b"hello world"
            }
        );
        assert_eq!(parts[1].name, "file");
        assert_eq!(parts[1].filename.as_deref(), Some("cat \"1\".png"));
        assert_eq!(parts[1].content_type.as_deref(), Some("image/png"));
        // The CRLF before a delimiter belongs to the delimiter, not the data.
        assert_eq!(parts[1].data, b"\x89PNG\r\n\x1a\n\0\0--not-a-boundary\r\n");
    }

    #[test]
    fn preamble_epilogue_padding_and_empty_parts() {
        let body =
            b"preamble line\r\n--b  \r\nContent-Disposition: form-data; name=a\r\n\r\n\r\n--b\r\n\
Content-Disposition: FORM-DATA;NAME=\"b\"\r\n\r\nx\r\n--b--epilogue\r\n--b\r\ngarbage";
        let parts = parse_multipart(body, "b").unwrap();
        assert_eq!(
            parts
                .iter()
                .map(|p| (p.name.as_str(), p.data))
                .collect::<Vec<_>>(),
            [("a", &b""[..]), ("b", b"x")]
        );
    }

    #[test]
    fn boundary_must_start_a_line() {
        // "x--b" is not a delimiter, so everything up to the real (closing) one is preamble.
        let body = b"x--b\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--b--";
        assert_eq!(parse_multipart(body, "b"), Ok(vec![]));
        let body = b"x--b\r\nContent-Disposition: form-data; name=a\r\n\r\n1--b--";
        assert_eq!(
            parse_multipart(body, "b"),
            Err(MultipartError::MissingOpeningDelimiter)
        );
    }

    #[test]
    fn framing_errors() {
        let d = "Content-Disposition: form-data; name=a";
        let cases: [(String, MultipartError); 8] = [
            (
                format!("--b\r\n{d}\r\n\r\ndata"),
                MultipartError::MissingClosingDelimiter,
            ),
            (
                format!("--b\r\n{d}\r\n\r\ndata\r\n--b"),
                MultipartError::MissingClosingDelimiter,
            ),
            (
                format!("--b\r\n{d}"),
                MultipartError::MissingClosingDelimiter,
            ),
            (
                format!("--b\r\n{d}\r\n\r\ndata\r\n--bx\r\n"),
                MultipartError::MalformedDelimiter,
            ),
            (
                "no delimiter".into(),
                MultipartError::MissingOpeningDelimiter,
            ),
            (
                format!("--b\r\n{d}; name=b\r\n\r\n\r\n--b--"),
                MultipartError::BadContentDisposition,
            ),
            (
                "--b\r\nContent-Type: text/plain\r\n\r\n\r\n--b--".into(),
                MultipartError::BadContentDisposition,
            ),
            (
                "--b\r\nContent-Disposition: attachment; name=a\r\n\r\n\r\n--b--".into(),
                MultipartError::BadContentDisposition,
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                parse_multipart(body.as_bytes(), "b"),
                Err(expected),
                "{body:?}"
            );
        }
        let bad_heads = [
            "--b\r\nContent-Disposition: form-data; name=\"a\r\n\r\n\r\n--b--",
            "--b\r\nContent-Disposition: form-data; name=\r\n\r\n\r\n--b--",
            "--b\r\nContent-Disposition: form-data; name=a b\r\n\r\n\r\n--b--",
        ];
        for body in bad_heads {
            assert_eq!(
                parse_multipart(body.as_bytes(), "b"),
                Err(MultipartError::BadContentDisposition),
                "{body:?}"
            );
        }
        let bare_lf = "--b\r\nContent-Disposition: form-data; name=a\n\nX: y\r\n\r\n\r\n--b--";
        assert_eq!(
            parse_multipart(bare_lf.as_bytes(), "b"),
            Err(MultipartError::MalformedPartHead)
        );
    }

    #[test]
    fn part_limits() {
        let part = "--b\r\nContent-Disposition: form-data; name=p\r\n\r\nv\r\n";
        let ok = format!("{}--b--", part.repeat(MAX_MULTIPART_PARTS));
        assert_eq!(
            parse_multipart(ok.as_bytes(), "b").unwrap().len(),
            MAX_MULTIPART_PARTS
        );
        let over = format!("{}--b--", part.repeat(MAX_MULTIPART_PARTS + 1));
        let err = parse_multipart(over.as_bytes(), "b").unwrap_err();
        assert_eq!(err, MultipartError::TooManyParts);
        assert_eq!(HttpError::from(err).status, 413);

        let big = format!(
            "--b\r\nContent-Disposition: form-data; name=p\r\nX-Pad: {}\r\n\r\nv\r\n--b--",
            "p".repeat(MAX_MULTIPART_PART_HEAD_BYTES)
        );
        assert_eq!(
            parse_multipart(big.as_bytes(), "b"),
            Err(MultipartError::PartHeadTooLarge)
        );
        let many: String = (0..MAX_MULTIPART_PART_HEADERS)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        let body = format!("--b\r\nContent-Disposition: form-data; name=p\r\n{many}\r\nv\r\n--b--");
        assert_eq!(
            parse_multipart(body.as_bytes(), "b"),
            Err(MultipartError::MalformedPartHead)
        );
    }

    #[test]
    fn boundaries_from_content_types() {
        let ok = |ct: &str| boundary_from_content_type(ct.as_bytes());
        assert_eq!(
            ok("multipart/form-data; boundary=abc").as_deref(),
            Ok("abc")
        );
        assert_eq!(
            ok("Multipart/Form-Data;charset=utf-8;BOUNDARY=\"a b:c\"").as_deref(),
            Ok("a b:c")
        );
        assert_eq!(
            ok(&format!("multipart/form-data; boundary={BOUNDARY}")).as_deref(),
            Ok(BOUNDARY)
        );
        assert_eq!(
            ok(&format!("multipart/form-data; boundary={}", "x".repeat(70))).map(|b| b.len()),
            Ok(70)
        );
        assert_eq!(
            ok(&format!("multipart/form-data; boundary={}", "x".repeat(71))),
            Err(MultipartError::InvalidBoundary)
        );
        assert_eq!(
            ok("multipart/form-data; boundary=\"\""),
            Err(MultipartError::InvalidBoundary)
        );
        assert_eq!(
            ok("multipart/form-data; boundary=\"ab \""),
            Err(MultipartError::InvalidBoundary)
        );
        assert_eq!(
            ok("multipart/form-data; boundary=\"a\r\nb\""),
            Err(MultipartError::InvalidBoundary)
        );
        assert_eq!(
            ok("multipart/form-data; boundary=\"abc"),
            Err(MultipartError::InvalidBoundary)
        );
        assert_eq!(
            ok("multipart/form-data"),
            Err(MultipartError::MissingBoundary)
        );
        assert_eq!(
            ok("multipart/form-data; charset=utf-8"),
            Err(MultipartError::MissingBoundary)
        );
        assert_eq!(
            ok("multipart/mixed; boundary=abc"),
            Err(MultipartError::NotMultipart)
        );
        assert_eq!(ok("application/json"), Err(MultipartError::NotMultipart));
        let err = HttpError::from(MultipartError::MissingBoundary);
        assert_eq!((err.status, err.code), (400, "bad_multipart"));
    }

    proptest! {
        #[test]
        fn round_trips_generated_forms(parts in proptest::collection::vec(
            ("[a-z]{1,8}", proptest::option::of("[a-zA-Z0-9 ._\"\\\\-]{1,12}"), proptest::collection::vec(any::<u8>(), 0..64)),
            0..MAX_MULTIPART_PARTS,
        )) {
            let boundary = "XyZ-boundary-42";
            let mut body = b"preamble\r\n".to_vec();
            for (name, filename, data) in &parts {
                body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes());
                if let Some(f) = filename {
                    let escaped = f.replace('\\', "\\\\").replace('"', "\\\"");
                    body.extend_from_slice(format!("; filename=\"{escaped}\"").as_bytes());
                }
                body.extend_from_slice(b"\r\n\r\n");
                body.extend_from_slice(data);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            // Generated data could contain the delimiter only by astronomically unlikely chance.
            let parsed = parse_multipart(&body, boundary).unwrap();
            prop_assert_eq!(parsed.len(), parts.len());
            for (p, (name, filename, data)) in parsed.iter().zip(&parts) {
                prop_assert_eq!(&p.name, name);
                prop_assert_eq!(&p.filename, filename);
                prop_assert_eq!(p.data, &data[..]);
            }
        }

        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(
            prop::sample::select(vec![b'-', b'b', b'\r', b'\n', b'"', b';', b'=', b':', b'a', b' ', b'\\']), 0..300)) {
            let _ = parse_multipart(&body, "b");
            let _ = boundary_from_content_type(&body);
        }
    }
}

#[cfg(test)]
mod stream_tests {
    use super::*;
    use proptest::prelude::*;

    type Parsed = (String, Option<String>, Option<String>, Vec<u8>);

    /// Feeds `body` in pieces cut at `cuts` and collects the parts as `parse_multipart` would.
    fn streamed(
        body: &[u8],
        boundary: &str,
        cuts: &[usize],
    ) -> Result<Vec<Parsed>, MultipartError> {
        let mut stream = MultipartStream::new(boundary)?;
        let mut parts: Vec<Parsed> = Vec::new();
        let drain = |stream: &mut MultipartStream, eof: bool, parts: &mut Vec<Parsed>| {
            loop {
                let event = if eof {
                    stream.finish()?
                } else {
                    stream.next_event()?
                };
                match event {
                    None => return Ok::<bool, MultipartError>(false),
                    Some(MultipartEvent::Part(h)) => {
                        parts.push((h.name, h.filename, h.content_type, Vec::new()))
                    }
                    Some(MultipartEvent::Data(d)) => {
                        assert!(!d.is_empty(), "no empty data pieces");
                        parts
                            .last_mut()
                            .expect("data inside a part")
                            .3
                            .extend_from_slice(&d);
                    }
                    Some(MultipartEvent::End) => return Ok(true),
                }
            }
        };
        let mut at = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(body.len());
        for cut in cuts {
            stream.feed(&body[at..cut.max(at)]);
            at = cut.max(at);
            if drain(&mut stream, false, &mut parts)? {
                return Ok(parts);
            }
        }
        if drain(&mut stream, true, &mut parts)? {
            return Ok(parts);
        }
        Err(MultipartError::MissingClosingDelimiter)
    }

    fn whole(body: &[u8], boundary: &str) -> Result<Vec<Parsed>, MultipartError> {
        parse_multipart(body, boundary).map(|parts| {
            parts
                .into_iter()
                .map(|p| (p.name, p.filename, p.content_type, p.data.to_vec()))
                .collect()
        })
    }

    #[test]
    fn a_browser_form_byte_by_byte() {
        let body = b"------WebKitFormBoundary7MA4YWxkTrZu0gW\r\n\
Content-Disposition: form-data; name=\"caption\"\r\n\r\nhello world\r\n\
------WebKitFormBoundary7MA4YWxkTrZu0gW\r\n\
Content-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\
\x89PNG\r\n\x1a\n\0\0--not-a-boundary\r\n\r\n\
------WebKitFormBoundary7MA4YWxkTrZu0gW--\r\nepilogue";
        let boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW";
        let every_byte: Vec<usize> = (0..body.len()).collect();
        let parts = streamed(body, boundary, &every_byte).unwrap();
        assert_eq!(parts, whole(body, boundary).unwrap());
        assert_eq!(parts[1].3, b"\x89PNG\r\n\x1a\n\0\0--not-a-boundary\r\n");
        assert_eq!(parts[1].2.as_deref(), Some("image/png"));
    }

    #[test]
    fn holds_only_a_delimiter_of_a_long_part() {
        let mut stream = MultipartStream::new("b").unwrap();
        stream.feed(b"--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\n");
        assert!(matches!(
            stream.next_event(),
            Ok(Some(MultipartEvent::Part(_)))
        ));
        let mut out = 0;
        for _ in 0..1000 {
            stream.feed(&[b'x'; 1000]);
            while let Some(MultipartEvent::Data(d)) = stream.next_event().unwrap() {
                out += d.len();
            }
            assert!(stream.pending.len() < 8, "{}", stream.pending.len());
        }
        stream.feed(b"\r\n--b--");
        while let Some(event) = stream.next_event().unwrap() {
            match event {
                MultipartEvent::Data(d) => out += d.len(),
                MultipartEvent::End => break,
                MultipartEvent::Part(_) => panic!("one part only"),
            }
        }
        assert_eq!(out, 1_000_000);
    }

    #[test]
    fn errors_match_the_whole_body_parser() {
        for (body, boundary) in [
            (&b""[..], "b"),
            (b"--b", "b"),
            (b"--b\r\n", "b"),
            (
                b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nabc",
                "b",
            ),
            (b"--bx\r\n", "b"),
            (b"--b-", "b"),
            (
                b"--b \t\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n\r\n--b--",
                "b",
            ),
            (b"junk\r\n--b\r\nX: y\r\n\r\n\r\n--b--", "b"),
            (b"--b\r\n\r\n\r\n--b--", "b"),
        ] {
            let expected = whole(body, boundary).map_err(|e| e.status());
            let got = streamed(body, boundary, &[1, 3, 5]).map_err(|e| e.status());
            assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(body));
        }
        let mut many = Vec::new();
        for _ in 0..=MAX_MULTIPART_PARTS {
            many.extend_from_slice(
                b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n",
            );
        }
        many.extend_from_slice(b"--b--");
        assert_eq!(streamed(&many, "b", &[]), Err(MultipartError::TooManyParts));
    }

    proptest! {
        #[test]
        fn generated_forms_stream_like_they_parse(
            parts in proptest::collection::vec(
                ("[a-z]{1,6}", proptest::option::of("[a-z.]{1,8}"),
                 proptest::collection::vec(prop::sample::select(vec![b'-', b'b', b'\r', b'\n', b'x', 0u8]), 0..40)),
                0..6),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let boundary = "bb";
            let mut body = b"pre\r\n".to_vec();
            for (name, filename, data) in &parts {
                body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes());
                if let Some(f) = filename {
                    body.extend_from_slice(format!("; filename=\"{f}\"").as_bytes());
                }
                body.extend_from_slice(b"\r\n\r\n");
                body.extend_from_slice(data);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            // The data may well contain the delimiter here: both parsers must cut it the same.
            let expected = whole(&body, boundary).map_err(|e| e.status());
            prop_assert_eq!(streamed(&body, boundary, &cuts).map_err(|e| e.status()), expected);
        }

        #[test]
        fn arbitrary_bodies_stream_like_they_parse(
            body in proptest::collection::vec(
                prop::sample::select(vec![b'-', b'b', b'\r', b'\n', b'"', b';', b'=', b':', b'a', b' ']), 0..200),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let expected = whole(&body, "b").map_err(|e| e.status());
            prop_assert_eq!(streamed(&body, "b", &cuts).map_err(|e| e.status()), expected);
        }
    }
}
