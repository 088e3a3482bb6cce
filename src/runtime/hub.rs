//! The realtime hub of one shard: the realtime sockets this shard holds (by server, for
//! fan-out of committed events), and the presence and typing state of the channels this shard
//! owns (`sharding::shard_for(channel_id)`). A socket on shard A subscribing to a channel owned
//! by shard B sends B a [`PresenceOp`] over the mesh; B's presence answers with deliveries that
//! go back to whichever shards hold the recipients. The hub sends nothing itself: a change
//! returns the [`Outgoing`] messages it calls for, and the shard driver (`shard.rs`) sends
//! them, so the hub can be driven and checked alone. The voice rooms and their media are the
//! shard's other realtime half, `voice.rs`, next to the UDP driver. Nothing here is shared
//! between threads.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

use bytes::Bytes;

use super::mesh::{Outgoing, ShardMessage};
use super::websocket::SocketHandle;
use crate::authority::now_rfc3339 as now_text;
use crate::authority::{Broadcast, Published};
use crate::domain::community::{Audience, Notice};
use crate::domain::model::EventId;
use crate::realtime::{Delivery, FrameContext, Member, Presence, SocketRef};
use crate::sharding::shard_for;

/// How often typing indicators of silent typists are expired.
pub const TYPING_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// A presence change sent to the shard that owns the channel.
#[derive(Debug)]
pub enum PresenceOp {
    Subscribe {
        server_id: String,
        channel_id: String,
        socket: SocketRef,
        member: Member,
        /// Whether the member hides its presence, and the version of that setting, as the
        /// state said when the subscription was allowed.
        hidden: (bool, i64),
    },
    Unsubscribe {
        server_id: String,
        channel_id: String,
        socket: SocketRef,
    },
    Typing {
        server_id: String,
        channel_id: String,
        socket: SocketRef,
        is_typing: bool,
    },
    /// The socket closed: it leaves every channel of this shard.
    Closed {
        server_id: String,
        socket: SocketRef,
    },
}

struct LocalSocket {
    server_id: String,
    user_uid: String,
    /// Hash of the session token it was opened with (session mode), so a revoke closes it.
    session: Option<String>,
    handle: SocketHandle,
    /// Channels it subscribed to (their owners are told when it closes).
    channels: HashSet<String>,
    /// `false` while a resume is being replayed: live events wait in `held`.
    live: bool,
    held: Vec<(Option<EventId>, Bytes)>,
    /// Highest server event id written to it; older ones (seen in the replay) are skipped.
    last_event_id: EventId,
}

pub struct Hub {
    /// This shard's number and how many there are (socket references, channel owners).
    shard: usize,
    count: usize,
    /// The server named by typing frames of a channel whose server is not recorded.
    default_server_id: String,
    next_socket: Cell<u64>,
    sockets: RefCell<HashMap<u64, LocalSocket>>,
    by_server: RefCell<HashMap<String, HashSet<u64>>>,
    presence: RefCell<Presence>,
    /// Server of each channel with presence here (for the frames of expiring typists).
    channel_servers: RefCell<HashMap<String, String>>,
}

impl Hub {
    /// The hub of shard `shard` of `count`.
    pub fn new(shard: usize, count: usize, default_server_id: String) -> Hub {
        Hub {
            shard,
            count,
            default_server_id,
            next_socket: Cell::new(0),
            sockets: RefCell::default(),
            by_server: RefCell::default(),
            presence: RefCell::default(),
            channel_servers: RefCell::default(),
        }
    }

    /// Registers a socket of `server_id` opened by `user_uid` (with the session whose token
    /// hashes to `session`, if any); with `live = false` events are held until
    /// [`Hub::go_live`].
    pub fn register(
        &self,
        server_id: &str,
        user_uid: &str,
        session: Option<String>,
        handle: SocketHandle,
        live: bool,
    ) -> u64 {
        let id = self.insert_socket(server_id, user_uid, handle, live);
        if let Some(s) = self.sockets.borrow_mut().get_mut(&id) {
            s.session = session;
        }
        self.by_server
            .borrow_mut()
            .entry(server_id.to_owned())
            .or_default()
            .insert(id);
        id
    }

    /// Numbers and keeps a socket (without indexing it for a server's events).
    fn insert_socket(
        &self,
        server_id: &str,
        user_uid: &str,
        handle: SocketHandle,
        live: bool,
    ) -> u64 {
        let id = self.next_socket.get() + 1;
        self.next_socket.set(id);
        self.sockets.borrow_mut().insert(
            id,
            LocalSocket {
                server_id: server_id.to_owned(),
                user_uid: user_uid.to_owned(),
                session: None,
                handle,
                channels: HashSet::new(),
                live,
                held: Vec::new(),
                last_event_id: EventId::NONE,
            },
        );
        id
    }

    /// Ends a replay: events that arrived meanwhile and are newer than `replayed_up_to` go out.
    pub fn go_live(&self, socket: u64, replayed_up_to: EventId) {
        let mut sockets = self.sockets.borrow_mut();
        let Some(s) = sockets.get_mut(&socket) else {
            return;
        };
        s.live = true;
        s.last_event_id = replayed_up_to;
        for (event_id, frame) in std::mem::take(&mut s.held) {
            if Self::write(s, event_id, &frame).is_err() {
                break;
            }
        }
    }

    fn write(s: &mut LocalSocket, event_id: Option<EventId>, frame: &Bytes) -> Result<(), ()> {
        if let Some(id) = event_id {
            if id <= s.last_event_id {
                return Ok(());
            }
            s.last_event_id = id;
        }
        s.handle.push(frame.clone()).map_err(|_| ())
    }

    /// Registers a socket that receives no server events (a voice signaling socket): it is
    /// only addressed by deliveries.
    pub fn register_plain(&self, handle: SocketHandle) -> u64 {
        self.insert_socket("", "", handle, true)
    }

    /// Typing and presence updates not relayed (over a socket's rate), for metrics.
    pub fn relay_dropped(&self) -> u64 {
        self.presence.borrow().dropped_updates()
    }

    /// Closes sockets of this shard (after what is queued for them).
    pub fn close_local(&self, sockets: &[u64]) {
        let map = self.sockets.borrow();
        for id in sockets {
            if let Some(s) = map.get(id) {
                s.handle.close();
            }
        }
    }

    /// Forgets a closed socket; the owners of its channels are told.
    pub fn unregister(&self, socket: u64) -> Outgoing {
        let Some(s) = self.sockets.borrow_mut().remove(&socket) else {
            return Outgoing::none();
        };
        if let Some(set) = self.by_server.borrow_mut().get_mut(&s.server_id) {
            set.remove(&socket);
        }
        let owners: HashSet<usize> = s
            .channels
            .iter()
            .map(|c| shard_for(c, self.count))
            .collect();
        let me = self.socket_ref(socket);
        let mut out = Outgoing::none();
        for owner in owners {
            out.push(
                owner,
                ShardMessage::Presence(PresenceOp::Closed {
                    server_id: s.server_id.clone(),
                    socket: me,
                }),
            );
        }
        out
    }

    fn socket_ref(&self, socket: u64) -> SocketRef {
        SocketRef {
            shard: self.shard,
            socket,
        }
    }

    /// `op` for the shard that owns `channel_id`.
    fn to_owner(&self, channel_id: &str, op: PresenceOp) -> Outgoing {
        Outgoing::one(
            shard_for(channel_id, self.count),
            ShardMessage::Presence(op),
        )
    }

    /// Records a subscription (for the close notice); it goes to the channel's owner.
    pub fn subscribe(
        &self,
        socket: u64,
        channel_id: &str,
        member: Member,
        hidden: (bool, i64),
    ) -> Outgoing {
        let server_id = {
            let mut sockets = self.sockets.borrow_mut();
            let Some(s) = sockets.get_mut(&socket) else {
                return Outgoing::none();
            };
            s.channels.insert(channel_id.to_owned());
            s.server_id.clone()
        };
        let op = PresenceOp::Subscribe {
            server_id,
            channel_id: channel_id.to_owned(),
            socket: self.socket_ref(socket),
            member,
            hidden,
        };
        self.to_owner(channel_id, op)
    }

    pub fn unsubscribe(&self, socket: u64, channel_id: &str) -> Outgoing {
        let server_id = {
            let mut sockets = self.sockets.borrow_mut();
            let Some(s) = sockets.get_mut(&socket) else {
                return Outgoing::none();
            };
            if !s.channels.remove(channel_id) {
                return Outgoing::none();
            }
            s.server_id.clone()
        };
        let op = PresenceOp::Unsubscribe {
            server_id,
            channel_id: channel_id.to_owned(),
            socket: self.socket_ref(socket),
        };
        self.to_owner(channel_id, op)
    }

    pub fn typing(&self, socket: u64, channel_id: &str, is_typing: bool) -> Outgoing {
        let server_id = match self.sockets.borrow().get(&socket) {
            Some(s) if s.channels.contains(channel_id) => s.server_id.clone(),
            _ => return Outgoing::none(),
        };
        let op = PresenceOp::Typing {
            server_id,
            channel_id: channel_id.to_owned(),
            socket: self.socket_ref(socket),
            is_typing,
        };
        self.to_owner(channel_id, op)
    }

    /// Applies a presence change to a channel this shard owns; the frames it makes go to the
    /// shards that hold their sockets.
    pub fn apply(&self, op: PresenceOp) -> Outgoing {
        let timestamp = now_text();
        let deliveries = {
            let mut presence = self.presence.borrow_mut();
            match &op {
                PresenceOp::Subscribe {
                    server_id,
                    channel_id,
                    socket,
                    member,
                    hidden: (hidden, version),
                } => {
                    self.channel_servers
                        .borrow_mut()
                        .insert(channel_id.clone(), server_id.clone());
                    let ctx = FrameContext {
                        server_id,
                        timestamp: &timestamp,
                    };
                    // News of the setting newer than what this shard heard (the notice of the
                    // change may still be on its way) counts first.
                    let mut deliveries = presence.set_visibility(
                        server_id,
                        &member.user_uid,
                        *hidden,
                        *version,
                        &ctx,
                    );
                    match presence.subscribe(channel_id, *socket, member.clone(), &ctx) {
                        Ok(d) => {
                            deliveries.extend(d);
                            deliveries
                        }
                        Err(e) => vec![Delivery {
                            to: *socket,
                            frame: crate::wire::realtime::error_frame(
                                &e.to_string(),
                                server_id,
                                &timestamp,
                            ),
                        }],
                    }
                }
                PresenceOp::Unsubscribe {
                    server_id,
                    channel_id,
                    socket,
                } => presence.unsubscribe(
                    channel_id,
                    *socket,
                    &FrameContext {
                        server_id,
                        timestamp: &timestamp,
                    },
                ),
                PresenceOp::Typing {
                    server_id,
                    channel_id,
                    socket,
                    is_typing,
                } => presence.typing(
                    channel_id,
                    *socket,
                    *is_typing,
                    Instant::now(),
                    &FrameContext {
                        server_id,
                        timestamp: &timestamp,
                    },
                ),
                PresenceOp::Closed { server_id, socket } => presence.socket_closed(
                    *socket,
                    &FrameContext {
                        server_id,
                        timestamp: &timestamp,
                    },
                ),
            }
        };
        Outgoing::deliveries(deliveries)
    }

    /// Expires typists that went silent (run every [`TYPING_SWEEP_INTERVAL`]).
    pub fn expire_typing(&self) -> Outgoing {
        let timestamp = now_text();
        let deliveries = {
            let mut presence = self.presence.borrow_mut();
            if presence
                .next_typing_expiry()
                .is_none_or(|at| at > Instant::now())
            {
                return Outgoing::none();
            }
            // Each frame names its channel's server (recorded when the channel got its first
            // subscriber here), not the instance's default one.
            let servers = self.channel_servers.borrow();
            let default = self.default_server_id.as_str();
            presence.expire_typing_in(Instant::now(), &timestamp, |channel_id| {
                servers.get(channel_id).map_or(default, String::as_str)
            })
        };
        Outgoing::deliveries(deliveries)
    }

    /// Writes frames to sockets of this shard.
    pub fn push_local(&self, frames: Vec<(u64, Bytes)>) {
        let sockets = self.sockets.borrow();
        for (socket, frame) in frames {
            if let Some(s) = sockets.get(&socket) {
                let _ = s.handle.push(frame);
            }
        }
    }

    /// Closes the realtime sockets of this shard that `close` picks.
    fn close_where(&self, close: impl Fn(&LocalSocket) -> bool) {
        for s in self.sockets.borrow().values() {
            if close(s) {
                s.handle.close();
            }
        }
    }

    /// A committed event or a notice from the authority, for this shard's realtime sockets
    /// (the voice rooms take the notices next, `Voice::on_notice`).
    pub fn on_broadcast(&self, broadcast: &Broadcast) -> Outgoing {
        match broadcast {
            Broadcast::Event(event) => {
                self.fan_out(event);
                Outgoing::none()
            }
            Broadcast::Notice(notice) => self.on_notice(notice),
        }
    }

    /// A member that left its server loses its sockets there; a revoked session loses the
    /// sockets opened with it; a change of presence visibility is applied to the channels this
    /// shard owns (every shard hears it). (A voice kick concerns only the voice rooms.)
    fn on_notice(&self, notice: &Notice) -> Outgoing {
        match notice {
            Notice::MemberLeft {
                server_id,
                user_uid,
            } => {
                let sockets = self.sockets.borrow();
                for id in self.by_server.borrow().get(server_id).into_iter().flatten() {
                    if let Some(s) = sockets.get(id)
                        && s.user_uid == *user_uid
                    {
                        s.handle.close();
                    }
                }
            }
            Notice::VoiceKick { .. } | Notice::VoiceMute { .. } => {}
            Notice::ChannelRestricted {
                server_id,
                channel_id,
                allowed,
            } => {
                return self.presence_change(server_id, |presence, ctx| {
                    presence.restrict_channel(
                        channel_id,
                        |uid| allowed.binary_search_by(|a| a.as_str().cmp(uid)).is_ok(),
                        ctx,
                    )
                });
            }
            Notice::SessionRevoked { token_hash, .. } => {
                self.close_where(|s| s.session.as_deref() == Some(token_hash.as_str()));
            }
            Notice::PresenceVisibility {
                server_id,
                user_uid,
                hidden,
                version,
            } => {
                return self.presence_change(server_id, |presence, ctx| {
                    presence.set_visibility(server_id, user_uid, *hidden, *version, ctx)
                });
            }
        }
        Outgoing::none()
    }

    /// A change to this shard's presence that a notice of `server_id` calls for, stamped now;
    /// its frames go to the shards that hold their sockets.
    fn presence_change(
        &self,
        server_id: &str,
        change: impl FnOnce(&mut Presence, &FrameContext<'_>) -> Vec<Delivery>,
    ) -> Outgoing {
        let timestamp = now_text();
        let ctx = FrameContext {
            server_id,
            timestamp: &timestamp,
        };
        Outgoing::deliveries(change(&mut self.presence.borrow_mut(), &ctx))
    }

    fn fan_out(&self, event: &Published) {
        let by_server = self.by_server.borrow();
        let Some(ids) = by_server.get(&event.server_id) else {
            return;
        };
        let mut sockets = self.sockets.borrow_mut();
        for id in ids {
            let Some(s) = sockets.get_mut(id) else {
                continue;
            };
            let addressed = match &event.audience {
                Audience::Server => true,
                Audience::User(uid) => *uid == s.user_uid,
                Audience::Users(uids) => uids.binary_search(&s.user_uid).is_ok(),
            };
            if !addressed {
                continue;
            }
            if !s.live {
                s.held.push((event.event_id, event.frame.clone()));
                continue;
            }
            // A full outbox closes the socket; its handler then unregisters it.
            let _ = Self::write(s, event.event_id, &event.frame);
        }
    }

    /// Sockets this shard holds, for metrics.
    pub fn socket_count(&self) -> usize {
        self.sockets.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(client: &str) -> Member {
        Member {
            client_id: client.to_owned(),
            user_uid: format!("u_{client}"),
            device_id: "d".to_owned(),
        }
    }

    /// A channel id that shard `owner` of `count` owns.
    fn channel_of(owner: usize, count: usize) -> String {
        (0..)
            .map(|i| format!("ch_{i}"))
            .find(|c| shard_for(c, count) == owner)
            .unwrap()
    }

    fn frame_kinds(frames: &[(u64, Bytes)]) -> Vec<(u64, String)> {
        frames
            .iter()
            .map(|(socket, frame)| {
                let text = std::str::from_utf8(frame).unwrap();
                let kind = text
                    .split("\"type\":\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or_default()
                    .to_owned();
                (*socket, kind)
            })
            .collect()
    }

    #[test]
    fn a_subscription_goes_to_the_channel_owner_and_a_close_tells_every_owner() {
        let hub = Hub::new(0, 2, "srv".to_owned());
        let handle = SocketHandle::detached();
        let id = hub.register("srv_a", "u_a", None, handle, true);
        let here = channel_of(0, 2);
        let there = channel_of(1, 2);
        let me = SocketRef {
            shard: 0,
            socket: id,
        };
        for (channel, owner) in [(&here, 0), (&there, 1)] {
            let out: Vec<_> = hub
                .subscribe(id, channel, member("a"), (false, 0))
                .into_iter()
                .collect();
            assert_eq!(out.len(), 1);
            let (
                target,
                ShardMessage::Presence(PresenceOp::Subscribe {
                    server_id,
                    channel_id,
                    socket,
                    member: m,
                    ..
                }),
            ) = &out[0]
            else {
                panic!("a subscription is a presence op");
            };
            // Even a channel of this shard is sent (to itself): the hub applies nothing it
            // did not receive.
            assert_eq!(*target, owner);
            assert_eq!(
                (server_id.as_str(), channel_id.as_str(), *socket, m),
                ("srv_a", channel.as_str(), me, &member("a"))
            );
        }
        assert!(hub.typing(id, "not_subscribed", true).is_empty());
        assert!(hub.unsubscribe(id, "not_subscribed").is_empty());
        let mut owners: Vec<usize> = hub
            .unregister(id)
            .into_iter()
            .map(|(target, message)| match message {
                ShardMessage::Presence(PresenceOp::Closed { server_id, socket }) => {
                    assert_eq!((server_id.as_str(), socket), ("srv_a", me));
                    target
                }
                _ => panic!("a close is a presence op"),
            })
            .collect();
        owners.sort_unstable();
        assert_eq!(owners, [0, 1]);
        assert_eq!(hub.socket_count(), 0);
        assert!(hub.unregister(id).is_empty(), "a socket is forgotten once");
    }

    #[test]
    fn presence_answers_go_to_the_shards_that_hold_the_sockets() {
        let hub = Hub::new(1, 2, "srv".to_owned());
        let channel = channel_of(1, 2);
        let subscribe = |shard, socket, client: &str| PresenceOp::Subscribe {
            server_id: "srv_a".to_owned(),
            channel_id: channel.clone(),
            socket: SocketRef { shard, socket },
            member: member(client),
            hidden: (false, 0),
        };
        // First subscriber, held by shard 0: its snapshot goes back to shard 0.
        let out: Vec<_> = hub.apply(subscribe(0, 7, "a")).into_iter().collect();
        let [(0, ShardMessage::Deliver(frames))] = &out[..] else {
            panic!("one delivery to shard 0");
        };
        assert_eq!(
            frame_kinds(frames),
            [(7, "chat.presence.snapshot".to_owned())]
        );
        // A second one, held here: its snapshot comes here, the first one hears it joined.
        let out: Vec<_> = hub.apply(subscribe(1, 3, "b")).into_iter().collect();
        let mut seen: Vec<(usize, Vec<(u64, String)>)> = out
            .into_iter()
            .map(|(target, message)| match message {
                ShardMessage::Deliver(frames) => (target, frame_kinds(&frames)),
                _ => panic!("presence answers are deliveries"),
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                (0, vec![(7, "chat.presence.joined".to_owned())]),
                (1, vec![(3, "chat.presence.snapshot".to_owned())]),
            ]
        );
        // The socket on shard 0 closes: the one here hears it left.
        let out: Vec<_> = hub
            .apply(PresenceOp::Closed {
                server_id: "srv_a".to_owned(),
                socket: SocketRef {
                    shard: 0,
                    socket: 7,
                },
            })
            .into_iter()
            .collect();
        let [(1, ShardMessage::Deliver(frames))] = &out[..] else {
            panic!("one delivery to shard 1");
        };
        assert_eq!(frame_kinds(frames), [(3, "chat.presence.left".to_owned())]);
    }

    #[test]
    fn frames_for_this_shard_reach_its_sockets_and_closes_close_them() {
        let hub = Hub::new(0, 1, "srv".to_owned());
        let handle = SocketHandle::detached();
        let id = hub.register_plain(handle.clone());
        hub.push_local(vec![
            (id, Bytes::from_static(b"{\"a\":1}")),
            (id + 1, Bytes::from_static(b"{\"nobody\":1}")),
        ]);
        assert_eq!(handle.take_queued(), [Bytes::from_static(b"{\"a\":1}")]);
        assert!(!handle.is_closed());
        hub.close_local(&[id]);
        assert!(handle.is_closed());
    }
}
