//! The decoder of `Transfer-Encoding: chunked` request bodies (RFC 9112 §7.1). It is resumable: it
//! consumes from the read buffer exactly the framing and data it has fully understood, copies the
//! data into the body being assembled, and keeps its place between calls, so a body trickling in
//! one byte at a time costs linear work. Strict where leniency enables smuggling: hex sizes only
//! (overflow-checked), CRLF only, chunk extensions tolerated but bounded by
//! [`MAX_CHUNK_SIZE_LINE`], trailers bounded by [`MAX_TRAILER_BYTES`] and discarded, and the
//! decoded size checked against the body limit before a chunk's data is read.

use bytes::{Buf, BytesMut};

use super::HttpError;
use super::limits::{MAX_CHUNK_SIZE_LINE, MAX_TRAILER_BYTES};
use super::scan::find_byte;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data.
    Data {
        remaining: usize,
    },
    /// Expecting the CRLF that closes a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields until an empty line.
    Trailer,
    Done,
}

/// Resumable decoder for one chunked body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: State,
    decoded: usize,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self {
            state: State::Size,
            decoded: 0,
            trailer_bytes: 0,
        }
    }

    /// Consumes chunked framing and data from the front of `src`, appending data to `body`.
    ///
    /// Returns `Ok(Some(len))` with the decoded body length once the final CRLF has been consumed
    /// (no byte after it is touched), `Ok(None)` when `src` ran out first. Once done, further calls
    /// return the same `Ok(Some(len))` without consuming anything.
    pub fn decode(
        &mut self,
        src: &mut BytesMut,
        body: &mut BytesMut,
        max_body: usize,
    ) -> Result<Option<usize>, HttpError> {
        loop {
            match self.state {
                State::Size => {
                    let Some(line_len) = take_line(src, MAX_CHUNK_SIZE_LINE).map_err(|e| {
                        e.into_http(HttpError::bad_request("chunk-size line too long"))
                    })?
                    else {
                        return Ok(None);
                    };
                    let size = parse_size_line(&src[..line_len - 2])?;
                    src.advance(line_len);
                    if size > max_body - self.decoded {
                        return Err(HttpError::payload_too_large("request body too large"));
                    }
                    if size == 0 {
                        self.state = State::Trailer;
                    } else {
                        // Reserve up front: the size is already checked against the limit.
                        body.reserve(size);
                        self.state = State::Data { remaining: size };
                    }
                }
                State::Data { remaining } => {
                    if src.is_empty() {
                        return Ok(None);
                    }
                    let n = remaining.min(src.len());
                    body.extend_from_slice(&src[..n]);
                    src.advance(n);
                    self.decoded += n;
                    self.state = if n == remaining {
                        State::DataEnd
                    } else {
                        State::Data {
                            remaining: remaining - n,
                        }
                    };
                }
                State::DataEnd => {
                    match (src.first(), src.get(1)) {
                        (Some(b'\r'), Some(b'\n')) => src.advance(2),
                        (None, _) | (Some(b'\r'), None) => return Ok(None),
                        _ => return Err(HttpError::bad_request("chunk data not followed by CRLF")),
                    }
                    self.state = State::Size;
                }
                State::Trailer => {
                    let room = MAX_TRAILER_BYTES - self.trailer_bytes;
                    let Some(line_len) = take_line(src, room).map_err(|e| {
                        e.into_http(HttpError::header_fields_too_large(
                            "trailer section too large",
                        ))
                    })?
                    else {
                        return Ok(None);
                    };
                    if line_len > 2 {
                        validate_trailer_field(&src[..line_len - 2])?;
                    }
                    src.advance(line_len);
                    self.trailer_bytes += line_len;
                    if line_len == 2 {
                        self.state = State::Done;
                    }
                }
                State::Done => return Ok(Some(self.decoded)),
            }
        }
    }
}

/// Why a line at the front of the buffer cannot be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineError {
    BareLf,
    TooLong,
}

impl LineError {
    /// The caller decides what "too long" means for its kind of line.
    fn into_http(self, too_long: HttpError) -> HttpError {
        match self {
            LineError::BareLf => HttpError::bad_request("bare LF in chunked framing"),
            LineError::TooLong => too_long,
        }
    }
}

/// The length (CRLF included) of the complete line at the front of `src`, `Ok(None)` if it has
/// not fully arrived yet. A LF not preceded by CR is rejected here so every caller is
/// CRLF-strict.
fn take_line(src: &[u8], limit: usize) -> Result<Option<usize>, LineError> {
    let window = &src[..src.len().min(limit)];
    match find_byte(window, b'\n') {
        Some(i) if i == 0 || window[i - 1] != b'\r' => Err(LineError::BareLf),
        Some(i) => Ok(Some(i + 1)),
        None if src.len() >= limit => Err(LineError::TooLong),
        None => Ok(None),
    }
}

/// `chunk-size [ BWS ; chunk-ext ]` without the CRLF: hex digits, then optionally whitespace
/// and extensions we ignore but refuse to accept control characters in (a bare CR in particular).
fn parse_size_line(line: &[u8]) -> Result<usize, HttpError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(HttpError::bad_request("invalid chunk size"));
    }
    let mut size: usize = 0;
    for &d in &line[..digits] {
        let v = (d as char).to_digit(16).unwrap_or(0) as usize;
        // Leading zeros are legal, so the digit count alone does not bound the value.
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(v))
            .ok_or(HttpError::payload_too_large("request body too large"))?;
    }
    let rest = &line[digits..];
    let ext = rest.trim_ascii_start();
    if !rest.is_empty() && !ext.starts_with(b";") {
        return Err(HttpError::bad_request("invalid chunk size"));
    }
    if rest.iter().any(|&b| is_forbidden_control(b)) {
        return Err(HttpError::bad_request(
            "control character in chunk extension",
        ));
    }
    Ok(size)
}

/// A trailer line must look like a field (`token ":" value`); obs-fold and controls are refused
/// for the same reasons as in the head, even though trailers are discarded.
fn validate_trailer_field(line: &[u8]) -> Result<(), HttpError> {
    let bad = HttpError::bad_request("malformed trailer field");
    let colon = find_byte(line, b':').ok_or(bad.clone())?;
    let name = &line[..colon];
    let is_token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if name.is_empty() || !name.iter().all(is_token) {
        return Err(bad);
    }
    if line[colon + 1..].iter().any(|&b| is_forbidden_control(b)) {
        return Err(bad);
    }
    Ok(())
}

fn is_forbidden_control(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` in one call; returns the result, the body and what is left of the input.
    fn decode_all(
        input: &[u8],
        max: usize,
    ) -> (Result<Option<usize>, HttpError>, Vec<u8>, Vec<u8>) {
        let mut src = BytesMut::from(input);
        let mut body = BytesMut::new();
        let res = ChunkedDecoder::new().decode(&mut src, &mut body, max);
        (res, body.to_vec(), src.to_vec())
    }

    fn ok(input: &[u8]) -> Vec<u8> {
        let (res, body, rest) = decode_all(input, 1 << 20);
        assert_eq!(
            res,
            Ok(Some(body.len())),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        assert!(rest.is_empty());
        body
    }

    fn err(input: &[u8]) -> HttpError {
        decode_all(input, 1 << 20).0.unwrap_err()
    }

    #[test]
    fn decodes_simple_and_multi_chunk_bodies() {
        assert_eq!(ok(b"0\r\n\r\n"), b"");
        assert_eq!(ok(b"3\r\nabc\r\n0\r\n\r\n"), b"abc");
        assert_eq!(
            ok(b"3\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n"),
            b"abc0123456789"
        );
        assert_eq!(ok(b"00000003\r\nabc\r\n000\r\n\r\n"), b"abc");
        assert_eq!(
            ok(b"a\r\n\r\n\r\n\r\n\r\n\r\n\r\n0\r\n\r\n"),
            b"\r\n\r\n\r\n\r\n\r\n"
        );
    }

    #[test]
    fn stops_exactly_at_the_end_of_the_body() {
        let (res, body, rest) = decode_all(b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n", 100);
        assert_eq!(res, Ok(Some(3)));
        assert_eq!(body, b"abc");
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn extensions_are_tolerated_but_bounded_and_clean() {
        assert_eq!(ok(b"3;name=value\r\nabc\r\n0;last\r\n\r\n"), b"abc");
        assert_eq!(ok(b"3 ;a=\"q\"\r\nabc\r\n0\t;x\r\n\r\n"), b"abc");
        let long = format!("3;{}\r\nabc\r\n0\r\n\r\n", "x".repeat(MAX_CHUNK_SIZE_LINE));
        assert_eq!(
            err(long.as_bytes()),
            HttpError::bad_request("chunk-size line too long")
        );
        let just_fits = format!(
            "3;{}\r\nabc\r\n0\r\n\r\n",
            "x".repeat(MAX_CHUNK_SIZE_LINE - 4)
        );
        assert_eq!(ok(just_fits.as_bytes()), b"abc");
        assert_eq!(err(b"3;a\0b\r\nabc\r\n0\r\n\r\n").status, 400);
        assert_eq!(err(b"3;a\rb\r\nabc\r\n0\r\n\r\n").status, 400);
    }

    #[test]
    fn size_lines_are_hex_only() {
        for bad in [
            &b"\r\nabc\r\n0\r\n\r\n"[..],
            b"+3\r\nabc\r\n0\r\n\r\n",
            b"-3\r\nabc\r\n0\r\n\r\n",
            b"0x3\r\nabc\r\n0\r\n\r\n",
            b" 3\r\nabc\r\n0\r\n\r\n",
            b"3x\r\nabc\r\n0\r\n\r\n",
            b"3 x\r\nabc\r\n0\r\n\r\n",
            b"g\r\n",
        ] {
            assert_eq!(
                err(bad),
                HttpError::bad_request("invalid chunk size"),
                "{:?}",
                bad
            );
        }
    }

    #[test]
    fn crlf_is_strict() {
        assert_eq!(err(b"3\nabc\r\n0\r\n\r\n").status, 400);
        assert_eq!(err(b"3\r\nabc\n0\r\n\r\n").status, 400);
        assert_eq!(err(b"3\r\nabcd\r\n0\r\n\r\n").status, 400);
        assert_eq!(err(b"3\r\nabc\r\n0\n\r\n").status, 400);
        assert_eq!(err(b"3\r\nabc\r\n0\r\n\n").status, 400);
        assert_eq!(err(b"3\r\nabc\rX").status, 400);
        assert_eq!(err(b"\n").status, 400);
    }

    #[test]
    fn sizes_are_overflow_safe_and_limited() {
        assert_eq!(err(b"ffffffffffffffffffffffff\r\n").status, 413);
        assert_eq!(
            ok(b"00000000000000000000000000000001\r\na\r\n0\r\n\r\n"),
            b"a"
        );
        let (res, ..) = decode_all(b"5\r\nabcde\r\n6\r\nfghijk\r\n0\r\n\r\n", 10);
        assert_eq!(
            res,
            Err(HttpError::payload_too_large("request body too large"))
        );
        let (res, ..) = decode_all(b"5\r\nabcde\r\n5\r\nfghij\r\n0\r\n\r\n", 10);
        assert_eq!(res, Ok(Some(10)));
        // The limit applies before the data arrives.
        let (res, ..) = decode_all(b"b\r\n", 10);
        assert_eq!(res.unwrap_err().status, 413);
    }

    #[test]
    fn trailers_are_bounded_validated_and_discarded() {
        assert_eq!(
            ok(b"3\r\nabc\r\n0\r\nX-Checksum: 1\r\nX-B: two words\r\n\r\n"),
            b"abc"
        );
        assert_eq!(err(b"0\r\nno colon\r\n\r\n").status, 400);
        assert_eq!(err(b"0\r\nX: 1\r\n folded\r\n\r\n").status, 400);
        assert_eq!(err(b"0\r\nX: a\0b\r\n\r\n").status, 400);
        let big = format!("0\r\nX: {}\r\n\r\n", "v".repeat(MAX_TRAILER_BYTES));
        assert_eq!(err(big.as_bytes()).status, 431);
        // Many small trailer lines add up.
        let many: String = (0..MAX_TRAILER_BYTES / 8)
            .map(|i| format!("X{i:03}: v\r\n"))
            .collect();
        assert_eq!(err(format!("0\r\n{many}\r\n").as_bytes()).status, 431);
    }

    #[test]
    fn resumes_byte_by_byte() {
        let input =
            b"4;ext\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nT: v\r\n\r\nNEXT";
        let mut decoder = ChunkedDecoder::new();
        let mut src = BytesMut::new();
        let mut body = BytesMut::new();
        let mut done = None;
        for &b in input.iter() {
            src.extend_from_slice(&[b]);
            if let Some(n) = decoder.decode(&mut src, &mut body, 1000).unwrap() {
                done = Some(n);
                break;
            }
        }
        assert_eq!(done, Some(23));
        assert_eq!(&body[..], b"Wikipedia in\r\n\r\nchunks.");
        assert!(src.is_empty(), "nothing after the body was fed yet");
        // Done is sticky and consumes nothing more.
        src.extend_from_slice(b"NEXT");
        assert_eq!(decoder.decode(&mut src, &mut body, 1000), Ok(Some(23)));
        assert_eq!(&src[..], b"NEXT");
    }
}
