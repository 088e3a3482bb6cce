//! The one error type endpoints return. Each variant has a stable `code` string that clients
//! match on; the mapping to an HTTP status lives here and nowhere else.

use crate::http::Response;
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
    #[error("internal error")]
    Internal,
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
            ApiError::StorageUnavailable => 503,
            ApiError::Internal => 500,
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
            ApiError::Internal => "internal",
        }
    }

    /// Whether the same request may succeed later without change.
    pub fn retryable(&self) -> bool {
        matches!(self, ApiError::StorageUnavailable)
    }

    pub fn into_response(self) -> Response {
        let response = Response::error(
            self.status(),
            self.code(),
            &self.to_string(),
            self.retryable(),
        );
        match self {
            ApiError::MethodNotAllowed { allow } => response.header("Allow", allow),
            ApiError::StorageUnavailable => response.header("Retry-After", "1"),
            ApiError::UpgradeRequired => response.header("Upgrade", "websocket"),
            _ => response,
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Unavailable(_) => ApiError::StorageUnavailable,
            StorageError::NotFound => ApiError::NotFound,
            StorageError::Conflict(m) => ApiError::Conflict(m),
            StorageError::Internal(m) => {
                tracing::error!(error = %m, "storage error");
                ApiError::Internal
            }
        }
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
    fn internal_details_do_not_leak_into_the_message() {
        let e = ApiError::from(StorageError::Internal("password=hunter2".into()));
        assert_eq!(e.to_string(), "internal error");
        assert!(!e.retryable());
    }
}
