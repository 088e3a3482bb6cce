//! Uploaded images (avatars and message attachments, wire-contract A.5 and A.6): checked by
//! content, never by file name or declared type, and stripped of metadata without re-encoding.
//!
//! [`inspect`] goes from cheapest to dearest check: the byte size, the magic bytes, the
//! dimensions in the header (read by hand, so a header claiming 100000×100000 is refused before
//! any decoder runs), the container structure up to its end marker (so a truncated upload is
//! refused even by a lenient decoder), and finally a full decode bounded by
//! [`MAX_DECODE_ALLOC_BYTES`] that proves the pixels are really there.
//!
//! [`strip_metadata`] walks the container (PNG chunks, JPEG segments, GIF blocks, WebP chunks),
//! drops the parts that carry text, camera, location or time metadata, and copies every other
//! byte verbatim, so the pixels decode exactly as before. Bytes after the end marker are dropped too.
//!
//! Everything here is sans-IO: bytes in, bytes or facts out.

mod gif;
mod jpeg;
mod png;
mod webp;

use std::io::Cursor;
use std::ops::ControlFlow;

/// Most bytes one decode may allocate at a time (pixel buffer included), so a small file that
/// claims or decompresses to a huge image (a decompression bomb) fails instead of exhausting
/// memory. Passed to the decoders as `image::Limits::max_alloc`.
pub const MAX_DECODE_ALLOC_BYTES: u64 = 256 * 1024 * 1024;

/// Most pixels one upload may carry, avatars and attachments alike: width × height of a PNG or
/// JPEG, and for a GIF the logical screen's area times its frames (a viewer composes every
/// frame on the whole screen). A file of a few kilobytes can claim 10,000×10,000 pixels of one
/// colour; without this bound it would be decoded here and served to every member's viewer.
/// Past it an upload is [`ImageError::TooManyPixels`] (413 `image_too_large`), checked from the
/// headers before anything is decoded.
pub const MAX_IMAGE_PIXELS: u64 = 40_000_000;

/// The image formats accepted for upload (wire contract A.5/A.6: png, jpeg, gif, webp; the
/// desktop client offers WebP for avatars and pastes any `image/*` into the composer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    /// Portable Network Graphics.
    Png,
    /// JPEG (JFIF or EXIF container).
    Jpeg,
    /// GIF87a or GIF89a, animated or not.
    Gif,
    /// WebP (RIFF container), lossy or lossless, still or animated.
    WebP,
}

impl ImageFormat {
    /// The MIME type to store and serve the image with.
    pub const fn content_type(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Gif => "image/gif",
            ImageFormat::WebP => "image/webp",
        }
    }

    /// The usual file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpg",
            ImageFormat::Gif => "gif",
            ImageFormat::WebP => "webp",
        }
    }

    fn to_image_crate(self) -> image::ImageFormat {
        match self {
            ImageFormat::Png => image::ImageFormat::Png,
            ImageFormat::Jpeg => image::ImageFormat::Jpeg,
            ImageFormat::Gif => image::ImageFormat::Gif,
            ImageFormat::WebP => image::ImageFormat::WebP,
        }
    }
}

/// What an upload may be at most; the caller picks them (avatars and attachments differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// The file's size in bytes.
    pub max_bytes: usize,
    /// The image's width in pixels (and each GIF frame's).
    pub max_width: u32,
    /// The image's height in pixels (and each GIF frame's).
    pub max_height: u32,
}

/// What [`inspect`] learned about an accepted image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    /// The format found in the content.
    pub format: ImageFormat,
    /// Width in pixels (a GIF's logical screen width).
    pub width: u32,
    /// Height in pixels (a GIF's logical screen height).
    pub height: u32,
}

/// Why an upload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// The content is not a PNG, JPEG or GIF, whatever its name says.
    #[error("unsupported image type: expected PNG, JPEG, GIF or WebP")]
    UnsupportedType,
    /// The file has more bytes than allowed.
    #[error("image is {bytes} bytes, more than the {max} allowed")]
    TooLarge {
        /// The file's size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The image (or a GIF frame) is wider or taller than allowed, or decoding it would need
    /// more than [`MAX_DECODE_ALLOC_BYTES`].
    #[error("image is {width}x{height} pixels, more than the {max_width}x{max_height} allowed")]
    DimensionsTooLarge {
        /// Width found (in the header, or of the offending frame).
        width: u32,
        /// Height found.
        height: u32,
        /// Width allowed.
        max_width: u32,
        /// Height allowed.
        max_height: u32,
    },
    /// More pixels than [`MAX_IMAGE_PIXELS`] (for a GIF: screen area × frames).
    #[error("image has {pixels} pixels (frames included), more than the {max} allowed")]
    TooManyPixels {
        /// Pixels found.
        pixels: u64,
        /// Pixels allowed.
        max: u64,
    },
    /// The content starts like an image but is malformed, truncated or does not decode.
    #[error("image is corrupt or truncated")]
    Corrupt,
}

impl ImageError {
    /// The stable `code` of the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            ImageError::UnsupportedType => "unsupported_media_type",
            ImageError::TooLarge { .. } => "payload_too_large",
            ImageError::DimensionsTooLarge { .. } | ImageError::TooManyPixels { .. } => {
                "image_too_large"
            }
            ImageError::Corrupt => "invalid_image",
        }
    }
}

/// The format of `bytes` by its magic bytes: the PNG signature, a JPEG SOI followed by a marker,
/// or `GIF87a`/`GIF89a`. `None` for anything else.
pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    if bytes.starts_with(&png::SIGNATURE) {
        Some(ImageFormat::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some(ImageFormat::Gif)
    } else if webp::is_webp(bytes) {
        Some(ImageFormat::WebP)
    } else {
        None
    }
}

/// Checks an upload by content and returns its format and dimensions.
///
/// In order: `bytes.len()` against `limits.max_bytes` ([`ImageError::TooLarge`]); the magic
/// bytes ([`ImageError::UnsupportedType`]); the dimensions in the header, read without decoding
/// ([`ImageError::DimensionsTooLarge`], also for a GIF frame larger than the limits); the
/// container structure through its end marker, and a full decode bounded by
/// [`MAX_DECODE_ALLOC_BYTES`] ([`ImageError::Corrupt`], or `DimensionsTooLarge` when the
/// decoder would need more memory than that). The decode covers a GIF's first frame; its later
/// frames are checked structurally (complete sub-block chains) and against the limits.
pub fn inspect(bytes: &[u8], limits: &ImageLimits) -> Result<ImageInfo, ImageError> {
    inspect_within(bytes, limits, MAX_IMAGE_PIXELS)
}

/// [`inspect`] with a pixel bound other than [`MAX_IMAGE_PIXELS`] (for tests).
fn inspect_within(
    bytes: &[u8],
    limits: &ImageLimits,
    max_pixels: u64,
) -> Result<ImageInfo, ImageError> {
    if bytes.len() > limits.max_bytes {
        return Err(ImageError::TooLarge {
            bytes: bytes.len(),
            max: limits.max_bytes,
        });
    }
    let format = sniff(bytes).ok_or(ImageError::UnsupportedType)?;
    let (width, height) = match format {
        ImageFormat::Png => png::dimensions(bytes)?,
        ImageFormat::Jpeg => jpeg::dimensions(bytes)?,
        ImageFormat::Gif => gif::dimensions(bytes)?,
        ImageFormat::WebP => webp::dimensions(bytes)?,
    };
    check_dimensions(width, height, limits)?;
    check_pixels(width, height, 1, max_pixels)?;
    // The structure through its end marker; for a GIF, also every frame's size.
    let mut frames: u64 = 0;
    let frame_error = match format {
        ImageFormat::Png => png::walk(bytes, |_| ControlFlow::Continue(()))?,
        ImageFormat::Jpeg => jpeg::walk(bytes, |_| ControlFlow::Continue(()))?,
        ImageFormat::Gif => gif::walk(bytes, |block| match block.kind {
            // An empty frame is odd but harmless; only oversized ones are refused.
            gif::BlockKind::Image {
                width: frame_width,
                height: frame_height,
            } => {
                frames += 1;
                let checked = check_dimensions(frame_width.max(1), frame_height.max(1), limits)
                    .and_then(|()| check_pixels(width, height, frames, max_pixels));
                match checked {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(error) => ControlFlow::Break(error),
                }
            }
            _ => ControlFlow::Continue(()),
        })?,
        // An animation: every frame within the limits, and the canvas times the frames
        // within the pixel bound, as for a GIF.
        ImageFormat::WebP => {
            let animation = webp::frames(bytes)?;
            let count = animation.len().max(1) as u64;
            animation
                .iter()
                .map(|&(w, h)| check_dimensions(w, h, limits))
                .find_map(Result::err)
                .or_else(|| check_pixels(width, height, count, max_pixels).err())
        }
    };
    if let Some(error) = frame_error {
        return Err(error);
    }
    decode(format, bytes, width, height, limits)?;
    Ok(ImageInfo {
        format,
        width,
        height,
    })
}

/// `frames` frames of `width`×`height` against `max_pixels`.
fn check_pixels(width: u32, height: u32, frames: u64, max_pixels: u64) -> Result<(), ImageError> {
    let pixels = u64::from(width)
        .saturating_mul(u64::from(height))
        .saturating_mul(frames);
    if pixels > max_pixels {
        return Err(ImageError::TooManyPixels {
            pixels,
            max: max_pixels,
        });
    }
    Ok(())
}

fn check_dimensions(width: u32, height: u32, limits: &ImageLimits) -> Result<(), ImageError> {
    // Zero is invalid in PNG and GIF headers; in JPEG it means "height given later by a DNL
    // segment", which no upload needs and the decoders do not support.
    if width == 0 || height == 0 {
        return Err(ImageError::Corrupt);
    }
    if width > limits.max_width || height > limits.max_height {
        return Err(ImageError::DimensionsTooLarge {
            width,
            height,
            max_width: limits.max_width,
            max_height: limits.max_height,
        });
    }
    Ok(())
}

/// Decodes every pixel of the (first) image, within the dimension limits and
/// [`MAX_DECODE_ALLOC_BYTES`], and checks that the decoder agrees with the header.
fn decode(
    format: ImageFormat,
    bytes: &[u8],
    width: u32,
    height: u32,
    limits: &ImageLimits,
) -> Result<(), ImageError> {
    let image =
        decode_bounded(format, bytes, limits.max_width, limits.max_height).map_err(|error| {
            match error {
                image::ImageError::Limits(_) => ImageError::DimensionsTooLarge {
                    width,
                    height,
                    max_width: limits.max_width,
                    max_height: limits.max_height,
                },
                _ => ImageError::Corrupt,
            }
        })?;
    if (image.width(), image.height()) != (width, height) {
        return Err(ImageError::Corrupt);
    }
    Ok(())
}

/// Decodes the (first) image with the decoder's own bounds: at most `max_width`×`max_height`
/// and [`MAX_DECODE_ALLOC_BYTES`] of allocations.
fn decode_bounded(
    format: ImageFormat,
    bytes: &[u8],
    max_width: u32,
    max_height: u32,
) -> image::ImageResult<image::DynamicImage> {
    let mut decode_limits = image::Limits::default();
    decode_limits.max_image_width = Some(max_width);
    decode_limits.max_image_height = Some(max_height);
    decode_limits.max_alloc = Some(MAX_DECODE_ALLOC_BYTES);
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format.to_image_crate());
    reader.limits(decode_limits);
    reader.decode()
}

/// An accepted image scaled down to fit within `max_width`×`max_height` (aspect kept), as a
/// PNG; `None` when it already fits. For avatars: the client offers any image up to its byte
/// limit and never reads the dimension limit, so a large one is scaled rather than refused.
/// The decode is bounded as in [`inspect`]; an animation keeps its first frame. Re-encoding
/// carries over no metadata.
pub fn fit_within(
    info: &ImageInfo,
    bytes: &[u8],
    max_width: u32,
    max_height: u32,
) -> Result<Option<(ImageInfo, Vec<u8>)>, ImageError> {
    if info.width <= max_width && info.height <= max_height {
        return Ok(None);
    }
    // `info` comes from `inspect`, so these are the dimensions the decoder must find.
    let image = decode_bounded(info.format, bytes, info.width, info.height)
        .map_err(|_| ImageError::Corrupt)?;
    let scaled = image.resize(max_width, max_height, image::imageops::FilterType::Triangle);
    let mut out = Cursor::new(Vec::new());
    scaled
        .write_to(&mut out, image::ImageFormat::Png)
        .map_err(|_| ImageError::Corrupt)?;
    let fitted = ImageInfo {
        format: ImageFormat::Png,
        width: scaled.width(),
        height: scaled.height(),
    };
    Ok(Some((fitted, out.into_inner())))
}

/// Removes metadata from an image of the given format without re-encoding it.
///
/// - PNG: drops the `tEXt`, `zTXt`, `iTXt`, `eXIf` and `tIME` chunks; every other chunk
///   (`iCCP` included) is copied with its CRC untouched.
/// - JPEG: drops APP1 to APP13 (EXIF, XMP, MPF, Photoshop IRB…), APP15, COM and JFXX thumbnail
///   APP0 segments, wherever they sit in the marker stream; keeps JFIF APP0, Adobe APP14 and
///   `ICC_PROFILE` APP2 (colour, like PNG's `iCCP`) and copies every other segment and the
///   entropy-coded data verbatim.
/// - WebP: drops the `EXIF` and `XMP ` chunks and clears their `VP8X` flags; every other
///   chunk (`ICCP` included) is copied verbatim and the RIFF size is recomputed.
/// - GIF: drops comment extensions and application extensions other than `NETSCAPE2.0` and
///   `ANIMEXTS1.0` (the looping ones); keeps everything else.
///
/// Bytes after the end marker (IEND, EOI, trailer) are dropped. A malformed or truncated
/// container is [`ImageError::Corrupt`].
pub fn strip_metadata(format: ImageFormat, bytes: &[u8]) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::with_capacity(bytes.len());
    match format {
        ImageFormat::Png => {
            out.extend_from_slice(&png::SIGNATURE);
            png::walk(bytes, |chunk| {
                if !png::is_metadata(&chunk.kind) {
                    out.extend_from_slice(chunk.raw);
                }
                ControlFlow::<()>::Continue(())
            })?;
        }
        ImageFormat::Jpeg => {
            jpeg::walk(bytes, |segment| {
                if !jpeg::is_metadata(&segment) {
                    out.extend_from_slice(segment.raw);
                }
                ControlFlow::<()>::Continue(())
            })?;
        }
        ImageFormat::WebP => return webp::strip(bytes),
        ImageFormat::Gif => {
            gif::walk(bytes, |block| {
                if !gif::is_metadata(&block) {
                    out.extend_from_slice(block.raw);
                }
                ControlFlow::<()>::Continue(())
            })?;
        }
    }
    Ok(out)
}

/// Reads a big-endian `u16` at `at`, or `Corrupt` past the end.
fn be_u16(bytes: &[u8], at: usize) -> Result<u16, ImageError> {
    bytes
        .get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(ImageError::Corrupt)
}

/// Reads a little-endian `u16` at `at`, or `Corrupt` past the end.
fn le_u16(bytes: &[u8], at: usize) -> Result<u16, ImageError> {
    bytes
        .get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(ImageError::Corrupt)
}

/// Reads a little-endian `u32` at `at`, or `Corrupt` past the end.
fn le_u32(bytes: &[u8], at: usize) -> Result<u32, ImageError> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(ImageError::Corrupt)
}

/// Reads a big-endian `u32` at `at`, or `Corrupt` past the end.
fn be_u32(bytes: &[u8], at: usize) -> Result<u32, ImageError> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(ImageError::Corrupt)
}

#[cfg(test)]
mod tests;
