//! Tests of upload checks and metadata stripping, on small images generated with the `image`
//! crate's encoders and metadata inserted by hand.

use std::io::Cursor;

use image::codecs::gif::{GifEncoder, Repeat};
use image::codecs::jpeg::JpegEncoder;
use image::{AnimationDecoder, Delay, Frame, Rgb, RgbImage, Rgba, RgbaImage};
use proptest::prelude::*;

use super::*;

const LIMITS: ImageLimits = ImageLimits {
    max_bytes: 1024 * 1024,
    max_width: 1024,
    max_height: 1024,
};

// ---- generating images ----------------------------------------------------------------------

fn pattern(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        Rgb([
            (x * 37 % 256) as u8,
            (y * 59 % 256) as u8,
            ((x + y) * 11 % 256) as u8,
        ])
    })
}

fn encode_png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(pattern(width, height))
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

fn encode_jpeg(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&pattern(width, height))
        .unwrap();
    out
}

/// A lossless WebP (`VP8L`), as the `image` crate writes it.
fn encode_webp(width: u32, height: u32) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(pattern(width, height))
        .write_to(&mut out, image::ImageFormat::WebP)
        .unwrap();
    out.into_inner()
}

/// A RIFF chunk: fourcc, little-endian size, data, pad byte when odd.
fn riff_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = kind.to_vec();
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(0);
    }
    out
}

/// A WebP file of these chunks.
fn riff(chunks: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = chunks.concat();
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&((4 + body.len()) as u32).to_le_bytes());
    out.extend_from_slice(b"WEBP");
    out.extend_from_slice(&body);
    out
}

/// A looping GIF (so it carries a NETSCAPE2.0 extension) with `frames` frames.
fn encode_gif(width: u32, height: u32, frames: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut out);
        encoder.set_repeat(Repeat::Infinite).unwrap();
        for n in 0..frames {
            let buffer = RgbaImage::from_fn(width, height, |x, y| {
                if (x + y + n) % 3 == 0 {
                    Rgba([255, 0, 0, 255])
                } else {
                    Rgba([0, 0, 255, 255])
                }
            });
            let frame = Frame::from_parts(buffer, 0, 0, Delay::from_numer_denom_ms(100, 1));
            encoder.encode_frame(frame).unwrap();
        }
    }
    out
}

/// Every frame's RGBA pixels (one frame for PNG and JPEG).
fn pixels(format: ImageFormat, bytes: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
    if format == ImageFormat::Gif {
        let decoder = image::codecs::gif::GifDecoder::new(Cursor::new(bytes)).unwrap();
        return decoder
            .into_frames()
            .map(|frame| {
                let buffer = frame.unwrap().into_buffer();
                (buffer.width(), buffer.height(), buffer.into_raw())
            })
            .collect();
    }
    let image = image::load_from_memory_with_format(bytes, format.to_image_crate()).unwrap();
    vec![(image.width(), image.height(), image.to_rgba8().into_raw())]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

// ---- PNG surgery ----------------------------------------------------------------------------

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(kind);
    chunk.extend_from_slice(data);
    let crc = crc32(&chunk[4..]);
    chunk.extend_from_slice(&crc.to_be_bytes());
    chunk
}

/// Right after IHDR (signature 8 + IHDR chunk 25).
const AFTER_IHDR: usize = 33;

fn insert(bytes: &[u8], at: usize, piece: &[u8]) -> Vec<u8> {
    let mut out = bytes[..at].to_vec();
    out.extend_from_slice(piece);
    out.extend_from_slice(&bytes[at..]);
    out
}

/// A zlib stream holding `data` in one stored (uncompressed) block.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01, 0x01];
    let len = data.len() as u16;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

fn png_metadata_chunks() -> Vec<Vec<u8>> {
    let mut itxt = b"Comment\0\0\0en\0Kommentar\0".to_vec();
    itxt.extend_from_slice("secret note ✓".as_bytes());
    let mut ztxt = b"Author\0\0".to_vec();
    ztxt.extend_from_slice(&zlib_stored(b"Jane Doe"));
    let mut exif = b"MM\0*\0\0\0\x08".to_vec();
    exif.extend_from_slice(b"GPS 52.5200N 13.4050E");
    vec![
        png_chunk(b"tEXt", b"Software\0SecretCam 3000"),
        png_chunk(b"zTXt", &ztxt),
        png_chunk(b"iTXt", &itxt),
        png_chunk(b"eXIf", &exif),
        png_chunk(b"tIME", &[0x07, 0xE8, 1, 2, 3, 4, 5]),
    ]
}

/// An sRGB-ish ICC profile stand-in: the decoder only needs a well-formed iCCP chunk.
fn iccp_chunk() -> Vec<u8> {
    let mut data = b"icc\0\0".to_vec();
    data.extend_from_slice(&zlib_stored(&[0u8; 128]));
    png_chunk(b"iCCP", &data)
}

// ---- JPEG surgery ---------------------------------------------------------------------------

fn jpeg_segment(marker: u8, payload: &[u8]) -> Vec<u8> {
    let mut segment = vec![0xFF, marker];
    segment.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    segment.extend_from_slice(payload);
    segment
}

/// An EXIF APP1 payload with a GPS IFD: latitude 52°31'12" N as the camera would write it.
fn exif_gps_payload() -> Vec<u8> {
    let mut payload = b"Exif\0\0".to_vec();
    // TIFF header, big-endian, IFD0 at 8 with one entry: GPSInfo (0x8825) → IFD at 26.
    payload.extend_from_slice(b"MM\0*\0\0\0\x08");
    payload.extend_from_slice(&[0, 1, 0x88, 0x25, 0, 4, 0, 0, 0, 1, 0, 0, 0, 26, 0, 0, 0, 0]);
    // GPS IFD: GPSLatitudeRef "N", GPSLatitude 3 rationals at 56.
    payload.extend_from_slice(&[0, 2]);
    payload.extend_from_slice(&[0, 1, 0, 2, 0, 0, 0, 2, b'N', 0, 0, 0]);
    payload.extend_from_slice(&[0, 2, 0, 5, 0, 0, 0, 3, 0, 0, 0, 56]);
    payload.extend_from_slice(&[0, 0, 0, 0]);
    for (num, den) in [(52u32, 1u32), (31, 1), (12, 1)] {
        payload.extend_from_slice(&num.to_be_bytes());
        payload.extend_from_slice(&den.to_be_bytes());
    }
    payload
}

// ---- GIF surgery ----------------------------------------------------------------------------

fn gif_extension(label: u8, blocks: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![0x21, label];
    for block in blocks {
        out.push(block.len() as u8);
        out.extend_from_slice(block);
    }
    out.push(0);
    out
}

fn gif_header_len(bytes: &[u8]) -> usize {
    let mut len = 0;
    gif::walk(bytes, |block| {
        len = block.raw.len();
        ControlFlow::Break(())
    })
    .unwrap();
    len
}

// ---- sniff, formats, errors -----------------------------------------------------------------

#[test]
fn sniff_by_magic_bytes() {
    assert_eq!(sniff(&encode_png(2, 2)), Some(ImageFormat::Png));
    assert_eq!(sniff(&encode_jpeg(2, 2)), Some(ImageFormat::Jpeg));
    assert_eq!(sniff(&encode_gif(2, 2, 1)), Some(ImageFormat::Gif));
    assert_eq!(sniff(b"GIF87a...."), Some(ImageFormat::Gif));
    assert_eq!(sniff(b""), None);
    assert_eq!(sniff(&png::SIGNATURE[..7]), None);
    assert_eq!(sniff(&[0xFF, 0xD8]), None);
    assert_eq!(sniff(b"GIF88a"), None);
    assert_eq!(sniff(b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>"), None);
    assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(ImageFormat::WebP));
    assert_eq!(sniff(b"RIFF\0\0\0\0WAVEfmt "), None, "another RIFF file");
}

#[test]
fn format_names() {
    assert_eq!(ImageFormat::Png.content_type(), "image/png");
    assert_eq!(ImageFormat::Jpeg.content_type(), "image/jpeg");
    assert_eq!(ImageFormat::Gif.content_type(), "image/gif");
    assert_eq!(ImageFormat::Png.extension(), "png");
    assert_eq!(ImageFormat::Jpeg.extension(), "jpg");
    assert_eq!(ImageFormat::Gif.extension(), "gif");
}

#[test]
fn error_codes_are_stable() {
    assert_eq!(ImageError::UnsupportedType.code(), "unsupported_media_type");
    assert_eq!(
        ImageError::TooLarge { bytes: 2, max: 1 }.code(),
        "payload_too_large"
    );
    let dims = ImageError::DimensionsTooLarge {
        width: 2,
        height: 2,
        max_width: 1,
        max_height: 1,
    };
    assert_eq!(dims.code(), "image_too_large");
    assert_eq!(
        dims.to_string(),
        "image is 2x2 pixels, more than the 1x1 allowed"
    );
    assert_eq!(ImageError::Corrupt.code(), "invalid_image");
}

#[test]
fn decode_allocation_cap_is_256_mib() {
    assert_eq!(MAX_DECODE_ALLOC_BYTES, 268_435_456);
}

// ---- inspect --------------------------------------------------------------------------------

#[test]
fn inspects_valid_images() {
    let expect = |format, width, height| ImageInfo {
        format,
        width,
        height,
    };
    assert_eq!(
        inspect(&encode_png(17, 5), &LIMITS),
        Ok(expect(ImageFormat::Png, 17, 5))
    );
    assert_eq!(
        inspect(&encode_jpeg(33, 9), &LIMITS),
        Ok(expect(ImageFormat::Jpeg, 33, 9))
    );
    assert_eq!(
        inspect(&encode_gif(6, 7, 3), &LIMITS),
        Ok(expect(ImageFormat::Gif, 6, 7))
    );
}

#[test]
fn text_file_named_png_is_unsupported() {
    // The file name ("notes.png") never reaches this module: only the content decides.
    let text = b"just some notes, saved as notes.png\n";
    assert_eq!(inspect(text, &LIMITS), Err(ImageError::UnsupportedType));
    assert_eq!(inspect(b"", &LIMITS), Err(ImageError::UnsupportedType));
}

#[test]
fn size_limit_comes_first() {
    let limits = ImageLimits {
        max_bytes: 10,
        ..LIMITS
    };
    assert_eq!(
        inspect(&[b'x'; 11], &limits),
        Err(ImageError::TooLarge { bytes: 11, max: 10 })
    );
    let png = encode_png(4, 4);
    let exact = ImageLimits {
        max_bytes: png.len(),
        ..LIMITS
    };
    assert!(inspect(&png, &exact).is_ok());
    let under = ImageLimits {
        max_bytes: png.len() - 1,
        ..LIMITS
    };
    assert_eq!(
        inspect(&png, &under).unwrap_err().code(),
        "payload_too_large"
    );
}

#[test]
fn dimension_limits_are_inclusive() {
    let limits = ImageLimits {
        max_width: 8,
        max_height: 4,
        ..LIMITS
    };
    for format in [
        ImageFormat::Png,
        ImageFormat::Jpeg,
        ImageFormat::Gif,
        ImageFormat::WebP,
    ] {
        let make = |w, h| match format {
            ImageFormat::Png => encode_png(w, h),
            ImageFormat::Jpeg => encode_jpeg(w, h),
            ImageFormat::Gif => encode_gif(w, h, 1),
            ImageFormat::WebP => encode_webp(w, h),
        };
        assert!(inspect(&make(8, 4), &limits).is_ok(), "{format:?}");
        assert_eq!(
            inspect(&make(9, 4), &limits),
            Err(ImageError::DimensionsTooLarge {
                width: 9,
                height: 4,
                max_width: 8,
                max_height: 4
            }),
            "{format:?}"
        );
        assert_eq!(
            inspect(&make(8, 5), &limits).unwrap_err().code(),
            "image_too_large",
            "{format:?}"
        );
    }
}

#[test]
fn png_truncated_in_the_middle_is_corrupt() {
    let png = encode_png(32, 32);
    let half = &png[..png.len() / 2];
    assert_eq!(inspect(half, &LIMITS), Err(ImageError::Corrupt));
    assert_eq!(
        strip_metadata(ImageFormat::Png, half),
        Err(ImageError::Corrupt)
    );
}

#[test]
fn every_truncation_is_refused() {
    for (format, bytes) in [
        (ImageFormat::Png, encode_png(6, 6)),
        (ImageFormat::Jpeg, encode_jpeg(6, 6)),
        (ImageFormat::Gif, encode_gif(6, 6, 2)),
        (ImageFormat::WebP, encode_webp(6, 6)),
    ] {
        for cut in 0..bytes.len() {
            let result = inspect(&bytes[..cut], &LIMITS);
            assert!(
                matches!(
                    result,
                    Err(ImageError::Corrupt | ImageError::UnsupportedType)
                ),
                "{format:?} cut at {cut} of {}: {result:?}",
                bytes.len()
            );
        }
    }
}

/// A PNG whose IHDR claims `width`×`height` of 8-bit RGBA, with one tiny IDAT and an IEND.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    let mut png = png::SIGNATURE.to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    png.extend(png_chunk(b"IDAT", &zlib_stored(&[0; 64])));
    png.extend(png_chunk(b"IEND", b""));
    png
}

#[test]
fn png_header_claiming_100000_squared_is_refused_before_decoding() {
    let bomb = png_claiming(100_000, 100_000);
    assert!(bomb.len() < 200);
    assert_eq!(
        inspect(&bomb, &LIMITS),
        Err(ImageError::DimensionsTooLarge {
            width: 100_000,
            height: 100_000,
            max_width: 1024,
            max_height: 1024
        })
    );
}

#[test]
fn decode_allocation_is_capped_even_with_permissive_limits() {
    // 100000² RGBA is 40 GB; with no dimension limit to stop it, the decoder's allocation cap
    // must refuse it rather than allocate.
    let permissive = ImageLimits {
        max_bytes: usize::MAX,
        max_width: u32::MAX,
        max_height: u32::MAX,
    };
    let result = inspect(&png_claiming(100_000, 100_000), &permissive);
    assert_eq!(result.unwrap_err().code(), "image_too_large");
}

#[test]
fn png_with_lying_small_header_is_corrupt() {
    // A valid header for 4×4 but too little image data.
    assert_eq!(
        inspect(&png_claiming(64, 64), &LIMITS),
        Err(ImageError::Corrupt)
    );
}

#[test]
fn png_structure_errors_are_corrupt() {
    let png = encode_png(3, 3);
    // IEND missing.
    assert_eq!(
        inspect(&png[..png.len() - 12], &LIMITS),
        Err(ImageError::Corrupt)
    );
    // First chunk not IHDR.
    let swapped = insert(&png[..8], 8, &png_chunk(b"tEXt", b"a\0b"));
    let swapped = [swapped, png[8..].to_vec()].concat();
    assert_eq!(inspect(&swapped, &LIMITS), Err(ImageError::Corrupt));
    // A chunk type that is not four letters.
    let bad = insert(&png, AFTER_IHDR, &png_chunk(b"te1t", b""));
    assert_eq!(
        strip_metadata(ImageFormat::Png, &bad),
        Err(ImageError::Corrupt)
    );
    // A chunk length past the end of the file.
    let mut huge = png.clone();
    huge[AFTER_IHDR..AFTER_IHDR + 4].copy_from_slice(&0x7FFF_FFF0u32.to_be_bytes());
    assert_eq!(inspect(&huge, &LIMITS), Err(ImageError::Corrupt));
    // Zero width.
    assert_eq!(
        inspect(&png_claiming(0, 4), &LIMITS),
        Err(ImageError::Corrupt)
    );
}

#[test]
fn jpeg_without_eoi_is_corrupt() {
    let jpeg = encode_jpeg(16, 16);
    assert_eq!(&jpeg[jpeg.len() - 2..], &[0xFF, 0xD9]);
    assert_eq!(
        inspect(&jpeg[..jpeg.len() - 2], &LIMITS),
        Err(ImageError::Corrupt)
    );
}

#[test]
fn gif_frame_larger_than_limits_is_refused() {
    // Logical screen 4×4, but the frame descriptor claims 2000×2000.
    let gif = encode_gif(4, 4, 1);
    let mut image_at = None;
    gif::walk(&gif, |block| match block.kind {
        gif::BlockKind::Image { .. } => {
            image_at = Some(block.raw.as_ptr() as usize - gif.as_ptr() as usize);
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    })
    .unwrap();
    let image_at = image_at.unwrap();
    assert_eq!(gif[image_at], 0x2C);
    let mut patched = gif.clone();
    patched[image_at + 5..image_at + 7].copy_from_slice(&2000u16.to_le_bytes());
    patched[image_at + 7..image_at + 9].copy_from_slice(&2000u16.to_le_bytes());
    assert_eq!(
        inspect(&patched, &LIMITS),
        Err(ImageError::DimensionsTooLarge {
            width: 2000,
            height: 2000,
            max_width: 1024,
            max_height: 1024
        })
    );
}

#[test]
fn pixel_limit_is_forty_megapixels() {
    assert_eq!(MAX_IMAGE_PIXELS, 40_000_000);
    let e = ImageError::TooManyPixels {
        pixels: 100_000_000,
        max: MAX_IMAGE_PIXELS,
    };
    assert_eq!(e.code(), "image_too_large");
    assert_eq!(
        e.to_string(),
        "image has 100000000 pixels (frames included), more than the 40000000 allowed"
    );
}

#[test]
fn png_bomb_within_the_dimension_limits_is_refused_by_its_pixels() {
    // 10,000×10,000 fits the attachments' 16,384 per side, and the file is tiny: the pixel
    // bound refuses it from the header, before the decoder allocates anything.
    let attachment_limits = ImageLimits {
        max_bytes: 25 * 1024 * 1024,
        max_width: 16_384,
        max_height: 16_384,
    };
    let bomb = png_claiming(10_000, 10_000);
    assert!(bomb.len() < 200);
    assert_eq!(
        inspect(&bomb, &attachment_limits),
        Err(ImageError::TooManyPixels {
            pixels: 100_000_000,
            max: MAX_IMAGE_PIXELS
        })
    );
    // Just at the bound passes the pixel check (and fails later, as the data is missing).
    assert_eq!(
        inspect_within(&png_claiming(100, 100), &attachment_limits, 10_000),
        Err(ImageError::Corrupt)
    );
    assert_eq!(
        inspect_within(&png_claiming(100, 101), &attachment_limits, 10_000),
        Err(ImageError::TooManyPixels {
            pixels: 10_100,
            max: 10_000
        })
    );
}

#[test]
fn still_images_at_the_pixel_bound_are_accepted() {
    for (format, bytes) in [
        (ImageFormat::Png, encode_png(20, 10)),
        (ImageFormat::Jpeg, encode_jpeg(20, 10)),
        (ImageFormat::Gif, encode_gif(20, 10, 1)),
    ] {
        assert!(inspect_within(&bytes, &LIMITS, 200).is_ok(), "{format:?}");
        assert_eq!(
            inspect_within(&bytes, &LIMITS, 199),
            Err(ImageError::TooManyPixels {
                pixels: 200,
                max: 199
            }),
            "{format:?}"
        );
    }
}

#[test]
fn gif_frames_count_against_the_pixel_bound() {
    // 8×8 screen: 64 pixels a frame. Five frames are 320 pixels.
    let gif = encode_gif(8, 8, 5);
    assert!(inspect_within(&gif, &LIMITS, 320).is_ok());
    assert_eq!(
        inspect_within(&gif, &LIMITS, 319),
        Err(ImageError::TooManyPixels {
            pixels: 320,
            max: 319
        })
    );
    // The count stops at the first frame over the bound.
    assert_eq!(
        inspect_within(&gif, &LIMITS, 150),
        Err(ImageError::TooManyPixels {
            pixels: 192,
            max: 150
        })
    );
}

#[test]
fn gif_with_unknown_block_is_corrupt() {
    let gif = encode_gif(4, 4, 1);
    let header = gif_header_len(&gif);
    let bad = insert(&gif, header, &[0x42]);
    assert_eq!(inspect(&bad, &LIMITS), Err(ImageError::Corrupt));
    assert_eq!(
        strip_metadata(ImageFormat::Gif, &bad),
        Err(ImageError::Corrupt)
    );
}

// ---- strip_metadata -------------------------------------------------------------------------

#[test]
fn clean_images_come_back_byte_for_byte() {
    for (format, bytes) in [
        (ImageFormat::Png, encode_png(9, 9)),
        (ImageFormat::Jpeg, encode_jpeg(9, 9)),
        (ImageFormat::Gif, encode_gif(9, 9, 2)),
        (ImageFormat::WebP, encode_webp(9, 9)),
    ] {
        assert_eq!(strip_metadata(format, &bytes).unwrap(), bytes, "{format:?}");
    }
}

#[test]
fn png_metadata_chunks_are_stripped_and_the_rest_kept() {
    let clean = encode_png(12, 7);
    let mut dirty = insert(&clean, AFTER_IHDR, &iccp_chunk());
    let phys = png_chunk(b"pHYs", &[0, 0, 0x0B, 0x13, 0, 0, 0x0B, 0x13, 1]);
    dirty = insert(&dirty, AFTER_IHDR + iccp_chunk().len(), &phys);
    for chunk in png_metadata_chunks() {
        dirty = insert(&dirty, AFTER_IHDR, &chunk);
        // Text may also follow the image data.
        let before_iend = dirty.len() - 12;
        dirty = insert(&dirty, before_iend, &chunk);
    }
    assert_eq!(
        inspect(&dirty, &LIMITS).unwrap().format,
        ImageFormat::Png,
        "the dirty file is itself valid"
    );
    let stripped = strip_metadata(ImageFormat::Png, &dirty).unwrap();
    for needle in [
        &b"tEXt"[..],
        b"zTXt",
        b"iTXt",
        b"eXIf",
        b"tIME",
        b"SecretCam",
        b"GPS",
        "secret note".as_bytes(),
    ] {
        assert!(!contains(&stripped, needle), "{needle:?} left");
    }
    // iCCP and pHYs kept verbatim, CRCs included: removing the metadata leaves exactly the
    // clean file with those two chunks.
    let expected = insert(
        &insert(&clean, AFTER_IHDR, &iccp_chunk()),
        AFTER_IHDR + iccp_chunk().len(),
        &phys,
    );
    assert_eq!(stripped, expected);
    assert_eq!(
        pixels(ImageFormat::Png, &stripped),
        pixels(ImageFormat::Png, &dirty)
    );
    assert_eq!(
        pixels(ImageFormat::Png, &stripped),
        pixels(ImageFormat::Png, &clean)
    );
    assert!(inspect(&stripped, &LIMITS).is_ok());
}

#[test]
fn png_bytes_after_iend_are_dropped() {
    let clean = encode_png(3, 3);
    let mut appended = clean.clone();
    appended.extend_from_slice(b"PK\x03\x04 hidden zip archive");
    assert!(inspect(&appended, &LIMITS).is_ok());
    assert_eq!(strip_metadata(ImageFormat::Png, &appended).unwrap(), clean);
}

#[test]
fn jpeg_exif_gps_is_stripped() {
    let clean = encode_jpeg(24, 16);
    let exif = jpeg_segment(0xE1, &exif_gps_payload());
    let dirty = insert(&clean, 2, &exif);
    assert!(contains(&dirty, b"Exif\0\0"));
    assert!(inspect(&dirty, &LIMITS).is_ok());
    let stripped = strip_metadata(ImageFormat::Jpeg, &dirty).unwrap();
    assert!(!contains(&stripped, b"Exif"));
    assert!(!contains(&stripped, &52u32.to_be_bytes()));
    assert_eq!(stripped, clean);
    assert_eq!(
        pixels(ImageFormat::Jpeg, &stripped),
        pixels(ImageFormat::Jpeg, &dirty)
    );
    assert_eq!(
        inspect(&stripped, &LIMITS).unwrap(),
        ImageInfo {
            format: ImageFormat::Jpeg,
            width: 24,
            height: 16
        }
    );
}

#[test]
fn jpeg_app_and_comment_segments_are_stripped_jfif_adobe_icc_kept() {
    let clean = encode_jpeg(10, 10);
    // What the encoder wrote first must be the JFIF APP0; it stays.
    assert_eq!(&clean[2..4], &[0xFF, 0xE0]);
    assert_eq!(&clean[6..11], b"JFIF\0");
    let adobe = jpeg_segment(0xEE, b"Adobe\0\x64\0\0\0\0\x01");
    let icc = jpeg_segment(0xE2, b"ICC_PROFILE\0\x01\x01fake-profile");
    let kept = [adobe.clone(), icc.clone()].concat();
    let mut dirty = insert(&clean, 2, &kept);
    let mut dropped = vec![
        jpeg_segment(0xFE, b"shot by Jane, Berlin"),
        jpeg_segment(0xE0, b"JFXX\0\x10thumbnail"),
        jpeg_segment(0xE2, b"MPF\0secondary image index"),
        jpeg_segment(0xEF, b"vendor data"),
    ];
    for marker in 0xE1..=0xED {
        dropped.push(jpeg_segment(
            marker,
            format!("app{marker:x} metadata").as_bytes(),
        ));
    }
    for segment in &dropped {
        dirty = insert(&dirty, 2, segment);
    }
    let stripped = strip_metadata(ImageFormat::Jpeg, &dirty).unwrap();
    assert_eq!(stripped, insert(&clean, 2, &kept));
    assert!(!contains(&stripped, b"Berlin"));
    assert!(!contains(&stripped, b"metadata"));
    assert_eq!(
        pixels(ImageFormat::Jpeg, &stripped),
        pixels(ImageFormat::Jpeg, &clean)
    );
}

#[test]
fn jpeg_segments_after_the_scan_and_fill_bytes_are_handled() {
    let clean = encode_jpeg(8, 8);
    let eoi = clean.len() - 2;
    // A comment between the scan data and EOI (legal between scans of a progressive image),
    // plus trailing bytes after EOI.
    let mut dirty = insert(&clean, eoi, &jpeg_segment(0xFE, b"late comment"));
    dirty.extend_from_slice(b"trailing junk");
    // Fill bytes before the first marker after SOI.
    dirty = insert(&dirty, 2, &[0xFF, 0xFF]);
    assert!(inspect(&dirty, &LIMITS).is_ok());
    let stripped = strip_metadata(ImageFormat::Jpeg, &dirty).unwrap();
    assert!(!contains(&stripped, b"late comment"));
    assert!(!contains(&stripped, b"trailing junk"));
    assert_eq!(stripped, insert(&clean, 2, &[0xFF, 0xFF]));
    assert_eq!(
        pixels(ImageFormat::Jpeg, &stripped),
        pixels(ImageFormat::Jpeg, &clean)
    );
}

#[test]
fn jpeg_structure_errors_are_corrupt() {
    let jpeg = encode_jpeg(8, 8);
    // A segment length running past the end.
    let bad = insert(&jpeg, 2, &[0xFF, 0xE1, 0xFF, 0xFF, 0]);
    assert_eq!(inspect(&bad, &LIMITS), Err(ImageError::Corrupt));
    // A length below 2.
    let bad = insert(&jpeg, 2, &[0xFF, 0xE1, 0, 1]);
    assert_eq!(
        strip_metadata(ImageFormat::Jpeg, &bad),
        Err(ImageError::Corrupt)
    );
    // A second SOI.
    let bad = insert(&jpeg, 2, &[0xFF, 0xD8]);
    assert_eq!(inspect(&bad, &LIMITS), Err(ImageError::Corrupt));
    // Garbage where a marker should be.
    let bad = insert(&jpeg, 2, &[0x12]);
    assert_eq!(
        strip_metadata(ImageFormat::Jpeg, &bad),
        Err(ImageError::Corrupt)
    );
    let after_app0 = 4 + usize::from(u16::from_be_bytes([jpeg[4], jpeg[5]]));
    let bad = insert(&jpeg, after_app0, &[0x12]);
    assert_eq!(inspect(&bad, &LIMITS), Err(ImageError::Corrupt));
    // No frame header before the scan.
    assert_eq!(
        inspect(&[0xFF, 0xD8, 0xFF, 0xDA, 0, 2, 0xFF, 0xD9], &LIMITS),
        Err(ImageError::Corrupt)
    );
}

#[test]
fn gif_comment_is_stripped() {
    let clean = encode_gif(5, 5, 2);
    assert!(contains(&clean, b"NETSCAPE2.0"));
    let header = gif_header_len(&clean);
    let comment = gif_extension(0xFE, &[b"made at 52.52N 13.40E by Jane"]);
    let xmp = gif_extension(0xFF, &[b"XMP DataXMP", b"<x:xmpmeta/>", b"more"]);
    let anim = gif_extension(0xFF, &[b"ANIMEXTS1.0", &[1, 0, 0]]);
    let mut dirty = insert(&clean, header, &comment);
    dirty = insert(&dirty, header, &xmp);
    dirty = insert(&dirty, header, &anim);
    let trailer = dirty.len() - 1;
    dirty = insert(&dirty, trailer, &comment);
    dirty.extend_from_slice(b"after the trailer");
    assert!(inspect(&dirty, &LIMITS).is_ok());
    let stripped = strip_metadata(ImageFormat::Gif, &dirty).unwrap();
    assert!(!contains(&stripped, b"Jane"));
    assert!(!contains(&stripped, b"xmpmeta"));
    assert!(!contains(&stripped, b"after the trailer"));
    assert!(contains(&stripped, b"NETSCAPE2.0"));
    assert!(contains(&stripped, b"ANIMEXTS1.0"));
    assert_eq!(stripped, insert(&clean, header, &anim));
    let frames = pixels(ImageFormat::Gif, &stripped);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames, pixels(ImageFormat::Gif, &dirty));
    assert_eq!(frames, pixels(ImageFormat::Gif, &clean));
}

#[test]
fn strip_refuses_the_wrong_format() {
    let png = encode_png(2, 2);
    let jpeg = encode_jpeg(2, 2);
    assert_eq!(
        strip_metadata(ImageFormat::Jpeg, &png),
        Err(ImageError::Corrupt)
    );
    assert_eq!(
        strip_metadata(ImageFormat::Gif, &jpeg),
        Err(ImageError::Corrupt)
    );
    assert_eq!(
        strip_metadata(ImageFormat::Png, &jpeg),
        Err(ImageError::Corrupt)
    );
    assert_eq!(
        strip_metadata(ImageFormat::Png, b""),
        Err(ImageError::Corrupt)
    );
}

#[test]
fn walkers_stop_when_the_visitor_breaks() {
    let png = encode_png(2, 2);
    let mut seen = 0;
    let found = png::walk(&png, |chunk| {
        seen += 1;
        if &chunk.kind == b"IHDR" {
            ControlFlow::Break(chunk.raw.len())
        } else {
            ControlFlow::Continue(())
        }
    });
    assert_eq!(found, Ok(Some(25)));
    assert_eq!(seen, 1);
}

// ---- properties -----------------------------------------------------------------------------

fn png_metadata_chunk() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME"]),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(kind, data)| png_chunk(kind, &data))
}

fn jpeg_metadata_segment() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select((0xE1..=0xEDu8).chain([0xEF, 0xFE]).collect::<Vec<_>>()),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(marker, payload)| {
            // Keep an APP2 from looking like the ICC profile we keep.
            let mut payload = payload;
            if marker == 0xE2 {
                payload.insert(0, b'x');
            }
            jpeg_segment(marker, &payload)
        })
}

fn gif_metadata_block() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 0..4),
    )
        .prop_map(|(comment, blocks)| {
            let refs: Vec<&[u8]> = blocks.iter().map(Vec::as_slice).collect();
            if comment {
                gif_extension(0xFE, &refs)
            } else {
                let mut all: Vec<&[u8]> = vec![b"SOMEAPP1.0x"];
                all.extend(refs);
                gif_extension(0xFF, &all)
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn png_strip_restores_the_clean_file(chunks in prop::collection::vec((png_metadata_chunk(), any::<bool>()), 0..8)) {
        let clean = encode_png(4, 3);
        let mut dirty = clean.clone();
        for (chunk, at_end) in &chunks {
            let at = if *at_end { dirty.len() - 12 } else { AFTER_IHDR };
            dirty = insert(&dirty, at, chunk);
        }
        prop_assert_eq!(strip_metadata(ImageFormat::Png, &dirty), Ok(clean.clone()));
    }

    #[test]
    fn jpeg_strip_restores_the_clean_file(segments in prop::collection::vec(jpeg_metadata_segment(), 0..8)) {
        let clean = encode_jpeg(4, 3);
        let mut dirty = clean.clone();
        for segment in &segments {
            dirty = insert(&dirty, 2, segment);
        }
        prop_assert_eq!(strip_metadata(ImageFormat::Jpeg, &dirty), Ok(clean.clone()));
    }

    #[test]
    fn gif_strip_restores_the_clean_file(blocks in prop::collection::vec((gif_metadata_block(), any::<bool>()), 0..6)) {
        let clean = encode_gif(3, 3, 2);
        let header = gif_header_len(&clean);
        let mut dirty = clean.clone();
        for (block, at_end) in &blocks {
            let at = if *at_end { dirty.len() - 1 } else { header };
            dirty = insert(&dirty, at, block);
        }
        prop_assert_eq!(strip_metadata(ImageFormat::Gif, &dirty), Ok(clean.clone()));
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        magic in prop::sample::select(vec![&png::SIGNATURE[..], &[0xFF, 0xD8, 0xFF], b"GIF89a", b""]),
        tail in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let bytes = [magic, &tail[..]].concat();
        let _ = inspect(&bytes, &LIMITS);
        for format in [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Gif] {
            let _ = strip_metadata(format, &bytes);
        }
    }

    #[test]
    fn corrupting_one_byte_never_panics_and_strip_stays_idempotent(
        which in 0..3usize,
        at in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let (format, mut bytes) = match which {
            0 => (ImageFormat::Png, encode_png(5, 5)),
            1 => (ImageFormat::Jpeg, encode_jpeg(5, 5)),
            _ => (ImageFormat::Gif, encode_gif(5, 5, 1)),
        };
        let i = at.index(bytes.len());
        bytes[i] = value;
        let _ = inspect(&bytes, &LIMITS);
        if let Ok(once) = strip_metadata(format, &bytes) {
            prop_assert_eq!(strip_metadata(format, &once), Ok(once.clone()));
        }
    }
}

#[test]
fn webp_is_accepted_by_content_and_its_metadata_is_stripped() {
    let plain = encode_webp(12, 7);
    let info = inspect(&plain, &LIMITS).unwrap();
    assert_eq!(
        (info.format, info.width, info.height),
        (ImageFormat::WebP, 12, 7)
    );
    assert_eq!(info.format.content_type(), "image/webp");
    // The same bitstream in an extended file that announces and carries EXIF (with a GPS
    // marker) and XMP, one of them of odd length (a pad byte).
    let vp8l = plain[12..].to_vec();
    let mut vp8x = vec![0x08 | 0x04, 0, 0, 0];
    vp8x.extend_from_slice(&(12u32 - 1).to_le_bytes()[..3]);
    vp8x.extend_from_slice(&(7u32 - 1).to_le_bytes()[..3]);
    let with_metadata = riff(&[
        riff_chunk(b"VP8X", &vp8x),
        vp8l.clone(),
        riff_chunk(b"EXIF", &exif_gps_payload()),
        riff_chunk(b"XMP ", b"<x:xmpmeta>SECRET-PLACE</x:xmpmeta>!"),
    ]);
    let info = inspect(&with_metadata, &LIMITS).unwrap();
    assert_eq!((info.width, info.height), (12, 7));
    let clean = strip_metadata(ImageFormat::WebP, &with_metadata).unwrap();
    assert!(
        !contains(&clean, b"EXIF")
            && !contains(&clean, b"XMP ")
            && !contains(&clean, b"SECRET-PLACE")
    );
    assert_eq!(
        clean[20] & (0x08 | 0x04),
        0,
        "the VP8X flags no longer announce them"
    );
    assert_eq!(
        u32::from_le_bytes(clean[4..8].try_into().unwrap()) as usize,
        clean.len() - 8,
        "the RIFF size is the new length"
    );
    assert!(inspect(&clean, &LIMITS).is_ok());
    let decode = |bytes: &[u8]| {
        image::load_from_memory_with_format(bytes, image::ImageFormat::WebP)
            .unwrap()
            .to_rgba8()
            .into_raw()
    };
    assert_eq!(decode(&clean), decode(&plain), "the pixels are untouched");
}

#[test]
fn webp_structure_errors_are_corrupt() {
    let plain = encode_webp(4, 4);
    // A RIFF size past the end, a chunk past the RIFF size, no chunk at all, an unknown first
    // chunk, a lossless header without its signature byte.
    let mut long = plain.clone();
    long[4..8].copy_from_slice(&(plain.len() as u32).to_le_bytes());
    let mut overrun = plain.clone();
    overrun[16..20].copy_from_slice(&(plain.len() as u32).to_le_bytes());
    let mut unsigned = plain.clone();
    unsigned[20] = 0;
    for (what, bytes) in [
        ("riff size", long),
        ("chunk size", overrun),
        ("no chunks", riff(&[])),
        (
            "unknown first chunk",
            riff(&[riff_chunk(b"JUNK", b"ab"), plain[12..].to_vec()]),
        ),
        ("no signature", unsigned),
    ] {
        assert_eq!(inspect(&bytes, &LIMITS), Err(ImageError::Corrupt), "{what}");
    }
}

#[test]
fn large_images_are_fitted_within_the_box_as_png() {
    for (w, h, fitted) in [
        (1000, 1000, (64, 64)),
        (200, 100, (64, 32)),
        (50, 80, (40, 64)),
    ] {
        let bytes = encode_webp(w, h);
        let info = inspect(&bytes, &LIMITS).unwrap();
        let (out_info, out) = fit_within(&info, &bytes, 64, 64).unwrap().expect("scaled");
        assert_eq!((out_info.width, out_info.height), fitted, "{w}x{h}");
        assert_eq!(out_info.format, ImageFormat::Png);
        assert_eq!(
            inspect(&out, &LIMITS).unwrap(),
            out_info,
            "the result is a valid PNG"
        );
    }
    let small = encode_png(64, 10);
    let info = inspect(&small, &LIMITS).unwrap();
    assert_eq!(
        fit_within(&info, &small, 64, 64).unwrap(),
        None,
        "what fits is kept as is"
    );
}
