//! Who is subscribed to which channel, and who is typing there. One [`Presence`] lives on each
//! shard and holds the channels that shard owns (`sharding::shard_for(channel_id, shards)`);
//! sockets on other shards reach it through mesh messages, which is why a socket is named by
//! [`SocketRef`] (shard and socket number) and every method returns [`Delivery`]s instead of
//! writing anything: the caller routes each frame to the shard that holds its socket.
//!
//! A user may hide its presence in a server (its privacy, Part D): then only its own sockets
//! see it in snapshots, joins and leaves, and its typing goes to no one. The change of that
//! setting arrives here at any time ([`Presence::set_visibility`], ordered by the setting's
//! version) and is announced at once as a leave or a join in every channel it follows.
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
    /// The newest presence setting heard of per (server, uid) that ever changed it: (version,
    /// hidden). A change and a subscription may arrive in either order; the higher version
    /// wins.
    visibility: HashMap<(String, String), (i64, bool)>,
}

struct SocketEntry {
    member: Member,
    /// The server whose socket it is (every channel it follows is of that server).
    server_id: String,
    /// Its user hides its presence in that server: only its own sockets see it.
    hidden: bool,
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
    /// `frame` about `from` for every subscriber but `from` that may see it: all of them, or
    /// only the sockets of `from`'s own user when it hides its presence.
    fn to_others<'a>(
        &'a self,
        sockets: &'a HashMap<SocketRef, SocketEntry>,
        from: SocketRef,
        frame: Bytes,
    ) -> impl Iterator<Item = Delivery> + 'a {
        let only = sockets
            .get(&from)
            .filter(|e| e.hidden)
            .map(|e| e.member.user_uid.as_str());
        self.subscribers
            .keys()
            .copied()
            .filter(move |s| *s != from)
            .filter(move |s| {
                only.is_none_or(|uid| sockets.get(s).is_some_and(|e| e.member.user_uid == uid))
            })
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
        let hidden = self.is_hidden(ctx.server_id, &member.user_uid);
        let entry = match self.sockets.entry(socket) {
            std::collections::hash_map::Entry::Occupied(occupied) => {
                let entry = occupied.into_mut();
                entry.member = member;
                entry
            }
            std::collections::hash_map::Entry::Vacant(vacant) => vacant.insert(SocketEntry {
                member,
                server_id: ctx.server_id.to_owned(),
                hidden,
                channels: Vec::new(),
                typing_budget: typing_budget(),
            }),
        };
        let viewer = entry.member.user_uid.clone();
        let mut deliveries = Vec::new();
        if !already {
            entry.channels.push(channel_id.to_owned());
            let joined = member_frame("chat.presence.joined", channel_id, &entry.member, ctx);
            let seq = self.next_seq;
            self.next_seq += 1;
            let channel = self.channels.entry(channel_id.to_owned()).or_default();
            channel
                .subscribers
                .insert(socket, Subscriber { seq, typing: None });
            deliveries.extend(channel.to_others(&self.sockets, socket, joined));
        }
        let snapshot = frame(
            "chat.presence.snapshot",
            &SnapshotPayload {
                channel_id,
                members: self.members_seen_by(channel_id, &viewer).collect(),
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
        let Some(entry) = self.sockets.get(&socket) else {
            debug_assert!(false, "a subscriber always has a socket entry");
            return Vec::new();
        };
        let mut deliveries = Vec::new();
        if subscriber.typing.is_some() {
            let stopped = typing_frame(channel_id, &entry.member, false, ctx);
            deliveries.extend(channel.to_others(&self.sockets, socket, stopped));
        }
        let left = member_frame("chat.presence.left", channel_id, &entry.member, ctx);
        deliveries.extend(channel.to_others(&self.sockets, socket, left));
        if channel.subscribers.is_empty() {
            self.channels.remove(channel_id);
            self.typing_channels.remove(channel_id);
        }
        if let Some(entry) = self.sockets.get_mut(&socket) {
            entry.channels.retain(|c| c != channel_id);
            if entry.channels.is_empty() {
                self.sockets.remove(&socket);
            }
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
        if entry.hidden {
            // A hidden user leaves no typing trace (and so needs no typing state).
            return Vec::new();
        }
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
        channel.to_others(&self.sockets, socket, update).collect()
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
                deliveries.extend(channel.to_others(sockets, socket, stopped));
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

    /// The members of `channel_id`, in subscription order (hidden ones too).
    pub fn members(&self, channel_id: &str) -> impl Iterator<Item = &Member> + '_ {
        self.listed(channel_id, |_| true)
    }

    /// The members of `channel_id` a socket of `viewer` is shown: hidden ones only when they
    /// are `viewer`'s own.
    fn members_seen_by<'a>(
        &'a self,
        channel_id: &str,
        viewer: &'a str,
    ) -> impl Iterator<Item = &'a Member> + 'a {
        self.listed(channel_id, move |e| {
            !e.hidden || e.member.user_uid == viewer
        })
    }

    fn listed(
        &self,
        channel_id: &str,
        keep: impl Fn(&SocketEntry) -> bool,
    ) -> impl Iterator<Item = &Member> + '_ {
        let mut listed: Vec<(u64, &Member)> = self
            .channels
            .get(channel_id)
            .into_iter()
            .flat_map(|c| c.subscribers.iter())
            .filter_map(|(socket, s)| {
                self.sockets
                    .get(socket)
                    .filter(|e| keep(e))
                    .map(|e| (s.seq, &e.member))
            })
            .collect();
        listed.sort_unstable_by_key(|(seq, _)| *seq);
        listed.into_iter().map(|(_, member)| member)
    }

    fn is_hidden(&self, server_id: &str, uid: &str) -> bool {
        self.visibility
            .get(&(server_id.to_owned(), uid.to_owned()))
            .is_some_and(|&(_, hidden)| hidden)
    }

    /// `channel_id` became private: the sockets whose user `keep` refuses stop following it
    /// (the others see them leave, as after an unsubscribe).
    pub fn restrict_channel(
        &mut self,
        channel_id: &str,
        keep: impl Fn(&str) -> bool,
        ctx: &FrameContext<'_>,
    ) -> Vec<Delivery> {
        let gone: Vec<SocketRef> = self
            .subscribers(channel_id)
            .filter(|s| {
                self.sockets
                    .get(s)
                    .is_some_and(|e| !keep(&e.member.user_uid))
            })
            .collect();
        gone.into_iter()
            .flat_map(|s| self.unsubscribe(channel_id, s, ctx))
            .collect()
    }

    /// `uid` hides its presence in `server_id` (or shows it again), as its privacy setting at
    /// `version` says; older news than what is known changes nothing. Its sockets here leave
    /// (after stopping typing) or join, for everyone but its own user, in every channel they
    /// follow here.
    pub fn set_visibility(
        &mut self,
        server_id: &str,
        uid: &str,
        hidden: bool,
        version: i64,
        ctx: &FrameContext<'_>,
    ) -> Vec<Delivery> {
        let key = (server_id.to_owned(), uid.to_owned());
        let known = self.visibility.get(&key).copied();
        if version <= known.map_or(0, |(v, _)| v) {
            return Vec::new();
        }
        self.visibility.insert(key, (version, hidden));
        if known.is_some_and(|(_, h)| h) == hidden {
            return Vec::new();
        }
        let mut mine: Vec<SocketRef> = self
            .sockets
            .iter()
            .filter(|(_, e)| e.server_id == server_id && e.member.user_uid == uid)
            .map(|(s, _)| *s)
            .collect();
        mine.sort_unstable();
        let mut deliveries = Vec::new();
        for socket in mine {
            let Some(entry) = self.sockets.get(&socket) else {
                continue;
            };
            let (member, channels) = (entry.member.clone(), entry.channels.clone());
            // Announced while still visible (a leave, and a typist's stop), or once visible
            // again (a join).
            let mut frames: Vec<(String, Bytes)> = Vec::new();
            for channel_id in &channels {
                let Some(channel) = self.channels.get_mut(channel_id) else {
                    continue;
                };
                let Some(subscriber) = channel.subscribers.get_mut(&socket) else {
                    continue;
                };
                if hidden && subscriber.typing.take().is_some() {
                    frames.push((
                        channel_id.clone(),
                        typing_frame(channel_id, &member, false, ctx),
                    ));
                }
                let kind = if hidden {
                    "chat.presence.left"
                } else {
                    "chat.presence.joined"
                };
                frames.push((
                    channel_id.clone(),
                    member_frame(kind, channel_id, &member, ctx),
                ));
            }
            // Its own user's sockets see it either way: they are told nothing.
            for (channel_id, frame) in frames {
                let Some(channel) = self.channels.get(&channel_id) else {
                    continue;
                };
                deliveries.extend(
                    channel
                        .subscribers
                        .keys()
                        .filter(|s| {
                            self.sockets
                                .get(s)
                                .is_some_and(|e| e.member.user_uid != uid)
                        })
                        .map(|&to| Delivery {
                            to,
                            frame: frame.clone(),
                        }),
                );
            }
            if let Some(entry) = self.sockets.get_mut(&socket) {
                entry.hidden = hidden;
            }
        }
        deliveries
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
mod tests;
