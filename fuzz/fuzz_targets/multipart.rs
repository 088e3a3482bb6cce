//! Feeds arbitrary bodies and content types to the multipart parser: it must never panic, and
//! every part it returns must borrow from the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openchatd::http::multipart::{boundary_from_content_type, parse_multipart};

fuzz_target!(|data: &[u8]| {
    let _ = boundary_from_content_type(data);
    let boundary = "fuzz-boundary";
    if let Ok(parts) = parse_multipart(data, boundary) {
        let range = data.as_ptr_range();
        for part in parts {
            assert!(part.data.is_empty() || range.contains(&part.data.as_ptr()));
        }
    }
});
