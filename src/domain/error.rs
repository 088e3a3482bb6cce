//! Why the domain refused a command. Each refusal carries its HTTP status and a stable `code`
//! clients match on; the API layer turns it into the JSON error body unchanged.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DomainError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// Extra JSON for the error's `details` (already encoded), e.g. the current profile on a
    /// `profile_conflict`.
    pub details: Option<String>,
    pub retryable: bool,
}

impl DomainError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> DomainError {
        DomainError {
            status,
            code,
            message: message.into(),
            details: None,
            retryable: false,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> DomainError {
        DomainError::new(400, code, message)
    }

    /// No identity, or an identity that did not check out.
    pub fn unauthorized(message: impl Into<String>) -> DomainError {
        DomainError::new(401, "unauthorized", message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> DomainError {
        DomainError::new(403, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> DomainError {
        DomainError::new(404, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> DomainError {
        DomainError::new(409, code, message)
    }

    pub fn too_large(message: impl Into<String>) -> DomainError {
        DomainError::new(413, "payload_too_large", message)
    }

    /// 429 `rate_limited`: the same request works a little later.
    pub fn rate_limited(message: impl Into<String>) -> DomainError {
        DomainError {
            retryable: true,
            ..DomainError::new(429, "rate_limited", message)
        }
    }

    /// The authority cannot answer now (storage trouble); the same request may work later.
    pub fn unavailable(message: impl Into<String>) -> DomainError {
        DomainError {
            retryable: true,
            ..DomainError::new(503, "storage_unavailable", message)
        }
    }

    pub fn with_details(mut self, details_json: String) -> DomainError {
        self.details = Some(details_json);
        self
    }

    pub fn server_not_found() -> DomainError {
        DomainError::not_found("server_not_found", "no such server")
    }

    pub fn channel_not_found() -> DomainError {
        DomainError::not_found("channel_not_found", "no such channel")
    }

    pub fn message_not_found() -> DomainError {
        DomainError::not_found("message_not_found", "no such message")
    }

    pub fn not_a_member() -> DomainError {
        DomainError::forbidden("not_a_member", "you are not a member of this server")
    }

    pub fn needs_admin() -> DomainError {
        DomainError::forbidden(
            "forbidden",
            "this needs the owner or an admin of the server",
        )
    }
}
