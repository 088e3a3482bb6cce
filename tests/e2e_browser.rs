//! A call between two participants in headless Chromium, the engine of the OpenChat desktop
//! client, through openchatd (wire contract A.8): join tickets over HTTP, the signaling socket,
//! the browser's own WebRTC stack offering publish and subscribe connections, the fake camera
//! and microphone sent over DTLS-SRTP to the server's UDP sockets and decoded by the other
//! participant. The page is `tests/browser/call.html`.
//!
//! The server listens on loopback with no `OPENCHAT_RTC_PUBLIC_IP`, as on an operator's own
//! machine: Chromium never pairs with a loopback candidate, so this also checks that such
//! clients are given the host's interface addresses.

mod support;

use std::time::Duration;

use simd_json::prelude::*;
use support::api::Client;
use support::browser::{Browser, PageServer};
use support::call::voice_channel;
use support::json::{Json, JsonPath, encode};
use support::server::{Engine, start_community};

const PAGE: &str = include_str!("browser/call.html");

/// Runs the page's call and returns what it reported.
fn call_in_chromium(simulcast: bool) -> Json {
    run_page(&format!("simulcast={}", simulcast as u8))
}

/// One Chromium at a time: a call is real-time work, and these machines have two cores.
static ONE_BROWSER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs the page with `query` added and returns what it reported.
fn run_page(query: &str) -> Json {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let server = start_community(Engine::Sqlite, &[("OPENCHAT_DEFAULT_SERVER_ID", "home")]);
    let voice = voice_channel(&Client::user(server.addr), "home");
    let pages = PageServer::new(PAGE);
    let url = format!(
        "http://{}/page.html?api=http://{}&server=home&channel={voice}&{query}",
        pages.addr, server.addr
    );
    let _browser = Browser::open(&url);
    let result = pages
        .result(Duration::from_secs(90))
        .expect("the page reports within 90 s");
    assert!(
        result.try_at("error").is_none(),
        "the call failed in Chromium: {}",
        encode(&result)
    );
    result
}

fn strings(doc: &Json, path: &str) -> Vec<String> {
    doc.arr_at(path)
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect()
}

/// What every call must show: Bob is told of Alice's three tracks (microphone, camera, screen)
/// with the ids she sent, before the refresh that makes him re-offer; his answer carries those
/// ids; he decodes her audio, camera and screen; Alice hears nothing of her own tracks; the
/// audio level marks her as speaking; Carol, joining late, gets the same tracks at once; when
/// Alice leaves, her tracks are withdrawn.
fn assert_the_call_worked(result: &Json) {
    let stream = result.str_at("sent.stream_id");
    let screen_stream = result.str_at("sent.screen_stream_id");
    // (stream id, track id, media_kind, stream_kind) of what Alice sent.
    let sent = [
        (
            stream,
            result.str_at("sent.mic"),
            "audio",
            "audio_microphone",
        ),
        (
            stream,
            result.str_at("sent.camera"),
            "video",
            "video_camera",
        ),
        (
            screen_stream,
            result.str_at("sent.screen"),
            "video",
            "video_screen",
        ),
    ];
    let mut sent_ids: Vec<(String, String)> = sent
        .iter()
        .map(|(stream, track, ..)| (stream.to_string(), track.to_string()))
        .collect();
    sent_ids.sort();
    let ids = |path: &str| -> Vec<(String, String)> {
        let mut ids: Vec<(String, String)> = result
            .arr_at(path)
            .iter()
            .map(|p| {
                (
                    p.str_at("stream_id").to_owned(),
                    p.str_at("track_id").to_owned(),
                )
            })
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids("bob_published"), sent_ids, "{}", encode(result));
    let published = result.arr_at("bob_published");
    for (stream, track, media_kind, stream_kind) in sent {
        let frame = published
            .iter()
            .find(|p| p.str_at("track_id") == track)
            .expect("compared above");
        assert_eq!(frame.str_at("media_kind"), media_kind);
        assert_eq!(frame.str_at("stream_kind"), stream_kind);
        assert_eq!(
            frame.str_at("participant_id"),
            result.str_at("alice_participant_id")
        );
        let msid = format!("a=msid:{stream} {track}");
        assert!(
            result.str_at("bob_answer_sdp").contains(&msid),
            "bob's answer lacks {msid}"
        );
    }
    let frames = strings(result, "bob_frames");
    let first_published = frames.iter().position(|f| f == "rtc.track.published");
    let refresh = frames.iter().position(|f| f == "rtc.subscribe.refresh");
    assert!(
        first_published.is_some() && first_published < refresh,
        "published, then refresh: {frames:?}"
    );
    assert!(
        frames.iter().any(|f| f == "rtc.participant.speaking"),
        "{frames:?}"
    );
    assert!(result.arr_at("alice_published").is_empty(), "no echo");
    // The browser's own view: each remote track in the stream it was sent in.
    let remote = result.arr_at("bob_remote_tracks");
    for (kind, stream) in [
        ("audio", stream),
        ("video", stream),
        ("video", screen_stream),
    ] {
        assert!(
            remote
                .iter()
                .any(|t| t.str_at("kind") == kind && t.str_at("stream_id") == stream),
            "bob has no {kind} track in stream {stream}: {}",
            encode(result)
        );
    }
    let decoded = |path: &str, frames: i64, packets: i64| {
        let inbound = result.arr_at(path);
        let audio = inbound
            .iter()
            .find(|s| s.str_at("kind") == "audio")
            .is_some_and(|s| s.i64_at("packets") > packets);
        let videos = inbound
            .iter()
            .filter(|s| s.str_at("kind") == "video" && s.i64_at("frames_decoded") > frames)
            .count();
        assert!(audio && videos == 2, "{path}: {}", encode(result));
    };
    // Bob decoded audio, camera and screen.
    decoded("bob_inbound", 30, 100);

    // Carol, who joined late, was told of the same tracks with the same ids and decoded them.
    assert_eq!(ids("carol_published"), sent_ids);
    decoded("carol_inbound", 10, 25);
    // Alice left: Bob heard it, and her three tracks were withdrawn with their ids.
    assert_eq!(ids("bob_unpublished"), sent_ids);
    let left = result.arr_at("bob_left");
    assert_eq!(left.len(), 1, "{}", encode(result));
    assert_eq!(
        left[0].str_at("participant.participant_id"),
        result.str_at("alice_participant_id")
    );
}

#[test]
fn chromium_participants_talk_share_a_screen_join_late_and_leave() {
    let result = call_in_chromium(false);
    assert_the_call_worked(&result);
}

#[test]
fn a_chromium_simulcast_camera_reaches_the_other_participants() {
    let result = call_in_chromium(true);
    assert_the_call_worked(&result);
    // Chromium sends all three layers only when the answer accepted simulcast.
    let layers: Vec<&str> = result
        .arr_at("alice_outbound")
        .iter()
        .filter(|s| s.str_at("kind") == "video" && s.i64_at("packets") > 0)
        .filter_map(|s| s.at("rid").as_str())
        .collect();
    for rid in ["q", "h", "f"] {
        assert!(layers.contains(&rid), "layer {rid} not sent: {layers:?}");
    }
    // Which camera layer Bob decodes follows his REMB estimate (and Chromium scales layers to
    // its CPU), so only that he decodes one is checked, by assert_the_call_worked.
}

#[test]
fn chromium_recovers_a_call_by_ice_restart_and_by_rejoining_with_a_fresh_ticket() {
    let result = run_page("scenario=recover");
    let pair = |path: &str| strings(&result, path);
    // The restart renewed the credentials on both of alice's connections, on both sides.
    for (before, after) in [
        ("before.alice_ufrags", "restarted.alice_ufrags"),
        ("before.server_ufrags", "restarted.server_ufrags"),
    ] {
        let (before, after) = (pair(before), pair(after));
        assert_eq!(before.len(), 2);
        assert!(
            before.iter().zip(&after).all(|(b, a)| b != a),
            "{before:?} -> {after:?}"
        );
    }
    assert_eq!(pair("restarted.states"), ["connected", "connected"]);
    // Audio went on both ways after it (the page waited for 100 more packets each way).
    assert!(result.i64_at("restarted.alice_heard") > result.i64_at("before.alice_heard") + 100);
    assert!(result.i64_at("restarted.bob_heard") > result.i64_at("before.bob_heard") + 100);
    // Bob came back as a new participant of the same user, announced to alice, and they
    // hear each other again.
    assert_ne!(
        result.str_at("bob_participant_id"),
        result.str_at("again_participant_id")
    );
    let joined = result.arr_at("alice_joined");
    assert!(
        joined
            .iter()
            .any(|p| p.str_at("participant_id") == result.str_at("again_participant_id")),
        "{}",
        encode(&result)
    );
    assert!(result.i64_at("again_heard") > 50);
    assert!(
        result.arr_at("errors").is_empty(),
        "no rtc.error on the way: {}",
        encode(&result)
    );
}
