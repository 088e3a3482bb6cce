//! Servers, their settings, membership and members, and the channel layout (wire contract A.3,
//! A.4). Handlers only parse and answer; the authority's domain rules decide.

use crate::domain::ids::ServerId;
use serde::Deserialize;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::identity::{actor, query_param, require_actor};
use super::input::{json_body, path_id};
use super::{ApiError, json};
use crate::domain::community::{Admission, DirectoryKey, commands};
use crate::domain::model::{ChannelKind, Encryption, HistoryVisibility, JoinPolicy};
use crate::domain::text::is_valid_id;

macro_rules! handler {
    ($(#[$m:meta])* $name:ident, $ctx:ident => $body:block) => {
        $(#[$m])*
        pub fn $name<'a>($ctx: &'a $crate::api::RequestCtx<'a>) -> $crate::api::HandlerFuture<'a> {
            Box::pin(async move $body)
        }
    };
}
pub(crate) use handler;

fn kind(text: &str) -> Result<ChannelKind, ApiError> {
    ChannelKind::parse(&text.to_ascii_lowercase())
        .ok_or_else(|| ApiError::bad_request("invalid_kind", "kind/type must be text or voice"))
}

#[derive(Deserialize)]
struct ServerIn {
    display_name: Option<String>,
    description: Option<String>,
    banner_preset: Option<String>,
    /// Settings only (Part D): `open` or `invite`.
    join_policy: Option<String>,
}

#[derive(serde::Serialize)]
struct ServerList {
    servers: Vec<crate::domain::views::DirectoryItem>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    next_cursor: Option<String>,
}

/// Directory entries per page when the client gives no `limit` (the desktop client gives none
/// and finds the default server first).
pub const DEFAULT_DIRECTORY_PAGE: usize = 100;
/// Largest `limit` of `GET /v1/servers`; a larger one is cut to it.
pub const MAX_DIRECTORY_PAGE: usize = 200;

/// The opaque `next_cursor` of a directory page: base64url of `rank:created_at:server_id`.
fn encode_directory_cursor(key: &DirectoryKey) -> String {
    let raw = format!(
        "{}:{}:{}",
        u8::from(key.after_default),
        key.created_at,
        key.server_id
    );
    URL_SAFE_NO_PAD.encode(raw)
}

fn decode_directory_cursor(cursor: &str) -> Option<DirectoryKey> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let mut parts = raw.splitn(3, ':');
    let after_default = match parts.next()? {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    let created_at = parts.next()?.parse().ok()?;
    let server_id = parts.next()?.to_owned();
    is_valid_id(&server_id).then_some(DirectoryKey {
        after_default,
        created_at,
        server_id,
    })
}

fn directory_query(
    ctx: &crate::api::RequestCtx<'_>,
) -> Result<(usize, Option<DirectoryKey>), ApiError> {
    let limit = match query_param(ctx, "limit") {
        None => DEFAULT_DIRECTORY_PAGE,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .map(|n| n.min(MAX_DIRECTORY_PAGE))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_limit",
                    format!("limit must be an integer from 1 to {MAX_DIRECTORY_PAGE}"),
                )
            })?,
    };
    let cursor = match query_param(ctx, "cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(raw) => Some(decode_directory_cursor(&raw).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_cursor",
                "cursor is not a cursor this server gave out",
            )
        })?),
    };
    Ok((limit, cursor))
}

handler!(
    /// `GET /v1/servers?limit=&cursor=`: one page of the directory.
    list, ctx => {
        let who = actor(ctx).await?;
        let (limit, cursor) = directory_query(ctx)?;
        let (servers, next) = ctx.app.authority.read(|c, _| Ok(c.directory_page(who.as_ref(), cursor.as_ref(), limit)))?;
        json(200, &ServerList { servers, next_cursor: next.as_ref().map(encode_directory_cursor) })
    }
);

handler!(
    /// `POST /v1/servers`.
    create, ctx => {
        let who = require_actor(ctx).await?;
        let body: ServerIn = json_body(ctx)?;
        let name = body.display_name.ok_or_else(|| ApiError::bad_request("invalid_display_name", "display_name is required"))?;
        let created = ctx.app.authority.command(commands::CreateServer {
            actor: who,
            display_name: name,
            description: body.description.unwrap_or_default(),
            banner_preset: body.banner_preset.unwrap_or_default(),
        }).await?;
        json(201, &created)
    }
);

#[derive(Deserialize)]
struct ClaimIn {
    claim_token: Option<String>,
}

handler!(
    /// `POST /v1/servers/{id}/ownership:claim`.
    claim, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let body: ClaimIn = json_body(ctx)?;
        let token = body.claim_token.filter(|t| !t.is_empty()).ok_or_else(|| ApiError::bad_request("invalid_claim_token", "claim_token is required"))?;
        let claimed = ctx.app.authority.command(commands::ClaimOwnership { actor: who, server_id, token }).await?;
        json(200, &claimed)
    }
);

handler!(
    /// `GET /v1/servers/{id}/settings`.
    get_settings, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let settings = ctx.app.authority.command(commands::ServerSettings { actor: who, server_id }).await?;
        json(200, &settings)
    }
);

handler!(
    /// `PUT /v1/servers/{id}/settings`.
    put_settings, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let body: ServerIn = json_body(ctx)?;
        let join_policy = body.join_policy.as_deref().map(|p| JoinPolicy::parse(p).ok_or_else(|| {
            ApiError::bad_request("invalid_join_policy", "join_policy must be open or invite")
        })).transpose()?;
        let updated = ctx.app.authority.command(commands::UpdateSettings {
            actor: who,
            server_id,
            display_name: body.display_name,
            description: body.description,
            banner_preset: body.banner_preset,
            join_policy,
        }).await?;
        json(200, &updated)
    }
);

handler!(
    /// `DELETE /v1/servers/{id}/membership`.
    leave, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let left = ctx.app.authority.command(commands::Leave { actor: who, server_id }).await?;
        json(200, &left)
    }
);

handler!(
    /// `POST /v1/servers/{id}/membership`: joins again after leaving (as opening the server's
    /// realtime socket does).
    join, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let uid = who.user_uid.clone();
        let sid = server_id.clone();
        let role = ctx.app.authority.command(commands::Admit { actor: who, server_id, how: Admission::Connect }).await?;
        json(200, &Joined { server_id: sid.into(), user_uid: uid.into(), role: role.as_str(), joined: true })
    }
);

#[derive(serde::Serialize)]
struct Joined {
    server_id: String,
    user_uid: String,
    role: &'static str,
    joined: bool,
}

handler!(
    /// `GET /v1/servers/{id}/members`.
    members, ctx => {
        let who = actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let members = ctx.app.authority.command(commands::ListMembers { actor: who, server_id }).await?;
        json(200, &members)
    }
);

handler!(
    /// `GET /v1/servers/{id}/channels`.
    channels, ctx => {
        let who = actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let groups = ctx.app.authority.command(commands::ListChannels { actor: who, server_id }).await?;
        json(200, &groups)
    }
);

#[derive(Deserialize)]
struct ChannelIn {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    group_id: Option<String>,
    history_visibility: Option<String>,
    encryption: Option<String>,
}

handler!(
    /// `POST /v1/servers/{id}/channels`.
    create_channel, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let body: ChannelIn = json_body(ctx)?;
        let name = body.name.ok_or_else(|| ApiError::bad_request("invalid_name", "name is required"))?;
        let kind = kind(body.kind.as_deref().unwrap_or("text"))?;
        let visibility = body.history_visibility.as_deref().map(|v| {
            HistoryVisibility::parse(v).ok_or_else(|| ApiError::bad_request("invalid_history_visibility", "history_visibility must be joined, members or public"))
        }).transpose()?;
        let encryption = body.encryption.as_deref().map(|v| {
            Encryption::parse(v).ok_or_else(|| ApiError::bad_request("invalid_encryption", "encryption must be none or e2ee"))
        }).transpose()?;
        let group = body.group_id.filter(|g| !g.is_empty());
        let created = ctx.app.authority.command(commands::CreateChannel {
            actor: who,
            server_id,
            name,
            kind,
            group_id: group,
            visibility,
            encryption,
        }).await?;
        json(201, &created)
    }
);

#[derive(Deserialize)]
struct CategoryIn {
    name: Option<String>,
    kind: Option<String>,
}

handler!(
    /// `POST /v1/servers/{id}/categories`.
    create_category, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let body: CategoryIn = json_body(ctx)?;
        let name = body.name.ok_or_else(|| ApiError::bad_request("invalid_name", "name is required"))?;
        let kind = kind(body.kind.as_deref().unwrap_or("text"))?;
        let created = ctx.app.authority.command(commands::CreateCategory { actor: who, server_id, name, kind }).await?;
        json(201, &created)
    }
);

handler!(
    /// `PUT /v1/servers/{id}/categories/{group_id}`.
    rename_category, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let group_id: String = path_id(ctx, "group_id")?;
        let body: CategoryIn = json_body(ctx)?;
        let name = body.name.ok_or_else(|| ApiError::bad_request("invalid_name", "name is required"))?;
        let updated = ctx.app.authority.command(commands::RenameCategory { actor: who, server_id, group_id, name }).await?;
        json(200, &updated)
    }
);

handler!(
    /// `DELETE /v1/servers/{id}/categories/{group_id}`.
    delete_category, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let group_id: String = path_id(ctx, "group_id")?;
        let layout = ctx.app.authority.command(commands::DeleteCategory { actor: who, server_id, group_id }).await?;
        json(200, &layout)
    }
);

#[derive(Deserialize)]
struct LayoutIn {
    groups: Vec<LayoutGroupIn>,
}

#[derive(Deserialize)]
struct LayoutGroupIn {
    id: String,
    channel_ids: Vec<String>,
}

handler!(
    /// `PUT /v1/servers/{id}/channel-layout`.
    put_layout, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let body: LayoutIn = json_body(ctx)?;
        let groups: Vec<(String, Vec<String>)> = body.groups.into_iter().map(|g| (g.id, g.channel_ids)).collect();
        let layout = ctx.app.authority.command(commands::SetLayout { actor: who, server_id, groups }).await?;
        json(200, &layout)
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_cursors_round_trip_and_refuse_garbage() {
        for key in [
            DirectoryKey {
                after_default: false,
                created_at: 0,
                server_id: "home".into(),
            },
            DirectoryKey {
                after_default: true,
                created_at: 1_700_000_000_123,
                server_id: "srv_ab-c_1".into(),
            },
        ] {
            assert_eq!(
                decode_directory_cursor(&encode_directory_cursor(&key)),
                Some(key)
            );
        }
        for bad in [
            "",
            "x",
            "!!!",
            &URL_SAFE_NO_PAD.encode("2:1:srv"),
            &URL_SAFE_NO_PAD.encode("1:x:srv"),
            &URL_SAFE_NO_PAD.encode("1:1:a b"),
            &URL_SAFE_NO_PAD.encode("1:1"),
        ] {
            assert_eq!(decode_directory_cursor(bad), None, "{bad}");
        }
    }
}
