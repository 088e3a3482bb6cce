//! What one client may send and make the instance hold: the text rule applied to every text
//! field a client sends, and the size bound of a layout request. A count limit is refused with
//! [`DomainError::LimitReached`], whose answer carries `details` naming the limit so a client
//! can tell which one it met.
//!
//! The limits themselves are named constants next to the rules that use them
//! (`community::MAX_SERVERS_CREATED_PER_USER`, `MAX_CHANNELS_PER_SERVER`,
//! `MAX_CATEGORIES_PER_SERVER`, and the layout bounds below).

use super::community::{MAX_CATEGORIES_PER_SERVER, MAX_CHANNELS_PER_SERVER};
use super::error::{DomainError, Limit};
use super::text;

/// Most groups one `PUT /v1/servers/{id}/channel-layout` may list: a server holds no more.
pub const MAX_LAYOUT_GROUPS: usize = MAX_CATEGORIES_PER_SERVER;
/// Most channel ids one layout request may list, over all its groups: a server holds no more.
pub const MAX_LAYOUT_CHANNEL_IDS: usize = MAX_CHANNELS_PER_SERVER;

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

#[cfg(test)]
mod tests {
    use super::*;

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
