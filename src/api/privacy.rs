//! A member's privacy in one server (wire contract Part D): presence visibility and who may
//! mention it. The rules and their enforcement are the domain's
//! (`crate::domain::community` privacy); here requests are parsed and answered.

use serde::Deserialize;

use super::identity::require_actor;
use super::input::{json_body, path_id};
use super::profiles::if_match;
use super::servers::handler;
use super::{ApiError, json};
use crate::domain::community::{PrivacyChange, commands};
use crate::domain::ids::ServerId;
use crate::domain::model::{MentionPermission, PresenceVisibility};

#[derive(Deserialize)]
struct PrivacyIn {
    presence_visibility: Option<String>,
    mention_permission: Option<String>,
    /// The version read, when the client sends no `If-Match`.
    version: Option<i64>,
}

handler!(
    /// `GET /v1/servers/{id}/privacy/me`.
    get_me, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let privacy = ctx.app.authority.read(|c, _| c.get_privacy(&who, &server_id))?;
        json(200, &privacy)
    }
);

handler!(
    /// `PUT /v1/servers/{id}/privacy/me {presence_visibility?, mention_permission?, version?}`
    /// with `If-Match` (or `version`) naming the version read; stale → 409 `privacy_conflict`.
    put_me, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let body: PrivacyIn = json_body(ctx)?;
        let presence_visibility = body.presence_visibility.as_deref().map(|v| {
            PresenceVisibility::parse(v).ok_or_else(|| {
                ApiError::bad_request("invalid_presence_visibility", "presence_visibility must be visible or hidden")
            })
        }).transpose()?;
        let mention_permission = body.mention_permission.as_deref().map(|v| {
            MentionPermission::parse(v).ok_or_else(|| {
                ApiError::bad_request("invalid_mention_permission", "mention_permission must be all_members, staff_only or nobody")
            })
        }).transpose()?;
        let change = PrivacyChange {
            presence_visibility,
            mention_permission,
            if_match: if_match(ctx)?.or(body.version),
        };
        let privacy = ctx.app.authority.command(commands::PutPrivacy { actor: who, server_id, change }).await?;
        json(200, &privacy)
    }
);
