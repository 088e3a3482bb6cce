//! Feeds arbitrary text to the realtime client frame parser (`realtime::protocol`): it must
//! never panic, and what it accepts respects the id and request id rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openchatd::wire::realtime::{
    ClientRequest, MAX_REQUEST_ID_CHARS, is_valid_id, parse_client_frame,
};

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = parse_client_frame(data) else {
        return;
    };
    if let Some(id) = &frame.request_id {
        let chars = id.chars().count();
        assert!(chars >= 1 && chars <= MAX_REQUEST_ID_CHARS);
        assert!(!id.chars().any(char::is_control));
    }
    match &frame.kind {
        ClientRequest::Subscribe { channel_id }
        | ClientRequest::Unsubscribe { channel_id }
        | ClientRequest::Typing { channel_id, .. } => assert!(is_valid_id(channel_id)),
        ClientRequest::Ping | ClientRequest::Unknown { .. } => {}
    }
});
