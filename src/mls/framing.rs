//! MLSMessage framing: reading fixed header fields and decoding whole
//! buffers as TLS-encoded MLSMessages.

use openmls::prelude::MlsMessageIn;
use openmls::prelude::tls_codec::DeserializeBytes;

use super::MlsError;

/// The big-endian u16 at byte offset `at`, if the buffer is long enough.
pub(super) fn be16(data: &[u8], at: usize) -> Option<u16> {
    let bytes = data.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]))
}

/// Decodes a whole buffer as an MLSMessage. A wrong leading protocol version
/// gives [`MlsError::WrongProtocolVersion`], anything else undecodable
/// [`MlsError::Malformed`].
pub(super) fn parse_message(data: &[u8]) -> Result<MlsMessageIn, MlsError> {
    if be16(data, 0).is_some_and(|v| v != 1) {
        return Err(MlsError::WrongProtocolVersion);
    }
    MlsMessageIn::tls_deserialize_exact_bytes(data).map_err(|_| MlsError::Malformed)
}
