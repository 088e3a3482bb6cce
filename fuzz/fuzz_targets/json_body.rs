//! Feeds arbitrary bytes to `openchatd::json`, the one parser of JSON from the network, as the
//! API reads bodies: a depth scan split at a point taken from the input must agree with the
//! whole, anything accepted is within `MAX_JSON_DEPTH`, and the typed shapes of a few endpoints
//! (message post, channel layout, bulk read marks, profile) parse without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openchatd::json::{self, DepthScan, JsonError, MAX_JSON_DEPTH};
use serde::Deserialize;

#[allow(dead_code)]
#[derive(Deserialize)]
struct MessageIn {
    body: Option<String>,
    reply_to_message_id: Option<String>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct Group {
    id: String,
    channel_ids: Vec<String>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct LayoutIn {
    groups: Vec<Group>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct ReadAck {
    channel_id: String,
    last_read_message_id: Option<String>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct ReadAcksIn {
    read_acks: Vec<ReadAck>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct ProfileIn {
    display_name: Option<String>,
    bio: Option<String>,
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let whole = json::check_depth(body);
    let at = usize::from(cut) * body.len() / 255;
    let mut split = DepthScan::new();
    let split_result = split
        .feed(&body[..at], MAX_JSON_DEPTH)
        .and_then(|()| split.feed(&body[at..], MAX_JSON_DEPTH));
    assert_eq!(whole, split_result, "splitting the input changed the scan");
    if whole.is_ok() {
        assert!(split.deepest() <= MAX_JSON_DEPTH);
    }

    let owned = json::to_owned_value(&mut body.to_vec());
    let borrowed_ok = json::to_borrowed_value(&mut body.to_vec()).is_ok();
    assert_eq!(owned.is_ok(), borrowed_ok, "owned and borrowed parses disagree");
    if whole == Err(JsonError::TooDeep) {
        assert_eq!(owned, Err(JsonError::TooDeep));
    }
    let _ = json::from_slice::<MessageIn>(&mut body.to_vec());
    let _ = json::from_slice::<LayoutIn>(&mut body.to_vec());
    let _ = json::from_slice::<ReadAcksIn>(&mut body.to_vec());
    let _ = json::from_slice::<ProfileIn>(&mut body.to_vec());
});
