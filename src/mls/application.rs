//! Application messages ([`check_application`]): what the DS can read of a
//! PrivateMessage's clear header.

use openmls::prelude::{ContentType, GroupId, MlsMessageBodyIn, ProtocolMessage};

use super::framing::parse_message;
use super::{AppMessage, MlsError, guarded};

/// Checks an application message as far as the DS can see it: a TLS-encoded
/// MLSMessage PrivateMessage of `group_id` whose clear header says content
/// type application. A PrivateMessage commit or proposal, and any
/// PublicMessage, give [`MlsError::NotApplication`]. Returns the epoch from the
/// header; the caller decides which epochs it still relays. No size limit is
/// applied here (the caller's body limit applies).
pub fn check_application(group_id: &[u8], ciphertext: &[u8]) -> Result<AppMessage, MlsError> {
    guarded(|| {
        let message = match parse_message(ciphertext)?.extract() {
            MlsMessageBodyIn::PrivateMessage(pm) => ProtocolMessage::from(pm),
            _ => return Err(MlsError::NotApplication),
        };
        if message.group_id() != &GroupId::from_slice(group_id) {
            return Err(MlsError::WrongGroup);
        }
        if message.content_type() != ContentType::Application {
            return Err(MlsError::NotApplication);
        }
        Ok(AppMessage {
            epoch: message.epoch().as_u64(),
        })
    })
}
