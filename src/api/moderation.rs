//! Roles and the moderation audit (wire contract Part D). The rules are the domain's
//! (`crate::domain::community` roles); the audit is read from storage, after the domain has
//! said the reader is staff of the server.

use serde::{Deserialize, Serialize};

use super::identity::{query_param, require_actor};
use super::input::{json_body, path_id};
use super::servers::handler;
use super::{ApiError, json};
use crate::domain::community::commands;
use crate::domain::ids::ServerId;
use crate::domain::model::{AuditEntry, Role};
use crate::domain::text::is_valid_id;
use crate::domain::views::rfc3339;

/// Audit rows in one page.
pub const AUDIT_PAGE: usize = 50;

#[derive(Deserialize)]
struct RoleIn {
    user_uid: Option<String>,
    role: Option<String>,
}

handler!(
    /// `GET /v1/servers/{id}/roles` (a member): `{server_id, members: [{user_uid, role}]}`.
    roles, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let roles = ctx.app.authority.read(|c, _| c.roles(&who, &server_id))?;
        json(200, &roles)
    }
);

handler!(
    /// `PUT /v1/servers/{id}/roles {user_uid, role}` → `{user_uid, role}`.
    set_role, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let body: RoleIn = json_body(ctx)?;
        let target_uid = body.user_uid.filter(|u| is_valid_id(u)).ok_or_else(|| {
            ApiError::bad_request("invalid_user_uid", "user_uid must be 1 to 64 characters of A-Z a-z 0-9 _ -")
        })?;
        let role = body.role.as_deref().and_then(Role::parse).ok_or_else(|| {
            ApiError::bad_request("invalid_role", "role must be admin, moderator or member")
        })?;
        let set = commands::SetRole { actor: who, server_id, target_uid: target_uid.into(), role };
        let item = ctx.app.authority.command(set).await?;
        json(200, &item)
    }
);

#[derive(Serialize)]
struct AuditItem {
    audit_id: String,
    server_id: String,
    case_id: Option<String>,
    actor_uid: String,
    event_type: String,
    payload: simd_json::OwnedValue,
    created_at: String,
}

#[derive(Serialize)]
struct AuditPage {
    items: Vec<AuditItem>,
    next_cursor: Option<String>,
}

fn audit_item(entry: AuditEntry) -> AuditItem {
    let mut payload = entry.payload.into_bytes();
    AuditItem {
        payload: crate::json::to_owned_value(&mut payload)
            .unwrap_or(simd_json::OwnedValue::Static(simd_json::StaticNode::Null)),
        audit_id: entry.audit_id,
        server_id: entry.server_id.to_string(),
        case_id: entry.case_id,
        actor_uid: entry.actor_uid.to_string(),
        event_type: entry.event_type,
        created_at: rfc3339(entry.created_at),
    }
}

handler!(
    /// `GET /v1/servers/{id}/moderation/audit?cursor=` (staff): newest first, [`AUDIT_PAGE`]
    /// a page; `next_cursor` is `null` on the last.
    audit, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let before = match query_param(ctx, "cursor").filter(|c| !c.is_empty()) {
            None => i64::MAX,
            Some(c) => c.strip_prefix('a').and_then(|n| n.parse::<i64>().ok()).filter(|n| *n > 0).ok_or_else(|| {
                ApiError::bad_request("invalid_cursor", "cursor is not one this server handed out")
            })?,
        };
        ctx.app.authority.read(|c, _| c.require_staff(&server_id, &who))?;
        let rows = ctx.app.storage.audit_page(&server_id, before, AUDIT_PAGE + 1).await?;
        let more = rows.len() > AUDIT_PAGE;
        let rows: Vec<AuditEntry> = rows.into_iter().take(AUDIT_PAGE).collect();
        let next_cursor = if more { rows.last().map(|r| format!("a{}", r.seq)) } else { None };
        let items = rows.into_iter().map(audit_item).collect();
        json(200, &AuditPage { items, next_cursor })
    }
);
