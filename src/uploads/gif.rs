//! GIF block walking: header and logical screen (with the global colour table), then image
//! descriptors and extensions made of length-prefixed sub-blocks, then the trailer.

use std::ops::ControlFlow;

use super::{ImageError, le_u16};

const EXTENSION: u8 = 0x21;
const IMAGE: u8 = 0x2C;
const TRAILER: u8 = 0x3B;
const COMMENT_LABEL: u8 = 0xFE;
const APPLICATION_LABEL: u8 = 0xFF;
/// Header (6) plus logical screen descriptor (7).
const HEADER_LEN: usize = 13;

/// Application extensions kept: the looping ones browsers honour.
const KEPT_APPLICATIONS: [&[u8]; 2] = [b"NETSCAPE2.0", b"ANIMEXTS1.0"];

/// What a block is.
pub(super) enum BlockKind<'a> {
    /// Header, logical screen descriptor and global colour table.
    Header,
    /// An image descriptor with its local colour table and image data.
    Image {
        /// The frame's width.
        width: u32,
        /// The frame's height.
        height: u32,
    },
    /// An extension with its label and the data of its first sub-block (the identifier of an
    /// application extension).
    Extension { label: u8, first: &'a [u8] },
    /// The trailer byte.
    Trailer,
}

/// One block as it sits in the file.
pub(super) struct Block<'a> {
    pub kind: BlockKind<'a>,
    /// The whole block, terminator included.
    pub raw: &'a [u8],
}

/// Whether `strip_metadata` drops this block: comments, and application extensions other than
/// the looping ones.
pub(super) fn is_metadata(block: &Block<'_>) -> bool {
    match block.kind {
        BlockKind::Extension {
            label: COMMENT_LABEL,
            ..
        } => true,
        BlockKind::Extension {
            label: APPLICATION_LABEL,
            first,
        } => !KEPT_APPLICATIONS.contains(&first),
        _ => false,
    }
}

/// The logical screen's width and height.
pub(super) fn dimensions(bytes: &[u8]) -> Result<(u32, u32), ImageError> {
    Ok((u32::from(le_u16(bytes, 6)?), u32::from(le_u16(bytes, 8)?)))
}

/// Visits each block from the header through the trailer (bytes after it are ignored).
/// Anything malformed, or an end of input before the trailer, is `Corrupt`. Returns what the
/// visitor broke with, if it did.
pub(super) fn walk<'a, B>(
    bytes: &'a [u8],
    mut visit: impl FnMut(Block<'a>) -> ControlFlow<B>,
) -> Result<Option<B>, ImageError> {
    if !(bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a")) {
        return Err(ImageError::Corrupt);
    }
    let screen_flags = *bytes.get(10).ok_or(ImageError::Corrupt)?;
    let mut pos = HEADER_LEN + color_table_len(screen_flags);
    if pos > bytes.len() {
        return Err(ImageError::Corrupt);
    }
    let header = Block {
        kind: BlockKind::Header,
        raw: &bytes[..pos],
    };
    if let ControlFlow::Break(value) = visit(header) {
        return Ok(Some(value));
    }
    loop {
        let start = pos;
        let (kind, end) = match *bytes.get(pos).ok_or(ImageError::Corrupt)? {
            IMAGE => {
                // Introducer, left, top, width, height, flags; then the local colour table and
                // the LZW minimum code size.
                let width = u32::from(le_u16(bytes, pos + 5)?);
                let height = u32::from(le_u16(bytes, pos + 7)?);
                let flags = *bytes.get(pos + 9).ok_or(ImageError::Corrupt)?;
                let data = pos + 10 + color_table_len(flags) + 1;
                (
                    BlockKind::Image { width, height },
                    sub_blocks_end(bytes, data)?,
                )
            }
            EXTENSION => {
                let label = *bytes.get(pos + 1).ok_or(ImageError::Corrupt)?;
                let first_len = usize::from(*bytes.get(pos + 2).ok_or(ImageError::Corrupt)?);
                let first = bytes
                    .get(pos + 3..pos + 3 + first_len)
                    .ok_or(ImageError::Corrupt)?;
                (
                    BlockKind::Extension { label, first },
                    sub_blocks_end(bytes, pos + 2)?,
                )
            }
            TRAILER => (BlockKind::Trailer, pos + 1),
            _ => return Err(ImageError::Corrupt),
        };
        let is_trailer = matches!(kind, BlockKind::Trailer);
        if let ControlFlow::Break(value) = visit(Block {
            kind,
            raw: &bytes[start..end],
        }) {
            return Ok(Some(value));
        }
        if is_trailer {
            return Ok(None);
        }
        pos = end;
    }
}

/// Bytes of the colour table announced by a logical screen or image descriptor's flags.
fn color_table_len(flags: u8) -> usize {
    if flags & 0x80 == 0 {
        0
    } else {
        3 << ((flags & 0x07) + 1)
    }
}

/// The end of the sub-block chain starting at `pos`, just past its zero-length terminator.
fn sub_blocks_end(bytes: &[u8], mut pos: usize) -> Result<usize, ImageError> {
    loop {
        let len = usize::from(*bytes.get(pos).ok_or(ImageError::Corrupt)?);
        pos += 1 + len;
        if len == 0 {
            return Ok(pos);
        }
        if pos > bytes.len() {
            return Err(ImageError::Corrupt);
        }
    }
}
