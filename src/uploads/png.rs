//! PNG chunk walking: the signature, then `length, type, data, CRC` chunks from `IHDR` to `IEND`.

use std::ops::ControlFlow;

use super::{ImageError, be_u32};

/// The eight bytes every PNG starts with.
pub(super) const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

/// Largest chunk length the PNG specification allows (2^31 - 1).
const MAX_CHUNK_LEN: u32 = 0x7FFF_FFFF;

/// Chunks that carry text, EXIF or time metadata and nothing the pixels need.
const METADATA_CHUNKS: [&[u8; 4]; 5] = [b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME"];

/// One chunk as it sits in the file.
pub(super) struct Chunk<'a> {
    /// The four-letter chunk type.
    pub kind: [u8; 4],
    /// The whole chunk: length, type, data and CRC.
    pub raw: &'a [u8],
}

/// Whether `strip_metadata` drops a chunk of this type.
pub(super) fn is_metadata(kind: &[u8; 4]) -> bool {
    METADATA_CHUNKS.contains(&kind)
}

/// Width and height from the `IHDR` chunk, which must come first.
pub(super) fn dimensions(bytes: &[u8]) -> Result<(u32, u32), ImageError> {
    if !bytes.starts_with(&SIGNATURE)
        || be_u32(bytes, 8)? != 13
        || bytes.get(12..16) != Some(b"IHDR")
    {
        return Err(ImageError::Corrupt);
    }
    let width = be_u32(bytes, 16)?;
    let height = be_u32(bytes, 20)?;
    if width > MAX_CHUNK_LEN || height > MAX_CHUNK_LEN {
        return Err(ImageError::Corrupt);
    }
    Ok((width, height))
}

/// Visits each chunk from `IHDR` through `IEND` (bytes after `IEND` are ignored). A missing
/// signature, a first chunk other than `IHDR`, a malformed chunk, or an end of input before
/// `IEND` is `Corrupt`. Returns what the visitor broke with, if it did.
pub(super) fn walk<'a, B>(
    bytes: &'a [u8],
    mut visit: impl FnMut(Chunk<'a>) -> ControlFlow<B>,
) -> Result<Option<B>, ImageError> {
    if !bytes.starts_with(&SIGNATURE) {
        return Err(ImageError::Corrupt);
    }
    let mut pos = SIGNATURE.len();
    let mut first = true;
    loop {
        let len = be_u32(bytes, pos)?;
        if len > MAX_CHUNK_LEN {
            return Err(ImageError::Corrupt);
        }
        let kind: [u8; 4] = bytes
            .get(pos + 4..pos + 8)
            .and_then(|k| k.try_into().ok())
            .ok_or(ImageError::Corrupt)?;
        if !kind.iter().all(u8::is_ascii_alphabetic) || (first && &kind != b"IHDR") {
            return Err(ImageError::Corrupt);
        }
        first = false;
        let end = (pos + 12)
            .checked_add(len as usize)
            .filter(|&end| end <= bytes.len())
            .ok_or(ImageError::Corrupt)?;
        let raw = &bytes[pos..end];
        if let ControlFlow::Break(value) = visit(Chunk { kind, raw }) {
            return Ok(Some(value));
        }
        if &kind == b"IEND" {
            return Ok(None);
        }
        pos = end;
    }
}
