//! Messages, read acks, mentions and attachments (wire contract A.5). The authority decides
//! who may read and write; storage holds the messages; this module parses, loads and renders.

use crate::domain::ids::{ChannelId, MessageId, ParseId, ServerId};
use serde::Deserialize;

use super::blob_holds::BlobHold;
use super::identity::{actor, query_param, require_actor};
use super::input::{is_multipart, json_body, path_id};
use super::servers::handler;
use super::{ApiError, RequestCtx, json};
use crate::domain::community::{
    self, Actor, HistoryAccess, MAX_HISTORY_PAGE, NewMessage, commands,
};
use crate::domain::error::{DomainError, What};
use crate::domain::limits;
use crate::domain::model::{Attachment, Content, Envelope, Message};
use crate::domain::records::MessageQuery;
use crate::domain::views::{MessageList, MessageOut, decode_cursor, encode_cursor};
use crate::http::Response;
use crate::runtime::upload::{TempFile, Upload, UploadField};
use crate::storage::{BlobId, blob_path};
use crate::uploads::{ImageLimits, inspect, strip_metadata};

/// Page size when the client gives no `limit`.
pub const DEFAULT_HISTORY_PAGE: usize = 50;
/// Largest width or height of an image attachment.
pub const ATTACHMENT_MAX_DIMENSION: u32 = 16_384;
/// Longest kept attachment file name (longer ones are cut).
pub const MAX_FILE_NAME_CHARS: usize = 255;
/// How long clients and proxies may cache a content-addressed blob.
pub const BLOB_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

fn limit_param(ctx: &RequestCtx<'_>, default: usize, max: usize) -> Result<usize, ApiError> {
    match query_param(ctx, "limit") {
        None => Ok(default),
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .map(|n| n.min(max))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_limit",
                    format!("limit must be an integer from 1 to {max}"),
                )
            }),
    }
}

fn cursor_param(ctx: &RequestCtx<'_>, name: &str) -> Result<Option<i64>, ApiError> {
    match query_param(ctx, name).filter(|c| !c.is_empty()) {
        None => Ok(None),
        Some(raw) => decode_cursor(&raw).map(Some).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_cursor",
                format!("{name} is not a cursor this server gave out"),
            )
        }),
    }
}

/// What `who` may read of the channel. A reader the state already decides needs no command, so
/// a history page does not wait for writes; only a first contact (which joins) is a command.
async fn history_access(
    ctx: &RequestCtx<'_>,
    who: Option<Actor>,
    channel_id: ChannelId,
) -> Result<HistoryAccess, ApiError> {
    let decided = ctx
        .app
        .authority
        .read(|c, _| Ok(c.history_access_now(who.as_ref(), &channel_id)))?;
    match decided {
        Some(decided) => Ok(decided?),
        None => Ok(ctx
            .app
            .authority
            .command(commands::OpenHistory {
                actor: who,
                channel_id,
            })
            .await?),
    }
}

handler!(
    /// `GET /v1/channels/{id}/messages?limit=&before=&after=`.
    list, ctx => {
        let who = actor(ctx).await?;
        let channel_id: ChannelId = path_id(ctx, "channel_id")?;
        let limit = limit_param(ctx, DEFAULT_HISTORY_PAGE, MAX_HISTORY_PAGE)?;
        let before = cursor_param(ctx, "before")?;
        let after = cursor_param(ctx, "after")?;
        let access = history_access(ctx, who, channel_id).await?;
        let page = ctx.app.storage.messages(MessageQuery {
            channel_id: access.channel.id.clone().into(),
            visibility: access.visibility.clone(),
            before,
            after,
            limit,
            include_deleted: false,
        }).await?;
        let targets: std::collections::HashMap<&str, &Message> = page.reply_targets.iter().map(|m| (m.id.as_str(), m)).collect();
        let messages = page.messages.iter().map(|m| {
            let target = m.reply_to_id.as_deref().and_then(|id| targets.get(id).copied());
            community::render(&ctx.app.urls, m, target, &access.visibility, access.viewer.as_ref())
        }).collect();
        let next_cursor = page.has_older.then(|| page.messages.first().map(|m| encode_cursor(m.seq))).flatten();
        json(200, &MessageList { messages, next_cursor })
    }
);

#[derive(Deserialize)]
struct MessageIn {
    body: Option<String>,
    reply_to_message_id: Option<String>,
    envelope: Option<Envelope>,
}

/// Checks, strips and stores one uploaded image. The blob stays held until the post is
/// decided: dropping the hold without keeping it removes a blob this upload created.
async fn store_attachment<'a>(
    ctx: &'a RequestCtx<'a>,
    field: &UploadField,
) -> Result<(Attachment, BlobHold<'a>), ApiError> {
    let limits = ImageLimits {
        max_bytes: ctx.app.config.limits.max_upload_bytes,
        max_width: ATTACHMENT_MAX_DIMENSION,
        max_height: ATTACHMENT_MAX_DIMENSION,
    };
    let file = field.file().ok_or_else(|| {
        ApiError::bad_request(
            "invalid_body",
            format!("field {} is not a file", field.name),
        )
    })?;
    let (info, clean, id) = checked_image(file, limits, None).await?;
    let bytes = clean.len() as u64;
    let hold = hold_blob(ctx, id);
    let blob = ctx.app.storage.put_blob(bytes::Bytes::from(clean)).await?;
    debug_assert_eq!(&blob, hold.id());
    let name = field
        .filename
        .as_deref()
        .map(|n| n.rsplit(['/', '\\']).next().unwrap_or(n).trim())
        .filter(|n| !n.is_empty())
        .map(|n| {
            n.chars()
                .filter(|c| !c.is_control())
                .take(MAX_FILE_NAME_CHARS)
                .collect()
        })
        .unwrap_or_else(|| format!("image.{}", info.format.extension()));
    let attachment = Attachment {
        attachment_id: format!("att_{}", blob.as_str()),
        file_name: name,
        width: info.width,
        height: info.height,
        content_type: info.format.content_type().to_owned(),
        bytes,
    };
    Ok((attachment, hold))
}

/// Takes the hold on a blob about to be put (see `blob_holds`).
pub(super) fn hold_blob<'a>(ctx: &'a RequestCtx<'a>, id: BlobId) -> BlobHold<'a> {
    let path = blob_path(&ctx.app.config.data_dir, &id);
    ctx.app.blob_holds.hold(id, path)
}

/// Reads an uploaded image from its temp file, checks it and strips its metadata on glommio's
/// blocking pool: decoding a large image takes milliseconds of CPU, which must not stall every
/// connection of the shard. One file is in memory at a time per request; a file over the limit
/// is refused from its size without being read. Also returns the id the clean bytes are stored
/// under. With `fit`, an image larger than `fit`×`fit` is scaled down to fit (as a PNG).
pub(super) async fn checked_image(
    file: &TempFile,
    limits: ImageLimits,
    fit: Option<u32>,
) -> Result<(crate::uploads::ImageInfo, Vec<u8>, BlobId), ApiError> {
    if file.len() > limits.max_bytes as u64 {
        return Err(ApiError::from(crate::uploads::ImageError::TooLarge {
            bytes: usize::try_from(file.len()).unwrap_or(usize::MAX),
            max: limits.max_bytes,
        }));
    }
    let path = file.path().to_owned();
    let checked = glommio::executor()
        .spawn_blocking(move || {
            let bytes = std::fs::read(&path)?;
            Ok::<_, std::io::Error>((|| {
                let info = inspect(&bytes, &limits)?;
                let fitted = match fit {
                    Some(side) => crate::uploads::fit_within(&info, &bytes, side, side)?,
                    None => None,
                };
                let (info, clean) = match fitted {
                    Some(fitted) => fitted,
                    None => (info, strip_metadata(info.format, &bytes)?),
                };
                let id = BlobId::of_content(&clean);
                Ok::<_, crate::uploads::ImageError>((info, clean, id))
            })())
        })
        .await;
    match checked {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => {
            tracing::error!(error = %e, "cannot read an uploaded file back");
            Err(ApiError::Internal)
        }
    }
}

fn text_field(field: &UploadField) -> Result<String, ApiError> {
    field
        .text()
        .and_then(|t| String::from_utf8(t.to_vec()).ok())
        .ok_or_else(|| {
            ApiError::bad_request("invalid_body", format!("field {} is not UTF-8", field.name))
        })
}

/// The spooled form of a multipart request; a multipart request without a body has none.
pub(super) fn upload<'a>(ctx: &RequestCtx<'a>) -> Result<&'a Upload, ApiError> {
    ctx.upload.ok_or_else(|| {
        crate::http::HttpError::from(
            crate::http::multipart::MultipartError::MissingOpeningDelimiter,
        )
        .into()
    })
}

handler!(
    /// `POST /v1/channels/{id}/messages`, JSON or multipart with up to 4 images.
    create, ctx => {
        let who = require_actor(ctx).await?;
        let channel_id: ChannelId = path_id(ctx, "channel_id")?;
        // The size rules are the domain's (`domain::limits`); checked here as well so that a
        // refused post costs no upload and no JSON parse.
        let max_body = ctx.app.config.limits.max_message_bytes;
        let mut attachments = Vec::new();
        let mut holds = Vec::new();
        let (content, reply_to_id) = if is_multipart(ctx) {
            let form = upload(ctx)?;
            let mut body = String::new();
            let mut reply = None;
            let files: Vec<&UploadField> = form.fields.iter().filter(|f| f.file().is_some()).collect();
            limits::check_attachment_count(files.len())?;
            limits::check_upload_total(files.iter().filter_map(|f| f.file()).map(|f| f.len()), ctx.app.config.limits.max_upload_bytes)?;
            for field in &form.fields {
                match field.name.as_str() {
                    "body" if field.filename.is_none() && field.text().is_some() => body = text_field(field)?,
                    "reply_to_message_id" if field.filename.is_none() && field.text().is_some() => reply = Some(text_field(field)?.trim().to_owned()).filter(|r| !r.is_empty()),
                    _ => {}
                }
            }
            limits::check_body_size(&body, max_body)?;
            // The text rule before any upload is stored (the domain applies it again).
            limits::text_field("body", &body)?;
            for file in &files {
                limits::optional_text_field("file_name", file.filename.as_deref())?;
            }
            if !files.is_empty() {
                // Uploads cost a decode and a blob before the post is decided: limit them first.
                let uid = who.user_uid.clone();
                ctx.app.authority.command(commands::TakeWriteToken { uid }).await?;
            }
            for field in files {
                let (attachment, hold) = store_attachment(ctx, field).await?;
                attachments.push(attachment);
                holds.push(hold);
            }
            (Content::Plain { body }, reply)
        } else {
            limits::check_post_size(ctx.request.body().len(), max_body)?;
            let input: MessageIn = json_body(ctx)?;
            let content = match (input.body, input.envelope) {
                (Some(_), Some(_)) => return Err(ApiError::bad_request("invalid_message", "send either body or envelope, not both")),
                (None, None) => return Err(ApiError::bad_request("empty_message", "a message needs a body")),
                (Some(body), None) => {
                    limits::check_body_size(&body, max_body)?;
                    Content::Plain { body }
                }
                (None, Some(envelope)) => {
                    super::keys::check_envelope(&channel_id, &envelope)?;
                    Content::Envelope(envelope)
                }
            };
            (content, input.reply_to_message_id.filter(|r| !r.is_empty()))
        };
        // The domain decides whether the replier may name it (B.3): a target that is missing,
        // elsewhere or unreadable gets one answer, `message_not_found`.
        let reply_to = match &reply_to_id {
            Some(id) if crate::domain::text::is_valid_id(id) => ctx.app.storage.message(id).await?,
            _ => None,
        };
        let new = NewMessage { content, reply_to, reply_to_id, attachments };
        // Any refusal up to here drops the holds, which removes the blobs this post created.
        let message = ctx.app.authority.command(commands::PostMessage { actor: who, channel_id, new }).await?;
        holds.into_iter().for_each(BlobHold::keep);
        json(201, &MessageOut { message })
    }
);

async fn load_message(
    ctx: &RequestCtx<'_>,
    channel_id: &str,
    message_id: &str,
) -> Result<Message, ApiError> {
    match ctx.app.storage.message(message_id).await? {
        Some(m) if m.channel_id == channel_id => Ok(m),
        _ => Err(ApiError::Domain(DomainError::NotFound(What::Message))),
    }
}

handler!(
    /// `DELETE /v1/channels/{id}/messages/{message_id}`.
    delete, ctx => {
        let who = require_actor(ctx).await?;
        let channel_id: ChannelId = path_id(ctx, "channel_id")?;
        let message_id: MessageId = path_id(ctx, "message_id")?;
        let message = load_message(ctx, &channel_id, &message_id).await?;
        let deleted = ctx.app.authority.command(commands::DeleteMessage { actor: who, channel_id, message }).await?;
        json(200, &deleted)
    }
);

handler!(
    /// `GET /v1/channels/{id}/read-ack`.
    get_read_ack, ctx => {
        let who = require_actor(ctx).await?;
        let channel_id: ChannelId = path_id(ctx, "channel_id")?;
        let ack = ctx.app.authority.command(commands::ReadAck { actor: who, channel_id }).await?;
        json(200, &ack)
    }
);

#[derive(Deserialize)]
struct ReadAckIn {
    last_read_message_id: Option<String>,
}

handler!(
    /// `PUT /v1/channels/{id}/read-ack`.
    put_read_ack, ctx => {
        let who = require_actor(ctx).await?;
        let channel_id: ChannelId = path_id(ctx, "channel_id")?;
        let body: ReadAckIn = json_body(ctx)?;
        let message = match body.last_read_message_id.filter(|m| !m.is_empty()) {
            Some(id) if crate::domain::text::is_valid_id(&id) => load_message(ctx, &channel_id, &id).await?,
            Some(_) => return Err(ApiError::bad_request("invalid_message_id", "last_read_message_id is not a message id")),
            // `{}` or an empty cursor (the client sends it on every subscribe): the latest
            // message the reader may read, or, in a channel with none, nothing to move (A.5).
            None => match latest_readable(ctx, &who, &channel_id).await? {
                Some(message) => message,
                None => {
                    let mut current = ctx.app.authority.command(commands::ReadAck { actor: who, channel_id }).await?;
                    current.applied = Some(false);
                    return json(200, &current);
                }
            },
        };
        let ack = ctx.app.authority.command(commands::PutReadAck { actor: who, channel_id, message }).await?;
        json(200, &ack)
    }
);

#[derive(Deserialize)]
struct BulkReadAcksIn {
    read_acks: Option<Vec<BulkReadAckIn>>,
}

#[derive(Deserialize)]
struct BulkReadAckIn {
    channel_id: Option<String>,
    last_read_message_id: Option<String>,
}

handler!(
    /// `PUT /v1/servers/{id}/read-acks {read_acks: [{channel_id, last_read_message_id?}]}`
    /// (wire contract A.10). Each cursor is looked up here (an empty one: the newest message
    /// the reader may read); the domain checks the whole request and applies it all or not
    /// at all (`Community::put_read_acks`).
    put_read_acks, ctx => {
        let who = require_actor(ctx).await?;
        let server_id: ServerId = path_id(ctx, "server_id")?;
        let body: BulkReadAcksIn = json_body(ctx)?;
        let entries = body.read_acks
            .ok_or_else(|| ApiError::bad_request("invalid_read_acks", "read_acks must be an array"))?;
        if entries.len() > limits::MAX_BULK_READ_ACKS {
            return Err(DomainError::TooManyReadAcks.into());
        }
        let mut parsed = Vec::with_capacity(entries.len());
        for entry in entries {
            let channel_id = entry.channel_id.as_deref().and_then(ChannelId::parse_id).ok_or_else(|| {
                ApiError::bad_request("invalid_channel_id", "each read ack needs a channel_id")
            })?;
            parsed.push((channel_id, entry.last_read_message_id));
        }
        // The channels first: a request that names a wrong one looks nothing up (and joins
        // nothing through a first read).
        ctx.app.authority.read(|c, _| c.bulk_ack_channels(&server_id, parsed.iter().map(|(id, _)| id)).map(drop))?;
        let mut acks = Vec::with_capacity(parsed.len());
        for (channel_id, cursor) in parsed {
            let message = match cursor.filter(|m| !m.is_empty()) {
                Some(id) if crate::domain::text::is_valid_id(&id) => Some(load_message(ctx, &channel_id, &id).await?),
                Some(_) => return Err(ApiError::bad_request("invalid_message_id", "last_read_message_id is not a message id")),
                None => latest_readable(ctx, &who, &channel_id).await?,
            };
            acks.push((channel_id, message));
        }
        let acked = ctx.app.authority.command(commands::PutReadAcks { actor: who, server_id, acks }).await?;
        json(200, &acked)
    }
);

/// The newest message of the channel that `who` may read (deleted ones left out).
async fn latest_readable(
    ctx: &RequestCtx<'_>,
    who: &Actor,
    channel_id: &ChannelId,
) -> Result<Option<Message>, ApiError> {
    let access = history_access(ctx, Some(who.clone()), channel_id.clone()).await?;
    let mut page = ctx
        .app
        .storage
        .messages(MessageQuery {
            channel_id: access.channel.id.clone().into(),
            visibility: access.visibility,
            before: None,
            after: None,
            limit: 1,
            include_deleted: false,
        })
        .await?;
    Ok(page.messages.pop())
}

handler!(
    /// `GET /v1/channels/{id}/mentions:resolve?query=&limit=`.
    resolve_mentions, ctx => {
        let who = require_actor(ctx).await?;
        let channel_id: ChannelId = path_id(ctx, "channel_id")?;
        let query = query_param(ctx, "query").or_else(|| query_param(ctx, "q")).unwrap_or_default();
        let limit = limit_param(ctx, 10, community::MAX_MENTION_RESULTS)?;
        let results = ctx.app.authority.command(commands::ResolveMentions { actor: who, channel_id, query, limit }).await?;
        json(200, &results)
    }
);

/// Serves a stored image by blob id, with its content type read from its first bytes. The body
/// is streamed from the file by the connection driver, never held whole.
pub(super) async fn serve_blob(ctx: &RequestCtx<'_>, blob: &BlobId) -> Result<Response, ApiError> {
    let path = blob_path(&ctx.app.config.data_dir, blob);
    let internal = |e: std::io::Error| {
        tracing::error!(error = %e, "cannot read a blob");
        ApiError::Internal
    };
    let file = match glommio::io::BufferedFile::open(&path).await {
        Ok(file) => file,
        Err(e) => {
            let e = std::io::Error::from(e);
            return Err(if e.kind() == std::io::ErrorKind::NotFound {
                ApiError::NotFound
            } else {
                internal(e)
            });
        }
    };
    let len = file.file_size().await.map_err(|e| internal(e.into()))?;
    let start = file
        .read_at(0, SNIFF_BYTES)
        .await
        .map_err(|e| internal(e.into()))?;
    let content_type = crate::uploads::sniff(&start)
        .map(|f| f.content_type())
        .unwrap_or("application/octet-stream");
    drop(start);
    let _ = file.close().await;
    Ok(Response::file(200, content_type, path, len)
        .header("Cache-Control", BLOB_CACHE_CONTROL)
        .header("X-Content-Type-Options", "nosniff")
        .header("ETag", format!("\"{}\"", blob.as_str())))
}

/// Enough of a file to tell PNG, JPEG and GIF apart.
const SNIFF_BYTES: usize = 16;

handler!(
    /// `GET /v1/attachments/{attachment_id}`: no identity (plain `<img src>`).
    attachment, ctx => {
        // `att_` + the 64 hex digits of the blob: longer than `path_id` allows for ids.
        let id = ctx.params.get("attachment_id").ok_or(ApiError::NotFound)?;
        let blob = id.strip_prefix("att_").and_then(BlobId::parse).ok_or(ApiError::NotFound)?;
        serve_blob(ctx, &blob).await
    }
);
