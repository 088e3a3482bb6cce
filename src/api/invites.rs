//! Invites (wire contract Part D): create, list and revoke (owner or admin), redeem (anyone
//! signed in). The rules are the domain's (`crate::domain::community` invites); here requests
//! are parsed and answered.

use serde::Deserialize;

use super::identity::{query_param, require_actor};
use super::input::{json_body, path_id};
use super::servers::handler;
use super::{ApiError, json};
use crate::domain::community::commands;
use crate::domain::ids::ServerId;
use crate::domain::model::Millis;
use crate::domain::text::is_valid_id;
use crate::http::Response;

#[derive(Deserialize)]
struct InviteIn {
    expires_at: Option<String>,
    max_uses: Option<u32>,
}

/// An RFC 3339 time as milliseconds since the epoch.
fn parse_time(text: &str) -> Option<Millis> {
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Millis::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

handler!(
    /// `POST /v1/servers/{id}/invites {expires_at, max_uses}` → 201 with the code, shown once.
    create, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let body: InviteIn = json_body(ctx)?;
        let expires_at = body.expires_at.as_deref().filter(|t| t.len() <= 64).and_then(parse_time).ok_or_else(|| {
            ApiError::bad_request("invalid_expires_at", "expires_at must be an RFC 3339 time 1 minute to 30 days ahead")
        })?;
        let max_uses = body.max_uses.ok_or_else(|| {
            ApiError::bad_request("invalid_max_uses", "max_uses must be 1 to 1000")
        })?;
        let created = ctx.app.authority.command(commands::CreateInvite { actor: who, server_id, expires_at, max_uses }).await?;
        json(201, &created)
    }
);

handler!(
    /// `GET /v1/servers/{id}/invites?cursor=` (50 a page, newest first; never the codes).
    list, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let cursor = query_param(ctx, "cursor").filter(|c| !c.is_empty());
        if cursor.as_deref().is_some_and(|c| !is_valid_id(c)) {
            return Err(ApiError::bad_request("invalid_cursor", "cursor is not one this server handed out"));
        }
        let page = ctx.app.authority.read(|c, now| c.list_invites(&who, &server_id, cursor.as_deref(), now))?;
        json(200, &page)
    }
);

handler!(
    /// `DELETE /v1/servers/{id}/invites/{invite_id}` → 204.
    revoke, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let invite_id = ctx.params.get("invite_id").filter(|i| is_valid_id(i)).ok_or_else(|| {
            ApiError::bad_request("invalid_invite_id", "not an invite id")
        })?.into_owned();
        ctx.app.authority.command(commands::RevokeInvite { actor: who, server_id, invite_id }).await?;
        Ok(Response::no_content())
    }
);

handler!(
    /// `POST /v1/invites/{code}/redeem` → `{server_id, membership_state: "active"}`.
    redeem, ctx => {
        let who = require_actor(ctx).await?;
        let code = ctx.params.get("code").filter(|c| is_valid_id(c)).ok_or_else(|| {
            ApiError::bad_request("invalid_invite_code", "not an invite code")
        })?.into_owned();
        let redeemed = ctx.app.authority.command(commands::RedeemInvite { actor: who, code }).await?;
        json(200, &redeemed)
    }
);
