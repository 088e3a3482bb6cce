//! Feeds arbitrary text to the signaling frame parser (`wire::signaling::parse_signaling_frame`):
//! no panic, and a payload re-encoded as `rtc.media.state` relays it parses again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openchatd::wire::signaling::{SignalingRequest, parse_signaling_frame};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(request) = parse_signaling_frame(text.to_owned()) else {
        return;
    };
    let _ = request.kind();
    if let SignalingRequest::MediaState {
        payload: Some(relayed),
    } = request
    {
        openchatd::json::to_owned_value(&mut relayed.into_bytes())
            .expect("a relayed payload parses again");
    }
});
