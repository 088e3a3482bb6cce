//! JPEG marker walking: `SOI`, marker segments, entropy-coded scan data after each `SOS`, `EOI`.

use std::ops::ControlFlow;

use super::{ImageError, be_u16};

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;
const TEM: u8 = 0x01;
const APP0: u8 = 0xE0;
const APP2: u8 = 0xE2;
const APP14: u8 = 0xEE;
const APP15: u8 = 0xEF;
const COM: u8 = 0xFE;

/// One piece of the file, in order; concatenating every `raw` gives the file up to `EOI`.
pub(super) struct Segment<'a> {
    /// The marker byte (after the `0xFF`s), or `None` for entropy-coded scan data.
    pub marker: Option<u8>,
    /// The segment's payload after its length field (empty for standalone markers).
    pub payload: &'a [u8],
    /// The whole piece: fill bytes, marker, length and payload (or the scan data).
    pub raw: &'a [u8],
}

/// Whether `strip_metadata` drops this segment: APP1 to APP13 except an `ICC_PROFILE` APP2,
/// APP15, COM, and the JFXX (thumbnail) extension of APP0.
pub(super) fn is_metadata(segment: &Segment<'_>) -> bool {
    match segment.marker {
        Some(APP0) => segment.payload.starts_with(b"JFXX\0"),
        Some(APP2) => !segment.payload.starts_with(b"ICC_PROFILE\0"),
        Some(m) if (APP0 + 1..APP14).contains(&m) => true,
        Some(APP15 | COM) => true,
        _ => false,
    }
}

/// Whether `marker` starts a frame (SOF0 to SOF15; C4, C8 and CC are DHT, JPG and DAC).
fn is_start_of_frame(marker: u8) -> bool {
    (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC)
}

/// Width and height from the first start-of-frame segment, which must come before the first scan.
pub(super) fn dimensions(bytes: &[u8]) -> Result<(u32, u32), ImageError> {
    let found = walk(bytes, |segment| match segment.marker {
        Some(m) if is_start_of_frame(m) => ControlFlow::Break(
            // Payload: sample precision, height, width, components…
            be_u16(segment.payload, 1)
                .and_then(|h| Ok((u32::from(be_u16(segment.payload, 3)?), u32::from(h)))),
        ),
        Some(SOS | EOI) | None => ControlFlow::Break(Err(ImageError::Corrupt)),
        _ => ControlFlow::Continue(()),
    })?;
    found.unwrap_or(Err(ImageError::Corrupt))
}

/// Visits each segment from `SOI` through `EOI` (bytes after `EOI` are ignored), including the
/// segments between the scans of a progressive image. Anything malformed, or an end of input
/// before `EOI`, is `Corrupt`. Returns what the visitor broke with, if it did.
pub(super) fn walk<'a, B>(
    bytes: &'a [u8],
    mut visit: impl FnMut(Segment<'a>) -> ControlFlow<B>,
) -> Result<Option<B>, ImageError> {
    if !bytes.starts_with(&[0xFF, SOI]) {
        return Err(ImageError::Corrupt);
    }
    let soi = Segment {
        marker: Some(SOI),
        payload: &[],
        raw: &bytes[..2],
    };
    if let ControlFlow::Break(value) = visit(soi) {
        return Ok(Some(value));
    }
    let mut pos = 2;
    let mut in_scan = false;
    loop {
        if in_scan {
            let end = scan_end(bytes, pos)?;
            let data = Segment {
                marker: None,
                payload: &bytes[pos..end],
                raw: &bytes[pos..end],
            };
            if let ControlFlow::Break(value) = visit(data) {
                return Ok(Some(value));
            }
            pos = end;
            in_scan = false;
        }
        let start = pos;
        if bytes.get(pos) != Some(&0xFF) {
            return Err(ImageError::Corrupt);
        }
        // Any number of 0xFF fill bytes may precede a marker.
        while bytes.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        let marker = *bytes.get(pos).ok_or(ImageError::Corrupt)?;
        pos += 1;
        let payload: &[u8] = match marker {
            0x00 | SOI => return Err(ImageError::Corrupt),
            EOI | TEM | 0xD0..=0xD7 => &[],
            _ => {
                let len = usize::from(be_u16(bytes, pos)?);
                if len < 2 || pos + len > bytes.len() {
                    return Err(ImageError::Corrupt);
                }
                let payload = &bytes[pos + 2..pos + len];
                pos += len;
                payload
            }
        };
        let segment = Segment {
            marker: Some(marker),
            payload,
            raw: &bytes[start..pos],
        };
        if let ControlFlow::Break(value) = visit(segment) {
            return Ok(Some(value));
        }
        match marker {
            EOI => return Ok(None),
            SOS => in_scan = true,
            _ => {}
        }
    }
}

/// Where the entropy-coded data starting at `pos` ends: at the first `0xFF` that starts a marker
/// other than a restart marker (`0xFF 0x00` is an escaped data byte; more `0xFF`s are fill).
fn scan_end(bytes: &[u8], mut pos: usize) -> Result<usize, ImageError> {
    loop {
        let ff = bytes[pos..]
            .iter()
            .position(|&b| b == 0xFF)
            .ok_or(ImageError::Corrupt)?;
        pos += ff;
        match bytes.get(pos + 1) {
            None => return Err(ImageError::Corrupt),
            Some(0x00 | 0xD0..=0xD7) => pos += 2,
            Some(0xFF) => {
                // Fill bytes before a marker: the marker decides.
                let run = bytes[pos..].iter().take_while(|&&b| b == 0xFF).count();
                match bytes.get(pos + run) {
                    None => return Err(ImageError::Corrupt),
                    Some(0x00 | 0xD0..=0xD7) => pos += run + 1,
                    Some(_) => return Ok(pos),
                }
            }
            Some(_) => return Ok(pos),
        }
    }
}
