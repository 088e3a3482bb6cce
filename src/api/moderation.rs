//! Roles, moderation (policy, cases, immediate actions, proposals and votes) and the audit
//! (wire contract Part D). The rules are the domain's (`crate::domain::community` roles and
//! cases); the audit is read from storage, after the domain has said the reader is staff.

use serde::{Deserialize, Serialize};

use super::identity::{query_param, require_actor};
use super::input::{json_body, path_id};
use super::servers::handler;
use super::{ApiError, json};
use crate::domain::community::{ActionAsk, Report, commands};
use crate::domain::ids::ServerId;
use crate::domain::model::{ActionType, AuditEntry, Role, VotePolicy, VoteValue};
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

#[derive(Deserialize)]
struct PolicyIn {
    threshold: Option<u32>,
    quorum: Option<u32>,
    window_seconds: Option<i64>,
}

handler!(
    /// `GET /v1/servers/{id}/moderation/policy` (a member).
    policy, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let policy = ctx.app.authority.read(|c, _| c.get_vote_policy(&who, &server_id))?;
        json(200, &policy)
    }
);

handler!(
    /// `PUT /v1/servers/{id}/moderation/policy {threshold?, quorum?, window_seconds?}` (the
    /// owner); absent fields keep their value.
    put_policy, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let body: PolicyIn = json_body(ctx)?;
        let current = ctx.app.authority.read(|c, _| Ok(c.vote_policy(&server_id)))?;
        let policy = VotePolicy {
            threshold: body.threshold.unwrap_or(current.threshold),
            quorum: body.quorum.unwrap_or(current.quorum),
            window_seconds: body.window_seconds.unwrap_or(current.window_seconds),
        };
        let item = ctx.app.authority.command(commands::PutVotePolicy { actor: who, server_id, policy }).await?;
        json(200, &item)
    }
);

#[derive(Deserialize)]
struct ReportIn {
    target_uid: Option<String>,
    channel_id: Option<String>,
    message_id: Option<String>,
    reason_code: Option<String>,
    reason_text: Option<String>,
    evidence: Option<EvidenceIn>,
}

/// Plaintext evidence, only with its own consent (Part D).
#[derive(Deserialize)]
struct EvidenceIn {
    text: Option<String>,
    consent: Option<bool>,
}

/// Longest evidence text, in characters.
pub const MAX_EVIDENCE_CHARS: usize = 4000;

/// The report's evidence, checked and sealed here (the key never leaves the API layer, and
/// the text is never logged).
fn sealed_evidence(
    ctx: &super::RequestCtx<'_>,
    evidence: Option<EvidenceIn>,
) -> Result<Option<String>, ApiError> {
    let Some(evidence) = evidence else {
        return Ok(None);
    };
    let Some(text) = evidence.text.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if evidence.consent != Some(true) {
        return Err(ApiError::bad_request(
            "evidence_consent_required",
            "evidence is disclosed only with evidence.consent: true",
        ));
    }
    if text.chars().count() > MAX_EVIDENCE_CHARS {
        return Err(ApiError::bad_request(
            "invalid_evidence",
            "evidence text is at most 4000 characters",
        ));
    }
    crate::domain::limits::text_field("evidence.text", &text).map_err(ApiError::from)?;
    let mut nonce = [0u8; crate::auth::evidence_key::NONCE_BYTES];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    Ok(Some(ctx.app.evidence_key.seal(nonce, &text)))
}

/// An optional id field: absent or empty is none; anything else must be an id.
fn optional_id(value: Option<String>, field: &'static str) -> Result<Option<String>, ApiError> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) if is_valid_id(&v) => Ok(Some(v)),
        Some(_) => Err(ApiError::bad_request(
            field,
            "not an id this server hands out",
        )),
    }
}

handler!(
    /// `POST /v1/servers/{id}/moderation/cases {target_uid, channel_id?, message_id?,
    /// reason_code, reason_text?}` → 201 case.
    report, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let body: ReportIn = json_body(ctx)?;
        let target_uid = body.target_uid.filter(|u| is_valid_id(u)).ok_or_else(|| {
            ApiError::bad_request("invalid_target", "target_uid must be the uid of a member")
        })?;
        let report = Report {
            target_uid,
            channel_id: optional_id(body.channel_id, "invalid_channel_id")?,
            message_id: optional_id(body.message_id, "invalid_message_id")?,
            reason_code: body.reason_code.unwrap_or_default(),
            reason_text: body.reason_text,
            evidence: sealed_evidence(ctx, body.evidence)?,
        };
        let case = ctx.app.authority.command(commands::FileReport { actor: who, server_id, report }).await?;
        json(201, &case)
    }
);

handler!(
    /// `GET /v1/servers/{id}/moderation/cases?cursor=`: what the caller may see, newest first.
    cases, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let cursor = optional_id(query_param(ctx, "cursor"), "invalid_cursor")?;
        let page = ctx.app.authority.read(|c, now| c.list_cases(&who, &server_id, cursor.as_deref(), now))?;
        json(200, &page)
    }
);

/// The `{case_id}` of the path.
fn case_id(ctx: &super::RequestCtx<'_>) -> Result<String, ApiError> {
    ctx.params
        .get("case_id")
        .filter(|c| is_valid_id(c))
        .map(|c| c.into_owned())
        .ok_or_else(|| ApiError::bad_request("invalid_case_id", "not a case id"))
}

handler!(
    /// `GET /v1/servers/{id}/moderation/cases/{case_id}`: the case, its actions and proposals.
    case, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let case_id = case_id(ctx)?;
        let (mut detail, sealed) = ctx.app.authority.read(|c, now| {
            let detail = c.get_case(&who, &server_id, &case_id, now)?;
            Ok((detail, c.case_evidence(&who, &server_id, &case_id).map(str::to_owned)))
        })?;
        detail.evidence = sealed
            .and_then(|s| ctx.app.evidence_key.open(&s))
            .map(|text| crate::domain::views::EvidenceText { text });
        json(200, &detail)
    }
);

#[derive(Deserialize)]
struct ActionIn {
    action_type: Option<String>,
    duration_seconds: Option<i64>,
    channel_id: Option<String>,
    idempotency_key: Option<String>,
}

fn action_ask(ctx: &super::RequestCtx<'_>) -> Result<ActionAsk, ApiError> {
    let body: ActionIn = json_body(ctx)?;
    let action_type = body.action_type.as_deref().and_then(ActionType::parse).ok_or_else(|| {
        ApiError::bad_request("invalid_action", "action_type must be kick, timeout_short, channel_lock, ban, timeout_long or role_remove")
    })?;
    let header = ctx
        .request
        .header("idempotency-key")
        .map(|k| String::from_utf8_lossy(k).trim().to_owned());
    let idempotency_key = match header.or(body.idempotency_key).filter(|k| !k.is_empty()) {
        None => None,
        Some(k) if k.len() <= 128 && k.bytes().all(|b| b.is_ascii_graphic()) => Some(k),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_idempotency_key",
                "an idempotency key is 1 to 128 visible ASCII characters",
            ));
        }
    };
    Ok(ActionAsk {
        action_type,
        duration_seconds: body.duration_seconds,
        channel_id: optional_id(body.channel_id, "invalid_channel_id")?,
        idempotency_key,
    })
}

handler!(
    /// `POST …/cases/{case_id}/actions/immediate {action_type, duration_seconds?, channel_id?}`
    /// → 201 action.
    act_now, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let case_id = case_id(ctx)?;
        let ask = action_ask(ctx)?;
        let action = ctx.app.authority.command(commands::ActNow { actor: who, server_id, case_id, ask }).await?;
        json(201, &action)
    }
);

handler!(
    /// `POST …/cases/{case_id}/actions/propose {action_type, duration_seconds?}` (with
    /// `Idempotency-Key`) → 201 proposal.
    propose, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let case_id = case_id(ctx)?;
        let ask = action_ask(ctx)?;
        let proposal = ctx.app.authority.command(commands::Propose { actor: who, server_id, case_id, ask }).await?;
        json(201, &proposal)
    }
);

#[derive(Deserialize)]
struct VoteIn {
    value: Option<String>,
}

handler!(
    /// `POST …/cases/{case_id}/votes {value: yes|no|abstain}` → the proposal after the vote.
    vote, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let case_id = case_id(ctx)?;
        let body: VoteIn = json_body(ctx)?;
        let value = body.value.as_deref().and_then(VoteValue::parse).ok_or_else(|| {
            ApiError::bad_request("invalid_vote", "value must be yes, no or abstain")
        })?;
        let proposal = ctx.app.authority.command(commands::CastVote { actor: who, server_id, case_id, value }).await?;
        json(200, &proposal)
    }
);

#[derive(Deserialize)]
struct ChannelAccessIn {
    view_min_role: Option<String>,
    post_min_role: Option<String>,
    member_speak: Option<bool>,
}

/// A minimum role of the body: absent or `null` is everyone.
fn min_role(value: Option<String>, field: &'static str) -> Result<Option<Role>, ApiError> {
    match value.as_deref() {
        None | Some("") | Some("member") => Ok(None),
        Some(text) => Role::parse(text).map(Some).ok_or_else(|| {
            ApiError::bad_request(
                field,
                "a minimum role is null (everyone), moderator, admin or owner",
            )
        }),
    }
}

handler!(
    /// `PUT /v1/servers/{id}/channels/{channel_id}/permissions {view_min_role, post_min_role,
    /// member_speak}` (an admin or the owner) → the layout as the caller sees it.
    set_channel_access, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let channel_id: crate::domain::ids::ChannelId = path_id(ctx, "channel_id")?;
        let body: ChannelAccessIn = json_body(ctx)?;
        let access = crate::domain::model::ChannelAccess {
            view_min_role: min_role(body.view_min_role, "invalid_view_min_role")?,
            post_min_role: min_role(body.post_min_role, "invalid_post_min_role")?,
            member_speak: body.member_speak.unwrap_or(true),
        };
        let set = commands::SetChannelAccess { actor: who, server_id, channel_id, access };
        let layout = ctx.app.authority.command(set).await?;
        json(200, &layout)
    }
);
