//! Byte-search primitives shared by the parsers of this folder: finding a line end in a head or
//! chunk-size line, and a multipart delimiter in a body of up to tens of megabytes. Without a
//! `memchr` dependency, a word-at-a-time (SWAR) scan keeps these searches several times faster
//! than a byte loop on long inputs, which matters for multipart bodies.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Index of the first `needle` byte in `hay`.
pub(crate) fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    let splat = LO.wrapping_mul(u64::from(needle));
    let mut chunks = hay.chunks_exact(8);
    let mut base = 0;
    for chunk in chunks.by_ref() {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])) ^ splat;
        // Classic "has a zero byte": the lowest flagged byte is always a true zero (only bytes
        // above a true zero can be false positives), so trailing_zeros finds the first match.
        let zero = word.wrapping_sub(LO) & !word & HI;
        if zero != 0 {
            return Some(base + (zero.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == needle)
        .map(|i| base + i)
}

/// Index of the first occurrence of `needle` (non-empty) in `hay`.
pub(crate) fn find_subslice(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut from = 0;
    while hay.len() - from >= needle.len() {
        let last_start = hay.len() - needle.len();
        let i = from + find_byte(&hay[from..=last_start], first)?;
        if hay[i + 1..i + needle.len()] == *rest {
            return Some(i);
        }
        from = i + 1;
    }
    None
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
