//! Who is subscribed to which channel, and who is typing there. One [`Presence`] lives on each
//! shard and holds the channels that shard owns (`sharding::shard_for(channel_id, shards)`);
//! sockets on other shards reach it through mesh messages, which is why a socket is named by
//! [`SocketRef`] (shard and socket number) and every method returns [`Delivery`]s instead of
//! writing anything: the caller routes each frame to the shard that holds its socket.
//!
//! Time comes in as an argument (`now`), never from the clock, so typing expiry is tested on a
//! virtual clock. A frame is encoded once and the same bytes go to every recipient.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use super::rate::TokenBucket;
use crate::wire::realtime::encode_frame;

/// Channels one socket may be subscribed to at once.
pub const MAX_SUBSCRIPTIONS_PER_SOCKET: usize = 256;
/// Repeats of `is_typing: true` from one socket are relayed at most this often.
pub const TYPING_RELAY_MIN_INTERVAL: Duration = Duration::from_secs(2);
/// A typist silent this long is announced as stopped.
pub const TYPING_TIMEOUT: Duration = Duration::from_secs(8);
/// Typing changes one socket may have relayed per second (on average; as many at once). An
/// honest client sends a few a minute: `true` again is relayed at most every
/// [`TYPING_RELAY_MIN_INTERVAL`] and costs nothing when it is not. A change over the rate is
/// dropped whole (the others keep the last state they saw) and counted
/// ([`Presence::dropped_updates`]); no error frame, which would only double the flood.
pub const TYPING_UPDATES_PER_SECOND: u32 = 10;

/// One realtime socket: the shard that holds it and its number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketRef {
    pub shard: usize,
    pub socket: u64,
}

/// What other subscribers see of a socket (wire-contract A.7 `member`). A user with two devices
/// is two members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// Names the socket, so one device connected twice is still two members.
    pub client_id: String,
    pub user_uid: String,
    pub device_id: String,
}

/// The frame fields that come from the caller's context rather than from presence.
#[derive(Debug, Clone, Copy)]
pub struct FrameContext<'a> {
    pub server_id: &'a str,
    /// RFC 3339 UTC (see `domain::views::rfc3339`).
    pub timestamp: &'a str,
}

/// One encoded frame for one socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub to: SocketRef,
    pub frame: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceError {
    #[error("too many subscriptions: a socket may follow at most 256 channels")]
    TooManySubscriptions,
}

#[derive(Default)]
pub struct Presence {
    channels: HashMap<String, Channel>,
    sockets: HashMap<SocketRef, SocketEntry>,
    /// Channels with at least one typist, so expiry does not walk every channel.
    typing_channels: HashSet<String>,
    next_seq: u64,
    /// Typing changes refused by the per-socket rate ([`TYPING_UPDATES_PER_SECOND`]).
    dropped_updates: u64,
}

struct SocketEntry {
    member: Member,
    channels: Vec<String>,
    /// Typing changes this socket may still have relayed.
    typing_budget: TokenBucket,
}

/// A full typing budget for a new socket.
const fn typing_budget() -> TokenBucket {
    TokenBucket::new(TYPING_UPDATES_PER_SECOND, TYPING_UPDATES_PER_SECOND)
}

#[derive(Default)]
struct Channel {
    subscribers: HashMap<SocketRef, Subscriber>,
}

struct Subscriber {
    /// Subscription order, so snapshots list members in the order they came.
    seq: u64,
    typing: Option<Typing>,
}

#[derive(Clone, Copy)]
struct Typing {
    last_relayed: Instant,
    last_heard: Instant,
}

#[derive(Serialize)]
struct SnapshotPayload<'a> {
    channel_id: &'a str,
    members: Vec<&'a Member>,
}

#[derive(Serialize)]
struct MemberPayload<'a> {
    channel_id: &'a str,
    member: &'a Member,
}

#[derive(Serialize)]
struct TypingPayload<'a> {
    channel_id: &'a str,
    member: &'a Member,
    is_typing: bool,
}

fn frame<T: Serialize>(kind: &str, payload: &T, ctx: &FrameContext<'_>) -> Bytes {
    let json = simd_json::to_vec(payload).expect("presence payloads are plain strings and bools");
    encode_frame(kind, &json, None, ctx.server_id, ctx.timestamp)
}

/// `chat.typing.updated` for `member`.
fn typing_frame(
    channel_id: &str,
    member: &Member,
    is_typing: bool,
    ctx: &FrameContext<'_>,
) -> Bytes {
    frame(
        "chat.typing.updated",
        &TypingPayload {
            channel_id,
            member,
            is_typing,
        },
        ctx,
    )
}

/// `chat.presence.joined` or `chat.presence.left` for `member`.
fn member_frame(kind: &str, channel_id: &str, member: &Member, ctx: &FrameContext<'_>) -> Bytes {
    frame(kind, &MemberPayload { channel_id, member }, ctx)
}

impl Channel {
    /// `frame` for every subscriber but `except`.
    fn to_others(&self, except: SocketRef, frame: Bytes) -> impl Iterator<Item = Delivery> + '_ {
        self.subscribers
            .keys()
            .copied()
            .filter(move |s| *s != except)
            .map(move |to| Delivery {
                to,
                frame: frame.clone(),
            })
    }
}

impl Presence {
    pub fn new() -> Presence {
        Presence::default()
    }

    /// Subscribes `socket` to `channel_id`. The subscriber gets `chat.presence.snapshot` listing
    /// every member, itself included; every other subscriber gets `chat.presence.joined`.
    /// Subscribing again only sends a fresh snapshot.
    pub fn subscribe(
        &mut self,
        channel_id: &str,
        socket: SocketRef,
        member: Member,
        ctx: &FrameContext<'_>,
    ) -> Result<Vec<Delivery>, PresenceError> {
        let already = self
            .channels
            .get(channel_id)
            .is_some_and(|c| c.subscribers.contains_key(&socket));
        if !already {
            let count = self.sockets.get(&socket).map_or(0, |s| s.channels.len());
            if count >= MAX_SUBSCRIPTIONS_PER_SOCKET {
                return Err(PresenceError::TooManySubscriptions);
            }
        }
        let entry = match self.sockets.entry(socket) {
            std::collections::hash_map::Entry::Occupied(occupied) => {
                let entry = occupied.into_mut();
                entry.member = member;
                entry
            }
            std::collections::hash_map::Entry::Vacant(vacant) => vacant.insert(SocketEntry {
                member,
                channels: Vec::new(),
                typing_budget: typing_budget(),
            }),
        };
        let mut deliveries = Vec::new();
        if !already {
            entry.channels.push(channel_id.to_owned());
            let seq = self.next_seq;
            self.next_seq += 1;
            let channel = self.channels.entry(channel_id.to_owned()).or_default();
            channel
                .subscribers
                .insert(socket, Subscriber { seq, typing: None });
            let joined = member_frame("chat.presence.joined", channel_id, &entry.member, ctx);
            deliveries.extend(channel.to_others(socket, joined));
        }
        let snapshot = frame(
            "chat.presence.snapshot",
            &SnapshotPayload {
                channel_id,
                members: self.members(channel_id).collect(),
            },
            ctx,
        );
        deliveries.insert(
            0,
            Delivery {
                to: socket,
                frame: snapshot,
            },
        );
        Ok(deliveries)
    }

    /// Unsubscribes `socket`: if it was typing, the others see it stop; then they get
    /// `chat.presence.left`. Nothing happens for a socket that was not subscribed.
    pub fn unsubscribe(
        &mut self,
        channel_id: &str,
        socket: SocketRef,
        ctx: &FrameContext<'_>,
    ) -> Vec<Delivery> {
        let Some(channel) = self.channels.get_mut(channel_id) else {
            return Vec::new();
        };
        let Some(subscriber) = channel.subscribers.remove(&socket) else {
            return Vec::new();
        };
        let Some(entry) = self.sockets.get_mut(&socket) else {
            debug_assert!(false, "a subscriber always has a socket entry");
            return Vec::new();
        };
        let mut deliveries = Vec::new();
        if subscriber.typing.is_some() {
            let stopped = typing_frame(channel_id, &entry.member, false, ctx);
            deliveries.extend(channel.to_others(socket, stopped));
        }
        let left = member_frame("chat.presence.left", channel_id, &entry.member, ctx);
        deliveries.extend(channel.to_others(socket, left));
        if channel.subscribers.is_empty() {
            self.channels.remove(channel_id);
            self.typing_channels.remove(channel_id);
        }
        entry.channels.retain(|c| c != channel_id);
        if entry.channels.is_empty() {
            self.sockets.remove(&socket);
        }
        deliveries
    }

    /// The socket is gone: `chat.presence.left` in every channel it followed here.
    pub fn socket_closed(&mut self, socket: SocketRef, ctx: &FrameContext<'_>) -> Vec<Delivery> {
        let channels = match self.sockets.get(&socket) {
            Some(entry) => entry.channels.clone(),
            None => return Vec::new(),
        };
        channels
            .iter()
            .flat_map(|channel_id| self.unsubscribe(channel_id, socket, ctx))
            .collect()
    }

    /// A typing update from `socket`, relayed to the channel's other subscribers as
    /// `chat.typing.updated` with the member the server knows for the socket (nothing of the
    /// client's frame but `is_typing` is relayed). Ignored unless the socket is subscribed. A
    /// repeated `true` is relayed at most once per [`TYPING_RELAY_MIN_INTERVAL`]; `false` is
    /// relayed only when the socket was typing. A change that would be relayed but is over the
    /// socket's [`TYPING_UPDATES_PER_SECOND`] is dropped and changes nothing.
    pub fn typing(
        &mut self,
        channel_id: &str,
        socket: SocketRef,
        is_typing: bool,
        now: Instant,
        ctx: &FrameContext<'_>,
    ) -> Vec<Delivery> {
        let Some(channel) = self.channels.get_mut(channel_id) else {
            return Vec::new();
        };
        let Some(subscriber) = channel.subscribers.get_mut(&socket) else {
            return Vec::new();
        };
        let Some(entry) = self.sockets.get_mut(&socket) else {
            debug_assert!(false, "a subscriber always has a socket entry");
            return Vec::new();
        };
        let relay = match (is_typing, &subscriber.typing) {
            (true, Some(typing)) => {
                now.saturating_duration_since(typing.last_relayed) >= TYPING_RELAY_MIN_INTERVAL
            }
            (true, None) | (false, Some(_)) => true,
            (false, None) => false,
        };
        if relay && !entry.typing_budget.try_take(now) {
            self.dropped_updates += 1;
            return Vec::new();
        }
        match (is_typing, &mut subscriber.typing) {
            (true, Some(typing)) => {
                typing.last_heard = now;
                if relay {
                    typing.last_relayed = now;
                }
            }
            (true, slot @ None) => {
                *slot = Some(Typing {
                    last_relayed: now,
                    last_heard: now,
                });
                self.typing_channels.insert(channel_id.to_owned());
            }
            (false, slot) => *slot = None,
        }
        if !relay {
            return Vec::new();
        }
        let update = typing_frame(channel_id, &entry.member, is_typing, ctx);
        channel.to_others(socket, update).collect()
    }

    /// Typing changes dropped so far for being over a socket's rate.
    pub fn dropped_updates(&self) -> u64 {
        self.dropped_updates
    }

    /// Announces `is_typing: false` for every typist silent for [`TYPING_TIMEOUT`] by `now`.
    pub fn expire_typing(&mut self, now: Instant, ctx: &FrameContext<'_>) -> Vec<Delivery> {
        self.expire_typing_in(now, ctx.timestamp, |_| ctx.server_id)
    }

    /// [`Presence::expire_typing`] for channels of several servers: each frame carries the
    /// server `server_of` names for its channel.
    pub fn expire_typing_in<'s>(
        &mut self,
        now: Instant,
        timestamp: &str,
        server_of: impl Fn(&str) -> &'s str,
    ) -> Vec<Delivery> {
        let mut deliveries = Vec::new();
        let sockets = &self.sockets;
        let channels = &mut self.channels;
        self.typing_channels.retain(|channel_id| {
            let Some(channel) = channels.get_mut(channel_id) else {
                return false;
            };
            let mut expired = Vec::new();
            let mut still_typing = false;
            for (socket, subscriber) in channel.subscribers.iter_mut() {
                if let Some(typing) = subscriber.typing {
                    if now.saturating_duration_since(typing.last_heard) >= TYPING_TIMEOUT {
                        subscriber.typing = None;
                        expired.push(*socket);
                    } else {
                        still_typing = true;
                    }
                }
            }
            for socket in expired {
                let Some(entry) = sockets.get(&socket) else {
                    continue;
                };
                let ctx = FrameContext {
                    server_id: server_of(channel_id),
                    timestamp,
                };
                let stopped = typing_frame(channel_id, &entry.member, false, &ctx);
                deliveries.extend(channel.to_others(socket, stopped));
            }
            still_typing
        });
        deliveries
    }

    /// When [`Presence::expire_typing`] next has something to do, if anyone is typing.
    pub fn next_typing_expiry(&self) -> Option<Instant> {
        self.typing_channels
            .iter()
            .filter_map(|c| self.channels.get(c))
            .flat_map(|c| c.subscribers.values())
            .filter_map(|s| s.typing.map(|t| t.last_heard + TYPING_TIMEOUT))
            .min()
    }

    /// The members of `channel_id`, in subscription order.
    pub fn members(&self, channel_id: &str) -> impl Iterator<Item = &Member> + '_ {
        let mut listed: Vec<(u64, &Member)> = self
            .channels
            .get(channel_id)
            .into_iter()
            .flat_map(|c| c.subscribers.iter())
            .filter_map(|(socket, s)| self.sockets.get(socket).map(|e| (s.seq, &e.member)))
            .collect();
        listed.sort_unstable_by_key(|(seq, _)| *seq);
        listed.into_iter().map(|(_, member)| member)
    }

    /// The sockets subscribed to `channel_id` (in no particular order).
    pub fn subscribers(&self, channel_id: &str) -> impl Iterator<Item = SocketRef> + '_ {
        self.channels
            .get(channel_id)
            .into_iter()
            .flat_map(|c| c.subscribers.keys().copied())
    }

    /// Channels `socket` follows here.
    pub fn subscriptions(&self, socket: SocketRef) -> impl Iterator<Item = &str> + '_ {
        self.sockets
            .get(&socket)
            .into_iter()
            .flat_map(|e| e.channels.iter().map(String::as_str))
    }

    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }
}

#[cfg(test)]
mod tests {
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
}
