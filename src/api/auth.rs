//! Sessions: challenge, signed answer, bearer token — through B.1's `/v1/auth/...` and A.10's
//! verified sessions of a server (`/v1/servers/{id}/sessions...`), one session system with two
//! entry points; check and revoke; and the approval of identity bindings
//! (`crate::domain::identity`).

use crate::domain::ids::ServerId;
use serde::Deserialize;

use ed25519_dalek::VerifyingKey;

use super::identity::{bearer_token, require_actor};
use super::input::{json_body, path_id};
use super::servers::handler;
use super::{ApiError, RequestCtx, json};
use crate::auth::challenge::ChallengeFor;
use crate::auth::session_challenge::{SessionFor, session_payload};
use crate::authority::now_millis;
use crate::domain::community::{CHALLENGE_TTL_MS, SignIn, commands};
use crate::domain::error::DomainError;
use crate::domain::text::is_valid_id;
use crate::domain::views::{Challenge, SessionInfo, rfc3339};

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

/// The key as sent, decoded: 400 when it is not an Ed25519 public key.
fn decode_key(public_key: &str) -> Result<VerifyingKey, ApiError> {
    crate::auth::decode_public_key(public_key)
        .map_err(|e| ApiError::bad_request(e.code(), e.to_string()))
}

handler!(
    /// `POST /v1/auth/challenge`. Stateless: the challenge is signed by this process and
    /// nothing is kept for it, so a flood of these costs memory nowhere and cannot crowd out
    /// anyone's sign-in. The authority is not asked.
    challenge, ctx => {
        let body: ChallengeIn = json_body(ctx)?;
        let (device_id, public_key, user_uid) = ids(body.device_id, body.public_key, body.user_uid)?;
        let key = decode_key(&public_key)?;
        let expires_at = now_millis() + CHALLENGE_TTL_MS;
        let what = ChallengeFor { device_id: &device_id, key: &key, user_uid: user_uid.as_deref() };
        let challenge = ctx.app.challenge_key.issue(&what, expires_at);
        json(200, &Challenge { challenge, expires_at: rfc3339(expires_at) })
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
    /// `POST /v1/auth/session`. The challenge and the signature are checked here, on the
    /// shard; the authority spends the challenge and decides the uid.
    open, ctx => {
        let body: SessionIn = json_body(ctx)?;
        let (device_id, public_key, user_uid) = ids(body.device_id, body.public_key, body.user_uid)?;
        let challenge = body.challenge.filter(|c| !c.is_empty() && c.len() <= 128)
            .ok_or_else(|| ApiError::bad_request("invalid_challenge", "challenge is required"))?;
        let signature = body.signature.filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(|| ApiError::bad_request("invalid_signature", "signature is required"))?;
        let key = decode_key(&public_key)?;
        let what = ChallengeFor { device_id: &device_id, key: &key, user_uid: user_uid.as_deref() };
        let verified = ctx.app.challenge_key.verify(&challenge, &what, now_millis())
            .map_err(|e| ApiError::unauthorized(e.to_string()))?;
        let signature_valid = crate::auth::verify_signature(&key, ctx.app.config.public_base_url.trim_end_matches('/'), &challenge, &signature).is_ok();
        let sign_in = SignIn {
            device_id,
            public_key: crate::auth::encode_public_key(&key),
            derived_uid: crate::auth::derive_user_uid(&key),
            requested_uid: user_uid,
            challenge: verified,
            signature_valid,
        };
        let session = ctx.app.authority.command(commands::OpenSession { sign_in }).await?;
        json(201, &session)
    }
);

#[derive(serde::Serialize)]
struct ServerChallenge {
    challenge_id: String,
    server_id: ServerId,
    user_uid: String,
    payload: String,
    expires_at: String,
}

handler!(
    /// `POST /v1/servers/{server_id}/sessions/challenge {public_key, device_id, user_uid?}`
    /// (wire contract A.10). The uid is decided now by the same rule as B.1 (so a refused
    /// sign-in hears 403/409 before signing anything) and again when the session opens.
    /// Stateless like B.1's challenges: the id carries what it binds under an HMAC.
    server_challenge, ctx => {
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let body: ChallengeIn = json_body(ctx)?;
        let (device_id, public_key, user_uid) = ids(body.device_id, body.public_key, body.user_uid)?;
        let key = decode_key(&public_key)?;
        let derived = crate::auth::derive_user_uid(&key);
        let encoded = crate::auth::encode_public_key(&key);
        let uid = ctx.app.authority.read(|c, _| {
            c.server_session_uid(&server_id, &device_id, &derived, user_uid.as_deref(), &encoded)
        })?;
        let expires_at = now_millis() + CHALLENGE_TTL_MS;
        let what = SessionFor { server_id: &server_id, user_uid: &uid, device_id: &device_id, key: &key };
        let nonce = crate::auth::challenge::random_nonce();
        let challenge_id = ctx.app.challenge_key.issue_session(&what, expires_at, nonce)
            .ok_or_else(|| ApiError::bad_request("invalid_user_uid", "user_uid is too long"))?;
        let expires_text = rfc3339(expires_at);
        let nonce_text = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, nonce);
        let payload = session_payload(&ctx.app.config.public_base_url, &what, &nonce_text, &expires_text);
        json(201, &ServerChallenge { challenge_id, server_id: server_id.clone(), user_uid: uid, payload, expires_at: expires_text })
    }
);

#[derive(Deserialize)]
struct ServerSessionIn {
    challenge_id: Option<String>,
    signature: Option<String>,
}

#[derive(serde::Serialize)]
struct ServerSession {
    server_id: ServerId,
    user_uid: String,
    device_id: String,
    token: String,
    expires_at: String,
}

handler!(
    /// `POST /v1/servers/{server_id}/sessions {challenge_id, signature}` (wire contract A.10):
    /// the signature is over the payload the challenge named, rebuilt here from what the id
    /// carries; the authority spends the challenge (single use, shared with B.1) and opens
    /// the same kind of session as `/v1/auth/session`.
    server_session, ctx => {
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let body: ServerSessionIn = json_body(ctx)?;
        let challenge_id = body.challenge_id.filter(|c| !c.is_empty())
            .ok_or_else(|| ApiError::bad_request("invalid_challenge", "challenge_id is required"))?;
        let signature = body.signature.filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(|| ApiError::bad_request("invalid_signature", "signature is required"))?;
        let opened = ctx.app.challenge_key.open_session_challenge(&challenge_id, &server_id, now_millis())
            .map_err(|e| ApiError::unauthorized(e.to_string()))?;
        let what = SessionFor { server_id: &server_id, user_uid: &opened.user_uid, device_id: &opened.device_id, key: &opened.key };
        let payload = session_payload(&ctx.app.config.public_base_url, &what, &opened.nonce_text(), &rfc3339(opened.verified.expires_at));
        let signature_valid = crate::auth::verify_signature_over(&opened.key, payload.as_bytes(), &signature).is_ok();
        let sign_in = SignIn {
            public_key: crate::auth::encode_public_key(&opened.key),
            derived_uid: crate::auth::derive_user_uid(&opened.key),
            requested_uid: Some(opened.user_uid),
            device_id: opened.device_id,
            challenge: opened.verified,
            signature_valid,
        };
        let session = ctx.app.authority.command(commands::OpenServerSession { server_id: server_id.clone(), sign_in }).await?;
        json(201, &ServerSession {
            server_id,
            user_uid: session.user_uid,
            device_id: session.device_id,
            token: session.token,
            expires_at: session.expires_at,
        })
    }
);

#[derive(Deserialize)]
struct BindingIn {
    user_uid: Option<String>,
    public_key: Option<String>,
}

handler!(
    /// `POST /v1/servers/{id}/identity-bindings` (owner or admin): lets `public_key` sign in as
    /// `user_uid`, a uid that was a member of the server. 201 with the stored binding.
    approve_binding, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let body: BindingIn = json_body(ctx)?;
        let user_uid = body.user_uid.filter(|u| is_valid_id(u)).ok_or_else(|| {
            ApiError::bad_request("invalid_user_uid", "user_uid must be 1 to 64 characters of A-Z a-z 0-9 _ -")
        })?;
        let public_key = body.public_key.filter(|k| !k.is_empty()).ok_or_else(|| {
            ApiError::bad_request("invalid_public_key", "public_key (Ed25519, base64url) is required")
        })?;
        let public_key = crate::auth::encode_public_key(&decode_key(&public_key)?);
        let approved = ctx.app.authority.command(commands::ApproveBinding { actor: who, server_id, user_uid: user_uid.into(), public_key }).await?;
        json(201, &approved)
    }
);

fn token_of(ctx: &RequestCtx<'_>) -> Result<String, ApiError> {
    bearer_token(ctx)?
        .ok_or_else(|| ApiError::unauthorized("Authorization: Bearer <token> is required"))
}

handler!(
    /// `GET /v1/auth/session`.
    check, ctx => {
        let token = token_of(ctx)?;
        let found = ctx.app.authority.read(|c, now| Ok(c.authenticate(&token, now)))?;
        let (actor, expires_at) = found.ok_or(ApiError::Domain(DomainError::InvalidToken))?;
        json(200, &SessionInfo { user_uid: actor.user_uid.into(), device_id: actor.device_id, expires_at: rfc3339(expires_at) })
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
        ctx.app.authority.command(commands::RevokeSession { token }).await?;
        json(200, &Revoked { revoked: true })
    }
);
