//! Responses and their serialization. A [`Response`] is a status, an optional content type, a few
//! extra headers and a body; [`Response::encode`] writes the whole message into one buffer so the
//! driver issues a single write. It owns the headers every response carries: `Content-Length`
//! (omitted only where RFC 9110 forbids it), the CORS block the wire contract requires on every
//! response (errors and 404s included, because a CORS failure makes the desktop client delete the
//! server), `Date`, and `Connection: close` when the connection ends. Also here: the JSON error
//! body shape, reason phrases and the IMF-fixdate formatter for the cached `Date` value.

use bytes::Bytes;

/// The three CORS headers of the wire contract, in the order they are written.
pub const CORS_HEADERS: &[(&str, &str)] = &[
    ("Access-Control-Allow-Origin", "*"),
    (
        "Access-Control-Allow-Headers",
        "Content-Type, Authorization, X-OpenChat-User-UID, X-OpenChat-Device-ID, If-Match, Idempotency-Key",
    ),
    (
        "Access-Control-Allow-Methods",
        "GET, POST, PUT, DELETE, OPTIONS",
    ),
];

/// [`CORS_HEADERS`] pre-rendered, so every response copies one static block (a test keeps the two
/// in sync).
const CORS_BLOCK: &[u8] = b"Access-Control-Allow-Origin: *\r\n\
Access-Control-Allow-Headers: Content-Type, Authorization, X-OpenChat-User-UID, X-OpenChat-Device-ID, If-Match, Idempotency-Key\r\n\
Access-Control-Allow-Methods: GET, POST, PUT, DELETE, OPTIONS\r\n";

/// A header value checked for safety: CR, LF and other controls (except HTAB) are replaced by a
/// space, so a value built from user data (a filename, say) can never inject headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderValue(String);

impl HeaderValue {
    pub fn new(value: impl Into<String>) -> Self {
        let mut value = value.into();
        if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            value = value
                .chars()
                .map(|c| {
                    if c.is_ascii_control() && c != '\t' {
                        ' '
                    } else {
                        c
                    }
                })
                .collect();
        }
        Self(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Headers this module writes itself; setting them through [`Response::header`] would duplicate
/// or contradict the framing.
const RESERVED_HEADERS: [&str; 5] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "date",
    "content-type",
];

/// A body the driver streams from a file after the encoded head (blob downloads), so a large
/// file is never held in memory whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileBody {
    pub path: std::path::PathBuf,
    pub len: u64,
}

/// An HTTP response ready to be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, HeaderValue)>,
    body: Bytes,
    file: Option<FileBody>,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            content_type: None,
            headers: Vec::new(),
            body: Bytes::new(),
            file: None,
        }
    }

    pub fn json(status: u16, body: impl Into<Bytes>) -> Self {
        Self::bytes(status, "application/json", body)
    }

    pub fn bytes(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            content_type: Some(content_type),
            headers: Vec::new(),
            body: body.into(),
            file: None,
        }
    }

    /// A response whose body is the `len` bytes of the file at `path`: [`encode`](Self::encode)
    /// writes the head only (with `Content-Length: len`), the driver then streams the file.
    pub fn file(
        status: u16,
        content_type: &'static str,
        path: std::path::PathBuf,
        len: u64,
    ) -> Self {
        Self {
            status,
            content_type: Some(content_type),
            headers: Vec::new(),
            body: Bytes::new(),
            file: Some(FileBody { path, len }),
        }
    }

    /// The file to stream after the head, if the body is one.
    pub fn file_body(&self) -> Option<&FileBody> {
        self.file.as_ref()
    }

    pub fn no_content() -> Self {
        Self::new(204)
    }

    /// The contract's error shape: `{"code":...,"message":...,"retryable":...}`.
    pub fn error(status: u16, code: &str, message: &str, retryable: bool) -> Self {
        Self::error_with_details(status, code, message, retryable, None)
    }

    /// [`Response::error`] plus the optional `details` member, given as encoded JSON.
    pub fn error_with_details(
        status: u16,
        code: &str,
        message: &str,
        retryable: bool,
        details: Option<&str>,
    ) -> Self {
        let mut body = Vec::with_capacity(
            48 + code.len() + message.len() + details.map_or(0, |d| d.len() + 12),
        );
        body.extend_from_slice(b"{\"code\":");
        write_json_string(&mut body, code);
        body.extend_from_slice(b",\"message\":");
        write_json_string(&mut body, message);
        body.extend_from_slice(if retryable {
            b",\"retryable\":true"
        } else {
            b",\"retryable\":false"
        });
        if let Some(details) = details {
            body.extend_from_slice(b",\"details\":");
            body.extend_from_slice(details.as_bytes());
        }
        body.push(b'}');
        Self::json(status, body)
    }

    /// Adds a header. `name` must be a token and not one this module writes itself (checked in
    /// debug builds: both are programmer errors).
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        debug_assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)),
            "invalid header name {name:?}"
        );
        debug_assert!(
            !RESERVED_HEADERS
                .iter()
                .any(|r| r.eq_ignore_ascii_case(name)),
            "{name} is written by Response::encode"
        );
        self.headers.push((name, HeaderValue::new(value)));
        self
    }

    pub fn content_type(&self) -> Option<&'static str> {
        self.content_type
    }

    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.headers.iter().map(|(n, v)| (*n, v.as_str()))
    }

    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Serializes status line, headers and body into `out` (appending). `date` is the cached
    /// IMF-fixdate (see [`format_http_date`]). `Content-Length` is always written, even 0, except
    /// for 1xx, 204 and 304, which never carry one nor a body. For a HEAD request the headers
    /// describe the body (its length included) but the body itself is not written.
    pub fn encode(&self, out: &mut Vec<u8>, date: &[u8], keep_alive: bool, head_request: bool) {
        let bodiless = matches!(self.status, 100..=199 | 204 | 304);
        let reason = reason_phrase(self.status);
        let extra: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.0.len() + 4)
            .sum();
        out.reserve(
            64 + reason.len()
                + CORS_BLOCK.len()
                + date.len()
                + extra
                + self.content_type.map_or(0, str::len)
                + self.body.len(),
        );

        out.extend_from_slice(b"HTTP/1.1 ");
        write_status(out, self.status);
        out.push(b' ');
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(ct) = self.content_type {
            out.extend_from_slice(b"Content-Type: ");
            out.extend_from_slice(ct.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !bodiless {
            out.extend_from_slice(b"Content-Length: ");
            let len = self.file.as_ref().map_or(self.body.len() as u64, |f| f.len);
            write_decimal(out, len);
            out.extend_from_slice(b"\r\n");
        }
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.0.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(CORS_BLOCK);
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !bodiless && !head_request {
            out.extend_from_slice(&self.body);
        }
    }
}

/// Three digits, always: statuses are 100..=999 by construction; anything else is clamped so the
/// status line stays well-formed.
fn write_status(out: &mut Vec<u8>, status: u16) {
    let s = status.clamp(100, 999);
    out.extend_from_slice(&[
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]);
}

/// Decimal formatting without `fmt` machinery or allocation.
fn write_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// A JSON string literal: quotes, backslashes and all control characters escaped (RFC 8259 §7).
pub(crate) fn write_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The reason phrase for `status` (RFC 9110 §15); an empty phrase for codes without one, which
/// the status-line grammar allows.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Formats `unix_secs` as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110 §5.6.7)
/// without allocating. Times after 9999-12-31T23:59:59Z are clamped to it, since the format has
/// four year digits.
pub fn format_http_date(unix_secs: u64) -> [u8; 29] {
    const MAX_SECS: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];

    let secs = unix_secs.min(MAX_SECS);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);

    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[0..3].copy_from_slice(DAYS[(days % 7) as usize]);
    let two = |out: &mut [u8; 29], at: usize, v: u64| {
        out[at] = b'0' + (v / 10) as u8;
        out[at + 1] = b'0' + (v % 10) as u8;
    };
    two(&mut out, 5, day);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    two(&mut out, 12, year / 100);
    two(&mut out, 14, year % 100);
    two(&mut out, 17, rem / 3600);
    two(&mut out, 20, rem / 60 % 60);
    two(&mut out, 23, rem % 60);
    out
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31) in the proleptic Gregorian calendar,
/// using the era arithmetic of Howard Hinnant's "chrono-compatible low-level date algorithms".
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of each cycle year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    fn encode(r: &Response, keep_alive: bool, head: bool) -> String {
        let mut out = Vec::new();
        r.encode(&mut out, DATE, keep_alive, head);
        String::from_utf8(out).unwrap()
    }

    const CORS: &str = "Access-Control-Allow-Origin: *\r\n\
        Access-Control-Allow-Headers: Content-Type, Authorization, X-OpenChat-User-UID, X-OpenChat-Device-ID, If-Match, Idempotency-Key\r\n\
        Access-Control-Allow-Methods: GET, POST, PUT, DELETE, OPTIONS\r\n";

    #[test]
    fn encodes_a_small_json_response_exactly() {
        let r = Response::json(200, &b"{\"ok\":true}"[..]).header("ETag", "\"v1\"");
        assert_eq!(
            encode(&r, true, false),
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\nETag: \"v1\"\r\n\
                 {CORS}Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n{{\"ok\":true}}"
            )
        );
    }

    #[test]
    fn connection_close_and_head() {
        let r = Response::bytes(200, "text/plain", "hello");
        let closed = encode(&r, false, false);
        assert!(
            closed.ends_with("Connection: close\r\n\r\nhello"),
            "{closed}"
        );
        let head = encode(&r, true, true);
        assert!(head.contains("Content-Length: 5\r\n"));
        assert!(head.ends_with("GMT\r\n\r\n"), "no body for HEAD: {head}");
    }

    #[test]
    fn content_length_zero_and_bodiless_statuses() {
        assert!(encode(&Response::new(200), true, false).contains("\r\nContent-Length: 0\r\n"));
        assert!(encode(&Response::new(404), true, false).contains("\r\nContent-Length: 0\r\n"));
        for status in [100, 101, 204, 304] {
            let out = encode(
                &Response::bytes(status, "text/plain", "ignored"),
                true,
                false,
            );
            assert!(!out.contains("Content-Length"), "{status}: {out}");
            assert!(out.ends_with("\r\n\r\n"), "{status}: no body");
        }
        assert_eq!(
            encode(&Response::no_content(), true, false),
            format!("HTTP/1.1 204 No Content\r\n{CORS}Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n")
        );
    }

    #[test]
    fn cors_block_matches_the_contract_table() {
        let rendered: String = CORS_HEADERS
            .iter()
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect();
        assert_eq!(rendered.as_bytes(), CORS_BLOCK);
        assert_eq!(rendered, CORS);
        // Every response, errors included.
        assert!(encode(&Response::error(500, "internal", "x", true), false, false).contains(CORS));
    }

    #[test]
    fn error_bodies_escape_json() {
        let r = Response::error(
            400,
            "bad_request",
            "quote \" backslash \\ nl \n tab \t bell \u{7} é",
            false,
        );
        assert_eq!(
            std::str::from_utf8(r.body()).unwrap(),
            r#"{"code":"bad_request","message":"quote \" backslash \\ nl \n tab \t bell \u0007 é","retryable":false}"#
        );
        assert_eq!(r.content_type(), Some("application/json"));
        let r = Response::error(503, "unavailable", "", true);
        assert_eq!(
            r.body().as_ref(),
            br#"{"code":"unavailable","message":"","retryable":true}"#
        );
    }

    #[test]
    fn header_values_cannot_inject() {
        let r = Response::new(200).header(
            "Content-Disposition",
            "attachment; filename=\"a\r\nSet-Cookie: x\"",
        );
        let out = encode(&r, true, false);
        assert!(
            out.contains("Content-Disposition: attachment; filename=\"a  Set-Cookie: x\"\r\n"),
            "{out}"
        );
        assert_eq!(out.matches("\r\n").count(), 8);
    }

    #[test]
    fn numbers_are_formatted_without_fmt() {
        for n in [0u64, 7, 10, 99, 100, 12345, u64::MAX] {
            let mut out = Vec::new();
            write_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
        let mut out = Vec::new();
        write_status(&mut out, 431);
        assert_eq!(out, b"431");
        assert!(encode(&Response::new(499), true, false).starts_with("HTTP/1.1 499 \r\n"));
    }

    #[test]
    fn http_dates() {
        assert_eq!(&format_http_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            &format_http_date(784_111_777),
            b"Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            &format_http_date(951_782_400),
            b"Tue, 29 Feb 2000 00:00:00 GMT"
        );
        assert_eq!(
            &format_http_date(1_709_251_199),
            b"Thu, 29 Feb 2024 23:59:59 GMT"
        );
        assert_eq!(
            &format_http_date(1_735_689_599),
            b"Tue, 31 Dec 2024 23:59:59 GMT"
        );
        assert_eq!(
            &format_http_date(4_102_444_800),
            b"Fri, 01 Jan 2100 00:00:00 GMT"
        );
        assert_eq!(
            &format_http_date(4_107_542_400),
            b"Mon, 01 Mar 2100 00:00:00 GMT"
        );
        assert_eq!(
            &format_http_date(253_402_300_799),
            b"Fri, 31 Dec 9999 23:59:59 GMT"
        );
        assert_eq!(
            format_http_date(u64::MAX),
            format_http_date(253_402_300_799)
        );
    }

    #[test]
    fn http_dates_agree_with_the_time_crate() {
        let fmt = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        let mut secs = 0u64;
        while secs < 253_402_300_799 {
            let expected = time::OffsetDateTime::from_unix_timestamp(secs as i64)
                .unwrap()
                .format(&fmt)
                .unwrap();
            assert_eq!(
                std::str::from_utf8(&format_http_date(secs)).unwrap(),
                expected,
                "{secs}"
            );
            secs += 7_777_777 + secs / 3;
        }
    }

    #[test]
    fn reason_phrases() {
        assert_eq!(reason_phrase(200), "OK");
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(505), "HTTP Version Not Supported");
        assert_eq!(reason_phrase(299), "");
    }
}
