//! The cross-shard message mesh: every shard can send every other shard a [`ShardMessage`].
//! Built on glommio's channel mesh (bounded, one SPSC ring per ordered pair of shards). Shards
//! never share state behind locks on the hot path; they ask each other. A send to a full or gone
//! peer hands the message back to the caller.

use glommio::channels::channel_mesh::Senders;
use glommio::{GlommioError, ResourceType};
use tokio::sync::oneshot;

/// Messages waiting per ordered pair of shards before a sender has to wait.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;

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
    Voice(super::hub::VoiceOp),
    /// Close these sockets of the receiving shard (after what is queued for them).
    CloseSockets(Vec<u64>),
}

/// Counters of one shard at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStatsSnapshot {
    pub shard: usize,
    pub requests: u64,
    pub connections_accepted: u64,
    pub connections_open: u64,
    pub protocol_errors: u64,
    pub panics: u64,
    pub realtime_sockets: u64,
    /// Voice: participants in rooms this shard owns, peer connections, media frames
    /// forwarded, datagrams dropped on receive (strangers, garbage) and on send (full buffer).
    pub voice_participants: u64,
    pub media_connections: u64,
    pub media_forwarded: u64,
    pub media_dropped_in: u64,
    pub media_dropped_out: u64,
}

pub struct Mesh {
    senders: Senders<ShardMessage>,
}

impl Mesh {
    pub fn new(senders: Senders<ShardMessage>) -> Self {
        Mesh { senders }
    }

    /// Sends to shard `to`, waiting while its queue is full. The message comes back when the
    /// peer is gone (shutting down) or `to` is this shard.
    pub async fn send_to(
        &self,
        to: usize,
        message: ShardMessage,
    ) -> Result<(), Option<ShardMessage>> {
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
