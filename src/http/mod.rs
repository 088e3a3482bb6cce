//! The sans-IO HTTP/1.1 layer: bytes in, requests out; responses in, bytes out. It owns request
//! head parsing and its anti-smuggling rules ([`request`]), the resumable request reader with its
//! body framing ([`reader`], [`chunked`]), response serialization ([`response`]), path routing
//! ([`router`]), query strings ([`query`]) and `multipart/form-data` bodies ([`multipart`]). Every
//! limit lives in [`limits`]. Nothing here touches a socket, an executor or the clock: the
//! connection driver in `runtime` feeds bytes in, applies the timeouts from [`limits`] and writes
//! what comes out.
//!
//! Error contract: after any [`HttpError`] the driver writes `HttpError::response()` (or its own
//! equivalent) with `Connection: close` and closes, because the framing of the stream can no longer
//! be trusted.

pub mod chunked;
pub mod limits;
pub mod multipart;
pub mod query;
pub mod reader;
pub mod request;
pub mod response;
pub mod router;
mod scan;

pub use reader::RequestReader;
pub use request::{Method, Request};
pub use response::Response;
pub use router::{MethodSet, Params, RouteMatch, Router};

/// A request the layer refuses to process; the connection must be closed after answering it.
///
/// `status`/`code` are the wire values of the error response; `message` is a short,
/// non-sensitive explanation safe to echo to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct HttpError {
    pub status: u16,
    pub code: &'static str,
    pub message: &'static str,
}

impl HttpError {
    /// 400: malformed or ambiguous framing (every smuggling vector lands here).
    pub const fn bad_request(message: &'static str) -> Self {
        Self {
            status: 400,
            code: "bad_request",
            message,
        }
    }

    /// 413: the declared or decoded body exceeds the configured maximum.
    pub const fn payload_too_large(message: &'static str) -> Self {
        Self {
            status: 413,
            code: "payload_too_large",
            message,
        }
    }

    /// 431: the head is too large or has too many fields.
    pub const fn header_fields_too_large(message: &'static str) -> Self {
        Self {
            status: 431,
            code: "request_header_fields_too_large",
            message,
        }
    }

    /// 501: a method or transfer coding this server does not implement.
    pub const fn not_implemented(message: &'static str) -> Self {
        Self {
            status: 501,
            code: "not_implemented",
            message,
        }
    }

    /// 505: an HTTP version other than 1.0 or 1.1.
    pub const fn version_not_supported(message: &'static str) -> Self {
        Self {
            status: 505,
            code: "http_version_not_supported",
            message,
        }
    }

    /// The JSON error response for this error (never retryable: the same bytes fail again).
    pub fn response(&self) -> Response {
        Response::error(self.status, self.code, self.message, false)
    }
}
