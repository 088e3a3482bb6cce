//! Byte-search primitives shared by the parsers of this folder: finding a line end in a head or
//! chunk-size line, and a multipart delimiter in a body of up to tens of megabytes. The `memchr`
//! crate does the searching (vectorized, chosen at run time for the CPU); this module only fixes
//! the folder's calling convention (haystack first) and its contract that an empty needle is
//! never found, so the parsers do not depend on the crate's argument order or its edge cases.

use memchr::memmem;

/// Index of the first `needle` byte in `hay`.
#[inline]
pub(crate) fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    memchr::memchr(needle, hay)
}

/// Index of the first occurrence of `needle` (non-empty) in `hay`; `None` for an empty needle
/// (`memmem` would report one at 0).
#[inline]
pub(crate) fn find_subslice(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    memmem::find(hay, needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_first_byte_in_every_lane() {
        for len in 0..40 {
            for at in 0..len {
                let mut hay = vec![b'a'; len];
                hay[at] = b'\n';
                if at + 3 < len {
                    hay[at + 3] = b'\n';
                }
                assert_eq!(find_byte(&hay, b'\n'), Some(at), "len {len} at {at}");
            }
            assert_eq!(find_byte(&vec![b'a'; len], b'\n'), None);
        }
    }

    #[test]
    fn high_bytes_do_not_confuse_the_word_scan() {
        let hay = [0xff, 0x80, 0x81, 0x00, 0x0a, 0x8a, 0xff, 0x0b, 0x0a];
        assert_eq!(find_byte(&hay, 0x0a), Some(4));
        assert_eq!(find_byte(&hay, 0x00), Some(3));
        assert_eq!(find_byte(&hay, 0x8a), Some(5));
    }

    #[test]
    fn subslice_search() {
        assert_eq!(find_subslice(b"abc\r\n--xyz", b"\r\n--xyz"), Some(3));
        assert_eq!(find_subslice(b"\r\n--xy\r\n--xyz", b"\r\n--xyz"), Some(6));
        assert_eq!(find_subslice(b"\r\n--xy", b"\r\n--xyz"), None);
        assert_eq!(find_subslice(b"", b"a"), None);
        assert_eq!(find_subslice(b"abc", b""), None);
    }

    #[test]
    fn subslice_search_past_the_short_haystack_path() {
        // memmem switches strategy at 64 bytes of haystack; both sides must agree.
        let delimiter = b"\r\n--boundary-0123456789";
        for len in [0usize, 10, 63, 64, 65, 200, 4096] {
            let mut hay = vec![b'-'; len];
            hay.extend_from_slice(delimiter);
            hay.extend_from_slice(b"tail");
            assert_eq!(find_subslice(&hay, delimiter), Some(len), "len {len}");
            assert_eq!(find_subslice(&hay[..len + 5], delimiter), None, "len {len}");
        }
    }

    proptest! {
        #[test]
        fn agrees_with_naive_search(hay in proptest::collection::vec(any::<u8>(), 0..200), needle in any::<u8>(),
                                    sub in proptest::collection::vec(0u8..3, 1..4)) {
            prop_assert_eq!(find_byte(&hay, needle), hay.iter().position(|&b| b == needle));
            let small: Vec<u8> = hay.iter().map(|b| b % 3).collect();
            prop_assert_eq!(find_subslice(&small, &sub), small.windows(sub.len()).position(|w| w == &sub[..]));
        }
    }
}
