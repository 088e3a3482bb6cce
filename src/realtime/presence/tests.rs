//! Presence and typing, driven on a virtual clock.

use super::*;
use simd_json::prelude::*;

const CTX: FrameContext<'static> = FrameContext {
    server_id: "srv",
    timestamp: "2024-05-01T12:00:00.000Z",
};

fn sock(n: u64) -> SocketRef {
    SocketRef {
        shard: (n % 2) as usize,
        socket: n,
    }
}

fn member(n: u64) -> Member {
    Member {
        client_id: format!("c{n}"),
        user_uid: format!("uid_{n}"),
        device_id: format!("desktop_{n}"),
    }
}

fn json(frame: &Bytes) -> simd_json::OwnedValue {
    simd_json::to_owned_value(&mut frame.to_vec()).unwrap()
}

fn kind(frame: &Bytes) -> String {
    json(frame)
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap()
        .to_owned()
}

fn payload(frame: &Bytes) -> simd_json::OwnedValue {
    json(frame).get("payload").unwrap().clone()
}

fn client_ids(value: &simd_json::OwnedValue) -> Vec<String> {
    value
        .get("members")
        .and_then(|m| m.as_array())
        .unwrap()
        .iter()
        .map(|m| {
            m.get("client_id")
                .and_then(|c| c.as_str())
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// (recipient, type) pairs, sorted, for order-insensitive comparisons.
fn summary(deliveries: &[Delivery]) -> Vec<(u64, String)> {
    let mut s: Vec<_> = deliveries
        .iter()
        .map(|d| (d.to.socket, kind(&d.frame)))
        .collect();
    s.sort();
    s
}

#[test]
fn a_subscriber_sees_itself_and_the_others_see_it_join() {
    let mut p = Presence::new();
    let first = p.subscribe("ch", sock(1), member(1), &CTX).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].to, sock(1));
    assert_eq!(kind(&first[0].frame), "chat.presence.snapshot");
    let snap = payload(&first[0].frame);
    assert_eq!(snap.get("channel_id").and_then(|c| c.as_str()), Some("ch"));
    assert_eq!(client_ids(&snap), ["c1"]);
    let v = json(&first[0].frame);
    assert!(v.get("event_id").unwrap().is_null());
    assert_eq!(v.get("server_id").and_then(|s| s.as_str()), Some("srv"));

    let second = p.subscribe("ch", sock(2), member(2), &CTX).unwrap();
    assert_eq!(
        summary(&second),
        [
            (1, "chat.presence.joined".into()),
            (2, "chat.presence.snapshot".into())
        ]
    );
    assert_eq!(second[0].to, sock(2), "the snapshot comes first");
    assert_eq!(client_ids(&payload(&second[0].frame)), ["c1", "c2"]);
    let joined = payload(&second[1].frame);
    assert_eq!(
        joined
            .get("member")
            .and_then(|m| m.get("device_id"))
            .and_then(|d| d.as_str()),
        Some("desktop_2")
    );
    assert_eq!(p.members("ch").count(), 2);
    let mut subs: Vec<_> = p.subscribers("ch").collect();
    subs.sort_by_key(|s| s.socket);
    assert_eq!(subs, [sock(1), sock(2)]);
}

#[test]
fn subscribing_twice_only_refreshes_the_snapshot() {
    let mut p = Presence::new();
    p.subscribe("ch", sock(1), member(1), &CTX).unwrap();
    p.subscribe("ch", sock(2), member(2), &CTX).unwrap();
    let again = p.subscribe("ch", sock(1), member(1), &CTX).unwrap();
    assert_eq!(summary(&again), [(1, "chat.presence.snapshot".into())]);
    assert_eq!(client_ids(&payload(&again[0].frame)), ["c1", "c2"]);
    assert_eq!(p.members("ch").count(), 2);
}

#[test]
fn one_user_on_two_devices_is_two_members() {
    let mut p = Presence::new();
    let phone = Member {
        client_id: "c-a".into(),
        user_uid: "uid_x".into(),
        device_id: "desktop_a".into(),
    };
    let laptop = Member {
        client_id: "c-b".into(),
        user_uid: "uid_x".into(),
        device_id: "desktop_b".into(),
    };
    p.subscribe("ch", sock(1), phone, &CTX).unwrap();
    let d = p.subscribe("ch", sock(2), laptop, &CTX).unwrap();
    assert_eq!(client_ids(&payload(&d[0].frame)), ["c-a", "c-b"]);
}

#[test]
fn unsubscribe_and_close_announce_left() {
    let mut p = Presence::new();
    for n in 1..=3 {
        p.subscribe("a", sock(n), member(n), &CTX).unwrap();
    }
    p.subscribe("b", sock(1), member(1), &CTX).unwrap();
    p.subscribe("b", sock(2), member(2), &CTX).unwrap();

    let left = p.unsubscribe("a", sock(3), &CTX);
    assert_eq!(
        summary(&left),
        [
            (1, "chat.presence.left".into()),
            (2, "chat.presence.left".into())
        ]
    );
    assert_eq!(
        payload(&left[0].frame)
            .get("member")
            .and_then(|m| m.get("client_id"))
            .and_then(|c| c.as_str()),
        Some("c3")
    );
    assert!(p.unsubscribe("a", sock(3), &CTX).is_empty(), "only once");
    assert!(p.unsubscribe("nope", sock(1), &CTX).is_empty());

    let closed = p.socket_closed(sock(1), &CTX);
    assert_eq!(
        summary(&closed),
        [
            (2, "chat.presence.left".into()),
            (2, "chat.presence.left".into())
        ]
    );
    let channels: HashSet<String> = closed
        .iter()
        .map(|d| {
            payload(&d.frame)
                .get("channel_id")
                .and_then(|c| c.as_str())
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(channels.len(), 2);
    assert_eq!(p.subscriptions(sock(1)).count(), 0);
    assert!(p.socket_closed(sock(1), &CTX).is_empty());

    p.socket_closed(sock(2), &CTX);
    assert_eq!(p.channel_count(), 0, "empty channels are forgotten");
    assert!(p.sockets.is_empty());
}

#[test]
fn typing_is_relayed_to_the_others_and_rate_limited() {
    let mut p = Presence::new();
    p.subscribe("ch", sock(1), member(1), &CTX).unwrap();
    p.subscribe("ch", sock(2), member(2), &CTX).unwrap();
    p.subscribe("ch", sock(3), member(3), &CTX).unwrap();
    let t0 = Instant::now();

    let d = p.typing("ch", sock(1), true, t0, &CTX);
    assert_eq!(
        summary(&d),
        [
            (2, "chat.typing.updated".into()),
            (3, "chat.typing.updated".into())
        ]
    );
    let body = payload(&d[0].frame);
    assert_eq!(body.get("is_typing").and_then(|b| b.as_bool()), Some(true));
    assert_eq!(
        body.get("member")
            .and_then(|m| m.get("user_uid"))
            .and_then(|u| u.as_str()),
        Some("uid_1")
    );

    // Repeats within the interval are swallowed, one after it goes through.
    assert!(
        p.typing("ch", sock(1), true, t0 + Duration::from_millis(500), &CTX)
            .is_empty()
    );
    assert!(
        p.typing("ch", sock(1), true, t0 + Duration::from_millis(1999), &CTX)
            .is_empty()
    );
    assert_eq!(
        p.typing("ch", sock(1), true, t0 + TYPING_RELAY_MIN_INTERVAL, &CTX)
            .len(),
        2
    );

    // Stopping is relayed once; a stop from a non-typist is not.
    let stop = p.typing("ch", sock(1), false, t0 + Duration::from_secs(3), &CTX);
    assert_eq!(stop.len(), 2);
    assert_eq!(
        payload(&stop[0].frame)
            .get("is_typing")
            .and_then(|b| b.as_bool()),
        Some(false)
    );
    assert!(
        p.typing("ch", sock(1), false, t0 + Duration::from_secs(4), &CTX)
            .is_empty()
    );
    // Typing again right after a stop is news.
    assert_eq!(
        p.typing("ch", sock(1), true, t0 + Duration::from_secs(4), &CTX)
            .len(),
        2
    );
}

#[test]
fn typing_changes_past_the_socket_rate_are_dropped() {
    let mut p = Presence::new();
    p.subscribe("ch", sock(1), member(1), &CTX).unwrap();
    p.subscribe("ch", sock(2), member(2), &CTX).unwrap();
    p.subscribe("other", sock(1), member(1), &CTX).unwrap();
    p.subscribe("other", sock(2), member(2), &CTX).unwrap();
    let t0 = Instant::now();
    // A flood of start/stop pairs at one instant: only the budget is relayed.
    let relayed: usize = (0..1000)
        .map(|i| p.typing("ch", sock(1), i % 2 == 0, t0, &CTX).len())
        .sum();
    assert_eq!(relayed, TYPING_UPDATES_PER_SECOND as usize);
    // Past the budget the state stays "not typing", so each stop after a dropped start
    // is no news and costs nothing: only the starts are dropped.
    assert_eq!(
        p.dropped_updates(),
        (1000 - TYPING_UPDATES_PER_SECOND as u64) / 2
    );
    // The budget is the socket's, across its channels; another socket has its own.
    assert!(p.typing("other", sock(1), true, t0, &CTX).is_empty());
    assert_eq!(p.typing("other", sock(2), true, t0, &CTX).len(), 1);
    // The last relayed change was a stop (the 10th), and the dropped ones changed nothing:
    // no typist to expire in "ch".
    assert!(p.expire_typing(t0 + TYPING_TIMEOUT, &CTX).iter().all(|d| {
        payload(&d.frame).get("channel_id").and_then(|c| c.as_str()) == Some("other")
    }));
    // Repeats that are not relayed cost nothing.
    let t1 = t0 + Duration::from_secs(10);
    assert_eq!(p.typing("ch", sock(1), true, t1, &CTX).len(), 1);
    for ms in 1..500 {
        p.typing("ch", sock(1), true, t1 + Duration::from_millis(ms), &CTX);
    }
    let dropped = p.dropped_updates();
    assert_eq!(
        p.typing("ch", sock(1), false, t1 + Duration::from_secs(1), &CTX)
            .len(),
        1
    );
    assert_eq!(p.dropped_updates(), dropped);
    // After a pause the budget is back: one change per 100 ms.
    let t2 = t1 + Duration::from_secs(5);
    let paced: usize = (0..20u64)
        .map(|i| {
            p.typing(
                "ch",
                sock(1),
                i % 2 == 0,
                t2 + Duration::from_millis(100 * i),
                &CTX,
            )
            .len()
        })
        .sum();
    assert_eq!(paced, 20);
}

#[test]
fn typing_from_a_non_subscriber_is_ignored() {
    let mut p = Presence::new();
    p.subscribe("ch", sock(1), member(1), &CTX).unwrap();
    assert!(
        p.typing("ch", sock(9), true, Instant::now(), &CTX)
            .is_empty()
    );
    assert!(
        p.typing("other", sock(1), true, Instant::now(), &CTX)
            .is_empty()
    );
    assert_eq!(p.next_typing_expiry(), None);
}

#[test]
fn silent_typists_expire() {
    let mut p = Presence::new();
    p.subscribe("ch", sock(1), member(1), &CTX).unwrap();
    p.subscribe("ch", sock(2), member(2), &CTX).unwrap();
    let t0 = Instant::now();
    p.typing("ch", sock(1), true, t0, &CTX);
    p.typing("ch", sock(2), true, t0 + Duration::from_secs(5), &CTX);
    assert_eq!(p.next_typing_expiry(), Some(t0 + TYPING_TIMEOUT));

    assert!(
        p.expire_typing(t0 + Duration::from_secs(7), &CTX)
            .is_empty()
    );
    // A repeat inside the relay interval is not relayed but still keeps the typist alive.
    p.typing("ch", sock(2), true, t0 + Duration::from_secs(6), &CTX);
    let expired = p.expire_typing(t0 + TYPING_TIMEOUT, &CTX);
    assert_eq!(summary(&expired), [(2, "chat.typing.updated".into())]);
    let body = payload(&expired[0].frame);
    assert_eq!(body.get("is_typing").and_then(|b| b.as_bool()), Some(false));
    assert_eq!(
        body.get("member")
            .and_then(|m| m.get("client_id"))
            .and_then(|c| c.as_str()),
        Some("c1")
    );
    assert!(p.expire_typing(t0 + TYPING_TIMEOUT, &CTX).is_empty());
    assert_eq!(
        p.next_typing_expiry(),
        Some(t0 + Duration::from_secs(6) + TYPING_TIMEOUT)
    );
    let last = p.expire_typing(t0 + Duration::from_secs(20), &CTX);
    assert_eq!(summary(&last), [(1, "chat.typing.updated".into())]);
    assert_eq!(p.next_typing_expiry(), None);
    assert!(p.typing_channels.is_empty());
}

#[test]
fn a_typist_who_leaves_stops_typing_for_the_others() {
    let mut p = Presence::new();
    p.subscribe("ch", sock(1), member(1), &CTX).unwrap();
    p.subscribe("ch", sock(2), member(2), &CTX).unwrap();
    let t0 = Instant::now();
    p.typing("ch", sock(1), true, t0, &CTX);
    let left = p.unsubscribe("ch", sock(1), &CTX);
    let kinds: Vec<String> = left.iter().map(|d| kind(&d.frame)).collect();
    assert_eq!(kinds, ["chat.typing.updated", "chat.presence.left"]);
    assert!(left.iter().all(|d| d.to == sock(2)));
    assert!(
        p.expire_typing(t0 + Duration::from_secs(60), &CTX)
            .is_empty()
    );
}

#[test]
fn subscriptions_per_socket_are_bounded() {
    let mut p = Presence::new();
    for i in 0..MAX_SUBSCRIPTIONS_PER_SOCKET {
        p.subscribe(&format!("ch{i}"), sock(1), member(1), &CTX)
            .unwrap();
    }
    assert_eq!(
        p.subscribe("one-more", sock(1), member(1), &CTX),
        Err(PresenceError::TooManySubscriptions)
    );
    assert_eq!(p.members("one-more").count(), 0);
    // Re-subscribing to a channel it already follows is still fine, and so is another socket.
    assert!(p.subscribe("ch0", sock(1), member(1), &CTX).is_ok());
    assert!(p.subscribe("one-more", sock(2), member(2), &CTX).is_ok());
    p.unsubscribe("ch0", sock(1), &CTX);
    assert!(p.subscribe("one-more", sock(1), member(1), &CTX).is_ok());
}

#[test]
fn a_frame_is_encoded_once_for_every_recipient() {
    let mut p = Presence::new();
    for n in 1..=4 {
        p.subscribe("ch", sock(n), member(n), &CTX).unwrap();
    }
    let d = p.subscribe("ch", sock(5), member(5), &CTX).unwrap();
    let joined: Vec<&Bytes> = d[1..].iter().map(|d| &d.frame).collect();
    assert_eq!(joined.len(), 4);
    assert!(
        joined.windows(2).all(|w| w[0].as_ptr() == w[1].as_ptr()),
        "the same bytes are shared, not copied"
    );
}

/// A second device of `uid_1`.
fn other_device_of_1(client: &str) -> Member {
    Member {
        client_id: client.into(),
        user_uid: "uid_1".into(),
        device_id: "phone_1".into(),
    }
}

#[test]
fn a_hidden_user_leaves_no_presence_or_typing_trace_for_others() {
    let mut p = Presence::new();
    let t0 = Instant::now();
    p.subscribe("ch", sock(2), member(2), &CTX).unwrap();
    assert!(
        p.set_visibility("srv", "uid_1", true, 1, &CTX).is_empty(),
        "no sockets yet"
    );
    let joined = p.subscribe("ch", sock(1), member(1), &CTX).unwrap();
    assert_eq!(
        summary(&joined),
        [(1, "chat.presence.snapshot".into())],
        "no join for the others"
    );
    assert_eq!(
        client_ids(&payload(&joined[0].frame)),
        ["c2", "c1"],
        "it sees itself"
    );
    let own = p
        .subscribe("ch", sock(3), other_device_of_1("c3"), &CTX)
        .unwrap();
    assert_eq!(
        summary(&own),
        [
            (1, "chat.presence.joined".into()),
            (3, "chat.presence.snapshot".into())
        ],
        "its own other device sees it and is seen by it"
    );
    assert_eq!(client_ids(&payload(&own[0].frame)), ["c2", "c1", "c3"]);
    let late = p.subscribe("ch", sock(4), member(4), &CTX).unwrap();
    assert_eq!(
        client_ids(&payload(&late[0].frame)),
        ["c2", "c4"],
        "others' snapshots omit it"
    );
    assert!(
        p.typing("ch", sock(1), true, t0, &CTX).is_empty(),
        "its typing goes nowhere"
    );
    assert!(p.next_typing_expiry().is_none(), "and leaves no state");
    let left = p.unsubscribe("ch", sock(1), &CTX);
    assert_eq!(
        summary(&left),
        [(3, "chat.presence.left".into())],
        "only its own device hears"
    );
}

#[test]
fn hiding_and_showing_are_announced_at_once_and_ordered_by_version() {
    let mut p = Presence::new();
    let t0 = Instant::now();
    p.subscribe("a", sock(1), member(1), &CTX).unwrap();
    p.subscribe("b", sock(1), member(1), &CTX).unwrap();
    p.subscribe("a", sock(2), member(2), &CTX).unwrap();
    p.subscribe("b", sock(3), other_device_of_1("c3"), &CTX)
        .unwrap();
    p.typing("a", sock(1), true, t0, &CTX);
    let hidden = p.set_visibility("srv", "uid_1", true, 2, &CTX);
    assert_eq!(
        summary(&hidden),
        [
            (2, "chat.presence.left".into()),
            (2, "chat.typing.updated".into())
        ],
        "the typist stops, then leaves, for others only"
    );
    assert_eq!(
        payload(&hidden[0].frame)
            .get("is_typing")
            .and_then(|t| t.as_bool()),
        Some(false)
    );
    assert!(
        p.expire_typing(t0 + TYPING_TIMEOUT * 2, &CTX).is_empty(),
        "no typing left to expire"
    );
    assert!(
        p.set_visibility("srv", "uid_1", false, 1, &CTX).is_empty(),
        "older news is ignored"
    );
    assert!(
        p.set_visibility("srv", "uid_1", true, 3, &CTX).is_empty(),
        "no change, no frame"
    );
    let shown = p.set_visibility("srv", "uid_1", false, 4, &CTX);
    assert_eq!(summary(&shown), [(2, "chat.presence.joined".into())]);
    assert!(
        p.set_visibility("other", "uid_1", true, 9, &CTX).is_empty(),
        "another server's setting"
    );
    let refreshed = p.subscribe("a", sock(2), member(2), &CTX).unwrap();
    assert_eq!(client_ids(&payload(&refreshed[0].frame)), ["c1", "c2"]);
}
