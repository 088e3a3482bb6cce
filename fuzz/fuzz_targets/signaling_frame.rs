//! Feeds arbitrary text to the signaling frame parser (`api::signaling::Envelope`), then reads
//! the fields the socket reads and re-encodes the payload as `rtc.media.state` relays it: no
//! panic, and the relayed payload parses again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openchatd::api::signaling::Envelope;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(envelope) = Envelope::parse(text.to_owned()) else {
        return;
    };
    let _ = (
        envelope.text("sdp"),
        envelope.text("candidate"),
        envelope.text("direction"),
        envelope.text("ticket"),
        envelope.channel_id.as_deref(),
    );
    if let Some(payload) = &envelope.payload {
        let relayed = simd_json::to_string(payload).expect("a parsed value serializes");
        openchatd::json::to_owned_value(&mut relayed.into_bytes())
            .expect("a relayed payload parses again");
    }
});
