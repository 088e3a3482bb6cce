//! What one client may send and make the instance hold: the text rule applied to every text
//! field a client sends, and the size bound of a layout request. A count limit is refused with
//! [`DomainError::LimitReached`], whose answer carries `details` naming the limit so a client
//! can tell which one it met.
//!
//! The limits themselves are named constants next to the rules that use them
//! (`community::MAX_SERVERS_CREATED_PER_USER`, `MAX_CHANNELS_PER_SERVER`,
//! `MAX_CATEGORIES_PER_SERVER`, and the layout and message bounds below).
//!
//! The size of a message is one rule here, applied at three moments that each read it from
//! here rather than keeping a copy: the request head ([`max_message_post_bytes`] bounds the body
//! the HTTP layer reads, so a too-big post is refused before it is read), the message
//! handler (before an upload is decoded and stored, since a post refused later would have cost
//! a blob), and the community's `post_message` (the rule itself, whatever the caller checked).

use super::community::{MAX_CATEGORIES_PER_SERVER, MAX_CHANNELS_PER_SERVER};
use super::error::{DomainError, Limit};
use super::text;

/// Most groups one `PUT /v1/servers/{id}/channel-layout` may list: a server holds no more.
pub const MAX_LAYOUT_GROUPS: usize = MAX_CATEGORIES_PER_SERVER;
/// Most channel ids one layout request may list, over all its groups: a server holds no more.
pub const MAX_LAYOUT_CHANNEL_IDS: usize = MAX_CHANNELS_PER_SERVER;

/// Channels one `PUT /v1/servers/{id}/read-acks` may name (wire contract A.10).
pub const MAX_BULK_READ_ACKS: usize = 500;

/// Live (unrevoked, unexpired) invites one server holds (Part D).
pub const MAX_INVITES_PER_SERVER: usize = 1_000;
/// Most uses one invite allows (Part D).
pub const MAX_INVITE_USES: u32 = 1_000;
/// An invite lives at least this long...
pub const MIN_INVITE_LIFETIME_MS: i64 = 60_000;
/// ...and at most this long (30 days).
pub const MAX_INVITE_LIFETIME_MS: i64 = 30 * 24 * 3600 * 1000;
/// Invites one page of `GET /v1/servers/{id}/invites` lists.
pub const INVITES_PAGE: usize = 50;

/// Attachments per message (wire contract A.9).
pub const MAX_ATTACHMENTS_PER_MESSAGE: usize = 4;

/// Room a JSON message post may take beyond its body: the envelope's fields, a reply id and
/// the JSON around them.
pub const MESSAGE_POST_OVERHEAD_BYTES: usize = 65_536;

/// The largest JSON message post worth reading when a body may be `max_message_bytes` long:
/// the body twice (every byte of it may arrive escaped) and [`MESSAGE_POST_OVERHEAD_BYTES`].
pub const fn max_message_post_bytes(max_message_bytes: usize) -> usize {
    max_message_bytes
        .saturating_mul(2)
        .saturating_add(MESSAGE_POST_OVERHEAD_BYTES)
}

/// Refuses a JSON message post of `len` bytes that no body of `max_message_bytes` needs
/// (413 `payload_too_large`, before it is parsed).
pub fn check_post_size(len: usize, max_message_bytes: usize) -> Result<(), DomainError> {
    if len > max_message_post_bytes(max_message_bytes) {
        return Err(DomainError::MessageTooLarge {
            max_bytes: max_message_bytes,
        });
    }
    Ok(())
}

/// Refuses a plaintext body longer than `max_bytes` (`OPENCHAT_MAX_MESSAGE_BYTES`), in bytes.
pub fn check_body_size(body: &str, max_bytes: usize) -> Result<(), DomainError> {
    if body.len() > max_bytes {
        return Err(DomainError::MessageTooLarge { max_bytes });
    }
    Ok(())
}

/// Refuses a message whose files add up to more than `max_bytes` (`OPENCHAT_MAX_UPLOAD_BYTES`,
/// capabilities `limits.max_upload_bytes`): the limit holds per file and for the sum of one
/// message's files, as the client checks both (wire contract A.5).
pub fn check_upload_total(
    sizes: impl IntoIterator<Item = u64>,
    max_bytes: usize,
) -> Result<(), DomainError> {
    let total = sizes.into_iter().fold(0u64, u64::saturating_add);
    if total > max_bytes as u64 {
        return Err(DomainError::UploadsTooLarge { max_bytes });
    }
    Ok(())
}

/// Refuses more than [`MAX_ATTACHMENTS_PER_MESSAGE`] attachments.
pub fn check_attachment_count(count: usize) -> Result<(), DomainError> {
    if count > MAX_ATTACHMENTS_PER_MESSAGE {
        return Err(DomainError::TooManyAttachments);
    }
    Ok(())
}

/// Checks one text field a client sent against [`text::check_text`]; a refusal is 400
/// `invalid_text` with `details.field` naming the field (its wire name).
pub fn text_field(field: &'static str, value: &str) -> Result<(), DomainError> {
    text::check_text(value).map_err(|reason| DomainError::InvalidText { field, reason })
}

/// [`text_field`] for an optional field.
pub fn optional_text_field(field: &'static str, value: Option<&str>) -> Result<(), DomainError> {
    value.map_or(Ok(()), |v| text_field(field, v))
}

/// Refuses a layout request larger than any server can be, before any of it is looked at.
pub fn check_layout_size<'a>(
    groups: impl ExactSizeIterator<Item = &'a [String]>,
) -> Result<(), DomainError> {
    if groups.len() > MAX_LAYOUT_GROUPS {
        return Err(DomainError::LimitReached(Limit::LayoutGroups));
    }
    let mut ids = 0usize;
    for channel_ids in groups {
        ids += channel_ids.len();
        if ids > MAX_LAYOUT_CHANNEL_IDS {
            return Err(DomainError::LimitReached(Limit::LayoutChannelIds));
        }
    }
    Ok(())
}

/// Open cases one member may have reported in one server at once (a flood of reports cannot
/// fill the disk: closed ones are bounded by [`MAX_REPORTS_PER_HOUR`]).
pub const MAX_OPEN_REPORTS_PER_USER: usize = 20;
/// Reports one member may file per hour in one server.
pub const MAX_REPORTS_PER_HOUR: usize = 10;
/// Cases in one page of `GET …/moderation/cases`.
pub const CASES_PAGE: usize = 50;
/// Longest `reason_text` of a report, in characters.
pub const MAX_REASON_TEXT_CHARS: usize = 1000;
/// Longest `timeout_short` (seconds) and `channel_lock` (seconds).
pub const MAX_TIMEOUT_SHORT_SECS: i64 = 3600;
pub const MAX_CHANNEL_LOCK_SECS: i64 = 24 * 3600;
/// Longest `timeout_long` and timed `ban` (seconds).
pub const MAX_TIMEOUT_LONG_SECS: i64 = 30 * 24 * 3600;
pub const MAX_BAN_SECS: i64 = 365 * 24 * 3600;
/// Most votes a policy may ask for.
pub const MAX_POLICY_QUORUM: u32 = 50;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upload_limit_holds_for_the_sum_of_a_message() {
        assert_eq!(check_upload_total([60, 40], 100), Ok(()));
        assert_eq!(
            check_upload_total([60, 41], 100),
            Err(DomainError::UploadsTooLarge { max_bytes: 100 })
        );
        assert!(
            check_upload_total([u64::MAX, 1], 100).is_err(),
            "no overflow"
        );
        assert_eq!(check_upload_total([], 0), Ok(()));
    }

    #[test]
    fn text_field_names_the_field() {
        assert_eq!(text_field("body", "hello\n"), Ok(()));
        let e = text_field("body", "a\u{0}b").unwrap_err();
        assert_eq!(
            (e.status(), e.code(), e.retryable()),
            (400, "invalid_text", false)
        );
        assert_eq!(e.details().as_deref(), Some(r#"{"field":"body"}"#));
        assert!(
            e.to_string().starts_with("body must not contain NUL"),
            "{e}"
        );
        assert_eq!(optional_text_field("name", None), Ok(()));
        assert!(optional_text_field("name", Some("\u{1b}")).is_err());
    }

    #[test]
    fn message_sizes_are_one_rule() {
        assert_eq!(check_body_size(&"x".repeat(10), 10), Ok(()));
        assert_eq!(
            check_body_size(&"x".repeat(11), 10),
            Err(DomainError::MessageTooLarge { max_bytes: 10 })
        );
        // Bytes, not characters.
        assert!(check_body_size("ééééé é", 12).is_err());
        assert_eq!(check_attachment_count(MAX_ATTACHMENTS_PER_MESSAGE), Ok(()));
        let e = check_attachment_count(MAX_ATTACHMENTS_PER_MESSAGE + 1).unwrap_err();
        assert_eq!((e.status(), e.code()), (400, "too_many_attachments"));
        assert_eq!(e.to_string(), "at most 4 attachments per message");
        assert_eq!(max_message_post_bytes(4000), 8000 + 65_536);
        assert_eq!(max_message_post_bytes(usize::MAX), usize::MAX);
        assert_eq!(check_post_size(8000 + 65_536, 4000), Ok(()));
        assert_eq!(
            check_post_size(8001 + 65_536, 4000),
            Err(DomainError::MessageTooLarge { max_bytes: 4000 })
        );
    }

    #[test]
    fn limit_refusals_name_the_limit() {
        let e = DomainError::LimitReached(Limit::ChannelsPerServer);
        assert_eq!(
            (e.status(), e.code(), e.retryable()),
            (409, "channel_limit_reached", false)
        );
        assert_eq!(
            e.details().as_deref(),
            Some(r#"{"limit":"channels_per_server","max":500}"#)
        );
    }

    #[test]
    fn layout_size_is_bounded_by_what_a_server_holds() {
        let ids = |n: usize| (0..n).map(|i| format!("ch_{i}")).collect::<Vec<_>>();
        let fits = [
            ids(MAX_LAYOUT_CHANNEL_IDS / 2),
            ids(MAX_LAYOUT_CHANNEL_IDS / 2),
        ];
        assert_eq!(check_layout_size(fits.iter().map(Vec::as_slice)), Ok(()));
        let over = [ids(MAX_LAYOUT_CHANNEL_IDS), ids(1)];
        let e = check_layout_size(over.iter().map(Vec::as_slice)).unwrap_err();
        assert_eq!((e.status(), e.code()), (413, "layout_too_large"));
        assert!(e.details().unwrap().contains("layout_channel_ids"));
        let groups = vec![Vec::new(); MAX_LAYOUT_GROUPS + 1];
        let e = check_layout_size(groups.iter().map(Vec::as_slice)).unwrap_err();
        assert!(e.details().unwrap().contains("layout_groups"));
        let groups = vec![Vec::new(); MAX_LAYOUT_GROUPS];
        assert_eq!(check_layout_size(groups.iter().map(Vec::as_slice)), Ok(()));
    }
}
