//! Profiles and avatars (wire contract A.6), global to the instance, and a user's profile in
//! one server (Part D), which members of that server see in its place.

use serde::Deserialize;

use super::identity::require_actor;
use super::input::{is_multipart, json_body, path_id};
use super::messages::{checked_image, hold_blob, serve_blob, upload};
use super::servers::handler;
use super::{ApiError, RequestCtx, json};
use crate::api::capabilities::{AVATAR_MAX_BYTES, AVATAR_MAX_DIMENSION};
use crate::domain::community::{MAX_PROFILES_PER_BATCH, ProfileChange, commands};
use crate::domain::ids::ServerId;
use crate::domain::model::{AvatarAsset, AvatarMode};
use crate::http::query::query_pairs;
use crate::storage::BlobId;
use crate::uploads::ImageLimits;

handler!(
    /// `GET /v1/profile/me`: a default profile for a uid that never saved one.
    get_me, ctx => {
        let who = require_actor(ctx).await?;
        let profile = ctx.app.authority.read(|c, _| Ok(c.profile_item(&who.user_uid)))?;
        json(200, &profile)
    }
);

#[derive(Deserialize)]
struct ProfileIn {
    display_name: Option<String>,
    avatar_mode: Option<String>,
    avatar_preset_id: Option<String>,
    avatar_asset_id: Option<String>,
}

/// `If-Match: N`, `"N"` or `W/"N"` (absent, empty or `*`: no check).
pub(super) fn if_match(ctx: &RequestCtx<'_>) -> Result<Option<i64>, ApiError> {
    let Some(raw) = ctx.request.header("if-match") else {
        return Ok(None);
    };
    let text = std::str::from_utf8(raw).unwrap_or("").trim();
    let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    if text.is_empty() || text == "*" {
        return Ok(None);
    }
    text.parse::<i64>().map(Some).map_err(|_| {
        ApiError::bad_request("invalid_if_match", "If-Match must be the version you read")
    })
}

/// The change a profile `PUT` asks for (instance-wide or in one server).
fn profile_change(ctx: &RequestCtx<'_>) -> Result<ProfileChange, ApiError> {
    let body: ProfileIn = json_body(ctx)?;
    let avatar_mode = body
        .avatar_mode
        .as_deref()
        .map(|m| {
            AvatarMode::parse(m).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_avatar_mode",
                    "avatar_mode must be generated or uploaded",
                )
            })
        })
        .transpose()?;
    Ok(ProfileChange {
        display_name: body.display_name,
        avatar_mode,
        avatar_preset_id: body.avatar_preset_id,
        avatar_asset_id: body.avatar_asset_id,
        if_match: if_match(ctx)?,
    })
}

handler!(
    /// `PUT /v1/profile/me` (optimistic concurrency through `If-Match`).
    put_me, ctx => {
        let who = require_actor(ctx).await?;
        let change = profile_change(ctx)?;
        let profile = ctx.app.authority.command(commands::PutProfile { actor: who, change }).await?;
        json(200, &profile)
    }
);

handler!(
    /// `GET /v1/servers/{id}/profile/me`: what members of the server see of the caller.
    get_server_me, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let profile = ctx.app.authority.read(|c, _| c.get_server_profile(&who, &server_id))?;
        json(200, &profile)
    }
);

handler!(
    /// `PUT /v1/servers/{id}/profile/me` (`If-Match`: the `profile_version` it showed).
    put_server_me, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let change = profile_change(ctx)?;
        let profile = ctx.app.authority.command(commands::PutServerProfile { actor: who, server_id, change }).await?;
        json(200, &profile)
    }
);

handler!(
    /// `DELETE /v1/servers/{id}/profile/me`: the server shows the instance-wide profile again;
    /// answers what it shows now.
    delete_server_me, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let if_match = if_match(ctx)?;
        let profile = ctx.app.authority.command(commands::DeleteServerProfile { actor: who, server_id, if_match }).await?;
        json(200, &profile)
    }
);

handler!(
    /// `POST /v1/profile/avatar`: multipart part `file`; checked by content, metadata stripped.
    upload_avatar, ctx => {
        let who = require_actor(ctx).await?;
        if !is_multipart(ctx) {
            return Err(ApiError::bad_request("bad_multipart", "send the image as multipart/form-data part 'file'"));
        }
        let form = upload(ctx)?;
        let field = form.fields.iter().find(|f| f.name == "file").or_else(|| form.fields.iter().find(|f| f.filename.is_some()))
            .and_then(|f| f.file())
            .ok_or_else(|| ApiError::bad_request("missing_file", "no part named 'file'"))?;
        // Any image the attachment rules accept, up to the avatar's byte limit; one larger than
        // `AVATAR_MAX_DIMENSION` is scaled down to it (the client never reads that limit).
        let limits = ImageLimits {
            max_bytes: AVATAR_MAX_BYTES as usize,
            max_width: super::messages::ATTACHMENT_MAX_DIMENSION,
            max_height: super::messages::ATTACHMENT_MAX_DIMENSION,
        };
        let uid = who.user_uid.clone();
        ctx.app.authority.command(commands::TakeWriteToken { uid }).await?;
        let (info, clean, id) = checked_image(field, limits, Some(AVATAR_MAX_DIMENSION)).await?;
        let bytes = clean.len() as u64;
        // Held until the asset is recorded: a refusal removes a blob this upload created.
        let hold = hold_blob(ctx, id);
        let blob = ctx.app.storage.put_blob(bytes::Bytes::from(clean)).await?;
        let asset = AvatarAsset {
            id: format!("av_{}", uuid::Uuid::new_v4().simple()),
            owner_uid: who.user_uid,
            blob: blob.as_str().to_owned(),
            content_type: info.format.content_type().to_owned(),
            width: info.width,
            height: info.height,
            bytes,
            created_at: crate::authority::now_millis(),
        };
        let uploaded = ctx.app.authority.command(commands::AddAvatarAsset { asset }).await?;
        hold.keep();
        json(201, &uploaded)
    }
);

handler!(
    /// `GET /v1/profile/avatar/{asset_id}`: no identity (plain `<img src>`).
    avatar, ctx => {
        let id: String = path_id(ctx, "asset_id")?;
        let blob = ctx.app.authority.read(|c, _| Ok(c.avatar_asset(&id).map(|a| a.blob.clone())))?;
        let blob = blob.and_then(|b| BlobId::parse(&b)).ok_or(ApiError::NotFound)?;
        serve_blob(ctx, &blob).await
    }
);

handler!(
    /// `GET /v1/profiles:batch?user_uid=a&user_uid=b` (also `user_uids=a,b`), and
    /// `server_id=` for the profiles members of that server see.
    batch, ctx => {
        let mut uids: Vec<String> = Vec::new();
        let mut server_id: Option<String> = None;
        if let Some(q) = ctx.request.query() {
            for (k, v) in query_pairs(q) {
                match k.as_ref() {
                    "server_id" => server_id = Some(v.into_owned()),
                    "user_uid" | "user_uid[]" => uids.push(v.into_owned()),
                    "user_uids" => uids.extend(v.split(',').map(|s| s.trim().to_owned())),
                    _ => {}
                }
                if uids.len() > MAX_PROFILES_PER_BATCH {
                    break;
                }
            }
        }
        uids.retain(|u| !u.is_empty());
        if uids.iter().any(|u| !crate::domain::text::is_valid_id(u)) {
            return Err(ApiError::bad_request("invalid_user_uid", "user_uid must be 1 to 64 characters of A-Z a-z 0-9 _ -"));
        }
        if server_id.as_deref().is_some_and(|s| !crate::domain::text::is_valid_id(s)) {
            return Err(ApiError::bad_request("invalid_server_id", "server_id must be 1 to 64 characters of A-Z a-z 0-9 _ -"));
        }
        let profiles = ctx.app.authority.read(|c, _| c.profiles(&uids, server_id.as_deref()))?;
        json(200, &profiles)
    }
);
