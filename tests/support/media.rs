//! Small images made in memory, with the metadata a phone or an editor would leave in them:
//! a PNG `tEXt` chunk and a JPEG EXIF (APP1) segment, so tests can check they are stripped.

use std::io::Cursor;

fn encode(width: u32, height: u32, format: image::ImageFormat) -> Vec<u8> {
    let pixels = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 7) as u8, (y * 13) as u8, ((x + y) * 3) as u8])
    });
    let mut out = Cursor::new(Vec::new());
    pixels.write_to(&mut out, format).expect("encode image");
    out.into_inner()
}

/// A plain PNG.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    encode(width, height, image::ImageFormat::Png)
}

/// A plain JPEG.
pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
    encode(width, height, image::ImageFormat::Jpeg)
}

/// A plain (one-frame) GIF.
pub fn gif(width: u32, height: u32) -> Vec<u8> {
    let pixels = image::RgbaImage::from_fn(width, height, |x, y| {
        image::Rgba([(x * 5) as u8, (y * 9) as u8, 200, 255])
    });
    let mut out = Cursor::new(Vec::new());
    pixels
        .write_to(&mut out, image::ImageFormat::Gif)
        .expect("encode gif");
    out.into_inner()
}

/// A PNG with a `tEXt` chunk `keyword\0text` right after `IHDR`.
pub fn png_with_text(width: u32, height: u32, keyword: &str, text: &str) -> Vec<u8> {
    let plain = png(width, height);
    // Signature (8) + IHDR chunk (4 length + 4 type + 13 data + 4 CRC).
    let after_ihdr = 8 + 25;
    let mut data = keyword.as_bytes().to_vec();
    data.push(0);
    data.extend_from_slice(text.as_bytes());
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    let mut typed = b"tEXt".to_vec();
    typed.extend_from_slice(&data);
    chunk.extend_from_slice(&typed);
    chunk.extend_from_slice(&crc32(&typed).to_be_bytes());
    let mut out = plain[..after_ihdr].to_vec();
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&plain[after_ihdr..]);
    out
}

/// A JPEG with an EXIF APP1 segment carrying `marker` right after SOI.
pub fn jpeg_with_exif(width: u32, height: u32, marker: &str) -> Vec<u8> {
    let plain = encode(width, height, image::ImageFormat::Jpeg);
    assert_eq!(&plain[..2], &[0xFF, 0xD8]);
    // "Exif\0\0" and a minimal little-endian TIFF header with no entries, then the marker.
    let mut payload = b"Exif\0\0II*\0\x08\0\0\0\0\0".to_vec();
    payload.extend_from_slice(marker.as_bytes());
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&plain[2..]);
    out
}

/// CRC-32 (IEEE) as PNG chunks use it.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Decodes an image and returns its dimensions.
pub fn dimensions(bytes: &[u8]) -> (u32, u32) {
    let img = image::load_from_memory(bytes).expect("the served image decodes");
    (img.width(), img.height())
}
