//! The one error type endpoints return. Each variant has a stable `code` string that clients
//! match on; the mapping to an HTTP status lives here and nowhere else, including the status,
//! retryability and `details` of every domain refusal ([`DomainError`]).

use crate::authority::AuthorityError;
use crate::domain::error::{DomainError, Limit, Outage};
use crate::domain::views::ProfileOut;
use crate::http::{HttpError, Response};
use crate::storage::StorageError;
use crate::uploads::ImageError;

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
    /// The server is shutting down: not ready for new work (`/readyz` while draining).
    #[error("the server is shutting down; another instance takes new requests")]
    Draining,
    /// A cluster node whose bus (NATS) is unreachable.
    #[error("the cluster bus is unreachable")]
    ClusterUnavailable,
    #[error("internal error")]
    Internal,
    /// A refusal of the HTTP layer or of an endpoint's own input checks (body parsing,
    /// headers, uploads), with its status and code.
    #[error("{message}")]
    Refused {
        status: u16,
        code: &'static str,
        message: String,
    },
    /// A refusal of the domain rules.
    #[error("{0}")]
    Domain(DomainError),
}

/// The HTTP status of a domain refusal.
fn domain_status(e: &DomainError) -> u16 {
    use DomainError::*;
    match e {
        NotFound(_) => 404,
        IdentityRequired(_) | ChallengeInvalid | SignatureMismatch | NoSuchSession
        | InvalidToken => 401,
        DeviceRevoked
        | BindingRequired
        | NotAMember
        | Forbidden(_)
        | ServerCreationDisabled
        | InvalidClaimToken
        | ClaimTokenExpired
        | AvatarAssetForbidden
        | Banned
        | ChannelLocked
        | ReadOnlyChannel
        | TimedOut
        | TicketReplayed
        | JoinDenied(_)
        | InviteRequired => 403,
        InviteExpired => 410,
        ProposalOpen
        | QuorumUnreachable { .. }
        | AlreadyVoted
        | CaseClosed
        | ProposalClosed
        | LimitReached(Limit::OpenReportsPerUser) => 409,
        KeyMismatch | CategoryNotEmpty | ProfileConflict { .. } | PrivacyConflict { .. } => 409,
        InvalidText { .. }
        | InvalidDisplayName(_)
        | InvalidDescription(_)
        | InvalidName(_)
        | InvalidBannerPreset
        | InvalidAvatarPresetId
        | AvatarAssetRequired
        | InvalidLayout(_)
        | GroupRequired
        | GroupKindMismatch { .. }
        | EncryptedVoice
        | OwnershipByClaim
        | NotATextChannel
        | NotAVoiceChannel
        | PlaintextNotAllowed
        | EnvelopeNotAllowed
        | EmptyMessage
        | TooManyAttachments
        | TooManyProfiles
        | TooManyReadAcks
        | InvalidInviteExpiry
        | InvalidInviteUses
        | DuplicateChannel
        | InvalidAction(_)
        | InvalidReason
        | InvalidTarget
        | InvalidPolicy => 400,
        MessageTooLarge { .. } | UploadsTooLarge { .. } => 413,
        // What a user may do is 403, what a server holds 409, the size of one request 413.
        LimitReached(Limit::ServersPerUser) => 403,
        LimitReached(
            Limit::ChannelsPerServer | Limit::CategoriesPerServer | Limit::InvitesPerServer,
        ) => 409,
        LimitReached(Limit::LayoutGroups | Limit::LayoutChannelIds) => 413,
        RateLimited { .. } | SignInsThrottled | ReportsThrottled { .. } => 429,
        Unavailable(
            Outage::Storage | Outage::ShuttingDown | Outage::CatchingUp | Outage::StorageOverloaded,
        ) => 503,
        WriteFailed => 500,
        Keys(k) => k.status(),
    }
}

/// The `details` object (encoded JSON) of a domain refusal, for the refusals that carry one.
fn domain_details(e: &DomainError) -> Option<String> {
    match e {
        DomainError::Keys(k) => k.details(),
        DomainError::InvalidText { field, .. } => Some(format!("{{\"field\":\"{field}\"}}")),
        DomainError::LimitReached(limit) => Some(format!(
            "{{\"limit\":\"{}\",\"max\":{}}}",
            limit.name(),
            limit.max()
        )),
        DomainError::PrivacyConflict { current } => Some(format!(
            "{{\"privacy\":{}}}",
            crate::domain::community::encode(&**current)
        )),
        DomainError::QuorumUnreachable { eligible, quorum } => {
            Some(format!("{{\"eligible\":{eligible},\"quorum\":{quorum}}}"))
        }
        DomainError::RateLimited { retry_after_ms, .. }
        | DomainError::ReportsThrottled { retry_after_ms } => {
            Some(format!("{{\"retry_after_ms\":{retry_after_ms}}}"))
        }
        DomainError::ProfileConflict { current } => {
            Some(crate::domain::community::encode(&ProfileOut {
                profile: (**current).clone(),
            }))
        }
        _ => None,
    }
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
            ApiError::StorageUnavailable
            | ApiError::Overloaded
            | ApiError::Draining
            | ApiError::ClusterUnavailable => 503,
            ApiError::Internal => 500,
            ApiError::Refused { status, .. } => *status,
            ApiError::Domain(e) => domain_status(e),
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
            ApiError::Draining => "draining",
            ApiError::ClusterUnavailable => "cluster_unavailable",
            ApiError::Internal => "internal",
            ApiError::Refused { code, .. } => code,
            ApiError::Domain(e) => e.code(),
        }
    }

    /// Whether the same request may succeed later without change.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            ApiError::StorageUnavailable
                | ApiError::Overloaded
                | ApiError::Draining
                | ApiError::ClusterUnavailable
                | ApiError::Domain(
                    DomainError::RateLimited { .. }
                        | DomainError::SignInsThrottled
                        | DomainError::ReportsThrottled { .. }
                        | DomainError::Unavailable(_)
                )
        ) || matches!(self, ApiError::Domain(DomainError::Keys(k)) if k.retryable())
    }

    /// The `details` object of the error body (encoded JSON), when the error has one.
    pub fn details(&self) -> Option<String> {
        match self {
            ApiError::Domain(e) => domain_details(e),
            _ => None,
        }
    }

    /// 400 with a specific code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Refused {
            status: 400,
            code,
            message: message.into(),
        }
    }

    /// 401 `unauthorized`: no identity, or an identity that did not check out.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::Refused {
            status: 401,
            code: "unauthorized",
            message: message.into(),
        }
    }

    pub fn into_response(self) -> Response {
        let details = self.details();
        let retryable = self.retryable();
        let response = Response::error_with_details(
            self.status(),
            self.code(),
            &self.to_string(),
            retryable,
            details.as_deref(),
        );
        match self {
            ApiError::MethodNotAllowed { allow } => response.header("Allow", allow),
            ApiError::StorageUnavailable => response.header("Retry-After", "1"),
            ApiError::Overloaded => response.header(
                "Retry-After",
                crate::http::limits::BUSY_RETRY_AFTER_SECS.to_string(),
            ),
            ApiError::Domain(_) if retryable => response.header("Retry-After", "1"),
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
        ApiError::Domain(e)
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
        ApiError::Refused {
            status: e.status,
            code: e.code,
            message: e.message.to_string(),
        }
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> Self {
        let status = match e {
            ImageError::TooLarge { .. }
            | ImageError::DimensionsTooLarge { .. }
            | ImageError::TooManyPixels { .. } => 413,
            ImageError::UnsupportedType => 415,
            ImageError::Corrupt => 400,
        };
        ApiError::Refused {
            status,
            code: e.code(),
            message: e.to_string(),
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
        let e = ApiError::from(DomainError::RateLimited {
            per_minute: 60,
            retry_after_ms: 500,
        });
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
            "{\"code\":\"rate_limited\",\"message\":\"more than 60 writes per minute; retry shortly\",\"retryable\":true,\"details\":{\"retry_after_ms\":500}}"
        );
    }

    #[test]
    fn each_refusal_has_its_status_and_retry_rule() {
        use crate::domain::error::{JoinDenial, Needs, What};
        let cases: Vec<(ApiError, u16, &str, bool)> = vec![
            (
                DomainError::NotFound(What::Channel).into(),
                404,
                "channel_not_found",
                false,
            ),
            (
                DomainError::InvalidToken.into(),
                401,
                "invalid_token",
                false,
            ),
            (
                DomainError::Forbidden(Needs::Admin).into(),
                403,
                "forbidden",
                false,
            ),
            (
                DomainError::JoinDenied(JoinDenial::Banned).into(),
                403,
                "rtc_join_denied",
                false,
            ),
            (
                DomainError::KeyMismatch.into(),
                409,
                "identity_key_mismatch",
                false,
            ),
            (
                DomainError::GroupRequired.into(),
                400,
                "group_required",
                false,
            ),
            (
                DomainError::UploadsTooLarge { max_bytes: 4 }.into(),
                413,
                "payload_too_large",
                false,
            ),
            (
                DomainError::MessageTooLarge { max_bytes: 4 }.into(),
                413,
                "payload_too_large",
                false,
            ),
            (
                DomainError::LimitReached(Limit::ServersPerUser).into(),
                403,
                "server_limit_reached",
                false,
            ),
            (
                DomainError::LimitReached(Limit::CategoriesPerServer).into(),
                409,
                "category_limit_reached",
                false,
            ),
            (
                DomainError::LimitReached(Limit::LayoutGroups).into(),
                413,
                "layout_too_large",
                false,
            ),
            (
                DomainError::SignInsThrottled.into(),
                429,
                "rate_limited",
                true,
            ),
            (
                DomainError::Unavailable(Outage::CatchingUp).into(),
                503,
                "storage_unavailable",
                true,
            ),
            (
                DomainError::WriteFailed.into(),
                500,
                "storage_write_failed",
                false,
            ),
            (
                ImageError::UnsupportedType.into(),
                415,
                "unsupported_media_type",
                false,
            ),
            (ImageError::Corrupt.into(), 400, "invalid_image", false),
        ];
        for (e, status, code, retryable) in cases {
            assert_eq!(
                (e.status(), e.code(), e.retryable()),
                (status, code, retryable),
                "{e}"
            );
        }
    }
}
