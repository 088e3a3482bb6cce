//! Every JSON document the server parses from the network (request bodies, realtime and
//! signaling frames, voice ticket claims) goes through this module, which puts one bound on it:
//! nesting depth. simd-json finds structure without recursion, but turning its tape into a value
//! or a typed struct recurses once per level, and so does dropping the value: a 40 KB body of
//! 20,000 `[` overflowed a shard's stack and aborted the whole process. A [`DepthScan`] over the
//! raw bytes (strings and their escapes skipped, nothing allocated) refuses anything nested
//! deeper than [`MAX_JSON_DEPTH`] before simd-json sees it.
//!
//! Sans-IO: bytes in, a value or a [`JsonError`] out.

use serde::de::DeserializeOwned;

/// Deepest nesting of arrays and objects accepted in any JSON from the network; `[]` is depth 1.
/// The deepest documents of the wire contract are 3 levels deep (a channel layout
/// `{groups: [{id, channel_ids: [..]}]}`, bulk read marks `{read_acks: [{..}]}`, a realtime
/// frame with its payload), so 64 leaves room for any honest client while keeping the recursion
/// of value building, serde and drop far from the
/// end of a thread's stack (64 levels use a few KiB of the 2 MiB a Rust thread gets).
pub const MAX_JSON_DEPTH: usize = 64;

/// Why a JSON document was refused. The text is what the client reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("JSON nested deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep,
    /// Not JSON, or not the expected shape (simd-json's description).
    #[error("{0}")]
    Invalid(String),
}

/// A resumable scan for the nesting depth of a JSON text, fed in pieces. It counts `[`/`{` and
/// `]`/`}` outside strings and skips string contents (escaped quotes included); it does not
/// validate anything else, which is simd-json's job afterwards (a stray `]` just lowers the
/// count and the parse then fails). One byte of state per flag, no allocation.
#[derive(Debug, Clone, Default)]
pub struct DepthScan {
    depth: usize,
    deepest: usize,
    in_string: bool,
    /// The previous byte was a backslash inside a string.
    escaped: bool,
}

impl DepthScan {
    pub fn new() -> DepthScan {
        DepthScan::default()
    }

    /// Scans the next piece of the text. `Err(TooDeep)` as soon as the nesting passes `max`
    /// (the rest of the piece is not looked at; the scan should not be fed further).
    pub fn feed(&mut self, piece: &[u8], max: usize) -> Result<(), JsonError> {
        let mut i = 0;
        while i < piece.len() {
            if self.in_string {
                // Only a quote or a backslash matters in a string: skip to the next one.
                if self.escaped {
                    self.escaped = false;
                    i += 1;
                    continue;
                }
                match piece[i..].iter().position(|&b| b == b'"' || b == b'\\') {
                    None => return Ok(()),
                    Some(at) => {
                        i += at;
                        if piece[i] == b'\\' {
                            self.escaped = true;
                        } else {
                            self.in_string = false;
                        }
                    }
                }
            } else {
                match piece[i] {
                    b'"' => self.in_string = true,
                    b'[' | b'{' => {
                        self.depth += 1;
                        if self.depth > max {
                            self.deepest = self.depth;
                            return Err(JsonError::TooDeep);
                        }
                        self.deepest = self.deepest.max(self.depth);
                    }
                    b']' | b'}' => self.depth = self.depth.saturating_sub(1),
                    _ => {}
                }
            }
            i += 1;
        }
        Ok(())
    }

    /// The deepest nesting seen so far.
    pub fn deepest(&self) -> usize {
        self.deepest
    }
}

/// Refuses `bytes` if arrays and objects nest deeper than [`MAX_JSON_DEPTH`].
pub fn check_depth(bytes: &[u8]) -> Result<(), JsonError> {
    DepthScan::new().feed(bytes, MAX_JSON_DEPTH)
}

/// `bytes` as `T` (simd-json parses in place, so the buffer is scratch afterwards).
pub fn from_slice<T: DeserializeOwned>(bytes: &mut [u8]) -> Result<T, JsonError> {
    check_depth(bytes)?;
    simd_json::serde::from_slice(bytes).map_err(|e| JsonError::Invalid(e.to_string()))
}

/// `bytes` as a value borrowing its strings from the buffer.
pub fn to_borrowed_value(bytes: &mut [u8]) -> Result<simd_json::BorrowedValue<'_>, JsonError> {
    check_depth(bytes)?;
    simd_json::to_borrowed_value(bytes).map_err(|e| JsonError::Invalid(e.to_string()))
}

/// `bytes` as an owned value.
pub fn to_owned_value(bytes: &mut [u8]) -> Result<simd_json::OwnedValue, JsonError> {
    check_depth(bytes)?;
    simd_json::to_owned_value(bytes).map_err(|e| JsonError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(open: &str, close: &str, levels: usize) -> Vec<u8> {
        format!("{}{}", open.repeat(levels), close.repeat(levels)).into_bytes()
    }

    fn depth_of(text: &[u8]) -> usize {
        let mut scan = DepthScan::new();
        scan.feed(text, usize::MAX).unwrap();
        scan.deepest()
    }

    #[test]
    fn depth_exactly_at_the_limit_passes_and_one_more_fails() {
        for (open, close) in [("[", "]"), ("{\"a\":", "}"), ("[{\"k\":", "}]")] {
            let per = open.matches(['[', '{']).count();
            let at = nested(open, close, MAX_JSON_DEPTH / per);
            assert_eq!(depth_of(&at), MAX_JSON_DEPTH);
            assert_eq!(check_depth(&at), Ok(()));
            let mut deeper = b"[".to_vec();
            deeper.extend_from_slice(&at);
            deeper.push(b']');
            assert_eq!(check_depth(&deeper), Err(JsonError::TooDeep));
        }
        let mut ok = nested("[", "]", MAX_JSON_DEPTH);
        assert!(to_owned_value(&mut ok).is_ok());
        let mut too_deep = nested("[", "]", MAX_JSON_DEPTH + 1);
        assert_eq!(to_owned_value(&mut too_deep), Err(JsonError::TooDeep));
    }

    #[test]
    fn scalars_and_siblings_do_not_add_depth() {
        assert_eq!(depth_of(b"42"), 0);
        assert_eq!(depth_of(b"\"[[[\""), 0);
        assert_eq!(depth_of(b"[]"), 1);
        assert_eq!(depth_of(b"[[],[],{\"a\":[]}]"), 3);
        // Many siblings at depth 1 are fine however many there are.
        let wide = format!("[{}[]]", "[],".repeat(10_000));
        assert_eq!(depth_of(wide.as_bytes()), 2);
        assert_eq!(check_depth(wide.as_bytes()), Ok(()));
    }

    #[test]
    fn brackets_inside_strings_and_escaped_quotes_do_not_count() {
        let text = br#"{"a":"[[[{{{\"[[[\\","b":["]]]\"{{{"]}"#;
        assert_eq!(depth_of(text), 2);
        let mut copy = text.to_vec();
        assert!(
            to_owned_value(&mut copy).is_ok(),
            "the sample is valid JSON"
        );
        // A string of brackets far longer than the limit is no deeper than its container.
        let long = format!("[\"{}\"]", "[".repeat(10_000));
        assert_eq!(check_depth(long.as_bytes()), Ok(()));
        // An escaped backslash ends before the quote: the quote closes the string.
        assert_eq!(depth_of(br#"["\\", [1]]"#), 2);
        // An escaped quote does not close it: the bracket after is still inside.
        assert_eq!(depth_of(br#"["\"[", 1]"#), 1);
        // \u escapes hold no quote or bracket to confuse the scan.
        assert_eq!(depth_of(br#"["\u005b\u0022", []]"#), 2);
    }

    #[test]
    fn a_split_input_scans_as_the_whole() {
        let samples: Vec<Vec<u8>> = vec![
            br#"{"a":"[[[{{{\"[[[\\","b":["]]]\"{{{",[[{"c":"\\\""}]]]}"#.to_vec(),
            nested("[", "]", MAX_JSON_DEPTH),
            nested("[", "]", MAX_JSON_DEPTH + 1),
            nested("{\"\\\"\":", "}", MAX_JSON_DEPTH + 1),
        ];
        for text in samples {
            let mut whole = DepthScan::new();
            let whole_result = whole.feed(&text, MAX_JSON_DEPTH);
            for cut in 0..=text.len() {
                let mut split = DepthScan::new();
                let result = split
                    .feed(&text[..cut], MAX_JSON_DEPTH)
                    .and_then(|()| split.feed(&text[cut..], MAX_JSON_DEPTH));
                assert_eq!(result, whole_result, "cut at {cut}");
                assert_eq!(split.deepest(), whole.deepest(), "cut at {cut}");
            }
            // Byte by byte.
            let mut bytes = DepthScan::new();
            let result = text
                .iter()
                .try_for_each(|b| bytes.feed(std::slice::from_ref(b), MAX_JSON_DEPTH));
            assert_eq!(result, whole_result);
        }
    }

    #[test]
    fn twenty_thousand_levels_are_refused_without_recursion() {
        for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
            let mut text = nested(open, close, 20_000);
            assert_eq!(to_owned_value(&mut text.clone()), Err(JsonError::TooDeep));
            assert_eq!(to_borrowed_value(&mut text), Err(JsonError::TooDeep));
        }
        // Unclosed: the scan refuses it before the end.
        let mut open = "[".repeat(20_000).into_bytes();
        assert_eq!(
            from_slice::<simd_json::OwnedValue>(&mut open),
            Err(JsonError::TooDeep)
        );
    }

    #[test]
    fn typed_parses_report_the_problem() {
        #[derive(serde::Deserialize, Debug)]
        struct Body {
            #[allow(dead_code)]
            name: String,
        }
        let err = from_slice::<Body>(&mut br#"{"name": 5}"#.to_vec()).unwrap_err();
        assert!(matches!(err, JsonError::Invalid(_)), "{err:?}");
        assert!(from_slice::<Body>(&mut br#"{"name": "x"}"#.to_vec()).is_ok());
        assert!(matches!(
            to_owned_value(&mut b"[1,".to_vec()),
            Err(JsonError::Invalid(_))
        ));
    }
}
