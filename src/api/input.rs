//! Reading what a request carries: JSON bodies into typed structs (unknown fields ignored,
//! wrong types or nesting past `json::MAX_JSON_DEPTH` a 400 naming the problem), and path ids
//! checked for shape.

use serde::de::DeserializeOwned;

use super::{ApiError, RequestCtx};
use crate::domain::ids::ParseId;

/// The body as `T`. An empty body parses as `{}` so all-optional requests may omit it.
pub fn json_body<T: DeserializeOwned>(ctx: &RequestCtx<'_>) -> Result<T, ApiError> {
    let body = ctx.request.body();
    let mut bytes = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".to_vec()
    } else {
        body.to_vec()
    };
    crate::json::from_slice(&mut bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body is not the expected JSON: {e}"),
        )
    })
}

/// A path parameter that must be an id of type `T` (the id rule, `domain::ids`); anything else is
/// 404, as no such thing can exist.
pub fn path_id<T: ParseId>(ctx: &RequestCtx<'_>, name: &str) -> Result<T, ApiError> {
    ctx.params
        .get(name)
        .and_then(|id| T::parse_id(&id))
        .ok_or(ApiError::NotFound)
}

/// Whether the request carries a multipart body.
pub fn is_multipart(ctx: &RequestCtx<'_>) -> bool {
    ctx.request
        .header("content-type")
        .is_some_and(|ct| ct.len() >= 19 && ct[..19].eq_ignore_ascii_case(b"multipart/form-data"))
}
