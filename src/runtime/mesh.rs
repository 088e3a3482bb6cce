//! The cross-shard message mesh: every shard can send every other shard a [`ShardMessage`].
//! Built on glommio's channel mesh (bounded, one SPSC ring per ordered pair of shards). Shards
//! never share state behind locks on the hot path; they ask each other.
//!
//! Messages to one peer arrive in the order they were posted ([`Mesh::post`]): while the
//! peer's ring has room a message goes straight in; once it is full, that message and every
//! later one wait in one queue per peer, in memory, and a single task per peer moves them into
//! the ring as it drains. (One task per message, as before, let a later message take a slot
//! that freed up before an earlier one woke: a close could overtake the frames before it.)
//! Posting never waits. The queue is bounded: past [`MESH_QUEUE_LIMIT`] waiting messages,
//! frames for sockets ([`ShardMessage::Deliver`]) are dropped, as a full outbox drops a
//! socket's frames; past twice that, everything is, so a peer that stopped reading cannot
//! make this shard grow without end. Drops are counted ([`Mesh::dropped`], in `/metrics`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use glommio::channels::channel_mesh::Senders;
use glommio::{GlommioError, ResourceType};
use tokio::sync::oneshot;

use super::stats::ShardStatsSnapshot;
use crate::realtime::{Delivery, SocketRef};

/// Messages waiting per ordered pair of shards before a sender has to wait.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;
/// Messages that may wait for one peer behind its full ring before frames for sockets are
/// dropped; other messages are dropped past twice this many.
pub const MESH_QUEUE_LIMIT: usize = 16 * 1024;

/// What one shard can ask of another. Later issues add fan-out of committed events and
/// forwarding of per-channel requests to the owner shard (`sharding::shard_for`).
pub enum ShardMessage {
    /// Reply with this shard's counters (for `/metrics`).
    CollectStats {
        reply: oneshot::Sender<ShardStatsSnapshot>,
    },
    /// A presence change for a channel the receiving shard owns.
    Presence(super::hub::PresenceOp),
    /// Frames for realtime sockets the receiving shard holds, by socket number.
    Deliver(Vec<(u64, bytes::Bytes)>),
    /// A voice-room change for a channel the receiving shard owns.
    Voice(super::voice::VoiceOp),
    /// Close these sockets of the receiving shard (after what is queued for them).
    CloseSockets(Vec<u64>),
}

/// What a change of a shard's realtime state (the hub, the voice rooms) asks to be sent: each
/// message with the shard it is for, this one included, in the order they were produced. The
/// state returns these instead of sending them, so it can be driven and checked without a
/// shard; the shard driver sends them (`Shard::dispatch`): its own at once, others over the
/// mesh, after what it posted them before.
#[derive(Default)]
pub struct Outgoing(Vec<(usize, ShardMessage)>);

impl Outgoing {
    /// Nothing to send.
    pub fn none() -> Outgoing {
        Outgoing(Vec::new())
    }

    /// One message for shard `to`.
    pub fn one(to: usize, message: ShardMessage) -> Outgoing {
        Outgoing(vec![(to, message)])
    }

    pub fn push(&mut self, to: usize, message: ShardMessage) {
        self.0.push((to, message));
    }

    /// Each delivery to the shard that holds its socket: one [`ShardMessage::Deliver`] per
    /// shard (in shard order), frames for one shard in the order given.
    pub fn deliver(&mut self, deliveries: Vec<Delivery>) {
        let mut by_shard: BTreeMap<usize, Vec<(u64, bytes::Bytes)>> = BTreeMap::new();
        for d in deliveries {
            by_shard
                .entry(d.to.shard)
                .or_default()
                .push((d.to.socket, d.frame));
        }
        for (target, frames) in by_shard {
            self.push(target, ShardMessage::Deliver(frames));
        }
    }

    /// Closes sockets wherever they are held, after the frames sent to them before (the mesh
    /// keeps the order between two shards): one [`ShardMessage::CloseSockets`] per shard.
    pub fn close(&mut self, sockets: Vec<SocketRef>) {
        let mut by_shard: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        for s in sockets {
            by_shard.entry(s.shard).or_default().push(s.socket);
        }
        for (target, ids) in by_shard {
            self.push(target, ShardMessage::CloseSockets(ids));
        }
    }

    /// [`Outgoing::deliver`] on nothing else.
    pub fn deliveries(deliveries: Vec<Delivery>) -> Outgoing {
        let mut out = Outgoing::none();
        out.deliver(deliveries);
        out
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl IntoIterator for Outgoing {
    type Item = (usize, ShardMessage);
    type IntoIter = std::vec::IntoIter<(usize, ShardMessage)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Which messages a full queue gives up first.
pub trait Sheddable {
    /// True for a message whose loss costs only itself (frames a socket misses), false for one
    /// whose loss would leave state wrong (a member that never leaves, a socket never closed).
    fn sheddable(&self) -> bool;
}

impl Sheddable for ShardMessage {
    fn sheddable(&self) -> bool {
        matches!(
            self,
            ShardMessage::Deliver(_) | ShardMessage::CollectStats { .. }
        )
    }
}

/// What became of a posted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posted {
    /// In the peer's ring.
    Sent,
    /// Waiting behind earlier messages for room in the ring.
    Queued,
    /// Dropped: the queue was full, or the peer is gone.
    Dropped,
}

/// The messages waiting for one peer.
struct PeerQueue<T> {
    waiting: RefCell<VecDeque<T>>,
    /// A task is moving `waiting` into the ring (it may hold one message in flight): new
    /// messages must queue behind it.
    draining: Cell<bool>,
}

pub struct Mesh<T: Send = ShardMessage> {
    senders: Rc<Senders<T>>,
    peers: Vec<Rc<PeerQueue<T>>>,
    dropped: Rc<Cell<u64>>,
}

impl<T: Send + Sheddable + 'static> Mesh<T> {
    pub fn new(senders: Senders<T>) -> Self {
        let peers = (0..senders.nr_consumers())
            .map(|_| {
                Rc::new(PeerQueue {
                    waiting: RefCell::new(VecDeque::new()),
                    draining: Cell::new(false),
                })
            })
            .collect();
        Mesh {
            senders: Rc::new(senders),
            peers,
            dropped: Rc::new(Cell::new(0)),
        }
    }

    /// Hands `message` to shard `to` without waiting, after every message posted to it before
    /// (see the module notes for what a full queue does). Must run inside this shard's
    /// executor. The message comes back when `to` is this shard or no shard at all.
    pub fn post(&self, to: usize, message: T) -> Result<Posted, T> {
        if to == self.senders.peer_id() || to >= self.peers.len() {
            return Err(message);
        }
        let peer = &self.peers[to];
        if !peer.draining.get() {
            match self.senders.try_send_to(to, message) {
                Ok(()) => return Ok(Posted::Sent),
                Err(GlommioError::WouldBlock(ResourceType::Channel(message))) => {
                    peer.waiting.borrow_mut().push_back(message);
                    peer.draining.set(true);
                    glommio::spawn_local(drain(
                        self.senders.clone(),
                        peer.clone(),
                        to,
                        self.dropped.clone(),
                    ))
                    .detach();
                    return Ok(Posted::Queued);
                }
                Err(_) => {
                    // The peer is gone (shutting down).
                    self.count_drop(1);
                    return Ok(Posted::Dropped);
                }
            }
        }
        let mut waiting = peer.waiting.borrow_mut();
        let limit = if message.sheddable() {
            MESH_QUEUE_LIMIT
        } else {
            2 * MESH_QUEUE_LIMIT
        };
        if waiting.len() >= limit {
            drop(waiting);
            self.count_drop(1);
            return Ok(Posted::Dropped);
        }
        waiting.push_back(message);
        Ok(Posted::Queued)
    }

    fn count_drop(&self, n: u64) {
        let before = self.dropped.get();
        self.dropped.set(before + n);
        if before == 0 {
            tracing::warn!(
                "a message to another shard was dropped: its queue is full or it is gone"
            );
        }
    }

    /// Messages dropped so far (queue full, or the peer gone).
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// Messages waiting for `to` behind its full ring.
    pub fn waiting(&self, to: usize) -> usize {
        self.peers.get(to).map_or(0, |p| p.waiting.borrow().len())
    }

    /// Sends to shard `to`, waiting while its ring is full, ahead of anything queued by
    /// [`Mesh::post`] (for requests that wait for an answer, where order does not matter).
    /// The message comes back when the peer is gone (shutting down) or `to` is this shard.
    pub async fn send_to(&self, to: usize, message: T) -> Result<(), Option<T>> {
        if to == self.senders.peer_id() {
            return Err(Some(message));
        }
        self.senders
            .send_to(to, message)
            .await
            .map_err(|e| match e {
                GlommioError::Closed(ResourceType::Channel(message))
                | GlommioError::WouldBlock(ResourceType::Channel(message)) => Some(message),
                _ => None,
            })
    }
}

/// The one task per peer that moves its queue into the ring, in order, waiting for room; it
/// ends when the queue is empty (the next full ring starts another).
async fn drain<T: Send + 'static>(
    senders: Rc<Senders<T>>,
    peer: Rc<PeerQueue<T>>,
    to: usize,
    dropped: Rc<Cell<u64>>,
) {
    loop {
        let Some(message) = peer.waiting.borrow_mut().pop_front() else {
            break;
        };
        if senders.send_to(to, message).await.is_err() {
            // The peer is gone: what waits for it goes with it.
            let lost = 1 + peer.waiting.borrow_mut().drain(..).count() as u64;
            dropped.set(dropped.get() + lost);
            tracing::debug!(to, lost, "messages to a shard that is gone dropped");
            break;
        }
    }
    peer.draining.set(false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::LocalExecutorBuilder;
    use glommio::channels::channel_mesh::MeshBuilder;
    use std::time::Duration;

    fn to(shard: usize, socket: u64) -> SocketRef {
        SocketRef { shard, socket }
    }

    /// One message of an `Outgoing`: its target, `D` (frames) or `C` (closes), and the sockets
    /// with their frame text (empty for a close).
    type Summary = (usize, char, Vec<(u64, String)>);

    fn summary(out: Outgoing) -> Vec<Summary> {
        out.into_iter()
            .map(|(target, message)| match message {
                ShardMessage::Deliver(frames) => (
                    target,
                    'D',
                    frames
                        .into_iter()
                        .map(|(s, f)| (s, String::from_utf8(f.to_vec()).unwrap()))
                        .collect(),
                ),
                ShardMessage::CloseSockets(ids) => (
                    target,
                    'C',
                    ids.into_iter().map(|s| (s, String::new())).collect(),
                ),
                _ => panic!("only deliveries and closes here"),
            })
            .collect()
    }

    #[test]
    fn outgoing_groups_by_shard_and_keeps_frames_before_the_close_after_them() {
        let frame = |to, text: &'static str| Delivery {
            to,
            frame: bytes::Bytes::from_static(text.as_bytes()),
        };
        let mut out = Outgoing::deliveries(vec![
            frame(to(2, 5), "a"),
            frame(to(0, 1), "b"),
            frame(to(2, 6), "c"),
            frame(to(2, 5), "d"),
        ]);
        out.close(vec![to(2, 5), to(0, 1)]);
        let s = |t: &str| t.to_owned();
        assert_eq!(
            summary(out),
            [
                (0, 'D', vec![(1, s("b"))]),
                (2, 'D', vec![(5, s("a")), (6, s("c")), (5, s("d"))]),
                (0, 'C', vec![(1, s(""))]),
                (2, 'C', vec![(5, s(""))]),
            ]
        );
        assert!(Outgoing::deliveries(Vec::new()).is_empty());
        let mut none = Outgoing::none();
        none.close(Vec::new());
        assert!(none.is_empty());
    }

    /// A test message: its number, and whether a full queue may drop it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Numbered(u32, bool);

    impl Sheddable for Numbered {
        fn sheddable(&self) -> bool {
            self.1
        }
    }

    /// Shard 0 posts `count` messages to shard 1 through a ring of `capacity`, pausing every
    /// `pause_every` messages (0: never) so the drain task and the reader run mid-burst, while
    /// shard 1 reads slowly; shard 1's receipts come back, with what shard 0 saw.
    fn run_pair(
        capacity: usize,
        count: u32,
        sheddable: bool,
        pause_every: u32,
    ) -> (Vec<u32>, Vec<Posted>, u64) {
        let mesh = MeshBuilder::<Numbered, _>::full(2, capacity);
        let sender_mesh = mesh.clone();
        let sender = LocalExecutorBuilder::default()
            .name("mesh-test-0")
            .spawn(move || async move {
                let (senders, _receivers) = sender_mesh.join().await.unwrap();
                let mesh = Mesh::new(senders);
                let mut posted = Vec::new();
                for n in 0..count {
                    posted.push(mesh.post(1, Numbered(n, sheddable)).unwrap());
                    if pause_every > 0 && n % pause_every == 0 {
                        glommio::timer::sleep(Duration::from_micros(200)).await;
                    }
                }
                assert!(matches!(
                    mesh.post(0, Numbered(0, true)),
                    Err(Numbered(0, true))
                ));
                // Stay in the mesh until the queue is empty.
                while mesh.waiting(1) > 0 || mesh.peers[1].draining.get() {
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
                (posted, mesh.dropped())
            })
            .unwrap();
        let reader = LocalExecutorBuilder::default()
            .name("mesh-test-1")
            .spawn(move || async move {
                let (_senders, mut receivers) = mesh.join().await.unwrap();
                let mut got = Vec::new();
                for (_, stream) in receivers.streams() {
                    // Slow at first, so the ring fills and messages queue.
                    glommio::timer::sleep(Duration::from_millis(30)).await;
                    while let Some(Numbered(n, _)) = stream.recv().await {
                        got.push(n);
                        if got.len() % 50 == 0 {
                            glommio::timer::sleep(Duration::from_micros(300)).await;
                        }
                    }
                }
                got
            })
            .unwrap();
        let (posted, dropped) = sender.join().unwrap();
        let got = reader.join().unwrap();
        (got, posted, dropped)
    }

    #[test]
    fn messages_keep_their_order_when_the_ring_is_full() {
        let (got, posted, dropped) = run_pair(4, 3000, false, 97);
        assert!(
            posted.contains(&Posted::Queued),
            "the ring filled up and messages queued: {:?}",
            &posted[..20]
        );
        assert_eq!(dropped, 0);
        assert_eq!(got.len(), 3000, "every message");
        let misplaced = got
            .iter()
            .enumerate()
            .filter(|(i, n)| *i as u32 != **n)
            .count();
        assert_eq!(misplaced, 0, "every message in its place");
    }

    #[test]
    fn a_full_queue_drops_frames_first_and_never_reorders() {
        // One burst, more sheddable messages than ring and queue hold: the first fill the
        // ring, MESH_QUEUE_LIMIT wait, the rest are dropped.
        let total = (MESH_QUEUE_LIMIT + 2000) as u32;
        let (got, posted, dropped) = run_pair(4, total, true, 0);
        let count = |what: Posted| posted.iter().filter(|p| **p == what).count();
        let sent = count(Posted::Sent);
        assert!(
            (4..10).contains(&sent),
            "the ring's worth went straight in: {sent}"
        );
        assert!(posted[..sent].iter().all(|p| *p == Posted::Sent));
        // (One more when the drain task already holds the first in flight.)
        let queued = count(Posted::Queued);
        assert!(
            (MESH_QUEUE_LIMIT..=MESH_QUEUE_LIMIT + 1).contains(&queued),
            "{queued}"
        );
        let lost = count(Posted::Dropped);
        assert_eq!(lost, total as usize - sent - queued);
        assert_eq!(lost as u64, dropped);
        assert_eq!(got.len() as u64 + dropped, u64::from(total));
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "what arrives is in order"
        );
        // Control messages get twice the room: the same burst is not dropped.
        let (got, _, dropped) = run_pair(4, total, false, 0);
        assert_eq!(dropped, 0);
        assert_eq!(got.len() as u32, total);
    }
}
