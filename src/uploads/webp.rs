//! WebP container walking (RIFF): `RIFF`, the little-endian size of what follows, `WEBP`, then
//! chunks of `fourcc, little-endian size, payload` and a pad byte when the size is odd. A still
//! image is one `VP8 ` (lossy) or `VP8L` (lossless) chunk; an extended one starts with `VP8X`
//! (canvas size and feature flags) and may carry `ICCP`, `ALPH`, `ANIM`/`ANMF` (animation) and the
//! metadata chunks `EXIF` and `XMP `.

use std::ops::ControlFlow;

use super::{ImageError, le_u16, le_u32};

/// Chunks that carry camera, location or time metadata and nothing the pixels need.
const METADATA_CHUNKS: [&[u8; 4]; 2] = [b"EXIF", b"XMP "];

/// `VP8X` feature flags that announce the metadata chunks.
const FLAG_EXIF: u8 = 0x08;
const FLAG_XMP: u8 = 0x04;

/// One chunk as it sits in the file.
pub(super) struct Chunk<'a> {
    pub kind: [u8; 4],
    /// The chunk's data, without its header or pad byte.
    pub payload: &'a [u8],
    /// The whole chunk: header, payload and pad byte.
    pub raw: &'a [u8],
}

/// Whether the bytes start like a WebP file.
pub(super) fn is_webp(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP"
}

/// Whether `strip_metadata` drops a chunk of this kind.
pub(super) fn is_metadata(kind: &[u8; 4]) -> bool {
    METADATA_CHUNKS.contains(&kind)
}

fn le_u24(bytes: &[u8], at: usize) -> Result<u32, ImageError> {
    bytes
        .get(at..at + 3)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], 0]))
        .ok_or(ImageError::Corrupt)
}

/// Visits each chunk inside the RIFF size (bytes after it are ignored, like after a PNG's
/// `IEND`). A file without chunks, a chunk running past the RIFF size or a size the file does not
/// hold is `Corrupt`. Returns what the visitor broke with, if it did.
pub(super) fn walk<'a, B>(
    bytes: &'a [u8],
    mut visit: impl FnMut(Chunk<'a>) -> ControlFlow<B>,
) -> Result<Option<B>, ImageError> {
    if !is_webp(bytes) {
        return Err(ImageError::Corrupt);
    }
    let end = 8usize
        .checked_add(le_u32(bytes, 4)? as usize)
        .filter(|&end| end >= 12 && end <= bytes.len())
        .ok_or(ImageError::Corrupt)?;
    let mut pos = 12;
    while pos < end {
        let kind: [u8; 4] = bytes
            .get(pos..pos + 4)
            .and_then(|k| k.try_into().ok())
            .ok_or(ImageError::Corrupt)?;
        let len = le_u32(bytes, pos + 4)? as usize;
        let start = pos + 8;
        let payload_end = start
            .checked_add(len)
            .filter(|&e| e <= end)
            .ok_or(ImageError::Corrupt)?;
        let padded = (payload_end + (len & 1)).min(end);
        let chunk = Chunk {
            kind,
            payload: &bytes[start..payload_end],
            raw: &bytes[pos..padded],
        };
        if let ControlFlow::Break(value) = visit(chunk) {
            return Ok(Some(value));
        }
        pos = padded;
    }
    if pos == 12 {
        return Err(ImageError::Corrupt);
    }
    Ok(None)
}

/// The canvas size: from `VP8X` in an extended file, else from the `VP8 `/`VP8L` bitstream
/// header, which must be the first chunk.
pub(super) fn dimensions(bytes: &[u8]) -> Result<(u32, u32), ImageError> {
    let first = walk(bytes, |chunk| {
        ControlFlow::Break((chunk.kind, chunk.payload))
    })?;
    let Some((kind, p)) = first else {
        return Err(ImageError::Corrupt);
    };
    match &kind {
        b"VP8X" => Ok((1 + le_u24(p, 4)?, 1 + le_u24(p, 7)?)),
        b"VP8 " => {
            // A 3-byte frame tag, the start code, then 14-bit width and height.
            if p.get(3..6) != Some(&[0x9D, 0x01, 0x2A]) {
                return Err(ImageError::Corrupt);
            }
            Ok((
                u32::from(le_u16(p, 6)? & 0x3FFF),
                u32::from(le_u16(p, 8)? & 0x3FFF),
            ))
        }
        b"VP8L" => {
            // The signature byte, then width − 1 and height − 1 in 14 bits each.
            if p.first() != Some(&0x2F) {
                return Err(ImageError::Corrupt);
            }
            let bits = le_u32(p, 1)?;
            Ok(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
        }
        _ => Err(ImageError::Corrupt),
    }
}

/// The frames of an animation (`ANMF` chunks), each with its width and height; empty for a
/// still image.
pub(super) fn frames(bytes: &[u8]) -> Result<Vec<(u32, u32)>, ImageError> {
    let mut frames = Vec::new();
    let mut bad = false;
    walk(bytes, |chunk| {
        if &chunk.kind == b"ANMF" {
            // X, Y (3 bytes each), then width − 1 and height − 1 (3 bytes each).
            match (le_u24(chunk.payload, 6), le_u24(chunk.payload, 9)) {
                (Ok(w), Ok(h)) => frames.push((w + 1, h + 1)),
                _ => {
                    bad = true;
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    })?;
    if bad {
        return Err(ImageError::Corrupt);
    }
    Ok(frames)
}

/// The file without its `EXIF` and `XMP ` chunks, the `VP8X` flags that announced them cleared
/// and the RIFF size recomputed; every other chunk is copied verbatim.
pub(super) fn strip(bytes: &[u8]) -> Result<Vec<u8>, ImageError> {
    let mut body = Vec::with_capacity(bytes.len());
    walk(bytes, |chunk| {
        if is_metadata(&chunk.kind) {
            return ControlFlow::<()>::Continue(());
        }
        let at = body.len();
        body.extend_from_slice(chunk.raw);
        if &chunk.kind == b"VP8X" && chunk.raw.len() > 8 {
            body[at + 8] &= !(FLAG_EXIF | FLAG_XMP);
        }
        ControlFlow::Continue(())
    })?;
    let size = u32::try_from(4 + body.len()).map_err(|_| ImageError::Corrupt)?;
    let mut out = Vec::with_capacity(12 + body.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(b"WEBP");
    out.extend_from_slice(&body);
    Ok(out)
}
