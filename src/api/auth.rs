//! Sessions (wire contract B.1): challenge, signed answer, bearer token; check and revoke.

use serde::Deserialize;

use super::identity::bearer_token;
use super::input::json_body;
use super::servers::handler;
use super::{ApiError, RequestCtx, json};
use crate::domain::error::DomainError;
use crate::domain::text::is_valid_id;
use crate::domain::views::{SessionInfo, rfc3339};

#[derive(Deserialize)]
struct ChallengeIn {
    device_id: Option<String>,
    public_key: Option<String>,
    user_uid: Option<String>,
}

fn ids(
    device_id: Option<String>,
    public_key: Option<String>,
    user_uid: Option<String>,
) -> Result<(String, String, Option<String>), ApiError> {
    let device_id = device_id.filter(|d| is_valid_id(d)).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_device_id",
            "device_id must be 1 to 64 characters of A-Z a-z 0-9 _ -",
        )
    })?;
    let public_key = public_key
        .filter(|k| !k.is_empty() && k.len() <= 128)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_public_key",
                "public_key (Ed25519, base64url) is required",
            )
        })?;
    let user_uid = user_uid.filter(|u| !u.is_empty());
    if user_uid.as_deref().is_some_and(|u| !is_valid_id(u)) {
        return Err(ApiError::bad_request(
            "invalid_user_uid",
            "user_uid must be 1 to 64 characters of A-Z a-z 0-9 _ -",
        ));
    }
    Ok((device_id, public_key, user_uid))
}

handler!(
    /// `POST /v1/auth/challenge`.
    challenge, ctx => {
        let body: ChallengeIn = json_body(ctx)?;
        let (device_id, public_key, user_uid) = ids(body.device_id, body.public_key, body.user_uid)?;
        let challenge = ctx.app.authority.submit_mut(move |c, now| c.issue_challenge(&device_id, &public_key, user_uid.as_deref(), now)).await?;
        json(200, &challenge)
    }
);

#[derive(Deserialize)]
struct SessionIn {
    device_id: Option<String>,
    public_key: Option<String>,
    user_uid: Option<String>,
    challenge: Option<String>,
    signature: Option<String>,
}

handler!(
    /// `POST /v1/auth/session`.
    open, ctx => {
        let body: SessionIn = json_body(ctx)?;
        let (device_id, public_key, user_uid) = ids(body.device_id, body.public_key, body.user_uid)?;
        let challenge = body.challenge.filter(|c| !c.is_empty() && c.len() <= 128)
            .ok_or_else(|| ApiError::bad_request("invalid_challenge", "challenge is required"))?;
        let signature = body.signature.filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(|| ApiError::bad_request("invalid_signature", "signature is required"))?;
        let session = ctx.app.authority.command(move |c, now| {
            c.open_session(&device_id, &public_key, user_uid.as_deref(), &challenge, &signature, now)
        }).await?;
        json(201, &session)
    }
);

fn token_of(ctx: &RequestCtx<'_>) -> Result<String, ApiError> {
    bearer_token(ctx)?.ok_or_else(|| {
        ApiError::Coded(DomainError::unauthorized(
            "Authorization: Bearer <token> is required",
        ))
    })
}

handler!(
    /// `GET /v1/auth/session`.
    check, ctx => {
        let token = token_of(ctx)?;
        let found = ctx.app.authority.read(move |c, now| Ok(c.authenticate(&token, now))).await?;
        let (actor, expires_at) = found.ok_or_else(|| ApiError::Coded(DomainError { code: "invalid_token", ..DomainError::unauthorized("the session token is unknown, expired or revoked") }))?;
        json(200, &SessionInfo { user_uid: actor.user_uid, device_id: actor.device_id, expires_at: rfc3339(expires_at) })
    }
);

#[derive(serde::Serialize)]
struct Revoked {
    revoked: bool,
}

handler!(
    /// `DELETE /v1/auth/session`.
    revoke, ctx => {
        let token = token_of(ctx)?;
        ctx.app.authority.command(move |c, now| c.revoke_session(&token, now)).await?;
        json(200, &Revoked { revoked: true })
    }
);
