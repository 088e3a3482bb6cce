//! The realtime hub of one shard: the realtime sockets this shard holds (by server, for
//! fan-out of committed events), and the presence and typing state of the channels this shard
//! owns (`sharding::shard_for(channel_id)`). A socket on shard A subscribing to a channel owned
//! by shard B sends B a [`PresenceOp`] over the mesh; B's presence answers with deliveries that
//! go back to whichever shards hold the recipients. The voice rooms and their media are the
//! hub's other half, [`Voice`] (`voice.rs`, next to the UDP driver); the hub holds it and
//! passes it the drivers' calls and the notices that end calls. Nothing here is shared between
//! threads.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use super::mesh::{ShardMessage, ShardStatsSnapshot};
use super::shard::Shard;
use super::voice::{Voice, VoiceOp};
use super::websocket::SocketHandle;
use crate::authority::now_rfc3339 as now_text;
use crate::authority::{Broadcast, Published};
use crate::domain::community::{Audience, Notice};
use crate::domain::model::EventId;
use crate::realtime::{Delivery, FrameContext, Member, Presence, SocketRef};
use crate::sfu::Sfu;
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

#[derive(Default)]
pub struct Hub {
    next_socket: Cell<u64>,
    sockets: RefCell<HashMap<u64, LocalSocket>>,
    by_server: RefCell<HashMap<String, HashSet<u64>>>,
    presence: RefCell<Presence>,
    /// Voice rooms of the channels this shard owns, with their media.
    voice: Voice,
    /// Server of each channel with presence here (for the frames of expiring typists).
    channel_servers: RefCell<HashMap<String, String>>,
}

impl Hub {
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

    /// Sends a voice-room change to the channel's owner shard.
    pub fn voice(&self, shard: &Rc<Shard>, op: VoiceOp) {
        self.voice.send(shard, op);
    }

    /// Applies a voice-room change to a room this shard owns.
    pub fn apply_voice(&self, shard: &Rc<Shard>, op: VoiceOp) {
        self.voice.apply(shard, op);
    }

    /// Gives this shard's rooms their media: the SFU and the socket it sends on.
    pub fn start_media(&self, sfu: Sfu, out: UdpSocket) {
        self.voice.start_media(sfu, out);
    }

    /// A datagram arrived on this shard's UDP socket from `from`, sent to the local address
    /// `to` (when the kernel said which).
    pub fn on_datagram(
        &self,
        shard: &Rc<Shard>,
        from: SocketAddr,
        to: Option<SocketAddr>,
        contents: &[u8],
    ) {
        self.voice.on_datagram(shard, from, to, contents);
    }

    /// When the media next needs [`Hub::media_timeout`].
    pub fn next_media_timeout(&self) -> Option<Instant> {
        self.voice.next_timeout()
    }

    /// Participants whose reconnect grace ran out leave (run by the media timer).
    pub fn expire_voice(&self, shard: &Rc<Shard>) {
        self.voice.expire(shard);
    }

    pub fn media_timeout(&self, shard: &Rc<Shard>) {
        self.voice.timeout(shard);
    }

    /// The voice and media counters of this shard (other fields left at zero).
    pub fn media_snapshot(&self) -> ShardStatsSnapshot {
        let mut snapshot = self.voice.snapshot();
        snapshot.relay_dropped += self.presence.borrow().dropped_updates();
        snapshot
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

    /// Forgets a closed socket and tells the owners of its channels.
    pub fn unregister(&self, shard: &Rc<Shard>, socket: u64) {
        let Some(s) = self.sockets.borrow_mut().remove(&socket) else {
            return;
        };
        if let Some(set) = self.by_server.borrow_mut().get_mut(&s.server_id) {
            set.remove(&socket);
        }
        let owners: HashSet<usize> = s
            .channels
            .iter()
            .map(|c| shard_for(c, shard.count))
            .collect();
        let me = SocketRef {
            shard: shard.id,
            socket,
        };
        for owner in owners {
            route_op(
                shard,
                owner,
                PresenceOp::Closed {
                    server_id: s.server_id.clone(),
                    socket: me,
                },
            );
        }
    }

    /// Records a subscription (for the close notice) and forwards it to the channel's owner.
    pub fn subscribe(&self, shard: &Rc<Shard>, socket: u64, channel_id: &str, member: Member) {
        let server_id = {
            let mut sockets = self.sockets.borrow_mut();
            let Some(s) = sockets.get_mut(&socket) else {
                return;
            };
            s.channels.insert(channel_id.to_owned());
            s.server_id.clone()
        };
        let op = PresenceOp::Subscribe {
            server_id,
            channel_id: channel_id.to_owned(),
            socket: SocketRef {
                shard: shard.id,
                socket,
            },
            member,
        };
        route_op(shard, shard_for(channel_id, shard.count), op);
    }

    pub fn unsubscribe(&self, shard: &Rc<Shard>, socket: u64, channel_id: &str) {
        let server_id = {
            let mut sockets = self.sockets.borrow_mut();
            let Some(s) = sockets.get_mut(&socket) else {
                return;
            };
            if !s.channels.remove(channel_id) {
                return;
            }
            s.server_id.clone()
        };
        let op = PresenceOp::Unsubscribe {
            server_id,
            channel_id: channel_id.to_owned(),
            socket: SocketRef {
                shard: shard.id,
                socket,
            },
        };
        route_op(shard, shard_for(channel_id, shard.count), op);
    }

    pub fn typing(&self, shard: &Rc<Shard>, socket: u64, channel_id: &str, is_typing: bool) {
        let server_id = match self.sockets.borrow().get(&socket) {
            Some(s) if s.channels.contains(channel_id) => s.server_id.clone(),
            _ => return,
        };
        let op = PresenceOp::Typing {
            server_id,
            channel_id: channel_id.to_owned(),
            socket: SocketRef {
                shard: shard.id,
                socket,
            },
            is_typing,
        };
        route_op(shard, shard_for(channel_id, shard.count), op);
    }

    /// Applies a presence change to a channel this shard owns.
    pub fn apply(&self, shard: &Rc<Shard>, op: PresenceOp) {
        let timestamp = now_text();
        let deliveries = {
            let mut presence = self.presence.borrow_mut();
            match &op {
                PresenceOp::Subscribe {
                    server_id,
                    channel_id,
                    socket,
                    member,
                } => {
                    self.channel_servers
                        .borrow_mut()
                        .insert(channel_id.clone(), server_id.clone());
                    let ctx = FrameContext {
                        server_id,
                        timestamp: &timestamp,
                    };
                    match presence.subscribe(channel_id, *socket, member.clone(), &ctx) {
                        Ok(d) => d,
                        Err(e) => vec![Delivery {
                            to: *socket,
                            frame: crate::realtime::error_frame(
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
        deliver(shard, deliveries);
    }

    /// Expires typists that went silent (run every [`TYPING_SWEEP_INTERVAL`]).
    pub fn expire_typing(&self, shard: &Rc<Shard>) {
        let timestamp = now_text();
        let deliveries = {
            let mut presence = self.presence.borrow_mut();
            if presence
                .next_typing_expiry()
                .is_none_or(|at| at > Instant::now())
            {
                return;
            }
            // Each frame names its channel's server (recorded when the channel got its first
            // subscriber here), not the instance's default one.
            let servers = self.channel_servers.borrow();
            let default = shard.app.default_server_id.as_str();
            presence.expire_typing_in(Instant::now(), &timestamp, |channel_id| {
                servers.get(channel_id).map_or(default, String::as_str)
            })
        };
        deliver(shard, deliveries);
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

    /// A committed event or a notice from the authority.
    pub fn on_broadcast(&self, shard: &Rc<Shard>, broadcast: Broadcast) {
        match broadcast {
            Broadcast::Event(event) => self.fan_out(event),
            Broadcast::Notice(notice) => match &*notice {
                Notice::MemberLeft {
                    server_id,
                    user_uid,
                } => {
                    {
                        let sockets = self.sockets.borrow();
                        for id in self.by_server.borrow().get(server_id).into_iter().flatten() {
                            if let Some(s) = sockets.get(id)
                                && s.user_uid == *user_uid
                            {
                                s.handle.close();
                            }
                        }
                    }
                    // Its calls in the server end too.
                    self.voice.member_left(shard, server_id, user_uid);
                }
                Notice::VoiceKick {
                    server_id,
                    user_uid,
                } => self.voice.kick(shard, server_id, user_uid),
                Notice::SessionRevoked {
                    token_hash,
                    user_uid,
                    device_id,
                } => {
                    self.close_where(|s| s.session.as_deref() == Some(token_hash.as_str()));
                    self.voice.session_revoked(shard, user_uid, device_id);
                }
            },
        }
    }

    fn fan_out(&self, event: std::sync::Arc<Published>) {
        let by_server = self.by_server.borrow();
        let Some(ids) = by_server.get(&event.server_id) else {
            return;
        };
        let mut sockets = self.sockets.borrow_mut();
        for id in ids {
            let Some(s) = sockets.get_mut(id) else {
                continue;
            };
            if let Audience::User(uid) = &event.audience
                && *uid != s.user_uid
            {
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

/// Runs `op` on the owner shard: here, or over the mesh.
fn route_op(shard: &Rc<Shard>, owner: usize, op: PresenceOp) {
    to_shard(shard, owner, ShardMessage::Presence(op));
}

/// Has shard `target` handle `message`: this shard at once, another over the mesh, after
/// every message this shard sent it before (`mesh::Mesh::post`: one ordered queue per peer,
/// never waiting).
pub(super) fn to_shard(shard: &Rc<Shard>, target: usize, message: ShardMessage) {
    if target == shard.id {
        shard.handle_message(message);
        return;
    }
    shard.post(target, message);
}

/// Closes sockets wherever they are held (after the frames already sent to them: the mesh
/// keeps the order between two shards).
pub(super) fn close_sockets(shard: &Rc<Shard>, sockets: Vec<SocketRef>) {
    let mut by_shard: HashMap<usize, Vec<u64>> = HashMap::new();
    for s in sockets {
        by_shard.entry(s.shard).or_default().push(s.socket);
    }
    for (target, ids) in by_shard {
        to_shard(shard, target, ShardMessage::CloseSockets(ids));
    }
}

/// Sends each delivery to the shard that holds its socket.
pub(super) fn deliver(shard: &Rc<Shard>, deliveries: Vec<Delivery>) {
    let mut by_shard: HashMap<usize, Vec<(u64, Bytes)>> = HashMap::new();
    for d in deliveries {
        by_shard
            .entry(d.to.shard)
            .or_default()
            .push((d.to.socket, d.frame));
    }
    for (target, frames) in by_shard {
        to_shard(shard, target, ShardMessage::Deliver(frames));
    }
}
