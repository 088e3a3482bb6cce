//! Percent-decoding and query strings. [`percent_decode`] is the strict decoder used for path
//! parameters (bad escapes or non-UTF-8 are refused). [`query_pairs`] reads
//! `application/x-www-form-urlencoded` query strings the way browsers write them and the WHATWG
//! URL standard reads them: `+` is a space, a `%` not followed by two hex digits is kept as is,
//! and bytes that do not form UTF-8 become U+FFFD (lossy, so one odd parameter never hides the
//! others). Both borrow from the input when there is nothing to decode.

use std::borrow::Cow;

use super::scan::find_byte;

/// Strictly percent-decodes `s` (`+` is left alone): `None` on a malformed escape or if the
/// decoded bytes are not UTF-8.
pub fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    let bytes = s.as_bytes();
    let Some(first) = find_byte(bytes, b'%') else {
        return Some(Cow::Borrowed(s));
    };
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..first]);
    let mut i = first;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(hex_pair(bytes.get(i + 1..i + 3)?)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// The `(name, value)` pairs of a query string, decoded as form data. Empty pieces (`a=1&&b=2`)
/// are skipped; a piece without `=` has an empty value.
pub fn query_pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            (form_decode(name), form_decode(value))
        })
}

/// Lenient form decoding; see the module documentation.
fn form_decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                if let Some(b) = bytes.get(i + 1..i + 3).and_then(hex_pair) {
                    out.push(b);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

fn hex_pair(pair: &[u8]) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    match pair {
        [hi, lo] => Some(digit(*hi)? << 4 | digit(*lo)?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        query_pairs(q)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn strict_percent_decoding() {
        assert!(matches!(
            percent_decode("plain-id_1"),
            Some(Cow::Borrowed("plain-id_1"))
        ));
        assert_eq!(percent_decode("a%20b%2fc").as_deref(), Some("a b/c"));
        assert_eq!(percent_decode("caf%C3%A9").as_deref(), Some("café"));
        assert_eq!(percent_decode("a+b").as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%4g"), None);
        assert_eq!(percent_decode("%FF"), None);
        assert_eq!(percent_decode("%C3"), None);
        assert_eq!(percent_decode("%00").as_deref(), Some("\0"));
    }

    #[test]
    fn form_style_query_pairs() {
        assert_eq!(pairs("limit=150"), [("limit".into(), "150".into())]);
        assert_eq!(
            pairs("q=hello+world&before=m%3A1&&flag&empty="),
            [
                ("q".into(), "hello world".into()),
                ("before".into(), "m:1".into()),
                ("flag".into(), String::new()),
                ("empty".into(), String::new()),
            ]
        );
        assert_eq!(pairs("a=1=2"), [("a".into(), "1=2".into())]);
        assert_eq!(pairs("a%2Bb=%2B"), [("a+b".into(), "+".into())]);
        assert_eq!(pairs(""), Vec::<(String, String)>::new());
    }

    #[test]
    fn lenient_on_bad_escapes_and_bytes() {
        assert_eq!(
            pairs("p=100%&q=%zz&r=%4"),
            [
                ("p".into(), "100%".into()),
                ("q".into(), "%zz".into()),
                ("r".into(), "%4".into()),
            ]
        );
        assert_eq!(pairs("n=%FFok"), [("n".into(), "\u{FFFD}ok".into())]);
    }

    #[test]
    fn borrows_when_nothing_to_decode() {
        let (k, v) = query_pairs("limit=150").next().unwrap();
        assert!(matches!(
            (k, v),
            (Cow::Borrowed("limit"), Cow::Borrowed("150"))
        ));
    }

    proptest! {
        #[test]
        fn percent_encoding_round_trips(s in "\\PC{0,40}") {
            let encoded: String = s.bytes().map(|b| format!("%{b:02X}")).collect();
            let decoded = percent_decode(&encoded);
            prop_assert_eq!(decoded.as_deref(), Some(s.as_str()));
            let form: String = s.bytes().map(|b| if b == b' ' { "+".to_string() } else { format!("%{b:02x}") }).collect();
            let decoded = pairs(&format!("k={form}"));
            prop_assert_eq!(decoded, vec![("k".to_string(), s.clone())]);
        }

        #[test]
        fn never_panics(s in "[%+=&a-f0-9\u{e9}]{0,40}") {
            let _ = percent_decode(&s);
            let _ = pairs(&s);
        }
    }
}
