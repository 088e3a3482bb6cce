//! The one error type endpoints return. Each variant has a stable `code` string that clients
//! match on; the mapping to an HTTP status lives here and nowhere else.

use crate::authority::AuthorityError;
use crate::domain::error::DomainError;
use crate::http::{HttpError, Response};
use crate::storage::StorageError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("identity required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: String },
    #[error("{0}")]
    Conflict(String),
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("this endpoint speaks WebSocket only")]
    UpgradeRequired,
    #[error("storage unavailable")]
    StorageUnavailable,
    /// A queue between threads is full (authority or storage): the request was not taken.
    #[error("the server is overloaded; retry shortly")]
    Overloaded,
    #[error("internal error")]
    Internal,
    /// A refusal with its own status and code (domain rules, body parsing, uploads).
    #[error("{}", .0.message)]
    Coded(DomainError),
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::Conflict(_) => 409,
            ApiError::PayloadTooLarge => 413,
            ApiError::UpgradeRequired => 426,
            ApiError::StorageUnavailable | ApiError::Overloaded => 503,
            ApiError::Internal => 500,
            ApiError::Coded(e) => e.status,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UpgradeRequired => "upgrade_required",
            ApiError::StorageUnavailable => "storage_unavailable",
            ApiError::Overloaded => "overloaded",
            ApiError::Internal => "internal",
            ApiError::Coded(e) => e.code,
        }
    }

    /// Whether the same request may succeed later without change.
    pub fn retryable(&self) -> bool {
        match self {
            ApiError::StorageUnavailable | ApiError::Overloaded => true,
            ApiError::Coded(e) => e.retryable,
            _ => false,
        }
    }

    /// 400 with a specific code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Coded(DomainError::bad_request(code, message))
    }

    pub fn into_response(self) -> Response {
        let details = match &self {
            ApiError::Coded(e) => e.details.as_deref(),
            _ => None,
        };
        let response = Response::error_with_details(
            self.status(),
            self.code(),
            &self.to_string(),
            self.retryable(),
            details,
        );
        match self {
            ApiError::MethodNotAllowed { allow } => response.header("Allow", allow),
            ApiError::StorageUnavailable => response.header("Retry-After", "1"),
            ApiError::Overloaded => response.header(
                "Retry-After",
                crate::http::limits::BUSY_RETRY_AFTER_SECS.to_string(),
            ),
            ApiError::Coded(e) if e.retryable => response.header("Retry-After", "1"),
            ApiError::UpgradeRequired => response.header("Upgrade", "websocket"),
            _ => response,
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Unavailable(_) => ApiError::StorageUnavailable,
            StorageError::Overloaded => ApiError::Overloaded,
            StorageError::NotFound => ApiError::NotFound,
            StorageError::Conflict(m) => ApiError::Conflict(m),
            StorageError::Internal(m) => {
                tracing::error!(error = %m, "storage error");
                ApiError::Internal
            }
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        ApiError::Coded(e)
    }
}

impl From<AuthorityError> for ApiError {
    fn from(e: AuthorityError) -> Self {
        match e {
            AuthorityError::Domain(e) => e.into(),
            AuthorityError::Overloaded => ApiError::Overloaded,
        }
    }
}

impl From<HttpError> for ApiError {
    fn from(e: HttpError) -> Self {
        ApiError::Coded(DomainError {
            status: e.status,
            code: e.code,
            message: e.message.to_string(),
            details: None,
            retryable: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_outage_is_a_retryable_503() {
        let e = ApiError::from(StorageError::Unavailable("gone".into()));
        assert_eq!(
            (e.status(), e.code(), e.retryable()),
            (503, "storage_unavailable", true)
        );
    }

    #[test]
    fn a_full_queue_is_a_retryable_503_overloaded_with_retry_after() {
        for e in [
            ApiError::from(AuthorityError::Overloaded),
            ApiError::from(StorageError::Overloaded),
        ] {
            assert_eq!(
                (e.status(), e.code(), e.retryable()),
                (503, "overloaded", true)
            );
            let response = e.into_response();
            assert!(response.headers().any(|(n, _)| n == "Retry-After"));
        }
    }

    #[test]
    fn internal_details_do_not_leak_into_the_message() {
        let e = ApiError::from(StorageError::Internal("password=hunter2".into()));
        assert_eq!(e.to_string(), "internal error");
        assert!(!e.retryable());
    }

    #[test]
    fn errors_with_details_keep_their_headers() {
        let e = ApiError::from(
            DomainError::rate_limited("slow down").with_details("{\"retry_after_ms\":500}".into()),
        );
        let response = e.into_response();
        assert_eq!(
            response
                .headers()
                .find(|(n, _)| *n == "Retry-After")
                .map(|(_, v)| v),
            Some("1")
        );
        let body = std::str::from_utf8(response.body()).unwrap();
        assert_eq!(
            body,
            "{\"code\":\"rate_limited\",\"message\":\"slow down\",\"retryable\":true,\"details\":{\"retry_after_ms\":500}}"
        );
    }
}
