//! Every limit of the HTTP layer, in one place, each named and explained. The parsers in this
//! folder enforce the byte and count limits; the connection driver enforces the timeouts (the
//! sans-IO code never reads the clock). Changing a value here changes the server's behaviour
//! towards hostile or broken clients, so each one says what it protects against.

use std::time::Duration;

/// Request line plus header fields, including their CRLFs and any skipped leading empty lines.
/// A buffer holding more than this without a complete head is answered with 431 without waiting
/// for the rest, so a client cannot make us buffer an unbounded head.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Header fields per request; one more is answered with 431. Bounds the per-request offset table.
pub const MAX_HEADERS: usize = 100;

/// Empty lines (CRLF) tolerated before a request line (RFC 9112 §2.2 lets servers skip "at least
/// one"); more is a 400 rather than a way to keep a connection busy for free.
pub const MAX_LEADING_EMPTY_LINES: usize = 8;

/// From the first byte of a request to the end of its head. The slowloris guard: a client that
/// trickles header bytes is disconnected after this, however steadily it trickles.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The whole body must have arrived within this after the head (large uploads included).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// An idle keep-alive connection (between requests) is closed after this.
pub const IDLE_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// A response must be fully written within this; a peer that stops reading is cut off.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// One chunk-size line of a chunked body, extensions and CRLF included. Extensions are tolerated
/// (and ignored) but must not become a way to stream unbounded non-body bytes.
pub const MAX_CHUNK_SIZE_LINE: usize = 1024;

/// The whole trailer section of a chunked body, which is read and discarded.
pub const MAX_TRAILER_BYTES: usize = 4096;

/// Default of `OPENCHAT_HTTP_MAX_BODY_BYTES`: the largest request body, after chunked decoding.
/// Sized for the largest upload plus multipart overhead.
pub const DEFAULT_MAX_BODY_BYTES: usize = 26 * 1024 * 1024;

/// Largest body of a JSON endpoint (everything but the two multipart uploads). Declared larger,
/// it is answered 413 from the head, before any body byte is read; a chunked body is cut off with
/// 413 once it crosses this. A 500-item batch or a large channel layout fits well inside.
pub const MAX_JSON_BODY_BYTES: usize = 1024 * 1024;

/// Bodies larger than this (declared, or chunked) wait for the identity of the head to be checked
/// before a byte of them is read: an endpoint that needs identity answers 401 at once and the
/// connection closes. Smaller bodies are read first, as their cost is bounded by the budget.
pub const IDENTITY_BEFORE_BODY_BYTES: usize = 64 * 1024;

/// Default of `OPENCHAT_HTTP_BODY_BUDGET_BYTES`: request body bytes the whole process holds in
/// flight (in memory or spooled to a temp file), counted by declared length from the head. A
/// request whose body does not fit is answered 503 `server_busy` (retryable, `Retry-After`)
/// before its body is read.
pub const DEFAULT_BODY_BUDGET_BYTES: usize = 256 * 1024 * 1024;

/// `Retry-After` seconds of a 503 `server_busy` (body budget or connection cap exhausted).
pub const BUSY_RETRY_AFTER_SECS: u32 = 1;

/// Default of `OPENCHAT_MAX_CONNECTIONS`: open connections of the process (HTTP and WebSocket),
/// split evenly over the shards. A connection over it is answered 503 and closed at accept.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Default of `OPENCHAT_MAX_CONNECTIONS_PER_ADDR`: open connections from one source IP address.
/// Over it, that address's new connections are answered 503 and closed at accept.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDR: usize = 256;

/// A text field of a streamed multipart body (everything that is not a file) is held in memory
/// up to this; larger is 413.
pub const MAX_MULTIPART_TEXT_BYTES: usize = 1024 * 1024;

/// Parts in one `multipart/form-data` body; one more is answered with 413.
pub const MAX_MULTIPART_PARTS: usize = 16;

/// The header block of one multipart part, including its terminating empty line.
pub const MAX_MULTIPART_PART_HEAD_BYTES: usize = 4096;

/// Header fields in one multipart part (browsers send two or three).
pub const MAX_MULTIPART_PART_HEADERS: usize = 8;

/// Path parameters captured by one route; also the capacity of the non-allocating
/// [`Params`](super::router::Params) storage. Registering a route with more panics at start-up.
pub const MAX_PATH_PARAMS: usize = 8;

/// Requests the driver parses out of one read before it writes the responses it has, so a client
/// that pipelines a flood of requests cannot make us queue an unbounded number of responses.
pub const MAX_PIPELINE_DEPTH: usize = 32;

// Header offsets are stored as u16 inside `Request`; this keeps that sound.
const _: () = assert!(MAX_HEAD_BYTES <= u16::MAX as usize);
const _: () = assert!(MAX_TRAILER_BYTES >= 2 && MAX_CHUNK_SIZE_LINE >= 3);
