//! Text rules shared by messages, profiles, servers and channels: mention parsing (wire-contract
//! A.5), name and label normalization (A.6, A.9), the generated icon text, reply previews and
//! client-given ids. Pure functions over `&str`; nothing here allocates more than its output.

use unicode_normalization::UnicodeNormalization;

/// Mention spans reported for one message; later tokens are not reported (and so do not notify).
/// Bounds the work and the notification fan-out a single message can cause.
pub const MAX_MENTIONS_PER_MESSAGE: usize = 50;

/// Display names (wire-contract A.9 and capabilities `profile.display_name`), counted in chars
/// after NFC normalization and trimming.
pub const DISPLAY_NAME_MIN_CHARS: usize = 1;
/// See [`DISPLAY_NAME_MIN_CHARS`].
pub const DISPLAY_NAME_MAX_CHARS: usize = 32;

/// Server display names, for [`normalize_label`].
pub const SERVER_NAME_MAX_CHARS: usize = 100;
/// Channel names, for [`normalize_label`].
pub const CHANNEL_NAME_MAX_CHARS: usize = 64;
/// Category (channel group) names, for [`normalize_label`].
pub const CATEGORY_NAME_MAX_CHARS: usize = 64;
/// Server descriptions, for [`normalize_description`] (which also allows empty text and newlines).
pub const SERVER_DESCRIPTION_MAX_CHARS: usize = 500;

/// Characters of a reply's `preview_text`, before the `…` that marks a cut.
pub const REPLY_PREVIEW_MAX_CHARS: usize = 120;

/// Longest id a client may give (user uids, device ids, server and channel ids), in chars.
pub const MAX_ID_CHARS: usize = 64;

/// The characters of an [`icon_text`].
pub const ICON_TEXT_MAX_CHARS: usize = 2;

/// What a mention points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MentionKind {
    /// `@uid_…`: one user.
    User,
    /// `@here`: the members currently present in the channel.
    Here,
    /// `@channel`: every member of the channel.
    Channel,
}

impl MentionKind {
    /// The wire name of the mention's `type` field.
    pub fn as_str(self) -> &'static str {
        match self {
            MentionKind::User => "user",
            MentionKind::Here => "here",
            MentionKind::Channel => "channel",
        }
    }
}

/// One mention token found in a message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MentionSpan {
    /// What the token points at.
    pub kind: MentionKind,
    /// The token as written, `@` included: `@uid_ab12cd34`, `@here`, `@channel`.
    pub token: String,
    /// The mentioned uid (`uid_ab12cd34`) for [`MentionKind::User`]; `here` or `channel`
    /// otherwise.
    pub target: String,
    /// Offset of the `@` in UTF-16 code units (what the client's JavaScript strings index by).
    pub start: usize,
    /// Offset just past the token in UTF-16 code units (exclusive).
    pub end: usize,
}

/// Why a name, label or description was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing is left after trimming whitespace.
    #[error("must not be empty")]
    Empty,
    /// More characters than allowed after normalization and trimming.
    #[error("must be at most {max} characters")]
    TooLong {
        /// The limit that was exceeded, in chars.
        max: usize,
    },
    /// A control character, a line or paragraph separator, or a bidirectional override.
    #[error("must not contain control characters or line breaks")]
    InvalidCharacter,
}

/// Why [`check_text`] refused a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// U+0000, which Postgres cannot store in a text column (and which a JSON `\u0000`
    /// escape, or simd-json's reading of a lone `\ud800` surrogate escape, produces).
    #[error("must not contain NUL (U+0000)")]
    Nul,
    /// A control character other than tab, line feed and carriage return: C0 controls, DEL
    /// and the C1 controls (U+0080 to U+009F).
    #[error("must not contain the control character U+{0:04X}")]
    Control(u32),
}

/// The one rule every text a client sends must pass before it is stored, compared or echoed:
/// no NUL and no control character except tab, line feed and carriage return (which message
/// bodies and descriptions may carry). Names and labels add their own, stricter rules
/// ([`normalize_label`]) after this one. Reports the first offending character.
///
/// Lone surrogates cannot occur in a Rust `str`; the JSON reader either refuses their escapes
/// or (a high surrogate not followed by `\u`) yields NUL, which this refuses.
pub fn check_text(text: &str) -> Result<(), TextError> {
    // Fast path: most texts are printable ASCII or plain UTF-8 without controls.
    if !text.bytes().any(|b| b < 0x20 || b == 0x7F || b == 0xC2) {
        return Ok(());
    }
    match text
        .chars()
        .find(|&c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        None => Ok(()),
        Some('\0') => Err(TextError::Nul),
        Some(c) => Err(TextError::Control(u32::from(c))),
    }
}

/// Finds the `@uid_…`, `@here` and `@channel` mentions of a message body, in order, at most
/// [`MAX_MENTIONS_PER_MESSAGE`] of them; every occurrence is reported, repeats included.
///
/// A token counts only where its `@` starts the body or follows a character that is not
/// alphanumeric, `_`, `.` or `-` (so the `@` of `ann@uid_1.example` is not a mention). After
/// `@uid_` come 1 to [`MAX_ID_CHARS`] characters of `[A-Za-z0-9_-]`, taken greedily; a longer
/// run cannot be a uid and is not a mention at all (rather than a mention of its prefix).
/// `@here` and `@channel` count only when the body ends after them or the next character is not
/// `[A-Za-z0-9_]` (so `@heresy` is not a mention). Tokens are case-sensitive, as the client
/// writes them. Offsets are in UTF-16 code units.
pub fn parse_mentions(body: &str) -> Vec<MentionSpan> {
    let mut spans = Vec::new();
    let mut prev: Option<char> = None;
    let mut utf16_offset = 0;
    for (index, c) in body.char_indices() {
        if c == '@'
            && prev.is_none_or(can_precede_mention)
            && let Some((kind, len)) = mention_at(&body[index + 1..])
        {
            let token = &body[index..index + 1 + len];
            let target = match kind {
                MentionKind::User => &token[1..],
                MentionKind::Here => "here",
                MentionKind::Channel => "channel",
            };
            spans.push(MentionSpan {
                kind,
                token: token.to_owned(),
                target: target.to_owned(),
                start: utf16_offset,
                // Tokens are ASCII: one UTF-16 unit per byte.
                end: utf16_offset + token.len(),
            });
            if spans.len() == MAX_MENTIONS_PER_MESSAGE {
                break;
            }
        }
        utf16_offset += c.len_utf16();
        prev = Some(c);
    }
    spans
}

/// Whether a mention's `@` may follow `c`: not inside a word, an e-mail address or an id.
fn can_precede_mention(c: char) -> bool {
    !(c.is_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The mention starting right after an `@`, with the byte length of what follows the `@`.
fn mention_at(rest: &str) -> Option<(MentionKind, usize)> {
    if let Some(id) = rest.strip_prefix("uid_") {
        let run = id.bytes().take_while(|&b| is_id_byte(b)).count();
        return (1..=MAX_ID_CHARS)
            .contains(&run)
            .then_some((MentionKind::User, "uid_".len() + run));
    }
    for (word, kind) in [
        ("here", MentionKind::Here),
        ("channel", MentionKind::Channel),
    ] {
        if let Some(after) = rest.strip_prefix(word) {
            let ends = after
                .bytes()
                .next()
                .is_none_or(|b| !(b.is_ascii_alphanumeric() || b == b'_'));
            return ends.then_some((kind, word.len()));
        }
    }
    None
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Normalizes a display name: NFC, trimmed, 1 to [`DISPLAY_NAME_MAX_CHARS`] chars, without
/// control characters, line or paragraph separators, or bidirectional overrides.
pub fn normalize_display_name(raw: &str) -> Result<String, NameError> {
    normalize_label(raw, DISPLAY_NAME_MAX_CHARS)
}

/// Normalizes a one-line label (server, channel or category name) as [`normalize_display_name`]
/// does, with a caller-given maximum in chars (for example [`SERVER_NAME_MAX_CHARS`]).
pub fn normalize_label(raw: &str, max_chars: usize) -> Result<String, NameError> {
    let text = normalize(raw, false, max_chars)?;
    if text.is_empty() {
        return Err(NameError::Empty);
    }
    Ok(text)
}

/// Normalizes a server description: as [`normalize_label`] with [`SERVER_DESCRIPTION_MAX_CHARS`],
/// except that it may be empty and may contain line breaks (`\r\n` becomes `\n`; a lone `\r` and
/// other control characters are still refused).
pub fn normalize_description(raw: &str) -> Result<String, NameError> {
    normalize(raw, true, SERVER_DESCRIPTION_MAX_CHARS)
}

fn normalize(raw: &str, multiline: bool, max_chars: usize) -> Result<String, NameError> {
    let normalized: String = if multiline {
        raw.replace("\r\n", "\n").nfc().collect()
    } else {
        raw.nfc().collect()
    };
    let text = normalized.trim();
    if text
        .chars()
        .any(|c| is_forbidden_char(c) && !(multiline && c == '\n'))
    {
        return Err(NameError::InvalidCharacter);
    }
    if text.chars().count() > max_chars {
        return Err(NameError::TooLong { max: max_chars });
    }
    Ok(text.to_owned())
}

/// Characters a name may not contain: Unicode `Cc` controls, the line and paragraph separators,
/// and the bidirectional embeddings, overrides and isolates (which let a name reorder the text
/// displayed after it). Other format characters such as the zero-width joiner of emoji sequences
/// are allowed.
fn is_forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// The text of a generated avatar: 1 or 2 characters, uppercase where that maps to one char.
///
/// The first alphanumeric characters of the first two words that have one (`Ada Lovelace` → `AL`);
/// else the first two alphanumeric characters of the one such word (`ada` → `AD`, `x` → `X`);
/// else the first character of the name (an emoji, say); else `?`. Never empty.
pub fn icon_text(display_name: &str) -> String {
    let name: String = display_name.nfc().collect();
    let initials: Vec<char> = name
        .split_whitespace()
        .filter_map(|word| word.chars().find(|c| c.is_alphanumeric()))
        .take(ICON_TEXT_MAX_CHARS)
        .collect();
    let chosen: Vec<char> = if initials.len() == ICON_TEXT_MAX_CHARS {
        initials
    } else if initials.len() == 1 {
        name.chars()
            .filter(|c| c.is_alphanumeric())
            .take(ICON_TEXT_MAX_CHARS)
            .collect()
    } else {
        name.chars()
            .find(|c| !c.is_whitespace())
            .into_iter()
            .collect()
    };
    if chosen.is_empty() {
        return "?".to_owned();
    }
    chosen.into_iter().map(uppercase_one).collect()
}

/// `c` in uppercase when that is a single char (`ß` would become `SS`, so it stays `ß`).
fn uppercase_one(c: char) -> char {
    let mut upper = c.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

/// The `preview_text` of a reply: whitespace runs (newlines included) collapsed to one space,
/// trimmed, then cut to [`REPLY_PREVIEW_MAX_CHARS`] chars with `…` appended when cut.
pub fn preview_text(body: &str) -> String {
    let mut out = String::new();
    let mut chars = 0;
    let mut cut = false;
    for word in body.split_whitespace() {
        if chars > 0 {
            if chars == REPLY_PREVIEW_MAX_CHARS {
                cut = true;
                break;
            }
            out.push(' ');
            chars += 1;
        }
        for c in word.chars() {
            if chars == REPLY_PREVIEW_MAX_CHARS {
                cut = true;
                break;
            }
            out.push(c);
            chars += 1;
        }
        if cut {
            break;
        }
    }
    if cut {
        out.truncate(out.trim_end().len());
        out.push('…');
    }
    out
}

/// Whether `s` is an id a client may give: 1 to [`MAX_ID_CHARS`] characters of `[A-Za-z0-9_-]`.
pub fn is_valid_id(s: &str) -> bool {
    (1..=MAX_ID_CHARS).contains(&s.len()) && s.bytes().all(is_id_byte)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utf16_slice(body: &str, start: usize, end: usize) -> String {
        let units: Vec<u16> = body.encode_utf16().collect();
        String::from_utf16(&units[start..end]).unwrap()
    }

    fn tokens(body: &str) -> Vec<String> {
        parse_mentions(body).into_iter().map(|s| s.token).collect()
    }

    #[test]
    fn text_rule_refuses_nul_and_controls_but_keeps_tab_and_line_breaks() {
        assert_eq!(check_text(""), Ok(()));
        assert_eq!(check_text("plain text, émoji 😀, 中文"), Ok(()));
        assert_eq!(check_text("tab\there\nline\r\nnext"), Ok(()));
        // U+00A0 and other characters starting with the byte C2 are fine.
        assert_eq!(check_text("no\u{a0}break ©"), Ok(()));
        assert_eq!(check_text("a\u{0}b"), Err(TextError::Nul));
        assert_eq!(check_text("\u{0}"), Err(TextError::Nul));
        assert_eq!(check_text("bell\u{7}"), Err(TextError::Control(7)));
        assert_eq!(check_text("\u{1b}[31mred"), Err(TextError::Control(0x1B)));
        assert_eq!(check_text("del\u{7f}"), Err(TextError::Control(0x7F)));
        assert_eq!(check_text("c1\u{85}"), Err(TextError::Control(0x85)));
        assert_eq!(check_text("c1\u{9f}"), Err(TextError::Control(0x9F)));
        // The first offender is reported.
        assert_eq!(check_text("\u{1}\u{0}"), Err(TextError::Control(1)));
        assert!(TextError::Nul.to_string().contains("NUL"));
        assert_eq!(
            TextError::Control(0x1B).to_string(),
            "must not contain the control character U+001B"
        );
    }

    #[test]
    fn lone_surrogate_escapes_never_reach_storage_as_text() {
        // What the API's JSON reader does with them: refuses, or yields NUL, which the rule
        // refuses. Either way no such text is accepted.
        #[derive(serde::Deserialize)]
        struct Body {
            body: String,
        }
        for raw in [
            r#"{"body":"x\ud800y"}"#,
            r#"{"body":"\ud800"}"#,
            r#"{"body":"\udc00"}"#,
            r#"{"body":"\ud800\u0041"}"#,
            r#"{"body":"a\u0000b"}"#,
        ] {
            let mut bytes = raw.as_bytes().to_vec();
            if let Ok(parsed) = simd_json::serde::from_slice::<Body>(&mut bytes) {
                assert!(
                    check_text(&parsed.body).is_err(),
                    "{raw} gave {:?}",
                    parsed.body
                );
            }
        }
        // A proper pair is one character and passes.
        let mut pair = br#"{"body":"\ud83d\ude00"}"#.to_vec();
        let parsed: Body = simd_json::serde::from_slice(&mut pair).unwrap();
        assert_eq!(parsed.body, "😀");
        assert_eq!(check_text(&parsed.body), Ok(()));
    }

    proptest! {
        #[test]
        fn text_rule_matches_its_definition(s in "(\\PC|[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}]){0,40}") {
            let bad = s.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'));
            prop_assert_eq!(check_text(&s).is_err(), bad);
        }
    }

    #[test]
    fn finds_user_here_and_channel() {
        let spans = parse_mentions("hi @uid_ab12cd34, @here and @channel!");
        assert_eq!(spans.len(), 3);
        assert_eq!(
            spans[0],
            MentionSpan {
                kind: MentionKind::User,
                token: "@uid_ab12cd34".into(),
                target: "uid_ab12cd34".into(),
                start: 3,
                end: 16,
            }
        );
        assert_eq!(spans[1].kind, MentionKind::Here);
        assert_eq!(spans[1].target, "here");
        assert_eq!((spans[1].start, spans[1].end), (18, 23));
        assert_eq!(spans[2].kind, MentionKind::Channel);
        assert_eq!(spans[2].token, "@channel");
        assert_eq!(spans[2].target, "channel");
        assert_eq!((spans[2].start, spans[2].end), (28, 36));
    }

    #[test]
    fn mention_at_start_and_end_of_body() {
        assert_eq!(tokens("@here"), ["@here"]);
        assert_eq!(tokens("@uid_x"), ["@uid_x"]);
        assert_eq!(tokens("ping @channel"), ["@channel"]);
    }

    #[test]
    fn kind_wire_names() {
        assert_eq!(MentionKind::User.as_str(), "user");
        assert_eq!(MentionKind::Here.as_str(), "here");
        assert_eq!(MentionKind::Channel.as_str(), "channel");
    }

    #[test]
    fn utf16_offsets_after_emoji_and_non_bmp_text() {
        // 😀 is one char but two UTF-16 units; 𝒳 (U+1D4B3) likewise; é is one unit.
        let body = "😀 é𝒳 @uid_abc and @here";
        let spans = parse_mentions(body);
        assert_eq!(spans.len(), 2);
        assert_eq!((spans[0].start, spans[0].end), (7, 15));
        assert_eq!((spans[1].start, spans[1].end), (20, 25));
        for span in &spans {
            assert_eq!(utf16_slice(body, span.start, span.end), span.token);
        }
    }

    #[test]
    fn utf16_offsets_after_combining_and_zwj_sequences() {
        let body = "👨\u{200D}👩\u{200D}👧 e\u{301} @channel";
        let spans = parse_mentions(body);
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].start, 12);
        assert_eq!(utf16_slice(body, spans[0].start, spans[0].end), "@channel");
    }

    #[test]
    fn email_and_word_internal_at_signs_are_not_mentions() {
        assert!(parse_mentions("mail a@uid_1 now").is_empty());
        assert!(parse_mentions("x.@here").is_empty());
        assert!(parse_mentions("x-@here").is_empty());
        assert!(parse_mentions("x_@here").is_empty());
        assert!(parse_mentions("é@here").is_empty());
        assert!(parse_mentions("7@channel").is_empty());
    }

    #[test]
    fn punctuation_and_brackets_may_precede_a_mention() {
        assert_eq!(
            tokens("(@here) [@uid_a] \"@channel\" ,@uid_b\n@uid_c"),
            ["@here", "@uid_a", "@channel", "@uid_b", "@uid_c"]
        );
    }

    #[test]
    fn here_and_channel_need_a_word_boundary_after() {
        assert!(parse_mentions("@heresy").is_empty());
        assert!(parse_mentions("@channels").is_empty());
        assert!(parse_mentions("@here_now").is_empty());
        assert!(parse_mentions("@here2").is_empty());
        assert_eq!(tokens("@here, @here. @here-ish @here!"), ["@here"; 4]);
    }

    #[test]
    fn tokens_are_case_sensitive() {
        assert!(parse_mentions("@HERE @Channel @UID_abc @Uid_abc").is_empty());
    }

    #[test]
    fn user_mention_is_greedy_over_id_chars() {
        let spans = parse_mentions("@uid_ab-12_CD.rest");
        assert_eq!(spans[0].target, "uid_ab-12_CD");
        assert_eq!(spans[0].end, 13);
    }

    #[test]
    fn user_mention_needs_one_to_64_id_chars() {
        assert!(parse_mentions("@uid_").is_empty());
        assert!(parse_mentions("@uid_ here").is_empty());
        let max = format!("@uid_{}", "a".repeat(MAX_ID_CHARS));
        assert_eq!(tokens(&max), std::slice::from_ref(&max));
        let over = format!("@uid_{} @here", "a".repeat(MAX_ID_CHARS + 1));
        assert_eq!(tokens(&over), ["@here"]);
    }

    #[test]
    fn adjacent_tokens_do_not_chain() {
        // The second `@` follows an id character, so it is not a mention.
        assert_eq!(tokens("@uid_a@here"), ["@uid_a"]);
        // The first `@here` ends at a non-word char, the second follows its `e`.
        assert_eq!(tokens("@here@here"), ["@here"]);
        assert_eq!(tokens("@@here"), ["@here"]);
    }

    #[test]
    fn duplicates_are_each_reported() {
        let spans = parse_mentions("@uid_a @uid_a @uid_a");
        assert_eq!(spans.len(), 3);
        let starts: Vec<usize> = spans.iter().map(|s| s.start).collect();
        assert_eq!(starts, [0, 7, 14]);
    }

    #[test]
    fn caps_at_max_mentions() {
        let body = "@uid_a ".repeat(MAX_MENTIONS_PER_MESSAGE + 10);
        let spans = parse_mentions(&body);
        assert_eq!(spans.len(), MAX_MENTIONS_PER_MESSAGE);
        assert_eq!(
            spans.last().unwrap().start,
            7 * (MAX_MENTIONS_PER_MESSAGE - 1)
        );
    }

    #[test]
    fn no_mentions_in_plain_text() {
        assert!(parse_mentions("").is_empty());
        assert!(parse_mentions("@ @@ @uid @hero uid_abc").is_empty());
    }

    #[test]
    fn display_name_is_trimmed_and_nfc() {
        assert_eq!(normalize_display_name("  Ada  ").unwrap(), "Ada");
        // e + combining acute becomes the precomposed é.
        assert_eq!(normalize_display_name("Rene\u{301}").unwrap(), "René");
        assert_eq!(normalize_display_name("Zoë Ø").unwrap(), "Zoë Ø");
    }

    #[test]
    fn display_name_length_counts_chars_after_nfc() {
        // 32 decomposed é are 64 chars raw but 32 after NFC.
        let raw = "e\u{301}".repeat(DISPLAY_NAME_MAX_CHARS);
        assert_eq!(
            normalize_display_name(&raw).unwrap().chars().count(),
            DISPLAY_NAME_MAX_CHARS
        );
        let emoji = "😀".repeat(DISPLAY_NAME_MAX_CHARS);
        assert!(normalize_display_name(&emoji).is_ok());
        assert_eq!(
            normalize_display_name(&"a".repeat(DISPLAY_NAME_MAX_CHARS + 1)),
            Err(NameError::TooLong {
                max: DISPLAY_NAME_MAX_CHARS
            })
        );
        // Surrounding whitespace does not count.
        let padded = format!("  {}  ", "a".repeat(DISPLAY_NAME_MAX_CHARS));
        assert!(normalize_display_name(&padded).is_ok());
    }

    #[test]
    fn display_name_rejects_empty_and_blank() {
        assert_eq!(normalize_display_name(""), Err(NameError::Empty));
        assert_eq!(normalize_display_name(" \t\n "), Err(NameError::Empty));
        assert_eq!(normalize_display_name("\u{3000}"), Err(NameError::Empty));
        assert_eq!(DISPLAY_NAME_MIN_CHARS, 1);
        assert!(normalize_display_name("x").is_ok());
    }

    #[test]
    fn display_name_rejects_controls_and_separators() {
        for bad in [
            "a\nb",
            "a\tb",
            "a\rb",
            "a\u{0}b",
            "a\u{7f}b",
            "a\u{85}b",
            "a\u{2028}b",
            "a\u{2029}b",
            "a\u{202E}b",
            "a\u{2067}b",
        ] {
            assert_eq!(
                normalize_display_name(bad),
                Err(NameError::InvalidCharacter),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn display_name_allows_emoji_sequences() {
        let family = "👨\u{200D}👩\u{200D}👧 family";
        assert_eq!(normalize_display_name(family).unwrap(), family);
        assert!(normalize_display_name("❤\u{FE0F} ok").is_ok());
    }

    #[test]
    fn labels_take_the_callers_maximum() {
        let server = "s".repeat(SERVER_NAME_MAX_CHARS);
        assert!(normalize_label(&server, SERVER_NAME_MAX_CHARS).is_ok());
        assert_eq!(
            normalize_label(&format!("{server}s"), SERVER_NAME_MAX_CHARS),
            Err(NameError::TooLong {
                max: SERVER_NAME_MAX_CHARS
            })
        );
        assert_eq!(
            normalize_label(&"c".repeat(65), CHANNEL_NAME_MAX_CHARS),
            Err(NameError::TooLong { max: 64 })
        );
        assert!(normalize_label(&"c".repeat(64), CATEGORY_NAME_MAX_CHARS).is_ok());
        assert_eq!(
            normalize_label("  ", CHANNEL_NAME_MAX_CHARS),
            Err(NameError::Empty)
        );
        assert_eq!(
            normalize_label("a\nb", CHANNEL_NAME_MAX_CHARS),
            Err(NameError::InvalidCharacter)
        );
    }

    #[test]
    fn description_may_be_empty_and_multiline() {
        assert_eq!(normalize_description("").unwrap(), "");
        assert_eq!(normalize_description("  \n ").unwrap(), "");
        assert_eq!(
            normalize_description("\n Line one\r\nline two\n\n").unwrap(),
            "Line one\nline two"
        );
        assert_eq!(
            normalize_description("a\tb"),
            Err(NameError::InvalidCharacter)
        );
        assert_eq!(
            normalize_description("a\rb"),
            Err(NameError::InvalidCharacter)
        );
        assert_eq!(
            normalize_description("a\u{2028}b"),
            Err(NameError::InvalidCharacter)
        );
        assert!(normalize_description(&"d".repeat(SERVER_DESCRIPTION_MAX_CHARS)).is_ok());
        assert_eq!(
            normalize_description(&"d".repeat(SERVER_DESCRIPTION_MAX_CHARS + 1)),
            Err(NameError::TooLong { max: 500 })
        );
    }

    #[test]
    fn name_errors_display() {
        assert_eq!(NameError::Empty.to_string(), "must not be empty");
        assert_eq!(
            NameError::TooLong { max: 32 }.to_string(),
            "must be at most 32 characters"
        );
        assert!(NameError::InvalidCharacter.to_string().contains("control"));
    }

    #[test]
    fn icon_text_cases() {
        assert_eq!(icon_text("Ada Lovelace"), "AL");
        assert_eq!(icon_text("ada lovelace byron"), "AL");
        assert_eq!(icon_text("ada"), "AD");
        assert_eq!(icon_text("x"), "X");
        assert_eq!(icon_text("  (bob)  [smith] "), "BS");
        assert_eq!(icon_text("🎉 party"), "PA");
        assert_eq!(icon_text("🎉"), "🎉");
        assert_eq!(icon_text("!!"), "!");
        assert_eq!(icon_text(""), "?");
        assert_eq!(icon_text("   "), "?");
        assert_eq!(icon_text("élan vital"), "ÉV");
        assert_eq!(icon_text("e\u{301}lan"), "ÉL");
        assert_eq!(icon_text("ßtraße"), "ßT");
        assert_eq!(icon_text("中文 名字"), "中名");
        assert_eq!(icon_text("r2d2"), "R2");
    }

    #[test]
    fn preview_collapses_whitespace_and_trims() {
        assert_eq!(preview_text("  hello \n\n  world\t! "), "hello world !");
        assert_eq!(preview_text(""), "");
        assert_eq!(preview_text(" \n "), "");
    }

    #[test]
    fn preview_cuts_with_ellipsis() {
        let exact = "a".repeat(REPLY_PREVIEW_MAX_CHARS);
        assert_eq!(preview_text(&exact), exact);
        // Trailing whitespace past the limit is not a cut.
        assert_eq!(preview_text(&format!("{exact}  \n")), exact);
        let long = "b".repeat(REPLY_PREVIEW_MAX_CHARS + 1);
        assert_eq!(
            preview_text(&long),
            format!("{}…", "b".repeat(REPLY_PREVIEW_MAX_CHARS))
        );
        // A cut right after a space does not leave "word …".
        let words = format!("{} tail", "c".repeat(REPLY_PREVIEW_MAX_CHARS - 1));
        assert_eq!(
            preview_text(&words),
            format!("{}…", "c".repeat(REPLY_PREVIEW_MAX_CHARS - 1))
        );
        // Counted in chars, not bytes.
        let emoji = "😀".repeat(REPLY_PREVIEW_MAX_CHARS + 5);
        assert_eq!(
            preview_text(&emoji).chars().count(),
            REPLY_PREVIEW_MAX_CHARS + 1
        );
        // Collapsing happens before counting.
        let spaced = format!("x{}y", " \n".repeat(500));
        assert_eq!(preview_text(&spaced), "x y");
    }

    #[test]
    fn valid_ids() {
        assert!(is_valid_id("uid_ab12cd34"));
        assert!(is_valid_id("desktop_Ab-9"));
        assert!(is_valid_id("a"));
        assert!(is_valid_id(&"z".repeat(MAX_ID_CHARS)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id(&"z".repeat(MAX_ID_CHARS + 1)));
        assert!(!is_valid_id("a b"));
        assert!(!is_valid_id("a.b"));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id("é"));
        assert!(!is_valid_id("a\n"));
    }

    proptest! {
        #[test]
        fn mention_offsets_index_the_token_in_utf16(body in "(\\PC|[ @_.-]|@uid_[a-z0-9_-]{1,5}|@here|@channel){0,40}") {
            let spans = parse_mentions(&body);
            prop_assert!(spans.len() <= MAX_MENTIONS_PER_MESSAGE);
            let mut last_end = 0;
            for span in &spans {
                prop_assert!(span.start >= last_end);
                prop_assert_eq!(utf16_slice(&body, span.start, span.end), span.token.clone());
                prop_assert!(span.token.starts_with('@'));
                match span.kind {
                    MentionKind::User => {
                        prop_assert_eq!(&span.token[1..], span.target.as_str());
                        prop_assert!(is_valid_id(&span.target));
                    }
                    MentionKind::Here => prop_assert_eq!(span.token.as_str(), "@here"),
                    MentionKind::Channel => prop_assert_eq!(span.token.as_str(), "@channel"),
                }
                last_end = span.end;
            }
        }

        #[test]
        fn separated_user_mentions_are_all_found(ids in proptest::collection::vec("[A-Za-z0-9_-]{1,64}", 0..60)) {
            let body: String = ids.iter().map(|id| format!("😀 @uid_{id} ")).collect();
            let spans = parse_mentions(&body);
            prop_assert_eq!(spans.len(), ids.len().min(MAX_MENTIONS_PER_MESSAGE));
            for (span, id) in spans.iter().zip(&ids) {
                prop_assert_eq!(span.target.clone(), format!("uid_{id}"));
            }
        }

        #[test]
        fn label_normalization_is_idempotent(raw in "\\PC{0,80}") {
            if let Ok(once) = normalize_label(&raw, SERVER_NAME_MAX_CHARS) {
                prop_assert!(!once.is_empty());
                prop_assert!(once.chars().count() <= SERVER_NAME_MAX_CHARS);
                prop_assert_eq!(normalize_label(&once, SERVER_NAME_MAX_CHARS), Ok(once.clone()));
            }
            if let Ok(once) = normalize_description(&raw) {
                prop_assert_eq!(normalize_description(&once), Ok(once.clone()));
            }
        }

        #[test]
        fn icon_text_is_one_or_two_chars(raw in "\\PC{0,40}") {
            let icon = icon_text(&raw);
            let n = icon.chars().count();
            prop_assert!((1..=ICON_TEXT_MAX_CHARS).contains(&n), "{:?} -> {:?}", raw, icon);
        }

        #[test]
        fn preview_is_bounded_and_single_spaced(raw in "(\\PC|\\s){0,300}") {
            let preview = preview_text(&raw);
            prop_assert!(preview.chars().count() <= REPLY_PREVIEW_MAX_CHARS + 1);
            prop_assert!(!preview.contains("  "));
            prop_assert!(!preview.contains('\n'));
            prop_assert_eq!(preview.trim(), preview.as_str());
        }

        #[test]
        fn ids_match_their_definition(s in "[A-Za-z0-9_.@ -]{0,70}") {
            let expected = (1..=64).contains(&s.len())
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            prop_assert_eq!(is_valid_id(&s), expected);
        }
    }
}
